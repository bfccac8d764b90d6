//! Median latency of a 1 KB get from each tier of a TieredCache, in one run:
//! memory, disk, and the object store (in memory, or any store given by
//! `ETL_CACHE_OBJECT_URL`). `cargo bench -p etl-cache-bench --bench tiers`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use etl_cache::object::ObjectCache;
use etl_cache::object::object_store::memory::InMemory;
use etl_cache::{Cache, DiskCache, Served, SetOptions, TieredCache, Value};

const N: usize = 2000;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/target"))?;
    let object: Arc<dyn Cache> = match std::env::var("ETL_CACHE_OBJECT_URL") {
        Ok(url) => Arc::new(ObjectCache::from_url(&url)?),
        Err(_) => Arc::new(ObjectCache::new(Arc::new(InMemory::new()), "bench")?),
    };
    let disk = Arc::new(DiskCache::open(dir.path()).await?);
    let value = Value::Bytes(Bytes::from(vec![b'x'; 1024]));
    let keys: Vec<String> = (0..N).map(|i| format!("k{i}")).collect();
    for k in &keys {
        object.set(k, value.clone(), SetOptions::new()).await?;
    }
    // A tiered cache with memory disabled reads disk; one whose tiers above
    // are empty reads the object store. Each read below is timed alone.
    let tiered = |memory: u64| {
        TieredCache::builder()
            .memory_bytes(memory)
            .tier(disk.clone())
            .tier(object.clone())
            .build()
    };
    let mut object_direct = vec![];
    for k in &keys {
        let t = Instant::now();
        assert!(object.get(k).await?.is_some());
        object_direct.push(t.elapsed());
    }
    let (mut from_object, mut from_disk, mut from_memory) = (vec![], vec![], vec![]);
    let cold = tiered(64 << 20)?;
    for k in &keys {
        let t = Instant::now();
        let (_, served) = cold.get_traced(k).await?.expect("present");
        from_object.push(t.elapsed());
        assert_eq!(served, Served::Tier(1));
    }
    let no_memory = tiered(0)?;
    for k in &keys {
        let t = Instant::now();
        let (_, served) = no_memory.get_traced(k).await?.expect("present");
        from_disk.push(t.elapsed());
        assert_eq!(served, Served::Tier(0));
    }
    for k in &keys {
        let t = Instant::now();
        let (_, served) = cold.get_traced(k).await?.expect("present");
        from_memory.push(t.elapsed());
        assert_eq!(served, Served::Memory);
    }
    let (m, d, o) = (median(from_memory), median(from_disk), median(from_object));
    let od = median(object_direct);
    println!("1 KB get, median of {N}, one run:");
    println!("  memory tier          {:>8.2} µs", us(m));
    println!(
        "  disk tier            {:>8.2} µs  ({:.0}x memory)",
        us(d),
        us(d) / us(m)
    );
    println!(
        "  object store tier    {:>8.2} µs  ({:.0}x memory; includes promotion to disk and memory)",
        us(o),
        us(o) / us(m)
    );
    println!(
        "  object store, direct {:>8.2} µs  ({:.0}x memory; ObjectCache::get alone)",
        us(od),
        us(od) / us(m)
    );
    Ok(())
}
