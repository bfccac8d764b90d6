//! `DiskCache` and its `Cache` implementation.

use std::fmt;
use std::fs::{self, DirBuilder, File};
use std::io;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use etl_cache_core::codec::Encoder;
use etl_cache_core::{
    ByteStream, Cache, Codec, Compression, Counters, EntryMeta, Error, GetStream, InitFuture,
    KeyedMutex, Result, SetOptions, Stats, Value, validate_key,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;

use crate::builder::{Config, DiskCacheBuilder};
use crate::layout::{Layout, key_hash};
use crate::read::Found;
use crate::usage::Usage;
use crate::write::{Msg, Publish};
use crate::{lock, sys};

/// Chunks in flight between a stream and its writer or reader thread.
const CHANNEL_CHUNKS: usize = 4;

/// A persistent cache in a local directory. See the crate documentation.
///
/// Cheap to clone: clones share one handle.
#[derive(Clone)]
pub struct DiskCache {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub layout: Layout,
    pub config: Config,
    pub counters: Counters,
    pub usage: Usage,
    /// Coalesces `get_or_insert_with` callers of this process per key.
    pub flights: KeyedMutex,
    /// Held shared while this handle is open (see `open_with`).
    _users: File,
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

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("blocking task cancelled: {e}"),
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
                if let Some((meta, _)) = inner.peek(&hash, &path)
                    && meta.key.starts_with(&prefix)
                    && (include_expired || !meta.is_expired(now))
                    && tx.blocking_send(Ok(meta)).is_err()
                {
                    return;
                }
            }
        });
        futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed()
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
    fn open(config: Config) -> Result<Inner> {
        let root = config.root.clone();
        let bad = |message: String| Error::Open {
            location: root.display().to_string(),
            message,
        };
        match fs::metadata(&root) {
            Ok(m) if !m.is_dir() => {
                return Err(bad(
                    "it exists and is not a directory; pick another root".into()
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut b = DirBuilder::new();
                b.recursive(true);
                #[cfg(unix)]
                std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
                b.create(&root)
                    .map_err(|e| bad(format!("cannot create the directory: {e}")))?;
                sys::set_private_dir(&root)
                    .map_err(|e| bad(format!("cannot make the directory private: {e}")))?;
            }
            Err(e) => return Err(bad(format!("cannot inspect it: {e}"))),
        }
        let layout = Layout::new(&root);
        for dir in [&layout.base, &layout.entries, &layout.locks, &layout.tmp] {
            make_private_dir(dir).map_err(|e| {
                bad(format!(
                    "cannot create {}: {e} (is the directory writable by this user?)",
                    dir.display()
                ))
            })?;
        }
        for dir in layout.fanout_dirs() {
            make_private_dir(&dir)
                .map_err(|e| bad(format!("cannot create {}: {e}", dir.display())))?;
        }
        let users = lock::open_persistent(&layout.users_lock()).map_err(|e| {
            bad(format!(
                "cannot open the users lock (is the directory writable?): {e}"
            ))
        })?;
        let usage = Usage::open(&layout.usage_file())
            .map_err(|e| bad(format!("cannot open the usage file: {e}")))?;
        let inner = Inner {
            layout,
            config,
            counters: Counters::default(),
            usage,
            flights: KeyedMutex::new(),
            _users: users,
        };
        inner.sweep_temp_files();
        // Alone with the root: the counters can be rebuilt exactly.
        if inner._users.try_lock().is_ok() {
            let c = inner.recount();
            tracing::debug!(entries = c.entries, bytes = c.bytes, "recounted the cache");
            if inner.over_limits(c) {
                inner.evict(None);
            }
        }
        inner
            ._users
            .lock_shared()
            .map_err(|e| bad(format!("cannot take the users lock: {e}")))?;
        Ok(inner)
    }

    /// Removes temp files whose writer is gone (their lock is free).
    fn sweep_temp_files(&self) {
        let Ok(rd) = fs::read_dir(&self.layout.tmp) else {
            return;
        };
        let mut swept = 0u64;
        for e in rd.flatten() {
            let path = e.path();
            let Ok(f) = lock::open_persistent(&path) else {
                continue;
            };
            if f.try_lock().is_ok() && fs::remove_file(&path).is_ok() {
                swept += 1;
            }
        }
        if swept > 0 {
            tracing::info!(swept, "removed temp files left by interrupted writes");
        }
    }

    /// Whether small operations run on the calling task (see `inline_io`).
    pub(crate) fn inline(&self) -> bool {
        self.config.inline_io_max > 0 && !self.config.durable
    }

    fn head(&self, key: &str) -> Result<Option<EntryMeta>> {
        let hash = key_hash(key);
        match self.open_entry(Some(key), &hash, &self.layout.entry_path(&hash), false)? {
            Found::Missing => Ok(None),
            Found::Expired(o) => {
                if self.remove_if_same(key, &hash, o.id()).is_some() {
                    Counters::bump(&self.counters.expired);
                }
                Ok(None)
            }
            Found::Live(o) => Ok(Some(o.meta)),
        }
    }

    fn delete(&self, key: &str, hash: &str) -> Result<bool> {
        let lock =
            lock::KeyLock::acquire(&self.layout.lock_path(hash), key, self.config.lock_timeout)?;
        let removed = self.remove_locked(hash, None).is_some();
        drop(lock);
        if removed {
            Counters::bump(&self.counters.deletes);
        }
        Ok(removed)
    }

    /// Removes every entry for which `doomed` says so; returns how many.
    fn sweep(&self, doomed: impl Fn(&EntryMeta) -> bool) -> u64 {
        let mut n = 0;
        for (hash, path) in self.entry_files() {
            if let Some((meta, id)) = self.peek(&hash, &path)
                && doomed(&meta)
                && self.remove_if_same(&meta.key, &hash, id).is_some()
            {
                n += 1;
            }
        }
        n
    }
}

fn make_private_dir(dir: &Path) -> io::Result<()> {
    let mut b = DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    match b.create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let m = fs::symlink_metadata(dir)?;
            if m.is_dir() {
                Ok(())
            } else {
                Err(io::Error::other(
                    "exists and is not a directory (a symbolic link is not followed)",
                ))
            }
        }
        Err(e) => Err(e),
    }
}

