//! Handles that share a cache directory, each with its own `DiskCache`,
//! fetch a cold block once: the one that leads a run of missing blocks
//! holds the cache's lock on it, the others wait and read the cache.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use bytes::Bytes;
use common::{Hooks, MIB, Spied, Watched, bytes, holding, mib_blocks, mib_store};
use etl_cache_core::Cache;
use etl_cache_fs::DiskCache;
use etl_cache_store::{CachedStore, Revalidate};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

async fn handle(inner: Arc<Watched>, dir: &std::path::Path) -> (CachedStore, Arc<Spied>) {
    let disk: Arc<dyn Cache> = Arc::new(DiskCache::open(dir).await.unwrap());
    let spied = Spied::new(disk);
    let store = mib_store(inner, spied.clone(), Revalidate::Always).await;
    (store, spied)
}

/// Two handles on one cache directory (kept alive by the first item) in
/// front of a watched store holding `data` at `name`: the directory, the
/// store's hooks, the path and the handles.
async fn two_handles(
    name: &str,
    data: &Bytes,
) -> (
    tempfile::TempDir,
    Arc<Hooks>,
    Path,
    (CachedStore, Arc<Spied>),
    (CachedStore, Arc<Spied>),
) {
    let dir = tempfile::tempdir().unwrap();
    let (inner, _, hooks, p) = holding(name, data).await;
    let a = handle(inner.clone(), dir.path()).await;
    let b = handle(inner, dir.path()).await;
    (dir, hooks, p, a, b)
}

