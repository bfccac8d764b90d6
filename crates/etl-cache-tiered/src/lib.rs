//! `TieredCache`: a memory tier (moka, weighed by bytes) ahead of any
//! [`etl_cache_core::Cache`], and tiers chained: memory → disk → object store.
//!
//! - **Reads** go down the tiers and promote what they find into the tiers
//!   above (and into memory when small enough).
//! - **Writes** go through to every tier, the slowest first, so an upper tier
//!   never holds a value the tiers below lack.
//! - **Deletes and clears** invalidate every tier.
//! - **Expiry** is honoured in memory: an entry is never served after its TTL.
//! - **Big entries** (above `max_memory_entry`) bypass memory; `get_stream`
//!   streams them from below without buffering.
//! - **Single flight:** `get_or_insert_with` coordinates through the last
//!   tier (a DiskCache coordinates processes on one machine), then fills the
//!   tiers above.
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
mod tiered;

pub use crate::builder::TieredCacheBuilder;
pub use crate::tiered::{Served, TierCounts, TieredCache};
