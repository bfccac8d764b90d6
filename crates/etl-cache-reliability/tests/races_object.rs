//! Races and extreme arguments on ObjectCache, made deterministic with a
//! wrapper store that stops a chosen call on a gate.
//!
//! - A read, listing or purge that judges an entry expired or corrupt must
//!   not delete a value another writer (another handle, or the same one)
//!   set after that judgment: the reader is held right after the GET it
//!   judged, the key is set, and the new value must survive.
//! - A stream of an entry whose body arrives in pieces of 1 to 7 bytes
//!   (the trailer split anywhere) is read whole, for empty and small
//!   entries and every codec.
//! - A huge chunk size is clamped to the entry; extreme lease settings are
//!   refused or saturate, never panic.

#[path = "../../etl-cache-object/tests/support/forward.rs"]
#[macro_use]
mod forward;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etl_cache_core::{
    Cache, CacheExt, Compression, Error, MAX_TTL, ManualClock, SetOptions, Value,
};
use etl_cache_object::ObjectCache;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, GetResultPayload, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, PutResult,
};
use tokio::sync::Notify;

/// Where a gated call stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    /// After a GET (whole or ranged, not a HEAD) of the path returned, before
    /// its body is read: the version it carries is the one judged.
    AfterGet,
    /// After a PUT of the path was applied, before it returns: the write
    /// has landed (as one on a blocking thread or a server may after its
    /// caller is gone) but its caller does not know yet.
    AfterPut,
}

/// A stop on a gate: the call signals `reached`, then waits for `release`.
#[derive(Debug, Default)]
struct Gate {
    reached: Notify,
    release: Notify,
}

#[derive(Debug, Default)]
struct Shared {
    /// An armed path matches itself and every path under it.
    armed: Mutex<Vec<(Point, Path, Arc<Gate>)>>,
    /// Re-cut every GET body into pieces of 1 to 7 bytes.
    rechunk: AtomicBool,
    /// Treat conditional creates as plain puts (a server that ignores
    /// `If-None-Match`).
    ignore_create: AtomicBool,
    deletes: AtomicUsize,
}

impl Shared {
    fn take(&self, point: Point, path: &Path) -> Option<Arc<Gate>> {
        let mut armed = self.armed.lock().unwrap();
        let i = armed
            .iter()
            .position(|(p, l, _)| *p == point && (l == path || path.prefix_matches(l)))?;
        Some(armed.remove(i).2)
    }

    async fn stop(&self, point: Point, path: &Path) {
        if let Some(gate) = self.take(point, path) {
            gate.reached.notify_one();
            gate.release.notified().await;
        }
    }
}

/// An InMemory store whose calls can be stopped on gates.
#[derive(Debug, Default)]
struct Gated {
    inner: InMemory,
    shared: Arc<Shared>,
}

impl Gated {
    /// The next call at `point` on `path` stops on the returned gate.
    fn arm(&self, point: Point, path: &Path) -> Arc<Gate> {
        let gate = Arc::new(Gate::default());
        self.shared
            .armed
            .lock()
            .unwrap()
            .push((point, path.clone(), gate.clone()));
        gate
    }

    fn deletes(&self) -> usize {
        self.shared.deletes.load(Ordering::SeqCst)
    }
}

impl std::fmt::Display for Gated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gated({})", self.inner)
    }
}

/// `all` in pieces of 1 to 7 bytes, cycling from `start`.
fn pieces(all: Bytes, start: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    let (mut at, mut n) = (0, start);
    while at < all.len() {
        let len = (n % 7 + 1).min(all.len() - at);
        out.push(all.slice(at..at + len));
        at += len;
        n += 1;
    }
    out
}

