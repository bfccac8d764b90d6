//! Crash consistency of DiskCache under `kill -9`.
//!
//! A writer child process loops over a fixed key set doing sets of small
//! values (every kind, compressed or not), large streams (compressed or not),
//! deletes, clears and reads. It logs each operation before it starts
//! (`B seq op key`) and after it returns (`E seq`). The parent kills it with
//! SIGKILL at a random moment, then reads every key through its own handle
//! (open all along, so leftovers of the kill stay in place): each key must
//! hold the value of the last completed operation on it, or the value of the
//! operation that was in flight — complete and verified — or be absent where
//! that is allowed. Never torn bytes, never a checksum failure.
//!
//! Phase A runs without capacity limits (the expected state is exact);
//! phase B with small limits, so kills also land in eviction (a key may then
//! also be absent). After all kills the parent closes its handle and reopens
//! the root: leftover temp files are swept and the stats equal the disk.
//!
//! `ETL_CACHE_KILLS=N` sets the number of kills (default 320, 3000 with
//! `ETL_CACHE_LONG=1`); `ETL_CACHE_SEED` replays a run.

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use etl_cache_core::{Cache, CacheExt, Compression, Error, Kind, SetOptions};
use etl_cache_fs::DiskCache;
use etl_cache_reliability::fixtures::temp_root;
use etl_cache_reliability::payload::{self, Style};
use etl_cache_reliability::{Rng, iterations, layout, proc, report, runtime, seed};
use futures::TryStreamExt;

const KEYS: usize = 8;
const ROLE: &str = "crash-writer";
const MAX_ENTRIES: u64 = 5;
const MAX_BYTES: u64 = 3 << 20;

fn key(i: usize) -> String {
    // Folders, spaces and non-ASCII: names are hashed anyway.
    match i % 4 {
        0 => format!("crash/k{i}"),
        1 => format!("crash/deep/folder/k{i}.xml"),
        2 => format!("crash k{i} ünïcødé"),
        _ => format!("k{i}"),
    }
}

fn compression(rng: &mut Rng) -> Compression {
    match rng.below(5) {
        0 | 1 => Compression::NONE,
        2 => Compression::gzip_level(1).expect("level"),
        3 => Compression::zstd(),
        _ => Compression::gzip(),
    }
}

fn builder(root: &Path, limited: bool) -> etl_cache_fs::DiskCacheBuilder {
    let b = DiskCache::builder()
        .root(root)
        .lock_timeout(Duration::from_secs(20));
    if limited {
        b.max_entries(MAX_ENTRIES).max_bytes(MAX_BYTES)
    } else {
        b
    }
}

/// The writer: runs until killed.
#[test]
fn crash_writer() {
    if !proc::is_role(ROLE) {
        return;
    }
    let env = |n: &str| std::env::var(n).unwrap_or_else(|_| panic!("{n} is set by the parent"));
    let root = PathBuf::from(env("CRASH_ROOT"));
    let log_path = PathBuf::from(env("CRASH_LOG"));
    let mut seq: u64 = env("CRASH_SEQ").parse().expect("seq");
    let mut rng = Rng::new(env("CRASH_SEED").parse().expect("seed"));
    let limited = env("CRASH_LIMITED") == "1";
    runtime().block_on(async move {
        let cache = builder(&root, limited).build().await.expect("open");
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open the log");
        println!("ready");
        std::io::stdout().flush().expect("flush");
        loop {
            seq += 1;
            let k = rng.below(KEYS as u64) as usize;
            let name = key(k);
            let roll = rng.below(100);
            let op = match roll {
                0..40 => 'S',
                40..70 => 'T',
                70..83 => 'D',
                83..85 => 'C',
                _ => 'G',
            };
            // One write(2) per line: a kill never tears it.
            log.write_all(format!("B {seq} {op} {k}\n").as_bytes())
                .expect("log");
            let opts = SetOptions::new().compression(compression(&mut rng));
            match op {
                'S' => {
                    let kind = *rng.pick(&[Kind::Text, Kind::Bytes, Kind::Json]);
                    let len = rng.below(6000) as usize;
                    let style = *rng.pick(&[Style::Text, Style::Random]);
                    let v = payload::value(&name, seq, kind, len, style);
                    cache.set(&name, v, opts).await.expect("set");
                }
                'T' => {
                    let len = rng.range(64 << 10, 1536 << 10) as usize;
                    let style = *rng.pick(&[Style::Text, Style::Random]);
                    let chunks = vec![
                        rng.range(1, 70_000) as usize,
                        rng.range(1000, 20_000) as usize,
                    ];
                    let s = payload::stream(&name, seq, len, style, chunks);
                    cache.set_stream(&name, s, opts).await.expect("set_stream");
                }
                'D' => {
                    cache.delete(&name).await.expect("delete");
                }
                'C' => {
                    cache.clear().await.expect("clear");
                }
                _ => {
                    if let Some(v) = cache.get(&name).await.expect("get") {
                        payload::verify(&name, &v).expect("the writer reads a valid value");
                    }
                }
            }
            log.write_all(format!("E {seq}\n").as_bytes()).expect("log");
        }
    });
}

