//! DataFusion runs one SQL query over Parquet files on S3 twice, reading
//! through a `CachedStore`: cold, then warm in a fresh session and a fresh
//! store opened on the same cache directory (as a rerun of a pipeline
//! would). It prints both times, what each run asked of S3, and checks that
//! both answers are the same.
//!
//! ```text
//! scripts/install-test-servers.sh        # once: moto's S3 server
//! cargo run --release -p etl-cache-example-datafusion
//! ```
//!
//! It starts moto on a free port of 127.0.0.1 (or uses the S3 endpoint in
//! `ETL_CACHE_S3_ENDPOINT`, with the `AWS_*` credentials of the environment).

#![forbid(unsafe_code)]

#[path = "../../../crates/etl-cache-object/tests/common/mod.rs"]
#[allow(missing_docs)] // dead_code: the module allows it itself
pub mod servers;

// `forward_object_store!`: the methods of the counting store (`counted`)
// that only pass the call on to S3.
#[path = "../../../crates/etl-cache-object/tests/support/forward.rs"]
#[macro_use]
mod forward;

// A store wrapper counting the requests to S3; the bench suite uses it too.
#[path = "counted.rs"]
mod counted;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use etl_cache_store::object_store::aws::AmazonS3Builder;
use etl_cache_store::object_store::path::Path;
use etl_cache_store::object_store::{ObjectStore, ObjectStoreExt};
use etl_cache_store::{CachedStore, Revalidate};

use counted::{Counted, Counts};
use etl_cache_store::object_store;

/// What one run of the query asked of S3, and what it answered.
#[derive(Debug)]
pub struct Scan {
    /// Wall time of the query.
    pub time: Duration,
    /// Get and head requests sent to S3.
    pub gets: u64,
    /// List requests sent to S3.
    pub lists: u64,
    /// Bytes read from S3.
    pub bytes: u64,
    /// The answer, as a table.
    pub answer: String,
}

/// The cold and the warm run.
#[derive(Debug)]
pub struct Report {
    /// The first run, on an empty cache.
    pub cold: Scan,
    /// The second, in a fresh session and store on the same cache directory.
    pub warm: Scan,
}

// The sum is taken as a decimal: a float sum depends on the order in which
// DataFusion's partitions add up, so two runs could differ in the last digits.
const QUERY: &str = "SELECT region, count(*) AS orders, \
                     sum(CAST(amount AS DECIMAL(18, 1))) AS total, max(id) AS last \
                     FROM orders GROUP BY region ORDER BY region";

fn batch(file: i64, rows: i64) -> RecordBatch {
    let regions = ["north", "south", "east", "west", "centre"];
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
    ]));
    let ids: Vec<i64> = (0..rows).map(|i| file * rows + i).collect();
    let region: Vec<&str> = ids.iter().map(|i| regions[(*i as usize * 7) % 5]).collect();
    let amount: Vec<f64> = ids
        .iter()
        .map(|i| ((i * 37) % 1000) as f64 / 10.0)
        .collect();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(region)),
            Arc::new(Float64Array::from(amount)),
        ],
    )
    .expect("columns match the schema")
}

/// Writes `files` Parquet files of `rows` rows under `orders/` in `store`.
pub async fn write_orders(
    store: &dyn ObjectStore,
    files: i64,
    rows: i64,
) -> Result<u64, Box<dyn std::error::Error>> {
    let mut total = 0;
    for f in 0..files {
        let b = batch(f, rows);
        let mut buf = Vec::new();
        let mut w = ArrowWriter::try_new(&mut buf, b.schema(), None)?;
        w.write(&b)?;
        w.close()?;
        total += buf.len() as u64;
        store
            .put(
                &Path::from(format!("orders/part-{f}.parquet")),
                Bytes::from(buf).into(),
            )
            .await?;
    }
    Ok(total)
}