#[async_trait]
impl ObjectStore for Gated {
    forward_object_store!(inner; put_multipart_opts, list, list_with_delimiter, copy_opts);

    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        mut opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if opts.mode == PutMode::Create && self.shared.ignore_create.load(Ordering::SeqCst) {
            opts.mode = PutMode::Overwrite;
        }
        let put = self.inner.put_opts(location, payload, opts).await;
        self.shared.stop(Point::AfterPut, location).await;
        put
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let head = options.head;
        let mut r = self.inner.get_opts(location, options).await?;
        if head {
            return Ok(r);
        }
        self.shared.stop(Point::AfterGet, location).await;
        if self.shared.rechunk.load(Ordering::SeqCst) {
            let all = match r.payload {
                GetResultPayload::Stream(s) => {
                    let parts: Vec<Bytes> = s.try_collect().await?;
                    Bytes::from(parts.concat())
                }
                GetResultPayload::File(..) => unreachable!("InMemory streams"),
            };
            let start = r.range.start as usize;
            let parts = pieces(all, start);
            r.payload =
                GetResultPayload::Stream(futures::stream::iter(parts.into_iter().map(Ok)).boxed());
        }
        Ok(r)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let shared = self.shared.clone();
        let counted = locations
            .inspect(move |_| {
                shared.deletes.fetch_add(1, Ordering::SeqCst);
            })
            .boxed();
        self.inner.delete_stream(counted)
    }
}

fn handle(store: &Arc<Gated>, clock: &Arc<ManualClock>) -> ObjectCache {
    ObjectCache::builder()
        .store(store.clone())
        .prefix("etl/cache")
        .clock(clock.clone())
        .build()
        .expect("ObjectCache")
}

/// Flips the last byte of the object at `path` (a trailer checksum): every
/// read, `head` and listing reports the entry corrupt.
async fn damage(store: &Gated, path: &Path) {
    let mut bytes = store
        .inner
        .get(path)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body")
        .to_vec();
    *bytes.last_mut().expect("not empty") ^= 0x5A;
    store
        .inner
        .put(path, PutPayload::from(bytes))
        .await
        .expect("put");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judged {
    Expired,
    Corrupt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    Get,
    GetStream,
    Head,
    List,
    Purge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// Another handle on the same store (another host).
    OtherHandle,
    /// The reading handle itself, from another task.
    SameHandle,
    /// Another handle, after the reader's future was dropped at the gate.
    ReaderDropped,
}

/// What a reader did, reduced to what the race checks need.
async fn read(cache: ObjectCache, how: Reader, key: String) -> Result<(), Error> {
    match how {
        Reader::Get => cache.get(&key).await.map(drop),
        Reader::GetStream => match cache.get_stream(&key, 1000).await? {
            None => Ok(()),
            Some(s) => {
                let (_, mut s) = s.into_parts();
                while let Some(c) = s.next().await {
                    if let Err(e) = c {
                        return Err(Error::Stream {
                            key: key.clone(),
                            source: e,
                        });
                    }
                }
                Ok(())
            }
        },
        Reader::Head => cache.head(&key).await.map(drop),
        Reader::List => cache.list(None).try_collect::<Vec<_>>().await.map(drop),
        Reader::Purge => cache.purge_expired().await.map(drop),
    }
}

/// One race: `key` holds an entry that is `judged` (expired or corrupt);
/// a reader stops right after the GET that judges it; the key is set to a
/// new value; the reader goes on. The new value must survive.
async fn race(judged: Judged, how: Reader, writer: Writer, size: usize, codec: Compression) {
    let what = format!("{judged:?} entry of {size} bytes ({codec:?}), read by {how:?}, {writer:?}");
    let clock = Arc::new(ManualClock::new());
    let store = Arc::new(Gated::default());
    let a = handle(&store, &clock);
    let b = match writer {
        Writer::SameHandle => a.clone(),
        _ => handle(&store, &clock),
    };
    let key = "daily/report".to_string();
    let path = a.object_path(&key).unwrap();
    let old = Value::Bytes(Bytes::from(vec![7u8; size]));
    let opts = SetOptions::new().compression(codec);
    match judged {
        Judged::Expired => {
            a.set(&key, old, opts.ttl_seconds(10)).await.unwrap();
            clock.advance(Duration::from_secs(11));
        }
        Judged::Corrupt => {
            a.set(&key, old, opts).await.unwrap();
            damage(&store, &path).await;
        }
    }
    // A bystander, expired and untouched: a purge still removes it.
    a.set("bystander", "old".into(), SetOptions::new().ttl_seconds(1))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(2));

    let gate = store.arm(Point::AfterGet, &path);
    let reader = tokio::spawn(read(a.clone(), how, key.clone()));
    gate.reached.notified().await;
    let reader = if writer == Writer::ReaderDropped {
        reader.abort();
        assert!(reader.await.unwrap_err().is_cancelled(), "{what}");
        None
    } else {
        Some(reader)
    };
    let new = Value::Text("the newer value".into());
    b.set(&key, new.clone(), opts).await.unwrap();
    if let Some(reader) = reader {
        gate.release.notify_one();
        let got = reader.await.unwrap();
        // A corrupt entry is reported, unless the read needed a second
        // request (a trailer pinned to the e-tag), found the object changed
        // and started over on the newer value.
        if judged == Judged::Expired || matches!(how, Reader::List | Reader::Purge) {
            got.unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }
    // Let anything the reader may have spawned run before looking.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    for (name, cache) in [("reader", &a), ("writer", &b)] {
        assert_eq!(
            cache.get(&key).await.unwrap(),
            Some(new.clone()),
            "{what}: the value set after the judgment is gone (seen by the {name})"
        );
    }
    if how == Reader::Purge && writer != Writer::ReaderDropped {
        assert_eq!(
            a.head("bystander").await.unwrap(),
            None,
            "{what}: the bystander is expired"
        );
        assert!(
            store
                .inner
                .head(&a.object_path("bystander").unwrap())
                .await
                .is_err(),
            "{what}: the purge removed the unchanged expired bystander"
        );
    }
}

