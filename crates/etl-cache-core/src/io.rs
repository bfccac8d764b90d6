//! `AsyncWrite` into and `AsyncRead` out of any [`Cache`].
//!
//! [`CacheIoExt::writer`] gives a [`CacheWriter`], an [`AsyncWrite`] whose
//! bytes go to the cache's own [`Cache::set_stream`]: every backend streams
//! them with bounded memory and publishes them atomically, when the writer
//! is committed ([`CacheWriter::commit`], or `shutdown()` as
//! `tokio::io::copy` users and parquet's `AsyncArrowWriter::close` do). A
//! writer dropped before that publishes nothing: the previous value stays.
//! [`CacheIoExt::reader`] gives a [`CacheReader`], an [`AsyncRead`] and
//! [`AsyncBufRead`] over [`Cache::get_stream`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use etl_cache_core::{CacheIoExt, MemoryCache, SetOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let extract = dir.path().join("extract.csv");
//! tokio::fs::write(&extract, "id,amount\n1,10\n2,20\n").await?;
//!
//! let cache = MemoryCache::new();
//! // From a file into the cache; the entry appears at the commit.
//! let mut writer = cache.writer("extract/2026-12-06", SetOptions::new().compress(true));
//! tokio::io::copy(&mut tokio::fs::File::open(&extract).await?, &mut writer).await?;
//! let meta = writer.commit().await?;
//! assert_eq!(meta.logical_len, 20);
//!
//! // And back out, into another file.
//! let mut reader = cache.reader("extract/2026-12-06", 64 * 1024).await?.expect("just written");
//! let restored = dir.path().join("restored.csv");
//! tokio::io::copy(&mut reader, &mut tokio::fs::File::create(&restored).await?).await?;
//! assert_eq!(tokio::fs::read(&restored).await?, tokio::fs::read(&extract).await?);
//! # Ok(()) }
//! ```
//!
//! # Errors as `io::Error`
//!
//! Every `io::Error` a writer or a reader returns carries an
//! [`Error`] that says which key and what went wrong. Borrow it
//! with `get_ref()` or take it with `into_inner()`, then downcast:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use etl_cache_core::{CacheIoExt, Error, MemoryCache, SetOptions};
//! use tokio::io::AsyncWriteExt;
//!
//! let cache = MemoryCache::new();
//! let mut writer = cache.writer("", SetOptions::new()); // an empty key is invalid
//! let err = writer.write_all(b"rows").await.unwrap_err();
//! let cause = err.get_ref().and_then(|e| e.downcast_ref::<Error>());
//! assert!(matches!(cause, Some(Error::InvalidKey { .. })), "{err}");
//! let owned: Option<Error> = err.into_inner().and_then(|e| e.downcast().ok()).map(|e| *e);
//! assert!(matches!(owned, Some(Error::InvalidKey { .. })));
//! # }
//! ```

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use async_trait::async_trait;
use bytes::Bytes;
use futures::channel::mpsc;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::StreamReader;

use crate::{ByteStream, Cache, EntryMeta, Error, Result, SetOptions, stream_read_error};

/// How many bytes a [`CacheWriter`] gathers before it hands them to the
/// cache as one chunk: 256 KiB. Each chunk costs a channel hand-off and a
/// poll of the backend's write; at 256 KiB that is well under 1% of the time
/// the backend spends checksumming and writing the bytes, while the writer
/// holds at most three chunks (one gathering, two queued), under 1 MiB.
/// Backends cut their own blocks and parts, so this size does not shape what
/// is stored. Not part of the semver contract.
pub const WRITE_CHUNK_SIZE: usize = 256 * 1024;

/// Chunks queued between a writer and the cache's write, beyond the one the
/// channel always grants its sender: two in all.
const QUEUED_CHUNKS: usize = 1;