/// What a key holds: nothing, or the value written by operation `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    Absent,
    Value(u64),
}

/// The operations a child logged: `(seq, op, key)` and whether each ended.
struct Logged {
    ops: Vec<(u64, char, usize, bool)>,
}

fn read_log(path: &Path, from: &mut usize) -> Logged {
    let text = std::fs::read(path).unwrap_or_default();
    let text = &text[*from..];
    // Only whole lines: the tail may be cut (it never is in practice: one
    // write per line), and the next child continues the file.
    let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let text = std::str::from_utf8(&text[..whole]).expect("the log is ASCII");
    *from += whole;
    let mut ops: Vec<(u64, char, usize, bool)> = Vec::new();
    let mut index: HashMap<u64, usize> = HashMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts[..] {
            ["B", seq, op, k] => {
                let seq: u64 = seq.parse().expect("seq");
                index.insert(seq, ops.len());
                ops.push((
                    seq,
                    op.chars().next().expect("op"),
                    k.parse().expect("key"),
                    false,
                ));
            }
            ["E", seq] => {
                let seq: u64 = seq.parse().expect("seq");
                let i = index[&seq];
                ops[i].3 = true;
            }
            _ => panic!("bad log line {line:?}"),
        }
    }
    for (i, op) in ops.iter().enumerate() {
        assert!(
            op.3 || i + 1 == ops.len(),
            "only the last operation may be in flight: {op:?}"
        );
    }
    Logged { ops }
}

#[derive(Default, Debug)]
struct Tally {
    kills: u64,
    killed_during_open: u64,
    in_flight: BTreeMap<char, u64>,
    in_flight_published: u64,
    in_flight_not_published: u64,
    temp_files_left: u64,
    lock_files_left: u64,
    ops_logged: u64,
    keys_checked: u64,
    values_verified: u64,
    streams_verified: u64,
    bytes_verified: u64,
}

struct Checker {
    root: PathBuf,
    log: PathBuf,
    log_pos: usize,
    held: Vec<Held>,
    tally: Tally,
}

impl Checker {
    fn apply(held: &mut [Held], op: char, k: usize, seq: u64) {
        match op {
            'S' | 'T' => held[k] = Held::Value(seq),
            'D' => held[k] = Held::Absent,
            'C' => held.iter_mut().for_each(|h| *h = Held::Absent),
            _ => {}
        }
    }

