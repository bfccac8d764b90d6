//! Arrow record batches as etl-cache values.
//!
//! [`ArrowCacheExt`] adds to every [`etl_cache_core::Cache`] (DiskCache,
//! ObjectCache, TieredCache, MemoryCache, `dyn Cache`):
//!
//! - [`ArrowCacheExt::set_batches`]: stores a stream of record batches as
//!   they arrive, holding at most a couple of encoded batches in memory;
//! - [`ArrowCacheExt::get_batches`]: the schema, then the batches, decoded
//!   one at a time as the entry is read;
//! - [`ArrowCacheExt::get_or_compute_batches`]: single flight, through the
//!   backend's `get_or_insert_with`.
//!
//! An entry holds an Arrow IPC **file** (magic, schema, dictionaries,
//! batches, footer) with the IPC format's body compression (zstd by
//! default, lz4 or none: [`IpcCompression`]), stored with kind
//! [`etl_cache_core::Kind::Arrow`] and without the cache's own compression.
//! The payload as stored, as `etl-cache get KEY -o out.arrow` writes it,
//! opens with `pyarrow.ipc.open_file`, `polars.read_ipc` / `scan_ipc` and
//! DataFusion's arrow format. Typed reads of it as text or JSON are a
//! [`etl_cache_core::Error::KindMismatch`] naming `arrow`.
//!
//! A file stored from elsewhere (pyarrow, Polars, arrow's own writer) with
//! kind arrow reads back too. It is read front to back and its footer is
//! checked against what was read: every batch and dictionary where the
//! footer says, in its order (readers that go by the footer would see other
//! rows otherwise). A footer may carry up to 16 MiB of a writer's custom
//! metadata; a file with more is refused with an error naming the key.
//!
//! The arrow crates are version 59, the one DataFusion 55.2 uses, so the
//! batches a DataFusion pipeline produces are stored as they are.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! use std::sync::Arc;
//! use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
//! use arrow_schema::{DataType, Field, Schema};
//! use etl_cache_arrow::{ArrowCacheExt, ArrowOptions};
//! use futures::TryStreamExt;
//!
//! let cache = etl_cache_fs::DiskCache::builder().root(dir.path()).build().await?;
//! let schema = Arc::new(Schema::new(vec![
//!     Field::new("id", DataType::Int64, false),
//!     Field::new("city", DataType::Utf8, true),
//! ]));
//! let batch = RecordBatch::try_new(schema.clone(), vec![
//!     Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
//!     Arc::new(StringArray::from(vec![Some("Lyon"), None])),
//! ])?;
//! let batches = futures::stream::iter(vec![Ok::<_, arrow_schema::ArrowError>(batch.clone())]);
//! cache.set_batches("cities", schema.clone(), batches, ArrowOptions::new().ttl_seconds(3600)).await?;
//!
//! let (read_schema, stream) = cache.get_batches("cities").await?.expect("just stored");
//! assert_eq!(read_schema, schema);
//! assert_eq!(stream.try_collect::<Vec<_>>().await?, vec![batch]);
//! # Ok(()) }
//! ```
//!
//! You probably want the `etl-cache` facade (feature `arrow`), which
//! re-exports this crate as `etl_cache::arrow`.
// On docs.rs, items that a feature gates carry a badge naming it.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// The README's example, compiled as a doc test so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[cfg(feature = "datafusion")]
pub mod datafusion;
mod ext;
mod options;
mod read;
mod write;

pub use crate::ext::ArrowCacheExt;
pub use crate::options::{ArrowOptions, IpcCompression};
pub use crate::read::BatchStream;
