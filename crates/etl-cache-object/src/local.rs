//! Guards for stores that keep objects as files (object_store's
//! `LocalFileSystem`).
//!
//! `LocalFileSystem` opens files following symbolic links, opens a FIFO like
//! a file (which blocks until a writer comes) and lists through linked
//! directories. On such a store the cache looks at what stands at an
//! object's path with `symlink_metadata`, which follows no link, before it
//! reads or deletes the object, and lists the directory itself without ever
//! going through a link. Only regular files reached through real
//! directories below the cache's prefix are objects to it; a symbolic link,
//! a FIFO, a socket, a device or a directory where an entry should be is
//! not an entry: reads report it as `NotAnEntry`, listings and `clear` skip
//! it, and it is left in place.
//!
//! The directory the prefix maps to is trusted as configured, like the
//! store's root (either may be reached through links); what is below it is
//! not.
//!
//! A check and the request that follows it are separate system calls: a
//! link or FIFO swapped in between the two by another process is not
//! caught. The checks guard against what stands in the directory, not
//! against a concurrent writer racing the cache.

use std::collections::VecDeque;
use std::fs::{FileType, ReadDir};
use std::io;
use std::path::PathBuf;

use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;

/// How many directory entries one blocking call of a listing reads.
const LIST_BATCH: usize = 512;

/// The directory of a cache on a local file system.
#[derive(Debug, Clone)]
pub(crate) struct LocalFiles {
    /// The directory the cache's prefix maps to.
    base: PathBuf,
    prefix: Path,
}

/// What stands at an object's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Nothing (or a non-directory where one of its folders should be).
    Missing,
    /// A regular file, reached through real directories.
    File,
    /// Something that is not an object of the cache, and why.
    Other {
        why: String,
        /// A folder of the path (not its last name) is the problem: a write
        /// there would go through it.
        in_folder: bool,
    },
    /// The check itself failed (a folder that may not be read, say): the
    /// store's own request will report it.
    Unknown,
}

/// An object found by a listing.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub location: Path,
    pub size: u64,
}

impl From<object_store::ObjectMeta> for Listed {
    fn from(m: object_store::ObjectMeta) -> Listed {
        Listed {
            location: m.location,
            size: m.size,
        }
    }
}

/// What a file type is, for messages.
fn describe(ft: FileType) -> &'static str {
    if ft.is_symlink() {
        return "a symbolic link (not followed)";
    }
    if ft.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if ft.is_socket() {
            return "a socket";
        }
        if ft.is_block_device() || ft.is_char_device() {
            return "a device";
        }
    }
    "not a regular file"
}

fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Looks at `base/parts…` one name at a time, following no link.
fn stand(base: &std::path::Path, parts: &[String]) -> Standing {
    let Some((last, folders)) = parts.split_last() else {
        return Standing::Other {
            why: "it is the cache's own directory".into(),
            in_folder: false,
        };
    };
    let mut path = base.to_path_buf();
    for part in folders {
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                return Standing::Other {
                    why: format!("its folder {part:?} is a symbolic link (not followed)"),
                    in_folder: true,
                };
            }
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => return Standing::Missing,
            Err(e) if is_missing(&e) => return Standing::Missing,
            Err(_) => return Standing::Unknown,
        }
    }
    path.push(last);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_file() => Standing::File,
        Ok(m) => Standing::Other {
            why: format!("it is {}", describe(m.file_type())),
            in_folder: false,
        },
        Err(e) if is_missing(&e) => Standing::Missing,
        Err(_) => Standing::Unknown,
    }
}

impl LocalFiles {
    /// The cache under `prefix` of a store whose root directory is `root`.
    pub(crate) fn new(root: PathBuf, prefix: &Path) -> LocalFiles {
        let mut base = root;
        for part in prefix.parts() {
            base.push(part.as_ref());
        }
        LocalFiles {
            base,
            prefix: prefix.clone(),
        }
    }

    /// The names of `location` below the prefix.
    fn below(&self, location: &Path) -> Option<Vec<String>> {
        location
            .prefix_match(&self.prefix)
            .map(|parts| parts.map(|p| p.as_ref().to_owned()).collect())
    }

