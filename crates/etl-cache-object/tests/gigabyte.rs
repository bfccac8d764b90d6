//! A gigabyte through `set_stream` and `get_stream` against the local S3
//! server (moto) in bounded memory, beside raw `object_store` doing the same
//! (alone in its test binary, so that the peak RSS is its own).

mod common;
#[path = "support/s3.rs"]
mod s3_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use etl_cache_core::testing::noise_bytes;
use etl_cache_core::{ByteStream, Cache, DEFAULT_CHUNK_SIZE, SetOptions};
use etl_cache_object::ObjectCache;
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};

const MIB: usize = 1 << 20;

/// `n` chunks of 1 MiB, each a fresh allocation (so buffering them would
/// show in memory), stamped with their index.
fn source(n: usize, base: Arc<Vec<u8>>) -> impl futures::Stream<Item = Bytes> + Send + 'static {
    futures::stream::iter(0..n).map(move |i| {
        let mut v = base.as_ref().clone();
        v[..8].copy_from_slice(&(i as u64).to_le_bytes());
        Bytes::from(v)
    })
}

/// A MiB that no codec shrinks.
fn base_chunk() -> Arc<Vec<u8>> {
    Arc::new(noise_bytes(MIB, 0))
}

async fn crc_of(s: impl futures::Stream<Item = Bytes>) -> (u32, u64) {
    s.fold((0u32, 0u64), |(crc, n), b| async move {
        (crc32c::crc32c_append(crc, &b), n + b.len() as u64)
    })
    .await
}

/// Reads a stream to its end: its checksum and length, and when its first
/// bytes arrived.
async fn timed_crc(
    started: Instant,
    mut s: impl futures::Stream<Item = Bytes> + Unpin,
) -> (u32, u64, Duration) {
    let first = s.next().await.expect("a first chunk");
    let ttfb = started.elapsed();
    let init = (crc32c::crc32c(&first), first.len() as u64);
    let (crc, n) = s
        .fold(init, |(crc, n), b| async move {
            (crc32c::crc32c_append(crc, &b), n + b.len() as u64)
        })
        .await;
    (crc, n, ttfb)
}

