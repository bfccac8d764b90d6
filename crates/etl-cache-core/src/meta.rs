//! What is known about a stored entry without its payload: what callers
//! read from `set`, `head`, `list` and streams. The wire format it is read
//! from is in [`crate::backend::format`].

use std::time::{Duration, SystemTime};

use crate::{Codec, Kind};

/// Everything known about a stored entry, without its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntryMeta {
    /// The key.
    pub key: String,
    /// What the payload holds.
    pub kind: Kind,
    /// How the payload is compressed.
    pub codec: Codec,
    /// When the entry was written.
    pub created: SystemTime,
    /// When the entry expires, if ever.
    pub expires: Option<SystemTime>,
    /// Length of the value after decompression.
    pub logical_len: u64,
    /// Length of the payload as stored (in format 2, without the block
    /// checksums).
    pub stored_len: u64,
    /// Total bytes the entry takes in the store (header, payload, trailer).
    pub size: u64,
}

impl EntryMeta {
    /// Whether the entry has expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }

    /// Time left before expiry at `now`; `None` when the entry never expires.
    pub fn ttl_left(&self, now: SystemTime) -> Option<Duration> {
        self.expires
            .map(|e| e.duration_since(now).unwrap_or(Duration::ZERO))
    }
}
