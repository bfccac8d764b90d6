//! The streaming reader's side: framed bytes in, checked stored bytes out.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

use super::{BLOCK_CRC_LEN, BlockError, BlockSize, block_seed, chain_block_crc};
use crate::backend::format::{TRAILER_LEN, Trailer};

/// Bytes held back from each push: a trailer, and the checksum of the block
/// before it. A block is handed out during pushes only once more bytes than
/// these follow it, which proves it is not the last; the last block waits
/// for the trailer.
const HOLD: usize = TRAILER_LEN + BLOCK_CRC_LEN;

/// Pieces of a block shorter than this are copied together rather than
/// held one by one (a reader fed a byte at a time holds few pieces).
const COALESCE: usize = 4096;

/// Checks a format 2 payload as it streams in, and hands out only stored
/// bytes whose block matched its checksum.
///
/// Feed it everything after the header (blocks, their checksums, the
/// trailer) with [`push`](Self::push), in chunks of any size, from 1 byte
/// up; take out the checked stored bytes with [`pop`](Self::pop) between
/// pushes; at the end of the bytes call [`finish`](Self::finish), which
/// checks the trailer and the last block, then [`pop`](Self::pop) the rest.
///
/// - A block is handed out whole, after its checksum matched: a byte of a
///   failing block is never handed out. Blocks come out as slices of the
///   pushed chunks (no copy), but for pieces under 4 KiB, which are
///   gathered by copying.
/// - The last block is handed out only once [`finish`](Self::finish) has
///   checked it and the trailer: its checksum, the stored length, the
///   checksum of the list of block checksums, and that the trailer belongs
///   to this header. So a stream whose end is missing hands out full blocks
///   only, then fails.
/// - It holds at most one block and 36 bytes, plus what was checked and
///   not yet popped.
/// - After an error every call returns that error; what had been checked
///   before it may still be popped.
///
/// A backend that read the trailer first (to learn the entry's lengths)
/// should compare it with the one [`finish`](Self::finish) returns.
///
/// A format 1 entry has no blocks: see [the module docs](super#format-1).
///
/// ```
/// use bytes::Bytes;
/// use etl_cache_core::backend::blocks::{BlockChecker, BlockError, BlockFramer, BlockSize};
///
/// let b = BlockSize::new(16).unwrap();
/// let mut framed = Vec::new();
/// let mut framer = BlockFramer::new(7, b);
/// framer.push(Bytes::from(vec![1u8; 40]), &mut framed);
/// framer.finish(40, &mut framed);
/// let mut framed: Vec<u8> = framed.concat();
/// framed[25] ^= 1; // in block 1
///
/// let mut checker = BlockChecker::new(7, b);
/// let err = checker.push(Bytes::from(framed)).unwrap_err();
/// assert_eq!(err, BlockError::Block { index: 1 });
/// // Block 0 checked and can be handed out; nothing of block 1.
/// assert_eq!(checker.pop().unwrap().len(), 16);
/// assert_eq!(checker.pop(), None);
/// ```
#[derive(Debug)]
pub struct BlockChecker {
    blocks: Blocks,
    /// The last bytes pushed, not yet known to be blocks rather than the
    /// trailer.
    hold: BytesMut,
    /// Checked stored bytes, not yet popped.
    ready: VecDeque<Bytes>,
    state: State,
}

#[derive(Debug)]
enum State {
    Open,
    Failed(BlockError),
    Finished(Trailer),
}

/// Cuts bytes known to be blocks and checksums (not the trailer) into
/// blocks and checks each.
#[derive(Debug)]
struct Blocks {
    header_crc: u32,
    block_size: BlockSize,
    /// The block being read: its bytes so far (those in `small` last), and
    /// the bytes of its checksum so far.
    pieces: Vec<Bytes>,
    small: BytesMut,
    len: usize,
    crc: [u8; BLOCK_CRC_LEN],
    crc_len: usize,
    /// The blocks checked so far: their count, the checksum of their
    /// checksums and their stored bytes; and all bytes taken in.
    index: u64,
    list_crc: u32,
    stored_len: u64,
    framed_len: u64,
}

impl Blocks {
    /// Takes in the next framed bytes; puts each block they complete, once
    /// checked, in `out`.
    fn take(&mut self, mut bytes: Bytes, out: &mut VecDeque<Bytes>) -> Result<(), BlockError> {
        self.framed_len += bytes.len() as u64;
        let full = self.block_size.get_usize();
        while !bytes.is_empty() {
            if self.len < full {
                let piece = bytes.split_to(bytes.len().min(full - self.len));
                self.push_piece(piece);
            } else {
                let n = bytes.len().min(BLOCK_CRC_LEN - self.crc_len);
                self.crc[self.crc_len..self.crc_len + n].copy_from_slice(&bytes[..n]);
                bytes.advance(n);
                self.crc_len += n;
                if self.crc_len == BLOCK_CRC_LEN {
                    self.end_block(out)?;
                }
            }
        }
        Ok(())
    }

    fn push_piece(&mut self, piece: Bytes) {
        self.len += piece.len();
        if piece.len() < COALESCE {
            self.small.extend_from_slice(&piece);
            if self.small.len() >= COALESCE {
                self.pieces.push(self.small.split().freeze());
            }
        } else {
            self.flush_small();
            self.pieces.push(piece);
        }
    }

    fn flush_small(&mut self) {
        if !self.small.is_empty() {
            self.pieces.push(self.small.split().freeze());
        }
    }

