//! The shared contract suite. Every backend runs it with one macro call:
//!
//! ```rs
//! async fn make(clock: Arc<ManualClock>) -> Harness {
//!     let dir = tempfile::tempdir().unwrap();
//!     let cache = MyCache::open(dir.path(), clock.clone());
//!     Harness::new(Arc::new(cache), clock, dir)
//! }
//! etl_cache_core::contract_tests!(make);
//! ```
//!
//! `make` gets a [`ManualClock`] that the backend must read expiry from; the
//! suite advances it instead of sleeping. The third argument of
//! [`Harness::new`] is kept alive for the test (a temporary directory, a server).

use std::any::Any;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

mod io_checks;
mod obs_checks;

pub use self::io_checks::{
    io_concurrent_writers_leave_one_whole_value, io_dropped_writer_keeps_previous_value,
    io_reader_reads_exact_bytes, io_set_between_writes_and_commit,
    io_shutdown_publishes_and_commit_reports_meta, io_writer_dropped_at_any_poll_publishes_nothing,
    io_writer_errors_carry_the_cache_error, io_writer_stores_exact_bytes,
    io_writers_on_two_handles_leave_one_whole_value,
};
pub use self::obs_checks::{
    Recorder, SeenSpan, concurrent_operations_report_their_own_outcome, operations_are_observed,
};
use crate::{
    ByteStream, Cache, CacheExt, CacheIoExt, Codec, Compression, DEFAULT_CHUNK_SIZE, Error, Kind,
    MAX_JSON_DEPTH, MAX_KEY_LEN, ManualClock, SetOptions, Value,
};

/// A cache under test with the clock it reads.
pub struct Harness {
    /// The cache.
    pub cache: Arc<dyn Cache>,
    /// The clock the cache reads expiry from.
    pub clock: Arc<ManualClock>,
    /// Whether a read that finds an entry expired removes it. A backend
    /// that cannot remove conditionally (an object store without
    /// conditional deletes) leaves it to `purge_expired`.
    pub removes_expired_on_read: bool,
    /// A second handle on the same entries (another `DiskCache` on the
    /// same directory, another `ObjectCache` on the same store), for the
    /// checks of writers racing across handles; `None` where there is none.
    pub second: Option<Arc<dyn Cache>>,
    /// Whether a write dropped while its final request is in flight may
    /// still be applied after the drop (a remote object store: see the
    /// `Cache` contract, "Cancellation").
    pub dropped_writes_may_land_later: bool,
    _keep: Box<dyn Any + Send + Sync>,
}

impl Harness {
    /// Bundles a cache, its clock and anything that must live as long as the test.
    pub fn new(
        cache: Arc<dyn Cache>,
        clock: Arc<ManualClock>,
        keep: impl Any + Send + Sync,
    ) -> Self {
        Harness {
            cache,
            clock,
            removes_expired_on_read: true,
            second: None,
            dropped_writes_may_land_later: false,
            _keep: Box::new(keep),
        }
    }

    /// For a backend whose reads leave expired entries in place (they are
    /// invisible, and removed by `purge_expired`).
    pub fn keeps_expired_until_purge(mut self) -> Self {
        self.removes_expired_on_read = false;
        self
    }

    /// Adds a second handle on the same entries as the cache under test.
    pub fn with_second_handle(mut self, second: Arc<dyn Cache>) -> Self {
        self.second = Some(second);
        self
    }

    /// For a remote store, where a write dropped while its final request is
    /// in flight may still be applied by the server after the drop.
    pub fn dropped_writes_may_land_later(mut self) -> Self {
        self.dropped_writes_may_land_later = true;
        self
    }
}

/// Generates one `#[tokio::test]` per contract check, each with a fresh cache
/// from `$make` (an `async fn(Arc<ManualClock>) -> Harness`).
#[macro_export]
macro_rules! contract_tests {
    ($make:path) => {
        $crate::with_contract_checks!($make => $crate::__contract_tests);
    };
}

