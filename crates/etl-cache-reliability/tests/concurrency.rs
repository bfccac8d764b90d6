//! Concurrency model test: several tasks on a multi-threaded runtime, spread
//! over two handles on one root (one store), run random short sequences of
//! operations on a few keys at once; every answer is then checked against
//! the values each key may legally hold at that moment.
//!
//! Operations: set (text, bytes, JSON; random codec; some with a TTL),
//! set_stream (small, random chunking), get, get_entry, get_stream (read
//! whole, or dropped part way), head, delete, get_or_insert_with (whose
//! computation yields, sometimes sleeps), clear, purge_expired, and in some
//! cases moving a shared `ManualClock` forward. A quarter of the writes are
//! cancelled: dropped after a random number of polls, or by a short
//! `tokio::time::timeout`.
//!
//! Every value written is unique and self-describing (it names its key and
//! its sequence number, and its length is unique per key), so whatever a
//! read returns maps back to the one write that produced it. Each operation
//! takes its invocation and response instants from one global counter.
//!
//! A read of key k that returned the value of write W is legal when W began
//! before the read ended, no completed write, delete or clear of k began
//! after W ended and ended before the read began, and W's expiry (if any)
//! had not surely passed when the read began. A read that found nothing is
//! legal when a removal (delete, clear, the initial absence) or an expiring
//! write could be the last thing before it by the same rule, or when the
//! cache has capacity limits (eviction). A failed write has no effect; a
//! dropped one may have taken effect before it was dropped, never after (its
//! window ends at the drop). `get_or_insert_with` returning its own value
//! is a write; returning another is a read. After all tasks are joined,
//! each key is read again through each handle (a read that began after
//! everything ended), and for every `DiskCache` root the files on disk must
//! be within its limits and match `stats()` of every handle.
//!
//! Backends: the reference `MemoryCache` (two clones of one; it holds
//! everything under one mutex, so it checks the checker), `DiskCache` with
//! and without limits, `ObjectCache` over one
//! `InMemory` store and over one `LocalFileSystem` directory, `TieredCache`
//! with a memory tier over a `DiskCache`, and `TieredCache` without memory
//! over two `DiskCache` roots (the upper one caching the lower one). Each
//! `TieredCache` runs as one handle shared by the tasks: the copies a handle
//! keeps above its last tier are ordered against its own writes only, so
//! two handles are not linearizable by design (see etl-cache-tiered).
//!
//! 2,000 cases per backend (`ETL_CACHE_CONCURRENCY_CASES`, 20,000 with
//! `ETL_CACHE_LONG=1`). `ETL_CACHE_SEED` replays the plans (the schedule of
//! threads differs from run to run); `ETL_CACHE_CONCURRENCY_CASE=N` runs
//! case N of that seed again and again; `ETL_CACHE_CONCURRENCY_KEEP_GOING=1`
//! runs every case and sums up the failures by kind instead of stopping at
//! the first. A failure shows the seed, the case and the history of the key
//! (invocation..response ticks, clock, task, handle, operation, result).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use etl_cache_core::{
    Cache, CacheExt, Clock, Compression, EntryMeta, Kind, ManualClock, SetOptions, Value,
};
use etl_cache_fs::DiskCache;
use etl_cache_object::ObjectCache;
use etl_cache_reliability::fixtures::{Limits, scratch};
use etl_cache_reliability::payload::{self, Style};
use etl_cache_reliability::{Rng, iterations, layout, report, seed};
use etl_cache_tiered::TieredCache;
use futures::StreamExt;

/// Few keys, so that tasks meet on them.
const KEYS: [&str; 3] = ["k/0", "ünï/çødé 1", "dir/k 2"];

// ---------------------------------------------------------------- the plan

#[derive(Debug, Clone, Copy)]
enum Cancel {
    Never,
    /// Dropped when still pending after this many polls (each poll yields).
    Polls(u32),
    /// Dropped by `tokio::time::timeout` after this many microseconds.
    Timeout(u64),
}

#[derive(Debug, Clone)]
enum Op {
    Set {
        key: usize,
        w: usize,
        cancel: Cancel,
    },
    SetStream {
        key: usize,
        w: usize,
        chunks: Vec<usize>,
        yields: bool,
        cancel: Cancel,
    },
    Get {
        key: usize,
    },
    GetEntry {
        key: usize,
    },
    GetStream {
        key: usize,
        chunk: usize,
        /// Read this many chunks, then drop the stream.
        drop_after: Option<usize>,
    },
    Head {
        key: usize,
    },
    Delete {
        key: usize,
    },
    GetOrInsert {
        key: usize,
        w: usize,
        yields: u32,
        sleep_us: u64,
        cancel: Cancel,
    },
    Clear,
    Purge,
    Advance {
        ms: u64,
    },
}

impl Op {
    fn key(&self) -> Option<usize> {
        match self {
            Op::Set { key, .. }
            | Op::SetStream { key, .. }
            | Op::Get { key }
            | Op::GetEntry { key }
            | Op::GetStream { key, .. }
            | Op::Head { key }
            | Op::Delete { key }
            | Op::GetOrInsert { key, .. } => Some(*key),
            Op::Clear | Op::Purge | Op::Advance { .. } => None,
        }
    }

    fn cancel(&self) -> Cancel {
        match self {
            Op::Set { cancel, .. }
            | Op::SetStream { cancel, .. }
            | Op::GetOrInsert { cancel, .. } => *cancel,
            _ => Cancel::Never,
        }
    }

    fn describe(&self) -> String {
        let cancel = match self.cancel() {
            Cancel::Never => String::new(),
            Cancel::Polls(n) => format!(" (dropped if pending after {n} polls)"),
            Cancel::Timeout(us) => format!(" (timeout {us} µs)"),
        };
        match self {
            Op::Set { w, .. } => format!("set w{w}{cancel}"),
            Op::SetStream { w, chunks, .. } => format!("set_stream w{w} chunks {chunks:?}{cancel}"),
            Op::Get { .. } => "get".into(),
            Op::GetEntry { .. } => "get_entry".into(),
            Op::GetStream {
                chunk, drop_after, ..
            } => match drop_after {
                Some(n) => format!("get_stream chunk {chunk}, dropped after {n} chunks"),
                None => format!("get_stream chunk {chunk}"),
            },
            Op::Head { .. } => "head".into(),
            Op::Delete { .. } => "delete".into(),
            Op::GetOrInsert {
                w,
                yields,
                sleep_us,
                ..
            } => format!(
                "get_or_insert_with computing w{w} ({yields} yields, {sleep_us} µs sleep){cancel}"
            ),
            Op::Clear => "clear".into(),
            Op::Purge => "purge_expired".into(),
            Op::Advance { ms } => format!("clock.advance({ms} ms)"),
        }
    }
}

