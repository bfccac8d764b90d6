//! Failures of the store are distinct errors that name the store, the bucket
//! and the key: a missing bucket, rejected credentials, an unreachable
//! endpoint, a timeout; and requests are retried with backoff first.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use etl_cache_core::{Cache, CacheExt, Error, SetOptions};
use etl_cache_object::object_store::{BackoffConfig, RetryConfig};
use etl_cache_object::{ObjectCache, ObjectError, ObjectErrorKind};
use futures::TryStreamExt;

fn quick_retry(retries: usize, first: Duration) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: first,
            max_backoff: first * 8,
            base: 2.0,
        },
        max_retries: retries,
        retry_timeout: Duration::from_secs(60),
    }
}

/// Checks the error is the store's, of `kind`, naming `bucket` and `key`.
fn expect(e: &Error, kind: ObjectErrorKind, store: &str, bucket: &str, key: &str) {
    let o = ObjectError::find(e).unwrap_or_else(|| panic!("not a store error: {e:?}"));
    assert_eq!(o.kind(), kind, "{e}");
    assert_eq!(
        (o.store(), o.bucket(), o.key()),
        (store, bucket, key),
        "{e}"
    );
    let shown = e.to_string();
    assert!(shown.contains(bucket), "{shown}");
    if !key.is_empty() {
        assert!(shown.contains(key), "{shown}");
    }
    assert!(shown.contains(store), "{shown}");
}

