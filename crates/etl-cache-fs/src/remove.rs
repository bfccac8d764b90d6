//! Removing entries: one (`delete`, an expired or corrupt entry a read
//! found, a foreign file), or many (`clear`, `purge_expired`), each checked
//! against the file at the entry's path with the counters held, so that a
//! file published meanwhile is never removed in its place.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use etl_cache_core::backend::Counters;
use std::time::SystemTime;

use etl_cache_core::{EntryMeta, Error, RemovalCause, Result};

use crate::cancel::Cancel;
use crate::dirs::Meta;
use crate::fault::Point;
use crate::inner::Inner;
use crate::journal::Record;
use crate::lock;
use crate::usage::{UsageError, Wait};

/// What a read found wrong with an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bad {
    Expired,
    Corrupt,
}

impl Bad {
    /// The cause the journal records for a removal of such an entry.
    pub(crate) fn cause(self) -> RemovalCause {
        match self {
            Bad::Expired => RemovalCause::Expired,
            Bad::Corrupt => RemovalCause::Corrupt,
        }
    }
}

/// Why [`Inner::remove_entry`] could not remove an entry.
#[derive(Debug)]
pub(crate) enum RemoveError {
    /// The counters could not be held (another process held them too long).
    Usage(UsageError),
    /// The file system refused.
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
}

impl Inner {
    pub(crate) fn delete(&self, key: &str, hash: &str, cancel: &Cancel) -> Result<bool> {
        let lock = lock::KeyLock::acquire_unless(
            &self.dirs,
            &self.layout.lock_path(hash),
            key,
            self.config.lock_timeout,
            || cancel.is_cancelled(),
        )?;
        let removed = self
            .remove_entry(
                hash,
                |_| true,
                RemovalCause::Deleted,
                Some(cancel),
                Wait::Timeout,
            )
            .map_err(|e| self.remove_error(Some(key), e))?
            .is_some();
        drop(lock);
        if removed {
            Counters::bump(&self.counters.deletes);
        }
        Ok(removed)
    }

    /// Removes every entry for which `doomed` says so (`what` names the
    /// operation in logs and errors). An entry that cannot be removed does
    /// not stop the others: they are removed and counted, and the first
    /// failure is returned with the number of failures. Waiting too long
    /// for the counters stops the sweep at once (each further entry would
    /// wait as long).
    ///
    /// `recheck` (for `purge_expired`) is what an entry is removed for, when
    /// that must still hold of the file at its path once the counters are
    /// held (a small file may have been recycled since it was read, see
    /// `spare`); without it (`clear`), the file read is removed.
    pub(crate) fn sweep(
        &self,
        what: &'static str,
        recheck: Option<Bad>,
        doomed: impl Fn(&EntryMeta) -> bool,
    ) -> Swept {
        let mut swept = Swept::default();
        let cause = recheck.map_or(RemovalCause::Cleared, Bad::cause);
        for (hash, path) in self.entry_files() {
            // The file stays open until the removal is decided (see `peek`).
            let Some((meta, id, _file)) = self.peek(&hash, &path) else {
                continue;
            };
            if !doomed(&meta) {
                continue;
            }
            self.pause(crate::fault::Point::Judged);
            let still = |m: &Meta| match recheck {
                Some(why) => self.still_bad(None, &hash, m, id, why),
                None => m.id == id,
            };
            match self.remove_entry(&hash, still, cause, None, Wait::Timeout) {
                Ok(Some(_)) => swept.removed += 1,
                Ok(None) => {}
                Err(RemoveError::Usage(e)) => {
                    swept.stopped = Some(self.usage_error(None, "update the usage counters", e));
                    return swept;
                }
                Err(RemoveError::Io { path, source, .. }) => {
                    swept.failed += 1;
                    tracing::warn!(
                        key = %meta.key,
                        path = %path.display(),
                        error = %source,
                        "{what}: could not remove an entry"
                    );
                    if swept.first.is_none() {
                        swept.first = Some((Error::display_key(&meta.key), path, source));
                    }
                }
            }
        }
        swept
    }

