//! Cross-process locks of DiskCache (the single-flight cases of
//! `get_or_insert_with` are in etl-cache-fs's tests/single_flight.rs; these
//! are the other users of the locks).
//!
//! - A process that holds a key's lock and hangs: `set`, `set_stream` and
//!   `delete` of that key in another process fail with `LockTimeout` after
//!   the configured time; reads and other keys are not held up.
//! - The same holder killed with SIGKILL: the OS drops its lock and a writer
//!   already waiting proceeds at once; the lock file it left is reused.
//! - A process that holds the eviction lock and hangs: writers wait for it
//!   a moment at most, then scan beside it; the limits hold all along.
//! - A process that holds the shared counters' lock and hangs: every write
//!   (set, set_stream, delete, a single-flight insert, clear) and `stats`
//!   fail with `LockTimeout` after the configured time, naming the key or
//!   the counters' file; reads are not held up. Killed with SIGKILL, its
//!   lock goes with it and writers already waiting proceed at once.
//! - A process killed while holding the shared counters' lock: writers
//!   proceed at once.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use etl_cache_core::{Cache, CacheExt, Error, SetOptions, Value};
use etl_cache_fs::DiskCache;
use etl_cache_reliability::fixtures::{open_capped, temp_root};
use etl_cache_reliability::{layout, proc, report, runtime};

const KEY: &str = "locks/the contended key";
const HOLDER: &str = "key-lock-holder";
const FLOCK: &str = "flock-holder";
const SPARER: &str = "spare-keeper";

/// In the parent process, a new temporary directory and the cache root in
/// it; `None` in a child started in a role, where the test does nothing.
fn parent() -> Option<(tempfile::TempDir, PathBuf)> {
    if proc::role().is_some() {
        return None;
    }
    Some(temp_root())
}

/// In a child started as `role`, opens the cache at LOCK_ROOT and runs
/// `work` on it; elsewhere does nothing.
fn in_role<F, Fut>(role: &str, work: F)
where
    F: FnOnce(DiskCache) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(root) = proc::role_path(role, "LOCK_ROOT") else {
        return;
    };
    runtime().block_on(async {
        let cache = DiskCache::open(&root).await.expect("open");
        work(cache).await;
    });
}

/// Reports `line` for this suite.
fn report_locks(line: &str) {
    report("locks", line);
}

/// Prints `line` for the parent and flushes it at once.
fn tell_parent(line: &str) {
    use std::io::Write;
    println!("{line}");
    std::io::stdout().flush().expect("flush");
}

/// Opens a cache at `root` on `rt` whose writers wait `lock_timeout` for a
/// lock; `what` names the handle if it fails to open.
fn open_waiting(
    rt: &tokio::runtime::Runtime,
    root: &Path,
    lock_timeout: Duration,
    what: &str,
) -> DiskCache {
    rt.block_on(
        DiskCache::builder()
            .root(root)
            .lock_timeout(lock_timeout)
            .build(),
    )
    .expect(what)
}

/// Holds KEY's lock inside `get_or_insert_with` and never finishes.
#[test]
fn key_lock_holder() {
    in_role(HOLDER, |cache| async move {
        let _ = cache
            .get_or_insert_with(KEY, SetOptions::new(), || async {
                tell_parent("holding");
                futures::future::pending::<Value>().await
            })
            .await;
    });
}

/// Opens LOCK_ROOT, replaces a few small values (a replaced file is kept as
/// a spare, Linux, and written again by the next set) and waits to be killed.
#[test]
fn spare_keeper() {
    in_role(SPARER, |cache| async move {
        for i in 0..4 {
            let key = format!("spares/{i}");
            for v in ["one", "two"] {
                cache
                    .set(&key, v.into(), SetOptions::new())
                    .await
                    .expect("set");
            }
        }
        tell_parent("kept");
        futures::future::pending::<()>().await;
    });
}

