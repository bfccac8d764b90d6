//! The shared contract suite on TieredCache: memory ahead of disk, and
//! memory ahead of disk ahead of a second store.

use std::sync::Arc;

use etl_cache_core::testing::Harness;
use etl_cache_core::{ManualClock, MemoryCache};
use etl_cache_fs::DiskCache;
use etl_cache_tiered::TieredCache;

mod common;

/// A DiskCache of no size limit.
async fn disk(clock: &Arc<ManualClock>, dir: &tempfile::TempDir) -> Arc<DiskCache> {
    common::disk(clock, dir, None).await
}

mod memory_disk {
    use super::*;

    async fn make(clock: Arc<ManualClock>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let cache = TieredCache::builder()
            .clock(clock.clone())
            .tier(disk(&clock, &dir).await)
            .build()
            .unwrap();
        Harness::new(Arc::new(cache), clock, dir)
    }

    etl_cache_core::contract_tests!(make);
}

mod memory_disk_store {
    use super::*;

    async fn make(clock: Arc<ManualClock>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let cache = TieredCache::builder()
            .clock(clock.clone())
            .max_memory_entry(64 * 1024)
            .tier(disk(&clock, &dir).await)
            .tier(Arc::new(MemoryCache::with_clock(clock.clone())))
            .build()
            .unwrap();
        Harness::new(Arc::new(cache), clock, dir)
    }

    etl_cache_core::contract_tests!(make);
}
