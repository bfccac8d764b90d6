//! Directory handles: every file of the cache is reached from a directory
//! opened once, without following symbolic links.
//!
//! A handle opens `etl-cache-v1` and its subdirectories `entries`, `tmp`,
//! `spare` and `locks` when the cache is opened (after checking that they
//! are directories), and keeps them open for its life. Every later
//! operation names its file relative to one of them: a fan-out directory
//! `entries/ab` is opened relative to `entries` with `O_NOFOLLOW` (or the
//! entry opened in one `openat2` call that refuses any symbolic link on the
//! way), then the file relative to it (`openat`, `renameat`, `unlinkat`,
//! `fstatat`). So a directory of the root replaced by a symbolic link after
//! the cache was opened is never followed: nothing outside the root is
//! written, removed or read back as an entry. A fan-out directory found to
//! be something else than a directory is refused with an error naming it,
//! and replaced by an empty directory, as other foreign files in the root
//! are removed.
//!
//! Errors name real paths (under the root); the descriptors are not shown.
//! Where this is not available (outside Linux) the same calls take paths.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::layout::Layout;

/// What a stat says of a file (never following a symbolic link).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub len: u64,
    /// (device, inode), as `sys::file_id`.
    pub id: (u64, u64),
    pub is_file: bool,
    pub mtime: Option<SystemTime>,
}

impl Meta {
    #[cfg_attr(target_os = "linux", allow(dead_code))] // stats by descriptor there
    pub fn of(m: &std::fs::Metadata) -> Meta {
        Meta {
            len: m.len(),
            id: crate::sys::file_id(m),
            is_file: m.is_file(),
            mtime: m.modified().ok(),
        }
    }
}

/// How a file is opened. Every mode refuses a symbolic link and closes on
/// exec; files created are private (0600).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum How {
    /// Read-only, and not blocking on a FIFO planted in place of a file.
    Read,
    /// Write-only, an existing file.
    Write,
    /// Write-only, a new file (fails if one exists).
    CreateNew,
    /// Read-write, created if missing (lock files).
    Lock,
}

/// Whether an error says a name is a symbolic link (or not a directory)
/// where a plain file or a directory was expected.
pub(crate) fn is_link_error(e: &io::Error) -> bool {
    #[cfg(unix)]
    if e.raw_os_error().is_some() {
        return crate::sys::is_errno(e, &[rustix::io::Errno::LOOP, rustix::io::Errno::NOTDIR]);
    }
    let _ = e;
    false
}

