//! Streamed reads. A blocking thread reads the entry into a few reused
//! buffers and hands the chunks over a channel; an uncompressed entry's
//! checksum is computed as its chunks reach the caller, beside the reads
//! rather than between them, as `set_stream` does on the way in.
//!
//! A large uncompressed entry is read by two threads instead, each reading
//! every other chunk and checksumming it while it is still in cache; the
//! stream takes the chunks from them in turn and chains the checksums
//! ([`CrcChain`]). One thread copying from the page cache while another
//! checksums what it copied leaves the reads at about 0.8 of a plain copy
//! on two cores; two threads doing both bring them level with it.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use etl_cache_core::codec::{CrcChain, PayloadReader, crc32c};
use etl_cache_core::{ByteStream, Codec, Error};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::cache::{CHANNEL_CHUNKS, Inner};
use crate::fault::Point;
use crate::read::{Bad, Opened};
use crate::sys;
use crate::usage::Wait;

/// What the reading thread sends to the stream.
pub(crate) enum Piece {
    Data(Bytes),
    /// A chunk and its crc32c, from one of the threads of a split read.
    Summed(Bytes, u32),
    Failed(io::Error),
    /// Every chunk was sent. `None`: the thread checked the payload (a
    /// compressed one, or one read whole and checked before the stream
    /// started). `Some`: the stream checks it against this.
    End(Option<Check>),
}

/// What an uncompressed payload streamed from its file must add up to.
#[derive(Clone, Copy)]
pub(crate) struct Check {
    crc: u32,
    stored_len: u64,
    /// The file's identity, so that a corrupt one is removed only if it is
    /// still the entry (see `Inner::remove_if_bad`).
    id: (u64, u64),
}

/// How far a chunk may start into its buffer (see `Pool::skew`).
const SKEW: usize = 64;

/// Buffers a chunk gives back when the caller drops it, for the next reads
/// of the same stream: the reads then land in memory that is already mapped
/// and warm instead of in freshly faulted pages each time.
#[derive(Clone)]
struct Pool {
    free: Arc<Mutex<Vec<Vec<u8>>>>,
    /// The length of every buffer: a chunk and `SKEW`.
    size: usize,
}

/// Buffers a pool keeps at most: about as many as can be in flight (in the
/// channel, in the stream's batch, one being read).
const POOL_KEEP: usize = 2 * CHANNEL_CHUNKS + 2;

impl Pool {
    fn new(chunk_size: usize) -> Self {
        Pool {
            free: Arc::new(Mutex::new(Vec::new())),
            size: chunk_size.saturating_add(SKEW),
        }
    }

    /// A buffer of `SKEW + chunk` bytes. A reused one keeps the bytes of its
    /// last chunk: only a new one is zeroed, once, before its first read.
    fn take(&self) -> Vec<u8> {
        let reused = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut buf = reused.unwrap_or_else(|| Vec::with_capacity(self.size));
        buf.resize(self.size, 0);
        buf
    }

    /// Where in a buffer to read the byte at file offset `pos`, so that it
    /// lands at the same place in a cache line as it has in the page cache:
    /// the kernel's copy runs faster between equally aligned addresses than
    /// with the header's odd length between them.
    fn skew(buf: &[u8], pos: u64) -> usize {
        (pos as usize).wrapping_sub(buf.as_ptr() as usize) % SKEW
    }

    /// A chunk of `buf[range]` whose buffer returns to the pool when the
    /// last handle on the chunk is dropped.
    fn chunk(&self, buf: Vec<u8>, range: std::ops::Range<usize>) -> Bytes {
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

/// Whether the stream of an opened entry checks its checksum as the chunks
/// pass (`Piece::End(Some(..))`): an uncompressed entry read from its file.
/// A compressed one is checked by the reading thread, which decodes it; a
/// small one was read whole and checked when it was opened.
pub(crate) fn checked_by_stream(o: &Opened) -> bool {
    o.meta.codec == Codec::None && o.whole.is_none()
}

/// Entries shorter than this are read by one thread: a second one would
/// cost more to start than it saves.
const SPLIT_MIN: u64 = 4 << 20;

/// The threads of a split read.
const READERS: usize = 2;

/// Whether a split read can run in parallel here.
fn several_cores() -> bool {
    static SEVERAL: OnceLock<bool> = OnceLock::new();
    *SEVERAL.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() >= READERS))
}

