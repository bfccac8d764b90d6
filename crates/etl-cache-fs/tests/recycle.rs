//! Spare files (Linux): a set that replaces a small entry keeps the replaced
//! file and the next small set writes into it, so a cache that keeps
//! replacing small values creates and frees no inode. Eviction feeds the
//! spares too, so a full cache taking new keys does not either. These tests check the
//! files on disk, and that readers racing with the recycling never see a
//! wrong value, a corruption error, or lose an entry.
#![cfg(target_os = "linux")]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use etl_cache_core::{Cache, Compression, SetOptions, Value};
use etl_cache_fs::DiskCache;
use futures::TryStreamExt;

use common::*;

fn spare_dir(root: &Path) -> PathBuf {
    base(root).join("spare")
}

/// The spare files under `root` (not the handles' owner files).
fn spare_files(root: &Path) -> Vec<PathBuf> {
    files_in(&spare_dir(root))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "spare"))
        .collect()
}

fn inode(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).expect("stat").ino()
}

/// Sets `key` to `value` with the default options.
async fn put(cache: &DiskCache, key: &str, value: Value) {
    cache.set(key, value, SetOptions::new()).await.unwrap();
}

fn bytes(s: &str) -> Value {
    Value::Bytes(Bytes::from(s.to_owned()))
}

#[tokio::test]
async fn replacing_small_values_writes_into_the_replaced_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cache = DiskCache::open(root).await.unwrap();
    let path = entry_path(root, "k");
    put(&cache, "k", bytes("first")).await;
    let first = inode(&path);
    put(&cache, "k", bytes("second")).await;
    let second = inode(&path);
    assert_ne!(first, second, "a set publishes a new file");
    assert_eq!(spare_files(root).len(), 1, "the replaced file is kept");
    // The third value goes into the first file, which is shorter now.
    put(&cache, "k", bytes("3rd")).await;
    assert_eq!(inode(&path), first, "the replaced file is written again");
    assert_eq!(cache.get("k").await.unwrap(), Some(bytes("3rd")));
    // Another key takes the spare too: no file is created for it.
    put(&cache, "other", bytes("o")).await;
    assert_eq!(inode(&entry_path(root, "other")), second);
    assert!(spare_files(root).is_empty());
    assert!(files_in(&tmp_dir(root)).is_empty());
    let s = cache.stats().await.unwrap();
    assert_eq!((s.entries, s.bytes), disk_usage(root));

    // A large value is never kept for recycling: it is removed once replaced.
    let large = Value::Bytes(Bytes::from(vec![7u8; 100_000]));
    put(&cache, "big", large.clone()).await;
    put(&cache, "big", bytes("small now")).await;
    assert!(spare_files(root).is_empty());
    assert_eq!(cache.get("big").await.unwrap(), Some(bytes("small now")));

    // Dropping the handle removes its spares.
    put(&cache, "k", bytes("4")).await;
    assert_eq!(spare_files(root).len(), 1);
    drop(cache);
    assert!(spare_files(root).is_empty());
}

/// The spare and owner files under `root`, as names.
fn spare_names(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = files_in(&spare_dir(root))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn spares_whose_owner_died_are_removed_by_any_handle_that_opens_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // A live handle with a spare: replacing a key keeps the replaced file.
    let live = DiskCache::open(root).await.unwrap();
    put(&live, "k", bytes("1")).await;
    put(&live, "k", bytes("2")).await;
    let kept = spare_names(root);
    assert_eq!(
        kept.iter().filter(|n| n.ends_with(".spare")).count(),
        1,
        "{kept:?}"
    );
    assert_eq!(
        kept.iter().filter(|n| n.ends_with(".owner")).count(),
        1,
        "{kept:?}"
    );
    // What a killed process leaves: an owner file nobody locks and its
    // spares; and a spare with no owner file at all.
    let spare = spare_dir(root);
    std::fs::write(spare.join("0123456789abcdef-99999.owner"), b"").unwrap();
    std::fs::write(spare.join("0123456789abcdef-99999.0.spare"), b"left").unwrap();
    std::fs::write(spare.join("0123456789abcdef-99999.1.spare"), b"left").unwrap();
    std::fs::write(spare.join("fedcba9876543210-99998.0.spare"), b"orphan").unwrap();
    // A file the sweep does not know is not touched.
    std::fs::write(spare.join("notes.txt"), b"mine").unwrap();

    // A second handle, not alone with the root, sweeps what the dead left
    // and keeps the live handle's files.
    let second = DiskCache::open(root).await.unwrap();
    let after = spare_names(root);
    assert!(
        kept.iter().all(|n| after.contains(n)),
        "a live handle's spare and owner file stay: {after:?}"
    );
    assert!(
        !after
            .iter()
            .any(|n| n.starts_with("0123456789abcdef") || n.starts_with("fedcba")),
        "the dead owner's files and the orphan are gone: {after:?}"
    );
    assert!(after.contains(&"notes.txt".to_owned()), "{after:?}");
    // The live handle still recycles its spare: the next set writes into it.
    put(&live, "k", bytes("3")).await;
    assert_eq!(
        live.get("k").await.unwrap().map(|v| v.into_bytes()),
        Some(Bytes::from("3"))
    );
    drop((live, second));
    assert_eq!(
        spare_names(root),
        vec!["notes.txt".to_owned()],
        "dropped handles remove their spares and owner files"
    );
}