#[cfg(target_os = "linux")]
mod imp {
    use super::*;
    use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
    use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, ResolveFlags};
    use std::sync::atomic::{AtomicBool, Ordering};

    fn flags(how: How) -> OFlags {
        let base = OFlags::NOFOLLOW | OFlags::CLOEXEC;
        base | match how {
            How::Read => OFlags::RDONLY | OFlags::NONBLOCK,
            How::Write => OFlags::WRONLY,
            How::CreateNew => OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
            How::Lock => OFlags::RDWR | OFlags::CREATE,
        }
    }

    const DIR_FLAGS: OFlags = OFlags::RDONLY
        .union(OFlags::DIRECTORY)
        .union(OFlags::NOFOLLOW)
        .union(OFlags::CLOEXEC);

    fn private() -> Mode {
        Mode::from_raw_mode(0o600)
    }

    pub(crate) struct Dirs {
        /// By [`Sub`].
        subs: [(PathBuf, OwnedFd); 5],
        /// Cleared when the kernel has no `openat2` (before 5.6) or a
        /// sandbox refuses it: entries are then opened in two steps.
        openat2: AtomicBool,
    }

    enum Fd<'a> {
        Held(BorrowedFd<'a>),
        Owned(OwnedFd),
    }

    /// One directory of the cache, open.
    pub(crate) struct Dir<'a> {
        path: std::borrow::Cow<'a, Path>,
        fd: Fd<'a>,
    }

    impl Dirs {
        pub fn open_all(layout: &Layout) -> io::Result<Dirs> {
            let base = rustix::fs::open(&layout.base, DIR_FLAGS, Mode::empty())?;
            let sub = |p: &PathBuf| -> io::Result<(PathBuf, OwnedFd)> {
                let name = p.file_name().expect("a subdirectory");
                Ok((
                    p.clone(),
                    rustix::fs::openat(&base, name, DIR_FLAGS, Mode::empty())?,
                ))
            };
            let (entries, tmp, spare, locks) = (
                sub(&layout.entries)?,
                sub(&layout.tmp)?,
                sub(&layout.spare)?,
                sub(&layout.locks)?,
            );
            Ok(Dirs {
                subs: [(layout.base.clone(), base), entries, tmp, spare, locks],
                openat2: AtomicBool::new(true),
            })
        }

        pub(super) fn sub(&self, which: Sub) -> Dir<'_> {
            let (path, fd) = &self.subs[which as usize];
            Dir {
                path: std::borrow::Cow::Borrowed(path),
                fd: Fd::Held(fd.as_fd()),
            }
        }

        /// Opens the entry file `hash` (in its fan-out directory) without
        /// following any symbolic link: one system call.
        pub fn open_entry(&self, hash: &str, how: How) -> io::Result<File> {
            if self.openat2.load(Ordering::Relaxed) {
                let rel = format!("{}/{hash}", &hash[..2]);
                match rustix::fs::openat2(
                    &self.subs[Sub::Entries as usize].1,
                    rel.as_str(),
                    flags(how),
                    // `openat2` refuses a mode unless it creates.
                    if matches!(how, How::Read | How::Write) {
                        Mode::empty()
                    } else {
                        private()
                    },
                    ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
                ) {
                    Ok(fd) => return Ok(File::from(fd)),
                    Err(e) if e == rustix::io::Errno::NOSYS || e == rustix::io::Errno::PERM => {
                        self.openat2.store(false, Ordering::Relaxed);
                    }
                    // The kernel could not rule out an escape while names
                    // moved under it (a concurrent rename): the two steps
                    // below decide.
                    Err(e) if e == rustix::io::Errno::XDEV || e == rustix::io::Errno::AGAIN => {}
                    // A link on the way: say which (the fan-out directory,
                    // or the entry itself).
                    Err(e) if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR => {
                        self.fanout(hash)?;
                        return Err(e.into());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            self.fanout(hash)?.open(OsStr::new(hash), how)
        }
    }

    impl Dir<'_> {
        pub fn path(&self) -> &Path {
            &self.path
        }

        fn fd(&self) -> BorrowedFd<'_> {
            match &self.fd {
                Fd::Held(fd) => *fd,
                Fd::Owned(fd) => fd.as_fd(),
            }
        }

        /// The subdirectory `name`, which must be a directory (not a link).
        pub fn subdir(&self, name: &str) -> io::Result<Dir<'static>> {
            let fd = rustix::fs::openat(self.fd(), name, DIR_FLAGS, Mode::empty())?;
            Ok(Dir {
                path: std::borrow::Cow::Owned(self.path.join(name)),
                fd: Fd::Owned(fd),
            })
        }

        pub fn open(&self, name: &OsStr, how: How) -> io::Result<File> {
            Ok(File::from(rustix::fs::openat(
                self.fd(),
                name,
                flags(how),
                private(),
            )?))
        }

        pub fn stat(&self, name: &OsStr) -> io::Result<Meta> {
            let st = rustix::fs::statat(self.fd(), name, AtFlags::SYMLINK_NOFOLLOW)?;
            let mtime = (st.st_mtime >= 0).then(|| {
                SystemTime::UNIX_EPOCH
                    + std::time::Duration::new(st.st_mtime as u64, st.st_mtime_nsec as u32)
            });
            Ok(Meta {
                len: st.st_size as u64,
                id: (st.st_dev, st.st_ino),
                is_file: rustix::fs::FileType::from_raw_mode(st.st_mode)
                    == rustix::fs::FileType::RegularFile,
                mtime,
            })
        }

        pub fn is_dir(&self, name: &OsStr) -> io::Result<bool> {
            let st = rustix::fs::statat(self.fd(), name, AtFlags::SYMLINK_NOFOLLOW)?;
            Ok(rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory)
        }

        pub fn unlink(&self, name: &OsStr) -> io::Result<()> {
            Ok(rustix::fs::unlinkat(self.fd(), name, AtFlags::empty())?)
        }

        pub fn mkdir(&self, name: &OsStr) -> io::Result<()> {
            Ok(rustix::fs::mkdirat(
                self.fd(),
                name,
                Mode::from_raw_mode(0o700),
            )?)
        }

        /// The names in this directory (`.` and `..` left out).
        pub fn names(&self) -> io::Result<Vec<OsString>> {
            use std::os::unix::ffi::OsStrExt;
            let mut out = Vec::new();
            for e in rustix::fs::Dir::read_from(self.fd())? {
                let e = e?;
                let name = e.file_name().to_bytes();
                if name != b"." && name != b".." {
                    out.push(OsStr::from_bytes(name).to_os_string());
                }
            }
            Ok(out)
        }

        pub fn sync(&self) -> io::Result<()> {
            Ok(rustix::fs::fsync(self.fd())?)
        }
    }

    /// Renames `from/a` to `to/b`.
    pub(crate) fn rename(from: &Dir<'_>, a: &OsStr, to: &Dir<'_>, b: &OsStr) -> io::Result<()> {
        Ok(rustix::fs::renameat(from.fd(), a, to.fd(), b)?)
    }

    /// Swaps `from/a` and `to/b` atomically (`renameat2(RENAME_EXCHANGE)`).
    pub(crate) fn exchange(from: &Dir<'_>, a: &OsStr, to: &Dir<'_>, b: &OsStr) -> io::Result<()> {
        Ok(rustix::fs::renameat_with(
            from.fd(),
            a,
            to.fd(),
            b,
            RenameFlags::EXCHANGE,
        )?)
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;
    use std::fs::{self, OpenOptions};

    pub(crate) struct Dirs {
        /// By [`Sub`].
        subs: [PathBuf; 5],
    }

    /// One directory of the cache (by path here).
    pub(crate) struct Dir<'a> {
        path: std::borrow::Cow<'a, Path>,
    }

    impl Dirs {
        pub fn open_all(layout: &Layout) -> io::Result<Dirs> {
            Ok(Dirs {
                subs: [
                    layout.base.clone(),
                    layout.entries.clone(),
                    layout.tmp.clone(),
                    layout.spare.clone(),
                    layout.locks.clone(),
                ],
            })
        }
        pub(super) fn sub(&self, which: Sub) -> Dir<'_> {
            Dir {
                path: std::borrow::Cow::Borrowed(&self.subs[which as usize]),
            }
        }
        pub fn open_entry(&self, hash: &str, how: How) -> io::Result<File> {
            self.fanout(hash)?.open(OsStr::new(hash), how)
        }
    }

    impl Dir<'_> {
        pub fn path(&self) -> &Path {
            &self.path
        }
        pub fn subdir(&self, name: &str) -> io::Result<Dir<'static>> {
            let path = self.path.join(name);
            if !fs::symlink_metadata(&path)?.is_dir() {
                return Err(io::Error::other("not a directory"));
            }
            Ok(Dir {
                path: std::borrow::Cow::Owned(path),
            })
        }
        pub fn open(&self, name: &OsStr, how: How) -> io::Result<File> {
            let mut opts = OpenOptions::new();
            match how {
                How::Read => crate::sys::read_nofollow(opts.read(true)),
                How::Write => crate::sys::private_nofollow(opts.write(true)),
                How::CreateNew => crate::sys::private_nofollow(opts.write(true).create_new(true)),
                How::Lock => crate::sys::private_nofollow(opts.read(true).write(true).create(true)),
            }
            opts.open(self.path.join(name))
        }
        pub fn stat(&self, name: &OsStr) -> io::Result<Meta> {
            fs::symlink_metadata(self.path.join(name)).map(|m| Meta::of(&m))
        }
        pub fn is_dir(&self, name: &OsStr) -> io::Result<bool> {
            fs::symlink_metadata(self.path.join(name)).map(|m| m.is_dir())
        }
        pub fn unlink(&self, name: &OsStr) -> io::Result<()> {
            fs::remove_file(self.path.join(name))
        }
        pub fn mkdir(&self, name: &OsStr) -> io::Result<()> {
            fs::create_dir(self.path.join(name))
        }
        pub fn names(&self) -> io::Result<Vec<OsString>> {
            fs::read_dir(&self.path)?
                .map(|e| e.map(|e| e.file_name()))
                .collect()
        }
        pub fn sync(&self) -> io::Result<()> {
            crate::sys::sync_dir(&self.path)
        }
    }

    pub(crate) fn rename(from: &Dir<'_>, a: &OsStr, to: &Dir<'_>, b: &OsStr) -> io::Result<()> {
        fs::rename(from.path.join(a), to.path.join(b))
    }

    pub(crate) fn exchange(
        _from: &Dir<'_>,
        _a: &OsStr,
        _to: &Dir<'_>,
        _b: &OsStr,
    ) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

