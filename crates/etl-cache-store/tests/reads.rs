//! CachedStore reads: what they return, what they ask the inner store, and
//! what they keep.

// `common` includes the forwarding macro; `#[macro_use]` passes it on.
#[macro_use]
mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use bytes::Bytes;
use common::{Hooks, MIB, Spied, Watched, bytes, holding, mib_blocks, mib_store};
use etl_cache_core::{Cache, MemoryCache};
use etl_cache_store::{Admission, CachedStore, Revalidate};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

async fn store_on(
    inner: Arc<Watched>,
    cache: Arc<dyn Cache>,
    revalidate: Revalidate,
) -> Arc<CachedStore> {
    Arc::new(mib_store(inner, cache, revalidate).await)
}

/// A store in front of `inner` with a memory cache of its own.
async fn fresh(inner: Arc<Watched>, revalidate: Revalidate) -> Arc<CachedStore> {
    store_on(inner, Arc::new(MemoryCache::new()), revalidate).await
}

async fn get_all(s: &dyn ObjectStore, p: &Path, o: GetOptions) -> object_store::Result<Bytes> {
    s.get_opts(p, o).await?.bytes().await
}

/// The whole object at `p` read through `s`.
async fn read_all(s: &CachedStore, p: &Path) -> Bytes {
    s.get(p).await.unwrap().bytes().await.unwrap()
}

/// Whether `r` is the inner store's "not found".
fn not_found<T>(r: &object_store::Result<T>) -> bool {
    matches!(r, Err(object_store::Error::NotFound { .. }))
}

/// Spawns a read of `range` of `p` through `store`.
fn spawn_range(
    store: &Arc<CachedStore>,
    p: &Path,
    range: std::ops::Range<u64>,
) -> JoinHandle<object_store::Result<Bytes>> {
    let (s, p) = (store.clone(), p.clone());
    tokio::spawn(async move { s.get_range(&p, range).await })
}

/// Waits until `n` reads in all have joined a fetch another read leads.
async fn joined(store: &CachedStore, n: u64) {
    while store.stats().joins < n {
        tokio::task::yield_now().await;
    }
}

/// Opens the inner store's gate: the data requests held there go on.
fn open(gate: Arc<Semaphore>, hooks: &Hooks) {
    drop(gate);
    hooks.open_gate();
}

