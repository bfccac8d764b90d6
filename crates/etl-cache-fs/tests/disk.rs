//! DiskCache-specific behaviour, checked against the files on disk: LRU
//! eviction, capacity, size limits, TTL, corruption, failed writes, opening,
//! permissions, locks, the temp sweep and the shared usage counters.
//!
//! The shared contract suite (tests/contract.rs) covers what every backend
//! promises; these tests look under the hood of the documented layout:
//!
//! ```text
//! ROOT/etl-cache-v1/entries/<2 hex>/<sha256(key) hex>
//!                   locks/<sha256(key) hex>.lock
//!                   tmp/*.tmp
//!                   usage   (entries u64 LE, bytes u64 LE)
//! ```

mod common;

use std::fs::{self, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use etl_cache_core::backend::format::TRAILER_LEN;
use etl_cache_core::testing::sample_bytes;
use etl_cache_core::{
    ByteStream, Cache, CacheExt, Compression, Error, ManualClock, SetOptions, Value,
};
use etl_cache_fs::{DiskCache, DiskCacheBuilder};
use futures::StreamExt;

use common::*;

/// Header bytes of an entry for `key`: fixed part, key, checksum.
fn header_len(key: &str) -> usize {
    26 + key.len() + 4
}

/// Bytes an uncompressed entry of `payload` bytes under `key` takes on
/// disk: header, the payload in blocks of 1 MiB each followed by its 4-byte
/// checksum (entry format 2), trailer.
fn entry_size(key: &str, payload: usize) -> u64 {
    (header_len(key) + payload + 4 * payload.div_ceil(1 << 20) + TRAILER_LEN) as u64
}

fn builder(root: &Path) -> DiskCacheBuilder {
    DiskCache::builder().root(root)
}

/// A cache with default settings on a new temporary root; the root is
/// removed when the returned directory is dropped.
async fn fresh() -> (tempfile::TempDir, DiskCache) {
    let dir = tempfile::tempdir().unwrap();
    let cache = builder(dir.path()).build().await.unwrap();
    (dir, cache)
}

/// Sets `key` to `value` with default options; the write must succeed.
async fn put(cache: &DiskCache, key: &str, value: Value) -> etl_cache_core::EntryMeta {
    cache.set(key, value, SetOptions::new()).await.unwrap()
}

/// Sets `key` to `text` with default options; the write must succeed.
async fn put_text(cache: &DiskCache, key: &str, text: &str) {
    cache.set_text(key, text, SetOptions::new()).await.unwrap();
}

fn bytes_value(len: usize, seed: u64) -> Value {
    Value::Bytes(Bytes::from(sample_bytes(len, seed)))
}

fn stream_of(chunks: Vec<Bytes>) -> ByteStream {
    futures::stream::iter(chunks.into_iter().map(Ok)).boxed()
}

/// A small deterministic PRNG (xorshift64*), so runs are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}

async fn assert_stats_match_disk(cache: &DiskCache, root: &Path) {
    let s = cache.stats().await.unwrap();
    assert_eq!(
        (s.entries, s.bytes),
        disk_usage(root),
        "stats (entries, bytes) must equal the entry files on disk"
    );
}

fn assert_no_temp_files(root: &Path) {
    let left = files_in(&tmp_dir(root));
    assert!(left.is_empty(), "temp files left behind: {left:?}");
}

fn assert_no_lock_files(root: &Path) {
    let left = files_in(&locks_dir(root));
    assert!(left.is_empty(), "lock files left behind: {left:?}");
}

// ---------------------------------------------------------------------------
// 1 and 2. LRU eviction and capacity
// ---------------------------------------------------------------------------
mod lru {
    use super::*;

    /// Reads refresh recency: after `get(a)`, `b` is the least recently used.
    async fn check_lru(cache: &DiskCache, root: &Path, payload: usize) {
        for k in ["a", "b", "c"] {
            let meta = put(cache, k, bytes_value(payload, k.as_bytes()[0].into())).await;
            assert_eq!(meta.size, entry_size(k, payload));
        }
        assert!(cache.get("a").await.unwrap().is_some());
        put(cache, "d", bytes_value(payload, 4)).await;

        assert_eq!(
            cache.get("b").await.unwrap(),
            None,
            "b was least recently used"
        );
        assert!(!entry_path(root, "b").exists(), "b's file must be gone");
        for k in ["a", "c", "d"] {
            assert!(cache.get(k).await.unwrap().is_some(), "{k} must remain");
            assert!(entry_path(root, k).exists());
        }
        let s = cache.stats().await.unwrap();
        assert_eq!(s.evictions, 1);
        assert_eq!(s.entries, 3);
        assert_eq!(s.bytes, 3 * entry_size("a", payload));
        assert_stats_match_disk(cache, root).await;
    }

    #[tokio::test]
    async fn evicts_least_recently_used_by_count() {
        let dir = tempfile::tempdir().unwrap();
        let cache = builder(dir.path())
            .max_entries(3)
            .low_water(1.0)
            .build()
            .await
            .unwrap();
        check_lru(&cache, dir.path(), 1000).await;
    }

    #[tokio::test]
    async fn evicts_least_recently_used_by_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let payload = 1000;
        let cache = builder(dir.path())
            .max_bytes(3 * entry_size("a", payload))
            .low_water(1.0)
            .build()
            .await
            .unwrap();
        check_lru(&cache, dir.path(), payload).await;
    }

    /// Passing a limit evicts the least recently used entries until the
    /// cache is within it again: one entry per set of a new key, so a full
    /// cache stays full (no tenth of it dropped at once), and every victim is
    /// the least recently used entry at that moment, even one that was read
    /// after the scan that planned the evictions.
    #[tokio::test]
    async fn eviction_is_flat_and_exactly_lru() {
        let payload = 500;
        let size = entry_size("key-000", payload);
        for by_bytes in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            let b = builder(root);
            let cache = if by_bytes {
                b.max_bytes(100 * size)
            } else {
                b.max_entries(100)
            }
            .build()
            .await
            .unwrap();
            let set = |i: u64| {
                let cache = cache.clone();
                async move {
                    put(&cache, &format!("key-{i:03}"), bytes_value(payload, i)).await;
                }
            };
            for i in 0..100u64 {
                set(i).await;
            }
            let s = cache.stats().await.unwrap();
            assert_eq!(
                (s.entries, s.evictions),
                (100, 0),
                "at the limit, not past it"
            );

            set(100).await;
            let s = cache.stats().await.unwrap();
            assert_eq!(
                (s.entries, s.bytes, s.evictions),
                (100, 100 * size, 1),
                "one entry out for one in (by_bytes={by_bytes})"
            );
            assert!(!entry_path(root, "key-000").exists());
            // key-005 is read after the scan that queued it: it is now the
            // most recently used and must outlive all the others.
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(cache.get("key-005").await.unwrap().is_some());
            for i in 101..=130u64 {
                set(i).await;
                let s = cache.stats().await.unwrap();
                assert_eq!(s.entries, 100, "stays full (by_bytes={by_bytes})");
                assert_eq!(s.evictions, i - 99);
            }
            assert_stats_match_disk(&cache, root).await;
            // 31 victims: the 32 oldest but key-005.
            for i in 0..=130u64 {
                let present = entry_path(root, &format!("key-{i:03}")).exists();
                assert_eq!(
                    present,
                    i == 5 || i > 31,
                    "key-{i:03} (by_bytes={by_bytes})"
                );
            }
        }
    }

    /// A cache large enough to plan its evictions in the background (3,000
    /// entries: plans of 300): it stays exactly full set after set while
    /// scans run beside the sets, and the victims are exactly the oldest.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn background_scans_keep_eviction_flat_and_exact() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let cache = builder(root).max_entries(3_000).build().await.unwrap();
        let key = |i: u64| format!("bg-{i:05}");
        for i in 0..3_000u64 {
            put(&cache, &key(i), bytes_value(16, i)).await;
        }
        for i in 3_000..6_000u64 {
            put(&cache, &key(i), bytes_value(16, i)).await;
            let s = cache.stats().await.unwrap();
            assert_eq!(
                (s.entries, s.evictions),
                (3_000, i - 2_999),
                "after {}",
                key(i)
            );
        }
        assert_stats_match_disk(&cache, root).await;
        for i in 0..6_000u64 {
            assert_eq!(entry_path(root, &key(i)).exists(), i >= 3_000, "{}", key(i));
        }
    }

    /// Thousands of sets of varied sizes, with overwrites, reads and codecs:
    /// both limits hold after every set, and the counters agree with the disk.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn capacity_holds_over_many_sets() {
        const MAX_ENTRIES: u64 = 100;
        const MAX_BYTES: u64 = 300_000;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let cache = builder(root)
            .max_entries(MAX_ENTRIES)
            .max_bytes(MAX_BYTES)
            .build()
            .await
            .unwrap();
        let mut rng = Rng(0x5eed);
        let codecs = [Compression::NONE, Compression::gzip(), Compression::zstd()];
        for i in 0..2000u64 {
            let key = format!("job/{}/step", rng.below(400));
            // Mostly small values, some large ones, so both limits bind.
            let len = if rng.below(10) == 0 {
                10_000 + rng.below(20_000)
            } else {
                rng.below(3_000)
            } as usize;
            let opts =
                SetOptions::new().compression(codecs[rng.below(codecs.len() as u64) as usize]);
            let value = if i % 2 == 0 {
                Value::Bytes(Bytes::from(rng.bytes(len)))
            } else {
                Value::Text(String::from_utf8(sample_bytes(len, i)).unwrap())
            };
            cache.set(&key, value, opts).await.unwrap();
            let s = cache.stats().await.unwrap();
            assert!(
                s.entries <= MAX_ENTRIES && s.bytes <= MAX_BYTES,
                "after set {i}: {} entries, {} bytes",
                s.entries,
                s.bytes
            );
            if i % 3 == 0 {
                let _ = cache
                    .get(&format!("job/{}/step", rng.below(400)))
                    .await
                    .unwrap();
            }
        }
        let s = cache.stats().await.unwrap();
        assert!(s.evictions > 0, "the limits were exercised");
        assert_eq!((s.entries, s.bytes), disk_usage(root));
        let (files, bytes) = disk_usage(root);
        assert!(files <= MAX_ENTRIES && bytes <= MAX_BYTES);
        assert_eq!(cache.keys(None).await.unwrap().len() as u64, files);
        assert_no_temp_files(root);
        assert_no_lock_files(root);
    }
}