#[async_trait]
impl Cache for DiskCache {
    async fn set(&self, key: &str, value: Value, opts: SetOptions) -> Result<EntryMeta> {
        validate_key(key)?;
        let inner = self.inner.clone();
        let kind = value.kind();
        let payload = value.into_bytes();
        if inner.inline() && payload.len() as u64 <= inner.config.inline_io_max {
            match inner.write_value(key, kind, payload, opts, false, false)? {
                Publish::Done(meta) => return Ok(meta),
                Publish::Blocked(sealed) => {
                    let key = key.to_owned();
                    return blocking(move || inner.publish(&key, sealed, false, true))
                        .await
                        .map(Publish::done);
                }
            }
        }
        let key = key.to_owned();
        blocking(move || {
            inner
                .write_value(&key, kind, payload, opts, false, true)
                .map(Publish::done)
        })
        .await
    }

    async fn set_stream(
        &self,
        key: &str,
        mut stream: ByteStream,
        opts: SetOptions,
    ) -> Result<EntryMeta> {
        validate_key(key)?;
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let inner = self.inner.clone();
        let owned = key.to_owned();
        let writer = tokio::task::spawn_blocking(move || inner.write_stream(&owned, rx, opts));
        // An uncompressed stream is checksummed here, as its chunks pass: the
        // checksum (crc32c, about 30 µs per MiB) then runs beside the
        // writer's system calls instead of before them, which is what keeps
        // a stream near the speed of a plain file write. Compression, much
        // dearer, stays on the writer thread.
        let mut sum = match opts.compression.codec() {
            Codec::None => Some(Encoder::new(Compression::NONE).expect("no codec to set up")),
            _ => None,
        };
        let fed: Result<()> = loop {
            match stream.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => {}
                Some(Ok(chunk)) => {
                    let chunk = match &mut sum {
                        Some(sum) => sum.encode(chunk).expect("no codec: nothing to fail"),
                        None => chunk,
                    };
                    if tx.send(Msg::Data(chunk)).await.is_err() {
                        break Ok(()); // the writer stopped; its error says why
                    }
                }
                Some(Err(source)) => {
                    break Err(Error::Stream {
                        key: Error::display_key(key),
                        source,
                    });
                }
                None => {
                    let totals = sum.take().map(|sum| {
                        let (_, totals) = sum.finish().expect("no codec: nothing to fail");
                        totals
                    });
                    let _ = tx.send(Msg::End(totals)).await;
                    break Ok(());
                }
            }
        };
        drop(tx);
        let written = match writer.await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("writer task cancelled: {e}"),
        };
        fed?;
        written
    }

    async fn get(&self, key: &str) -> Result<Option<Value>> {
        Ok(self.get_entry(key).await?.map(|(_, v)| v))
    }

    async fn get_entry(&self, key: &str) -> Result<Option<(EntryMeta, Value)>> {
        validate_key(key)?;
        let inner = self.inner.clone();
        let key = key.to_owned();
        if inner.inline() {
            let hash = key_hash(&key);
            let Some(o) = inner.lookup(&key, &hash, true, true)? else {
                return Ok(None);
            };
            if inner.finishes_inline(&o) {
                return inner.finish_value(&key, &hash, *o).map(Some);
            }
            return blocking(move || inner.finish_value(&key, &hash, *o))
                .await
                .map(Some);
        }
        blocking(move || inner.read_value(&key, &key_hash(&key), true)).await
    }

    async fn get_stream(&self, key: &str, chunk_size: usize) -> Result<Option<GetStream>> {
        validate_key(key)?;
        if chunk_size == 0 {
            return Err(Error::InvalidInput {
                message: "chunk_size must be at least 1".into(),
            });
        }
        let inner = self.inner.clone();
        let key = key.to_owned();
        let hash = key_hash(&key);
        let opened = if inner.inline() {
            inner.lookup(&key, &hash, false, true)?
        } else {
            let (inner, key, hash) = (inner.clone(), key.clone(), hash.clone());
            blocking(move || inner.lookup(&key, &hash, false, true)).await?
        };
        let Some(opened) = opened else {
            return Ok(None);
        };
        let meta = opened.meta.clone();
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        tokio::task::spawn_blocking(move || {
            inner.stream_entry(&key, &hash, *opened, chunk_size, tx)
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Some(GetStream::new(meta, stream.boxed())))
    }

    async fn head(&self, key: &str) -> Result<Option<EntryMeta>> {
        validate_key(key)?;
        let inner = self.inner.clone();
        if inner.inline() {
            return inner.head(key);
        }
        let key = key.to_owned();
        blocking(move || inner.head(&key)).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        validate_key(key)?;
        let inner = self.inner.clone();
        let key = key.to_owned();
        blocking(move || inner.delete(&key, &key_hash(&key))).await
    }

    fn list(&self, prefix: Option<&str>) -> BoxStream<'static, Result<EntryMeta>> {
        self.list_filtered(prefix, false)
    }

    fn list_all(&self, prefix: Option<&str>) -> BoxStream<'static, Result<EntryMeta>> {
        self.list_filtered(prefix, true)
    }

    async fn purge_expired(&self) -> Result<u64> {
        let inner = self.inner.clone();
        blocking(move || {
            let now = inner.config.clock.now();
            let n = inner.sweep(|m| m.is_expired(now));
            inner
                .counters
                .expired
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            if n > 0 {
                tracing::info!(removed = n, "purged expired entries");
            }
            Ok(n)
        })
        .await
    }

    async fn clear(&self) -> Result<u64> {
        let inner = self.inner.clone();
        blocking(move || {
            let n = inner.sweep(|_| true);
            tracing::info!(removed = n, "cleared the cache");
            Ok(n)
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
        validate_key(key)?;
        if let Some(v) = self.get(key).await? {
            return Ok(v);
        }
        let timeout = self.inner.config.lock_timeout;
        let _local = self.inner.flights.lock(key, timeout).await?;
        let recheck = |inner: Arc<Inner>, key: String| {
            blocking(move || {
                let hash = key_hash(&key);
                inner
                    .read_value(&key, &hash, false)
                    .map(|found| found.map(|(_, v)| v))
            })
        };
        if let Some(v) = recheck(self.inner.clone(), key.to_owned()).await? {
            return Ok(v);
        }
        let lock = {
            let (inner, key) = (self.inner.clone(), key.to_owned());
            blocking(move || {
                lock::KeyLock::acquire(&inner.layout.lock_path(&key_hash(&key)), &key, timeout)
            })
            .await?
        };
        if let Some(v) = recheck(self.inner.clone(), key.to_owned()).await? {
            return Ok(v);
        }
        let value = init.await.map_err(|source| Error::Init {
            key: Error::display_key(key),
            source,
        })?;
        let (inner, owned, v) = (self.inner.clone(), key.to_owned(), value.clone());
        blocking(move || {
            let kind = v.kind();
            let r = inner
                .write_value(&owned, kind, v.into_bytes(), opts, true, true)
                .map(Publish::done);
            drop(lock);
            r
        })
        .await?;
        Ok(value)
    }

    async fn stats(&self) -> Result<Stats> {
        let inner = self.inner.clone();
        blocking(move || {
            let c = inner.usage.get().map_err(|source| Error::Io {
                key: String::new(),
                path: inner.layout.usage_file(),
                op: "read the usage counters",
                source,
            })?;
            Ok(inner.counters.snapshot(c.entries, c.bytes))
        })
        .await
    }
}
