//! The counters of entries and bytes that every process sharing a root
//! updates, under a file lock, so capacity limits hold across processes.
//!
//! The file holds two little-endian u64: entries and bytes. Writers reserve
//! their entry before publishing it, so a process killed in between leaves
//! the counters high, never low: limits still hold, and the next process that
//! opens the root alone recounts from the directory.
//!
//! A process that dies lets go of the lock with it; one that hangs holding it
//! (a stopped process, a raw `flock` by a tool) would block every writer, so
//! waiting for it is bounded by the cache's lock timeout, after which the
//! operation fails with `Error::LockTimeout`.

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

fn decode(buf: &[u8; 16]) -> Counts {
    Counts {
        entries: u64::from_le_bytes(buf[..8].try_into().expect("8 bytes")),
        bytes: u64::from_le_bytes(buf[8..].try_into().expect("8 bytes")),
    }
}

fn read(file: &File) -> io::Result<Counts> {
    let mut buf = [0u8; 16];
    match sys::read_exact_at(file, &mut buf, 0) {
        Ok(()) => Ok(decode(&buf)),
        // A new (or truncated) file: nothing counted yet.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Counts::default()),
        Err(e) => Err(e),
    }
}

fn write(file: &File, c: Counts) -> io::Result<()> {
    let mut buf = [0u8; 16];
    buf[..8].copy_from_slice(&c.entries.to_le_bytes());
    buf[8..].copy_from_slice(&c.bytes.to_le_bytes());
    sys::write_all_at(file, &buf, 0)
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
        self.with_lock(false, Wait::Timeout, read)
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
        self.with_lock(true, wait, |file| Ok(f(&Locked { file })))
    }
}

/// The counters while [`Usage::exclusive`] holds them.
pub(crate) struct Locked<'a> {
    file: &'a File,
}

impl Locked<'_> {
    /// The current counts.
    pub fn get(&self) -> io::Result<Counts> {
        read(self.file)
    }

    /// Adds a delta; returns the new counts.
    pub fn add(&self, entries: i64, bytes: i64) -> io::Result<Counts> {
        let c = read(self.file)?.add(entries, bytes);
        write(self.file, c)?;
        Ok(c)
    }

    /// Replaces the counts (a recount made with them held).
    pub fn set(&self, c: Counts) -> io::Result<()> {
        write(self.file, c)
    }
}
