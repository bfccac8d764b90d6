//! The `store` section: `CachedStore` in front of a slow object store, read
//! by DataFusion, by whole-object gets and by small range reads.
//!
//! The inner store is object_store's `InMemory` behind its `ThrottledStore`
//! (a fixed wait per GET or HEAD call, no limit on bandwidth), behind a
//! counting wrapper. Every figure is compared with one measured in the same
//! run: the SQL and byte scans through `CachedStore` with the same scans of
//! the bare inner store, the range reads with a `DiskCache` get on the same
//! filesystem.

#[path = "../../../etl-cache-object/tests/support/forward.rs"]
#[macro_use]
mod forward;

// `Counted`, the counting wrapper around the inner store, shared with the
// DataFusion example.
#[path = "../../../../examples/datafusion-scan/src/counted.rs"]
mod counted;

use std::path::Path as FsPath;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression as ParquetCompression;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use etl_cache::store::object_store::memory::InMemory;
use etl_cache::store::object_store::path::Path;
use etl_cache::store::object_store::throttle::{ThrottleConfig, ThrottledStore};
use etl_cache::store::object_store::{self, ObjectStore, ObjectStoreExt, PutPayload};
use etl_cache::store::{CachedStore, DEFAULT_BLOCK_SIZE, Revalidate, StoreStats};
use etl_cache::{Cache, DiskCache, SetOptions, TieredCache, Value};
use futures::TryStreamExt;
use serde_json::{Value as Json, json};

use counted::{Counted, Counts};

use super::{Lat, Report, Rng, env_usize, lat, lat_json, r3, runtime, vmhwm_kb};

/// The size of the range reads, and of the `DiskCache` values beside them.
const RANGE: u64 = 64 << 10;
/// Rows per Arrow batch handed to the Parquet writer.
const BATCH_ROWS: usize = 64 << 10;
/// Bytes of one row: four Int64 and four Float64 columns.
const ROW_BYTES: usize = 64;
const URL: &str = "bench://data";
const TABLE_DIR: &str = "t";
/// Every column of every row.
const QUERY: &str = "SELECT count(*) AS n, \
    sum(i0) AS i0, sum(i1) AS i1, sum(i2) AS i2, sum(i3) AS i3, \
    sum(f0) AS f0, sum(f1) AS f1, sum(f2) AS f2, sum(f3) AS f3 FROM t";

// ---------------------------------------------------------------- counting store

/// What was asked of the inner store between two points.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    gets: u64,
    heads: u64,
    lists: u64,
    /// Bytes of the bodies the store was asked for (the ranges it answered).
    bytes: u64,
}

impl Counts {
    fn tally(&self) -> Tally {
        Tally {
            gets: self.gets.load(Relaxed),
            heads: self.heads.load(Relaxed),
            lists: self.lists.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
        }
    }
}

impl Tally {
    fn since(self, before: Tally) -> Tally {
        Tally {
            gets: self.gets - before.gets,
            heads: self.heads - before.heads,
            lists: self.lists - before.lists,
            bytes: self.bytes - before.bytes,
        }
    }

    fn requests(&self) -> u64 {
        self.gets + self.heads + self.lists
    }

    fn json(&self) -> Json {
        json!({"requests": self.requests(), "gets": self.gets, "heads": self.heads,
            "lists": self.lists, "bytes": self.bytes})
    }
}

// ---------------------------------------------------------------- the dataset

fn schema() -> SchemaRef {
    let mut fields = Vec::new();
    for i in 0..4 {
        fields.push(Field::new(format!("i{i}"), DataType::Int64, false));
    }
    for i in 0..4 {
        fields.push(Field::new(format!("f{i}"), DataType::Float64, false));
    }
    Arc::new(Schema::new(fields))
}

// The values are random, so that the Parquet pages neither compress nor
// encode much smaller, but bounded so that the sums are exact whatever the
// order DataFusion adds the partial sums in, and the answers of two runs
// can be compared for equality: Int64 values have 36 random bits, Float64
// values are 28-bit integers over 256 (every partial sum of up to 2^24 of
// them is a multiple of 2^-8 below 2^43, exact in a double).

fn int_value(r: u64) -> i64 {
    (r as i64) >> 28
}

fn float_value(r: u64) -> f64 {
    ((r as i64) >> 36) as f64 / 256.0
}