    /// The file of `location` (which must be under the prefix).
    #[cfg(test)]
    pub(crate) fn file(&self, location: &Path) -> Option<PathBuf> {
        let mut path = self.base.clone();
        for part in self.below(location)? {
            path.push(part);
        }
        Some(path)
    }

    /// What stands at `location`, looked at on a blocking thread.
    pub(crate) async fn standing(&self, location: &Path) -> Standing {
        let Some(parts) = self.below(location) else {
            return Standing::Other {
                why: "it is outside the cache's prefix".into(),
                in_folder: true,
            };
        };
        let base = self.base.clone();
        tokio::task::spawn_blocking(move || stand(&base, &parts))
            .await
            .unwrap_or(Standing::Unknown)
    }

    /// The regular files under `root` (the prefix or a folder below it),
    /// found without going through any link. Names that are not valid
    /// object names, and the staging files of unfinished writes, are left
    /// out.
    pub(crate) fn list(&self, root: &Path) -> BoxStream<'static, io::Result<Listed>> {
        let Some(parts) = self.below(root) else {
            return futures::stream::empty().boxed();
        };
        let walk = Walk {
            base: self.base.clone(),
            start: parts,
            prefix: self.prefix.as_ref().to_owned(),
            started: false,
            stack: Vec::new(),
        };
        futures::stream::try_unfold(
            (walk, VecDeque::new()),
            |(mut walk, mut ready): (Walk, VecDeque<io::Result<Listed>>)| async move {
                if ready.is_empty() {
                    (walk, ready) = tokio::task::spawn_blocking(move || {
                        let mut ready = VecDeque::new();
                        walk.fill(&mut ready);
                        (walk, ready)
                    })
                    .await
                    .map_err(io::Error::other)?;
                }
                match ready.pop_front() {
                    None => Ok(None),
                    Some(Ok(found)) => Ok(Some((found, (walk, ready)))),
                    Some(Err(e)) => Err(e),
                }
            },
        )
        .boxed()
    }
}

/// A depth-first walk of a directory that never follows a link.
struct Walk {
    base: PathBuf,
    start: Vec<String>,
    /// The prefix, as the start of object names.
    prefix: String,
    started: bool,
    /// Open directories: their object name and their entries.
    stack: Vec<(String, ReadDir)>,
}

