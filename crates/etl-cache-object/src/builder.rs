//! Configuration of an [`ObjectCache`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use etl_cache_core::{Clock, Error, MAX_TTL, Result, SystemClock};
use object_store::ObjectStore;
use object_store::path::Path;

use crate::cache::ObjectCache;
use crate::deadline::{DEFAULT_IDLE_TIMEOUT, Deadline};
use crate::inner::{Config, Inner};
use crate::layout::Layout;
use crate::local::LocalFiles;
use crate::staged::LocalWrites;
use crate::store::{self, Http};

/// The part size of multipart uploads unless another is set: 8 MiB.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;
/// The smallest part size S3 and GCS accept (all parts but the last).
pub const MIN_CLOUD_PART_SIZE: usize = 5 << 20;

#[derive(Debug, Clone)]
enum Source {
    None,
    Store(Arc<dyn ObjectStore>),
    Url(String),
    Dir(PathBuf),
}

/// Builds an [`ObjectCache`] from an injected store or from a URL.
///
/// From a URL, credentials and settings come from the environment as the
/// `object_store` builders read it (`AWS_*`, `AZURE_*`, `GOOGLE_*`), and
/// [`ObjectCacheBuilder::option`] overrides them with the same keys
/// (`aws_endpoint`, `aws_region`, `allow_http`, `azure_storage_account_name`,
/// `google_service_account`, …). The URL's path is the prefix.
///
/// ```
/// # fn main() -> etl_cache_core::Result<()> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use etl_cache_object::ObjectCache;
/// use object_store::memory::InMemory;
///
/// // An injected store, as the seed injects an authenticated boto3 client:
/// let cache = ObjectCache::builder()
///     .store(Arc::new(InMemory::new()))
///     .prefix("etl/runs")
///     .part_size(16 << 20)               // multipart parts of 16 MiB
///     .max_concurrency(4)                // at most 4 parts in flight
///     .lease_duration(Duration::from_secs(30))
///     .build()?;
///
/// // Or a URL (s3://, az://, gs:// need the aws, azure, gcp features):
/// let dir = tempfile::tempdir().unwrap();
/// let local = ObjectCache::local_dir(dir.path().join("cache"))?;
/// # let _ = (cache, local);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ObjectCacheBuilder {
    source: Source,
    options: Vec<(String, String)>,
    prefix: Option<String>,
    local_root: Option<PathBuf>,
    http: Http,
    idle_timeout: Duration,
    fsync: bool,
    config: Config,
}

impl Default for ObjectCacheBuilder {
    fn default() -> Self {
        ObjectCacheBuilder {
            source: Source::None,
            options: Vec::new(),
            prefix: None,
            local_root: None,
            http: Http::default(),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            fsync: false,
            config: Config {
                clock: Arc::new(SystemClock),
                part_size: DEFAULT_PART_SIZE,
                max_concurrency: 4,
                lease_duration: Duration::from_secs(30),
                poll_min: Duration::from_millis(25),
                poll_max: Duration::from_secs(1),
                resume_attempts: 3,
                lock_timeout: etl_cache_core::backend::DEFAULT_LOCK_TIMEOUT,
            },
        }
    }
}

impl ObjectCacheBuilder {
    /// Default settings; a store or a URL must be given before `build`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Settings from the environment: `ETL_CACHE_URL` (the store, required
    /// unless a store or URL is set later), `ETL_CACHE_PART_SIZE` (bytes),
    /// `ETL_CACHE_MAX_CONCURRENCY`, `ETL_CACHE_LEASE_SECS`. Store credentials
    /// are read from the store's own variables when the cache is built.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming the variable whose value does not parse.
    pub fn from_env() -> Result<Self> {
        use etl_cache_core::backend::env_var as var;
        let mut b = Self::new();
        if let Ok(url) = std::env::var("ETL_CACHE_URL") {
            b = b.url(url);
        }
        if let Some(n) = var("ETL_CACHE_PART_SIZE")? {
            b = b.part_size(n);
        }
        if let Some(n) = var("ETL_CACHE_MAX_CONCURRENCY")? {
            b = b.max_concurrency(n);
        }
        if let Some(s) = var::<u64>("ETL_CACHE_LEASE_SECS")? {
            b = b.lease_duration(Duration::from_secs(s));
        }
        Ok(b)
    }

