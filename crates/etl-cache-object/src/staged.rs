//! Writes to a local directory that take effect before their future
//! completes, or never.
//!
//! object_store's `LocalFileSystem` does a put on a blocking thread, which
//! carries on when the caller's future is dropped: the rename that
//! publishes may come after the drop, over a value written since. On a
//! store the cache recognises as a plain `LocalFileSystem` (a `local_dir`,
//! or the store itself), entries are written here instead, the way that
//! store writes them (a staging file `name#<digits>` beside the object,
//! closed, then renamed over it; synced to disk, file and directory, when
//! [`crate::ObjectCacheBuilder::fsync`] asks for it): the bytes go
//! to the staging file on blocking threads, and the rename runs inside
//! [`Commit::commit`] under a mutex that the future's drop takes too. So a
//! write either took effect before its future was dropped or never does;
//! the drop waits at most for a rename under way.
//!
//! A wrapper store over `LocalFileSystem` (given a
//! [`crate::ObjectCacheBuilder::local_root`]) keeps the store's own writes:
//! there a dropped write may still publish later.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path;

/// How entries are written on a recognised `LocalFileSystem`.
#[derive(Debug)]
pub(crate) struct LocalWrites {
    /// A store on the same root, for its mapping of names to files.
    fs: LocalFileSystem,
    fsync: bool,
}

impl LocalWrites {
    /// For the plain `LocalFileSystem` whose root is `root`; `fsync` says
    /// whether a write is synced to disk before it counts as done.
    pub(crate) fn new(root: &std::path::Path, fsync: bool) -> Option<LocalWrites> {
        let fs = LocalFileSystem::new_with_prefix(root).ok()?;
        Some(LocalWrites { fs, fsync })
    }

    /// A write of the object at `location`; nothing is touched yet.
    pub(crate) fn stage(&self, location: &Path) -> io::Result<Staged> {
        let dest = self
            .fs
            .path_to_filesystem(location)
            .map_err(io::Error::other)?;
        let mut staging = dest.clone().into_os_string();
        staging.push(format!("#{}", random_digits()));
        Ok(Staged {
            dest,
            staging: staging.into(),
            file: None,
            commit: Commit::default(),
            fsync: self.fsync,
            touched: false,
            done: false,
        })
    }
}

fn random_digits() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Pending,
    Cancelled,
    Done,
}

/// Whether the write's caller is still there, shared by its future and
/// the blocking threads doing its work.
#[derive(Debug, Clone, Default)]
struct Commit(Arc<Mutex<State>>);

impl Commit {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_cancelled(&self) -> bool {
        *self.state() == State::Cancelled
    }

    /// Runs `change` unless the caller went away (`None` then); a cancel
    /// waits for a change under way.
    fn commit<T>(&self, change: impl FnOnce() -> T) -> Option<T> {
        let mut state = self.state();
        if *state == State::Cancelled {
            return None;
        }
        let out = change();
        *state = State::Done;
        Some(out)
    }

    fn cancel(&self) {
        let mut state = self.state();
        if *state != State::Done {
            *state = State::Cancelled;
        }
    }
}

/// One write in progress: its staging file and whether it was published.
#[derive(Debug)]
pub(crate) struct Staged {
    dest: PathBuf,
    staging: PathBuf,
    file: Option<File>,
    commit: Commit,
    fsync: bool,
    /// Whether the staging file may exist.
    touched: bool,
    done: bool,
}

fn cancelled() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "the write was cancelled")
}

fn open_staging(staging: &std::path::Path) -> io::Result<File> {
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(staging)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = staging.parent() {
                std::fs::create_dir_all(parent)?;
            }
            open()
        }
        r => r,
    }
}

/// How many files and directories were synced, for tests.
#[cfg(test)]
static SYNCS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn sync(file: &File) -> io::Result<()> {
    #[cfg(test)]
    SYNCS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    file.sync_all()
}

#[cfg(unix)]
fn sync_dir(path: &std::path::Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => sync(&File::open(dir)?),
        None => Ok(()),
    }
}

#[cfg(not(unix))]
fn sync_dir(_: &std::path::Path) -> io::Result<()> {
    Ok(())
}

impl Staged {
    /// The file the object is published to.
    pub(crate) fn dest(&self) -> &std::path::Path {
        &self.dest
    }