/// Checks both a read and a write of `key` fail with the error `expect` wants.
async fn expect_read_and_write(
    cache: &ObjectCache,
    kind: ObjectErrorKind,
    store: &str,
    bucket: &str,
    key: &str,
) {
    let e = cache.get(key).await.unwrap_err();
    expect(&e, kind, store, bucket, key);
    let e = cache
        .set_text(key, "x", SetOptions::new())
        .await
        .unwrap_err();
    expect(&e, kind, store, bucket, key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_named_not_a_miss() {
    let Some(moto) = common::moto() else { return };
    let cache =
        ObjectCache::from_url_opts("s3://no-such-bucket/etl", common::s3_options(&moto)).unwrap();
    expect_read_and_write(
        &cache,
        ObjectErrorKind::BucketNotFound,
        "s3",
        "no-such-bucket",
        "reports/2026",
    )
    .await;
    let e = cache.keys(None).await.unwrap_err();
    expect(
        &e,
        ObjectErrorKind::BucketNotFound,
        "s3",
        "no-such-bucket",
        "",
    );
    let e = cache.get_stream("k", 10).await.unwrap_err();
    expect(
        &e,
        ObjectErrorKind::BucketNotFound,
        "s3",
        "no-such-bucket",
        "k",
    );

    let Some(azurite) = common::azurite() else {
        return;
    };
    let cache = ObjectCache::from_url_opts(
        "az://no-such-container/etl",
        common::azure_options(&azurite),
    )
    .unwrap();
    let e = cache.head("k").await.unwrap_err();
    expect(
        &e,
        ObjectErrorKind::BucketNotFound,
        "azure",
        "no-such-container",
        "k",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_named() {
    let Some(azurite) = common::azurite() else {
        return;
    };
    let container = common::unique_name("creds");
    common::create_container(&azurite, &container);
    let mut opts = common::azure_options(&azurite);
    opts[1].1 = "d3JvbmcgYWNjb3VudCBrZXk=".into(); // a valid base64 key, the wrong one
    let cache = ObjectCache::from_url_opts(&format!("az://{container}/etl"), opts).unwrap();
    expect_read_and_write(
        &cache,
        ObjectErrorKind::Unauthenticated,
        "azure",
        &container,
        "payload_123",
    )
    .await;

    let Some(moto) = common::moto_with_auth() else {
        return;
    };
    let cache =
        ObjectCache::from_url_opts("s3://some-bucket/etl", common::s3_options(&moto)).unwrap();
    let e = cache.get("payload_123").await.unwrap_err();
    expect(
        &e,
        ObjectErrorKind::Unauthenticated,
        "s3",
        "some-bucket",
        "payload_123",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_retried_with_backoff_then_named() {
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let cache = ObjectCache::builder()
        .url("s3://etl-bucket/cache")
        .options(common::s3_options_at(&endpoint))
        .option("aws_region", "us-east-1")
        .retry(quick_retry(3, Duration::from_millis(100)))
        .build()
        .unwrap();
    let t = Instant::now();
    let e = cache.get("my_folder/financial_data").await.unwrap_err();
    let took = t.elapsed();
    expect(
        &e,
        ObjectErrorKind::Unreachable,
        "s3",
        "etl-bucket",
        "my_folder/financial_data",
    );
    // Three retries with backoff from 100 ms (jittered): well over 100 ms.
    assert!(took >= Duration::from_millis(100), "no backoff: {took:?}");
    assert!(e.to_string().contains("after 3 retries"), "{e}");

    let cache = ObjectCache::builder()
        .url("az://etl-container/cache")
        .options([
            (
                "azure_storage_account_name",
                common::AZURITE_ACCOUNT.to_string(),
            ),
            ("azure_storage_account_key", common::AZURITE_KEY.to_string()),
            (
                "azure_storage_endpoint",
                format!("{endpoint}/{}", common::AZURITE_ACCOUNT),
            ),
            ("allow_http", "true".to_string()),
        ])
        .retry(quick_retry(1, Duration::from_millis(10)))
        .build()
        .unwrap();
    let e = cache
        .set_text("k", "v", SetOptions::new())
        .await
        .unwrap_err();
    expect(
        &e,
        ObjectErrorKind::Unreachable,
        "azure",
        "etl-container",
        "k",
    );
}

/// A generous cap on a request that must fail rather than hang.
const NO_HANG: Duration = Duration::from_secs(60);

/// A cache on the fake S3 server at `port`, with an idle timeout of 300 ms.
fn cache_at(port: u16) -> ObjectCache {
    ObjectCache::builder()
        .url("s3://etl-bucket/cache")
        .options(common::s3_options_at(&format!("http://127.0.0.1:{port}")))
        .option("aws_region", "us-east-1")
        .idle_timeout(Duration::from_millis(300))
        .retry(quick_retry(1, Duration::from_millis(10)))
        .build()
        .unwrap()
}

/// A server whose first connection gets one answer: the headers of an
/// object of `len` bytes, then a chunk of `chunk` bytes `chunks` times,
/// with `gap` before each; nothing more is sent on it. Later connections
/// are accepted and never answered.
fn body_server(len: usize, chunk: usize, chunks: usize, gap: Duration) -> u16 {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for (i, c) in listener.incoming().take(16).enumerate() {
            let Ok(mut c) = c else { continue };
            if i == 0 {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && c.read(&mut b).unwrap_or(0) == 1 {
                    head.push(b[0]);
                }
                let headers = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nETag: \"e1\"\r\n\
                     Last-Modified: Sun, 06 Dec 2026 10:00:00 GMT\r\n\r\n"
                );
                let _ = c.write_all(headers.as_bytes());
                for _ in 0..chunks {
                    std::thread::sleep(gap);
                    let _ = c.write_all(&vec![b'x'; chunk]);
                    let _ = c.flush();
                }
            }
            held.push(c);
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_endpoint_times_out() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(16).collect();
        drop(held);
    });
    let cache = cache_at(port);
    let e = tokio::time::timeout(NO_HANG, cache.get("daily_report"))
        .await
        .expect("a silent store fails the read instead of hanging")
        .unwrap_err();
    expect(
        &e,
        ObjectErrorKind::Timeout,
        "s3",
        "etl-bucket",
        "daily_report",
    );
    // Listing and writing fail the same way, naming the bucket.
    let e = tokio::time::timeout(NO_HANG, cache.list(None).try_collect::<Vec<_>>())
        .await
        .expect("a silent store fails the listing instead of hanging")
        .unwrap_err();
    expect(&e, ObjectErrorKind::Timeout, "s3", "etl-bucket", "");
    let e = tokio::time::timeout(NO_HANG, cache.set_text("k", "v", SetOptions::new()))
        .await
        .expect("a silent store fails the write instead of hanging")
        .unwrap_err();
    expect(&e, ObjectErrorKind::Timeout, "s3", "etl-bucket", "k");
}

/// Whether `e` or an error behind it is an I/O timeout, which the cache
/// reports as [`ObjectErrorKind::Timeout`].
fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(s) = cur {
        if s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cur = s.source();
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_ends_with_a_timeout() {
    use etl_cache_object::object_store::ObjectStoreExt;
    // Headers and half of a 1000-byte body, then silence.
    let port = body_server(1000, 500, 1, Duration::ZERO);
    let cache = cache_at(port);
    let path = cache.object_path("daily_report").unwrap();
    let read = async {
        let r = cache.store().get(&path).await?;
        r.bytes().await
    };
    let e = tokio::time::timeout(NO_HANG, read)
        .await
        .expect("a stalled body fails instead of hanging")
        .unwrap_err();
    assert!(is_timeout(&e), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_that_keeps_moving_is_not_cut() {
    use etl_cache_object::object_store::ObjectStoreExt;
    // 8 chunks, one every 100 ms: longer than the 300 ms idle timeout in
    // all, but never silent that long.
    let port = body_server(800, 100, 8, Duration::from_millis(100));
    let cache = cache_at(port);
    let path = cache.object_path("daily_report").unwrap();
    let read = async {
        let r = cache.store().get(&path).await?;
        r.bytes().await
    };
    let body = tokio::time::timeout(NO_HANG, read).await.unwrap().unwrap();
    assert_eq!(body.len(), 800);
    assert!(body.iter().all(|&b| b == b'x'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_object_is_left_alone() {
    let Some((moto, bucket)) = common::moto_bucket("foreign") else {
        return;
    };
    let cache =
        ObjectCache::from_url_opts(&format!("s3://{bucket}/etl"), common::s3_options(&moto))
            .unwrap();
    use etl_cache_object::object_store::ObjectStoreExt;
    let path = cache.object_path("exports/report.csv").unwrap();
    cache.store().put(&path, "a,b\n1,2\n".into()).await.unwrap();
    let e = cache.get("exports/report.csv").await.unwrap_err();
    expect(
        &e,
        ObjectErrorKind::NotAnEntry,
        "s3",
        &bucket,
        "exports/report.csv",
    );
    assert!(
        cache.keys(None).await.unwrap().is_empty(),
        "not listed as an entry"
    );
    assert!(cache.store().head(&path).await.is_ok(), "and not deleted");
}
