//! The contract checks of keys and entries: which keys are taken, listing,
//! delete and clear, the stats, `head`, and the typed helpers.

use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::harness::{Harness, sample_bytes, stream_of};
use crate::{CacheExt, Codec, Compression, Error, Kind, MAX_KEY_LEN, SetOptions, Value};

/// Empty keys, keys over the maximum and keys with NUL are `InvalidKey` everywhere.
pub async fn invalid_keys_are_rejected(h: &Harness) {
    let c = &*h.cache;
    let long = "x".repeat(MAX_KEY_LEN + 1);
    for key in ["", long.as_str(), "a\0b"] {
        let is_invalid = |r: Result<(), Error>| matches!(r, Err(Error::InvalidKey { .. }));
        assert!(
            is_invalid(c.set(key, "v".into(), SetOptions::new()).await.map(|_| ())),
            "{key:?}"
        );
        assert!(is_invalid(
            c.set_stream(key, stream_of(vec![]), SetOptions::new())
                .await
                .map(|_| ())
        ));
        assert!(is_invalid(c.get(key).await.map(|_| ())));
        assert!(is_invalid(c.get_stream(key, 10).await.map(|_| ())));
        assert!(is_invalid(c.head(key).await.map(|_| ())));
        assert!(is_invalid(c.delete(key).await.map(|_| ())));
    }
    let max = "y".repeat(MAX_KEY_LEN);
    c.set(&max, "longest key".into(), SetOptions::new())
        .await
        .unwrap();
    assert_eq!(
        c.get_text(&max).await.unwrap().as_deref(),
        Some("longest key")
    );
    assert!(c.keys(None).await.unwrap().contains(&max));
}

/// Keys that look like paths (climbing out, absolute, doubled slashes,
/// dots, Windows paths), with whitespace and any Unicode: a backend must
/// store and list each as given, and never read one as a path.
pub const HOSTILE_KEYS: [&str; 9] = [
    "my_folder/financial_data",
    "../../../etc/passwd",
    "/absolute/path",
    "a//b/./c/..",
    "with space and\ttab\nnewline",
    "ünïcödé/日本語/𝄞/🦀",
    "C:\\windows\\system32",
    ".",
    "..",
];

/// Keys that look like paths, and any Unicode, are stored and listed as given.
pub async fn hostile_keys_are_plain_keys(h: &Harness) {
    let c = &*h.cache;
    let keys = HOSTILE_KEYS;
    for (i, k) in keys.iter().enumerate() {
        c.set(k, Value::Text(format!("value {i}")), SetOptions::new())
            .await
            .unwrap();
    }
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(
            c.get_text(k).await.unwrap(),
            Some(format!("value {i}")),
            "{k:?}"
        );
    }
    let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    expected.sort();
    assert_eq!(c.keys(None).await.unwrap(), expected);
}

/// `list` filters by prefix and returns metadata.
pub async fn list_filters_by_prefix(h: &Harness) {
    let c = &*h.cache;
    for k in ["runs/2026/a", "runs/2026/b", "runs/2027/a", "other"] {
        c.set(k, Value::Text(k.into()), SetOptions::new())
            .await
            .unwrap();
    }
    assert_eq!(
        c.keys(Some("runs/2026/")).await.unwrap(),
        vec!["runs/2026/a", "runs/2026/b"]
    );
    assert_eq!(c.keys(Some("runs/")).await.unwrap().len(), 3);
    assert_eq!(c.keys(Some("zzz")).await.unwrap(), Vec::<String>::new());
    let metas: Vec<_> = c.list(Some("other")).try_collect().await.unwrap();
    assert_eq!(metas.len(), 1);
    assert_eq!(metas[0].kind, Kind::Text);
    assert_eq!(metas[0].logical_len, 5);
}

/// `delete` removes one entry; `clear` removes all.
pub async fn delete_and_clear(h: &Harness) {
    let c = &*h.cache;
    for i in 0..5 {
        c.set(
            &format!("k{i}"),
            Value::Text(i.to_string()),
            SetOptions::new(),
        )
        .await
        .unwrap();
    }
    assert!(c.delete("k0").await.unwrap());
    assert!(!c.delete("k0").await.unwrap());
    assert_eq!(c.get("k0").await.unwrap(), None);
    assert_eq!(c.clear().await.unwrap(), 4);
    assert_eq!(c.keys(None).await.unwrap(), Vec::<String>::new());
    let s = c.stats().await.unwrap();
    assert_eq!((s.entries, s.bytes), (0, 0));
    c.set("after", "works".into(), SetOptions::new())
        .await
        .unwrap();
    assert_eq!(c.get_text("after").await.unwrap().as_deref(), Some("works"));
}