// ---------------------------------------------------------------------------
// 3. Entries larger than max_bytes
// ---------------------------------------------------------------------------
mod too_large {
    use super::*;

    const LIMIT: u64 = 10_000;

    fn assert_too_large(r: etl_cache_core::Result<etl_cache_core::EntryMeta>, key: &str) {
        match r {
            Err(Error::TooLarge {
                key: k,
                size,
                limit,
            }) => {
                assert_eq!(k, key);
                assert_eq!(limit, LIMIT);
                assert!(size > LIMIT, "size {size} must exceed the limit");
            }
            other => panic!("expected Error::TooLarge, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn set_refuses_an_entry_larger_than_max_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let cache = builder(root).max_bytes(LIMIT).build().await.unwrap();

        // Header, block checksum and trailer count: an entry of exactly
        // LIMIT bytes fits...
        let fits = LIMIT as usize - header_len("exact") - 4 - TRAILER_LEN;
        assert_eq!(entry_size("exact", fits), LIMIT);
        let meta = put(&cache, "exact", bytes_value(fits, 1)).await;
        assert_eq!(meta.size, LIMIT);
        cache.delete("exact").await.unwrap();
        // ...one byte more does not.
        assert_too_large(
            cache
                .set("exact", bytes_value(fits + 1, 1), SetOptions::new())
                .await,
            "exact",
        );
        assert!(!entry_path(root, "exact").exists());

        put_text(&cache, "k", "previous").await;
        let before = cache.stats().await.unwrap();

        for opts in [
            SetOptions::new(),
            SetOptions::new().compression(Compression::zstd()),
        ] {
            let big = Value::Bytes(Bytes::from(Rng(7).bytes(50_000))); // incompressible
            assert_too_large(cache.set("k", big, opts).await, "k");
            assert_eq!(
                cache.get_text("k").await.unwrap().as_deref(),
                Some("previous")
            );
        }
        let after = cache.stats().await.unwrap();
        assert_eq!((after.entries, after.bytes), (before.entries, before.bytes));
        assert_eq!(after.evictions, 0, "a refused entry evicts nothing");
        assert_no_temp_files(root);
        assert_no_lock_files(root);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn set_stream_refuses_and_stops_reading_early() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let cache = builder(root).max_bytes(LIMIT).build().await.unwrap();
        put_text(&cache, "k", "previous").await;
        let before = cache.stats().await.unwrap();

        for compression in [Compression::NONE, Compression::gzip(), Compression::zstd()] {
            const CHUNKS: usize = 500;
            let pulled = Arc::new(AtomicUsize::new(0));
            let counter = pulled.clone();
            let mut rng = Rng(11);
            let stream = futures::stream::iter(0..CHUNKS)
                .map(move |_| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    Ok(Bytes::from(rng.bytes(64 << 10))) // incompressible
                })
                .boxed();
            let r = cache
                .set_stream("k", stream, SetOptions::new().compression(compression))
                .await;
            assert_too_large(r, "k");
            let pulled = pulled.load(Ordering::SeqCst);
            // The first chunk passes the limit; more may sit in the batches
            // on their way to the writer thread (at most 4 MiB: 64 chunks
            // of 64 KiB, and the one that filled the last), none beyond.
            assert!(
                pulled <= 65,
                "{compression}: the stream must be stopped soon after the limit, {pulled} of {CHUNKS} chunks were read"
            );
            assert_eq!(
                cache.get_text("k").await.unwrap().as_deref(),
                Some("previous")
            );
            assert_no_temp_files(root);
        }
        let after = cache.stats().await.unwrap();
        assert_eq!((after.entries, after.bytes), (before.entries, before.bytes));
        assert_no_lock_files(root);
    }
}

// ---------------------------------------------------------------------------
// 4. TTL on disk
// ---------------------------------------------------------------------------
mod ttl {
    use super::*;

