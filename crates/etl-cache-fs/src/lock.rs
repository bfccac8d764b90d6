//! Cross-process locks through the OS (`flock` on Unix, `LockFileEx` on Windows).
//!
//! A key's lock is a file `locks/<sha256>.lock` that exists only while it is
//! held: the holder creates it, locks it, and unlinks it before unlocking. A
//! waiter that locked a file that is no longer at the path (the previous
//! holder unlinked it) lets go and tries again, so a lock file is never
//! removed from under a process that holds it, and two processes never hold
//! the lock of one key at once.

use std::fs::{File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use etl_cache_core::Error;

use crate::dirs::{Dirs, How};
use crate::sys;

/// The exclusive lock of one key, released (and its file removed) on drop.
#[derive(Debug)]
pub struct KeyLock {
    file: File,
    path: PathBuf,
    dirs: Arc<Dirs>,
}

impl KeyLock {
    /// Takes the lock at `path`, waiting at most `timeout`, or until `gone`
    /// says the caller went away (its future was dropped): a write that no
    /// one waits for must not take the lock later.
    pub(crate) fn acquire_unless(
        dirs: &Arc<Dirs>,
        path: &Path,
        key: &str,
        timeout: Duration,
        gone: impl Fn() -> bool,
    ) -> Result<KeyLock, Error> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(500);
        loop {
            match Self::try_acquire(dirs, path) {
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
    pub(crate) fn try_acquire(dirs: &Arc<Dirs>, path: &Path) -> io::Result<Option<KeyLock>> {
        loop {
            let file = dirs.open(path, How::Lock)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => return Err(e),
            }
            // The previous holder may have unlinked the file between our open
            // and our lock: then the lock we hold guards nothing.
            match dirs.stat(path) {
                Ok(m) if m.id == sys::file_id(&file.metadata()?) => {
                    return Ok(Some(KeyLock {
                        file,
                        path: path.to_path_buf(),
                        dirs: dirs.clone(),
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
        if let Ok((dir, name)) = self.dirs.locate(&self.path)
            && let (Ok(on_disk), Ok(ours)) = (dir.stat(name), self.file.metadata())
            && on_disk.id == sys::file_id(&ours)
        {
            let _ = dir.unlink(name);
        }
        let _ = self.file.unlock();
    }
}
