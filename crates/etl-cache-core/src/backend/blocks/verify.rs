//! Checks of a payload read whole, or of one block read by its position.

use std::io;

use bytes::{Bytes, BytesMut};

use super::{BLOCK_CRC_LEN, BlockError, BlockSize, block_crc, chain_block_crc};
use crate::backend::format::{Layout, TRAILER_LEN, Trailer};

/// A payload that passed [`verify_payload`]: its stored bytes, as slices of
/// what was read, and its trailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPayload {
    pieces: Vec<Bytes>,
    trailer: Trailer,
}

impl VerifiedPayload {
    /// The trailer (its logical length is still to be checked against the
    /// decompressed bytes).
    pub fn trailer(&self) -> &Trailer {
        &self.trailer
    }

    /// The stored bytes, block by block (one piece for format 1), each a
    /// slice of the bytes read.
    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    /// The stored bytes, block by block, without a copy.
    pub fn into_pieces(self) -> Vec<Bytes> {
        self.pieces
    }

    /// The stored bytes in one buffer: a slice of the bytes read when they
    /// are one piece (format 1, or one block), else one copy.
    pub fn into_bytes(self) -> Bytes {
        match <[Bytes; 1]>::try_from(self.pieces) {
            Ok([one]) => one,
            Err(pieces) => {
                let mut all = BytesMut::with_capacity(self.trailer.stored_len as usize);
                for p in &pieces {
                    all.extend_from_slice(p);
                }
                all.freeze()
            }
        }
    }
}

/// The trailer at the end of `framed` (checked, and tied to the header);
/// returns it with the length of the payload before it.
fn read_trailer(framed: &[u8], header_crc: u32) -> Result<(usize, Trailer), BlockError> {
    let Some(payload_len) = framed.len().checked_sub(TRAILER_LEN) else {
        return Err(BlockError::Truncated {
            len: framed.len() as u64,
        });
    };
    let trailer =
        Trailer::decode(&framed[payload_len..]).map_err(|reason| BlockError::Trailer { reason })?;
    if trailer.header_crc != header_crc {
        return Err(BlockError::OtherHeader);
    }
    Ok((payload_len, trailer))
}

/// Checks a format 1 payload against its trailer.
fn check_whole(payload: &[u8], trailer: &Trailer) -> Result<(), BlockError> {
    if trailer.stored_len != payload.len() as u64 {
        return Err(BlockError::StoredLength {
            trailer: trailer.stored_len,
            found: payload.len() as u64,
        });
    }
    if crc32c::crc32c(payload) != trailer.payload_crc {
        return Err(BlockError::Payload);
    }
    Ok(())
}

/// The stored length of a format 2 payload of `framed_len` bytes, checked
/// against the trailer's.
fn stored_len(size: BlockSize, framed_len: u64, trailer: &Trailer) -> Result<u64, BlockError> {
    let stored_len = size
        .stored_len(framed_len)
        .ok_or(BlockError::Framing { framed_len })?;
    if stored_len != trailer.stored_len {
        return Err(BlockError::StoredLength {
            trailer: trailer.stored_len,
            found: stored_len,
        });
    }
    Ok(stored_len)
}

/// Checks a payload read whole: `framed` is everything after the header
/// (the payload and the trailer) of an entry of `layout` whose header's
/// checksum is `header_crc`. One pass over the bytes, no copy.
///
/// Format 1 payloads are checked against the trailer's checksum, format 2
/// payloads block by block, then the list of block checksums.
///
/// # Errors
///
/// What failed, as [`super::BlockChecker`] would name it.
pub fn verify_payload(
    layout: Layout,
    header_crc: u32,
    mut framed: Bytes,
) -> Result<VerifiedPayload, BlockError> {
    let (payload_len, trailer) = read_trailer(&framed, header_crc)?;
    framed.truncate(payload_len);
    let pieces = match layout {
        Layout::Whole => {
            check_whole(&framed, &trailer)?;
            vec![framed]
        }
        Layout::Blocks(size) => {
            let (pieces, list_crc) = verify_blocks(size, header_crc, framed, &trailer)?;
            if list_crc != trailer.payload_crc {
                return Err(BlockError::BlockList);
            }
            pieces
        }
    };
    Ok(VerifiedPayload { pieces, trailer })
}

