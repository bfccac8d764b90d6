//! The counters of entries and bytes that every process sharing a root
//! updates, under a file lock, so capacity limits hold across processes.
//!
//! The file holds two little-endian u64: entries and bytes. Writers reserve
//! their entry before publishing it, so a process killed in between leaves
//! the counters high, never low: limits still hold, and the next process that
//! opens the root alone recounts from the directory.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Mutex;

use crate::{lock, sys};

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
    pub fn open(path: &Path) -> io::Result<Usage> {
        Ok(Usage {
            file: Mutex::new(lock::open_persistent(path)?),
        })
    }

    fn with_lock<T>(
        &self,
        exclusive: bool,
        f: impl FnOnce(&File) -> io::Result<T>,
    ) -> io::Result<T> {
        let file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if exclusive {
            file.lock()?;
        } else {
            file.lock_shared()?;
        }
        let out = f(&file);
        file.unlock()?;
        out
    }

    /// The current counts.
    pub fn get(&self) -> io::Result<Counts> {
        self.with_lock(false, read)
    }

    /// Adds a delta; returns the new counts.
    pub fn add(&self, entries: i64, bytes: i64) -> io::Result<Counts> {
        self.with_lock(true, |f| {
            let c = read(f)?.add(entries, bytes);
            write(f, c)?;
            Ok(c)
        })
    }

    /// Replaces the counts (after a recount).
    pub fn set(&self, c: Counts) -> io::Result<()> {
        self.with_lock(true, |f| write(f, c))
    }

    /// Runs `f` holding the counters exclusively. Every change to the entry
    /// files (publishing by rename, removing) runs in here together with its
    /// change to the counters, so the counters stay exact without a lock
    /// file per key.
    pub fn exclusive<T>(&self, f: impl FnOnce(&Locked<'_>) -> T) -> io::Result<T> {
        self.with_lock(true, |file| Ok(f(&Locked { file })))
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
}
