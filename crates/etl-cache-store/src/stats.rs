//! What a [`crate::CachedStore`] counts.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters of one [`crate::CachedStore`] since it was built (see
/// [`crate::CachedStore::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Blocks served from the cache.
    pub hits: u64,
    /// Blocks read from the inner store.
    pub misses: u64,
    /// Reads that waited for a block another read was fetching, instead
    /// of fetching it again.
    pub joins: u64,
    /// Bytes of blocks served from the cache.
    pub bytes_from_cache: u64,
    /// Bytes of blocks read from the inner store.
    pub bytes_from_inner: u64,
    /// Requests sent to the inner store for data or metadata (not counting
    /// the writes, deletes, copies and lists passed through).
    pub inner_requests: u64,
    /// Blocks read from the inner store and not kept, by the admission
    /// policy.
    pub not_admitted: u64,
    /// Failures of the cache (each logged; the read was served from the
    /// inner store).
    pub cache_errors: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    joins: AtomicU64,
    bytes_from_cache: AtomicU64,
    bytes_from_inner: AtomicU64,
    inner_requests: AtomicU64,
    not_admitted: AtomicU64,
    cache_errors: AtomicU64,
}

impl Counters {
    pub(crate) fn hit(&self, bytes: u64) {
        self.hits.fetch_add(1, Relaxed);
        self.bytes_from_cache.fetch_add(bytes, Relaxed);
    }

    pub(crate) fn miss(&self, bytes: u64) {
        self.misses.fetch_add(1, Relaxed);
        self.bytes_from_inner.fetch_add(bytes, Relaxed);
    }

    pub(crate) fn join(&self) {
        self.joins.fetch_add(1, Relaxed);
    }

    pub(crate) fn request(&self) {
        self.inner_requests.fetch_add(1, Relaxed);
    }

    pub(crate) fn not_admitted(&self) {
        self.not_admitted.fetch_add(1, Relaxed);
    }

    pub(crate) fn cache_error(&self) {
        self.cache_errors.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StoreStats {
        StoreStats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            joins: self.joins.load(Relaxed),
            bytes_from_cache: self.bytes_from_cache.load(Relaxed),
            bytes_from_inner: self.bytes_from_inner.load(Relaxed),
            inner_requests: self.inner_requests.load(Relaxed),
            not_admitted: self.not_admitted.load(Relaxed),
            cache_errors: self.cache_errors.load(Relaxed),
        }
    }
}
