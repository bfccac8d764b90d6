//! Cutting a stream of byte pieces into the chunk size a reader asked for:
//! a `get_stream` hands out chunks of `chunk_size` whatever the sizes of
//! the blocks, decoder outputs or network pieces its bytes arrive in.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Byte pieces waiting to be cut into chunks. A chunk that lies in one
/// piece is a slice of it (no copy); one that spans pieces is copied once,
/// into a buffer of its exact size.
#[derive(Debug, Default)]
pub struct Rechunker {
    pieces: VecDeque<Bytes>,
    len: usize,
}

impl Rechunker {
    /// An empty one.
    pub fn new() -> Rechunker {
        Rechunker::default()
    }

    /// Adds a piece behind those held (an empty one is ignored).
    pub fn push(&mut self, piece: Bytes) {
        if !piece.is_empty() {
            self.len += piece.len();
            self.pieces.push_back(piece);
        }
    }

    /// The bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no byte is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The next chunk of `size` bytes (`size` > 0), `None` while fewer are
    /// held; with `all` (the stream has ended), the last, shorter chunk
    /// too.
    pub fn pop(&mut self, size: usize, all: bool) -> Option<Bytes> {
        debug_assert!(size > 0, "chunks are at least one byte");
        if self.len == 0 || (self.len < size && !all) {
            return None;
        }
        let size = size.min(self.len);
        self.len -= size;
        let front = self.pieces.front_mut().expect("bytes are held");
        if front.len() >= size {
            let chunk = front.split_to(size);
            if front.is_empty() {
                self.pieces.pop_front();
            }
            return Some(chunk);
        }
        let mut chunk = BytesMut::with_capacity(size);
        while chunk.len() < size {
            let front = self.pieces.front_mut().expect("bytes are held");
            let n = front.len().min(size - chunk.len());
            chunk.extend_from_slice(&front.split_to(n));
            if front.is_empty() {
                self.pieces.pop_front();
            }
        }
        Some(chunk.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_come_out_in_order_at_the_asked_size() {
        let mut r = Rechunker::new();
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        // Pieces of uneven sizes, empty ones among them.
        let mut at = 0;
        for (i, n) in [0usize, 1, 4095, 0, 4096, 1000, 808].iter().enumerate() {
            r.push(Bytes::copy_from_slice(&data[at..at + n]));
            at += n;
            assert_eq!(r.len(), at, "piece {i}");
        }
        assert_eq!(at, data.len());
        let mut out = Vec::new();
        while let Some(c) = r.pop(4096, false) {
            assert_eq!(c.len(), 4096);
            out.extend_from_slice(&c);
        }
        assert_eq!(r.len(), 10_000 - 2 * 4096, "a short chunk waits for more");
        let last = r.pop(4096, true).expect("the rest once the stream ended");
        out.extend_from_slice(&last);
        assert!(r.is_empty() && r.pop(4096, true).is_none());
        assert_eq!(out, data);
    }

    #[test]
    fn a_chunk_inside_one_piece_is_a_slice_of_it() {
        let piece = Bytes::from(vec![7u8; 8192]);
        let mut r = Rechunker::new();
        r.push(piece.clone());
        let c = r.pop(4096, false).unwrap();
        assert_eq!(c.as_ptr(), piece.as_ptr(), "no copy");
        let c = r.pop(4096, false).unwrap();
        assert_eq!(c.as_ptr(), piece[4096..].as_ptr(), "no copy");
    }
}
