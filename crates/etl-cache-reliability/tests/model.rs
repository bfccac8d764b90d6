//! Model-based tests: random sequences of operations run against a backend
//! and against a plain in-memory model; every answer must agree.
//!
//! Operations: set (text, bytes, JSON; every codec; with or without TTL),
//! set_stream (complete, failing part way, or dropped part way), get,
//! get_stream (in random chunk sizes, sometimes dropped part way), head,
//! delete, clear, purge_expired, list with prefixes, and moving the clock
//! (a `ManualClock`, so nothing sleeps). Capacity limits are random per
//! case; the model of `DiskCache` evicts exactly as its documented LRU does
//! (least recent mtime first, down to the low-water mark, never the entry
//! being written), so a wrong eviction is a failure too.
//!
//! Backends: `DiskCache`, `ObjectCache` over `InMemory` and over
//! `LocalFileSystem`, and `TieredCache` (memory -> DiskCache with limits ->
//! ObjectCache; the middle DiskCache refuses entries above its `max_bytes`,
//! and then must hold nothing under the key while the set succeeds and the
//! value is served from below). 10,000 cases each by default
//! (`ETL_CACHE_MODEL_CASES`, 100,000 with `ETL_CACHE_LONG=1`); proptest
//! shrinks a failure to a minimal sequence, printed in the panic message.
//! `ETL_CACHE_SEED` replays.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use etl_cache_core::backend::codec::Encoder;
use etl_cache_core::backend::format::{HEADER_FIXED_LEN, Layout, TRAILER_LEN};
use etl_cache_core::{
    Cache, Clock, Codec, Compression, EntryMeta, Error, Kind, ManualClock, SetOptions, Value,
};
use etl_cache_fs::DiskCache;
use etl_cache_object::ObjectCache;
use etl_cache_reliability::fixtures::{Limits, scratch};
use etl_cache_reliability::payload::{self, Style};
use etl_cache_reliability::{iterations, layout, report, seed};
use etl_cache_tiered::TieredCache;
use futures::{StreamExt, TryStreamExt};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

macro_rules! check {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err(format!($($arg)*));
        }
    };
}

// ---------------------------------------------------------------- operations

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comp {
    None,
    Gzip1,
    Gzip6,
    Zstd1,
    Zstd3,
}

