//! How a read gets a block: from the cache, from a fetch under way in this
//! process, or from the inner store (coordinated with other processes), and
//! how the block is kept in the cache behind the read.

use std::hash::BuildHasher;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use etl_cache_core::{BlockSize, InitFuture, Kind, SetOptions, Value};
use object_store::GetOptions;
use object_store::path::Path;
use tokio::sync::{oneshot, watch};

use super::{Coord, Engine, Flight, Held, KEEP_AHEAD, Landing, Slot, lock};
use crate::config::Admission;

/// The checked blocks a kept block is cut into in the cache
/// ([`SetOptions::check_block`]). A range read of a cached block reads and
/// checks the ones that hold the range: with the default 1 MiB, a random
/// 64 KiB range of an 8 MiB block in a `DiskCache` took 2.8x the time of a
/// `get` of a 64 KiB entry; with 64 KiB, 1.2–1.3x.
const CHECK_BLOCK: BlockSize = match BlockSize::new(64 << 10) {
    Some(size) => size,
    None => panic!("64 KiB is a block size"),
};

/// How long a lock entry would live, were one written.
const LOCK_TTL: std::time::Duration = std::time::Duration::from_secs(60);

impl Engine {
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
    /// [`Cache::get_range`](etl_cache_core::Cache::get_range), which reads
    /// only what holds them where the cache can. A failing cache reads as a
    /// miss (logged).
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
            .set(
                key,
                Value::Bytes(block),
                SetOptions::new().check_block(CHECK_BLOCK),
            )
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
}