/// One Parquet file of `rows` rows, uncompressed and without dictionaries.
fn parquet_file(file: usize, rows: usize) -> Vec<u8> {
    let schema = schema();
    let props = WriterProperties::builder()
        .set_compression(ParquetCompression::UNCOMPRESSED)
        .set_dictionary_enabled(false)
        .build();
    let mut buf = Vec::with_capacity(rows * ROW_BYTES + (1 << 20));
    let mut w = ArrowWriter::try_new(&mut buf, schema.clone(), Some(props)).unwrap();
    let mut rng = Rng((file as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut done = 0;
    while done < rows {
        let n = BATCH_ROWS.min(rows - done);
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(8);
        for _ in 0..4 {
            cols.push(Arc::new(Int64Array::from_iter_values(
                (0..n).map(|_| int_value(rng.next())),
            )));
        }
        for _ in 0..4 {
            cols.push(Arc::new(Float64Array::from_iter_values(
                (0..n).map(|_| float_value(rng.next())),
            )));
        }
        w.write(&RecordBatch::try_new(schema.clone(), cols).unwrap())
            .unwrap();
        done += n;
    }
    w.close().unwrap();
    buf
}

// ---------------------------------------------------------------- runs

/// One SQL run: its wall time, what it asked of the inner store, the
/// store's own counters when it went through a `CachedStore`, the answer.
struct SqlRun {
    label: &'static str,
    slug: &'static str,
    revalidate: &'static str,
    secs: f64,
    tally: Tally,
    stats: Option<Json>,
    answer: String,
}

/// Registers `store` in a fresh `SessionContext` (so DataFusion's own
/// caches of listings and footers are empty), then times the table's
/// registration (which lists it and reads the footers) and the query.
async fn sql(store: Arc<dyn ObjectStore>) -> (Duration, String) {
    let ctx = SessionContext::new();
    let url = ObjectStoreUrl::parse(URL).unwrap();
    ctx.register_object_store(url.as_ref(), store);
    let t = Instant::now();
    ctx.register_parquet(
        "t",
        format!("{URL}/{TABLE_DIR}/"),
        ParquetReadOptions::default(),
    )
    .await
    .unwrap();
    let batches = ctx.sql(QUERY).await.unwrap().collect().await.unwrap();
    let time = t.elapsed();
    (time, pretty_format_batches(&batches).unwrap().to_string())
}

fn stats_json(before: StoreStats, after: StoreStats) -> Json {
    json!({
        "block_hits": after.hits - before.hits,
        "block_misses": after.misses - before.misses,
        "bytes_from_cache": after.bytes_from_cache - before.bytes_from_cache,
        "bytes_from_inner": after.bytes_from_inner - before.bytes_from_inner,
        "inner_requests": after.inner_requests - before.inner_requests,
        "joins": after.joins - before.joins,
        "cache_errors": after.cache_errors - before.cache_errors,
    })
}

async fn sql_run(
    label: &'static str,
    slug: &'static str,
    revalidate: &'static str,
    store: Arc<dyn ObjectStore>,
    cached: Option<&CachedStore>,
    counts: &Counts,
) -> SqlRun {
    let before = counts.tally();
    let stats_before = cached.map(CachedStore::stats);
    let (time, answer) = sql(store).await;
    let tally = counts.tally().since(before);
    let stats = cached.map(|c| stats_json(stats_before.unwrap(), c.stats()));
    println!(
        "  {label}: {:.2} s, {} requests, {:.1} MiB from the inner store",
        time.as_secs_f64(),
        tally.requests(),
        tally.bytes as f64 / (1 << 20) as f64
    );
    SqlRun {
        label,
        slug,
        revalidate,
        secs: time.as_secs_f64(),
        tally,
        stats,
        answer,
    }
}

/// The bare run (a), `label`: the inner store itself, cold.
async fn bare_run(label: &'static str, inner: &Arc<dyn ObjectStore>, counts: &Counts) -> SqlRun {
    sql_run(label, "bare_cold", "", inner.clone(), None, counts).await
}

/// The labels and slugs of the runs (b'), (c'), (d') with
/// `Revalidate::Never`.
const NEVER_LABELS: [(&str, &str); 3] = [
    ("(b') Revalidate::Never, empty cache, cold", "cold_never"),
    ("(c') same handle again, warm", "warm_same_never"),
    ("(d') new handle, same dir, warm", "warm_new_never"),
];

/// Through a `CachedStore` on the empty directory `dir`: a cold run, the
/// same handle again, then a new handle on the directory (nothing of the
/// runs before in this process's memory, as after a restart), which is
/// returned.
async fn cached_runs(
    inner: &Arc<dyn ObjectStore>,
    dir: &FsPath,
    revalidate: Revalidate,
    labels: [(&'static str, &'static str); 3],
    counts: &Counts,
) -> (Vec<SqlRun>, CachedStore) {
    let name = match revalidate {
        Revalidate::Never => "Never",
        _ => "Always",
    };
    let open = move || async move {
        CachedStore::builder(inner.clone())
            .dir(dir)
            .revalidate(revalidate)
            .build()
            .await
            .unwrap()
    };
    let mut runs = Vec::new();
    let first = open().await;
    for &(label, slug) in &labels[..2] {
        let store = Arc::new(first.clone());
        runs.push(sql_run(label, slug, name, store, Some(&first), counts).await);
        // The blocks a cold run fetched are kept behind it; the next run
        // starts once they are (not counted in either run's time).
        first.settle().await;
    }
    drop(first);
    let second = open().await;
    let (label, slug) = labels[2];
    let store = Arc::new(second.clone());
    runs.push(sql_run(label, slug, name, store, Some(&second), counts).await);
    (runs, second)
}

/// Each object read whole with `get`, one after the other; the time spent
/// in the reads alone. With `collect`, each body is collected into one
/// buffer (`GetResult::bytes`); without, its chunks are only taken from
/// the stream. Each body is checked against `expect` (when given) and
/// dropped, or kept and returned.
async fn byte_scan(
    store: &dyn ObjectStore,
    paths: &[Path],
    collect: bool,
    expect: Option<&[Bytes]>,
) -> (Duration, Vec<Bytes>) {
    let mut time = Duration::ZERO;
    let mut bodies = Vec::with_capacity(paths.len());
    for (i, p) in paths.iter().enumerate() {
        let t = Instant::now();
        let got = store.get(p).await.unwrap();
        let chunks: Vec<Bytes> = if collect {
            vec![got.bytes().await.unwrap()]
        } else {
            got.into_stream().try_collect().await.unwrap()
        };
        time += t.elapsed();
        match expect {
            Some(e) => {
                let mut at = 0;
                for c in &chunks {
                    assert!(
                        e[i].get(at..at + c.len()) == Some(&c[..]),
                        "{p}: other bytes than the inner store's"
                    );
                    at += c.len();
                }
                assert_eq!(at, e[i].len(), "{p}: not the whole object");
            }
            // One chunk when collected: the inner store's own buffer.
            None => bodies.push(match <[Bytes; 1]>::try_from(chunks) {
                Ok([body]) => body,
                Err(chunks) => chunks.concat().into(),
            }),
        }
    }
    (time, bodies)
}

/// `store` behind object_store's `ThrottledStore` (`latency_ms` per GET or
/// HEAD) and the counting wrapper: the inner store of the SQL runs.
fn throttled_counted<S: ObjectStore>(
    store: S,
    latency_ms: usize,
) -> (Arc<dyn ObjectStore>, Arc<Counts>) {
    let throttled = ThrottledStore::new(
        store,
        ThrottleConfig {
            wait_get_per_call: Duration::from_millis(latency_ms as u64),
            ..ThrottleConfig::default()
        },
    );
    let counts = Arc::new(Counts::default());
    let inner: Arc<dyn ObjectStore> = Arc::new(Counted {
        inner: Arc::new(throttled),
        counts: counts.clone(),
    });
    (inner, counts)
}

/// Writes the dataset, `files` Parquet files of `rows_per_file` rows, into
/// `store`, saying `verb` of each file done: their paths and total size.
fn put_dataset(
    rt: &tokio::runtime::Runtime,
    store: &dyn ObjectStore,
    files: usize,
    rows_per_file: usize,
    verb: &str,
) -> (Vec<Path>, u64) {
    let mut paths = Vec::with_capacity(files);
    let mut total = 0u64;
    for f in 0..files {
        let buf = parquet_file(f, rows_per_file);
        total += buf.len() as u64;
        let path = Path::from(format!("{TABLE_DIR}/part-{f}.parquet"));
        rt.block_on(store.put(&path, PutPayload::from(buf)))
            .unwrap();
        paths.push(path);
        println!("  {verb} file {}/{files}", f + 1);
    }
    (paths, total)
}

/// Checks that every run gave the answer of the first (`bare`, the bare
/// store's) and that the answer counts the `rows` written.
fn check_answers(runs: &[SqlRun], rows: usize, bare: &str) {
    for r in &runs[1..] {
        assert_eq!(
            r.answer, runs[0].answer,
            "{} answered differently from {bare}",
            r.label
        );
    }
    assert!(
        runs[0].answer.contains(&format!(" {rows} ")),
        "count(*) is the {rows} rows written:\n{}",
        runs[0].answer
    );
}

/// The warm runs: (c), (d), (c'), (d').
const WARM: [usize; 4] = [2, 3, 5, 6];

/// The target `name`: the warm runs read no byte from the inner store.
fn warm_bytes_target(report: &mut Report, name: &str, runs: &[SqlRun]) {
    let warm_bytes: u64 = WARM.iter().map(|&i| runs[i].tally.bytes).sum();
    report.target(name, warm_bytes as f64, "B", 0.0, true);
    report.note_last("sum over (c), (d), (c'), (d')");
}

/// A target for each warm run, named by `names` in the order of [`WARM`]:
/// its cold run's time over its own is at least 30; `note(warm, cold)`
/// gives the figures behind it.
fn warm_targets(
    report: &mut Report,
    runs: &[SqlRun],
    names: [&str; 4],
    note: impl Fn(&SqlRun, &SqlRun) -> String,
) {
    for (i, name) in WARM.into_iter().zip(names) {
        let (r, cold) = (&runs[i], cold_of(runs, i));
        report.target(name, cold.secs / r.secs, "x", 30.0, false);
        report.note_last(note(r, cold));
    }
}

/// The cold run that run `i` is compared with: (b) for the runs with the
/// default revalidation, (b') for those with `Revalidate::Never`.
fn cold_of(runs: &[SqlRun], i: usize) -> &SqlRun {
    if i < 4 { &runs[1] } else { &runs[4] }
}

/// The runs as JSON, each warm or cold one with its cold run's time over
/// its own.
fn runs_json(runs: &[SqlRun]) -> Vec<Json> {
    runs.iter()
        .enumerate()
        .map(|(i, r)| {
            json!({
                "run": r.slug, "label": r.label, "revalidate": r.revalidate,
                "secs": r3(r.secs), "inner": r.tally.json(), "cached_store": r.stats,
                "cold_over_this": (i > 0).then(|| r3(cold_of(runs, i).secs / r.secs)),
            })
        })
        .collect()
}

/// The target that the `cold` run (`tag`) of `store` asks at most 1.1 times
/// the requests of the `bare` run.
fn cold_requests_target(report: &mut Report, store: &str, tag: &str, cold: &SqlRun, bare: &SqlRun) {
    report.target(
        &format!("{store} cold {tag} requests / bare"),
        cold.tally.requests() as f64 / bare.tally.requests() as f64,
        "x",
        1.1,
        true,
    );
    report.note_last(format!(
        "{} / {} (HEADs: {})",
        cold.tally.requests(),
        bare.tally.requests(),
        cold.tally.heads
    ));
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

// ---------------------------------------------------------------- the section

pub(crate) fn section(base: &FsPath, report: &mut Report) {
    let nominal_mb = env_usize("ETL_BENCH_STORE_MB", 1024).max(1);
    let files = env_usize("ETL_BENCH_STORE_FILES", 8).max(1);
    let latency_ms = env_usize("ETL_BENCH_STORE_LATENCY_MS", 50);
    let n_ranges = env_usize("ETL_BENCH_STORE_RANGES", 2000).max(1);
    // At least 1 MiB a file, so that every file holds a range read.
    let rows_per_file = ((nominal_mb << 20) / files / ROW_BYTES).max((1 << 20) / ROW_BYTES);
    let rt = runtime();
    let hwm_start = vmhwm_kb();

    println!(
        "\n== CachedStore: {nominal_mb} MiB of Parquet in {files} files, inner store {latency_ms} ms per GET/HEAD =="
    );

    // 1. The dataset, written straight into InMemory.
    let t = Instant::now();
    let mem = InMemory::new();
    let (paths, total) = put_dataset(&rt, &mem, files, rows_per_file, "wrote");
    let rows = rows_per_file * files;
    let write_secs = t.elapsed().as_secs_f64();
    println!(
        "dataset: {files} files, {:.1} MiB on the store (nominal {nominal_mb} MiB), {rows} rows x 8 columns (4 Int64, 4 Float64; plain, uncompressed); written in {write_secs:.1} s",
        mib(total)
    );
    let hwm_data = vmhwm_kb();

    // 2. The inner store: InMemory, throttled, counted.
    let (inner, counts) = throttled_counted(mem, latency_ms);
    let dir = tempfile::tempdir_in(base).unwrap();
    let dir_never = tempfile::tempdir_in(base).unwrap();
    let kv_dir = tempfile::tempdir_in(base).unwrap();
    let tier_dir = tempfile::tempdir_in(base).unwrap();

    let out = rt.block_on(async {
        // 3. SQL: bare, then through CachedStore cold and warm.
        println!("SQL runs, each in a fresh SessionContext:");
        let mut runs = Vec::new();
        runs.push(bare_run("(a) bare inner store, cold", &inner, &counts).await);
        // (b), (c), (d) with the defaults; (b'), (c'), (d') the same with
        // Revalidate::Never on a second directory. The default checks an
        // object with a HEAD before a read whose first block is cached;
        // Never trusts what it saw, and what the cache kept of it.
        let (always_runs, always) = cached_runs(
            &inner,
            dir.path(),
            Revalidate::Always,
            [
                ("(b) CachedStore, empty cache, cold", "cold"),
                ("(c) same CachedStore again, warm", "warm_same"),
                ("(d) new CachedStore, same dir, warm", "warm_new"),
            ],
            &counts,
        )
        .await;
        runs.extend(always_runs);
        let (never_runs, never) = cached_runs(
            &inner,
            dir_never.path(),
            Revalidate::Never,
            NEVER_LABELS,
            &counts,
        )
        .await;
        runs.extend(never_runs);
        check_answers(&runs, rows, "the bare store");
        let hwm_sql = vmhwm_kb();

        // 4. Byte scan: every object whole, bare (nothing is cached there,
        // every read is cold) and through the warm stores.
        println!("byte scan: each object read whole, one after the other:");
        let before = counts.tally();
        let (bare_time, bare_bodies) = byte_scan(inner.as_ref(), &paths, true, None).await;
        let bare_tally = counts.tally().since(before);
        println!(
            "  bare inner store: {:.3} s, {} requests",
            bare_time.as_secs_f64(),
            bare_tally.requests()
        );
        assert_eq!(
            bare_bodies.iter().map(|b| b.len() as u64).sum::<u64>(),
            total
        );
        let mut scans = Vec::new();
        for (label, slug, store, collect) in [
            (
                "CachedStore warm, Revalidate::Always",
                "Always",
                &always,
                true,
            ),
            ("CachedStore warm, Revalidate::Never", "Never", &never, true),
            (
                "CachedStore warm, Never, streamed",
                "Never, streamed",
                &never,
                false,
            ),
        ] {
            let before = counts.tally();
            let (time, _) = byte_scan(store, &paths, collect, Some(&bare_bodies)).await;
            let tally = counts.tally().since(before);
            println!(
                "  {label}: {:.3} s, {} requests, {} bytes from the inner store",
                time.as_secs_f64(),
                tally.requests(),
                tally.bytes
            );
            scans.push((label, slug, time, tally));
        }
        let hwm_scan = vmhwm_kb();

        // The floor under the cold and warm figures: the dataset's blocks
        // set into a DiskCache of their own, one after the other (a cold
        // read through CachedStore keeps each block it fetches before it
        // hands it on), then each got back.
        println!(
            "DiskCache alone: the dataset's {} MiB blocks set, then got, one at a time:",
            DEFAULT_BLOCK_SIZE >> 20
        );
        let bs = DEFAULT_BLOCK_SIZE as usize;
        let blocks_dir = tempfile::tempdir_in(base).unwrap();
        let blocks = DiskCache::open(blocks_dir.path()).await.unwrap();
        let mut keys = Vec::new();
        let t = Instant::now();
        for (f, body) in bare_bodies.iter().enumerate() {
            for (b, at) in (0..body.len()).step_by(bs).enumerate() {
                let key = format!("f{f}/b{b}");
                let block = body.slice(at..(at + bs).min(body.len()));
                blocks
                    .set(&key, Value::Bytes(block), SetOptions::new())
                    .await
                    .unwrap();
                keys.push(key);
            }
        }
        let block_set = t.elapsed();
        let mut t_block = Vec::with_capacity(keys.len());
        for key in &keys {
            let t = Instant::now();
            let v = blocks.get(key).await.unwrap();
            t_block.push(t.elapsed());
            assert!(v.is_some_and(|v| v.into_bytes().len() <= bs));
        }
        let block_get: Duration = t_block.iter().sum();
        println!(
            "  {} blocks: set {:.3} s, got {:.3} s",
            keys.len(),
            block_set.as_secs_f64(),
            block_get.as_secs_f64()
        );
        drop(blocks);
        drop(blocks_dir);

        // 5. Warm 64 KiB range reads: CachedStore on the DiskCache, and on a
        // TieredCache (memory, then the same DiskCache), beside a DiskCache
        // get of a 64 KiB value on the same filesystem. Revalidate::Never,
        // so that no read waits for a HEAD: what is measured is the cache.
        println!(
            "range reads: warming up, then {n_ranges} random {} KiB reads each:",
            RANGE >> 10
        );
        let tiered = Arc::new(
            TieredCache::builder()
                .memory_bytes(total + total / 4 + (64 << 20))
                .max_memory_entry(2 * DEFAULT_BLOCK_SIZE)
                // A directory of its own: its warm-up fetches every block
                // and sets it through the tiers, memory included. (On a
                // directory that held the blocks already, a range read is
                // served from the disk tier's file and nothing is promoted.)
                .tier(Arc::new(DiskCache::open(tier_dir.path()).await.unwrap()))
                .build()
                .unwrap(),
        );
        let tier_store = CachedStore::builder(inner.clone())
            .cache(tiered.clone())
            .revalidate(Revalidate::Never)
            .build()
            .await
            .unwrap();
        let kv = DiskCache::open(kv_dir.path()).await.unwrap();
        const KV_KEYS: usize = 256;
        let mut rng = Rng(0x5EED_5EED_5EED_5EED);
        for i in 0..KV_KEYS {
            let mut v = Vec::with_capacity(RANGE as usize);
            while v.len() < RANGE as usize {
                v.extend_from_slice(&rng.next().to_le_bytes());
            }
            kv.set(&format!("v{i}"), Value::Bytes(v.into()), SetOptions::new())
                .await
                .unwrap();
        }
        // Warm-up: every block once through each store, every value once.
        let sizes: Vec<u64> = bare_bodies.iter().map(|b| b.len() as u64).collect();
        for (p, size) in paths.iter().zip(&sizes) {
            let mut at = 0;
            while at < *size {
                let r = at..(at + RANGE).min(*size);
                never.get_range(p, r.clone()).await.unwrap();
                tier_store.get_range(p, r).await.unwrap();
                at += DEFAULT_BLOCK_SIZE;
            }
        }
        never.settle().await;
        tier_store.settle().await;
        for i in 0..KV_KEYS {
            assert!(kv.get(&format!("v{i}")).await.unwrap().is_some());
        }
        let before = counts.tally();
        let tier_before = tiered.tier_counts();
        let (mut t_disk, mut t_tier, mut t_kv) = (
            Vec::with_capacity(n_ranges),
            Vec::with_capacity(n_ranges),
            Vec::with_capacity(n_ranges),
        );
        for _ in 0..n_ranges {
            let f = (rng.next() % files as u64) as usize;
            let off = rng.next() % (sizes[f] - RANGE + 1);
            let want = bare_bodies[f].slice(off as usize..(off + RANGE) as usize);
            let key = format!("v{}", rng.next() % KV_KEYS as u64);
            let t = Instant::now();
            let a = never.get_range(&paths[f], off..off + RANGE).await.unwrap();
            t_disk.push(t.elapsed());
            let t = Instant::now();
            let b = tier_store
                .get_range(&paths[f], off..off + RANGE)
                .await
                .unwrap();
            t_tier.push(t.elapsed());
            let t = Instant::now();
            let c = kv.get(&key).await.unwrap();
            t_kv.push(t.elapsed());
            assert!(a == want && b == want, "a range read returned other bytes");
            assert_eq!(c.map(|v| v.into_bytes().len()), Some(RANGE as usize));
        }
        let range_tally = counts.tally().since(before);
        let tier_after = tiered.tier_counts();
        assert_eq!(
            range_tally.requests(),
            0,
            "warm range reads with Revalidate::Never ask nothing of the inner store"
        );
        assert!(
            tier_after.memory - tier_before.memory >= n_ranges as u64,
            "the TieredCache served the range reads from memory: {tier_before:?} -> {tier_after:?}"
        );
        let hwm_ranges = vmhwm_kb();
        (
            runs,
            (bare_time, bare_tally, scans),
            (block_set, block_get, lat(&mut t_block)),
            (lat(&mut t_disk), lat(&mut t_tier), lat(&mut t_kv)),
            [hwm_sql, hwm_scan, hwm_ranges],
        )
    });
    let (
        runs,
        (bare_time, bare_tally, scans),
        (block_set, block_get, block),
        (disk, tier, kv),
        [hwm_sql, hwm_scan, hwm_ranges],
    ) = out;
    let hwm_end = vmhwm_kb();

    // ------------------------------------------------------------ print
    // Runs: (a); (b), (c), (d) with the defaults; (b'), (c'), (d') with
    // Revalidate::Never. Each warm run is compared with the cold run of
    // its group.
    let bare = &runs[0];
    println!(
        "\n== CachedStore under DataFusion: count and sum of every column over {:.1} MiB, {latency_ms} ms per request ==",
        mib(total)
    );
    println!(
        "{:<46} {:>8} {:>9} {:>14} {:>10} {:>10}",
        "run", "time s", "requests", "GET/HEAD/LIST", "MiB inner", "cold/this"
    );
    for (i, r) in runs.iter().enumerate() {
        println!(
            "{:<46} {:>8.3} {:>9} {:>14} {:>10.1} {:>10}",
            r.label,
            r.secs,
            r.tally.requests(),
            format!("{}/{}/{}", r.tally.gets, r.tally.heads, r.tally.lists),
            mib(r.tally.bytes),
            if i == 0 {
                String::new()
            } else {
                format!("{:.2}x", cold_of(&runs, i).secs / r.secs)
            }
        );
    }
    println!("answers: all {} equal", runs.len());
    println!(
        "cold - bare: (b) {:.2} s, (b') {:.2} s; the same {} blocks set into a DiskCache alone, one at a time: {:.2} s ({:.0} MiB/s)",
        runs[1].secs - bare.secs,
        runs[4].secs - bare.secs,
        block.n,
        block_set.as_secs_f64(),
        mib(total) / block_set.as_secs_f64()
    );

    println!(
        "\n== byte scan: {files} objects read whole with get, one at a time; collected into one buffer unless streamed =="
    );
    println!(
        "{:<46} {:>8} {:>9} {:>11} {:>12}",
        "store", "time s", "requests", "MiB inner", "bare/this"
    );
    println!(
        "{:<46} {:>8.3} {:>9} {:>11.1} {:>11.2}x",
        "bare inner store (cold)",
        bare_time.as_secs_f64(),
        bare_tally.requests(),
        mib(bare_tally.bytes),
        1.0
    );
    for (label, _, time, tally) in &scans {
        println!(
            "{:<46} {:>8.3} {:>9} {:>11.1} {:>11.2}x",
            label,
            time.as_secs_f64(),
            tally.requests(),
            mib(tally.bytes),
            bare_time.as_secs_f64() / time.as_secs_f64()
        );
    }
    println!(
        "{:<46} {:>8.3} {:>9} {:>11} {:>11.2}x",
        "DiskCache::get of the same blocks alone",
        block_get.as_secs_f64(),
        "",
        "",
        bare_time.as_secs_f64() / block_get.as_secs_f64()
    );

    println!(
        "\n== warm {} KiB range reads ({n_ranges}, random offsets; Revalidate::Never): µs ==",
        RANGE >> 10
    );
    println!(
        "{:<46} {:>9} {:>9} {:>13}",
        "read", "p50", "p99", "p50/DiskCache"
    );
    let rows_lat: [(&str, &Lat); 4] = [
        ("CachedStore::get_range, DiskCache", &disk),
        ("CachedStore::get_range, TieredCache", &tier),
        ("DiskCache::get of a 64 KiB value", &kv),
        ("DiskCache::get of an 8 MiB block", &block),
    ];
    for (name, l) in rows_lat {
        println!(
            "{:<46} {:>9.1} {:>9.1} {:>12.2}x",
            name,
            l.p50,
            l.p99,
            l.p50 / kv.p50
        );
    }
    println!(
        "VmHWM (this process): {:.0} MiB at the start of the section, {:.0} MiB after writing the dataset, {:.0} after the SQL runs, {:.0} after the byte scans, {:.0} after the range reads (memory tier filled), {:.0} at the end",
        hwm_start as f64 / 1024.0,
        hwm_data as f64 / 1024.0,
        hwm_sql as f64 / 1024.0,
        hwm_scan as f64 / 1024.0,
        hwm_ranges as f64 / 1024.0,
        hwm_end as f64 / 1024.0,
    );

    // ------------------------------------------------------------ targets
    warm_bytes_target(report, "CachedStore SQL warm bytes from inner", &runs);
    let names = [
        "CachedStore SQL (b)/(c) warm, same handle",
        "CachedStore SQL (b)/(d) warm, new handle",
        "CachedStore SQL (b')/(c') Never, same handle",
        "CachedStore SQL (b')/(d') Never, new handle",
    ];
    warm_targets(report, &runs, names, |r, cold| {
        format!(
            "{:.2} s / {:.2} s; {} requests; bare cold (a): {:.2} s",
            cold.secs,
            r.secs,
            r.tally.requests(),
            bare.secs
        )
    });
    for i in [1, 4] {
        let cold = &runs[i];
        let tag = if i == 1 { "(b)" } else { "(b') Never" };
        report.target(
            &format!("CachedStore SQL cold {tag} time / bare"),
            cold.secs / bare.secs,
            "x",
            1.05,
            true,
        );
        report.note_last(format!(
            "{:.2} s / {:.2} s; the blocks set into a DiskCache alone: {:.2} s",
            cold.secs,
            bare.secs,
            block_set.as_secs_f64()
        ));
        cold_requests_target(report, "CachedStore SQL", tag, cold, bare);
    }
    report.target(
        "CachedStore 64 KiB range p50 / DiskCache get",
        disk.p50 / kv.p50,
        "x",
        2.0,
        true,
    );
    report.note_last(format!(
        "{:.1} / {:.1} µs; a range reads the 64 KiB pieces of its {} MiB block that hold it",
        disk.p50,
        kv.p50,
        DEFAULT_BLOCK_SIZE >> 20
    ));

    report.sections.push((
        "store".into(),
        json!({
            "dataset": {"files": files, "nominal_mib": nominal_mb, "bytes": total, "rows": rows,
                "columns": 8, "write_secs": r3(write_secs)},
            "inner": {"store": "InMemory, ThrottledStore, counted", "latency_ms_per_get": latency_ms},
            "block_size": DEFAULT_BLOCK_SIZE,
            "sql": {
                "query": QUERY,
                "answer": bare.answer,
                "runs": runs_json(&runs),
            },
            "byte_scan": {
                "bare": {"secs": r3(bare_time.as_secs_f64()), "inner": bare_tally.json()},
                "warm": scans.iter().map(|(label, slug, time, tally)| json!({
                    "label": label, "revalidate": slug, "secs": r3(time.as_secs_f64()),
                    "inner": tally.json(), "bare_over_this": r3(bare_time.as_secs_f64() / time.as_secs_f64()),
                })).collect::<Vec<_>>(),
            },
            "disk_cache_blocks": {
                "blocks": block.n, "set_secs": r3(block_set.as_secs_f64()),
                "get_secs": r3(block_get.as_secs_f64()), "get": lat_json(&block),
            },
            "ranges": {
                "bytes": RANGE, "reads": n_ranges, "revalidate": "Never",
                "cached_store_disk": lat_json(&disk),
                "cached_store_tiered": lat_json(&tier),
                "disk_cache_get": lat_json(&kv),
                "disk_over_kv_p50": r3(disk.p50 / kv.p50),
                "tiered_over_kv_p50": r3(tier.p50 / kv.p50),
            },
            "vmhwm_kib": {"start": hwm_start, "dataset": hwm_data, "sql": hwm_sql,
                "byte_scan": hwm_scan, "ranges": hwm_ranges, "end": hwm_end},
        }),
    ));
}

// ---------------------------------------------------------------- on S3

/// The SQL runs again with the local S3 server (moto) as the inner store,
/// behind the same 50 ms per request and the same counting wrapper: a
/// store that costs bytes as well as requests, as S3 does. `answer` is the
/// bare in-memory run's, which every run here must give too.
#[cfg(feature = "aws")]
pub(crate) fn section_s3(base: &FsPath, report: &mut Report) {
    let nominal_mb = env_usize("ETL_BENCH_STORE_S3_MB", 1024).max(1);
    let files = env_usize("ETL_BENCH_STORE_FILES", 8).max(1);
    let latency_ms = env_usize("ETL_BENCH_STORE_LATENCY_MS", 50);
    let rows_per_file = ((nominal_mb << 20) / files / ROW_BYTES).max((1 << 20) / ROW_BYTES);
    let Some(moto) = super::start_moto() else {
        println!(
            "\n(moto_server not found: the CachedStore-on-S3 runs are left out; scripts/install-test-servers.sh installs it)"
        );
        return;
    };
    println!(
        "\n== CachedStore on S3 (moto on 127.0.0.1): {nominal_mb} MiB of Parquet in {files} files, {latency_ms} ms per GET/HEAD =="
    );
    let s3: Arc<dyn ObjectStore> = Arc::new(moto.s3());
    let rt = runtime();
    let t = Instant::now();
    let (_, total) = put_dataset(&rt, s3.as_ref(), files, rows_per_file, "uploaded");
    let rows = rows_per_file * files;
    println!(
        "dataset: {:.1} MiB, {rows} rows, uploaded in {:.1} s",
        mib(total),
        t.elapsed().as_secs_f64()
    );
    let (inner, counts) = throttled_counted(s3, latency_ms);
    let dir = tempfile::tempdir_in(base).unwrap();
    let dir_never = tempfile::tempdir_in(base).unwrap();
    let runs = rt.block_on(async {
        let mut runs = vec![bare_run("(a) bare S3, cold", &inner, &counts).await];
        for (revalidate, dir, labels) in [
            (
                Revalidate::Always,
                dir.path(),
                [
                    ("(b) CachedStore on S3, empty cache, cold", "cold"),
                    ("(c) same CachedStore again, warm", "warm_same"),
                    ("(d) new CachedStore, same dir, warm", "warm_new"),
                ],
            ),
            (Revalidate::Never, dir_never.path(), NEVER_LABELS),
        ] {
            let (more, last) = cached_runs(&inner, dir, revalidate, labels, &counts).await;
            last.settle().await;
            runs.extend(more);
        }
        runs
    });
    drop(moto);
    check_answers(&runs, rows, "bare S3");
    let bare = &runs[0];
    warm_bytes_target(report, "CachedStore on S3: warm bytes from inner", &runs);
    let names = [
        "CachedStore on S3 (b)/(c) warm, same handle",
        "CachedStore on S3 (b)/(d) warm, new handle",
        "CachedStore on S3 (b')/(c') Never, same",
        "CachedStore on S3 (b')/(d') Never, new handle",
    ];
    warm_targets(report, &runs, names, |r, cold| {
        format!(
            "{:.2} s / {:.2} s; {} requests",
            cold.secs,
            r.secs,
            r.tally.requests()
        )
    });
    for (i, tag) in [(1, "(b)"), (4, "(b') Never")] {
        let cold = &runs[i];
        report.target(
            &format!("CachedStore on S3 cold {tag} time / bare"),
            cold.secs / bare.secs,
            "x",
            1.05,
            true,
        );
        report.note_last(format!("{:.2} s / {:.2} s", cold.secs, bare.secs));
        cold_requests_target(report, "CachedStore on S3", tag, cold, bare);
    }
    report.sections.push((
        "store_s3".into(),
        json!({
            "dataset": {"files": files, "nominal_mib": nominal_mb, "bytes": total, "rows": rows},
            "inner": {"store": "S3 (moto), ThrottledStore, counted", "latency_ms_per_get": latency_ms},
            "runs": runs_json(&runs),
        }),
    ));
}
