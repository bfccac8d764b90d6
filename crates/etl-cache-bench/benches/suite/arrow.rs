//! The `arrow` section: record batches through a `DiskCache` beside
//! arrow-ipc's own file writer and reader on a plain file, and a cached
//! DataFusion result beside the query that computes it.
//!
//! - 1 GiB (`ETL_BENCH_ARROW_MB`) of mixed-type batches (Int64, Float64,
//!   Utf8, a dictionary column; 64 Ki rows each), written and read with zstd
//!   bodies: `set_batches` / `get_batches` against `FileWriter` /
//!   `FileReader` on a file in the same directory. Each phase runs in a
//!   child process, for its time and its peak RSS; the median of
//!   `ETL_BENCH_ARROW_REPS` (default 3) runs of each, alternating.
//! - A DataFusion aggregation over a Parquet table (4 M rows) computed, and
//!   the same result read back through `cached_dataframe` (a hit).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    ArrayRef, DictionaryArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use datafusion::arrow::ipc::CompressionType;
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::{FileWriter, IpcWriteOptions};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use etl_cache::arrow::datafusion::cached_dataframe;
use etl_cache::arrow::{ArrowCacheExt, ArrowOptions};
use etl_cache::{Cache, DiskCache};
use futures::TryStreamExt;
use serde_json::{Value as Json, json};

use super::{Report, child_env, env_usize, median, r3, run_child, runtime, vmhwm_kb};

const ROWS_PER_BATCH: usize = 64 << 10;
/// Distinct batches, handed out in turn: built once, so that the phases
/// time the writing and reading, not the making of data.
const DISTINCT: usize = 8;
const KEY: &str = "bench/arrow";
const RAW_FILE: &str = "raw.arrow";

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("amount", DataType::Float64, true),
        Field::new("name", DataType::Utf8, false),
        Field::new_dictionary("region", DataType::Int32, DataType::Utf8, false),
    ]))
}

/// Batch `n`: made-up rows that compress about as real tables do.
fn batch(schema: &SchemaRef, n: usize) -> RecordBatch {
    let base = (n * ROWS_PER_BATCH) as i64;
    let ids: Vec<i64> = (base..base + ROWS_PER_BATCH as i64).collect();
    let regions = StringArray::from(vec!["north", "south", "east", "west", "central"]);
    let keys = Int32Array::from_iter_values(ids.iter().map(|i| ((i * 31) % 5) as i32));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(Float64Array::from_iter(ids.iter().map(|i| {
            (i % 17 != 0).then(|| ((i * 104_729) % 1_000_000) as f64 / 100.0)
        }))),
        Arc::new(StringArray::from_iter_values(
            ids.iter()
                .map(|i| format!("customer-{:08}", (i * 7_919) % 3_000_000)),
        )),
        Arc::new(DictionaryArray::<Int32Type>::try_new(keys, Arc::new(regions)).unwrap()),
    ];
    RecordBatch::try_new(schema.clone(), columns).unwrap()
}

/// The batches of about `mb` MiB (in memory), cycling through `DISTINCT`.
fn batches(mb: usize) -> (SchemaRef, Vec<RecordBatch>) {
    let schema = schema();
    let pool: Vec<RecordBatch> = (0..DISTINCT).map(|n| batch(&schema, n)).collect();
    let per = pool[0].get_array_memory_size();
    let count = ((mb << 20) / per).max(1);
    let all = (0..count).map(|n| pool[n % DISTINCT].clone()).collect();
    (schema, all)
}

