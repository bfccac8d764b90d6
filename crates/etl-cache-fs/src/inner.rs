//! The state one `DiskCache` handle shares between its operations, and the
//! hop of blocking work to Tokio's pool. Reads, writes, streams and eviction
//! each add their methods to [`Inner`] in their own module.

use std::fs::File;
use std::sync::Arc;

use etl_cache_core::backend::{Counters, SingleFlight};

use crate::builder::Config;
use crate::dirs::Dirs;
use crate::journal::Journal;
use crate::layout::Layout;
use crate::spare::Spares;
use crate::usage::Usage;
use crate::victims::Victims;

/// Chunks in flight between a stream and its writer or reader thread.
pub(crate) const CHANNEL_CHUNKS: usize = 4;

/// What one handle's operations share: where the cache is, its settings,
/// counters, in-process single flight, spare files and victim queue.
pub(crate) struct Inner {
    pub layout: Layout,
    /// The cache's directories, open (see `dirs`).
    pub dirs: Arc<Dirs>,
    pub config: Config,
    pub counters: Counters,
    pub usage: Usage,
    /// Coalesces `get_or_insert_with` callers of this process per key.
    pub flights: SingleFlight,
    /// This handle's identity (see `Cache::handle_id`).
    pub id: etl_cache_core::HandleId,
    /// Files of replaced small entries, for the next sets to write again.
    pub spares: Spares,
    /// Entries the last eviction scan of this handle queued as victims.
    pub victims: Victims,
    /// Held shared while this handle is open (see `DiskCache::open_with`).
    pub users: File,
    /// The last removals, for every process using the root (see `journal`).
    pub journal: Journal,
}

/// Runs `f` on Tokio's blocking pool and returns what it returns (its panic
/// resumes here).
///
/// A blocking task that never started is only ever cancelled by the
/// runtime shutting down (nothing here aborts one): then the task awaiting
/// it is being dropped with the runtime, so it waits for good instead of
/// panicking in a runtime that is going away.
///
/// The operation under way goes along: what `f` logs belongs to its span,
/// and an expiry or eviction it meets is reported in it.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let op = etl_cache_core::backend::obs::carry();
    match tokio::task::spawn_blocking(move || op.run(f)).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => std::future::pending().await,
    }
}
