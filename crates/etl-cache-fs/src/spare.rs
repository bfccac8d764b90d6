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
//! Spares belong to the handle that made them: each handle holds a lock on
//! its own owner file (`spare/<owner>.owner`) for as long as it lives and
//! names its spares `<owner>.<n>.spare`. It removes them when it is dropped;
//! a killed process cannot, and its lock is released by the kernel, so every
//! handle that opens the root removes the spares whose owner file it can
//! lock, or which have no owner file. (Without owner files, only a handle
//! alone with the root could tell a killed process's spares from a live
//! one's: 200 writers killed while a long-lived handle kept the root open
//! left 220-280 spare files behind.)

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// Whether files are kept at all (`DiskCacheBuilder::recycle_files`).
    enabled: bool,
    /// Whether sets swap files into place (cleared when the file system
    /// refuses `RENAME_EXCHANGE`: they then rename, and nothing is kept).
    exchange: AtomicBool,
    /// This handle's part of the spare file names, and its owner file, locked
    /// while the handle lives (`None` when recycling is off or the file could
    /// not be made: then nothing is kept).
    owner: Option<(String, File)>,
    /// Numbers the spares this handle names.
    named: AtomicU64,
    /// The process that made the handle. A process forked from it shares
    /// the owner file, its lock and the pool's names: it neither keeps nor
    /// takes spares, and leaves the pool and the owner file to the parent.
    pid: u32,
}

/// The owner part of a spare's or an owner file's name: up to the first dot.
fn owner_of(name: &OsStr) -> Option<&str> {
    let name = name.to_str()?;
    let (owner, _) = name.split_once('.')?;
    (name.ends_with(".spare") || name.ends_with(".owner")).then_some(owner)
}

impl Spares {
    pub fn new(dirs: Arc<Dirs>, enabled: bool) -> Spares {
        let owner = enabled.then(|| Self::claim(&dirs)).flatten();
        let enabled = owner.is_some();
        Spares {
            dirs,
            pool: Mutex::new(Vec::new()),
            enabled,
            exchange: AtomicBool::new(enabled && cfg!(target_os = "linux")),
            owner,
            named: AtomicU64::new(0),
            pid: std::process::id(),
        }
    }

    /// Whether this process made the handle (not a child forked from it).
    fn ours(&self) -> bool {
        std::process::id() == self.pid
    }

    /// Makes and locks this handle's owner file. A handle sweeping beside
    /// it may lock the new file before this one does and remove it: the
    /// lock then fails, or the file is gone once locked, and a new name is
    /// tried.
    fn claim(dirs: &Dirs) -> Option<(String, File)> {
        let dir = dirs.spare();
        let mut last = None;
        for _ in 0..4 {
            let name = crate::layout::unique_name("owner");
            let owner = owner_of(OsStr::new(&name))?.to_owned();
            let file = match dir.open(OsStr::new(&name), How::Lock) {
                Ok(f) => f,
                Err(e) => {
                    last = Some(e);
                    break;
                }
            };
            if file.try_lock().is_ok() && dir.open(OsStr::new(&name), How::Read).is_ok() {
                return Some((owner, file));
            }
        }
        tracing::debug!(error = ?last, "cannot make an owner file: no spare files are kept");
        None
    }

    /// Removes the spares no live handle owns (a killed process's) and their
    /// owner files. Run when a handle opens the root.
    pub fn sweep(&self) {
        let dir = self.dirs.spare();
        let Ok(names) = dir.names() else {
            return;
        };
        let ours = self.owner.as_ref().map(|(o, _)| o.as_str());
        // Per owner: `None` while it lives; when it is gone, its owner file
        // locked here until its files are removed (a file whose lock this
        // sweep took and released could be a new handle's, locked since).
        let mut gone: HashMap<String, Option<Option<File>>> = HashMap::new();
        let mut owner_files: Vec<OsString> = Vec::new();
        let mut swept = 0u64;
        for name in names {
            let Some(owner) = owner_of(&name).map(str::to_owned) else {
                continue;
            };
            if Some(owner.as_str()) == ours {
                continue;
            }
            let state = gone.entry(owner.clone()).or_insert_with(|| {
                let file = OsString::from(format!("{owner}.owner"));
                match dir.open(&file, How::Read) {
                    // Locked: a live handle's. Lockable: its process died.
                    Ok(f) => f.try_lock().is_ok().then_some(Some(f)),
                    // No owner file: left by a handle that could not remove it.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Some(None),
                    Err(_) => None,
                }
            });
            if state.is_none() {
                continue;
            }
            if name.to_str().is_some_and(|n| n.ends_with(".owner")) {
                owner_files.push(name);
            } else if dir.unlink(&name).is_ok() {
                swept += 1;
            }
        }
        // Owner files last, so a sweep beside this one never takes a gone
        // owner's remaining spares for a live one's; their locks are released
        // after.
        for name in owner_files {
            let _ = dir.unlink(&name);
        }
        drop(gone);
        if swept > 0 {
            tracing::info!(swept, "removed spare files left by killed processes");
        }
    }

    /// A spare opened for writing, if this handle keeps one.
    pub fn take(&self) -> Option<(File, Spare)> {
        if !self.ours() {
            return None;
        }
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
        if self.enabled && len <= SPARE_MAX && self.ours() {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < POOL {
                let spare = self.dirs.spare();
                let kept = if path.parent() == Some(spare.path()) {
                    Some(path.to_path_buf())
                } else {
                    let Some((owner, _)) = &self.owner else {
                        return self.dirs.remove_file(path).is_ok();
                    };
                    let n = self.named.fetch_add(1, Ordering::Relaxed);
                    let name = format!("{owner}.{n}.spare");
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
        if !self.ours() {
            return;
        }
        let pool = std::mem::take(self.pool.get_mut().unwrap_or_else(|e| e.into_inner()));
        for spare in pool {
            let _ = self.dirs.remove_file(&spare.path);
        }
        if let Some((owner, _lock)) = self.owner.take() {
            let _ = self
                .dirs
                .spare()
                .unlink(OsStr::new(&format!("{owner}.owner")));
        }
    }
}