    /// A cache on `root` whose time is the returned manual clock.
    async fn clocked(root: &Path) -> (Arc<ManualClock>, DiskCache) {
        let clock = Arc::new(ManualClock::new());
        let cache = builder(root).clock(clock.clone()).build().await.unwrap();
        (clock, cache)
    }

    #[tokio::test]
    async fn expired_entry_reads_as_none_and_its_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (clock, cache) = clocked(root).await;
        let ttl = SetOptions::new().ttl(Duration::from_secs(10));
        cache.set_text("short", "s", ttl).await.unwrap();
        cache
            .set_stream(
                "short-stream",
                stream_of(vec![Bytes::from_static(b"abc")]),
                ttl,
            )
            .await
            .unwrap();
        cache
            .set_text(
                "long",
                "l",
                SetOptions::new().ttl(Duration::from_secs(3600)),
            )
            .await
            .unwrap();
        put_text(&cache, "forever", "f").await;

        clock.advance(Duration::from_secs(9));
        assert_eq!(cache.get_text("short").await.unwrap().as_deref(), Some("s"));

        clock.advance(Duration::from_secs(2));
        assert!(entry_path(root, "short").exists(), "not yet seen");
        assert_eq!(cache.get("short").await.unwrap(), None);
        assert!(!entry_path(root, "short").exists(), "removed when seen");
        assert!(
            cache
                .get_stream("short-stream", 1024)
                .await
                .unwrap()
                .is_none()
        );
        assert!(!entry_path(root, "short-stream").exists());

        let s = cache.stats().await.unwrap();
        assert_eq!(s.expired, 2);
        assert_eq!(s.entries, 2);
        assert_stats_match_disk(&cache, root).await;
        assert!(entry_path(root, "long").exists());
        assert!(entry_path(root, "forever").exists());
    }

    #[tokio::test]
    async fn purge_expired_removes_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (clock, cache) = clocked(root).await;
        for i in 0..20 {
            let opts =
                SetOptions::new().ttl(Duration::from_secs(if i % 2 == 0 { 60 } else { 7200 }));
            cache
                .set(&format!("k{i}"), bytes_value(2000, i), opts)
                .await
                .unwrap();
        }
        put_text(&cache, "forever", "f").await;
        assert_eq!(cache.purge_expired().await.unwrap(), 0);
        assert_eq!(entry_files(root).len(), 21);

        clock.advance(Duration::from_secs(61));
        assert_eq!(cache.purge_expired().await.unwrap(), 10);
        for i in 0..20 {
            assert_eq!(
                entry_path(root, &format!("k{i}")).exists(),
                i % 2 == 1,
                "k{i}"
            );
        }
        assert_eq!(entry_files(root).len(), 11);
        assert_stats_match_disk(&cache, root).await;

        clock.advance(Duration::from_secs(7200));
        assert_eq!(cache.purge_expired().await.unwrap(), 10);
        let left: Vec<_> = entry_files(root).into_iter().map(|(p, _)| p).collect();
        assert_eq!(left, vec![entry_path(root, "forever")]);
        assert_stats_match_disk(&cache, root).await;
        assert_eq!(cache.stats().await.unwrap().expired, 20);
    }
}

// ---------------------------------------------------------------------------
// 5. Corruption: never wrong bytes, and the entry goes away
// ---------------------------------------------------------------------------
mod corruption {
    use super::*;

    fn flip(path: &Path, at: usize) {
        let mut b = fs::read(path).unwrap();
        b[at] ^= 0x20;
        fs::write(path, b).unwrap();
    }

