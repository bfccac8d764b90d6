//! The blocks of a format 2 entry read from its file by position, each
//! checked against its checksum, the chain of checksums against the
//! trailer; and the pool of buffers they are read into.

use std::fs::File;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use etl_cache_core::backend::blocks::{BLOCK_CRC_LEN, BlockSize, chain_block_crc, verify_block};
use etl_cache_core::backend::format::{Layout, TRAILER_LEN, Trailer};

use crate::inner::CHANNEL_CHUNKS;
use crate::read::Opened;
use crate::sys;

/// How far a chunk may start into its buffer (see `Pool::skew`).
const SKEW: usize = 64;

/// Buffers a chunk gives back when the caller drops it, for the next reads
/// of the same stream: the reads then land in memory that is already mapped
/// and warm instead of in freshly faulted pages each time.
#[derive(Clone)]
pub(crate) struct Pool {
    free: Arc<Mutex<Vec<Vec<u8>>>>,
    /// The length of every buffer: a chunk and `SKEW`.
    size: usize,
}

/// Buffers a pool keeps at most: about as many as can be in flight (in the
/// channel, in the stream's batch, one being read).
const POOL_KEEP: usize = 2 * CHANNEL_CHUNKS + 2;

impl Pool {
    /// A pool of buffers for reads of up to `len` bytes.
    pub(crate) fn new(len: usize) -> Self {
        Pool {
            free: Arc::new(Mutex::new(Vec::new())),
            size: len.saturating_add(SKEW),
        }
    }

    /// A buffer of `SKEW + len` bytes. A reused one keeps the bytes of its
    /// last chunk: only a new one is zeroed, once, before its first read.
    pub(crate) fn take(&self) -> Vec<u8> {
        let reused = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut buf = reused.unwrap_or_else(|| Vec::with_capacity(self.size));
        buf.resize(self.size, 0);
        buf
    }

    /// Where in a buffer to read the byte at file offset `pos`, so that it
    /// lands at the same place in a cache line as it has in the page cache:
    /// the kernel's copy runs faster between equally aligned addresses than
    /// with the header's odd length between them.
    pub(crate) fn skew(buf: &[u8], pos: u64) -> usize {
        (pos as usize).wrapping_sub(buf.as_ptr() as usize) % SKEW
    }

    /// A chunk of `buf[range]` whose buffer returns to the pool when the
    /// last handle on the chunk is dropped.
    pub(crate) fn chunk(&self, buf: Vec<u8>, range: std::ops::Range<usize>) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            range,
            pool: self.clone(),
        })
    }
}

struct Pooled {
    buf: Vec<u8>,
    range: std::ops::Range<usize>,
    pool: Pool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let mut free = self.pool.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < POOL_KEEP {
            free.push(buf);
        }
    }
}

/// The blocks of a format 2 entry read from its file, by their position.
#[derive(Clone, Copy)]
pub(crate) struct Blocks {
    /// Where the payload starts in the file.
    base: u64,
    size: BlockSize,
    pub(crate) stored_len: u64,
    header_crc: u32,
    /// The trailer read when the entry was opened.
    trailer: Trailer,
    /// The file's identity, for the removal of a corrupt entry.
    pub(crate) id: (u64, u64),
}

/// Why a block could not be handed out.
pub(crate) enum BlockFail {
    Io(io::Error),
    Corrupt(String),
}

