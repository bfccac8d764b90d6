//! The performance suite: etl-cache beside cacache (its async and its sync
//! API) and raw baselines, on the same bytes, in one run.
//!
//! ```sh
//! cargo bench -p etl-cache-bench --bench suite                       # every section, ~3 minutes
//! cargo bench -p etl-cache-bench --bench suite -- small tiered       # some sections
//! ETL_BENCH_LONG=1 cargo bench -p etl-cache-bench --bench suite      # + 10 GiB stream, 1M-entry cap
//! cargo bench -p etl-cache-bench --bench suite --features store -- store   # CachedStore
//! cargo bench -p etl-cache-bench --bench suite --features arrow -- arrow   # Arrow batches
//! ```
//!
//! Sections: `small` (1 KB set / get hit / get miss, p50 and p99), `stream`
//! (512 MiB `set_stream` / `get_stream`: MB/s and peak RSS, each phase in a
//! child process), `xml` (a 50 MB XML payload with gzip and zstd: time and
//! size on disk), `capped` (set cost at steady state with `max_entries` at
//! 1k, 10k, 100k; 1M in long mode), `multiproc` (4 processes, 70% get / 30%
//! set on 200 shared keys: ops/s and corrupt reads), `tiered` (a memory-tier
//! hit), `object` (ObjectCache against raw object_store, feature `object`;
//! S3 rows with `aws`), `store` (CachedStore, feature `store`: DataFusion
//! SQL over Parquet on a throttled in-memory store, bare and through a cold
//! and a warm CachedStore, with time, requests and bytes for each; a
//! whole-object byte scan; warm 64 KiB range reads on a DiskCache and a
//! TieredCache beside a DiskCache get; peak RSS), `io` (CacheWriter and
//! CacheReader against the stream calls), `steps` (a step hit against a
//! plain get, 1 KB and 1 MB; explain at 100,000 entries), `arrow` (feature
//! `arrow`: 1 GiB of record batches written and read through a DiskCache
//! beside arrow-ipc's file writer and reader, peak RSS of each, and a cached
//! DataFusion result beside its query), `spares` (1 KB sets with file
//! recycling on and off, on a tmpfs, a journaled ext4 image and the bench
//! disk; mounts need root), `stream64` (set_stream and get_stream of
//! 64 KiB chunks made as the stream goes, the reader hashing each, beside a
//! plain file). Ratios are always between
//! numbers measured in the same run.
//!
//! Environment: `ETL_BENCH_SECTIONS` (comma-separated, instead of arguments),
//! `ETL_BENCH_LONG=1`, `ETL_BENCH_DIR` (where caches live; default a temp dir
//! in the target directory, so it is on the same filesystem as a build),
//! `ETL_BENCH_OUT` (the JSON report; default `<target>/bench-suite.json`),
//! `ETL_BENCH_STREAM_MB` (default 512), `ETL_BENCH_STREAM_REPS` (default 5),
//! `ETL_BENCH_MP_SECS` (default 4); for `store`: `ETL_BENCH_STORE_MB` (the
//! Parquet dataset, default 1024), `ETL_BENCH_STORE_FILES` (default 8),
//! `ETL_BENCH_STORE_LATENCY_MS` (the inner store's wait per GET or HEAD,
//! default 50), `ETL_BENCH_STORE_RANGES` (range reads timed, default 2000),
//! `ETL_BENCH_STORE_S3_MB` (the dataset of the runs on the local S3 server,
//! with feature `aws` as well; default 1024);
//! for `arrow`: `ETL_BENCH_ARROW_MB` (default 1024), `ETL_BENCH_ARROW_REPS`
//! (default 3).
//!
//! Peak RSS is measured by re-executing this binary with
//! `ETL_BENCH_CHILD=...` for one phase; the child prints its `VmHWM` from
//! `/proc/self/status`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use etl_cache::{Cache, Compression, DiskCache, SetOptions, TieredCache, Value};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value as Json, json};