    /// `get` reports Corrupt naming the key, removes the file, and the next
    /// `get` is a plain miss.
    async fn assert_get_corrupt(cache: &DiskCache, root: &Path, key: &str, what: &str) {
        match cache.get(key).await {
            Err(Error::Corrupt { key: k, reason }) => {
                assert_eq!(k, key, "{what}");
                assert!(!reason.is_empty());
            }
            Ok(Some(v)) => panic!("{what}: corrupt entry returned a value: {v:?}"),
            other => panic!("{what}: expected Error::Corrupt, got {other:?}"),
        }
        assert!(
            !entry_path(root, key).exists(),
            "{what}: the file must be removed"
        );
        assert_eq!(cache.get(key).await.unwrap(), None, "{what}");
    }

    #[tokio::test]
    async fn any_flipped_byte_is_reported_and_removed() {
        let (dir, cache) = fresh().await;
        let root = dir.path();
        let key = "reports/2026.xml";
        let hl = header_len(key);
        let text = String::from_utf8(sample_bytes(20_000, 3)).unwrap();
        for compression in [Compression::NONE, Compression::gzip(), Compression::zstd()] {
            let opts = SetOptions::new().compression(compression);
            let meta = cache.set_text(key, &text, opts).await.unwrap();
            let stored = meta.stored_len as usize;
            let len = meta.size as usize;
            let spots = [
                ("header magic", 0),
                ("header version", 4),
                ("header kind", 5),
                ("header codec", 6),
                ("header flags", 7),
                ("header created", 9),
                ("header expiry", 20),
                ("header key length", 24),
                ("header key", 26 + 3),
                ("header checksum", hl - 1),
                ("payload start", hl),
                ("payload middle", hl + stored / 2),
                ("payload end", hl + stored - 1),
                ("trailer logical length", len - 32),
                ("trailer stored length", len - 24),
                ("trailer payload checksum", len - 16),
                ("trailer header checksum", len - 12),
                ("trailer checksum", len - 8),
                ("trailer magic", len - 1),
            ];
            for (what, at) in spots {
                cache.set_text(key, &text, opts).await.unwrap();
                flip(&entry_path(root, key), at);
                assert_get_corrupt(&cache, root, key, &format!("{compression}, {what}")).await;
            }
        }
        let s = cache.stats().await.unwrap();
        assert_eq!(
            (s.entries, s.bytes),
            (0, 0),
            "removed entries no longer count"
        );
    }

    #[tokio::test]
    async fn truncated_foreign_and_garbage_files_are_reported_and_removed() {
        let (dir, cache) = fresh().await;
        let root = dir.path();
        let key = "k";
        let value = bytes_value(10_000, 5);
        let full = cache
            .set(key, value.clone(), SetOptions::new())
            .await
            .unwrap()
            .size;
        for new_len in [full - 1, full - 32, full / 2, 40, 10, 0] {
            put(&cache, key, value.clone()).await;
            let f = OpenOptions::new()
                .write(true)
                .open(entry_path(root, key))
                .unwrap();
            f.set_len(new_len).unwrap();
            drop(f);
            assert_get_corrupt(&cache, root, key, &format!("truncated to {new_len}")).await;
        }
        for garbage in [Rng(9).bytes(5000), b"ETLC".repeat(100), vec![0; 200]] {
            put(&cache, key, value.clone()).await;
            fs::write(entry_path(root, key), garbage).unwrap();
            assert_get_corrupt(&cache, root, key, "garbage").await;
        }
        // A valid entry of another key in this key's place is not this key's value.
        put(&cache, key, value.clone()).await;
        put_text(&cache, "other", "not k's value").await;
        fs::copy(entry_path(root, "other"), entry_path(root, key)).unwrap();
        assert_get_corrupt(&cache, root, key, "another key's entry").await;
        assert_eq!(
            cache.get_text("other").await.unwrap().as_deref(),
            Some("not k's value")
        );
        // Entries removed as corrupt no longer count. (Their bytes were
        // counted at their size when written, which the tampering changed;
        // a recount, as done at the next open, repairs the byte count.)
        assert_eq!(cache.stats().await.unwrap().entries, 1);
        cache.recount().await.unwrap();
        assert_stats_match_disk(&cache, root).await;
    }

    #[tokio::test]
    async fn head_and_get_stream_report_a_corrupt_header() {
        let (dir, cache) = fresh().await;
        let root = dir.path();
        for at in [0, 10, 24, 28] {
            put(&cache, "k", bytes_value(1000, 1)).await;
            flip(&entry_path(root, "k"), at);
            match cache.head("k").await {
                Err(Error::Corrupt { key, .. }) => assert_eq!(key, "k"),
                other => panic!("head at {at}: expected Error::Corrupt, got {other:?}"),
            }
            assert!(!entry_path(root, "k").exists());
            assert_eq!(cache.head("k").await.unwrap(), None);

            put(&cache, "k", bytes_value(1000, 1)).await;
            flip(&entry_path(root, "k"), at);
            match cache.get_stream("k", 100).await {
                Err(Error::Corrupt { key, .. }) => assert_eq!(key, "k"),
                other => panic!("get_stream at {at}: expected Error::Corrupt, got {other:?}"),
            }
            assert!(!entry_path(root, "k").exists());
        }
    }