pub(crate) use imp::{Dir, Dirs, exchange, rename};

/// The directories a handle keeps open: the root and its subdirectories.
#[derive(Clone, Copy)]
enum Sub {
    Base,
    Entries,
    Tmp,
    Spare,
    Locks,
}

impl Dirs {
    pub fn base(&self) -> Dir<'_> {
        self.sub(Sub::Base)
    }
    pub fn entries(&self) -> Dir<'_> {
        self.sub(Sub::Entries)
    }
    pub fn tmp(&self) -> Dir<'_> {
        self.sub(Sub::Tmp)
    }
    pub fn spare(&self) -> Dir<'_> {
        self.sub(Sub::Spare)
    }
    pub fn locks(&self) -> Dir<'_> {
        self.sub(Sub::Locks)
    }
}

impl std::fmt::Debug for Dirs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Dirs").field(&self.base().path()).finish()
    }
}

impl Dirs {
    /// The fan-out directory of the entry `hash`. One that is not a
    /// directory (a symbolic link put in its place, a file) is refused with
    /// an error naming it, and replaced by an empty directory, so that the
    /// next operations work on the real one.
    pub fn fanout(&self, hash: &str) -> io::Result<Dir<'static>> {
        self.fanout_dir(&hash[..2])
    }

    /// The fan-out directory `name` (two hex digits); see [`Dirs::fanout`].
    pub fn fanout_dir(&self, name: &str) -> io::Result<Dir<'static>> {
        let entries = self.entries();
        match entries.subdir(name) {
            Ok(d) => Ok(d),
            Err(e) if is_link_error(&e) || e.kind() == io::ErrorKind::NotFound => {
                let path = entries.path().join(name);
                let was = match entries.is_dir(OsStr::new(name)) {
                    Ok(true) => return entries.subdir(name),
                    Ok(false) => entries.unlink(OsStr::new(name)).map(|()| "was replaced"),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok("was missing"),
                    Err(e) => Err(e),
                };
                // Another thread may have made it meanwhile.
                let made = match entries.mkdir(OsStr::new(name)) {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                    made => made,
                };
                tracing::warn!(
                    path = %path.display(),
                    "a fan-out directory was missing or not a directory; made it again"
                );
                match (was, made) {
                    (Ok("was missing"), Ok(())) => entries.subdir(name),
                    (Ok(_), Ok(())) => Err(io::Error::other(format!(
                        "{} was not a directory (a symbolic link or a file put in its place; \
                         links are not followed): refused, and replaced by an empty directory",
                        path.display()
                    ))),
                    (Err(e), _) | (_, Err(e)) => Err(io::Error::new(
                        e.kind(),
                        format!(
                            "{} is not a directory (a symbolic link or a file put in its \
                             place; links are not followed), and could not be replaced: {e}",
                            path.display()
                        ),
                    )),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The directory holding `path` and `path`'s name in it, for a path
    /// under `etl-cache-v1` (an entry, temp, spare or lock file).
    pub fn locate<'a>(&self, path: &'a Path) -> io::Result<(Dir<'_>, &'a OsStr)> {
        let outside = || io::Error::other(format!("{} is outside the cache", path.display()));
        let name = path.file_name().ok_or_else(outside)?;
        let parent = path.parent().ok_or_else(outside)?;
        for d in [self.tmp(), self.spare(), self.locks(), self.base()] {
            if parent == d.path() {
                return Ok((d, name));
            }
        }
        let entries = self.entries();
        if parent.parent() == Some(entries.path())
            && let Some(fan) = parent.file_name().and_then(|f| f.to_str())
            && fan.len() == 2
        {
            return self.fanout_dir(fan).map(|d| (d, name));
        }
        Err(outside())
    }

    /// Removes the file at `path` (under the cache), not following links.
    pub fn remove_file(&self, path: &Path) -> io::Result<()> {
        let (dir, name) = self.locate(path)?;
        dir.unlink(name)
    }

    /// Stats the file at `path` (under the cache), not following links.
    pub fn stat(&self, path: &Path) -> io::Result<Meta> {
        let (dir, name) = self.locate(path)?;
        dir.stat(name)
    }

    /// Opens the file at `path` (under the cache), not following links.
    pub fn open(&self, path: &Path, how: How) -> io::Result<File> {
        let (dir, name) = self.locate(path)?;
        dir.open(name, how)
    }
}
