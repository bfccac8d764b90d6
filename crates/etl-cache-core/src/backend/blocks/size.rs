//! The block size of a format 2 entry and where each block lies.

use std::fmt;
use std::ops::Range;

/// Bytes of the checksum after each block.
pub const BLOCK_CRC_LEN: usize = 4;

/// The size of the blocks a format 2 payload is cut into: a power of two
/// between 16 bytes and 16 MiB, stored in the header as its base-2
/// logarithm.
///
/// Every block holds this many stored bytes but the last, which may be
/// shorter; each is followed by its 4-byte checksum. The helpers below give
/// a positional reader (`pread`, a ranged get) where each block lies.
///
/// ```
/// use etl_cache_core::backend::blocks::BlockSize;
///
/// let b = BlockSize::new(1024).unwrap();
/// // 2.5 blocks of stored bytes: three blocks, three checksums.
/// assert_eq!(b.block_count(2560), 3);
/// assert_eq!(b.framed_len(2560), Some(2560 + 3 * 4));
/// assert_eq!(b.stored_len(2572), Some(2560));
/// let last = b.span(2, 2560).unwrap();
/// assert_eq!(last.framed, 2056..2572);
/// assert_eq!(last.stored, 2048..2560);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockSize {
    log2: u8,
}

/// Where one block lies: in the framed payload (the bytes after the header,
/// block checksum included) and in the stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSpan {
    /// The block's index, from 0.
    pub index: u64,
    /// Its bytes and its checksum, as offsets from the end of the header.
    pub framed: Range<u64>,
    /// Its bytes, as offsets into the stored (possibly compressed) payload.
    pub stored: Range<u64>,
}

impl BlockSize {
    /// The smallest block size, as a base-2 logarithm (16 bytes).
    pub const MIN_LOG2: u8 = 4;
    /// The largest block size, as a base-2 logarithm (16 MiB).
    pub const MAX_LOG2: u8 = 24;
    /// The block size new entries get: 1 MiB. Not part of the format: a
    /// reader takes the size from each entry's header.
    pub const DEFAULT: BlockSize = BlockSize { log2: 20 };

    /// The block size `2^log2`, if in range.
    pub const fn from_log2(log2: u8) -> Option<BlockSize> {
        if log2 >= Self::MIN_LOG2 && log2 <= Self::MAX_LOG2 {
            Some(BlockSize { log2 })
        } else {
            None
        }
    }

    /// The block size of `bytes`, if it is a power of two in range.
    pub const fn new(bytes: u64) -> Option<BlockSize> {
        if bytes.is_power_of_two() {
            Self::from_log2(bytes.trailing_zeros() as u8)
        } else {
            None
        }
    }

    /// Its base-2 logarithm (what the header stores).
    pub const fn log2(self) -> u8 {
        self.log2
    }

    /// Stored bytes in a full block.
    pub const fn get(self) -> u64 {
        1 << self.log2
    }

    /// Stored bytes in a full block, as a `usize` (at most 16 MiB).
    pub(crate) const fn get_usize(self) -> usize {
        1 << self.log2
    }

    /// How many blocks `stored_len` bytes take (0 for an empty payload).
    pub const fn block_count(self, stored_len: u64) -> u64 {
        stored_len.div_ceil(self.get())
    }

    /// The framed length of `stored_len` stored bytes: the bytes plus one
    /// checksum per block. `None` past `u64::MAX`.
    pub const fn framed_len(self, stored_len: u64) -> Option<u64> {
        stored_len.checked_add(self.block_count(stored_len) * BLOCK_CRC_LEN as u64)
    }

    /// The stored length whose framed length is `framed_len`; `None` when no
    /// payload frames to that length (the last block would hold 4 or fewer
    /// bytes with its checksum, so no byte).
    pub const fn stored_len(self, framed_len: u64) -> Option<u64> {
        let full = self.get() + BLOCK_CRC_LEN as u64;
        let blocks = framed_len / full;
        let rest = framed_len % full;
        if rest == 0 {
            Some(blocks * self.get())
        } else if rest > BLOCK_CRC_LEN as u64 {
            Some(blocks * self.get() + rest - BLOCK_CRC_LEN as u64)
        } else {
            None
        }
    }

    /// Where block `index` of a payload of `stored_len` stored bytes lies;
    /// `None` past the last block.
    pub fn span(self, index: u64, stored_len: u64) -> Option<BlockSpan> {
        if index >= self.block_count(stored_len) {
            return None;
        }
        let start = index * self.get();
        let end = stored_len.min(start + self.get());
        let framed_start = start + index * BLOCK_CRC_LEN as u64;
        Some(BlockSpan {
            index,
            framed: framed_start..framed_start + (end - start) + BLOCK_CRC_LEN as u64,
            stored: start..end,
        })
    }
}

impl Default for BlockSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for BlockSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.log2 {
            l @ 20.. => write!(f, "{} MiB", 1u64 << (l - 20)),
            l @ 10.. => write!(f, "{} KiB", 1u64 << (l - 10)),
            l => write!(f, "{} B", 1u64 << l),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_powers_of_two_in_range() {
        assert_eq!(BlockSize::new(1 << 20), Some(BlockSize::DEFAULT));
        assert_eq!(BlockSize::new(16).map(BlockSize::log2), Some(4));
        assert_eq!(BlockSize::new(8), None);
        assert_eq!(BlockSize::new(1 << 25), None);
        assert_eq!(BlockSize::new(1000), None);
        assert_eq!(BlockSize::new(0), None);
        assert_eq!(BlockSize::from_log2(3), None);
        assert_eq!(BlockSize::from_log2(255), None);
        assert_eq!(BlockSize::DEFAULT.to_string(), "1 MiB");
        assert_eq!(BlockSize::new(16).unwrap().to_string(), "16 B");
    }

    #[test]
    fn framed_and_stored_lengths_are_inverse() {
        for log2 in [4, 5, 10] {
            let b = BlockSize::from_log2(log2).unwrap();
            let mut valid = 0;
            for framed in 0..5 * (b.get() + 4) + 3 {
                if let Some(s) = b.stored_len(framed) {
                    valid += 1;
                    assert_eq!(b.framed_len(s), Some(framed), "{b} {framed}");
                }
            }
            // Every stored length has exactly one framed length.
            assert_eq!(valid, 5 * b.get() + 1);
            for stored in 0..4 * b.get() {
                let f = b.framed_len(stored).unwrap();
                assert_eq!(b.stored_len(f), Some(stored));
                // The spans tile both the framed and the stored bytes.
                let mut at = (0, 0);
                for i in 0..b.block_count(stored) {
                    let s = b.span(i, stored).unwrap();
                    assert_eq!((s.framed.start, s.stored.start), at);
                    assert_eq!(
                        s.framed.end - s.framed.start,
                        s.stored.end - s.stored.start + 4
                    );
                    at = (s.framed.end, s.stored.end);
                }
                assert_eq!(at, (f, stored));
                assert_eq!(b.span(b.block_count(stored), stored), None);
            }
        }
        assert_eq!(BlockSize::DEFAULT.framed_len(u64::MAX), None);
    }
}
