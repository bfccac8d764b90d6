//! DiskCache beside plain `tokio::fs` on the same bytes, in one run.
//!
//! `cargo bench -p etl-cache-bench --bench disk` prints a table and writes
//! `target/bench-disk.json`. Environment: `ETL_BENCH_STREAM_MB` (default 1024)
//! sets the stream size, `ETL_BENCH_OPS` (default 5000) the small-op count,
//! `ETL_BENCH_DIR` the directory (default: a temp dir under the target dir,
//! so the page cache and filesystem match the cache's).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use etl_cache::{Cache, DiskCache, SetOptions, Value};
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Lat {
    p50: Duration,
    p99: Duration,
}

fn lat(mut v: Vec<Duration>) -> Lat {
    v.sort();
    Lat {
        p50: percentile(&v, 0.5),
        p99: percentile(&v, 0.99),
    }
}

fn chunk(i: usize) -> Bytes {
    // Not compressible-by-accident: a cheap mix of the index.
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(1 << 20);
    while v.len() < 1 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    Bytes::from(v)
}

async fn small_ops(cache: &DiskCache, dir: &Path, ops: usize) -> [(String, Lat, Lat); 3] {
    let value = Bytes::from(vec![b'x'; 1024]);
    let keys = 1000;
    // Warm up both sides.
    for i in 0..keys {
        cache
            .set(
                &format!("k{i}"),
                Value::Bytes(value.clone()),
                SetOptions::new(),
            )
            .await
            .unwrap();
        tokio::fs::write(dir.join(format!("f{i}")), &value)
            .await
            .unwrap();
    }
    let (mut cs, mut cg, mut cm, mut fw, mut fr, mut fm) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for i in 0..ops {
        let k = format!("k{}", i % keys);
        let t = Instant::now();
        cache
            .set(&k, Value::Bytes(value.clone()), SetOptions::new())
            .await
            .unwrap();
        cs.push(t.elapsed());
        let t = Instant::now();
        assert!(cache.get(&k).await.unwrap().is_some());
        cg.push(t.elapsed());
        let t = Instant::now();
        assert!(cache.get(&format!("missing{i}")).await.unwrap().is_none());
        cm.push(t.elapsed());

        let p = dir.join(format!("f{}", i % keys));
        let t = Instant::now();
        tokio::fs::write(&p, &value).await.unwrap();
        fw.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(tokio::fs::read(&p).await.unwrap().len(), 1024);
        fr.push(t.elapsed());
        let t = Instant::now();
        assert!(
            tokio::fs::read(dir.join(format!("missing{i}")))
                .await
                .is_err()
        );
        fm.push(t.elapsed());
    }
    [
        ("1 KB set".into(), lat(cs), lat(fw)),
        ("1 KB get hit".into(), lat(cg), lat(fr)),
        ("1 KB get miss".into(), lat(cm), lat(fm)),
    ]
}

async fn streams(cache: &DiskCache, dir: &Path, mb: usize) -> [(String, f64, f64); 2] {
    let chunks: Vec<Bytes> = (0..16).map(chunk).collect();
    let bytes = (mb << 20) as f64;
    let src = chunks.clone();
    let t = Instant::now();
    let stream = futures::stream::iter((0..mb).map(move |i| Ok(src[i % 16].clone()))).boxed();
    cache
        .set_stream("stream", stream, SetOptions::new())
        .await
        .unwrap();
    let c_set = bytes / t.elapsed().as_secs_f64() / 1e6;

    let t = Instant::now();
    let mut s = cache.get_stream("stream", 1 << 20).await.unwrap().unwrap();
    let mut n = 0usize;
    while let Some(c) = s.try_next().await.unwrap() {
        n += c.len();
    }
    assert_eq!(n, mb << 20);
    let c_get = bytes / t.elapsed().as_secs_f64() / 1e6;

    let p = dir.join("raw-stream");
    let t = Instant::now();
    let mut f = tokio::fs::File::create(&p).await.unwrap();
    for i in 0..mb {
        f.write_all(&chunks[i % 16]).await.unwrap();
    }
    f.flush().await.unwrap();
    drop(f);
    let f_set = bytes / t.elapsed().as_secs_f64() / 1e6;

    let t = Instant::now();
    let mut f = tokio::fs::File::open(&p).await.unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0usize;
    loop {
        let r = f.read(&mut buf).await.unwrap();
        if r == 0 {
            break;
        }
        n += r;
    }
    assert_eq!(n, mb << 20);
    let f_get = bytes / t.elapsed().as_secs_f64() / 1e6;
    tokio::fs::remove_file(&p).await.unwrap();
    cache.delete("stream").await.unwrap();
    [
        (format!("{mb} MiB set_stream"), c_set, f_set),
        (format!("{mb} MiB get_stream"), c_get, f_get),
    ]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() {
    let ops = env_usize("ETL_BENCH_OPS", 5000);
    let mb = env_usize("ETL_BENCH_STREAM_MB", 1024);
    let base: PathBuf = std::env::var_os("ETL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    std::fs::create_dir_all(&base).unwrap();
    let tmp = tempfile::tempdir_in(&base).unwrap();
    let raw_dir = tmp.path().join("raw");
    std::fs::create_dir_all(&raw_dir).unwrap();
    let cache = DiskCache::open(tmp.path().join("cache")).await.unwrap();

    let small = small_ops(&cache, &raw_dir, ops).await;
    let big = streams(&cache, &raw_dir, mb).await;

    println!(
        "DiskCache vs tokio::fs, same bytes, same run ({ops} ops, {} cores)",
        num_cpus()
    );
    println!(
        "{:<22} {:>10} {:>10} {:>12} {:>12} {:>8}",
        "operation", "ours p50", "ours p99", "tokio::fs p50", "tokio::fs p99", "ratio"
    );
    let mut json = Vec::new();
    for (name, ours, raw) in &small {
        let ratio = us(ours.p50) / us(raw.p50);
        println!(
            "{:<22} {:>8.1}µs {:>8.1}µs {:>10.1}µs {:>10.1}µs {:>7.2}x",
            name,
            us(ours.p50),
            us(ours.p99),
            us(raw.p50),
            us(raw.p99),
            ratio
        );
        json.push(format!(
            "{{\"op\":\"{name}\",\"ours_p50_us\":{:.2},\"ours_p99_us\":{:.2},\"raw_p50_us\":{:.2},\"raw_p99_us\":{:.2},\"ratio_p50\":{ratio:.3}}}",
            us(ours.p50),
            us(ours.p99),
            us(raw.p50),
            us(raw.p99)
        ));
    }
    println!(
        "{:<22} {:>10} {:>12} {:>8}",
        "stream", "ours MB/s", "tokio::fs MB/s", "ratio"
    );
    for (name, ours, raw) in &big {
        println!(
            "{:<22} {:>10.0} {:>14.0} {:>7.2}x",
            name,
            ours,
            raw,
            ours / raw
        );
        json.push(format!(
            "{{\"op\":\"{name}\",\"ours_mb_s\":{ours:.1},\"raw_mb_s\":{raw:.1},\"ratio\":{:.3}}}",
            ours / raw
        ));
    }
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-disk.json");
    std::fs::write(&out, format!("[{}]\n", json.join(",\n"))).unwrap();
    println!("wrote {}", out.display());
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