/// A value some operation may write.
#[derive(Debug)]
struct Planned {
    key: usize,
    value: Value,
    /// Its logical bytes (what `get_stream` yields); their length is unique
    /// among the values of the key, so metadata alone names the write.
    logical: Bytes,
    comp: Compression,
    ttl: Option<Duration>,
}

impl Planned {
    fn opts(&self) -> SetOptions {
        let o = SetOptions::new().compression(self.comp);
        match self.ttl {
            Some(t) => o.ttl(t),
            None => o,
        }
    }
}

#[derive(Debug)]
struct Plan {
    /// Per task: the handle it uses and its operations.
    tasks: Vec<(usize, Vec<Op>)>,
    planned: Vec<Planned>,
    /// Sequence number of `planned[0]`; `planned[i]` has `base + i`.
    base: u64,
    limits: Option<Limits>,
    /// Per handle: whether small entries are written on the calling task.
    inline: [bool; 2],
    expiring: bool,
    memory_bytes: u64,
    max_memory_entry: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// The reference `MemoryCache` (two clones share one map under a
    /// mutex): linearizable by construction, so it checks the checker.
    Memory,
    Disk,
    DiskLimits,
    ObjectMemory,
    ObjectLocal,
    /// One TieredCache (memory tier) over a DiskCache.
    TieredMemory,
    /// One TieredCache handle (no memory) over an upper DiskCache (with
    /// random limits) and a lower one: promotions into a tier that is
    /// itself a cache on disk. Not two handles: the copies a handle keeps
    /// above its last tier (in memory or in upper tiers, shared or not) are
    /// ordered against its own writes only, so another handle's write is
    /// seen once the copy is replaced, evicted or expires (documented in
    /// etl-cache-tiered); two handles are not linearizable by design.
    TieredChain,
}

impl Backend {
    fn may_evict(self) -> bool {
        self == Backend::DiskLimits
    }

    /// Whether a `purge_expired` may remove a value whose write completed
    /// while the purge ran. ObjectCache's purge checks the version it judged
    /// and then deletes; object_store has no conditional delete, so a write
    /// that lands between the two is lost. Documented in etl-cache-object;
    /// no other backend has the window.
    fn purge_races_writes(self) -> bool {
        matches!(self, Backend::ObjectMemory | Backend::ObjectLocal)
    }
}

fn compression(rng: &mut Rng) -> Compression {
    match rng.below(8) {
        0 => Compression::gzip_level(1).expect("level"),
        1 => Compression::gzip(),
        2 => Compression::zstd_level(1).expect("level"),
        3 => Compression::zstd(),
        _ => Compression::NONE,
    }
}

fn cancel(rng: &mut Rng) -> Cancel {
    match rng.below(8) {
        0 => Cancel::Polls(rng.range(0, 12) as u32),
        1 => Cancel::Timeout(rng.range(50, 3_000)),
        _ => Cancel::Never,
    }
}

fn plan(rng: &mut Rng, backend: Backend, base: u64) -> Plan {
    let limits = match backend {
        Backend::DiskLimits => {
            let mut l = Limits {
                max_entries: rng.chance(70).then(|| rng.range(1, 2)),
                max_bytes: rng.chance(60).then(|| *rng.pick(&[2_000, 3_000, 5_000])),
                low_water: *rng.pick(&[0.5, 0.9, 1.0]),
            };
            if l.max_entries.is_none() && l.max_bytes.is_none() {
                l.max_entries = Some(1);
            }
            Some(l)
        }
        // The upper DiskCache of two tiers: its evictions are invisible.
        Backend::TieredChain if rng.chance(40) => Some(Limits {
            max_entries: Some(rng.range(1, 2)),
            max_bytes: rng.chance(50).then_some(2_000),
            low_water: 0.9,
        }),
        _ => None,
    };
    let small = backend == Backend::DiskLimits;
    let expiring = rng.chance(30);
    let mut planned: Vec<Planned> = Vec::new();
    let mut lens: Vec<HashSet<usize>> = vec![HashSet::new(); KEYS.len()];
    let mut new_value = |rng: &mut Rng, key: usize, kind: Kind| -> usize {
        let seq = base + planned.len() as u64;
        let mut len = if small {
            rng.range(0, 1_100) as usize
        } else {
            match rng.below(100) {
                0..70 => rng.range(0, 300) as usize,
                70..96 => rng.range(300, 3_000) as usize,
                _ => rng.range(17_000, 40_000) as usize,
            }
        };
        let style = if rng.chance(50) {
            Style::Random
        } else {
            Style::Text
        };
        let (value, logical) = loop {
            let v = payload::value(KEYS[key], seq, kind, len, style);
            let b = v.to_bytes();
            if lens[key].insert(b.len()) {
                break (v, b);
            }
            len += 1;
        };
        let ttl = match (expiring, rng.below(8)) {
            (true, 0..2) => Some(Duration::from_millis(1_000)),
            (true, 2..4) => Some(Duration::from_millis(3_000)),
            (false, 0) => Some(Duration::from_secs(3_600)),
            _ => None,
        };
        planned.push(Planned {
            key,
            value,
            logical,
            comp: compression(rng),
            ttl,
        });
        planned.len() - 1
    };
    let ntasks = rng.range(3, 6) as usize;
    let mut tasks = Vec::new();
    for t in 0..ntasks {
        let nops = rng.range(2, 8);
        let mut ops = Vec::new();
        for _ in 0..nops {
            let key = rng.below(KEYS.len() as u64) as usize;
            let weights: [u64; 12] = [
                20,
                8,
                14,
                6,
                7,
                5,
                7,
                8,
                1,
                2,
                if expiring { 3 } else { 0 },
                0,
            ];
            let total: u64 = weights.iter().sum();
            let mut r = rng.below(total);
            let mut which = 0;
            while r >= weights[which] {
                r -= weights[which];
                which += 1;
            }
            let op = match which {
                0 => {
                    let kind = *rng.pick(&[Kind::Text, Kind::Bytes, Kind::Json]);
                    let w = new_value(rng, key, kind);
                    Op::Set {
                        key,
                        w,
                        cancel: cancel(rng),
                    }
                }
                1 => {
                    let w = new_value(rng, key, Kind::Bytes);
                    let n = rng.range(1, 3) as usize;
                    let chunks = (0..n)
                        .map(|_| *rng.pick(&[1usize, 7, 100, 1_000, 9_000, 70_000]))
                        .collect();
                    Op::SetStream {
                        key,
                        w,
                        chunks,
                        yields: rng.chance(50),
                        cancel: cancel(rng),
                    }
                }
                2 => Op::Get { key },
                3 => Op::GetEntry { key },
                4 => Op::GetStream {
                    key,
                    chunk: *rng.pick(&[16usize, 256, 4_096, 65_536]),
                    drop_after: rng.chance(15).then(|| rng.range(0, 2) as usize),
                },
                5 => Op::Head { key },
                6 => Op::Delete { key },
                7 => {
                    let kind = *rng.pick(&[Kind::Text, Kind::Bytes, Kind::Json]);
                    let w = new_value(rng, key, kind);
                    Op::GetOrInsert {
                        key,
                        w,
                        yields: rng.range(0, 5) as u32,
                        sleep_us: if rng.chance(20) {
                            rng.range(200, 3_000)
                        } else {
                            0
                        },
                        cancel: cancel(rng),
                    }
                }
                8 => Op::Clear,
                9 => Op::Purge,
                _ => Op::Advance {
                    ms: *rng.pick(&[400u64, 1_000, 2_000]),
                },
            };
            ops.push(op);
        }
        tasks.push((t % 2, ops));
    }
    Plan {
        tasks,
        planned,
        base,
        limits,
        inline: *rng.pick(&[[true, false], [false, true], [true, true], [false, false]]),
        expiring,
        memory_bytes: *rng.pick(&[4_096u64, 1 << 20]),
        max_memory_entry: *rng.pick(&[1_000u64, 50_000]),
    }
}

