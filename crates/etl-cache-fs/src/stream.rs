//! Streamed reads: no byte is handed out before it was checked.
//!
//! - A small entry was read whole and checked when it was opened
//!   (`Inner::open_stream`); it is sent from memory.
//! - A format 2 entry is read a block at a time, each block checked against
//!   its checksum before any of its bytes leaves the reading thread; the
//!   stream chains the block checksums in order and checks them against the
//!   trailer before it hands out the last block. An uncompressed one is read
//!   by two threads where it is large and the machine has two cores or more
//!   (each reads and checks every other block while it is still in its
//!   core's cache), and the stream cuts the caller's chunks from the checked
//!   blocks. A compressed one is read by one thread, which decompresses
//!   checked blocks only.
//! - A format 1 entry (written by an older version) has one checksum, at its
//!   end: its payload is read through and checked first, then streamed (and
//!   checked again on the way). Such entries are read twice.
//!
//! Memory stays at about a block per reading thread plus the blocks in the
//! channels, whatever the entry's size.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use etl_cache_core::backend::Rechunker;
use etl_cache_core::backend::codec::{CrcChain, PayloadReader};
use etl_cache_core::backend::format::Layout;
use etl_cache_core::{ByteStream, Codec, Error};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::blocks::{BlockFail, Blocks, Chain, CheckedBlocks, Pool};
use crate::fault::Point;
use crate::inner::{CHANNEL_CHUNKS, Inner};
use crate::read::Opened;
use crate::remove::Bad;
use crate::sys;
use crate::usage::Wait;

/// What a reading thread sends to the stream.
pub(crate) enum Piece {
    /// Logical bytes, in chunks of the caller's size: checked, but for a
    /// format 1 payload streamed with `End(Some(..))`, whose check the
    /// stream finishes (after the first pass checked it already).
    Data(Bytes),
    /// Block `index` of an uncompressed format 2 payload, checked against
    /// its checksum `crc`.
    Block {
        index: u64,
        data: Bytes,
        crc: u32,
    },
    Failed(io::Error),
    /// Every chunk was sent. `None`: the thread checked the payload.
    /// `Some`: the stream checks it against this.
    End(Option<Check>),
}

/// What an uncompressed format 1 payload streamed from its file must add up
/// to.
#[derive(Clone, Copy)]
pub(crate) struct Check {
    crc: u32,
    stored_len: u64,
    /// The file's identity, so that a corrupt one is removed only if it is
    /// still the entry (see `Inner::remove_if_bad`).
    id: (u64, u64),
}

/// Entries shorter than this are read by one thread: a second one would
/// cost more to start than it saves.
const SPLIT_MIN: u64 = 4 << 20;

/// The threads of a split read.
const READERS: usize = 2;

/// Blocks in flight in each channel between a reading thread and the
/// stream.
const CHANNEL_BLOCKS: usize = 2;

/// Whether a split read can run in parallel here.
fn several_cores() -> bool {
    static SEVERAL: OnceLock<bool> = OnceLock::new();
    *SEVERAL.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() >= READERS))
}

/// Starts reading an opened entry in the background; the stream of its
/// logical bytes in chunks of exactly `chunk_size` (the last one shorter).
pub(crate) fn start(
    inner: Arc<Inner>,
    key: String,
    hash: String,
    o: Opened,
    chunk_size: usize,
) -> ByteStream {
    let blocks = match Blocks::of(&o) {
        Some(b) if o.meta.codec == Codec::None => b,
        _ => {
            // One thread: from memory, a compressed format 2 entry, or a
            // format 1 entry.
            let sum = (o.checked.is_none()
                && o.framing.layout == Layout::Whole
                && o.meta.codec == Codec::None)
                .then(|| CrcChain::new(chunk_size as u64));
            let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
            let (reader, k, h) = (inner.clone(), key.clone(), hash.clone());
            tokio::task::spawn_blocking(move || reader.stream_entry(&k, &h, o, chunk_size, tx));
            return receive(inner, key, hash, vec![rx], sum, None, chunk_size);
        }
    };
    let readers = if sys::POSITIONAL_READS
        && blocks.stored_len >= SPLIT_MIN
        && blocks.count() >= 2 * READERS as u64
        && several_cores()
    {
        tracing::trace!(key = %key, len = blocks.stored_len, "streaming with {READERS} readers");
        READERS
    } else {
        1
    };
    let chain = Chain::new(&blocks);
    let file = Arc::new(o.file);
    let mut rxs = Vec::with_capacity(readers);
    for nth in 0..readers {
        let (tx, rx) = mpsc::channel(CHANNEL_BLOCKS);
        let (reader, file, k, h) = (inner.clone(), file.clone(), key.clone(), hash.clone());
        tokio::task::spawn_blocking(move || {
            reader.stream_blocks(&k, &h, &file, blocks, nth, readers, tx)
        });
        rxs.push(rx);
    }
    receive(inner, key, hash, rxs, None, Some(chain), chunk_size)
}

