//! Configuration of a [`DiskCache`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use etl_cache_core::{Clock, Error, Result, SystemClock};

use crate::DiskCache;

/// The root used when none is given: `.cache` in the working directory, as the seed.
pub const DEFAULT_ROOT: &str = ".cache";

/// Settings shared by every operation of one handle.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub root: PathBuf,
    pub max_entries: Option<u64>,
    pub max_bytes: Option<u64>,
    pub low_water: f64,
    pub lock_timeout: Duration,
    pub durable: bool,
    pub touch_interval: Duration,
    pub inline_io_max: u64,
    pub recycle_files: bool,
    pub clock: Arc<dyn Clock>,
}

/// Builds a [`DiskCache`]. Every setting has a default; `build` opens the root.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> etl_cache_core::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// use std::time::Duration;
/// use etl_cache_fs::DiskCache;
///
/// let cache = DiskCache::builder()
///     .root(dir.path().join("safe_cache"))
///     .max_entries(1000)                 // LRU ceiling by count
///     .max_bytes(10 << 30)               // and by bytes on disk
///     .lock_timeout(Duration::from_secs(30))
///     .durable(true)                     // fsync: survives power loss
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct DiskCacheBuilder {
    config: Config,
}

impl Default for DiskCacheBuilder {
    fn default() -> Self {
        DiskCacheBuilder {
            config: Config {
                root: PathBuf::from(DEFAULT_ROOT),
                max_entries: None,
                max_bytes: None,
                low_water: 0.9,
                lock_timeout: etl_cache_core::backend::DEFAULT_LOCK_TIMEOUT,
                durable: false,
                touch_interval: Duration::ZERO,
                inline_io_max: 16 * 1024,
                recycle_files: true,
                clock: Arc::new(SystemClock),
            },
        }
    }
}

impl DiskCacheBuilder {
    /// Default settings: root `.cache`, no capacity limit, 60 s lock timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Settings from the environment: `ETL_CACHE_DIR`, `ETL_CACHE_MAX_ENTRIES`,
    /// `ETL_CACHE_MAX_BYTES`, `ETL_CACHE_LOCK_TIMEOUT_SECS`, `ETL_CACHE_DURABLE`
    /// (`1`/`true`). Unset variables keep their defaults.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming the variable whose value does not parse.
    pub fn from_env() -> Result<Self> {
        use etl_cache_core::backend::env_var as var;
        let mut b = Self::new();
        if let Ok(dir) = std::env::var("ETL_CACHE_DIR") {
            b = b.root(dir);
        }
        if let Some(n) = var("ETL_CACHE_MAX_ENTRIES")? {
            b = b.max_entries(n);
        }
        if let Some(n) = var("ETL_CACHE_MAX_BYTES")? {
            b = b.max_bytes(n);
        }
        if let Some(s) = var::<u64>("ETL_CACHE_LOCK_TIMEOUT_SECS")? {
            b = b.lock_timeout(Duration::from_secs(s));
        }
        if let Some(d) = var::<String>("ETL_CACHE_DURABLE")? {
            b = b.durable(matches!(d.as_str(), "1" | "true" | "yes"));
        }
        Ok(b)
    }

    /// The directory holding the cache; created (mode 0700) if missing.
    pub fn root(mut self, root: impl Into<PathBuf>) -> Self {
        self.config.root = root.into();
        self
    }

    /// Evict least recently used entries beyond this many.
    pub fn max_entries(mut self, n: u64) -> Self {
        self.config.max_entries = Some(n);
        self
    }

    /// Evict least recently used entries beyond this many bytes on disk. An
    /// entry larger than this is refused with [`Error::TooLarge`].
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.config.max_bytes = Some(n);
        self
    }

    /// How far ahead eviction plans (default 0.9). A set that passes a limit
    /// evicts the least recently used entries until the cache is within it
    /// again (usually one); it takes them from a queue that one scan of the
    /// entries fills with as many as would bring the cache down to this
    /// fraction of the limit, and holds that many entries in memory (about
    /// 130 bytes each). When the queue is down to half, the next scan runs
    /// on a thread of its own if the plan had at least 256 entries (so no
    /// set waits for a long scan), or on the set that empties it otherwise.
    /// 0.9 at a million entries: a scan per 50,000 sets past the limit, in
    /// the background, and ~13 MB queued. 1.0 scans on every set past a
    /// limit.
    pub fn low_water(mut self, fraction: f64) -> Self {
        self.config.low_water = fraction;
        self
    }

    /// How long to wait for another worker holding a key's lock, or for
    /// another process holding the shared counters' lock (default 60 s),
    /// before failing with [`Error::LockTimeout`].
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.config.lock_timeout = timeout;
        self
    }

    /// fsync each entry and its directory before a set returns, so entries
    /// survive power loss, not only a killed process (default off).
    pub fn durable(mut self, durable: bool) -> Self {
        self.config.durable = durable;
        self
    }

    /// Refresh an entry's recency on read only when it is older than this
    /// (default zero: every read refreshes, exact LRU). A few seconds saves a
    /// metadata write per read on read-heavy caches, at the price of LRU order
    /// within that window.
    pub fn touch_interval(mut self, interval: Duration) -> Self {
        self.config.touch_interval = interval;
        self
    }

    /// Entries up to this size (default 16 KiB) are read and written directly
    /// on the calling task, without a hop through Tokio's blocking pool: a few
    /// syscalls on a local disk cost less than the hop. Larger entries, waits
    /// for a busy key, eviction and `durable` writes always go to the
    /// blocking pool. Set 0 on slow network filesystems.
    pub fn inline_io(mut self, max_bytes: u64) -> Self {
        self.config.inline_io_max = max_bytes;
        self
    }

    /// Reuse the files of replaced and evicted small entries (at most 32 KiB)
    /// for the next small sets instead of creating and freeing inodes
    /// (default on; Linux only, where `renameat2(RENAME_EXCHANGE)` swaps a
    /// new file into place and leaves the old one to write again). It pays
    /// on file systems where creating a file is slow after many were freed
    /// (ext4 without a journal); see docs/performance.md for the figures on
    /// tmpfs, journaled ext4 and such a disk.
    pub fn recycle_files(mut self, recycle: bool) -> Self {
        self.config.recycle_files = recycle;
        self
    }

    /// Read the time for expiry from `clock` (tests use
    /// [`etl_cache_core::ManualClock`]). Recency and the times of the removal
    /// journal (`Cache::last_removal`) always use the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.config.clock = clock;
        self
    }

    /// Opens the cache: creates the root, sweeps writes left by killed
    /// processes, and recounts the entries if no other process has it open.
    ///
    /// # Errors
    ///
    /// [`Error::Open`] when the root is a file, not writable, or a setting is
    /// out of range.
    pub async fn build(self) -> Result<DiskCache> {
        let c = &self.config;
        let bad = |message: String| Error::Open {
            location: c.root.display().to_string(),
            message,
        };
        if !(0.0..=1.0).contains(&c.low_water) || c.low_water.is_nan() {
            return Err(bad(format!(
                "low_water must be within 0.0..=1.0, got {}",
                c.low_water
            )));
        }
        if c.max_entries == Some(0) || c.max_bytes == Some(0) {
            return Err(bad("max_entries and max_bytes must be at least 1".into()));
        }
        DiskCache::open_with(self.config).await
    }
}
