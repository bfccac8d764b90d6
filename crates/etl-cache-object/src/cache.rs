//! `ObjectCache` and its `Cache` implementation.

use std::sync::Arc;

use async_trait::async_trait;
use etl_cache_core::backend::Counters;
use etl_cache_core::{
    ByteStream, Cache, EntryMeta, Error, GetStream, InitFuture, Result, SetOptions, Stats, Value,
    validate_key,
};
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{ObjectError, ObjectErrorKind, classify, is_not_found};
use crate::inner::Inner;
use crate::layout::Name;
use crate::local::{Listed, Standing};
use crate::read::Probe;

/// How many entries `list` and `purge_expired` read at once.
const LIST_CONCURRENCY: usize = 16;
/// How many objects `clear` checks at once (a ranged get of their first bytes).
const CLEAR_CONCURRENCY: usize = 32;

impl Inner {
    /// Lists objects under `root` (the whole store for the empty path). On
    /// a local directory: its regular files, found without going through
    /// links.
    pub(crate) fn list_objects(&self, root: &Path) -> BoxStream<'static, Result<Listed>> {
        let inner_name = self.name;
        let bucket = self.bucket.clone();
        let shown = root.clone();
        let error = move |kind, source: Box<dyn std::error::Error + Send + Sync + 'static>| {
            Error::Backend {
                backend: inner_name,
                key: String::new(),
                source: Box::new(ObjectError {
                    kind,
                    store: inner_name,
                    bucket: bucket.clone(),
                    key: String::new(),
                    path: shown.to_string(),
                    op: "list",
                    source: Some(source),
                }),
            }
        };
        if let Some(local) = &self.local {
            return local
                .list(root)
                .map_err(move |e| error(ObjectErrorKind::Other, Box::new(e)))
                .boxed();
        }
        let listing = if root.as_ref().is_empty() {
            self.store.list(None)
        } else {
            self.store.list(Some(root))
        };
        listing
            .map_ok(Listed::from)
            .map_err(move |e| error(classify(&e), Box::new(e)))
            .boxed()
    }

    /// The entries (by name) under the folders holding keys with `prefix`.
    fn candidates(
        self: &Arc<Self>,
        key_prefix: &str,
    ) -> BoxStream<'static, Result<(Listed, Option<String>)>> {
        let root = self.layout.list_root(key_prefix);
        let mut roots = vec![root.clone()];
        if root != *self.layout.prefix() {
            roots.push(self.layout.long_root());
        }
        let this = self.clone();
        let wanted = key_prefix.to_owned();
        stream::iter(roots)
            .flat_map(move |r| this.list_objects(&r))
            .try_filter_map({
                let this = self.clone();
                move |m| {
                    let found = match this.layout.classify(&m.location) {
                        Name::Direct(k) if k.starts_with(&wanted) => Some((m, Some(k))),
                        Name::Long => Some((m, None)),
                        _ => None,
                    };
                    futures::future::ready(Ok(found))
                }
            })
            .boxed()
    }

    /// Reads the metadata of listed entries and yields `(meta, expired)`;
    /// corrupt entries are skipped. With `purge`, expired and corrupt
    /// entries are removed if unchanged since they were read (expired ones
    /// are yielded only if that removed them).
    fn probe_all(
        self: &Arc<Self>,
        key_prefix: &str,
        purge: bool,
    ) -> BoxStream<'static, Result<(EntryMeta, bool)>> {
        let this = self.clone();
        let wanted = key_prefix.to_owned();
        self.candidates(key_prefix)
            .try_filter(|(m, _)| futures::future::ready(m.size >= 4))
            .map_ok(move |(m, key)| {
                let this = this.clone();
                let wanted = wanted.clone();
                async move {
                    let shown = key.clone().unwrap_or_else(|| m.location.to_string());
                    match this.probe(&shown, &m.location).await {
                        Ok(Probe::Missing) | Ok(Probe::Foreign(_)) => Ok(None),
                        Ok(Probe::Entry(p)) => {
                            if !p.meta.key.starts_with(&wanted) {
                                return Ok(None);
                            }
                            let expired = p.meta.is_expired(this.config.clock.now());
                            if expired && purge {
                                if !this
                                    .remove_judged(&p.meta.key, &m.location, &p.judged)
                                    .await
                                {
                                    return Ok(None);
                                }
                                Counters::bump(&this.counters.expired);
                            }
                            Ok(Some((p.meta, expired)))
                        }
                        Ok(Probe::Corrupt { reason, judged }) => {
                            if purge && this.remove_judged(&shown, &m.location, &judged).await {
                                tracing::warn!(key = shown, reason, "removed a corrupt entry");
                            } else if !purge {
                                tracing::warn!(
                                    key = shown,
                                    reason,
                                    "skipped a corrupt entry while listing"
                                );
                            }
                            Ok(None)
                        }
                        Err(e) => Err(e),
                    }
                }
            })
            .try_buffer_unordered(LIST_CONCURRENCY)
            .try_filter_map(|x| futures::future::ready(Ok(x)))
            .boxed()
    }
}