#[tokio::test]
async fn a_handle_with_recycling_off_keeps_no_spare_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cache = DiskCache::builder()
        .root(root)
        .recycle_files(false)
        .max_entries(3)
        .build()
        .await
        .unwrap();
    let path = entry_path(root, "k");
    put(&cache, "k", bytes("first")).await;
    put(&cache, "k", bytes("second")).await;
    for i in 0..5 {
        put(&cache, &format!("new{i}"), bytes("evicts")).await;
    }
    assert!(
        spare_names(root).is_empty(),
        "neither replaced nor evicted files are kept: {:?}",
        spare_names(root)
    );
    assert!(!path.exists() || cache.get("k").await.unwrap().is_some());
    assert_eq!(cache.stats().await.unwrap().entries, 3);
}

/// A full cache taking new keys evicts one entry per set and writes the
/// next entry into the evicted file: after the first eviction no inode is
/// made or freed, and every evicted key reads as a miss.
#[tokio::test]
async fn a_full_cache_recycles_the_files_it_evicts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cache = DiskCache::builder()
        .root(root)
        .max_entries(50)
        .build()
        .await
        .unwrap();
    let value = |i: u64| Value::Bytes(Bytes::from(format!("value {i} ").repeat(50)));
    for i in 0..50u64 {
        put(&cache, &format!("k{i}"), value(i)).await;
    }
    // Every inode under the cache's entry and spare directories.
    let inodes = || {
        let mut all: Vec<u64> = files_in(&spare_dir(root))
            .iter()
            .map(|p| inode(p))
            .collect();
        for i in 0..400u64 {
            let p = entry_path(root, &format!("k{i}"));
            if let Ok(m) = std::fs::symlink_metadata(&p) {
                all.push(m.ino());
            }
        }
        all.sort_unstable();
        all
    };
    // The first sets past the limit evict (and queue the next victims).
    for i in 50..60u64 {
        put(&cache, &format!("k{i}"), value(i)).await;
    }
    let before = inodes();
    for i in 60..400u64 {
        put(&cache, &format!("k{i}"), value(i)).await;
        assert_eq!(cache.stats().await.unwrap().entries, 50);
    }
    assert_eq!(inodes(), before, "the same files hold the new entries");
    for i in 0..350u64 {
        assert_eq!(
            cache.get(&format!("k{i}")).await.unwrap(),
            None,
            "k{i} was evicted"
        );
    }
    for i in 350..400u64 {
        assert_eq!(cache.get(&format!("k{i}")).await.unwrap(), Some(value(i)));
    }
    assert_eq!(cache.stats().await.unwrap().evictions, 350);
}

/// Self-checking value: `key|writer|seq|` then filler derived from them.
fn make(key: &str, writer: u64, seq: u64, len: usize) -> Bytes {
    let head = format!("{key}|{writer}|{seq}|");
    let mut v = head.clone().into_bytes();
    let mut x = writer.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seq;
    while v.len() < head.len() + len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b'a' + (x % 26) as u8);
    }
    Bytes::from(v)
}

