//! Batches come back exactly, on every backend, as an Arrow IPC file that
//! arrow's own file reader opens; bad input is a clear error naming the key
//! and publishes nothing.

mod common;

use std::io::Cursor;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_ipc::reader::FileReader;
use arrow_schema::ArrowError;
use bytes::Bytes;
use common::*;
use etl_cache_arrow::{ArrowCacheExt, ArrowOptions, IpcCompression};
use etl_cache_core::testing::{Hooks, Op};
use etl_cache_core::{
    Cache, CacheExt, Codec, DynCache, Error, Kind, MemoryCache, SetOptions, Value,
};
use futures::stream::{self, StreamExt};

async fn backends(dir: &std::path::Path) -> Vec<(&'static str, Arc<dyn Cache>)> {
    let disk = disk(&dir.join("disk")).await;
    let object = etl_cache_object::ObjectCache::builder()
        .url("memory://")
        .build()
        .unwrap();
    let tiered = etl_cache_tiered::TieredCache::builder()
        .tier(common::disk(&dir.join("tiered")).await)
        .build()
        .unwrap();
    vec![
        ("memory", Arc::new(MemoryCache::new())),
        ("disk", disk),
        ("object", Arc::new(object)),
        ("tiered", Arc::new(tiered)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_round_trip_exactly_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    let written = vec![batch(1, 1000), batch(2, 0), batch(3, 17), batch(4, 2500)];
    for (name, cache) in backends(dir.path()).await {
        for compression in [
            IpcCompression::Zstd,
            IpcCompression::Lz4,
            IpcCompression::None,
        ] {
            let key = format!("table/{compression:?}");
            let opts = ArrowOptions::new()
                .compression(compression)
                .ttl_seconds(600);
            let meta = cache
                .set_batches(&key, schema(), batches(written.clone()), opts)
                .await
                .unwrap();
            assert_eq!(
                (meta.kind, meta.codec),
                (Kind::Arrow, Codec::None),
                "{name}"
            );
            let (s, read) = collect(cache.get_batches(&key).await.unwrap()).await;
            assert_eq!(s, schema(), "{name}: schema and its metadata");
            assert_eq!(read, written, "{name} {compression:?}");
            let head = cache.head(&key).await.unwrap().unwrap();
            assert_eq!(head.kind, Kind::Arrow);

            // The payload as stored is an Arrow IPC file: arrow's own file
            // reader (footer first) gives the same schema and batches.
            let bytes = cache.get_bytes(&key).await.unwrap().unwrap();
            let file = FileReader::try_new(Cursor::new(bytes.to_vec()), None).unwrap();
            assert_eq!(file.schema(), schema());
            let direct: Vec<RecordBatch> = file.map(Result::unwrap).collect();
            assert_eq!(
                direct, written,
                "{name} {compression:?}: read by FileReader"
            );
        }
        // Compression makes the entry smaller than without.
        let size = |c| {
            let cache = cache.clone();
            async move {
                cache
                    .head(&format!("table/{c:?}"))
                    .await
                    .unwrap()
                    .unwrap()
                    .logical_len
            }
        };
        assert!(size(IpcCompression::Zstd).await < size(IpcCompression::None).await);
        assert!(size(IpcCompression::Lz4).await < size(IpcCompression::None).await);
    }
}

#[tokio::test]
async fn zero_batches_keep_the_schema() {
    let cache = MemoryCache::new();
    set_list(&cache, "empty", vec![]).await.unwrap();
    let (s, read) = collect(cache.get_batches("empty").await.unwrap()).await;
    assert_eq!((s, read.len()), (schema(), 0));
    let bytes = cache.get_bytes("empty").await.unwrap().unwrap();
    let file = FileReader::try_new(Cursor::new(bytes.to_vec()), None).unwrap();
    assert_eq!(file.schema(), schema());
    assert_eq!(file.count(), 0);
}

#[tokio::test]
async fn misses_are_none() {
    let cache = MemoryCache::new();
    assert!(cache.get_batches("nothing").await.unwrap().is_none());
}

#[tokio::test]
async fn one_dictionary_for_every_batch_round_trips() {
    let cache = MemoryCache::new();
    let cities = ["Lyon", "Oslo", "Lima", "Kyiv"];
    let written = vec![
        batch_with_cities(1, 50, &cities),
        batch_with_cities(2, 70, &cities),
    ];
    set_list(&cache, "dict", written.clone()).await.unwrap();
    let (_, read) = collect(cache.get_batches("dict").await.unwrap()).await;
    assert_eq!(read, written);
}

/// arrow-rs's file writer refuses a dictionary that changes between batches
/// (the IPC file format has no dictionary replacement): a clear error naming
/// the key and the batch; nothing is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dictionary_that_changes_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let cache = disk(dir.path()).await;
    cache
        .set("k", Value::from("previous"), SetOptions::new())
        .await
        .unwrap();
    for second in [
        &["Lyon", "Oslo", "Rome"][..],
        &["Lyon", "Oslo", "Lima", "Kyiv"][..],
    ] {
        let written = vec![
            batch_with_cities(1, 20, &["Lyon", "Oslo", "Lima"]),
            batch_with_cities(2, 20, second),
        ];
        let err = cache
            .set_batches("k", schema(), batches(written), ArrowOptions::new())
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
        assert!(text.contains("\"k\"") && text.contains("batch 1"), "{text}");
        assert!(text.contains("dictionary"), "{text}");
        assert_eq!(
            cache.get_text("k").await.unwrap().as_deref(),
            Some("previous")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_that_disagree_with_the_schema_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = disk(dir.path()).await;
    set_list(&*cache, "k", vec![batch(1, 5)]).await.unwrap();
    let other = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
        "id",
        arrow_schema::DataType::Int32,
        false,
    )]));
    let wrong_type = RecordBatch::try_new(
        other,
        vec![Arc::new(arrow_array::Int32Array::from(vec![1, 2]))],
    )
    .unwrap();
    let err = set_list(&*cache, "k", vec![batch(2, 5), wrong_type])
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
    assert!(text.contains("\"k\"") && text.contains("batch 1"), "{text}");

    // Nulls in a field the schema declares non-nullable.
    let nullable_id = arrow_schema::Schema::new(
        schema()
            .fields()
            .iter()
            .map(|f| {
                let f = f.as_ref().clone();
                if f.name() == "id" {
                    f.with_nullable(true)
                } else {
                    f
                }
            })
            .collect::<Vec<_>>(),
    );
    let mut columns = batch(3, 3).columns().to_vec();
    columns[0] = Arc::new(arrow_array::Int64Array::from(vec![Some(1), None, Some(3)]));
    let with_nulls = RecordBatch::try_new(Arc::new(nullable_id), columns).unwrap();
    let err = set_list(&*cache, "k", vec![with_nulls]).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
    assert!(err.to_string().contains("batch 0"), "{err}");

    let (_, read) = collect(cache.get_batches("k").await.unwrap()).await;
    assert_eq!(read, vec![batch(1, 5)], "the previous value is intact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_batch_stream_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = disk(dir.path()).await;
    set_list(&*cache, "k", vec![batch(1, 5)]).await.unwrap();
    let failing = stream::iter(vec![
        Ok(batch(2, 5)),
        Ok(batch(3, 5)),
        Err(ArrowError::ComputeError("upstream query failed".into())),
    ]);
    let err = cache
        .set_batches("k", schema(), failing, ArrowOptions::new())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Stream { .. }), "{err:?}");
    assert!(
        text.contains("\"k\"") && text.contains("upstream query failed"),
        "{text}"
    );
    let (_, read) = collect(cache.get_batches("k").await.unwrap()).await;
    assert_eq!(read, vec![batch(1, 5)]);
    // A key never written stays missing.
    let failing = stream::iter(vec![Err::<RecordBatch, _>(ArrowError::ComputeError(
        "no".into(),
    ))]);
    assert!(
        cache
            .set_batches("fresh", schema(), failing, ArrowOptions::new())
            .await
            .is_err()
    );
    assert!(cache.get_batches("fresh").await.unwrap().is_none());
}

