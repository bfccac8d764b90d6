//! Spare entry files: small entry files that a set replaced, written again
//! by the next sets instead of creating new files.
//!
//! Creating a file and freeing one are most of what a small set costs on
//! some file systems: ext4 without a journal scans the inodes freed in the
//! last minutes on every creation (see docs/performance.md), and every file
//! system allocates and frees an inode and its blocks. So on Linux a set
//! that replaces an entry swaps its file into place with
//! `renameat2(RENAME_EXCHANGE)`, which leaves the replaced file at the
//! path the new one had; a small one is kept here, and this handle's next
//! small set overwrites it (then truncates any tail) and swaps it into place
//! in turn. A cache that keeps replacing small values then creates and frees
//! no inode at all.
//!
//! A reader may still have a replaced file open when it is written again.
//! It cannot return the new bytes as its entry: every entry file carries its
//! key and checksums of its header and payload, so a read of a file being
//! recycled fails a check (or finds another key), and a read that fails
//! looks again instead of reporting corruption: before removing an entry it
//! judged expired or corrupt, it reads the file at the entry's path again
//! with the usage counters held, and removes it only if that file is still
//! bad (see `Inner::remove_if_bad`). Files at entry paths do not change
//! while the counters are held, since a spare reaches an entry path only by
//! a rename made with them held. Only files of at most [`SPARE_MAX`] bytes
//! are recycled: they are read with one `read` call; a larger file that a
//! stream reads in many calls is never written again once replaced.
//!
//! Eviction feeds the pool too: a small entry it removes is moved here
//! rather than unlinked (see `evict`), so a full cache that keeps taking new
//! keys recycles the files of the entries it evicts.
//!
//! Spares belong to the handle that made them: it removes them when it is
//! dropped, and a handle that opens a root no other handle has open removes
//! any that a killed process left.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::dirs::{Dir, Dirs, How};
use crate::sys;

/// The largest entry file that is recycled: smaller than the buffer that
/// small reads fill with one `read` (`read::FAST_READ`).
pub(crate) const SPARE_MAX: u64 = 32 * 1024 - 1;

/// Spares one handle keeps at most. A handle that keeps replacing values
/// needs one per set in flight.
const POOL: usize = 8;

/// A spare file and its length.
pub(crate) struct Spare {
    pub path: PathBuf,
    pub len: u64,
}

pub(crate) struct Spares {
    dirs: Arc<Dirs>,
    pool: Mutex<Vec<Spare>>,
    /// Whether sets swap files into place (cleared when the file system
    /// refuses `RENAME_EXCHANGE`: they then rename, and nothing is kept).
    exchange: AtomicBool,
}

impl Spares {
    pub fn new(dirs: Arc<Dirs>) -> Spares {
        Spares {
            dirs,
            pool: Mutex::new(Vec::new()),
            exchange: AtomicBool::new(cfg!(target_os = "linux")),
        }
    }

    /// Removes every file in the spare directory: for a handle alone with
    /// the root, when no other handle can own one.
    pub fn remove_all(&self) {
        let dir = self.dirs.spare();
        let Ok(names) = dir.names() else {
            return;
        };
        for name in names {
            let _ = dir.unlink(&name);
        }
    }

    /// A spare opened for writing, if this handle keeps one.
    pub fn take(&self) -> Option<(File, Spare)> {
        loop {
            let spare = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            match self.dirs.open(&spare.path, How::Write) {
                Ok(file) => return Some((file, spare)),
                Err(e) => {
                    // Removed or replaced by hand: forget it.
                    tracing::debug!(path = %spare.path.display(), error = %e, "dropped a spare file");
                    if e.kind() != io::ErrorKind::NotFound {
                        let _ = self.dirs.remove_file(&spare.path);
                    }
                }
            }
        }
    }

    /// Swaps the file `new` in `from` with `target` in `to` (both must
    /// exist). `Ok(false)` when this file system cannot: the caller then
    /// renames.
    pub fn exchange(
        &self,
        from: &Dir<'_>,
        new: &OsStr,
        to: &Dir<'_>,
        target: &OsStr,
    ) -> io::Result<bool> {
        if !self.exchange.load(Ordering::Relaxed) {
            return Ok(false);
        }
        match crate::dirs::exchange(from, new, to, target) {
            Ok(()) => Ok(true),
            Err(e) if sys::is_unsupported(&e) => {
                tracing::debug!(error = %e, "this file system cannot swap files: sets rename");
                self.exchange.store(false, Ordering::Relaxed);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Keeps the file at `path`, of `len` bytes, as a spare (moved into the
    /// spare directory when it is elsewhere: a rename, no inode made or
    /// freed), or removes it when it is too large to recycle or enough are
    /// kept. For the file a set swapped out, and for an evicted entry's file
    /// (then with the usage counters held, as every change at an entry
    /// path). False when it could be neither kept nor removed.
    pub fn keep(&self, path: &Path, len: u64) -> bool {
        if len <= SPARE_MAX {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < POOL {
                let spare = self.dirs.spare();
                let kept = if path.parent() == Some(spare.path()) {
                    Some(path.to_path_buf())
                } else {
                    let name = crate::write::unique_name("spare");
                    self.dirs
                        .locate(path)
                        .and_then(|(from, old)| {
                            crate::dirs::rename(&from, old, &spare, OsStr::new(&name))
                        })
                        .ok()
                        .map(|()| spare.path().join(name))
                };
                if let Some(path) = kept {
                    pool.push(Spare { path, len });
                    return true;
                }
            }
        }
        self.dirs.remove_file(path).is_ok()
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        let pool = std::mem::take(self.pool.get_mut().unwrap_or_else(|e| e.into_inner()));
        for spare in pool {
            let _ = self.dirs.remove_file(&spare.path);
        }
    }
}