/// Calls the macro after `=>` with `$make` and the name of every contract
/// check: `($make; check, check, ...)`. For suites that wrap the checks
/// their own way (a server that may be missing, say) and must not miss one.
#[macro_export]
macro_rules! with_contract_checks {
    ($make:path => $($callback:tt)+) => {
        $($callback)+!($make;
            kinds_roundtrip_exactly,
            empty_values_roundtrip,
            overwrite_replaces,
            misses_are_none,
            compression_roundtrips,
            streams_roundtrip_in_exact_chunks,
            failing_stream_keeps_previous_value,
            ttl_hides_and_removes_expired,
            purge_expired_removes_only_expired,
            invalid_keys_are_rejected,
            hostile_keys_are_plain_keys,
            list_filters_by_prefix,
            delete_and_clear,
            stats_count_operations,
            typed_helpers,
            head_reports_metadata,
            zero_chunk_size_is_invalid,
            extreme_ttls_are_refused_cleanly,
            expires_by_bounds_the_expiry,
            json_too_deep_to_read_is_never_stored,
            concurrent_writers_leave_one_complete_value,
            dropped_stream_reader_leaves_entry,
            single_flight_computes_once,
            failed_computation_stores_nothing,
            get_or_insert_returns_existing_value,
            ranges_read_the_logical_bytes,
            ranges_come_from_one_version,
            io_writer_stores_exact_bytes,
            io_shutdown_publishes_and_commit_reports_meta,
            io_dropped_writer_keeps_previous_value,
            io_writer_dropped_at_any_poll_publishes_nothing,
            io_writer_errors_carry_the_cache_error,
            io_concurrent_writers_leave_one_whole_value,
            io_writers_on_two_handles_leave_one_whole_value,
            io_set_between_writes_and_commit,
            io_reader_reads_exact_bytes,
            arrow_kind_roundtrips,
            kind_only_on_byte_payloads,
            json_bytes_store_a_json_entry,
            computed_values_keep_the_kind,
            operations_are_observed,
            concurrent_operations_report_their_own_outcome,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __contract_tests {
    ($make:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let clock = ::std::sync::Arc::new($crate::ManualClock::new());
                let harness = $make(clock).await;
                $crate::testing::$name(&harness).await;
            }
        )*
    };
}

fn stream_of(chunks: Vec<Bytes>) -> ByteStream {
    futures::stream::iter(chunks.into_iter().map(Ok)).boxed()
}

/// A deterministic, compressible payload of `len` bytes.
pub fn sample_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    while out.len() < len {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let line = format!("<row id=\"{}\" v=\"{}\"/>\n", x >> 40, (x >> 20) & 0xff);
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(len);
    out
}

async fn collect(cache: &dyn Cache, key: &str, chunk: usize) -> Option<(Vec<usize>, Vec<u8>)> {
    let s = cache.get_stream(key, chunk).await.expect("get_stream")?;
    let chunks: Vec<Bytes> = s.try_collect().await.expect("stream reads");
    let sizes = chunks.iter().map(Bytes::len).collect();
    Some((sizes, chunks.concat()))
}

/// Text that looks like JSON stays text; UTF-8 bytes stay bytes; JSON stays JSON.
pub async fn kinds_roundtrip_exactly(h: &Harness) {
    let c = &*h.cache;
    let o = SetOptions::new();
    c.set("text", Value::Text("{\"looks\": \"like json\"}".into()), o)
        .await
        .unwrap();
    c.set("bytes", Value::Bytes(Bytes::from_static(b"plain utf-8")), o)
        .await
        .unwrap();
    let doc =
        serde_json::json!({"records_processed": 1042, "status": "success", "list": [1, 2.5, null]});
    c.set("json", Value::Json(doc.clone()), o).await.unwrap();
    c.set(
        "binary",
        Value::Bytes(Bytes::from((0..=255u8).collect::<Vec<_>>())),
        o,
    )
    .await
    .unwrap();
    assert_eq!(
        c.get("text").await.unwrap(),
        Some(Value::Text("{\"looks\": \"like json\"}".into()))
    );
    assert_eq!(
        c.get("bytes").await.unwrap(),
        Some(Value::Bytes(Bytes::from_static(b"plain utf-8")))
    );
    assert_eq!(c.get("json").await.unwrap(), Some(Value::Json(doc)));
    assert_eq!(
        c.get("binary").await.unwrap(),
        Some(Value::Bytes(Bytes::from((0..=255u8).collect::<Vec<_>>())))
    );
}

/// Empty text, bytes and streams are values, not misses.
pub async fn empty_values_roundtrip(h: &Harness) {
    let c = &*h.cache;
    for comp in [Compression::NONE, Compression::gzip(), Compression::zstd()] {
        let o = SetOptions::new().compression(comp);
        c.set("t", Value::Text(String::new()), o).await.unwrap();
        assert_eq!(
            c.get("t").await.unwrap(),
            Some(Value::Text(String::new())),
            "{comp}"
        );
        c.set_stream("s", stream_of(vec![]), o).await.unwrap();
        assert_eq!(
            c.get("s").await.unwrap(),
            Some(Value::Bytes(Bytes::new())),
            "{comp}"
        );
        let (sizes, data) = collect(c, "s", 10).await.expect("present");
        assert!(sizes.is_empty() && data.is_empty(), "{comp}");
    }
}

/// A set replaces the previous value and its kind.
pub async fn overwrite_replaces(h: &Harness) {
    let c = &*h.cache;
    c.set("k", "first".into(), SetOptions::new()).await.unwrap();
    c.set(
        "k",
        Value::Bytes(Bytes::from_static(b"second")),
        SetOptions::new().compress(true),
    )
    .await
    .unwrap();
    assert_eq!(
        c.get("k").await.unwrap(),
        Some(Value::Bytes(Bytes::from_static(b"second")))
    );
    assert_eq!(c.keys(None).await.unwrap(), vec!["k".to_string()]);
    assert_eq!(c.stats().await.unwrap().entries, 1);
}

/// Every read of a missing key is `Ok(None)` or `false`.
pub async fn misses_are_none(h: &Harness) {
    let c = &*h.cache;
    assert_eq!(c.get("nope").await.unwrap(), None);
    assert_eq!(c.head("nope").await.unwrap(), None);
    assert!(c.get_stream("nope", 10).await.unwrap().is_none());
    assert!(!c.contains("nope").await.unwrap());
    assert!(!c.delete("nope").await.unwrap());
    assert_eq!(c.get_json::<serde_json::Value>("nope").await.unwrap(), None);
}

/// Values and streams come back decompressed whatever the codec.
pub async fn compression_roundtrips(h: &Harness) {
    let c = &*h.cache;
    let xml = String::from_utf8(sample_bytes(300_000, 1)).unwrap();
    for comp in [
        Compression::NONE,
        Compression::gzip(),
        Compression::gzip_level(1).unwrap(),
        Compression::zstd(),
        Compression::zstd_level(19).unwrap(),
    ] {
        let meta = c
            .set(
                "xml",
                Value::Text(xml.clone()),
                SetOptions::new().compression(comp),
            )
            .await
            .unwrap();
        assert_eq!(meta.codec, comp.codec());
        assert_eq!(meta.logical_len, xml.len() as u64);
        if comp.codec() != Codec::None {
            assert!(
                meta.stored_len * 2 < meta.logical_len,
                "{comp} should shrink XML: {meta:?}"
            );
        }
        assert_eq!(
            c.get_text("xml").await.unwrap().as_deref(),
            Some(xml.as_str()),
            "{comp}"
        );
        let (_, streamed) = collect(c, "xml", 4096).await.unwrap();
        assert_eq!(
            streamed,
            xml.as_bytes(),
            "stream of {comp} returns logical bytes"
        );
    }
}

/// `set_stream` stores many chunks; `get_stream` yields exact chunk sizes.
pub async fn streams_roundtrip_in_exact_chunks(h: &Harness) {
    let c = &*h.cache;
    let data = sample_bytes(1_000_003, 7);
    for comp in [Compression::NONE, Compression::gzip(), Compression::zstd()] {
        let chunks: Vec<Bytes> = data.chunks(10_007).map(Bytes::copy_from_slice).collect();
        let meta = c
            .set_stream(
                "big",
                stream_of(chunks),
                SetOptions::new().compression(comp),
            )
            .await
            .unwrap();
        assert_eq!(meta.kind, Kind::Bytes);
        assert_eq!(meta.logical_len, data.len() as u64);
        for chunk in [1000, DEFAULT_CHUNK_SIZE, 2_000_000] {
            let (sizes, back) = collect(c, "big", chunk).await.unwrap();
            assert_eq!(back, data, "{comp} chunk {chunk}");
            let (last, rest) = sizes.split_last().unwrap();
            assert!(
                rest.iter().all(|&s| s == chunk),
                "{comp}: every chunk but the last is {chunk}"
            );
            assert!(*last <= chunk && *last > 0);
        }
        assert_eq!(
            c.get("big").await.unwrap(),
            Some(Value::Bytes(Bytes::from(data.clone())))
        );
    }
}

/// A stream that fails part way publishes nothing and keeps the old value.
pub async fn failing_stream_keeps_previous_value(h: &Harness) {
    let c = &*h.cache;
    c.set("k", "previous".into(), SetOptions::new())
        .await
        .unwrap();
    let before = c.stats().await.unwrap();
    for comp in [Compression::NONE, Compression::zstd()] {
        let chunks: Vec<std::io::Result<Bytes>> = vec![
            Ok(Bytes::from(sample_bytes(100_000, 3))),
            Ok(Bytes::from(sample_bytes(100_000, 4))),
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "upstream API hung up",
            )),
            Ok(Bytes::from_static(b"never read")),
        ];
        let err = c
            .set_stream(
                "k",
                futures::stream::iter(chunks).boxed(),
                SetOptions::new().compression(comp),
            )
            .await
            .unwrap_err();
        match &err {
            Error::Stream { key, source } => {
                assert_eq!(key, "k");
                assert_eq!(source.kind(), io::ErrorKind::ConnectionReset);
            }
            other => panic!("expected Error::Stream, got {other:?}"),
        }
        assert_eq!(c.get_text("k").await.unwrap().as_deref(), Some("previous"));
        let new_key_err = c
            .set_stream(
                "fresh",
                futures::stream::iter(vec![Err(io::Error::other("boom"))]).boxed(),
                SetOptions::new(),
            )
            .await;
        assert!(new_key_err.is_err());
        assert_eq!(c.get("fresh").await.unwrap(), None);
    }
    let after = c.stats().await.unwrap();
    assert_eq!(
        (after.entries, after.bytes),
        (before.entries, before.bytes),
        "failed sets leave no debris"
    );
}