/// `AsyncWrite` and `AsyncRead` for every [`Cache`], `dyn Cache` included. Do
/// not implement it: it is implemented for all caches.
#[async_trait]
pub trait CacheIoExt: Cache {
    /// A writer whose bytes become the entry under `key` (kind
    /// [`crate::Kind::Bytes`]) when it is committed; see [`CacheWriter`].
    /// Nothing happens until the first write, flush or shutdown.
    fn writer(&self, key: &str, opts: SetOptions) -> CacheWriter<'_> {
        CacheWriter::new(self, key, opts)
    }

    /// A reader of the logical bytes under `key`, fetched in chunks of
    /// `chunk_size` bytes; `None` when there is no live entry. See
    /// [`CacheReader`].
    ///
    /// # Errors
    ///
    /// As [`Cache::get_stream`]: [`Error::InvalidInput`] for a zero chunk
    /// size, [`Error::Corrupt`], I/O or backend failures.
    async fn reader(&self, key: &str, chunk_size: usize) -> Result<Option<CacheReader>> {
        let Some(stream) = self.get_stream(key, chunk_size).await? else {
            return Ok(None);
        };
        let (meta, stream) = stream.into_parts();
        let key = key.to_owned();
        // `stream_read_error` keeps a cache error the stream carries and
        // names the key in any other, so every read error carries one.
        let stream: ByteStream = stream
            .map_err(move |e| io::Error::from(stream_read_error(&key, e)))
            .fuse()
            .boxed();
        Ok(Some(CacheReader {
            meta,
            inner: StreamReader::new(stream),
            failed: None,
        }))
    }
}

impl<C: Cache + ?Sized> CacheIoExt for C {}

/// An [`AsyncWrite`] into one entry of a cache, from
/// [`CacheIoExt::writer`].
///
/// - **Publishes at the commit.** [`CacheWriter::commit`] or
///   [`AsyncWriteExt::shutdown`](tokio::io::AsyncWriteExt::shutdown) ends the
///   write and publishes the entry atomically; `commit` also returns its
///   metadata. Until then readers see the previous value.
/// - **Dropped, nothing is published.** A writer dropped before its commit
///   ends drops the cache's write, which the [`Cache`] contract treats as if
///   it had not been made: the previous value stays, no debris is left.
/// - **Bounded memory.** Small writes are gathered into chunks of
///   [`WRITE_CHUNK_SIZE`]; a large write is cut into chunks, each copied once.
///   At most two chunks wait for the cache. `flush` hands the bytes gathered
///   so far to the cache's write (they are not visible until the commit).
/// - **Driven by its caller.** The cache's `set_stream` runs inside this
///   writer's `poll_write`, `poll_flush` and `poll_shutdown`, not on a task
///   of its own: the cache need not be `'static`, and nothing runs once the
///   writer is gone.
/// - **An open writer is a write in progress.** A backend that orders the
///   writes of a key (TieredCache with more than one tier) makes another
///   write of the same key, or a `clear`, wait until this writer commits or
///   is dropped: do not await one of those on the task that holds the
///   writer open.
/// - **Errors.** When the cache's write fails (an invalid key, an entry too
///   large, a store that is down) the next write, flush or shutdown returns
///   an `io::Error` carrying the [`Error`] (see the [module docs](self)), and
///   `commit` returns the `Error` itself. Any write after a failure, or
///   after the commit, is refused with an error.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use etl_cache_core::{CacheExt, CacheIoExt, MemoryCache, SetOptions};
/// use tokio::io::AsyncWriteExt;
///
/// let cache = MemoryCache::new();
/// cache.set_text("report", "yesterday's", SetOptions::new()).await?;
///
/// // Dropped before the commit: the previous value stays.
/// let mut writer = cache.writer("report", SetOptions::new());
/// writer.write_all(b"half of today's").await?;
/// drop(writer);
/// assert_eq!(cache.get_bytes("report").await?.as_deref(), Some(&b"yesterday's"[..]));
///
/// // Shut down: published.
/// let mut writer = cache.writer("report", SetOptions::new());
/// tokio::io::copy(&mut &b"today's"[..], &mut writer).await?;
/// writer.shutdown().await?;
/// assert_eq!(cache.get_bytes("report").await?.as_deref(), Some(&b"today's"[..]));
/// # Ok(()) }
/// ```
pub struct CacheWriter<'a> {
    key: String,
    state: State<'a>,
    /// The chunk being gathered; allocated with [`WRITE_CHUNK_SIZE`] bytes
    /// of capacity when its first byte arrives.
    chunk: Vec<u8>,
    /// Whether the cache's write has been polled yet: it is polled before
    /// the first bytes are taken, so that a write that cannot start (an
    /// invalid key) fails the first `poll_write`.
    started: bool,
}

