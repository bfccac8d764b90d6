//! Ranges through the tiers: from memory when the entry is there, else from
//! the first tier that holds it by that tier's own positional read, never
//! by streaming the entry; one version of the entry per range, whatever
//! writes run beside.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use etl_cache_core::testing::{Hooks, Op, assert_range_of_one_version};
use etl_cache_core::{Cache, DynCache, Result, SetOptions, Value};
use etl_cache_fs::DiskCache;
use etl_cache_tiered::TieredCache;

/// A DiskCache that counts how it is read.
#[derive(Debug)]
struct Counted {
    inner: DiskCache,
    ranges: AtomicU64,
    streams: AtomicU64,
    wholes: AtomicU64,
}

#[async_trait]
impl Hooks for Counted {
    fn inner(&self) -> &DynCache {
        &self.inner
    }

    async fn before(&self, op: Op, _key: &str) -> Result<()> {
        let counter = match op {
            Op::Get | Op::GetEntry | Op::GetRaw => &self.wholes,
            Op::GetStream => &self.streams,
            Op::GetRange => &self.ranges,
            _ => return Ok(()),
        };
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[async_trait]
impl Cache for Counted {
    etl_cache_core::forward_cache! {
        set, set_stream, get, get_entry, get_raw, get_stream, get_range, head, delete, list,
        purge_expired, clear, stats
    }
}

/// `len` bytes that differ at every offset and between seeds.
fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 11) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// Memory (entries up to 64 KiB) over a counted DiskCache.
async fn setup() -> (TieredCache, Arc<Counted>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(Counted {
        inner: DiskCache::builder().root(dir.path()).build().await.unwrap(),
        ranges: AtomicU64::new(0),
        streams: AtomicU64::new(0),
        wholes: AtomicU64::new(0),
    });
    let cache = TieredCache::builder()
        .memory_bytes(1 << 20)
        .max_memory_entry(64 << 10)
        .tier(disk.clone())
        .build()
        .unwrap();
    (cache, disk, dir)
}

#[tokio::test]
async fn a_range_of_a_large_entry_is_read_by_the_tier_that_holds_it() {
    let (cache, disk, _dir) = setup().await;
    let value = pattern(3 << 20, 7);
    cache
        .set("big", Value::Bytes(value.clone()), SetOptions::new())
        .await
        .unwrap();
    let at = (1 << 20) + 5;
    let (meta, part) = cache
        .get_range("big", at..at + 4096)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(meta.logical_len, value.len() as u64);
    assert_eq!(part, value.slice(at as usize..at as usize + 4096));
    assert_eq!(disk.ranges.load(Ordering::SeqCst), 1);
    assert_eq!(disk.streams.load(Ordering::SeqCst), 0, "never streamed");
    assert_eq!(disk.wholes.load(Ordering::SeqCst), 0, "never read whole");

    // Past the end: cut there; a miss is a miss.
    let len = value.len() as u64;
    let (_, tail) = cache
        .get_range("big", len - 3..len + 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tail, value.slice(value.len() - 3..));
    let (_, none) = cache
        .get_range("big", len + 1..len + 9)
        .await
        .unwrap()
        .unwrap();
    assert!(none.is_empty());
    assert!(cache.get_range("absent", 0..10).await.unwrap().is_none());
    let stats = cache.stats().await.unwrap();
    assert_eq!((stats.hits, stats.misses), (3, 1));
}

#[tokio::test]
async fn a_range_of_a_small_entry_comes_from_memory() {
    let (cache, disk, _dir) = setup().await;
    let value = pattern(10_000, 3);
    cache
        .set("small", Value::Bytes(value.clone()), SetOptions::new())
        .await
        .unwrap();
    let (_, part) = cache.get_range("small", 100..200).await.unwrap().unwrap();
    assert_eq!(part, value.slice(100..200));
    assert_eq!(disk.ranges.load(Ordering::SeqCst), 0, "served from memory");
    assert_eq!(cache.tier_counts().memory, 1);
}

#[tokio::test]
async fn a_bad_range_is_refused_before_any_tier_is_read() {
    let (cache, disk, _dir) = setup().await;
    #[allow(clippy::reversed_empty_ranges)]
    let err = cache.get_range("k", 9..3).await.unwrap_err();
    assert!(
        matches!(err, etl_cache_core::Error::InvalidInput { .. }),
        "{err}"
    );
    assert_eq!(disk.ranges.load(Ordering::SeqCst), 0);
}

/// Readers of ranges on one handle while another task replaces the entry
/// between two versions of different sizes (one in memory, one only on
/// disk): every range is a slice of one version, cut at that version's
/// length.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_ranges_on_one_handle_each_come_from_one_version() {
    let (cache, _disk, _dir) = setup().await;
    let cache = Arc::new(cache);
    let versions = [pattern(2 << 20, 1), pattern(40_000, 2)];
    cache
        .set("k", Value::Bytes(versions[0].clone()), SetOptions::new())
        .await
        .unwrap();
    let writer = {
        let (cache, versions) = (cache.clone(), versions.clone());
        tokio::spawn(async move {
            for i in 0..40 {
                let v = versions[(i + 1) % 2].clone();
                cache
                    .set("k", Value::Bytes(v), SetOptions::new())
                    .await
                    .unwrap();
            }
        })
    };
    let mut readers = Vec::new();
    for r in 0..8u64 {
        let (cache, versions) = (cache.clone(), versions.clone());
        readers.push(tokio::spawn(async move {
            for i in 0..50u64 {
                let start = (r * 7919 + i * 104_729) % 60_000;
                assert_range_of_one_version(&*cache, "k", start..start + 5_000, &versions).await;
            }
        }));
    }
    writer.await.unwrap();
    for r in readers {
        r.await.unwrap();
    }
}