/// The etl-cache contract on any object store: S3, Azure Blob Storage, GCS,
/// a local directory or memory.
///
/// Cheap to clone: clones share the store and the counters.
///
/// - **One object per entry**, at `<prefix>/<key>` (a key's folders stay
///   folders), holding the entry format of [`etl_cache_core::backend::format`]: a
///   header (key, kind, codec, creation and expiry times), the payload and a
///   trailer (lengths, checksums). It works on every store, since nothing
///   depends on object metadata. Entries are written in format 2 (the
///   payload in blocks of 1 MiB, each with its crc32c); format 1 entries,
///   written by older versions, are still read.
/// - **No unchecked byte.** [`Cache::get`] checks the whole payload before
///   decoding it. [`Cache::get_stream`] holds one block at a time, checks
///   it, then hands it out (a compressed entry is decompressed from checked
///   bytes only); the last block only after the trailer. A damaged block
///   ends the stream with an `InvalidData` error carrying
///   [`Error::Corrupt`] once the blocks before it were handed out. A format
///   1 entry can only be checked whole: up to 8 MiB it is read into memory
///   and checked before the stream starts; a larger one is read twice, a
///   first GET that checks it in bounded memory and a second one, pinned to
///   the same e-tag or version, that streams it (twice the transfer, until
///   the entry is written again).
/// - **Atomic.** Each write is one `PUT` or one multipart upload, which
///   stores publish all at once; a reader sees the old entry or the new one.
///   A read that needs more than one request (a resumed body, the trailer of a
///   compressed stream) pins its requests to the object's e-tag, so two writes are never
///   mixed: the read fails instead.
/// - **Streams** go up as multipart uploads with at most
///   `max_concurrency` parts of `part_size` bytes in memory, and come down as
///   they arrive, decompressed on the fly. A body cut mid-way is resumed with
///   a ranged get pinned to the e-tag, or fails — never returns short data.
/// - **Expiry** is checked on every read: an expired entry reads as a miss.
///   [`Cache::purge_expired`] lists the prefix and removes expired (and
///   corrupt) entries. Bucket lifecycle rules are a useful backstop (see the
///   crate README).
/// - **Reads never delete.** An expired or corrupt entry is reported (a
///   miss, [`Error::Corrupt`]) and left in place, and counts in
///   [`Cache::stats`] until a purge: object stores give no conditional
///   delete through `object_store`, and an unconditional one after a read
///   would delete a value another host wrote in between. `purge_expired`
///   reads each object's version again (`HEAD`) just before deleting it and
///   skips it if it changed; a write that lands between that `HEAD` and the
///   `DELETE` (one round trip) is still lost.
/// - **Cancellation.** A write whose future is dropped before its final
///   request (the one `PUT`, or the completion of a multipart upload) was
///   sent never publishes; its upload is aborted. One dropped while that
///   request is in flight may still be applied by the server after the drop,
///   over a value written since: a request already sent cannot be taken
///   back (S3, Azure, GCS, HTTP; the same holds for a dropped `delete`). On
///   a plain `LocalFileSystem` (the store itself, or a `local_dir`) the
///   cache writes the file itself and publishes it with a rename that the
///   drop waits for or stops, so a dropped write took effect before the
///   drop or never does (a dropped `delete` still runs on the store's
///   blocking thread and may apply after the drop); a wrapper store over `LocalFileSystem` writes on a
///   blocking thread that outlives the drop, like a remote store. A
///   `get_or_insert_with` dropped at any point leaves no lease behind (one
///   won after the drop is released by its own task).
/// - **Single flight** across hosts: `get_or_insert_with` of
///   [`etl_cache_core::CacheExt`], and [`ObjectCache::get_or_insert_with_timeout`].
/// - **Only its own objects.** An object without the entry header is never
///   deleted: reads report it as [`crate::ObjectErrorKind::NotAnEntry`] and
///   `clear` checks the first bytes of each object before deleting it. On a
///   local directory, symbolic links, FIFOs and directories where an entry
///   should be are not entries either, and no linked folder is entered
///   (see [`crate::ObjectCacheBuilder::local_root`]).
///
/// Unlike the disk cache, it has no capacity limit: buckets are large, and
/// lifecycle rules expire old objects cheaply.
#[derive(Debug, Clone)]
pub struct ObjectCache {
    pub(crate) inner: Arc<Inner>,
}

