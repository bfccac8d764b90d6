//! LRU eviction: flat, planned by scans, one scanner at a time across
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
//! For a large cache (a plan of at least [`SCAN_AHEAD_MIN`] victims), the
//! next scan starts on a thread of its own when half of the queue is used,
//! so no set waits for a scan of a million entries; a set that finds the
//! queue empty while that scan runs waits for it. A scan keeps only the
//! victims it plans (a heap ordered by mtime), not every entry it sees.
//!
//! A queued entry is removed only if its file is the one the scan saw (same
//! file and mtime): one read or replaced since is newer than every entry
//! still queued, so the queue front is the least recently used entry of the
//! cache (among entries the scan saw: one written while a scan runs is newer
//! than any it queues). A removed entry's file, when small, becomes a spare
//! that the next set writes again (see `spare`), so a full cache taking new
//! keys creates and frees no inode.

use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use etl_cache_core::{EvictionLimit, RemovalCause};

use crate::dirs::How;
use crate::inner::Inner;
use crate::journal::Record;
use crate::usage::{Counts, Locked, Usage, Wait};
use crate::victims::{ScanDone, low_water, plan};

/// The entry a set is publishing, for which eviction makes room.
pub(crate) struct Publishing<'a> {
    /// Its file name; never a victim.
    pub hash: &'a str,
    /// What it adds to the counters (entries, bytes). It is not reserved in
    /// them while eviction runs (see `Inner::publish`): eviction counts it
    /// as if it were.
    pub reserved: (i64, i64),
}

/// Victims removed per hold of the counters.
const EVICT_BATCH: usize = 32;

/// How long a set that needs room waits for another process's scan (the
/// holder of the evict lock) before it scans beside it. A scan of a small
/// cache takes a few milliseconds; large ones plan ahead in the background.
const EVICT_LOCK_WAIT: Duration = Duration::from_millis(200);

/// Plans from this many victims up are renewed by a scan in the background
/// (smaller caches scan in a few milliseconds, on the set that needs it).
pub(crate) const SCAN_AHEAD_MIN: usize = 256;

