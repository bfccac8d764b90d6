//! `DiskCache`: the etl-cache contract on a local directory.
//!
//! - **Atomic and crash safe.** Each entry is one file, written to a uniquely
//!   named temp file and renamed into place: a reader sees the old value, the
//!   new one, or none, even if a writer is killed. With `durable(true)` the file
//!   and its directory are fsynced, so entries survive power loss too.
//! - **Checked, before any byte goes out.** Entries are written in entry
//!   format 2 (`crates/etl-cache-core/FORMAT.md`): a header, the payload in
//!   blocks of 1 MiB each followed by its crc32c (bound to the entry and the
//!   block's place), and a trailer. A whole read checks every block before
//!   it decodes; a stream checks each block before it hands out any of its
//!   bytes, and the last block only once the list of block checksums matched
//!   the trailer. A corrupt entry is reported as
//!   [`etl_cache_core::Error::Corrupt`] (a stream ends with an `InvalidData`
//!   error carrying it, after the checked blocks before the damage) and
//!   removed; wrong bytes are never returned.
//! - **Reads entries of format 1** (written by earlier versions: one checksum
//!   over the whole payload). A whole read checks it as before. A stream of
//!   one larger than 64 KiB reads its payload through and checks it first,
//!   then streams it: such entries are read twice (a smaller one is read
//!   whole once). Rewriting the key writes it in format 2.
//! - **LRU by count and bytes**, amortized (no directory scan per set), with
//!   limits that hold across processes sharing the root.
//! - **Cross-process locks** per key through the OS, with a timeout; the
//!   shared counters' lock is waited for with the same timeout.
//! - **Safe names.** File names are the SHA-256 of the key: no key reaches
//!   outside the root. Symbolic links inside the root are never followed.
//! - **Streams off the runtime.** `set_stream` and `get_stream` do their file
//!   I/O on blocking-pool threads and hold a few chunks (reading: a few
//!   blocks) at a time. An uncompressed entry of 4 MiB or more is read by two
//!   threads at once (each reads and checks every other block) where the
//!   machine has two cores or more; the caller's chunks are cut from checked
//!   blocks. Dropping the stream stops them and closes the file.
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
// On docs.rs, items that a feature gates carry a badge naming it.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod blocks;
mod builder;
mod cache;
mod cancel;
mod check;
mod dirs;
mod evict;
#[cfg(feature = "fault-injection")]
pub mod fault;
#[cfg(not(feature = "fault-injection"))]
mod fault;
mod inner;
mod journal;
mod layout;
mod lock;
mod look;
mod open;
mod publish;
mod range;
mod read;
mod remove;
mod spare;
mod stream;
mod sys;
mod usage;
mod victims;
mod write;

pub use crate::builder::{DEFAULT_ROOT, DiskCacheBuilder};
pub use crate::cache::DiskCache;
pub use crate::layout::LAYOUT_VERSION;