// ---------------------------------------------------------------- backends

async fn open_disk(
    root: &Path,
    clock: &Arc<ManualClock>,
    limits: Option<Limits>,
    inline: bool,
) -> DiskCache {
    let mut b = DiskCache::builder()
        .root(root)
        .clock(clock.clone())
        .lock_timeout(Duration::from_secs(30));
    if !inline {
        b = b.inline_io(0);
    }
    if let Some(l) = limits {
        b = l.apply(b);
    }
    b.build().await.expect("open the DiskCache")
}

/// A DiskCache root to check after quiescence, with its handles.
struct DiskRoot {
    name: &'static str,
    root: PathBuf,
    handles: [Arc<DiskCache>; 2],
    limits: Option<Limits>,
}

/// Two DiskCache handles on one root per setting, kept from case to case
/// (opening a root creates 256 directories), emptied and checked empty
/// before each case. One clock for all.
struct Pool {
    clock: Arc<ManualClock>,
    pairs: HashMap<String, (tempfile::TempDir, PathBuf, [Arc<DiskCache>; 2])>,
}

impl Pool {
    fn new() -> Pool {
        Pool {
            clock: Arc::new(ManualClock::new()),
            pairs: HashMap::new(),
        }
    }

    async fn pair(
        &mut self,
        name: &'static str,
        limits: Option<Limits>,
        inline: [bool; 2],
    ) -> Result<DiskRoot, String> {
        let id = format!("{name} {limits:?} {inline:?}");
        if !self.pairs.contains_key(&id) {
            let dir = tempfile::tempdir_in(scratch()).expect("tempdir");
            let root = dir.path().join("c");
            let a = open_disk(&root, &self.clock, limits, inline[0]).await;
            let b = open_disk(&root, &self.clock, limits, inline[1]).await;
            self.pairs
                .insert(id.clone(), (dir, root, [Arc::new(a), Arc::new(b)]));
        }
        let (_, root, handles) = &self.pairs[&id];
        for k in KEYS {
            handles[0]
                .delete(k)
                .await
                .map_err(|e| format!("emptying {name}: {e}"))?;
        }
        let usage = layout::disk_usage(root);
        if usage != (0, 0) {
            return Err(format!(
                "{name}: {usage:?} entries/bytes on disk after deleting every key before the case"
            ));
        }
        for (i, h) in handles.iter().enumerate() {
            let s = h.stats().await.map_err(|e| format!("stats: {e}"))?;
            if (s.entries, s.bytes) != (0, 0) {
                return Err(format!(
                    "{name}: handle {i}'s stats say {} entries / {} bytes on an empty disk before the case",
                    s.entries, s.bytes
                ));
            }
        }
        Ok(DiskRoot {
            name,
            root: root.clone(),
            handles: handles.clone(),
            limits,
        })
    }
}

struct Instance {
    handles: [Arc<dyn Cache>; 2],
    disks: Vec<DiskRoot>,
    _dir: Option<tempfile::TempDir>,
}