/// A handle's identity (`Cache::handle_id`) stays the same from call to
/// call, and a second handle on the same entries has another one: state
/// an extension keeps per handle is never taken for another handle's.
pub async fn handle_ids_tell_handles_apart(h: &Harness) {
    let id = h.cache.handle_id();
    assert_eq!(h.cache.handle_id(), id);
    if let (Some(id), Some(second)) = (id, &h.second) {
        assert_ne!(second.handle_id(), Some(id));
    }
}

/// Hits, misses, sets and the size figures follow the operations.
pub async fn stats_count_operations(h: &Harness) {
    let c = &*h.cache;
    let s0 = c.stats().await.unwrap();
    c.set(
        "a",
        Value::Bytes(Bytes::from(vec![1u8; 1000])),
        SetOptions::new(),
    )
    .await
    .unwrap();
    let b = c.set("b", "x".into(), SetOptions::new()).await.unwrap();
    c.get("a").await.unwrap();
    c.get("a").await.unwrap();
    c.get("missing").await.unwrap();
    let s = c.stats().await.unwrap();
    assert_eq!(s.sets - s0.sets, 2);
    assert_eq!(s.hits - s0.hits, 2);
    assert_eq!(s.misses - s0.misses, 1);
    assert_eq!(s.entries, 2);
    let a = c.head("a").await.unwrap().unwrap();
    assert_eq!(s.bytes, a.size + b.size);
    assert!(a.size >= 1000);
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct RunStats {
    records_processed: u64,
    status: String,
    tags: Vec<String>,
}

/// `set_json`/`get_json` round-trip serde types; kinds are checked.
pub async fn typed_helpers(h: &Harness) {
    let c = &*h.cache;
    let stats = RunStats {
        records_processed: 1042,
        status: "success".into(),
        tags: vec!["daily".into()],
    };
    c.set_json("job_123_stats", &stats, SetOptions::new().compress(true))
        .await
        .unwrap();
    assert_eq!(
        c.get_json::<RunStats>("job_123_stats").await.unwrap(),
        Some(stats)
    );
    assert!(matches!(
        c.get_json::<Vec<u8>>("job_123_stats").await,
        Err(Error::Json { .. })
    ));
    c.set_text("t", "[1,2,3]", SetOptions::new()).await.unwrap();
    match c.get_json::<Vec<u32>>("t").await {
        Err(Error::KindMismatch {
            expected, found, ..
        }) => assert_eq!((expected, found), (Kind::Json, Kind::Text)),
        other => panic!("expected KindMismatch, got {other:?}"),
    }
    assert_eq!(c.get_text("t").await.unwrap().as_deref(), Some("[1,2,3]"));
    assert!(matches!(
        c.get_text("job_123_stats").await,
        Err(Error::KindMismatch { .. })
    ));
    assert_eq!(
        c.get_bytes("t").await.unwrap().as_deref(),
        Some(&b"[1,2,3]"[..])
    );
}

/// `head` reports kind, codec, lengths and expiry without reading the payload.
pub async fn head_reports_metadata(h: &Harness) {
    let c = &*h.cache;
    let data = Bytes::from(sample_bytes(50_000, 9));
    let set = c
        .set(
            "m",
            Value::Bytes(data.clone()),
            SetOptions::new()
                .compression(Compression::zstd())
                .ttl_seconds(100),
        )
        .await
        .unwrap();
    let m = c.head("m").await.unwrap().unwrap();
    assert_eq!(m, set);
    assert_eq!(m.key, "m");
    assert_eq!(m.kind, Kind::Bytes);
    assert_eq!(m.codec, Codec::Zstd);
    assert_eq!(m.logical_len, 50_000);
    assert!(m.stored_len < 50_000);
    let left = m.ttl_left(h.clock.now_for_tests()).unwrap();
    assert!(
        left <= Duration::from_secs(100) && left > Duration::from_secs(90),
        "{left:?}"
    );
}
