//! How a [`CachedStore`] is configured.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use etl_cache_core::{Cache, Error, Result};
use object_store::ObjectStore;

use crate::CachedStore;
use crate::config::{
    Admission, Config, DEFAULT_BLOCK_SIZE, DEFAULT_DIR, DEFAULT_KEEP_TIMEOUT, MAX_BLOCK_SIZE,
    MIN_BLOCK_SIZE, Revalidate,
};
use crate::engine::Engine;

/// Builds a [`CachedStore`]; see [`CachedStore::builder`].
#[derive(Debug)]
pub struct CachedStoreBuilder {
    inner: Arc<dyn ObjectStore>,
    cache: Option<Arc<dyn Cache>>,
    dir: PathBuf,
    block_size: u64,
    revalidate: Revalidate,
    admission: Admission,
    namespace: Option<String>,
    prefix: String,
    coordinate: bool,
    keep_timeout: Duration,
}

impl CachedStoreBuilder {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>) -> Self {
        CachedStoreBuilder {
            inner,
            cache: None,
            dir: PathBuf::from(DEFAULT_DIR),
            block_size: DEFAULT_BLOCK_SIZE,
            revalidate: Revalidate::default(),
            admission: Admission::default(),
            namespace: None,
            prefix: "etl-cache-store".into(),
            coordinate: true,
            keep_timeout: DEFAULT_KEEP_TIMEOUT,
        }
    }

    /// Keeps the blocks in this cache (a `TieredCache` for memory and disk,
    /// or any other backend). Without it, a `DiskCache` in [`Self::dir`].
    pub fn cache(mut self, cache: Arc<dyn Cache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The directory of the `DiskCache` opened when no [`Self::cache`] is
    /// given (default [`DEFAULT_DIR`]). Processes that open the same
    /// directory share its blocks.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = dir.into();
        self
    }

    /// The size of the aligned blocks objects are cached in: from
    /// [`MIN_BLOCK_SIZE`] (1 MiB) to [`MAX_BLOCK_SIZE`] (64 MiB), default
    /// 8 MiB. Blocks of one size are not found under another.
    pub fn block_size(mut self, bytes: u64) -> Self {
        self.block_size = bytes;
        self
    }

    /// How often an object's metadata is checked again (default
    /// [`Revalidate::Always`]).
    pub fn revalidate(mut self, revalidate: Revalidate) -> Self {
        self.revalidate = revalidate;
        self
    }

    /// Which blocks are kept (default [`Admission::Always`]).
    pub fn admission(mut self, admission: Admission) -> Self {
        self.admission = admission;
        self
    }

    /// Names the inner store inside the cache, so that several stores can
    /// share one cache. Defaults to the inner store's `Display` text (for
    /// S3, `AmazonS3(bucket)`), which names the bucket but not the account
    /// or endpoint: set it when two stores of the same name, or two
    /// in-memory stores, share a cache.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The first part of every key this store writes in the cache
    /// (default `etl-cache-store`), so that they stay apart from other
    /// entries of a shared cache.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Whether a read about to fetch a run of missing blocks first takes
    /// the cache's lock on the run's first block (default on), so that
    /// other handles and processes sharing the cache (a `DiskCache`
    /// directory) that lead a run from the same block wait for it and
    /// then read its blocks from the cache, instead of fetching them too.
    /// Reads in one process wait for each other either way.
    ///
    /// The lock costs a few file operations per run fetched (nothing on a
    /// read served from the cache); a lock that times out or fails is
    /// logged and counted in [`StoreStats::cache_errors`](crate::StoreStats::cache_errors),
    /// and the read fetches on its own. Turn it off for a cache no other
    /// handle shares, or one whose `get_or_insert` does not lock across
    /// handles.
    pub fn coordinate_processes(mut self, on: bool) -> Self {
        self.coordinate = on;
        self
    }

    /// How long the cache may take to keep one block read from the inner
    /// store (default [`DEFAULT_KEEP_TIMEOUT`], 60 s). Blocks are kept
    /// behind the reads, at most 4 at once; a cache that hangs (a disk
    /// that stopped answering, a remote cache cut off) would otherwise hold
    /// those 4 places for good, and every later cold read,
    /// [`CachedStore::settle`] and the lock on the blocks' run would wait
    /// for it. Past the deadline the write is dropped (a dropped write is as
    /// if it had not been made), logged and counted in
    /// [`StoreStats::cache_errors`](crate::StoreStats::cache_errors); the
    /// block is fetched again when next read.
    pub fn keep_timeout(mut self, timeout: Duration) -> Self {
        self.keep_timeout = timeout;
        self
    }

    /// Opens the cache (unless one was given) and builds the store.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a block size out of range or an empty
    /// key prefix; the errors of opening the `DiskCache`.
    pub async fn build(self) -> Result<CachedStore> {
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&self.block_size) {
            return Err(Error::InvalidInput {
                message: format!(
                    "block size {} is out of range: from {MIN_BLOCK_SIZE} (1 MiB) to {MAX_BLOCK_SIZE} (64 MiB)",
                    self.block_size
                ),
            });
        }
        if self.prefix.is_empty() || self.prefix.len() > 128 || self.prefix.contains('\0') {
            return Err(Error::InvalidInput {
                message: "the key prefix must be 1 to 128 bytes, without NUL".into(),
            });
        }
        if self.keep_timeout.is_zero() {
            return Err(Error::InvalidInput {
                message: "the keep timeout must be longer than zero".into(),
            });
        }
        if let Admission::SecondRead { remember: 0 } = self.admission {
            return Err(Error::InvalidInput {
                message: "Admission::SecondRead must remember at least one block".into(),
            });
        }
        let cache = match self.cache {
            Some(c) => c,
            None => Arc::new(etl_cache_fs::DiskCache::open(&self.dir).await?),
        };
        let namespace = self.namespace.unwrap_or_else(|| self.inner.to_string());
        let config = Config {
            block_size: self.block_size,
            revalidate: self.revalidate,
            admission: self.admission,
            namespace,
            prefix: self.prefix,
            coordinate: self.coordinate,
            keep_timeout: self.keep_timeout,
        };
        Ok(CachedStore {
            engine: Arc::new(Engine::new(self.inner, cache, config)),
        })
    }
}