/// A read (get, get_stream, head), a listing or a purge that judged an
/// entry expired or corrupt never deletes a value set after its judgment,
/// whether by another handle, by the same handle, or after the reader was
/// dropped at that point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_judged_entry_is_never_removed_over_a_newer_value() {
    let mut cases = 0;
    for judged in [Judged::Expired, Judged::Corrupt] {
        for how in [
            Reader::Get,
            Reader::GetStream,
            Reader::Head,
            Reader::List,
            Reader::Purge,
        ] {
            if judged == Judged::Expired && how == Reader::List {
                continue; // a listing only hides expired entries
            }
            for writer in [
                Writer::OtherHandle,
                Writer::SameHandle,
                Writer::ReaderDropped,
            ] {
                for (size, codec) in [
                    (3, Compression::NONE),
                    (200_000, Compression::NONE),
                    (200_000, Compression::zstd()),
                    (5, Compression::gzip()),
                ] {
                    race(judged, how, writer, size, codec).await;
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 9 * 3 * 4);
}

/// Reads leave expired and corrupt entries in place (they are reported),
/// and a purge then removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_report_and_purge_removes() {
    let clock = Arc::new(ManualClock::new());
    let store = Arc::new(Gated::default());
    let c = handle(&store, &clock);
    c.set("gone", "x".into(), SetOptions::new().ttl_seconds(1))
        .await
        .unwrap();
    c.set("bad", "y".into(), SetOptions::new()).await.unwrap();
    damage(&store, &c.object_path("bad").unwrap()).await;
    clock.advance(Duration::from_secs(2));
    assert_eq!(c.get("gone").await.unwrap(), None);
    assert!(c.get_stream("gone", 10).await.unwrap().is_none());
    assert_eq!(c.head("gone").await.unwrap(), None);
    assert!(matches!(c.get("bad").await, Err(Error::Corrupt { .. })));
    assert!(matches!(c.head("bad").await, Err(Error::Corrupt { .. })));
    assert!(c.keys(None).await.unwrap().is_empty());
    assert_eq!(store.deletes(), 0, "reads deleted something");
    assert_eq!(c.stats().await.unwrap().entries, 2, "both are still stored");
    assert_eq!(c.purge_expired().await.unwrap(), 1);
    assert_eq!(
        c.stats().await.unwrap().entries,
        0,
        "the purge removed both"
    );
}

fn compressions() -> [Compression; 3] {
    [Compression::NONE, Compression::gzip(), Compression::zstd()]
}

async fn collect(c: &ObjectCache, key: &str, chunk: usize) -> Vec<u8> {
    let s = c
        .get_stream(key, chunk)
        .await
        .unwrap_or_else(|e| panic!("{key}, chunk {chunk}: {e}"))
        .unwrap_or_else(|| panic!("{key}: missing"));
    let (_, s) = s.into_parts();
    let chunks: Vec<Bytes> = s
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("{key}, chunk {chunk}: {e}"));
    if let Some((last, whole)) = chunks.split_last() {
        assert!(whole.iter().all(|c| c.len() == chunk), "{key}: chunk sizes");
        assert!(!last.is_empty() && last.len() <= chunk, "{key}: last chunk");
    }
    chunks.concat()
}

