//! What the entry format fixes before any entry is read: its magic numbers,
//! versions and sizes, the payload layout each version gives, and the error
//! of bytes that are not the format.

use crate::MAX_KEY_LEN;
// From its own file: `blocks` takes the trailer and the format's errors
// from the format module.
use crate::backend::blocks::size::BlockSize;

/// The first four bytes of every entry.
pub const MAGIC: [u8; 4] = *b"ETLC";
/// The last four bytes of every entry.
pub const TRAILER_MAGIC: [u8; 4] = *b"CLTE";
/// Format 1: one checksum over the whole payload ([`Layout::Whole`]).
pub const FORMAT_V1: u8 = 1;
/// Format 2: a checksum after each block of the payload ([`Layout::Blocks`]).
pub const FORMAT_V2: u8 = 2;
/// The format version the backends write: that of [`WRITTEN_LAYOUT`]. Bump
/// when an older reader could misread newer entries.
/// ([`Header::encode`](super::Header::encode) writes format 1, which every
/// reader still reads.)
pub const FORMAT_VERSION: u8 = WRITTEN_LAYOUT.version();
/// How the backends lay out the entries they write: format 2, blocks of
/// 1 MiB.
pub const WRITTEN_LAYOUT: Layout = Layout::DEFAULT_BLOCKS;
/// Bytes before the key in the header.
pub const HEADER_FIXED_LEN: usize = 26;
/// The largest header: fixed part, longest key, checksum.
pub const MAX_HEADER_LEN: usize = HEADER_FIXED_LEN + MAX_KEY_LEN + 4;
/// Size of the trailer.
pub const TRAILER_LEN: usize = 32;

/// Why bytes are not a valid header or trailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// More bytes are needed: at least this many in all.
    Truncated(usize),
    /// The bytes are not a valid entry.
    Invalid(String),
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormatError::Truncated(n) => write!(f, "truncated: at least {n} bytes needed"),
            FormatError::Invalid(s) => f.write_str(s),
        }
    }
}

/// How an entry's payload is laid out and checked: what its format version
/// says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Layout {
    /// Format 1: the stored bytes as they are, with one checksum over all of
    /// them in the trailer. Nothing can be checked before the end: a reader
    /// that must not hand out unchecked bytes reads the payload whole and
    /// checks it first ([`crate::backend::blocks::verify_payload`]).
    Whole,
    /// Format 2: the stored bytes in blocks of this size, each followed by
    /// its checksum ([`crate::backend::blocks`]).
    Blocks(BlockSize),
}

impl Layout {
    /// Format 2 with the default block size (1 MiB).
    pub const DEFAULT_BLOCKS: Layout = Layout::Blocks(BlockSize::DEFAULT);

    /// The layout a backend writes an entry in: format 2, in blocks of
    /// `check_block` ([`crate::SetOptions::check_block`]) or of the
    /// default 1 MiB.
    pub const fn for_write(check_block: Option<BlockSize>) -> Layout {
        match check_block {
            Some(size) => Layout::Blocks(size),
            None => WRITTEN_LAYOUT,
        }
    }

    /// The format version of entries with this layout.
    pub const fn version(self) -> u8 {
        match self {
            Layout::Whole => FORMAT_V1,
            Layout::Blocks(_) => FORMAT_V2,
        }
    }

    /// The block size, for format 2.
    pub const fn block_size(self) -> Option<BlockSize> {
        match self {
            Layout::Whole => None,
            Layout::Blocks(b) => Some(b),
        }
    }

    /// Bytes between header and trailer for `stored_len` stored bytes;
    /// `None` past `u64::MAX`.
    pub const fn framed_len(self, stored_len: u64) -> Option<u64> {
        match self {
            Layout::Whole => Some(stored_len),
            Layout::Blocks(b) => b.framed_len(stored_len),
        }
    }

    /// The stored bytes `framed_len` bytes between header and trailer hold;
    /// `None` when no payload frames to that length.
    pub const fn stored_len(self, framed_len: u64) -> Option<u64> {
        match self {
            Layout::Whole => Some(framed_len),
            Layout::Blocks(b) => b.stored_len(framed_len),
        }
    }
}
