//! One single-flight sequence, one timeout: on every backend a caller of
//! `get_or_insert_with` waits for another caller of the same handle
//! computing the key at most the handle's lock timeout, then fails with
//! `LockTimeout` naming the key; the holder's value still lands, and the
//! next caller reads it without computing.

use std::sync::Arc;
use std::time::Duration;

use etl_cache_core::{Cache, CacheExt, Error, MemoryCache, SetOptions, Value};
use etl_cache_fs::DiskCache;
use etl_cache_tiered::TieredCache;
use tokio::sync::oneshot;

const SHORT: Duration = Duration::from_millis(150);

async fn waiter_times_out(what: &str, cache: Arc<dyn Cache>) {
    let (started_tx, started_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let holder = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_insert_with("report", SetOptions::new(), || async move {
                    let _ = started_tx.send(());
                    let _ = release_rx.await;
                    Value::from("computed once")
                })
                .await
        })
    };
    started_rx.await.expect("the holder computes");
    let waited = cache
        .get_or_insert_with("report", SetOptions::new(), || async {
            panic!("{what}: a waiter computed while the holder did")
        })
        .await;
    match waited {
        Err(Error::LockTimeout { key, waited }) => {
            assert_eq!(key, "report", "{what}");
            // After the handle's timeout, not the 60 s default.
            assert!(
                waited >= SHORT && waited < 20 * SHORT,
                "{what}: gave up after {waited:?}"
            );
        }
        other => panic!("{what}: want LockTimeout, got {other:?}"),
    }
    release_tx.send(()).unwrap();
    let v = holder.await.unwrap().unwrap();
    assert_eq!(v, Value::from("computed once"), "{what}");
    let again = cache
        .get_or_insert_with("report", SetOptions::new(), || async {
            panic!("{what}: computed again though the value was stored")
        })
        .await
        .unwrap();
    assert_eq!(again, v, "{what}");
}

#[tokio::test]
async fn every_backend_waits_its_lock_timeout_then_gives_up() {
    let memory = MemoryCache::new().lock_timeout(SHORT);
    waiter_times_out("memory", Arc::new(memory)).await;

    let dir = tempfile::tempdir().unwrap();
    let disk = DiskCache::builder()
        .root(dir.path())
        .lock_timeout(SHORT)
        .build()
        .await
        .unwrap();
    waiter_times_out("disk", Arc::new(disk)).await;

    let dir = tempfile::tempdir().unwrap();
    let below = DiskCache::builder().root(dir.path()).build().await.unwrap();
    let tiered = TieredCache::builder()
        .tier(Arc::new(below))
        .lock_timeout(SHORT)
        .build()
        .unwrap();
    waiter_times_out("tiered", Arc::new(tiered)).await;
}

#[tokio::test]
async fn a_clone_shares_the_timeout_set_on_the_handle() {
    let memory = MemoryCache::new();
    let clone = memory.clone();
    let memory = memory.lock_timeout(SHORT);
    // Set after the clone was made: the clone waits the same.
    waiter_times_out("memory clone", Arc::new(clone)).await;
    drop(memory);
}
