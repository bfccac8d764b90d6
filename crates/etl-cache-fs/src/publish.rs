//! Publishing a written entry: the temp file, sealed, is renamed over the
//! entry in the same hold of the shared counters that reserves its size,
//! evicting first when that passes a limit; a temp file never published is
//! removed.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etl_cache_core::backend::Counters;
use etl_cache_core::{EntryMeta, Error, Result};

use crate::cancel::Cancel;
use crate::dirs::Dirs;
use crate::evict::Publishing;
use crate::fault::Point;
use crate::inner::Inner;
use crate::lock::KeyLock;
use crate::usage::{UsageError, Wait};

/// A complete temp file, ready to be renamed into place.
pub(crate) struct Sealed {
    pub(crate) tmp: TempEntry,
    pub(crate) meta: EntryMeta,
    pub(crate) size: u64,
}

/// The outcome of [`Inner::publish`].
pub(crate) enum Publish {
    /// Published.
    Done(EntryMeta),
    /// Not published: finishing needs to wait for a lock or to evict.
    Blocked(Sealed),
}

impl Publish {
    /// The metadata of an entry published by a call allowed to block.
    pub(crate) fn done(self) -> EntryMeta {
        match self {
            Publish::Done(meta) => meta,
            Publish::Blocked(_) => unreachable!("a blocking publish always completes"),
        }
    }
}

/// The first step of [`Inner::publish`]: its reservation in the counters.
enum Reserved {
    /// Within the limits: renamed into place; with the length of the entry
    /// it replaced when that was swapped out to the temp path.
    Published(Option<u64>),
    /// Within the limits, but the rename failed (the reservation is undone).
    Failed(io::Error),
    /// The caller went away: not renamed, the reservation undone.
    Cancelled,
    /// Past a limit: not renamed, the reservation undone; with what it was
    /// (entries, bytes), for the eviction that makes room.
    OverLimits((i64, i64)),
}

/// A temp file being written; removed on drop unless published.
pub(crate) struct TempEntry {
    pub(crate) out: BufWriter<File>,
    pub(crate) path: PathBuf,
    pub(crate) dirs: Arc<Dirs>,
    pub(crate) published: bool,
    /// The length the file had, when it is a spare being written again
    /// (see `spare`): a shorter entry truncates the rest.
    pub(crate) spare_len: Option<u64>,
}

impl Drop for TempEntry {
    fn drop(&mut self) {
        if !self.published {
            let _ = self.dirs.remove_file(&self.path);
        }
    }
}

