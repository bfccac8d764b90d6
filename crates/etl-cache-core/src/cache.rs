//! The `Cache` trait every backend implements.

use std::fmt::Debug;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, Stream};

use crate::{EntryMeta, Removal, Result, SetOptions, Stats, Value};

/// A stream of bytes, as taken by [`Cache::set_stream`] and returned by
/// [`Cache::get_stream`].
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// Any error, boxed; what a computation handed to `get_or_insert_with` may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The computation of a missing value, as taken by [`Cache::get_or_insert_boxed`].
pub type InitFuture<'a> = futures::future::BoxFuture<'a, std::result::Result<Value, BoxError>>;

/// The chunk size used when the caller has no preference: 64 KiB, as the seed.
pub const DEFAULT_CHUNK_SIZE: usize = 64 * 1024;

/// A cache shared between tasks, threads and backends.
pub type DynCache = dyn Cache;

/// A persistent cache of text, bytes, JSON and streams.
///
/// Object safe: use it as `Arc<dyn Cache>`. Typed helpers (`set_json`,
/// `get_json`, `get_text`, …) come from [`crate::CacheExt`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> etl_cache_core::Result<()> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use etl_cache_core::{Cache, Kind, MemoryCache, SetOptions, Value};
///
/// // Any backend: a DiskCache, an ObjectCache, a TieredCache, or this one.
/// let cache: Arc<dyn Cache> = Arc::new(MemoryCache::new());
///
/// let opts = SetOptions::new().ttl(Duration::from_secs(3600));
/// cache.set("orders/2026-12-07", Value::from("transformed rows"), opts).await?;
///
/// // A value comes back as the kind it went in.
/// let got = cache.get("orders/2026-12-07").await?.expect("a hit");
/// assert_eq!(got.kind(), Kind::Text);
/// assert_eq!(got.as_text(), Some("transformed rows"));
///
/// // A miss is `None`, never an error.
/// assert!(cache.get("orders/2026-12-08").await?.is_none());
/// assert!(cache.delete("orders/2026-12-07").await?);
/// # Ok(()) }
/// ```
///
/// # Contract
///
/// Every backend keeps these promises, and runs the shared suite in
/// [`crate::testing`] (feature `testing`) to prove it.
///
/// - **Misses are not errors.** A missing, expired or removed entry reads as
///   `Ok(None)`.
/// - **Values round-trip exactly.** The kind is stored with the entry: text
///   comes back as text, bytes as bytes, JSON as JSON. Nothing is guessed.
/// - **Atomic.** A reader sees the old entry, the new one, or none: never a
///   partial or mixed one, whatever crashes or races. A failed set (bad input,
///   a failing stream, a full disk) leaves the previous value as it was.
/// - **Integrity.** Every entry carries checksums. An entry that fails them is
///   reported as [`crate::Error::Corrupt`] and removed; wrong bytes are never
///   returned. A stream that finds corruption ends with an error.
/// - **Expiry.** An expired entry is invisible and is removed when seen;
///   [`Cache::purge_expired`] removes them in bulk.
/// - **Streams are bounded.** `set_stream` and `get_stream` hold a few chunks
///   in memory whatever the payload size; `get_stream` yields the logical
///   (decompressed) bytes in chunks of exactly the size asked for, but the last.
/// - **Cancellation.** Dropping a future or a stream part way leaves the cache
///   as if the call had not been made (for writes) or had ended (for reads):
///   a write whose future is dropped never publishes later. Backend note: on
///   a remote object store (S3, Azure, GCS), a write dropped while its final
///   request is in flight may still be applied by the server after the
///   drop; no client can take back a request already sent (see
///   `etl-cache-object`'s README, "Dropped writes").
#[async_trait]
pub trait Cache: Debug + Send + Sync + 'static {
    /// Stores `value` under `key`, replacing any previous entry.
    ///
    /// # Errors
    ///
    /// [`crate::Error::InvalidKey`], [`crate::Error::TooLarge`],
    /// [`crate::Error::LockTimeout`], I/O or backend failures.
    async fn set(&self, key: &str, value: Value, opts: SetOptions) -> Result<EntryMeta>;

    /// Stores the bytes of `stream` under `key` (kind [`crate::Kind::Bytes`]),
    /// compressing on the fly, never holding the whole payload in memory.
    ///
    /// # Errors
    ///
    /// As [`Cache::set`], plus [`crate::Error::Stream`] when the stream yields an
    /// error; nothing is published then.
    async fn set_stream(
        &self,
        key: &str,
        stream: ByteStream,
        opts: SetOptions,
    ) -> Result<EntryMeta>;

    /// Reads the value under `key`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Corrupt`] (the entry is removed), I/O or backend failures.
    async fn get(&self, key: &str) -> Result<Option<Value>>;

    /// Reads the value under `key` with its metadata, from one version of the
    /// entry. The default collects [`Cache::get_stream`]; backends that can do
    /// it in one step override it.
    ///
    /// # Errors
    ///
    /// As [`Cache::get`].
    async fn get_entry(&self, key: &str) -> Result<Option<(EntryMeta, Value)>> {
        use futures::TryStreamExt;
        let Some(s) = self.get_stream(key, 1 << 20).await? else {
            return Ok(None);
        };
        let (meta, stream) = s.into_parts();
        let mut buf = bytes::BytesMut::with_capacity(meta.logical_len.min(1 << 30) as usize);
        let mut stream = stream;
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| stream_read_error(key, e))?
        {
            buf.extend_from_slice(&chunk);
        }
        let value = Value::from_stored(meta.kind, buf.freeze()).map_err(|reason| {
            crate::Error::Corrupt {
                key: crate::Error::display_key(key),
                reason,
            }
        })?;
        Ok(Some((meta, value)))
    }

    /// Reads the logical bytes of the entry under `key` whole (the bytes
    /// [`Cache::get_stream`] yields, whatever the kind), with its metadata,
    /// both from one version of the entry, without rebuilding a [`Value`]:
    /// the text of a JSON entry as it was stored, for a reader that parses
    /// it itself. The default reads the whole range with
    /// [`Cache::get_range`]; backends that read small entries faster whole
    /// override it.
    ///
    /// ```
    /// # async fn demo(cache: &dyn etl_cache_core::Cache) -> etl_cache_core::Result<()> {
    /// use etl_cache_core::{Kind, SetOptions, Value};
    /// let doc = r#"{"b": 1, "a": 2.50}"#;
    /// cache.set("doc", Value::Bytes(doc.into()), SetOptions::new().kind(Kind::Json)).await?;
    /// let (meta, text) = cache.get_raw("doc").await?.expect("just set");
    /// assert_eq!((meta.kind, &text[..]), (Kind::Json, doc.as_bytes()));
    /// # Ok(()) }
    /// # futures::executor::block_on(demo(&etl_cache_core::MemoryCache::new())).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Cache::get`].
    async fn get_raw(&self, key: &str) -> Result<Option<(EntryMeta, Bytes)>> {
        self.get_range(key, 0..u64::MAX).await
    }

    /// Streams the logical bytes under `key` in chunks of `chunk_size` bytes
    /// (the last may be shorter).
    ///
    /// # Errors
    ///
    /// [`crate::Error::InvalidInput`] for a zero chunk size; otherwise as
    /// [`Cache::get`]. Corruption found part way ends the stream with an
    /// [`io::ErrorKind::InvalidData`] error, and the entry is removed.
    async fn get_stream(&self, key: &str, chunk_size: usize) -> Result<Option<GetStream>>;

    /// Reads the logical bytes in `range` of the entry under `key` (the bytes
    /// [`Cache::get_stream`] yields, whatever the kind), with the entry's
    /// metadata, both from one version of the entry. A range that runs past
    /// the end is cut there: one that starts at or past the end reads no
    /// bytes. No byte is returned unchecked.
    ///
    /// The default streams the entry up to the end of the range. `DiskCache`
    /// reads an uncompressed entry by position: only the blocks that hold
    /// the range are read and checked.
    ///
    /// ```
    /// # async fn demo(cache: &dyn etl_cache_core::Cache) -> etl_cache_core::Result<()> {
    /// use etl_cache_core::{SetOptions, Value};
    /// cache.set("table", Value::Bytes("0123456789".into()), SetOptions::new()).await?;
    /// let (meta, part) = cache.get_range("table", 2..5).await?.expect("just set");
    /// assert_eq!((meta.logical_len, &part[..]), (10, &b"234"[..]));
    /// # Ok(()) }
    /// # futures::executor::block_on(demo(&etl_cache_core::MemoryCache::new())).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// [`crate::Error::InvalidInput`] when the range starts after its end;
    /// otherwise as [`Cache::get`].
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Option<(EntryMeta, Bytes)>> {
        use futures::TryStreamExt;
        check_range(&range)?;
        let Some(s) = self.get_stream(key, 1 << 20).await? else {
            return Ok(None);
        };
        let (meta, mut stream) = s.into_parts();
        let (start, end) = clamp_range(&range, meta.logical_len);
        if start == end {
            // Nothing to read: the stream is dropped unread.
            return Ok(Some((meta, Bytes::new())));
        }
        let mut out = bytes::BytesMut::new();
        let mut at = 0u64;
        while at < end {
            let Some(chunk) = stream
                .try_next()
                .await
                .map_err(|e| stream_read_error(key, e))?
            else {
                break;
            };
            let chunk_end = at + chunk.len() as u64;
            if chunk_end > start {
                let from = (start.max(at) - at) as usize;
                let to = (end.min(chunk_end) - at) as usize;
                if out.is_empty() && end <= chunk_end {
                    // The whole range in one chunk: a slice, no copy.
                    return Ok(Some((meta, chunk.slice(from..to))));
                }
                out.extend_from_slice(&chunk[from..to]);
            }
            at = chunk_end;
        }
        if (out.len() as u64) < end - start {
            return Err(crate::Error::Corrupt {
                key: crate::Error::display_key(key),
                reason: format!(
                    "the entry ended after {at} of its {} bytes",
                    meta.logical_len
                ),
            });
        }
        Ok(Some((meta, out.freeze())))
    }

    /// Reads an entry's metadata without its payload.
    ///
    /// # Errors
    ///
    /// As [`Cache::get`].
    async fn head(&self, key: &str) -> Result<Option<EntryMeta>>;

    /// Whether a live entry exists under `key`.
    ///
    /// # Errors
    ///
    /// As [`Cache::head`].
    async fn contains(&self, key: &str) -> Result<bool> {
        Ok(self.head(key).await?.is_some())
    }

    /// Removes the entry under `key`; returns whether there was one.
    ///
    /// # Errors
    ///
    /// I/O or backend failures.
    async fn delete(&self, key: &str) -> Result<bool>;

    /// Lists the metadata of live entries whose key starts with `prefix`, in no
    /// particular order.
    fn list(&self, prefix: Option<&str>) -> BoxStream<'static, Result<EntryMeta>>;

    /// As [`Cache::list`], but also yields entries that have expired and are
    /// not yet removed (for inspection tools: check `EntryMeta::is_expired`).
    /// The default is [`Cache::list`].
    fn list_all(&self, prefix: Option<&str>) -> BoxStream<'static, Result<EntryMeta>> {
        self.list(prefix)
    }

    /// Removes every expired entry; returns how many were removed.
    ///
    /// # Errors
    ///
    /// I/O or backend failures.
    async fn purge_expired(&self) -> Result<u64>;

    /// Removes every entry; returns how many were removed.
    ///
    /// # Errors
    ///
    /// I/O or backend failures.
    async fn clear(&self) -> Result<u64>;

    /// Single flight: returns the value under `key`, or runs `init` to compute
    /// it, stores it with `opts` and returns it. Of all the callers that miss
    /// the same key at once, one computes and the others wait for its result
    /// (bounded by the backend's lock timeout, then [`crate::Error::LockTimeout`]).
    /// Call it through [`crate::CacheExt::get_or_insert_with`].
    ///
    /// The default runs `init` without coordination; backends override it:
    /// `DiskCache` coordinates tasks and processes sharing a directory.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Init`] when `init` fails (nothing is stored), and the
    /// errors of [`Cache::get`] and [`Cache::set`].
    async fn get_or_insert_boxed<'a>(
        &'a self,
        key: &'a str,
        opts: SetOptions,
        init: InitFuture<'a>,
    ) -> Result<Value> {
        opts.validate_for(key)?;
        if let Some(v) = self.get(key).await? {
            return Ok(v);
        }
        let value = init.await.map_err(|source| crate::Error::Init {
            key: crate::Error::display_key(key),
            source,
        })?;
        self.set(key, value.clone(), opts).await?;
        Ok(value)
    }

    /// Counters of this handle (hits, misses, sets, evictions) and the size of
    /// the cache (entries, bytes).
    ///
    /// # Errors
    ///
    /// I/O or backend failures while measuring the size.
    async fn stats(&self) -> Result<Stats>;

    /// The last removal of `key` that this cache's journal remembers: when
    /// and why the entry went (evicted over which limit, expired, corrupt,
    /// deleted, cleared), or `None` when it remembers none. `DiskCache`
    /// keeps a bounded journal of the last removals in its directory,
    /// shared by every process using it; `TieredCache` answers from its
    /// last tier; the default keeps none.
    ///
    /// # Errors
    ///
    /// [`crate::Error::InvalidKey`]; I/O failures reading the journal.
    async fn last_removal(&self, key: &str) -> Result<Option<Removal>> {
        crate::validate_key(key)?;
        Ok(None)
    }

    /// The identity of this handle, shared by its clones: for extensions
    /// that keep state per cache in memory (the steps' tallies of hits,
    /// written to the cache once a second rather than on every hit).
    /// `None`, the default, makes such extensions write through on every
    /// call. Wrappers that change what a cache stores must not forward it.
    fn handle_id(&self) -> Option<HandleId> {
        None
    }

    /// Another handle on this cache (a clone of this one, with the same
    /// [`Cache::handle_id`]), for extensions that finish work in the
    /// background, after the call that started it returned or was dropped
    /// (the steps' tallies of hits). `None`, the default, makes them do
    /// that work in the call. Give both this and `handle_id`, or neither.
    /// Such work keeps the cache open while it runs (a `DiskCache` dropped
    /// by its user is then closed by the background task, within about a
    /// second).
    fn handle(&self) -> Option<std::sync::Arc<dyn Cache>> {
        None
    }
}

