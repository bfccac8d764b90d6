//! `DiskCache` and its `Cache` implementation.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use etl_cache_core::backend::init_failed;
use etl_cache_core::{
    ByteStream, Cache, Codec, EntryMeta, Error, GetStream, InitFuture, Removal, Result, SetOptions,
    Stats, Value, validate_key,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;

use crate::builder::{Config, DiskCacheBuilder};
use crate::cancel::Cancel;
use crate::inner::{Inner, blocking};
use crate::layout::key_hash;
use crate::lock;
use crate::look::Look;
use crate::publish::Publish;
use crate::read::{Found, is_busy};
use crate::remove::Bad;
use crate::usage::{UsageError, Wait};
use crate::write::Msg;

/// A persistent cache in a local directory. See the crate documentation.
///
/// Cheap to clone: clones share one handle.
#[derive(Clone)]
pub struct DiskCache {
    inner: Arc<Inner>,
}

impl fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskCache")
            .field("root", &self.inner.layout.root)
            .field("max_entries", &self.inner.config.max_entries)
            .field("max_bytes", &self.inner.config.max_bytes)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for DiskCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DiskCache({})", self.inner.layout.root.display())
    }
}

impl DiskCache {
    /// A builder with default settings (root `.cache`, no limits).
    pub fn builder() -> DiskCacheBuilder {
        DiskCacheBuilder::new()
    }

    /// Opens (creating if needed) a cache at `root` with default settings.
    ///
    /// # Errors
    ///
    /// [`Error::Open`] when the root is not a writable directory.
    pub async fn open(root: impl AsRef<Path>) -> Result<DiskCache> {
        Self::builder().root(root.as_ref()).build().await
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.inner.layout.root
    }

    pub(crate) async fn open_with(config: Config) -> Result<DiskCache> {
        let inner = blocking(move || Inner::open(config)).await?;
        Ok(DiskCache {
            inner: Arc::new(inner),
        })
    }

