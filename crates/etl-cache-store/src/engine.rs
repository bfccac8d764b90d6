//! What a [`crate::CachedStore`] shares between its calls: the inner store,
//! the cache, the objects' metadata, the blocks being fetched, the counters.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use etl_cache_core::{Cache, InitFuture, Kind, SetOptions, Value};
use object_store::path::Path;
use object_store::{GetOptions, ObjectMeta, ObjectStore};
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, oneshot, watch};

use crate::config::{Admission, Config, Revalidate};
use crate::meta::{Known, StoredMeta};
use crate::stats::Counters;

/// A block being fetched: `None` until its bytes (or the fetch's error)
/// arrive; the sender dropped without a value means the fetch was abandoned
/// (its reader was dropped) and whoever waits must fetch it again.
pub(crate) type Slot = Option<Result<Bytes, Arc<object_store::Error>>>;

/// Known metadata, at most this many objects in memory (then forgotten
/// all at once; the cache keeps a copy of each).
const KNOWN_MAX: usize = 100_000;

/// The paths written through the store since a read began, so that the
/// read does not remember metadata older than the write.
#[derive(Default)]
struct Writes {
    /// Path -> the write counter and the time when it was last written.
    last: HashMap<Path, (u64, SystemTime)>,
    /// Reads that began before this counter value remember nothing (the
    /// `last` map was cleared when it grew too large).
    floor: u64,
}

#[derive(Default)]
struct Metas {
    known: HashMap<Path, Known>,
    writes: Writes,
}

/// One object as a read sees it: its metadata, fixed for the read, and
/// the parts of its blocks' keys.
#[derive(Debug)]
pub(crate) struct Obj {
    pub meta: ObjectMeta,
    path_hash: String,
    ident_hash: String,
}

/// What tells two versions of an object apart: the e-tag, else the
/// version, else last-modified and size; the size always.
pub(crate) fn identity(meta: &ObjectMeta) -> String {
    match (&meta.e_tag, &meta.version) {
        (Some(e), _) => format!("e:{e}:{}", meta.size),
        (None, Some(v)) => format!("v:{v}:{}", meta.size),
        (None, None) => format!(
            "m:{}:{}",
            meta.last_modified.timestamp_nanos_opt().unwrap_or(i64::MAX),
            meta.size
        ),
    }
}

fn hex(bytes: &[u8], chars: usize) -> String {
    let mut s = String::with_capacity(chars);
    for b in bytes {
        if s.len() >= chars {
            break;
        }
        s.push_str(&format!("{b:02x}"));
    }
    s.truncate(chars);
    s
}

fn digest(parts: &[&str], chars: usize) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex(&h.finalize(), chars)
}

pub(crate) struct Engine {
    pub inner: Arc<dyn ObjectStore>,
    pub cache: Arc<dyn Cache>,
    pub cfg: Config,
    ns_hash: String,
    flights: Mutex<HashMap<String, watch::Receiver<Slot>>>,
    metas: Mutex<Metas>,
    write_count: AtomicU64,
    /// Blocks read once, for [`Admission::SecondRead`].
    seen: Mutex<HashSet<u64>>,
    hasher: std::collections::hash_map::RandomState,
    pub stats: Counters,
    /// Blocks being kept in the cache behind the reads that fetched them
    /// (see [`Engine::keep_behind`]): one permit each.
    keeping: Arc<Semaphore>,
}