/// Deletes `p` through `store`'s `delete_stream`; returns what it deleted.
async fn delete_by_stream(store: &CachedStore, p: &Path) -> Vec<Path> {
    store
        .delete_stream(futures::stream::iter([Ok(p.clone())]).boxed())
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_kind_of_read_returns_what_the_inner_store_returns_cold_and_warm() {
    let data = bytes(3 * MIB + 12_345, 1);
    let (inner, bare, hooks, p) = holding("lake/t/part-0.parquet", &data).await;
    let n = data.len() as u64;
    let ranges: Vec<Option<GetRange>> = vec![
        None,
        Some(GetRange::Bounded(0..1)),
        Some(GetRange::Bounded(10..MIB as u64 + 7)),
        Some(GetRange::Bounded(MIB as u64..2 * MIB as u64)),
        Some(GetRange::Bounded(n - 8..n)),
        Some(GetRange::Bounded(n - 8..n + 100)),
        Some(GetRange::Offset(2 * MIB as u64 - 3)),
        Some(GetRange::Offset(0)),
        Some(GetRange::Suffix(8)),
        Some(GetRange::Suffix(n + 5)),
    ];
    for revalidate in [Revalidate::Always, Revalidate::Never] {
        let store = fresh(inner.clone(), revalidate).await;
        for round in ["cold", "warm"] {
            for r in &ranges {
                let o = GetOptions::new().with_range(r.clone());
                let want = get_all(bare.as_ref(), &p, o.clone()).await.unwrap();
                let got = store.get_opts(&p, o).await.unwrap();
                let want_range = bare
                    .get_opts(&p, GetOptions::new().with_range(r.clone()))
                    .await
                    .unwrap()
                    .range;
                assert_eq!(got.range, want_range, "{round} {revalidate:?} {r:?}");
                assert_eq!(got.meta.size, n);
                assert_eq!(
                    got.bytes().await.unwrap(),
                    want,
                    "{round} {revalidate:?} {r:?}"
                );
            }
            let rs = [5..9, MIB as u64 - 2..MIB as u64 + 2, n - 1..n, 40..41];
            assert_eq!(
                store.get_ranges(&p, &rs).await.unwrap(),
                bare.get_ranges(&p, &rs).await.unwrap()
            );
            assert_eq!(store.head(&p).await.unwrap(), bare.head(&p).await.unwrap());
            // Empty, reversed and out-of-range ranges, on purpose.
            #[allow(clippy::single_range_in_vec_init, clippy::reversed_empty_ranges)]
            let bads = [vec![3..3], vec![0..4, 9..2], vec![0..n + 1]];
            for bad in bads {
                assert_eq!(
                    store.get_ranges(&p, &bad).await.is_err(),
                    bare.get_ranges(&p, &bad).await.is_err(),
                    "{bad:?}"
                );
            }
        }
        let before = hooks.gets.load(SeqCst);
        read_all(&store, &p).await;
        assert_eq!(
            hooks.gets.load(SeqCst),
            before,
            "a warm read fetches no data"
        );
    }
}

#[tokio::test]
async fn a_warm_read_sends_no_request_when_never_revalidated_and_one_head_when_always() {
    let data = bytes(2 * MIB + 5, 2);
    let (inner, _, hooks, p) = holding("a", &data).await;
    let never = fresh(inner.clone(), Revalidate::Never).await;
    assert_eq!(read_all(&never, &p).await, data);
    assert_eq!(hooks.requests(), 1, "a cold whole read is one request");
    assert_eq!(
        never.get_range(&p, 5..MIB as u64 + 9).await.unwrap(),
        data.slice(5..MIB + 9)
    );
    assert_eq!(hooks.requests(), 1, "warm, never revalidated: no request");
    assert_eq!(never.stats().inner_requests, 1);

    let always = fresh(inner, Revalidate::Always).await;
    read_all(&always, &p).await;
    let (gets, heads) = (hooks.gets.load(SeqCst), hooks.heads.load(SeqCst));
    assert_eq!(always.get_range(&p, 7..9).await.unwrap(), data.slice(7..9));
    assert_eq!(hooks.gets.load(SeqCst), gets, "warm: no data request");
    assert_eq!(
        hooks.heads.load(SeqCst),
        heads + 1,
        "warm, always: one metadata request"
    );
}

#[tokio::test]
async fn a_cold_range_read_of_several_missing_blocks_is_one_request() {
    let data = bytes(6 * MIB, 3);
    let (inner, _, hooks, p) = holding("big", &data).await;
    let store = fresh(inner, Revalidate::Always).await;
    // Block 2 is kept first; a read of blocks 0..5 then needs 0..2 and 3..5.
    store
        .get_range(&p, 2 * MIB as u64..2 * MIB as u64 + 1)
        .await
        .unwrap();
    let before = hooks.gets.load(SeqCst);
    let got = store.get_range(&p, 0..5 * MIB as u64).await.unwrap();
    assert_eq!(got, data.slice(0..5 * MIB));
    assert_eq!(
        hooks.gets.load(SeqCst) - before,
        2,
        "one request per run of missing blocks"
    );
}

#[tokio::test]
async fn an_object_changed_behind_the_store_is_seen_unless_never_revalidated() {
    let (v1, v2) = (bytes(MIB + 10, 4), bytes(MIB + 10, 5));
    let (inner, bare, _, p) = holding("t.parquet", &v1).await;
    let always = fresh(inner.clone(), Revalidate::Always).await;
    let never = fresh(inner, Revalidate::Never).await;
    for s in [&always, &never] {
        assert_eq!(read_all(s, &p).await, v1);
    }
    bare.put(&p, v2.clone().into()).await.unwrap();
    assert_eq!(read_all(&always, &p).await, v2);
    assert_eq!(always.get_range(&p, 0..4).await.unwrap(), v2.slice(0..4));
    // Never: the version once seen is trusted (documented) ...
    assert_eq!(read_all(&never, &p).await, v1);
    // ... until a write through the store.
    let v3 = bytes(MIB + 10, 6);
    never.put(&p, v3.clone().into()).await.unwrap();
    assert_eq!(read_all(&never, &p).await, v3);
}

#[tokio::test]
async fn sixty_four_concurrent_reads_of_a_cold_block_make_one_request() {
    let data = bytes(3 * MIB, 7);
    let (inner, _, hooks, p) = holding("hot", &data).await;
    let store = fresh(inner, Revalidate::Never).await;
    // The object's metadata known, its blocks not.
    store.head(&p).await.unwrap();
    let gate = hooks.close_gate();
    let reads: Vec<_> = (0..64)
        .map(|_| spawn_range(&store, &p, MIB as u64 + 100..MIB as u64 + 200))
        .collect();
    hooks.wait_paused(1).await;
    joined(&store, 63).await;
    open(gate, &hooks);
    for r in reads {
        assert_eq!(r.await.unwrap().unwrap(), data.slice(MIB + 100..MIB + 200));
    }
    assert_eq!(hooks.gets.load(SeqCst), 1);
    assert_eq!(store.stats().misses, 1);
}

#[tokio::test]
async fn a_cut_body_is_an_error_and_no_partial_block_is_kept() {
    let data = bytes(3 * MIB, 8);
    let (inner, _, hooks, p) = holding("cut", &data).await;
    let cache = Arc::new(MemoryCache::new());
    let store = store_on(inner, cache.clone(), Revalidate::Never).await;
    *hooks.cut_after.lock().unwrap() = Some(MIB + MIB / 2);
    let got = store.get(&p).await.unwrap();
    let parts: Vec<object_store::Result<Bytes>> = got.into_stream().collect().await;
    assert!(parts.last().unwrap().is_err(), "the cut shows as an error");
    let handed: usize = parts
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(Bytes::len)
        .sum();
    assert_eq!(
        handed, MIB,
        "only the whole block before the cut was handed out"
    );
    // One block and the metadata are kept; the cut block is not.
    store.settle().await;
    let entries = cache.stats().await.unwrap().entries;
    assert_eq!(entries, 2);
    // The next read completes from where the cache stops.
    let before = hooks.gets.load(SeqCst);
    assert_eq!(read_all(&store, &p).await, data);
    assert_eq!(hooks.gets.load(SeqCst) - before, 1);
    assert_eq!(store.stats().hits, 1);
}

#[tokio::test]
async fn a_second_process_on_the_same_directory_reads_warm_without_the_inner_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(2 * MIB + 77, 9);
    let (inner, _, hooks, p) = holding("lake/part-1.parquet", &data).await;
    let open = || async {
        CachedStore::builder(inner.clone())
            .dir(dir.path())
            .block_size(MIB as u64)
            .revalidate(Revalidate::Never)
            .build()
            .await
            .unwrap()
    };
    let first = open().await;
    assert_eq!(read_all(&first, &p).await, data);
    // Blocks are kept behind the read: a process waits for them before it
    // exits, as documented on `settle` (without it, a busy machine let the
    // second handle start before the last block landed).
    first.settle().await;
    drop(first);
    let before = hooks.requests();
    let second = open().await;
    assert_eq!(read_all(&second, &p).await, data);
    assert_eq!(
        second.get_range(&p, 3..MIB as u64 * 2 + 1).await.unwrap(),
        data.slice(3..2 * MIB + 1)
    );
    assert_eq!(hooks.requests(), before, "no request after the restart");
    assert_eq!(second.stats().bytes_from_inner, 0);
}

