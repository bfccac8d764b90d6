//! `CachedStore`: an [`object_store::ObjectStore`] that reads through an
//! etl-cache [`Cache`](etl_cache_core::Cache), so that DataFusion, Polars,
//! delta-rs or anything else that reads through an `ObjectStore` reads each
//! byte of S3, Azure or GCS once, across runs and processes.
//!
//! ```no_run
//! use std::sync::Arc;
//! use etl_cache_store::{CachedStore, Revalidate};
//! use object_store::{ObjectStore, ObjectStoreExt, memory::InMemory, path::Path};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Any store: S3, Azure, GCS, a local directory.
//! let s3: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
//! let store = CachedStore::builder(s3)
//!     .dir("/var/cache/lake")            // a DiskCache here (the default cache)
//!     .revalidate(Revalidate::Never)     // lake files are never rewritten in place
//!     .build()
//!     .await?;
//! let store: Arc<dyn ObjectStore> = Arc::new(store);
//! // Hand `store` to DataFusion (`register_object_store`), delta-rs, ...
//! let footer = store.get_range(&Path::from("t/part-0.parquet"), 0..8).await?;
//! # Ok(()) }
//! ```
//!
//! # How it reads
//!
//! Objects are cut into aligned blocks (8 MiB by default, 1 to 64 MiB with
//! [`CachedStoreBuilder::block_size`]). A read takes each block it needs
//! from the cache, or from the inner store: the missing blocks that follow
//! each other are asked for in one ranged request, and kept as they
//! arrive. A whole-object `get` is streamed block by block, with about one
//! block in memory. Reads in one process that need a block another is
//! fetching wait for it rather than asking again ([`StoreStats::joins`]).
//!
//! Reads in other processes (or through other handles on the same
//! directory) wait too: a read about to fetch a run of missing blocks
//! first takes the cache's lock on the run's first block (the cache's own
//! single flight, `get_or_insert`, which a `DiskCache` holds across
//! processes with an OS lock), and holds it until the run ends. A read
//! that waited for it then looks at the cache again and fetches only what
//! is still missing: nothing, unless the run before failed, was dropped,
//! or was not kept. The lock costs a few file operations per run fetched
//! (measured at 0.2 to 0.3 ms on a busy machine; nothing for a read served
//! from the cache). A lock that fails or times out is logged and counted
//! ([`StoreStats::cache_errors`]), and the read fetches without it. Runs
//! coordinate when they start at the same block: two reads of the same
//! range, or of whole objects, always do. The lock is held until the run
//! ends, so a stream read slowly makes the others wait as long, up to the
//! cache's lock timeout (60 s for a `DiskCache` by default), after which
//! they fetch on their own. Turn it off with
//! [`CachedStoreBuilder::coordinate_processes`].
//!
//! # Never stale, never mixed
//!
//! A block is kept under the object's path and its identity: the e-tag, or
//! the version, or the last-modified time and size where the store has
//! neither. A block missing from the cache is fetched on condition that
//! the object is still the version its other blocks came from (`If-Match`),
//! so a read never mixes two versions; a changed object is read again from
//! its new version, and its old blocks are never served. When a change is
//! seen depends on [`Revalidate`]: at every call by default; after a given
//! age; or never (for data that is never rewritten in place, such as a
//! lake's Parquet files: a warm read then sends no request at all). Writes,
//! deletes, copies and renames made through the `CachedStore` are seen at
//! once, whatever the setting.
//!
//! # When the cache fails
//!
//! A read never fails because of the cache: a cache that cannot read, keep
//! or find a block (disk full, a corrupt entry, a lock timeout) is logged
//! with `tracing` and counted ([`StoreStats::cache_errors`]), and the read
//! is served from the inner store. Errors of the inner store reach the
//! caller with their kind unchanged (`NotFound` stays `NotFound`).
//!
//! # Limits
//!
//! - Object attributes (content type, cache control, user metadata) are
//!   kept with the object's metadata, as the inner store answered the last
//!   request that checked the object, and come back with reads served from
//!   the cache. Attribute kinds object_store adds later are not kept.
//! - A read of a given version (`GetOptions::version`) is passed through,
//!   uncached.
//! - [`Admission::SecondRead`] remembers first reads in memory, per process.
//! - The object_store major version must match the caller's: this crate uses
//!   object_store 0.13, as DataFusion 55 and deltalake 1.1 do.

#![forbid(unsafe_code)]

mod builder;
mod config;
mod engine;
mod meta;
mod reader;
mod stats;
mod store;

pub use builder::CachedStoreBuilder;
pub use config::{
    Admission, DEFAULT_BLOCK_SIZE, DEFAULT_DIR, DEFAULT_KEEP_TIMEOUT, MAX_BLOCK_SIZE,
    MIN_BLOCK_SIZE, Revalidate,
};
pub use object_store;
pub use stats::StoreStats;
pub use store::CachedStore;
