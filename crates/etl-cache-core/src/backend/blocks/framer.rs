//! The writer's side: stored bytes in, framed bytes out.

use bytes::Bytes;

use super::{BLOCK_CRC_LEN, BlockSize, block_seed, chain_block_crc};
use crate::backend::format::Trailer;

/// Cuts stored bytes into blocks and appends each block's checksum, for an
/// entry written front to back (a file, a multipart upload).
///
/// Feed it the stored (already compressed) bytes in chunks of any size with
/// [`push`](Self::push); write what it appends to `out`, in order, after the
/// header; then [`finish`](Self::finish) appends the last checksum and the
/// encoded trailer. It holds no bytes: a block passes through as slices of
/// the chunks, checksummed on the way, and its checksum is appended as soon
/// as its last byte has passed.
///
/// ```
/// use bytes::Bytes;
/// use etl_cache_core::backend::blocks::{BlockChecker, BlockFramer, BlockSize};
///
/// let block_size = BlockSize::new(16).unwrap();
/// let header_crc = 0x1234_5678; // from `Header::encode_as`
/// let mut framer = BlockFramer::new(header_crc, block_size);
/// let mut framed = Vec::new();
/// framer.push(Bytes::from_static(b"one block and a half"), &mut framed);
/// let trailer = framer.finish(20, &mut framed);
/// assert_eq!(trailer.stored_len, 20);
///
/// let mut checker = BlockChecker::new(header_crc, block_size);
/// for chunk in framed {
///     checker.push(chunk).unwrap();
/// }
/// assert_eq!(checker.finish().unwrap(), trailer);
/// let mut back = Vec::new();
/// while let Some(piece) = checker.pop() {
///     back.extend_from_slice(&piece);
/// }
/// assert_eq!(back, b"one block and a half");
/// ```
#[derive(Debug, Clone)]
pub struct BlockFramer {
    header_crc: u32,
    block_size: BlockSize,
    /// The block being written: its index, its bytes so far, their checksum.
    index: u64,
    in_block: u64,
    crc: u32,
    /// The checksum of the checksums of the blocks written so far.
    list_crc: u32,
}

impl BlockFramer {
    /// A framer for the entry whose header's checksum is `header_crc`, with
    /// blocks of `block_size` (the one in that header).
    pub fn new(header_crc: u32, block_size: BlockSize) -> Self {
        BlockFramer {
            header_crc,
            block_size,
            index: 0,
            in_block: 0,
            crc: 0,
            list_crc: 0,
        }
    }

    /// Stored bytes framed so far (without the checksums).
    pub fn stored_len(&self) -> u64 {
        self.index * self.block_size.get() + self.in_block
    }

    /// Appends to `out` the framed bytes for `stored`: slices of it, and the
    /// checksum of each block it completes.
    pub fn push(&mut self, mut stored: Bytes, out: &mut impl Extend<Bytes>) {
        while !stored.is_empty() {
            let piece = stored.split_to(self.room(stored.len()));
            self.add(&piece);
            out.extend(Some(piece));
            if self.in_block == self.block_size.get() {
                out.extend(Some(Bytes::copy_from_slice(&self.end_block())));
            }
        }
    }

    /// [`push`](Self::push) for a writer that copies what it is handed (a
    /// buffered file): `emit` gets, in order, slices of `stored` and the
    /// checksum of each block completed, and nothing is allocated. For a
    /// whole value of 1 KB written to a file, the allocations of `push`
    /// (a buffer per checksum, a list of pieces) were a tenth of the
    /// instructions of the framing (callgrind).
    ///
    /// # Errors
    ///
    /// The first error of `emit`; the framer is then of no further use.
    pub fn push_slices<E>(
        &mut self,
        mut stored: &[u8],
        mut emit: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        while !stored.is_empty() {
            let (piece, rest) = stored.split_at(self.room(stored.len()));
            self.add(piece);
            emit(piece)?;
            stored = rest;
            if self.in_block == self.block_size.get() {
                emit(&self.end_block())?;
            }
        }
        Ok(())
    }

    /// How many of the next `available` bytes belong to the current block;
    /// starts its checksum when it is a new one.
    fn room(&mut self, available: usize) -> usize {
        if self.in_block == 0 {
            self.crc = block_seed(self.header_crc, self.index);
        }
        available.min((self.block_size.get() - self.in_block) as usize)
    }