/// One phase, in a child process: `{"secs", "rows", "bytes", "peak_rss_kb"}`.
pub(super) fn child() -> Json {
    let imp = child_env("ETL_BENCH_CHILD_IMPL");
    let op = child_env("ETL_BENCH_CHILD_OP");
    let dir = std::path::PathBuf::from(child_env("ETL_BENCH_CHILD_DIR"));
    let mb: usize = child_env("ETL_BENCH_CHILD_MB").parse().unwrap();
    let rt = runtime();
    let (secs, rows, bytes) = match (imp.as_str(), op.as_str()) {
        ("ours", "write") => {
            let (schema, all) = batches(mb);
            let rows: usize = all.iter().map(RecordBatch::num_rows).sum();
            rt.block_on(async {
                let cache = DiskCache::open(&dir).await.unwrap();
                let t = Instant::now();
                let s = futures::stream::iter(all.into_iter().map(Ok::<_, std::io::Error>));
                let meta = cache
                    .set_batches(KEY, schema, s, ArrowOptions::new())
                    .await
                    .unwrap();
                (t.elapsed(), rows, meta.logical_len)
            })
        }
        ("raw", "write") => {
            let (schema, all) = batches(mb);
            let rows: usize = all.iter().map(RecordBatch::num_rows).sum();
            let t = Instant::now();
            let file = std::fs::File::create(dir.join(RAW_FILE)).unwrap();
            let opts = IpcWriteOptions::default()
                .try_with_compression(Some(CompressionType::ZSTD))
                .unwrap();
            let mut w =
                FileWriter::try_new_with_options(std::io::BufWriter::new(file), &schema, opts)
                    .unwrap();
            for b in &all {
                w.write(b).unwrap();
            }
            w.finish().unwrap();
            drop(w);
            let len = std::fs::metadata(dir.join(RAW_FILE)).unwrap().len();
            (t.elapsed(), rows, len)
        }
        ("ours", "read") => rt.block_on(async {
            let cache = DiskCache::open(&dir).await.unwrap();
            let t = Instant::now();
            let (_, mut s) = cache.get_batches(KEY).await.unwrap().unwrap();
            let mut rows = 0;
            while let Some(b) = s.try_next().await.unwrap() {
                rows += b.num_rows();
            }
            let len = cache.head(KEY).await.unwrap().unwrap().logical_len;
            (t.elapsed(), rows, len)
        }),
        ("raw", "read") => {
            let t = Instant::now();
            let file = std::fs::File::open(dir.join(RAW_FILE)).unwrap();
            let reader = FileReader::try_new(std::io::BufReader::new(file), None).unwrap();
            let mut rows = 0;
            for b in reader {
                rows += b.unwrap().num_rows();
            }
            let len = std::fs::metadata(dir.join(RAW_FILE)).unwrap().len();
            (t.elapsed(), rows, len)
        }
        other => panic!("unknown arrow phase {other:?}"),
    };
    json!({"secs": secs.as_secs_f64(), "rows": rows, "bytes": bytes, "peak_rss_kb": vmhwm_kb()})
}

/// The batches of one run, in memory: what a phase holds before it starts.
fn held_mb(mb: usize) -> f64 {
    let (_, all) = batches(mb);
    let per = all[0].get_array_memory_size() as f64;
    // The distinct batches are the memory; the rest are handles on them.
    per * DISTINCT.min(all.len()) as f64 / (1 << 20) as f64
}

pub(super) fn section(base: &Path, report: &mut Report) {
    let mb = env_usize("ETL_BENCH_ARROW_MB", 1024);
    let reps = env_usize("ETL_BENCH_ARROW_REPS", 3).max(1);
    let dir = base.join("arrow");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "\n== Arrow batches, {mb} MiB in memory, zstd bodies: through DiskCache and arrow-ipc on a plain file =="
    );
    let phase = |imp: &str, op: &str| {
        run_child(
            "arrow",
            &[
                ("ETL_BENCH_CHILD_IMPL", imp.to_owned()),
                ("ETL_BENCH_CHILD_OP", op.to_owned()),
                ("ETL_BENCH_CHILD_DIR", dir.display().to_string()),
                ("ETL_BENCH_CHILD_MB", mb.to_string()),
            ],
        )
    };
    let mut runs: Vec<(String, Json)> = Vec::new();
    for rep in 0..reps {
        // Alternate which side goes first.
        let order: [&str; 2] = if rep % 2 == 0 {
            ["ours", "raw"]
        } else {
            ["raw", "ours"]
        };
        for op in ["write", "read"] {
            for imp in order {
                runs.push((format!("{imp}-{op}"), phase(imp, op)));
            }
        }
    }
    let get = |name: &str, field: &str| -> Vec<f64> {
        runs.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, j)| j[field].as_f64().unwrap())
            .collect()
    };
    let rows = runs[0].1["rows"].as_u64().unwrap();
    let held = held_mb(mb);
    println!(
        "{:<24}{:>12}{:>12}{:>14}{:>14}",
        "implementation", "write s", "read s", "write RSS", "read RSS"
    );
    let mut rows_json = Vec::new();
    for (imp, name) in [("ours", "etl-cache DiskCache"), ("raw", "arrow-ipc file")] {
        let (w, r) = (
            median(get(&format!("{imp}-write"), "secs")),
            median(get(&format!("{imp}-read"), "secs")),
        );
        let (wr, rr) = (
            median(get(&format!("{imp}-write"), "peak_rss_kb")) / 1024.0,
            median(get(&format!("{imp}-read"), "peak_rss_kb")) / 1024.0,
        );
        println!("{name:<24}{w:>12.3}{r:>12.3}{wr:>11.1} MB{rr:>11.1} MB");
        rows_json.push(
            json!({"implementation": name, "write_s": r3(w), "read_s": r3(r),
            "write_peak_rss_mb": r3(wr), "read_peak_rss_mb": r3(rr)}),
        );
    }
    let ours_w = median(get("ours-write", "secs"));
    let raw_w = median(get("raw-write", "secs"));
    let ours_r = median(get("ours-read", "secs"));
    let raw_r = median(get("raw-read", "secs"));
    let stored = runs
        .iter()
        .find(|(n, _)| n == "ours-write")
        .map(|(_, j)| j["bytes"].as_u64().unwrap())
        .unwrap();
    println!(
        "{rows} rows, {:.0} MiB stored; ours / arrow-ipc throughput: write {:.2}x, read {:.2}x (median of {reps})",
        stored as f64 / (1 << 20) as f64,
        raw_w / ours_w,
        raw_r / ours_r
    );
    report.target(
        "Arrow 1 GiB write vs arrow-ipc file",
        raw_w / ours_w,
        "x",
        0.9,
        false,
    );
    report.note_last(format!("median of {reps}; zstd bodies"));
    report.target(
        "Arrow 1 GiB read vs arrow-ipc file",
        raw_r / ours_r,
        "x",
        0.9,
        false,
    );
    report.note_last(format!("median of {reps}"));
    // Peak RSS beyond the batches the writer holds before it starts (the
    // input), and in total for the read.
    let limit_mb = |batch_mb: f64| 2.0 * batch_mb + 64.0;
    let batch_mb = held / DISTINCT as f64;
    let write_rss = median(get("ours-write", "peak_rss_kb")) / 1024.0 - held;
    let read_rss = median(get("ours-read", "peak_rss_kb")) / 1024.0;
    report.target(
        "Arrow write peak RSS beyond its input",
        write_rss,
        "MB",
        limit_mb(batch_mb),
        true,
    );
    report.note_last(format!("2 batches of {batch_mb:.1} MB + 64 MB"));
    report.target(
        "Arrow read peak RSS",
        read_rss,
        "MB",
        limit_mb(batch_mb),
        true,
    );
    report.note_last(format!("2 batches of {batch_mb:.1} MB + 64 MB"));

    let df = dataframe(&dir);
    report.sections.push((
        "arrow".into(),
        json!({"mb": mb, "reps": reps, "rows": rows, "stored_bytes": stored,
            "rows_by_implementation": rows_json,
            "write_ratio": r3(raw_w / ours_w), "read_ratio": r3(raw_r / ours_r),
            "datafusion": df}),
    ));
}