#[tokio::test]
async fn inner_errors_keep_their_kind() {
    let (inner, bare, _) = Watched::new();
    let store = fresh(inner, Revalidate::Always).await;
    let missing = Path::from("nope");
    for r in [
        store.get(&missing).await.map(|_| ()),
        store.head(&missing).await.map(|_| ()),
        store.get_range(&missing, 0..3).await.map(|_| ()),
    ] {
        assert!(not_found(&r), "{r:?}");
    }
    let p = Path::from("x");
    bare.put(&p, Bytes::from_static(b"hello").into())
        .await
        .unwrap();
    let tag = bare.head(&p).await.unwrap().e_tag.unwrap();
    let r = store
        .get_opts(&p, GetOptions::new().with_if_match(Some("\"other\"")))
        .await;
    assert!(
        matches!(r, Err(object_store::Error::Precondition { .. })),
        "{r:?}"
    );
    let r = store
        .get_opts(&p, GetOptions::new().with_if_none_match(Some(tag.clone())))
        .await;
    assert!(
        matches!(r, Err(object_store::Error::NotModified { .. })),
        "{r:?}"
    );
    let ok = store
        .get_opts(&p, GetOptions::new().with_if_match(Some(tag)))
        .await
        .unwrap();
    assert_eq!(ok.bytes().await.unwrap(), Bytes::from_static(b"hello"));
    // A deleted object is gone at once through the store.
    store.delete(&p).await.unwrap();
    assert!(not_found(&store.get(&p).await));
}

