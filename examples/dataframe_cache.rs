//! A DataFusion pipeline whose expensive query result is cached.
//!
//! ```text
//! cargo run --release -p etl-cache-example-datafusion --bin dataframe_cache
//! ```
//!
//! It needs no set-up. The first time, it writes a Parquet table of sales
//! (4 million rows, in `.etl-cache-example/sales`) to stand for a lake
//! table. Then the pipeline runs twice, each time as a new process would
//! (a new `SessionContext`, a new cache handle on `.etl-cache-example/cache`):
//!
//! - **transform**: revenue, orders and distinct customers per region and
//!   month, with each region's share of the month: a scan of every row, two
//!   aggregations and a join. Through [`cached_dataframe`] it runs only when
//!   the cache has no result under its key; the result is stored as an
//!   Arrow IPC file (zstd) that pyarrow and Polars open as it is;
//! - **load**: the rows of the result, sent on (printed here).
//!
//! The second run reads the result from the cache and says how much time it
//! saved. The key names what the result depends on (the query's version
//! and the table's files): change either and the step runs again. Run the
//! example again to see both runs served from the cache; delete
//! `.etl-cache-example` to start over.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::error::Result;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use etl_cache_arrow::ArrowOptions;
use etl_cache_arrow::datafusion::cached_dataframe;
use etl_cache_core::Cache;
use etl_cache_fs::DiskCache;

/// Rows of the sales table (`ETL_CACHE_EXAMPLE_ROWS` to change it).
const ROWS: usize = 4_000_000;
const FILES: usize = 8;

/// The query's version: bump it when the query changes.
const QUERY_VERSION: &str = "revenue-by-region-month/v1";

const QUERY: &str = "
WITH monthly AS (
    SELECT region, month,
           SUM(amount) AS revenue,
           COUNT(*) AS orders,
           COUNT(DISTINCT customer) AS customers
    FROM sales
    GROUP BY region, month
),
totals AS (
    SELECT month, SUM(revenue) AS month_revenue FROM monthly GROUP BY month
)
SELECT m.region, m.month, m.revenue, m.orders, m.customers,
       ROUND(100.0 * m.revenue / t.month_revenue, 2) AS share_pct
FROM monthly m JOIN totals t ON m.month = t.month
ORDER BY m.month, m.revenue DESC";

/// Writes the sales table once: `FILES` Parquet files of made-up orders.
fn write_sales(dir: &Path, rows: usize) -> Result<()> {
    if dir.join(format!("part-{}.parquet", FILES - 1)).exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("customer", DataType::Int64, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("month", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
    ]));
    let regions = ["north", "south", "east", "west", "central"];
    let per_file = rows / FILES;
    for f in 0..FILES {
        let tmp = dir.join(format!("part-{f}.parquet.tmp"));
        let mut writer = ArrowWriter::try_new(std::fs::File::create(&tmp)?, schema.clone(), None)?;
        for start in (0..per_file).step_by(100_000) {
            let ids: Vec<i64> = (start..(start + 100_000).min(per_file))
                .map(|i| (f * per_file + i) as i64)
                .collect();
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(ids.clone())),
                    Arc::new(Int64Array::from_iter_values(
                        ids.iter().map(|i| (i * 7_919) % 250_000),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        ids.iter().map(|i| regions[(i % 5) as usize]),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        ids.iter().map(|i| format!("2026-{:02}", 1 + i % 12)),
                    )),
                    Arc::new(Float64Array::from_iter_values(
                        ids.iter().map(|i| ((i * 104_729) % 50_000) as f64 / 100.0),
                    )),
                ],
            )?;
            writer.write(&batch)?;
        }
        writer.close()?;
        std::fs::rename(&tmp, dir.join(format!("part-{f}.parquet")))?;
    }
    Ok(())
}

/// What the result depends on: the query's version and the table's files
/// (names, sizes, modification times). A new file or a rewritten one makes
/// a new key, so a stale result is never served.
fn result_key(sales: &Path) -> Result<String> {
    let mut files: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(sales)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        let modified = meta
            .modified()?
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        files.push(format!(
            "{}:{}:{modified}",
            entry.file_name().to_string_lossy(),
            meta.len()
        ));
    }
    files.sort();
    let digest = files.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, f| {
        f.bytes()
            .fold(h, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    });
    Ok(format!("{QUERY_VERSION}/{digest:016x}"))
}

/// One run of the pipeline, as a new process would run it: the time it took
/// and whether the transform ran.
async fn run(root: &Path, sales: &Path) -> Result<(Duration, bool)> {
    let started = Instant::now();
    let ctx = SessionContext::new();
    ctx.register_parquet(
        "sales",
        sales.to_str().expect("a UTF-8 path"),
        ParquetReadOptions::default(),
    )
    .await?;
    let cache: Arc<dyn Cache> = Arc::new(
        DiskCache::open(root.join("cache"))
            .await
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?,
    );
    let key = result_key(sales)?;
    let computed = AtomicBool::new(false);
    let result = cached_dataframe(&ctx, cache, &key, ArrowOptions::new(), || async {
        computed.store(true, Ordering::SeqCst);
        ctx.sql(QUERY).await
    })
    .await?;
    // Load: the result's rows, sent on.
    let batches = result.collect().await?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let first: Vec<RecordBatch> = batches
        .first()
        .map(|b| vec![b.slice(0, b.num_rows().min(5))])
        .unwrap_or_default();
    println!("{}", pretty_format_batches(&first)?);
    println!("loaded {rows} rows");
    Ok((started.elapsed(), computed.load(Ordering::SeqCst)))
}

/// [`run`], then a line saying how long the `which` run took and whether
/// the transform ran.
async fn reported_run(root: &Path, sales: &Path, which: &str) -> Result<(Duration, bool)> {
    let (time, computed) = run(root, sales).await?;
    println!(
        "{which} run: {:.2}s, transform {}",
        time.as_secs_f64(),
        if computed {
            "ran"
        } else {
            "read from the cache"
        }
    );
    Ok((time, computed))
}

#[tokio::main]
async fn main() -> Result<()> {
    let root = PathBuf::from(
        std::env::var_os("ETL_CACHE_EXAMPLE_DIR").unwrap_or_else(|| ".etl-cache-example".into()),
    );
    let rows = std::env::var("ETL_CACHE_EXAMPLE_ROWS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROWS);
    let sales = root.join("sales");
    println!("sales table: {rows} rows in {}", sales.display());
    write_sales(&sales, rows)?;

    println!("== first run ==");
    let (first, computed_first) = reported_run(&root, &sales, "first").await?;

    println!("\n== second run ==");
    let (second, computed_second) = reported_run(&root, &sales, "second").await?;
    if computed_first && !computed_second {
        let saved = first.saturating_sub(second);
        println!(
            "\nthe second run read the query's result from the cache and saved {:.2}s ({:.0}% of the first run)",
            saved.as_secs_f64(),
            100.0 * saved.as_secs_f64() / first.as_secs_f64()
        );
    } else if !computed_first {
        println!(
            "\nboth runs read the result from the cache (delete {} to start over)",
            root.display()
        );
    }
    Ok(())
}
