//! Failures of the store are distinct errors that name the store, the bucket
//! and the key: a missing bucket, rejected credentials, an unreachable
//! endpoint, a timeout; and requests are retried with backoff first.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use etl_cache_core::{Cache, CacheExt, Error, SetOptions};
use etl_cache_object::object_store::{BackoffConfig, ClientOptions, RetryConfig};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_named_not_a_miss() {
    let Some(moto) = common::moto() else { return };
    let cache =
        ObjectCache::from_url_opts("s3://no-such-bucket/etl", common::s3_options(&moto)).unwrap();
    let e = cache.get("reports/2026").await.unwrap_err();
    expect(
        &e,
        ObjectErrorKind::BucketNotFound,
        "s3",
        "no-such-bucket",
        "reports/2026",
    );
    let e = cache
        .set_text("reports/2026", "x", SetOptions::new())
        .await
        .unwrap_err();
    expect(
        &e,
        ObjectErrorKind::BucketNotFound,
        "s3",
        "no-such-bucket",
        "reports/2026",
    );
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
    let e = cache.get("payload_123").await.unwrap_err();
    expect(
        &e,
        ObjectErrorKind::Unauthenticated,
        "azure",
        &container,
        "payload_123",
    );
    let e = cache
        .set_text("payload_123", "x", SetOptions::new())
        .await
        .unwrap_err();
    expect(
        &e,
        ObjectErrorKind::Unauthenticated,
        "azure",
        &container,
        "payload_123",
    );

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_endpoint_times_out() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().take(16) {
            held.push(c);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let cache = ObjectCache::builder()
        .url("s3://etl-bucket/cache")
        .options(common::s3_options_at(&format!("http://127.0.0.1:{port}")))
        .option("aws_region", "us-east-1")
        .client_options(
            ClientOptions::new()
                .with_allow_http(true)
                .with_timeout_disabled()
                .with_read_timeout(Duration::from_millis(300)),
        )
        .retry(quick_retry(1, Duration::from_millis(10)))
        .build()
        .unwrap();
    let t = Instant::now();
    let e = cache.get("daily_report").await.unwrap_err();
    expect(
        &e,
        ObjectErrorKind::Timeout,
        "s3",
        "etl-bucket",
        "daily_report",
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // Listing fails the same way, naming the bucket.
    let e = cache.list(None).try_collect::<Vec<_>>().await.unwrap_err();
    expect(&e, ObjectErrorKind::Timeout, "s3", "etl-bucket", "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_object_is_left_alone() {
    let Some(moto) = common::moto() else { return };
    let bucket = common::unique_name("foreign");
    common::create_bucket(&moto, &bucket);
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
