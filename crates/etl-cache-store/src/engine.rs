//! What a [`crate::CachedStore`] shares between its calls: the inner store,
//! the cache, the objects' metadata, the blocks being fetched, the counters.
//!
//! The state lives here, with the keys of blocks and metadata in the cache
//! and the handles a read holds on a fetch; how a read gets and keeps a
//! block is in `blocks`, what the store knows of objects in `metadata`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use etl_cache_core::Cache;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, oneshot, watch};

use crate::config::Config;
use crate::meta::Known;
use crate::stats::Counters;

mod blocks;
mod metadata;

/// A block being fetched: `None` until its bytes (or the fetch's error)
/// arrive; the sender dropped without a value means the fetch was abandoned
/// (its reader was dropped) and whoever waits must fetch it again.
pub(crate) type Slot = Option<Result<Bytes, Arc<object_store::Error>>>;

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
    /// Blocks read once, for
    /// [`Admission::SecondRead`](crate::Admission::SecondRead).
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

    /// The write counter now: a read takes it before it looks at an
    /// object, and remembers what it saw only if no write of that path
    /// came after.
    pub(crate) fn snapshot(&self) -> u64 {
        self.write_count.load(Ordering::SeqCst)
    }

    fn written_since(m: &Metas, path: &Path, snapshot: u64) -> bool {
        snapshot < m.writes.floor || m.writes.last.get(path).is_some_and(|&(w, _)| w >= snapshot)
    }
}

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
