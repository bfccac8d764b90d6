//! What the tiers do beyond the contract: promotion, write-through,
//! invalidation, expiry in memory, the size threshold, streams.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etl_cache_core::testing::stream_chunks;
use etl_cache_core::{Cache, CacheExt, ManualClock, MemoryCache, SetOptions, Value};
use etl_cache_fs::DiskCache;
use etl_cache_tiered::{Served, TieredCache};

mod common;

struct Setup {
    cache: TieredCache,
    disk: Arc<DiskCache>,
    store: Arc<MemoryCache>,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

async fn setup(max_memory_entry: u64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let disk = common::disk(&clock, &dir, None).await;
    let store = Arc::new(MemoryCache::with_clock(clock.clone()));
    let cache = TieredCache::builder()
        .clock(clock.clone())
        .memory_bytes(1 << 20)
        .max_memory_entry(max_memory_entry)
        .tier(disk.clone())
        .tier(store.clone())
        .build()
        .unwrap();
    Setup {
        cache,
        disk,
        store,
        clock,
        _dir: dir,
    }
}

#[tokio::test]
async fn reads_promote_into_every_tier_above() {
    let s = setup(4096).await;
    s.store
        .set(
            "k",
            "from the store".into(),
            SetOptions::new().ttl_seconds(600),
        )
        .await
        .unwrap();
    assert!(s.disk.get("k").await.unwrap().is_none());
    let (v, served) = s.cache.get_traced("k").await.unwrap().unwrap();
    assert_eq!(
        (v, served),
        (Value::from("from the store"), Served::Tier(1))
    );
    // Promoted to disk with the time it had left, and into memory.
    let on_disk = s.disk.head("k").await.unwrap().expect("promoted to disk");
    assert!(on_disk.expires.is_some());
    assert_eq!(
        s.cache.get_traced("k").await.unwrap().unwrap().1,
        Served::Memory
    );
    let counts = s.cache.tier_counts();
    assert_eq!((counts.memory, counts.tiers.clone()), (1, vec![0, 1]));
}

#[tokio::test]
async fn writes_go_through_to_every_tier() {
    let s = setup(4096).await;
    s.cache
        .set_json(
            "k",
            &serde_json::json!({"a": 1}),
            SetOptions::new().compress(true),
        )
        .await
        .unwrap();
    for tier in [&*s.disk as &dyn Cache, &*s.store] {
        assert_eq!(
            tier.get("k").await.unwrap(),
            Some(Value::Json(serde_json::json!({"a": 1})))
        );
    }
    assert_eq!(
        s.cache.get_traced("k").await.unwrap().unwrap().1,
        Served::Memory
    );
}

#[tokio::test]
async fn delete_and_clear_invalidate_every_tier() {
    let s = setup(4096).await;
    s.cache
        .set("a", "1".into(), SetOptions::new())
        .await
        .unwrap();
    s.cache
        .set("b", "2".into(), SetOptions::new())
        .await
        .unwrap();
    assert!(s.cache.delete("a").await.unwrap());
    assert!(s.cache.get("a").await.unwrap().is_none());
    assert!(s.disk.get("a").await.unwrap().is_none());
    assert!(s.store.get("a").await.unwrap().is_none());
    s.cache.clear().await.unwrap();
    assert!(s.cache.get("b").await.unwrap().is_none());
    assert!(s.disk.get("b").await.unwrap().is_none());
    assert!(s.store.get("b").await.unwrap().is_none());
}

#[tokio::test]
async fn memory_never_serves_an_expired_entry() {
    let s = setup(4096).await;
    s.cache
        .set("k", "short lived".into(), SetOptions::new().ttl_seconds(10))
        .await
        .unwrap();
    assert_eq!(
        s.cache.get_traced("k").await.unwrap().unwrap().1,
        Served::Memory
    );
    s.clock.advance(Duration::from_secs(11));
    assert!(s.cache.get("k").await.unwrap().is_none());
    assert!(s.cache.get_stream("k", 10).await.unwrap().is_none());
    assert!(s.cache.head("k").await.unwrap().is_none());
}

#[tokio::test]
async fn big_entries_bypass_memory() {
    let s = setup(1000).await;
    let big = Bytes::from(vec![7u8; 5000]);
    s.cache
        .set("big", Value::Bytes(big.clone()), SetOptions::new())
        .await
        .unwrap();
    for _ in 0..2 {
        let (v, served) = s.cache.get_traced("big").await.unwrap().unwrap();
        assert_eq!(v, Value::Bytes(big.clone()));
        assert_eq!(served, Served::Tier(0), "never kept in memory");
    }
    // A big entry streamed from below is passed through in the asked chunks.
    let chunks = stream_chunks(&s.cache, "big", 1024).await;
    assert_eq!(
        chunks.iter().map(Bytes::len).collect::<Vec<_>>(),
        vec![1024, 1024, 1024, 1024, 904]
    );
    assert_eq!(s.cache.tier_counts().memory, 0);
}

#[tokio::test]
async fn small_streams_are_served_from_memory() {
    let s = setup(4096).await;
    s.cache
        .set(
            "small",
            Value::Bytes(Bytes::from_static(b"0123456789")),
            SetOptions::new(),
        )
        .await
        .unwrap();
    let chunks = stream_chunks(&s.cache, "small", 4).await;
    assert_eq!(chunks, vec![&b"0123"[..], &b"4567"[..], &b"89"[..]]);
    assert_eq!(s.cache.tier_counts().memory, 1);
}

#[tokio::test]
async fn set_stream_lands_in_every_tier() {
    let s = setup(4096).await;
    let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let chunks: Vec<std::io::Result<Bytes>> = data
        .chunks(65536)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    s.cache
        .set_stream(
            "s",
            Box::pin(futures::stream::iter(chunks)),
            SetOptions::new().compress(true),
        )
        .await
        .unwrap();
    assert_eq!(
        s.disk.get_bytes("s").await.unwrap().as_deref(),
        Some(&data[..])
    );
    assert_eq!(
        s.store.get_bytes("s").await.unwrap().as_deref(),
        Some(&data[..])
    );
}

#[tokio::test]
async fn building_without_a_tier_is_an_error() {
    assert!(TieredCache::builder().build().is_err());
}

#[tokio::test]
async fn the_longest_ttl_and_far_expiries_live_in_memory() {
    let s = setup(4096).await;
    let longest = SetOptions::new().ttl(etl_cache_core::MAX_TTL);
    s.cache.set("k", "long".into(), longest).await.unwrap();
    assert_eq!(
        s.cache.get_traced("k").await.unwrap().unwrap().1,
        Served::Memory
    );
    // An entry whose expiry lies further out than any write accepts (its
    // clock ran ahead), promoted from below.
    s.clock.advance(Duration::from_secs(300 * 365 * 24 * 3600));
    s.store.set("far", "far".into(), longest).await.unwrap();
    assert_eq!(
        s.cache.get_traced("far").await.unwrap().unwrap(),
        (Value::from("far"), Served::Tier(1))
    );
    assert_eq!(
        s.cache.get_traced("far").await.unwrap().unwrap(),
        (Value::from("far"), Served::Memory)
    );
}

/// A JSON entry stored as text (a writer that keeps its own key order and
/// number digits, as the Python package does) is promoted with that text:
/// memory and the tiers above hold the same bytes, and every read agrees
/// with the entry's length (a copy written again by serde_json was shorter
/// and made range reads from memory panic).
#[tokio::test]
async fn a_json_entry_stored_as_text_is_promoted_as_that_text() {
    use etl_cache_core::Kind;
    let s = setup(4096).await;
    let text = r#"{"b": 1, "a": [1180591620717411303424, 0.10]}"#;
    s.store
        .set(
            "doc",
            Value::Bytes(Bytes::from_static(text.as_bytes())),
            SetOptions::new().kind(Kind::Json),
        )
        .await
        .unwrap();
    // The read that promotes.
    let (meta, value) = s.cache.get_entry("doc").await.unwrap().expect("a hit");
    assert_eq!(meta.kind, Kind::Json);
    assert_eq!(meta.logical_len, text.len() as u64);
    assert!(matches!(value, Value::Json(_)), "{value:?}");
    // Every read after it, now from memory, gives the stored text.
    let (_, raw) = s.cache.get_raw("doc").await.unwrap().expect("a hit");
    assert_eq!(&raw[..], text.as_bytes());
    let (_, range) = s
        .cache
        .get_range("doc", 2..20)
        .await
        .unwrap()
        .expect("a hit");
    assert_eq!(&range[..], &text.as_bytes()[2..20]);
    let streamed = stream_chunks(&s.cache, "doc", 7).await;
    assert_eq!(streamed.concat(), text.as_bytes());
    // The tier above holds the text too.
    let (disk_meta, disk_raw) = s.disk.get_raw("doc").await.unwrap().expect("promoted");
    assert_eq!(disk_meta.kind, Kind::Json);
    assert_eq!(&disk_raw[..], text.as_bytes());
}

#[tokio::test]
async fn copies_in_the_tiers_above_keep_the_checked_blocks_a_write_asks_for() {
    // Two DiskCaches: the copy a set or a computed value leaves in the
    // upper one is cut in the same checked blocks as the entry below, as
    // its size on disk shows (a crc per block: 16 for 1 MiB in 64 KiB
    // pieces, 1 with the default 1 MiB; the keys are of one length, so
    // their headers are too).
    let (up, low) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let upper: Arc<dyn Cache> = Arc::new(DiskCache::open(up.path()).await.unwrap());
    let lower: Arc<dyn Cache> = Arc::new(DiskCache::open(low.path()).await.unwrap());
    let cache = TieredCache::builder()
        .tier(upper.clone())
        .tier(lower.clone())
        .build()
        .unwrap();
    let payload = Value::Bytes(Bytes::from(vec![7u8; 1 << 20]));
    let small = SetOptions::new().check_block(etl_cache_core::BlockSize::new(64 << 10).unwrap());
    let sizes = |key: &'static str| {
        let (upper, lower) = (upper.clone(), lower.clone());
        async move {
            let u = upper.head(key).await.unwrap().unwrap().size;
            let l = lower.head(key).await.unwrap().unwrap().size;
            (u, l)
        }
    };
    cache
        .set("k-plain", payload.clone(), SetOptions::new())
        .await
        .unwrap();
    cache.set("k-piece", payload.clone(), small).await.unwrap();
    let computed = payload.clone();
    cache
        .get_or_insert_with("k-compu", small, || async move { computed })
        .await
        .unwrap();
    let (plain_up, plain_low) = sizes("k-plain").await;
    assert_eq!(plain_up, plain_low);
    for key in ["k-piece", "k-compu"] {
        let (u, l) = sizes(key).await;
        assert_eq!((u, l), (plain_low + 60, plain_low + 60), "{key}");
    }
    assert_eq!(cache.get("k-piece").await.unwrap(), Some(payload));
}