    /// Checks every key after a kill; `may_evict` allows any key to be absent.
    async fn check(&mut self, cache: &DiskCache, may_evict: bool, rng: &mut Rng) {
        let logged = read_log(&self.log, &mut self.log_pos);
        self.tally.ops_logged += logged.ops.len() as u64;
        let mut committed = self.held.clone();
        let mut in_flight = None;
        for &(seq, op, k, ended) in &logged.ops {
            if ended {
                Self::apply(&mut committed, op, k, seq);
            } else {
                in_flight = Some((seq, op, k));
            }
        }
        let mut alternative = committed.clone();
        match in_flight {
            Some((seq, op, k)) => {
                *self.tally.in_flight.entry(op).or_default() += 1;
                Self::apply(&mut alternative, op, k, seq);
            }
            None => *self.tally.in_flight.entry('-').or_default() += 1,
        }
        let mut observed = Vec::with_capacity(KEYS);
        for k in 0..KEYS {
            let name = key(k);
            let got = match cache.get(&name).await {
                Ok(Some(v)) => {
                    let seq = payload::verify(&name, &v).unwrap_or_else(|e| {
                        panic!("key {name:?} holds a bad value after a kill: {e}")
                    });
                    self.tally.values_verified += 1;
                    self.tally.bytes_verified += v.to_bytes().len() as u64;
                    Held::Value(seq)
                }
                Ok(None) => Held::Absent,
                Err(e @ Error::Corrupt { .. }) => {
                    panic!("checksum failure after a kill -9 (must never happen): {e}")
                }
                Err(e) => panic!("reading {name:?} after a kill failed: {e}"),
            };
            self.tally.keys_checked += 1;
            let ok =
                got == committed[k] || got == alternative[k] || (may_evict && got == Held::Absent);
            assert!(
                ok,
                "key {name:?} holds {got:?}; expected {:?} (last completed) or {:?} (in flight {in_flight:?})",
                committed[k], alternative[k]
            );
            if let Held::Value(seq) = got {
                // Stream it back too, in an odd chunk size.
                let chunk = rng.range(1, 200_000) as usize;
                let s = cache
                    .get_stream(&name, chunk)
                    .await
                    .unwrap_or_else(|e| panic!("get_stream {name:?}: {e}"))
                    .unwrap_or_else(|| panic!("{name:?} vanished between get and get_stream"));
                let chunks: Vec<bytes::Bytes> = s
                    .try_collect()
                    .await
                    .unwrap_or_else(|e| panic!("streaming {name:?} failed: {e}"));
                let all = chunks.concat();
                let raw = match cache.get(&name).await.expect("get") {
                    Some(v) => v.to_bytes(),
                    None => panic!("{name:?} vanished"),
                };
                assert_eq!(all, raw, "stream and get of {name:?} differ");
                if payload::verify_bytes(&name, &all).is_ok() {
                    assert_eq!(payload::verify_bytes(&name, &all), Ok(seq));
                }
                self.tally.streams_verified += 1;
            }
            observed.push(got);
        }
        if let Some((seq, op, k)) = in_flight
            && matches!(op, 'S' | 'T')
        {
            if observed[k] == Held::Value(seq) {
                self.tally.in_flight_published += 1;
            } else {
                self.tally.in_flight_not_published += 1;
            }
        }
        // Listing sees exactly the keys that hold values.
        let listed = cache.keys(None).await.expect("list after a kill");
        let mut want: Vec<String> = (0..KEYS)
            .filter(|&k| observed[k] != Held::Absent)
            .map(key)
            .collect();
        want.sort();
        assert_eq!(listed, want, "list disagrees with get after a kill");
        // The shared counters may run high after a kill (reserved, not yet
        // published), never low: limits still hold.
        let stats = cache.stats().await.expect("stats");
        let (n, bytes) = layout::disk_usage(&self.root);
        assert!(
            stats.entries >= n && stats.bytes >= bytes,
            "counters below the disk after a kill (kill #{}, in flight: {in_flight:?}, ops: {:?}): {stats:?} vs {n} entries, {bytes} bytes",
            self.tally.kills,
            logged.ops
        );
        if may_evict {
            assert!(
                n <= MAX_ENTRIES && bytes <= MAX_BYTES,
                "capacity exceeded on disk: {n} entries, {bytes} bytes"
            );
        }
        self.held = observed;
    }
}

fn run_phase(
    checker: &mut Checker,
    cache: &DiskCache,
    rt: &tokio::runtime::Runtime,
    rng: &mut Rng,
    kills: u64,
    limited: bool,
) {
    for _ in 0..kills {
        let seq_base = checker.tally.kills * 10_000_000;
        let mut cmd = proc::child("crash_writer", ROLE);
        cmd.env("CRASH_ROOT", &checker.root)
            .env("CRASH_LOG", &checker.log)
            .env("CRASH_SEQ", seq_base.to_string())
            .env("CRASH_SEED", rng.next_u64().to_string())
            .env("CRASH_LIMITED", if limited { "1" } else { "0" });
        let mut child = cmd.spawn().expect("spawn the writer");
        let lines = proc::Lines::of(&mut child);
        if rng.chance(8) {
            // Sometimes kill it while it opens the cache (creating
            // directories, sweeping temp files).
            std::thread::sleep(Duration::from_micros(rng.range(0, 15_000)));
            checker.tally.killed_during_open += 1;
        } else {
            lines.expect("ready", Duration::from_secs(60));
            let delay = match rng.below(10) {
                0 => 0,
                1..4 => rng.range(0, 3_000),
                _ => rng.range(0, 40_000),
            };
            std::thread::sleep(Duration::from_micros(delay));
        }
        proc::kill9(&mut child);
        checker.tally.kills += 1;
        checker.tally.temp_files_left +=
            layout::files_in(&layout::tmp_dir(&checker.root)).len() as u64;
        checker.tally.lock_files_left +=
            layout::files_in(&layout::locks_dir(&checker.root)).len() as u64;
        rt.block_on(checker.check(cache, limited, rng));
    }
}

