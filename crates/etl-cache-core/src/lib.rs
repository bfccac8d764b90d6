//! The etl-cache contract: one object-safe async [`Cache`] trait for every
//! backend, the values it stores, the options of a write, the metadata of an
//! entry, the errors, an in-memory cache, and (feature `testing`) the shared
//! contract suite. What only a backend needs (the entry format, the codecs,
//! the payload blocks, single flight, counters, observability) is in
//! [`backend`].
//!
//! You probably want the `etl-cache` facade crate, which re-exports this one
//! with the backends.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> etl_cache_core::Result<()> {
//! use std::sync::Arc;
//! use etl_cache_core::{Cache, CacheExt, MemoryCache, SetOptions, Value};
//!
//! let cache: Arc<dyn Cache> = Arc::new(MemoryCache::new());
//! cache.set("payload_123", "<xml>...</xml>".into(), SetOptions::new().compress(true)).await?;
//! assert_eq!(cache.get_text("payload_123").await?.as_deref(), Some("<xml>...</xml>"));
//! cache.delete("payload_123").await?;
//! assert_eq!(cache.get("payload_123").await?, None);
//! # Ok(()) }
//! ```
// On docs.rs, items that a feature gates carry a badge naming it.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod backend;
mod cache;
mod clock;
mod deep_json;
mod error;
mod ext;
pub mod io;
mod key;
mod memory;
mod meta;
mod options;
mod removal;
mod single_flight;
mod stats;
#[cfg(feature = "testing")]
pub mod testing;
mod value;

pub use crate::backend::blocks::BlockSize;
pub use crate::cache::{
    BoxError, ByteStream, Cache, DEFAULT_CHUNK_SIZE, DynCache, GetStream, HandleId, InitFuture,
    stream_read_error,
};
pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::error::{Error, Result};
pub use crate::ext::CacheExt;
pub use crate::io::{CacheIoExt, CacheReader, CacheWriter, WRITE_CHUNK_SIZE};
pub use crate::key::{MAX_KEY_LEN, validate_key};
pub use crate::memory::MemoryCache;
pub use crate::meta::EntryMeta;
pub use crate::options::{Codec, Compression, MAX_TTL, MIN_CHECK_BLOCK, SetOptions};
pub use crate::removal::{EvictionLimit, Removal, RemovalCause};
pub use crate::stats::Stats;
pub use crate::value::{Kind, MAX_JSON_DEPTH, MAX_JSON_READ_DEPTH, Value};

#[doc(hidden)]
pub use async_trait::async_trait;