/// Whether an opened entry is read by [`READERS`] threads: an uncompressed
/// one read from its file, long enough, and of a few chunks at least.
fn split(o: &Opened, chunk_size: usize) -> bool {
    sys::POSITIONAL_READS
        && checked_by_stream(o)
        && o.meta.stored_len >= SPLIT_MIN
        && o.meta.stored_len / chunk_size as u64 >= 2 * READERS as u64
        && several_cores()
}

/// What each thread of a split read needs to know.
#[derive(Clone, Copy)]
struct Part {
    /// Where the payload starts in the file, and its length.
    base: u64,
    len: u64,
    chunk_size: usize,
    crc: u32,
    known_id: Option<(u64, u64)>,
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
    if !split(&o, chunk_size) {
        let sum = checked_by_stream(&o).then(|| CrcChain::new(chunk_size as u64));
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let (reader, k, h) = (inner.clone(), key.clone(), hash.clone());
        tokio::task::spawn_blocking(move || reader.stream_entry(&k, &h, o, chunk_size, tx));
        return receive(inner, key, hash, vec![rx], sum);
    }
    tracing::trace!(key = %key, len = o.meta.stored_len, "streaming with {READERS} readers");
    let part = Part {
        base: o.header_len,
        len: o.meta.stored_len,
        chunk_size,
        crc: o.checksum,
        known_id: o.known_id,
    };
    let file = Arc::new(o.file);
    let mut rxs = Vec::with_capacity(READERS);
    for nth in 0..READERS {
        // The chunks in flight stay as many as with one reader.
        let (tx, rx) = mpsc::channel((CHANNEL_CHUNKS / READERS).max(1));
        let (reader, file) = (inner.clone(), file.clone());
        tokio::task::spawn_blocking(move || reader.stream_part(&file, part, nth, tx));
        rxs.push(rx);
    }
    receive(
        inner,
        key,
        hash,
        rxs,
        Some(CrcChain::new(chunk_size as u64)),
    )
}

