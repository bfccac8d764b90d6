//! The memory tier holds about what it is given to hold: a tier of N MiB
//! filled with JSON values grows the process by a small multiple of N, not
//! by the 8 to 20 times a `serde_json::Value` tree costs over its text.
//!
//! Alone in its test binary, so that the peak resident size of the process
//! (VmHWM) measures this test only.

use std::sync::Arc;

use etl_cache_core::{Cache, SetOptions, Value};
use etl_cache_fs::DiskCache;
use etl_cache_tiered::TieredCache;

/// A field of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Rows of a typical extraction: about 4.4 KB of JSON text, about 70 KB as
/// a tree.
fn records(seed: usize) -> serde_json::Value {
    (0..100)
        .map(|i| {
            serde_json::json!({
                "id": seed * 1000 + i,
                "name": format!("row {i}"),
                "ok": i % 3 == 0,
                "v": i as f64 * 1.5,
            })
        })
        .collect()
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "current_thread")]
async fn a_memory_tier_full_of_json_stays_near_its_limit() {
    const LIMIT: u64 = 8 << 20;
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(DiskCache::open(dir.path()).await.unwrap());
    let cache = TieredCache::builder()
        .memory_bytes(LIMIT)
        .tier(disk)
        .build()
        .unwrap();
    let text_len = serde_json::to_vec(&records(0)).unwrap().len() as u64;
    // Twice the limit in text, so the tier fills and evicts.
    let n = (2 * LIMIT / text_len) as usize;
    let before = status_kib("VmRSS:");
    for i in 0..n {
        let key = format!("extract/{i}");
        cache
            .set(&key, Value::Json(records(i)), SetOptions::new())
            .await
            .unwrap();
        if i % 2 == 0 {
            // Hits are served from memory and hold nothing more.
            assert!(cache.get(&key).await.unwrap().is_some());
        }
    }
    let grown = (status_kib("VmHWM:") - before) * 1024;
    eprintln!(
        "a tier of {} MiB grew the process by {} KiB",
        LIMIT >> 20,
        grown >> 10
    );
    assert!(
        grown < 3 * LIMIT,
        "a tier of {} MiB grew the process by {} MiB",
        LIMIT >> 20,
        grown >> 20
    );
    // And it does hold JSON: the last value is a memory hit.
    let (v, served) = cache
        .get_traced(&format!("extract/{}", n - 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(served, etl_cache_tiered::Served::Memory);
    assert_eq!(v, Value::Json(records(n - 1)));
}