async fn scan(
    s3: Arc<dyn ObjectStore>,
    bucket: &str,
    cache_dir: &std::path::Path,
) -> Result<(Scan, CachedStore), Box<dyn std::error::Error>> {
    let counts = Arc::new(Counts::default());
    let counted = Arc::new(Counted {
        inner: s3,
        counts: counts.clone(),
    });
    let store = CachedStore::builder(counted)
        .dir(cache_dir)
        .revalidate(Revalidate::Never)
        .build()
        .await?;
    let ctx = SessionContext::new();
    let url = url::Url::parse(&format!("s3://{bucket}"))?;
    ctx.register_object_store(&url, Arc::new(store.clone()));
    let t = Instant::now();
    ctx.register_parquet(
        "orders",
        &format!("s3://{bucket}/orders/"),
        ParquetReadOptions::default(),
    )
    .await?;
    let batches = ctx.sql(QUERY).await?.collect().await?;
    let time = t.elapsed();
    Ok((
        Scan {
            time,
            gets: counts.gets.load(Relaxed) + counts.heads.load(Relaxed),
            lists: counts.lists.load(Relaxed),
            bytes: counts.bytes.load(Relaxed),
            answer: pretty_format_batches(&batches)?.to_string(),
        },
        store,
    ))
}

/// Writes the table to the bucket (which must exist) and runs the query
/// cold and warm, the cache in `cache_dir`.
pub async fn run(
    s3: Arc<dyn ObjectStore>,
    bucket: &str,
    cache_dir: &std::path::Path,
    files: i64,
    rows: i64,
) -> Result<Report, Box<dyn std::error::Error>> {
    write_orders(s3.as_ref(), files, rows).await?;
    let (cold, first) = scan(s3.clone(), bucket, cache_dir).await?;
    // As a pipeline would before it exits: the blocks still being written
    // behind the scan are on disk.
    first.settle().await;
    drop(first);
    let (warm, _) = scan(s3, bucket, cache_dir).await?;
    Ok(Report { cold, warm })
}

/// An S3 store on `endpoint` for `bucket`, with moto's credentials unless
/// the environment has others.
pub fn s3_store(endpoint: &str, bucket: &str) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    Ok(Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_bucket_name(bucket)
            .with_region(var("AWS_REGION", "us-east-1"))
            .with_access_key_id(var("AWS_ACCESS_KEY_ID", "testing"))
            .with_secret_access_key(var("AWS_SECRET_ACCESS_KEY", "testing"))
            .build()?,
    ))
}

#[allow(dead_code)] // the test includes this file and calls `run` itself
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bucket = "etl-cache-datafusion";
    let (endpoint, _server) = match std::env::var("ETL_CACHE_S3_ENDPOINT") {
        Ok(e) => (e, None),
        Err(_) => {
            let server = servers::moto().ok_or(
                "no S3 endpoint: run scripts/install-test-servers.sh, or set ETL_CACHE_S3_ENDPOINT",
            )?;
            servers::create_bucket(&server, bucket);
            (server.endpoint(), Some(server))
        }
    };
    let dir = tempfile::tempdir()?;
    let s3 = s3_store(&endpoint, bucket)?;
    let r = run(s3, bucket, dir.path(), 8, 250_000).await?;
    println!("{}", r.warm.answer);
    for (name, s) in [("cold", &r.cold), ("warm", &r.warm)] {
        println!(
            "{name}: {:>8.1} ms, S3: {} gets, {} lists, {} bytes",
            s.time.as_secs_f64() * 1e3,
            s.gets,
            s.lists,
            s.bytes
        );
    }
    println!(
        "warm/cold time: {:.3}; the answers are {}",
        r.warm.time.as_secs_f64() / r.cold.time.as_secs_f64(),
        if r.cold.answer == r.warm.answer {
            "the same"
        } else {
            "DIFFERENT"
        }
    );
    if r.cold.answer != r.warm.answer {
        return Err("the warm answer differs from the cold one".into());
    }
    Ok(())
}
