//! How long a whole-value read takes to check its payload, by format and by
//! the shape it hands back. Run by hand; nothing here is asserted:
//!
//! ```text
//! cargo run --release -p etl-cache-core --example verify_timing [MiB...]
//! ```
//!
//! For each size: format 1 (one crc over the payload, the payload as one
//! slice), format 2 handed back as block slices (no copy), copied into a
//! new buffer, moved down in the buffer it was read into, and the streaming
//! checker fed 64 KiB chunks.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytes::BytesMut;
use etl_cache_core::backend::blocks::{
    BlockChecker, BlockFramer, BlockSize, verify_payload, verify_payload_in_place,
};
use etl_cache_core::backend::format::{Layout, Trailer};

const HEADER_CRC: u32 = 0x5EED_1234;

fn best_of(runs: u32, mut f: impl FnMut()) -> Duration {
    best_of_with(runs, || (), |()| f())
}

/// The shortest of `runs` runs of `f`, each on a fresh input from `setup`
/// (not timed).
fn best_of_with<T>(runs: u32, mut setup: impl FnMut() -> T, mut f: impl FnMut(T)) -> Duration {
    (0..runs)
        .map(|_| {
            let input = setup();
            let t = Instant::now();
            f(input);
            t.elapsed()
        })
        .min()
        .expect("at least one run")
}

fn gbps(bytes: usize, d: Duration) -> String {
    format!("{:6.2} GB/s", bytes as f64 / d.as_secs_f64() / 1e9)
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("sizes in MiB"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1, 8, 64]
    } else {
        sizes
    };
    for mib in sizes {
        let len = mib << 20;
        let stored: Vec<u8> = (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        let stored = Bytes::from(stored);
        let v1 = {
            let mut v = stored.to_vec();
            v.extend_from_slice(
                &Trailer {
                    logical_len: len as u64,
                    stored_len: len as u64,
                    payload_crc: etl_cache_core::backend::codec::crc32c(&stored),
                    header_crc: HEADER_CRC,
                }
                .encode(),
            );
            Bytes::from(v)
        };
        let v2 = {
            let mut out = BytesMut::new();
            let mut f = BlockFramer::new(HEADER_CRC, BlockSize::DEFAULT);
            f.push(stored.clone(), &mut out);
            f.finish(len as u64, &mut out);
            out.freeze()
        };
        let runs = (256 / mib).clamp(5, 50) as u32;
        let blocks = Layout::DEFAULT_BLOCKS;
        let t_frame = best_of(runs, || {
            let mut out = Vec::new();
            let mut f = BlockFramer::new(HEADER_CRC, BlockSize::DEFAULT);
            f.push(stored.clone(), &mut out);
            black_box(f.finish(len as u64, &mut out));
            black_box(out);
        });
        let t_v1 = best_of(runs, || {
            let v = verify_payload(Layout::Whole, HEADER_CRC, v1.clone()).unwrap();
            black_box(v.into_bytes());
        });
        let t_pieces = best_of(runs, || {
            let v = verify_payload(blocks, HEADER_CRC, v2.clone()).unwrap();
            black_box(v.into_pieces());
        });
        let t_copy = best_of(runs, || {
            let v = verify_payload(blocks, HEADER_CRC, v2.clone()).unwrap();
            black_box(v.into_bytes());
        });
        let t_in_place = best_of_with(
            runs,
            || BytesMut::from(&v2[..]),
            |buf| {
                black_box(verify_payload_in_place(blocks, HEADER_CRC, buf).unwrap());
            },
        );
        let t_stream = best_of(runs, || {
            let mut c = BlockChecker::new(HEADER_CRC, BlockSize::DEFAULT);
            let mut at = 0;
            while at < v2.len() {
                let end = (at + (64 << 10)).min(v2.len());
                c.push(v2.slice(at..end)).unwrap();
                while let Some(p) = c.pop() {
                    black_box(p);
                }
                at = end;
            }
            black_box(c.finish().unwrap());
            while let Some(p) = c.pop() {
                black_box(p);
            }
        });
        println!(
            "{mib:4} MiB  frame {}  |  verify v1 {}  v2: pieces {}  new buffer {}  in place {}  stream 64K {}",
            gbps(len, t_frame),
            gbps(len, t_v1),
            gbps(len, t_pieces),
            gbps(len, t_copy),
            gbps(len, t_in_place),
            gbps(len, t_stream),
        );
    }
}
