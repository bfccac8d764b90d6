//! How writes treat the tiers: the last tier is the source of truth, the
//! tiers above it are caches filled best effort.
//!
//! - A tier above the last that refuses a value (a `DiskCache` whose
//!   `max_bytes` is smaller than the value) is left without the key; the
//!   write succeeds and reads are served from below.
//! - A write the last tier refuses fails, leaves the previous value, and
//!   publishes nothing above it, not even for a moment.
//! - A write whose invalidation of an upper tier fails writes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use etl_cache_core::testing::{Hooks, Op};
use etl_cache_core::{
    ByteStream, Cache, CacheExt, DynCache, Error, ManualClock, MemoryCache, Result, SetOptions,
    Value,
};
use etl_cache_fs::DiskCache;
use etl_cache_tiered::{Served, TieredCache};
use futures::TryStreamExt;

/// A MemoryCache that counts what it publishes and can be told to fail
/// writes or deletes.
#[derive(Debug)]
struct Tap {
    inner: MemoryCache,
    fail_writes: AtomicBool,
    fail_deletes: AtomicBool,
    published: AtomicU64,
}

impl Tap {
    fn new(clock: &Arc<ManualClock>) -> Arc<Tap> {
        Arc::new(Tap {
            inner: MemoryCache::with_clock(clock.clone()),
            fail_writes: AtomicBool::new(false),
            fail_deletes: AtomicBool::new(false),
            published: AtomicU64::new(0),
        })
    }

    fn refuse(key: &str, what: &str) -> Error {
        Error::Backend {
            backend: "tap",
            key: key.to_owned(),
            source: format!("{what} refused by the test").into(),
        }
    }
}

#[async_trait]
impl Hooks for Tap {
    fn inner(&self) -> &DynCache {
        &self.inner
    }

    async fn before(&self, op: Op, key: &str) -> Result<()> {
        let refused = match op {
            Op::Set | Op::SetStream => &self.fail_writes,
            Op::Delete => &self.fail_deletes,
            _ => return Ok(()),
        };
        if refused.load(Ordering::SeqCst) {
            return Err(Tap::refuse(key, op.name()));
        }
        Ok(())
    }