impl Inner {
    /// Removes an entry found corrupt (if it is still the file `id`) and
    /// returns the error that ends its stream.
    fn corrupt_removed(&self, key: &str, hash: &str, id: (u64, u64), why: String) -> io::Error {
        self.remove_if_bad(Some(key), hash, id, Bad::Corrupt, Wait::Timeout);
        io::Error::new(io::ErrorKind::InvalidData, self.corrupt(key, why))
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

    /// One thread of a split read: sends chunks `nth`, `nth + READERS`, ...
    /// of the payload with their checksums, then `Piece::End`.
    fn stream_part(&self, file: &std::fs::File, part: Part, nth: usize, tx: mpsc::Sender<Piece>) {
        let last = match self.send_part(file, part, nth, &tx) {
            Ok(true) => Piece::End(Some(Check {
                crc: part.crc,
                stored_len: part.len,
                id: part.known_id.unwrap_or_else(|| {
                    file.metadata()
                        .map(|m| sys::file_id(&m))
                        .unwrap_or_default()
                }),
            })),
            Ok(false) => return, // the stream was dropped
            Err(e) => Piece::Failed(e),
        };
        let _ = tx.blocking_send(last);
    }

    /// The body of [`Inner::stream_part`]: `false` when the receiver went
    /// away.
    fn send_part(
        &self,
        file: &std::fs::File,
        part: Part,
        nth: usize,
        tx: &mpsc::Sender<Piece>,
    ) -> io::Result<bool> {
        let pool = Pool::new(part.chunk_size);
        let step = (READERS * part.chunk_size) as u64;
        let mut offset = (nth * part.chunk_size) as u64;
        while offset < part.len {
            self.fault(Point::Read)?;
            let want = part.chunk_size.min((part.len - offset) as usize);
            let pos = part.base + offset;
            let mut buf = pool.take();
            let start = Pool::skew(&buf, pos);
            let n = fill_at(file, &mut buf[start..start + want], pos)?;
            // Summed here, where the chunk is still in this core's cache.
            let crc = crc32c(&buf[start..start + n]);
            if n > 0
                && tx
                    .blocking_send(Piece::Summed(pool.chunk(buf, start..start + n), crc))
                    .is_err()
            {
                return Ok(false);
            }
            if n < want {
                // The file is shorter than its header says: the stream
                // finds the length wrong.
                break;
            }
            offset += step;
        }
        Ok(true)
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
        let Opened {
            mut file,
            meta,
            checksum,
            header_len,
            whole,
            ..
        } = o;
        let send = |chunk: Bytes| tx.blocking_send(Piece::Data(chunk)).is_ok();
        // A small entry was read whole and its stored bytes checked (see
        // `open_stream`): it is sent from memory, never from a file a set
        // may recycle meanwhile.
        let whole = match (whole, meta.codec) {
            (Some(w), Codec::None) => {
                let start = header_len as usize;
                let mut rest = Bytes::from(w).slice(start..start + meta.stored_len as usize);
                while !rest.is_empty() {
                    self.fault(Point::Read)?;
                    if !send(rest.split_to(chunk_size.min(rest.len()))) {
                        return Ok(None);
                    }
                }
                return Ok(Some(None));
            }
            (whole, _) => whole,
        };
        // No buffer larger than the entry: a chunk size far above it must
        // not allocate (and zero) that much.
        let longest = meta.logical_len.max(meta.stored_len).max(1);
        let chunk_size = chunk_size.min(usize::try_from(longest).unwrap_or(usize::MAX));
        let pool = Pool::new(chunk_size);
        if meta.codec == Codec::None {
            // Straight from the file into the pooled buffers, which are
            // zeroed only when new; the stream adds up the checksum (see
            // `checked_by_stream`).
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
                crc: checksum,
                stored_len: meta.stored_len,
                id,
            })));
        }
        let corrupt = |reason: String| self.corrupt_removed(key, hash, id, reason);
        let source: Box<dyn Read + Send + '_> = match whole {
            Some(w) => {
                let mut w = io::Cursor::new(w);
                w.set_position(header_len);
                Box::new(w.take(meta.stored_len))
            }
            None => {
                file.seek(SeekFrom::Start(header_len))?;
                Box::new((&mut file).take(meta.stored_len))
            }
        };
        let mut reader = PayloadReader::new(meta.codec, source)?;
        loop {
            self.fault(Point::Read)?;
            let mut buf = pool.take();
            let filled = match fill(&mut reader, &mut buf[..chunk_size]) {
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
        if totals.stored_len != meta.stored_len || totals.crc != checksum {
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

/// Reads into `buf` from `offset` of `f` until it is full or the file ends;
/// the bytes read.
fn fill_at(f: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match sys::read_at(f, &mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The stream a `get_stream` returns: the chunks from the readers' channels
/// in turn (chunk `i` comes from `rxs[i % rxs.len()]`), with the payload's
/// checksum put together on the way when `sum` is given (see
/// [`checked_by_stream`]).
fn receive(
    inner: Arc<Inner>,
    key: String,
    hash: String,
    rxs: Vec<mpsc::Receiver<Piece>>,
    sum: Option<CrcChain>,
) -> ByteStream {
    struct State {
        inner: Arc<Inner>,
        key: String,
        hash: String,
        rxs: Vec<mpsc::Receiver<Piece>>,
        /// The pieces of the last batch from each channel, last first.
        batches: Vec<Vec<Piece>>,
        /// The channel of the next chunk.
        next: usize,
        sum: Option<CrcChain>,
        done: bool,
    }
    impl State {
        /// Ends the stream; a reader still sending finds its channel
        /// closed and stops.
        fn finish(&mut self) {
            self.done = true;
            self.rxs.clear();
            self.batches.clear();
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
        done: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        // Pieces are taken a batch at a time: releasing several slots
        // at once wakes the reading thread once per batch rather than
        // once per chunk (see `write_stream`).
        let n = s.next;
        if s.batches[n].is_empty() {
            let limit = s.rxs[n].max_capacity();
            if s.rxs[n].recv_many(&mut s.batches[n], limit).await == 0 {
                // The thread stopped without saying that it finished.
                s.finish();
                let e = io::Error::other(format!(
                    "the reader of {} stopped before the end",
                    Error::display_key(&s.key)
                ));
                return Some((Err(e), s));
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
            Piece::Summed(chunk, crc) => {
                if let Some(sum) = &mut s.sum {
                    sum.push(crc, chunk.len() as u64);
                }
                s.next = (n + 1) % s.rxs.len();
                return Some((Ok(chunk), s));
            }
            Piece::Failed(e) => {
                s.finish();
                return Some((Err(e), s));
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
        let e = crate::cache::blocking(move || {
            inner.corrupt_removed(&key, &hash, check.id, "payload checksum mismatch".into())
        })
        .await;
        Some((Err(e), s))
    })
    .boxed()
}
