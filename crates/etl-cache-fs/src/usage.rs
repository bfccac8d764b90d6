//! The counters of entries and bytes that every process sharing a root
//! updates, under a file lock, so capacity limits hold across processes.
//!
//! The file holds little-endian u64s: entries, bytes and (once the root
//! has recorded a removal) the number of the removal journal's next record,
//! kept here so that a removal and its record cost one write of this file
//! rather than also a read and a write of the journal's header (on a capped
//! cache every set removes one entry: 1.02-1.07x the time of a capped set
//! with the number in the journal, see docs/performance.md). Writers reserve
//! their entry before publishing it, so a process killed in between leaves
//! the counters high, never low: limits still hold, and the next process that
//! opens the root alone recounts from the directory.
//!
//! A process that dies lets go of the lock with it; one that hangs holding it
//! (a stopped process, a raw `flock` by a tool) would block every writer, so
//! waiting for it is bounded by the cache's lock timeout, after which the
//! operation fails with `Error::LockTimeout`.

use std::cell::Cell;
use std::fs::{File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::sys;

/// Tries of the lock that only yield the processor before the waits start:
/// the counters are held for a few microseconds at a time.
const SPINS: u32 = 3;
/// The first wait for a counters' lock held by another process, doubled
/// after each try up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_micros(50);
/// The longest wait between two tries: a waiter proceeds at most this long
/// after the holder lets go (or dies).
const MAX_PAUSE: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub entries: u64,
    pub bytes: u64,
}

impl Counts {
    pub fn add(self, entries: i64, bytes: i64) -> Counts {
        Counts {
            entries: self.entries.saturating_add_signed(entries),
            bytes: self.bytes.saturating_add_signed(bytes),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Usage {
    // The mutex orders threads of this process; the file lock orders processes.
    file: Mutex<File>,
    path: PathBuf,
    /// How long to wait for another process holding the counters.
    timeout: Duration,
}

/// How long a call may wait for another process holding the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Up to the cache's lock timeout.
    Timeout,
    /// Only the few tries that yield the processor, never a sleep; then
    /// [`UsageError::Busy`] (for callers on an async thread).
    Spin,
}

/// Why the counters could not be read or changed.
#[derive(Debug)]
pub(crate) enum UsageError {
    /// Another process held the counters' lock for the whole lock timeout.
    TimedOut(Duration),
    /// Another process holds the counters' lock and the caller may not wait.
    Busy,
    /// The counters' file failed.
    Io(io::Error),
}

impl From<io::Error> for UsageError {
    fn from(e: io::Error) -> Self {
        UsageError::Io(e)
    }
}

/// What the file holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct State {
    counts: Counts,
    /// The removal journal's next record; `None` in a file written before
    /// the root recorded anything (or by a version without the journal).
    next_record: Option<u64>,
}

/// The file's length with every field.
const LEN: usize = 24;

fn read(file: &File) -> io::Result<State> {
    let mut buf = [0u8; LEN];
    let n = sys::fill_at(file, &mut buf, 0)?;
    let u64_at = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
    if n < 16 {
        // A new (or truncated) file: nothing counted yet.
        return Ok(State::default());
    }
    Ok(State {
        counts: Counts {
            entries: u64_at(0),
            bytes: u64_at(8),
        },
        next_record: (n == LEN).then(|| u64_at(16)),
    })
}

/// One write of the whole state (of the counts alone while the journal's
/// number is unknown, leaving what follows them as it was).
fn write(file: &File, s: State) -> io::Result<()> {
    let mut buf = [0u8; LEN];
    buf[..8].copy_from_slice(&s.counts.entries.to_le_bytes());
    buf[8..16].copy_from_slice(&s.counts.bytes.to_le_bytes());
    let len = match s.next_record {
        Some(n) => {
            buf[16..].copy_from_slice(&n.to_le_bytes());
            LEN
        }
        None => 16,
    };
    sys::write_all_at(file, &buf[..len], 0)
}

impl Usage {
    /// The counters in `file`, opened already (at `path`).
    pub fn with_file(file: std::fs::File, path: &Path, timeout: Duration) -> Usage {
        Usage {
            file: Mutex::new(file),
            path: path.to_path_buf(),
            timeout,
        }
    }

