//! Fresh caches for the suites: temporary roots, and `DiskCache` handles
//! opened the ways several suites open them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use etl_cache_core::ManualClock;
use etl_cache_fs::{DiskCache, DiskCacheBuilder};

/// A fresh temporary directory and the cache root `cache` inside it, not
/// created yet (opening a cache makes it). The root lives as long as the
/// directory is kept.
pub fn temp_root() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("cache");
    (dir, root)
}

/// Runs `test` on a new [`runtime`](crate::runtime) with a `DiskCache`
/// opened at a fresh [`temp_root`], and returns what `test` returns.
pub fn on_fresh_disk<T>(test: impl AsyncFnOnce(&Path, DiskCache) -> T) -> T {
    let (_dir, root) = temp_root();
    crate::runtime().block_on(async {
        let cache = DiskCache::open(&root).await.expect("open");
        test(&root, cache).await
    })
}

/// A `DiskCache` at `root` that reads the time from `clock`.
pub async fn open_with_clock(root: &Path, clock: &Arc<ManualClock>) -> DiskCache {
    DiskCache::builder()
        .root(root)
        .clock(clock.clone())
        .build()
        .await
        .expect("open")
}

/// A `DiskCache` at `root` that keeps at most `max_entries` entries.
pub async fn open_capped(root: &Path, max_entries: u64) -> DiskCache {
    DiskCache::builder()
        .root(root)
        .max_entries(max_entries)
        .build()
        .await
        .expect("open")
}

/// The capacity settings of a `DiskCache` under test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// The most entries it may keep, if limited.
    pub max_entries: Option<u64>,
    /// The most bytes it may keep, if limited.
    pub max_bytes: Option<u64>,
    /// The fraction of a limit eviction brings it down to.
    pub low_water: f64,
}

impl Limits {
    /// `b` with these limits set.
    pub fn apply(&self, mut b: DiskCacheBuilder) -> DiskCacheBuilder {
        if let Some(n) = self.max_entries {
            b = b.max_entries(n);
        }
        if let Some(n) = self.max_bytes {
            b = b.max_bytes(n);
        }
        b.low_water(self.low_water)
    }
}

/// Where to make many short-lived roots: tmpfs (`/dev/shm`) when there is
/// one, else the temporary directory.
pub fn scratch() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}