    fn add(&mut self, piece: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, piece);
        self.in_block += piece.len() as u64;
    }

    /// Closes the current block: its checksum, to write after it.
    fn end_block(&mut self) -> [u8; BLOCK_CRC_LEN] {
        self.list_crc = chain_block_crc(self.list_crc, self.crc);
        self.index += 1;
        self.in_block = 0;
        self.crc.to_le_bytes()
    }

    /// Ends the payload: appends to `out` the last block's checksum (when
    /// that block is short) and the encoded trailer, and returns the
    /// trailer. `logical_len` is the payload's length before compression.
    pub fn finish(self, logical_len: u64, out: &mut impl Extend<Bytes>) -> Trailer {
        let trailer = self
            .finish_slices(logical_len, |crc| {
                out.extend(Some(Bytes::copy_from_slice(crc)));
                Ok::<_, std::convert::Infallible>(())
            })
            .unwrap_or_else(|never| match never {});
        out.extend(Some(Bytes::copy_from_slice(&trailer.encode())));
        trailer
    }

    /// Ends the payload for [`push_slices`](Self::push_slices): `emit` gets
    /// the last block's checksum (when that block is short); the trailer is
    /// returned, not emitted, for the writer to encode where it goes.
    ///
    /// # Errors
    ///
    /// The error of `emit`.
    pub fn finish_slices<E>(
        mut self,
        logical_len: u64,
        mut emit: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<Trailer, E> {
        let stored_len = self.stored_len();
        if self.in_block > 0 {
            emit(&self.end_block())?;
        }
        Ok(Trailer {
            logical_len,
            stored_len,
            payload_crc: self.list_crc,
            header_crc: self.header_crc,
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::backend::blocks::block_crc;

    #[test]
    fn full_blocks_pass_as_slices_of_the_input() {
        let b = BlockSize::new(16).unwrap();
        let input = Bytes::from(vec![7u8; 40]);
        let mut f = BlockFramer::new(9, b);
        let mut out = Vec::new();
        f.push(input.clone(), &mut out);
        // Two full blocks, each with its checksum; the short third waits.
        let lens: Vec<usize> = out.iter().map(Bytes::len).collect();
        assert_eq!(lens, [16, 4, 16, 4, 8]);
        assert_eq!(out[0].as_ptr(), input.as_ptr(), "no copy");
        assert_eq!(out[1][..], block_crc(9, 0, &input[..16]).to_le_bytes());
        assert_eq!(out[3][..], block_crc(9, 1, &input[16..32]).to_le_bytes());
        assert_eq!(f.stored_len(), 40);
        let t = f.finish(99, &mut out);
        assert_eq!(out[5][..], block_crc(9, 2, &input[32..]).to_le_bytes());
        assert_eq!(out[6][..], t.encode());
        assert_eq!((t.logical_len, t.stored_len, t.header_crc), (99, 40, 9));
    }

    #[test]
    fn any_chunking_frames_the_same_bytes() {
        let b = BlockSize::new(16).unwrap();
        let data: Vec<u8> = (0..=255u8).cycle().take(70).collect();
        let whole = {
            let mut out = BytesMut::new();
            let mut f = BlockFramer::new(1, b);
            f.push(Bytes::from(data.clone()), &mut out);
            f.finish(70, &mut out);
            out
        };
        assert_eq!(whole.len(), 70 + 5 * 4 + 32);
        for step in [1, 3, 15, 16, 17, 33] {
            let mut out = BytesMut::new();
            let mut f = BlockFramer::new(1, b);
            for chunk in data.chunks(step) {
                f.push(Bytes::copy_from_slice(chunk), &mut out);
                f.push(Bytes::new(), &mut out);
            }
            f.finish(70, &mut out);
            assert_eq!(out, whole, "chunks of {step}");
        }
    }

    #[test]
    fn slices_frame_what_pieces_frame() {
        let b = BlockSize::new(16).unwrap();
        for len in [0usize, 1, 15, 16, 17, 40, 48, 70] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut pieces = Vec::new();
            let mut f = BlockFramer::new(3, b);
            f.push(Bytes::from(data.clone()), &mut pieces);
            let t = f.finish(len as u64 + 1, &mut pieces);
            let framed = pieces.concat();
            for step in [1, 5, 16, 100] {
                let mut out = Vec::new();
                let mut f = BlockFramer::new(3, b);
                for chunk in data.chunks(step) {
                    f.push_slices(chunk, |s| {
                        out.extend_from_slice(s);
                        Ok::<_, ()>(())
                    })
                    .unwrap();
                }
                let t2 = f
                    .finish_slices(len as u64 + 1, |s| {
                        out.extend_from_slice(s);
                        Ok::<_, ()>(())
                    })
                    .unwrap();
                assert_eq!(t2, t, "len {len} step {step}");
                // The same bytes, but the trailer, which is returned.
                assert_eq!(out, framed[..framed.len() - 32], "len {len} step {step}");
            }
        }
        // An error of the writer stops the framing there.
        let mut f = BlockFramer::new(3, b);
        let mut calls = 0;
        let r = f.push_slices(&[0u8; 40], |_| {
            calls += 1;
            if calls == 2 { Err("disk full") } else { Ok(()) }
        });
        assert_eq!((r, calls), (Err("disk full"), 2));
    }

    #[test]
    fn an_empty_payload_has_no_block() {
        let mut out = Vec::new();
        let t = BlockFramer::new(5, BlockSize::DEFAULT).finish(0, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((t.stored_len, t.payload_crc), (0, 0));
    }
}
