//! Streams hold a few chunks in memory whatever the payload size.
//!
//! One test only in this file: peak RSS (VmHWM) is per process, and the test
//! harness runs each test file as its own process.

use std::time::Instant;

use bytes::Bytes;
use etl_cache_core::{Cache, Compression, SetOptions};
use etl_cache_fs::DiskCache;
use futures::StreamExt;

const TOTAL: u64 = 1 << 30;
const CHUNK: usize = 1 << 20;
const MAX_RSS: u64 = 64 << 20;

/// splitmix64.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The payload bytes at `pos..pos + buf.len()`, computed from the position
/// alone, so the reader can regenerate what the writer sent. Letters from a
/// small alphabet, each word repeated a few times: compressible, not trivially.
fn fill(pos: u64, buf: &mut [u8]) {
    assert_eq!(pos % 8, 0, "chunks start on 8-byte boundaries");
    let first = pos / 8;
    for (i, out) in buf.chunks_mut(8).enumerate() {
        let w = (mix((first + i as u64) >> 2) & 0x0f0f_0f0f_0f0f_0f0f) | 0x6161_6161_6161_6161;
        out.copy_from_slice(&w.to_le_bytes()[..out.len()]);
    }
}

fn generated() -> etl_cache_core::ByteStream {
    futures::stream::unfold(0u64, |pos| async move {
        if pos >= TOTAL {
            return None;
        }
        let n = CHUNK.min((TOTAL - pos) as usize);
        let mut v = vec![0u8; n];
        fill(pos, &mut v);
        Some((Ok(Bytes::from(v)), pos + n as u64))
    })
    .boxed()
}

fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .expect("VmHWM in /proc/self/status")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

fn mb_per_s(bytes: u64, since: Instant) -> f64 {
    bytes as f64 / 1e6 / since.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gigabyte_streams_round_trip_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let cache = DiskCache::builder().root(dir.path()).build().await.unwrap();
    let mut expected = vec![0u8; CHUNK];
    for compression in [Compression::NONE, Compression::zstd()] {
        let key = format!("payload-{compression}");
        let t = Instant::now();
        let meta = cache
            .set_stream(
                &key,
                generated(),
                SetOptions::new().compression(compression),
            )
            .await
            .unwrap();
        let write = mb_per_s(TOTAL, t);
        assert_eq!(meta.logical_len, TOTAL);
        if compression != Compression::NONE {
            assert!(meta.stored_len < TOTAL / 2, "stored {}", meta.stored_len);
        }

        let t = Instant::now();
        let mut s = cache.get_stream(&key, CHUNK).await.unwrap().unwrap();
        let mut pos = 0u64;
        while let Some(chunk) = s.next().await {
            let chunk = chunk.unwrap();
            let want = &mut expected[..chunk.len()];
            fill(pos, want);
            assert!(chunk[..] == want[..], "{compression}: wrong bytes at {pos}");
            pos += chunk.len() as u64;
        }
        let read = mb_per_s(TOTAL, t);
        assert_eq!(pos, TOTAL, "{compression}: the whole payload came back");
        println!(
            "{compression}: 1 GiB logical ({} MB stored): set_stream {write:.0} MB/s, \
             get_stream {read:.0} MB/s; peak RSS so far {} MiB",
            meta.stored_len / 1_000_000,
            peak_rss() >> 20
        );
        assert!(cache.delete(&key).await.unwrap());
    }
    let peak = peak_rss();
    assert!(
        peak < MAX_RSS,
        "peak RSS {} MiB, at most {} MiB allowed",
        peak >> 20,
        MAX_RSS >> 20
    );
}