#[test]
fn kill9_at_random_moments_leaves_old_or_new_values_only() {
    if proc::role().is_some() {
        return;
    }
    let kills = iterations("ETL_CACHE_KILLS", 320, 3000);
    let seed = seed();
    let mut rng = Rng::new(seed);
    let (dir, root) = temp_root();
    let log = dir.path().join("ops.log");
    let rt = runtime();
    let started = Instant::now();
    let mut checker = Checker {
        root: root.clone(),
        log,
        log_pos: 0,
        held: vec![Held::Absent; KEYS],
        tally: Tally::default(),
    };
    // The parent's handle stays open through the kills: a child never opens
    // the root alone, so nothing recounts or repairs behind the checker's back.
    let cache = rt
        .block_on(builder(&root, false).build())
        .expect("open the cache");
    let phase_a = kills * 3 / 4;
    run_phase(&mut checker, &cache, &rt, &mut rng, phase_a, false);
    // Each child that opens the root removes the spare files of the killed
    // ones before it: what is left is the parent's pool and the last
    // child's (8 each at most), not one set per kill.
    let spares_left = layout::files_in(&layout::base(&root).join("spare"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "spare"))
        .count();
    assert!(
        spares_left <= 16,
        "{spares_left} spare files after {phase_a} kills with a handle open"
    );
    // Phase B has limits: reopen alone with them, which recounts and evicts
    // down to them (the writers' handles are never alone, so they would
    // only evict on their next set), and see what is left.
    drop(cache);
    let cache = rt
        .block_on(builder(&root, true).build())
        .expect("reopen with limits");
    rt.block_on(async {
        for k in 0..KEYS {
            let name = key(k);
            let got = cache.get(&name).await.expect("get after evicting");
            let got = got.map(|v| payload::verify(&name, &v).expect("a valid value"));
            match (got, checker.held[k]) {
                (None, _) => checker.held[k] = Held::Absent,
                (Some(s), Held::Value(t)) if s == t => {}
                (g, h) => panic!("{name:?}: {g:?} after evicting, {h:?} before"),
            }
        }
    });
    let (n, bytes) = layout::disk_usage(&root);
    assert!(
        n <= MAX_ENTRIES && bytes <= MAX_BYTES,
        "the limits hold after reopening"
    );
    run_phase(&mut checker, &cache, &rt, &mut rng, kills - phase_a, true);

    // After the last kill: reopen alone; leftovers are swept, counters rebuilt.
    let left_tmp = layout::files_in(&layout::tmp_dir(&root)).len();
    drop(cache);
    let reopened = rt
        .block_on(builder(&root, true).build())
        .expect("reopen after the kills");
    assert!(
        layout::files_in(&layout::tmp_dir(&root)).is_empty(),
        "reopening leaves temp files: {:?}",
        layout::files_in(&layout::tmp_dir(&root))
    );
    let stats = rt.block_on(reopened.stats()).expect("stats");
    assert_eq!(
        (stats.entries, stats.bytes),
        layout::disk_usage(&root),
        "stats after reopening disagree with the disk"
    );
    // And every key still reads back as the checker last saw it.
    rt.block_on(async {
        for k in 0..KEYS {
            let name = key(k);
            let got = reopened.get(&name).await.expect("get after reopening");
            let got = got.map(|v| payload::verify(&name, &v).expect("valid"));
            let want = match checker.held[k] {
                Held::Absent => None,
                Held::Value(s) => Some(s),
            };
            assert_eq!(got, want, "{name:?} after reopening");
        }
    });
    let t = &checker.tally;
    report(
        "crash",
        &format!(
            "seed={seed} kills={} (during open {}) in_flight_at_kill={:?} \
             in_flight_writes_published={} not_published={} temp_files_left_by_kills={} \
             lock_files_left_by_kills={} temp_files_swept_at_reopen={left_tmp} spare_files_after_phase_a={spares_left} ops_logged={} \
             keys_checked={} values_verified={} streams_verified={} bytes_verified={} took={:.1}s",
            t.kills,
            t.killed_during_open,
            t.in_flight,
            t.in_flight_published,
            t.in_flight_not_published,
            t.temp_files_left,
            t.lock_files_left,
            t.ops_logged,
            t.keys_checked,
            t.values_verified,
            t.streams_verified,
            t.bytes_verified,
            started.elapsed().as_secs_f64()
        ),
    );
    assert!(t.kills >= kills);
    assert!(
        t.in_flight.get(&'T').copied().unwrap_or(0) > 0
            && t.in_flight.get(&'S').copied().unwrap_or(0) > 0,
        "no kill landed in a write: {:?}",
        t.in_flight
    );
}