/// An expired entry reads as a miss everywhere and is removed (when seen,
/// or by `purge_expired` for a backend that keeps it until then).
pub async fn ttl_hides_and_removes_expired(h: &Harness) {
    let c = &*h.cache;
    c.set(
        "daily_report",
        "ok".into(),
        SetOptions::new().ttl_seconds(3600),
    )
    .await
    .unwrap();
    c.set_stream(
        "stream",
        stream_of(vec![Bytes::from_static(b"abc")]),
        SetOptions::new().ttl(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    c.set("forever", "stays".into(), SetOptions::new())
        .await
        .unwrap();
    h.clock.advance(Duration::from_secs(59));
    assert!(c.get_stream("stream", 2).await.unwrap().is_some());
    assert_eq!(
        c.get_text("daily_report").await.unwrap().as_deref(),
        Some("ok")
    );
    let ttl = c.head("daily_report").await.unwrap().unwrap();
    assert!(ttl.expires.is_some());
    h.clock.advance(Duration::from_secs(2));
    assert!(c.get_stream("stream", 2).await.unwrap().is_none());
    h.clock.advance(Duration::from_secs(3600));
    assert_eq!(c.get("daily_report").await.unwrap(), None);
    assert_eq!(c.head("daily_report").await.unwrap(), None);
    assert!(!c.contains("daily_report").await.unwrap());
    let all: Vec<_> = c.list_all(None).try_collect().await.unwrap();
    assert!(
        all.iter()
            .all(|m| m.key == "forever" || m.is_expired(h.clock.now_for_tests()))
    );
    assert_eq!(c.keys(None).await.unwrap(), vec!["forever".to_string()]);
    assert_eq!(
        c.get_text("forever").await.unwrap().as_deref(),
        Some("stays")
    );
    if !h.removes_expired_on_read {
        assert_eq!(c.purge_expired().await.unwrap(), 2, "purge removes them");
    }
    assert_eq!(
        c.stats().await.unwrap().entries,
        1,
        "expired entries were removed when seen"
    );
}

/// `purge_expired` removes exactly the expired entries.
pub async fn purge_expired_removes_only_expired(h: &Harness) {
    let c = &*h.cache;
    for i in 0..10 {
        let ttl = if i % 2 == 0 {
            Some(Duration::from_secs(10))
        } else {
            None
        };
        let mut o = SetOptions::new();
        if let Some(t) = ttl {
            o = o.ttl(t);
        }
        c.set(&format!("k{i}"), Value::Text(format!("v{i}")), o)
            .await
            .unwrap();
    }
    assert_eq!(c.purge_expired().await.unwrap(), 0);
    h.clock.advance(Duration::from_secs(11));
    let all: Vec<_> = c.list_all(None).try_collect().await.unwrap();
    let now = h.clock.now_for_tests();
    assert_eq!(
        all.len(),
        10,
        "list_all still shows expired entries before a purge"
    );
    assert_eq!(all.iter().filter(|m| m.is_expired(now)).count(), 5);
    assert_eq!(c.purge_expired().await.unwrap(), 5);
    assert_eq!(c.stats().await.unwrap().entries, 5);
    assert_eq!(
        c.keys(None).await.unwrap(),
        vec!["k1", "k3", "k5", "k7", "k9"]
    );
    assert_eq!(c.purge_expired().await.unwrap(), 0);
}

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

/// Keys that look like paths, and any Unicode, are stored and listed as given.
pub async fn hostile_keys_are_plain_keys(h: &Harness) {
    let c = &*h.cache;
    let keys = [
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

/// A zero chunk size is invalid input, not a hang.
pub async fn zero_chunk_size_is_invalid(h: &Harness) {
    let c = &*h.cache;
    c.set("k", "v".into(), SetOptions::new()).await.unwrap();
    assert!(matches!(
        c.get_stream("k", 0).await,
        Err(Error::InvalidInput { .. })
    ));
}

/// A TTL too long to store is `InvalidInput` on every write path (never a
/// panic, never a silently shortened TTL), and leaves the previous value; the
/// longest accepted one is kept.
pub async fn extreme_ttls_are_refused_cleanly(h: &Harness) {
    let c = &*h.cache;
    c.set("k", "before".into(), SetOptions::new())
        .await
        .unwrap();
    for ttl in [
        Duration::MAX,
        Duration::from_secs(u64::MAX),
        Duration::from_secs(10_000_000_000_000_000_000),
        crate::MAX_TTL + Duration::from_secs(1),
    ] {
        let opts = SetOptions::new().ttl(ttl);
        let e = c.set("k", "after".into(), opts).await.unwrap_err();
        assert!(
            matches!(e, Error::InvalidInput { .. }),
            "set, ttl {ttl:?}: {e}"
        );
        let e = c
            .set_stream("k", stream_of(vec![Bytes::from_static(b"after")]), opts)
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::InvalidInput { .. }),
            "set_stream, ttl {ttl:?}: {e}"
        );
        let e = c
            .get_or_insert_with("fresh", opts, || async { Value::from("computed") })
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::InvalidInput { .. }),
            "get_or_insert_with, ttl {ttl:?}: {e}"
        );
        assert_eq!(c.get_text("k").await.unwrap().as_deref(), Some("before"));
        assert_eq!(c.get("fresh").await.unwrap(), None);
    }
    let meta = c
        .set("k", "longest".into(), SetOptions::new().ttl(crate::MAX_TTL))
        .await
        .unwrap();
    assert!(meta.expires.is_some());
    h.clock.advance(Duration::from_secs(3600 * 24 * 365));
    assert_eq!(c.get_text("k").await.unwrap().as_deref(), Some("longest"));
}

