//! Races on DiskCache that used to lose data, shadow it, break the limits or
//! block: each made deterministic (a sweep held between its check and its
//! removal, a key lock held by a computation, a counters' lock held by
//! another open file description, as another process would hold it) or
//! forced by many concurrent calls on one handle.
//!
//! - A purge that judged a large entry expired, held while the key is set
//!   twice (its inode number freed and given to the newest file), must not
//!   remove the newest value.
//! - A set whose future is dropped (a timeout while it waits for the key's
//!   lock, or a drop at any poll) never publishes afterwards, over a newer
//!   value; the same for `set_stream`, `get_or_insert_with` and `delete`.
//! - Concurrent sets on one handle (and on two) keep `max_entries` and
//!   `max_bytes`, and the counters equal to the disk.
//! - A read on a current-thread runtime that finds an expired entry while
//!   another process holds the counters' lock does not block the runtime.
//! - Opening a root whose users' lock another process holds (exclusively,
//!   as a handle opening alone does while it recounts) fails after the lock
//!   timeout instead of hanging.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use etl_cache_core::{Cache, CacheExt, Error, ManualClock, SetOptions, Value};
use etl_cache_fs::DiskCache;
use etl_cache_fs::fault::{self, Point};
use etl_cache_reliability::fixtures::{on_fresh_disk, open_with_clock};
use etl_cache_reliability::{report, runtime};
use futures::StreamExt;

const BASE: &str = "etl-cache-v1";