    /// A stream cannot take back the chunks it already yielded, but it must
    /// end with an InvalidData error, not a clean end, and remove the entry.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn get_stream_of_a_corrupt_large_entry_ends_with_invalid_data() {
        let (dir, cache) = fresh().await;
        let root = dir.path();
        let data = Bytes::from(sample_bytes(5 << 20, 77));
        let key = "big";
        let hl = header_len(key);
        for compression in [Compression::NONE, Compression::gzip(), Compression::zstd()] {
            for where_ in [0.01, 0.5, 0.99] {
                let chunks: Vec<Bytes> =
                    data.chunks(256 << 10).map(Bytes::copy_from_slice).collect();
                let meta = cache
                    .set_stream(
                        key,
                        stream_of(chunks),
                        SetOptions::new().compression(compression),
                    )
                    .await
                    .unwrap();
                assert_eq!(meta.logical_len, data.len() as u64);
                let at = hl + (meta.stored_len as f64 * where_) as usize;
                flip(&entry_path(root, key), at);

                let mut s = cache
                    .get_stream(key, 64 << 10)
                    .await
                    .unwrap()
                    .expect("header and trailer are intact");
                let mut got = 0usize;
                let err = loop {
                    match s.next().await {
                        Some(Ok(chunk)) => got += chunk.len(),
                        Some(Err(e)) => break e,
                        None => panic!(
                            "{compression} at {where_}: the stream ended cleanly after {got} bytes"
                        ),
                    }
                };
                assert_eq!(
                    err.kind(),
                    io::ErrorKind::InvalidData,
                    "{compression} at {where_}: {err}"
                );
                assert!(s.next().await.is_none(), "nothing follows the error");
                assert!(
                    !entry_path(root, key).exists(),
                    "{compression} at {where_}: the entry must be removed"
                );
                assert_eq!(cache.get(key).await.unwrap(), None);
            }
        }
        let s = cache.stats().await.unwrap();
        assert_eq!((s.entries, s.bytes), (0, 0));
    }
    /// A writer whose entry grows past `max_bytes` fails while writing, with an
    /// `io::Error` carrying `Error::TooLarge`; the previous value stays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writer_past_max_bytes_fails_with_too_large() {
        use etl_cache_core::CacheIoExt;
        use tokio::io::AsyncWriteExt;

        let dir = tempfile::tempdir().unwrap();
        let cache = builder(dir.path())
            .max_bytes(1 << 20)
            .build()
            .await
            .unwrap();
        put_text(&cache, "k", "previous").await;
        let mut w = cache.writer("k", SetOptions::new());
        let err = w.write_all(&sample_bytes(8 << 20, 3)).await.unwrap_err();
        let cause = err.get_ref().and_then(|e| e.downcast_ref::<Error>());
        assert!(matches!(cause, Some(Error::TooLarge { .. })), "{err:?}");
        assert!(
            w.write_all(b"more").await.is_err(),
            "a write after the failure"
        );
        assert!(matches!(w.commit().await, Err(Error::InvalidInput { .. })));
        assert_eq!(
            cache.get_text("k").await.unwrap().as_deref(),
            Some("previous")
        );
    }

    /// A reader of an entry changed on disk in its third block (blocks of 1
    /// MiB) hands out the first two blocks, exactly, then fails with
    /// `InvalidData` carrying `Error::Corrupt`: no byte of the changed block;
    /// every later read fails too, and the entry is removed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reader_of_a_corrupt_entry_fails_before_the_bad_block() {
        use etl_cache_core::CacheIoExt;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (dir, cache) = fresh().await;
        let root = dir.path();
        let mib = 1usize << 20;
        // Bytes no codec shrinks, so every codec stores at least 4 blocks.
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let data: Vec<u8> = (0..4 * mib - 1000).map(|_| rng.next() as u8).collect();
        for (key, codec) in [("plain", Compression::NONE), ("zstd", Compression::zstd())] {
            let mut w = cache.writer(key, SetOptions::new().compression(codec));
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
            let path = entry_path(root, key);
            let mut raw = fs::read(&path).unwrap();
            raw[header_len(key) + 2 * (mib + 4) + 100] ^= 0x40;
            fs::write(&path, raw).unwrap();

            let mut r = cache.reader(key, 64 << 10).await.unwrap().unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0u8; 10_000];
            let err = loop {
                match r.read(&mut buf).await {
                    Ok(0) => panic!("{key}: a changed entry was read to its end"),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) => break e,
                }
            };
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{key}: {err}");
            let cause = err.get_ref().and_then(|e| e.downcast_ref::<Error>());
            assert!(
                matches!(cause, Some(Error::Corrupt { key: k, .. }) if k == key),
                "{key}: {err:?}"
            );
            if codec == Compression::NONE {
                assert!(
                    got[..] == data[..2 * mib],
                    "{key}: {} bytes handed out",
                    got.len()
                );
            } else {
                assert!(
                    data.starts_with(&got),
                    "{key}: a changed byte was handed out"
                );
            }
            let again = r.read(&mut buf).await.unwrap_err();
            assert_eq!(again.kind(), io::ErrorKind::InvalidData, "{key}: {again}");
            assert!(!path.exists(), "{key}: the entry must be removed");
            assert!(cache.reader(key, 1000).await.unwrap().is_none());
        }
    }
}

// ---------------------------------------------------------------------------
// 5b. Streamed reads
// ---------------------------------------------------------------------------
mod streams {
    use super::*;

    /// Stores `data` under "k" with `set_stream`, in chunks of 1 MiB.
    async fn set_in_mib_chunks(cache: &DiskCache, data: &Bytes, compression: Compression) {
        let chunks = data.chunks(1 << 20).map(Bytes::copy_from_slice).collect();
        let opts = SetOptions::new().compression(compression);
        cache
            .set_stream("k", stream_of(chunks), opts)
            .await
            .unwrap();
    }

