//! LRU eviction: amortized, one evictor at a time across processes.
//!
//! Sets only bump the shared counters. When a set pushes them past a limit,
//! that process tries to become the evictor (a non-blocking lock on
//! `evict.lock`; if another process holds it, that one is already at work),
//! scans the entry files once, and removes the least recently used (oldest
//! mtime) until the counts are at the low-water mark. With a low-water mark
//! of 90% a scan of N entries frees N/10 of them, so a set costs O(1)
//! amortized and never scans the directory on its own account.

use std::fs;
use std::time::{Instant, SystemTime};

use crate::cache::Inner;
use crate::sys;
use crate::usage::{Counts, Wait};

/// The entry a set is publishing: reserved in the counters, not yet on disk.
pub(crate) struct Publishing<'a> {
    /// Its file name; never a victim.
    pub hash: &'a str,
    /// What its reservation added to the counters (entries, bytes).
    pub reserved: (i64, i64),
}

/// Victims removed per hold of the counters.
const EVICT_BATCH: usize = 32;

/// What a batch removed (entries, bytes) and the counts after it.
type Batch = (u64, u64, Counts);

struct Candidate {
    mtime: SystemTime,
    id: (u64, u64),
    hash: String,
}

impl Inner {
    /// Counts the entry files and stores the result in the shared counters.
    pub(crate) fn recount(&self) -> Counts {
        let mut c = Counts::default();
        for (_, path) in self.entry_files() {
            if let Ok(m) = fs::symlink_metadata(&path)
                && m.is_file()
            {
                c = c.add(1, m.len() as i64);
            }
        }
        let _ = self.usage.set(c);
        c
    }

    pub(crate) fn over_limits(&self, c: Counts) -> bool {
        self.config.max_entries.is_some_and(|m| c.entries > m)
            || self.config.max_bytes.is_some_and(|m| c.bytes > m)
    }

    fn low_water(&self, max: Option<u64>) -> u64 {
        max.map_or(u64::MAX, |m| {
            ((m as f64) * self.config.low_water).floor() as u64
        })
    }

    /// Evicts down to the low-water mark if this process can become the
    /// evictor. `keep` is the entry being published (never a victim). Errors
    /// are logged, not returned: a set does not fail because eviction did.
    pub(crate) fn evict(&self, keep: Option<Publishing<'_>>) {
        // Sets of other processes that pass a limit while this one evicts
        // return at once (the evict lock is taken): check again after each
        // round, so the limits hold when the last of them returns.
        for _ in 0..3 {
            if !self.evict_round(keep.as_ref()) {
                // Another process is evicting, and will check again (or the
                // counters are held too long: a later set evicts).
                return;
            }
            match self.usage.get() {
                Ok(c) if self.over_limits(c) => continue,
                _ => return,
            }
        }
    }

    /// One scan and eviction; false when it cannot run now (another process
    /// holds the evict lock, or the counters for longer than the lock
    /// timeout).
    fn evict_round(&self, keep: Option<&Publishing<'_>>) -> bool {
        let Ok(guard) = crate::lock::open_persistent(&self.layout.evict_lock()) else {
            return false;
        };
        if guard.try_lock().is_err() {
            return false; // another process is evicting
        }
        let started = Instant::now();
        // Stat each entry relative to its open directory (`DirEntry::metadata`
        // does not follow symlinks and looks up one name, not the whole path):
        // the scan is most of an eviction's cost at a million entries.
        let mut candidates: Vec<Candidate> = Vec::new();
        for dir in self.layout.fanout_dirs() {
            let Ok(rd) = fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let Ok(hash) = e.file_name().into_string() else {
                    continue;
                };
                if !crate::layout::is_entry_name(&hash)
                    || keep.as_ref().map(|k| k.hash) == Some(hash.as_str())
                {
                    continue;
                }
                if let Ok(m) = e.metadata()
                    && m.is_file()
                {
                    candidates.push(Candidate {
                        mtime: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        id: sys::file_id(&m),
                        hash,
                    });
                }
            }
        }
        candidates.sort_unstable_by_key(|c| c.mtime);
        let target_entries = self.low_water(self.config.max_entries);
        let target_bytes = self.low_water(self.config.max_bytes);
        let (mut evicted, mut freed) = (0u64, 0u64);
        let mut counts = match self.usage.get() {
            Ok(c) => c,
            Err(e) => {
                // Another process holds the counters too long (or they fail):
                // the sets that pass the limits later evict.
                tracing::warn!(error = ?e, "eviction skipped: the usage counters are not available");
                let _ = guard.unlock();
                return false;
            }
        };
        let scanned = candidates.len();
        let within = |c: Counts| c.entries <= target_entries && c.bytes <= target_bytes;
        // Victims go in batches, each with the counters held exclusively (as
        // publications hold them), so no lock file per victim is needed and
        // the counters are read and written once per batch, not per victim.
        for batch in candidates.chunks(EVICT_BATCH) {
            if within(counts) {
                break;
            }
            let done = self
                .usage
                .exclusive(Wait::Timeout, |u| -> std::io::Result<Batch> {
                    let mut now = u.get()?;
                    let (mut n, mut bytes) = (0u64, 0u64);
                    for c in batch {
                        if within(now) {
                            break;
                        }
                        // Skip an entry read or replaced since the scan.
                        let path = self.layout.entry_path(&c.hash);
                        let Ok(m) = fs::symlink_metadata(&path) else {
                            continue;
                        };
                        let still = m.is_file()
                            && sys::file_id(&m) == c.id
                            && m.modified().ok() == Some(c.mtime);
                        if still && fs::remove_file(&path).is_ok() {
                            n += 1;
                            bytes += m.len();
                            now = now.add(-1, -(m.len() as i64));
                        }
                    }
                    if n > 0 {
                        now = u.add(-(n as i64), -(bytes as i64))?;
                    }
                    Ok((n, bytes, now))
                });
            match done {
                Ok(Ok((n, bytes, now))) => {
                    evicted += n;
                    freed += bytes;
                    self.counters
                        .evictions
                        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    counts = now;
                }
                Ok(Err(_)) => counts = self.usage.get().unwrap_or(counts),
                Err(e) => {
                    tracing::warn!(error = ?e, "eviction stopped: the usage counters are not available");
                    break;
                }
            }
        }
        if evicted as usize == scanned && self.over_limits(counts) {
            // Everything scanned is gone and the counters still say too much:
            // they drifted (a process died between reserving and publishing).
            let mut truth = self.recount();
            // The entry being published is reserved but not on disk yet (an
            // entry it replaces is, and was recounted): keep its reservation.
            if let Some(k) = &keep {
                truth = self.usage.add(k.reserved.0, k.reserved.1).unwrap_or(truth);
            }
            tracing::warn!(
                ?counts,
                ?truth,
                "usage counters drifted; recounted from the directory"
            );
        }
        tracing::info!(
            evicted,
            freed_bytes = freed,
            scanned,
            took_ms = started.elapsed().as_millis() as u64,
            "evicted least recently used entries"
        );
        let _ = guard.unlock();
        true
    }
}