impl Inner {
    /// Removes an entry found corrupt (if it is still the file `id`) and
    /// returns the error that ends its stream.
    fn corrupt_removed(&self, key: &str, hash: &str, id: (u64, u64), why: String) -> io::Error {
        self.remove_if_bad(Some(key), hash, id, Bad::Corrupt, Wait::Timeout);
        io::Error::new(io::ErrorKind::InvalidData, self.corrupt(key, why))
    }

    /// One of `readers` threads reading an uncompressed format 2 payload:
    /// sends blocks `nth`, `nth + readers`, ..., each once checked. Stops at
    /// the first block that fails (sending why), or when the stream is
    /// dropped.
    #[allow(clippy::too_many_arguments)] // the thread's share of the read, named at its one call
    fn stream_blocks(
        &self,
        key: &str,
        hash: &str,
        file: &File,
        blocks: Blocks,
        nth: usize,
        readers: usize,
        tx: mpsc::Sender<Piece>,
    ) {
        let pool = blocks.pool();
        let mut index = nth as u64;
        while index < blocks.count() {
            let read = self
                .fault(Point::Read)
                .map_err(BlockFail::Io)
                .and_then(|()| blocks.read(file, &pool, index));
            let piece = match read {
                Ok((data, crc)) => Piece::Block { index, data, crc },
                Err(BlockFail::Io(e)) => Piece::Failed(e),
                Err(BlockFail::Corrupt(why)) => {
                    Piece::Failed(self.corrupt_removed(key, hash, blocks.id, why))
                }
            };
            let failed = matches!(piece, Piece::Failed(_));
            if tx.blocking_send(piece).is_err() || failed {
                return;
            }
            index += readers as u64;
        }
    }

    /// Sends the logical bytes of an opened entry to `tx` in chunks of
    /// exactly `chunk_size` (the last one shorter), then `Piece::End`. Runs
    /// on a blocking thread until then, or until the stream is dropped.
    pub(crate) fn stream_entry(
        &self,
        key: &str,
        hash: &str,
        o: Opened,
        chunk_size: usize,
        tx: mpsc::Sender<Piece>,
    ) {
        let id = o.id();
        let last = match self.send_entry(key, hash, o, id, chunk_size, &tx) {
            Ok(Some(end)) => Piece::End(end),
            Ok(None) => return, // the stream was dropped
            Err(e) => Piece::Failed(e),
        };
        let _ = tx.blocking_send(last);
    }

    /// Reads a format 1 payload through and checks it against its trailer,
    /// before any of it is streamed: its one checksum covers the whole, so
    /// nothing can be handed out before the end has been read. One buffer,
    /// reused: memory stays bounded whatever the size.
    fn check_whole_payload(&self, o: &Opened) -> io::Result<Result<(), String>> {
        let mut buf = vec![0u8; (1 << 20).min(o.meta.stored_len.max(1) as usize)];
        let mut crc = CrcChain::new(buf.len() as u64);
        let mut at = 0u64;
        while at < o.meta.stored_len {
            self.fault(Point::Read)?;
            let want = buf.len().min((o.meta.stored_len - at) as usize);
            let n = sys::fill_at(&o.file, &mut buf[..want], o.header_len + at)?;
            if n < want {
                return Ok(Err("entry is shorter than its size".into()));
            }
            crc.append(&buf[..n]);
            at += n as u64;
        }
        if crc.crc() != o.framing.trailer.payload_crc {
            return Ok(Err("payload checksum mismatch".into()));
        }
        Ok(Ok(()))
    }

