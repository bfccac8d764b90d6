//! The contract checks of one key under contention: concurrent writers
//! leave one whole value, and `get_or_insert_with` computes once, stores
//! nothing when the computation fails, and returns what is there.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::harness::{Harness, sample_bytes, stream_of};
use crate::{CacheExt, Error, SetOptions, Value};

/// Concurrent writers of one key leave one of their values, whole.
pub async fn concurrent_writers_leave_one_complete_value(h: &Harness) {
    let values: Vec<Vec<u8>> = (0..8)
        .map(|i| sample_bytes(200_000 + i * 1000, i as u64))
        .collect();
    let mut tasks = Vec::new();
    for v in values.clone() {
        let c = h.cache.clone();
        tasks.push(tokio::spawn(async move {
            let chunks: Vec<Bytes> = v.chunks(16_384).map(Bytes::copy_from_slice).collect();
            c.set_stream(
                "contended",
                stream_of(chunks),
                SetOptions::new().compress(true),
            )
            .await
            .unwrap();
        }));
    }
    let reader = {
        let c = h.cache.clone();
        let values = values.clone();
        tokio::spawn(async move {
            for _ in 0..50 {
                if let Some(v) = c.get_bytes("contended").await.unwrap() {
                    assert!(
                        values.iter().any(|w| w[..] == v[..]),
                        "a read saw a mixed or partial value"
                    );
                }
                tokio::task::yield_now().await;
            }
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    reader.await.unwrap();
    let v = h.cache.get_bytes("contended").await.unwrap().unwrap();
    assert!(values.iter().any(|w| w[..] == v[..]));
    assert_eq!(h.cache.stats().await.unwrap().entries, 1);
}

/// Fifty tasks missing one key at once compute it once and all get its value.
pub async fn single_flight_computes_once(h: &Harness) {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (c, calls) = (h.cache.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            c.get_or_insert_with(
                "reference_table",
                SetOptions::new().compress(true),
                || async move {
                    calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Value::Text("computed once".into())
                },
            )
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Value::Text("computed once".into()));
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        h.cache
            .get_text("reference_table")
            .await
            .unwrap()
            .as_deref(),
        Some("computed once")
    );
}

#[derive(Debug)]
struct ApiDown;
impl std::fmt::Display for ApiDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the API is down")
    }
}
impl std::error::Error for ApiDown {}

/// A failing computation stores nothing and hands its error back.
pub async fn failed_computation_stores_nothing(h: &Harness) {
    let c = &*h.cache;
    let err = c
        .try_get_or_insert_with("k", SetOptions::new(), || async {
            Err::<Value, _>(ApiDown)
        })
        .await
        .unwrap_err();
    match err {
        Error::Init { key, source } => {
            assert_eq!(key, "k");
            assert!(source.downcast_ref::<ApiDown>().is_some());
        }
        other => panic!("expected Error::Init, got {other:?}"),
    }
    assert_eq!(c.get("k").await.unwrap(), None);
    let v = c
        .try_get_or_insert_with("k", SetOptions::new(), || async {
            Ok::<_, ApiDown>(Value::from("second try"))
        })
        .await
        .unwrap();
    assert_eq!(v, Value::from("second try"));
    assert_eq!(c.get("k").await.unwrap(), Some(Value::from("second try")));
}

/// A present value is returned without running the computation; an expired one is recomputed.
pub async fn get_or_insert_returns_existing_value(h: &Harness) {
    let c = &*h.cache;
    c.set_json(
        "k",
        &serde_json::json!([1, 2]),
        SetOptions::new().ttl_seconds(10),
    )
    .await
    .unwrap();
    let v = c
        .get_or_insert_with("k", SetOptions::new(), || async { panic!("must not run") })
        .await
        .unwrap();
    assert_eq!(v, Value::Json(serde_json::json!([1, 2])));
    h.clock.advance(Duration::from_secs(11));
    let v = c
        .get_or_insert_with("k", SetOptions::new(), || async { Value::from("fresh") })
        .await
        .unwrap();
    assert_eq!(v, Value::from("fresh"));
}