#[tokio::test]
async fn second_read_admission_keeps_only_blocks_read_twice() {
    let data = bytes(2 * MIB, 10);
    let (inner, _, hooks, p) = holding("scan", &data).await;
    let store = Arc::new(
        mib_blocks(inner, Arc::new(MemoryCache::new()))
            .revalidate(Revalidate::Never)
            .admission(Admission::SECOND_READ)
            .build()
            .await
            .unwrap(),
    );
    assert_eq!(read_all(&store, &p).await, data);
    store.settle().await;
    assert_eq!(store.stats().not_admitted, 2);
    assert_eq!(store.get_range(&p, 0..10).await.unwrap(), data.slice(0..10));
    store.settle().await;
    let gets = hooks.gets.load(SeqCst);
    assert_eq!(store.get_range(&p, 0..10).await.unwrap(), data.slice(0..10));
    assert_eq!(
        hooks.gets.load(SeqCst),
        gets,
        "block 0 was kept on its second read"
    );
    store
        .get_range(&p, MIB as u64..MIB as u64 + 1)
        .await
        .unwrap();
    assert_eq!(
        hooks.gets.load(SeqCst),
        gets + 1,
        "block 1 is on its second read now"
    );
}

#[tokio::test]
async fn a_read_never_mixes_two_versions() {
    let (v1, v2) = (bytes(3 * MIB, 11), bytes(3 * MIB, 12));
    let (inner, bare, hooks, p) = holding("mixed", &v1).await;
    let store = fresh(inner, Revalidate::Always).await;
    // Block 0 of v1 is kept.
    store.get_range(&p, 0..10).await.unwrap();
    // The whole read serves block 0, then its fetch of blocks 1..3 is held
    // while the object is replaced.
    let gate = hooks.close_gate();
    let s2 = store.clone();
    let p2 = p.clone();
    let read = tokio::spawn(async move {
        let r = s2.get(&p2).await.unwrap();
        r.into_stream().collect::<Vec<_>>().await
    });
    hooks.wait_paused(1).await;
    bare.put(&p, v2.clone().into()).await.unwrap();
    open(gate, &hooks);
    let parts = read.await.unwrap();
    let ok: Vec<u8> = parts
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .flat_map(|b| b.to_vec())
        .collect();
    assert!(
        v1.starts_with(&ok),
        "only bytes of the first version were handed out"
    );
    assert!(
        matches!(
            parts.last(),
            Some(Err(object_store::Error::Precondition { .. }))
        ),
        "the read ends with the change: {:?}",
        parts.last().map(|r| r.as_ref().map(Bytes::len))
    );
    // Before its first byte, a read that meets a change starts again.
    assert_eq!(read_all(&store, &p).await, v2);
}

#[tokio::test]
async fn a_change_met_before_the_first_byte_is_read_again_from_the_new_version() {
    let (v1, v2) = (bytes(2 * MIB, 13), bytes(2 * MIB + 1, 14));
    let (inner, bare, hooks, p) = holding("again", &v1).await;
    let store = fresh(inner, Revalidate::After(Duration::from_secs(3600))).await;
    store.head(&p).await.unwrap(); // metadata of v1 trusted for an hour
    bare.put(&p, v2.clone().into()).await.unwrap();
    // The fetch on condition of v1 fails; the read looks again and serves v2.
    assert_eq!(read_all(&store, &p).await, v2);
    assert!(hooks.gets.load(SeqCst) >= 2);
}

