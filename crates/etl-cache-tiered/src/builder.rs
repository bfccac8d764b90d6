//! Configuration of a [`TieredCache`].

use std::sync::Arc;

use etl_cache_core::{Cache, Clock, Error, Result, SystemClock};

use crate::TieredCache;

/// Builds a [`TieredCache`]: a memory tier ahead of one or more lower tiers,
/// fastest first.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> etl_cache_core::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// use std::sync::Arc;
/// use etl_cache_fs::DiskCache;
/// use etl_cache_tiered::TieredCache;
///
/// let disk = DiskCache::open(dir.path()).await?;
/// let cache = TieredCache::builder()
///     .memory_bytes(256 << 20)        // the memory tier holds up to 256 MiB
///     .max_memory_entry(4 << 20)      // entries above 4 MiB bypass memory
///     .tier(Arc::new(disk))           // then disk (and e.g. an object store)
///     .build()?;
/// # Ok(()) }
/// ```
#[must_use]
#[derive(Debug)]
pub struct TieredCacheBuilder {
    pub(crate) memory_bytes: u64,
    pub(crate) max_memory_entry: u64,
    pub(crate) tiers: Vec<Arc<dyn Cache>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) lock_timeout: std::time::Duration,
}

impl Default for TieredCacheBuilder {
    fn default() -> Self {
        TieredCacheBuilder {
            memory_bytes: 64 << 20,
            max_memory_entry: 1 << 20,
            tiers: Vec::new(),
            clock: Arc::new(SystemClock),
            lock_timeout: etl_cache_core::backend::DEFAULT_LOCK_TIMEOUT,
        }
    }
}

impl TieredCacheBuilder {
    /// Defaults: 64 MiB of memory, entries up to 1 MiB kept in memory, no tier yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The memory tier's capacity in bytes of values (0 disables it).
    pub fn memory_bytes(self, bytes: u64) -> Self {
        TieredCacheBuilder {
            memory_bytes: bytes,
            ..self
        }
    }

    /// Entries whose logical size is above this bypass the memory tier.
    pub fn max_memory_entry(self, bytes: u64) -> Self {
        TieredCacheBuilder {
            max_memory_entry: bytes,
            ..self
        }
    }

    /// Adds a lower tier; call in order from fastest to slowest. The last
    /// tier is the source of truth: writes succeed or fail with it, and it
    /// answers `list`, `stats` and single flight. The tiers before it are
    /// caches, filled best effort (see the crate documentation).
    pub fn tier(mut self, tier: Arc<dyn Cache>) -> Self {
        self.tiers.push(tier);
        self
    }

    /// Reads the time for expiry from `clock` (give the lower tiers the same one).
    pub fn clock(self, clock: Arc<dyn Clock>) -> Self {
        TieredCacheBuilder { clock, ..self }
    }

    /// How long a `get_or_insert_with` caller waits for another caller of
    /// this process computing the same key before it fails with
    /// [`Error::LockTimeout`] (default
    /// [`etl_cache_core::backend::DEFAULT_LOCK_TIMEOUT`], as every backend).
    /// Callers of other processes queue in the last tier, with its own.
    pub fn lock_timeout(self, timeout: std::time::Duration) -> Self {
        TieredCacheBuilder {
            lock_timeout: timeout,
            ..self
        }
    }

    /// Builds the cache.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when no lower tier was added.
    pub fn build(self) -> Result<TieredCache> {
        if self.tiers.is_empty() {
            return Err(Error::InvalidInput {
                message: "a TieredCache needs at least one lower tier (.tier(...)); for memory only, use MemoryCache"
                    .into(),
            });
        }
        Ok(TieredCache::from_builder(self))
    }
}
