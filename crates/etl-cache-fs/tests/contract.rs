//! The shared contract suite on DiskCache.

use std::sync::Arc;

use etl_cache_core::ManualClock;
use etl_cache_core::testing::Harness;
use etl_cache_fs::DiskCache;

async fn open(dir: &tempfile::TempDir, clock: &Arc<ManualClock>) -> DiskCache {
    DiskCache::builder()
        .root(dir.path())
        .clock(clock.clone())
        .build()
        .await
        .unwrap()
}

async fn make(clock: Arc<ManualClock>) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir, &clock).await;
    // A second handle on the directory, as another process would open it.
    let second = open(&dir, &clock).await;
    Harness::new(Arc::new(cache), clock, dir).with_second_handle(Arc::new(second))
}

etl_cache_core::contract_tests!(make);
