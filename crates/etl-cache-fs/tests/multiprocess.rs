//! Many OS processes share one cache directory.
//!
//! The test re-executes this test binary as worker processes (the `worker`
//! test, which does nothing unless `ETL_CACHE_MP_ROOT` is set). Workers write
//! and read ~30 overlapping keys for a few seconds, through every write path
//! (text, bytes, streams, gzip, zstd, values of ~1 MB) on a cache that is
//! constantly evicting. Every value describes itself (key, writer, sequence,
//! kind, length, checksum) and its body is regenerated from that description,
//! so a reader can tell a torn, mixed or misplaced value from a good one.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use etl_cache_core::backend::codec::crc32c;
use etl_cache_core::{Cache, Compression, Error, SetOptions, Value};
use etl_cache_fs::{DiskCache, DiskCacheBuilder};
use futures::{StreamExt, TryStreamExt};

use common::*;

const ENV_ROOT: &str = "ETL_CACHE_MP_ROOT";
const ENV_ID: &str = "ETL_CACHE_MP_WORKER";
const WORKERS: usize = 4;
const KEYS: u64 = 30;
const MAX_ENTRIES: u64 = 20;
/// Room for the largest values every worker may be writing at once (the
/// limit cannot hold if entries in flight alone pass it), yet small enough
/// to bind often.
const MAX_BYTES: u64 = 6 << 20;
const RUN_FOR: Duration = Duration::from_secs(4);
const LARGE: usize = 1 << 20;

fn builder(root: &str) -> DiskCacheBuilder {
    DiskCache::builder()
        .root(root)
        .max_entries(MAX_ENTRIES)
        .max_bytes(MAX_BYTES)
        .lock_timeout(Duration::from_secs(30))
}

fn key_name(k: u64) -> String {
    format!("pipeline/step-{k:02}")
}

/// splitmix64: a position-addressable generator for value bodies.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The body of the value written by `writer` as its `seq`th write. Text
/// bodies are ASCII; byte bodies use every byte value.
fn body(writer: u64, seq: u64, len: usize, text: bool) -> Vec<u8> {
    let seed = mix((writer << 40) ^ seq);
    let mut out = Vec::with_capacity(len + 8);
    let mut i = 0;
    while out.len() < len {
        let w = mix(seed ^ i).to_le_bytes();
        if text {
            out.extend(w.iter().map(|b| b'a' + b % 26));
        } else {
            out.extend_from_slice(&w);
        }
        i += 1;
    }
    out.truncate(len);
    out
}

/// `etlmp|<key>|<writer>|<seq>|<t or b>|<len>|<crc32c of body>\n<body>`
fn make_value(key: &str, writer: u64, seq: u64, len: usize, text: bool) -> Vec<u8> {
    let body = body(writer, seq, len, text);
    let mut v = format!(
        "etlmp|{key}|{writer}|{seq}|{}|{len}|{:08x}\n",
        if text { 't' } else { 'b' },
        crc32c(&body)
    )
    .into_bytes();
    v.extend_from_slice(&body);
    v
}

/// Checks a value read back under `key`; `text` is whether it came back as
/// text. Returns a description of what is wrong.
fn verify(key: &str, bytes: &[u8], text: Option<bool>) -> Result<(), String> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let head = std::str::from_utf8(&bytes[..nl]).map_err(|_| "header is not UTF-8")?;
    let f: Vec<&str> = head.split('|').collect();
    if f.len() != 7 || f[0] != "etlmp" {
        return Err(format!("bad header {head:?}"));
    }
    if f[1] != key {
        return Err(format!("value of key {:?} read under {key:?}", f[1]));
    }
    let writer: u64 = f[2].parse().map_err(|_| "bad writer")?;
    let seq: u64 = f[3].parse().map_err(|_| "bad seq")?;
    let is_text = f[4] == "t";
    let len: usize = f[5].parse().map_err(|_| "bad len")?;
    let got = &bytes[nl + 1..];
    if got.len() != len {
        return Err(format!("{head}: body is {} bytes", got.len()));
    }
    if format!("{:08x}", crc32c(got)) != f[6] {
        return Err(format!("{head}: checksum mismatch"));
    }
    if got != body(writer, seq, len, is_text).as_slice() {
        return Err(format!("{head}: body differs from what was written"));
    }
    if let Some(t) = text
        && t != is_text
    {
        return Err(format!("{head}: came back as text={t}"));
    }
    Ok(())
}