impl Blocks {
    /// The blocks of an opened entry, when it is format 2 read from its file.
    pub(crate) fn of(o: &Opened) -> Option<Blocks> {
        match o.framing.layout {
            Layout::Blocks(size) if o.checked.is_none() => Some(Blocks {
                base: o.header_len,
                size,
                stored_len: o.meta.stored_len,
                header_crc: o.framing.header_crc,
                trailer: o.framing.trailer,
                id: o.id(),
            }),
            _ => None,
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.size.block_count(self.stored_len)
    }

    /// A pool for the reads of [`Blocks::read`]: a block, its checksum and
    /// a trailer (no larger than the entry's, for an entry of one block).
    pub(crate) fn pool(&self) -> Pool {
        let block = (self.size.get() as usize).min(self.stored_len as usize);
        Pool::new(block + BLOCK_CRC_LEN + TRAILER_LEN)
    }

    /// Reads block `index` and checks it: its stored bytes (a slice of a
    /// pooled buffer) and its checksum. The last block is read with the
    /// trailer after it, which must still be the one read at the opening.
    pub(crate) fn read(
        &self,
        file: &File,
        pool: &Pool,
        index: u64,
    ) -> Result<(Bytes, u32), BlockFail> {
        let span = self
            .size
            .span(index, self.stored_len)
            .expect("an index below the count");
        let last = index + 1 == self.count();
        let len = (span.framed.end - span.framed.start) as usize;
        let want = len + if last { TRAILER_LEN } else { 0 };
        let pos = self.base + span.framed.start;
        let mut buf = pool.take();
        let start = Pool::skew(&buf, pos);
        let n = sys::fill_at(file, &mut buf[start..start + want], pos).map_err(BlockFail::Io)?;
        if n < want {
            return Err(BlockFail::Corrupt("entry is shorter than its size".into()));
        }
        if last && buf[start + len..start + want] != self.trailer.encode() {
            return Err(BlockFail::Corrupt(
                "the trailer changed while the entry was read".into(),
            ));
        }
        let crc = u32::from_le_bytes(
            buf[start + len - BLOCK_CRC_LEN..start + len]
                .try_into()
                .expect("4 bytes"),
        );
        let framed = pool.chunk(buf, start..start + len);
        let data = verify_block(self.size, self.header_crc, index, framed)
            .map_err(|e| BlockFail::Corrupt(e.to_string()))?;
        Ok((data, crc))
    }
}

/// The checksums of a format 2 payload's blocks, chained in order, and what
/// the trailer says they add up to.
pub(crate) struct Chain {
    next: u64,
    count: u64,
    list_crc: u32,
    want: u32,
    pub(crate) id: (u64, u64),
}

impl Chain {
    pub(crate) fn new(b: &Blocks) -> Chain {
        Chain {
            next: 0,
            count: b.count(),
            list_crc: 0,
            want: b.trailer.payload_crc,
            id: b.id,
        }
    }

    /// Adds block `index`'s checksum. `Ok(true)` after the last block when
    /// the list matches the trailer (the last block may then be handed
    /// out); an error when it does not.
    pub(crate) fn add(&mut self, index: u64, crc: u32) -> Result<bool, String> {
        if index != self.next {
            return Err(format!(
                "block {index} came where block {} was due",
                self.next
            ));
        }
        self.list_crc = chain_block_crc(self.list_crc, crc);
        self.next += 1;
        if self.next < self.count {
            return Ok(false);
        }
        if self.list_crc != self.want {
            return Err("the list of block checksums does not match the trailer's".into());
        }
        Ok(true)
    }
}

/// The stored bytes of a format 2 payload read from its file, block by
/// block, each checked before its bytes are read out, and the last only
/// once the list of block checksums matched the trailer: a decompressor fed
/// from it never sees a byte that was not checked.
pub(crate) struct CheckedBlocks<'f> {
    pub(crate) file: &'f File,
    pub(crate) blocks: Blocks,
    pub(crate) pool: Pool,
    pub(crate) chain: Chain,
    pub(crate) index: u64,
    pub(crate) current: Bytes,
}

impl Read for CheckedBlocks<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.index == self.blocks.count() {
                return Ok(0);
            }
            let (data, crc) = match self.blocks.read(self.file, &self.pool, self.index) {
                Ok(read) => read,
                Err(BlockFail::Io(e)) => return Err(e),
                Err(BlockFail::Corrupt(why)) => return Err(corrupt_source(why)),
            };
            if let Err(why) = self.chain.add(self.index, crc) {
                return Err(corrupt_source(why));
            }
            self.index += 1;
            self.current = data;
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}

/// The error of a [`CheckedBlocks`] whose payload failed a check: the only
/// `InvalidData` it returns (the file system's errors have other kinds).
pub(crate) fn corrupt_source(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}