    fn list_filtered(
        &self,
        prefix: Option<&str>,
        include_expired: bool,
    ) -> BoxStream<'static, Result<EntryMeta>> {
        let inner = self.inner.clone();
        let prefix = prefix.unwrap_or("").to_owned();
        let (tx, rx) = mpsc::channel(256);
        tokio::task::spawn_blocking(move || {
            let now = inner.config.clock.now();
            for (hash, path) in inner.entry_files() {
                if let Some((meta, _, _)) = inner.peek(&hash, &path)
                    && meta.key.starts_with(&prefix)
                    && (include_expired || !meta.is_expired(now))
                    && tx.blocking_send(Ok(meta)).is_err()
                {
                    return;
                }
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
    }

    /// Recounts entries and bytes from the directory and stores the result in
    /// the counters shared by every process (they are kept exact as entries
    /// come and go; this repairs them after a process was killed mid-write).
    ///
    /// # Errors
    ///
    /// Never at present; reserved for I/O failures.
    pub async fn recount(&self) -> Result<Stats> {
        let inner = self.inner.clone();
        let c = blocking(move || inner.recount()).await;
        Ok(self.inner.counters.snapshot(c.entries, c.bytes))
    }
}

impl Inner {
    /// The error of an operation whose use of the counters failed. `key`
    /// names the entry concerned; cache-wide operations (`None`) name the
    /// counters' file instead.
    pub(crate) fn usage_error(&self, key: Option<&str>, op: &'static str, e: UsageError) -> Error {
        let file = self.usage.path();
        let waited = match e {
            UsageError::TimedOut(waited) => waited,
            UsageError::Busy => std::time::Duration::ZERO,
            UsageError::Io(source) => {
                return Error::Io {
                    key: key.map(Error::display_key).unwrap_or_default(),
                    path: file.to_path_buf(),
                    op,
                    source,
                };
            }
        };
        tracing::warn!(
            key,
            counters = %file.display(),
            ?waited,
            "gave up waiting for another process holding the counters' lock"
        );
        Error::LockTimeout {
            key: key.map_or_else(
                || format!("the counters' file {}", file.display()),
                Error::display_key,
            ),
            waited,
        }
    }

    /// Whether small operations run on the calling task (see `inline_io`).
    pub(crate) fn inline(&self) -> bool {
        self.config.inline_io_max > 0 && !self.config.durable
    }

    fn head(&self, key: &str, hash: &str, wait: Wait) -> Result<Option<EntryMeta>> {
        let path = self.layout.entry_path(hash);
        // An expired entry replaced (or recycled) meanwhile is looked at again.
        self.look_again(key, || {
            Ok(
                match self.open_entry(Some(key), hash, &path, false, wait)? {
                    Found::Missing => Look::Done(None),
                    Found::Expired(o) => self
                        .expired_unless_changed(key, hash, o.id(), wait)?
                        .map(|()| None),
                    Found::Live(o) => Look::Done(Some(o.meta)),
                },
            )
        })
    }
}

impl DiskCache {
    /// A whole entry of a key already checked (`hash` is its hash), turned
    /// into what `decode` makes of it.
    async fn read_whole<T: Send + 'static>(
        &self,
        key: &str,
        hash: String,
        decode: crate::check::Decode<T>,
    ) -> Result<Option<(EntryMeta, T)>> {
        let inner = self.inner.clone();
        let key = key.to_owned();
        // `None` from `finish_value`: the entry changed under the read (see
        // `look::remove_if_bad`); `read_value` then looks again, without
        // counting the read twice.
        //
        // On this (async) thread, a read never waits for another process
        // holding the counters, which removing an expired or corrupt entry
        // needs: it is done again on a blocking thread instead.
        let mut count = true;
        if inner.inline() {
            let found = match inner.lookup(&key, &hash, true, true, Wait::Spin) {
                Ok(None) => return Ok(None),
                Ok(Some(o)) if inner.finishes_inline(&o) => {
                    count = false;
                    inner.finish_value(&key, &hash, *o, Wait::Spin, decode)
                }
                Ok(Some(o)) => {
                    count = false;
                    let (inner, key, hash) = (inner.clone(), key.clone(), hash.clone());
                    blocking(move || inner.finish_value(&key, &hash, *o, Wait::Timeout, decode))
                        .await
                }
                Err(e) => Err(e),
            };
            match found {
                Ok(Some(found)) => return Ok(Some(found)),
                Ok(None) => {}
                Err(e) if is_busy(&e) => {}
                Err(e) => return Err(e),
            }
        }
        blocking(move || inner.read_value(&key, &hash, count, decode)).await
    }
}

/// Validates `key` and gives the hash that names its files: once per call.
fn checked(key: &str) -> Result<String> {
    validate_key(key)?;
    Ok(key_hash(key))
}

#[async_trait]
impl Cache for DiskCache {
    async fn set(&self, key: &str, value: Value, opts: SetOptions) -> Result<EntryMeta> {
        etl_cache_core::backend::obs::observe("disk", "set", Some(key), async move {
            let hash = checked(key)?;
            opts.validate_for(key)?;
            let inner = self.inner.clone();
            let kind = opts.value_kind(key, &value)?;
            let payload = value.into_bytes();
            // Dropping this future before the entry is published cancels it.
            let (cancel, _armed) = Cancel::new();
            if inner.inline() && payload.len() as u64 <= inner.config.inline_io_max {
                match inner.write_value(key, &hash, kind, payload, opts, false, false, &cancel)? {
                    Publish::Done(meta) => return Ok(meta),
                    Publish::Blocked(sealed) => {
                        let key = key.to_owned();
                        return blocking(move || {
                            inner.publish(&key, &hash, sealed, false, true, &cancel)
                        })
                        .await
                        .map(Publish::done);
                    }
                }
            }
            let key = key.to_owned();
            blocking(move || {
                inner
                    .write_value(&key, &hash, kind, payload, opts, false, true, &cancel)
                    .map(Publish::done)
            })
            .await
        })
        .await
    }

