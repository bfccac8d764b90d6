//! The shared contract suite on DiskCache.

use std::sync::Arc;

use etl_cache_core::ManualClock;
use etl_cache_core::testing::Harness;
use etl_cache_fs::DiskCache;

async fn make(clock: Arc<ManualClock>) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let cache = DiskCache::builder()
        .root(dir.path())
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    Harness::new(Arc::new(cache), clock, dir)
}

etl_cache_core::contract_tests!(make);
