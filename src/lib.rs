//! # etl-cache
//!
//! A persistent, disk-backed LRU cache for data pipelines. Cache the output of
//! expensive extract and transform steps; when a later step fails, the rerun
//! reads the transformed state back and skips the work.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> etl_cache::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! use std::time::Duration;
//! use etl_cache::{CacheExt, DiskCache, SetOptions};
//!
//! let cache = DiskCache::builder().root(dir.path()).max_entries(1000).build().await?;
//! cache.set_text("financial_run_001", "<dataset>…</dataset>",
//!     SetOptions::new().ttl(Duration::from_secs(3600)).compress(true)).await?;
//! let xml = cache.get_text("financial_run_001").await?;
//! assert_eq!(xml.as_deref(), Some("<dataset>…</dataset>"));
//! # Ok(()) }
//! ```
//!
//! Any cache can also be opened from a URL with [`open`]: a directory path,
//! `file:///abs/path`, `memory://`, and (with the `aws`, `gcp` or `azure`
//! features) `s3://`, `gs://`, `az://`. The `etl-cache` command line (package
//! `etl-cache-cli`, `cargo install --path crates/etl-cache-cli`) inspects,
//! fetches, seeds and cleans any of them.
// On docs.rs, items that a feature gates carry a badge naming it.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod open;

// What a cache user needs, named one by one: the contract, its values,
// options, metadata and errors, and the in-memory cache. What a backend
// author needs is in `backend`.
#[doc(hidden)]
pub use etl_cache_core::async_trait;
pub use etl_cache_core::backend;
pub use etl_cache_core::io;
pub use etl_cache_core::{
    BlockSize, BoxError, ByteStream, Cache, CacheExt, CacheIoExt, CacheReader, CacheWriter, Clock,
    Codec, Compression, DEFAULT_CHUNK_SIZE, DynCache, EntryMeta, Error, EvictionLimit, GetStream,
    HandleId, InitFuture, Kind, MAX_JSON_DEPTH, MAX_JSON_READ_DEPTH, MAX_KEY_LEN, MAX_TTL,
    MIN_CHECK_BLOCK, ManualClock, MemoryCache, Removal, RemovalCause, Result, SetOptions, Stats,
    SystemClock, Value, WRITE_CHUNK_SIZE, stream_read_error, validate_key,
};

pub use crate::open::{Location, open};

#[cfg(feature = "fs")]
pub use etl_cache_fs::{DiskCache, DiskCacheBuilder};

/// The local disk backend.
#[cfg(feature = "fs")]
pub use etl_cache_fs as fs;

#[cfg(feature = "object")]
pub use etl_cache_object::{ObjectCache, ObjectCacheBuilder};

/// The object store backend: S3 (`aws`), Azure (`azure`), GCS (`gcp`), local files, memory.
#[cfg(feature = "object")]
pub use etl_cache_object as object;

#[cfg(feature = "tiered")]
pub use etl_cache_tiered::{Served, TieredCache, TieredCacheBuilder};

/// The memory tier and chained tiers.
#[cfg(feature = "tiered")]
pub use etl_cache_tiered as tiered;

#[cfg(feature = "store")]
pub use etl_cache_store::{CachedStore, CachedStoreBuilder};

/// `CachedStore`: an `ObjectStore` that reads S3, Azure or GCS through a cache.
#[cfg(feature = "store")]
pub use etl_cache_store as store;

#[cfg(feature = "arrow")]
pub use etl_cache_arrow::{ArrowCacheExt, ArrowOptions};

/// Arrow record batches as values, stored as Arrow IPC files.
#[cfg(feature = "arrow")]
pub use etl_cache_arrow as arrow;

#[cfg(feature = "steps")]
pub use etl_cache_steps::{Explanation, Step, StepExt};

/// Steps: keys digested from what a result depends on, manifests, explain, time saved.
#[cfg(feature = "steps")]
pub use etl_cache_steps as steps;

/// The README's examples, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