    /// A streamed read hands out chunks from a few buffers that are reused
    /// once the caller drops them: a chunk the caller keeps must never
    /// change, whatever the stream reads after it, and every chunk has the
    /// size asked for (the last one the rest).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_kept_by_the_caller_never_change() {
        let dir = tempfile::tempdir().unwrap();
        let cache = builder(dir.path()).build().await.unwrap();
        let data = Bytes::from(sample_bytes((6 << 20) + 12_345, 5));
        for compression in [Compression::NONE, Compression::zstd()] {
            set_in_mib_chunks(&cache, &data, compression).await;
            for chunk_size in [4096, 100_000, 1 << 20] {
                let mut s = cache.get_stream("k", chunk_size).await.unwrap().unwrap();
                let (mut kept, mut at, mut i) = (Vec::new(), 0, 0);
                while let Some(chunk) = s.next().await {
                    let chunk = chunk.unwrap();
                    let want = chunk_size.min(data.len() - at);
                    assert_eq!(chunk.len(), want, "{compression}, {chunk_size}: chunk {i}");
                    assert!(chunk == data.slice(at..at + want), "chunk {i} differs");
                    // Every third chunk is kept; the others go back for reuse.
                    if i % 3 == 0 {
                        kept.push((at, chunk));
                    }
                    (at, i) = (at + want, i + 1);
                }
                assert_eq!(at, data.len(), "{compression}, {chunk_size}");
                for (at, chunk) in kept {
                    assert!(
                        chunk == data.slice(at..at + chunk.len()),
                        "{compression}, {chunk_size}: the chunk at {at} changed after it was read"
                    );
                }
            }
        }
    }

    /// Dropping a stream part way stops its reading threads (one or two)
    /// and closes the entry file: a pipeline that gives up on a value must
    /// not leave threads blocked or files open behind it.
    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_stream_closes_the_entry_file() {
        let (dir, cache) = fresh().await;
        let root = dir.path();
        let data = Bytes::from(sample_bytes(12 << 20, 9));
        let open_fds = |path: &Path| {
            fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| fs::read_link(e.unwrap().path()).ok())
                .filter(|target| target == path)
                .count()
        };
        for compression in [Compression::NONE, Compression::zstd()] {
            set_in_mib_chunks(&cache, &data, compression).await;
            let path = entry_path(root, "k");
            for chunk_size in [64 << 10, 1 << 20] {
                let mut s = cache.get_stream("k", chunk_size).await.unwrap().unwrap();
                let first = s.next().await.unwrap().unwrap();
                assert!(first == data.slice(..chunk_size));
                assert!(open_fds(&path) > 0, "the stream reads the entry file");
                drop(s);
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while open_fds(&path) > 0 {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "{compression}, {chunk_size}: the entry is still open after its stream was dropped"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            // The entry is untouched and reads whole.
            let back = cache.get("k").await.unwrap().unwrap();
            assert!(back.to_bytes() == data, "{compression}");
        }
    }
}

// ---------------------------------------------------------------------------
// 6. A failing input stream
// ---------------------------------------------------------------------------
mod failing_stream {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failing_stream_keeps_the_previous_value_and_leaves_no_temp_file() {
        let (dir, cache) = fresh().await;
        let root = dir.path();
        let previous = bytes_value(3000, 1);
        put(&cache, "k", previous.clone()).await;
        let before = cache.stats().await.unwrap();
        for compression in [Compression::NONE, Compression::gzip(), Compression::zstd()] {
            for good_chunks in [0usize, 1, 40] {
                let items = (0..good_chunks)
                    .map(|i| Ok(Bytes::from(sample_bytes(64 << 10, i as u64))))
                    .chain(std::iter::once(Err(io::Error::other("upstream API died"))))
                    .chain((0..3).map(|_| Ok(Bytes::from_static(b"never read"))));
                let r = cache
                    .set_stream(
                        "k",
                        futures::stream::iter(items).boxed(),
                        SetOptions::new().compression(compression),
                    )
                    .await;
                match r {
                    Err(Error::Stream { key, source }) => {
                        assert_eq!(key, "k");
                        assert_eq!(source.to_string(), "upstream API died");
                    }
                    other => {
                        panic!("{compression}/{good_chunks}: expected Error::Stream, got {other:?}")
                    }
                }
                assert_eq!(cache.get("k").await.unwrap(), Some(previous.clone()));
                assert_no_temp_files(root);
            }
        }
        let after = cache.stats().await.unwrap();
        assert_eq!((after.entries, after.bytes), (before.entries, before.bytes));
        assert_no_lock_files(root);
    }
}

// ---------------------------------------------------------------------------
// 7. Opening: errors and permissions
// ---------------------------------------------------------------------------
mod open {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    use super::*;

