//! `TieredCache`: a memory tier (moka, weighed by bytes) ahead of any
//! [`etl_cache_core::Cache`], and tiers chained: memory → disk → object store.
//!
//! The **last tier is the source of truth**; memory and the tiers above the
//! last are caches of it. A write succeeds or fails with the last tier, and
//! no tier above it ever serves a value the last tier did not take.
//!
//! - **Reads** go down the tiers and promote what they find into the tiers
//!   above (and into memory when small enough).
//! - **Writes** (`set`, `set_stream`, the value computed by
//!   `get_or_insert_with`) take three steps:
//!   1. the key is invalidated in memory and in every tier above the last.
//!      If that fails, the write returns the error before writing anything:
//!      the previous value is intact (in the last tier; reads fall through
//!      to it);
//!   2. the last tier takes the value. If it fails, the write returns its
//!      error: the previous value is intact there, and nothing stale is left
//!      above it;
//!   3. the tiers above are filled, best effort. A tier that refuses the
//!      value (for example `TooLarge` from a `DiskCache` with a smaller
//!      `max_bytes`, or an I/O error) is left without the key (it is deleted
//!      there, and a warning is logged with `tracing`); the write still
//!      returns `Ok` and reads of the key fall through to the tiers below.
//!
//!   `set_stream` reads its stream once and feeds every tier at the same
//!   time, a few chunks at a time; the tiers above see the end of their
//!   stream only once the last tier has published the entry, so they publish
//!   nothing when it fails. Streams do not fill memory.
//! - **Deletes and clears** invalidate every tier.
//! - **Promotions never shadow a write.** A read that finds the key below
//!   copies it upwards only if no `set`, `delete` or `clear` of this handle
//!   (or its clones) began or ended on the key since the read began: once
//!   a write has returned, no read of this handle returns what it replaced.
//! - **Other handles and processes:** memory, and the tiers above the last,
//!   belong to this handle. A write made through another handle or another
//!   process reaches the last tier, and this handle serves it once its own
//!   copy is gone: evicted, expired (at the entry's TTL), or replaced by a
//!   write through this handle. Give entries a TTL, or write through one
//!   handle, where that matters. An upper tier shared by several handles
//!   (two processes with one local DiskCache over one bucket) is no
//!   exception: a promotion by one handle can put an older value there just
//!   after another handle's write, and it stays until evicted or expired.
//! - **Expiry**: no tier serves an entry after the expiry its write
//!   returned, as read on the cache's clock (`TieredCacheBuilder::clock`).
//!   Copies in memory and in the tiers above the last keep the entry's
//!   expiry (a tier is given it as [`etl_cache_core::SetOptions::expires_by`],
//!   so time spent before it writes its copy does not extend it), and a copy
//!   found past it is a miss there, whatever the tier's own clock says.
//! - **Memory is weighed by what it holds:** the logical bytes of each entry
//!   (JSON as its text, parsed on each hit), its key and a fixed overhead.
//! - **Big entries** (above `max_memory_entry`) bypass memory; `get_stream`
//!   streams them from below without buffering.
//! - **Single flight:** `get_or_insert_with` coordinates through the last
//!   tier (a DiskCache coordinates processes on one machine), then fills the
//!   tiers above with the entry read back from the last tier (value and
//!   metadata together), if it still holds the value returned.
//! - **Listing and stats** come from the last tier.
//!
//! You probably want the `etl-cache` facade crate, which re-exports this one.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> etl_cache_core::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! use std::sync::Arc;
//! use etl_cache_core::{Cache, CacheExt, SetOptions};
//! use etl_cache_fs::DiskCache;
//! use etl_cache_tiered::{Served, TieredCache};
//!
//! let disk = Arc::new(DiskCache::open(dir.path()).await?);
//! let cache = TieredCache::builder().tier(disk).build()?;
//! cache.set_text("ref/countries", "DE,FR,IT", SetOptions::new()).await?;
//! let (_, served) = cache.get_traced("ref/countries").await?.unwrap();
//! assert_eq!(served, Served::Memory);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod builder;
mod epochs;
mod memory;
mod tiered;
mod tiers;

pub use crate::builder::TieredCacheBuilder;
pub use crate::tiered::{TierCounts, TieredCache};
pub use crate::tiers::Served;
