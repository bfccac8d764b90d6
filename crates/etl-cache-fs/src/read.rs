//! Reads: one blocking call opens, checks and reads an entry, or opens one
//! for a stream (whose reading threads are in `stream.rs`; ranges are read
//! in `range.rs`, the bytes checked by `check.rs`).

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use etl_cache_core::backend::Counters;
use etl_cache_core::backend::blocks::read_payload_at;
use etl_cache_core::backend::format::{
    HEADER_FIXED_LEN, Header, MAX_HEADER_LEN, TRAILER_LEN, Trailer,
};
use etl_cache_core::{EntryMeta, Error, Result};

use crate::check::{CheckError, Decode, Framing, check_whole_file, invalid, same_trailer};
use crate::dirs::How;
use crate::fault::Point;
use crate::inner::Inner;
use crate::look::Look;
use crate::sys;
use crate::usage::{UsageError, Wait};

/// Entries up to this size are read with one `read` call.
const SMALL_ENTRY: u64 = 64 * 1024;

/// What [`Inner::parse_entry`] found in an entry file's header: its
/// metadata, framing, header length, and the whole file when it was read.
pub(crate) type Parsed = (EntryMeta, Framing, u64, Option<Vec<u8>>);

/// An entry file opened and checked (header, trailer, sizes, key).
pub(crate) struct Opened {
    pub file: File,
    pub meta: EntryMeta,
    pub framing: Framing,
    pub header_len: u64,
    /// The file's identity, when it was stat'ed (see [`Opened::id`]).
    pub known_id: Option<(u64, u64)>,
    pub mtime: Option<SystemTime>,
    /// The whole file, when it was small enough to read at once.
    pub whole: Option<Vec<u8>>,
    /// The stored bytes, checked, when the whole file was read and checked
    /// before a stream of it started (see [`Inner::open_stream`]).
    pub checked: Option<Bytes>,
}

impl Opened {
    /// An entry file just opened and parsed by [`Inner::parse_entry`]: not
    /// stat'ed, not checked yet.
    fn parsed(file: File, (meta, framing, header_len, whole): Parsed) -> Opened {
        Opened {
            file,
            meta,
            framing,
            header_len,
            known_id: None,
            mtime: None,
            whole,
            checked: None,
        }
    }

    /// The file's identity (device, inode), to remove it only if it is still
    /// the entry. Small reads skip the stat; it is made here when needed.
    pub(crate) fn id(&self) -> (u64, u64) {
        self.known_id.unwrap_or_else(|| {
            self.file
                .metadata()
                .map(|m| sys::file_id(&m))
                .unwrap_or_default()
        })
    }
}

/// Small entries are read with one `read` into a buffer of this size, with no
/// stat first; a read that fills it takes the general path.
const FAST_READ: usize = 32 * 1024;