/// A staging file of `LocalFileSystem` (`name#123`), not an object.
fn is_staging(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn join(folder: &str, name: &str) -> String {
    if folder.is_empty() {
        name.to_owned()
    } else {
        format!("{folder}/{name}")
    }
}

impl Walk {
    /// Opens the start directory, if it is one reached through real
    /// directories.
    fn open_start(&mut self) -> io::Result<()> {
        let mut dir = self.base.clone();
        let mut name = self.prefix.clone();
        for part in &self.start {
            dir.push(part);
            name = join(&name, part);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(_) => return Ok(()),
                Err(e) if is_missing(&e) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        match std::fs::read_dir(&dir) {
            Ok(rd) => self.stack.push((name, rd)),
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Adds up to [`LIST_BATCH`] results to `out`; none at the end.
    fn fill(&mut self, out: &mut VecDeque<io::Result<Listed>>) {
        if !self.started {
            self.started = true;
            if let Err(e) = self.open_start() {
                out.push_back(Err(e));
                return;
            }
        }
        let mut looked = 0;
        while looked < LIST_BATCH {
            let Some((folder, rd)) = self.stack.last_mut() else {
                return;
            };
            let entry = match rd.next() {
                None => {
                    self.stack.pop();
                    continue;
                }
                Some(Err(e)) => {
                    out.push_back(Err(e));
                    return;
                }
                Some(Ok(entry)) => entry,
            };
            looked += 1;
            let Ok(name) = entry.file_name().into_string() else {
                continue; // not UTF-8: not an object name
            };
            let full = join(folder, &name);
            // The type of the entry itself: a link is a link.
            let Ok(ft) = entry.file_type() else {
                continue;
            };
            if ft.is_dir() {
                match std::fs::read_dir(entry.path()) {
                    Ok(sub) => self.stack.push((full, sub)),
                    Err(e) if is_missing(&e) => {}
                    Err(e) => {
                        out.push_back(Err(e));
                        return;
                    }
                }
            } else if ft.is_file() && !is_staging(&name) {
                let Ok(location) = Path::parse(&full) else {
                    continue;
                };
                if location.as_ref() != full {
                    continue; // not the canonical form of a name
                }
                // Not following links (`DirEntry::metadata` looks at the
                // entry itself).
                let size = match entry.metadata() {
                    Ok(m) if m.file_type().is_file() => m.len(),
                    _ => continue,
                };
                out.push_back(Ok(Listed { location, size }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    fn names(found: Vec<Listed>) -> Vec<String> {
        let mut v: Vec<String> = found
            .into_iter()
            .map(|l| l.location.as_ref().to_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn file_paths_match_local_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let prefix = Path::parse("pre/fix").unwrap();
        let files = LocalFiles::new(root, &prefix);
        for name in [
            "pre/fix/a%",
            "pre/fix/%..%/x%",
            "pre/fix/a%20b%",
            "pre/fix/%25%",
            "pre/fix/ünï/日本%",
            "pre/fix/.etl-cache/long/00ff",
            "pre/fix/%2F%2F%",
        ] {
            let p = Path::parse(name).unwrap();
            assert_eq!(
                files.file(&p).unwrap(),
                store.path_to_filesystem(&p).unwrap(),
                "{name}"
            );
        }
        assert!(files.file(&Path::parse("other/x").unwrap()).is_none());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn standing_follows_no_link() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("c");
        let out = dir.path().join("out");
        std::fs::create_dir_all(base.join("d")).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("v%"), b"x").unwrap();
        std::fs::write(base.join("d/f%"), b"x").unwrap();
        std::os::unix::fs::symlink(out.join("v%"), base.join("link%")).unwrap();
        std::os::unix::fs::symlink(&out, base.join("ld")).unwrap();
        std::fs::create_dir(base.join("dir%")).unwrap();
        std::fs::write(base.join("plain"), b"x").unwrap();
        let files = LocalFiles::new(dir.path().to_path_buf(), &Path::parse("c").unwrap());
        let at = |s: &str| Path::parse(format!("c/{s}")).unwrap();
        assert_eq!(files.standing(&at("d/f%")).await, Standing::File);
        assert_eq!(files.standing(&at("nope%")).await, Standing::Missing);
        assert_eq!(files.standing(&at("plain/x%")).await, Standing::Missing);
        assert!(matches!(
            files.standing(&at("link%")).await,
            Standing::Other { in_folder: false, ref why } if why.contains("symbolic link")
        ));
        assert!(matches!(
            files.standing(&at("ld/v%")).await,
            Standing::Other { in_folder: true, ref why } if why.contains("\"ld\"")
        ));
        assert!(matches!(
            files.standing(&at("dir%")).await,
            Standing::Other { in_folder: false, ref why } if why.contains("directory")
        ));

        // The listing sees regular files only, and never goes through `ld`.
        let found: Vec<Listed> = files
            .list(&Path::parse("c").unwrap())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(names(found), ["c/d/f%", "c/plain"]);
        let found: Vec<Listed> = files
            .list(&Path::parse("c/ld").unwrap())
            .try_collect()
            .await
            .unwrap();
        assert!(found.is_empty(), "a listing started at a link is empty");
        let found: Vec<Listed> = files
            .list(&Path::parse("c/d").unwrap())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(names(found), ["c/d/f%"]);
    }

    #[test]
    fn staging_names() {
        assert!(is_staging("a%#1"));
        assert!(is_staging("x#123"));
        assert!(!is_staging("x#"));
        assert!(!is_staging("x#1a"));
        assert!(!is_staging("x%"));
    }

    #[tokio::test]
    async fn long_listings_come_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let n = LIST_BATCH * 2 + 7;
        for i in 0..n {
            let sub = dir.path().join(format!("p/{}", i % 3));
            std::fs::create_dir_all(&sub).unwrap();
            std::fs::write(sub.join(format!("f{i}%")), b"abcd").unwrap();
        }
        let files = LocalFiles::new(dir.path().to_path_buf(), &Path::parse("p").unwrap());
        let found: Vec<Listed> = files
            .list(&Path::parse("p").unwrap())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(found.len(), n);
        assert!(found.iter().all(|l| l.size == 4));
    }
}
