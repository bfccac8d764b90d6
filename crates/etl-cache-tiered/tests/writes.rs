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
use etl_cache_core::testing::{Hooks, Op, noise_bytes, stream_chunks};
use etl_cache_core::{
    ByteStream, Cache, CacheExt, DynCache, Error, ManualClock, MemoryCache, Result, SetOptions,
    Value,
};
use etl_cache_fs::DiskCache;
use etl_cache_tiered::{Served, TieredCache};

mod common;

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

fn stream_of(b: &Bytes, chunk: usize) -> ByteStream {
    let chunks: Vec<std::io::Result<Bytes>> = b.chunks(chunk).map(|c| Ok(b.slice_ref(c))).collect();
    Box::pin(futures::stream::iter(chunks))
}

/// `len` bytes that do not compress, different for each seed.
fn big(len: usize, seed: u64) -> Bytes {
    Bytes::from(noise_bytes(len, seed))
}

/// Memory, then two tiers: a DiskCache that holds at most 2,000 bytes
/// and a Tap, in either order.
struct Tiers {
    cache: TieredCache,
    disk: Arc<DiskCache>,
    tap: Arc<Tap>,
    _dir: tempfile::TempDir,
}

impl Tiers {
    /// Memory keeping entries up to `max_memory_entry` bytes, then the
    /// DiskCache above the Tap when `disk_first`, else the Tap above it.
    async fn new(max_memory_entry: u64, disk_first: bool) -> Tiers {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new());
        let disk = common::disk(&clock, &dir, Some(2_000)).await;
        let tap = Tap::new(&clock);
        let (upper, last): (Arc<dyn Cache>, Arc<dyn Cache>) = if disk_first {
            (disk.clone(), tap.clone())
        } else {
            (tap.clone(), disk.clone())
        };
        let cache = TieredCache::builder()
            .clock(clock)
            .memory_bytes(1 << 20)
            .max_memory_entry(max_memory_entry)
            .tier(upper)
            .tier(last)
            .build()
            .unwrap();
        Tiers {
            cache,
            disk,
            tap,
            _dir: dir,
        }
    }
}

/// memory (entries up to 1,000 bytes) -> DiskCache (max 2,000 bytes) -> Tap.
async fn middle_refuses_big_values() -> Tiers {
    Tiers::new(1_000, true).await
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
    assert_eq!(m.tap.get("k").await.unwrap(), Some(v.clone()));
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
    assert_eq!(m.tap.get_bytes("s").await.unwrap(), Some(b.clone()));
    let streamed = stream_chunks(&m.cache, "s", 10_000).await;
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
    assert_eq!(m.tap.get_bytes("s").await.unwrap(), Some(small));
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
async fn bottom_refuses_big_values() -> Tiers {
    Tiers::new(100_000, false).await
}

#[tokio::test]
async fn a_write_the_last_tier_refuses_fails_and_publishes_nothing_above_it() {
    let b = bottom_refuses_big_values().await;
    b.cache
        .set("k", "previous".into(), SetOptions::new())
        .await
        .unwrap();
    let published = b.tap.published.load(Ordering::SeqCst);
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
        b.tap.published.load(Ordering::SeqCst),
        published,
        "the upper tier never published the refused values, not even for a moment"
    );
    assert_eq!(b.tap.get("k").await.unwrap(), None, "nothing stale above");
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
    assert_eq!(b.tap.published.load(Ordering::SeqCst), published + 1);
    assert_eq!(b.cache.get("k").await.unwrap(), Some("previous".into()));
}

#[tokio::test]
async fn a_failed_invalidation_writes_nothing() {
    let b = bottom_refuses_big_values().await;
    b.cache
        .set("k", "previous".into(), SetOptions::new())
        .await
        .unwrap();
    b.tap.fail_deletes.store(true, Ordering::SeqCst);
    let r = b.cache.set("k", "new".into(), SetOptions::new()).await;
    assert!(matches!(r, Err(Error::Backend { .. })), "{r:?}");
    let r = b
        .cache
        .set_stream("k", stream_of(&big(100, 7), 10), SetOptions::new())
        .await;
    assert!(matches!(r, Err(Error::Backend { .. })), "{r:?}");
    assert_eq!(b.disk.get("k").await.unwrap(), Some("previous".into()));
    assert_eq!(b.tap.get("k").await.unwrap(), Some("previous".into()));
    assert_eq!(b.cache.get("k").await.unwrap(), Some("previous".into()));
}

#[tokio::test]
async fn an_upper_tier_failing_writes_leaves_it_without_the_key() {
    let b = bottom_refuses_big_values().await;
    b.cache
        .set("k", "previous".into(), SetOptions::new())
        .await
        .unwrap();
    b.tap.fail_writes.store(true, Ordering::SeqCst);
    b.cache
        .set("k", "new".into(), SetOptions::new())
        .await
        .expect("the last tier took it");
    assert_eq!(b.tap.get("k").await.unwrap(), None);
    b.cache
        .set_stream("k", stream_of(&big(1_000, 8), 100), SetOptions::new())
        .await
        .expect("the last tier took it");
    assert_eq!(b.tap.get("k").await.unwrap(), None);
    assert_eq!(b.disk.get_bytes("k").await.unwrap(), Some(big(1_000, 8)));
    assert_eq!(
        b.cache.get_traced("k").await.unwrap().unwrap(),
        (Value::Bytes(big(1_000, 8)), Served::Tier(1))
    );
}