/// `SetOptions::expires_by` bounds the expiry of every kind of write:
/// the earlier of it and the TTL wins, an instant beyond [`crate::MAX_TTL`]
/// is brought in (not refused), and one already past stores nothing that
/// reads back.
pub async fn expires_by_bounds_the_expiry(h: &Harness) {
    let c = &*h.cache;
    let now = h.clock.now_for_tests();
    let soon = now + Duration::from_secs(10);
    let opts = SetOptions::new().ttl_seconds(3600).expires_by(soon);
    let m = c.set("set", "v".into(), opts).await.unwrap();
    assert_eq!(m.expires, Some(soon));
    let m = c
        .set_stream("stream", stream_of(vec![Bytes::from_static(b"v")]), opts)
        .await
        .unwrap();
    assert_eq!(m.expires, Some(soon));
    let only = SetOptions::new().expires_by(soon);
    let m = c.set("only", "v".into(), only).await.unwrap();
    assert_eq!(m.expires, Some(soon));
    c.get_or_insert_with("computed", only, || async { Value::from("v") })
        .await
        .unwrap();
    assert_eq!(
        c.head("computed").await.unwrap().unwrap().expires,
        Some(soon)
    );
    let later = SetOptions::new().ttl_seconds(5).expires_by(soon);
    let m = c.set("ttl first", "v".into(), later).await.unwrap();
    assert_eq!(m.expires, Some(now + Duration::from_secs(5)));
    let far = SetOptions::new().expires_by(now + crate::MAX_TTL * 2);
    let m = c.set("far", "v".into(), far).await.unwrap();
    assert!(m.expires.is_some_and(|e| e <= now + crate::MAX_TTL));
    let past = SetOptions::new().expires_by(now - Duration::from_secs(1));
    c.set("past", "v".into(), past).await.unwrap();
    assert_eq!(c.get("past").await.unwrap(), None);
    h.clock.advance(Duration::from_secs(9));
    for k in ["set", "stream", "only", "computed"] {
        assert!(c.get(k).await.unwrap().is_some(), "{k}");
    }
    h.clock.advance(Duration::from_secs(1));
    for k in ["set", "stream", "only", "computed", "ttl first"] {
        assert_eq!(c.get(k).await.unwrap(), None, "{k}");
        assert_eq!(c.head(k).await.unwrap(), None, "{k}");
    }
    assert!(c.get("far").await.unwrap().is_some());
}