impl Comp {
    fn compression(self) -> Compression {
        match self {
            Comp::None => Compression::NONE,
            Comp::Gzip1 => Compression::gzip_level(1).expect("level"),
            Comp::Gzip6 => Compression::gzip(),
            Comp::Zstd1 => Compression::zstd_level(1).expect("level"),
            Comp::Zstd3 => Compression::zstd(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KindG {
    Text,
    Bytes,
    Json,
}

#[derive(Debug, Clone)]
struct Payload {
    len: usize,
    seed: u64,
    random: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Complete,
    /// The stream yields an error after this many chunks.
    Fail(usize),
    /// The caller drops the `set_stream` future after this many chunks.
    Cancel(usize),
}

#[derive(Debug, Clone)]
enum Op {
    Set {
        key: usize,
        kind: KindG,
        payload: Payload,
        comp: Comp,
        ttl_ms: Option<u64>,
    },
    SetStream {
        key: usize,
        payload: Payload,
        comp: Comp,
        ttl_ms: Option<u64>,
        chunks: Vec<usize>,
        end: End,
    },
    Get {
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
    Clear,
    PurgeExpired,
    Advance {
        ms: u64,
    },
    List {
        prefix: usize,
    },
}

const PREFIXES: [Option<&str>; 5] = [None, Some("dir/"), Some("dir/b"), Some("ü"), Some("zz")];

fn keys() -> Vec<String> {
    vec![
        "a".into(),
        "dir/b".into(),
        "dir/b/c".into(),
        "ünï/çødé 😀".into(),
        "x y%2F../..".into(),
        format!("{}/long", "L".repeat(1000)),
    ]
}

fn payload_strategy() -> impl Strategy<Value = Payload> {
    (
        prop_oneof![
            12 => 0usize..64,
            8 => 64usize..2_000,
            2 => 2_000usize..24_000,
            1 => 24_000usize..140_000,
        ],
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(len, seed, random)| Payload { len, seed, random })
}

fn comp_strategy() -> impl Strategy<Value = Comp> {
    prop_oneof![
        4 => Just(Comp::None),
        1 => Just(Comp::Gzip1),
        1 => Just(Comp::Gzip6),
        1 => Just(Comp::Zstd1),
        1 => Just(Comp::Zstd3),
    ]
}

fn ttl_strategy() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![
        5 => Just(None),
        1 => Just(Some(1_000)),
        1 => Just(Some(2_500)),
        1 => Just(Some(60_000)),
    ]
}

fn op_strategy(nkeys: usize) -> impl Strategy<Value = Op> {
    let key = 0..nkeys;
    prop_oneof![
        24 => (key.clone(), prop_oneof![Just(KindG::Text), Just(KindG::Bytes), Just(KindG::Json)],
               payload_strategy(), comp_strategy(), ttl_strategy())
            .prop_map(|(key, kind, payload, comp, ttl_ms)| Op::Set { key, kind, payload, comp, ttl_ms }),
        9 => (key.clone(), payload_strategy(), comp_strategy(), ttl_strategy(),
              proptest::collection::vec(1usize..70_000, 1..4),
              prop_oneof![8 => Just(End::Complete), 1 => (0usize..4).prop_map(End::Fail),
                          1 => (0usize..4).prop_map(End::Cancel)])
            .prop_map(|(key, payload, comp, ttl_ms, chunks, end)| Op::SetStream {
                key, payload, comp, ttl_ms, chunks, end }),
        18 => key.clone().prop_map(|key| Op::Get { key }),
        8 => (key.clone(), prop_oneof![1usize..64, 64usize..100_000],
              proptest::option::weighted(0.2, 0usize..3))
            .prop_map(|(key, chunk, drop_after)| Op::GetStream { key, chunk, drop_after }),
        5 => key.clone().prop_map(|key| Op::Head { key }),
        7 => key.prop_map(|key| Op::Delete { key }),
        1 => Just(Op::Clear),
        3 => Just(Op::PurgeExpired),
        7 => prop_oneof![Just(500u64), Just(1_000), Just(1_500), Just(2_500), Just(120_000)]
            .prop_map(|ms| Op::Advance { ms }),
        3 => (0..PREFIXES.len()).prop_map(|prefix| Op::List { prefix }),
    ]
}

// ---------------------------------------------------------------- values

fn text_of(p: &Payload) -> String {
    const ALPHABET: [&str; 12] = [
        "a",
        "b",
        " ",
        "\n",
        "{",
        "\"",
        "é",
        "中",
        "😀",
        "<row/>",
        "\u{10FFFD}",
        "\t",
    ];
    let mut s = String::with_capacity(p.len + 4);
    let mut i = 0u64;
    while s.len() < p.len {
        let r = payload::mix(p.seed ^ i);
        s.push_str(ALPHABET[(r % ALPHABET.len() as u64) as usize]);
        i += 1;
    }
    s
}

fn value_of(kind: KindG, p: &Payload) -> Value {
    match kind {
        KindG::Text => Value::Text(text_of(p)),
        KindG::Bytes => Value::Bytes(Bytes::from(payload::body(
            p.seed,
            if p.random { Style::Random } else { Style::Text },
            p.len,
        ))),
        KindG::Json => Value::Json(serde_json::json!({
            "s": text_of(p),
            "n": (p.seed >> 12) as i64,
            "f": (p.seed % 1000) as f64 / 8.0,
            "a": [1, null, true, "x", {"k": []}],
        })),
    }
}

fn stream_bytes(p: &Payload) -> Bytes {
    Bytes::from(payload::body(
        p.seed,
        if p.random { Style::Random } else { Style::Text },
        p.len,
    ))
}

/// The chunks a stream op feeds: its sizes cycled, never so small that a
/// large payload becomes 100,000 chunks.
fn stream_chunks(bytes: &Bytes, sizes: &[usize]) -> Vec<Bytes> {
    let floor = bytes.len() / 64 + 1;
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < bytes.len() {
        let n = sizes[i % sizes.len()].max(floor).min(bytes.len() - at);
        out.push(bytes.slice(at..at + n));
        at += n;
        i += 1;
    }
    out
}

fn header_len(key: &str) -> u64 {
    (HEADER_FIXED_LEN + key.len() + 4) as u64
}

/// The format DiskCache writes.
const DISK_LAYOUT: Layout = Layout::DEFAULT_BLOCKS;

/// The size of an entry of `stored` stored bytes in `layout` (format 2
/// counts the block checksums).
fn entry_size(layout: Layout, key: &str, stored: u64) -> u64 {
    header_len(key)
        + layout.framed_len(stored).expect("a small payload frames")
        + TRAILER_LEN as u64
}

fn stored_len_whole(comp: Comp, bytes: &Bytes) -> u64 {
    Encoder::encode_all(comp.compression(), bytes.clone())
        .expect("encode")
        .1
        .stored_len
}

fn stored_len_chunked(comp: Comp, chunks: &[Bytes]) -> u64 {
    let mut enc = Encoder::new(comp.compression()).expect("encoder");
    for c in chunks {
        enc.encode(c.clone()).expect("encode");
    }
    enc.finish().expect("finish").1.stored_len
}

// ---------------------------------------------------------------- backends

/// The settings of one case.
#[derive(Debug, Clone)]
struct Setup {
    /// Capacity of the DiskCache (of the one under test, or the tier).
    limits: Option<Limits>,
    inline_io: bool,
    durable: bool,
    memory_bytes: u64,
    max_memory_entry: u64,
}

/// Which capacity limits a case may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LimitsG {
    None,
    /// Any: entries, bytes (from 250 bytes) and low-water mark.
    Any,
}

fn setup_strategy(limits: LimitsG) -> impl Strategy<Value = Setup> {
    let limits = if limits == LimitsG::Any {
        proptest::option::weighted(
            0.6,
            (
                proptest::option::of(1u64..6),
                proptest::option::of(prop_oneof![
                    Just(250u64),
                    Just(600),
                    Just(1_500),
                    Just(5_000),
                    Just(30_000),
                    Just(200_000)
                ]),
                prop_oneof![Just(0.0), Just(0.5), Just(0.9), Just(1.0)],
            )
                .prop_map(|(max_entries, max_bytes, low_water)| Limits {
                    max_entries,
                    max_bytes,
                    low_water,
                }),
        )
        .boxed()
    } else {
        Just(None).boxed()
    };
    (
        limits,
        any::<bool>(),
        proptest::bool::weighted(0.05),
        prop_oneof![Just(0u64), Just(4_096), Just(1 << 20)],
        prop_oneof![Just(0u64), Just(100), Just(50_000)],
    )
        .prop_map(
            |(limits, inline_io, durable, memory_bytes, max_memory_entry)| Setup {
                limits,
                inline_io,
                durable,
                memory_bytes,
                max_memory_entry,
            },
        )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Disk,
    ObjectMemory,
    ObjectLocal,
    Tiered,
}

struct Instance {
    cache: Arc<dyn Cache>,
    /// The DiskCache root, for looking at the files.
    disk_root: Option<PathBuf>,
    /// Whether the model must predict evictions and TooLarge.
    exact_limits: Option<Limits>,
    /// Whether sizes of compressed entries are exact (TieredCache promotes
    /// entries at the codec's default level: see RELIABILITY.md).
    exact_sizes: bool,
    /// A TieredCache's middle DiskCache and its `max_bytes`: after each set
    /// it must hold the entry exactly when the entry fits (a tier that
    /// refuses a value is left without the key; the value is then served
    /// from below).
    middle: Option<(Arc<DiskCache>, Option<u64>)>,
    _dir: Option<tempfile::TempDir>,
}

async fn disk(root: &Path, clock: &Arc<ManualClock>, s: &Setup) -> DiskCache {
    let mut b = DiskCache::builder()
        .root(root)
        .clock(clock.clone())
        .durable(s.durable)
        .lock_timeout(Duration::from_secs(30));
    if !s.inline_io {
        b = b.inline_io(0);
    }
    if let Some(l) = s.limits {
        b = l.apply(b);
    }
    b.build().await.expect("open the DiskCache")
}

/// DiskCache handles by settings. Opening a root creates 256 directories
/// (about 10 ms here, 130 ms on a busy ext4), so cases with the same
/// settings share a handle, emptied and checked empty before each case.
#[derive(Default)]
struct Pool {
    disks: std::collections::HashMap<String, Pooled>,
}

struct Pooled {
    _dir: tempfile::TempDir,
    root: PathBuf,
    cache: Arc<DiskCache>,
    clock: Arc<ManualClock>,
}

impl Pool {
    async fn disk(
        &mut self,
        s: &Setup,
    ) -> Result<(Arc<DiskCache>, PathBuf, Arc<ManualClock>), String> {
        let id = format!("{:?} {} {}", s.limits, s.inline_io, s.durable);
        if !self.disks.contains_key(&id) {
            let dir = tempfile::tempdir_in(scratch()).expect("tempdir");
            let root = dir.path().join("c");
            let clock = Arc::new(ManualClock::new());
            let cache = Arc::new(disk(&root, &clock, s).await);
            self.disks.insert(
                id.clone(),
                Pooled {
                    _dir: dir,
                    root,
                    cache,
                    clock,
                },
            );
        }
        let p = &self.disks[&id];
        // Empty it through the API (what a previous case left), and check.
        for k in keys() {
            p.cache
                .delete(&k)
                .await
                .map_err(|e| format!("emptying: {e}"))?;
        }
        let s = p.cache.stats().await.map_err(|e| format!("stats: {e}"))?;
        check!(
            (s.entries, s.bytes) == (0, 0),
            "a pooled cache is not empty after deleting every key: {s:?}"
        );
        Ok((p.cache.clone(), p.root.clone(), p.clock.clone()))
    }
}

/// An instance of an `ObjectCache` on `store` under `prefix`, with a
/// clock of its own and 32 KiB parts; `dir` (the store's files, if any)
/// lives as long as the instance.
fn object_instance(
    store: Arc<dyn object_store::ObjectStore>,
    prefix: &str,
    dir: Option<tempfile::TempDir>,
) -> (Instance, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let cache = ObjectCache::builder()
        .store(store)
        .prefix(prefix)
        .clock(clock.clone())
        .part_size(32 * 1024)
        .build()
        .expect("ObjectCache");
    (
        Instance {
            cache: Arc::new(cache),
            disk_root: None,
            exact_limits: None,
            exact_sizes: true,
            middle: None,
            _dir: dir,
        },
        clock,
    )
}

/// `r` with its error, if any, named by `what`.
fn named<T>(r: etl_cache_core::Result<T>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// The keys a listing yields, sorted; an error names the listing `what`.
async fn sorted_keys(
    listing: futures::stream::BoxStream<'static, etl_cache_core::Result<etl_cache_core::EntryMeta>>,
    what: &str,
) -> Result<Vec<String>, String> {
    let mut keys: Vec<String> = listing
        .map_ok(|m| m.key)
        .try_collect()
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    keys.sort();
    Ok(keys)
}

async fn instance(
    backend: Backend,
    s: &Setup,
    pool: &mut Pool,
) -> Result<(Instance, Arc<ManualClock>), String> {
    Ok(match backend {
        Backend::Disk => {
            let (cache, root, clock) = pool.disk(s).await?;
            (
                Instance {
                    cache,
                    disk_root: Some(root),
                    exact_limits: s.limits,
                    exact_sizes: true,
                    middle: None,
                    _dir: None,
                },
                clock,
            )
        }
        Backend::ObjectMemory => {
            let store = Arc::new(object_store::memory::InMemory::new());
            object_instance(store, "etl/cache", None)
        }
        Backend::ObjectLocal => {
            let dir = tempfile::tempdir_in(scratch()).expect("tempdir");
            let store =
                object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("local");
            object_instance(Arc::new(store), "cache", Some(dir))
        }
        Backend::Tiered => {
            let (middle, _, clock) = pool.disk(s).await?;
            let bottom = ObjectCache::builder()
                .store(Arc::new(object_store::memory::InMemory::new()))
                .clock(clock.clone())
                .build()
                .expect("ObjectCache");
            let cache = TieredCache::builder()
                .clock(clock.clone())
                .memory_bytes(s.memory_bytes)
                .max_memory_entry(s.max_memory_entry)
                .tier(middle.clone())
                .tier(Arc::new(bottom))
                .build()
                .expect("TieredCache");
            (
                Instance {
                    cache: Arc::new(cache),
                    disk_root: None,
                    exact_limits: None,
                    exact_sizes: false,
                    middle: Some((middle, s.limits.and_then(|l| l.max_bytes))),
                    _dir: None,
                },
                clock,
            )
        }
    })
}

// ---------------------------------------------------------------- the model

#[derive(Debug, Clone)]
struct Entry {
    value: Value,
    kind: Kind,
    codec: Codec,
    expires: Option<SystemTime>,
    size: u64,
    /// Another size the metadata may give: a TieredCache's entry served by
    /// its middle DiskCache, when that writes another format than the
    /// bottom ObjectCache.
    other_size: Option<u64>,
    /// Recency: larger is more recent.
    stamp: u64,
}

#[derive(Debug, Default)]
struct Model {
    map: BTreeMap<String, Entry>,
    stamp: u64,
    hits: u64,
    misses: u64,
    evictions: u64,
    /// Whether the backend's reads leave expired entries in place, counted
    /// until a purge (ObjectCache, and a TieredCache whose stats and purges
    /// come from one).
    keeps_expired: bool,
}

impl Model {
    fn expired(e: &Entry, now: SystemTime) -> bool {
        e.expires.is_some_and(|t| t <= now)
    }

    /// The live entry under `key`; an expired one is removed (as a read
    /// does, unless the backend keeps it until a purge).
    fn live(&mut self, key: &str, now: SystemTime) -> Option<Entry> {
        match self.map.get(key) {
            Some(e) if Self::expired(e, now) => {
                if !self.keeps_expired {
                    self.map.remove(key);
                }
                None
            }
            Some(e) => Some(e.clone()),
            None => None,
        }
    }

    fn touch(&mut self, key: &str) {
        self.stamp += 1;
        let s = self.stamp;
        if let Some(e) = self.map.get_mut(key) {
            e.stamp = s;
        }
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.map.len() as u64,
            self.map.values().map(|e| e.size).sum(),
        )
    }

    /// Publishes `entry` under `key`, evicting first as DiskCache does when
    /// limits are set.
    fn publish(&mut self, key: &str, mut entry: Entry, limits: Option<Limits>) {
        if let Some(l) = limits {
            let (n, b) = self.counts();
            let old = self.map.get(key).map(|e| e.size);
            let (mut n, mut b) = match old {
                Some(old) => (n, b - old + entry.size),
                None => (n + 1, b + entry.size),
            };
            let over = l.max_entries.is_some_and(|m| n > m) || l.max_bytes.is_some_and(|m| b > m);
            if over {
                // Eviction is flat: down to the limits themselves (the
                // low-water mark only sets how far ahead a scan plans).
                let te = l.max_entries.unwrap_or(u64::MAX);
                let tb = l.max_bytes.unwrap_or(u64::MAX);
                let mut victims: Vec<(u64, String)> = self
                    .map
                    .iter()
                    .filter(|(k, _)| k.as_str() != key)
                    .map(|(k, e)| (e.stamp, k.clone()))
                    .collect();
                victims.sort();
                for (_, k) in victims {
                    if n <= te && b <= tb {
                        break;
                    }
                    let e = self.map.remove(&k).expect("victim");
                    n -= 1;
                    b -= e.size;
                    self.evictions += 1;
                }
            }
        }
        self.stamp += 1;
        entry.stamp = self.stamp;
        self.map.insert(key.to_owned(), entry);
    }
}

// ---------------------------------------------------------------- running

/// The longest wait at the end of a case for the temp files of dropped
/// `set_stream` calls to go, in microseconds.
static CLEANUP_WAIT_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// TieredCache sets (and complete streams) whose value the middle DiskCache
/// refused (too large for it).
static MIDDLE_REFUSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// TieredCache sets (and complete streams) whose value the middle DiskCache took.
static MIDDLE_HELD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn same_value(a: &Value, b: &Value) -> bool {
    a == b
}

fn check_meta(
    meta: &EntryMeta,
    key: &str,
    e: &Entry,
    logical: u64,
    exact_size: bool,
) -> Result<(), String> {
    check!(meta.key == key, "meta names key {:?}", meta.key);
    check!(
        meta.kind == e.kind,
        "meta kind {:?}, want {:?}",
        meta.kind,
        e.kind
    );
    check!(
        meta.codec == e.codec,
        "meta codec {:?}, want {:?}",
        meta.codec,
        e.codec
    );
    check!(
        meta.expires == e.expires,
        "meta expires {:?}, want {:?}",
        meta.expires,
        e.expires
    );
    check!(
        meta.logical_len == logical,
        "meta logical_len {}, want {logical}",
        meta.logical_len
    );
    check!(
        meta.size == e.size
            || Some(meta.size) == e.other_size
            || (!exact_size && e.codec != Codec::None),
        "meta size {}, want {}",
        meta.size,
        e.size
    );
    Ok(())
}

struct Run<'a> {
    inst: &'a Instance,
    clock: &'a Arc<ManualClock>,
    keys: &'a [String],
    model: Model,
    /// The entry format the backend writes (ObjectCache: format 2, whose
    /// block checksums count in an entry's size).
    layout: Layout,
}

/// What a set wrote, and the size the model predicts for it: in the
/// backend's format, and as a DiskCache (a TieredCache's middle tier)
/// stores it.
struct Written {
    value: Value,
    kind: Kind,
    comp: Comp,
    ttl_ms: Option<u64>,
    size: u64,
    disk_size: u64,
}

impl Run<'_> {
    fn cache(&self) -> &dyn Cache {
        &*self.inst.cache
    }

    /// Checks the answer of a set of `w` and applies it to the model.
    async fn set(
        &mut self,
        key: &str,
        w: Written,
        result: etl_cache_core::Result<EntryMeta>,
    ) -> Result<(), String> {
        let Written {
            value,
            kind,
            comp,
            ttl_ms,
            size: predicted_size,
            disk_size,
        } = w;
        let now = self.clock.now();
        let limits = self.inst.exact_limits;
        if let Some(max) = limits.and_then(|l| l.max_bytes)
            && disk_size > max
        {
            return match result {
                Err(Error::TooLarge {
                    key: k,
                    size,
                    limit,
                }) => {
                    check!(
                        k == Error::display_key(key) && size > max && limit == max,
                        "TooLarge names {k:?} {size} {limit}"
                    );
                    Ok(())
                }
                other => Err(format!(
                    "{disk_size} bytes > max_bytes {max}: want TooLarge, got {other:?}"
                )),
            };
        }
        let meta = result.map_err(|e| format!("set failed: {e}"))?;
        if let Some((middle, max_bytes)) = &self.inst.middle {
            // The entry went to the bottom tier; the middle DiskCache took it
            // unless it is too large for it, and then holds nothing under
            // the key (reads are served from below).
            let held = middle
                .head(key)
                .await
                .map_err(|e| format!("head on the middle tier: {e}"))?
                .is_some();
            let fits = max_bytes.is_none_or(|m| disk_size <= m);
            check!(
                held == fits,
                "the middle DiskCache {} an entry of {disk_size} bytes (max_bytes {max_bytes:?})",
                if held { "holds" } else { "lacks" }
            );
            let counter = if fits { &MIDDLE_HELD } else { &MIDDLE_REFUSED };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let entry = Entry {
            value: value.clone(),
            kind,
            codec: comp.compression().codec(),
            expires: ttl_ms.map(|ms| now + Duration::from_millis(ms)),
            size: predicted_size,
            other_size: (self.inst.middle.is_some() && disk_size != predicted_size)
                .then_some(disk_size),
            stamp: 0,
        };
        check_meta(&meta, key, &entry, value.to_bytes().len() as u64, true)?;
        self.model.publish(key, entry, limits);
        Ok(())
    }

    async fn step(&mut self, op: &Op) -> Result<(), String> {
        let now = self.clock.now();
        match op {
            Op::Set {
                key,
                kind,
                payload,
                comp,
                ttl_ms,
            } => {
                let key = &self.keys[*key];
                let value = value_of(*kind, payload);
                let kind = value.kind();
                let stored = stored_len_whole(*comp, &value.to_bytes());
                let size = entry_size(self.layout, key, stored);
                let disk_size = entry_size(DISK_LAYOUT, key, stored);
                let mut opts = SetOptions::new().compression(comp.compression());
                if let Some(ms) = ttl_ms {
                    opts = opts.ttl(Duration::from_millis(*ms));
                }
                let r = self.cache().set(key, value.clone(), opts).await;
                let w = Written {
                    value,
                    kind,
                    comp: *comp,
                    ttl_ms: *ttl_ms,
                    size,
                    disk_size,
                };
                self.set(key, w, r).await
            }
            Op::SetStream {
                key,
                payload,
                comp,
                ttl_ms,
                chunks,
                end,
            } => {
                let key = &self.keys[*key];
                let bytes = stream_bytes(payload);
                let parts = stream_chunks(&bytes, chunks);
                let stored = stored_len_chunked(*comp, &parts);
                let size = entry_size(self.layout, key, stored);
                let disk_size = entry_size(DISK_LAYOUT, key, stored);
                let mut opts = SetOptions::new().compression(comp.compression());
                if let Some(ms) = ttl_ms {
                    opts = opts.ttl(Duration::from_millis(*ms));
                }
                match *end {
                    End::Complete => {
                        let s = futures::stream::iter(parts.into_iter().map(Ok)).boxed();
                        let r = self.cache().set_stream(key, s, opts).await;
                        let w = Written {
                            value: Value::Bytes(bytes),
                            kind: Kind::Bytes,
                            comp: *comp,
                            ttl_ms: *ttl_ms,
                            size,
                            disk_size,
                        };
                        self.set(key, w, r).await
                    }
                    End::Fail(after) => {
                        let mut items: Vec<std::io::Result<Bytes>> =
                            parts.into_iter().take(after).map(Ok).collect();
                        items.push(Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "the source hung up",
                        )));
                        let s = futures::stream::iter(items).boxed();
                        match self.cache().set_stream(key, s, opts).await {
                            Err(Error::Stream { key: k, source }) => {
                                check!(k == Error::display_key(key), "Stream error names {k:?}");
                                check!(
                                    source.kind() == std::io::ErrorKind::ConnectionReset,
                                    "source {source}"
                                );
                                Ok(())
                            }
                            // A too-large stream may be refused before the error.
                            Err(Error::TooLarge { .. })
                                if self.inst.exact_limits.and_then(|l| l.max_bytes).is_some() =>
                            {
                                Ok(())
                            }
                            other => {
                                Err(format!("failing stream: want Error::Stream, got {other:?}"))
                            }
                        }
                    }
                    End::Cancel(after) => {
                        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                        let head = futures::stream::iter(parts.into_iter().take(after).map(Ok));
                        let mut tx = Some(tx);
                        let tail = futures::stream::poll_fn(move |_| {
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(());
                            }
                            std::task::Poll::Pending
                        });
                        let s = head.chain(tail).boxed();
                        let fut = self.cache().set_stream(key, s, opts);
                        tokio::select! {
                            r = fut => match r {
                                // Refused for its size before the cut: fine.
                                Err(Error::TooLarge { .. })
                                    if self.inst.exact_limits.and_then(|l| l.max_bytes).is_some() => {}
                                r => return Err(format!("a stream that never ends completed: {r:?}")),
                            },
                            _ = rx => {}
                        }
                        // Dropped part way: as if never called.
                        Ok(())
                    }
                }
            }
            Op::Get { key } => {
                let key = &self.keys[*key];
                let got = named(self.cache().get(key).await, "get")?;
                let want = self.model.live(key, now);
                match (&got, &want) {
                    (Some(g), Some(w)) => {
                        check!(
                            same_value(g, &w.value),
                            "get returned another value ({} vs {} bytes)",
                            g.to_bytes().len(),
                            w.value.to_bytes().len()
                        );
                        self.model.hits += 1;
                        self.model.touch(key);
                    }
                    (None, None) => self.model.misses += 1,
                    _ => {
                        return Err(format!(
                            "get: {} but the model has {}",
                            if got.is_some() { "found" } else { "missing" },
                            if want.is_some() { "it" } else { "nothing" }
                        ));
                    }
                }
                Ok(())
            }
            Op::GetStream {
                key,
                chunk,
                drop_after,
            } => {
                let key = &self.keys[*key];
                let want = self.model.live(key, now);
                let chunk =
                    (*chunk).max(want.as_ref().map_or(0, |w| w.value.to_bytes().len() / 256));
                let got = named(self.cache().get_stream(key, chunk).await, "get_stream")?;
                match (got, want) {
                    (Some(s), Some(w)) => {
                        self.model.hits += 1;
                        self.model.touch(key);
                        let wb = w.value.to_bytes();
                        check_meta(s.meta(), key, &w, wb.len() as u64, self.inst.exact_sizes)?;
                        let mut s = s.into_parts().1;
                        let mut all = Vec::new();
                        let mut n = 0;
                        while let Some(c) = s.next().await {
                            let c = c.map_err(|e| format!("stream chunk {n}: {e}"))?;
                            n += 1;
                            all.extend_from_slice(&c);
                            if drop_after.is_some_and(|d| n > d) {
                                check!(wb.starts_with(&all), "stream prefix differs");
                                return Ok(());
                            }
                            check!(
                                c.len() == chunk
                                    || (all.len() == wb.len() && !c.is_empty() && c.len() < chunk),
                                "chunk {n} has {} bytes; chunk size {chunk}",
                                c.len()
                            );
                        }
                        check!(
                            all == wb[..],
                            "streamed {} bytes differ from the {} expected",
                            all.len(),
                            wb.len()
                        );
                        Ok(())
                    }
                    (None, None) => {
                        self.model.misses += 1;
                        Ok(())
                    }
                    (g, w) => Err(format!(
                        "get_stream: found={} model={}",
                        g.is_some(),
                        w.is_some()
                    )),
                }
            }
            Op::Head { key } => {
                let key = &self.keys[*key];
                let got = named(self.cache().head(key).await, "head")?;
                let want = self.model.live(key, now);
                match (got, want) {
                    (Some(m), Some(w)) => check_meta(
                        &m,
                        key,
                        &w,
                        w.value.to_bytes().len() as u64,
                        self.inst.exact_sizes,
                    ),
                    (None, None) => Ok(()),
                    (g, w) => Err(format!("head: found={} model={}", g.is_some(), w.is_some())),
                }
            }
            Op::Delete { key } => {
                let key = &self.keys[*key];
                let got = named(self.cache().delete(key).await, "delete")?;
                let want = self.model.map.remove(key.as_str()).is_some();
                check!(got == want, "delete returned {got}, the model says {want}");
                Ok(())
            }
            Op::Clear => {
                let got = named(self.cache().clear().await, "clear")?;
                let want = self.model.map.len() as u64;
                self.model.map.clear();
                check!(got == want, "clear removed {got}, the model had {want}");
                Ok(())
            }
            Op::PurgeExpired => {
                let got = named(self.cache().purge_expired().await, "purge")?;
                let before = self.model.map.len();
                self.model.map.retain(|_, e| !Model::expired(e, now));
                let want = (before - self.model.map.len()) as u64;
                check!(
                    got == want,
                    "purge_expired removed {got}, the model expired {want}"
                );
                Ok(())
            }
            Op::Advance { ms } => {
                self.clock.advance(Duration::from_millis(*ms));
                Ok(())
            }
            Op::List { prefix } => self.check_list(PREFIXES[*prefix]).await,
        }
    }

    async fn check_list(&self, prefix: Option<&str>) -> Result<(), String> {
        let now = self.clock.now();
        let p = prefix.unwrap_or("");
        let live = sorted_keys(self.cache().list(prefix), "list").await?;
        let want: Vec<String> = self
            .model
            .map
            .iter()
            .filter(|(k, e)| k.starts_with(p) && !Model::expired(e, now))
            .map(|(k, _)| k.clone())
            .collect();
        check!(
            live == want,
            "list({prefix:?}) = {live:?}, the model has {want:?}"
        );
        if !self.model.map.values().any(|e| Model::expired(e, now)) {
            // list_all would list the same (and cost a DiskCache another scan).
            return Ok(());
        }
        let all = sorted_keys(self.cache().list_all(prefix), "list_all").await?;
        let want: Vec<String> = self
            .model
            .map
            .keys()
            .filter(|k| k.starts_with(p))
            .cloned()
            .collect();
        check!(
            all == want,
            "list_all({prefix:?}) = {all:?}, the model has {want:?}"
        );
        Ok(())
    }

    async fn check_stats(&self) -> Result<(), String> {
        let s = named(self.cache().stats().await, "stats")?;
        let (n, b) = self.model.counts();
        check!(
            (s.entries, s.bytes) == (n, b),
            "stats say {} entries / {} bytes, the model {n} / {b}",
            s.entries,
            s.bytes
        );
        check!(
            (s.hits, s.misses) == (self.model.hits, self.model.misses),
            "stats count {} hits / {} misses, the model {} / {}",
            s.hits,
            s.misses,
            self.model.hits,
            self.model.misses
        );
        if self.inst.exact_limits.is_some() {
            check!(
                s.evictions == self.model.evictions,
                "stats count {} evictions, the model {}",
                s.evictions,
                self.model.evictions
            );
        }
        Ok(())
    }

    async fn check_end(&self) -> Result<(), String> {
        if self.inst.disk_root.is_none() {
            // (DiskCache: the scan below checks the files; a listing costs
            // another scan of 256 directories, done by the List operations.)
            self.check_list(None).await?;
        }
        self.check_stats().await?;
        if let Some(root) = &self.inst.disk_root {
            // Writers of cancelled streams finish on their own threads: wait
            // for them (a minute at most; the longest wait is reported).
            let t = Instant::now();
            while !layout::files_in(&layout::tmp_dir(root)).is_empty()
                && t.elapsed() < Duration::from_secs(60)
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            CLEANUP_WAIT_US.fetch_max(
                t.elapsed().as_micros() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            let tmp = layout::files_in(&layout::tmp_dir(root));
            check!(
                tmp.is_empty(),
                "temp files left a minute after the case ended: {tmp:?}"
            );
            let locks = layout::files_in(&layout::locks_dir(root));
            check!(locks.is_empty(), "lock files left: {locks:?}");
            let (n, b) = layout::disk_usage(root);
            check!(
                (n, b) == self.model.counts(),
                "disk holds {n} entries / {b} bytes, the model {:?}",
                self.model.counts()
            );
            if let Some(l) = self.inst.exact_limits {
                check!(
                    l.max_entries.is_none_or(|m| n <= m) && l.max_bytes.is_none_or(|m| b <= m),
                    "limits {l:?} exceeded: {n} entries / {b} bytes"
                );
            }
        }
        Ok(())
    }
}