/// [`verify_payload`] for a reader that has decoded the trailer already
/// (from the same bytes, read whole): `framed` is the payload without it.
/// Returns the stored bytes in one piece: a slice of `framed` for format 1
/// and for a payload of at most one block (every small entry), else a copy.
///
/// # Errors
///
/// As [`verify_payload`].
pub fn verify_framed(
    layout: Layout,
    header_crc: u32,
    framed: Bytes,
    trailer: &Trailer,
) -> Result<Bytes, BlockError> {
    if trailer.header_crc != header_crc {
        return Err(BlockError::OtherHeader);
    }
    let size = match layout {
        Layout::Whole => {
            check_whole(&framed, trailer)?;
            return Ok(framed);
        }
        Layout::Blocks(size) => size,
    };
    let stored_len = stored_len(size, framed.len() as u64, trailer)?;
    let (stored, list_crc) = if stored_len == 0 {
        (Bytes::new(), 0)
    } else if stored_len <= size.get() {
        // One block, checked where it lies: no list of pieces to build.
        let data = &framed[..stored_len as usize];
        let computed = block_crc(header_crc, 0, data);
        if computed.to_le_bytes() != framed[stored_len as usize..] {
            return Err(BlockError::Block { index: 0 });
        }
        (
            framed.slice(..stored_len as usize),
            chain_block_crc(0, computed),
        )
    } else {
        let (pieces, list_crc) = verify_blocks(size, header_crc, framed, trailer)?;
        let pieces = VerifiedPayload {
            pieces,
            trailer: *trailer,
        };
        (pieces.into_bytes(), list_crc)
    };
    if list_crc != trailer.payload_crc {
        return Err(BlockError::BlockList);
    }
    Ok(stored)
}

/// [`verify_payload`] over a buffer the caller owns (a whole file read into
/// memory, say): the stored bytes are moved down over the block checksums
/// as each block is checked (while it is still in the CPU's cache), and come
/// back in that same buffer. Use it where the stored bytes are wanted in one
/// piece: [`VerifiedPayload::into_bytes`] copies them into a new buffer,
/// which for a large payload costs a fresh allocation's page faults.
///
/// # Errors
///
/// As [`verify_payload`]; the buffer is then dropped.
pub fn verify_payload_in_place(
    layout: Layout,
    header_crc: u32,
    mut framed: BytesMut,
) -> Result<(Bytes, Trailer), BlockError> {
    let (payload_len, trailer) = read_trailer(&framed, header_crc)?;
    framed.truncate(payload_len);
    let size = match layout {
        Layout::Whole => {
            check_whole(&framed, &trailer)?;
            return Ok((framed.freeze(), trailer));
        }
        Layout::Blocks(size) => size,
    };
    let stored_len = stored_len(size, payload_len as u64, &trailer)?;
    let mut list_crc = 0;
    for index in 0..size.block_count(stored_len) {
        let span = size.span(index, stored_len).expect("index below the count");
        let (start, end) = (span.framed.start as usize, span.framed.end as usize);
        let data_end = end - BLOCK_CRC_LEN;
        let computed = block_crc(header_crc, index, &framed[start..data_end]);
        if computed.to_le_bytes() != framed[data_end..end] {
            return Err(BlockError::Block { index });
        }
        list_crc = chain_block_crc(list_crc, computed);
        // The first block is already in its place (most entries are one block).
        if start as u64 != span.stored.start {
            framed.copy_within(start..data_end, span.stored.start as usize);
        }
    }
    if list_crc != trailer.payload_crc {
        return Err(BlockError::BlockList);
    }
    framed.truncate(stored_len as usize);
    Ok((framed.freeze(), trailer))
}

