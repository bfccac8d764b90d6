//! Cross-process locks through the OS (`flock` on Unix, `LockFileEx` on Windows).
//!
//! A key's lock is a file `locks/<sha256>.lock` that exists only while it is
//! held: the holder creates it, locks it, and unlinks it before unlocking. A
//! waiter that locked a file that is no longer at the path (the previous
//! holder unlinked it) lets go and tries again, so a lock file is never
//! removed from under a process that holds it, and two processes never hold
//! the lock of one key at once.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use etl_cache_core::Error;

use crate::sys;

/// The exclusive lock of one key, released (and its file removed) on drop.
#[derive(Debug)]
pub struct KeyLock {
    file: File,
    path: PathBuf,
}

fn open_lock_file(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true);
    sys::private_nofollow(&mut opts);
    opts.open(path)
}

impl KeyLock {
    /// Takes the lock at `path`, waiting at most `timeout`, or until `gone`
    /// says the caller went away (its future was dropped): a write that no
    /// one waits for must not take the lock later.
    pub(crate) fn acquire_unless(
        path: &Path,
        key: &str,
        timeout: Duration,
        gone: impl Fn() -> bool,
    ) -> Result<KeyLock, Error> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(500);
        loop {
            match Self::try_acquire(path) {
                Ok(Some(lock)) => return Ok(lock),
                Ok(None) => {
                    let waited = start.elapsed();
                    if waited >= timeout || gone() {
                        return Err(Error::LockTimeout {
                            key: Error::display_key(key),
                            waited,
                        });
                    }
                    thread::sleep(pause.min(timeout - waited));
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(source) => {
                    return Err(Error::Io {
                        key: Error::display_key(key),
                        path: path.to_path_buf(),
                        op: "take the key lock",
                        source,
                    });
                }
            }
        }
    }

    /// Takes the lock at `path` if nobody holds it.
    pub(crate) fn try_acquire(path: &Path) -> io::Result<Option<KeyLock>> {
        loop {
            let file = open_lock_file(path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => return Err(e),
            }
            // The previous holder may have unlinked the file between our open
            // and our lock: then the lock we hold guards nothing.
            match fs::symlink_metadata(path) {
                Ok(m) if sys::same_file(&m, &file.metadata()?) => {
                    return Ok(Some(KeyLock {
                        file,
                        path: path.to_path_buf(),
                    }));
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        // Only the holder removes the file, while still holding it.
        if let (Ok(on_disk), Ok(ours)) = (fs::symlink_metadata(&self.path), self.file.metadata())
            && sys::same_file(&on_disk, &ours)
        {
            let _ = fs::remove_file(&self.path);
        }
        let _ = self.file.unlock();
    }
}

/// A lock file that is never removed (eviction, users), opened once.
pub(crate) fn open_persistent(path: &Path) -> io::Result<File> {
    open_lock_file(path)
}