enum State<'a> {
    /// The cache's write is under way.
    Open {
        /// Feeds the cache's write; `None` once the input has ended (the
        /// commit is under way).
        tx: Option<mpsc::Sender<io::Result<Bytes>>>,
        /// The cache's `set_stream`, owned and polled by the writer.
        write: BoxFuture<'a, Result<EntryMeta>>,
    },
    /// Published; the metadata until `commit` takes it.
    Committed(Option<EntryMeta>),
    /// The cache's write failed: the error until it is reported, then what
    /// it said.
    Failed { error: Option<Error>, said: String },
}

impl fmt::Debug for CacheWriter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Open { tx: Some(_), .. } => "open",
            State::Open { tx: None, .. } => "committing",
            State::Committed(_) => "committed",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("CacheWriter")
            .field("key", &self.key)
            .field("state", &state)
            .field("gathered", &self.chunk.len())
            .finish()
    }
}

impl<'a> CacheWriter<'a> {
    fn new<C: Cache + ?Sized>(cache: &'a C, key: &str, opts: SetOptions) -> Self {
        // A bounded channel from futures rather than tokio's with
        // tokio-util's `PollSender`: its sender has `poll_ready` and its
        // receiver is a `Stream` as it is, so no adapter is needed on either
        // side.
        let (tx, rx) = mpsc::channel(QUEUED_CHUNKS);
        let owned_key = key.to_owned();
        let write = async move { cache.set_stream(&owned_key, rx.boxed(), opts).await }.boxed();
        CacheWriter {
            key: key.to_owned(),
            state: State::Open {
                tx: Some(tx),
                write,
            },
            chunk: Vec::new(),
            started: false,
        }
    }

    /// The key this writer writes.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Ends the write and publishes the entry; returns its metadata.
    ///
    /// # Errors
    ///
    /// The error of the cache's write, as [`Cache::set_stream`] gives it
    /// ([`Error::InvalidKey`], [`Error::TooLarge`], I/O or backend failures);
    /// nothing is published then. When that error was already returned by a
    /// write, flush or shutdown, [`Error::InvalidInput`] saying so.
    pub async fn commit(mut self) -> Result<EntryMeta> {
        futures::future::poll_fn(|cx| self.poll_commit(cx)).await?;
        match &mut self.state {
            State::Committed(meta) => meta.take().ok_or_else(|| self.refusal()),
            _ => Err(self.refusal()),
        }
    }

    /// Hands the gathered chunk over, ends the input and drives the cache's
    /// write to its end.
    fn poll_commit(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        loop {
            let State::Open { tx, write } = &mut self.state else {
                return Poll::Ready(match self.state {
                    State::Committed(_) => Ok(()),
                    _ => Err(self.refusal()),
                });
            };
            if tx.is_some() {
                if !self.chunk.is_empty() {
                    ready!(self.poll_send_gathered(cx))?;
                    continue;
                }
                // Dropping the only sender ends the stream the cache reads.
                *tx = None;
            }
            let done = ready!(write.poll_unpin(cx));
            self.finish(done);
        }
    }

    /// Records the end of the cache's write.
    fn finish(&mut self, done: Result<EntryMeta>) {
        let input_ended = matches!(self.state, State::Open { tx: None, .. });
        self.state = match done {
            Ok(meta) if input_ended => State::Committed(Some(meta)),
            Ok(_) => Self::failed(Error::Io {
                key: Error::display_key(&self.key),
                path: std::path::PathBuf::new(),
                op: "write the entry",
                source: io::Error::other("the cache ended the write before its input ended"),
            }),
            Err(e) => Self::failed(e),
        };
    }