async fn instance(backend: Backend, p: &Plan, pool: &mut Pool) -> Result<Instance, String> {
    let clock = pool.clock.clone();
    Ok(match backend {
        Backend::Memory => {
            let m = etl_cache_core::MemoryCache::with_clock(clock.clone());
            Instance {
                handles: [Arc::new(m.clone()), Arc::new(m)],
                disks: Vec::new(),
                _dir: None,
            }
        }
        Backend::Disk | Backend::DiskLimits => {
            let d = pool.pair("DiskCache", p.limits, p.inline).await?;
            Instance {
                handles: [d.handles[0].clone(), d.handles[1].clone()],
                disks: vec![d],
                _dir: None,
            }
        }
        Backend::ObjectMemory | Backend::ObjectLocal => {
            let (stores, dir): ([Arc<dyn object_store::ObjectStore>; 2], _) =
                if backend == Backend::ObjectMemory {
                    let s = Arc::new(object_store::memory::InMemory::new());
                    ([s.clone(), s], None)
                } else {
                    let dir = tempfile::tempdir_in(scratch()).expect("tempdir");
                    let open = || {
                        Arc::new(
                            object_store::local::LocalFileSystem::new_with_prefix(dir.path())
                                .expect("local"),
                        )
                    };
                    ([open(), open()], Some(dir))
                };
            let open = |store: Arc<dyn object_store::ObjectStore>| -> Arc<dyn Cache> {
                Arc::new(
                    ObjectCache::builder()
                        .store(store)
                        .prefix("etl/cache")
                        .clock(clock.clone())
                        .part_size(32 * 1024)
                        // The computations here take milliseconds: a wait of
                        // seconds is for a lease left behind (which the
                        // standing clock would never expire).
                        .lock_timeout(Duration::from_secs(3))
                        .lease_poll_interval(Duration::from_millis(1), Duration::from_millis(5))
                        .build()
                        .expect("ObjectCache"),
                )
            };
            let [a, b] = stores;
            Instance {
                handles: [open(a), open(b)],
                disks: Vec::new(),
                _dir: dir,
            }
        }
        Backend::TieredMemory => {
            let d = pool.pair("DiskCache", None, p.inline).await?;
            let t: Arc<dyn Cache> = Arc::new(
                TieredCache::builder()
                    .clock(clock.clone())
                    .memory_bytes(p.memory_bytes)
                    .max_memory_entry(p.max_memory_entry)
                    .tier(d.handles[0].clone())
                    .build()
                    .expect("TieredCache"),
            );
            Instance {
                handles: [t.clone(), t],
                disks: vec![d],
                _dir: None,
            }
        }
        Backend::TieredChain => {
            let upper = pool.pair("upper DiskCache", p.limits, p.inline).await?;
            let lower = pool.pair("lower DiskCache", None, p.inline).await?;
            let t: Arc<dyn Cache> = Arc::new(
                TieredCache::builder()
                    .clock(clock.clone())
                    .memory_bytes(0)
                    .tier(upper.handles[0].clone())
                    .tier(lower.handles[0].clone())
                    .build()
                    .expect("TieredCache"),
            );
            Instance {
                handles: [t.clone(), t],
                disks: vec![upper, lower],
                _dir: None,
            }
        }
    })
}

// ---------------------------------------------------------------- running

/// Polls a future at most `left + 1` times, yielding between polls, then
/// drops it: a caller giving up at whatever await point it reached.
struct PollLimit<F> {
    fut: Option<Pin<Box<F>>>,
    left: u32,
}

impl<F: Future> Future for PollLimit<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(fut) = this.fut.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            this.fut = None;
            return Poll::Ready(Some(v));
        }
        if this.left == 0 {
            this.fut = None; // dropped here, before the caller reads the counter
            return Poll::Ready(None);
        }
        this.left -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Runs `fut` to completion, or drops it as `cancel` says (`None`).
async fn bounded<F: Future>(fut: F, cancel: Cancel) -> Option<F::Output> {
    match cancel {
        Cancel::Never => Some(fut.await),
        Cancel::Polls(n) => {
            PollLimit {
                fut: Some(Box::pin(fut)),
                left: n,
            }
            .await
        }
        Cancel::Timeout(us) => tokio::time::timeout(Duration::from_micros(us), fut)
            .await
            .ok(),
    }
}

/// What a read saw: the write whose value it returned (or what is wrong
/// with the value), and the metadata that came with it.
#[derive(Debug, Clone)]
struct Seen {
    w: Result<usize, String>,
    expires: Option<Option<SystemTime>>,
}

#[derive(Debug, Clone)]
enum Res {
    /// A write returned Ok (with its metadata for set and set_stream).
    Wrote(Option<EntryMeta>),
    /// A write was dropped; for get_or_insert_with, whether its computation
    /// had finished (its value may have been stored).
    Dropped {
        computed: bool,
    },
    /// get_or_insert_with returned the value it computed.
    Computed,
    Read(Option<Seen>),
    Deleted(bool),
    Cleared(u64),
    Purged(u64),
    Advanced,
    Failed(String),
}

#[derive(Debug, Clone)]
struct Event {
    /// `usize::MAX` for the reads after quiescence.
    task: usize,
    handle: usize,
    op: Op,
    start: u64,
    end: u64,
    clock_lo: SystemTime,
    clock_hi: SystemTime,
    res: Res,
}

struct Ctx {
    handles: [Arc<dyn Cache>; 2],
    clock: Arc<ManualClock>,
    tick: AtomicU64,
    planned: Vec<Planned>,
    base: u64,
}

impl Ctx {
    fn tick(&self) -> u64 {
        self.tick.fetch_add(1, Ordering::SeqCst)
    }

    /// The write whose value `v` is, for key `key`.
    fn identify(&self, key: usize, v: &Value) -> Result<usize, String> {
        let seq = payload::verify(KEYS[key], v)?;
        let w = seq
            .checked_sub(self.base)
            .filter(|w| (*w as usize) < self.planned.len())
            .ok_or_else(|| format!("a value (seq {seq}) no operation of this case wrote"))?
            as usize;
        let p = &self.planned[w];
        if p.key != key || p.value != *v {
            return Err(format!("w{w}'s value, but not as written"));
        }
        Ok(w)
    }

    /// The write of key `key` whose logical length `meta` gives, after
    /// checking that the rest of `meta` matches it.
    fn by_meta(&self, key: usize, meta: &EntryMeta) -> Result<usize, String> {
        let w = self
            .planned
            .iter()
            .position(|p| p.key == key && p.logical.len() as u64 == meta.logical_len)
            .ok_or_else(|| format!("metadata of no write of the key: {meta:?}"))?;
        self.check_meta(key, w, meta)?;
        Ok(w)
    }

    fn check_meta(&self, key: usize, w: usize, meta: &EntryMeta) -> Result<(), String> {
        let p = &self.planned[w];
        if meta.key != KEYS[key]
            || meta.kind != p.value.kind()
            || meta.logical_len != p.logical.len() as u64
            || meta.codec != p.comp.codec()
            || meta.expires.is_some() != p.ttl.is_some()
        {
            return Err(format!(
                "metadata {meta:?} does not match w{w} (kind {:?}, {} bytes, codec {:?}, ttl {:?})",
                p.value.kind(),
                p.logical.len(),
                p.comp.codec(),
                p.ttl
            ));
        }
        Ok(())
    }