    /// Removes whatever stands at `path` that is not an entry (a symlink, a
    /// directory, a FIFO); never follows it.
    pub(crate) fn remove_foreign(&self, path: &Path) {
        let Ok((dir, name)) = self.dirs.locate(path) else {
            return;
        };
        match dir.is_dir(name) {
            // `remove_dir_all` does not follow links within what it removes.
            Ok(true) => {
                let _ = fs::remove_dir_all(dir.path().join(name));
            }
            Ok(false) => {
                let _ = dir.unlink(name);
            }
            Err(_) => {}
        }
        tracing::warn!(path = %path.display(), "removed a foreign file from the cache directory");
    }

    /// Removes the entry `hash` if `still` says the file at its path is the
    /// one the caller means. The check, the removal and the counters' update
    /// run with the counters held exclusively, as publishing does, so a file
    /// published meanwhile is never taken for the one meant and the counters
    /// stay exact. Returns the bytes freed; `None` when there was nothing to
    /// remove (no file, another file, or removed meanwhile by another
    /// process). Any other failure is an error. Nothing is removed once
    /// `cancel` says the caller went away (a dropped `delete`). A removal
    /// is recorded in the journal with its `cause`.
    pub(crate) fn remove_entry(
        &self,
        hash: &str,
        still: impl FnOnce(&Meta) -> bool,
        cause: RemovalCause,
        cancel: Option<&Cancel>,
        wait: Wait,
    ) -> std::result::Result<Option<u64>, RemoveError> {
        let path = self.layout.entry_path(hash);
        let failed = |op, source| RemoveError::Io {
            path: path.clone(),
            op,
            source,
        };
        let name = std::ffi::OsStr::new(hash);
        self.usage
            .exclusive(wait, |u| {
                let fan = match self.dirs.fanout(hash) {
                    Ok(fan) => fan,
                    Err(e) => return Err(failed("open the entry's directory", e)),
                };
                let m = match fan.stat(name) {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(failed("inspect the entry to remove it", e)),
                };
                if !m.is_file || !still(&m) {
                    return Ok(None);
                }
                let remove = || self.fault(Point::Remove).and_then(|()| fan.unlink(name));
                let removed = match cancel {
                    Some(cancel) => match cancel.commit(remove) {
                        Some(r) => r,
                        None => return Ok(None),
                    },
                    None => remove(),
                };
                match removed {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(failed("remove the entry", e)),
                }
                // Recorded first: the journal's number is then saved with
                // the counts, in one write.
                self.journal
                    .record(u, &[Record { hash, cause }], SystemTime::now());
                let _ = u.add(-1, -(m.len as i64));
                Ok(Some(m.len))
            })
            .map_err(RemoveError::Usage)
            .and_then(|r| r)
    }

    /// The error of a failed removal. `key` names the entry; `None` (for
    /// cache-wide operations) names the counters' file when they were the
    /// trouble.
    pub(crate) fn remove_error(&self, key: Option<&str>, e: RemoveError) -> Error {
        match e {
            RemoveError::Usage(e) => self.usage_error(key, "update the usage counters", e),
            RemoveError::Io { path, op, source } => Error::Io {
                key: key.map(Error::display_key).unwrap_or_default(),
                path,
                op,
                source,
            },
        }
    }
}

/// What a sweep (`clear`, `purge_expired`) did.
#[derive(Debug, Default)]
pub(crate) struct Swept {
    /// Entries removed (and taken off the counters).
    pub removed: u64,
    /// Entries the file system refused to remove.
    failed: u64,
    /// The first refusal: the entry's key, its path, the OS error.
    first: Option<(String, PathBuf, io::Error)>,
    /// Why the sweep stopped early (the counters' lock was not to be had).
    stopped: Option<Error>,
}

impl Swept {
    /// The answer of the sweep: how many entries were removed, or the first
    /// failure (an I/O error naming the entry, with the number of failures).
    pub(crate) fn result(self, op: &'static str) -> Result<u64> {
        if let Some(e) = self.stopped {
            return Err(e);
        }
        let Some((key, path, source)) = self.first else {
            return Ok(self.removed);
        };
        let plural = |n: u64| if n == 1 { "entry" } else { "entries" };
        let message = format!(
            "{source}; {} {} could not be removed (the first is named here), {} {} removed",
            self.failed,
            plural(self.failed),
            self.removed,
            if self.removed == 1 { "was" } else { "were" },
        );
        Err(Error::Io {
            key,
            path,
            op,
            source: io::Error::new(source.kind(), message),
        })
    }
}