// ---------------------------------------------------------------- helpers

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn long_mode() -> bool {
    matches!(
        std::env::var("ETL_BENCH_LONG").as_deref(),
        Ok("1" | "true" | "yes")
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A new directory in `base` with our `DiskCache` open in its `ours`
/// subdirectory; a section puts its peers' stores beside it.
fn ours_in(rt: &tokio::runtime::Runtime, base: &Path) -> (tempfile::TempDir, DiskCache) {
    let dir = tempfile::tempdir_in(base).unwrap();
    let cache = rt
        .block_on(DiskCache::open(dir.path().join("ours")))
        .unwrap();
    (dir, cache)
}

/// The target directory: the bench binary lives in `<target>/release/deps/`.
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent()?.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[derive(Debug, Clone, Copy)]
struct Lat {
    p50: f64,
    p99: f64,
    mean: f64,
    max: f64,
    n: usize,
}

/// Prints a table of the p50 and p99 of each row: a header naming the
/// first column `first`, then each row's name in a column `name_width`
/// wide and its figures `width` wide with `decimals` decimals.
fn print_p50_p99(
    first: &str,
    rows: &[(&str, &Lat)],
    name_width: usize,
    width: usize,
    decimals: usize,
) {
    println!("{first:<name_width$} {:>width$} {:>width$}", "p50", "p99");
    for (name, l) in rows {
        println!(
            "{name:<name_width$} {:>width$.decimals$} {:>width$.decimals$}",
            l.p50, l.p99
        );
    }
}

/// Reads `r` to its end through a 1 MiB buffer: the number of bytes read.
fn read_counting(mut r: impl Read) -> usize {
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    loop {
        match r.read(&mut buf).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

fn lat(v: &mut [Duration]) -> Lat {
    assert!(!v.is_empty());
    v.sort_unstable();
    let at = |p: f64| us(v[((v.len() - 1) as f64 * p).round() as usize]);
    let total: Duration = v.iter().sum();
    Lat {
        p50: at(0.5),
        p99: at(0.99),
        mean: us(total) / v.len() as f64,
        max: us(v[v.len() - 1]),
        n: v.len(),
    }
}

fn lat_json(l: &Lat) -> Json {
    json!({"p50_us": r3(l.p50), "p99_us": r3(l.p99), "mean_us": r3(l.mean), "max_us": r3(l.max), "n": l.n})
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n.is_multiple_of(2) {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    } else {
        v[n / 2]
    }
}

/// Peak resident memory of this process, from `/proc/self/status`.
fn vmhwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// FNV-1a, to make values self-checking without another dependency.
fn fnv(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// 1 MiB of incompressible bytes, different for each `i`.
fn chunk(i: usize) -> Bytes {
    let mut r = Rng((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut v = Vec::with_capacity(1 << 20);
    while v.len() < 1 << 20 {
        v.extend_from_slice(&r.next().to_le_bytes());
    }
    Bytes::from(v)
}

/// A 1 KiB value: the key index and a version, then filler.
fn value_1k(i: usize, version: u64) -> Bytes {
    let mut v = Vec::with_capacity(1024);
    v.extend_from_slice(&(i as u64).to_le_bytes());
    v.extend_from_slice(&version.to_le_bytes());
    v.resize(1024, b'v');
    Bytes::from(v)
}

/// Sets `{prefix}{i}` to `value_1k(i, 0)` for each `i` of `range`, one
/// after the other.
async fn fill_1k(cache: &(impl Cache + ?Sized), prefix: &str, range: std::ops::Range<usize>) {
    for i in range {
        cache
            .set(
                &format!("{prefix}{i}"),
                Value::Bytes(value_1k(i, 0)),
                SetOptions::new(),
            )
            .await
            .unwrap();
    }
}

/// The bench's report: rows per section, targets, machine.
#[derive(Default)]
struct Report {
    sections: Vec<(String, Json)>,
    targets: Vec<Target>,
}

struct Target {
    name: String,
    value: f64,
    unit: &'static str,
    limit: f64,
    /// True when the value must be at most the limit, false when at least.
    at_most: bool,
    note: String,
}

impl Target {
    fn met(&self) -> bool {
        if self.at_most {
            self.value <= self.limit
        } else {
            self.value >= self.limit
        }
    }
}

impl Report {
    fn target(&mut self, name: &str, value: f64, unit: &'static str, limit: f64, at_most: bool) {
        self.targets.push(Target {
            name: name.into(),
            value,
            unit,
            limit,
            at_most,
            note: String::new(),
        });
    }

    fn note_last(&mut self, note: impl Into<String>) {
        if let Some(t) = self.targets.last_mut() {
            t.note = note.into();
        }
    }
}

fn machine() -> Json {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({
        "cpu": model,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "memory_gib": r3(mem_kb as f64 / (1 << 20) as f64),
        "kernel": kernel.trim(),
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The filesystem holding `path`, from `/proc/mounts` (longest mount prefix).
fn fs_type(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, mnt, ty) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mnt).then(|| (mnt.len(), ty.to_owned()))
        })
        .max()
        .map(|(_, t)| t)
        .unwrap_or_default()
}

// ---------------------------------------------------------------- child processes

const RESULT_TAG: &str = "ETL_BENCH_RESULT ";

fn run_child(mode: &str, envs: &[(&str, String)]) -> Json {
    let exe = std::env::current_exe().expect("the bench binary");
    let mut cmd = Command::new(exe);
    cmd.env("ETL_BENCH_CHILD", mode);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run a child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().find_map(|l| l.strip_prefix(RESULT_TAG)) {
        Some(j) if out.status.success() => serde_json::from_str(j).expect("the child's JSON"),
        _ => panic!(
            "child {mode} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn child_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set for children"))
}

fn child_main(mode: &str) {
    let result = match mode {
        "stream" => child_stream(),
        "mp" => child_mp(),
        #[cfg(feature = "arrow")]
        "arrow" => arrow::child(),
        other => panic!("unknown child mode {other}"),
    };
    println!("{RESULT_TAG}{result}");
}

// ---------------------------------------------------------------- small ops

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Imp {
    Ours,
    CacacheAsync,
    CacacheSync,
    RawStd,
    RawTokio,
}

impl Imp {
    fn slug(self) -> &'static str {
        match self {
            Imp::Ours => "ours",
            Imp::CacacheAsync => "cacache-async",
            Imp::CacacheSync => "cacache-sync",
            Imp::RawStd => "raw-std",
            Imp::RawTokio => "raw-tokio",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Imp::Ours => "etl-cache DiskCache",
            Imp::CacacheAsync => "cacache async (tokio)",
            Imp::CacacheSync => "cacache sync",
            Imp::RawStd => "raw std::fs",
            Imp::RawTokio => "raw tokio::fs",
        }
    }
}

struct Small {
    ours: DiskCache,
    cacache: PathBuf,
    raw: PathBuf,
}

impl Small {
    async fn set(&self, imp: Imp, key: &str, v: Bytes) {
        match imp {
            Imp::Ours => {
                self.ours
                    .set(key, Value::Bytes(v), SetOptions::new())
                    .await
                    .unwrap();
            }
            Imp::CacacheAsync => {
                cacache::write(&self.cacache, key, &v).await.unwrap();
            }
            Imp::CacacheSync => {
                cacache::write_sync(&self.cacache, key, &v).unwrap();
            }
            Imp::RawStd => std::fs::write(self.raw.join(key), &v).unwrap(),
            Imp::RawTokio => tokio::fs::write(self.raw.join(key), &v).await.unwrap(),
        }
    }

    async fn get(&self, imp: Imp, key: &str) -> Option<usize> {
        match imp {
            Imp::Ours => self
                .ours
                .get(key)
                .await
                .unwrap()
                .map(|v| v.into_bytes().len()),
            Imp::CacacheAsync => match cacache::read(&self.cacache, key).await {
                Ok(v) => Some(v.len()),
                Err(cacache::Error::EntryNotFound(..)) => None,
                Err(e) => panic!("{e}"),
            },
            Imp::CacacheSync => match cacache::read_sync(&self.cacache, key) {
                Ok(v) => Some(v.len()),
                Err(cacache::Error::EntryNotFound(..)) => None,
                Err(e) => panic!("{e}"),
            },
            Imp::RawStd => std::fs::read(self.raw.join(key)).ok().map(|v| v.len()),
            Imp::RawTokio => tokio::fs::read(self.raw.join(key))
                .await
                .ok()
                .map(|v| v.len()),
        }
    }
}

fn section_small(base: &Path, report: &mut Report) {
    const KEYS: usize = 1000;
    let rounds = env_usize("ETL_BENCH_SMALL_ROUNDS", 25);
    let batch = 200;
    // ETL_BENCH_SMALL_ONLY=ours (or cacache-sync, ...) runs one implementation,
    // for profiling; ratios then are not computed.
    let only = std::env::var("ETL_BENCH_SMALL_ONLY").ok();
    let imps: Vec<Imp> = [
        Imp::Ours,
        Imp::CacacheSync,
        Imp::CacacheAsync,
        Imp::RawStd,
        Imp::RawTokio,
    ]
    .into_iter()
    .filter(|i| only.as_deref().is_none_or(|o| o == i.slug()))
    .collect();
    let rt = runtime();
    let (dir, ours) = ours_in(&rt, base);
    let raw = dir.path().join("raw");
    std::fs::create_dir_all(&raw).unwrap();
    let small = Arc::new(Small {
        ours,
        cacache: dir.path().join("cacache"),
        raw,
    });
    // Every op runs inside a task on a runtime worker, as in a service.
    let times = rt
        .block_on(rt.spawn({
            let small = small.clone();
            let imps = imps.clone();
            async move {
                let mut times: HashMap<(usize, &'static str), Vec<Duration>> = HashMap::new();
                for &imp in &imps {
                    for i in 0..KEYS {
                        small.set(imp, &format!("k{i}"), value_1k(i, 0)).await;
                    }
                }
                let mut version = 1u64;
                for round in 0..rounds {
                    // Take turns, so a burst of load on the machine hits every
                    // implementation alike.
                    for (n, &imp) in imps.iter().enumerate() {
                        for j in 0..batch {
                            let i = (round * batch + j) % KEYS;
                            version += 1;
                            let v = value_1k(i, version);
                            let key = format!("k{i}");
                            let t = Instant::now();
                            small.set(imp, &key, v).await;
                            times.entry((n, "set")).or_default().push(t.elapsed());

                            let key = format!("k{}", (i + KEYS / 2) % KEYS);
                            let t = Instant::now();
                            let got = small.get(imp, &key).await;
                            times.entry((n, "hit")).or_default().push(t.elapsed());
                            assert_eq!(got, Some(1024), "{imp:?} hit");

                            let key = format!("missing-{round}-{j}");
                            let t = Instant::now();
                            let got = small.get(imp, &key).await;
                            times.entry((n, "miss")).or_default().push(t.elapsed());
                            assert_eq!(got, None, "{imp:?} miss");
                        }
                    }
                }
                times
            }
        }))
        .unwrap();
    let mut times = times;
    let mut results: HashMap<(usize, &str), Lat> = HashMap::new();
    for (k, v) in times.iter_mut() {
        results.insert(*k, lat(v));
    }
    println!(
        "\n== 1 KB operations: p50 / p99 in µs ({} ops each) ==",
        rounds * batch
    );
    println!(
        "{:<24} {:>17} {:>17} {:>17}",
        "implementation", "set", "get hit", "get miss"
    );
    let mut rows = Vec::new();
    for (n, imp) in imps.iter().enumerate() {
        let cell = |op| {
            let l = results[&(n, op)];
            format!("{:>7.1} / {:>7.1}", l.p50, l.p99)
        };
        println!(
            "{:<24} {:>17} {:>17} {:>17}",
            imp.name(),
            cell("set"),
            cell("hit"),
            cell("miss")
        );
        rows.push(json!({
            "impl": imp.name(),
            "set": lat_json(&results[&(n, "set")]),
            "get_hit": lat_json(&results[&(n, "hit")]),
            "get_miss": lat_json(&results[&(n, "miss")]),
        }));
    }
    if only.is_some() {
        return;
    }
    let ours = |op| results[&(0, op)].p50;
    let peer = |op| results[&(1, op)].p50;
    println!(
        "ratios to cacache sync (p50): set {:.2}x, get hit {:.2}x, get miss {:.2}x",
        ours("set") / peer("set"),
        ours("hit") / peer("hit"),
        ours("miss") / peer("miss")
    );
    report.target(
        "1 KB get hit p50 vs cacache sync",
        ours("hit") / peer("hit"),
        "x",
        0.5,
        true,
    );
    report.target(
        "1 KB get miss p50 vs cacache sync",
        ours("miss") / peer("miss"),
        "x",
        1.0,
        true,
    );
    report.target(
        "1 KB set p50 vs cacache sync",
        ours("set") / peer("set"),
        "x",
        0.5,
        true,
    );
    report.sections.push((
        "small".into(),
        json!({"value_bytes": 1024, "keys": KEYS, "ops_per_impl": rounds * batch, "rows": rows}),
    ));
    drop(small);
    drop(rt);
}

// ---------------------------------------------------------------- streams

const STREAM_KEY: &str = "bench/stream";
/// Distinct 1 MiB chunks the stream cycles through (kept small: it counts in RSS).
const STREAM_CHUNKS: usize = 4;

/// Where the raw baseline writes its stream: a fresh directory two levels
/// down, as deep as DiskCache's temp files. On ext4 the directory decides
/// which block group the data goes to, and a group holding blocks freed a
/// moment ago (the previous phase's files) is several times slower to write
/// into, so a file placed differently from ours would measure the disk's
/// allocator rather than the code.
fn raw_stream_path(dir: &Path) -> PathBuf {
    let d = dir.join("raw-root").join("tmp");
    std::fs::create_dir_all(&d).unwrap();
    d.join("raw")
}

fn child_stream() -> Json {
    let imp = child_env("ETL_BENCH_CHILD_IMPL");
    let op = child_env("ETL_BENCH_CHILD_OP");
    let dir = PathBuf::from(child_env("ETL_BENCH_CHILD_DIR"));
    let mb: usize = child_env("ETL_BENCH_CHILD_MB").parse().unwrap();
    let chunks: Vec<Bytes> = (0..STREAM_CHUNKS).map(chunk).collect();
    let total = mb << 20;
    let rt = runtime();
    let secs = match (imp.as_str(), op.as_str()) {
        ("ours", "set") => rt.block_on(async {
            let cache = DiskCache::open(&dir).await.unwrap();
            let t = Instant::now();
            let s = futures::stream::iter(
                (0..mb).map(move |i| Ok::<_, std::io::Error>(chunks[i % STREAM_CHUNKS].clone())),
            )
            .boxed();
            cache
                .set_stream(STREAM_KEY, s, SetOptions::new())
                .await
                .unwrap();
            t.elapsed()
        }),
        ("ours", "get") => rt.block_on(async {
            let cache = DiskCache::open(&dir).await.unwrap();
            let t = Instant::now();
            let mut s = cache
                .get_stream(STREAM_KEY, 1 << 20)
                .await
                .unwrap()
                .unwrap();
            let mut n = 0;
            while let Some(c) = s.try_next().await.unwrap() {
                n += c.len();
            }
            assert_eq!(n, total);
            t.elapsed()
        }),
        ("raw", "set") => {
            let t = Instant::now();
            let mut f = std::fs::File::create(raw_stream_path(&dir)).unwrap();
            for i in 0..mb {
                f.write_all(&chunks[i % STREAM_CHUNKS]).unwrap();
            }
            drop(f);
            t.elapsed()
        }
        ("raw", "get") => {
            let t = Instant::now();
            let n = read_counting(std::fs::File::open(raw_stream_path(&dir)).unwrap());
            assert_eq!(n, total);
            t.elapsed()
        }
        ("cacache-sync", "set") => {
            let t = Instant::now();
            let mut w = cacache::SyncWriter::create(&dir, STREAM_KEY).unwrap();
            for i in 0..mb {
                w.write_all(&chunks[i % STREAM_CHUNKS]).unwrap();
            }
            w.commit().unwrap();
            t.elapsed()
        }
        ("cacache-sync", "get") => {
            let t = Instant::now();
            let mut r = cacache::SyncReader::open(&dir, STREAM_KEY).unwrap();
            let n = read_counting(&mut r);
            r.check().unwrap();
            assert_eq!(n, total);
            t.elapsed()
        }
        ("cacache-async", "set") => rt.block_on(async {
            use tokio::io::AsyncWriteExt;
            let t = Instant::now();
            let mut w = cacache::Writer::create(&dir, STREAM_KEY).await.unwrap();
            for i in 0..mb {
                w.write_all(&chunks[i % STREAM_CHUNKS]).await.unwrap();
            }
            w.commit().await.unwrap();
            t.elapsed()
        }),
        ("cacache-async", "get") => rt.block_on(async {
            use tokio::io::AsyncReadExt;
            let t = Instant::now();
            let mut r = cacache::Reader::open(&dir, STREAM_KEY).await.unwrap();
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0;
            loop {
                match r.read(&mut buf).await.unwrap() {
                    0 => break,
                    k => n += k,
                }
            }
            r.check().unwrap();
            assert_eq!(n, total);
            t.elapsed()
        }),
        other => panic!("unknown stream child {other:?}"),
    };
    json!({"secs": secs.as_secs_f64(), "vmhwm_kb": vmhwm_kb()})
}

/// The order of `0..n` for round `round`: the rows of a Williams design, in
/// which, over `n` rounds (`n` even), each implementation takes each place
/// once and follows each other one once. A seeded shuffle did neither: with
/// 4 implementations and 5 rounds it put ours first twice and the raw loop
/// never, and the first phase after another section is the slow one here.
fn balanced_order(n: usize, round: usize) -> Vec<usize> {
    // First row: 0, 1, n-1, 2, n-2, ...; row r adds r to each, modulo n.
    let first = (0..n).map(|k| {
        if k % 2 == 1 {
            k.div_ceil(2)
        } else {
            (n - k / 2) % n
        }
    });
    first.map(|v| (v + round) % n).collect()
}

fn stream_size(base: &Path, report: &mut Report, mb: usize, reps: usize, rss_target: bool) {
    let imps = ["ours", "raw", "cacache-sync", "cacache-async"];
    let names = [
        "etl-cache DiskCache",
        "raw std::fs file",
        "cacache sync",
        "cacache async (tokio)",
    ];
    // results[imp][op] = (MB/s per rep, peak RSS per rep)
    let mut mbs: Vec<[Vec<f64>; 2]> = imps.iter().map(|_| [vec![], vec![]]).collect();
    let mut rss: Vec<[u64; 2]> = imps.iter().map(|_| [0, 0]).collect();
    {
        // One unmeasured write of the same size first: on this VM the
        // first writer after another section (or of a size not written
        // before) faults in fresh guest memory for its page cache, which
        // says only who went first.
        let dir = tempfile::tempdir_in(base).unwrap();
        let _ = Command::new("sync").status();
        run_child(
            "stream",
            &[
                ("ETL_BENCH_CHILD_IMPL", "raw".to_owned()),
                ("ETL_BENCH_CHILD_OP", "set".to_owned()),
                ("ETL_BENCH_CHILD_DIR", dir.path().display().to_string()),
                ("ETL_BENCH_CHILD_MB", mb.to_string()),
            ],
        );
    }
    for rep in 0..reps {
        // A new order every round, and every phase starts with no dirty
        // pages left by the one before (`sync`), so that no phase pays for
        // the writeback of another. Not a fixed rotation: that gives each
        // implementation the same predecessor every time, and on this VM
        // what the phase before freed decides how fast the page cache
        // takes new pages.
        for n in balanced_order(imps.len(), rep) {
            let imp = &imps[n];
            let dir = tempfile::tempdir_in(base).unwrap();
            for (o, op) in ["set", "get"].iter().enumerate() {
                let _ = Command::new("sync").status();
                let r = run_child(
                    "stream",
                    &[
                        ("ETL_BENCH_CHILD_IMPL", (*imp).to_owned()),
                        ("ETL_BENCH_CHILD_OP", (*op).to_owned()),
                        ("ETL_BENCH_CHILD_DIR", dir.path().display().to_string()),
                        ("ETL_BENCH_CHILD_MB", mb.to_string()),
                    ],
                );
                let secs = r["secs"].as_f64().unwrap();
                mbs[n][o].push((mb << 20) as f64 / secs / 1e6);
                rss[n][o] = rss[n][o].max(r["vmhwm_kb"].as_u64().unwrap());
            }
        }
    }
    let size = if mb >= 1024 && mb.is_multiple_of(1024) {
        format!("{} GiB", mb / 1024)
    } else {
        format!("{mb} MiB")
    };
    println!("\n== {size} stream: MB/s (median of {reps}) and peak RSS ==");
    println!(
        "{:<24} {:>10} {:>10} {:>13} {:>13}",
        "implementation", "set MB/s", "get MB/s", "set peak RSS", "get peak RSS"
    );
    let mut rows = Vec::new();
    let mut med = Vec::new();
    for (n, name) in names.iter().enumerate() {
        let (s, g) = (median(mbs[n][0].clone()), median(mbs[n][1].clone()));
        med.push((s, g));
        println!(
            "{:<24} {:>10.0} {:>10.0} {:>10.1} MB {:>10.1} MB",
            name,
            s,
            g,
            rss[n][0] as f64 / 1024.0,
            rss[n][1] as f64 / 1024.0
        );
        rows.push(json!({
            "impl": name, "set_mb_s": r3(s), "get_mb_s": r3(g),
            "set_mb_s_runs": mbs[n][0], "get_mb_s_runs": mbs[n][1],
            "set_peak_rss_kb": rss[n][0], "get_peak_rss_kb": rss[n][1],
        }));
    }
    let (set_ratio, get_ratio) = (med[0].0 / med[1].0, med[0].1 / med[1].1);
    // The best run of each side: the one least slowed by the VM (see
    // `section_stream`), so the closest to what the code itself costs.
    let best = |n: usize, o: usize| mbs[n][o].iter().copied().fold(0.0, f64::max);
    let (set_best, get_best) = (best(0, 0) / best(1, 0), best(0, 1) / best(1, 1));
    println!(
        "ours / raw file: set {set_ratio:.2}x, get {get_ratio:.2}x (checksums on in ours, none in raw); \
         best run of each: set {set_best:.2}x, get {get_best:.2}x"
    );
    let best_note = |b: f64| format!("median of {reps}; best run of each {b:.2}x");
    report.target(
        &format!("{size} stream set vs raw file write"),
        set_ratio,
        "x",
        0.9,
        false,
    );
    report.note_last(best_note(set_best));
    report.target(
        &format!("{size} stream get vs raw file read"),
        get_ratio,
        "x",
        0.9,
        false,
    );
    report.note_last(best_note(get_best));
    let peak = rss[0][0].max(rss[0][1]) as f64 / 1024.0;
    if rss_target {
        report.target(
            &format!("{size} stream peak RSS (ours)"),
            peak,
            "MB",
            64.0,
            true,
        );
    }
    report.sections.push((
        format!("stream_{mb}mib"),
        json!({"mib": mb, "reps": reps, "rows": rows,
            "ratios": {"set_median": r3(set_ratio), "get_median": r3(get_ratio),
                       "set_best": r3(set_best), "get_best": r3(get_best)}}),
    ));
}

fn section_stream(base: &Path, report: &mut Report) {
    let mb = env_usize("ETL_BENCH_STREAM_MB", 512);
    let long = long_mode();
    // Five runs, not three: on this kind of VM a run of either side now and
    // then copies into the page cache several times slower (CPU-bound, in
    // the kernel), and the median of five rides over two such runs.
    let reps = env_usize("ETL_BENCH_STREAM_REPS", 5);
    stream_size(base, report, mb, reps, !long);
    if long {
        // Two rounds, after an unmeasured write of 10 GiB: the first writer
        // of 10 GiB after the 512 MiB rounds faults in fresh VM memory for
        // its page cache, so without it the first round would mostly say
        // which side went first.
        stream_size(base, report, 10 * 1024, 2, true);
    } else {
        report.note_last("at 512 MiB; the 10 GiB figure needs ETL_BENCH_LONG=1");
    }
}

// ---------------------------------------------------------------- XML payload

/// About `bytes` of XML shaped like the pipeline example's extract.
fn make_xml(bytes: usize) -> Bytes {
    let mut xml = String::with_capacity(bytes + 256);
    xml.push_str("<dataset source=\"api.example.com\">\n");
    let mut id = 0usize;
    while xml.len() < bytes {
        let account = id % 977;
        let cents = (id as i64 * 7919) % 100_000 - 50_000;
        xml.push_str(&format!(
            "  <txn id=\"{id}\" account=\"ACC-{account:04}\" amount_cents=\"{cents}\" currency=\"EUR\" booked=\"2026-11-{:02}\"/>\n",
            1 + id % 28
        ));
        id += 1;
    }
    xml.push_str("</dataset>\n");
    Bytes::from(xml)
}

fn section_xml(base: &Path, report: &mut Report) {
    let reps = 3;
    let xml = make_xml(50_000_000);
    let len = xml.len();
    let rt = runtime();
    let (dir, cache) = ours_in(&rt, base);
    let cacache_dir = dir.path().join("cacache");
    // name -> (set secs, get secs, size on disk)
    let mut rows: Vec<(String, Vec<f64>, Vec<f64>, u64)> = Vec::new();
    let mut push = |name: &str, set: f64, get: f64, size: u64| {
        if let Some(r) = rows.iter_mut().find(|r| r.0 == name) {
            r.1.push(set);
            r.2.push(get);
        } else {
            rows.push((name.to_owned(), vec![set], vec![get], size));
        }
    };
    for _ in 0..reps {
        for (name, c) in [
            ("etl-cache zstd-3", Compression::zstd()),
            ("etl-cache gzip-6", Compression::gzip()),
            ("etl-cache none", Compression::NONE),
        ] {
            let (set, get, size) = rt.block_on(async {
                let t = Instant::now();
                let meta = cache
                    .set(
                        "bench/xml",
                        Value::Bytes(xml.clone()),
                        SetOptions::new().compression(c),
                    )
                    .await
                    .unwrap();
                let set = t.elapsed().as_secs_f64();
                let t = Instant::now();
                let v = cache.get("bench/xml").await.unwrap().unwrap();
                let get = t.elapsed().as_secs_f64();
                assert_eq!(v.into_bytes().len(), len);
                (set, get, meta.size)
            });
            push(name, set, get, size);
        }
        // Raw baselines on the same bytes: compress (and write the file),
        // then read and decompress.
        {
            let p = dir.path().join("raw.zst");
            let t = Instant::now();
            let z = zstd::bulk::compress(&xml, 3).unwrap();
            let compress_only = t.elapsed().as_secs_f64();
            std::fs::write(&p, &z).unwrap();
            let set = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let back = zstd::stream::decode_all(&std::fs::read(&p).unwrap()[..]).unwrap();
            let get = t.elapsed().as_secs_f64();
            assert_eq!(back.len(), len);
            push(
                "raw zstd-3 compress only",
                compress_only,
                f64::NAN,
                z.len() as u64,
            );
            push("raw zstd-3 + file", set, get, z.len() as u64);
            // The codec etl-cache uses (streaming zstd, crc32c), in memory only.
            let t = Instant::now();
            let (stored, _) =
                etl_cache::backend::codec::Encoder::encode_all(Compression::zstd(), xml.clone())
                    .unwrap();
            push(
                "etl-cache codec only",
                t.elapsed().as_secs_f64(),
                f64::NAN,
                stored.len() as u64,
            );
        }
        {
            let p = dir.path().join("raw.gz");
            let t = Instant::now();
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            e.write_all(&xml).unwrap();
            let z = e.finish().unwrap();
            std::fs::write(&p, &z).unwrap();
            let set = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let mut back = Vec::with_capacity(len);
            flate2::read::GzDecoder::new(&std::fs::read(&p).unwrap()[..])
                .read_to_end(&mut back)
                .unwrap();
            let get = t.elapsed().as_secs_f64();
            assert_eq!(back.len(), len);
            push("raw gzip-6 + file", set, get, z.len() as u64);
        }
        {
            let p = dir.path().join("raw.xml");
            let t = Instant::now();
            std::fs::write(&p, &xml).unwrap();
            let set = t.elapsed().as_secs_f64();
            let t = Instant::now();
            assert_eq!(std::fs::read(&p).unwrap().len(), len);
            let get = t.elapsed().as_secs_f64();
            push("raw file, uncompressed", set, get, len as u64);
        }
        {
            let t = Instant::now();
            cacache::write_sync(&cacache_dir, "bench/xml", &xml).unwrap();
            let set = t.elapsed().as_secs_f64();
            let t = Instant::now();
            assert_eq!(
                cacache::read_sync(&cacache_dir, "bench/xml").unwrap().len(),
                len
            );
            let get = t.elapsed().as_secs_f64();
            push("cacache sync (no codec)", set, get, len as u64);
        }
    }
    println!(
        "\n== {:.1} MB XML payload: seconds (median of {reps}) and size on disk ==",
        len as f64 / 1e6
    );
    println!(
        "{:<26} {:>9} {:>9} {:>12} {:>7}",
        "implementation", "set s", "get s", "on disk MB", "ratio"
    );
    let mut out = Vec::new();
    let mut med: HashMap<String, (f64, f64)> = HashMap::new();
    for (name, set, get, size) in &rows {
        let (s, g) = (median(set.clone()), median(get.clone()));
        med.insert(name.clone(), (s, g));
        println!(
            "{:<26} {:>9.3} {:>9} {:>12.2} {:>6.1}x",
            name,
            s,
            if g.is_nan() {
                "-".into()
            } else {
                format!("{g:.3}")
            },
            *size as f64 / 1e6,
            len as f64 / *size as f64
        );
        out.push(json!({"impl": name, "set_s": r3(s), "get_s": if g.is_nan() { Json::Null } else { json!(r3(g)) },
            "set_s_runs": set, "size_on_disk": size}));
    }
    let ratio = med["etl-cache zstd-3"].0 / med["raw zstd-3 compress only"].0;
    println!(
        "etl-cache zstd set / raw zstd-3 compression: {ratio:.2}x; gzip set / raw gzip + file: {:.2}x",
        med["etl-cache gzip-6"].0 / med["raw gzip-6 + file"].0
    );
    report.target(
        "50 MB XML zstd set vs raw zstd-3 compression",
        ratio,
        "x",
        1.5,
        true,
    );
    report.sections.push((
        "xml".into(),
        json!({"bytes": len, "reps": reps, "rows": out}),
    ));
}

// ---------------------------------------------------------------- capped sets

fn section_capped(base: &Path, report: &mut Report) {
    let mut sizes = vec![1_000u64, 10_000, 100_000];
    if long_mode() {
        sizes.push(1_000_000);
    }
    let rt = runtime();
    let dirs: Vec<_> = sizes
        .iter()
        .map(|_| tempfile::tempdir_in(base).unwrap())
        .collect();
    let results: Vec<(u64, Lat, f64)> = rt.block_on(async {
        let mut caches = Vec::new();
        let mut fills = Vec::new();
        for (&n, dir) in sizes.iter().zip(&dirs) {
            let cache = DiskCache::builder()
                .root(dir.path())
                .max_entries(n)
                .build()
                .await
                .unwrap();
            let t = Instant::now();
            // Fill with two tasks (the machine has two cores).
            let half = n / 2;
            let tasks: Vec<_> = [(0, half), (half, n)]
                .into_iter()
                .map(|(a, b)| {
                    let cache = cache.clone();
                    tokio::spawn(
                        async move { fill_1k(&cache, "fill/", a as usize..b as usize).await },
                    )
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            fills.push(t.elapsed().as_secs_f64());
            caches.push(cache);
        }
        // Steady state: each cache is full; each set of a new key pushes one
        // entry out (amortized: one eviction round per n/10 sets). Measure at
        // least three eviction rounds and at least 20,000 sets per size, the
        // sizes taking turns so that load on the machine (and the state of the
        // filesystem) weighs on all of them alike.
        let rounds = 20;
        let per_size: Vec<usize> = sizes
            .iter()
            .map(|&n| (3 * (n / 10 + 1)).max(20_000).div_ceil(rounds) as usize)
            .collect();
        let caches = Arc::new(caches);
        let measured = tokio::spawn({
            let caches = caches.clone();
            async move {
                let mut times: Vec<Vec<Duration>> = per_size.iter().map(|_| Vec::new()).collect();
                for round in 0..rounds as usize {
                    for (c, cache) in caches.iter().enumerate() {
                        for j in 0..per_size[c] {
                            let i = round * per_size[c] + j;
                            let val = Value::Bytes(value_1k(i, 1));
                            let key = format!("new/{i}");
                            let t = Instant::now();
                            cache.set(&key, val, SetOptions::new()).await.unwrap();
                            times[c].push(t.elapsed());
                        }
                    }
                }
                times
            }
        })
        .await
        .unwrap();
        let mut out = Vec::new();
        for (c, mut v) in measured.into_iter().enumerate() {
            let s = caches[c].stats().await.unwrap();
            let n = sizes[c];
            assert!(s.entries <= n, "{} entries over the cap {n}", s.entries);
            assert!(s.evictions > 0);
            out.push((n, lat(&mut v), fills[c]));
        }
        out
    });
    // Removing a million files takes a while.
    drop(dirs);
    println!("\n== capped set (1 KB, max_entries = N, cache full): µs per set ==");
    println!(
        "{:>10} {:>9} {:>9} {:>9} {:>11} {:>9} {:>9}",
        "N", "mean", "p50", "p99", "max", "sets", "vs 1k"
    );
    let base_mean = results[0].1.mean;
    let mut rows = Vec::new();
    for (n, l, fill) in &results {
        println!(
            "{:>10} {:>9.1} {:>9.1} {:>9.1} {:>11.0} {:>9} {:>8.2}x",
            n,
            l.mean,
            l.p50,
            l.p99,
            l.max,
            l.n,
            l.mean / base_mean
        );
        rows.push(json!({"max_entries": n, "set": lat_json(l), "fill_s": r3(*fill), "mean_vs_1k": r3(l.mean / base_mean)}));
    }
    let (n, last, _) = results.last().unwrap();
    report.target(
        &format!("capped set mean cost at {n} vs 1k entries"),
        last.mean / base_mean,
        "x",
        1.5,
        true,
    );
    if *n < 1_000_000 {
        report.note_last("1M entries needs ETL_BENCH_LONG=1");
    }
    report
        .sections
        .push(("capped".into(), json!({"value_bytes": 1024, "rows": rows})));
}

// ---------------------------------------------------------------- processes

const MP_KEYS: usize = 200;
const MP_VALUE: usize = 4096;

/// A self-checking value: key index, writer, sequence, filler, FNV of it all.
fn mp_value(key: usize, writer: u64, seq: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(MP_VALUE);
    v.extend_from_slice(&(key as u64).to_le_bytes());
    v.extend_from_slice(&writer.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    let mut r = Rng((writer << 32 ^ seq) | 1);
    while v.len() < MP_VALUE - 8 {
        v.extend_from_slice(&r.next().to_le_bytes()[..(MP_VALUE - 8 - v.len()).min(8)]);
    }
    let h = fnv(&v);
    v.extend_from_slice(&h.to_le_bytes());
    v
}

fn mp_check(key: usize, v: &[u8]) -> bool {
    v.len() == MP_VALUE
        && v[..8] == (key as u64).to_le_bytes()
        && v[MP_VALUE - 8..] == fnv(&v[..MP_VALUE - 8]).to_le_bytes()
}

#[derive(Default)]
struct MpCount {
    ops: u64,
    wrong: u64,
    errors: u64,
    misses: u64,
}

trait MpStore {
    async fn set(&self, key: usize, v: Vec<u8>) -> Result<(), String>;
    /// Ok(None) for a miss; Err for a read the store itself rejected.
    async fn get(&self, key: usize) -> Result<Option<Vec<u8>>, String>;
}

struct MpOurs(DiskCache);
struct MpCacache(PathBuf);
struct MpRaw {
    dir: PathBuf,
    atomic: bool,
    id: u64,
}

impl MpStore for MpOurs {
    async fn set(&self, key: usize, v: Vec<u8>) -> Result<(), String> {
        self.0
            .set(
                &format!("k{key}"),
                Value::Bytes(v.into()),
                SetOptions::new(),
            )
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
    async fn get(&self, key: usize) -> Result<Option<Vec<u8>>, String> {
        match self.0.get(&format!("k{key}")).await {
            Ok(v) => Ok(v.map(|v| v.into_bytes().to_vec())),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl MpStore for MpCacache {
    async fn set(&self, key: usize, v: Vec<u8>) -> Result<(), String> {
        cacache::write_sync(&self.0, format!("k{key}"), v)
            .map(drop)
            .map_err(|e| e.to_string())
    }
    async fn get(&self, key: usize) -> Result<Option<Vec<u8>>, String> {
        match cacache::read_sync(&self.0, format!("k{key}")) {
            Ok(v) => Ok(Some(v)),
            Err(cacache::Error::EntryNotFound(..)) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl MpStore for MpRaw {
    async fn set(&self, key: usize, v: Vec<u8>) -> Result<(), String> {
        let p = self.dir.join(format!("k{key}"));
        if self.atomic {
            let tmp = self.dir.join(format!(".tmp-{}-{key}", self.id));
            std::fs::write(&tmp, v).and_then(|()| std::fs::rename(&tmp, &p))
        } else {
            std::fs::write(&p, v)
        }
        .map_err(|e| e.to_string())
    }
    async fn get(&self, key: usize) -> Result<Option<Vec<u8>>, String> {
        match std::fs::read(self.dir.join(format!("k{key}"))) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

async fn mp_loop(store: &impl MpStore, id: u64, until: SystemTime) -> MpCount {
    let mut c = MpCount::default();
    let mut r = Rng(id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut seq = 0u64;
    while SystemTime::now() < until {
        for _ in 0..64 {
            let x = r.next();
            let key = (x % MP_KEYS as u64) as usize;
            if (x >> 32) % 100 < 70 {
                match store.get(key).await {
                    Ok(Some(v)) if mp_check(key, &v) => {}
                    Ok(Some(_)) => c.wrong += 1,
                    Ok(None) => c.misses += 1,
                    Err(_) => c.errors += 1,
                }
            } else {
                seq += 1;
                if store.set(key, mp_value(key, id, seq)).await.is_err() {
                    c.errors += 1;
                }
            }
            c.ops += 1;
        }
    }
    c
}

fn child_mp() -> Json {
    let imp = child_env("ETL_BENCH_CHILD_IMPL");
    let dir = PathBuf::from(child_env("ETL_BENCH_CHILD_DIR"));
    let id: u64 = child_env("ETL_BENCH_CHILD_ID").parse().unwrap();
    let start_ns: u64 = child_env("ETL_BENCH_CHILD_START_NS").parse().unwrap();
    let ms: u64 = child_env("ETL_BENCH_CHILD_MS").parse().unwrap();
    let start = UNIX_EPOCH + Duration::from_nanos(start_ns);
    let until = start + Duration::from_millis(ms);
    let rt = runtime();
    let c = rt.block_on(async {
        let ours = if imp == "ours" {
            Some(MpOurs(DiskCache::open(&dir).await.unwrap()))
        } else {
            None
        };
        if let Ok(wait) = start.duration_since(SystemTime::now()) {
            tokio::time::sleep(wait).await;
        }
        match imp.as_str() {
            "ours" => mp_loop(ours.as_ref().unwrap(), id, until).await,
            "cacache-sync" => mp_loop(&MpCacache(dir), id, until).await,
            "raw-inplace" => {
                mp_loop(
                    &MpRaw {
                        dir,
                        atomic: false,
                        id,
                    },
                    id,
                    until,
                )
                .await
            }
            "raw-rename" => {
                mp_loop(
                    &MpRaw {
                        dir,
                        atomic: true,
                        id,
                    },
                    id,
                    until,
                )
                .await
            }
            other => panic!("unknown mp impl {other}"),
        }
    });
    json!({"ops": c.ops, "wrong": c.wrong, "errors": c.errors, "misses": c.misses})
}

fn section_multiproc(base: &Path, report: &mut Report) {
    let procs = 4;
    let secs = env_usize("ETL_BENCH_MP_SECS", 4) as u64;
    let imps = [
        ("ours", "etl-cache DiskCache"),
        ("cacache-sync", "cacache sync"),
        ("raw-rename", "raw std::fs, temp + rename"),
        ("raw-inplace", "raw std::fs, write in place"),
    ];
    let rt = runtime();
    let mut rows = Vec::new();
    println!(
        "\n== {procs} processes, 70% get / 30% set, {MP_KEYS} shared keys, {} KiB values, {secs} s ==",
        MP_VALUE / 1024
    );
    println!(
        "{:<28} {:>10} {:>14} {:>14} {:>8}",
        "implementation", "ops/s", "corrupt reads", "read errors", "misses"
    );
    let mut ops_s = HashMap::new();
    for (imp, name) in imps {
        let dir = tempfile::tempdir_in(base).unwrap();
        // Every key exists before the workers start.
        rt.block_on(async {
            match imp {
                "ours" => {
                    let s = MpOurs(DiskCache::open(dir.path()).await.unwrap());
                    for k in 0..MP_KEYS {
                        s.set(k, mp_value(k, 0, 0)).await.unwrap();
                    }
                }
                "cacache-sync" => {
                    let s = MpCacache(dir.path().to_path_buf());
                    for k in 0..MP_KEYS {
                        s.set(k, mp_value(k, 0, 0)).await.unwrap();
                    }
                }
                _ => {
                    let s = MpRaw {
                        dir: dir.path().to_path_buf(),
                        atomic: true,
                        id: 0,
                    };
                    for k in 0..MP_KEYS {
                        s.set(k, mp_value(k, 0, 0)).await.unwrap();
                    }
                }
            }
        });
        let start = SystemTime::now() + Duration::from_millis(700);
        let start_ns = start.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        let children: Vec<_> = (1..=procs)
            .map(|id| {
                let envs = vec![
                    ("ETL_BENCH_CHILD_IMPL", imp.to_owned()),
                    ("ETL_BENCH_CHILD_DIR", dir.path().display().to_string()),
                    ("ETL_BENCH_CHILD_ID", id.to_string()),
                    ("ETL_BENCH_CHILD_START_NS", start_ns.to_string()),
                    ("ETL_BENCH_CHILD_MS", (secs * 1000).to_string()),
                ];
                std::thread::spawn(move || run_child("mp", &envs))
            })
            .collect();
        let (mut ops, mut wrong, mut errors, mut misses) = (0, 0, 0, 0);
        for c in children {
            let r = c.join().unwrap();
            ops += r["ops"].as_u64().unwrap();
            wrong += r["wrong"].as_u64().unwrap();
            errors += r["errors"].as_u64().unwrap();
            misses += r["misses"].as_u64().unwrap();
        }
        let rate = ops as f64 / secs as f64;
        ops_s.insert(imp, rate);
        println!("{name:<28} {rate:>10.0} {wrong:>14} {errors:>14} {misses:>8}");
        rows.push(json!({"impl": name, "ops_s": r3(rate), "corrupt_reads": wrong, "read_errors": errors, "misses": misses}));
    }
    println!(
        "ours / cacache sync: {:.2}x the ops/s (corrupt reads: values that failed their check; read errors: reads the store refused)",
        ops_s["ours"] / ops_s["cacache-sync"]
    );
    report.sections.push((
        "multiproc".into(),
        json!({"processes": procs, "keys": MP_KEYS, "value_bytes": MP_VALUE, "secs": secs, "rows": rows}),
    ));
}

// ---------------------------------------------------------------- memory tier

fn section_tiered(base: &Path, report: &mut Report) {
    const KEYS: usize = 1000;
    let n = 200_000;
    let rt = runtime();
    let dir = tempfile::tempdir_in(base).unwrap();
    let (tier, floor) = rt.block_on(async {
        let disk = DiskCache::open(dir.path()).await.unwrap();
        let tiered = TieredCache::builder().tier(Arc::new(disk)).build().unwrap();
        fill_1k(&tiered, "k", 0..KEYS).await;
        let map: Arc<Mutex<HashMap<String, Bytes>>> = Arc::new(Mutex::new(
            (0..KEYS)
                .map(|i| (format!("k{i}"), value_1k(i, 0)))
                .collect(),
        ));
        tokio::spawn(async move {
            let keys: Vec<String> = (0..KEYS).map(|i| format!("k{i}")).collect();
            let (mut a, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for i in 0..n {
                let key = &keys[i % KEYS];
                let t = Instant::now();
                let v = tiered.get(key).await.unwrap();
                a.push(t.elapsed());
                assert!(v.is_some());
                let t = Instant::now();
                let v = map.lock().unwrap().get(key).cloned();
                b.push(t.elapsed());
                assert!(v.is_some());
            }
            let c = tiered.tier_counts();
            assert!(c.memory >= n as u64, "hits served from memory: {c:?}");
            (lat(&mut a), lat(&mut b))
        })
        .await
        .unwrap()
    });
    println!("\n== memory-tier hit (1 KB, {n} gets): µs ==");
    print_p50_p99(
        "implementation",
        &[
            ("etl-cache TieredCache (moka)", &tier),
            ("raw Mutex<HashMap<String, Bytes>>", &floor),
        ],
        34,
        8,
        3,
    );
    report.target("memory-tier hit p50", tier.p50, "µs", 1.0, true);
    report.sections.push((
        "tiered".into(),
        json!({"rows": [
            {"impl": "etl-cache TieredCache (moka)", "get_hit": lat_json(&tier)},
            {"impl": "raw Mutex<HashMap<String, Bytes>>", "get_hit": lat_json(&floor)},
        ]}),
    ));
}

// ---------------------------------------------------------------- object stores

/// A moto S3 server on a free port of 127.0.0.1, stopped on drop.
#[cfg(feature = "aws")]
struct Moto {
    child: std::process::Child,
    port: u16,
}

#[cfg(feature = "aws")]
impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(feature = "aws")]
impl Moto {
    /// An S3 store on this server's bucket `bench`.
    fn s3(&self) -> etl_cache::object::object_store::aws::AmazonS3 {
        etl_cache::object::object_store::aws::AmazonS3Builder::new()
            .with_endpoint(format!("http://127.0.0.1:{}", self.port))
            .with_allow_http(true)
            .with_bucket_name("bench")
            .with_region("us-east-1")
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .unwrap()
    }
}

#[cfg(feature = "aws")]
fn http(port: u16, method: &str, path: &str) -> std::io::Result<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("not HTTP"))
}

/// Starts moto's server (`ETL_CACHE_MOTO_SERVER`, the directory
/// `scripts/install-test-servers.sh` installs into, or `moto_server` on PATH)
/// with a bucket `bench`; `None` when it is not installed.
#[cfg(feature = "aws")]
fn start_moto() -> Option<Moto> {
    let installed = std::env::var_os("ETL_CACHE_TEST_SERVERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/etl-cache-test-servers")
        })
        .join("venv/bin/moto_server");
    let program = std::env::var_os("ETL_CACHE_MOTO_SERVER")
        .map(PathBuf::from)
        .or_else(|| installed.exists().then_some(installed))
        .unwrap_or_else(|| PathBuf::from("moto_server"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new(&program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(60);
    while http(port, "GET", "/").is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (http(port, "PUT", "/bench").ok()? == 200).then_some(moto)
}

#[cfg(feature = "object")]
fn section_object(report: &mut Report) {
    use etl_cache::object::ObjectCache;
    use etl_cache::object::object_store::memory::InMemory;
    use etl_cache::object::object_store::path::Path as ObjectPath;
    use etl_cache::object::object_store::{ObjectStore, ObjectStoreExt, PutPayload};

    let rt = runtime();
    #[cfg_attr(not(feature = "aws"), allow(unused_mut))]
    let mut stores: Vec<(&str, Arc<dyn ObjectStore>)> =
        vec![("InMemory", Arc::new(InMemory::new()))];
    #[cfg(feature = "aws")]
    let moto = start_moto();
    #[cfg(feature = "aws")]
    match &moto {
        Some(m) => stores.push(("S3 (moto, 127.0.0.1)", Arc::new(m.s3()))),
        None => println!(
            "\n(moto_server not found: the S3 rows are left out; scripts/install-test-servers.sh installs it)"
        ),
    }
    #[cfg(not(feature = "aws"))]
    println!("\n(built without the `aws` feature: the S3 rows are left out)");

    println!("\n== object layer vs raw object_store, same bytes: p50 / p99 in µs ==");
    println!(
        "{:<22} {:>8} {:>5} {:>21} {:>21} {:>9}",
        "store", "size", "op", "raw object_store", "etl-cache ObjectCache", "overhead"
    );
    let mut rows = Vec::new();
    let mut worst: Vec<(&str, f64)> = Vec::new();
    for (name, store) in stores {
        worst.push((name, f64::MIN));
        for size in [1024usize, 1 << 20] {
            let n = match (name, size) {
                ("InMemory", 1024) => 20_000,
                ("InMemory", _) => 2_000,
                (_, 1024) => 400,
                _ => 100,
            };
            let data = Bytes::from(vec![b'x'; size]);
            let store = store.clone();
            let times = rt
                .block_on(rt.spawn(async move {
                    let cache = ObjectCache::new(store.clone(), "bench/ours").unwrap();
                    let mut t4: [Vec<Duration>; 4] = Default::default();
                    for i in 0..n {
                        let key = format!("k{}", i % 64);
                        let path = ObjectPath::from(format!("bench/raw/{key}"));
                        let t = Instant::now();
                        store
                            .put(&path, PutPayload::from(data.clone()))
                            .await
                            .unwrap();
                        t4[0].push(t.elapsed());
                        let t = Instant::now();
                        cache
                            .set(&key, Value::Bytes(data.clone()), SetOptions::new())
                            .await
                            .unwrap();
                        t4[1].push(t.elapsed());
                        let t = Instant::now();
                        let got = store.get(&path).await.unwrap().bytes().await.unwrap();
                        t4[2].push(t.elapsed());
                        assert_eq!(got.len(), size);
                        let t = Instant::now();
                        let got = cache.get(&key).await.unwrap().unwrap();
                        t4[3].push(t.elapsed());
                        assert_eq!(got.into_bytes().len(), size);
                    }
                    t4
                }))
                .unwrap();
            let mut times = times;
            let l: Vec<Lat> = times.iter_mut().map(|v| lat(v)).collect();
            for (op, raw, ours) in [("set", &l[0], &l[1]), ("get", &l[2], &l[3])] {
                let over = ours.p50 / raw.p50 - 1.0;
                let w = &mut worst.last_mut().unwrap().1;
                *w = w.max(over);
                let size_s = if size >= 1 << 20 {
                    format!("{} MiB", size >> 20)
                } else {
                    format!("{} KiB", size >> 10)
                };
                println!(
                    "{:<22} {:>8} {:>5} {:>9.1} / {:>9.1} {:>9.1} / {:>9.1} {:>8.1}%",
                    name,
                    size_s,
                    op,
                    raw.p50,
                    raw.p99,
                    ours.p50,
                    ours.p99,
                    over * 100.0
                );
                rows.push(
                    json!({"store": name, "bytes": size, "op": op, "raw": lat_json(raw),
                    "ours": lat_json(ours), "overhead_p50": r3(over)}),
                );
            }
        }
    }
    // What checksumming the bytes alone costs: the floor of any layer that
    // checks every byte, against an in-memory store that only moves a
    // reference count.
    let mut floor = Vec::new();
    for size in [1024usize, 1 << 20] {
        let data = vec![b'x'; size];
        let mut v: Vec<Duration> = (0..2000)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(etl_cache::backend::codec::crc32c(std::hint::black_box(
                    &data,
                )));
                t.elapsed()
            })
            .collect();
        let l = lat(&mut v);
        println!("crc32c of {size} bytes alone: p50 {:.1} µs", l.p50);
        floor.push(json!({"bytes": size, "crc32c": lat_json(&l)}));
    }
    for (name, w) in worst {
        report.target(
            &format!("object layer overhead vs raw, {name} (worst p50)"),
            w * 100.0,
            "%",
            10.0,
            true,
        );
    }
    report.sections.push((
        "object".into(),
        json!({"rows": rows, "crc32c_floor": floor}),
    ));
}

#[cfg(not(feature = "object"))]
fn section_object(_report: &mut Report) {
    println!(
        "\n(object section skipped: run `cargo bench -p etl-cache-bench --bench suite --features aws` for ObjectCache vs raw object_store)"
    );
}

// ---------------------------------------------------------------- CachedStore

// In a directory of its own: a file directly under benches/ would be a
// bench target of its own.
#[cfg(feature = "store")]
#[path = "suite/store.rs"]
mod store;

#[cfg(feature = "store")]
fn section_store(base: &Path, report: &mut Report) {
    store::section(base, report);
    #[cfg(feature = "aws")]
    store::section_s3(base, report);
    #[cfg(not(feature = "aws"))]
    println!(
        "\n(the CachedStore-on-S3 runs need the `aws` feature as well: `--features store,aws`)"
    );
}

#[cfg(not(feature = "store"))]
fn section_store(_base: &Path, _report: &mut Report) {
    println!(
        "\n(store section skipped: it needs the `store` feature; run `cargo bench -p etl-cache-bench --bench suite --features store -- store`)"
    );
}

// ---------------------------------------------------------------- AsyncWrite / AsyncRead

#[path = "suite/io.rs"]
mod io;

#[path = "suite/steps.rs"]
mod steps;

#[path = "suite/spares.rs"]
mod spares;

#[path = "suite/stream64.rs"]
mod stream64;

// ---------------------------------------------------------------- Arrow batches

#[cfg(feature = "arrow")]
#[path = "suite/arrow.rs"]
mod arrow;

#[cfg(feature = "arrow")]
fn section_arrow(base: &Path, report: &mut Report) {
    arrow::section(base, report);
}

#[cfg(not(feature = "arrow"))]
fn section_arrow(_base: &Path, _report: &mut Report) {
    println!(
        "\n(arrow section skipped: it needs the `arrow` feature; run `cargo bench -p etl-cache-bench --bench suite --features arrow -- arrow`)"
    );
}

// ---------------------------------------------------------------- main

/// A section of the suite: the name that selects it, and what runs it.
type Section = (&'static str, fn(&Path, &mut Report));

/// Every section, in the order they run.
const SECTIONS: &[Section] = &[
    ("small", section_small),
    ("stream", section_stream),
    ("xml", section_xml),
    ("capped", section_capped),
    ("multiproc", section_multiproc),
    ("tiered", section_tiered),
    ("object", |_, report| section_object(report)),
    ("store", section_store),
    ("io", io::section),
    ("steps", steps::section),
    ("arrow", section_arrow),
    ("spares", spares::section),
    ("stream64", stream64::section),
];

fn main() {
    if let Ok(mode) = std::env::var("ETL_BENCH_CHILD") {
        child_main(&mode);
        return;
    }
    let mut wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if wanted.is_empty()
        && let Ok(s) = std::env::var("ETL_BENCH_SECTIONS")
    {
        wanted = s.split(',').map(|s| s.trim().to_owned()).collect();
    }
    wanted.retain(|s| !s.is_empty());
    let names: Vec<&str> = SECTIONS.iter().map(|&(name, _)| name).collect();
    for w in &wanted {
        assert!(
            names.contains(&w.as_str()),
            "unknown section {w:?}; sections: {names:?}"
        );
    }
    let run = |s: &str| wanted.is_empty() || wanted.iter().any(|w| w == s);

    let base = std::env::var_os("ETL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("bench-tmp"));
    std::fs::create_dir_all(&base).unwrap();
    let started = Instant::now();
    let load_before = loadavg();
    let machine = machine();
    println!(
        "etl-cache performance suite: {} ({} cores, {} GiB), kernel {}, {} on {}; load {}{}",
        machine["cpu"].as_str().unwrap_or(""),
        machine["cores"],
        machine["memory_gib"],
        machine["kernel"].as_str().unwrap_or(""),
        base.display(),
        fs_type(&base),
        load_before,
        if long_mode() { "; LONG mode" } else { "" }
    );
    let mut report = Report::default();
    for &(name, section) in SECTIONS {
        if run(name) {
            section(&base, &mut report);
        }
    }

    println!("\n== targets (ratios measured in this run) ==");
    println!(
        "{:<48} {:>10} {:>10} {:>5}  note",
        "target", "measured", "limit", "met"
    );
    let mut targets = Vec::new();
    for t in &report.targets {
        let cmp = if t.at_most { "<=" } else { ">=" };
        println!(
            "{:<48} {:>8.2}{:<2} {}{:>6.2}{:<2} {:>5}  {}",
            t.name,
            t.value,
            t.unit,
            cmp,
            t.limit,
            t.unit,
            if t.met() { "yes" } else { "NO" },
            t.note
        );
        targets.push(
            json!({"target": t.name, "value": r3(t.value), "unit": t.unit,
            "limit": t.limit, "at_most": t.at_most, "met": t.met(), "note": t.note}),
        );
    }
    let out = std::env::var_os("ETL_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("bench-suite.json"));
    let secs = started.elapsed().as_secs_f64();
    let when = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let doc = json!({
        "machine": machine,
        "bench_dir": base.display().to_string(),
        "bench_fs": fs_type(&base),
        "unix_time": when,
        "load_before": load_before,
        "load_after": loadavg(),
        "long_mode": long_mode(),
        "seconds": r3(secs),
        "targets": targets,
        "sections": report.sections.iter().map(|(k, v)| json!({"section": k, "data": v})).collect::<Vec<_>>(),
    });
    std::fs::write(&out, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
    println!(
        "\nran {:.0} s; load {} -> {}; wrote {}",
        secs,
        load_before,
        loadavg(),
        out.display()
    );
}
