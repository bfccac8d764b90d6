//! Batches under concurrency, cancellation and corruption, on DiskCache:
//! readers see one whole version, dropped writes publish nothing, single
//! flight computes once across handles, and a damaged entry file never
//! yields a wrong batch.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_array::RecordBatch;
use arrow_schema::ArrowError;
use common::*;
use etl_cache_arrow::{ArrowCacheExt, ArrowOptions, IpcCompression};
use etl_cache_core::{Cache, Error};
use futures::TryStreamExt;
use futures::stream::{self, StreamExt};
use tokio::sync::oneshot;

/// The batches of version `v`: `v + 2` batches of different sizes, all
/// stamped with `v` in their first column.
fn version(v: i64) -> Vec<RecordBatch> {
    (0..v + 2)
        .map(|i| batch(v, 100 + 37 * i as usize))
        .collect()
}

/// Reads `key` whole and checks that it is one version, entire: returns it.
async fn read_version(cache: &dyn Cache, key: &str) -> Option<i64> {
    let (_, read) = collect(cache.get_batches(key).await.unwrap()).await;
    let stamp = arrow_array::cast::AsArray::as_primitive::<arrow_array::types::Int64Type>(
        read[0].column(0),
    )
    .value(0);
    assert_eq!(
        read,
        version(stamp),
        "a reader saw a mix or a part of a version"
    );
    Some(stamp)
}