/// An identity given to a cache handle when it is made (see
/// [`Cache::handle_id`]); unique in the process and never given twice, so
/// state kept under it can never be taken for another cache's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HandleId(u64);

impl HandleId {
    /// A new identity, different from every other one of this process.
    #[allow(clippy::new_without_default)] // each call gives another value
    pub fn new() -> HandleId {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        HandleId(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

/// Refuses a range that starts after its end, as [`Cache::get_range`] does;
/// for backends that override it.
///
/// # Errors
///
/// [`crate::Error::InvalidInput`].
pub fn check_range(range: &Range<u64>) -> Result<()> {
    if range.start > range.end {
        return Err(crate::Error::InvalidInput {
            message: format!(
                "a range must not start after its end ({}..{})",
                range.start, range.end
            ),
        });
    }
    Ok(())
}

/// The part of `range` an entry of `len` logical bytes holds: cut at its
/// end, empty (at the end) when it starts there or beyond.
pub fn clamp_range(range: &Range<u64>, len: u64) -> (u64, u64) {
    let end = range.end.min(len);
    (range.start.min(end), end)
}

/// Maps an error read from a `get_stream` stream back to a cache error.
pub fn stream_read_error(key: &str, e: io::Error) -> crate::Error {
    if e.get_ref().is_some_and(|inner| inner.is::<crate::Error>()) {
        let inner = e.into_inner().expect("checked above");
        return *inner.downcast::<crate::Error>().expect("checked above");
    }
    if e.kind() == io::ErrorKind::InvalidData {
        return crate::Error::Corrupt {
            key: crate::Error::display_key(key),
            reason: e.to_string(),
        };
    }
    crate::Error::Io {
        key: crate::Error::display_key(key),
        path: std::path::PathBuf::new(),
        op: "read the entry",
        source: e,
    }
}

/// The answer of [`Cache::get_stream`]: the entry's metadata and a stream of its
/// logical bytes.
///
/// The stream yields the stored bytes decompressed, in chunks of the size
/// asked for (the last may be shorter), holding a few chunks in memory
/// whatever the size of the entry. An entry found corrupt part way ends the
/// stream with an error: wrong bytes are never yielded.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> etl_cache_core::Result<()> {
/// use bytes::Bytes;
/// use futures::TryStreamExt;
/// use etl_cache_core::{Cache, Compression, MemoryCache, SetOptions};
///
/// let cache = MemoryCache::new();
/// let chunks = futures::stream::iter((0..4).map(|i| Ok(Bytes::from(vec![i as u8; 1000]))));
/// let opts = SetOptions::new().compression(Compression::zstd());
/// cache.set_stream("export.csv", Box::pin(chunks), opts).await?;
///
/// let stream = cache.get_stream("export.csv", 1024).await?.expect("a hit");
/// assert_eq!(stream.meta().logical_len, 4000);
/// let sizes: Vec<usize> = stream
///     .map_ok(|chunk| chunk.len())
///     .try_collect()
///     .await
///     // An error met while reading, as a cache error naming the key.
///     .map_err(|e| etl_cache_core::stream_read_error("export.csv", e))?;
/// assert_eq!(sizes, [1024, 1024, 1024, 928]);
/// # Ok(()) }
/// ```
pub struct GetStream {
    meta: EntryMeta,
    stream: ByteStream,
}

impl Debug for GetStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetStream")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

impl GetStream {
    /// Pairs metadata with a stream; for backends.
    pub fn new(meta: EntryMeta, stream: ByteStream) -> Self {
        GetStream { meta, stream }
    }

    /// The entry's metadata.
    pub fn meta(&self) -> &EntryMeta {
        &self.meta
    }

    /// Splits into metadata and stream.
    pub fn into_parts(self) -> (EntryMeta, ByteStream) {
        (self.meta, self.stream)
    }
}

impl Stream for GetStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.stream.as_mut().poll_next(cx)
    }
}
