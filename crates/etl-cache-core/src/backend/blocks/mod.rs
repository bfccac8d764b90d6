//! Payloads checked block by block (entry format 2).
//!
//! A format 1 entry has one checksum over its whole payload, in the trailer:
//! a stream can only tell at its very end that a byte was wrong, after it has
//! handed that byte out. A format 2 payload is cut into blocks of a fixed
//! [`BlockSize`], each followed by its checksum, so a reader holds one block,
//! checks it, then hands it out (see [`crate::backend::format`] for the layout):
//!
//! - [`BlockFramer`] (writer): fed stored bytes in chunks of any size, gives
//!   the framed bytes to write and, at the end, the trailer. It buffers
//!   nothing: blocks pass through as slices of the input, checksummed on the
//!   way, and each block's checksum follows it.
//! - [`BlockChecker`] (streaming reader): fed the framed bytes and trailer in
//!   chunks of any size, hands out only stored bytes whose block checked, and
//!   checks the trailer at the end.
//! - [`verify_payload`] (whole-value reader): checks a payload read whole, of
//!   either format, in one pass, and hands back its blocks as slices;
//!   [`verify_payload_in_place`] hands them back in one piece, in the buffer
//!   they were read into; [`read_payload_at`] reads and checks one by its
//!   position, each block straight to its place.
//! - [`BlockSize::span`] and [`verify_block`] (positional reader): where block
//!   `i` lies, and its check.
//!
//! Each block's checksum binds it to its entry and its place: it is the
//! crc32c of the header's checksum, the block's index and the block's bytes
//! (see [`block_crc`]), so a block moved, repeated or taken from another
//! entry fails where it stands. The trailer holds the crc32c of the blocks'
//! checksums in order, so a block dropped at the end, or two entries whose
//! headers are byte for byte the same mixed, fail at the end.
//!
//! # Format 1
//!
//! A format 1 entry ([`Layout::Whole`](crate::backend::format::Layout::Whole)) has no
//! blocks: nothing can be checked before its end, and no `BlockChecker` can
//! be made for it (it takes a [`BlockSize`], which only a format 2 header
//! has). A reader that must not hand out unchecked bytes reads such an entry
//! whole and checks it with [`verify_payload`] before streaming it.

mod checker;
mod framer;
pub(crate) mod size;
mod verify;

pub use checker::BlockChecker;
pub use framer::BlockFramer;
pub use size::{BLOCK_CRC_LEN, BlockSize, BlockSpan};
pub use verify::{
    VerifiedPayload, read_payload_at, verify_block, verify_framed, verify_payload,
    verify_payload_in_place,
};

use crate::backend::format::FormatError;

/// The crc32c the checksum of a block starts from: that of the header's
/// checksum and the block's index (both little endian).
fn block_seed(header_crc: u32, index: u64) -> u32 {
    let mut seed = [0u8; 12];
    seed[..4].copy_from_slice(&header_crc.to_le_bytes());
    seed[4..].copy_from_slice(&index.to_le_bytes());
    crc32c::crc32c(&seed)
}

/// The checksum stored after block `index` of the entry whose header's
/// checksum is `header_crc`: the crc32c of `header_crc` (4 bytes, little
/// endian), `index` (8 bytes, little endian) and the block's stored bytes.
pub fn block_crc(header_crc: u32, index: u64, block: &[u8]) -> u32 {
    crc32c::crc32c_append(block_seed(header_crc, index), block)
}

/// Adds a block's checksum to the checksum of the list of block checksums
/// (the crc32c of each, 4 bytes little endian, in order; 0 for no block),
/// which the trailer of a format 2 entry holds. For a reader that checks
/// blocks one by one ([`verify_block`]), possibly on several threads, and
/// chains their checksums in order before it hands out the last block.
///
/// ```
/// use bytes::Bytes;
/// use etl_cache_core::backend::blocks::{BlockFramer, BlockSize, chain_block_crc, verify_block};
///
/// let b = BlockSize::new(16).unwrap();
/// let mut framed = Vec::new();
/// let mut framer = BlockFramer::new(3, b);
/// framer.push(Bytes::from(vec![5u8; 40]), &mut framed);
/// let trailer = framer.finish(40, &mut framed);
/// let framed = Bytes::from(framed.concat());
/// let mut list = 0;
/// for i in 0..b.block_count(40) {
///     let span = b.span(i, 40).unwrap();
///     let block = framed.slice(span.framed.start as usize..span.framed.end as usize);
///     let crc = u32::from_le_bytes(block[block.len() - 4..].try_into().unwrap());
///     verify_block(b, 3, i, block).unwrap();
///     list = chain_block_crc(list, crc);
/// }
/// assert_eq!(list, trailer.payload_crc);
/// ```
pub fn chain_block_crc(list_crc: u32, block_crc: u32) -> u32 {
    crc32c::crc32c_append(list_crc, &block_crc.to_le_bytes())
}

/// Why a payload failed its check. No byte of the block or trailer named
/// here has been handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// A block does not match its checksum (its bytes or its checksum
    /// changed, or it belongs to another place or another entry).
    #[error("block {index} does not match its checksum")]
    Block {
        /// The block's index, from 0.
        index: u64,
    },
    /// The framed bytes cannot be cut into blocks: the last would be too
    /// short to hold a byte and its checksum.
    #[error("a framed payload of {framed_len} bytes cannot be cut into blocks")]
    Framing {
        /// Framed bytes before the trailer.
        framed_len: u64,
    },
    /// Fewer bytes than a trailer.
    #[error("the entry ends {len} bytes after its header, before a whole trailer")]
    Truncated {
        /// Bytes after the header.
        len: u64,
    },
    /// The last bytes are not a valid trailer.
    #[error("bad trailer: {reason}")]
    Trailer {
        /// What is wrong with it.
        reason: FormatError,
    },
    /// The trailer was written for another header.
    #[error("the trailer belongs to another header")]
    OtherHeader,
    /// The trailer's stored length is not what the payload holds.
    #[error("the trailer says {trailer} stored bytes, the payload holds {found}")]
    StoredLength {
        /// What the trailer says.
        trailer: u64,
        /// What the payload holds.
        found: u64,
    },
    /// The blocks' checksums, in order, are not those the trailer sums up:
    /// a block was dropped, repeated or moved.
    #[error("the list of block checksums does not match the trailer's")]
    BlockList,
    /// A format 1 payload does not match the trailer's checksum.
    #[error("payload checksum mismatch")]
    Payload,
}