#[derive(Default, Debug)]
struct Report {
    sets: u64,
    gets: u64,
    hits: u64,
    streams_read: u64,
    evictions: u64,
    corrupt: u64,
    errors: u64,
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = mix(self.0);
        self.0 % n
    }
}

async fn run_worker(root: String, id: u64) -> Report {
    let cache = builder(&root).build().await.expect("open the shared cache");
    let mut rng = Rng(id.wrapping_mul(0x1234_5678_9abc_def1) + 1);
    let mut r = Report::default();
    let mut seq = 0u64;
    let start = Instant::now();
    while start.elapsed() < RUN_FOR {
        let key = key_name(rng.below(KEYS));
        let compression =
            [Compression::NONE, Compression::gzip(), Compression::zstd()][rng.below(3) as usize];
        let opts = SetOptions::new().compression(compression);
        let len = if rng.below(6) == 0 {
            LARGE - 4096 + rng.below(8192) as usize
        } else {
            rng.below(20_000) as usize
        };
        let op = rng.below(10);
        seq += 1;
        let outcome: Result<(), String> = match op {
            // set a text value
            0 | 1 => {
                let v = make_value(&key, id, seq, len, true);
                let text = String::from_utf8(v).unwrap();
                cache
                    .set(&key, Value::Text(text), opts)
                    .await
                    .map(|_| r.sets += 1)
                    .map_err(|e| format!("set text: {e}"))
            }
            // set a bytes value
            2 | 3 => {
                let v = make_value(&key, id, seq, len, false);
                cache
                    .set(&key, Value::Bytes(Bytes::from(v)), opts)
                    .await
                    .map(|_| r.sets += 1)
                    .map_err(|e| format!("set bytes: {e}"))
            }
            // set a stream, in uneven chunks
            4 | 5 => {
                let v = Bytes::from(make_value(&key, id, seq, len, false));
                let step = 1 + rng.below(100_000) as usize;
                let chunks: Vec<std::io::Result<Bytes>> = (0..v.len())
                    .step_by(step)
                    .map(|i| Ok(v.slice(i..(i + step).min(v.len()))))
                    .collect();
                cache
                    .set_stream(&key, futures::stream::iter(chunks).boxed(), opts)
                    .await
                    .map(|_| r.sets += 1)
                    .map_err(|e| format!("set_stream: {e}"))
            }
            // get
            6..=8 => {
                r.gets += 1;
                match cache.get(&key).await {
                    Ok(None) => Ok(()),
                    Ok(Some(Value::Text(t))) => {
                        r.hits += 1;
                        verify(&key, t.as_bytes(), Some(true))
                    }
                    Ok(Some(Value::Bytes(b))) => {
                        r.hits += 1;
                        verify(&key, &b, Some(false))
                    }
                    Ok(Some(other)) => Err(format!("unexpected kind {:?}", other.kind())),
                    Err(e @ Error::Corrupt { .. }) => {
                        r.corrupt += 1;
                        Err(format!("get: {e}"))
                    }
                    Err(e) => Err(format!("get: {e}")),
                }
            }
            // get_stream
            _ => {
                r.gets += 1;
                let chunk = 1 + rng.below(200_000) as usize;
                match cache.get_stream(&key, chunk).await {
                    Ok(None) => Ok(()),
                    Ok(Some(s)) => {
                        r.hits += 1;
                        match s.try_collect::<Vec<Bytes>>().await {
                            Ok(chunks) => {
                                r.streams_read += 1;
                                verify(&key, &chunks.concat(), None)
                            }
                            Err(e) => {
                                if e.kind() == std::io::ErrorKind::InvalidData {
                                    r.corrupt += 1;
                                }
                                Err(format!("get_stream read: {e}"))
                            }
                        }
                    }
                    Err(e @ Error::Corrupt { .. }) => {
                        r.corrupt += 1;
                        Err(format!("get_stream: {e}"))
                    }
                    Err(e) => Err(format!("get_stream: {e}")),
                }
            }
        };
        if let Err(what) = outcome {
            r.errors += 1;
            eprintln!("worker {id}: key {key}: {what}");
        }
    }
    r.evictions = cache.stats().await.expect("stats").evictions;
    r
}

