//! The `io` section: `CacheWriter` and `CacheReader` on `DiskCache`, each
//! against the stream call it wraps, in the same run. The writer is fed by
//! `tokio::io::copy` (8 KiB writes, gathered into chunks and copied once);
//! the baseline hands `set_stream` 64 KiB slices of the same bytes without a
//! copy. The reader is drained by `tokio::io::copy` into a sink; the
//! baseline drains `get_stream` with the same chunk size. Medians of
//! `ETL_BENCH_IO_REPS` rounds (default 5), the two sides alternating which
//! goes first.

use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use etl_cache::{Cache, CacheIoExt, DiskCache, SetOptions};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;

use super::{Report, env_usize, median, r3, runtime};

pub(crate) fn section(base: &Path, report: &mut Report) {
    let mb = env_usize("ETL_BENCH_IO_MB", 256);
    let reps = env_usize("ETL_BENCH_IO_REPS", 5);
    let rt = runtime();
    let dir = tempfile::tempdir_in(base).unwrap();
    let data = Bytes::from(
        (0..mb)
            .flat_map(|i| super::chunk(i).to_vec())
            .collect::<Vec<u8>>(),
    );
    let (mut w_io, mut w_base, mut r_io, mut r_base) = (vec![], vec![], vec![], vec![]);
    rt.block_on(async {
        let cache = DiskCache::open(dir.path()).await.unwrap();
        let write_io = async |key: &str| {
            let t = Instant::now();
            let mut w = cache.writer(key, SetOptions::new());
            tokio::io::copy(&mut &data[..], &mut w).await.unwrap();
            w.commit().await.unwrap();
            t.elapsed().as_secs_f64()
        };
        let write_base = async |key: &str| {
            let t = Instant::now();
            let chunks: Vec<std::io::Result<Bytes>> = (0..data.len())
                .step_by(64 << 10)
                .map(|i| Ok(data.slice(i..(i + (64 << 10)).min(data.len()))))
                .collect();
            let s = futures::stream::iter(chunks).boxed();
            cache.set_stream(key, s, SetOptions::new()).await.unwrap();
            t.elapsed().as_secs_f64()
        };
        let read_io = async |key: &str| {
            let t = Instant::now();
            let mut r = cache.reader(key, 64 << 10).await.unwrap().unwrap();
            let n = tokio::io::copy(&mut r, &mut tokio::io::sink())
                .await
                .unwrap();
            assert_eq!(n, data.len() as u64);
            t.elapsed().as_secs_f64()
        };
        let read_base = async |key: &str| {
            let t = Instant::now();
            let s = cache.get_stream(key, 64 << 10).await.unwrap().unwrap();
            let n = s
                .try_fold(0usize, |n, c| async move { Ok(n + c.len()) })
                .await
                .unwrap();
            assert_eq!(n, data.len());
            t.elapsed().as_secs_f64()
        };
        for round in 0..reps {
            if round % 2 == 0 {
                w_io.push(write_io("io").await);
                w_base.push(write_base("base").await);
                r_io.push(read_io("io").await);
                r_base.push(read_base("base").await);
            } else {
                w_base.push(write_base("base").await);
                w_io.push(write_io("io").await);
                r_base.push(read_base("base").await);
                r_io.push(read_io("io").await);
            }
        }
        let same = cache.get_range("io", 0..u64::MAX).await.unwrap().unwrap().1;
        assert!(same == data, "the writer stored other bytes");
    });
    let mbps = |s: f64| mb as f64 / s;
    let (wi, wb, ri, rb) = (median(w_io), median(w_base), median(r_io), median(r_base));
    println!("\n== AsyncWrite / AsyncRead on DiskCache ({mb} MiB, median of {reps}): MiB/s ==");
    println!("{:<52} {:>8} {:>8}", "path", "write", "read");
    println!(
        "{:<52} {:>8.0} {:>8.0}",
        "CacheWriter (io::copy) / CacheReader (io::copy)",
        mbps(wi),
        mbps(ri)
    );
    println!(
        "{:<52} {:>8.0} {:>8.0}",
        "set_stream (64 KiB slices) / get_stream (64 KiB)",
        mbps(wb),
        mbps(rb)
    );
    println!(
        "ratios (io / stream): write {:.3}, read {:.3}",
        wb / wi,
        rb / ri
    );
    report.sections.push((
        "io".into(),
        json!({"mib": mb, "reps": reps, "write_ratio": r3(wb / wi), "read_ratio": r3(rb / ri), "rows": [
            {"impl": "CacheWriter / CacheReader", "write_mib_s": r3(mbps(wi)), "read_mib_s": r3(mbps(ri))},
            {"impl": "set_stream / get_stream", "write_mib_s": r3(mbps(wb)), "read_mib_s": r3(mbps(rb))},
        ]}),
    ));
}