impl Inner {
    /// Renames the temp file over the entry after reserving its size in the
    /// shared counters (evicting if that passes a limit). The reservation and
    /// the rename run with the counters held exclusively (see
    /// [`crate::usage::Usage::exclusive`]), which keeps them exact across
    /// processes without a lock file per key: a set makes no lock file unless
    /// a worker holds the key's lock (a single-flight computation, a delete),
    /// and then waits for it. `held` says the caller holds the key's lock.
    /// When `may_block` is false, gives the entry back as
    /// [`Publish::Blocked`] rather than wait for the lock or evict; the caller
    /// then retries on a blocking thread.
    ///
    /// The entry is renamed into place only when it fits the limits, in the
    /// same hold of the counters as its reservation: a reservation is never
    /// kept across a wait, so the counters always equal the files on disk
    /// plus the renames under way, and a recount (made with them held) is
    /// exact. When the limits leave no room, the reservation is undone,
    /// entries are evicted with the counters released, and the whole step is
    /// tried again, until the lock timeout (then an error: the cache stays
    /// within its limits rather than take the entry).
    ///
    /// Nothing is renamed once `cancel` says the caller went away.
    pub(crate) fn publish(
        &self,
        key: &str,
        hash: &str,
        mut sealed: Sealed,
        held: bool,
        may_block: bool,
        cancel: &Cancel,
    ) -> Result<Publish> {
        let target = self.layout.entry_path(hash);
        let lock_path = self.layout.lock_path(hash);
        let started = Instant::now();
        // Lock files exist only while held: no file, no holder to wait for.
        let lock_name = lock_path.file_name().expect("a lock file name");
        let _lock = if held || self.dirs.locks().stat(lock_name).is_err() {
            None
        } else if may_block {
            Some(KeyLock::acquire_unless(
                &self.dirs,
                &lock_path,
                key,
                self.config.lock_timeout,
                || cancel.is_cancelled(),
            )?)
        } else {
            match KeyLock::try_acquire(&self.dirs, &lock_path) {
                Ok(Some(lock)) => Some(lock),
                Ok(None) => return Ok(Publish::Blocked(sealed)),
                Err(e) => return Err(self.io(key, &lock_path, "take the key lock")(e)),
            }
        };
        let size = sealed.size;
        // The entry's directory and the temp file's, opened without
        // following links (see `dirs`).
        let fan =
            self.dirs
                .fanout(hash)
                .map_err(self.io(key, &target, "open the entry's directory"))?;
        let (from, tmp_name) = self
            .dirs
            .locate(&sealed.tmp.path)
            .map(|(dir, name)| (dir, name.to_os_string()))
            .map_err(self.io(key, &sealed.tmp.path, "open the temp file's directory"))?;
        let name = OsStr::new(hash);
        // The length of the entry being replaced, if any.
        let current = || match fan.stat(name) {
            Ok(m) if m.is_file => Some(m.len),
            _ => None,
        };
        let delta = |old: Option<u64>| match old {
            Some(len) => (0, size as i64 - len as i64),
            None => (1, size as i64),
        };
        // Puts the new file in place. An entry it replaces is swapped out
        // rather than unlinked (see `spare`): then its length is returned,
        // and the file is left at the temp path.
        let rename = |old: Option<u64>| -> io::Result<Option<u64>> {
            self.fault(Point::Rename)?;
            if let Some(len) = old
                && self.spares.exchange(&from, &tmp_name, &fan, name)?
            {
                return Ok(Some(len));
            }
            crate::dirs::rename(&from, &tmp_name, &fan, name).map(|()| None)
        };
        let usage_err = |e| self.usage_error(Some(key), "update the usage counters", e);
        // A caller that may not block does not sleep waiting for another
        // process holding the counters either.
        let wait = if may_block { Wait::Timeout } else { Wait::Spin };
        let mut pause = Duration::from_micros(200);
        let mut tries = 0u32;
        let replaced = loop {
            tries += 1;
            // Reserve, rename if within the limits, else undo. Only growth
            // is reserved; a shrink (a smaller replacement) is counted after
            // the rename, so a process killed in between leaves the counters
            // high, never low.
            let step = self.usage.exclusive(wait, |u| {
                let old = current();
                let (d_entries, d_bytes) = delta(old);
                let mut counts = u.add(d_entries, d_bytes.max(0))?;
                self.plan_ahead(counts);
                if self.over_limits(counts) {
                    // Flat eviction: the victims a scan queued go now, with
                    // the counters already held (usually one per set).
                    counts = self.evict_queued(u, Some(hash), counts, 8)?.0;
                }
                if !self.over_limits(counts) {
                    return Ok(match cancel.commit(|| rename(old)) {
                        Some(Ok(replaced)) => {
                            if d_bytes < 0 {
                                let _ = u.add(0, d_bytes);
                            }
                            Reserved::Published(replaced)
                        }
                        Some(Err(e)) => {
                            let _ = u.add(-d_entries, -d_bytes.max(0));
                            Reserved::Failed(e)
                        }
                        None => {
                            let _ = u.add(-d_entries, -d_bytes.max(0));
                            Reserved::Cancelled
                        }
                    });
                }
                u.add(-d_entries, -d_bytes.max(0))?;
                Ok(Reserved::OverLimits((d_entries, d_bytes.max(0))))
            });
            let step = match step {
                Ok(r) => r.map_err(|e| usage_err(UsageError::Io(e)))?,
                Err(UsageError::Busy) => return Ok(Publish::Blocked(sealed)),
                Err(e) => return Err(usage_err(e)),
            };
            match step {
                Reserved::Published(replaced) => break replaced,
                Reserved::Failed(e) => return Err(self.io(key, &target, "publish the entry")(e)),
                Reserved::Cancelled => return Err(cancelled(key)),
                Reserved::OverLimits(_) if !may_block => return Ok(Publish::Blocked(sealed)),
                Reserved::OverLimits(reserved) => {
                    if cancel.is_cancelled() {
                        return Err(cancelled(key));
                    }
                    let waited = started.elapsed();
                    if waited >= self.config.lock_timeout {
                        tracing::warn!(
                            key,
                            ?waited,
                            tries,
                            "gave up making room for an entry within the limits"
                        );
                        return Err(Error::Io {
                            key: Error::display_key(key),
                            path: target,
                            op: "make room for the entry within the cache's limits",
                            source: io::Error::new(
                                io::ErrorKind::StorageFull,
                                format!(
                                    "no room was made within max_entries / max_bytes in {waited:?} \
                                     ({tries} tries): other writers kept filling the cache, or \
                                     another process held the eviction lock"
                                ),
                            ),
                        });
                    }
                    self.evict(Some(Publishing { hash, reserved }));
                    // The first retry is immediate (eviction usually made
                    // room); later ones back off, as another process may be
                    // the one scanning.
                    if tries > 1 {
                        std::thread::sleep(pause.min(self.config.lock_timeout - waited));
                        pause = (pause * 2).min(Duration::from_millis(20));
                    }
                }
            }
        };
        sealed.tmp.published = true;
        if let Some(len) = replaced {
            let _ = self.spares.keep(&sealed.tmp.path, len);
        }
        if self.config.durable {
            fan.sync()
                .map_err(self.io(key, fan.path(), "fsync the directory"))?;
        }
        Counters::bump(&self.counters.sets);
        Ok(Publish::Done(sealed.meta))
    }
}

/// The error of a write whose caller went away before it was published
/// (nobody sees it; it ends the blocking side's work).
pub(crate) fn cancelled(key: &str) -> Error {
    Error::Stream {
        key: Error::display_key(key),
        source: io::Error::new(
            io::ErrorKind::Interrupted,
            "the call was dropped before the entry was published; nothing was published",
        ),
    }
}