/// Empty and small entries of every codec and kind, stored by `set` and by
/// `set_stream`, stream back whole when the store sends their bodies in
/// pieces of 1 to 7 bytes (the trailer split anywhere), from two handles
/// and concurrently; nothing is reported corrupt or deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_entries_stream_whole_from_bodies_cut_in_tiny_pieces() {
    let clock = Arc::new(ManualClock::new());
    let store = Arc::new(Gated::default());
    let a = handle(&store, &clock);
    let b = handle(&store, &clock);
    let mut keys = Vec::new();
    for (ci, codec) in compressions().into_iter().enumerate() {
        for len in [0usize, 1, 2, 5, 31, 100, 3000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 + ci) as u8).collect();
            let opts = SetOptions::new().compression(codec);
            let k = format!("c{ci}/bytes/{len}");
            a.set(&k, Value::Bytes(Bytes::from(data.clone())), opts)
                .await
                .unwrap();
            keys.push((k, data.clone()));
            let k = format!("c{ci}/text/{len}");
            let text: String = data.iter().map(|b| char::from(b'a' + b % 26)).collect();
            a.set(&k, Value::Text(text.clone()), opts).await.unwrap();
            keys.push((k, text.into_bytes()));
            let k = format!("c{ci}/stream/{len}");
            let body = futures::stream::iter(
                pieces(Bytes::from(data.clone()), len)
                    .into_iter()
                    .map(Ok::<_, std::io::Error>),
            )
            .boxed();
            a.set_stream(&k, body, opts).await.unwrap();
            keys.push((k, data));
        }
    }
    store.shared.rechunk.store(true, Ordering::SeqCst);
    for (key, want) in &keys {
        for chunk in [1, 3, 4096] {
            let (x, y) = tokio::join!(collect(&a, key, chunk), collect(&b, key, chunk));
            assert_eq!(&x, want, "{key}, chunk {chunk}");
            assert_eq!(&y, want, "{key}, chunk {chunk} (second handle)");
        }
    }
    assert_eq!(store.deletes(), 0, "a valid entry was deleted");
    store.shared.rechunk.store(false, Ordering::SeqCst);
    assert_eq!(a.keys(None).await.unwrap().len(), keys.len());
}

/// A chunk size far beyond the entry (1 TiB, usize::MAX) streams the entry
/// in one chunk, for every codec, without allocating the chunk size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_chunk_sizes_are_clamped_to_the_entry() {
    let clock = Arc::new(ManualClock::new());
    let store = Arc::new(Gated::default());
    let c = handle(&store, &clock);
    for (ci, codec) in compressions().into_iter().enumerate() {
        for len in [0usize, 5, 300_000] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let key = format!("huge/{ci}/{len}");
            c.set(
                &key,
                Value::Bytes(Bytes::from(data.clone())),
                SetOptions::new().compression(codec),
            )
            .await
            .unwrap();
            for chunk in [1usize << 40, usize::MAX] {
                let ((), ()) = tokio::join!(
                    async {
                        let s = c.get_stream(&key, chunk).await.unwrap().unwrap();
                        let chunks: Vec<Bytes> = s.into_parts().1.try_collect().await.unwrap();
                        assert!(chunks.len() <= 1, "{key}: {} chunks", chunks.len());
                        assert_eq!(chunks.concat(), data, "{key}, chunk {chunk}");
                    },
                    async {
                        let s = c.get_stream(&key, chunk).await.unwrap().unwrap();
                        let got: Vec<Bytes> = s.into_parts().1.try_collect().await.unwrap();
                        assert_eq!(got.concat(), data, "{key}, chunk {chunk} (concurrent)");
                    }
                );
            }
        }
    }
}