impl Inner {
    /// Counts the entry files and stores the result in the shared counters.
    ///
    /// The scan runs with the counters held exclusively: every rename into
    /// place and every removal of an entry, in every process, is made with
    /// them held together with its change to the counts (see
    /// `Inner::publish`, `Inner::remove_entry`), so no entry comes or goes
    /// during the scan and the result is exact. (Scanning first and storing
    /// after would overwrite the changes made meanwhile, and concurrent sets
    /// left the counters low, and the limits loose, for good.) Other writers
    /// wait for the scan: it runs at open, when no other handle has the
    /// root open, and when the counters are found to have drifted.
    pub(crate) fn recount(&self) -> Counts {
        let scan = |u: &Locked<'_>| {
            let mut c = Counts::default();
            for (_, path) in self.entry_files() {
                if let Ok(m) = self.dirs.stat(&path)
                    && m.is_file
                {
                    c = c.add(1, m.len as i64);
                }
            }
            let _ = u.set(c);
            c
        };
        match self.usage.exclusive(Wait::Timeout, scan) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = ?e, "recount skipped: the usage counters are not available");
                self.usage.get().unwrap_or_default()
            }
        }
    }

    pub(crate) fn over_limits(&self, c: Counts) -> bool {
        self.config.max_entries.is_some_and(|m| c.entries > m)
            || self.config.max_bytes.is_some_and(|m| c.bytes > m)
    }

    /// With the counters held (`u`, whose counts are `now`), removes queued
    /// victims while the counts are over a limit, looking at most at `max`
    /// of them. `keep` is the entry being published, never a victim. Returns
    /// the counts after and how many victims were looked at and removed.
    /// Never waits: when the queue runs low it starts the next scan in the
    /// background (large caches).
    pub(crate) fn evict_queued(
        &self,
        u: &Locked<'_>,
        keep: Option<&str>,
        mut now: Counts,
        max: usize,
    ) -> io::Result<(Counts, usize, u64)> {
        let (mut n, mut bytes, mut looked) = (0u64, 0u64, 0);
        let mut evicted: Vec<(Box<str>, EvictionLimit)> = Vec::new();
        let left = {
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
                let Ok(m) = self.dirs.stat(&path) else {
                    continue;
                };
                let still = m.is_file && m.id == c.id && m.mtime == Some(c.mtime);
                let limit = if self.config.max_entries.is_some_and(|m| now.entries > m) {
                    EvictionLimit::MaxEntries
                } else {
                    EvictionLimit::MaxBytes
                };
                if still && self.spares.keep(&path, m.len) {
                    evicted.push((c.hash, limit));
                    n += 1;
                    bytes += m.len;
                    now = now.add(-1, -(m.len as i64));
                }
            }
            queue.len()
        };
        let records: Vec<Record<'_>> = evicted
            .iter()
            .map(|(hash, limit)| Record {
                hash,
                cause: RemovalCause::Evicted { limit: *limit },
            })
            .collect();
        self.journal
            .record(u, &records, std::time::SystemTime::now());
        if n > 0 {
            // `now` already went down by what was removed (and may count a
            // set's entry not yet in the counters, see `Publishing`).
            u.add(-(n as i64), -(bytes as i64))?;
            self.counters
                .evictions
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            etl_cache_core::backend::obs::evicted("disk", n, bytes);
        }
        let planned = self.victims.shared.planned.load(Ordering::Relaxed);
        if looked > 0 && planned >= SCAN_AHEAD_MIN && left < planned / 2 {
            self.scan_ahead();
        }
        Ok((now, looked, n))
    }

    /// One batch of [`Inner::evict_queued`] in a hold of the counters of
    /// its own, counting `extra` (a set's entry, see `Publishing`) as if it
    /// were in them.
    fn evict_batch(
        &self,
        keep: Option<&str>,
        extra: (i64, i64),
    ) -> Result<io::Result<(Counts, usize, u64)>, crate::usage::UsageError> {
        self.usage.exclusive(Wait::Timeout, |u| {
            let now = u.get()?.add(extra.0, extra.1);
            self.evict_queued(u, keep, now, EVICT_BATCH)
        })
    }

    /// Once per handle, when the counts come within the low-water mark of a
    /// limit and a plan would be large, starts planning in the background,
    /// so that the first set past the limit finds victims queued rather
    /// than scanning a large cache itself.
    pub(crate) fn plan_ahead(&self, c: Counts) {
        // On every set: done at once after the first time.
        if self.victims.shared.primed.load(Ordering::Relaxed) {
            return;
        }
        let near = |count: u64, max: Option<u64>| count >= low_water(&self.config, max);
        // Roughly how many entries a plan would hold.
        let large = c.entries as f64 * (1.0 - self.config.low_water) >= SCAN_AHEAD_MIN as f64;
        if large
            && (near(c.entries, self.config.max_entries) || near(c.bytes, self.config.max_bytes))
            && !self.victims.shared.primed.swap(true, Ordering::Relaxed)
        {
            self.scan_ahead();
        }
    }

    /// Starts a scan on a thread of its own, unless one of this handle runs.
    /// The thread holds what the scan needs, not the handle: dropping the
    /// handle is not delayed by it.
    fn scan_ahead(&self) {
        let shared = &self.victims.shared;
        if shared
            .scanning
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let done = ScanDone(shared.clone());
        let (layout, config, dirs) = (self.layout.clone(), self.config.clone(), self.dirs.clone());
        let spawned = std::thread::Builder::new()
            .name("etl-cache-scan".into())
            .spawn(move || {
                let _done = done;
                let started = Instant::now();
                // When it cannot run, the queue is renewed by the set that
                // empties it, as for a small cache (no new thread per set).
                let give_up = || _done.0.planned.store(0, Ordering::Relaxed);
                let Ok(guard) = dirs.open(&layout.evict_lock(), How::Lock) else {
                    give_up();
                    return;
                };
                if guard.try_lock().is_err() {
                    give_up();
                    return; // another process (or this one) is scanning
                }
                // Opened by descriptor: the directory may have been
                // replaced by a link since the cache was opened.
                let usage_path = layout.usage_file();
                let planned = dirs
                    .open(&usage_path, How::Lock)
                    .map(|f| Usage::with_file(f, &usage_path, config.lock_timeout))
                    .and_then(|usage| plan(&dirs, &config, &usage, None, (0, 0)));
                let _ = guard.unlock();
                match planned {
                    Ok(p) => {
                        tracing::info!(
                            scanned = p.scanned,
                            queued = p.victims.len(),
                            took_ms = started.elapsed().as_millis() as u64,
                            "planned the next evictions in the background"
                        );
                        _done.0.install(p.victims);
                    }
                    Err(e) => {
                        give_up();
                        tracing::warn!(error = %e, "a background eviction scan failed");
                    }
                }
            });
        if let Err(e) = spawned {
            // The closure, and the flag's reset with it, are dropped.
            tracing::warn!(error = %e, "cannot start a background eviction scan");
        }
    }

    /// Evicts until the counts are within the limits, scanning for victims
    /// when none are queued, if this process can become the scanner. `keep`
    /// is the entry being published (never a victim). Errors are logged, not
    /// returned: a set does not fail because eviction did.
    pub(crate) fn evict(&self, keep: Option<Publishing<'_>>) {
        let hash = keep.as_ref().map(|k| k.hash);
        let extra = keep.as_ref().map_or((0, 0), |k| k.reserved);
        // Queued victims first: no scan while they last.
        loop {
            let done = self.evict_batch(hash, extra);
            match done {
                Ok(Ok((after, _, _))) if !self.over_limits(after) => return,
                // More may be queued.
                Ok(Ok((_, looked, _))) if looked > 0 => continue,
                Ok(Ok(_)) => {
                    // Empty: wait for this handle's background scan, if one
                    // runs, rather than scan beside it.
                    let shared = &self.victims.shared;
                    let mut list = shared.lock();
                    let mut waited = false;
                    while list.is_empty() && shared.scanning.load(Ordering::Acquire) {
                        list = shared.scanned.wait(list).unwrap_or_else(|e| e.into_inner());
                        waited = true;
                    }
                    if waited && !list.is_empty() {
                        continue;
                    }
                    break;
                }
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
                Ok(c) if self.over_limits(c.add(extra.0, extra.1)) => continue,
                _ => return,
            }
        }
    }

    /// One scan, which replaces the queue, then evictions from it down to
    /// the limits; false when it cannot run now (the counters are held for
    /// longer than the lock timeout).
    ///
    /// The evict lock only keeps two processes from scanning at once (the
    /// removals themselves are checked with the counters held); a set that
    /// needs room waits for another scanner at most [`EVICT_LOCK_WAIT`],
    /// then scans beside it, so a process that hangs holding the evict lock
    /// neither blocks writers nor lets the cache grow past its limits.
    fn evict_round(&self, keep: Option<&Publishing<'_>>) -> bool {
        let Ok(guard) = self.dirs.open(&self.layout.evict_lock(), How::Lock) else {
            return false;
        };
        let waiting = Instant::now();
        let mut locked = guard.try_lock().is_ok();
        while !locked && waiting.elapsed() < EVICT_LOCK_WAIT {
            std::thread::sleep(Duration::from_millis(2));
            locked = guard.try_lock().is_ok();
        }
        if !locked {
            tracing::warn!(
                waited_ms = waiting.elapsed().as_millis() as u64,
                "another process holds the eviction lock; scanning beside it"
            );
        }
        let started = Instant::now();
        let hash = keep.as_ref().map(|k| k.hash);
        let extra = keep.as_ref().map_or((0, 0), |k| k.reserved);
        let planned = match plan(&self.dirs, &self.config, &self.usage, hash, extra) {
            Ok(p) => p,
            Err(e) => {
                // Another process holds the counters too long (or they fail):
                // the sets that pass the limits later evict.
                tracing::warn!(error = %e, "eviction skipped: the usage counters are not available");
                if locked {
                    let _ = guard.unlock();
                }
                return false;
            }
        };
        let (scanned, queued) = (planned.scanned, planned.victims.len());
        self.victims.shared.install(planned.victims);
        let (mut counts, mut evicted) = (planned.counts, 0u64);
        loop {
            let done = self.evict_batch(hash, extra);
            match done {
                Ok(Ok((after, _, removed))) => {
                    evicted += removed;
                    counts = after;
                    if !self.over_limits(after) || self.victims.lock().is_empty() {
                        break;
                    }
                }
                Ok(Err(_)) => {
                    counts = self.usage.get().map_or(counts, |c| c.add(extra.0, extra.1));
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
            // publishing). The entry being published is not in them (see
            // `Publishing`), so the recount is the truth.
            let truth = self.recount();
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
        if locked {
            let _ = guard.unlock();
        }
        true
    }
}
