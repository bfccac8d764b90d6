//! The removal journal through the public API: `last_removal` tells, from
//! any handle on the root, when and why a key's entry went (evicted over
//! which limit, expired, corrupt, deleted, cleared); removals that did not
//! happen leave no record; records from handles racing on one root are
//! all kept.

mod common;

use etl_cache_core::testing::poll_then_drop;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use etl_cache_core::{
    Cache, Error, EvictionLimit, ManualClock, Removal, RemovalCause, SetOptions, Value,
};
use etl_cache_fs::{DiskCache, DiskCacheBuilder};

fn bytes(n: usize, seed: u8) -> Value {
    Value::Bytes(Bytes::from(vec![seed; n]))
}

async fn open(root: &std::path::Path) -> DiskCache {
    open_with(root, |b| b).await
}

/// Opens a cache on `root` with the settings `configure` adds to the builder.
async fn open_with(
    root: &std::path::Path,
    configure: impl FnOnce(DiskCacheBuilder) -> DiskCacheBuilder,
) -> DiskCache {
    configure(DiskCache::builder().root(root))
        .build()
        .await
        .unwrap()
}

async fn removal(cache: &DiskCache, key: &str) -> Option<Removal> {
    cache.last_removal(key).await.unwrap()
}

fn within(r: &Removal, from: SystemTime, to: SystemTime) {
    assert!(
        r.at >= from && r.at <= to,
        "{:?} recorded at {:?}, outside {from:?}..{to:?}",
        r.cause,
        r.at
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evictions_are_recorded_with_their_limit_and_read_from_another_handle() {
    let dir = tempfile::tempdir().unwrap();
    let by_count = open_with(dir.path(), |b| b.max_entries(2)).await;
    let other = open(dir.path()).await;
    let from = SystemTime::now();
    for (i, key) in ["a", "b", "c"].iter().enumerate() {
        by_count
            .set(key, bytes(10, i as u8), SetOptions::new())
            .await
            .unwrap();
        // Distinct modification times: the oldest is the victim.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let to = SystemTime::now();
    assert_eq!(by_count.get("a").await.unwrap(), None, "a was evicted");
    let r = removal(&other, "a")
        .await
        .expect("the eviction of a is recorded");
    assert_eq!(
        r.cause,
        RemovalCause::Evicted {
            limit: EvictionLimit::MaxEntries
        }
    );
    within(&r, from, to);
    assert_eq!(removal(&other, "c").await, None, "c was never removed");
    drop(by_count);

    let dir = tempfile::tempdir().unwrap();
    let by_bytes = open_with(dir.path(), |b| b.max_bytes(150_000)).await;
    by_bytes
        .set("big/1", bytes(100_000, 1), SetOptions::new())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    by_bytes
        .set("big/2", bytes(100_000, 2), SetOptions::new())
        .await
        .unwrap();
    let r = removal(&open(dir.path()).await, "big/1")
        .await
        .expect("recorded");
    assert_eq!(
        r.cause,
        RemovalCause::Evicted {
            limit: EvictionLimit::MaxBytes
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiries_deletes_clears_and_corrupt_entries_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let cache = open_with(dir.path(), |b| b.clock(clock.clone())).await;
    let ttl = SetOptions::new().ttl_seconds(10);
    cache.set("read late", bytes(10, 1), ttl).await.unwrap();
    cache.set("purged", bytes(10, 2), ttl).await.unwrap();
    cache
        .set("deleted", bytes(10, 3), SetOptions::new())
        .await
        .unwrap();
    cache
        .set("corrupt", bytes(50_000, 4), SetOptions::new())
        .await
        .unwrap();
    clock.advance(Duration::from_secs(11));
    let from = SystemTime::now();
    assert_eq!(cache.get("read late").await.unwrap(), None);
    assert_eq!(cache.purge_expired().await.unwrap(), 1);
    assert!(cache.delete("deleted").await.unwrap());
    assert!(!cache.delete("never there").await.unwrap());
    // Flip a payload byte: the read finds it corrupt and removes it.
    let path = common::entry_path(dir.path(), "corrupt");
    let mut b = std::fs::read(&path).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    std::fs::write(&path, b).unwrap();
    assert!(matches!(
        cache.get("corrupt").await,
        Err(Error::Corrupt { .. })
    ));
    let to = SystemTime::now();
    for (key, cause) in [
        ("read late", RemovalCause::Expired),
        ("purged", RemovalCause::Expired),
        ("deleted", RemovalCause::Deleted),
        ("corrupt", RemovalCause::Corrupt),
    ] {
        let r = removal(&cache, key)
            .await
            .unwrap_or_else(|| panic!("{key}: no record"));
        assert_eq!(r.cause, cause, "{key}");
        within(&r, from, to);
    }
    assert_eq!(removal(&cache, "never there").await, None);

    cache
        .set("kept", bytes(10, 5), SetOptions::new())
        .await
        .unwrap();
    assert_eq!(cache.clear().await.unwrap(), 1);
    assert_eq!(
        removal(&cache, "kept").await.unwrap().cause,
        RemovalCause::Cleared
    );
    // A key written again keeps the record of its last removal.
    cache
        .set("deleted", bytes(10, 6), SetOptions::new())
        .await
        .unwrap();
    assert_eq!(
        removal(&cache, "deleted").await.unwrap().cause,
        RemovalCause::Deleted
    );

    assert!(matches!(
        cache.last_removal("").await,
        Err(Error::InvalidKey { .. })
    ));
}

/// Deletes and evictions on two handles at once: every removal is recorded
/// once, whole, and none that did not happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removals_racing_on_one_handle_and_on_two_are_all_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let one = open(dir.path()).await;
    let two = open(dir.path()).await;
    let keys: Vec<String> = (0..64).map(|i| format!("k/{i}")).collect();
    for k in &keys {
        one.set(k, bytes(100, 1), SetOptions::new()).await.unwrap();
    }
    let mut tasks = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        // Every key deleted by two tasks at once, over the two handles.
        for h in [&one, &two, if i % 2 == 0 { &one } else { &two }] {
            let (cache, k) = (h.clone(), k.clone());
            tasks.push(tokio::spawn(async move { cache.delete(&k).await.unwrap() }));
        }
    }
    let mut removed = 0;
    for t in tasks {
        removed += usize::from(t.await.unwrap());
    }
    assert_eq!(removed, keys.len(), "each key removed once");
    for k in &keys {
        let r = removal(&two, k)
            .await
            .unwrap_or_else(|| panic!("{k}: no record"));
        assert_eq!(r.cause, RemovalCause::Deleted);
    }

    // Evictions by two capped handles writing at once.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        open_with(dir.path(), |b| b.max_entries(8)).await,
        open_with(dir.path(), |b| b.max_entries(8)).await,
    );
    let mut tasks = Vec::new();
    for i in 0..48 {
        let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            cache
                .set(&format!("e/{i}"), bytes(100, 2), SetOptions::new())
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut gone = 0;
    for i in 0..48 {
        let key = format!("e/{i}");
        let present = a.get(&key).await.unwrap().is_some();
        match removal(&a, &key).await {
            Some(r) => {
                assert!(
                    matches!(r.cause, RemovalCause::Evicted { .. }),
                    "{key}: {r:?}"
                );
                assert!(!present, "{key} is there, recorded as evicted");
                gone += 1;
            }
            None => assert!(present, "{key} is gone with no record"),
        }
    }
    let evictions = a.stats().await.unwrap().evictions + b.stats().await.unwrap().evictions;
    assert_eq!(gone, evictions, "one record per eviction");
    assert!(gone >= 40, "{gone} evicted of 48 over a cap of 8");
}

/// A delete dropped at any await point: the entry is either still there
/// (and the next delete records its removal) or gone with its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_dropped_at_any_await_records_exactly_what_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path()).await;
    for polls in 0..8 {
        let key = format!("dropped/{polls}");
        cache
            .set(&key, bytes(10, 1), SetOptions::new())
            .await
            .unwrap();
        let set_done = SystemTime::now();
        let done = poll_then_drop(cache.delete(&key), polls).await;
        // The next delete takes the key's lock: a dropped delete still at
        // work has finished by then.
        let again = cache.delete(&key).await.unwrap();
        let after = SystemTime::now();
        let r = removal(&cache, &key).await.expect("a removal is recorded");
        assert_eq!(r.cause, RemovalCause::Deleted);
        within(&r, set_done, after);
        match done {
            Some(first) => assert!(first.unwrap() && !again, "{polls}: completed"),
            None => assert!(
                cache.get(&key).await.unwrap().is_none(),
                "{polls}: removed by one of the two"
            ),
        }
    }
}
