//! Faults: a full disk (a child under RLIMIT_FSIZE; a small tmpfs, in
//! bytes and in inodes), a root that turns read-only (a read-only bind
//! mount), files that vanish, shrink or are replaced while read, and I/O
//! errors injected through `etl-cache-fs`'s `fault-injection` hook.
//!
//! Each fault must give a clear error naming the key; the previous value
//! must stay readable; no debris may count against capacity; the cache must
//! work again once the fault clears.
//!
//! The mounts need root (the CI runs as root): without it those tests fail
//! saying so. RLIMIT_FSIZE is set with util-linux `prlimit`; the child
//! ignores SIGXFSZ through coreutils `env --ignore-signal=XFSZ` (a process
//! that does not ignore it is killed by it instead of seeing EFBIG: one test
//! shows that).

use std::io::{self, ErrorKind};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use etl_cache_core::{Cache, CacheExt, Compression, Error, Kind, ManualClock, SetOptions, Value};
use etl_cache_fs::DiskCache;
use etl_cache_fs::fault::{self, Point};
use etl_cache_reliability::fixtures::{on_fresh_disk, open_with_clock, temp_root};
use etl_cache_reliability::mounts::Mount;
use etl_cache_reliability::payload::{self, Style};
use etl_cache_reliability::{Rng, iterations, layout, proc, report, require_root, runtime, seed};
use futures::{StreamExt, TryStreamExt};

/// Checks that `r` is an `Error::Io` about `key` whose OS error is `kind`.
fn expect_io<T: std::fmt::Debug>(
    r: etl_cache_core::Result<T>,
    key: &str,
    kind: ErrorKind,
) -> Error {
    match r {
        Err(e @ Error::Io { .. }) => {
            let Error::Io { source, .. } = &e else {
                unreachable!()
            };
            assert_eq!(source.kind(), kind, "the OS error of {e}");
            assert_eq!(e.key(), Some(key), "the error names the key: {e}");
            assert!(
                e.to_string().contains(key),
                "the message names the key: {e}"
            );
            e
        }
        other => panic!("want an I/O error ({kind:?}) naming {key:?}, got {other:?}"),
    }
}