/// Lease settings whose arithmetic would overflow are refused at build,
/// and the largest accepted ones (and an unlimited wait) work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_lease_settings_are_refused_or_work() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let build =
        |f: fn(etl_cache_object::ObjectCacheBuilder) -> etl_cache_object::ObjectCacheBuilder| {
            f(ObjectCache::builder().store(store.clone())).build()
        };
    for (name, r) in [
        (
            "lease_duration MAX",
            build(|b| b.lease_duration(Duration::MAX)),
        ),
        (
            "lease_duration above MAX_TTL",
            build(|b| b.lease_duration(MAX_TTL + Duration::from_secs(1))),
        ),
        (
            "zero poll interval",
            build(|b| b.lease_poll_interval(Duration::ZERO, Duration::from_secs(1))),
        ),
    ] {
        assert!(
            matches!(r, Err(Error::InvalidInput { .. })),
            "{name}: {r:?}"
        );
    }

    // The longest lease, an unlimited wait: single flight works.
    let longest = build(|b| b.lease_duration(MAX_TTL).lock_timeout(Duration::MAX)).unwrap();
    let v = longest
        .get_or_insert_with("k", SetOptions::new(), || async { Value::Text("v".into()) })
        .await
        .unwrap();
    assert_eq!(v, Value::Text("v".into()));

    // A waiter polling at the longest intervals while another handle holds
    // the key's lease times out cleanly.
    let holder = build(|b| b).unwrap();
    let waiter = build(|b| b.lease_poll_interval(Duration::MAX, Duration::MAX)).unwrap();
    let computing = Arc::new(Notify::new());
    let finish = Arc::new(Notify::new());
    let held = tokio::spawn({
        let (computing, finish) = (computing.clone(), finish.clone());
        async move {
            holder
                .get_or_insert_with("slow", SetOptions::new(), || async move {
                    computing.notify_one();
                    finish.notified().await;
                    Value::Text("computed".into())
                })
                .await
        }
    });
    computing.notified().await;
    let r = waiter
        .get_or_insert_with_timeout(
            "slow",
            SetOptions::new(),
            Duration::from_millis(200),
            || async { Ok::<_, Error>(Value::Text("twice".into())) },
        )
        .await;
    assert!(matches!(r, Err(Error::LockTimeout { .. })), "{r:?}");
    finish.notify_one();
    assert_eq!(held.await.unwrap().unwrap(), Value::Text("computed".into()));
}

/// A store that ignores conditional creates cannot give single flight
/// across hosts: `get_or_insert_with` says so (NotSupported) instead of
/// letting every caller win the lease, and computes nothing. On a store
/// that honours them, two handles compute once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_ignoring_conditional_creates_is_detected() {
    let clock = Arc::new(ManualClock::new());
    let store = Arc::new(Gated::default());
    store.shared.ignore_create.store(true, Ordering::SeqCst);
    let (a, b) = (handle(&store, &clock), handle(&store, &clock));
    let computed = Arc::new(AtomicUsize::new(0));
    let compute = |c: Arc<AtomicUsize>| async move {
        c.fetch_add(1, Ordering::SeqCst);
        Value::Text("v".into())
    };
    let (x, y) = tokio::join!(
        a.get_or_insert_with("k", SetOptions::new(), || compute(computed.clone())),
        b.get_or_insert_with("k", SetOptions::new(), || compute(computed.clone())),
    );
    for r in [x, y] {
        let e = r.expect_err("single flight on a store ignoring If-None-Match");
        let o = etl_cache_object::ObjectError::find(&e).expect("an ObjectError");
        assert_eq!(
            o.kind(),
            etl_cache_object::ObjectErrorKind::NotSupported,
            "{e}"
        );
    }
    assert_eq!(computed.load(Ordering::SeqCst), 0);
    assert_eq!(a.get("k").await.unwrap(), None);

    let honest = Arc::new(Gated::default());
    let (a, b) = (handle(&honest, &clock), handle(&honest, &clock));
    let (x, y) = tokio::join!(
        a.get_or_insert_with("k", SetOptions::new(), || compute(computed.clone())),
        b.get_or_insert_with("k", SetOptions::new(), || compute(computed.clone())),
    );
    assert_eq!(
        (x.unwrap(), y.unwrap()),
        (Value::Text("v".into()), Value::Text("v".into()))
    );
    assert_eq!(computed.load(Ordering::SeqCst), 1);
    let probes: Vec<_> = honest.inner.list(None).try_collect().await.unwrap();
    assert!(
        probes
            .iter()
            .all(|m| !m.location.as_ref().contains("probe")),
        "the probe objects were removed: {probes:?}"
    );
}