async fn concurrent_writers_and_readers(caches: Vec<Arc<dyn Cache>>) {
    caches[0]
        .set_batches("k", schema(), batches(version(0)), ArrowOptions::new())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for w in 1..=6i64 {
        let cache = caches[w as usize % caches.len()].clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..3 {
                let opts = ArrowOptions::new().compression(if round % 2 == 0 {
                    IpcCompression::Zstd
                } else {
                    IpcCompression::Lz4
                });
                cache
                    .set_batches("k", schema(), batches(version(w)), opts)
                    .await
                    .unwrap();
            }
        }));
    }
    for r in 0..4 {
        let cache = caches[r % caches.len()].clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                read_version(&*cache, "k").await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let last = read_version(&*caches[0], "k").await.unwrap();
    assert!((1..=6).contains(&last));
    for cache in &caches {
        assert_eq!(read_version(&**cache, "k").await, Some(last));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sets_on_one_handle_leave_one_whole_version() {
    let dir = tempfile::tempdir().unwrap();
    let cache: Arc<dyn Cache> = disk(dir.path()).await;
    concurrent_writers_and_readers(vec![cache]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sets_on_two_handles_leave_one_whole_version() {
    let dir = tempfile::tempdir().unwrap();
    let a: Arc<dyn Cache> = disk(dir.path()).await;
    let b: Arc<dyn Cache> = disk(dir.path()).await;
    concurrent_writers_and_readers(vec![a, b]).await;
}

/// Batches that pause (forever) when batch `at` is asked for, after saying
/// so on `reached`; with `at` equal to their number, before the end.
fn gated(list: Vec<RecordBatch>, at: usize, reached: oneshot::Sender<()>) -> Batches {
    let mut reached = Some(reached);
    let list: Vec<Option<RecordBatch>> = list.into_iter().map(Some).chain([None]).collect();
    stream::iter(list.into_iter().enumerate())
        .then(move |(i, b)| {
            let signal = (i == at).then(|| reached.take()).flatten();
            async move {
                if let Some(signal) = signal {
                    let _ = signal.send(());
                    futures::future::pending::<()>().await;
                }
                b
            }
        })
        .take_while(|b| futures::future::ready(b.is_some()))
        .map(|b| Ok::<_, ArrowError>(b.expect("taken while some")))
        .boxed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_dropped_at_any_batch_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = disk(dir.path()).await;
    set_list(&*cache, "k", version(0)).await.unwrap();
    // Large batches, so that the cache has written pieces of the file
    // before the drop.
    let big: Vec<RecordBatch> = (0..4).map(|i| batch(9, 20_000 + i)).collect();
    for at in 0..=big.len() {
        let (tx, rx) = oneshot::channel();
        let set = cache.set_batches(
            "k",
            schema(),
            gated(big.clone(), at, tx),
            ArrowOptions::new(),
        );
        // Boxed, so that dropping it drops the write itself.
        let mut set = Box::pin(set);
        tokio::select! {
            r = &mut set => panic!("the gated write ended: {r:?}"),
            _ = rx => {}
        }
        drop(set);
        assert_eq!(
            read_version(&*cache, "k").await,
            Some(0),
            "dropped at batch {at}"
        );
    }
    // The key is free: a later write publishes, and nothing dropped
    // published over it since.
    set_list(&*cache, "k", version(1)).await.unwrap();
    tokio::task::yield_now().await;
    assert_eq!(read_version(&*cache, "k").await, Some(1));
    assert_eq!(cache.stats().await.unwrap().entries, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get_or_compute_computes_once_across_handles() {
    let dir = tempfile::tempdir().unwrap();
    let handles: Vec<Arc<dyn Cache>> = vec![disk(dir.path()).await, disk(dir.path()).await];
    let runs = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..10 {
        let (cache, runs) = (handles[t % 2].clone(), runs.clone());
        tasks.push(tokio::spawn(async move {
            let (_, stream) = cache
                .get_or_compute_batches("step", ArrowOptions::new(), || async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    Ok::<_, ArrowError>((schema(), batches(version(3))))
                })
                .await
                .unwrap();
            stream.try_collect::<Vec<_>>().await.unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), version(3));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_dropped_halfway_releases_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cache = disk(dir.path()).await;
    set_list(&*cache, "k", version(4)).await.unwrap();
    let (_, mut stream) = cache.get_batches("k").await.unwrap().unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap(), version(4)[0]);
    assert_eq!(stream.next().await.unwrap().unwrap(), version(4)[1]);
    drop(stream);
    set_list(&*cache, "k", version(2)).await.unwrap();
    assert_eq!(read_version(&*cache, "k").await, Some(2));
    assert!(cache.delete("k").await.unwrap());
    assert!(cache.get_batches("k").await.unwrap().is_none());
}

/// DiskCache streams from the entry file it opened: a write (or a delete)
/// landing between the open and the end leaves the reader on its version,
/// whole; the next read sees the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_keeps_the_version_it_opened() {
    let dir = tempfile::tempdir().unwrap();
    let a = disk(dir.path()).await;
    let b = disk(dir.path()).await;
    set_list(&*a, "k", version(5)).await.unwrap();
    let (_, mut stream) = a.get_batches("k").await.unwrap().unwrap();
    let mut read = vec![stream.next().await.unwrap().unwrap()];
    set_list(&*b, "k", version(1)).await.unwrap();
    set_list(&*a, "k", version(2)).await.unwrap();
    read.extend(stream.try_collect::<Vec<_>>().await.unwrap());
    assert_eq!(read, version(5));
    assert_eq!(read_version(&*a, "k").await, Some(2));

    let (_, mut stream) = a.get_batches("k").await.unwrap().unwrap();
    let mut read = vec![stream.next().await.unwrap().unwrap()];
    assert!(b.delete("k").await.unwrap());
    read.extend(stream.try_collect::<Vec<_>>().await.unwrap());
    assert_eq!(read, version(2));
    assert!(a.get_batches("k").await.unwrap().is_none());
}

/// A byte flipped anywhere in the payload of a DiskCache entry file: the
/// reader gets only batches that were written, in order, then
/// `Error::Corrupt` naming the key; the entry is removed. The batches are
/// stored without IPC compression, so a flipped byte in a body would decode
/// into a wrong value if the cache handed it out unchecked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_entry_never_yields_a_wrong_batch() {
    let dir = tempfile::tempdir().unwrap();
    let cache = disk(dir.path()).await;
    let written: Vec<RecordBatch> = (0..6).map(|i| batch(i, 12_000)).collect();
    let opts = ArrowOptions::new().compression(IpcCompression::None);
    let path = etl_cache_reliability::layout::entry_path(dir.path(), "k");
    let mut checked = 0;
    for frac in [0.001, 0.1, 0.3, 0.5, 0.62, 0.8, 0.97, 0.9995] {
        cache
            .set_batches("k", schema(), batches(written.clone()), opts)
            .await
            .unwrap();
        let mut file = std::fs::read(&path).unwrap();
        assert!(file.len() > 3 << 20, "the entry spans several blocks");
        // Past the header, before the trailer: a payload byte.
        let at = 64 + ((file.len() - 64 - 40) as f64 * frac) as usize;
        file[at] ^= 0x10;
        std::fs::write(&path, &file).unwrap();

        let outcome = match cache.get_batches("k").await {
            Err(e) => Err(e),
            Ok(None) => panic!("the entry vanished before it was read"),
            Ok(Some((_, mut stream))) => {
                let mut good = 0;
                let mut end = Ok(());
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(b) => {
                            assert_eq!(b, written[good], "flip at {at}: batch {good} is wrong");
                            good += 1;
                        }
                        Err(e) => {
                            end = Err(e);
                            break;
                        }
                    }
                }
                end
            }
        };
        match outcome {
            Err(Error::Corrupt { key, .. }) => assert_eq!(key, "k"),
            other => panic!("flip at {at}: expected Corrupt, got {other:?}"),
        }
        assert!(cache.get_batches("k").await.unwrap().is_none(), "removed");
        checked += 1;
    }
    assert_eq!(checked, 8);
}

/// A `get_or_compute_batches` dropped at any batch of its computation, while
/// a caller on a second handle waits for it: nothing is stored, and the
/// waiter computes in its place (the lock is not left behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_computation_dropped_at_any_batch_stores_nothing_and_hands_over() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (disk(dir.path()).await, disk(dir.path()).await);
    let big: Vec<RecordBatch> = (0..3).map(|i| batch(5, 20_000 + i)).collect();
    for at in 0..=big.len() {
        let key = format!("step-{at}");
        let (tx, rx) = oneshot::channel();
        let gated_batches = gated(big.clone(), at, tx);
        let first = one.get_or_compute_batches(&key, ArrowOptions::new(), || async move {
            Ok::<_, ArrowError>((schema(), gated_batches))
        });
        let mut first = Box::pin(first);
        tokio::select! {
            r = &mut first => panic!("the gated computation ended: {}", r.is_ok()),
            _ = rx => {}
        }
        // A second caller, on the other handle, misses and waits.
        let runs = Arc::new(AtomicUsize::new(0));
        let waiter = {
            let (two, key, runs) = (two.clone(), key.clone(), runs.clone());
            tokio::spawn(async move {
                let (_, s) = two
                    .get_or_compute_batches(&key, ArrowOptions::new(), || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, ArrowError>((schema(), batches(version(2))))
                    })
                    .await
                    .unwrap();
                s.try_collect::<Vec<_>>().await.unwrap()
            })
        };
        tokio::task::yield_now().await;
        assert!(
            one.get_batches(&key).await.unwrap().is_none(),
            "dropped at batch {at}: nothing stored yet"
        );
        drop(first);
        assert_eq!(waiter.await.unwrap(), version(2), "dropped at batch {at}");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(read_version(&*one, &key).await, Some(2));
    }
}