#[tokio::test]
async fn other_kinds_are_a_kind_mismatch_and_arrow_is_not_text() {
    let cache = MemoryCache::new();
    set_raw(
        &cache,
        "bytes",
        Bytes::from_static(b"ARROW1"),
        SetOptions::new(),
    )
    .await;
    cache
        .set_text("text", "hello", SetOptions::new())
        .await
        .unwrap();
    for (key, found) in [("bytes", Kind::Bytes), ("text", Kind::Text)] {
        match cache.get_batches(key).await {
            Err(Error::KindMismatch {
                key: k,
                expected,
                found: f,
            }) => assert_eq!((k.as_str(), expected, f), (key, Kind::Arrow, found)),
            other => panic!(
                "expected KindMismatch, got {:?}",
                other.map(|o| o.is_some())
            ),
        }
    }
    set_list(&cache, "t", vec![batch(1, 3)]).await.unwrap();
    let err = cache.get_text("t").await.unwrap_err();
    assert!(
        err.to_string().contains("arrow") && err.to_string().contains("\"t\""),
        "{err}"
    );
    assert!(matches!(
        cache.get_json::<serde_json::Value>("t").await,
        Err(Error::KindMismatch {
            found: Kind::Arrow,
            ..
        })
    ));
}

/// A payload stored as Arrow that is not a whole IPC file (cut anywhere, or
/// with a byte of its framing changed) is an error naming the key, never a
/// wrong or short set of batches.
#[tokio::test]
async fn truncated_or_damaged_payloads_are_errors() {
    let cache = MemoryCache::new();
    let written = vec![batch(1, 40), batch(2, 40)];
    set_list(&cache, "good", written.clone()).await.unwrap();
    let file = cache.get_bytes("good").await.unwrap().unwrap();
    let arrow = SetOptions::new().kind(Kind::Arrow);
    let read_all = |bytes: Bytes| {
        let cache = cache.clone();
        async move {
            cache.set("bad", Value::Bytes(bytes), arrow).await.unwrap();
            let (_, stream) = cache.get_batches("bad").await?.expect("stored");
            stream
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<Vec<_>, Error>>()
        }
    };
    let step = (file.len() / 97).max(1);
    for cut in (0..file.len())
        .step_by(step)
        .chain([file.len() - 1, file.len() - 6])
    {
        let err = read_all(file.slice(..cut)).await.unwrap_err();
        assert!(err.to_string().contains("\"bad\""), "cut at {cut}: {err}");
    }
    // A trailing byte more, or the footer's magic changed.
    let mut longer = file.to_vec();
    longer.push(0);
    assert!(read_all(Bytes::from(longer)).await.is_err());
    let mut magic = file.to_vec();
    *magic.last_mut().unwrap() ^= 1;
    assert!(read_all(Bytes::from(magic)).await.is_err());
    // The whole file still reads.
    assert_eq!(read_all(file).await.unwrap(), written);
}