/// A worker process; a no-op unless started by `many_processes_share_one_cache`.
#[test]
fn worker() {
    let (Ok(root), Ok(id)) = (std::env::var(ENV_ROOT), std::env::var(ENV_ID)) else {
        return;
    };
    let id: u64 = id.parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let r = rt.block_on(run_worker(root, id));
    println!(
        "MPRESULT worker={id} sets={} gets={} hits={} streams_read={} evictions={} corrupt={} errors={}",
        r.sets, r.gets, r.hits, r.streams_read, r.evictions, r.corrupt, r.errors
    );
}

fn field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
        .parse()
        .unwrap()
}

#[test]
fn many_processes_share_one_cache() {
    let dir = tempfile::tempdir().unwrap();
    // The workers create the root themselves, all at once.
    let root = dir.path().join("shared-cache");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..WORKERS)
        .map(|id| {
            Command::new(&exe)
                .args(["--exact", "worker", "--nocapture", "--test-threads=1"])
                .env(ENV_ROOT, &root)
                .env(ENV_ID, id.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();

    let (mut total_sets, mut total_evictions, mut total_streams_read) = (0, 0, 0);
    for (id, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "worker {id} failed ({}):\n{stdout}\n{stderr}",
            out.status
        );
        let lines: Vec<&str> = stdout
            .lines()
            // libtest may print "test worker ... " on the same line first.
            .filter_map(|l| l.find("MPRESULT").map(|i| &l[i..]))
            .collect();
        assert_eq!(lines.len(), 1, "worker {id} did not report:\n{stdout}");
        let line = lines[0];
        println!("{line}");
        assert_eq!(field(line, "corrupt"), 0, "worker {id}: {line}\n{stderr}");
        assert_eq!(field(line, "errors"), 0, "worker {id}: {line}\n{stderr}");
        for name in ["sets", "gets", "hits"] {
            assert!(field(line, name) > 0, "worker {id} did no {name}: {line}");
        }
        total_sets += field(line, "sets");
        total_evictions += field(line, "evictions");
        total_streams_read += field(line, "streams_read");
    }
    assert!(total_sets > MAX_ENTRIES * 10, "the cache was churned");
    assert!(total_evictions > 0, "the limits were exercised");
    assert!(total_streams_read > 0, "streams were read back whole");

    // The limits hold on disk, checked before any cache opens the root again.
    let (files, bytes) = disk_usage(&root);
    assert!(
        files <= MAX_ENTRIES,
        "{files} entry files on disk, at most {MAX_ENTRIES} allowed"
    );
    assert!(
        bytes <= MAX_BYTES,
        "{bytes} bytes of entries on disk, at most {MAX_BYTES} allowed"
    );
    assert!(files > 0);
    let left = files_in(&tmp_dir(&root));
    assert!(left.is_empty(), "temp files left behind: {left:?}");
    let left = files_in(&locks_dir(&root));
    assert!(left.is_empty(), "lock files left behind: {left:?}");

    // The counters the processes shared stayed exact (read before a cache
    // opens the root alone and recounts).
    let usage = std::fs::read(usage_file(&root)).unwrap();
    assert_eq!(usage.len(), 24, "entries, bytes, the journal's next number");
    let u64_at = |at: usize| u64::from_le_bytes(usage[at..at + 8].try_into().unwrap());
    let counted = (u64_at(0), u64_at(8));
    // Every eviction of every process took its own number in the removal
    // journal: none was lost or written twice.
    assert_eq!(
        u64_at(16),
        total_evictions,
        "the journal's next number against the evictions the processes made"
    );
    assert_eq!(
        counted,
        (files, bytes),
        "usage counters vs entry files on disk"
    );

    // Every entry left is whole.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let root = root.to_str().unwrap();
        let cache = builder(root).build().await.unwrap();
        let mut found = 0;
        for k in 0..KEYS {
            let key = key_name(k);
            match cache.get(&key).await.unwrap() {
                None => {}
                Some(Value::Text(t)) => verify(&key, t.as_bytes(), Some(true)).unwrap(),
                Some(Value::Bytes(b)) => verify(&key, &b, Some(false)).unwrap(),
                Some(other) => panic!("unexpected {other:?}"),
            }
            if entry_path(std::path::Path::new(root), &key).exists() {
                found += 1;
            }
        }
        assert_eq!(found, files);
    });
}
