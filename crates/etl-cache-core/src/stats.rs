//! Counters.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a cache's counters and size.
///
/// `hits`, `misses`, `sets`, `deletes`, `evictions` and `expired` count what this
/// handle did since it was opened; `entries` and `bytes` describe the whole
/// cache, as shared by every process using it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Reads that found a live entry.
    pub hits: u64,
    /// Reads that found nothing (or an expired entry).
    pub misses: u64,
    /// Successful writes.
    pub sets: u64,
    /// Entries removed by `delete`.
    pub deletes: u64,
    /// Entries removed to respect the capacity limits.
    pub evictions: u64,
    /// Expired entries removed.
    pub expired: u64,
    /// Entries in the cache.
    pub entries: u64,
    /// Bytes the entries take in the store.
    pub bytes: u64,
}

impl Stats {
    /// Hits divided by reads, or 0 before any read.
    pub fn hit_ratio(&self) -> f64 {
        let reads = self.hits + self.misses;
        if reads == 0 {
            0.0
        } else {
            self.hits as f64 / reads as f64
        }
    }
}

/// Thread-safe counters a backend bumps; for backends.
#[derive(Debug, Default)]
pub struct Counters {
    /// See [`Stats::hits`].
    pub hits: AtomicU64,
    /// See [`Stats::misses`].
    pub misses: AtomicU64,
    /// See [`Stats::sets`].
    pub sets: AtomicU64,
    /// See [`Stats::deletes`].
    pub deletes: AtomicU64,
    /// See [`Stats::evictions`].
    pub evictions: AtomicU64,
    /// See [`Stats::expired`].
    pub expired: AtomicU64,
}

impl Counters {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot with the given size figures.
    pub fn snapshot(&self, entries: u64, bytes: u64) -> Stats {
        Stats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            sets: self.sets.load(Ordering::Relaxed),
            deletes: self.deletes.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            entries,
            bytes,
        }
    }
}