    /// Use this store (already configured and authenticated).
    pub fn store(mut self, store: Arc<dyn ObjectStore>) -> Self {
        self.source = Source::Store(store);
        self
    }

    /// Open the store this URL names: `s3://bucket/prefix`, `az://container/prefix`,
    /// `gs://bucket/prefix`, `memory:///prefix`. A `file://` URL is refused:
    /// everywhere in etl-cache it names a `DiskCache` directory; an
    /// `ObjectCache` in a local directory is [`ObjectCacheBuilder::local_dir`].
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.source = Source::Url(url.into());
        self
    }

    /// Keep the cache's objects as files in `dir` (created if missing),
    /// through object_store's `LocalFileSystem`: the object layout on a
    /// local disk, for tests and for sharing a directory with tools that
    /// read a bucket's layout. (For a cache on this machine's disk,
    /// `DiskCache` is faster.)
    pub fn local_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.source = Source::Dir(dir.into());
        self
    }

    /// A store setting for a URL, overriding the environment (`aws_endpoint`,
    /// `allow_http`, `azure_storage_account_key`, …); unknown keys fail the build.
    pub fn option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }

    /// Several store settings, as [`ObjectCacheBuilder::option`].
    pub fn options<K: Into<String>, V: Into<String>>(
        mut self,
        options: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.options
            .extend(options.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The folder of the bucket that holds the cache (`a/b`); for a URL it
    /// replaces the URL's path. Every object the cache writes is under it.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// The directory on this machine where the store keeps its objects as
    /// files (the directory the empty object name maps to), for a store that
    /// is a local file system the cache cannot recognize by itself, such as
    /// object_store's `LocalFileSystem` inside a wrapper store.
    ///
    /// A cache opened with `local_dir` or on a plain `LocalFileSystem`
    /// knows its directory without this. On a local directory the last
    /// segment of an entry's name ends with `%` (a file cannot share its
    /// name with the folder of another key), and the cache looks at
    /// what stands at an object's path without following links before it
    /// reads, deletes or lists it: symbolic links, FIFOs, sockets, devices
    /// and directories where an entry should be are not entries (reads fail
    /// with [`crate::ObjectErrorKind::NotAnEntry`], listings and `clear` skip
    /// them and leave them in place), and listings never go through a
    /// linked directory.
    pub fn local_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.local_root = Some(dir.into());
        self
    }

    /// Read the time (expiry, leases) from this clock; for tests.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.config.clock = clock;
        self
    }

    /// Size of multipart upload parts; a stream shorter than one part is
    /// written with a single request. S3 and GCS need at least 5 MiB. Memory
    /// held by `set_stream` is about `part_size * (max_concurrency + 1)`.
    pub fn part_size(mut self, bytes: usize) -> Self {
        self.config.part_size = bytes;
        self
    }

    /// How many parts of one upload may be in flight at once (at least 1).
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.config.max_concurrency = n;
        self
    }

    /// How long a single-flight lease holds before others may take it over;
    /// the holder renews it every third of that while it computes. Between
    /// 100 ms and [`etl_cache_core::MAX_TTL`] (`build` refuses others).
    pub fn lease_duration(mut self, d: Duration) -> Self {
        self.config.lease_duration = d;
        self
    }

    /// How long `get_or_insert_with` (of [`etl_cache_core::CacheExt`]) waits
    /// for another worker's computation before [`Error::LockTimeout`].
    /// Default: 60 s ([`Duration::MAX`] waits without limit).
    /// [`ObjectCache::get_or_insert_with_timeout`] takes its own.
    pub fn lock_timeout(mut self, d: Duration) -> Self {
        self.config.lock_timeout = d;
        self
    }

    /// How often a waiter polls for the result of another's computation:
    /// starting at `min`, doubling up to `max`, with jitter. `build` refuses
    /// a zero `min`.
    pub fn lease_poll_interval(mut self, min: Duration, max: Duration) -> Self {
        self.config.poll_min = min;
        self.config.poll_max = max.max(min);
        self
    }

    /// How many times a read whose body is cut is resumed (a ranged get
    /// pinned to the object's e-tag) before it fails. Stores also retry
    /// internally according to their retry configuration.
    pub fn resume_attempts(mut self, n: u32) -> Self {
        self.config.resume_attempts = n;
        self
    }

    /// Retries of a URL-opened cloud store. Default: up to 5 retries with
    /// exponential backoff from 100 ms to 5 s, for at most 30 s (see
    /// [`crate::default_retry`]).
    #[cfg(any(feature = "aws", feature = "azure", feature = "gcp"))]
    pub fn retry(mut self, retry: object_store::RetryConfig) -> Self {
        self.http.retry = Some(retry);
        self
    }

    /// HTTP client settings of a URL-opened cloud store; replaces the
    /// defaults and the client settings of the environment. Default: 5 s
    /// connect timeout, no whole-request timeout (see
    /// [`crate::default_client_options`]); a stalled request is cut by
    /// [`ObjectCacheBuilder::idle_timeout`] whatever these say. Options given
    /// with [`ObjectCacheBuilder::option`] still apply on top.
    #[cfg(any(feature = "aws", feature = "azure", feature = "gcp"))]
    pub fn client_options(mut self, options: object_store::ClientOptions) -> Self {
        self.http.client = Some(options);
        self
    }

    /// How long a request to a network store may make no progress before it
    /// fails with [`crate::ObjectErrorKind::Timeout`]: the wait for the
    /// answer to a get, head, delete or listing page, and the gap between two
    /// chunks of a body being read. The answer to a put or an upload part may
    /// take this plus the time its body needs at
    /// [`crate::MIN_UPLOAD_RATE`], so large uploads are not cut; there is no
    /// limit on a whole transfer. Default: 30 s
    /// ([`crate::DEFAULT_IDLE_TIMEOUT`]); [`Duration::MAX`] turns it off.
    ///
    /// It applies to the cloud stores (`s3://`, `az://`, `gs://`) and to
    /// injected stores other than a plain `LocalFileSystem` or `InMemory`,
    /// on top of the store's own connect timeout.
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    /// Whether an entry written to a local directory (a `local_dir` or a
    /// plain `LocalFileSystem`) is synced to disk, the file and then its
    /// directory, before the write returns, so it survives a power loss.
    /// Default: `false`, as object_store's `LocalFileSystem` itself, which
    /// never syncs: the entry survives a crash of the process, and the
    /// operating system writes it out later.
    pub fn fsync(mut self, on: bool) -> Self {
        self.fsync = on;
        self
    }

    /// Opens the store (for a URL) and checks the settings. Nothing is
    /// sent to the store: a missing bucket or bad credentials show on the
    /// first operation, as an [`crate::ObjectError`].
    ///
    /// # Errors
    ///
    /// [`Error::Open`] for a bad URL, a scheme whose feature is off, unknown
    /// options or invalid store settings; [`Error::InvalidInput`] for an
    /// out-of-range setting.
    pub fn build(self) -> Result<ObjectCache> {
        let opened = match self.source {
            Source::None => {
                return Err(Error::InvalidInput {
                    message: "an ObjectCache needs a store or a URL".into(),
                });
            }
            Source::Store(store) => {
                let (name, bucket) = store::describe(&*store);
                let local_root = store::local_root(&*store);
                store::Opened {
                    store,
                    prefix: Path::ROOT,
                    name,
                    bucket,
                    local_root,
                }
            }
            Source::Url(url) => store::open_url(&url, &self.options, &self.http)?,
            Source::Dir(dir) => store::open_dir(&dir, &self.options)?,
        };
        let prefix = match &self.prefix {
            Some(p) => Path::parse(p).map_err(|e| Error::InvalidInput {
                message: format!("invalid prefix {p:?}: {e}"),
            })?,
            None => opened.prefix,
        };
        if prefix.as_ref().len() > 512 {
            return Err(Error::InvalidInput {
                message: "the prefix must be at most 512 bytes".into(),
            });
        }
        let c = &self.config;
        let min_part = if matches!(opened.name, "s3" | "gcs") {
            MIN_CLOUD_PART_SIZE
        } else {
            1024
        };
        if c.part_size < min_part {
            return Err(Error::InvalidInput {
                message: format!(
                    "part_size {} is below the {min_part} bytes {} needs",
                    c.part_size, opened.name
                ),
            });
        }
        if c.max_concurrency == 0 {
            return Err(Error::InvalidInput {
                message: "max_concurrency must be at least 1".into(),
            });
        }
        if c.lease_duration < Duration::from_millis(100) {
            return Err(Error::InvalidInput {
                message: "lease_duration must be at least 100 ms".into(),
            });
        }
        // A lease's expiry is written as nanoseconds since the epoch: any
        // duration within the longest TTL fits, whatever the clock says.
        if c.lease_duration > MAX_TTL {
            return Err(Error::InvalidInput {
                message: format!(
                    "lease_duration of {} s is longer than the largest supported, {} s",
                    c.lease_duration.as_secs(),
                    MAX_TTL.as_secs()
                ),
            });
        }
        if self.idle_timeout.is_zero() {
            return Err(Error::InvalidInput {
                message: "the idle timeout must be above zero".into(),
            });
        }
        if c.poll_min.is_zero() {
            return Err(Error::InvalidInput {
                message: "the lease poll interval must be above zero".into(),
            });
        }
        // Only a store known to be a plain LocalFileSystem is written to
        // directly; a wrapper store keeps its own writes.
        let local_writes = opened
            .local_root
            .as_deref()
            .and_then(|root| LocalWrites::new(root, self.fsync));
        let local_root = self.local_root.or(opened.local_root);
        let file_store = opened.name == "local" || local_root.is_some();
        let local = local_root.map(|root| LocalFiles::new(root, &prefix));
        // Stores that talk to a network get the idle timeout, which
        // object_store's HTTP client does not have; local files and memory
        // do not stall that way.
        let store: Arc<dyn ObjectStore> = if file_store || opened.name == "memory" {
            opened.store
        } else {
            Arc::new(Deadline::new(opened.store, self.idle_timeout))
        };
        Ok(ObjectCache::from_inner(Inner::new(
            store,
            Layout::new(prefix, file_store),
            opened.name,
            opened.bucket,
            self.config,
            local,
            local_writes,
        )))
    }
}

