//! Opening a root: its directories made private, its counters found or
//! rebuilt, the temp and spare files of dead writers swept.

use std::fs::{self, DirBuilder};
use std::io;
use std::path::Path;
use std::sync::Arc;

use etl_cache_core::backend::{Counters, SingleFlight};
use etl_cache_core::{Error, Result};

use crate::builder::Config;
use crate::dirs::{Dirs, How};
use crate::inner::Inner;
use crate::journal::Journal;
use crate::layout::Layout;
use crate::spare::Spares;
use crate::sys;
use crate::usage::Usage;

impl Inner {
    pub(crate) fn open(config: Config) -> Result<Inner> {
        let lock_timeout = config.lock_timeout;
        let root = config.root.clone();
        let bad = |message: String| Error::Open {
            location: root.display().to_string(),
            message,
        };
        match fs::metadata(&root) {
            Ok(m) if !m.is_dir() => {
                return Err(bad(
                    "it exists and is not a directory; pick another root".into()
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut b = DirBuilder::new();
                b.recursive(true);
                #[cfg(unix)]
                std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
                b.create(&root)
                    .map_err(|e| bad(format!("cannot create the directory: {e}")))?;
                sys::set_private_dir(&root)
                    .map_err(|e| bad(format!("cannot make the directory private: {e}")))?;
            }
            Err(e) => return Err(bad(format!("cannot inspect it: {e}"))),
        }
        let layout = Layout::new(&root);
        for dir in [
            &layout.base,
            &layout.entries,
            &layout.locks,
            &layout.tmp,
            &layout.spare,
        ] {
            make_private_dir(dir).map_err(|e| {
                bad(format!(
                    "cannot create {}: {e} (is the directory writable by this user?)",
                    dir.display()
                ))
            })?;
        }
        for dir in layout.fanout_dirs() {
            make_private_dir(&dir)
                .map_err(|e| bad(format!("cannot create {}: {e}", dir.display())))?;
        }
        let dirs = Arc::new(Dirs::open_all(&layout).map_err(|e| {
            bad(format!(
                "cannot open {} and its directories: {e}",
                layout.base.display()
            ))
        })?);
        let users = dirs.open(&layout.users_lock(), How::Lock).map_err(|e| {
            bad(format!(
                "cannot open the users lock (is the directory writable?): {e}"
            ))
        })?;
        let usage = dirs
            .open(&layout.usage_file(), How::Lock)
            .map(|f| Usage::with_file(f, &layout.usage_file(), config.lock_timeout))
            .map_err(|e| bad(format!("cannot open the usage file: {e}")))?;
        // Information only: a root whose journal cannot be opened still
        // opens, and records nothing.
        let journal = Journal::open(
            dirs.open(&layout.journal_file(), How::Lock)
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "cannot open the removal journal; removals go unrecorded");
                })
                .ok(),
        );
        let inner = Inner {
            journal,
            spares: Spares::new(dirs.clone(), config.recycle_files),
            dirs,
            victims: Default::default(),
            layout,
            config,
            counters: Counters::default(),
            usage,
            flights: SingleFlight::new(lock_timeout),
            id: etl_cache_core::HandleId::new(),
            users,
        };
        inner.sweep_temp_files();
        inner.spares.sweep();
        // Alone with the root: the counters can be rebuilt exactly.
        if inner.users.try_lock().is_ok() {
            let c = inner.recount();
            tracing::debug!(entries = c.entries, bytes = c.bytes, "recounted the cache");
            if inner.over_limits(c) {
                inner.evict(None);
            } else {
                // A large cache near its limits plans its first evictions
                // now (a handle that is not alone does so at its first set).
                inner.plan_ahead(c);
            }
        }
        // Another handle opening the root alone holds the users' lock
        // exclusively while it recounts (and evicts): wait for it, as for
        // any lock, no longer than the lock timeout.
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            match inner.users.try_lock_shared() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(bad(format!("cannot take the users lock: {e}")));
                }
            }
            let waited = started.elapsed();
            if waited >= inner.config.lock_timeout {
                return Err(bad(format!(
                    "another process held the users' lock ({}) for {waited:?}, longer than \
                     the lock timeout: it is opening the cache alone (recounting, evicting) \
                     or hangs; try again, or raise lock_timeout",
                    inner.layout.users_lock().display()
                )));
            }
            std::thread::sleep(pause.min(inner.config.lock_timeout - waited));
            pause = (pause * 2).min(std::time::Duration::from_millis(50));
        }
        Ok(inner)
    }

    /// Removes temp files whose writer is gone (their lock is free).
    fn sweep_temp_files(&self) {
        let dir = self.dirs.tmp();
        let Ok(names) = dir.names() else {
            return;
        };
        let mut swept = 0u64;
        for name in names {
            let Ok(f) = dir.open(&name, How::Lock) else {
                continue;
            };
            if f.try_lock().is_ok() && dir.unlink(&name).is_ok() {
                swept += 1;
            }
        }
        if swept > 0 {
            tracing::info!(swept, "removed temp files left by interrupted writes");
        }
    }
}

fn make_private_dir(dir: &Path) -> io::Result<()> {
    let mut b = DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    match b.create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let m = fs::symlink_metadata(dir)?;
            if m.is_dir() {
                Ok(())
            } else {
                Err(io::Error::other(
                    "exists and is not a directory (a symbolic link is not followed)",
                ))
            }
        }
        Err(e) => Err(e),
    }
}