    /// Counts the writes the inner cache published.
    async fn after(&self, op: Op, _key: &str, ok: bool) {
        if ok && matches!(op, Op::Set | Op::SetStream) {
            self.published.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl Cache for Tap {
    etl_cache_core::forward_cache! {
        set, set_stream, get, get_entry, get_raw, get_stream, head, delete, list, purge_expired,
        clear, stats
    }
}

/// A DiskCache that holds at most `max_bytes` per entry.
async fn small_disk(
    clock: &Arc<ManualClock>,
    dir: &tempfile::TempDir,
    max_bytes: u64,
) -> Arc<DiskCache> {
    Arc::new(
        DiskCache::builder()
            .root(dir.path())
            .clock(clock.clone())
            .max_bytes(max_bytes)
            .build()
            .await
            .unwrap(),
    )
}

fn stream_of(b: &Bytes, chunk: usize) -> ByteStream {
    let chunks: Vec<std::io::Result<Bytes>> = b.chunks(chunk).map(|c| Ok(b.slice_ref(c))).collect();
    Box::pin(futures::stream::iter(chunks))
}

/// `len` bytes that do not compress (xorshift), different for each seed.
fn big(len: usize, seed: u64) -> Bytes {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ seed.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    Bytes::from(
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect::<Vec<u8>>(),
    )
}

/// memory (entries up to 1,000 bytes) -> DiskCache (max 2,000 bytes) -> Tap.
struct Middle {
    cache: TieredCache,
    disk: Arc<DiskCache>,
    store: Arc<Tap>,
    _dir: tempfile::TempDir,
}

async fn middle_refuses_big_values() -> Middle {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let disk = small_disk(&clock, &dir, 2_000).await;
    let store = Tap::new(&clock);
    let cache = TieredCache::builder()
        .clock(clock.clone())
        .memory_bytes(1 << 20)
        .max_memory_entry(1_000)
        .tier(disk.clone())
        .tier(store.clone())
        .build()
        .unwrap();
    Middle {
        cache,
        disk,
        store,
        _dir: dir,
    }
}

#[tokio::test]
async fn a_set_an_upper_tier_refuses_succeeds_and_is_served_from_below() {
    let m = middle_refuses_big_values().await;
    m.cache
        .set("k", "small".into(), SetOptions::new())
        .await
        .unwrap();
    assert_eq!(m.disk.get("k").await.unwrap(), Some("small".into()));

    // Too large for the DiskCache tier: it refuses, the set does not.
    let v = Value::Bytes(big(5_000, 1));
    let meta = m
        .cache
        .set("k", v.clone(), SetOptions::new())
        .await
        .expect("a value the last tier takes is stored, whatever the tiers above say");
    assert_eq!(meta.logical_len, 5_000);
    assert_eq!(
        m.disk.get("k").await.unwrap(),
        None,
        "the refusing tier holds neither the new value nor the old one"
    );
    assert_eq!(m.store.get("k").await.unwrap(), Some(v.clone()));
    for _ in 0..2 {
        let (got, served) = m.cache.get_traced("k").await.unwrap().unwrap();
        assert_eq!(got, v);
        assert_eq!(served, Served::Tier(1), "read through to the last tier");
    }
    assert_eq!(m.cache.head("k").await.unwrap().unwrap().logical_len, 5_000);

    // A small value again: every tier takes it.
    m.cache
        .set("k", "small again".into(), SetOptions::new())
        .await
        .unwrap();
    assert_eq!(m.disk.get("k").await.unwrap(), Some("small again".into()));
    assert_eq!(
        m.cache.get_traced("k").await.unwrap().unwrap(),
        (Value::from("small again"), Served::Memory)
    );
}

#[tokio::test]
async fn a_stream_an_upper_tier_refuses_succeeds_and_is_served_from_below() {
    let m = middle_refuses_big_values().await;
    m.cache
        .set("s", "small".into(), SetOptions::new())
        .await
        .unwrap();
    let b = big(50_000, 2);
    let meta = m
        .cache
        .set_stream("s", stream_of(&b, 4_096), SetOptions::new().compress(true))
        .await
        .expect("the last tier took the stream");
    assert_eq!(meta.logical_len, 50_000);
    assert_eq!(m.disk.head("s").await.unwrap(), None);
    assert_eq!(m.store.get_bytes("s").await.unwrap(), Some(b.clone()));
    let streamed: Vec<Bytes> = m
        .cache
        .get_stream("s", 10_000)
        .await
        .unwrap()
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(streamed.concat(), b[..]);
    assert_eq!(
        m.cache.get_traced("s").await.unwrap().unwrap(),
        (Value::Bytes(b), Served::Tier(1))
    );

    // A stream every tier takes lands in each of them.
    let small = big(1_500, 3);
    m.cache
        .set_stream("s", stream_of(&small, 500), SetOptions::new())
        .await
        .unwrap();
    assert_eq!(m.disk.get_bytes("s").await.unwrap(), Some(small.clone()));
    assert_eq!(m.store.get_bytes("s").await.unwrap(), Some(small));
}

#[tokio::test]
async fn a_computed_value_an_upper_tier_refuses_is_served_from_below() {
    let m = middle_refuses_big_values().await;
    let v = Value::Bytes(big(8_000, 4));
    let got = m
        .cache
        .get_or_insert_with("g", SetOptions::new(), || {
            let v = v.clone();
            async move { v }
        })
        .await
        .expect("computed and stored below");
    assert_eq!(got, v);
    assert_eq!(m.disk.head("g").await.unwrap(), None);
    assert_eq!(
        m.cache.get_traced("g").await.unwrap().unwrap(),
        (v, Served::Tier(1))
    );
}

/// memory -> Tap (an upper tier) -> DiskCache (max 2,000 bytes, the last).
struct Bottom {
    cache: TieredCache,
    upper: Arc<Tap>,
    disk: Arc<DiskCache>,
    _dir: tempfile::TempDir,
}

async fn bottom_refuses_big_values() -> Bottom {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let disk = small_disk(&clock, &dir, 2_000).await;
    let upper = Tap::new(&clock);
    let cache = TieredCache::builder()
        .clock(clock.clone())
        .memory_bytes(1 << 20)
        .max_memory_entry(100_000)
        .tier(upper.clone())
        .tier(disk.clone())
        .build()
        .unwrap();
    Bottom {
        cache,
        upper,
        disk,
        _dir: dir,
    }
}

#[tokio::test]
async fn a_write_the_last_tier_refuses_fails_and_publishes_nothing_above_it() {
    let b = bottom_refuses_big_values().await;
    b.cache
        .set("k", "previous".into(), SetOptions::new())
        .await
        .unwrap();
    let published = b.upper.published.load(Ordering::SeqCst);
    assert_eq!(published, 1);

    let r = b
        .cache
        .set("k", Value::Bytes(big(5_000, 5)), SetOptions::new())
        .await;
    assert!(matches!(r, Err(Error::TooLarge { .. })), "{r:?}");
    let r = b
        .cache
        .set_stream("k", stream_of(&big(50_000, 6), 1_000), SetOptions::new())
        .await;
    assert!(matches!(r, Err(Error::TooLarge { .. })), "{r:?}");
    assert_eq!(
        b.upper.published.load(Ordering::SeqCst),
        published,
        "the upper tier never published the refused values, not even for a moment"
    );
    assert_eq!(b.upper.get("k").await.unwrap(), None, "nothing stale above");
    assert_eq!(b.disk.get("k").await.unwrap(), Some("previous".into()));
    assert_eq!(
        b.cache.get_traced("k").await.unwrap().unwrap(),
        (Value::from("previous"), Served::Tier(1))
    );

    // A stream that fails part way: the same. (The read above promoted the
    // previous value into the upper tier: one publication more.)
    let mut chunks: Vec<std::io::Result<Bytes>> = vec![Ok(Bytes::from_static(b"part"))];
    chunks.push(Err(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "the source hung up",
    )));
    let r = b
        .cache
        .set_stream(
            "k",
            Box::pin(futures::stream::iter(chunks)),
            SetOptions::new(),
        )
        .await;
    assert!(matches!(r, Err(Error::Stream { .. })), "{r:?}");
    assert_eq!(b.upper.published.load(Ordering::SeqCst), published + 1);
    assert_eq!(b.cache.get("k").await.unwrap(), Some("previous".into()));
}

#[tokio::test]
async fn a_failed_invalidation_writes_nothing() {
    let b = bottom_refuses_big_values().await;
    b.cache
        .set("k", "previous".into(), SetOptions::new())
        .await
        .unwrap();
    b.upper.fail_deletes.store(true, Ordering::SeqCst);
    let r = b.cache.set("k", "new".into(), SetOptions::new()).await;
    assert!(matches!(r, Err(Error::Backend { .. })), "{r:?}");
    let r = b
        .cache
        .set_stream("k", stream_of(&big(100, 7), 10), SetOptions::new())
        .await;
    assert!(matches!(r, Err(Error::Backend { .. })), "{r:?}");
    assert_eq!(b.disk.get("k").await.unwrap(), Some("previous".into()));
    assert_eq!(b.upper.get("k").await.unwrap(), Some("previous".into()));
    assert_eq!(b.cache.get("k").await.unwrap(), Some("previous".into()));
}

#[tokio::test]
async fn an_upper_tier_failing_writes_leaves_it_without_the_key() {
    let b = bottom_refuses_big_values().await;
    b.cache
        .set("k", "previous".into(), SetOptions::new())
        .await
        .unwrap();
    b.upper.fail_writes.store(true, Ordering::SeqCst);
    b.cache
        .set("k", "new".into(), SetOptions::new())
        .await
        .expect("the last tier took it");
    assert_eq!(b.upper.get("k").await.unwrap(), None);
    b.cache
        .set_stream("k", stream_of(&big(1_000, 8), 100), SetOptions::new())
        .await
        .expect("the last tier took it");
    assert_eq!(b.upper.get("k").await.unwrap(), None);
    assert_eq!(b.disk.get_bytes("k").await.unwrap(), Some(big(1_000, 8)));
    assert_eq!(
        b.cache.get_traced("k").await.unwrap().unwrap(),
        (Value::Bytes(big(1_000, 8)), Served::Tier(1))
    );
}