/// The constructors of [`ObjectCache`]: a builder, or the defaults.
impl ObjectCache {
    /// A builder with default settings.
    pub fn builder() -> ObjectCacheBuilder {
        ObjectCacheBuilder::new()
    }

    /// A cache under `prefix` of an injected store, with default settings.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an invalid prefix.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Result<ObjectCache> {
        ObjectCacheBuilder::new()
            .store(store)
            .prefix(prefix)
            .build()
    }

    /// A cache whose objects are files in `dir` (see
    /// [`ObjectCacheBuilder::local_dir`]).
    ///
    /// # Errors
    ///
    /// As [`ObjectCacheBuilder::build`].
    pub fn local_dir(dir: impl Into<PathBuf>) -> Result<ObjectCache> {
        ObjectCacheBuilder::new().local_dir(dir).build()
    }

    /// A cache on the store a URL names, configured from the environment.
    ///
    /// # Errors
    ///
    /// As [`ObjectCacheBuilder::build`].
    pub fn from_url(url: &str) -> Result<ObjectCache> {
        ObjectCacheBuilder::new().url(url).build()
    }

    /// A cache on the store a URL names, with store options over the environment.
    ///
    /// # Errors
    ///
    /// As [`ObjectCacheBuilder::build`].
    pub fn from_url_opts<K: Into<String>, V: Into<String>>(
        url: &str,
        options: impl IntoIterator<Item = (K, V)>,
    ) -> Result<ObjectCache> {
        ObjectCacheBuilder::new().url(url).options(options).build()
    }
}