/// Blocks a store keeps in the cache at once behind its reads: the memory a
/// fast inner store can run ahead of a slow cache by (4 blocks of 8 MiB by
/// default), before reads wait for the cache.
const KEEP_AHEAD: usize = 4;

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStore")
            .field("inner", &self.inner)
            .field("cache", &self.cache)
            .field("config", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, cache: Arc<dyn Cache>, cfg: Config) -> Self {
        let ns_hash = digest(&[&cfg.namespace], 16);
        Engine {
            inner,
            cache,
            cfg,
            ns_hash,
            flights: Mutex::new(HashMap::new()),
            metas: Mutex::new(Metas::default()),
            write_count: AtomicU64::new(1),
            seen: Mutex::new(HashSet::new()),
            hasher: Default::default(),
            stats: Counters::default(),
            keeping: Arc::new(Semaphore::new(KEEP_AHEAD)),
        }
    }

    pub(crate) fn obj(&self, meta: ObjectMeta) -> Obj {
        let path_hash = digest(&[meta.location.as_ref()], 32);
        let ident_hash = digest(&[&identity(&meta)], 16);
        Obj {
            meta,
            path_hash,
            ident_hash,
        }
    }

    pub(crate) fn bs(&self) -> u64 {
        self.cfg.block_size
    }

    /// The key of block `index` of `obj` in the cache.
    pub(crate) fn block_key(&self, obj: &Obj, index: u64) -> String {
        format!(
            "{}/{}/{}/{}/{}/{index}",
            self.cfg.prefix, self.ns_hash, obj.path_hash, obj.ident_hash, self.cfg.block_size
        )
    }

    /// The key of the lock entry that runs of missing blocks starting at
    /// block `index` of `path` take in the cache (see [`Engine::coordinate`]).
    /// It names the path, not the version: the first read of an object
    /// takes it before it knows the version, and a read that waited for
    /// the lock looks at the cache for the blocks of its own version anyway.
    pub(crate) fn lock_key(&self, path: &Path, index: u64) -> String {
        format!(
            "{}/{}/{}/{}/{index}/lock",
            self.cfg.prefix,
            self.ns_hash,
            digest(&[path.as_ref()], 32),
            self.cfg.block_size
        )
    }

    fn meta_key(&self, path: &Path) -> String {
        format!(
            "{}/{}/{}/meta",
            self.cfg.prefix,
            self.ns_hash,
            digest(&[path.as_ref()], 32)
        )
    }

    /// Bytes of block `index` of an object of `size` bytes.
    pub(crate) fn block_len(&self, size: u64, index: u64) -> u64 {
        let start = index * self.bs();
        size.saturating_sub(start).min(self.bs())
    }

    // ----- blocks -----

    /// The block under `key`, if the cache holds it with the expected
    /// length. A failing cache reads as a miss (logged).
    pub(crate) async fn cached(&self, key: &str, len: u64) -> Option<Bytes> {
        match self.cache.get(key).await {
            Ok(Some(Value::Bytes(b))) if b.len() as u64 == len => {
                self.stats.hit(len);
                Some(b)
            }
            Ok(None) => None,
            Ok(Some(other)) => {
                self.stats.cache_error();
                tracing::warn!(key, kind = %other.kind(), len, "a cached block is not the block expected; reading it from the store");
                None
            }
            Err(e) => {
                self.stats.cache_error();
                tracing::warn!(key, error = %e, "the cache failed to read a block; reading it from the store");
                None
            }
        }
    }

    /// The bytes `part` of the block under `key`, if the cache holds that
    /// block with the expected length `len`; read with
    /// [`Cache::get_range`], which reads only what holds them where the
    /// cache can. A failing cache reads as a miss (logged).
    pub(crate) async fn cached_part(
        &self,
        key: &str,
        len: u64,
        part: &Range<u64>,
    ) -> Option<Bytes> {
        match self.cache.get_range(key, part.clone()).await {
            Ok(Some((meta, b)))
                if meta.kind == Kind::Bytes
                    && meta.logical_len == len
                    && b.len() as u64 == part.end - part.start =>
            {
                self.stats.hit(b.len() as u64);
                Some(b)
            }
            Ok(None) => None,
            Ok(Some((meta, _))) => {
                self.stats.cache_error();
                tracing::warn!(key, kind = %meta.kind, len = meta.logical_len, expected = len, "a cached block is not the block expected; reading it from the store");
                None
            }
            Err(e) => {
                self.stats.cache_error();
                tracing::warn!(key, error = %e, "the cache failed to read part of a block; reading it from the store");
                None
            }
        }
    }

    /// Whether the cache holds `key`, without reading it (false when the
    /// cache fails).
    pub(crate) async fn holds(&self, key: &str) -> bool {
        self.cache.contains(key).await.unwrap_or(false)
    }

    /// Joins the fetch of `key` if one is under way, or registers this
    /// caller as the one fetching it.
    pub(crate) fn join_or_lead(&self, key: &str) -> Flight {
        let mut flights = lock(&self.flights);
        if let Some(rx) = flights.get(key) {
            return Flight::Join(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        flights.insert(key.to_owned(), rx);
        Flight::Lead(tx)
    }

    /// Registers this caller as fetching `key`, unless someone else is.
    pub(crate) fn try_lead(&self, key: &str) -> Option<watch::Sender<Slot>> {
        match self.join_or_lead(key) {
            Flight::Lead(tx) => Some(tx),
            Flight::Join(_) => None,
        }
    }

    /// Ends the registration of a fetch (done or abandoned), if it is still
    /// the one registered under `key`.
    pub(crate) fn land(&self, key: &str, tx: &watch::Sender<Slot>) {
        let mut flights = lock(&self.flights);
        if flights
            .get(key)
            .is_some_and(|rx| rx.same_channel(&tx.subscribe()))
        {
            flights.remove(key);
        }
    }

    /// Whether a block read from the store is kept.
    fn admit(&self, key: &str) -> bool {
        let Admission::SecondRead { remember } = self.cfg.admission else {
            return true;
        };
        let h = self.hasher.hash_one(key);
        let mut seen = lock(&self.seen);
        if seen.remove(&h) {
            return true;
        }
        if seen.len() >= remember {
            seen.clear();
        }
        seen.insert(h);
        false
    }

    /// Keeps a block just read from the store, if admitted. A failing
    /// cache is logged; the read goes on.
    pub(crate) async fn keep(&self, key: &str, block: Bytes) {
        if !self.admit(key) {
            self.stats.not_admitted();
            return;
        }
        if let Err(e) = self
            .cache
            .set(key, Value::Bytes(block), SetOptions::default())
            .await
        {
            self.stats.cache_error();
            tracing::warn!(key, error = %e, "the cache failed to keep a block");
        }
    }

    /// [`Engine::keep`] in a task of its own, so that the read that fetched
    /// the block hands it on without waiting for the cache's write (a cold
    /// read would otherwise take as long as the fetch and the write).
    /// Reads of the block meanwhile join its flight, which `landing` holds
    /// open until the block is kept. At most [`KEEP_AHEAD`] blocks are kept
    /// at once: past that, the read waits, so memory stays bounded however
    /// slow the cache is. A block kept after a write through this store to
    /// `path` (since `snapshot`, taken before the block was requested) is
    /// dropped again: it may be of the version the write replaced.
    pub(crate) async fn keep_behind(
        self: &Arc<Self>,
        landing: Landing,
        path: Path,
        snapshot: u64,
        block: Bytes,
    ) -> tokio::task::JoinHandle<()> {
        let permit = self
            .keeping
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let eng = self.clone();
        tokio::spawn(async move {
            let keep = eng.keep(landing.key(), block);
            if tokio::time::timeout(eng.cfg.keep_timeout, keep)
                .await
                .is_err()
            {
                eng.stats.cache_error();
                tracing::warn!(
                    key = landing.key(),
                    timeout = ?eng.cfg.keep_timeout,
                    "the cache took too long to keep a block; dropped"
                );
            }
            let written = Self::written_since(&lock(&eng.metas), &path, snapshot);
            if written {
                let _ = eng.cache.delete(landing.key()).await;
            }
            drop(landing);
            drop(permit);
        })
    }

    /// Waits until the blocks being kept behind reads are kept, and holds
    /// off new ones until the guard is dropped.
    pub(crate) async fn no_keeping(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.keeping
            .acquire_many(KEEP_AHEAD as u32)
            .await
            .expect("the semaphore is never closed")
    }

    /// Fetches stored bytes from the inner store, counted.
    pub(crate) async fn fetch(
        &self,
        path: &Path,
        opts: GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.stats.request();
        self.inner.get_opts(path, opts).await
    }

    /// Takes the cache's lock on `key` before a run of missing blocks is
    /// fetched, so that another handle or process leading a run from the
    /// same block waits for this one and then finds its blocks in the
    /// cache, instead of fetching them too.
    ///
    /// The lock is the cache's own single flight: `get_or_insert_boxed`,
    /// which a `DiskCache` holds across handles and processes with an OS
    /// lock on the key. Its computation runs in a task of its own; running
    /// it means holding the lock, and it ends when the run ends ([`Held`]
    /// finished or dropped). It always ends in an error, on purpose: the
    /// cache then writes no entry (a write and a delete per run would cost
    /// more than the lock itself) and hands the lock to the next waiter,
    /// whose own computation runs. So every caller leads in turn, and a
    /// caller that leads after another must look at the cache before it
    /// fetches: the blocks are there unless the run before failed or was
    /// dropped, or the cache did not keep them.
    /// - [`Coord::Led`]: this caller holds the lock until the [`Held`] is
    ///   finished or dropped.
    /// - [`Coord::Followed`]: the cache answered with an entry under the
    ///   key without running the computation (a cache whose single flight
    ///   shares results that way, or an entry some other writer left):
    ///   nothing is held; look at the cache.
    /// - [`Coord::Off`]: not coordinated (turned off, or the cache failed
    ///   or timed out: logged and counted, the read goes on without).
    pub(crate) async fn coordinate(self: &Arc<Self>, key: String) -> Coord {
        if !self.cfg.coordinate {
            return Coord::Off;
        }
        let (started_tx, started_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let eng = self.clone();
        let task = tokio::spawn(async move {
            let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let init: InitFuture<'_> = {
                let ran = ran.clone();
                Box::pin(async move {
                    ran.store(true, Ordering::SeqCst);
                    let _ = started_tx.send(());
                    let _ = done_rx.await;
                    Err("the run ended; the lock passes on".into())
                })
            };
            // A TTL, should a cache write the entry after all.
            let opts = SetOptions::new().ttl(LOCK_TTL);
            let r = eng.cache.get_or_insert_boxed(&key, opts, init).await;
            if ran.load(Ordering::SeqCst) {
                return Ok(());
            }
            r.map(drop).map_err(|e| (key, e))
        });
        if started_rx.await.is_ok() {
            return Coord::Led(Held {
                done: Some(done_tx),
            });
        }
        // The computation was dropped unrun: the call is over.
        match task.await {
            Ok(Ok(())) => Coord::Followed,
            Ok(Err((key, e))) => {
                self.stats.cache_error();
                tracing::warn!(key, error = %e, "the cache failed to coordinate a fetch with other processes; fetching without");
                Coord::Off
            }
            Err(e) => {
                self.stats.cache_error();
                tracing::warn!(error = %e, "the task coordinating a fetch failed; fetching without");
                Coord::Off
            }
        }
    }

    // ----- metadata -----

    /// The write counter now: a read takes it before it looks at an
    /// object, and remembers what it saw only if no write of that path
    /// came after.
    pub(crate) fn snapshot(&self) -> u64 {
        self.write_count.load(Ordering::SeqCst)
    }

    fn written_since(m: &Metas, path: &Path, snapshot: u64) -> bool {
        snapshot < m.writes.floor || m.writes.last.get(path).is_some_and(|&(w, _)| w >= snapshot)
    }

    /// What is known about `path`: from memory, else from the cache.
    pub(crate) async fn known(&self, path: &Path) -> Option<Known> {
        if let Some(k) = lock(&self.metas).known.get(path) {
            return Some(k.clone());
        }
        let snapshot = self.snapshot();
        let key = self.meta_key(path);
        let stored = match self.cache.get(&key).await {
            Ok(Some(Value::Json(j))) => serde_json::from_value::<StoredMeta>(j).ok(),
            Ok(_) => None,
            Err(e) => {
                self.stats.cache_error();
                tracing::warn!(key, error = %e, "the cache failed to read an object's metadata");
                None
            }
        }?;
        let known = stored.into_known()?;
        if known.meta.location != *path {
            return None; // a digest collision; never seen in practice
        }
        let mut m = lock(&self.metas);
        if m.writes
            .last
            .get(path)
            .is_some_and(|&(_, at)| known.checked <= at)
        {
            // Kept before a write through this store whose removal of it
            // has not run (or not yet).
            return None;
        }
        if !Self::written_since(&m, path, snapshot) {
            Self::insert_known(&mut m, path, known.clone());
        }
        Some(known)
    }

    fn insert_known(m: &mut Metas, path: &Path, known: Known) {
        if m.known.len() >= KNOWN_MAX && !m.known.contains_key(path) {
            m.known.clear();
        }
        m.known.insert(path.clone(), known);
    }

    /// Whether `known` may be trusted without asking the store.
    pub(crate) fn fresh(&self, known: &Known) -> bool {
        match self.cfg.revalidate {
            Revalidate::Never => true,
            Revalidate::Always => false,
            Revalidate::After(d) => SystemTime::now()
                .duration_since(known.checked)
                .is_ok_and(|age| age < d),
        }
    }

    /// Remembers `meta` as checked now, in memory and in the cache, unless
    /// `path` was written through this store since `snapshot`.
    pub(crate) async fn remember(&self, path: &Path, meta: &ObjectMeta, snapshot: u64) {
        let known = Known {
            meta: meta.clone(),
            checked: SystemTime::now(),
        };
        {
            let mut m = lock(&self.metas);
            if Self::written_since(&m, path, snapshot) {
                return;
            }
            let unchanged = m
                .known
                .get(path)
                .is_some_and(|k| identity(&k.meta) == identity(meta));
            Self::insert_known(&mut m, path, known.clone());
            // The cache's copy matters only across restarts, and for
            // `Revalidate::After`, its check time: write it when the object
            // is new or changed, or when that time matters.
            if unchanged && !matches!(self.cfg.revalidate, Revalidate::After(_)) {
                return;
            }
        }
        let key = self.meta_key(path);
        let value = match serde_json::to_value(StoredMeta::from_known(&known)) {
            Ok(v) => Value::Json(v),
            Err(_) => return,
        };
        if let Err(e) = self.cache.set(&key, value, SetOptions::default()).await {
            self.stats.cache_error();
            tracing::warn!(key, error = %e, "the cache failed to keep an object's metadata");
            return;
        }
        // A write that came while this was being kept: its removal of the
        // copy may have run before this set; remove it again.
        if Self::written_since(&lock(&self.metas), path, snapshot) {
            let _ = self.cache.delete(&key).await;
        }
    }

    /// Forgets what is known of `path` (it changed, as a read found).
    pub(crate) async fn forget_meta(&self, path: &Path) {
        lock(&self.metas).known.remove(path);
        let key = self.meta_key(path);
        if let Err(e) = self.cache.delete(&key).await {
            self.stats.cache_error();
            tracing::warn!(key, error = %e, "the cache failed to drop an object's metadata");
        }
    }

    /// `path` is about to change through this store: reads that began
    /// before remember nothing of it, and what memory knows is forgotten.
    /// Returns what memory knew.
    pub(crate) fn mark_written(&self, path: &Path) -> Option<Known> {
        let mut m = lock(&self.metas);
        let w = self.write_count.fetch_add(1, Ordering::SeqCst);
        if m.writes.last.len() >= KNOWN_MAX && !m.writes.last.contains_key(path) {
            m.writes.last.clear();
            m.writes.floor = w + 1;
        }
        m.writes.last.insert(path.clone(), (w, SystemTime::now()));
        m.known.remove(path)
    }

    /// `path` was written, deleted, copied or renamed onto through this
    /// store: as [`Engine::mark_written`], and the cache's copy of its
    /// metadata and the blocks of the version known are dropped.
    pub(crate) async fn written(&self, path: &Path) {
        // Blocks of the old version still being kept behind reads drop
        // themselves once kept (see `keep_behind`).
        let old = match self.mark_written(path) {
            Some(k) => Some(k),
            None => self.stored_meta(path).await,
        };
        self.forget_meta(path).await;
        if let Some(old) = old {
            let obj = self.obj(old.meta);
            let blocks = obj.meta.size.div_ceil(self.bs());
            for i in 0..blocks {
                let key = self.block_key(&obj, i);
                if let Err(e) = self.cache.delete(&key).await {
                    self.stats.cache_error();
                    tracing::warn!(key, error = %e, "the cache failed to drop a block");
                }
            }
        }
    }

    async fn stored_meta(&self, path: &Path) -> Option<Known> {
        match self.cache.get(&self.meta_key(path)).await {
            Ok(Some(Value::Json(j))) => serde_json::from_value::<StoredMeta>(j)
                .ok()?
                .into_known()
                .filter(|k| k.meta.location == *path),
            _ => None,
        }
    }
}

/// How long a lock entry would live, were one written.
const LOCK_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// The outcome of [`Engine::coordinate`].
pub(crate) enum Coord {
    Led(Held),
    Followed,
    Off,
}

/// The cache's lock on a run of blocks, held until the run ends (every
/// block kept, or failed) or this value is dropped.
#[derive(Debug)]
pub(crate) struct Held {
    done: Option<oneshot::Sender<()>>,
}

impl Held {
    /// Releases the lock: the next waiter leads, and finds in the cache
    /// what this run kept.
    pub(crate) fn finish(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
    }
}

/// A block's flight, announced by this read (`tx`) or not: landed (its
/// registration removed) when this is dropped, whatever drops it.
pub(crate) struct Landing {
    eng: Arc<Engine>,
    key: String,
    tx: Option<watch::Sender<Slot>>,
}

impl Landing {
    pub(crate) fn new(eng: &Arc<Engine>, key: String, tx: Option<watch::Sender<Slot>>) -> Self {
        Landing {
            eng: eng.clone(),
            key,
            tx,
        }
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// Hands the block to the reads waiting for it.
    pub(crate) fn send(&self, block: &Bytes) {
        if let Some(tx) = &self.tx {
            tx.send_replace(Some(Ok(block.clone())));
        }
    }

    /// The slot back, not landed (the run fails it).
    pub(crate) fn into_slot(mut self) -> (String, Option<watch::Sender<Slot>>) {
        (std::mem::take(&mut self.key), self.tx.take())
    }
}

impl Drop for Landing {
    fn drop(&mut self) {
        if let Some(tx) = &self.tx {
            self.eng.land(&self.key, tx);
        }
    }
}

/// Joined or led: see [`Engine::join_or_lead`].
pub(crate) enum Flight {
    Join(watch::Receiver<Slot>),
    Lead(watch::Sender<Slot>),
}

/// Waits for a joined fetch: the block, its error, or `None` when the
/// fetch was abandoned.
pub(crate) async fn wait(
    mut rx: watch::Receiver<Slot>,
) -> Option<Result<Bytes, Arc<object_store::Error>>> {
    match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone(),
        Err(_) => None,
    }
}

/// An error of the inner store, for a caller other than the one it
/// reached: the same kind (NotFound stays NotFound), the same message.
pub(crate) fn share_error(e: &object_store::Error) -> object_store::Error {
    use object_store::Error as E;
    let source = || -> Box<dyn std::error::Error + Send + Sync> { e.to_string().into() };
    match e {
        E::NotFound { path, .. } => E::NotFound {
            path: path.clone(),
            source: source(),
        },
        E::Precondition { path, .. } => E::Precondition {
            path: path.clone(),
            source: source(),
        },
        E::NotModified { path, .. } => E::NotModified {
            path: path.clone(),
            source: source(),
        },
        E::AlreadyExists { path, .. } => E::AlreadyExists {
            path: path.clone(),
            source: source(),
        },
        E::PermissionDenied { path, .. } => E::PermissionDenied {
            path: path.clone(),
            source: source(),
        },
        E::Unauthenticated { path, .. } => E::Unauthenticated {
            path: path.clone(),
            source: source(),
        },
        E::NotSupported { .. } => E::NotSupported { source: source() },
        E::NotImplemented {
            operation,
            implementer,
        } => E::NotImplemented {
            operation: operation.clone(),
            implementer: implementer.clone(),
        },
        _ => E::Generic {
            store: "CachedStore",
            source: source(),
        },
    }
}
