//! Memory → disk → object store, and where each read was served from.
//!
//! `cargo run --release --example tiered --features object` runs it on a disk
//! cache in `.cache/tiered-example` and an in-memory object store. Give an
//! object store URL to use a real one (any S3-compatible endpoint with the
//! `aws` feature; see the s3_quickstart example for the variables):
//!
//! ```text
//! ETL_CACHE_OBJECT_URL=s3://my-bucket/etl cargo run --release --example tiered --features aws
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use etl_cache::object::ObjectCache;
use etl_cache::object::object_store::memory::InMemory;
use etl_cache::{Cache, CacheExt, DiskCache, Served, SetOptions, TieredCache, Value};

async fn read(cache: &TieredCache, key: &str) -> etl_cache::Result<()> {
    let started = Instant::now();
    let found = cache.get_traced(key).await?;
    let took = started.elapsed();
    let from = match found {
        Some((_, Served::Memory)) => "memory".to_string(),
        Some((_, Served::Tier(0))) => "disk (promoted to memory)".to_string(),
        Some((_, Served::Tier(i))) => {
            format!("object store, tier {i} (promoted to disk and memory)")
        }
        None => "nowhere: a miss".to_string(),
    };
    println!("  get {key:<24} {:>9.1?}  served from {from}", took);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (object, object_name): (Arc<dyn Cache>, String) =
        match std::env::var("ETL_CACHE_OBJECT_URL") {
            Ok(url) => (Arc::new(ObjectCache::from_url(&url)?), url),
            Err(_) => (
                Arc::new(ObjectCache::new(Arc::new(InMemory::new()), "etl")?),
                "an in-memory object store".into(),
            ),
        };
    let disk = Arc::new(DiskCache::open(".cache/tiered-example").await?);
    disk.clear().await?;
    object.clear().await?;
    let build = || {
        TieredCache::builder()
            .memory_bytes(64 << 20)
            .max_memory_entry(1 << 20)
            .tier(disk.clone())
            .tier(object.clone())
            .build()
    };
    let cache = build()?;
    println!(
        "tiers: memory (64 MiB) -> disk ({}) -> {object_name}",
        disk.root().display()
    );

    println!("\n1. a reference table written through every tier, then read twice");
    cache
        .set_json(
            "ref/countries",
            &serde_json::json!(["DE", "FR", "IT", "NL"]),
            SetOptions::new(),
        )
        .await?;
    read(&cache, "ref/countries").await?;
    read(&cache, "ref/countries").await?;

    println!("\n2. a new worker on the same machine: its memory is empty, the disk is warm");
    let cache = build()?;
    read(&cache, "ref/countries").await?;
    read(&cache, "ref/countries").await?;

    println!("\n3. a result another host put in the object store");
    object
        .set(
            "runs/2026-11-28/summary",
            "rows=1042 status=success".into(),
            SetOptions::new(),
        )
        .await?;
    read(&cache, "runs/2026-11-28/summary").await?;
    read(&cache, "runs/2026-11-28/summary").await?;
    read(&cache, "runs/missing").await?;

    println!("\n4. twenty tasks miss the same key at once: it is computed once");
    let computed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (cache, computed) = (cache.clone(), computed.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_insert_with(
                    "ref/fx_rates",
                    SetOptions::new().ttl(Duration::from_secs(3600)),
                    || async move {
                        computed.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(200)).await; // the slow API call
                        Value::from("EUR/USD=1.08")
                    },
                )
                .await
        }));
    }
    for t in tasks {
        t.await??;
    }
    println!(
        "  computed {} time(s) for 20 callers",
        computed.load(Ordering::SeqCst)
    );
    read(&cache, "ref/fx_rates").await?;

    let counts = cache.tier_counts();
    println!(
        "\nhits: memory {}, disk {}, object store {}; misses {}",
        counts.memory, counts.tiers[0], counts.tiers[1], counts.misses
    );
    Ok(())
}
