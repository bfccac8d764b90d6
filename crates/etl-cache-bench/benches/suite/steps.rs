//! The `steps` section: a step hit (`StepExt::run`: the parts' digest,
//! made once for a step of fixed parts; the value read; the hit added to
//! the tally waiting in memory, written once a second) beside
//! a plain `get` of the same value on the same `DiskCache`, for a 1 KB and a
//! 1 MB value, alternating the two; and `explain` on a cache of 100,000
//! entries (`ETL_BENCH_STEPS_ENTRIES`), for a hit and for a miss whose
//! parameter changed. Latencies are p50/p99 in µs; the ratio is of p50s.

use std::path::Path;
use std::time::Instant;

use etl_cache::steps::{Explanation, RunOptions, Step, StepExt};
use etl_cache::{Cache, DiskCache, Value};
use serde_json::json;

use super::{Report, env_usize, fill_1k, lat, lat_json, print_p50_p99, runtime, value_1k};

fn step(size: usize, version: u32) -> Step {
    Step::new("bench/transform")
        .code_version("v1")
        .param("size", &size)
        .param("opts", &json!({"currency": "EUR", "version": version}))
}

pub(crate) fn section(base: &Path, report: &mut Report) {
    let rt = runtime();
    let dir = tempfile::tempdir_in(base).unwrap();
    let entries = env_usize("ETL_BENCH_STEPS_ENTRIES", 100_000);
    let mut rows = Vec::new();
    let (explain_hit, explain_miss) = rt.block_on(async {
        let cache = DiskCache::open(dir.path()).await.unwrap();
        println!("\n== step hit vs plain get (DiskCache): µs ==");
        println!(
            "{:<10} {:>10} {:>10} {:>10} {:>10} {:>8}",
            "size", "get p50", "get p99", "step p50", "step p99", "ratio"
        );
        for (label, size, n) in [("1 KB", 1024usize, 5000usize), ("1 MB", 1 << 20, 300)] {
            let payload = if size == 1024 {
                value_1k(0, 0)
            } else {
                super::chunk(0)
            };
            assert_eq!(payload.len(), size, "the payload has the size under test");
            let s = step(size, 0);
            let value = Value::Bytes(payload);
            cache
                .run(&s, RunOptions::new(), || async {
                    Ok::<_, std::io::Error>(value.clone())
                })
                .await
                .unwrap();
            let key = s.resolve().await.unwrap().key();
            let (mut get, mut hit) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for i in 0..n {
                let plain = async {
                    let t = Instant::now();
                    let v = cache.get(&key).await.unwrap();
                    assert!(v.is_some());
                    t.elapsed()
                };
                let stepped = async {
                    let t = Instant::now();
                    let r = cache
                        .run(&s, RunOptions::new(), || async {
                            Ok::<_, std::io::Error>(Value::from("never"))
                        })
                        .await
                        .unwrap();
                    assert!(r.outcome.is_hit());
                    t.elapsed()
                };
                if i % 2 == 0 {
                    get.push(plain.await);
                    hit.push(stepped.await);
                } else {
                    hit.push(stepped.await);
                    get.push(plain.await);
                }
            }
            let (g, h) = (lat(&mut get), lat(&mut hit));
            let ratio = h.p50 / g.p50;
            println!(
                "{label:<10} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>8.2}",
                g.p50, g.p99, h.p50, h.p99, ratio
            );
            report.target(
                &format!("step hit / plain get, {label} (p50)"),
                ratio,
                "x",
                1.01,
                true,
            );
            rows.push(json!({"size": label, "get": lat_json(&g), "step_hit": lat_json(&h), "ratio_p50": ratio}));
        }

        // explain on a cache of `entries` entries.
        let t = Instant::now();
        fill_1k(&cache, "filler/", 0..entries).await;
        println!(
            "\nfilled {entries} entries in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        for v in 0..8 {
            cache
                .run(&step(1, v), RunOptions::new(), || async {
                    Ok::<_, std::io::Error>(Value::from("r"))
                })
                .await
                .unwrap();
        }
        let (mut hit, mut miss) = (Vec::new(), Vec::new());
        let (hit_step, miss_step) = (step(1, 7), step(1, 99));
        for _ in 0..2000 {
            let t = Instant::now();
            let e = cache.explain(&hit_step).await.unwrap();
            hit.push(t.elapsed());
            assert!(e.is_hit());
            let t = Instant::now();
            let e = cache.explain(&miss_step).await.unwrap();
            miss.push(t.elapsed());
            assert!(matches!(e, Explanation::PartsChanged { .. }), "{e}");
        }
        (lat(&mut hit), lat(&mut miss))
    });
    println!("\n== explain on {entries} entries: µs ==");
    print_p50_p99(
        "case",
        &[
            ("hit", &explain_hit),
            ("miss, a parameter changed", &explain_miss),
        ],
        28,
        10,
        1,
    );
    let worst = explain_hit.p99.max(explain_miss.p99) / 1000.0;
    report.target(
        &format!("explain p99 at {entries} entries"),
        worst,
        "ms",
        5.0,
        true,
    );
    report.sections.push((
        "steps".into(),
        json!({"hit_vs_get": rows, "explain": {"entries": entries,
            "hit": lat_json(&explain_hit), "miss_parts_changed": lat_json(&explain_miss)}}),
    ));
}