impl ObjectCache {
    pub(crate) fn from_inner(inner: Inner) -> ObjectCache {
        ObjectCache {
            inner: Arc::new(inner),
        }
    }

    /// The store under the cache; for a network store, wrapped in the
    /// cache's idle timeout ([`crate::ObjectCacheBuilder::idle_timeout`]).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    /// The folder of the bucket holding the cache.
    pub fn prefix(&self) -> &str {
        self.inner.layout.prefix().as_ref()
    }

    /// The object that holds (or would hold) the entry of `key`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] for an invalid key.
    pub fn object_path(&self, key: &str) -> Result<Path> {
        validate_key(key)?;
        Ok(self.inner.layout.entry(key))
    }

    /// `get_entry` of a key already validated (single flight reads it
    /// several times).
    pub(crate) async fn read_checked(&self, key: &str) -> Result<Option<(EntryMeta, Value)>> {
        let found = self.inner.read_value(key).await?;
        Ok(self.counted(found))
    }

    /// Counts a read as a hit or a miss.
    fn counted<T>(&self, found: Option<T>) -> Option<T> {
        Counters::bump(if found.is_some() {
            &self.inner.counters.hits
        } else {
            &self.inner.counters.misses
        });
        found
    }
}

#[async_trait]
impl Cache for ObjectCache {
    async fn set(&self, key: &str, value: Value, opts: SetOptions) -> Result<EntryMeta> {
        etl_cache_core::backend::obs::observe("object", "set", Some(key), async move {
            validate_key(key)?;
            self.inner.write_value(key, value, opts).await
        })
        .await
    }