/// Single flight on one handle: the computation runs once and every caller
/// gets its batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_or_compute_computes_once() {
    let cache = MemoryCache::new();
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let calls = (0..8).map(|_| {
        let (cache, runs) = (cache.clone(), runs.clone());
        tokio::spawn(async move {
            let (s, stream) = cache
                .get_or_compute_batches("step", ArrowOptions::new(), || async {
                    runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    Ok::<_, ArrowError>((schema(), batches(vec![batch(7, 30), batch(8, 30)])))
                })
                .await
                .unwrap();
            (
                s,
                futures::TryStreamExt::try_collect::<Vec<_>>(stream)
                    .await
                    .unwrap(),
            )
        })
    });
    for call in futures::future::join_all(calls).await {
        let (s, read) = call.unwrap();
        assert_eq!((s, read), (schema(), vec![batch(7, 30), batch(8, 30)]));
    }
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(cache.head("step").await.unwrap().unwrap().kind, Kind::Arrow);
}

#[tokio::test]
async fn get_or_compute_failures_store_nothing() {
    let cache = MemoryCache::new();
    let err = failed(
        cache
            .get_or_compute_batches("step", ArrowOptions::new(), || async {
                Err::<(_, Batches), _>(ArrowError::ComputeError("query failed".into()))
            })
            .await,
    );
    match &err {
        Error::Init { key, source } => {
            assert_eq!(key, "step");
            assert!(source.to_string().contains("query failed"), "{source}");
        }
        other => panic!("expected Init, got {other:?}"),
    }
    let err = failed(
        cache
            .get_or_compute_batches("step", ArrowOptions::new(), || async {
                let failing = stream::iter(vec![
                    Ok(batch(1, 3)),
                    Err(ArrowError::ComputeError("stream failed".into())),
                ])
                .boxed();
                Ok::<_, ArrowError>((schema(), failing))
            })
            .await,
    );
    assert!(
        matches!(&err, Error::Init { .. }) && err.to_string().contains("stream failed"),
        "{err}"
    );
    let other = Arc::new(arrow_schema::Schema::empty());
    let err = failed(
        cache
            .get_or_compute_batches("step", ArrowOptions::new(), || async {
                Ok::<_, ArrowError>((other, batches(vec![batch(1, 3)])))
            })
            .await,
    );
    assert!(matches!(&err, Error::InvalidInput { .. }), "{err:?}");
    assert!(cache.get("step").await.unwrap().is_none());
}

