//! The `spares` section: whether recycling the files of replaced and evicted
//! small entries (`DiskCacheBuilder::recycle_files`) pays, measured on three
//! file systems side by side: a tmpfs, an ext4 image with a journal (the
//! mkfs default, loop-mounted here) and the disk under `ETL_BENCH_DIR`.
//! On each, two caches (recycling on and off) take 1 KB sets in alternating
//! batches: sets that replace one of 1,000 keys, and sets of new keys into a
//! cache capped at 1,000 entries (each evicts one). Needs root for the
//! mounts; without it only the disk runs. `ETL_BENCH_SPARES_ROUNDS`
//! (default 25) batches of 200 sets per cache and workload.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etl_cache::{Cache, DiskCache, SetOptions, Value};
use etl_cache_reliability::mounts::Mount;
use serde_json::json;

use super::{Report, env_usize, fill_1k, fs_type, lat, lat_json, runtime, value_1k};

const KEYS: usize = 1000;
const BATCH: usize = 200;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Work {
    Replace,
    Evict,
}

impl Work {
    fn name(self) -> &'static str {
        match self {
            Work::Replace => "replace",
            Work::Evict => "evict",
        }
    }
}

/// Times every set of both workloads on both caches under `root`.
fn measure(root: &Path, rounds: usize) -> HashMap<(Work, bool), Vec<Duration>> {
    let rt = runtime();
    let root = root.to_path_buf();
    rt.block_on(rt.spawn(async move {
        let mut caches: HashMap<(Work, bool), Arc<DiskCache>> = HashMap::new();
        for work in [Work::Replace, Work::Evict] {
            for recycle in [true, false] {
                let mut b = DiskCache::builder()
                    .root(root.join(format!("{}-{recycle}", work.name())))
                    .recycle_files(recycle);
                if work == Work::Evict {
                    b = b.max_entries(KEYS as u64);
                }
                let cache = b.build().await.unwrap();
                fill_1k(&cache, "k", 0..KEYS).await;
                caches.insert((work, recycle), Arc::new(cache));
            }
        }
        let mut times: HashMap<(Work, bool), Vec<Duration>> = HashMap::new();
        let mut version = 1u64;
        for round in 0..rounds {
            for work in [Work::Replace, Work::Evict] {
                // Take turns, so a burst of load hits both alike.
                let order = if round % 2 == 0 {
                    [true, false]
                } else {
                    [false, true]
                };
                for recycle in order {
                    let cache = &caches[&(work, recycle)];
                    for j in 0..BATCH {
                        version += 1;
                        let i = round * BATCH + j;
                        let key = match work {
                            Work::Replace => format!("k{}", i % KEYS),
                            Work::Evict => format!("n{i}"),
                        };
                        let v = Value::Bytes(value_1k(i, version));
                        let t = Instant::now();
                        cache.set(&key, v, SetOptions::new()).await.unwrap();
                        times.entry((work, recycle)).or_default().push(t.elapsed());
                    }
                }
            }
        }
        times
    }))
    .unwrap()
}

pub(crate) fn section(base: &Path, report: &mut Report) {
    let rounds = env_usize("ETL_BENCH_SPARES_ROUNDS", 25);
    let dir = tempfile::tempdir_in(base).unwrap();
    let mut places: Vec<(String, std::path::PathBuf, Option<Mount>)> = Vec::new();
    let tmpfs = dir.path().join("tmpfs");
    let ext4 = dir.path().join("ext4");
    std::fs::create_dir_all(&tmpfs).unwrap();
    std::fs::create_dir_all(&ext4).unwrap();
    match Mount::tmpfs(&tmpfs, 512 << 20, None) {
        Ok(m) => places.push(("tmpfs".into(), tmpfs.clone(), Some(m))),
        Err(e) => println!("spares: no tmpfs run: {e}"),
    }
    match Mount::ext4(&ext4, &dir.path().join("ext4.img"), 512 << 20) {
        Ok(m) => places.push(("ext4 with journal (loop)".into(), ext4.clone(), Some(m))),
        Err(e) => println!("spares: no journaled ext4 run: {e}"),
    }
    let disk = dir.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    places.push((format!("this disk ({})", fs_type(&disk)), disk, None));

    println!(
        "\n== recycled files: 1 KB set, µs (p50 / p99 / mean; {} sets each) ==",
        rounds * BATCH
    );
    println!(
        "{:<28} {:<8} {:>24} {:>24} {:>13}",
        "file system", "sets", "recycling on", "recycling off", "off/on p50"
    );
    let mut rows = Vec::new();
    for (name, path, _mount) in &places {
        let mut times = measure(path, rounds);
        for work in [Work::Replace, Work::Evict] {
            let on = lat(times.get_mut(&(work, true)).unwrap());
            let off = lat(times.get_mut(&(work, false)).unwrap());
            let gain = off.p50 / on.p50;
            println!(
                "{:<28} {:<8} {:>7.1} / {:>6.1} / {:>6.1} {:>7.1} / {:>6.1} / {:>6.1} {:>12.2}x",
                name,
                work.name(),
                on.p50,
                on.p99,
                on.mean,
                off.p50,
                off.p99,
                off.mean,
                gain
            );
            if name.starts_with("ext4 with journal") {
                report.target(
                    &format!("recycling gain, 1 KB {} sets, journaled ext4", work.name()),
                    gain,
                    "x",
                    1.1,
                    false,
                );
                report.note_last("report: below 1.10x recycling does not pay there");
            }
            rows.push(json!({
                "fs": name, "sets": work.name(),
                "on": lat_json(&on), "off": lat_json(&off),
                "off_over_on_p50": super::r3(gain),
            }));
        }
    }
    report
        .sections
        .push(("spares".into(), json!({"rows": rows, "rounds": rounds})));
}