    /// The body of [`Inner::stream_entry`]: `Ok(None)` when the receiver went
    /// away, else what `Piece::End` carries.
    fn send_entry(
        &self,
        key: &str,
        hash: &str,
        o: Opened,
        id: (u64, u64),
        chunk_size: usize,
        tx: &mpsc::Sender<Piece>,
    ) -> io::Result<Option<Option<Check>>> {
        let corrupt = |reason: String| self.corrupt_removed(key, hash, id, reason);
        if o.checked.is_none() && o.framing.layout == Layout::Whole {
            // A format 1 entry: checked whole before its first byte goes.
            if let Err(why) = self.check_whole_payload(&o)? {
                return Err(corrupt(why));
            }
        }
        let blocks = Blocks::of(&o);
        let Opened {
            mut file,
            meta,
            framing,
            header_len,
            checked,
            ..
        } = o;
        let send = |chunk: Bytes| tx.blocking_send(Piece::Data(chunk)).is_ok();
        // A small entry was read whole and checked (see `open_stream`): it
        // is sent from memory, never from a file a set may recycle
        // meanwhile.
        if let (Some(stored), Codec::None) = (&checked, meta.codec) {
            let mut rest = stored.clone();
            while !rest.is_empty() {
                self.fault(Point::Read)?;
                if !send(rest.split_to(chunk_size.min(rest.len()))) {
                    return Ok(None);
                }
            }
            return Ok(Some(None));
        }
        // No buffer larger than the entry: a chunk size far above it must
        // not allocate (and zero) that much.
        let longest = meta.logical_len.max(meta.stored_len).max(1);
        let chunk_size = chunk_size.min(usize::try_from(longest).unwrap_or(usize::MAX));
        let pool = Pool::new(chunk_size);
        if meta.codec == Codec::None {
            // A format 1 entry, checked above: straight from the file into
            // the pooled buffers, which are zeroed only when new; the stream
            // adds up the checksum again as the chunks pass.
            file.seek(SeekFrom::Start(header_len))?;
            let mut payload = (&mut file).take(meta.stored_len);
            let mut pos = header_len;
            loop {
                self.fault(Point::Read)?;
                let mut buf = pool.take();
                let start = Pool::skew(&buf, pos);
                let n = fill(&mut payload, &mut buf[start..start + chunk_size])?;
                if n > 0 && !send(pool.chunk(buf, start..start + n)) {
                    return Ok(None);
                }
                if n < chunk_size {
                    break;
                }
                pos += n as u64;
            }
            return Ok(Some(Some(Check {
                crc: framing.trailer.payload_crc,
                stored_len: meta.stored_len,
                id,
            })));
        }
        // Compressed: only checked stored bytes reach the decompressor.
        let file = &file;
        let (source, by_blocks): (Box<dyn Read + Send + '_>, bool) = match (checked, blocks) {
            (Some(stored), _) => (Box::new(io::Cursor::new(stored)), false),
            (None, Some(blocks)) => (
                Box::new(CheckedBlocks {
                    file,
                    blocks,
                    pool: blocks.pool(),
                    chain: Chain::new(&blocks),
                    index: 0,
                    current: Bytes::new(),
                }),
                true,
            ),
            (None, None) => {
                let mut f = file;
                f.seek(SeekFrom::Start(header_len))?;
                (Box::new(f.take(meta.stored_len)), false)
            }
        };
        let mut reader = PayloadReader::new(meta.codec, source)?;
        loop {
            self.fault(Point::Read)?;
            let mut buf = pool.take();
            let filled = match fill(&mut reader, &mut buf[..chunk_size]) {
                // A block failed its check (the source says so: any other
                // failure of the source is the file system's).
                Err(e) if e.kind() == io::ErrorKind::InvalidData && reader.source_failed() => {
                    if by_blocks {
                        return Err(corrupt(e.to_string()));
                    }
                    return Err(e);
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidData && !reader.source_failed() => {
                    return Err(corrupt(e.to_string()));
                }
                r => r?,
            };
            if filled > 0 && !send(pool.chunk(buf, 0..filled)) {
                return Ok(None);
            }
            if filled < chunk_size {
                break;
            }
        }
        let totals = reader.finish()?;
        if totals.stored_len != meta.stored_len
            || (framing.layout == Layout::Whole && totals.crc != framing.trailer.payload_crc)
        {
            return Err(corrupt("payload checksum mismatch".into()));
        }
        if totals.logical_len != meta.logical_len {
            return Err(corrupt(format!(
                "payload is {} bytes after decompression, {} expected",
                totals.logical_len, meta.logical_len
            )));
        }
        Ok(Some(None))
    }
}

/// Reads into `buf` until it is full or the reader ends; the bytes read.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The stream a `get_stream` returns: the pieces from the readers' channels
/// in turn (piece `i` comes from `rxs[i % rxs.len()]`). With `sum`, the
/// checksum of a format 1 payload is put together on the way; with `chain`,
/// blocks of a format 2 payload come in, their checksums are chained, and
/// the caller's chunks are cut from them (`chunk_size`), the last block's
/// bytes only once the chain matched the trailer.
fn receive(
    inner: Arc<Inner>,
    key: String,
    hash: String,
    rxs: Vec<mpsc::Receiver<Piece>>,
    sum: Option<CrcChain>,
    chain: Option<Chain>,
    chunk_size: usize,
) -> ByteStream {
    struct State {
        inner: Arc<Inner>,
        key: String,
        hash: String,
        rxs: Vec<mpsc::Receiver<Piece>>,
        /// The pieces of the last batch from each channel, last first.
        batches: Vec<Vec<Piece>>,
        /// The channel of the next piece.
        next: usize,
        sum: Option<CrcChain>,
        chain: Option<Chain>,
        rechunk: Rechunker,
        chunk_size: usize,
        /// Every block came and checked: what is held is the rest.
        blocks_done: bool,
        /// The error that ends the stream once the checked bytes held
        /// were handed out.
        failed: Option<io::Error>,
        done: bool,
    }
    impl State {
        /// Ends the stream; a reader still sending finds its channel
        /// closed and stops.
        fn finish(&mut self) {
            self.done = true;
            self.rxs.clear();
            self.batches.clear();
            self.rechunk = Rechunker::new();
        }
    }
    let batches = rxs
        .iter()
        .map(|rx| Vec::with_capacity(rx.max_capacity()))
        .collect();
    let state = State {
        inner,
        key,
        hash,
        rxs,
        batches,
        next: 0,
        sum,
        chain,
        rechunk: Rechunker::new(),
        chunk_size,
        blocks_done: false,
        failed: None,
        done: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            let all = s.blocks_done || s.failed.is_some();
            if let Some(chunk) = s.rechunk.pop(s.chunk_size, all) {
                return Some((Ok(chunk), s));
            }
            if let Some(e) = s.failed.take() {
                s.finish();
                return Some((Err(e), s));
            }
            if s.blocks_done {
                s.finish();
                return None;
            }
            // Pieces are taken a batch at a time: releasing several slots
            // at once wakes the reading thread once per batch rather than
            // once per piece (see `write_stream`).
            let n = s.next;
            if s.batches[n].is_empty() {
                let limit = s.rxs[n].max_capacity();
                if s.rxs[n].recv_many(&mut s.batches[n], limit).await == 0 {
                    // The thread stopped without saying that it finished.
                    s.failed = Some(io::Error::other(format!(
                        "the reader of {} stopped before the end",
                        Error::display_key(&s.key)
                    )));
                    continue;
                }
                s.batches[n].reverse();
            }
            let piece = s.batches[n]
                .pop()
                .expect("a batch holds at least one piece");
            let check = match piece {
                Piece::Data(chunk) => {
                    if let Some(sum) = &mut s.sum {
                        sum.append(&chunk);
                    }
                    s.next = (n + 1) % s.rxs.len();
                    return Some((Ok(chunk), s));
                }
                Piece::Block { index, data, crc } => {
                    s.next = (n + 1) % s.rxs.len();
                    let chain = s.chain.as_mut().expect("blocks come to a chain");
                    match chain.add(index, crc) {
                        Ok(last) => {
                            s.rechunk.push(data);
                            s.blocks_done = last;
                        }
                        Err(why) => {
                            // The block is not handed out.
                            let (inner, key, hash, id) =
                                (s.inner.clone(), s.key.clone(), s.hash.clone(), chain.id);
                            let e = crate::inner::blocking(move || {
                                inner.corrupt_removed(&key, &hash, id, why)
                            })
                            .await;
                            s.failed = Some(e);
                        }
                    }
                    continue;
                }
                Piece::Failed(e) => {
                    s.failed = Some(e);
                    continue;
                }
                Piece::End(None) => {
                    s.finish();
                    return None;
                }
                // The reader of the next chunk has none: every chunk was sent.
                Piece::End(Some(check)) => check,
            };
            s.finish();
            let sum = s.sum.take().expect("a stream that checks has its sum");
            if sum.len() == check.stored_len && sum.crc() == check.crc {
                return None;
            }
            let (inner, key, hash) = (s.inner.clone(), s.key.clone(), s.hash.clone());
            let e = crate::inner::blocking(move || {
                inner.corrupt_removed(&key, &hash, check.id, "payload checksum mismatch".into())
            })
            .await;
            return Some((Err(e), s));
        }
    })
    .boxed()
}