async fn run_case(
    backend: Backend,
    setup: &Setup,
    ops: &[Op],
    pool: &mut Pool,
) -> Result<(), String> {
    let (inst, clock) = instance(backend, setup, pool).await?;
    let keys = keys();
    let base = inst
        .cache
        .stats()
        .await
        .map_err(|e| format!("stats: {e}"))?;
    let mut run = Run {
        inst: &inst,
        clock: &clock,
        keys: &keys,
        model: Model {
            hits: base.hits,
            misses: base.misses,
            evictions: base.evictions,
            keeps_expired: backend != Backend::Disk,
            ..Model::default()
        },
        layout: match backend {
            // A TieredCache's metadata and stats come from its ObjectCache.
            Backend::ObjectMemory | Backend::ObjectLocal | Backend::Tiered => {
                Layout::DEFAULT_BLOCKS
            }
            Backend::Disk => DISK_LAYOUT,
        },
    };
    for (i, op) in ops.iter().enumerate() {
        run.step(op)
            .await
            .map_err(|e| format!("op #{i} {op:?}: {e}"))?;
        if backend != Backend::ObjectLocal || i % 4 == 3 {
            run.check_stats()
                .await
                .map_err(|e| format!("after op #{i} {op:?}: {e}"))?;
        }
    }
    run.check_end()
        .await
        .map_err(|e| format!("at the end: {e}"))
}