/// Waits until `done` holds, checking every millisecond.
async fn until(mut done: impl FnMut() -> bool) {
    while !done() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `readers` reads of `range` of a cold object, spread over two handles on
/// one directory, while the inner store holds data requests at a gate:
/// the gate opens once one request waits there and every read asked the
/// cache for the lock (or, were reads not coordinated, once two requests
/// wait there).
async fn cold_reads_over_two_handles(readers: usize, range: std::ops::Range<u64>) {
    let data = bytes(3 * MIB + 5, 31);
    let (_dir, hooks, p, a, b) = two_handles("lake/part-0.parquet", &data).await;
    let _gate = hooks.close_gate();
    let tasks: Vec<_> = (0..readers)
        .map(|i| {
            let store = if i % 2 == 0 { a.0.clone() } else { b.0.clone() };
            let (p, range) = (p.clone(), range.clone());
            tokio::spawn(async move { store.get_range(&p, range).await.unwrap() })
        })
        .collect();
    let entered = || a.1.entered.load(SeqCst) + b.1.entered.load(SeqCst);
    until(|| {
        let paused = hooks.paused.load(SeqCst);
        (paused == 1 && entered() >= readers) || paused >= 2
    })
    .await;
    hooks.open_gate();
    for t in tasks {
        assert_eq!(
            t.await.unwrap(),
            data.slice(range.start as usize..range.end as usize)
        );
    }
    assert_eq!(
        hooks.gets.load(SeqCst),
        1,
        "one data request for {readers} reads over two handles"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_on_one_directory_fetch_a_cold_range_once() {
    cold_reads_over_two_handles(2, 100..3 * MIB as u64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_reads_over_two_handles_fetch_a_cold_range_once() {
    cold_reads_over_two_handles(8, MIB as u64..3 * MIB as u64 + 5).await;
}

/// The same once the object's metadata is known to both handles: the
/// lock is taken by the read that leads a run of missing blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_that_know_the_object_fetch_a_cold_block_once() {
    let data = bytes(3 * MIB, 32);
    let (_dir, hooks, p, a, b) = two_handles("t/f", &data).await;
    // Block 0 read by each: the object is known, blocks 1 and 2 are cold.
    assert_eq!(a.0.get_range(&p, 0..10).await.unwrap(), data.slice(0..10));
    assert_eq!(b.0.get_range(&p, 0..10).await.unwrap(), data.slice(0..10));
    let gets = hooks.gets.load(SeqCst);
    let entered = a.1.entered.load(SeqCst) + b.1.entered.load(SeqCst);
    let _gate = hooks.close_gate();
    let want = MIB as u64 + 1..3 * MIB as u64;
    let ta = {
        let (s, p, r) = (a.0.clone(), p.clone(), want.clone());
        tokio::spawn(async move { s.get_range(&p, r).await.unwrap() })
    };
    let tb = {
        let (s, p, r) = (b.0.clone(), p.clone(), want.clone());
        tokio::spawn(async move { s.get_range(&p, r).await.unwrap() })
    };
    until(|| {
        let paused = hooks.paused.load(SeqCst);
        let now = a.1.entered.load(SeqCst) + b.1.entered.load(SeqCst);
        (paused == 1 && now >= entered + 2) || paused >= 2
    })
    .await;
    hooks.open_gate();
    let expect = data.slice(want.start as usize..want.end as usize);
    assert_eq!(ta.await.unwrap(), expect);
    assert_eq!(tb.await.unwrap(), expect);
    assert_eq!(hooks.gets.load(SeqCst), gets + 1);
}

/// A read holding the lock whose stream is dropped part way: the waiting
/// handle takes over, reads the block kept before the drop from the
/// cache, and fetches the rest itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_dropped_part_way_hands_the_rest_to_the_waiting_handle() {
    let data = bytes(3 * MIB, 33);
    let (_dir, hooks, p, a, b) = two_handles("big", &data).await;
    let mut stream = a.0.get(&p).await.unwrap().into_stream();
    // The first block is handed out (and kept); the run holds the lock.
    let mut first = stream.next().await.unwrap().unwrap();
    while first.len() < MIB {
        let more = stream.next().await.unwrap().unwrap();
        first = [first, more].concat().into();
    }
    let tb = {
        let (s, p) = (b.0.clone(), p.clone());
        tokio::spawn(async move { s.get(&p).await.unwrap().bytes().await.unwrap() })
    };
    until(|| b.1.entered.load(SeqCst) >= 1 || tb.is_finished()).await;
    drop(stream);
    assert_eq!(tb.await.unwrap(), data);
    assert_eq!(
        hooks.gets.load(SeqCst),
        2,
        "the holder's request, then the rest"
    );
    let sb = b.0.stats();
    assert_eq!((sb.hits, sb.misses), (1, 2), "{sb:?}");
}

/// A run whose body fails part way keeps the cache's lock until the blocks
/// it handed out are kept: the handle waiting for the lock then finds them
/// in the cache and fetches nothing. Released at once, the waiter would
/// lead, miss the block still being kept, and fetch it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_fails_part_way_hands_over_the_lock_once_its_blocks_are_kept() {
    let data = bytes(3 * MIB, 36);
    let (_dir, hooks, p, a, b) = two_handles("lake/cut.parquet", &data).await;
    // Both know the object: each read leads a run from block 0.
    a.0.head(&p).await.unwrap();
    b.0.head(&p).await.unwrap();
    a.1.close_sets();
    *hooks.cut_after.lock().unwrap() = Some(MIB + MIB / 2);
    let gate = hooks.close_gate();
    let ta = {
        let (s, p) = (a.0.clone(), p.clone());
        tokio::spawn(async move { s.get(&p).await?.bytes().await })
    };
    // A holds the lock; its request waits at the gate.
    hooks.wait_paused(1).await;
    let gets = hooks.gets.load(SeqCst);
    let tb = {
        let (s, p) = (b.0.clone(), p.clone());
        tokio::spawn(async move { s.get_range(&p, 10..20).await })
    };
    until(|| b.1.entered.load(SeqCst) == 1).await;
    drop(gate);
    hooks.open_gate();
    assert!(ta.await.unwrap().is_err(), "A's body was cut in block 1");
    a.1.sets_parked(1).await; // block 0 waits to be kept
    // B polls the lock every 20 ms at most: a lock released now would be
    // B's within a second.
    let led = tokio::time::timeout(
        Duration::from_secs(1),
        until(|| b.1.computing.load(SeqCst) > 0),
    )
    .await;
    assert!(led.is_err(), "B took the lock while block 0 was being kept");
    a.1.open_sets();
    assert_eq!(tb.await.unwrap().unwrap(), data.slice(10..20));
    assert_eq!(
        hooks.gets.load(SeqCst),
        gets,
        "B read block 0 from the cache"
    );
}

/// A cache whose lock fails: every read is served, from the inner store,
/// and the failures are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_lock_never_breaks_a_read() {
    let data = bytes(3 * MIB + 3, 34);
    let (_dir, hooks, p, a, b) = two_handles("f", &data).await;
    a.1.fail_lock.store(true, SeqCst);
    b.1.fail_lock.store(true, SeqCst);
    let ranges = [
        0..10,
        MIB as u64 - 1..2 * MIB as u64 + 1,
        0..3 * MIB as u64 + 3,
    ];
    let mut tasks = Vec::new();
    for (i, r) in ranges.iter().cycle().take(6).enumerate() {
        let s = if i % 2 == 0 { a.0.clone() } else { b.0.clone() };
        let (p, r) = (p.clone(), r.clone());
        tasks.push(tokio::spawn(async move {
            (r.clone(), s.get_range(&p, r).await.unwrap())
        }));
    }
    for t in tasks {
        let (r, got) = t.await.unwrap();
        assert_eq!(got, data.slice(r.start as usize..r.end as usize));
    }
    assert_eq!(a.0.get(&p).await.unwrap().bytes().await.unwrap(), data);
    let errors = a.0.stats().cache_errors + b.0.stats().cache_errors;
    assert!(errors >= 2, "each failed lock is counted: {errors}");
    assert!(hooks.gets.load(SeqCst) >= 1);
}

/// Turned off, a handle never asks the cache for the lock.
#[tokio::test]
async fn coordination_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(2 * MIB, 35);
    let (inner, _, _, p) = holding("f", &data).await;
    let spied = Spied::new(Arc::new(DiskCache::open(dir.path()).await.unwrap()));
    let store = mib_blocks(inner, spied.clone())
        .coordinate_processes(false)
        .build()
        .await
        .unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(store);
    assert_eq!(store.get(&p).await.unwrap().bytes().await.unwrap(), data);
    assert_eq!(
        store.get_range(&p, 5..MIB as u64 + 5).await.unwrap(),
        data.slice(5..MIB + 5)
    );
    assert_eq!(spied.entered.load(SeqCst), 0);
}

