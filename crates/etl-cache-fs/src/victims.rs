//! The victim queue of eviction and the scans that fill it: the least
//! recently used entries a scan of the entry files found, oldest first, as
//! many as bring the cache down to its low-water mark (see `evict`, which
//! takes them from here). Knows the directories and the counters, not the
//! cache handle.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::SystemTime;

use crate::builder::Config;
use crate::dirs::Dirs;
use crate::usage::{Counts, Usage};

pub(crate) struct Candidate {
    pub mtime: SystemTime,
    pub id: (u64, u64),
    pub len: u64,
    pub hash: Box<str>,
}

// Ordered by mtime alone, for the heap of the oldest entries.
impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.mtime == other.mtime
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.mtime.cmp(&other.mtime)
    }
}

/// The least recently used entries the last scan found, oldest first.
#[derive(Default)]
pub(crate) struct Victims {
    pub shared: Arc<Queue>,
}

#[derive(Default)]
pub(crate) struct Queue {
    list: Mutex<VecDeque<Candidate>>,
    /// How many the last scan queued.
    pub planned: AtomicUsize,
    /// Whether a scan of this handle runs in the background.
    pub scanning: AtomicBool,
    /// Whether this handle has planned ahead of its first eviction.
    pub primed: AtomicBool,
    /// Signalled when that scan ends.
    pub scanned: Condvar,
}

impl Queue {
    pub fn lock(&self) -> MutexGuard<'_, VecDeque<Candidate>> {
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn install(&self, victims: Vec<Candidate>) {
        let mut list = self.lock();
        self.planned.store(victims.len(), Ordering::Relaxed);
        *list = victims.into();
    }
}

impl Victims {
    pub fn lock(&self) -> MutexGuard<'_, VecDeque<Candidate>> {
        self.shared.lock()
    }
}

/// What a scan found: the victims it plans, oldest first, how many entries
/// it saw, and the counts it planned from.
pub(crate) struct Plan {
    pub victims: Vec<Candidate>,
    pub scanned: usize,
    pub counts: Counts,
}

pub(crate) fn low_water(config: &Config, max: Option<u64>) -> u64 {
    max.map_or(u64::MAX, |m| ((m as f64) * config.low_water).floor() as u64)
}

/// Scans the entry files and plans the evictions that bring the cache down
/// to the low-water mark: the oldest entries, as few as do it. `keep` (the
/// entry being published) is never planned, and `extra` (what it will add)
/// is counted as if it were in the counters. Holds only the planned
/// entries in memory. Runs with the evict lock held.
pub(crate) fn plan(
    dirs: &Dirs,
    config: &Config,
    usage: &Usage,
    keep: Option<&str>,
    extra: (i64, i64),
) -> io::Result<Plan> {
    let counts = usage
        .get()
        .map_err(|e| io::Error::other(format!("the usage counters: {e:?}")))?
        .add(extra.0, extra.1);
    // From a cache below its limits (a scan ahead of need), plan as if it
    // were at them.
    let need = |count: u64, max: Option<u64>| match max {
        Some(m) => count.max(m).saturating_sub(low_water(config, max)),
        None => 0,
    };
    let need_entries = need(counts.entries, config.max_entries);
    let need_bytes = need(counts.bytes, config.max_bytes);
    // A max-heap by mtime: its top is the newest entry kept, dropped as
    // soon as the older ones meet both needs without it.
    let mut heap: BinaryHeap<Candidate> = BinaryHeap::new();
    let mut heap_bytes = 0u64;
    let mut scanned = 0;
    // Stat each entry relative to its open directory (`DirEntry::metadata`
    // does not follow symlinks and looks up one name, not the whole path):
    // the scan is most of an eviction's cost at a million entries.
    for b in 0..=255u8 {
        let Ok(dir) = dirs.fanout_dir(&format!("{b:02x}")) else {
            continue;
        };
        let Ok(names) = dir.names() else {
            continue;
        };
        for name in names {
            let Ok(hash) = name.into_string() else {
                continue;
            };
            if !crate::layout::is_entry_name(&hash) || keep == Some(hash.as_str()) {
                continue;
            }
            let Ok(m) = dir.stat(std::ffi::OsStr::new(&hash)) else {
                continue;
            };
            if !m.is_file {
                continue;
            }
            scanned += 1;
            heap.push(Candidate {
                mtime: m.mtime.unwrap_or(SystemTime::UNIX_EPOCH),
                id: m.id,
                len: m.len,
                hash: hash.into_boxed_str(),
            });
            heap_bytes += m.len;
            while let Some(newest) = heap.peek() {
                let rest = heap.len() as u64 - 1;
                if rest >= need_entries && heap_bytes - newest.len >= need_bytes {
                    heap_bytes -= newest.len;
                    heap.pop();
                } else {
                    break;
                }
            }
        }
    }
    Ok(Plan {
        victims: heap.into_sorted_vec(),
        scanned,
        counts,
    })
}

/// Resets the background flag and wakes the sets waiting for the scan,
/// however the scan ends.
pub(crate) struct ScanDone(pub Arc<Queue>);

impl Drop for ScanDone {
    fn drop(&mut self) {
        let _list = self.0.lock();
        self.0.scanning.store(false, Ordering::Release);
        self.0.scanned.notify_all();
    }
}