    fn failed(error: Error) -> State<'a> {
        State::Failed {
            said: error.to_string(),
            error: Some(error),
        }
    }

    /// Polls the cache's write once (it takes queued chunks, or fails).
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let State::Open { write, .. } = &mut self.state
            && let Poll::Ready(done) = write.poll_unpin(cx)
        {
            self.finish(done);
        }
    }

    /// The error for a writer that can take no more bytes: the cache's
    /// error the first time, then a description of it.
    fn refusal(&mut self) -> Error {
        let key = Error::display_key(&self.key);
        match &mut self.state {
            State::Failed { error, said } => error.take().unwrap_or_else(|| Error::InvalidInput {
                message: format!(
                    "the write of entry {key:?} already failed, nothing was published: {said}"
                ),
            }),
            State::Committed(_) => Error::InvalidInput {
                message: format!("entry {key:?} is committed: bytes written after it are refused"),
            },
            State::Open { .. } => Error::InvalidInput {
                message: format!("entry {key:?} is being committed: no more bytes are taken"),
            },
        }
    }

    /// Waits for room in the channel, driving the cache's write meanwhile
    /// (it empties the channel only when polled, and only here is it polled).
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        loop {
            let State::Open {
                tx: Some(tx),
                write,
            } = &mut self.state
            else {
                return Poll::Ready(Err(self.refusal()));
            };
            // A closed channel means the cache's write dropped its input:
            // it has failed or is about to, so poll it as for a full one.
            if let Poll::Ready(Ok(())) = tx.poll_ready(cx) {
                return Poll::Ready(Ok(()));
            }
            let done = ready!(write.poll_unpin(cx));
            self.finish(done);
        }
    }

    /// Sends `chunk` (after [`Self::poll_room`] said there is room) and
    /// lets the cache's write take it.
    fn send(&mut self, chunk: Bytes, cx: &mut Context<'_>) -> Result<()> {
        if let State::Open { tx: Some(tx), .. } = &mut self.state {
            // Room was just granted to this sender; a failure here means the
            // receiver is gone, and the cache's write says why below.
            let _ = tx.start_send(Ok(chunk));
        }
        self.drive(cx);
        match self.state {
            State::Open { tx: Some(_), .. } => Ok(()),
            _ => Err(self.refusal()),
        }
    }

    fn poll_send_gathered(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        ready!(self.poll_room(cx))?;
        let chunk = Bytes::from(std::mem::take(&mut self.chunk));
        Poll::Ready(self.send(chunk, cx))
    }

    fn poll_write_inner(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<Result<usize>> {
        if !self.started {
            self.started = true;
            self.drive(cx);
        }
        if !matches!(self.state, State::Open { tx: Some(_), .. }) {
            return Poll::Ready(Err(self.refusal()));
        }
        if self.chunk.len() + data.len() < WRITE_CHUNK_SIZE {
            if self.chunk.capacity() == 0 {
                self.chunk.reserve_exact(WRITE_CHUNK_SIZE);
            }
            self.chunk.extend_from_slice(data);
            return Poll::Ready(Ok(data.len()));
        }
        // This write fills a chunk: it goes to the cache once there is room.
        ready!(self.poll_room(cx))?;
        let (chunk, taken) = if self.chunk.is_empty() {
            // Nothing gathered: the first chunk's worth of a large write is
            // copied once, into a chunk of its own.
            let n = data.len().min(WRITE_CHUNK_SIZE);
            (Bytes::copy_from_slice(&data[..n]), n)
        } else {
            let n = WRITE_CHUNK_SIZE - self.chunk.len();
            self.chunk.extend_from_slice(&data[..n]);
            (Bytes::from(std::mem::take(&mut self.chunk)), n)
        };
        self.send(chunk, cx)?;
        Poll::Ready(Ok(taken))
    }

    fn poll_flush_inner(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        match self.state {
            State::Committed(_) => return Poll::Ready(Ok(())),
            State::Open { tx: Some(_), .. } => {}
            _ => return Poll::Ready(Err(self.refusal())),
        }
        if !self.chunk.is_empty() {
            ready!(self.poll_send_gathered(cx))?;
        } else {
            self.drive(cx);
        }
        match self.state {
            State::Open { .. } | State::Committed(_) => Poll::Ready(Ok(())),
            State::Failed { .. } => Poll::Ready(Err(self.refusal())),
        }
    }
}

