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
    /// When the entry was removed: the remover's wall clock
    /// (`SystemTime::now()`), whatever clock the cache reads expiry from.
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
    /// The cause as two bytes (cause, limit), for journals that store it:
    /// stable across versions, and exhaustive here, so that a new cause
    /// gets a code of its own.
    pub fn to_code(self) -> [u8; 2] {
        match self {
            RemovalCause::Evicted {
                limit: EvictionLimit::MaxEntries,
            } => [1, 1],
            RemovalCause::Evicted {
                limit: EvictionLimit::MaxBytes,
            } => [1, 2],
            RemovalCause::Expired => [2, 0],
            RemovalCause::Corrupt => [3, 0],
            RemovalCause::Deleted => [4, 0],
            RemovalCause::Cleared => [5, 0],
        }
    }

    /// The cause of [`RemovalCause::to_code`]'s bytes; `None` for bytes
    /// no version wrote.
    pub fn from_code(code: [u8; 2]) -> Option<RemovalCause> {
        Some(match code {
            [1, 1] => RemovalCause::Evicted {
                limit: EvictionLimit::MaxEntries,
            },
            [1, 2] => RemovalCause::Evicted {
                limit: EvictionLimit::MaxBytes,
            },
            [2, 0] => RemovalCause::Expired,
            [3, 0] => RemovalCause::Corrupt,
            [4, 0] => RemovalCause::Deleted,
            [5, 0] => RemovalCause::Cleared,
            _ => return None,
        })
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_has_its_own_code_and_reads_back() {
        let all = [
            RemovalCause::Evicted {
                limit: EvictionLimit::MaxEntries,
            },
            RemovalCause::Evicted {
                limit: EvictionLimit::MaxBytes,
            },
            RemovalCause::Expired,
            RemovalCause::Corrupt,
            RemovalCause::Deleted,
            RemovalCause::Cleared,
        ];
        let codes: std::collections::HashSet<[u8; 2]> = all.iter().map(|c| c.to_code()).collect();
        assert_eq!(codes.len(), all.len());
        for c in all {
            assert_eq!(RemovalCause::from_code(c.to_code()), Some(c));
        }
        assert_eq!(RemovalCause::from_code([0, 0]), None);
        assert_eq!(RemovalCause::from_code([1, 3]), None);
    }
}
