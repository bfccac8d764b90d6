//! Why an entry left a cache: the records of a backend's removal journal,
//! read with [`crate::Cache::last_removal`].

use std::time::SystemTime;

/// The last removal of a key that a backend's journal remembers: when it
/// happened and why. A journal is bounded, so an old removal may be
/// forgotten; a key written again after it keeps the record until its next
/// removal (compare [`Removal::at`] with when the value was written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Removal {
    /// When the entry was removed (the remover's clock).
    pub at: SystemTime,
    /// Why.
    pub cause: RemovalCause,
}

impl Removal {
    /// A record of a removal at `at` for `cause`.
    pub fn new(at: SystemTime, cause: RemovalCause) -> Removal {
        Removal { at, cause }
    }
}

/// Why an entry was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemovalCause {
    /// Evicted to bring the cache under a limit.
    Evicted {
        /// The limit the cache was over.
        limit: EvictionLimit,
    },
    /// Found expired (by a read or `purge_expired`) and removed.
    Expired,
    /// Found corrupt by a read and removed.
    Corrupt,
    /// Removed by `delete`.
    Deleted,
    /// Removed by `clear`.
    Cleared,
}

/// The limit an eviction brought the cache under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EvictionLimit {
    /// The most entries the cache keeps.
    MaxEntries,
    /// The most bytes the cache keeps.
    MaxBytes,
}

impl RemovalCause {
    /// A short name: `evicted`, `expired`, `corrupt`, `deleted`, `cleared`.
    pub fn name(&self) -> &'static str {
        match self {
            RemovalCause::Evicted { .. } => "evicted",
            RemovalCause::Expired => "expired",
            RemovalCause::Corrupt => "corrupt",
            RemovalCause::Deleted => "deleted",
            RemovalCause::Cleared => "cleared",
        }
    }
}

impl EvictionLimit {
    /// The setting's name: `max_entries` or `max_bytes`.
    pub fn name(&self) -> &'static str {
        match self {
            EvictionLimit::MaxEntries => "max_entries",
            EvictionLimit::MaxBytes => "max_bytes",
        }
    }
}

impl std::fmt::Display for RemovalCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemovalCause::Evicted { limit } => write!(f, "evicted (over {})", limit.name()),
            other => f.write_str(other.name()),
        }
    }
}
