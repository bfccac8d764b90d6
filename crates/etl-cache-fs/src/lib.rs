//! `DiskCache`: the etl-cache contract on a local directory.
//!
//! - **Atomic and crash safe.** Each entry is one file, written to a uniquely
//!   named temp file and renamed into place: a reader sees the old value, the
//!   new one, or none, even if a writer is killed. With `durable(true)` the file
//!   and its directory are fsynced, so entries survive power loss too.
//! - **Checked.** Every entry carries crc32c checksums of its header, payload
//!   and trailer. A corrupt entry is reported as [`etl_cache_core::Error::Corrupt`]
//!   and removed; wrong bytes are never returned.
//! - **LRU by count and bytes**, amortized (no directory scan per set), with
//!   limits that hold across processes sharing the root.
//! - **Cross-process locks** per key through the OS, with a timeout; the
//!   shared counters' lock is waited for with the same timeout.
//! - **Safe names.** File names are the SHA-256 of the key: no key reaches
//!   outside the root. Symbolic links inside the root are never followed.
//! - **Streams off the runtime.** `set_stream` and `get_stream` do their file
//!   I/O on blocking-pool threads and hold a few chunks at a time. An
//!   uncompressed entry of 4 MiB or more is read by two threads at once
//!   (each reads and checksums every other chunk) where the machine has two
//!   cores or more; dropping the stream stops them and closes the file.
//!
//! You probably want the `etl-cache` facade crate, which re-exports this one.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> etl_cache_core::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! use etl_cache_core::{Cache, CacheExt, SetOptions};
//! use etl_cache_fs::DiskCache;
//!
//! let cache = DiskCache::builder().root(dir.path()).max_entries(1000).build().await?;
//! cache.set_json("job_123_stats", &serde_json::json!({"records_processed": 1042}), SetOptions::new()).await?;
//! let stats: Option<serde_json::Value> = cache.get_json("job_123_stats").await?;
//! assert_eq!(stats.unwrap()["records_processed"], 1042);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod builder;
mod cache;
mod cancel;
mod dirs;
mod evict;
#[cfg(feature = "fault-injection")]
pub mod fault;
#[cfg(not(feature = "fault-injection"))]
mod fault;
mod layout;
mod lock;
mod read;
mod spare;
mod stream;
mod sys;
mod usage;
mod write;

pub use crate::builder::{DEFAULT_ROOT, DiskCacheBuilder};
pub use crate::cache::DiskCache;
pub use crate::layout::LAYOUT_VERSION;