    /// Checks the block read (its checksum complete) and moves it to `out`.
    fn end_block(&mut self, out: &mut VecDeque<Bytes>) -> Result<(), BlockError> {
        self.flush_small();
        let expected = u32::from_le_bytes(self.crc);
        let crc = self
            .pieces
            .iter()
            .fold(block_seed(self.header_crc, self.index), |crc, p| {
                crc32c::crc32c_append(crc, p)
            });
        if crc != expected {
            return Err(BlockError::Block { index: self.index });
        }
        self.list_crc = chain_block_crc(self.list_crc, crc);
        self.stored_len += self.len as u64;
        self.index += 1;
        self.len = 0;
        self.crc_len = 0;
        out.extend(self.pieces.drain(..));
        Ok(())
    }

    /// Ends a short last block: its checksum is in its last 4 bytes read.
    fn end_short_block(&mut self, out: &mut VecDeque<Bytes>) -> Result<(), BlockError> {
        let read = self.len + self.crc_len;
        if read == 0 {
            return Ok(());
        }
        if read <= BLOCK_CRC_LEN {
            return Err(BlockError::Framing {
                framed_len: self.framed_len,
            });
        }
        // The checksum's first bytes were taken as the block's last.
        self.flush_small();
        let mut need = BLOCK_CRC_LEN - self.crc_len;
        self.crc.copy_within(..self.crc_len, need);
        while need > 0 {
            let last = self.pieces.last_mut().expect("more bytes than a checksum");
            let n = need.min(last.len());
            let tail = last.split_off(last.len() - n);
            self.crc[need - n..need].copy_from_slice(&tail);
            need -= n;
            self.len -= n;
            if last.is_empty() {
                self.pieces.pop();
            }
        }
        self.crc_len = BLOCK_CRC_LEN;
        self.end_block(out)
    }
}

impl BlockChecker {
    /// A checker for the entry whose header's checksum is `header_crc` and
    /// whose blocks are `block_size` (both from its header).
    pub fn new(header_crc: u32, block_size: BlockSize) -> Self {
        BlockChecker {
            blocks: Blocks {
                header_crc,
                block_size,
                pieces: Vec::new(),
                small: BytesMut::new(),
                len: 0,
                crc: [0; BLOCK_CRC_LEN],
                crc_len: 0,
                index: 0,
                list_crc: 0,
                stored_len: 0,
                framed_len: 0,
            },
            hold: BytesMut::new(),
            ready: VecDeque::new(),
            state: State::Open,
        }
    }

    /// Stored bytes checked so far (popped or not).
    pub fn checked_len(&self) -> u64 {
        self.blocks.stored_len
    }

    /// Takes in the next framed bytes. Blocks they complete, but the last,
    /// are checked and can then be [popped](Self::pop).
    ///
    /// # Errors
    ///
    /// When a block fails its checksum; then, and after any earlier error,
    /// the error.
    ///
    /// # Panics
    ///
    /// When called after [`finish`](Self::finish) succeeded.
    pub fn push(&mut self, chunk: Bytes) -> Result<(), BlockError> {
        match &self.state {
            State::Open => {}
            State::Failed(e) => return Err(e.clone()),
            State::Finished(_) => panic!("BlockChecker::push after finish"),
        }
        let released = if chunk.len() >= HOLD {
            let mut chunk = chunk;
            let old = self.hold.split().freeze();
            let rest = chunk.split_off(chunk.len() - HOLD);
            self.hold.extend_from_slice(&rest);
            [old, chunk]
        } else {
            self.hold.extend_from_slice(&chunk);
            let over = self.hold.len().saturating_sub(HOLD);
            [self.hold.split_to(over).freeze(), Bytes::new()]
        };
        for bytes in released {
            if let Err(e) = self.blocks.take(bytes, &mut self.ready) {
                self.state = State::Failed(e.clone());
                return Err(e);
            }
        }
        Ok(())
    }

    /// Ends the bytes: checks the last block and the trailer, and returns
    /// the trailer. The last block can then be [popped](Self::pop).
    ///
    /// # Errors
    ///
    /// What failed: the last block, the trailer, or the trailer against the
    /// blocks and the header.
    pub fn finish(&mut self) -> Result<Trailer, BlockError> {
        match &self.state {
            State::Open => {}
            State::Failed(e) => return Err(e.clone()),
            State::Finished(t) => return Ok(*t),
        }
        let mut last = VecDeque::new();
        let result = self.finish_into(&mut last);
        self.state = match &result {
            Ok(t) => {
                self.ready.extend(last);
                State::Finished(*t)
            }
            Err(e) => State::Failed(e.clone()),
        };
        result
    }

    fn finish_into(&mut self, last: &mut VecDeque<Bytes>) -> Result<Trailer, BlockError> {
        let Some(framed) = self.hold.len().checked_sub(TRAILER_LEN) else {
            return Err(BlockError::Truncated {
                len: self.blocks.framed_len + self.hold.len() as u64,
            });
        };
        let rest = self.hold.split_to(framed).freeze();
        self.blocks.take(rest, last)?;
        let trailer =
            Trailer::decode(&self.hold).map_err(|reason| BlockError::Trailer { reason })?;
        if trailer.header_crc != self.blocks.header_crc {
            return Err(BlockError::OtherHeader);
        }
        self.blocks.end_short_block(last)?;
        if trailer.stored_len != self.blocks.stored_len {
            return Err(BlockError::StoredLength {
                trailer: trailer.stored_len,
                found: self.blocks.stored_len,
            });
        }
        if trailer.payload_crc != self.blocks.list_crc {
            return Err(BlockError::BlockList);
        }
        Ok(trailer)
    }

    /// The next checked stored bytes, if any; in order, a block at a time
    /// (a block may come in several pieces).
    pub fn pop(&mut self) -> Option<Bytes> {
        self.ready.pop_front()
    }
}
