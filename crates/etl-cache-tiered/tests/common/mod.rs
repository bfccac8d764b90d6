//! What several test files share: a DiskCache tier on the test's clock.

use std::sync::Arc;

use etl_cache_core::ManualClock;
use etl_cache_fs::DiskCache;

/// A DiskCache in `dir` that reads time from `clock`, holding at most
/// `max_bytes` when given.
pub async fn disk(
    clock: &Arc<ManualClock>,
    dir: &tempfile::TempDir,
    max_bytes: Option<u64>,
) -> Arc<DiskCache> {
    let mut builder = DiskCache::builder().root(dir.path()).clock(clock.clone());
    if let Some(max_bytes) = max_bytes {
        builder = builder.max_bytes(max_bytes);
    }
    Arc::new(builder.build().await.unwrap())
}