    fn seen_value(&self, key: usize, meta: Option<&EntryMeta>, v: &Value) -> Seen {
        let mut w = self.identify(key, v);
        if let (Ok(i), Some(m)) = (&w, meta)
            && let Err(e) = self.check_meta(key, *i, m)
        {
            w = Err(e);
        }
        Seen {
            w,
            expires: meta.map(|m| m.expires),
        }
    }
}

fn failed(e: etl_cache_core::Error) -> Res {
    Res::Failed(e.to_string())
}

/// A stream of `chunks`, yielding to the runtime before each one if asked.
fn chunked_stream(logical: &Bytes, sizes: &[usize], yields: bool) -> etl_cache_core::ByteStream {
    let mut parts = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < logical.len() {
        let n = sizes[i % sizes.len()]
            .max(logical.len() / 32 + 1)
            .min(logical.len() - at);
        parts.push(logical.slice(at..at + n));
        at += n;
        i += 1;
    }
    futures::stream::iter(parts)
        .then(move |c| async move {
            if yields {
                tokio::task::yield_now().await;
            }
            Ok(c)
        })
        .boxed()
}

async fn exec(ctx: &Ctx, cache: &dyn Cache, op: &Op) -> Res {
    let wrote = |r: Option<etl_cache_core::Result<EntryMeta>>| match r {
        None => Res::Dropped { computed: true },
        Some(Ok(m)) => Res::Wrote(Some(m)),
        Some(Err(e)) => failed(e),
    };
    match op {
        Op::Set { key, w, cancel } => {
            let p = &ctx.planned[*w];
            wrote(bounded(cache.set(KEYS[*key], p.value.clone(), p.opts()), *cancel).await)
        }
        Op::SetStream {
            key,
            w,
            chunks,
            yields,
            cancel,
        } => {
            let p = &ctx.planned[*w];
            let s = chunked_stream(&p.logical, chunks, *yields);
            wrote(bounded(cache.set_stream(KEYS[*key], s, p.opts()), *cancel).await)
        }
        Op::Get { key } => match cache.get(KEYS[*key]).await {
            Ok(v) => Res::Read(v.map(|v| ctx.seen_value(*key, None, &v))),
            Err(e) => failed(e),
        },
        Op::GetEntry { key } => match cache.get_entry(KEYS[*key]).await {
            Ok(v) => Res::Read(v.map(|(m, v)| ctx.seen_value(*key, Some(&m), &v))),
            Err(e) => failed(e),
        },
        Op::GetStream {
            key,
            chunk,
            drop_after,
        } => {
            let s = match cache.get_stream(KEYS[*key], *chunk).await {
                Ok(Some(s)) => s,
                Ok(None) => return Res::Read(None),
                Err(e) => return failed(e),
            };
            let (meta, mut s) = s.into_parts();
            let mut all = Vec::new();
            let mut n = 0;
            while let Some(c) = s.next().await {
                match c {
                    Ok(c) => all.extend_from_slice(&c),
                    Err(e) => return Res::Failed(format!("stream chunk {n}: {e}")),
                }
                n += 1;
                if drop_after.is_some_and(|d| n > d) {
                    drop(s);
                    let w = ctx.by_meta(*key, &meta).and_then(|w| {
                        if ctx.planned[w].logical.starts_with(&all) {
                            Ok(w)
                        } else {
                            Err(format!(
                                "the first {} bytes streamed are not w{w}'s",
                                all.len()
                            ))
                        }
                    });
                    return Res::Read(Some(Seen {
                        w,
                        expires: Some(meta.expires),
                    }));
                }
            }
            match Value::from_stored(meta.kind, Bytes::from(all)) {
                Ok(v) => Res::Read(Some(ctx.seen_value(*key, Some(&meta), &v))),
                Err(e) => Res::Read(Some(Seen {
                    w: Err(format!(
                        "streamed bytes do not decode as {:?}: {e}",
                        meta.kind
                    )),
                    expires: Some(meta.expires),
                })),
            }
        }
        Op::Head { key } => match cache.head(KEYS[*key]).await {
            Ok(m) => Res::Read(m.map(|m| Seen {
                w: ctx.by_meta(*key, &m),
                expires: Some(m.expires),
            })),
            Err(e) => failed(e),
        },
        Op::Delete { key } => match cache.delete(KEYS[*key]).await {
            Ok(b) => Res::Deleted(b),
            Err(e) => failed(e),
        },
        Op::GetOrInsert {
            key,
            w,
            yields,
            sleep_us,
            cancel,
        } => {
            let p = &ctx.planned[*w];
            let done = Arc::new(AtomicBool::new(false));
            let (d, v, yields, sleep_us) = (done.clone(), p.value.clone(), *yields, *sleep_us);
            let fut = cache.get_or_insert_with(KEYS[*key], p.opts(), move || async move {
                for _ in 0..yields {
                    tokio::task::yield_now().await;
                }
                if sleep_us > 0 {
                    tokio::time::sleep(Duration::from_micros(sleep_us)).await;
                }
                d.store(true, Ordering::SeqCst);
                v
            });
            match bounded(fut, *cancel).await {
                None => Res::Dropped {
                    computed: done.load(Ordering::SeqCst),
                },
                Some(Ok(v)) => {
                    let seen = ctx.seen_value(*key, None, &v);
                    match seen.w {
                        Ok(i) if i == *w && done.load(Ordering::SeqCst) => Res::Computed,
                        Ok(i) if i == *w => Res::Failed(
                            "returned the value it would compute without computing it".into(),
                        ),
                        _ => Res::Read(Some(seen)),
                    }
                }
                Some(Err(e)) => failed(e),
            }
        }
        Op::Clear => match cache.clear().await {
            Ok(n) => Res::Cleared(n),
            Err(e) => failed(e),
        },
        Op::Purge => match cache.purge_expired().await {
            Ok(n) => Res::Purged(n),
            Err(e) => failed(e),
        },
        Op::Advance { ms } => {
            ctx.clock.advance(Duration::from_millis(*ms));
            Res::Advanced
        }
    }
}