/// Two DataFusion results computed from Parquet (4 Mi rows in 4 files),
/// and the same results read through `cached_dataframe` once stored: a
/// small aggregate (5 rows) and a large selection (about 1 Mi rows, every
/// column but the dictionary). Medians of 5.
fn dataframe(dir: &Path) -> Json {
    let rt = runtime();
    rt.block_on(async {
        let table = dir.join("sales");
        std::fs::create_dir_all(&table).unwrap();
        let schema = schema();
        for f in 0..4 {
            let file = std::fs::File::create(table.join(format!("part-{f}.parquet"))).unwrap();
            let mut w = ArrowWriter::try_new(file, schema.clone(), None).unwrap();
            for n in 0..16 {
                w.write(&batch(&schema, f * 16 + n)).unwrap();
            }
            w.close().unwrap();
        }
        let queries = [
            (
                "aggregate",
                // Decimal sums: the same answer whatever order the
                // partitions are added in, so the two results compare equal.
                "SELECT region, count(*) AS orders, \
                 sum(CAST(amount AS DECIMAL(18, 2))) AS revenue, \
                 count(DISTINCT name) AS customers FROM sales GROUP BY region ORDER BY region",
            ),
            (
                "selection",
                "SELECT id, name, amount FROM sales WHERE id % 4 = 0 ORDER BY id",
            ),
        ];
        let ctx = SessionContext::new();
        ctx.register_parquet("sales", table.to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap();
        let cache: Arc<dyn Cache> = Arc::new(DiskCache::open(dir.join("df-cache")).await.unwrap());
        let mut out = Vec::new();
        for (label, query) in queries {
            let key = format!("df/{label}");
            let mut computed = Vec::new();
            let mut cached = Vec::new();
            let mut rows = 0;
            for _ in 0..5 {
                let t = Instant::now();
                let direct = ctx.sql(query).await.unwrap().collect().await.unwrap();
                computed.push(t.elapsed().as_secs_f64());
                cache.delete(&key).await.unwrap();
                cached_dataframe(&ctx, cache.clone(), &key, ArrowOptions::new(), || ctx.sql(query))
                    .await
                    .unwrap()
                    .collect()
                    .await
                    .unwrap();
                let t = Instant::now();
                let hit = cached_dataframe(&ctx, cache.clone(), &key, ArrowOptions::new(), || async {
                    unreachable!("stored above")
                })
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
                cached.push(t.elapsed().as_secs_f64());
                let direct = concat_batches(&direct[0].schema(), &direct).unwrap();
                let hit = concat_batches(&hit[0].schema(), &hit).unwrap();
                assert_eq!(hit, direct, "the cached {label} differs from the computed one");
                rows = direct.num_rows();
            }
            let (c, h) = (median(computed), median(cached));
            println!(
                "DataFusion {label} ({rows} rows) over 4 Mi Parquet rows: computed {:.1} ms, read from the cache {:.2} ms: {:.1}x faster (median of 5)",
                c * 1e3,
                h * 1e3,
                c / h
            );
            out.push(json!({"query": label, "rows": rows, "computed_ms": r3(c * 1e3),
                "cached_ms": r3(h * 1e3), "speedup": r3(c / h)}));
        }
        Json::Array(out)
    })
}
