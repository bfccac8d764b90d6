//! Helpers shared by the reliability suites of etl-cache (the tests under
//! `tests/`): the documented on-disk layout of `DiskCache`, child processes
//! (the test binary re-executed in a role), mounts (tmpfs, read-only binds),
//! deterministic self-describing payloads, fresh roots and handles, a small
//! seeded RNG, and the counts each suite reports.
//!
//! See `RELIABILITY.md` at the repository root for what each suite tries and
//! how to run it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod fixtures;
pub mod layout;
pub mod mounts;
pub mod payload;
pub mod proc;

use std::io::Write;

/// A small, fast, seeded generator (SplitMix64); enough to drive tests
/// reproducibly without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        payload::mix(self.0)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A seed from `ETL_CACHE_SEED`, or a fresh one from the clock. Suites print
/// the seed they use so that a failure can be replayed.
pub fn seed() -> u64 {
    match std::env::var("ETL_CACHE_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("ETL_CACHE_SEED={s:?} is not a u64")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

/// Whether the longer mode is on (`ETL_CACHE_LONG=1`).
pub fn long_mode() -> bool {
    matches!(
        std::env::var("ETL_CACHE_LONG").as_deref(),
        Ok("1" | "true" | "yes")
    )
}

/// How many iterations a suite runs: the value of the environment variable
/// `var` when set, else `long` in the longer mode, else `ci`.
pub fn iterations(var: &str, ci: u64, long: u64) -> u64 {
    match std::env::var(var) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={v:?} is not a number")),
        Err(_) if long_mode() => long,
        Err(_) => ci,
    }
}

/// Reports a suite's counts: printed to stderr (visible with `--nocapture`)
/// and appended to the file named by `ETL_CACHE_REPORT`, if set.
pub fn report(suite: &str, line: &str) {
    let text = format!("[reliability] {suite}: {line}\n");
    eprint!("{text}");
    if let Ok(path) = std::env::var("ETL_CACHE_REPORT")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = f.write_all(text.as_bytes());
    }
}

/// A multi-threaded Tokio runtime with two workers (the machines have two cores).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime")
}

/// Fails the test with a clear message unless it runs as root: mounts and
/// read-only binds need it. Tells without `unsafe` by creating a file and
/// reading its owner.
pub fn require_root(what: &str) {
    use std::os::unix::fs::MetadataExt;
    let f = tempfile::NamedTempFile::new().expect("a temp file");
    let uid = f.as_file().metadata().expect("stat a temp file").uid();
    assert_eq!(
        uid, 0,
        "{what} needs root (the CI runs the tests as root); this process runs as uid {uid}"
    );
}
