//! Bodies cut mid-way, through a proxy in front of the local S3 server
//! (moto): resumed with a ranged get pinned to the object's e-tag, or failed
//! with an error — never short, never mixed with another write.

mod common;
#[path = "support/s3.rs"]
mod s3_support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use etl_cache_core::testing::sample_bytes;
use etl_cache_core::{Cache, CacheExt, Compression, SetOptions, Value};
use etl_cache_object::object_store::{BackoffConfig, RetryConfig};
use etl_cache_object::{ObjectCache, ObjectError, ObjectErrorKind};
use futures::StreamExt;

/// No retries inside object_store: every resumption is the cache's own.
fn no_retries() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 0,
        retry_timeout: Duration::from_secs(60),
    }
}

/// Asserts that `received` is the start of `value`, short of its end.
fn assert_short_prefix(received: &[u8], value: &[u8], what: &str) {
    assert!(received.len() < value.len(), "{what}: all of it came");
    assert_eq!(received, &value[..received.len()], "{what}");
}

struct Setup {
    direct: ObjectCache,
    proxy: common::CuttingProxy,
    bucket: String,
    _moto: Arc<common::Server>,
}

fn setup(tag: &str) -> Option<Setup> {
    let (moto, bucket) = common::moto_bucket(tag)?;
    let direct = s3_support::s3_cache(&moto, &bucket, "etl").build().unwrap();
    let proxy = common::CuttingProxy::start(moto.port);
    Some(Setup {
        direct,
        proxy,
        bucket,
        _moto: moto,
    })
}

impl Setup {
    /// Stores `value` as the bytes of `key`, straight to moto.
    async fn put(&self, key: &str, value: &Bytes) {
        let value = Value::Bytes(value.clone());
        self.direct
            .set(key, value, SetOptions::new())
            .await
            .unwrap();
    }

    /// A cache reaching moto through the cutting proxy.
    fn proxied(&self, resume_attempts: u32, retry: RetryConfig) -> ObjectCache {
        let mut opts = common::s3_options(&self._moto);
        opts[0].1 = self.proxy.endpoint();
        ObjectCache::builder()
            .url(format!("s3://{}/etl", self.bucket))
            .options(opts)
            .retry(retry)
            .resume_attempts(resume_attempts)
            .build()
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_body_is_resumed_by_the_cache() {
    let Some(s) = setup("resume") else { return };
    let data = Bytes::from(sample_bytes(40 << 20, 21));
    for (key, comp) in [("plain", Compression::NONE), ("zstd", Compression::zstd())] {
        s.direct
            .set(
                key,
                Value::Bytes(data.clone()),
                SetOptions::new().compression(comp),
            )
            .await
            .unwrap();
    }
    let cache = s.proxied(3, no_retries());
    for key in ["plain", "zstd"] {
        let stored = s.direct.head(key).await.unwrap().unwrap().size;
        // The server closes every connection after one response, so each
        // request has its own. An uncompressed entry is read with one
        // request (its trailer at the body's end): the body's and the first
        // resumption's are armed. A compressed one asks for its trailer
        // after the header: the body's, the trailer's and the first
        // resumption's are armed. The body and the resumption are cut after
        // a third of the object (the trailer is shorter than that).
        let armed = if key == "plain" { 2 } else { 3 };
        s.proxy.arm(stored / 3, armed);
        let before = s.proxy.cuts_done.load(Ordering::SeqCst);
        let got = cache.get_stream(key, 1 << 20).await.unwrap().unwrap();
        let chunks: Vec<Bytes> = got.map(|r| r.unwrap()).collect().await;
        assert_eq!(
            chunks.concat(),
            data,
            "{key}: whole and in order after the cuts"
        );
        assert_eq!(
            s.proxy.cuts_done.load(Ordering::SeqCst) - before,
            2,
            "{key}: the body was really cut twice"
        );
        s.proxy.cuts.store(0, Ordering::SeqCst);
    }
    // A whole-value get through the same cut resumes too (inside object_store).
    let retrying = s.proxied(3, RetryConfig::default());
    s.proxy.arm(10 << 20, 1);
    let before = s.proxy.cuts_done.load(Ordering::SeqCst);
    assert_eq!(retrying.get_bytes("plain").await.unwrap().unwrap(), data);
    assert_eq!(s.proxy.cuts_done.load(Ordering::SeqCst) - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_keeps_being_cut_fails_instead_of_ending_short() {
    let Some(s) = setup("always-cut") else { return };
    let data = Bytes::from(sample_bytes(20 << 20, 22));
    s.put("k", &data).await;
    let cache = s.proxied(2, no_retries());
    s.proxy.arm(4 << 20, 1000);
    // The first connection to be cut may be the body's or the trailer's; only
    // a stream that was opened counts here.
    let mut got = loop {
        match cache.get_stream("k", 1 << 20).await {
            Ok(Some(g)) => break g,
            Ok(None) => panic!("the entry is there"),
            Err(_) => continue,
        }
    };
    let mut received = Vec::new();
    let err = loop {
        match got.next().await {
            Some(Ok(b)) => received.extend_from_slice(&b),
            Some(Err(e)) => break e,
            None => panic!(
                "the stream ended after {} of {} bytes without an error",
                received.len(),
                data.len()
            ),
        }
    };
    assert_short_prefix(&received, &data, "what came was right");
    let o = ObjectError::find_io(&err).expect("the store's error");
    assert_eq!(o.kind(), ObjectErrorKind::Truncated, "{err}");
    assert_eq!(o.store(), "s3");
    assert_eq!(o.bucket(), s.bucket);
    assert_eq!(o.key(), "k");
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    assert!(
        got.next().await.is_none(),
        "the stream ends after its error"
    );
    s.proxy.cuts.store(0, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_read_of_a_replaced_object_fails_rather_than_mixing() {
    let Some(s) = setup("replaced") else { return };
    let old = Bytes::from(sample_bytes(30 << 20, 23));
    let new = Bytes::from(sample_bytes(30 << 20, 24));
    s.put("k", &old).await;
    let cache = s.proxied(3, no_retries());
    // Arms the body's connection and the trailer's (which stays short).
    s.proxy.arm(8 << 20, 2);
    let mut got = cache.get_stream("k", 1 << 20).await.unwrap().unwrap();
    let mut received = Vec::new();
    received.extend_from_slice(&got.next().await.unwrap().unwrap());
    // Another writer replaces the entry while the cut read is under way.
    s.put("k", &new).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = loop {
        match got.next().await {
            Some(Ok(b)) => received.extend_from_slice(&b),
            Some(Err(e)) => break e,
            None => panic!("a cut read of a replaced object ended without an error"),
        }
    };
    assert_short_prefix(&received, &old, "only the old version was returned");
    let o = ObjectError::find_io(&err).expect("the store's error");
    assert_eq!(o.kind(), ObjectErrorKind::Changed, "{err}");
    // The new value reads whole.
    assert_eq!(cache.get_bytes("k").await.unwrap().unwrap(), new);
}
