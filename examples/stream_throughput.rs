//! Streams N bytes into a DiskCache and back out, and prints the seconds each
//! way as JSON (after an untimed round): the Rust baseline the Python package's benchmark
//! (`python/bench/bench.py`) compares its generator streams with.
//!
//! ```text
//! cargo run --release --example stream_throughput -- DIR BYTES [CHUNK]
//! ```

#![forbid(unsafe_code)]

use std::time::Instant;

use bytes::Bytes;
use etl_cache::{Cache, DiskCache, SetOptions};
use futures::{StreamExt, TryStreamExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(dir), Some(size)) = (args.first(), args.get(1)) else {
        eprintln!("usage: stream_throughput DIR BYTES [CHUNK]");
        std::process::exit(2)
    };
    let size: u64 = size.parse()?;
    let chunk: usize = args.get(2).map_or(Ok(64 * 1024), |c| c.parse())?;
    let cache = DiskCache::builder().root(dir).build().await?;
    // The same chunk again and again, as the Python benchmark's generator.
    let block = Bytes::from(
        (0..chunk)
            .map(|i| (i * 31 % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let n = size / chunk as u64;
    let stream = move || {
        let block = block.clone();
        futures::stream::iter((0..n).map(move |_| Ok(block.clone()))).boxed()
    };
    // An untimed round first: the first gigabyte a process writes waits for
    // the kernel to reclaim page cache, by more than the cache's own cost.
    cache
        .set_stream("gigabyte", stream(), SetOptions::new())
        .await?;
    cache.delete("gigabyte").await?;
    let input = stream();
    let t = Instant::now();
    cache
        .set_stream("gigabyte", input, SetOptions::new())
        .await?;
    let in_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut total = 0u64;
    let mut out = cache
        .get_stream("gigabyte", chunk)
        .await?
        .ok_or("the entry just written is missing")?;
    while let Some(c) = out.try_next().await? {
        total += c.len() as u64;
    }
    let out_secs = t.elapsed().as_secs_f64();
    assert_eq!(total, n * chunk as u64);
    cache.delete("gigabyte").await?;
    println!("{{\"in_secs\": {in_secs}, \"out_secs\": {out_secs}}}");
    Ok(())
}
