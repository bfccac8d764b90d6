//! A small ETL pipeline that resumes from the cache after a failed load.
//!
//! Run it with `cargo run --example pipeline_resume`. It needs no set-up: the
//! cache lives in `.cache` in the working directory.
//!
//! - **extract** pages through a slow (simulated) API that returns about 50 MB
//!   of XML, streaming each page into the cache as it arrives;
//! - **transform** aggregates the rows into a CSV and a JSON summary, cached too;
//! - **load** sends the result to a (simulated) warehouse, which times out on
//!   the first run.
//!
//! The second run finds the extracted and transformed state in the cache and
//! goes straight to the load.

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use bytes::Bytes;
use etl_cache::{Cache, CacheExt, Compression, DiskCache, SetOptions, Value};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

const JOB: &str = "example/financial_run_001";
const PAGES: usize = 50;
const ROWS_PER_PAGE: usize = 10_500;

#[derive(Debug, Serialize, Deserialize)]
struct Summary {
    rows: u64,
    accounts: usize,
    total_cents: i64,
}

/// One page of the simulated API: about 1 MB of XML after 60 ms of latency.
async fn fetch_page(page: usize) -> io::Result<Bytes> {
    tokio::time::sleep(Duration::from_millis(60)).await;
    let mut xml = String::with_capacity(ROWS_PER_PAGE * 130);
    if page == 0 {
        xml.push_str("<dataset source=\"api.example.com\">\n");
    }
    for i in 0..ROWS_PER_PAGE {
        let id = page * ROWS_PER_PAGE + i;
        let account = id % 977;
        let cents = (id as i64 * 7919) % 100_000 - 50_000;
        xml.push_str(&format!(
            "  <txn id=\"{id}\" account=\"ACC-{account:04}\" amount_cents=\"{cents}\" currency=\"EUR\" booked=\"2026-11-{:02}\"/>\n",
            1 + id % 28
        ));
    }
    if page == PAGES - 1 {
        xml.push_str("</dataset>\n");
    }
    Ok(Bytes::from(xml))
}

/// Extract: stream every page of the API into the cache (zstd on the fly).
async fn extract(cache: &DiskCache, key: &str) -> etl_cache::Result<u64> {
    let pages = futures::stream::iter(0..PAGES).then(fetch_page).boxed();
    let meta = cache
        .set_stream(
            key,
            pages,
            SetOptions::new().compression(Compression::zstd()),
        )
        .await?;
    Ok(meta.logical_len)
}

/// Transform: read the raw XML back as a stream and aggregate per account.
async fn transform(
    cache: &DiskCache,
    raw_key: &str,
) -> Result<(String, Summary), Box<dyn std::error::Error>> {
    let stream = cache
        .get_stream(raw_key, 1 << 20)
        .await?
        .expect("extract just stored the raw XML");
    let mut per_account: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    let mut carry = String::new();
    let mut rows = 0u64;
    let mut chunks = stream.into_parts().1;
    while let Some(chunk) = chunks.try_next().await? {
        carry.push_str(&String::from_utf8_lossy(&chunk));
        let keep_from = carry.rfind('\n').map_or(0, |i| i + 1);
        for line in carry[..keep_from].lines() {
            let (Some(acc), Some(amount)) = (attr(line, "account"), attr(line, "amount_cents"))
            else {
                continue;
            };
            let e = per_account.entry(acc.to_owned()).or_default();
            e.0 += 1;
            e.1 += amount.parse::<i64>().unwrap_or(0);
            rows += 1;
        }
        carry.drain(..keep_from);
    }
    // Simulate the CPU cost of a heavier transformation.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut csv = String::from("account,transactions,total_cents\n");
    for (acc, (n, total)) in &per_account {
        csv.push_str(&format!("{acc},{n},{total}\n"));
    }
    let summary = Summary {
        rows,
        accounts: per_account.len(),
        total_cents: per_account.values().map(|v| v.1).sum(),
    };
    Ok((csv, summary))
}

fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// Load: the warehouse times out on the first attempt.
async fn load(csv: &str, attempt: u32) -> Result<(), String> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    if attempt == 1 {
        return Err("warehouse connection timed out after 200 ms (simulated)".into());
    }
    println!(
        "  load:      {} bytes of CSV written to the warehouse",
        csv.len()
    );
    Ok(())
}

async fn run(cache: &DiskCache, attempt: u32) -> Result<Duration, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let raw_key = format!("{JOB}/raw.xml");
    let csv_key = format!("{JOB}/accounts.csv");
    let summary_key = format!("{JOB}/summary");
    let day = SetOptions::new().ttl(Duration::from_secs(24 * 3600));

    let (csv, summary) = match (
        cache.get_text(&csv_key).await?,
        cache.get_json::<Summary>(&summary_key).await?,
    ) {
        (Some(csv), Some(summary)) => {
            println!("  extract:   skipped (transformed state found in the cache)");
            println!(
                "  transform: skipped ({} rows, {} accounts from the cache)",
                summary.rows, summary.accounts
            );
            (csv, summary)
        }
        _ => {
            let t = Instant::now();
            let bytes = match cache.head(&raw_key).await? {
                Some(meta) => {
                    println!("  extract:   skipped (raw XML found in the cache)");
                    meta.logical_len
                }
                None => extract(cache, &raw_key).await?,
            };
            println!(
                "  extract:   {:.1} MB of XML in {:.2?}",
                bytes as f64 / 1e6,
                t.elapsed()
            );
            let t = Instant::now();
            let (csv, summary) = transform(cache, &raw_key).await?;
            cache
                .set(
                    &csv_key,
                    Value::Text(csv.clone()),
                    day.compression(Compression::zstd()),
                )
                .await?;
            cache.set_json(&summary_key, &summary, day).await?;
            println!(
                "  transform: {} rows into {} accounts in {:.2?} (cached)",
                summary.rows,
                summary.accounts,
                t.elapsed()
            );
            (csv, summary)
        }
    };
    load(&csv, attempt).await?;
    println!(
        "  total of all accounts: {:.2} EUR",
        summary.total_cents as f64 / 100.0
    );
    Ok(started.elapsed())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cache = DiskCache::builder().max_bytes(2 << 30).build().await?;
    println!("cache: {}", std::fs::canonicalize(cache.root())?.display());
    // Start from scratch so the demonstration shows both runs every time.
    for key in cache.keys(Some(JOB)).await? {
        cache.delete(&key).await?;
    }

    println!("\nrun 1");
    let t1 = Instant::now();
    if let Err(e) = run(&cache, 1).await {
        println!("  load:      FAILED: {e}");
    }
    let first = t1.elapsed();
    println!(
        "  run 1 took {first:.2?} and failed; its extracted and transformed state stays cached"
    );

    println!("\nrun 2 (the rerun after the failure)");
    let second = run(&cache, 2).await?;
    println!("  run 2 took {second:.2?}");

    let saved = first.saturating_sub(second);
    let stats = cache.stats().await?;
    println!(
        "\nthe rerun skipped extract and transform and saved {saved:.2?} ({:.0}% of the first run)",
        100.0 * saved.as_secs_f64() / first.as_secs_f64()
    );
    println!(
        "cache now holds {} entries in {:.1} MB on disk (hits {}, misses {})",
        stats.entries,
        stats.bytes as f64 / 1e6,
        stats.hits,
        stats.misses
    );
    Ok(())
}