async fn timed(ctx: &Ctx, task: usize, handle: usize, op: Op) -> Event {
    let start = ctx.tick();
    let clock_lo = ctx.clock.now();
    let res = exec(ctx, &*ctx.handles[handle], &op).await;
    let clock_hi = ctx.clock.now();
    let end = ctx.tick();
    Event {
        task,
        handle,
        op,
        start,
        end,
        clock_lo,
        clock_hi,
        res,
    }
}

async fn run_task(
    ctx: Arc<Ctx>,
    task: usize,
    handle: usize,
    ops: Vec<Op>,
    barrier: Arc<tokio::sync::Barrier>,
) -> Vec<Event> {
    barrier.wait().await;
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        out.push(timed(&ctx, task, handle, op).await);
    }
    out
}

/// Counts over all cases, for the report.
#[derive(Default)]
struct Totals {
    ops: AtomicU64,
    reads: AtomicU64,
    values_read: AtomicU64,
    dropped: AtomicU64,
    evicted_reads: AtomicU64,
    late_wait_us: AtomicU64,
}

/// Runs one case: the tasks on a runtime of their own, shut down after them
/// so that work left on blocking threads by dropped calls has ended too
/// (it may not publish, but it must finish before the cache is called
/// quiet); then the final reads and the checks on `rt`.
fn run_case(
    rt: &tokio::runtime::Runtime,
    backend: Backend,
    p: Plan,
    pool: &mut Pool,
    totals: &Totals,
) -> Result<(), String> {
    let inst = rt.block_on(instance(backend, &p, pool))?;
    let ctx = Arc::new(Ctx {
        handles: inst.handles.clone(),
        clock: pool.clock.clone(),
        tick: AtomicU64::new(1),
        planned: p.planned,
        base: p.base,
    });
    let tasks = p.tasks;
    let case_rt = etl_cache_reliability::runtime();
    let events = case_rt.block_on(async {
        let barrier = Arc::new(tokio::sync::Barrier::new(tasks.len()));
        let joins: Vec<_> = tasks
            .into_iter()
            .enumerate()
            .map(|(t, (h, ops))| tokio::spawn(run_task(ctx.clone(), t, h, ops, barrier.clone())))
            .collect();
        let mut events = Vec::new();
        for j in joins {
            events.extend(j.await.map_err(|e| format!("a task panicked: {e}"))?);
        }
        Ok::<_, String>(events)
    })?;
    let t = Instant::now();
    case_rt.shutdown_timeout(Duration::from_secs(60));
    totals
        .late_wait_us
        .fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
    rt.block_on(finish_case(
        &ctx, &inst, events, p.expiring, backend, totals,
    ))
}