fn mb_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_streams_through_s3_in_bounded_memory() {
    let Some((moto, bucket)) = common::moto_bucket("gigabyte") else {
        return;
    };
    let cache = s3_support::s3_cache(&moto, &bucket, "etl")
        // moto assembles a 1 GiB multipart upload before it answers the
        // completing request, silent for tens of seconds on a busy machine:
        // the default settings allow for it, as the wait for that answer
        // grows with the size of the upload.
        .build()
        .unwrap();
    let store = cache.store().clone();
    let n = 1024; // 1 GiB
    let total = (n * MIB) as u64;
    let base = base_chunk();
    let (want_crc, _) = crc_of(source(n, base.clone())).await;

    // Rounds alternate which side goes first: moto's speed drifts. One round
    // by default; ETL_CACHE_BENCH_ROUNDS=5 for a report (medians).
    let rounds: usize = std::env::var("ETL_CACHE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut times = Times::default();
    for round in 0..rounds {
        for ours in [round % 2 == 1, round % 2 == 0] {
            if ours {
                ours_round(&cache, n, &base, want_crc, total, &mut times).await;
            } else {
                raw_round(&store, n, &base, want_crc, total, &mut times).await;
            }
        }
    }
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (our_put, raw_put) = (med(&mut times.our_put), med(&mut times.raw_put));
    let (our_get, raw_get) = (med(&mut times.our_get), med(&mut times.raw_get));
    let (our_ttfb, raw_ttfb) = (med(&mut times.our_ttfb), med(&mut times.raw_ttfb));
    let our_put_rss = times.our_put_rss.iter().copied().max().unwrap();
    let our_get_rss = times.our_get_rss.iter().copied().max().unwrap();
    let raw_put_rss = times.raw_put_rss.iter().copied().max().unwrap();
    let raw_get_rss = times.raw_get_rss.iter().copied().max().unwrap();
    let mb = |b: u64| b as f64 / MIB as f64;
    println!(
        "1 GiB through moto, median of {rounds} round(s) (parts of 8 MiB, 4 in flight; get_stream in chunks of 64 KiB):"
    );
    println!(
        "  set_stream  ObjectCache {:7.1} MB/s  raw object_store {:7.1} MB/s  overhead {:+5.1}%",
        mb_s(total, our_put),
        mb_s(total, raw_put),
        (our_put.as_secs_f64() / raw_put.as_secs_f64() - 1.0) * 100.0
    );
    println!(
        "  get_stream  ObjectCache {:7.1} MB/s  raw object_store {:7.1} MB/s  overhead {:+5.1}%",
        mb_s(total, our_get),
        mb_s(total, raw_get),
        (our_get.as_secs_f64() / raw_get.as_secs_f64() - 1.0) * 100.0
    );
    println!(
        "  get_stream after the first byte: ObjectCache {:7.1} MB/s  raw {:7.1} MB/s  overhead {:+5.1}%; \
         first byte after {:?} (ObjectCache: one request for an uncompressed entry) vs {:?}",
        mb_s(total, our_get - our_ttfb),
        mb_s(total, raw_get - raw_ttfb),
        ((our_get - our_ttfb).as_secs_f64() / (raw_get - raw_ttfb).as_secs_f64() - 1.0) * 100.0,
        our_ttfb,
        raw_ttfb
    );
    println!(
        "  peak RSS    set {:.0} MB, get {:.0} MB (raw: set {:.0} MB, get {:.0} MB)",
        mb(our_put_rss),
        mb(our_get_rss),
        mb(raw_put_rss),
        mb(raw_get_rss)
    );
    assert!(
        our_put_rss < 128 << 20,
        "set_stream peak RSS {} MB",
        mb(our_put_rss)
    );
    assert!(
        our_get_rss < 128 << 20,
        "get_stream peak RSS {} MB",
        mb(our_get_rss)
    );
}

#[derive(Default)]
struct Times {
    our_put: Vec<Duration>,
    our_get: Vec<Duration>,
    our_ttfb: Vec<Duration>,
    raw_put: Vec<Duration>,
    raw_get: Vec<Duration>,
    raw_ttfb: Vec<Duration>,
    our_put_rss: Vec<u64>,
    our_get_rss: Vec<u64>,
    raw_put_rss: Vec<u64>,
    raw_get_rss: Vec<u64>,
}

/// Raw object_store: a multipart upload with the same part size and
/// concurrency, then a plain streaming get; the object is deleted after.
async fn raw_round(
    store: &Arc<dyn ObjectStore>,
    n: usize,
    base: &Arc<Vec<u8>>,
    want_crc: u32,
    total: u64,
    t: &mut Times,
) {
    let raw_path = object_store::path::Path::from("etl/raw-1g");
    common::reset_peak_rss();
    let started = Instant::now();
    let up = store.put_multipart(&raw_path).await.unwrap();
    let mut w = WriteMultipart::new_with_chunk_size(up, etl_cache_object::DEFAULT_PART_SIZE);
    let mut chunks = Box::pin(source(n, base.clone()));
    while let Some(c) = chunks.next().await {
        w.wait_for_capacity(4).await.unwrap();
        w.put(c);
    }
    w.finish().await.unwrap();
    t.raw_put.push(started.elapsed());
    t.raw_put_rss.push(common::peak_rss());
    common::reset_peak_rss();
    let started = Instant::now();
    let s = store.get(&raw_path).await.unwrap().into_stream();
    let (crc, len, ttfb) = timed_crc(started, s.map(|r| r.unwrap())).await;
    t.raw_get.push(started.elapsed());
    t.raw_ttfb.push(ttfb);
    t.raw_get_rss.push(common::peak_rss());
    assert_eq!((crc, len), (want_crc, total));
    store.delete(&raw_path).await.unwrap();
}

/// ObjectCache: set_stream, then get_stream; the entry is deleted after.
async fn ours_round(
    cache: &ObjectCache,
    n: usize,
    base: &Arc<Vec<u8>>,
    want_crc: u32,
    total: u64,
    t: &mut Times,
) {
    common::reset_peak_rss();
    let started = Instant::now();
    let stream: ByteStream = source(n, base.clone()).map(Ok).boxed();
    let meta = cache
        .set_stream("big/one_gigabyte", stream, SetOptions::new())
        .await
        .unwrap();
    t.our_put.push(started.elapsed());
    t.our_put_rss.push(common::peak_rss());
    assert_eq!(meta.logical_len, total);
    common::reset_peak_rss();
    let started = Instant::now();
    let got = cache
        .get_stream("big/one_gigabyte", DEFAULT_CHUNK_SIZE)
        .await
        .unwrap()
        .unwrap();
    let (crc, len, ttfb) = timed_crc(started, got.map(|r| r.unwrap())).await;
    t.our_get.push(started.elapsed());
    t.our_ttfb.push(ttfb);
    t.our_get_rss.push(common::peak_rss());
    assert_eq!(
        (crc, len),
        (want_crc, total),
        "the gigabyte came back intact"
    );
    assert!(cache.delete("big/one_gigabyte").await.unwrap());
}