impl AsyncWrite for CacheWriter<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_inner(cx, buf)
            .map_err(io::Error::from)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_inner(cx).map_err(io::Error::from)
    }

    /// Commits: the entry is published when this returns `Ready(Ok(()))`.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_commit(cx).map_err(io::Error::from)
    }
}

/// An [`AsyncRead`] and [`AsyncBufRead`] over the logical bytes of one
/// entry, from [`CacheIoExt::reader`]; a tokio-util `StreamReader` over
/// [`Cache::get_stream`].
///
/// Every byte it hands out has passed the entry's checksums. Corruption found
/// part way fails the read with [`io::ErrorKind::InvalidData`], carrying
/// [`Error::Corrupt`]; no byte of the bad block is returned, and every later
/// read fails too. All read errors carry an [`Error`] (see the
/// [module docs](self)).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use etl_cache_core::{CacheExt, CacheIoExt, MemoryCache, SetOptions};
/// use tokio::io::AsyncBufReadExt;
///
/// let cache = MemoryCache::new();
/// cache.set_text("rows", "id=1\nid=2\n", SetOptions::new().compress(true)).await?;
/// let reader = cache.reader("rows", 64 * 1024).await?.expect("just set");
/// assert_eq!(reader.meta().logical_len, 10);
/// let mut lines = reader.lines();
/// while let Some(line) = lines.next_line().await? {
///     assert!(line.starts_with("id="));
/// }
/// assert!(cache.reader("missing", 64 * 1024).await?.is_none());
/// # Ok(()) }
/// ```
pub struct CacheReader {
    meta: EntryMeta,
    inner: StreamReader<ByteStream, Bytes>,
    /// What the first error said: reads after it fail alike, so that a
    /// retried read cannot mistake the end of a failed stream for the end
    /// of the entry.
    failed: Option<(io::ErrorKind, String)>,
}

impl fmt::Debug for CacheReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheReader")
            .field("meta", &self.meta)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl CacheReader {
    /// The entry's metadata (of the version being read).
    pub fn meta(&self) -> &EntryMeta {
        &self.meta
    }

    fn check<T>(&mut self, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(e)) = &polled {
            self.failed = Some((e.kind(), e.to_string()));
        }
        polled
    }

    fn earlier_failure(&self) -> Option<io::Error> {
        self.failed.as_ref().map(|(kind, said)| {
            let key = Error::display_key(&self.meta.key);
            let message = format!("reading entry {key:?} already failed: {said}");
            let error = match kind {
                io::ErrorKind::InvalidData => Error::Corrupt {
                    key,
                    reason: message,
                },
                _ => Error::Io {
                    key,
                    path: std::path::PathBuf::new(),
                    op: "read the entry",
                    source: io::Error::new(*kind, message),
                },
            };
            io::Error::from(error)
        })
    }
}

impl AsyncRead for CacheReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.earlier_failure() {
            return Poll::Ready(Err(e));
        }
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.check(polled)
    }
}

impl AsyncBufRead for CacheReader {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if let Some(e) = this.earlier_failure() {
            return Poll::Ready(Err(e));
        }
        match Pin::new(&mut this.inner).poll_fill_buf(cx) {
            Poll::Ready(Err(e)) => {
                this.failed = Some((e.kind(), e.to_string()));
                Poll::Ready(Err(e))
            }
            other => other,
        }
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        Pin::new(&mut self.get_mut().inner).consume(amt);
    }
}
