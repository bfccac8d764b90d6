//! The `stream64` section: streams at the chunk size users hand over. A
//! `set_stream` of 64 KiB chunks made as the stream is consumed (the seed's
//! default chunk, and what HTTP clients yield) beside a plain file written
//! with the same chunks made the same way; a `get_stream` of 64 KiB chunks
//! whose consumer hashes each one (SHA-256, as a pipeline checking what it
//! reads), beside a plain file read in 64 KiB chunks by the same consumer.
//! The consumer keeps a core busy, so the cache's own threads compete with
//! it as they would in a pipeline. `ETL_BENCH_STREAM64_MB` (default 512),
//! `ETL_BENCH_STREAM64_REPS` (default 3), alternating which side goes first.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use etl_cache::{Cache, SetOptions};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Report, chunk, env_usize, median, ours_in, runtime};

const CHUNK: usize = 64 * 1024;

/// Makes chunk `i` of a stream: 64 KiB cut from a 1 MiB pattern, stamped
/// with its number (a copy per chunk, as a producer formatting rows makes).
struct Maker {
    pattern: Bytes,
}

impl Maker {
    fn make(&self, i: usize) -> Bytes {
        let at = (i * CHUNK) % self.pattern.len();
        let mut b = BytesMut::with_capacity(CHUNK);
        b.extend_from_slice(&self.pattern[at..at + CHUNK]);
        b[..8].copy_from_slice(&(i as u64).to_le_bytes());
        b.freeze()
    }
}

pub(crate) fn section(base: &Path, report: &mut Report) {
    let mb = env_usize("ETL_BENCH_STREAM64_MB", 512);
    let reps = env_usize("ETL_BENCH_STREAM64_REPS", 3);
    let n = (mb << 20) / CHUNK;
    let total = (n * CHUNK) as f64;
    let maker = std::sync::Arc::new(Maker { pattern: chunk(7) });
    let rt = runtime();
    let (dir, cache) = ours_in(&rt, base);
    let raw_dir = dir.path().join("raw");
    std::fs::create_dir_all(&raw_dir).unwrap();
    let mut rows = Vec::new();
    let (mut set_ratios, mut get_ratios) = (Vec::new(), Vec::new());
    println!("\n== streams of 64 KiB chunks ({mb} MiB; consumer hashes each chunk): MB/s ==");
    println!(
        "{:<5} {:>12} {:>12} {:>7} {:>12} {:>12} {:>7}",
        "run", "set ours", "set raw", "ratio", "get ours", "get raw", "ratio"
    );
    for rep in 0..reps {
        let key = format!("bench/stream64/{rep}");
        let raw_path = raw_dir.join(format!("raw-{rep}"));
        let ours_set = || {
            let (maker, key) = (maker.clone(), key.clone());
            rt.block_on(async {
                let t = Instant::now();
                let s = futures::stream::iter(0..n)
                    .map(move |i| Ok::<_, std::io::Error>(maker.make(i)))
                    .boxed();
                cache.set_stream(&key, s, SetOptions::new()).await.unwrap();
                t.elapsed().as_secs_f64()
            })
        };
        let raw_set = || {
            let t = Instant::now();
            let mut f = std::fs::File::create(&raw_path).unwrap();
            for i in 0..n {
                f.write_all(&maker.make(i)).unwrap();
            }
            drop(f);
            t.elapsed().as_secs_f64()
        };
        let ours_get = || {
            rt.block_on(async {
                let t = Instant::now();
                let s = cache.get_stream(&key, CHUNK).await.unwrap().unwrap();
                let mut h = Sha256::new();
                let mut got = 0usize;
                let mut s = s.map_ok(|c| {
                    h.update(&c);
                    c.len()
                });
                while let Some(len) = s.try_next().await.unwrap() {
                    got += len;
                }
                drop(s);
                assert_eq!(got as f64, total);
                std::hint::black_box(h.finalize());
                t.elapsed().as_secs_f64()
            })
        };
        let raw_get = || {
            let t = Instant::now();
            let mut f = std::fs::File::open(&raw_path).unwrap();
            let mut buf = vec![0u8; CHUNK];
            let mut h = Sha256::new();
            let mut got = 0usize;
            loop {
                match f.read(&mut buf).unwrap() {
                    0 => break,
                    r => {
                        h.update(&buf[..r]);
                        got += r;
                    }
                }
            }
            assert_eq!(got as f64, total);
            std::hint::black_box(h.finalize());
            t.elapsed().as_secs_f64()
        };
        let ((so, sr), (go, gr)) = if rep % 2 == 0 {
            let so = ours_set();
            let sr = raw_set();
            let go = ours_get();
            let gr = raw_get();
            ((so, sr), (go, gr))
        } else {
            let sr = raw_set();
            let so = ours_set();
            let gr = raw_get();
            let go = ours_get();
            ((so, sr), (go, gr))
        };
        let mbs = |s: f64| total / s / 1e6;
        let (set_ratio, get_ratio) = (sr / so, gr / go);
        println!(
            "{:<5} {:>12.0} {:>12.0} {:>6.2}x {:>12.0} {:>12.0} {:>6.2}x",
            rep + 1,
            mbs(so),
            mbs(sr),
            set_ratio,
            mbs(go),
            mbs(gr),
            get_ratio
        );
        set_ratios.push(set_ratio);
        get_ratios.push(get_ratio);
        rows.push(json!({
            "run": rep + 1,
            "set_ours_mb_s": mbs(so), "set_raw_mb_s": mbs(sr), "set_ratio": set_ratio,
            "get_ours_mb_s": mbs(go), "get_raw_mb_s": mbs(gr), "get_ratio": get_ratio,
        }));
        rt.block_on(cache.delete(&key)).unwrap();
        let _ = std::fs::remove_file(&raw_path);
    }
    let worst = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    report.target(
        "64 KiB set_stream / file write, worst run",
        worst(&set_ratios),
        "x",
        0.9,
        false,
    );
    report.note_last(format!(
        "median {:.2}x of {reps}",
        median(set_ratios.clone())
    ));
    report.target(
        "64 KiB get_stream / file read, hashing, worst run",
        worst(&get_ratios),
        "x",
        0.9,
        false,
    );
    report.note_last(format!(
        "median {:.2}x of {reps}",
        median(get_ratios.clone())
    ));
    report.sections.push((
        "stream64".into(),
        json!({"mb": mb, "chunk": CHUNK, "runs": rows}),
    ));
}