/// Writers killed while a long-lived handle keeps the root open: each new
/// handle removes the spare files the killed ones kept, so they do not pile
/// up (a handle alone with the root was the only one to remove them).
#[cfg(target_os = "linux")]
#[test]
fn spare_files_of_killed_writers_do_not_pile_up() {
    let Some((_tmp, root)) = parent() else { return };
    let rt = runtime();
    let cache = rt.block_on(DiskCache::open(&root)).expect("open");
    let spares = || {
        layout::files_in(&layout::base(&root).join("spare"))
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "spare"))
            .count()
    };
    let kills = 20;
    // What one writer keeps: the first one's, alone.
    let mut one = None;
    for _ in 0..kills {
        let mut c = proc::child("spare_keeper", SPARER)
            .env("LOCK_ROOT", &root)
            .spawn()
            .expect("spawn");
        proc::Lines::of(&mut c).expect("kept", Duration::from_secs(60));
        one.get_or_insert_with(spares);
        proc::kill9(&mut c);
    }
    let one = one.unwrap_or_default();
    assert!(one >= 1, "a writer kept a replaced file");
    let left = spares();
    assert!(
        left <= one,
        "{left} spare files left after {kills} writers were killed (one writer keeps {one})"
    );
    // The next handle to open removes the last killed writer's too.
    let next = rt.block_on(DiskCache::open(&root)).expect("open");
    assert_eq!(
        spares(),
        0,
        "a killed writer's spares outlive the next open"
    );
    drop((next, cache));
    report_locks(&format!(
        "spare files after {kills} killed writers: {left} (one writer keeps {one})"
    ));
}