    fn assert_open_error(r: etl_cache_core::Result<DiskCache>, root: &Path) -> String {
        match r {
            Err(e @ Error::Open { .. }) => {
                let Error::Open { location, message } = &e else {
                    unreachable!()
                };
                assert_eq!(location, &root.display().to_string());
                assert!(!message.is_empty());
                let shown = e.to_string();
                assert!(shown.contains(&root.display().to_string()), "{shown}");
                shown
            }
            other => panic!("expected Error::Open, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_root_that_is_a_file_is_an_open_error() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("not-a-dir");
        fs::write(&root, b"precious").unwrap();
        let shown = assert_open_error(builder(&root).build().await, &root);
        assert!(shown.contains("not a directory"), "{shown}");
        assert_eq!(
            fs::read(&root).unwrap(),
            b"precious",
            "the file is untouched"
        );
    }

    #[tokio::test]
    async fn a_root_that_cannot_be_created_is_an_open_error() {
        // Not even root can create a directory here.
        let root = Path::new("/proc/self/etl-cache-root");
        assert_open_error(builder(root).build().await, root);
        let nested = Path::new("/proc/self/etl-cache-root/a/b");
        assert_open_error(DiskCache::open(nested).await, nested);
    }

    const PERMS_ENV: &str = "ETL_CACHE_TEST_PERMS_ROOT";
    const PERMS_DONE: &str = "ETL_CACHE_PERMS_CHILD_DONE";

    /// Runs in a child process started with umask 000 by the test below;
    /// returns at once in a normal test run.
    #[tokio::test]
    async fn perms_child() {
        let Ok(root) = std::env::var(PERMS_ENV) else {
            return;
        };
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let umask = status.lines().find_map(|l| l.strip_prefix("Umask:"));
        assert_eq!(
            umask.map(str::trim),
            Some("0000"),
            "the child runs with umask 000"
        );
        let cache = DiskCache::open(&root).await.unwrap();
        put_text(&cache, "text", "t").await;
        cache
            .set_stream(
                "stream",
                stream_of(vec![Bytes::from_static(b"s")]),
                SetOptions::new().compression(Compression::zstd()),
            )
            .await
            .unwrap();
        println!("{PERMS_DONE}");
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn root_is_0700_and_files_are_0600_even_with_a_permissive_umask() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("nested").join("cache");
        let out = Command::new("sh")
            .arg("-c")
            .arg("umask 000 && exec \"$0\" \"$@\"")
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "open::perms_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PERMS_ENV, &root)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(PERMS_DONE),
            "child failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );

        assert_eq!(mode(&root), 0o700, "the root");
        let mut dirs = vec![base(&root)];
        let mut files = 0;
        while let Some(d) = dirs.pop() {
            assert_eq!(mode(&d), 0o700, "{}", d.display());
            for p in files_in(&d) {
                if p.is_dir() {
                    dirs.push(p);
                } else {
                    assert_eq!(mode(&p), 0o600, "{}", p.display());
                    files += 1;
                }
            }
        }
        assert!(entry_path(&root, "text").exists() && entry_path(&root, "stream").exists());
        assert!(files >= 2);
    }
}

// ---------------------------------------------------------------------------
// 8. Per-key locks
// ---------------------------------------------------------------------------
mod locks {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_key_lock_times_out_writes_but_not_reads() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let timeout = Duration::from_millis(300);
        let cache = builder(root).lock_timeout(timeout).build().await.unwrap();
        let key = "extract/orders";
        put_text(&cache, key, "v1").await;
        let path = lock_path(root, key);
        assert!(!path.exists(), "lock files exist only while held");

        // Another worker holds the key's lock.
        let held = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        held.lock().unwrap();

        match cache.set_text(key, "v2", SetOptions::new()).await {
            Err(e @ Error::LockTimeout { .. }) => {
                assert!(e.to_string().contains(key), "{e}");
                let Error::LockTimeout { key: k, waited } = e else {
                    unreachable!()
                };
                assert_eq!(k, key);
                assert!(waited >= timeout, "gave up after {waited:?}");
            }
            other => panic!("expected Error::LockTimeout, got {other:?}"),
        }
        assert!(matches!(
            cache.delete(key).await,
            Err(Error::LockTimeout { .. })
        ));
        // Reads do not take the lock.
        assert_eq!(cache.get_text(key).await.unwrap().as_deref(), Some("v1"));
        assert!(cache.head(key).await.unwrap().is_some());
        assert_no_temp_files(root);
        assert!(
            path.exists(),
            "a lock file is never removed from under its holder"
        );

        held.unlock().unwrap();
        drop(held);
        put_text(&cache, key, "v2").await;
        assert_eq!(cache.get_text(key).await.unwrap().as_deref(), Some("v2"));
        assert!(!path.exists(), "no lock file after a successful set");
        assert_no_lock_files(root);
    }
}

// ---------------------------------------------------------------------------
// 9. Temp files left by interrupted writes
// ---------------------------------------------------------------------------
mod sweep {
    use super::*;

    #[tokio::test]
    async fn open_sweeps_stray_temp_files_but_not_locked_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        drop(builder(root).build().await.unwrap());
        let tmp = tmp_dir(root);
        let stray = tmp.join("0123456789abcdef-99999.tmp");
        fs::write(&stray, vec![7u8; 4096]).unwrap();
        let in_progress = tmp.join("fedcba9876543210-1.tmp");
        fs::write(&in_progress, vec![7u8; 4096]).unwrap();
        let writer = OpenOptions::new().write(true).open(&in_progress).unwrap();
        writer.lock().unwrap();

        let cache = builder(root).build().await.unwrap();
        assert!(!stray.exists(), "an abandoned temp file is swept at open");
        assert!(in_progress.exists(), "a write in progress is left alone");
        let s = cache.stats().await.unwrap();
        assert_eq!((s.entries, s.bytes), (0, 0), "temp files never count");
        drop(cache);

        writer.unlock().unwrap();
        drop(writer);
        let _cache = builder(root).build().await.unwrap();
        assert!(!in_progress.exists(), "swept once its writer is gone");
        assert_no_temp_files(root);
    }

    const SWEEP_RACE_SETS: u64 = 2500;

    /// Every open sweeps the temp directory while other handles (here, of
    /// this process; the same holds across processes) are writing: a temp
    /// file is created and then locked, and the sweep must not take it in
    /// between.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn opening_never_sweeps_a_write_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let cache = builder(&root).build().await.unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let opener = {
            let (root, stop) = (root.clone(), stop.clone());
            tokio::spawn(async move {
                let mut opens = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    drop(builder(&root).build().await.unwrap());
                    opens += 1;
                }
                opens
            })
        };
        let mut failed = Vec::new();
        for i in 0..SWEEP_RACE_SETS {
            let key = format!("k{}", i % 10);
            if let Err(e) = cache
                .set(&key, bytes_value(100, i), SetOptions::new())
                .await
            {
                failed.push(e.to_string());
            }
        }
        stop.store(true, Ordering::SeqCst);
        let opens = opener.await.unwrap();
        assert!(opens > 0);
        assert!(
            failed.is_empty(),
            "{} of {SWEEP_RACE_SETS} sets failed while {opens} opens swept; first: {}",
            failed.len(),
            failed[0]
        );
    }
}

// ---------------------------------------------------------------------------
// 10. The shared usage counters
// ---------------------------------------------------------------------------
mod usage {
    use super::*;