    /// Appends `parts` to the staging file (created on first use).
    pub(crate) async fn write(&mut self, parts: Vec<Bytes>) -> io::Result<()> {
        let (file, staging, commit) = (self.file.take(), self.staging.clone(), self.commit.clone());
        self.touched = true;
        let file = tokio::task::spawn_blocking(move || {
            let mut file = match file {
                Some(f) => f,
                None => open_staging(&staging)?,
            };
            for p in &parts {
                file.write_all(p)?;
            }
            if commit.is_cancelled() {
                drop(file);
                let _ = std::fs::remove_file(&staging);
                return Err(cancelled());
            }
            Ok(file)
        })
        .await
        .map_err(io::Error::other)??;
        self.file = Some(file);
        Ok(())
    }

    /// Appends `rest`, closes the staging file and renames it over the
    /// object, unless the caller went away first.
    pub(crate) async fn publish(&mut self, rest: Vec<Bytes>) -> io::Result<()> {
        let (file, staging, dest, commit, fsync) = (
            self.file.take(),
            self.staging.clone(),
            self.dest.clone(),
            self.commit.clone(),
            self.fsync,
        );
        self.touched = true;
        let published = tokio::task::spawn_blocking(move || {
            let written = (|| {
                let mut file = match file {
                    Some(f) => f,
                    None => open_staging(&staging)?,
                };
                for p in &rest {
                    file.write_all(p)?;
                }
                if fsync {
                    sync(&file)?;
                }
                drop(file);
                match commit.commit(|| std::fs::rename(&staging, &dest)) {
                    Some(r) => r,
                    None => Err(cancelled()),
                }
            })();
            match written {
                Ok(()) if fsync => sync_dir(&dest),
                Ok(()) => Ok(()),
                Err(e) => {
                    let _ = std::fs::remove_file(&staging);
                    Err(e)
                }
            }
        })
        .await
        .map_err(io::Error::other)?;
        // Published, or the staging file removed by the failed attempt.
        self.done = true;
        published
    }

    /// Gives the write up: the staging file is removed.
    pub(crate) async fn discard(&mut self) {
        self.commit.cancel();
        self.file = None;
        if self.touched && !self.done {
            let staging = self.staging.clone();
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(staging)).await;
        }
        self.done = true;
    }
}

impl Drop for Staged {
    /// A write whose future is dropped never publishes: a rename under way
    /// is waited for, any later one refused; the staging file is removed.
    fn drop(&mut self) {
        self.commit.cancel();
        if self.done || !self.touched {
            return;
        }
        self.file = None;
        let staging = std::mem::take(&mut self.staging);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(move || {
                    let _ = std::fs::remove_file(staging);
                });
            }
            Err(_) => {
                let _ = std::fs::remove_file(staging);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_fsync_setting_is_followed() {
        use etl_cache_core::{CacheExt, SetOptions};
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        // Only this test writes with fsync on, so the count moves only here.
        for on in [false, true] {
            let cache = crate::ObjectCache::builder()
                .local_dir(dir.path().join("cache"))
                .fsync(on)
                .build()
                .unwrap();
            let before = SYNCS.load(Ordering::SeqCst);
            cache.set_text("k", "v", SetOptions::new()).await.unwrap();
            let synced = SYNCS.load(Ordering::SeqCst) - before;
            assert_eq!(synced > 0, on, "fsync({on}) synced {synced} times");
            assert_eq!(cache.get_text("k").await.unwrap().as_deref(), Some("v"));
        }
    }

    #[tokio::test]
    async fn a_write_publishes_once_and_a_cancelled_one_never() {
        let dir = tempfile::tempdir().unwrap();
        let w = LocalWrites::new(dir.path(), false).unwrap();
        let loc = Path::from("a/b");
        let mut s = w.stage(&loc).unwrap();
        s.write(vec![Bytes::from_static(b"he")]).await.unwrap();
        s.publish(vec![Bytes::from_static(b"llo")]).await.unwrap();
        assert_eq!(std::fs::read(dir.path().join("a/b")).unwrap(), b"hello");

        let mut s = w.stage(&loc).unwrap();
        s.write(vec![Bytes::from_static(b"x")]).await.unwrap();
        s.commit.cancel();
        let e = s.publish(Vec::new()).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Interrupted);
        drop(s);
        assert_eq!(std::fs::read(dir.path().join("a/b")).unwrap(), b"hello");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["b"], "no staging file is left");
    }
}