/// Takes an exclusive `flock` on FLOCK_PATH and sleeps.
#[test]
fn flock_holder() {
    let Some(path) = proc::role_path(FLOCK, "FLOCK_PATH") else {
        return;
    };
    use std::os::unix::fs::OpenOptionsExt;
    // (evict.lock exists once something was evicted; create it as the cache does.)
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .expect("open the lock file");
    f.lock().expect("lock");
    tell_parent("locked");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Starts this binary as `role` running `test` with `var` set to `path`,
/// and waits until it prints `ready`.
fn spawn_role(test: &str, role: &str, var: &str, path: &Path, ready: &str) -> (Child, proc::Lines) {
    let mut c = proc::child(test, role)
        .env(var, path)
        .spawn()
        .expect("spawn");
    let lines = proc::Lines::of(&mut c);
    lines.expect(ready, Duration::from_secs(60));
    (c, lines)
}

fn spawn_holder(root: &Path) -> (Child, proc::Lines) {
    spawn_role("key_lock_holder", HOLDER, "LOCK_ROOT", root, "holding")
}

fn spawn_flock(path: &Path) -> (Child, proc::Lines) {
    spawn_role("flock_holder", FLOCK, "FLOCK_PATH", path, "locked")
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let t = Instant::now();
    let r = f.await;
    (r, t.elapsed())
}

/// Runs `f`, checks it took less than `timeout` (`what` names it), and
/// returns its output.
async fn without_waiting<T>(f: impl Future<Output = T>, timeout: Duration, what: &str) -> T {
    let (r, took) = timed(f).await;
    assert!(took < timeout, "{what} waited {took:?}");
    r
}

/// A set, a large set (written on the blocking pool) and a `set_stream`
/// of `key`, each checked by `expect_lock_timeout` to fail with a
/// `LockTimeout` naming `key` after `timeout`; returns how long each took.
async fn writes_time_out(
    cache: &DiskCache,
    key: &str,
    timeout: Duration,
    root: &Path,
) -> Vec<(&'static str, Duration)> {
    let (r, took) = timed(cache.set(key, "new".into(), SetOptions::new())).await;
    expect_lock_timeout(r, took, timeout, root, Some(key), "set");
    let mut tally = vec![("set", took)];
    let big = bytes::Bytes::from(vec![7u8; 300_000]);
    let (r, took) = timed(cache.set(key, Value::Bytes(big.clone()), SetOptions::new())).await;
    expect_lock_timeout(
        r,
        took,
        timeout,
        root,
        Some(key),
        "set (large, blocking pool)",
    );
    tally.push(("large set", took));
    let s = futures::StreamExt::boxed(futures::stream::iter([Ok(big)]));
    let (r, took) = timed(cache.set_stream(key, s, SetOptions::new())).await;
    expect_lock_timeout(r, took, timeout, root, Some(key), "set_stream");
    tally.push(("set_stream", took));
    tally
}

/// Runs `write` on `rt` in a thread of its own; the thread returns its
/// result and when it finished.
fn spawn_writer<F>(
    rt: &Arc<tokio::runtime::Runtime>,
    write: F,
) -> JoinHandle<(etl_cache_core::Result<()>, Instant)>
where
    F: Future<Output = etl_cache_core::Result<()>> + Send + 'static,
{
    let rt = rt.clone();
    std::thread::spawn(move || {
        let r = rt.block_on(write);
        (r, Instant::now())
    })
}

/// Kills `child` and joins `writers`, each expected to succeed (`what`
/// names them); returns the longest a writer went on after the kill.
fn kill_and_join(
    child: &mut Child,
    writers: Vec<JoinHandle<(etl_cache_core::Result<()>, Instant)>>,
    what: &str,
) -> Duration {
    let killed = Instant::now();
    proc::kill9(child);
    let mut worst = Duration::ZERO;
    for w in writers {
        let (r, done) = w.join().expect("join");
        r.expect(what);
        worst = worst.max(done.saturating_duration_since(killed));
    }
    worst
}

#[test]
fn a_hung_key_lock_holder_makes_writers_time_out_and_nothing_else_waits() {
    let Some((_tmp, root)) = parent() else { return };
    let timeout = Duration::from_millis(400);
    let rt = runtime();
    let cache = open_waiting(&rt, &root, timeout, "open");
    rt.block_on(cache.set("locks/other", "x".into(), SetOptions::new()))
        .expect("set");
    // The holder misses KEY, takes its lock and computes forever.
    let (mut child, _lines) = spawn_holder(&root);
    rt.block_on(async {
        writes_time_out(&cache, KEY, timeout, &root).await;
        let (r, took) = timed(cache.delete(KEY)).await;
        expect_lock_timeout(r, took, timeout, &root, Some(KEY), "delete");
        // No debris from the refused writes.
        assert!(layout::files_in(&layout::tmp_dir(&root)).is_empty());
        // Reads, other keys, listing, clearing: no waiting.
        let r = without_waiting(cache.get(KEY), timeout, "a read").await;
        assert_eq!(r.expect("get"), None);
        let other = cache.set("locks/other", "y".into(), SetOptions::new());
        without_waiting(other, timeout, "another key")
            .await
            .expect("another key");
        let r = without_waiting(cache.keys(None), timeout, "listing").await;
        assert_eq!(r.expect("keys"), vec!["locks/other".to_string()]);
        let r = without_waiting(cache.clear(), timeout, "clear").await;
        assert_eq!(r.expect("clear"), 1);
    });
    proc::kill9(&mut child);
    report_locks(&format!(
        "hung key-lock holder: set, large set, set_stream, delete -> LockTimeout after {timeout:?}; get, other keys, list, clear unaffected"
    ));
}

#[test]
fn a_lock_holder_killed_by_sigkill_releases_its_lock_at_once() {
    let Some((_tmp, root)) = parent() else { return };
    let rt = Arc::new(runtime());
    let cache = open_waiting(&rt, &root, Duration::from_secs(60), "open");
    let mut latencies = Vec::new();
    for round in 0..5 {
        let (mut child, _lines) = spawn_holder(&root);
        // Writers start waiting for the lock...
        let waiters: Vec<_> = (0..3)
            .map(|i| {
                let cache = cache.clone();
                spawn_writer(&rt, async move {
                    if i == 2 {
                        cache.delete(KEY).await.map(|_| ())
                    } else {
                        cache
                            .set(
                                KEY,
                                format!("round {round} writer {i}").into(),
                                SetOptions::new(),
                            )
                            .await
                            .map(|_| ())
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            waiters.iter().all(|w| !w.is_finished()),
            "round {round}: the writers wait for the holder"
        );
        assert!(
            layout::lock_path(&root, KEY).exists(),
            "the holder's lock file is there"
        );
        // ...and proceed at once when it is killed.
        latencies.push(kill_and_join(
            &mut child,
            waiters,
            "a writer after the holder was killed",
        ));
        assert!(
            layout::files_in(&layout::locks_dir(&root)).is_empty(),
            "the lock file left by the killed holder was reused and removed"
        );
        rt.block_on(cache.delete(KEY)).expect("delete");
    }
    let worst = latencies.iter().max().copied().unwrap_or_default();
    assert!(
        worst < Duration::from_secs(1),
        "writers waited {worst:?} after the holder was killed (lock timeout 60 s)"
    );
    report_locks(&format!(
        "SIGKILLed key-lock holder, 5 rounds x 3 waiting writers: worst wait after the kill {worst:?} (timeout 60 s)"
    ));
}

#[test]
fn a_hung_evictor_never_blocks_writers_and_limits_return_once_it_is_gone() {
    let Some((_tmp, root)) = parent() else { return };
    let rt = runtime();
    let cache = rt.block_on(open_capped(&root, 4));
    let (mut child, _lines) = spawn_flock(&layout::evict_lock(&root));
    rt.block_on(async {
        for i in 0..12 {
            let (r, took) =
                timed(cache.set(&format!("e/{i}"), "v".into(), SetOptions::new())).await;
            r.expect("set while the evictor hangs");
            assert!(
                took < Duration::from_secs(1),
                "a set waited {took:?} for the evictor"
            );
        }
        // The evict lock only keeps scanners apart: a set that needs room
        // scans beside a hung holder, so the limit holds all along.
        let (n, _) = layout::disk_usage(&root);
        assert!(
            n <= 4,
            "the limit holds while another process holds the eviction lock: {n} entries"
        );
    });
    proc::kill9(&mut child);
    rt.block_on(async {
        cache
            .set("e/last", "v".into(), SetOptions::new())
            .await
            .expect("set");
        let (n, _) = layout::disk_usage(&root);
        assert!(
            n <= 4,
            "the limit holds again once the evictor is gone: {n} entries"
        );
        let s = cache.stats().await.expect("stats");
        assert_eq!((s.entries, s.bytes), layout::disk_usage(&root));
    });
    report_locks(
        "hung evictor (evict.lock held): 12 sets over max_entries=4 proceed without waiting; limit restored after SIGKILL",
    );
}

#[test]
fn a_process_killed_holding_the_counters_lock_does_not_block_writers() {
    let Some((_tmp, root)) = parent() else { return };
    let rt = Arc::new(runtime());
    let cache = rt.block_on(DiskCache::open(&root)).expect("open");
    let (mut child, _lines) = spawn_flock(&layout::usage_file(&root));
    let writer = {
        let cache = cache.clone();
        spawn_writer(&rt, async move {
            cache
                .set("u/k", "v".into(), SetOptions::new())
                .await
                .map(|_| ())
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !writer.is_finished(),
        "the writer waits for the counters' lock"
    );
    let waited = kill_and_join(&mut child, vec![writer], "set after the holder was killed");
    assert!(
        waited < Duration::from_secs(1),
        "waited {waited:?} after the kill"
    );
    rt.block_on(async {
        let s = cache.stats().await.expect("stats");
        assert_eq!((s.entries, s.bytes), layout::disk_usage(&root));
    });
    report_locks(&format!(
        "SIGKILLed holder of the counters' lock: the waiting set went on {waited:?} after the kill"
    ));
}

/// Checks a `LockTimeout` from a hung holder of a key's or the counters'
/// lock: it names `key` (or, when `key` is `None`, the counters' file) and
/// came after the timeout, not much later.
fn expect_lock_timeout<T: std::fmt::Debug>(
    r: etl_cache_core::Result<T>,
    took: Duration,
    timeout: Duration,
    root: &Path,
    key: Option<&str>,
    what: &str,
) {
    match r {
        Err(e @ Error::LockTimeout { .. }) => {
            let Error::LockTimeout { key: named, waited } = &e else {
                unreachable!()
            };
            match key {
                Some(key) => assert_eq!(named, key, "{what}: the error names the key: {e}"),
                None => assert!(
                    named.contains(&layout::usage_file(root).display().to_string()),
                    "{what}: the error names the counters' file: {e}"
                ),
            }
            assert!(
                *waited >= timeout,
                "{what}: waited {waited:?} < {timeout:?}"
            );
            assert!(
                took >= timeout && took < timeout + Duration::from_secs(2),
                "{what}: returned after {took:?}; the timeout is {timeout:?}"
            );
        }
        other => panic!("{what}: want LockTimeout after {timeout:?}, got {other:?} after {took:?}"),
    }
}

#[test]
fn a_hung_holder_of_the_counters_lock_makes_writers_time_out_until_it_is_killed() {
    let Some((_tmp, root)) = parent() else { return };
    let timeout = Duration::from_millis(400);
    let rt = Arc::new(runtime());
    let cache = open_waiting(&rt, &root, timeout, "open");
    rt.block_on(cache.set("u/old", "old".into(), SetOptions::new()))
        .expect("set");
    let (mut child, _lines) = spawn_flock(&layout::usage_file(&root));
    let mut tally = Vec::new();
    rt.block_on(async {
        tally = writes_time_out(&cache, "u/k", timeout, &root).await;
        let (r, took) = timed(
            cache.get_or_insert_with("u/k", SetOptions::new(), || async {
                Value::from("computed")
            }),
        )
        .await;
        expect_lock_timeout(r, took, timeout, &root, Some("u/k"), "get_or_insert_with");
        tally.push(("get_or_insert_with", took));
        let (r, took) = timed(cache.delete("u/old")).await;
        expect_lock_timeout(r, took, timeout, &root, Some("u/old"), "delete");
        tally.push(("delete", took));
        let (r, took) = timed(cache.clear()).await;
        expect_lock_timeout(r, took, timeout, &root, None, "clear");
        tally.push(("clear", took));
        let (r, took) = timed(cache.stats()).await;
        expect_lock_timeout(r, took, timeout, &root, None, "stats");
        tally.push(("stats", took));
        // Nothing was written or removed, no debris.
        assert!(layout::files_in(&layout::tmp_dir(&root)).is_empty());
        assert!(layout::files_in(&layout::locks_dir(&root)).is_empty());
        assert_eq!(layout::disk_usage(&root).0, 1);
        // Reads, listing and a purge with nothing to purge do not wait.
        let r = without_waiting(cache.get("u/old"), timeout, "a read").await;
        assert_eq!(r.expect("get"), Some(Value::from("old")));
        let r = without_waiting(cache.get("u/k"), timeout, "a miss").await;
        assert_eq!(r.expect("get"), None);
        let r = without_waiting(cache.keys(None), timeout, "listing").await;
        assert_eq!(r.expect("keys"), vec!["u/old".to_string()]);
        let purge = cache.purge_expired();
        let r = without_waiting(purge, timeout, "a purge with nothing to purge").await;
        assert_eq!(r.expect("purge_expired"), 0);
    });

    // Writers of a patient handle wait for the holder...
    let patient = open_waiting(&rt, &root, Duration::from_secs(60), "open a second handle");
    let waiters: Vec<_> = (0..3)
        .map(|i| {
            let cache = patient.clone();
            spawn_writer(&rt, async move {
                match i {
                    0 => cache
                        .set("u/k", "small".into(), SetOptions::new())
                        .await
                        .map(|_| ()),
                    1 => cache
                        .set(
                            "u/big",
                            Value::Bytes(vec![1u8; 100_000].into()),
                            SetOptions::new(),
                        )
                        .await
                        .map(|_| ()),
                    _ => cache.delete("u/old").await.map(|_| ()),
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "the writers wait for the holder of the counters' lock"
    );
    // ...and proceed at once when it is killed.
    let worst = kill_and_join(&mut child, waiters, "a writer after the holder was killed");
    assert!(
        worst < Duration::from_secs(1),
        "writers waited {worst:?} after the holder was killed"
    );
    rt.block_on(async {
        // The impatient handle works again at once too.
        let (r, took) = timed(cache.set("u/k", "after".into(), SetOptions::new())).await;
        r.expect("set after the kill");
        assert!(took < timeout, "a set waited {took:?} after the kill");
        assert_eq!(
            cache.get("u/k").await.expect("get"),
            Some(Value::from("after"))
        );
        assert_eq!(cache.get("u/old").await.expect("get"), None);
        let s = cache.stats().await.expect("stats");
        assert_eq!((s.entries, s.bytes), layout::disk_usage(&root));
    });
    let longest = tally.iter().map(|(_, t)| *t).max().unwrap_or_default();
    report_locks(&format!(
        "hung holder of the counters' lock: {} -> LockTimeout after {timeout:?} (longest {longest:?}); reads, list, empty purge unaffected; SIGKILLed: 3 waiting writers went on within {worst:?} (timeout 60 s)",
        tally.iter().map(|(w, _)| *w).collect::<Vec<_>>().join(", ")
    ));
}