    #[tokio::test]
    async fn stats_are_recounted_from_the_directory_after_reopen() {
        let (dir, cache) = fresh().await;
        let root = dir.path();
        for i in 0..25u64 {
            let opts = SetOptions::new().compression(if i % 3 == 0 {
                Compression::zstd()
            } else {
                Compression::NONE
            });
            cache
                .set(&format!("k{i}"), bytes_value(100 * i as usize, i), opts)
                .await
                .unwrap();
        }
        for i in 0..5 {
            cache.delete(&format!("k{i}")).await.unwrap();
        }
        assert_stats_match_disk(&cache, root).await;
        drop(cache);
        let truth = disk_usage(root);
        assert_eq!(truth.0, 20);

        let nonsense: Vec<Vec<u8>> = vec![
            vec![0xff; 16],
            // With a journal number past any record.
            vec![0xff; 24],
            [1_000_000u64.to_le_bytes(), 3u64.to_le_bytes()].concat(),
            vec![0; 16],
            b"garbage".to_vec(),
            Vec::new(),
        ];
        for bad in nonsense {
            fs::write(usage_file(root), &bad).unwrap();
            let cache = builder(root).build().await.unwrap();
            let s = cache.stats().await.unwrap();
            assert_eq!((s.entries, s.bytes), truth, "usage file was {bad:?}");
            drop(cache);
        }
        fs::remove_file(usage_file(root)).unwrap();
        let cache = builder(root).build().await.unwrap();
        let s = cache.stats().await.unwrap();
        assert_eq!((s.entries, s.bytes), truth, "usage file deleted");
    }
}

// ---------------------------------------------------------------------------
// The evictor's repair of counters left high by a killed writer
// ---------------------------------------------------------------------------
mod drift {
    use super::*;

    fn read_usage(root: &Path) -> (u64, u64) {
        let b = fs::read(usage_file(root)).unwrap();
        (
            u64::from_le_bytes(b[..8].try_into().unwrap()),
            u64::from_le_bytes(b[8..16].try_into().unwrap()),
        )
    }

    /// A writer reserves its entry in the shared counters before publishing
    /// it, so one killed in between leaves them high. When the evictor finds
    /// them too high to explain, it recounts; the entry being published at
    /// that moment must still be counted, or the counters end up low and the
    /// limits stop holding.
    #[tokio::test]
    async fn counters_left_high_by_a_killed_writer_are_repaired_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let cache = builder(root).max_entries(10).build().await.unwrap();
        for i in 0..5u64 {
            put(&cache, &format!("k{i}"), bytes_value(1000, i)).await;
        }
        assert_eq!(read_usage(root), disk_usage(root));
        // What a writer killed between reserving and publishing leaves behind,
        // many times over (or one writer of a huge entry).
        let (entries, bytes) = read_usage(root);
        let phantom = [
            (entries + 50).to_le_bytes(),
            (bytes + 10_000_000).to_le_bytes(),
        ]
        .concat();
        fs::write(usage_file(root), phantom).unwrap();

        let meta = put(&cache, "new", bytes_value(1000, 99)).await;
        assert!(
            cache.get("new").await.unwrap().is_some(),
            "the new entry stays"
        );
        assert_eq!(read_usage(root), disk_usage(root), "repaired exactly");
        assert_stats_match_disk(&cache, root).await;
        assert!(disk_usage(root).1 >= meta.size);

        // The same when the entry being published replaces an older one.
        fs::write(
            usage_file(root),
            [100u64.to_le_bytes(), 20_000_000u64.to_le_bytes()].concat(),
        )
        .unwrap();
        put(&cache, "new", bytes_value(3000, 98)).await;
        assert_eq!(read_usage(root), disk_usage(root), "repaired exactly");
        assert_eq!(cache.get("new").await.unwrap(), Some(bytes_value(3000, 98)));
    }
}

/// `get_raw` (the stored bytes of a whole entry) beside writers: on one
/// handle and on two, every read is one whole version whose length is the
/// one its metadata states; a read dropped at any poll leaves the entry as
/// it was.
mod raw_reads {
    use super::*;
    use etl_cache_core::Kind;
    use std::future::Future;
    use std::task::{Context, Poll};

    fn version(i: usize) -> Bytes {
        // Lengths differ between versions, so a mixed read cannot pass.
        Bytes::from(format!(
            "{{\"v\": {i}, \"pad\": \"{}\"}}",
            "x".repeat(i % 7 * 1000)
        ))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn raw_reads_racing_writers_on_one_and_two_handles_see_whole_versions() {
        let dir = tempfile::tempdir().unwrap();
        let one = Arc::new(DiskCache::open(dir.path()).await.unwrap());
        let two = Arc::new(DiskCache::open(dir.path()).await.unwrap());
        let json = SetOptions::new().kind(Kind::Json);
        one.set("doc", Value::Bytes(version(0)), json)
            .await
            .unwrap();
        let writer = {
            let one = one.clone();
            tokio::spawn(async move {
                for i in 1..200 {
                    one.set("doc", Value::Bytes(version(i)), json)
                        .await
                        .unwrap();
                }
            })
        };
        let mut readers = Vec::new();
        for cache in [one.clone(), two.clone(), one.clone(), two.clone()] {
            readers.push(tokio::spawn(async move {
                for _ in 0..200 {
                    let (meta, raw) = cache.get_raw("doc").await.unwrap().expect("never absent");
                    assert_eq!(meta.kind, Kind::Json);
                    assert_eq!(meta.logical_len, raw.len() as u64);
                    let doc: serde_json::Value = serde_json::from_slice(&raw).unwrap();
                    let i = doc["v"].as_u64().unwrap() as usize;
                    assert_eq!(raw, version(i), "one whole version");
                }
            }));
        }
        writer.await.unwrap();
        for r in readers {
            r.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_raw_read_dropped_at_any_poll_leaves_the_entry_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        // Large enough to be read on a blocking thread (several polls).
        let cache = DiskCacheBuilder::new()
            .root(dir.path())
            .inline_io(0)
            .build()
            .await
            .unwrap();
        let value = Bytes::from(sample_bytes(300_000, 7));
        put(&cache, "big", Value::Bytes(value.clone())).await;
        let waker = futures::task::noop_waker();
        for polls in 0..20 {
            let mut fut = Box::pin(cache.get_raw("big"));
            let mut cx = Context::from_waker(&waker);
            for _ in 0..polls {
                if let Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
                    assert_eq!(r.unwrap().unwrap().1, value);
                    break;
                }
                tokio::task::yield_now().await;
            }
            drop(fut);
            let (_, got) = cache.get_raw("big").await.unwrap().expect("still there");
            assert_eq!(got, value, "after a read dropped at poll {polls}");
        }
    }
}