/// `get_ranges` of several ranges over four blocks, eight calls spread over
/// two handles on one directory, cold: every call gets exactly its bytes
/// and no block is fetched twice (uncoordinated, each call would send at
/// least one request of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_ranges_over_two_handles_fetch_each_cold_block_once() {
    let data = bytes(4 * MIB, 32);
    let (_dir, hooks, p, a, b) = two_handles("lake/part-1.parquet", &data).await;
    let m = MIB as u64;
    let ranges = vec![0..10, m + 1..2 * m + 7, 3 * m..3 * m + 5, 5..9];
    let readers = 8;
    let _gate = hooks.close_gate();
    let tasks: Vec<_> = (0..readers)
        .map(|i| {
            let store = if i % 2 == 0 { a.0.clone() } else { b.0.clone() };
            let (p, ranges) = (p.clone(), ranges.clone());
            tokio::spawn(async move { store.get_ranges(&p, &ranges).await.unwrap() })
        })
        .collect();
    let entered = || a.1.entered.load(SeqCst) + b.1.entered.load(SeqCst);
    until(|| {
        let paused = hooks.paused.load(SeqCst);
        (paused >= 1 && entered() >= readers) || paused > 4
    })
    .await;
    hooks.open_gate();
    for t in tasks {
        let got = t.await.unwrap();
        let want: Vec<_> = ranges
            .iter()
            .map(|r| data.slice(r.start as usize..r.end as usize))
            .collect();
        assert_eq!(got, want);
    }
    let gets = hooks.gets.load(SeqCst);
    assert!(
        gets <= 4,
        "{gets} data requests for 4 blocks over {readers} calls"
    );
}

/// Puts `data` at `p` in `store` with `attributes`.
async fn put_typed(
    store: &dyn ObjectStore,
    p: &Path,
    data: Bytes,
    attributes: object_store::Attributes,
) {
    let opts = object_store::PutOptions::from(attributes);
    store.put_opts(p, data.into(), opts).await.unwrap();
}