fn check(key: &str, v: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(v).map_err(|_| "not text".to_string())?;
    let mut parts = text.splitn(4, '|');
    let (k, w, s) = (parts.next(), parts.next(), parts.next());
    let (Some(k), Some(w), Some(s), Some(rest)) = (k, w, s, parts.next()) else {
        return Err(format!("malformed value {text:.40}"));
    };
    if k != key {
        return Err(format!("value of {k} returned for {key}"));
    }
    let (w, s): (u64, u64) = (w.parse().unwrap(), s.parse().unwrap());
    if make(key, w, s, rest.len()) != v {
        return Err(format!("value {key}|{w}|{s} is mixed or torn"));
    }
    Ok(())
}

/// Writers on two handles (two pools of spares) keep replacing a few small
/// keys while readers get, head and stream them: every read must be a whole
/// value of its own key, never an error, and nothing may be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_racing_recycled_files_see_whole_values_and_no_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let a = DiskCache::open(&root).await.unwrap();
    let b = DiskCache::open(&root).await.unwrap();
    const KEYS: [&str; 3] = ["alpha", "beta", "gamma"];
    for k in KEYS {
        put(&a, k, Value::Bytes(make(k, 0, 0, 10))).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let sets = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 1..=4u64 {
        let cache = if w % 2 == 0 { a.clone() } else { b.clone() };
        let (stop, sets) = (stop.clone(), sets.clone());
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let key = KEYS[(seq as usize + w as usize) % KEYS.len()];
                // Lengths that make replacements shorter and longer, and
                // compressed values beside plain ones.
                let len = ((seq * 7919 + w * 104_729) % 6000) as usize;
                let compression = if seq.is_multiple_of(3) {
                    Compression::zstd()
                } else {
                    Compression::NONE
                };
                cache
                    .set(
                        key,
                        Value::Bytes(make(key, w, seq, len)),
                        SetOptions::new().compression(compression),
                    )
                    .await
                    .map_err(|e| format!("set {key}: {e}"))?;
                sets.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), String>(())
        }));
    }
    for r in 0..4u64 {
        let cache = if r % 2 == 0 { a.clone() } else { b.clone() };
        let (stop, reads) = (stop.clone(), reads.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let key = KEYS[n % KEYS.len()];
                match n % 3 {
                    0 => match cache.get(key).await {
                        Ok(Some(Value::Bytes(v))) => check(key, &v)?,
                        other => return Err(format!("get {key}: {other:?}")),
                    },
                    1 => match cache.head(key).await {
                        Ok(Some(meta)) if meta.key == key => {}
                        other => return Err(format!("head {key}: {other:?}")),
                    },
                    _ => match cache.get_stream(key, 1000).await {
                        Ok(Some(s)) => {
                            let chunks: Vec<Bytes> = s
                                .try_collect()
                                .await
                                .map_err(|e| format!("stream {key}: {e}"))?;
                            check(key, &chunks.concat())?;
                        }
                        other => return Err(format!("get_stream {key}: {other:?}")),
                    },
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "failures: {failures:?}");
    let (reads, sets) = (reads.load(Ordering::Relaxed), sets.load(Ordering::Relaxed));
    assert!(
        reads > 100 && sets > 100,
        "too little ran: {reads} reads, {sets} sets"
    );
    let stats = a.stats().await.unwrap();
    assert_eq!((stats.entries, stats.bytes), disk_usage(&root));
    for k in KEYS {
        assert!(a.get(k).await.unwrap().is_some(), "{k} was lost");
    }
    eprintln!("{reads} reads beside {sets} sets, no errors");
}

/// Handles opening (each sweeps) while others keep and write their spares:
/// no set fails, every read is a value some set wrote, and once all are
/// dropped no spare or owner file is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_opening_beside_recycling_ones_never_take_their_spares() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let root = root.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..6u32 {
                // A new handle per round: each open sweeps beside the others.
                let cache = DiskCache::open(&root).await.unwrap();
                for i in 0..20u32 {
                    let key = format!("k{}", i % 4);
                    let v = format!("task {t} round {round} set {i}");
                    put(&cache, &key, bytes(&v)).await;
                    let got = cache.get(&key).await.unwrap().expect("a value");
                    let got = String::from_utf8(got.into_bytes().to_vec()).unwrap();
                    assert!(got.starts_with("task "), "{got:?}");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(spare_names(&root), Vec::<String>::new());
}