/// `stats` counts no object too small to be an entry, whatever its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_skip_objects_too_small_to_be_entries() {
    let clock = Arc::new(ManualClock::new());
    let store = Arc::new(Gated::default());
    let c = handle(&store, &clock);
    c.set("real", "x".into(), SetOptions::new()).await.unwrap();
    for name in ["notes", "data/part-0", "x"] {
        let path = Path::from(format!("etl/cache/{name}"));
        store
            .inner
            .put(&path, PutPayload::from_static(b"hi\n"))
            .await
            .unwrap();
    }
    let s = c.stats().await.unwrap();
    assert_eq!(s.entries, 1, "foreign objects counted as entries");
    assert_eq!(s.bytes, c.head("real").await.unwrap().unwrap().size);
}

/// Where a `get_or_insert_with` is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DropAt {
    /// Its lease create was applied, and has not returned yet.
    LeaseCreate,
    /// Its computation is under way.
    Computing,
    /// Its value was written, and the write has not returned yet.
    Publish,
    /// It is reading its lease back to release it.
    Release,
}

/// A `get_or_insert_with` dropped at `at`; then a second caller on the
/// same key (through the same handle or another), with a short timeout.
/// The clock stands still, so a lease left behind would never expire.
async fn dropped_flight(at: DropAt, same_handle: bool) {
    let what = format!("dropped at {at:?}, second caller on the same handle: {same_handle}");
    let clock = Arc::new(ManualClock::new());
    let store = Arc::new(Gated::default());
    let a = handle(&store, &clock);
    let b = if same_handle {
        a.clone()
    } else {
        handle(&store, &clock)
    };
    let key = "extract/day";
    let leases = Path::from("etl/cache/.etl-cache/leases");
    let gate = match at {
        DropAt::LeaseCreate => Some(store.arm(Point::AfterPut, &leases)),
        DropAt::Computing => None,
        DropAt::Publish => Some(store.arm(Point::AfterPut, &a.object_path(key).unwrap())),
        DropAt::Release => Some(store.arm(Point::AfterGet, &leases)),
    };
    let computing = Arc::new(Notify::new());
    let first = {
        let (a, computing) = (a.clone(), computing.clone());
        tokio::spawn(async move {
            a.get_or_insert_with_timeout(key, SetOptions::new(), Duration::from_secs(2), || {
                async move {
                    computing.notify_one();
                    // Long enough to be dropped here when asked to.
                    if at == DropAt::Computing {
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, Error>(Value::Text("first".into()))
                }
            })
            .await
        })
    };
    match &gate {
        Some(g) => g.reached.notified().await,
        None => computing.notified().await,
    }
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled(), "{what}");
    if let Some(g) = &gate {
        // The store call the caller was waiting for now returns, to nobody.
        g.release.notify_one();
    }
    let got = b
        .get_or_insert_with_timeout(key, SetOptions::new(), Duration::from_secs(2), || async {
            Ok::<_, Error>(Value::Text("second".into()))
        })
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let expected = if at == DropAt::Publish || at == DropAt::Release {
        "first" // written before the drop
    } else {
        "second"
    };
    assert_eq!(got, Value::Text(expected.into()), "{what}");
    // Once everything settled, no lease is left.
    for _ in 0..50 {
        let left: Vec<_> = store.inner.list(Some(&leases)).try_collect().await.unwrap();
        if left.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: a lease is left behind");
}

/// A `get_or_insert_with` dropped at any await point (its lease create,
/// its computation, its publish, its release) leaves no lease behind: the
/// next caller on the key, through the same handle or another, computes or
/// reads the value instead of timing out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_get_or_insert_with_leaves_no_lease_behind() {
    for at in [
        DropAt::LeaseCreate,
        DropAt::Computing,
        DropAt::Publish,
        DropAt::Release,
    ] {
        for same_handle in [true, false] {
            dropped_flight(at, same_handle).await;
        }
    }
}