/// The attributes `put` gives an object: a content type and user metadata.
fn typed(content_type: &str) -> object_store::Attributes {
    [
        (
            object_store::Attribute::ContentType,
            object_store::AttributeValue::from(content_type.to_owned()),
        ),
        (
            object_store::Attribute::Metadata("owner".into()),
            "etl".into(),
        ),
    ]
    .into_iter()
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_come_back_with_reads_served_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (inner, bare, hooks) = Watched::new();
    let p = Path::from("lake/part-0.parquet");
    let data = bytes(2 * MIB + 5, 17);
    let parquet = typed("application/vnd.apache.parquet");
    put_typed(&*bare, &p, data.clone(), parquet.clone()).await;
    let never = |inner: Arc<Watched>, dir: std::path::PathBuf| async move {
        mib_store(
            inner,
            Arc::new(DiskCache::open(dir).await.unwrap()),
            Revalidate::Never,
        )
        .await
    };
    let a = never(inner.clone(), dir.path().to_owned()).await;
    // Cold: the first read's answer carries them.
    let got = a.get(&p).await.unwrap();
    assert_eq!(got.attributes, parquet);
    assert_eq!(got.bytes().await.unwrap(), data);
    a.settle().await;
    let requests = hooks.requests();
    // Warm on this handle, on a second handle (as after a restart), and
    // from 16 reads racing over both: no request, the same attributes.
    let b = never(inner.clone(), dir.path().to_owned()).await;
    let reads: Vec<_> = (0..16)
        .map(|i| {
            let (store, p) = (if i % 2 == 0 { a.clone() } else { b.clone() }, p.clone());
            tokio::spawn(async move {
                let got = if i % 4 < 2 {
                    store.get(&p).await.unwrap()
                } else {
                    let opts = object_store::GetOptions::new().with_range(Some(10..MIB as u64 + 9));
                    store.get_opts(&p, opts).await.unwrap()
                };
                (got.attributes.clone(), got.bytes().await.unwrap().len())
            })
        })
        .collect();
    for r in reads {
        let (attributes, _) = r.await.unwrap();
        assert_eq!(attributes, parquet);
    }
    assert_eq!(hooks.requests(), requests, "warm reads asked nothing");
    // Another writer changes the object and its type: a handle that checks
    // each read returns the new ones together.
    let csv = typed("text/csv");
    let new_data = bytes(MIB + 3, 18);
    put_typed(&*bare, &p, new_data.clone(), csv.clone()).await;
    let disk = Arc::new(DiskCache::open(dir.path()).await.unwrap());
    let checking = mib_store(inner.clone(), disk, Revalidate::Always).await;
    let got = checking.get(&p).await.unwrap();
    assert_eq!(got.attributes, csv);
    assert_eq!(got.bytes().await.unwrap(), new_data);
    // A write through a store is seen at once, attributes included.
    let json = typed("application/json");
    put_typed(&a, &p, bytes::Bytes::from_static(b"{}"), json.clone()).await;
    let got = a.get(&p).await.unwrap();
    assert_eq!(got.attributes, json);
    assert_eq!(&got.bytes().await.unwrap()[..], b"{}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_fetches_its_first_block_returns_the_attributes_it_was_answered_with() {
    // The object's attributes change but not its e-tag (a metadata copy
    // onto itself). A checking read whose first block is not cached sends
    // no HEAD: the request for that block checks the object, and its
    // answer's attributes are the ones returned and remembered.
    let dir = tempfile::tempdir().unwrap();
    let (inner, bare, hooks) = Watched::new();
    let p = Path::from("lake/part-0.parquet");
    let data = bytes(2 * MIB, 5);
    put_typed(&*bare, &p, data.clone(), typed("text/csv")).await;
    let (store, _) = handle(inner.clone(), dir.path()).await;
    // Known, with only the second block cached.
    let got = store
        .get_opts(
            &p,
            object_store::GetOptions::new().with_range(Some(MIB as u64 + 1..MIB as u64 + 9)),
        )
        .await
        .unwrap();
    assert_eq!(got.attributes, typed("text/csv"));
    store.settle().await;
    let parquet = typed("application/vnd.apache.parquet");
    *hooks.relabel.lock().unwrap() = Some(parquet.clone());
    let heads = hooks.heads.load(SeqCst);
    let got = store
        .get_opts(&p, object_store::GetOptions::new().with_range(Some(0..10)))
        .await
        .unwrap();
    assert_eq!(
        hooks.heads.load(SeqCst),
        heads,
        "the block's request checked it"
    );
    assert_eq!(got.attributes, parquet);
    assert_eq!(got.bytes().await.unwrap(), data.slice(0..10));
}