/// Checks that `r` is the error of a `clear` or `purge_expired` (named by
/// `op`) that could not remove `failed` entries and removed `removed`: an
/// `Error::Io` naming an entry file under the root and the operation, with
/// the OS error `kind`.
fn expect_removal_error(
    r: etl_cache_core::Result<u64>,
    root: &Path,
    op: &str,
    kind: ErrorKind,
    failed: u64,
    removed: u64,
) -> Error {
    match r {
        Err(e @ Error::Io { .. }) => {
            let Error::Io {
                key,
                path,
                op: what,
                source,
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(source.kind(), kind, "the OS error of {e}");
            assert!(
                path.starts_with(layout::entries_dir(root)) && path.is_file(),
                "the error names the entry file it could not remove: {e}"
            );
            assert_eq!(
                path,
                &layout::entry_path(root, key),
                "the key and the path agree: {e}"
            );
            assert!(what.contains(op), "the error names the operation: {e}");
            let plural =
                |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
            let counts = format!(
                "{} could not be removed (the first is named here), {} removed",
                plural(failed, "entry", "entries"),
                plural(removed, "was", "were")
            );
            assert!(e.to_string().contains(&counts), "want {counts:?} in: {e}");
            e
        }
        other => panic!("{op}: want an I/O error ({kind:?}) naming an entry, got {other:?}"),
    }
}

async fn assert_consistent(cache: &DiskCache, root: &Path, what: &str) {
    assert!(
        layout::files_in(&layout::tmp_dir(root)).is_empty(),
        "{what}: temp files left: {:?}",
        layout::files_in(&layout::tmp_dir(root))
    );
    let s = cache.stats().await.expect("stats");
    assert_eq!(
        (s.entries, s.bytes),
        layout::disk_usage(root),
        "{what}: the counters disagree with the disk"
    );
}

async fn text_of(cache: &dyn Cache, key: &str) -> Option<Value> {
    cache.get(key).await.expect("get")
}

/// Sets `key` to `value` (`what` names the set should it fail) and checks
/// that a read returns it.
async fn set_and_check(cache: &DiskCache, key: &str, value: &Value, what: &str) {
    cache
        .set(key, value.clone(), SetOptions::new())
        .await
        .expect(what);
    assert_eq!(text_of(cache, key).await, Some(value.clone()));
}

/// Checks that `r` failed with an I/O error of kind `StorageFull` naming
/// `key`, and keeps the error's message in `errors`.
fn record_storage_full<T: std::fmt::Debug>(
    errors: &mut Vec<String>,
    r: etl_cache_core::Result<T>,
    key: &str,
) {
    errors.push(expect_io(r, key, ErrorKind::StorageFull).to_string());
}

fn big_random(len: usize, seed: u64) -> Bytes {
    Bytes::from(payload::body(seed, Style::Random, len))
}

fn stream_of(b: Bytes, chunk: usize) -> etl_cache_core::ByteStream {
    let chunks: Vec<io::Result<Bytes>> = (0..b.len())
        .step_by(chunk)
        .map(|at| Ok(b.slice(at..(at + chunk).min(b.len()))))
        .collect();
    futures::stream::iter(chunks).boxed()
}

// ------------------------------------------------------------ injected faults

#[derive(Default, Debug)]
struct Tally {
    faults: u64,
    by_point: std::collections::BTreeMap<String, u64>,
    by_op: std::collections::BTreeMap<String, u64>,
}

#[test]
fn injected_io_errors_name_the_key_and_keep_the_previous_value() {
    let trials = iterations("ETL_CACHE_FAULTS", 600, 10_000);
    let seed = seed();
    let mut rng = Rng::new(seed);
    let (_dir, root) = temp_root();
    let rt = runtime();
    let started = Instant::now();
    let mut t = Tally::default();
    let kinds = [
        ErrorKind::StorageFull,
        ErrorKind::PermissionDenied,
        ErrorKind::ReadOnlyFilesystem,
        ErrorKind::QuotaExceeded,
        ErrorKind::Other,
    ];
    rt.block_on(async {
        let cache = DiskCache::builder()
            .root(&root)
            .max_bytes(64 << 20)
            .build()
            .await
            .expect("open");
        let keys: Vec<String> = (0..4).map(|i| format!("faults/key{i} ünï")).collect();
        let mut current: Vec<Option<Value>> = vec![None; keys.len()];
        for i in 0..trials {
            let k = rng.below(keys.len() as u64) as usize;
            let key = &keys[k];
            let kind = *rng.pick(&kinds);
            let times = rng.range(1, 3);
            let len = *rng.pick(&[10usize, 5_000, 40_000, 300_000]);
            let opts = SetOptions::new().compression(*rng.pick(&[
                Compression::NONE,
                Compression::gzip(),
                Compression::zstd(),
            ]));
            let new_value = payload::value(
                key,
                i,
                *rng.pick(&[Kind::Text, Kind::Bytes, Kind::Json]),
                len,
                Style::Random,
            );
            let (point, op) = match rng.below(7) {
                0 => (Point::Write, "set"),
                1 => (Point::Write, "set_stream"),
                2 => (Point::Rename, "set"),
                3 => (Point::Rename, "set_stream"),
                4 => (Point::Read, "get"),
                5 => (Point::Read, "get_stream_open"),
                _ => (Point::Read, "get_stream_mid"),
            };
            let reading = point == Point::Read;
            // Mid-stream faults need a stream longer than what the reader
            // threads read ahead: a few blocks of 1 MiB each.
            const MID: usize = 10 << 20;
            let too_small = current[k].as_ref().is_none_or(|v| v.to_bytes().len() < MID);
            if reading && (current[k].is_none() || (op == "get_stream_mid" && too_small)) {
                // Something to read first.
                let v = payload::value(key, i, Kind::Bytes, MID, Style::Random);
                cache.set(key, v.clone(), opts).await.expect("set");
                current[k] = Some(v);
            }
            if op != "get_stream_mid" {
                fault::inject(&root, point, times, kind);
            }
            match op {
                "set" => {
                    expect_io(cache.set(key, new_value.clone(), opts).await, key, kind);
                }
                "set_stream" => {
                    let s = stream_of(new_value.to_bytes(), 16_384);
                    expect_io(cache.set_stream(key, s, opts).await, key, kind);
                }
                "get" => {
                    expect_io(cache.get(key).await, key, kind);
                }
                "get_stream_open" => {
                    expect_io(cache.get_stream(key, 4096).await.map(|_| ()), key, kind);
                }
                _ => {
                    // The entry opens fine; the fault hits a later chunk.
                    let s = cache
                        .get_stream(key, 4096)
                        .await
                        .expect("open")
                        .expect("present");
                    fault::inject(&root, point, times, kind);
                    let r: Result<Vec<Bytes>, io::Error> = s.try_collect().await;
                    let e = r.expect_err("a failing read ends the stream with an error");
                    expect_io(
                        Err::<(), _>(etl_cache_core::stream_read_error(key, e)),
                        key,
                        kind,
                    );
                }
            }
            fault::clear(&root);
            // The previous value is intact (an I/O error is not corruption:
            // the entry stays), no debris counts, and the next try works.
            assert_eq!(
                text_of(&cache, key).await,
                current[k],
                "trial {i}: {op} at {point:?}"
            );
            assert_consistent(&cache, &root, op).await;
            if !reading {
                cache
                    .set(key, new_value.clone(), opts)
                    .await
                    .expect("set once the fault cleared");
                current[k] = Some(new_value);
                assert_eq!(text_of(&cache, key).await, current[k]);
            }
            t.faults += 1;
            *t.by_point.entry(format!("{point:?}")).or_default() += 1;
            *t.by_op.entry(op.to_owned()).or_default() += 1;
        }
    });
    report(
        "faults",
        &format!(
            "injected: seed={seed} faults={} by_point={:?} by_op={:?} took={:.1}s",
            t.faults,
            t.by_point,
            t.by_op,
            started.elapsed().as_secs_f64()
        ),
    );
}

/// A large uncompressed entry is streamed by two reading threads; a read
/// failing in either, however far the stream got, ends the stream with that
/// error (never a clean end, never a hang) and leaves the entry as it was.
#[test]
fn a_failed_read_mid_stream_of_a_large_entry_ends_the_stream() {
    on_fresh_disk(async |root, cache| {
        let key = "faults/large";
        // Large enough that the reader threads, which run at most a few
        // blocks ahead of the stream (bounded memory), cannot have read it
        // all before the fault is injected after the 40th chunk (2.5 MiB).
        let data = big_random(32 << 20, 5);
        cache
            .set(key, Value::Bytes(data.clone()), SetOptions::new())
            .await
            .expect("set");
        for (after, kind) in [
            (1, ErrorKind::Other),
            (2, ErrorKind::PermissionDenied),
            (7, ErrorKind::StorageFull),
            (40, ErrorKind::Other),
        ] {
            let mut s = cache
                .get_stream(key, 64 << 10)
                .await
                .expect("open")
                .expect("present");
            let mut got = Vec::new();
            for _ in 0..after {
                got.extend_from_slice(&s.next().await.expect("a chunk").expect("ok"));
            }
            fault::inject(root, Point::Read, 1, kind);
            let err = loop {
                match s.next().await {
                    Some(Ok(c)) => got.extend_from_slice(&c),
                    Some(Err(e)) => break e,
                    None => panic!("after {after} chunks: the stream ended cleanly"),
                }
            };
            assert!(s.next().await.is_none(), "nothing follows the error");
            assert!(got.len() < data.len(), "after {after} chunks");
            assert_eq!(&got[..], &data[..got.len()], "the chunks before the error");
            expect_io(
                Err::<(), _>(etl_cache_core::stream_read_error(key, err)),
                key,
                kind,
            );
            fault::clear(root);
            assert_eq!(text_of(&cache, key).await, Some(Value::Bytes(data.clone())));
            assert_consistent(&cache, root, "a failed read mid-stream").await;
        }
    });
}

#[test]
fn injected_removal_failures_fail_clear_and_purge_after_removing_the_rest() {
    let (_dir, root) = temp_root();
    let clock = Arc::new(ManualClock::new());
    let rt = runtime();
    rt.block_on(async {
        let cache = open_with_clock(&root, &clock).await;
        for i in 0..6 {
            let opts = if i < 3 {
                SetOptions::new().ttl_seconds(10)
            } else {
                SetOptions::new()
            };
            cache
                .set(&format!("rm/{i}"), format!("value {i}").into(), opts)
                .await
                .expect("set");
        }
        clock.advance(Duration::from_secs(11));

        // purge_expired: one of the three expired entries cannot be removed;
        // the other two are removed (and counted), then the error.
        fault::inject(&root, Point::Remove, 1, ErrorKind::PermissionDenied);
        let e = expect_removal_error(
            cache.purge_expired().await,
            &root,
            "purge_expired",
            ErrorKind::PermissionDenied,
            1,
            2,
        );
        let left = e.key().expect("names the entry").to_owned();
        assert!(["rm/0", "rm/1", "rm/2"].contains(&left.as_str()), "{e}");
        assert_eq!(fault::remaining(&root, Point::Remove), 0);
        assert_eq!(cache.stats().await.expect("stats").expired, 2);
        assert_eq!(layout::disk_usage(&root).0, 4);
        assert!(layout::entry_path(&root, &left).is_file());
        assert_consistent(&cache, &root, "purge_expired with a failed removal").await;

        // A read of the expired entry left: a miss, though it cannot be removed.
        fault::inject(&root, Point::Remove, 1, ErrorKind::Other);
        assert_eq!(text_of(&cache, &left).await, None);
        assert_eq!(fault::remaining(&root, Point::Remove), 0);
        assert!(layout::entry_path(&root, &left).is_file());

        // delete: an I/O error naming the key; the entry stays.
        fault::inject(&root, Point::Remove, 1, ErrorKind::StorageFull);
        expect_io(cache.delete("rm/3").await, "rm/3", ErrorKind::StorageFull);
        assert_eq!(
            text_of(&cache, "rm/3").await,
            Some(Value::Text("value 3".into()))
        );

        // clear: two of the four entries cannot be removed.
        fault::inject(&root, Point::Remove, 2, ErrorKind::ReadOnlyFilesystem);
        expect_removal_error(
            cache.clear().await,
            &root,
            "clear",
            ErrorKind::ReadOnlyFilesystem,
            2,
            2,
        );
        assert_eq!(layout::disk_usage(&root).0, 2);
        assert_consistent(&cache, &root, "clear with failed removals").await;

        // Once the fault clears, both work again.
        let expired_left = u64::from(layout::entry_path(&root, &left).is_file());
        assert_eq!(cache.purge_expired().await.expect("purge"), expired_left);
        let n = layout::disk_usage(&root).0;
        assert_eq!(cache.clear().await.expect("clear"), n);
        assert_eq!(layout::disk_usage(&root), (0, 0));
        assert_consistent(&cache, &root, "after the faults").await;
    });
    report(
        "faults",
        "injected removal failures: purge_expired (1 of 3 refused), clear (2 of 4), delete -> Io naming the entry; the rest removed and counted",
    );
}

// ------------------------------------------------------------ RLIMIT_FSIZE

const FSIZE_ROLE: &str = "fsize-child";
const FSIZE_LIMIT: u64 = 256 * 1024;
const FSIZE_KEY: &str = "reports/full disk";

/// Runs under `prlimit --fsize`: files may not grow past FSIZE_LIMIT.
#[test]
fn fsize_child() {
    let Some(root) = proc::role_path(FSIZE_ROLE, "FSIZE_ROOT") else {
        return;
    };
    runtime().block_on(async {
        let cache = DiskCache::open(&root).await.expect("open");
        let before = cache.stats().await.expect("stats");
        let prev = text_of(&cache, FSIZE_KEY).await;
        assert!(prev.is_some(), "the parent stored a value");
        let big = big_random(2 * FSIZE_LIMIT as usize, 7);
        // Large enough to go through the blocking pool, or inline.
        for (what, r) in [
            (
                "set",
                cache
                    .set(FSIZE_KEY, Value::Bytes(big.clone()), SetOptions::new())
                    .await,
            ),
            (
                "set_stream",
                cache
                    .set_stream(FSIZE_KEY, stream_of(big.clone(), 50_000), SetOptions::new())
                    .await,
            ),
            (
                "set_stream zstd",
                cache
                    .set_stream(
                        FSIZE_KEY,
                        stream_of(big.clone(), 50_000),
                        SetOptions::new().compression(Compression::zstd()),
                    )
                    .await,
            ),
        ] {
            let e = expect_io(r, FSIZE_KEY, ErrorKind::FileTooLarge);
            println!("error {what}: {e}");
            assert_eq!(
                text_of(&cache, FSIZE_KEY).await,
                prev,
                "{what}: previous value"
            );
            assert_consistent(&cache, &root, what).await;
        }
        let after = cache.stats().await.expect("stats");
        assert_eq!((before.entries, before.bytes), (after.entries, after.bytes));
        // What fits under the limit still works.
        let small = Value::Bytes(big_random(10_000, 8));
        set_and_check(&cache, FSIZE_KEY, &small, "a value under the limit").await;
        println!("child-ok");
    });
}

fn fsize_command(ignore_xfsz: bool, root: &Path) -> Command {
    let mut args = Vec::new();
    if ignore_xfsz {
        args.extend(["env".to_string(), "--ignore-signal=XFSZ".to_string()]);
    }
    args.extend([
        "prlimit".to_string(),
        format!("--fsize={FSIZE_LIMIT}"),
        "--".to_string(),
        proc::exe().display().to_string(),
    ]);
    args.extend(proc::test_args("fsize_child"));
    let mut c = Command::new(&args[0]);
    c.args(&args[1..])
        .env(proc::ROLE_VAR, FSIZE_ROLE)
        .env("FSIZE_ROOT", root)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    c
}

#[test]
fn a_full_disk_by_rlimit_fsize_fails_cleanly_and_keeps_the_previous_value() {
    if proc::role().is_some() {
        return;
    }
    for tool in ["prlimit", "env"] {
        assert!(
            Command::new(tool)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "this test needs `{tool}` (util-linux prlimit, coreutils env)"
        );
    }
    let (_dir, root) = temp_root();
    let rt = runtime();
    let prev = Value::Text("the previous report".into());
    rt.block_on(async {
        let c = DiskCache::open(&root).await.expect("open");
        c.set(FSIZE_KEY, prev.clone(), SetOptions::new())
            .await
            .expect("set");
    });

    // prlimit cannot make its child ignore SIGXFSZ: without help the child
    // is killed by the signal at the first write past the limit.
    let out = fsize_command(false, &root).output().expect("run prlimit");
    assert_eq!(
        out.status.signal(),
        Some(25),
        "a child under RLIMIT_FSIZE that does not ignore SIGXFSZ dies of it: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // The killed child left the previous value as it was.
    rt.block_on(async {
        let c = DiskCache::open(&root).await.expect("reopen");
        assert_eq!(text_of(&c, FSIZE_KEY).await, Some(prev.clone()));
        assert_consistent(&c, &root, "after SIGXFSZ").await;
    });

    // Ignoring SIGXFSZ (inherited through exec), writes fail with EFBIG.
    let out = fsize_command(true, &root).output().expect("run prlimit");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("child-ok"),
        "the child under RLIMIT_FSIZE failed: {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let errors: Vec<&str> = stdout.lines().filter(|l| l.starts_with("error ")).collect();
    assert_eq!(errors.len(), 3, "{stdout}");
    report(
        "faults",
        &format!(
            "RLIMIT_FSIZE={FSIZE_LIMIT}: child without SIGXFSZ ignored killed by signal 25; \
             with it: {} clean EFBIG errors, e.g. {:?}",
            errors.len(),
            errors[0]
        ),
    );
}

// ------------------------------------------------------------ small tmpfs

/// Fills the filesystem holding `dir` with one file; returns its path.
fn fill_bytes(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let block = vec![0x5Au8; 16 * 1024];
    loop {
        match f.write_all(&block) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::StorageFull => break,
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
    // Byte by byte, to the last free byte of the last page.
    while f.write_all(&[0]).is_ok() {}
    path
}

/// Uses up the inodes of the filesystem holding `dir`; returns the files.
fn fill_inodes(dir: &Path) -> Vec<PathBuf> {
    let d = dir.join("inodes");
    std::fs::create_dir(&d).expect("mkdir");
    let mut files = Vec::new();
    loop {
        let p = d.join(files.len().to_string());
        match std::fs::File::create(&p) {
            Ok(_) => files.push(p),
            Err(e) if e.kind() == ErrorKind::StorageFull => break,
            Err(e) => panic!("using up inodes: {e}"),
        }
    }
    files
}

/// In the parent process (which must run as root, for `what`), a new
/// temporary directory; `None` in a child started in a role.
fn parent_as_root(what: &str) -> Option<tempfile::TempDir> {
    if proc::role().is_some() {
        return None;
    }
    require_root(what);
    Some(tempfile::tempdir().expect("tempdir"))
}

#[test]
fn a_full_tmpfs_fails_cleanly_and_works_again_once_space_is_freed() {
    let Some(dir) = parent_as_root("mounting a small tmpfs") else {
        return;
    };
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let mount = Mount::tmpfs(&mnt, 4 << 20, Some(2_000)).unwrap_or_else(|e| {
        panic!("this test mounts a 4 MiB tmpfs (needs root and mount(8)): {e}")
    });
    let root = mnt.join("cache");
    let key = "daily/extract 2026-11-28";
    let rt = runtime();
    let mut errors = Vec::new();
    rt.block_on(async {
        let cache = DiskCache::open(&root).await.expect("open on tmpfs");
        let prev = Value::Bytes(big_random(20_000, 1));
        cache
            .set(key, prev.clone(), SetOptions::new())
            .await
            .expect("set");

        // Out of space.
        let filler = fill_bytes(&mnt);
        for len in [100usize, 20_000, 500_000] {
            record_storage_full(
                &mut errors,
                cache
                    .set(key, Value::Bytes(big_random(len, 2)), SetOptions::new())
                    .await,
                key,
            );
            record_storage_full(
                &mut errors,
                cache
                    .set_stream(key, stream_of(big_random(len, 3), 8192), SetOptions::new())
                    .await,
                key,
            );
            assert_eq!(text_of(&cache, key).await, Some(prev.clone()));
            assert_consistent(&cache, &root, "disk full").await;
        }
        // Reads still work on a full disk.
        assert_eq!(text_of(&cache, key).await, Some(prev.clone()));
        std::fs::remove_file(&filler).expect("free the space");
        let next = Value::Bytes(big_random(500_000, 4));
        set_and_check(&cache, key, &next, "set once space is back").await;

        // Out of inodes: a value too large to be written into a spare file
        // needs a new temp file, which cannot be created.
        let files = fill_inodes(&mnt);
        record_storage_full(
            &mut errors,
            cache
                .set(key, Value::Bytes(big_random(100_000, 5)), SetOptions::new())
                .await,
            key,
        );
        assert_eq!(text_of(&cache, key).await, Some(next.clone()));
        assert_consistent(&cache, &root, "no inodes").await;
        // A small value still goes in: it is written into the file of the
        // small value that `next` replaced, kept for that (no inode needed).
        let small = Value::Bytes(big_random(100, 6));
        set_and_check(
            &cache,
            key,
            &small,
            "a small set reuses a replaced entry's file",
        )
        .await;
        assert_consistent(&cache, &root, "no inodes, small set").await;
        for f in files {
            std::fs::remove_file(f).expect("free an inode");
        }
        let last = Value::Text("works again".into());
        set_and_check(&cache, key, &last, "set once inodes are back").await;
        assert_consistent(&cache, &root, "after").await;
    });
    drop(mount);
    report(
        "faults",
        &format!(
            "tmpfs 4 MiB/2000 inodes: {} ENOSPC errors, all naming the key, e.g. {:?}",
            errors.len(),
            errors.last()
        ),
    );
}

// ------------------------------------------------------------ read-only root

#[test]
fn a_read_only_view_of_the_root_serves_reads_and_refuses_new_handles() {
    let Some(dir) = parent_as_root("a read-only bind mount") else {
        return;
    };
    let root = dir.path().join("cache");
    let rt = runtime();
    let clock = Arc::new(ManualClock::new());
    rt.block_on(async {
        let cache = open_with_clock(&root, &clock).await;
        let small = Value::Text("small".into());
        let large = Value::Bytes(big_random(300_000, 9));
        cache
            .set("ro/small", small.clone(), SetOptions::new())
            .await
            .expect("set");
        cache
            .set(
                "ro/large",
                large.clone(),
                SetOptions::new().compression(Compression::zstd()),
            )
            .await
            .expect("set");
        cache
            .set(
                "ro/expiring",
                "soon".into(),
                SetOptions::new().ttl_seconds(60),
            )
            .await
            .expect("set");
        let mount = Mount::read_only(&root).unwrap_or_else(|e| {
            panic!("this test bind-mounts the root read-only (needs root): {e}")
        });
        assert!(
            std::fs::write(root.join("probe"), b"x").is_err(),
            "the bind mount is read-only"
        );

        // Reads work (recency is not refreshed: it cannot be).
        assert_eq!(text_of(&cache, "ro/small").await, Some(small.clone()));
        assert_eq!(text_of(&cache, "ro/large").await, Some(large.clone()));
        let s = cache
            .get_stream("ro/large", 65_536)
            .await
            .expect("get_stream")
            .expect("present");
        let streamed: Vec<Bytes> = s.try_collect().await.expect("stream");
        assert_eq!(streamed.concat(), large.to_bytes());
        assert!(cache.head("ro/small").await.expect("head").is_some());
        let keys = cache.keys(None).await.expect("list");
        assert_eq!(keys, ["ro/expiring", "ro/large", "ro/small"]);

        // The handle keeps the directories it opened (so that one swapped
        // for a link is never followed, see the `dirs` module of
        // etl-cache-fs): a read-only bind laid over the path afterwards does
        // not reach them, as it never reached files opened before. Its
        // writes land in the same directory, seen through the read-only
        // view; nothing is written through the view itself.
        let new = Value::Text("new".into());
        set_and_check(
            &cache,
            "ro/small",
            &new,
            "a set through the directories the handle holds",
        )
        .await;
        assert!(
            std::fs::write(root.join("probe"), b"x").is_err(),
            "the view is still read-only"
        );
        cache
            .set("ro/small", small.clone(), SetOptions::new())
            .await
            .expect("set");
        assert_eq!(layout::disk_usage(&root).0, 3, "every entry is still there");
        clock.advance(Duration::from_secs(61));
        // A new handle cannot open a read-only root (it must write its lock
        // and counter files): a clear Open error naming the root.
        match DiskCache::open(&root).await {
            Err(e @ Error::Open { .. }) => {
                assert!(e.to_string().contains(&root.display().to_string()), "{e}")
            }
            other => panic!("opening a read-only root: want Error::Open, got {other:?}"),
        }
        assert_eq!(text_of(&cache, "ro/small").await, Some(small.clone()));

        mount.unmount().expect("unmount");
        // Writable again: everything works.
        set_and_check(&cache, "ro/small", &new, "set").await;
        assert!(cache.delete("ro/large").await.expect("delete"));
        assert_eq!(cache.purge_expired().await.expect("purge"), 1);
        assert_consistent(&cache, &root, "after read-only").await;
    });
}

// ------------------------------------------------------------ vanishing files

async fn first_chunk_then(
    cache: &dyn Cache,
    key: &str,
    chunk: usize,
    act: impl FnOnce(),
) -> (Vec<u8>, Option<io::Error>) {
    let mut s = cache
        .get_stream(key, chunk)
        .await
        .expect("get_stream")
        .expect("present")
        .into_parts()
        .1;
    let mut got = s.next().await.expect("a first chunk").expect("ok").to_vec();
    act();
    while let Some(c) = s.next().await {
        match c {
            Ok(c) => got.extend_from_slice(&c),
            Err(e) => return (got, Some(e)),
        }
    }
    (got, None)
}

#[test]
fn files_that_vanish_shrink_or_are_replaced_while_read() {
    if proc::role().is_some() {
        return;
    }
    on_fresh_disk(async |root, cache| {
        let other = DiskCache::open(&root).await.expect("a second handle");
        // 6 MB uncompressed is read by two threads at once (see the
        // DiskCache's stream docs); the others by one.
        let cases = [
            (Compression::NONE, 2_000_000),
            (Compression::NONE, 6_000_000),
            (Compression::gzip(), 2_000_000),
            (Compression::zstd(), 2_000_000),
        ];
        for (comp, len) in cases {
            let key = format!("vanish/{comp}/{len}");
            let data = big_random(len, 11);
            let opts = SetOptions::new().compression(comp);

            // Unlinked mid-read: the open file still reads whole and right.
            cache
                .set(&key, Value::Bytes(data.clone()), opts)
                .await
                .expect("set");
            let path = layout::entry_path(root, &key);
            let (got, err) = first_chunk_then(&cache, &key, 4096, || {
                std::fs::remove_file(&path).expect("unlink")
            })
            .await;
            assert!(err.is_none(), "{comp}: unlinked mid-read: {err:?}");
            assert_eq!(got, data, "{comp}: the stream of an unlinked file is whole");
            assert_eq!(cache.get(&key).await.expect("get"), None);
            // A file removed behind the cache's back stays counted until a
            // recount (each open alone does one).
            cache.recount().await.expect("recount");

            // Replaced mid-read by a new version: the stream keeps the old one.
            cache
                .set(&key, Value::Bytes(data.clone()), opts)
                .await
                .expect("set");
            let next = big_random(1_000_000, 12);
            let (got, err) = first_chunk_then(&cache, &key, 4096, || {
                let other = other.clone();
                let (key, next) = (key.clone(), next.clone());
                std::thread::spawn(move || {
                    runtime().block_on(other.set(&key, Value::Bytes(next), opts))
                })
                .join()
                .expect("join")
                .expect("replace");
            })
            .await;
            assert!(err.is_none(), "{comp}: replaced mid-read: {err:?}");
            assert_eq!(got, data, "{comp}: the old version, whole");
            assert_eq!(
                cache.get(&key).await.expect("get"),
                Some(Value::Bytes(next))
            );

            // Cut short mid-read (by something else than the cache): the
            // stream ends with an error, never as if complete. The reader
            // threads read a few blocks (of 1 MiB) ahead of the caller: an
            // entry they may have read whole before the cut is cut further
            // into a longer one.
            let cut = if comp == Compression::NONE {
                big_random(16 << 20, 13)
            } else {
                data.clone()
            };
            cache
                .set(&key, Value::Bytes(cut.clone()), opts)
                .await
                .expect("set");
            let (got, err) = first_chunk_then(&cache, &key, 4096, || {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .expect("open");
                f.set_len(1_000_000).expect("truncate");
            })
            .await;
            let err = err.unwrap_or_else(|| {
                panic!(
                    "{comp}: a stream of a file cut mid-read completed ({} bytes)",
                    got.len()
                )
            });
            assert!(
                got[..] == cut[..got.len()],
                "{comp}: wrong bytes before the cut"
            );
            assert_eq!(err.kind(), ErrorKind::InvalidData, "{comp}: {err}");
            let e = etl_cache_core::stream_read_error(&key, err);
            assert!(
                matches!(&e, Error::Corrupt { key: k, .. } if *k == key),
                "{comp}: {e}"
            );
            assert!(got.len() < cut.len());
            assert!(!path.exists(), "{comp}: the cut entry was removed");
            // Removing it subtracted the size found on disk (cut), not the
            // size counted when it was written: recount.
            cache.recount().await.expect("recount");
            assert_consistent(&cache, root, "vanish").await;
        }

        // Listing while another handle deletes everything: never an error.
        for i in 0..300 {
            cache
                .set(&format!("many/{i}"), "x".into(), SetOptions::new())
                .await
                .expect("set");
        }
        let deleter = {
            let other = other.clone();
            tokio::spawn(async move {
                for i in 0..300 {
                    other.delete(&format!("many/{i}")).await.expect("delete");
                }
            })
        };
        let mut listings = 0;
        while !deleter.is_finished() || listings == 0 {
            let listed: Vec<String> = cache
                .list(Some("many/"))
                .map_ok(|m| m.key)
                .try_collect()
                .await
                .expect("list while entries vanish");
            assert!(listed.iter().all(|k| k.starts_with("many/")));
            listings += 1;
        }
        deleter.await.expect("deleter");
        assert_consistent(&cache, root, "after deletes").await;
    });
}

#[test]
fn object_cache_on_local_files_streams_survive_unlink() {
    if proc::role().is_some() {
        return;
    }
    // (A file cut short mid-read is not tried here: object_store's
    // LocalFileSystem then yields empty chunks forever and ObjectCache spins
    // on them; see RELIABILITY.md, known issues.)
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    rt.block_on(async {
        let store =
            object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("local");
        let cache: Arc<dyn Cache> =
            Arc::new(etl_cache_object::ObjectCache::new(Arc::new(store), "c").expect("cache"));
        let data = big_random(3_000_000, 21);
        let key = "vanish/object";
        let file = dir.path().join("c/vanish/object%");
        for comp in [Compression::NONE, Compression::zstd()] {
            let opts = SetOptions::new().compression(comp);
            cache
                .set(key, Value::Bytes(data.clone()), opts)
                .await
                .expect("set");
            assert!(
                file.exists(),
                "the object file is where the layout says: {file:?}"
            );
            let (got, err) = first_chunk_then(&*cache, key, 4096, || {
                std::fs::remove_file(&file).expect("unlink")
            })
            .await;
            match err {
                None => assert_eq!(got, data, "{comp}: unlinked mid-read: whole and right"),
                Some(e) => panic!("{comp}: unlinked mid-read: {e}"),
            }
            assert_eq!(cache.get(key).await.expect("get"), None);
        }
    });
}

#[test]
fn faults_for_one_root_do_not_touch_another() {
    if proc::role().is_some() {
        return;
    }
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    rt.block_on(async {
        let ca = DiskCache::open(a.path()).await.expect("open");
        let cb = DiskCache::open(b.path()).await.expect("open");
        fault::inject(a.path(), Point::Write, 1, ErrorKind::Other);
        cb.set("k", "v".into(), SetOptions::new())
            .await
            .expect("other root unaffected");
        assert_eq!(fault::remaining(a.path(), Point::Write), 1);
        expect_io(
            ca.set("k", "v".into(), SetOptions::new()).await,
            "k",
            ErrorKind::Other,
        );
        assert_eq!(fault::remaining(a.path(), Point::Write), 0);
        ca.set("k", "v".into(), SetOptions::new())
            .await
            .expect("fault spent");
        fault::clear(a.path());
    });
}