/// A JSON document nesting `depth` arrays and objects.
pub fn nested_json(depth: usize) -> serde_json::Value {
    let mut doc = serde_json::json!("leaf");
    for i in 0..depth {
        doc = if i % 2 == 0 {
            serde_json::json!([i, doc])
        } else {
            serde_json::json!({"level": i, "next": doc})
        };
    }
    doc
}

/// JSON up to [`crate::MAX_JSON_DEPTH`] levels is stored and read back;
/// deeper JSON is refused with `InvalidInput` naming the key and the limit
/// (by `set_json`, `get_or_insert_with`, and by `set` where the backend
/// checks), or, where `set` takes it, read back as it went in: never stored
/// and then reported corrupt.
pub async fn json_too_deep_to_read_is_never_stored(h: &Harness) {
    let c = &*h.cache;
    let o = SetOptions::new();
    let deepest = nested_json(crate::MAX_JSON_DEPTH);
    c.set("k", Value::Json(deepest.clone()), o).await.unwrap();
    assert_eq!(
        c.get("k").await.unwrap(),
        Some(Value::Json(deepest.clone()))
    );
    let mut held = Value::Json(deepest);
    let refusal = |e: Error, what: &str| match e {
        Error::InvalidInput { message } => {
            assert!(
                message.contains("\"k\"") || message.contains("\"fresh\""),
                "{what}: the key is named: {message}"
            );
            assert!(
                message.contains(&crate::MAX_JSON_DEPTH.to_string()),
                "{what}: the limit is named: {message}"
            );
        }
        e => panic!("{what}: expected InvalidInput, got {e}"),
    };
    for depth in [crate::MAX_JSON_DEPTH + 1, 200, 1000] {
        let doc = nested_json(depth);
        for comp in [Compression::NONE, Compression::zstd()] {
            let o = SetOptions::new().compression(comp);
            match c.set("k", Value::Json(doc.clone()), o).await {
                Ok(_) => held = Value::Json(doc.clone()),
                Err(e) => refusal(e, &format!("set, depth {depth}")),
            }
            assert_eq!(
                c.get("k").await.unwrap().as_ref(),
                Some(&held),
                "depth {depth}, {comp}"
            );
            assert_eq!(
                c.get_entry("k").await.unwrap().map(|(_, v)| v).as_ref(),
                Some(&held)
            );
            let e = c.set_json("k", &doc, o).await.unwrap_err();
            refusal(e, &format!("set_json, depth {depth}"));
            let e = c
                .get_or_insert_with("fresh", o, || async { Value::Json(doc.clone()) })
                .await
                .unwrap_err();
            refusal(e, &format!("get_or_insert_with, depth {depth}"));
            assert_eq!(c.get("fresh").await.unwrap(), None);
            assert_eq!(c.get("k").await.unwrap().as_ref(), Some(&held));
        }
    }
}

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

/// `get_range` reads the logical bytes of a range, cut at the end, for
/// every kind and codec, across the blocks and chunks backends read in.
pub async fn ranges_read_the_logical_bytes(h: &Harness) {
    let c = &*h.cache;
    let mib = 1u64 << 20;
    let len = 3 * mib + 17;
    let data = sample_bytes(len as usize, 11);
    let ranges = [
        0..0,
        0..1,
        5..10,
        0..len,
        mib - 1..mib + 1,
        mib..2 * mib,
        2 * mib - 7..3 * mib + 3,
        len - 1..len,
        len - 3..len + 100,
        len..len + 5,
        len + 10..len + 20,
        7..u64::MAX,
    ];
    for comp in [Compression::NONE, Compression::zstd(), Compression::gzip()] {
        let meta = c
            .set(
                "big",
                Value::Bytes(Bytes::from(data.clone())),
                SetOptions::new().compression(comp),
            )
            .await
            .unwrap();
        for r in ranges.clone() {
            let (got_meta, got) = c.get_range("big", r.clone()).await.unwrap().unwrap();
            let end = r.end.min(len);
            let start = r.start.min(end);
            assert_eq!(
                &got[..],
                &data[start as usize..end as usize],
                "{comp}, range {r:?}"
            );
            assert_eq!(got_meta.logical_len, len, "{comp}, range {r:?}");
            assert_eq!(got_meta.created, meta.created, "{comp}, range {r:?}");
        }
    }
    // Every kind: the bytes a stream of it yields.
    c.set_json(
        "doc",
        &serde_json::json!({"a": [1, 2, 3], "b": "x"}),
        SetOptions::new(),
    )
    .await
    .unwrap();
    c.set("text", Value::Text("héllo wörld".into()), SetOptions::new())
        .await
        .unwrap();
    for key in ["doc", "text"] {
        let (_, all) = collect(c, key, 3).await.unwrap();
        for start in 0..all.len() as u64 {
            let (meta, got) = c.get_range(key, start..start + 4).await.unwrap().unwrap();
            let end = (start + 4).min(all.len() as u64);
            assert_eq!(
                &got[..],
                &all[start as usize..end as usize],
                "{key} at {start}"
            );
            assert_eq!(meta.logical_len, all.len() as u64);
        }
    }
    c.set("empty", Value::Bytes(Bytes::new()), SetOptions::new())
        .await
        .unwrap();
    let (meta, got) = c.get_range("empty", 0..10).await.unwrap().unwrap();
    assert_eq!((meta.logical_len, got.len()), (0, 0));
    assert!(c.get_range("missing", 0..10).await.unwrap().is_none());
    // A range that starts after its end, on purpose.
    #[allow(clippy::reversed_empty_ranges)]
    let backwards = 10..5;
    assert!(matches!(
        c.get_range("big", backwards).await,
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        c.get_range("", 0..1).await,
        Err(Error::InvalidKey { .. })
    ));
    // Expired entries are misses, as for `get`.
    c.set(
        "short",
        Value::Text("brief".into()),
        SetOptions::new().ttl_seconds(5),
    )
    .await
    .unwrap();
    h.clock.advance(Duration::from_secs(6));
    assert!(c.get_range("short", 0..2).await.unwrap().is_none());
}

