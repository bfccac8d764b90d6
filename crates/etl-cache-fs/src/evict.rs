//! LRU eviction: flat, planned by one scan, one scanner at a time across
//! processes.
//!
//! Sets only bump the shared counters. When a set pushes them past a limit,
//! it removes the least recently used entries until the counts are within
//! the limits again: usually one entry, removed with the counters already
//! held for the set's own publication. The victims come from a queue that a
//! scan of the entry files fills, oldest mtime first, with as many entries
//! as bring the cache down to the low-water mark (90% by default): a scan of
//! N entries plans N/10 evictions, so a set costs O(1) amortized, never scans
//! on its own account, and the cache stays full rather than dropping a tenth
//! of itself at once. One process scans at a time (a non-blocking lock on
//! `evict.lock`; a set that finds it taken leaves the work to its holder).
//!
//! A queued entry is removed only if its file is the one the scan saw (same
//! file and mtime): one read or replaced since is newer than every entry
//! still queued, so the queue front is always the least recently used entry
//! of the whole cache. A removed entry's file, when small, becomes a spare
//! that the next set writes again (see `spare`), so a full cache taking new
//! keys creates and frees no inode.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use crate::cache::Inner;
use crate::sys;
use crate::usage::{Counts, Locked, Wait};

/// The entry a set is publishing: reserved in the counters, not yet on disk.
pub(crate) struct Publishing<'a> {
    /// Its file name; never a victim.
    pub hash: &'a str,
    /// What its reservation added to the counters (entries, bytes).
    pub reserved: (i64, i64),
}

/// Victims removed per hold of the counters.
const EVICT_BATCH: usize = 32;

struct Candidate {
    mtime: SystemTime,
    id: (u64, u64),
    len: u64,
    hash: Box<str>,
}

/// The least recently used entries the last scan found, oldest first.
#[derive(Default)]
pub(crate) struct Victims {
    queue: Mutex<VecDeque<Candidate>>,
}

impl Victims {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Candidate>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
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

    /// With the counters held (`u`, whose counts are `now`), removes queued
    /// victims while the counts are over a limit, looking at most at `max`
    /// of them. `keep` is the entry being published, never a victim. Returns
    /// the counts after and how many victims were looked at and removed.
    pub(crate) fn evict_queued(
        &self,
        u: &Locked<'_>,
        keep: Option<&str>,
        mut now: Counts,
        max: usize,
    ) -> io::Result<(Counts, usize, u64)> {
        let (mut n, mut bytes, mut looked) = (0u64, 0u64, 0);
        {
            let mut queue = self.victims.lock();
            while self.over_limits(now) && looked < max {
                let Some(c) = queue.pop_front() else {
                    break;
                };
                looked += 1;
                if keep == Some(&*c.hash) {
                    continue;
                }
                // Skip an entry read or replaced since the scan: it is newer
                // than every entry still queued.
                let path = self.layout.entry_path(&c.hash);
                let Ok(m) = fs::symlink_metadata(&path) else {
                    continue;
                };
                let still =
                    m.is_file() && sys::file_id(&m) == c.id && m.modified().ok() == Some(c.mtime);
                if still && self.spares.take_over(&path, m.len()) {
                    n += 1;
                    bytes += m.len();
                    now = now.add(-1, -(m.len() as i64));
                }
            }
        }
        if n > 0 {
            now = u.add(-(n as i64), -(bytes as i64))?;
            self.counters
                .evictions
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        Ok((now, looked, n))
    }

    /// Evicts until the counts are within the limits, scanning for victims
    /// when none are queued, if this process can become the scanner. `keep`
    /// is the entry being published (never a victim). Errors are logged, not
    /// returned: a set does not fail because eviction did.
    pub(crate) fn evict(&self, keep: Option<Publishing<'_>>) {
        let hash = keep.as_ref().map(|k| k.hash);
        // Queued victims first: no scan while they last.
        loop {
            let done = self.usage.exclusive(Wait::Timeout, |u| {
                let now = u.get()?;
                self.evict_queued(u, hash, now, EVICT_BATCH)
            });
            match done {
                Ok(Ok((after, _, _))) if !self.over_limits(after) => return,
                // More may be queued.
                Ok(Ok((_, looked, _))) if looked > 0 => continue,
                Ok(Ok(_)) => break,
                Ok(Err(e)) | Err(crate::usage::UsageError::Io(e)) => {
                    tracing::warn!(error = ?e, "eviction stopped: the usage counters failed");
                    return;
                }
                Err(e) => {
                    // Another process holds the counters too long: the sets
                    // that pass the limits later evict.
                    tracing::warn!(error = ?e, "eviction skipped: the usage counters are not available");
                    return;
                }
            }
        }
        // Sets of other processes that pass a limit while this one scans
        // return at once (the evict lock is taken): check again after each
        // round, so the limits hold when the last of them returns.
        for _ in 0..3 {
            if !self.evict_round(keep.as_ref()) {
                // Another process is scanning, and will check again (or the
                // counters are held too long: a later set evicts).
                return;
            }
            match self.usage.get() {
                Ok(c) if self.over_limits(c) => continue,
                _ => return,
            }
        }
    }

    /// One scan, which replaces the queue, then evictions from it down to
    /// the limits; false when it cannot run now (another process holds the
    /// evict lock, or the counters for longer than the lock timeout).
    fn evict_round(&self, keep: Option<&Publishing<'_>>) -> bool {
        let Ok(guard) = crate::lock::open_persistent(&self.layout.evict_lock()) else {
            return false;
        };
        if guard.try_lock().is_err() {
            return false; // another process is scanning
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
                        len: m.len(),
                        hash: hash.into_boxed_str(),
                    });
                }
            }
        }
        let counts = match self.usage.get() {
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
        // Queue the oldest entries, as many as bring the counts to the
        // low-water mark.
        candidates.sort_unstable_by_key(|c| c.mtime);
        let target_entries = self.low_water(self.config.max_entries);
        let target_bytes = self.low_water(self.config.max_bytes);
        let mut planned = counts;
        let mut queued = 0;
        for c in &candidates {
            if planned.entries <= target_entries && planned.bytes <= target_bytes {
                break;
            }
            planned = planned.add(-1, -(c.len as i64));
            queued += 1;
        }
        candidates.truncate(queued);
        *self.victims.lock() = candidates.into();
        let hash = keep.as_ref().map(|k| k.hash);
        let (mut counts, mut evicted) = (counts, 0u64);
        loop {
            let done = self.usage.exclusive(Wait::Timeout, |u| {
                let now = u.get()?;
                self.evict_queued(u, hash, now, EVICT_BATCH)
            });
            match done {
                Ok(Ok((after, _, removed))) => {
                    evicted += removed;
                    counts = after;
                    if !self.over_limits(after) || self.victims.lock().is_empty() {
                        break;
                    }
                }
                Ok(Err(_)) => {
                    counts = self.usage.get().unwrap_or(counts);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = ?e, "eviction stopped: the usage counters are not available");
                    break;
                }
            }
        }
        if queued == scanned && self.over_limits(counts) && self.victims.lock().is_empty() {
            // Every entry scanned was queued and the counters still say too
            // much: they drifted (a process died between reserving and
            // publishing).
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
            scanned,
            queued,
            evicted,
            took_ms = started.elapsed().as_millis() as u64,
            "planned the next evictions from a scan of the entries"
        );
        let _ = guard.unlock();
        true
    }
}