    async fn set_stream(
        &self,
        key: &str,
        mut stream: ByteStream,
        opts: SetOptions,
    ) -> Result<EntryMeta> {
        etl_cache_core::backend::obs::observe("disk", "set_stream", Some(key), async move {
            let hash = checked(key)?;
            opts.validate_for(key)?;
            let (tx, rx) = mpsc::channel(crate::write::BATCHES_IN_FLIGHT);
            let inner = self.inner.clone();
            let owned = key.to_owned();
            let header = inner.header(key, opts.stream_kind(key)?, &opts)?;
            // An uncompressed stream is framed here, as its chunks pass: the
            // block checksums (crc32c, about 30 µs per MiB) then run beside the
            // writer's system calls instead of before them, which is what keeps
            // a stream near the speed of a plain file write. Compression, much
            // dearer, stays on the writer thread, which frames what it makes.
            let mut framer = match opts.compression.codec() {
                Codec::None => Some(header.framer()),
                _ => None,
            };
            // Dropping this future before the entry is published cancels it,
            // even once the whole stream was handed to the writer.
            let (cancel, _armed) = Cancel::new();
            let op = etl_cache_core::backend::obs::carry();
            let writer = tokio::task::spawn_blocking(move || {
                op.run(|| inner.write_stream(&owned, &hash, header, rx, opts, &cancel))
            });
            let mut framed = Vec::with_capacity(4);
            // Pieces gathered for the writer, and their length.
            let (mut batch, mut batch_len) = (Vec::new(), 0usize);
            let fed: Result<()> = 'feed: loop {
                match stream.next().await {
                    Some(Ok(chunk)) if chunk.is_empty() => {}
                    Some(Ok(chunk)) => {
                        match &mut framer {
                            Some(framer) => framer.push(chunk, &mut framed),
                            None => framed.push(chunk),
                        }
                        batch_len += framed.iter().map(bytes::Bytes::len).sum::<usize>();
                        batch.append(&mut framed);
                        if batch_len >= crate::write::BATCH_BYTES
                            || batch.len() >= crate::write::BATCH_PIECES
                        {
                            batch_len = 0;
                            if tx
                                .send(Msg::Data(std::mem::take(&mut batch)))
                                .await
                                .is_err()
                            {
                                break 'feed Ok(()); // the writer stopped; its error says why
                            }
                        }
                    }
                    Some(Err(source)) => {
                        break Err(Error::Stream {
                            key: Error::display_key(key),
                            source,
                        });
                    }
                    None => {
                        let trailer = framer.take().map(|framer| {
                            let logical_len = framer.stored_len();
                            crate::write::finish_framer(framer, logical_len, &mut framed)
                        });
                        batch.append(&mut framed);
                        if !batch.is_empty() && tx.send(Msg::Data(batch)).await.is_err() {
                            break 'feed Ok(());
                        }
                        let _ = tx.send(Msg::End(trailer)).await;
                        break Ok(());
                    }
                }
            };
            drop(tx);
            let written = match writer.await {
                Ok(r) => r,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // The runtime is shutting down (see `blocking`).
                Err(_) => std::future::pending().await,
            };
            fed?;
            written
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<Value>> {
        etl_cache_core::backend::obs::observe("disk", "get", Some(key), async move {
            Ok(self.get_entry(key).await?.map(|(_, v)| v))
        })
        .await
    }

    async fn get_entry(&self, key: &str) -> Result<Option<(EntryMeta, Value)>> {
        etl_cache_core::backend::obs::observe("disk", "get_entry", Some(key), async move {
            let hash = checked(key)?;
            self.read_whole(key, hash, crate::check::decode_stored)
                .await
        })
        .await
    }

    /// As `get_entry` (a small entry is read on the calling thread), with
    /// no decoding of the logical bytes.
    async fn get_raw(&self, key: &str) -> Result<Option<(EntryMeta, bytes::Bytes)>> {
        etl_cache_core::backend::obs::observe("disk", "get_raw", Some(key), async move {
            let hash = checked(key)?;
            self.read_whole(key, hash, crate::check::logical_of).await
        })
        .await
    }

    async fn get_stream(&self, key: &str, chunk_size: usize) -> Result<Option<GetStream>> {
        etl_cache_core::backend::obs::observe("disk", "get_stream", Some(key), async move {
            let hash = checked(key)?;
            if chunk_size == 0 {
                return Err(Error::InvalidInput {
                    message: "chunk_size must be at least 1".into(),
                });
            }
            let inner = self.inner.clone();
            let key = key.to_owned();
            let inline = match inner.inline() {
                true => match inner.open_stream(&key, &hash, Wait::Spin) {
                    Err(e) if is_busy(&e) => None,
                    r => Some(r?),
                },
                false => None,
            };
            let opened = match inline {
                Some(opened) => opened,
                None => {
                    let (inner, key, hash) = (inner.clone(), key.clone(), hash.clone());
                    blocking(move || inner.open_stream(&key, &hash, Wait::Timeout)).await?
                }
            };
            let Some(opened) = opened else {
                return Ok(None);
            };
            let meta = opened.meta.clone();
            let stream = crate::stream::start(inner, key, hash, *opened, chunk_size);
            Ok(Some(GetStream::new(meta, stream)))
        })
        .await
    }

    /// Reads only the blocks that hold the range when the entry is
    /// uncompressed (1 MiB blocks, each checked): a 64 KiB range of a large
    /// entry costs one read of one or two blocks, not of the entry. A
    /// compressed entry is read whole and decompressed first.
    async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Option<(EntryMeta, bytes::Bytes)>> {
        etl_cache_core::backend::obs::observe("disk", "get_range", Some(key), async move {
            let hash = checked(key)?;
            etl_cache_core::backend::check_range(&range)?;
            let inner = self.inner.clone();
            let key = key.to_owned();
            blocking(move || inner.read_range(&key, &hash, range)).await
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<Option<EntryMeta>> {
        etl_cache_core::backend::obs::observe("disk", "head", Some(key), async move {
            let hash = checked(key)?;
            let inner = self.inner.clone();
            if inner.inline() {
                match inner.head(key, &hash, Wait::Spin) {
                    Err(e) if is_busy(&e) => {} // again, on a blocking thread
                    r => return r,
                }
            }
            let key = key.to_owned();
            blocking(move || inner.head(&key, &hash, Wait::Timeout)).await
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        etl_cache_core::backend::obs::observe("disk", "delete", Some(key), async move {
            let hash = checked(key)?;
            let inner = self.inner.clone();
            let key = key.to_owned();
            // Dropping this future before the entry is removed cancels it.
            let (cancel, _armed) = Cancel::new();
            blocking(move || inner.delete(&key, &hash, &cancel)).await
        })
        .await
    }

    fn list(&self, prefix: Option<&str>) -> BoxStream<'static, Result<EntryMeta>> {
        etl_cache_core::backend::obs::observe_stream("disk", "list", prefix, {
            self.list_filtered(prefix, false)
        })
    }

    fn list_all(&self, prefix: Option<&str>) -> BoxStream<'static, Result<EntryMeta>> {
        etl_cache_core::backend::obs::observe_stream("disk", "list_all", prefix, {
            self.list_filtered(prefix, true)
        })
    }

    /// Removes every expired entry. An entry that cannot be removed (a
    /// read-only root, a permission) does not stop the others; the call then
    /// fails with [`Error::Io`] naming the first such entry's path and the
    /// number that failed (those removed are counted in the stats).
    async fn purge_expired(&self) -> Result<u64> {
        etl_cache_core::backend::obs::observe("disk", "purge_expired", None, async move {
            let inner = self.inner.clone();
            blocking(move || {
                let now = inner.config.clock.now();
                let swept = inner.sweep("purge_expired", Some(Bad::Expired), |m| m.is_expired(now));
                inner
                    .counters
                    .expired
                    .fetch_add(swept.removed, std::sync::atomic::Ordering::Relaxed);
                if swept.removed > 0 {
                    tracing::info!(removed = swept.removed, "purged expired entries");
                }
                swept.result("remove an expired entry (purge_expired)")
            })
            .await
        })
        .await
    }

    /// Removes every entry. An entry that cannot be removed does not stop
    /// the others; the call then fails with [`Error::Io`] naming the first
    /// such entry's path and the number that failed.
    async fn clear(&self) -> Result<u64> {
        etl_cache_core::backend::obs::observe("disk", "clear", None, async move {
            let inner = self.inner.clone();
            blocking(move || {
                let swept = inner.sweep("clear", None, |_| true);
                tracing::info!(removed = swept.removed, "cleared the cache");
                swept.result("remove an entry (clear)")
            })
            .await
        })
        .await
    }

    /// Single flight across tasks and processes: tasks of this process queue on
    /// an in-memory lock, then one of them takes the key's OS lock, which
    /// processes sharing the directory queue on. The holder computes and
    /// publishes under the lock; the others find the value when they get it.
    /// A holder that dies releases the lock (the OS drops it with the
    /// process) and the next waiter computes; one that hangs makes the waiters
    /// fail with [`Error::LockTimeout`] after the lock timeout.
    async fn get_or_insert_boxed<'a>(
        &'a self,
        key: &'a str,
        opts: SetOptions,
        init: InitFuture<'a>,
    ) -> Result<Value> {
        etl_cache_core::backend::obs::observe_init("disk", key, init, |init| async move {
            let hash = checked(key)?;
            opts.validate_for(key)?;
            let timeout = self.inner.config.lock_timeout;
            // Dropping this future cancels the wait for the key's lock and the
            // write of the computed value, wherever it stands.
            let (cancel, _armed) = Cancel::new();
            let recheck = |inner: Arc<Inner>, key: String, hash: String| {
                blocking(move || {
                    inner
                        .read_value(&key, &hash, false, crate::check::decode_stored)
                        .map(|found| found.map(|(_, v)| v))
                })
            };
            let look_hash = hash.clone();
            let look = |first: bool| {
                let hash = look_hash.clone();
                async move {
                    if first {
                        let found = self
                            .read_whole(key, hash, crate::check::decode_stored)
                            .await?;
                        Ok(found.map(|(_, v)| v))
                    } else {
                        recheck(self.inner.clone(), key.to_owned(), hash).await
                    }
                }
            };
            let fill = || async move {
                // The turn in this process came; now the turn among processes.
                let lock = {
                    let (inner, key, cancel) = (self.inner.clone(), key.to_owned(), cancel.clone());
                    let lock_path = inner.layout.lock_path(&hash);
                    blocking(move || {
                        lock::KeyLock::acquire_unless(
                            &inner.dirs,
                            &lock_path,
                            &key,
                            timeout,
                            || cancel.is_cancelled(),
                        )
                    })
                    .await?
                };
                if let Some(v) = recheck(self.inner.clone(), key.to_owned(), hash.clone()).await? {
                    return Ok(v);
                }
                let value = init.await.map_err(|source| init_failed(key, source))?;
                let kind = opts.value_kind(key, &value)?;
                let (inner, owned, v) = (self.inner.clone(), key.to_owned(), value.clone());
                blocking(move || {
                    let r = inner
                        .write_value(
                            &owned,
                            &hash,
                            kind,
                            v.into_bytes(),
                            opts,
                            true,
                            true,
                            &cancel,
                        )
                        .map(Publish::done);
                    drop(lock);
                    r
                })
                .await?;
                Ok(value)
            };
            self.inner.flights.run(key, look, fill).await
        })
        .await
    }

    fn handle_id(&self) -> Option<etl_cache_core::HandleId> {
        Some(self.inner.id)
    }

    fn handle(&self) -> Option<std::sync::Arc<dyn Cache>> {
        Some(std::sync::Arc::new(self.clone()))
    }

    async fn stats(&self) -> Result<Stats> {
        etl_cache_core::backend::obs::observe("disk", "stats", None, async move {
            let inner = self.inner.clone();
            blocking(move || {
                let c = inner
                    .usage
                    .get()
                    .map_err(|e| inner.usage_error(None, "read the usage counters", e))?;
                Ok(inner.counters.snapshot(c.entries, c.bytes))
            })
            .await
        })
        .await
    }

    /// From the root's removal journal, which every handle and process
    /// using the root writes: the last of its 4,096 most recent removals
    /// that was `key`'s.
    async fn last_removal(&self, key: &str) -> Result<Option<Removal>> {
        etl_cache_core::backend::obs::observe("disk", "last_removal", Some(key), async move {
            let hash = checked(key)?;
            let inner = self.inner.clone();
            let key = key.to_owned();
            blocking(move || {
                let next = inner
                    .usage
                    .next_record()
                    .map_err(|e| inner.usage_error(Some(&key), "read the usage counters", e))?;
                inner.journal.last(&hash, next).map_err(|source| Error::Io {
                    key: Error::display_key(&key),
                    path: inner.layout.journal_file(),
                    op: "read the removal journal",
                    source,
                })
            })
            .await
        })
        .await
    }
}