/// Entry files under the root and their total size.
fn on_disk(root: &Path) -> (u64, u64) {
    let (mut n, mut bytes) = (0, 0);
    for fan in fs::read_dir(root.join(BASE).join("entries")).unwrap() {
        for e in fs::read_dir(fan.unwrap().path()).unwrap() {
            let m = e.unwrap().metadata().unwrap();
            if m.is_file() {
                n += 1;
                bytes += m.len();
            }
        }
    }
    (n, bytes)
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

/// A large value (never recycled: over 32 KiB) that names its version.
fn large(version: u32) -> Value {
    let mut s = format!("version {version}\n");
    while s.len() < 100_000 {
        s.push_str("0123456789abcdef");
    }
    Value::Text(s)
}

fn version_of(v: &Value) -> String {
    match v {
        Value::Text(s) => s.lines().next().unwrap_or_default().to_owned(),
        other => format!("{other:?}"),
    }
}

/// Item 2: `purge_expired` judged a large entry expired; before it removes
/// it, the key is set twice, so the inode number of the file it read is
/// free to be given to the newest file (ext4 reuses it at once). The purge
/// must remove nothing: the newest value stays.
#[test]
fn a_purge_never_removes_a_newer_entry_that_took_the_inode_number_of_the_judged_one() {
    runtime().block_on(async {
        let rounds = 12;
        let mut reused = 0;
        for round in 0..rounds {
            let dir = tempfile::tempdir().unwrap();
            let clock = Arc::new(ManualClock::new());
            let cache = open_with_clock(dir.path(), &clock).await;
            let key = "purge/inode reuse";
            cache
                .set(key, large(0), SetOptions::new().ttl_seconds(10))
                .await
                .unwrap();
            let judged_ino = inode_of(dir.path());
            clock.advance(Duration::from_secs(11));
            let hold = fault::hold(dir.path(), Point::Judged);
            let purging = tokio::spawn({
                let cache = cache.clone();
                async move { cache.purge_expired().await }
            });
            let reached = tokio::task::block_in_place(|| hold.reached(Duration::from_secs(10)));
            assert!(reached, "the purge never judged the entry");
            cache.set(key, large(1), SetOptions::new()).await.unwrap();
            cache.set(key, large(2), SetOptions::new()).await.unwrap();
            if inode_of(dir.path()) == judged_ino {
                reused += 1;
            }
            hold.release();
            let purged = purging.await.unwrap().unwrap();
            let got = cache.get(key).await.unwrap();
            assert_eq!(
                got.as_ref().map(version_of).as_deref(),
                Some("version 2"),
                "round {round}: the purge removed the newest value (it removed {purged})"
            );
            assert_eq!(purged, 0, "round {round}");
            assert_eq!(
                cache.last_removal(key).await.unwrap(),
                None,
                "round {round}: the removal journal records a removal that did not happen"
            );
            let stats = cache.stats().await.unwrap();
            assert_eq!((stats.entries, stats.bytes), on_disk(dir.path()));
        }
        report(
            "races_disk/purge_inode_reuse",
            &format!("{rounds} rounds, the judged inode number reused by the newest file in {reused}; newest value kept in all"),
        );
    });
}

fn inode_of(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut found = None;
    for fan in fs::read_dir(root.join(BASE).join("entries")).unwrap() {
        for e in fs::read_dir(fan.unwrap().path()).unwrap() {
            found = Some(e.unwrap().metadata().unwrap().ino());
        }
    }
    found.expect("one entry file")
}

/// Watches `key` for `window` and fails if it ever reads as anything but
/// `want`: a cancelled write that took effect late would show up here.
async fn stays(cache: &DiskCache, key: &str, want: Option<&str>, window: Duration, what: &str) {
    let until = tokio::time::Instant::now() + window;
    while tokio::time::Instant::now() < until {
        let got = cache.get_text(key).await.unwrap();
        assert_eq!(got.as_deref(), want, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Starts a `get_or_insert_with(key, ..)` whose computation waits for the
/// returned sender, then returns `text(value)`; returns once the
/// computation runs (the key's lock held): the sender and the task.
async fn computing_under_the_key_lock(
    cache: &DiskCache,
    key: &'static str,
    value: &'static str,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<etl_cache_core::Result<Value>>,
) {
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let computing = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .get_or_insert_with(key, SetOptions::new(), || async move {
                    started_tx.send(()).unwrap();
                    go_rx.await.unwrap();
                    text(value)
                })
                .await
        }
    });
    started_rx.await.unwrap();
    (go_tx, computing)
}

/// Opens `path` for reading and writing and takes an exclusive lock on it,
/// as another process using the same root would.
fn locked_as_by_another_process(path: &Path) -> fs::File {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    file.lock().unwrap();
    file
}

/// Item 4: a set that times out while `get_or_insert_with` holds the key's
/// lock must not publish once the lock is free: the computed value stays.
#[test]
fn a_set_that_timed_out_waiting_for_the_key_lock_never_publishes_later() {
    on_fresh_disk(async |_root, cache| {
        let key = "cancel/timed out set";
        let (go_tx, computing) = computing_under_the_key_lock(&cache, key, "computed").await;
        // Every write path, each given up while it waits for the lock.
        let set = tokio::time::timeout(
            Duration::from_millis(300),
            cache.set(key, text("timed out set"), SetOptions::new()),
        )
        .await;
        assert!(set.is_err(), "the set did not wait for the key's lock");
        let large_set = tokio::time::timeout(
            Duration::from_millis(100),
            cache.set(key, large(9), SetOptions::new()),
        )
        .await;
        assert!(large_set.is_err());
        let chunks = futures::stream::iter(vec![Ok(Bytes::from_static(b"timed out stream"))]);
        let streamed = tokio::time::timeout(
            Duration::from_millis(100),
            cache.set_stream(key, chunks.boxed(), SetOptions::new()),
        )
        .await;
        assert!(streamed.is_err());
        go_tx.send(()).unwrap();
        assert_eq!(computing.await.unwrap().unwrap(), text("computed"));
        stays(
            &cache,
            key,
            Some("computed"),
            Duration::from_millis(400),
            "a timed-out write published after the computation",
        )
        .await;
        // A delete given up the same way removes nothing later.
        let other = "cancel/timed out delete";
        let (go_tx, computing) = computing_under_the_key_lock(&cache, other, "kept").await;
        let deleted = tokio::time::timeout(Duration::from_millis(200), cache.delete(other)).await;
        assert!(
            deleted.is_err(),
            "the delete did not wait for the key's lock"
        );
        go_tx.send(()).unwrap();
        computing.await.unwrap().unwrap();
        stays(
            &cache,
            other,
            Some("kept"),
            Duration::from_millis(300),
            "a timed-out delete removed the value later",
        )
        .await;
    });
}

/// Polls `fut` `polls` times (yielding in between so blocking work can
/// advance), then drops it if it has not finished; whether it finished.
async fn poll_then_drop<F: std::future::Future>(fut: F, polls: usize) -> bool {
    let mut fut = std::pin::pin!(fut);
    for _ in 0..polls {
        if futures::poll!(fut.as_mut()).is_ready() {
            return true;
        }
        tokio::task::yield_now().await;
    }
    false
}

/// Item 4, at every await point: a write dropped after k polls either took
/// effect before it was dropped or never does; a newer set made right after
/// the drop is never overwritten.
#[test]
fn writes_dropped_at_any_poll_never_take_effect_after_a_newer_set() {
    on_fresh_disk(async |_root, cache| {
        let key = "cancel/any poll";
        let (mut dropped, mut finished) = (0, 0);
        for polls in 0..24 {
            for op in 0..4 {
                cache
                    .set(key, text("old"), SetOptions::new())
                    .await
                    .unwrap();
                let done = match op {
                    0 => poll_then_drop(cache.set(key, large(7), SetOptions::new()), polls).await,
                    1 => {
                        let chunks = futures::stream::iter(
                            (0..8).map(|i| Ok(Bytes::from(vec![b'a' + i as u8; 40_000]))),
                        );
                        poll_then_drop(
                            cache.set_stream(key, chunks.boxed(), SetOptions::new()),
                            polls,
                        )
                        .await
                    }
                    2 => {
                        cache.delete(key).await.unwrap();
                        poll_then_drop(
                            cache.get_or_insert_with(key, SetOptions::new(), || async { large(8) }),
                            polls,
                        )
                        .await
                    }
                    _ => poll_then_drop(cache.delete(key), polls).await,
                };
                if done {
                    finished += 1;
                } else {
                    dropped += 1;
                }
                cache
                    .set(key, text("newer"), SetOptions::new())
                    .await
                    .unwrap();
                stays(
                    &cache,
                    key,
                    Some("newer"),
                    Duration::from_millis(30),
                    &format!("op {op} dropped after {polls} polls took effect after a newer set"),
                )
                .await;
            }
        }
        report(
            "races_disk/dropped_writes",
            &format!(
                "{dropped} writes dropped part way, {finished} finished before the drop; none took effect later"
            ),
        );
    });
}

/// Item 6: many tasks setting at once on one handle (and on two) keep the
/// limits on disk and the counters equal to the disk.
#[test]
fn concurrent_sets_on_one_handle_keep_the_limits_and_the_counters() {
    runtime().block_on(async {
        for (max_entries, max_bytes, handles) in [
            (1, None, 1),
            (3, None, 1),
            (2, None, 2),
            (1000, Some(20_000), 1),
            (1000, Some(20_000), 2),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let open = || async {
                let mut b = DiskCache::builder()
                    .root(dir.path())
                    .max_entries(max_entries);
                if let Some(m) = max_bytes {
                    b = b.max_bytes(m);
                }
                b.build().await.unwrap()
            };
            let a = open().await;
            let b = if handles == 2 {
                open().await
            } else {
                a.clone()
            };
            let mut tasks = Vec::new();
            for t in 0..6u32 {
                let cache = if t % 2 == 0 { a.clone() } else { b.clone() };
                tasks.push(tokio::spawn(async move {
                    for i in 0..15u32 {
                        let key = format!("limits/{t}/{i}");
                        let value =
                            Value::Bytes(Bytes::from(vec![t as u8; 900 + (i as usize % 5) * 700]));
                        cache.set(&key, value, SetOptions::new()).await.unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            let (files, bytes) = on_disk(dir.path());
            let what =
                format!("max_entries {max_entries}, max_bytes {max_bytes:?}, {handles} handle(s)");
            assert!(files <= max_entries, "{what}: {files} entry files on disk");
            if let Some(m) = max_bytes {
                assert!(bytes <= m, "{what}: {bytes} bytes on disk");
            }
            let stats = a.stats().await.unwrap();
            assert_eq!(
                (stats.entries, stats.bytes),
                (files, bytes),
                "{what}: counters vs disk"
            );
            assert!(stats.evictions > 0, "{what}: nothing was evicted");
        }
        report(
            "races_disk/concurrent_sets",
            "6 tasks x 15 sets, 5 settings: limits and counters held",
        );
    });
}

/// Item 8: on a current-thread runtime, a get (and a head, a get_stream)
/// of an expired entry while another process holds the counters' lock must
/// not block the runtime: other tasks keep running while it waits.
#[test]
fn a_read_of_an_expired_entry_does_not_block_the_runtime_while_the_counters_are_held() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new());
        let cache = DiskCache::builder()
            .root(dir.path())
            .clock(clock.clone())
            .lock_timeout(Duration::from_secs(60))
            .build()
            .await
            .unwrap();
        for key in ["expired/get", "expired/head", "expired/stream"] {
            cache
                .set(key, text("old"), SetOptions::new().ttl_seconds(1))
                .await
                .unwrap();
        }
        clock.advance(Duration::from_secs(2));
        // Another open file description holds the counters' lock, as
        // another process would.
        let usage = locked_as_by_another_process(&dir.path().join(BASE).join("usage"));
        let ticks = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = tokio::spawn({
            let (ticks, stop) = (ticks.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    ticks.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            }
        });
        let reads = tokio::spawn({
            let cache = cache.clone();
            async move {
                let g = cache.get("expired/get").await;
                let h = cache.head("expired/head").await;
                let s = cache
                    .get_stream("expired/stream", 1024)
                    .await
                    .map(|s| s.is_some());
                (g.map(|v| v.is_some()), h.map(|v| v.is_some()), s)
            }
        });
        // While the lock is held, the reads wait (off the runtime thread)
        // and the ticker runs.
        let before = ticks.load(Ordering::Relaxed);
        for _ in 0..1000 {
            tokio::task::yield_now().await;
        }
        let after = ticks.load(Ordering::Relaxed);
        assert!(
            after > before + 100,
            "the runtime thread was blocked: {} ticks while 1000 yields",
            after - before
        );
        // Had a read waited on the runtime thread, these yields would only
        // have come back after it gave up (60 s per read), with the reads
        // finished: the lock is still held, so they cannot be.
        assert!(
            !reads.is_finished(),
            "the reads ended while the counters' lock was still held: they waited for it on \
             the runtime thread, blocking it, and gave up"
        );
        usage.unlock().unwrap();
        let (g, h, s) = reads.await.unwrap();
        assert!(
            !g.unwrap() && !h.unwrap() && !s.unwrap(),
            "expired entries read as misses"
        );
        stop.store(true, Ordering::Relaxed);
        ticker.await.unwrap();
        let stats = cache.stats().await.unwrap();
        assert_eq!((stats.entries, stats.bytes), on_disk(dir.path()));
        assert_eq!(
            stats.entries, 0,
            "the expired entries were removed once the lock was free"
        );
    });
}

/// Item 9: another process holding the users' lock exclusively (a handle
/// opening the root alone holds it while it recounts) makes an open fail
/// with `Error::Open` after the lock timeout, not hang.
#[test]
fn an_open_waits_for_the_users_lock_no_longer_than_the_lock_timeout() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        drop(DiskCache::open(dir.path()).await.unwrap());
        let users = locked_as_by_another_process(&dir.path().join(BASE).join("users.lock"));
        let opened = tokio::time::timeout(
            Duration::from_secs(30),
            DiskCache::builder()
                .root(dir.path())
                .lock_timeout(Duration::from_millis(300))
                .build(),
        )
        .await
        .expect("the open hung on the users' lock");
        match opened {
            Err(Error::Open { message, .. }) => {
                assert!(message.contains("users' lock"), "{message}")
            }
            other => panic!("expected Error::Open, got {other:?}"),
        }
        users.unlock().unwrap();
        let cache = DiskCache::builder()
            .root(dir.path())
            .lock_timeout(Duration::from_millis(300))
            .build()
            .await
            .unwrap();
        cache.set("k", text("v"), SetOptions::new()).await.unwrap();
    });
}
