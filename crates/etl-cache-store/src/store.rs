//! [`CachedStore`] and its `ObjectStore` implementation.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, RenameOptions, UploadPart,
};
use tracing::Instrument;

use crate::builder::CachedStoreBuilder;
use crate::engine::{Coord, Engine, identity};
use crate::reader::{Reader, Run};
use crate::stats::StoreStats;

/// An [`ObjectStore`] that reads through an etl-cache [`Cache`]
/// (`etl_cache_core::Cache`) in front of another store.
///
/// Objects are read in aligned blocks (8 MiB by default); each block read
/// from the inner store is kept in the cache under the object's path and
/// e-tag (or version, or last-modified time and size), and served from
/// there afterwards, by this process or any other sharing the cache.
/// Writes, deletes, copies, renames and lists go to the inner store;
/// writes, deletes, copies and renames through this store also drop what
/// the cache holds of the paths they change.
///
/// See the [crate documentation](crate) for an example and for what
/// [`Revalidate`](crate::Revalidate) trades.
///
/// [`Cache`]: etl_cache_core::Cache
#[derive(Debug, Clone)]
pub struct CachedStore {
    pub(crate) engine: Arc<Engine>,
}

impl std::fmt::Display for CachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CachedStore({})", self.engine.inner)
    }
}

fn invalid_range(e: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
    object_store::Error::Generic {
        store: "CachedStore",
        source: Box::new(e),
    }
}

fn has_conditions(o: &GetOptions) -> bool {
    o.if_match.is_some()
        || o.if_none_match.is_some()
        || o.if_modified_since.is_some()
        || o.if_unmodified_since.is_some()
}

/// Attempts at a read whose object changes under it before its first
/// byte is handed out.
const ATTEMPTS: usize = 3;

impl CachedStore {
    /// A builder of a store that caches `inner`'s objects.
    pub fn builder(inner: Arc<dyn ObjectStore>) -> CachedStoreBuilder {
        CachedStoreBuilder::new(inner)
    }