/// Under `Revalidate::Always` a read sees the object as it is when the
/// read begins. A block fetched for another read, whose request was
/// answered before a change, must not stand in for that check: the late
/// read joins the fetch, then asks for the metadata, sees the change and
/// reads the new version.
#[tokio::test]
async fn a_read_begun_after_a_change_never_takes_a_block_fetched_before_it() {
    // The same size: only the e-tag tells them apart.
    let (v1, v2) = (bytes(2 * MIB, 21), bytes(2 * MIB, 22));
    let (inner, bare, hooks, p) = holding("late", &v1).await;
    let store = fresh(inner, Revalidate::Always).await;
    // The metadata is known; block 0 is not kept.
    let m = MIB as u64;
    assert_eq!(
        store.get_range(&p, m..m + 10).await.unwrap(),
        v1.slice(MIB..MIB + 10)
    );
    hooks.gate_after.store(true, SeqCst);
    let gate = hooks.close_gate();
    let early = spawn_range(&store, &p, 0..10);
    // The inner store answered with v1's bytes; they wait at the gate.
    hooks.wait_paused(1).await;
    bare.put(&p, v2.clone().into()).await.unwrap();
    let joins = store.stats().joins;
    let late = spawn_range(&store, &p, 0..10);
    joined(&store, joins + 1).await;
    open(gate, &hooks);
    // The early read began before the change: v1 is what it may return.
    assert_eq!(early.await.unwrap().unwrap(), v1.slice(0..10));
    assert_eq!(late.await.unwrap().unwrap(), v2.slice(0..10));
}

#[tokio::test]
async fn a_dropped_leader_hands_the_fetch_to_a_waiting_read() {
    let data = bytes(MIB + 3, 15);
    let (inner, _, hooks, p) = holding("drop", &data).await;
    let store = fresh(inner, Revalidate::Never).await;
    store.head(&p).await.unwrap();
    let gate = hooks.close_gate();
    let leader = spawn_range(&store, &p, 0..5);
    hooks.wait_paused(1).await;
    let waiter = spawn_range(&store, &p, 1..4);
    joined(&store, 1).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    open(gate, &hooks);
    assert_eq!(waiter.await.unwrap().unwrap(), data.slice(1..4));
}

#[tokio::test]
async fn writes_copies_renames_and_deletes_through_the_store_are_seen_at_once() {
    let (inner, bare, _) = Watched::new();
    let store = fresh(inner, Revalidate::Never).await;
    let (a, b) = (Path::from("a"), Path::from("b"));
    let (v1, v2) = (bytes(MIB + 1, 16), bytes(MIB + 2, 17));
    store.put(&a, v1.clone().into()).await.unwrap();
    store.put(&b, v2.clone().into()).await.unwrap();
    assert_eq!(read_all(&store, &a).await, v1);
    assert_eq!(read_all(&store, &b).await, v2);
    store.copy(&a, &b).await.unwrap();
    assert_eq!(read_all(&store, &b).await, v1);
    store.put(&a, v2.clone().into()).await.unwrap();
    store.rename(&a, &b).await.unwrap();
    assert_eq!(read_all(&store, &b).await, v2);
    assert!(not_found(&store.get(&a).await));
    let mut up = store.put_multipart(&b).await.unwrap();
    up.put_part(PutPayload::from(v1.clone())).await.unwrap();
    up.complete().await.unwrap();
    assert_eq!(read_all(&store, &b).await, v1);
    assert_eq!(delete_by_stream(&store, &b).await, vec![b.clone()]);
    assert!(not_found(&store.get(&b).await));
    assert_eq!(
        bare.list(None).try_collect::<Vec<_>>().await.unwrap().len(),
        0
    );
}

#[tokio::test]
async fn bad_settings_are_refused() {
    let (inner, _, _) = Watched::new();
    for bs in [0, MIB as u64 - 1, 64 * MIB as u64 + 1] {
        let e = CachedStore::builder(inner.clone())
            .cache(Arc::new(MemoryCache::new()))
            .block_size(bs)
            .build()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("block size"), "{e}");
    }
}