/// Ranges read while other tasks replace the entry each come from one
/// version: the bytes and the metadata of the same one, never a mix.
pub async fn ranges_come_from_one_version(h: &Harness) {
    let mib = 1usize << 20;
    // Versions of different lengths and contents, uncompressed and not.
    let versions: Vec<Vec<u8>> = (0..6)
        .map(|i| sample_bytes(2 * mib + i * 100_003, 100 + i as u64))
        .collect();
    h.cache
        .set(
            "v",
            Value::Bytes(Bytes::from(versions[0].clone())),
            SetOptions::new(),
        )
        .await
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2 {
        let (c, versions) = (h.cache.clone(), versions.clone());
        writers.push(tokio::spawn(async move {
            for round in 0..6 {
                let i = (w + round * 2) % versions.len();
                let comp = if round % 2 == 0 {
                    Compression::NONE
                } else {
                    Compression::zstd()
                };
                c.set(
                    "v",
                    Value::Bytes(Bytes::from(versions[i].clone())),
                    SetOptions::new().compression(comp),
                )
                .await
                .unwrap();
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut readers = Vec::new();
    for r in 0..3u64 {
        let (c, versions, stop) = (h.cache.clone(), versions.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0;
            let mut at = r * 300_007;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) || reads < 5 {
                let range = at..at + 70_000;
                let (meta, got) = c.get_range("v", range.clone()).await.unwrap().unwrap();
                let v = versions
                    .iter()
                    .find(|v| v.len() as u64 == meta.logical_len)
                    .expect("the metadata of a version that was set");
                let end = range.end.min(v.len() as u64);
                let start = range.start.min(end);
                assert_eq!(
                    &got[..],
                    &v[start as usize..end as usize],
                    "a range mixed versions, or did not match its metadata"
                );
                reads += 1;
                at = (at + 524_309) % (2 * mib as u64);
                tokio::task::yield_now().await;
            }
            reads
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for r in readers {
        assert!(r.await.unwrap() >= 5);
    }
}

/// Dropping a stream part way leaves the entry readable.
pub async fn dropped_stream_reader_leaves_entry(h: &Harness) {
    let c = &*h.cache;
    let data = sample_bytes(2_000_000, 5);
    c.set(
        "k",
        Value::Bytes(Bytes::from(data.clone())),
        SetOptions::new().compress(true),
    )
    .await
    .unwrap();
    let mut s = c.get_stream("k", 1000).await.unwrap().unwrap();
    assert_eq!(s.next().await.unwrap().unwrap().len(), 1000);
    drop(s);
    assert_eq!(c.get_bytes("k").await.unwrap().as_deref(), Some(&data[..]));
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

fn assert_kind_mismatch<T: std::fmt::Debug>(r: crate::Result<T>, expected: Kind, found: Kind) {
    match r {
        Err(e @ Error::KindMismatch { .. }) => {
            let text = e.to_string();
            let Error::KindMismatch {
                key,
                expected: e_expected,
                found: e_found,
            } = e
            else {
                unreachable!()
            };
            assert_eq!((e_expected, e_found), (expected, found), "{text}");
            assert!(text.contains(found.as_str()), "{text}");
            assert!(text.contains(&key), "{text}");
        }
        other => panic!("expected KindMismatch ({expected} asked, {found} found), got {other:?}"),
    }
}

fn assert_invalid_input<T: std::fmt::Debug>(r: crate::Result<T>) {
    assert!(
        matches!(r, Err(Error::InvalidInput { .. })),
        "expected InvalidInput, got {r:?}"
    );
}

/// A byte payload stored with kind Arrow reads back as the same bytes; its
/// metadata (`get_entry`, `head`, `list`, `get_stream`) says arrow; typed
/// reads as text or JSON are a `KindMismatch` naming arrow. Streams take the
/// kind too, and a later plain write stores bytes again.
pub async fn arrow_kind_roundtrips(h: &Harness) {
    let c = &*h.cache;
    let data = Bytes::from(sample_bytes(40_000, 21));
    for (i, compression) in [Compression::NONE, Compression::zstd(), Compression::gzip()]
        .into_iter()
        .enumerate()
    {
        let key = format!("table-{i}");
        let opts = SetOptions::new().compression(compression).kind(Kind::Arrow);
        let set = c.set(&key, Value::Bytes(data.clone()), opts).await.unwrap();
        assert_eq!(set.kind, Kind::Arrow);
        assert_eq!(set.codec, compression.codec());
        assert_eq!(c.get(&key).await.unwrap(), Some(Value::Bytes(data.clone())));
        let (meta, value) = c.get_entry(&key).await.unwrap().unwrap();
        assert_eq!(
            (meta.kind, value),
            (Kind::Arrow, Value::Bytes(data.clone()))
        );
        assert_eq!(c.head(&key).await.unwrap().unwrap().kind, Kind::Arrow);
        let s = c.get_stream(&key, 4096).await.unwrap().unwrap();
        assert_eq!(s.meta().kind, Kind::Arrow);
        let chunks: Vec<Bytes> = s.try_collect().await.unwrap();
        assert_eq!(chunks.concat(), data);
        assert_eq!(c.get_bytes(&key).await.unwrap(), Some(data.clone()));
        assert_kind_mismatch(c.get_text(&key).await, Kind::Text, Kind::Arrow);
        assert_kind_mismatch(
            c.get_json::<serde_json::Value>(&key).await,
            Kind::Json,
            Kind::Arrow,
        );
    }
    let listed: Vec<_> = c.list(Some("table-")).try_collect().await.unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|m| m.kind == Kind::Arrow), "{listed:?}");

    let chunks: Vec<Bytes> = data.chunks(7000).map(Bytes::copy_from_slice).collect();
    let streamed = c
        .set_stream(
            "streamed",
            stream_of(chunks),
            SetOptions::new()
                .compression(Compression::zstd())
                .kind(Kind::Arrow),
        )
        .await
        .unwrap();
    assert_eq!(streamed.kind, Kind::Arrow);
    assert_eq!(c.head("streamed").await.unwrap().unwrap().kind, Kind::Arrow);
    let (_, back) = collect(c, "streamed", 1000).await.unwrap();
    assert_eq!(back, data);

    // Stored again without a kind: plain bytes.
    c.set("table-0", Value::Bytes(data.clone()), SetOptions::new())
        .await
        .unwrap();
    assert_eq!(c.head("table-0").await.unwrap().unwrap().kind, Kind::Bytes);
    let kind = SetOptions::new().kind(Kind::Bytes);
    c.set_stream("streamed", stream_of(vec![data.clone()]), kind)
        .await
        .unwrap();
    assert_eq!(c.head("streamed").await.unwrap().unwrap().kind, Kind::Bytes);
}

/// Only byte payloads take a kind: text as the kind of a write, JSON as the
/// kind of a stream or of bytes that are not JSON, or a kind on a text or
/// JSON value, is `InvalidInput`, and the previous value stays as it was.
pub async fn kind_only_on_byte_payloads(h: &Harness) {
    let c = &*h.cache;
    c.set("k", Value::from("before"), SetOptions::new())
        .await
        .unwrap();
    let bytes = Value::Bytes(Bytes::from_static(b"payload"));
    for kind in [Kind::Text, Kind::Json] {
        let opts = SetOptions::new().kind(kind);
        // Each refusal names the key it was for.
        fn names<T>(r: crate::Result<T>, key: &str) -> crate::Result<T> {
            let text = r
                .as_ref()
                .err()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(text.contains(&format!("{key:?}")), "{text:?} names {key:?}");
            r
        }
        assert_invalid_input(names(c.set("k", bytes.clone(), opts).await, "k"));
        assert_invalid_input(names(
            c.set_stream("k", stream_of(vec![bytes.to_bytes()]), opts)
                .await,
            "k",
        ));
        assert_invalid_input(names(
            c.get_or_insert_with("new", opts, || async { Value::from("x") })
                .await,
            "new",
        ));
    }
    let arrow = SetOptions::new().kind(Kind::Arrow);
    assert_invalid_input(c.set("k", Value::from("text"), arrow).await);
    assert_invalid_input(
        c.set("k", Value::Json(serde_json::json!({"a": 1})), arrow)
            .await,
    );
    assert_invalid_input(c.set_json("k", &[1, 2], arrow).await);
    assert_invalid_input(c.set_text("k", "text", arrow).await);
    assert_eq!(c.get_text("k").await.unwrap().as_deref(), Some("before"));
    assert_eq!(c.head("k").await.unwrap().unwrap().kind, Kind::Text);
    assert_eq!(c.get("new").await.unwrap(), None);
}

/// Whole bytes written with kind JSON make a JSON entry: stored verbatim
/// (`get_raw` gives the text back byte for byte: key order, number digits,
/// spacing), read as the `Value::Json` of that text, reported as JSON by
/// `head`, `list` and `get_entry`, compressed or not. A document nested as
/// deep as a JSON value may be is taken, one level more is not. Bytes that
/// the reader could not read as JSON are refused as `InvalidInput` naming the
/// key, and so is any stream (or writer) with kind JSON: nothing is stored,
/// the previous value stays.
pub async fn json_bytes_store_a_json_entry(h: &Harness) {
    let c = &*h.cache;
    let doc: &[u8] =
        "{\"b\": 1, \"a\": [2.50, 1e300, 1180591620717411303424, -3], \"t\": \"\u{e9}t\u{e9}\"}"
            .as_bytes();
    let parsed: serde_json::Value = serde_json::from_slice(doc).unwrap();
    for (i, compression) in [Compression::NONE, Compression::zstd()]
        .into_iter()
        .enumerate()
    {
        let key = format!("doc-{i}");
        let opts = SetOptions::new().compression(compression).kind(Kind::Json);
        let set = c
            .set(&key, Value::Bytes(Bytes::from_static(doc)), opts)
            .await
            .unwrap();
        assert_eq!((set.kind, set.logical_len), (Kind::Json, doc.len() as u64));
        assert_eq!(
            c.get(&key).await.unwrap(),
            Some(Value::Json(parsed.clone()))
        );
        let (meta, value) = c.get_entry(&key).await.unwrap().unwrap();
        assert_eq!(
            (meta.kind, value),
            (Kind::Json, Value::Json(parsed.clone()))
        );
        let (meta, raw) = c.get_raw(&key).await.unwrap().unwrap();
        assert_eq!((meta.kind, &raw[..]), (Kind::Json, doc));
        assert_eq!(c.head(&key).await.unwrap().unwrap().kind, Kind::Json);
        let typed = c.get_json::<serde_json::Value>(&key).await.unwrap();
        assert_eq!(typed, Some(parsed.clone()));
    }
    let listed: Vec<_> = c.list(Some("doc-")).try_collect().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|m| m.kind == Kind::Json), "{listed:?}");

    let json = SetOptions::new().kind(Kind::Json);
    let nested = |depth: usize| Bytes::from(format!("{}0{}", "[".repeat(depth), "]".repeat(depth)));
    c.set("deep", Value::Bytes(nested(MAX_JSON_DEPTH)), json)
        .await
        .unwrap();
    let (meta, back) = c.get_entry("deep").await.unwrap().unwrap();
    assert_eq!(meta.kind, Kind::Json);
    assert_eq!(back.to_bytes(), nested(MAX_JSON_DEPTH));

    c.set("j", Value::from("before"), SetOptions::new())
        .await
        .unwrap();
    let too_deep = nested(MAX_JSON_DEPTH + 1);
    let refused: [&[u8]; 7] = [
        b"{\"a\": 1",
        b"{\"a\": 1} trailing",
        b"",
        b"[\"\\ud800\"]",
        b"[\"\xff\"]",
        b"[1e400]",
        &too_deep,
    ];
    for bad in refused {
        for key in ["j", "fresh"] {
            let r = c
                .set(key, Value::Bytes(Bytes::copy_from_slice(bad)), json)
                .await;
            let text = r
                .as_ref()
                .err()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(text.contains(&format!("{key:?}")), "{text:?} names {key:?}");
            assert_invalid_input(r);
        }
    }
    let r = c
        .set_stream("j", stream_of(vec![Bytes::from_static(doc)]), json)
        .await;
    let text = r
        .as_ref()
        .err()
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(
        text.contains("\"j\"") && text.contains("stream"),
        "{text:?}"
    );
    assert_invalid_input(r);
    assert_invalid_input(
        c.set_stream("fresh", stream_of(vec![Bytes::from_static(doc)]), json)
            .await,
    );
    // A writer streams too: refused at its first write or at its commit.
    use tokio::io::AsyncWriteExt;
    let mut w = c.writer("fresh", json);
    let refused = match w.write_all(doc).await {
        Ok(()) => matches!(w.commit().await, Err(Error::InvalidInput { .. })),
        Err(e) => matches!(
            e.get_ref().and_then(|i| i.downcast_ref::<Error>()),
            Some(Error::InvalidInput { .. })
        ),
    };
    assert!(refused, "a writer with kind json is refused");
    assert_eq!(c.get_text("j").await.unwrap().as_deref(), Some("before"));
    assert_eq!(c.get("fresh").await.unwrap(), None);
    assert_eq!(c.head("fresh").await.unwrap(), None);
}

/// `get_or_insert_with` stores a computed byte payload with the kind of its
/// options, and a later call returns it without computing.
pub async fn computed_values_keep_the_kind(h: &Harness) {
    let c = &*h.cache;
    let data = Bytes::from(sample_bytes(3000, 5));
    let opts = SetOptions::new()
        .compression(Compression::zstd())
        .kind(Kind::Arrow);
    let v = c
        .get_or_insert_with("t", opts, || {
            let data = data.clone();
            async move { Value::Bytes(data) }
        })
        .await
        .unwrap();
    assert_eq!(v, Value::Bytes(data.clone()));
    assert_eq!(c.head("t").await.unwrap().unwrap().kind, Kind::Arrow);
    let v = c
        .get_or_insert_with("t", opts, || async { panic!("must not run") })
        .await
        .unwrap();
    assert_eq!(v, Value::Bytes(data.clone()));
    let (meta, _) = c.get_entry("t").await.unwrap().unwrap();
    assert_eq!(meta.kind, Kind::Arrow);
    // A computed text cannot be stored as Arrow, and nothing is stored.
    assert_invalid_input(
        c.get_or_insert_with("u", opts, || async { Value::from("text") })
            .await,
    );
    assert_eq!(c.get("u").await.unwrap(), None);
}

impl ManualClock {
    /// The clock's time; for the suite.
    pub fn now_for_tests(&self) -> std::time::SystemTime {
        crate::Clock::now(self)
    }
}