async fn finish_case(
    ctx: &Ctx,
    inst: &Instance,
    mut events: Vec<Event>,
    expiring: bool,
    backend: Backend,
    totals: &Totals,
) -> Result<(), String> {
    let mut failures = Vec::new();
    for d in &inst.disks {
        let left = layout::files_in(&layout::tmp_dir(&d.root));
        if !left.is_empty() {
            failures.push(format!(
                "{}: temp files left after every call ended: {left:?}",
                d.name
            ));
        }
    }
    for key in 0..KEYS.len() {
        for h in 0..2 {
            events.push(timed(ctx, usize::MAX, h, Op::Get { key }).await);
        }
    }
    // Capacity and counters after quiescence.
    for d in &inst.disks {
        let (n, b) = layout::disk_usage(&d.root);
        if let Some(l) = d.limits
            && (l.max_entries.is_some_and(|m| n > m) || l.max_bytes.is_some_and(|m| b > m))
        {
            failures.push(format!(
                "{}: {n} entries / {b} bytes on disk after quiescence, over the limits {l:?}",
                d.name
            ));
        }
        for (i, h) in d.handles.iter().enumerate() {
            match h.stats().await {
                Ok(s) if (s.entries, s.bytes) == (n, b) => {}
                Ok(s) => failures.push(format!(
                    "{}: handle {i}'s stats say {} entries / {} bytes, the disk holds {n} / {b}",
                    d.name, s.entries, s.bytes
                )),
                Err(e) => failures.push(format!("{}: stats of handle {i}: {e}", d.name)),
            }
        }
    }
    events.sort_by_key(|e| e.start);
    for e in &events {
        totals.ops.fetch_add(1, Ordering::Relaxed);
        match &e.res {
            Res::Read(s) => {
                totals.reads.fetch_add(1, Ordering::Relaxed);
                if s.is_some() {
                    totals.values_read.fetch_add(1, Ordering::Relaxed);
                }
            }
            Res::Dropped { .. } => {
                totals.dropped.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
    let checked = check(
        ctx,
        &events,
        backend.may_evict(),
        backend.purge_races_writes(),
        !expiring,
        totals,
    );
    if let Err(e) = checked {
        failures.insert(0, e);
    }
    if failures.is_empty() {
        Ok(())
    } else {
        let mut msg = failures.join("\n");
        if !msg.contains("history of") {
            let origin = events
                .iter()
                .map(|e| e.clock_lo)
                .min()
                .unwrap_or(SystemTime::UNIX_EPOCH);
            // Show every operation when no single key is to blame.
            msg.push_str("\nall operations:\n");
            for e in &events {
                msg.push_str(&describe(ctx, e, origin));
            }
        }
        Err(msg)
    }
}

// ---------------------------------------------------------------- the check

/// A write, delete or clear as it bears on one key.
#[derive(Debug)]
struct Effect {
    event: usize,
    start: u64,
    end: u64,
    /// Completed with Ok; otherwise dropped (it may or may not have happened).
    definite: bool,
    /// The value written, or `None` for a removal.
    put: Option<usize>,
    /// Bounds of the expiry of a value written with a TTL.
    expires: Option<(SystemTime, SystemTime)>,
}

fn describe(ctx: &Ctx, e: &Event, origin: SystemTime) -> String {
    let who = if e.task == usize::MAX {
        "after".to_string()
    } else {
        format!("t{}", e.task)
    };
    let key =
        e.op.key()
            .map_or(String::from("*"), |k| format!("{:?}", KEYS[k]));
    let res = match &e.res {
        Res::Wrote(_) => "Ok".to_string(),
        Res::Dropped { computed } => format!("dropped (computed: {computed})"),
        Res::Computed => "returned its own value".into(),
        Res::Read(None) => "None".into(),
        Res::Read(Some(Seen { w: Ok(w), .. })) => {
            let p = &ctx.planned[*w];
            format!("w{w} ({:?}, {} bytes)", p.value.kind(), p.logical.len())
        }
        Res::Read(Some(Seen { w: Err(e), .. })) => format!("BAD VALUE: {e}"),
        Res::Deleted(b) => format!("{b}"),
        Res::Cleared(n) => format!("{n} removed"),
        Res::Purged(n) => format!("{n} removed"),
        Res::Advanced => "ok".into(),
        Res::Failed(m) => format!("Err: {m}"),
    };
    let ms = |t: SystemTime| t.duration_since(origin).map_or(0, |d| d.as_millis());
    let ttl = match &e.op {
        Op::Set { w, .. } | Op::SetStream { w, .. } | Op::GetOrInsert { w, .. } => ctx.planned[*w]
            .ttl
            .map_or(String::new(), |t| format!(" ttl {t:?}")),
        _ => String::new(),
    };
    format!(
        "  [{:>4}..{:>4}] clock +{}..+{} ms  {who} h{} {key} {}{ttl} -> {res}\n",
        e.start,
        e.end,
        ms(e.clock_lo),
        ms(e.clock_hi),
        e.handle,
        e.op.describe(),
    )
}

fn check(
    ctx: &Ctx,
    events: &[Event],
    may_evict: bool,
    purge_races_writes: bool,
    nothing_expires: bool,
    totals: &Totals,
) -> Result<(), String> {
    let origin = events
        .iter()
        .map(|e| e.clock_lo)
        .min()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let history = |key: usize| -> String {
        let mut s = format!(
            "history of {:?} (ticks; clock from the first op):\n",
            KEYS[key]
        );
        for e in events {
            if e.op.key().is_none_or(|k| k == key) {
                s.push_str(&describe(ctx, e, origin));
            }
        }
        s
    };
    // Problems with no key first.
    for e in events {
        match (&e.op, &e.res) {
            (_, Res::Failed(m)) if e.op.key().is_none() => {
                return Err(format!("{} failed: {m}", e.op.describe()));
            }
            (Op::Purge, Res::Purged(n)) if nothing_expires && *n > 0 => {
                return Err(format!(
                    "purge_expired removed {n} entries while no entry could have expired (the clock never moved)"
                ));
            }
            _ => {}
        }
    }
    for (key, name) in KEYS.iter().enumerate() {
        let fail = |why: String| Err(format!("{why}\n{}", history(key)));
        let mut effects = vec![Effect {
            event: usize::MAX,
            start: 0,
            end: 0,
            definite: true,
            put: None,
            expires: None,
        }];
        for (i, e) in events.iter().enumerate() {
            let mine = e.op.key() == Some(key);
            if !mine && !matches!(e.op, Op::Clear) {
                continue;
            }
            if let Res::Failed(m) = &e.res {
                return fail(format!("{} on {name:?} failed: {m}", e.op.describe()));
            }
            let window = |w: usize| ctx.planned[w].ttl.map(|t| (e.clock_lo + t, e.clock_hi + t));
            let effect = |put: Option<usize>, definite: bool, expires| Effect {
                event: i,
                start: e.start,
                end: e.end,
                definite,
                put,
                expires,
            };
            match (&e.op, &e.res) {
                (Op::Set { w, .. } | Op::SetStream { w, .. }, Res::Wrote(meta)) => {
                    let mut expires = window(*w);
                    if let Some(m) = meta {
                        if let Err(why) = ctx.check_meta(key, *w, m) {
                            return fail(format!("the set of w{w} returned {why}"));
                        }
                        if let (Some((lo, hi)), Some(x)) = (expires, m.expires) {
                            if x < lo || x > hi {
                                return fail(format!(
                                    "the set of w{w} returned an expiry outside its window"
                                ));
                            }
                            expires = Some((x, x));
                        }
                    }
                    effects.push(effect(Some(*w), true, expires));
                }
                (Op::GetOrInsert { w, .. }, Res::Computed) => {
                    effects.push(effect(Some(*w), true, window(*w)));
                }
                (
                    Op::Set { w, .. } | Op::SetStream { w, .. } | Op::GetOrInsert { w, .. },
                    Res::Dropped { computed: true },
                ) => effects.push(effect(Some(*w), false, window(*w))),
                (Op::Delete { .. } | Op::Clear, _) => effects.push(effect(None, true, None)),
                _ => {}
            }
        }
        // The documented window of an ObjectCache purge: one that removed
        // something while a write of this key ran may have removed that
        // write's value (a possible removal, never a definite one). The
        // write's value may land inside the purge while its call ends after
        // it (a get_or_insert_with releases its lease after the value is
        // stored), so any overlap counts, not only a write that ended first.
        if purge_races_writes {
            for (i, p) in events.iter().enumerate() {
                let (Op::Purge, Res::Purged(n)) = (&p.op, &p.res) else {
                    continue;
                };
                let overlaps = effects
                    .iter()
                    .any(|c| c.put.is_some() && c.start < p.end && c.end > p.start);
                if *n > 0 && overlaps {
                    effects.push(Effect {
                        event: i,
                        start: p.start,
                        end: p.end,
                        definite: false,
                        put: None,
                        expires: None,
                    });
                }
            }
        }
        // Whether effect `c` can be the last one a read in start..end saw:
        // it began before the read ended, and no completed effect began
        // after it ended and ended before the read began.
        let visible = |c: &Effect, r: &Event| {
            c.start < r.end
                && !effects
                    .iter()
                    .any(|x| x.definite && x.event != c.event && c.end < x.start && x.end < r.start)
        };
        for e in events {
            if e.op.key() != Some(key) {
                continue;
            }
            let Res::Read(seen) = &e.res else { continue };
            match seen {
                Some(Seen { w: Err(why), .. }) => {
                    return fail(format!("{} returned a bad value: {why}", e.op.describe()));
                }
                Some(Seen { w: Ok(w), expires }) => {
                    let Some(c) = effects.iter().find(|c| c.put == Some(*w)) else {
                        return fail(format!(
                            "{} [{}..{}] returned w{w}, which no operation stored (its write failed, \
                             or computed without returning it, or never ran)",
                            e.op.describe(),
                            e.start,
                            e.end
                        ));
                    };
                    if !visible(c, e) {
                        let by = effects
                            .iter()
                            .find(|x| {
                                x.definite
                                    && x.event != c.event
                                    && c.end < x.start
                                    && x.end < e.start
                            })
                            .map_or(String::from("nothing"), |x| {
                                format!("the effect at [{}..{}]", x.start, x.end)
                            });
                        return fail(format!(
                            "{} [{}..{}] returned w{w} (written [{}..{}]), which {} replaced before the read began",
                            e.op.describe(),
                            e.start,
                            e.end,
                            c.start,
                            c.end,
                            if c.start >= e.end {
                                "was not even begun when the read ended; ".to_string() + &by
                            } else {
                                by
                            }
                        ));
                    }
                    if let Some((lo, hi)) = c.expires {
                        if let Some(Some(x)) = expires
                            && (*x < lo || *x > hi)
                        {
                            return fail(format!(
                                "{} returned w{w} with an expiry outside the window of its write",
                                e.op.describe()
                            ));
                        }
                        if hi <= e.clock_lo {
                            return fail(format!(
                                "{} [{}..{}] returned w{w} after it had expired",
                                e.op.describe(),
                                e.start,
                                e.end
                            ));
                        }
                    }
                }
                None => {
                    let legal = effects.iter().any(|c| {
                        visible(c, e)
                            && (c.put.is_none()
                                || c.expires.is_some_and(|(lo, _)| lo <= e.clock_hi))
                    });
                    if !legal {
                        if may_evict {
                            totals.evicted_reads.fetch_add(1, Ordering::Relaxed);
                        } else {
                            return fail(format!(
                                "{} [{}..{}] found nothing, but a value was stored and not removed",
                                e.op.describe(),
                                e.start,
                                e.end
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- driver

fn run(name: &str, backend: Backend) {
    let cases = iterations("ETL_CACHE_CONCURRENCY_CASES", 2_000, 20_000);
    let only: Option<u64> = std::env::var("ETL_CACHE_CONCURRENCY_CASE").ok().map(|v| {
        v.trim()
            .parse()
            .expect("ETL_CACHE_CONCURRENCY_CASE is a number")
    });
    // Runs every case and sums up the failures by kind, instead of stopping
    // at the first (for seeing how often each defect shows).
    let keep_going = matches!(
        std::env::var("ETL_CACHE_CONCURRENCY_KEEP_GOING").as_deref(),
        Ok("1" | "true" | "yes")
    );
    let seed = seed();
    let rt = etl_cache_reliability::runtime();
    let totals = Totals::default();
    let mut pool = Pool::new();
    let started = Instant::now();
    let mut tasks = 0u64;
    let mut handles = 0;
    let mut failed: Vec<(u64, String)> = Vec::new();
    for i in 0..cases {
        let case = only.unwrap_or(i);
        let mut rng = Rng::new(payload::mix(seed ^ payload::mix(case + 1)));
        // Sequence numbers differ in every run of a case, so a value left by
        // an earlier one is recognised as foreign.
        let p = plan(&mut rng, backend, (i + 1) * 1_000_000);
        tasks += p.tasks.len() as u64;
        let setup = format!(
            "limits {:?}, inline {:?}, expiring {}, memory {} / entry {}, {} tasks",
            p.limits,
            p.inline,
            p.expiring,
            p.memory_bytes,
            p.max_memory_entry,
            p.tasks.len()
        );
        if let Err(e) = run_case(&rt, backend, p, &mut pool, &totals) {
            let msg = format!(
                "{name}: case {case} (seed {seed}; replay with ETL_CACHE_SEED={seed} \
                 ETL_CACHE_CONCURRENCY_CASE={case}) failed\nsetup: {setup}\n{e}"
            );
            if !keep_going {
                panic!("{msg}");
            }
            eprintln!("{msg}\n");
            failed.push((case, e.lines().next().unwrap_or("").to_owned()));
            // The pooled roots may be in any state now: start afresh.
            handles += pool.pairs.len() * 2;
            pool = Pool::new();
        }
    }
    handles += pool.pairs.len() * 2;
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    report(
        "concurrency",
        &format!(
            "{name}: seed={seed} cases={cases} failed={} tasks={tasks} ops={} reads={} \
             values_read={} dropped_writes={} reads_missing_by_eviction={} \
             longest_wait_for_dropped_writers={:?} disk_handles={handles} took={:.1}s",
            failed.len(),
            load(&totals.ops),
            load(&totals.reads),
            load(&totals.values_read),
            load(&totals.dropped),
            load(&totals.evicted_reads),
            Duration::from_micros(load(&totals.late_wait_us)),
            started.elapsed().as_secs_f64()
        ),
    );
    if !failed.is_empty() {
        let mut kinds: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
        for (case, first) in failed {
            // The kind of failure: its first line without the numbers.
            let mut kind = String::new();
            for c in first.chars() {
                if !c.is_ascii_digit() {
                    kind.push(c);
                } else if !kind.ends_with('#') {
                    kind.push('#');
                }
            }
            kinds.entry(kind).or_default().push(case);
        }
        let mut s = format!("{name} (seed {seed}): failures by kind:\n");
        for (kind, cases) in kinds {
            s.push_str(&format!(
                "  {} x {kind}  (cases {:?})\n",
                cases.len(),
                &cases[..cases.len().min(8)]
            ));
        }
        panic!("{s}");
    }
}

/// The checker on the reference implementation: no false alarms.
#[test]
fn concurrency_memory_cache_reference() {
    run("MemoryCache (reference)", Backend::Memory);
}

#[test]
fn concurrency_disk_cache() {
    run("DiskCache", Backend::Disk);
}

#[test]
fn concurrency_disk_cache_with_limits() {
    run("DiskCache(limits)", Backend::DiskLimits);
}

#[test]
fn concurrency_object_cache_in_memory() {
    run("ObjectCache(InMemory)", Backend::ObjectMemory);
}

#[test]
fn concurrency_object_cache_local_file_system() {
    run("ObjectCache(LocalFileSystem)", Backend::ObjectLocal);
}

#[test]
fn concurrency_tiered_cache_memory() {
    run("TieredCache(memory, DiskCache)", Backend::TieredMemory);
}

#[test]
fn concurrency_tiered_cache_chain() {
    run("TieredCache(DiskCache, DiskCache)", Backend::TieredChain);
}