/// [`verify_payload_in_place`] for a payload still to be read, by its
/// position (a file, say): `read_at(buf, offset)` fills `buf` with the bytes
/// at `offset`, counted from the first byte after the header, and
/// `after_header` is how many bytes follow the header (payload and trailer).
///
/// Each block is read straight to where its stored bytes belong in the
/// buffer handed back, and checked there while it is still in the CPU's
/// cache: nothing is moved afterwards. Reading the framed payload in one
/// piece and moving each block down over the checksums cost a second pass
/// over the bytes: a 50 MB uncompressed get took 3.3 times the instructions
/// of a format 1 get that way, and 1.003 times this way (callgrind).
///
/// # Errors
///
/// The outer error is `read_at`'s, except that running out of bytes
/// ([`io::ErrorKind::UnexpectedEof`]: the file is shorter than it was)
/// is [`BlockError::Truncated`]; the inner one is what failed its check.
pub fn read_payload_at(
    layout: Layout,
    header_crc: u32,
    after_header: u64,
    mut read_at: impl FnMut(&mut [u8], u64) -> io::Result<()>,
) -> io::Result<Result<(Bytes, Trailer), BlockError>> {
    let truncated = Err(BlockError::Truncated { len: after_header });
    let Some(framed_len) = after_header.checked_sub(TRAILER_LEN as u64) else {
        return Ok(truncated);
    };
    let mut read = |buf: &mut [u8], offset: u64| match read_at(buf, offset) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    };
    let mut tbuf = [0u8; TRAILER_LEN];
    if !read(&mut tbuf, framed_len)? {
        return Ok(truncated);
    }
    let trailer = match read_trailer(&tbuf, header_crc) {
        Ok((_, trailer)) => trailer,
        Err(e) => return Ok(Err(e)),
    };
    let size = match layout {
        Layout::Whole => {
            let mut payload = BytesMut::zeroed(framed_len as usize);
            if !read(&mut payload, 0)? {
                return Ok(truncated);
            }
            return Ok(check_whole(&payload, &trailer).map(|()| (payload.freeze(), trailer)));
        }
        Layout::Blocks(size) => size,
    };
    let stored_len = match stored_len(size, framed_len, &trailer) {
        Ok(n) => n,
        Err(e) => return Ok(Err(e)),
    };
    // Room for the last block's checksum after the stored bytes: each
    // block's checksum lands where the next block's bytes then go.
    let mut out = BytesMut::zeroed(stored_len as usize + BLOCK_CRC_LEN);
    let mut list_crc = 0;
    for index in 0..size.block_count(stored_len) {
        let span = size.span(index, stored_len).expect("index below the count");
        let (start, end) = (span.stored.start as usize, span.stored.end as usize);
        if !read(&mut out[start..end + BLOCK_CRC_LEN], span.framed.start)? {
            return Ok(truncated);
        }
        let computed = block_crc(header_crc, index, &out[start..end]);
        if computed.to_le_bytes() != out[end..end + BLOCK_CRC_LEN] {
            return Ok(Err(BlockError::Block { index }));
        }
        list_crc = chain_block_crc(list_crc, computed);
    }
    if list_crc != trailer.payload_crc {
        return Ok(Err(BlockError::BlockList));
    }
    out.truncate(stored_len as usize);
    Ok(Ok((out.freeze(), trailer)))
}

/// Checks every block of `framed` (the payload without the trailer);
/// returns their stored bytes and the checksum of their checksums.
fn verify_blocks(
    size: BlockSize,
    header_crc: u32,
    framed: Bytes,
    trailer: &Trailer,
) -> Result<(Vec<Bytes>, u32), BlockError> {
    let stored_len = stored_len(size, framed.len() as u64, trailer)?;
    let mut pieces = Vec::with_capacity(size.block_count(stored_len) as usize);
    let mut list_crc = 0;
    for (index, block) in framed.chunks(size.get_usize() + BLOCK_CRC_LEN).enumerate() {
        let (data, crc) = block.split_at(block.len() - BLOCK_CRC_LEN);
        let computed = block_crc(header_crc, index as u64, data);
        if computed.to_le_bytes() != crc {
            return Err(BlockError::Block {
                index: index as u64,
            });
        }
        list_crc = chain_block_crc(list_crc, computed);
        pieces.push(framed.slice_ref(data));
    }
    Ok((pieces, list_crc))
}

/// Checks one block read by its position: `framed` is block `index` with
/// its checksum, as [`BlockSize::span`] places it, of the entry whose
/// header's checksum is `header_crc`; returns the block's stored bytes (a
/// slice of `framed`).
///
/// This checks the block alone: that the entry has this many blocks is the
/// trailer's to say (read and check it first), and the list of block
/// checksums is checked only by a reader of every block.
///
/// # Errors
///
/// [`BlockError::Block`] when the block does not match its checksum,
/// [`BlockError::Framing`] when `framed` is not the length of a block and
/// its checksum.
pub fn verify_block(
    block_size: BlockSize,
    header_crc: u32,
    index: u64,
    framed: Bytes,
) -> Result<Bytes, BlockError> {
    let len = framed.len();
    if len <= BLOCK_CRC_LEN || len > block_size.get_usize() + BLOCK_CRC_LEN {
        return Err(BlockError::Framing {
            framed_len: len as u64,
        });
    }
    let data = framed.slice(..len - BLOCK_CRC_LEN);
    if block_crc(header_crc, index, &data).to_le_bytes() != framed[len - BLOCK_CRC_LEN..] {
        return Err(BlockError::Block { index });
    }
    Ok(data)
}
