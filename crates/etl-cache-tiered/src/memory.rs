//! The memory tier: what it keeps of an entry, what that weighs, and when
//! it expires (moka's per-entry expiry, from the entry's own TTL).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use etl_cache_core::{EntryMeta, Error, MAX_TTL, Result, Value};

/// What the memory tier keeps of an entry: its metadata and its logical
/// bytes (UTF-8 for text, the serialized document for JSON), rebuilt into a
/// [`Value`] on each hit.
///
/// JSON is kept as its text, not as the `serde_json::Value` tree, so that
/// the tier weighs what it holds. Measured here (serde_json 1.0.154, x86-64):
/// a tree takes 8 to 20 times its text on the heap (874 B of records: 13,954
/// B; 409 KB: 8.0 MB; an array of 1,000 numbers: 8.4x), so a tier weighed by
/// text length held up to 20 times its limit. Parsing the text on a hit costs
/// little more than the clone of the tree a hit paid before (874 B: 7.8 µs
/// against 5.7 µs; 72 B: 0.32 µs against 0.15 µs; 409 KB: 9.9 ms against
/// 8.8 ms), where estimating a tree's heap size would depend on the layout of
/// serde_json's maps (B-tree nodes, or an index map with `preserve_order`).
pub(crate) struct MemEntry {
    pub(crate) meta: EntryMeta,
    pub(crate) bytes: Bytes,
}

impl MemEntry {
    pub(crate) fn value(&self, key: &str) -> Result<Value> {
        Value::from_stored(self.meta.kind, self.bytes.clone()).map_err(|reason| Error::Corrupt {
            key: Error::display_key(key),
            reason,
        })
    }
}

/// Tells moka when an entry expires, from the TTL stored with it.
pub(crate) struct MemExpiry;

impl MemExpiry {
    /// The time `entry` has left, at most [`MAX_TTL`]: an expiry read from a
    /// lower tier may lie further out than any write accepts, and moka adds
    /// this to its clock.
    fn left(entry: &MemEntry) -> Option<Duration> {
        entry.meta.expires.map(|e| {
            e.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .min(MAX_TTL)
        })
    }
}

impl moka::Expiry<String, Arc<MemEntry>> for MemExpiry {
    fn expire_after_create(&self, _: &String, v: &Arc<MemEntry>, _: Instant) -> Option<Duration> {
        Self::left(v)
    }

    fn expire_after_update(
        &self,
        _: &String,
        v: &Arc<MemEntry>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Self::left(v)
    }
}

/// The memory tier. Its operations are synchronous so that a check of a
/// key's generation and the change it allows happen under one lock (see
/// `epochs`).
pub(crate) type Memory = moka::sync::Cache<String, Arc<MemEntry>>;

/// What an entry costs the memory tier: its bytes, the key (twice: the
/// map's and the metadata's) and the fixed parts.
fn weight(key: &str, e: &MemEntry) -> u32 {
    let fixed = (std::mem::size_of::<MemEntry>() + 64) as u64;
    u32::try_from(e.bytes.len() as u64 + 2 * key.len() as u64 + fixed).unwrap_or(u32::MAX)
}

/// A memory tier of `capacity` bytes, weighed by [`weight`].
pub(crate) fn new_memory(capacity: u64) -> Memory {
    moka::sync::Cache::builder()
        .max_capacity(capacity)
        .weigher(|k: &String, v: &Arc<MemEntry>| weight(k, v))
        .expire_after(MemExpiry)
        .build()
}