/// A file written elsewhere (arrow's own writer, with the 8-byte alignment
/// pyarrow uses, or arrow-rs's default of 64) and stored as Arrow reads back
/// through the cache.
#[tokio::test]
async fn files_written_by_arrow_itself_read_back() {
    use arrow_ipc::MetadataVersion;
    use arrow_ipc::writer::{FileWriter, IpcWriteOptions};
    let cache = MemoryCache::new();
    let written = vec![batch(1, 30), batch(2, 0), batch(3, 12)];
    for alignment in [8, 64] {
        let options = IpcWriteOptions::try_new(alignment, false, MetadataVersion::V5).unwrap();
        let mut writer = FileWriter::try_new_with_options(Vec::new(), &schema(), options).unwrap();
        for b in &written {
            writer.write(b).unwrap();
        }
        writer.finish().unwrap();
        let file = writer.into_inner().unwrap();
        set_raw(&cache, "f", file, SetOptions::new().kind(Kind::Arrow)).await;
        let (s, read) = collect(cache.get_batches("f").await.unwrap()).await;
        assert_eq!(
            (s, read),
            (schema(), written.clone()),
            "alignment {alignment}"
        );
    }
}

/// A cache that reads the pieces of a stream slowly, counting them.
#[derive(Debug)]
struct SlowReader {
    inner: MemoryCache,
    received: Arc<std::sync::atomic::AtomicUsize>,
    /// When set, the next `get_stream` misses (as a read just before
    /// another writer's set would).
    miss_once: std::sync::atomic::AtomicBool,
}

#[etl_cache_core::async_trait]
impl Hooks for SlowReader {
    fn inner(&self) -> &DynCache {
        &self.inner
    }

    /// Each piece waits a few turns of the runtime, then counts.
    fn stream_in(
        &self,
        _key: &str,
        stream: etl_cache_core::ByteStream,
    ) -> etl_cache_core::ByteStream {
        let received = self.received.clone();
        stream
            .then(move |piece| {
                let received = received.clone();
                async move {
                    for _ in 0..5 {
                        tokio::task::yield_now().await;
                    }
                    received.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    piece
                }
            })
            .boxed()
    }

    fn miss(&self, op: Op, _key: &str) -> bool {
        op == Op::GetStream
            && self
                .miss_once
                .swap(false, std::sync::atomic::Ordering::SeqCst)
    }
}