thread_local! {
    static FAST_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Whether `e` is [`Inner::busy`]'s error: a lock timeout after no wait at
/// all, which only a caller that may not wait gets.
pub(crate) fn is_busy(e: &Error) -> bool {
    matches!(e, Error::LockTimeout { waited, .. } if waited.is_zero())
}

/// What looking at an entry file found.
pub(crate) enum Found {
    Missing,
    Live(Box<Opened>),
    Expired(Box<Opened>),
}

impl Inner {
    /// The error of a read on an async thread that would have to wait for
    /// the counters to remove an entry (see [`crate::look::Removal::Busy`]); its caller
    /// does the read again on a blocking thread (see [`is_busy`]).
    pub(crate) fn busy(&self, key: &str) -> Error {
        self.usage_error(
            Some(key),
            "remove an expired or corrupt entry",
            UsageError::Busy,
        )
    }

    pub(crate) fn corrupt(&self, key: &str, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            key: Error::display_key(key),
            reason: reason.into(),
        }
    }

    /// Opens the entry at `path` and checks its framing. `key` is the key the
    /// caller expects, or `None` when listing (then the file name must match
    /// the key in the header). A file that fails the checks is removed and
    /// reported as `Err(Corrupt)`.
    pub(crate) fn open_entry(
        &self,
        key: Option<&str>,
        hash: &str,
        path: &Path,
        want_whole: bool,
        wait: Wait,
    ) -> Result<Found> {
        let shown = key.unwrap_or(hash);
        // A read that fails its checks looks again when the file at the path
        // turns out not to be bad (replaced meanwhile, or recycled under the
        // read: see `spare`).
        self.look_again(shown, || {
            let file = match self.dirs.open_entry(hash, How::Read) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Ok(Look::Done(Found::Missing));
                }
                Err(e) if is_symlink_error(&e) => {
                    self.remove_foreign(path);
                    return Err(self.corrupt(
                        shown,
                        "a symbolic link stood in place of the entry; it was removed",
                    ));
                }
                Err(e) => return Err(self.io(shown, path, "open the entry")(e)),
            };
            // A small entry (every inline get) is read whole at once, without
            // a stat: one system call less on the hottest path. Recency then
            // needs no mtime (`touch_interval` zero). Anything unusual (a file
            // too short to be an entry or too long for the buffer, a failed
            // check) takes the general path, which stats the file and decides.
            let file = if want_whole && self.config.touch_interval.is_zero() {
                self.fault(Point::Read)
                    .map_err(self.io(shown, path, "read the entry"))?;
                match self.open_small(key, hash, file) {
                    Ok(opened) => return Ok(Look::Done(self.found(opened))),
                    Err(file) => file,
                }
            } else {
                file
            };
            let m = file
                .metadata()
                .map_err(self.io(shown, path, "stat the entry"))?;
            let id = sys::file_id(&m);
            if !m.is_file() {
                self.remove_foreign(path);
                return Err(self.corrupt(
                    shown,
                    "something other than a file stood in place of the entry; it was removed",
                ));
            }
            match self.check_entry(key, hash, file, m.len(), want_whole) {
                Ok(mut opened) => {
                    opened.known_id = Some(id);
                    opened.mtime = m.modified().ok();
                    Ok(Look::Done(self.found(opened)))
                }
                Err((CheckError::Io(e), _)) => Err(self.io(shown, path, "read the entry")(e)),
                Err((CheckError::Corrupt(reason), file)) => {
                    // `file` stays open until the removal is decided: its
                    // inode number cannot be given to a newer entry meanwhile.
                    let judged = self.corrupt_unless_changed(key, hash, id, reason, wait);
                    drop(file);
                    judged.map(|()| Look::Again)
                }
            }
        })
    }

    fn check_entry(
        &self,
        key: Option<&str>,
        hash: &str,
        file: File,
        len: u64,
        want_whole: bool,
    ) -> std::result::Result<Opened, (CheckError, File)> {
        if len < (HEADER_FIXED_LEN + 4 + TRAILER_LEN) as u64 {
            return Err((
                CheckError::Corrupt(format!("entry is truncated ({len} bytes)")),
                file,
            ));
        }
        if let Err(e) = self.fault(Point::Read) {
            return Err((CheckError::Io(e), file));
        }
        let whole = if want_whole && len <= SMALL_ENTRY {
            let mut buf = vec![0u8; len as usize];
            if let Err(e) = sys::read_exact_at(&file, &mut buf, 0) {
                return Err((CheckError::read(e), file));
            }
            Some(buf)
        } else {
            None
        };
        match self.parse_entry(key, hash, &file, len, whole) {
            Ok(parsed) => Ok(Opened::parsed(file, parsed)),
            Err(e) => Err((e, file)),
        }
    }

    /// Reads a small entry whole with one `read` and checks it; gives the
    /// file back when that is not enough to decide.
    fn open_small(
        &self,
        key: Option<&str>,
        hash: &str,
        file: File,
    ) -> std::result::Result<Opened, File> {
        let whole = FAST_BUF.with_borrow_mut(|buf| {
            buf.resize(FAST_READ, 0);
            let n = (&file).read(buf).ok()?;
            (HEADER_FIXED_LEN + 4 + TRAILER_LEN..FAST_READ)
                .contains(&n)
                .then(|| buf[..n].to_vec())
        });
        let Some(w) = whole else {
            return Err(file);
        };
        // A failed check is left to the general path, which stats the file
        // and decides (and removes a corrupt one).
        match self.parse_entry(key, hash, &file, w.len() as u64, Some(w)) {
            Ok(parsed) => Ok(Opened::parsed(file, parsed)),
            Err(_) => Err(file),
        }
    }

    fn found(&self, opened: Opened) -> Found {
        if opened.meta.is_expired(self.config.clock.now()) {
            Found::Expired(Box::new(opened))
        } else {
            Found::Live(Box::new(opened))
        }
    }

    /// Checks the framing of an entry of `len` bytes (either format), from
    /// `whole` when it was read whole, else by reading its header and
    /// trailer.
    #[allow(clippy::type_complexity)]
    pub(crate) fn parse_entry(
        &self,
        key: Option<&str>,
        hash: &str,
        file: &File,
        len: u64,
        whole: Option<Vec<u8>>,
    ) -> std::result::Result<Parsed, CheckError> {
        let head_buf;
        let head: &[u8] = match &whole {
            Some(w) => w,
            None => {
                let n = len.min(MAX_HEADER_LEN as u64) as usize;
                let mut b = vec![0u8; n];
                sys::read_exact_at(file, &mut b, 0).map_err(CheckError::read)?;
                head_buf = b;
                &head_buf
            }
        };
        let decoded = Header::decode_any(head).map_err(|e| CheckError::Corrupt(invalid(e)))?;
        match key {
            Some(k) if decoded.header.key != k => {
                return Err(CheckError::Corrupt(
                    "the entry file holds another key".into(),
                ));
            }
            None if crate::layout::key_hash(&decoded.header.key) != hash => {
                return Err(CheckError::Corrupt(
                    "the entry file name does not match its key".into(),
                ));
            }
            _ => {}
        }
        let mut tbuf = [0u8; TRAILER_LEN];
        match &whole {
            Some(w) => tbuf.copy_from_slice(&w[w.len() - TRAILER_LEN..]),
            None => sys::read_exact_at(file, &mut tbuf, len - TRAILER_LEN as u64)
                .map_err(CheckError::read)?,
        }
        let trailer = Trailer::decode(&tbuf).map_err(|e| CheckError::Corrupt(invalid(e)))?;
        let framing = Framing {
            header_crc: decoded.crc,
            layout: decoded.layout,
            trailer,
        };
        let header_len = decoded.len as u64;
        // Checks that the trailer belongs to the header and that the file's
        // size is what they say (in format 2, with a checksum per block).
        let meta = EntryMeta::from_decoded_parts(decoded, trailer, len)
            .map_err(|e| CheckError::Corrupt(invalid(e)))?;
        Ok((meta, framing, header_len, whole))
    }

    /// Refreshes the entry's recency (its mtime).
    pub(crate) fn touch(&self, opened: &Opened) {
        let now = SystemTime::now();
        let fresh = opened
            .mtime
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age < self.config.touch_interval);
        if !fresh {
            // The descriptor is read-only; futimens only needs ownership.
            let _ = opened.file.set_modified(now);
        }
    }

    /// Looks up a live entry: expired ones are removed and read as `None`.
    /// `count` says whether the read counts as a hit or a miss in the stats.
    pub(crate) fn lookup(
        &self,
        key: &str,
        hash: &str,
        want_whole: bool,
        count: bool,
        wait: Wait,
    ) -> Result<Option<Box<Opened>>> {
        let path = self.layout.entry_path(hash);
        let bump = |c| {
            if count {
                Counters::bump(c)
            }
        };
        self.look_again(key, || {
            Ok(
                match self.open_entry(Some(key), hash, &path, want_whole, wait)? {
                    Found::Missing => {
                        bump(&self.counters.misses);
                        Look::Done(None)
                    }
                    Found::Expired(o) => {
                        let seen = self.expired_unless_changed(key, hash, o.id(), wait)?;
                        if let Look::Done(()) = seen {
                            bump(&self.counters.misses);
                        }
                        seen.map(|()| None)
                    }
                    Found::Live(o) => {
                        bump(&self.counters.hits);
                        self.touch(&o);
                        Look::Done(Some(o))
                    }
                },
            )
        })
    }

    /// Reads and verifies a whole entry, turned into a [`Value`] or its
    /// logical bytes by `decode` ([`Decode`]). Runs on a blocking thread.
    pub(crate) fn read_value<T>(
        &self,
        key: &str,
        hash: &str,
        count: bool,
        decode: Decode<T>,
    ) -> Result<Option<(EntryMeta, T)>> {
        self.look_again(key, || {
            let Some(o) = self.lookup(key, hash, true, count, Wait::Timeout)? else {
                return Ok(Look::Done(None));
            };
            let found = self.finish_value(key, hash, *o, Wait::Timeout, decode)?;
            Ok(Look::or_again(found.map(Some)))
        })
    }

    /// Looks up an entry to stream. A small one is read whole and checked
    /// (every block, or a format 1 entry's one checksum) before the stream
    /// starts, so a file recycled under the read (see `spare`) is looked at
    /// again rather than half sent, and no byte is handed out unchecked.
    pub(crate) fn open_stream(
        &self,
        key: &str,
        hash: &str,
        wait: Wait,
    ) -> Result<Option<Box<Opened>>> {
        self.look_again(key, || {
            let Some(mut o) = self.lookup(key, hash, true, true, wait)? else {
                return Ok(Look::Done(None));
            };
            let Some(w) = o.whole.take() else {
                return Ok(Look::Done(Some(o)));
            };
            match check_whole_file(&o.framing, w, o.header_len) {
                Ok(stored) => {
                    o.checked = Some(stored);
                    Ok(Look::Done(Some(o)))
                }
                Err(reason) => {
                    self.corrupt_unless_changed(Some(key), hash, o.id(), reason, wait)?;
                    Ok(Look::Again)
                }
            }
        })
    }

    /// Whether an opened entry can be finished on an async thread: it was read
    /// whole and is small.
    pub(crate) fn finishes_inline(&self, o: &Opened) -> bool {
        o.whole.is_some() && o.meta.logical_len <= self.config.inline_io_max
    }

    /// Reads (unless read whole already), verifies and decodes an opened
    /// entry. `None` when it failed its checks but the file at the entry's
    /// path is not bad: the caller looks again (see `remove_if_bad`).
    pub(crate) fn finish_value<T>(
        &self,
        key: &str,
        hash: &str,
        o: Opened,
        wait: Wait,
        decode: Decode<T>,
    ) -> Result<Option<(EntryMeta, T)>> {
        self.finish_with(key, hash, o, wait, decode)
    }

    /// [`Inner::finish_value`] with `decode` turning the checked stored
    /// bytes into what the caller wants.
    pub(crate) fn finish_with<T>(
        &self,
        key: &str,
        hash: &str,
        mut o: Opened,
        wait: Wait,
        decode: impl FnOnce(&EntryMeta, Bytes) -> std::result::Result<T, String>,
    ) -> Result<Option<(EntryMeta, T)>> {
        let path = self.layout.entry_path(hash);
        let stored = match o.whole.take() {
            Some(w) => check_whole_file(&o.framing, w, o.header_len),
            // Read by position, each block straight to its place.
            None => read_payload_at(
                o.framing.layout,
                o.framing.header_crc,
                o.meta.size - o.header_len,
                |buf, at| sys::read_exact_at(&o.file, buf, o.header_len + at),
            )
            .map_err(self.io(key, &path, "read the entry"))?
            .map_err(|e| e.to_string())
            .and_then(|found| same_trailer(&o.framing, found)),
        };
        match stored.and_then(|stored| decode(&o.meta, stored)) {
            Ok(v) => Ok(Some((o.meta, v))),
            Err(reason) => {
                self.corrupt_unless_changed(Some(key), hash, o.id(), reason, wait)?;
                Ok(None)
            }
        }
    }

    /// Reads the entry at `path` for listing and sweeps: its metadata, its
    /// identity and the open file (kept open while a sweep decides, so its
    /// identity cannot pass to a newer file), or `None` when missing,
    /// foreign or corrupt (corrupt ones are removed).
    pub(crate) fn peek(&self, hash: &str, path: &Path) -> Option<(EntryMeta, (u64, u64), File)> {
        match self.open_entry(None, hash, path, false, Wait::Timeout) {
            Ok(Found::Live(o)) | Ok(Found::Expired(o)) => {
                let id = o.id();
                Some((o.meta, id, o.file))
            }
            Ok(Found::Missing) => None,
            Err(e) => {
                tracing::warn!(error = %e, "skipping an unreadable entry");
                None
            }
        }
    }

    /// Every entry file: its hash and path.
    pub(crate) fn entry_files(&self) -> impl Iterator<Item = (String, PathBuf)> + '_ {
        (0..=255u8).flat_map(|b| {
            let dir = match self.dirs.fanout_dir(&format!("{b:02x}")) {
                Ok(dir) => dir,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a fan-out directory");
                    return Vec::new();
                }
            };
            let names: Vec<(String, PathBuf)> = match dir.names() {
                Ok(names) => names
                    .into_iter()
                    .filter_map(|name| {
                        let name = name.into_string().ok()?;
                        crate::layout::is_entry_name(&name).then(|| {
                            let path = dir.path().join(&name);
                            (name, path)
                        })
                    })
                    .collect(),
                Err(_) => Vec::new(),
            };
            names
        })
    }
}

#[cfg(unix)]
fn is_symlink_error(e: &io::Error) -> bool {
    crate::sys::is_errno(e, &[rustix::io::Errno::LOOP])
}

#[cfg(not(unix))]
fn is_symlink_error(_e: &io::Error) -> bool {
    false
}