#[tokio::test]
async fn a_write_whose_future_is_dropped_is_still_seen() {
    // The inner put is held at a gate, the put's future dropped there, and
    // the put then applied: a store that never revalidates must not serve
    // the version it knew before.
    #[derive(Debug)]
    struct HeldPut {
        inner: Arc<object_store::memory::InMemory>,
        gate: Arc<tokio::sync::Semaphore>,
        held: Arc<tokio::sync::Notify>,
    }
    impl std::fmt::Display for HeldPut {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("HeldPut")
        }
    }
    #[async_trait::async_trait]
    impl ObjectStore for HeldPut {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            // Applied at once, as a request already sent would be, then held.
            let r = self.inner.put_opts(location, payload, opts).await;
            self.held.notify_one();
            let _ = self.gate.acquire().await;
            r
        }
        forward_object_store!(
            inner;
            put_multipart_opts,
            get_opts,
            delete_stream,
            list,
            list_with_delimiter,
            copy_opts
        );
    }
    let bare = Arc::new(object_store::memory::InMemory::new());
    let held = Arc::new(tokio::sync::Notify::new());
    let inner = Arc::new(HeldPut {
        inner: bare.clone(),
        gate: Arc::new(tokio::sync::Semaphore::new(0)),
        held: held.clone(),
    });
    let store = Arc::new(
        mib_blocks(inner, Arc::new(MemoryCache::new()))
            .revalidate(Revalidate::Never)
            .build()
            .await
            .unwrap(),
    );
    let p = Path::from("held");
    bare.put(&p, bytes(100, 1).into()).await.unwrap();
    assert_eq!(read_all(&store, &p).await, bytes(100, 1));
    let (s, p2) = (store.clone(), p.clone());
    let put = tokio::spawn(async move { s.put(&p2, bytes(100, 2).into()).await });
    held.notified().await;
    put.abort();
    assert!(put.await.unwrap_err().is_cancelled());
    assert_eq!(read_all(&store, &p).await, bytes(100, 2));
}

#[tokio::test]
async fn a_stream_dropped_part_way_keeps_whole_blocks_and_strands_no_reader() {
    let data = bytes(4 * MIB, 23);
    let (inner, _, hooks, p) = holding("partway", &data).await;
    let store = fresh(inner, Revalidate::Never).await;
    let mut s = store.get(&p).await.unwrap().into_stream();
    assert_eq!(s.next().await.unwrap().unwrap(), data.slice(..MIB));
    // A read of block 2 joins the fetch the stream leads ...
    let waiter = spawn_range(&store, &p, 2 * MIB as u64..2 * MIB as u64 + 3);
    joined(&store, 1).await;
    // ... which is dropped before it gets there: the waiter fetches it.
    drop(s);
    assert_eq!(
        waiter.await.unwrap().unwrap(),
        data.slice(2 * MIB..2 * MIB + 3)
    );
    let gets = hooks.gets.load(SeqCst);
    assert_eq!(read_all(&store, &p).await, data);
    // Blocks 0 and 2 were kept; 1 and 3 (never handed out) are fetched.
    assert_eq!(hooks.gets.load(SeqCst), gets + 2);
    assert_eq!(store.stats().misses, 2 + 2);
}

/// Blocks at most kept at once behind reads (`CachedStore::settle`'s doc).
const KEEP_AHEAD: usize = 4;

/// The parts of a never-revalidating store whose cache holds its writes
/// of blocks: the inner store's hooks, the object's path, the memory
/// cache, the cache in front of it (`Spied`, its sets of blocks closed
/// until `open_sets`) and the store.
type Behind = (
    Arc<Hooks>,
    Path,
    Arc<MemoryCache>,
    Arc<Spied>,
    Arc<CachedStore>,
);

/// A [`Behind`] whose inner store holds `data` at `name`; its store drops
/// a write of a block after `keep_timeout`, when given.
async fn behind(name: &str, data: &Bytes, keep_timeout: Option<Duration>) -> Behind {
    let (inner, _, hooks, p) = holding(name, data).await;
    let mem = Arc::new(MemoryCache::new());
    let spied = Spied::new(mem.clone());
    let mut builder = mib_blocks(inner, spied.clone()).revalidate(Revalidate::Never);
    if let Some(timeout) = keep_timeout {
        builder = builder.keep_timeout(timeout);
    }
    let store = Arc::new(builder.build().await.unwrap());
    spied.close_sets();
    (hooks, p, mem, spied, store)
}

/// Spawns a whole read of `p` through `store` and waits until KEEP_AHEAD
/// of its blocks wait to be kept, then a while longer, time for the read
/// to go on if it could.
async fn read_to_the_bound(store: &Arc<CachedStore>, spied: &Spied, p: &Path) -> JoinHandle<Bytes> {
    let read = tokio::spawn({
        let (store, p) = (store.clone(), p.clone());
        async move { read_all(&store, &p).await }
    });
    spied.sets_parked(KEEP_AHEAD).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    read
}