fn run_model(name: &str, backend: Backend, limits: LimitsG, max_ops: usize) {
    let cases = iterations("ETL_CACHE_MODEL_CASES", 10_000, 100_000) as u32;
    let seed = seed();
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 100_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let strategy = (
        setup_strategy(limits),
        proptest::collection::vec(
            op_strategy(keys().len()),
            1..iterations("ETL_CACHE_MODEL_OPS", max_ops as u64, max_ops as u64) as usize,
        ),
    );
    let rt = etl_cache_reliability::runtime();
    let started = Instant::now();
    let ops_run = std::sync::atomic::AtomicU64::new(0);
    let pool = std::sync::Mutex::new(Pool::default());
    let result = runner.run(&strategy, |(setup, ops)| {
        ops_run.fetch_add(ops.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let mut pool = pool.lock().unwrap_or_else(|p| p.into_inner());
        rt.block_on(run_case(backend, &setup, &ops, &mut pool))
            .map_err(TestCaseError::fail)
    });
    let handles = pool.lock().map(|p| p.disks.len()).unwrap_or(0);
    match result {
        Ok(()) => report(
            "model",
            &format!(
                "{name}: seed={seed} cases={cases} ops={} disk_handles={handles}{} took={:.1}s",
                ops_run.into_inner(),
                if backend == Backend::Disk {
                    let us = CLEANUP_WAIT_US.load(std::sync::atomic::Ordering::Relaxed);
                    format!(
                        " longest_wait_for_cancelled_writers={:?}",
                        Duration::from_micros(us)
                    )
                } else if backend == Backend::Tiered {
                    let load = |c: &std::sync::atomic::AtomicU64| {
                        c.load(std::sync::atomic::Ordering::Relaxed)
                    };
                    format!(
                        " sets_refused_by_the_middle_tier={} sets_it_took={}",
                        load(&MIDDLE_REFUSED),
                        load(&MIDDLE_HELD)
                    )
                } else {
                    String::new()
                },
                started.elapsed().as_secs_f64()
            ),
        ),
        Err(TestError::Fail(reason, (setup, ops))) => panic!(
            "{name}: minimal failing case (seed {seed}):\nsetup: {setup:?}\nops: {ops:#?}\nfailure: {reason}"
        ),
        Err(TestError::Abort(reason)) => panic!("{name}: aborted (seed {seed}): {reason}"),
    }
}

#[test]
fn model_disk_cache() {
    run_model("DiskCache", Backend::Disk, LimitsG::Any, 24);
}

#[test]
fn model_object_cache_in_memory() {
    run_model(
        "ObjectCache(InMemory)",
        Backend::ObjectMemory,
        LimitsG::None,
        24,
    );
}

#[test]
fn model_object_cache_local_file_system() {
    run_model(
        "ObjectCache(LocalFileSystem)",
        Backend::ObjectLocal,
        LimitsG::None,
        20,
    );
}

#[test]
fn model_tiered_cache() {
    run_model(
        "TieredCache(memory, DiskCache, ObjectCache)",
        Backend::Tiered,
        LimitsG::Any,
        20,
    );
}