/// How a dropped write is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LocalWrite {
    Set,
    SetStream,
}

/// A write to a `LocalFileSystem` dropped while its file work waits for a
/// blocking thread: nothing is published after the drop, and no staging
/// file is left. The runtime has one blocking thread, which the test keeps
/// busy at chosen moments, so the write is dropped exactly when its
/// publishing step is queued.
fn dropped_local_write(how: LocalWrite, from_dir: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let what = format!("{how:?}, opened with local_dir: {from_dir}");
        let dir = tempfile::tempdir().unwrap();
        let cache = if from_dir {
            ObjectCache::local_dir(dir.path().join("etl")).unwrap()
        } else {
            let store = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
            ObjectCache::builder()
                .store(Arc::new(store))
                .prefix("etl")
                .build()
                .unwrap()
        };
        let key = "day/report";
        // Holds the one blocking thread until told to let go.
        let hold = || {
            let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
            let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
            let job = tokio::task::spawn_blocking(move || {
                let _ = started_tx.send(());
                let _ = go_rx.recv();
            });
            (started_rx, go_tx, job)
        };
        let (first_started, first_go, first_job) = hold();
        first_started.await.unwrap();
        let mut write: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> = match how {
            LocalWrite::Set => Box::pin(cache.set(key, "dropped".into(), SetOptions::new())),
            LocalWrite::SetStream => Box::pin(cache.set_stream(
                key,
                futures::stream::iter([Ok(Bytes::from_static(b"dropped"))]).boxed(),
                SetOptions::new(),
            )),
        };
        // Its first step (a look at what stands at the path) is queued.
        assert!(futures::poll!(write.as_mut()).is_pending(), "{what}");
        let (second_started, second_go, second_job) = hold();
        first_go.send(()).unwrap();
        first_job.await.unwrap();
        second_started.await.unwrap();
        // The first step is done: the write goes on to publish, and waits
        // for the blocking thread.
        assert!(futures::poll!(write.as_mut()).is_pending(), "{what}");
        drop(write);
        second_go.send(()).unwrap();
        second_job.await.unwrap();
        // Everything queued before has run.
        tokio::task::spawn_blocking(|| ()).await.unwrap();
        assert_eq!(
            cache.get(key).await.unwrap(),
            None,
            "{what}: a write dropped before it published, published after the drop"
        );
        let mut left = Vec::new();
        let mut dirs = vec![dir.path().to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    dirs.push(e.path());
                } else {
                    left.push(e.path());
                }
            }
        }
        assert!(left.is_empty(), "{what}: files left: {left:?}");
        // The cache still writes.
        cache
            .set(key, "kept".into(), SetOptions::new())
            .await
            .unwrap();
        assert_eq!(
            cache.get(key).await.unwrap(),
            Some(Value::Text("kept".into()))
        );
    });
}

/// A `set` or `set_stream` on a `LocalFileSystem` (given as a store or
/// opened with `local_dir`) whose future is dropped before it published
/// never publishes later.
#[test]
fn a_dropped_write_to_a_local_file_system_never_publishes_later() {
    for how in [LocalWrite::Set, LocalWrite::SetStream] {
        for from_dir in [false, true] {
            dropped_local_write(how, from_dir);
        }
    }
}