/// A cold read hands its blocks on while the cache's writes of them wait;
/// reads of those blocks meanwhile join them (no request); `settle` ends
/// once they are kept.
#[tokio::test]
async fn a_cold_read_does_not_wait_for_the_cache_to_keep_its_blocks() {
    let data = bytes(3 * MIB, 30);
    let (hooks, p, mem, spied, store) = behind("behind", &data, None).await;
    // The whole read completes with the three writes of its blocks parked.
    assert_eq!(read_all(&store, &p).await, data);
    spied.sets_parked(3).await;
    let gets = hooks.gets.load(SeqCst);
    assert_eq!(
        store
            .get_range(&p, MIB as u64 + 5..2 * MIB as u64)
            .await
            .unwrap(),
        data.slice(MIB + 5..2 * MIB)
    );
    assert_eq!(hooks.gets.load(SeqCst), gets, "joined, not fetched again");
    let settle = store.settle();
    tokio::pin!(settle);
    assert!(futures::poll!(&mut settle).is_pending());
    spied.open_sets();
    settle.await;
    // Three blocks and the object's metadata.
    assert_eq!(mem.stats().await.unwrap().entries, 4);
    let gets = hooks.gets.load(SeqCst);
    assert_eq!(read_all(&store, &p).await, data);
    assert_eq!(hooks.gets.load(SeqCst), gets);
}

/// However slow the cache, at most KEEP_AHEAD blocks wait to be kept: the
/// read waits after that, so its memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_waiting_to_be_kept_are_bounded() {
    let data = bytes(10 * MIB, 31);
    let (_, p, mem, spied, store) = behind("bounded", &data, None).await;
    let read = read_to_the_bound(&store, &spied, &p).await;
    assert_eq!(spied.sets_parked.load(SeqCst), KEEP_AHEAD);
    assert!(!read.is_finished(), "the read went on past the bound");
    spied.open_sets();
    assert_eq!(read.await.unwrap(), data);
    store.settle().await;
    assert_eq!(mem.stats().await.unwrap().entries, 11);
}

/// A write through the store while blocks of the old version are still
/// being kept does not wait for them; once kept, they drop themselves, so
/// nothing of the old version is left or served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_blocks_kept_after_a_write_drop_themselves() {
    let old = bytes(2 * MIB, 32);
    let new = bytes(2 * MIB, 33);
    let (_, p, mem, spied, store) = behind("rewritten", &old, None).await;
    assert_eq!(read_all(&store, &p).await, old);
    spied.sets_parked(2).await;
    // The write completes with the old blocks' sets still parked.
    store.put(&p, new.clone().into()).await.unwrap();
    spied.open_sets();
    store.settle().await;
    assert_eq!(
        mem.stats().await.unwrap().entries,
        0,
        "the old version's blocks and metadata are dropped"
    );
    assert_eq!(read_all(&store, &p).await, new);
}

/// A read dropped while it waits to keep a block (KEEP_AHEAD blocks are
/// being kept) leaves no flight behind: the next read of that block
/// fetches and keeps it, instead of joining a fetch nobody will land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_dropped_while_waiting_to_keep_leaves_no_flight_behind() {
    let data = bytes(6 * MIB, 34);
    let (hooks, p, mem, spied, store) = behind("dropped", &data, None).await;
    // Blocks 0-3 wait to be kept; the read waits to keep block 4.
    let read = read_to_the_bound(&store, &spied, &p).await;
    read.abort();
    assert!(read.await.unwrap_err().is_cancelled());
    spied.open_sets();
    store.settle().await;
    let gets = hooks.gets.load(SeqCst);
    assert_eq!(read_all(&store, &p).await, data);
    assert!(hooks.gets.load(SeqCst) > gets, "blocks 4 and 5 fetched");
    store.settle().await;
    // Six blocks and the object's metadata: block 4 kept this time.
    assert_eq!(mem.stats().await.unwrap().entries, 7);
}

