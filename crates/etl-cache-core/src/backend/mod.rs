//! For authors of backends: what every backend of this workspace builds an
//! entry, a write and a read from. A cache user needs none of it.
//!
//! - [`format`](mod@format): the self-describing entry format (header, payload,
//!   trailer) and how [`crate::EntryMeta`] is read from it;
//! - [`blocks`]: payloads framed in checksummed blocks (format 2);
//! - [`codec`]: compression and checksums of payloads, whole and streamed;
//! - [`obs`]: the tracing span and metrics of each operation;
//! - [`Rechunker`]: byte pieces cut into the chunk size a reader asked for;
//! - [`SingleFlight`]: the single-flight sequence of `get_or_insert_with`,
//!   with one timeout ([`DEFAULT_LOCK_TIMEOUT`] unless set); [`KeyedMutex`]
//!   beneath it, one async lock per key within a process;
//! - [`Counters`]: the hit, miss and byte counters behind [`crate::Stats`];
//! - [`env_var`], [`check_range`], [`clamp_range`]: helpers every backend
//!   needs alike.
//!
//! Implementing [`crate::Cache`] takes `#[async_trait]`, re-exported here.

pub mod blocks;
pub mod codec;
pub mod format;
pub mod obs;
mod rechunk;

pub use crate::cache::{check_range, clamp_range};
pub use crate::options::env_var;
pub use crate::single_flight::{
    DEFAULT_LOCK_TIMEOUT, KeyedGuard, KeyedMutex, SingleFlight, init_failed,
};
pub use crate::stats::Counters;
pub use async_trait::async_trait;
pub use rechunk::Rechunker;