    /// The store read through.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.engine.inner
    }

    /// The cache the blocks are kept in.
    pub fn cache(&self) -> &Arc<dyn etl_cache_core::Cache> {
        &self.engine.cache
    }

    /// Waits until the blocks that reads fetched are kept in the cache.
    ///
    /// A read hands each block on as soon as it arrives and keeps it in the
    /// cache in a task of its own (at most 4 blocks at once), so a cold scan
    /// does not wait for the disk. A process about to exit after a scan
    /// calls this first, or the last few blocks are fetched again by the
    /// next run; so does a test that looks at the cache directory.
    ///
    /// ```no_run
    /// # async fn demo(store: etl_cache_store::CachedStore) {
    /// // ... a scan through `store` ...
    /// store.settle().await; // everything it fetched is on disk now
    /// # }
    /// ```
    pub async fn settle(&self) {
        drop(self.engine.no_keeping().await);
    }

    /// What this store counted since it was built.
    pub fn stats(&self) -> StoreStats {
        self.engine.stats.snapshot()
    }

    /// The object's metadata and attributes from the inner store (a request
    /// without a body), remembered.
    async fn head_inner(
        &self,
        path: &Path,
        snapshot: u64,
    ) -> object_store::Result<(ObjectMeta, Attributes)> {
        let got = match self
            .engine
            .fetch(path, GetOptions::new().with_head(true))
            .await
        {
            Ok(got) => got,
            Err(e) => {
                if matches!(e, object_store::Error::NotFound { .. }) {
                    self.engine.forget_meta(path).await;
                }
                return Err(e);
            }
        };
        self.engine
            .remember(path, &got.meta, &got.attributes, snapshot)
            .await;
        Ok((got.meta, got.attributes))
    }

    async fn read(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        let eng = &self.engine;
        let mut attempt = 0;
        // A first read waits for another handle's first read of the same
        // blocks once; after that it reads on its own.
        let mut coordinate_first = true;
        loop {
            attempt += 1;
            let snapshot = eng.snapshot();
            let known = eng.known(location).await;
            let probe_first = options.head
                || has_conditions(&options)
                || matches!(options.range, Some(GetRange::Suffix(_)));
            // The metadata the read goes by, and whether it still needs
            // checking (done by the first block fetched, on condition that
            // the object is that version).
            let (meta, attributes, unchecked) = match known {
                Some(k) if eng.fresh(&k) => (k.meta, k.attributes, false),
                Some(k) if !probe_first => (k.meta, k.attributes, true),
                _ if probe_first => {
                    let (meta, attributes) = self.head_inner(location, snapshot).await?;
                    (meta, attributes, false)
                }
                _ => {
                    match self
                        .first_read(location, &options, snapshot, coordinate_first)
                        .await?
                    {
                        Some(r) => return Ok(r),
                        None => {
                            // Another handle read it meanwhile: what it
                            // learnt and kept is in the cache.
                            coordinate_first = false;
                            attempt -= 1;
                            continue;
                        }
                    }
                }
            };
            let resolve = |meta: &ObjectMeta| match &options.range {
                Some(r) => r.as_range(meta.size).map_err(invalid_range),
                None => Ok(0..meta.size),
            };
            let (mut meta, mut attributes, mut unchecked) = (meta, attributes, unchecked);
            if unchecked {
                // A read whose first block is kept, or that is empty or out
                // of range by what is known, would not ask the inner store
                // first: check the object's metadata instead.
                let known_range = resolve(&meta);
                let ask_first = match &known_range {
                    Err(_) => true,
                    Ok(r) if r.is_empty() => true,
                    Ok(r) => {
                        let obj = eng.obj(meta.clone());
                        eng.holds(&eng.block_key(&obj, r.start / eng.bs())).await
                    }
                };
                if ask_first {
                    let (now, now_attributes) = self.head_inner(location, snapshot).await?;
                    if identity(&now) != identity(&meta) && attempt < ATTEMPTS {
                        continue; // changed: start again with what it is now
                    }
                    (meta, attributes) = (now, now_attributes);
                    unchecked = false;
                }
            }
            options.check_preconditions(&meta)?;
            let range = resolve(&meta)?;
            if options.head {
                return Ok(result(
                    meta,
                    attributes,
                    range,
                    futures::stream::empty().boxed(),
                ));
            }
            let obj = Arc::new(eng.obj(meta.clone()));
            let mut reader = Reader::new(eng.clone(), obj, range.clone(), None);
            match reader.next_chunk().await {
                Ok(first) => {
                    if unchecked {
                        if !reader.fetched() {
                            // The first block was kept by another read
                            // meanwhile: nothing was checked yet.
                            let (now, now_attributes) = self.head_inner(location, snapshot).await?;
                            if identity(&now) != identity(&meta) {
                                if attempt < ATTEMPTS {
                                    continue;
                                }
                                return Err(crate::reader::changed(location));
                            }
                            attributes = now_attributes;
                        } else {
                            // The object was checked by the request that
                            // fetched the first block: its attributes are
                            // the ones current now.
                            if let Some(answered) = reader.answered_attributes() {
                                attributes = answered.clone();
                            }
                            eng.remember(location, &meta, &attributes, snapshot).await;
                        }
                    }
                    return Ok(result(meta, attributes, range, prepend(first, reader)));
                }
                Err(object_store::Error::Precondition { .. }) if attempt < ATTEMPTS => {
                    // A fetch found another version: what was known is
                    // stale. Look again.
                    eng.forget_meta(location).await;
                }
                Err(e @ object_store::Error::NotFound { .. }) => {
                    eng.forget_meta(location).await;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The first read of an object not known yet: one request for the
    /// blocks around the range, whose response tells the metadata.
    ///
    /// With `coordinate`, it first takes the cache's lock on the first
    /// block (see [`Engine::coordinate`]); `None` when another handle or
    /// process read the object meanwhile, so that the caller looks at what
    /// the cache now knows.
    async fn first_read(
        &self,
        location: &Path,
        options: &GetOptions,
        snapshot: u64,
        coordinate: bool,
    ) -> object_store::Result<Option<GetResult>> {
        let eng = &self.engine;
        let bs = eng.bs();
        let aligned = match &options.range {
            None => None,
            Some(GetRange::Bounded(r)) => {
                if r.start >= r.end {
                    return Err(invalid_range(object_store::Error::Generic {
                        store: "CachedStore",
                        source: format!("range {r:?} is empty or reversed").into(),
                    }));
                }
                Some(GetRange::Bounded(
                    r.start / bs * bs..r.end.div_ceil(bs).saturating_mul(bs),
                ))
            }
            Some(GetRange::Offset(o)) => Some(GetRange::Offset(o / bs * bs)),
            Some(GetRange::Suffix(_)) => unreachable!("suffix reads look the object up first"),
        };
        let held = if coordinate {
            let first = match &aligned {
                Some(GetRange::Bounded(r)) => r.start / bs,
                Some(GetRange::Offset(o)) => o / bs,
                _ => 0,
            };
            match eng.coordinate(eng.lock_key(location, first)).await {
                Coord::Off => None,
                Coord::Followed => return Ok(None),
                Coord::Led(h) => {
                    if eng.known(location).await.is_some() {
                        // Another handle's first read held the lock (or
                        // ended just before it was taken).
                        eng.stats.join();
                        return Ok(None);
                    }
                    Some(h)
                }
            }
        } else {
            None
        };
        let got = eng
            .fetch(location, GetOptions::new().with_range(aligned))
            .await?;
        let meta = got.meta.clone();
        let attributes = got.attributes.clone();
        eng.remember(location, &meta, &attributes, snapshot).await;
        let range = match &options.range {
            Some(r) => r.as_range(meta.size).map_err(invalid_range)?,
            None => 0..meta.size,
        };
        let obj = Arc::new(eng.obj(meta.clone()));
        let body_range = got.range.clone();
        let run = (!body_range.is_empty()).then(|| {
            Run::over(
                eng.clone(),
                obj.clone(),
                body_range.start / bs,
                body_range.end.div_ceil(bs),
                got.into_stream(),
                held,
                snapshot,
            )
        });
        let mut reader = Reader::new(eng.clone(), obj, range.clone(), run);
        let first = reader.next_chunk().await?;
        Ok(Some(result(
            meta,
            attributes,
            range,
            prepend(first, reader),
        )))
    }
}

fn prepend(first: Option<Bytes>, rest: Reader) -> BoxStream<'static, object_store::Result<Bytes>> {
    match first {
        Some(c) => futures::stream::once(async { Ok(c) })
            .chain(rest.into_stream())
            .boxed(),
        None => futures::stream::empty().boxed(),
    }
}

fn result(
    meta: ObjectMeta,
    attributes: Attributes,
    range: Range<u64>,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
) -> GetResult {
    GetResult {
        payload: GetResultPayload::Stream(stream),
        meta,
        range,
        attributes,
    }
}

/// The paths a write through the store changes. They are marked before the
/// write is sent and forgotten after it; a write whose future is dropped
/// half way (it may still be applied) has them marked and forgotten all the
/// same, from its drop.
struct Changing {
    engine: Arc<Engine>,
    paths: Vec<Path>,
    done: bool,
}

impl Changing {
    fn new(engine: &Arc<Engine>, paths: &[&Path]) -> Self {
        for p in paths {
            engine.mark_written(p);
        }
        Changing {
            engine: engine.clone(),
            paths: paths.iter().map(|p| (*p).clone()).collect(),
            done: false,
        }
    }

    async fn done(mut self) {
        for p in &self.paths {
            self.engine.written(p).await;
        }
        self.done = true;
    }
}

impl Drop for Changing {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        for p in &self.paths {
            self.engine.mark_written(p);
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (engine, paths) = (self.engine.clone(), std::mem::take(&mut self.paths));
            rt.spawn(async move {
                for p in &paths {
                    engine.written(p).await;
                }
            });
        }
    }
}

/// A multipart upload through the store: the path's cached blocks are
/// dropped when it completes.
#[derive(Debug)]
struct Upload {
    inner: Box<dyn MultipartUpload>,
    engine: Arc<Engine>,
    path: Path,
}

#[async_trait]
impl MultipartUpload for Upload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let changing = Changing::new(&self.engine, &[&self.path]);
        let r = self.inner.complete().await;
        changing.done().await;
        r
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

fn span(op: &'static str, path: &Path) -> tracing::Span {
    tracing::debug_span!("cached_store", op, path = %path, range = tracing::field::Empty, outcome = tracing::field::Empty)
}

#[async_trait]
impl ObjectStore for CachedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let s = span("put", location);
        async {
            let changing = Changing::new(&self.engine, &[location]);
            let r = self.engine.inner.put_opts(location, payload, opts).await;
            changing.done().await;
            r
        }
        .instrument(s)
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.engine.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(Upload {
            inner,
            engine: self.engine.clone(),
            path: location.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let s = span(if options.head { "head" } else { "get" }, location);
        if let Some(r) = &options.range {
            s.record("range", tracing::field::debug(r));
        }
        let before = self.engine.stats.snapshot();
        async {
            if options.version.is_some() {
                // A given version: not cached, passed through.
                tracing::Span::current().record("outcome", "passed through");
                return self.engine.inner.get_opts(location, options).await;
            }
            let r = self.read(location, options).await;
            let after = self.engine.stats.snapshot();
            let outcome = match &r {
                Err(_) => "error",
                Ok(_) if after.inner_requests == before.inner_requests => "hit",
                Ok(_) if after.hits > before.hits => "partial hit",
                Ok(_) => "miss",
            };
            tracing::Span::current().record("outcome", outcome);
            r
        }
        .instrument(s)
        .await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        // As object_store's stores: an empty or reversed range is an error.
        if let Some(r) = ranges.iter().find(|r| r.start >= r.end) {
            return Err(invalid_range(object_store::Error::Generic {
                store: "CachedStore",
                source: format!("range {r:?} is empty or reversed").into(),
            }));
        }
        // The blocks the ranges touch, merged where they touch or overlap:
        // one read (at most one request) per group.
        let bs = self.engine.bs();
        let mut spans: Vec<Range<u64>> = ranges
            .iter()
            .map(|r| r.start / bs * bs..r.end.div_ceil(bs) * bs)
            .collect();
        spans.sort_by_key(|r| r.start);
        let mut groups: Vec<Range<u64>> = Vec::new();
        for s in spans {
            match groups.last_mut() {
                Some(g) if s.start <= g.end => g.end = g.end.max(s.end),
                _ => groups.push(s),
            }
        }
        let mut fetched: Vec<(u64, Bytes)> = Vec::with_capacity(groups.len());
        let mut size = None;
        for g in groups {
            let got = self
                .get_opts(location, GetOptions::new().with_range(Some(g.clone())))
                .await?;
            size = Some(got.meta.size);
            let start = got.range.start;
            fetched.push((start, got.bytes().await?));
        }
        let size = match size {
            Some(s) => s,
            None => self.head_meta(location).await?.size,
        };
        ranges
            .iter()
            .map(|r| {
                // As the stores do: a range that runs past the end is cut
                // there; one that starts past it is an error.
                let r = GetRange::Bounded(r.clone())
                    .as_range(size)
                    .map_err(invalid_range)?;
                let (start, bytes) = fetched
                    .iter()
                    .rev()
                    .find(|(s, _)| *s <= r.start)
                    .expect("a group covers every range");
                Ok(bytes.slice((r.start - start) as usize..(r.end - start) as usize))
            })
            .collect()
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let engine = self.engine.clone();
        let marking = self.engine.clone();
        // Each path is marked as it is handed to the inner store, and
        // forgotten once its deletion is reported.
        let locations = locations
            .inspect(move |r| {
                if let Ok(p) = r {
                    marking.mark_written(p);
                }
            })
            .boxed();
        self.engine
            .inner
            .delete_stream(locations)
            .then(move |r| {
                let engine = engine.clone();
                async move {
                    if let Ok(p) = &r {
                        engine.written(p).await;
                    }
                    r
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.engine.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.engine.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.engine.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let changing = Changing::new(&self.engine, &[to]);
        let r = self.engine.inner.copy_opts(from, to, options).await;
        changing.done().await;
        r
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        let changing = Changing::new(&self.engine, &[from, to]);
        let r = self.engine.inner.rename_opts(from, to, options).await;
        changing.done().await;
        r
    }
}

impl CachedStore {
    async fn head_meta(&self, location: &Path) -> object_store::Result<ObjectMeta> {
        Ok(self
            .get_opts(location, GetOptions::new().with_head(true))
            .await?
            .meta)
    }
}
