//! The seed's quick start on any S3-compatible store: text, JSON and a
//! stream with TTL and compression, read back, single flight, cleanup.
//!
//! ```text
//! ETL_CACHE_URL=s3://my-bucket/etl-cache      # bucket and prefix (required)
//! AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... AWS_REGION=eu-west-1
//! AWS_ENDPOINT=http://127.0.0.1:9000          # S3-compatible stores (MinIO, moto, R2…)
//! AWS_ALLOW_HTTP=true                         # when the endpoint is plain HTTP
//! cargo run -p etl-cache-object --features aws --example s3_quickstart
//! ```
//!
//! Any other `AWS_*` variable `object_store` knows applies too
//! (`AWS_SESSION_TOKEN`, `AWS_PROFILE`-less IMDS credentials, …).

use std::time::{Duration, Instant};

use bytes::Bytes;
use etl_cache_core::{Cache, CacheExt, Compression, SetOptions, Value};
use etl_cache_object::{ObjectCache, ObjectCacheBuilder};
use futures::{StreamExt, TryStreamExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var("ETL_CACHE_URL").is_err() {
        eprintln!("set ETL_CACHE_URL=s3://bucket/prefix (see the top of this example)");
        std::process::exit(2);
    }
    let cache: ObjectCache = ObjectCacheBuilder::from_env()?.build()?;
    println!(
        "cache at {:?} under {:?}",
        std::env::var("ETL_CACHE_URL")?,
        cache.prefix()
    );

    // Writing: TTL + compression, text and JSON.
    let xml = format!("<dataset>{}</dataset>", "<row v=\"42\"/>".repeat(50_000));
    let written = cache
        .set_text(
            "deve/financial_run_001",
            &xml,
            SetOptions::new().ttl_seconds(3600).compress(true),
        )
        .await?;
    println!(
        "set deve/financial_run_001: {} bytes stored for {} ({}), expires {:?}",
        written.stored_len, written.logical_len, written.codec, written.expires
    );
    cache
        .set_json(
            "job_123_stats",
            &serde_json::json!({"records_processed": 1042, "status": "success"}),
            SetOptions::new(),
        )
        .await?;

    // A stream of 64 MiB straight from a generator, compressed on the fly,
    // uploaded in parts: memory stays at a few parts.
    let chunks = futures::stream::iter(0..1024u32).map(|i| {
        let mut rows = format!("{i:08},ACME,EUR,{:>8}\n", i * 7).repeat(2800);
        rows.truncate(64 * 1024);
        Ok(Bytes::from(rows))
    });
    let meta = cache
        .set_stream(
            "my_folder/financial_data",
            chunks.boxed(),
            SetOptions::new()
                .ttl(Duration::from_secs(3600))
                .compression(Compression::zstd()),
        )
        .await?;
    println!(
        "set_stream my_folder/financial_data: {} bytes, {} stored",
        meta.logical_len, meta.stored_len
    );

    // Reading: expiry and codec are handled by the cache.
    let back = cache.get_text("deve/financial_run_001").await?;
    assert_eq!(back.as_deref(), Some(xml.as_str()));
    let stats: Option<serde_json::Value> = cache.get_json("job_123_stats").await?;
    println!("job_123_stats: {}", stats.expect("just written"));
    let stream = cache
        .get_stream("my_folder/financial_data", 64 * 1024)
        .await?
        .expect("just written");
    let (chunks, bytes) = stream
        .try_fold((0u64, 0u64), |(n, b), c| async move {
            Ok((n + 1, b + c.len() as u64))
        })
        .await?;
    println!("get_stream: {chunks} chunks, {bytes} bytes");
    assert_eq!(bytes, meta.logical_len);

    // Single flight: of many workers missing one key, one computes.
    let t = Instant::now();
    let v = cache
        .get_or_insert_with_timeout(
            "reference/exchange_rates",
            SetOptions::new().ttl_seconds(600),
            Duration::from_secs(60),
            || async { Ok::<_, etl_cache_core::Error>(Value::from(r#"{"EUR":1.0}"#)) },
        )
        .await?;
    println!(
        "get_or_insert_with_timeout: {:?} in {:?}",
        v.as_text(),
        t.elapsed()
    );

    println!("keys: {:?}", cache.keys(None).await?);
    for key in [
        "deve/financial_run_001",
        "job_123_stats",
        "my_folder/financial_data",
        "reference/exchange_rates",
    ] {
        cache.delete(key).await?;
    }
    let s = cache.stats().await?;
    println!(
        "stats: {} hits, {} misses, {} sets, {} entries left",
        s.hits, s.misses, s.sets, s.entries
    );
    println!("s3_quickstart: ok");
    Ok(())
}