#[etl_cache_core::async_trait]
impl Cache for SlowReader {
    etl_cache_core::forward_cache! {
        set, set_stream, get, get_stream, head, delete, list, purge_expired, clear, stats
    }
}

/// `set_batches` asks for a batch only when the cache has taken all but a
/// couple of the pieces encoded before it: a slow cache holds the producer
/// back instead of letting encoded batches pile up.
#[tokio::test]
async fn a_slow_cache_holds_the_batches_back() {
    use std::sync::atomic::Ordering::SeqCst;
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cache = SlowReader {
        inner: MemoryCache::new(),
        received: received.clone(),
        miss_once: false.into(),
    };
    let pulled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let most_ahead = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (p, r, m) = (pulled.clone(), received.clone(), most_ahead.clone());
    let source = stream::iter(0..30i64).map(move |i| {
        let encoded = p.fetch_add(1, SeqCst);
        // Pieces the cache took: the schema's, then one per batch.
        let taken = r.load(SeqCst).saturating_sub(1);
        m.fetch_max(encoded - taken.min(encoded), SeqCst);
        Ok::<_, ArrowError>(batch(i, 50))
    });
    cache
        .set_batches("k", schema(), source, ArrowOptions::new())
        .await
        .unwrap();
    assert_eq!(pulled.load(SeqCst), 30);
    let ahead = most_ahead.load(SeqCst);
    assert!(ahead <= 2, "{ahead} encoded batches waited for the cache");
    assert_eq!(
        collect(cache.get_batches("k").await.unwrap()).await.1.len(),
        30
    );
}

/// A plain byte entry stored between `get_or_compute_batches`' first look
/// (a miss) and its single flight (a hit on that entry) is a
/// `KindMismatch`, as `get_batches` says of it: it is not decoded, even when
/// its bytes are an Arrow file.
#[tokio::test]
async fn get_or_compute_checks_the_kind_of_an_entry_stored_meanwhile() {
    let cache = SlowReader {
        inner: MemoryCache::new(),
        received: Default::default(),
        miss_once: true.into(),
    };
    let elsewhere = MemoryCache::new();
    set_list(&elsewhere, "f", vec![batch(1, 3)]).await.unwrap();
    let file = elsewhere.get_bytes("f").await.unwrap().unwrap();
    cache
        .inner
        .set("k", Value::Bytes(file), SetOptions::new())
        .await
        .unwrap();
    let err = failed(
        cache
            .get_or_compute_batches("k", ArrowOptions::new(), || async {
                Ok::<_, ArrowError>((schema(), batches(vec![batch(2, 3)])))
            })
            .await,
    );
    match err {
        Error::KindMismatch {
            key,
            expected,
            found,
        } => assert_eq!(
            (key.as_str(), expected, found),
            ("k", Kind::Arrow, Kind::Bytes)
        ),
        other => panic!("expected KindMismatch, got {other:?}"),
    }
}

/// A batch encoded off the runtime's threads while the runtime shuts down is
/// an error naming the key (nothing stored), not a panic of the caller.
#[test]
fn a_runtime_shut_down_mid_encode_is_an_error_not_a_panic() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let handle = rt.handle().clone();
    drop(rt);
    let _entered = handle.enter();
    let cache = MemoryCache::new();
    // Large enough (over 1 MiB in memory) to be encoded on the blocking pool.
    let big = batch(1, 200_000);
    assert!(big.get_array_memory_size() > 1 << 20);
    let r = futures::executor::block_on(cache.set_batches(
        "k",
        schema(),
        batches(vec![big]),
        ArrowOptions::new(),
    ));
    match r {
        Err(Error::Backend { key, source, .. }) => {
            assert_eq!(key, "k");
            assert!(source.to_string().contains("cancelled"), "{source}");
        }
        other => panic!("expected a Backend error, got {other:?}"),
    }
    assert!(
        futures::executor::block_on(cache.get("k"))
            .unwrap()
            .is_none()
    );
}