    async fn set_stream(
        &self,
        key: &str,
        stream: ByteStream,
        opts: SetOptions,
    ) -> Result<EntryMeta> {
        etl_cache_core::backend::obs::observe("object", "set_stream", Some(key), async move {
            validate_key(key)?;
            self.inner.write_stream(key, stream, opts).await
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<Value>> {
        etl_cache_core::backend::obs::observe("object", "get", Some(key), async move {
            Ok(self.get_entry(key).await?.map(|(_, v)| v))
        })
        .await
    }

    async fn get_entry(&self, key: &str) -> Result<Option<(EntryMeta, Value)>> {
        etl_cache_core::backend::obs::observe("object", "get_entry", Some(key), async move {
            validate_key(key)?;
            self.read_checked(key).await
        })
        .await
    }

    /// Reads the whole entry in one request, as `get` does.
    async fn get_raw(&self, key: &str) -> Result<Option<(EntryMeta, bytes::Bytes)>> {
        etl_cache_core::backend::obs::observe("object", "get_raw", Some(key), async move {
            validate_key(key)?;
            let found = self.inner.read_logical(key).await?;
            Ok(self.counted(found))
        })
        .await
    }

    /// Reads the whole entry in one request (as `get`), then cuts the
    /// range from it: one version, whatever writers do meanwhile. A read in
    /// several requests (the header, then the blocks that hold the range)
    /// would read less of a large entry, but fails with `Changed` when
    /// writers keep replacing it, which `get` never does.
    async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Option<(EntryMeta, bytes::Bytes)>> {
        etl_cache_core::backend::obs::observe("object", "get_range", Some(key), async move {
            validate_key(key)?;
            etl_cache_core::backend::check_range(&range)?;
            let found = self.inner.read_logical(key).await?;
            Counters::bump(if found.is_some() {
                &self.inner.counters.hits
            } else {
                &self.inner.counters.misses
            });
            Ok(found.map(|(meta, logical)| {
                let (start, end) = etl_cache_core::backend::clamp_range(&range, meta.logical_len);
                (meta, logical.slice(start as usize..end as usize))
            }))
        })
        .await
    }

    async fn get_stream(&self, key: &str, chunk_size: usize) -> Result<Option<GetStream>> {
        etl_cache_core::backend::obs::observe("object", "get_stream", Some(key), async move {
            validate_key(key)?;
            if chunk_size == 0 {
                return Err(Error::InvalidInput {
                    message: "chunk_size must be at least 1".into(),
                });
            }
            let found = self.inner.open_stream(key, chunk_size).await?;
            Counters::bump(if found.is_some() {
                &self.inner.counters.hits
            } else {
                &self.inner.counters.misses
            });
            Ok(found)
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<Option<EntryMeta>> {
        etl_cache_core::backend::obs::observe("object", "head", Some(key), async move {
            validate_key(key)?;
            let location = self.inner.layout.entry(key);
            match self.inner.probe(key, &location).await? {
                Probe::Missing => Ok(None),
                Probe::Foreign(why) => {
                    Err(self.inner.not_an_entry_because("read", key, &location, why))
                }
                Probe::Corrupt { reason, .. } => Err(self.inner.corrupt(key, reason)),
                Probe::Entry(p) => {
                    if p.meta.is_expired(self.inner.config.clock.now()) {
                        return Ok(None);
                    }
                    Ok(Some(p.meta))
                }
            }
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        etl_cache_core::backend::obs::observe("object", "delete", Some(key), async move {
            validate_key(key)?;
            let location = self.inner.layout.entry(key);
            match self.inner.standing(&location).await {
                Standing::Missing => return Ok(false),
                Standing::Other { why, .. } => {
                    return Err(self.inner.not_an_entry_because(
                        "delete",
                        key,
                        &location,
                        Some(why),
                    ));
                }
                Standing::File | Standing::Unknown => {}
            }
            match self.inner.store.head(&location).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => return Ok(false),
                Err(e) => return Err(self.inner.fail("head", key, &location, e)),
            }
            match self.inner.store.delete(&location).await {
                Ok(()) => {
                    Counters::bump(&self.inner.counters.deletes);
                    Ok(true)
                }
                Err(e) if is_not_found(&e) => Ok(false),
                Err(e) => Err(self.inner.fail("delete", key, &location, e)),
            }
        })
        .await
    }

    fn list(&self, prefix: Option<&str>) -> BoxStream<'static, Result<EntryMeta>> {
        etl_cache_core::backend::obs::observe_stream("object", "list", prefix, {
            self.inner
                .probe_all(prefix.unwrap_or(""), false)
                .try_filter_map(|(meta, expired)| {
                    futures::future::ready(Ok((!expired).then_some(meta)))
                })
                .boxed()
        })
    }

    fn list_all(&self, prefix: Option<&str>) -> BoxStream<'static, Result<EntryMeta>> {
        etl_cache_core::backend::obs::observe_stream("object", "list_all", prefix, {
            self.inner
                .probe_all(prefix.unwrap_or(""), false)
                .map_ok(|(meta, _)| meta)
                .boxed()
        })
    }

    async fn purge_expired(&self) -> Result<u64> {
        etl_cache_core::backend::obs::observe("object", "purge_expired", None, async move {
            self.inner
                .probe_all("", true)
                .try_fold(
                    0u64,
                    |n, (_, expired)| async move { Ok(n + expired as u64) },
                )
                .await
        })
        .await
    }

    /// Removes every entry of this cache: the objects under the prefix
    /// that the cache wrote. Objects it did not write are kept, whatever
    /// their names: each object whose name is one the cache gives entries
    /// is checked with a ranged get of its first four bytes (the entry
    /// magic), up to 32 requests in flight, before it is deleted. Clearing
    /// therefore costs one listing of the prefix, one small `GET` per
    /// entry-named object and the deletes (batched where the store allows).
    /// On a local directory only regular files are considered, and no
    /// linked directory is entered. Leases are not touched.
    ///
    /// Returns how many entries were deleted.
    async fn clear(&self) -> Result<u64> {
        etl_cache_core::backend::obs::observe("object", "clear", None, async move {
            let inner = self.inner.clone();
            let entries: Vec<Path> = inner
                .list_objects(inner.layout.prefix())
                .try_filter_map(|m| {
                    let found = match inner.layout.classify(&m.location) {
                        Name::Direct(key) if m.size >= 4 => Some((m.location, key)),
                        Name::Long if m.size >= 4 => {
                            Some((m.location.clone(), m.location.to_string()))
                        }
                        _ => None,
                    };
                    futures::future::ready(Ok(found))
                })
                .map_ok(|(location, key)| {
                    let inner = inner.clone();
                    async move {
                        let ours = inner.is_entry(&key, &location).await?;
                        Ok(ours.then_some(location))
                    }
                })
                .try_buffer_unordered(CLEAR_CONCURRENCY)
                .try_filter_map(|x| futures::future::ready(Ok(x)))
                .try_collect()
                .await?;
            let locations = stream::iter(entries.into_iter().map(Ok)).boxed();
            let removed = self
                .inner
                .store
                .delete_stream(locations)
                .filter_map(|r| {
                    futures::future::ready(match r {
                        Ok(_) => Some(Ok(())),
                        Err(e) if is_not_found(&e) => None,
                        Err(e) => Some(Err(e)),
                    })
                })
                .try_fold(0u64, |n, ()| async move { Ok(n + 1) })
                .await
                .map_err(|e| self.inner.fail("delete", "", self.inner.layout.prefix(), e))?;
            Ok(removed)
        })
        .await
    }

    async fn get_or_insert_boxed<'a>(
        &'a self,
        key: &'a str,
        opts: SetOptions,
        init: InitFuture<'a>,
    ) -> Result<Value> {
        etl_cache_core::backend::obs::observe_init("object", key, init, |init| async move {
            opts.validate_for(key)?;
            self.single_flight(key, opts, self.inner.config.lock_timeout, init)
                .await
        })
        .await
    }

    fn handle_id(&self) -> Option<etl_cache_core::HandleId> {
        Some(self.inner.id)
    }

    fn handle(&self) -> Option<std::sync::Arc<dyn Cache>> {
        Some(std::sync::Arc::new(self.clone()))
    }

    /// The counters of this handle, and the objects under the prefix that
    /// may be entries: one listing, no reads. An object counts when its name
    /// is one the cache gives entries and it is large enough to be one, so a
    /// foreign object of that size with such a name counts too (only a read
    /// can tell: `list` and `clear` do read). Expired and corrupt entries
    /// count until `purge_expired` removes them (reads never delete).
    async fn stats(&self) -> Result<Stats> {
        etl_cache_core::backend::obs::observe("object", "stats", None, async move {
            let inner = self.inner.clone();
            let (entries, bytes) = inner
                .list_objects(inner.layout.prefix())
                .try_fold((0u64, 0u64), |(n, b), m| {
                    let entry = m.size >= crate::read::MIN_ENTRY
                        && matches!(
                            inner.layout.classify(&m.location),
                            Name::Direct(_) | Name::Long
                        );
                    futures::future::ready(Ok(if entry { (n + 1, b + m.size) } else { (n, b) }))
                })
                .await?;
            Ok(self.inner.counters.snapshot(entries, bytes))
        })
        .await
    }
}
