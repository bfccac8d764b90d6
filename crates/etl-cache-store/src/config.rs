//! What a [`CachedStore`](crate::CachedStore) is configured with: the
//! settings a builder takes and the configuration it settles, shared by the
//! builder and the engine.

use std::time::Duration;

/// The default block size: 8 MiB.
pub const DEFAULT_BLOCK_SIZE: u64 = 8 << 20;
/// The smallest block size accepted: 1 MiB.
pub const MIN_BLOCK_SIZE: u64 = 1 << 20;
/// The largest block size accepted: 64 MiB.
pub const MAX_BLOCK_SIZE: u64 = 64 << 20;

/// How long the cache may take to keep one block by default: 60 seconds.
pub const DEFAULT_KEEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the cache lives when no [`Cache`](etl_cache_core::Cache) is given: a `DiskCache` here.
pub const DEFAULT_DIR: &str = ".cache/etl-cache-store";

/// How often a [`CachedStore`](crate::CachedStore) asks the inner store whether an object it has
/// blocks of changed.
///
/// A changed object is recognised by its e-tag (or version, or last-modified
/// time and size where the store has neither): blocks of the old version are
/// never served once the change is seen. The question is when it is seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Revalidate {
    /// Every call sees the object as it is now (the default). A read that
    /// fetches any block does so on condition that the object is the one the
    /// cached blocks came from, which checks it at no extra cost; a read
    /// served entirely from the cache first asks for the object's metadata
    /// (one request without a body).
    #[default]
    Always,
    /// Metadata checked less than this long ago is trusted: a change is
    /// seen at most this long after it was made.
    After(Duration),
    /// Metadata once seen is trusted until a write through this store
    /// changes the object. For data that is never rewritten in place, such
    /// as the Parquet files of a lake table: a warm read then sends no
    /// request at all, even after a restart.
    Never,
}

/// Which blocks read from the inner store are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Admission {
    /// Every block read is kept (the default).
    #[default]
    Always,
    /// A block is kept on its second read. One pass over more data than
    /// the cache holds then evicts nothing that is read again and again.
    /// The first reads are remembered in memory (about 8 bytes each, up to
    /// `remember` blocks, then forgotten all at once), per process.
    SecondRead {
        /// How many blocks read once are remembered.
        remember: usize,
    },
}

impl Admission {
    /// [`Admission::SecondRead`] remembering a million blocks (8 TiB of
    /// 8 MiB blocks; about 8 MiB of memory).
    pub const SECOND_READ: Admission = Admission::SecondRead { remember: 1 << 20 };
}

/// What the builder settled.
#[derive(Debug)]
pub(crate) struct Config {
    pub block_size: u64,
    pub revalidate: Revalidate,
    pub admission: Admission,
    pub namespace: String,
    pub prefix: String,
    pub coordinate: bool,
    pub keep_timeout: std::time::Duration,
}
