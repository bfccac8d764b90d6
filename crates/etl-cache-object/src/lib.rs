//! `ObjectCache`: the etl-cache contract on any object store — Amazon S3 and
//! S3-compatible stores (feature `aws`), Azure Blob Storage (`azure`), Google
//! Cloud Storage (`gcp`), a local directory and memory (always).
//!
//! - **Same contract** as the disk cache: text, bytes and JSON round-trip
//!   exactly, misses are `Ok(None)`, writes are atomic, entries are checked
//!   (crc32c) and corrupt ones reported, expired ones are invisible.
//! - **Streams hand out checked bytes only**: entries are written in blocks
//!   of 1 MiB, each with its checksum (entry format 2), and a stream checks
//!   each block before handing it out. Entries of format 1 (older versions)
//!   are still read, checked whole before they stream.
//! - **Reads never delete**: with no conditional delete in `object_store`,
//!   a read could not remove only the version it judged, so expired and
//!   corrupt entries stay until `purge_expired` (which re-checks each
//!   object's version just before deleting it, leaving a window of one
//!   round trip) or a bucket lifecycle rule removes them.
//! - **Folders stay folders**: the key `my_folder/financial_data` under the
//!   prefix `etl` is the object `etl/my_folder/financial_data`.
//! - **Metadata in the object**: each object starts with the entry header
//!   (kind, codec, expiry, key) and ends with its trailer (lengths,
//!   checksums), so it works on every store.
//! - **Streams** go up as multipart uploads in bounded memory and come down
//!   as they arrive, gzip or zstd on the fly; a cut body is resumed with a
//!   ranged get pinned to the object's e-tag, or fails — never short.
//! - **Single flight** across hosts with lease objects:
//!   `get_or_insert_with` (of [`etl_cache_core::CacheExt`]) and
//!   [`ObjectCache::get_or_insert_with_timeout`].
//! - **Errors** name the store, bucket, key and object, and tell a missing
//!   bucket, rejected credentials, an unreachable endpoint and a timeout
//!   apart ([`ObjectError`]).
//!
//! You probably want the `etl-cache` facade crate (features `object`, `aws`,
//! `azure`, `gcp`), which re-exports this one.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> etl_cache_core::Result<()> {
//! use std::sync::Arc;
//! use etl_cache_core::{Cache, CacheExt, SetOptions};
//! use etl_cache_object::ObjectCache;
//! use object_store::memory::InMemory;
//!
//! // Inject any configured store (here in memory; `ObjectCache::from_url`
//! // opens `s3://bucket/prefix`, `az://…`, `gs://…` too; a local
//! // directory with `ObjectCache::local_dir`).
//! let cache = ObjectCache::new(Arc::new(InMemory::new()), "etl/cache")?;
//! cache
//!     .set_text("my_folder/financial_data", "<xml>…</xml>",
//!         SetOptions::new().ttl_seconds(3600).compress(true))
//!     .await?;
//! assert_eq!(cache.get_text("my_folder/financial_data").await?.as_deref(), Some("<xml>…</xml>"));
//! assert_eq!(cache.object_path("my_folder/financial_data")?.as_ref(),
//!            "etl/cache/my_folder/financial_data");
//! # Ok(()) }
//! ```
// On docs.rs, items that a feature gates carry a badge naming it.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod body;
mod builder;
mod cache;
mod checked;
mod chunks;
mod deadline;
mod error;
mod inner;
mod layout;
mod lease;
mod local;
mod read;
mod staged;
mod store;
mod write;

pub use crate::builder::{DEFAULT_PART_SIZE, MIN_CLOUD_PART_SIZE, ObjectCacheBuilder};
pub use crate::cache::ObjectCache;
pub use crate::deadline::{DEFAULT_IDLE_TIMEOUT, MIN_UPLOAD_RATE};
pub use crate::error::{ObjectError, ObjectErrorKind};
#[cfg(any(feature = "aws", feature = "azure", feature = "gcp"))]
pub use crate::store::{default_client_options, default_retry};

/// The `object_store` crate this cache is built on, for configuring stores.
pub use object_store;