/// A cache that never finishes keeping a block does not hold the store's
/// places for blocks being kept for good: past the keep timeout the writes
/// are dropped and counted, later cold reads and `settle` go on, and the
/// blocks are fetched again when next read. (Tokio's clock is paused: the
/// timeout passes as soon as nothing else can run.)
#[tokio::test(start_paused = true)]
async fn a_cache_that_hangs_while_keeping_blocks_stalls_nothing_past_the_keep_timeout() {
    let data = bytes(6 * MIB, 35);
    // The sets of blocks are never opened: every block's write hangs.
    let (hooks, p, mem, _, store) = behind("hung", &data, Some(Duration::from_secs(5))).await;
    assert_eq!(read_all(&store, &p).await, data);
    tokio::time::timeout(Duration::from_secs(3600), store.settle())
        .await
        .expect("settle ends once the writes are dropped");
    assert_eq!(
        store.stats().cache_errors,
        6,
        "each block's write timed out"
    );
    assert_eq!(mem.stats().await.unwrap().entries, 1, "the metadata alone");
    let gets = hooks.gets.load(SeqCst);
    assert_eq!(read_all(&store, &p).await, data);
    assert!(hooks.gets.load(SeqCst) > gets, "fetched again");
    assert!(
        CachedStore::builder(Watched::new().0)
            .cache(mem)
            .keep_timeout(Duration::ZERO)
            .build()
            .await
            .is_err()
    );
}

/// A one-handle variant of the two-handle `get_ranges` test: sixteen calls
/// of several ranges over a cold object on one handle share their fetches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_get_ranges_on_one_handle_fetch_each_block_once() {
    let data = bytes(4 * MIB + 3, 18);
    let (inner, _, hooks, p) = holding("ranges", &data).await;
    let store = fresh(inner, Revalidate::Never).await;
    // The object's metadata known, its blocks not.
    store.head(&p).await.unwrap();
    let m = MIB as u64;
    let gate = hooks.close_gate();
    let tasks: Vec<_> = (0..16u64)
        .map(|i| {
            let (store, p) = (store.clone(), p.clone());
            // Each call its own ranges, all of them over the four blocks.
            let ranges = vec![i..i + 100, m + i * 7..2 * m + i, 4 * m - i..4 * m + 3];
            tokio::spawn(async move {
                let got = store.get_ranges(&p, &ranges).await.unwrap();
                (ranges, got)
            })
        })
        .collect();
    hooks.wait_paused(1).await;
    // Every call needs block 0: all but its leader join its fetch.
    joined(&store, 15).await;
    open(gate, &hooks);
    for t in tasks {
        let (ranges, got) = t.await.unwrap();
        for (r, g) in ranges.iter().zip(&got) {
            assert_eq!(g, &data.slice(r.start as usize..r.end as usize));
        }
    }
    let gets = hooks.gets.load(SeqCst);
    assert!(gets <= 5, "{gets} data requests for 5 blocks over 16 calls");
}

/// A rename or a delete through the store while a read of the path is in
/// flight (its request answered with the old version, held): the read
/// returns the old bytes or an error, never a mix; afterwards the old
/// blocks, kept late by that read, are never served for a new object at
/// the path, nor for the renamed one's old name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_or_delete_racing_a_read_never_lets_old_blocks_back() {
    for how in ["rename", "delete_stream"] {
        let (v1, v2) = (bytes(2 * MIB + 1, 19), bytes(2 * MIB + 1, 20));
        let (inner, bare, hooks, a) = holding("a", &v1).await;
        let b = Path::from("b");
        let store = fresh(inner, Revalidate::Never).await;
        store.head(&a).await.unwrap();
        hooks.gate_after.store(true, SeqCst);
        let gate = hooks.close_gate();
        let read = spawn_range(&store, &a, 0..2 * MIB as u64);
        hooks.wait_paused(1).await;
        match how {
            "rename" => store.rename(&a, &b).await.unwrap(),
            _ => assert_eq!(delete_by_stream(&store, &a).await, vec![a.clone()]),
        }
        // Another writer puts a new object at the old path.
        bare.put(&a, v2.clone().into()).await.unwrap();
        open(gate, &hooks);
        if let Ok(got) = read.await.unwrap() {
            assert_eq!(got, v1.slice(..2 * MIB), "{how}: the read began on v1");
        }
        store.settle().await;
        assert_eq!(
            read_all(&store, &a).await,
            v2,
            "{how}: the new object at the path"
        );
        assert_eq!(
            store.get_range(&a, 0..10).await.unwrap(),
            v2.slice(..10),
            "{how}"
        );
        if how == "rename" {
            assert_eq!(read_all(&store, &b).await, v1);
        }
    }
}