    /// The counters' file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` holding the counters' file lock (shared or exclusive).
    ///
    /// Tries the lock without blocking first: uncontended, that is the only
    /// system call beyond `f` and the unlock. Held by another process, the
    /// lock is tried again a few times yielding the processor, then (unless
    /// `wait` is [`Wait::Spin`]) after short, growing pauses until the lock
    /// timeout runs out: a blocking OS lock wait cannot be given a timeout.
    /// The mutex of
    /// this process is held only while trying and while `f` runs, never
    /// during a pause, so a thread never waits behind another one's pause.
    fn with_lock<T>(
        &self,
        exclusive: bool,
        wait: Wait,
        f: impl FnOnce(&File) -> io::Result<T>,
    ) -> Result<T, UsageError> {
        let mut f = Some(f);
        let mut started: Option<Instant> = None;
        let mut tries = 0u32;
        let mut pause = FIRST_PAUSE;
        loop {
            {
                let file = self.file.lock().unwrap_or_else(|p| p.into_inner());
                let taken = if exclusive {
                    file.try_lock()
                } else {
                    file.try_lock_shared()
                };
                match taken {
                    Ok(()) => {
                        let f = f.take().expect("runs once: the loop returns after it");
                        let out = f(&file);
                        file.unlock()?;
                        return Ok(out?);
                    }
                    Err(TryLockError::WouldBlock) => {}
                    Err(TryLockError::Error(e)) => return Err(UsageError::Io(e)),
                }
            }
            let started = *started.get_or_insert_with(Instant::now);
            tries += 1;
            if tries <= SPINS {
                thread::yield_now();
                continue;
            }
            if wait == Wait::Spin {
                return Err(UsageError::Busy);
            }
            let waited = started.elapsed();
            if waited >= self.timeout {
                return Err(UsageError::TimedOut(waited));
            }
            thread::sleep(pause.min(self.timeout - waited));
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// The current counts.
    pub fn get(&self) -> Result<Counts, UsageError> {
        self.with_lock(false, Wait::Timeout, |f| read(f).map(|s| s.counts))
    }

    /// The removal journal's next record number, if the root has one.
    pub fn next_record(&self) -> Result<Option<u64>, UsageError> {
        self.with_lock(false, Wait::Timeout, |f| read(f).map(|s| s.next_record))
    }

    /// Runs `f` holding the counters exclusively. Every change to the entry
    /// files (publishing by rename, removing) runs in here together with its
    /// change to the counters, so the counters stay exact without a lock
    /// file per key.
    pub fn exclusive<T>(
        &self,
        wait: Wait,
        f: impl FnOnce(&Locked<'_>) -> T,
    ) -> Result<T, UsageError> {
        self.with_lock(true, wait, |file| {
            let locked = Locked {
                file,
                state: Cell::new(None),
                unsaved: Cell::new(false),
            };
            let out = f(&locked);
            locked.save_next_record();
            Ok(out)
        })
    }
}

/// The counters while [`Usage::exclusive`] holds them.
pub(crate) struct Locked<'a> {
    file: &'a File,
    /// What the file holds, once read in this hold: no thread or process
    /// writes it but the holder, so it is read once.
    state: Cell<Option<State>>,
    /// The journal's next number moved on and is not in the file yet (it
    /// goes with the next change of the counts, or when the hold ends).
    unsaved: Cell<bool>,
}

impl Locked<'_> {
    fn state(&self) -> io::Result<State> {
        match self.state.get() {
            Some(s) => Ok(s),
            None => {
                let s = read(self.file)?;
                self.state.set(Some(s));
                Ok(s)
            }
        }
    }

    fn save(&self, s: State) -> io::Result<()> {
        // Forgotten first: after a failed write the file's content is
        // unknown and is read again.
        self.state.set(None);
        write(self.file, s)?;
        self.state.set(Some(s));
        if s.next_record.is_some() {
            self.unsaved.set(false);
        }
        Ok(())
    }

    /// The current counts.
    pub fn get(&self) -> io::Result<Counts> {
        Ok(self.state()?.counts)
    }

    /// Adds a delta; returns the new counts.
    pub fn add(&self, entries: i64, bytes: i64) -> io::Result<Counts> {
        let mut s = self.state()?;
        s.counts = s.counts.add(entries, bytes);
        self.save(s)?;
        Ok(s.counts)
    }

    /// Replaces the counts (a recount made with them held).
    pub fn set(&self, c: Counts) -> io::Result<()> {
        let mut s = self.state()?;
        s.counts = c;
        self.save(s)
    }

    /// The removal journal's next record number; `None` until the root
    /// has recorded a removal.
    pub fn next_record(&self) -> io::Result<Option<u64>> {
        Ok(self.state()?.next_record)
    }

    /// Moves the journal's next number on to `n`. It is written with the
    /// next change of the counts in this hold, or when the hold ends.
    pub fn set_next_record(&self, n: u64) -> io::Result<()> {
        let mut s = self.state()?;
        s.next_record = Some(n);
        self.state.set(Some(s));
        self.unsaved.set(true);
        Ok(())
    }

    /// Writes a journal number that no change of the counts carried.
    fn save_next_record(&self) {
        if self.unsaved.get()
            && let Some(s) = self.state.get()
            && let Err(e) = self.save(s)
        {
            // The journal is information: records whose number was not
            // saved are not believed, and the next ones are written over
            // them.
            tracing::debug!(error = %e, "could not save the removal journal's next number");
        }
    }
}
