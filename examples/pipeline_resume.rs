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
//! Extract and transform are steps: their keys are digests of their code
//! versions and parameters, and a manifest is kept with each result. The
//! second run finds the transformed state in the cache and goes straight to
//! the load; the example then prints the time the cache saved and why a run
//! with another parameter would compute again.

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use bytes::Bytes;
use etl_cache::steps::{RunOptions, Step, StepExt};
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

/// Transform: read the raw XML back as a stream and aggregate per account.
async fn transform(
    stream: etl_cache::GetStream,
) -> Result<(String, Summary), Box<dyn std::error::Error + Send + Sync>> {
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

/// The extract step: its key is a digest of the code version and the job.
fn extract_step() -> Step {
    Step::new(format!("{JOB}/extract"))
        .code_version("extract-v1")
        .param("job", JOB)
        .param("pages", &PAGES)
}

/// The transform step: its code version, its parameters and the key of the
/// raw XML it reads, so a new extract is a new transform.
async fn transform_step(currency: &str) -> etl_cache::steps::Result<Step> {
    let raw = extract_step().resolve().await?;
    Ok(Step::new(format!("{JOB}/transform"))
        .code_version("transform-v2")
        .param("currency", currency)
        .input_bytes("raw", raw.digest))
}

async fn run(cache: &DiskCache, attempt: u32) -> Result<Duration, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let day = SetOptions::new().ttl(Duration::from_secs(24 * 3600));
    let opts = RunOptions::new().set_options(day.compression(Compression::zstd()));

    let ran = cache
        .run(&transform_step("EUR").await?, opts.clone(), || async {
            let t = Instant::now();
            let raw = cache
                .run_stream(&extract_step(), opts.clone(), 1 << 20, || async {
                    Ok::<_, std::io::Error>(
                        futures::stream::iter(0..PAGES).then(fetch_page).boxed(),
                    )
                })
                .await?;
            println!(
                "  extract:   {:.1} MB of XML in {:.2?} ({})",
                raw.value.meta().logical_len as f64 / 1e6,
                t.elapsed(),
                if raw.outcome.is_hit() {
                    "from the cache"
                } else {
                    "fetched"
                }
            );
            let t = Instant::now();
            let (csv, summary) = transform(raw.value).await?;
            println!(
                "  transform: {} rows into {} accounts in {:.2?} (cached)",
                summary.rows,
                summary.accounts,
                t.elapsed()
            );
            let doc = serde_json::json!({ "csv": csv, "summary": summary });
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Value::Json(doc))
        })
        .await?;
    let doc = ran
        .value
        .as_json()
        .ok_or("the transform step stores JSON")?;
    let csv = doc["csv"]
        .as_str()
        .ok_or("the transform step stores a CSV")?;
    let summary: Summary = serde_json::from_value(doc["summary"].clone())?;
    if ran.outcome.is_hit() {
        println!("  extract:   skipped (transformed state found in the cache)");
        println!(
            "  transform: skipped ({} rows, {} accounts from the cache)",
            summary.rows, summary.accounts
        );
    }
    load(csv, attempt).await?;
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
    // Start from scratch so the demonstration shows both runs every time:
    // the results, manifests, history and tallies of this job's steps.
    for key in cache.keys(None).await? {
        if key.contains(JOB) {
            cache.delete(&key).await?;
        }
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

    let measured = first.saturating_sub(second);
    let stats = cache.step_stats(None).await?;
    let saved = stats.total.saved();
    println!(
        "\nthe rerun skipped extract and transform: {measured:.2?} faster ({:.0}% of the first run)",
        100.0 * measured.as_secs_f64() / first.as_secs_f64()
    );
    println!(
        "time saved by the cache, from the steps' manifests: {saved:.2?} \
         ({} hit, {} misses; {:+.1}% of the measured difference)",
        stats.total.hits,
        stats.total.misses,
        100.0 * (saved.as_secs_f64() - measured.as_secs_f64()) / measured.as_secs_f64()
    );

    // A run with another parameter would miss: the cache says why.
    let why = cache.explain(&transform_step("USD").await?).await?;
    println!("\nwhy would the transform run again with currency USD?\n  {why}");
    Ok(())
}
