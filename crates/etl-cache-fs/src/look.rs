//! The look-again protocol of reads. A read whose file failed its checks
//! or had expired removes the entry only if the file at its path is still
//! what it read (see [`Inner::remove_if_bad`]); when it is not (replaced
//! meanwhile, or a small file recycled under the read: see `spare`), the
//! read looks again, at most [`LOOKS`] times. Every read loop runs through
//! [`Inner::look_again`].
//!
//! The protocol holds with file recycling off too: an entry replaced by a
//! set between a read's open and its removal is a newer value to read, not
//! a bad file to remove. Recycling only makes the check of a small file
//! read its bytes again (a recycled file keeps its inode number); its own
//! code is in `spare`.

use std::io::Read;

use etl_cache_core::Result;
use etl_cache_core::backend::Counters;
use etl_cache_core::backend::format::{HEADER_FIXED_LEN, TRAILER_LEN};

use crate::check::{CheckError, check_whole_file, decode_stored};
use crate::dirs::{How, Meta};
use crate::inner::Inner;
use crate::remove::{Bad, RemoveError};
use crate::spare::SPARE_MAX;
use crate::usage::{UsageError, Wait};

/// How many times a read looks again at an entry that changed under it
/// (see `remove_if_bad`) before giving up.
const LOOKS: usize = 16;

/// The reason given when that many looks all failed.
const CHANGING: &str = "the entry kept changing while it was read";

/// What became of an entry a read found expired or corrupt.
#[derive(Debug)]
pub(crate) enum Removal {
    /// Removed.
    Removed,
    /// The file at the entry's path is not (or no longer) bad, or is gone:
    /// another write replaced it, or recycled the file the read saw. The
    /// reader looks again.
    Changed,
    /// It could not be removed (logged); the read's verdict stands.
    Failed,
    /// Removing it needs the counters, which another process holds, and the
    /// caller may not wait (a read on an async thread, see `Wait::Spin`):
    /// it does the read again on a blocking thread.
    Busy,
}

/// What one look of a read came to.
#[derive(Debug)]
pub(crate) enum Look<T> {
    /// The read's answer.
    Done(T),
    /// The entry changed under the read: look again.
    Again,
}

impl<T> Look<T> {
    /// `Again` for `None`, the convention of the `finish_*` reads.
    pub(crate) fn or_again(found: Option<T>) -> Look<T> {
        found.map_or(Look::Again, Look::Done)
    }

    /// The answer turned into another, or `Again` still.
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Look<U> {
        match self {
            Look::Done(v) => Look::Done(f(v)),
            Look::Again => Look::Again,
        }
    }
}

impl Inner {
    /// Runs `look` until it is done, at most [`LOOKS`] times; then the
    /// entry kept changing, and the read fails as corrupt ([`CHANGING`],
    /// naming `shown`).
    pub(crate) fn look_again<T>(
        &self,
        shown: &str,
        mut look: impl FnMut() -> Result<Look<T>>,
    ) -> Result<T> {
        for _ in 0..LOOKS {
            if let Look::Done(v) = look()? {
                return Ok(v);
            }
        }
        Err(self.corrupt(shown, CHANGING))
    }

    /// Removes the entry `hash` that a read found `why` (expired or
    /// corrupt; `id` is the file it read), if the file at its path still is:
    /// the same file, when it is too large to be recycled, else whatever
    /// file stands there once read again with the counters held (a small
    /// file can be written again after a set replaced it, see `spare`, and
    /// come back to the same path with another value). `key` is the key the
    /// reader expected (`None` when listing).
    ///
    /// [`Removal::Changed`] tells the reader to look again. A failure is
    /// logged (the read's answer does not depend on it, and the next read
    /// tries again). Never waits for a key's lock, so reads may run this on
    /// an async thread: the check and the removal run with the counters held
    /// exclusively, as every publication does (see [`Inner::remove_entry`]),
    /// which other processes hold for microseconds at a time (a hung holder
    /// is waited for no longer than the lock timeout).
    pub(crate) fn remove_if_bad(
        &self,
        key: Option<&str>,
        hash: &str,
        id: (u64, u64),
        why: Bad,
        wait: Wait,
    ) -> Removal {
        let still = |m: &Meta| self.still_bad(key, hash, m, id, why);
        match self.remove_entry(hash, still, why.cause(), None, wait) {
            Ok(Some(_)) => Removal::Removed,
            Ok(None) => Removal::Changed,
            Err(RemoveError::Usage(UsageError::Busy)) => Removal::Busy,
            Err(e) => {
                let shown = key.unwrap_or(hash);
                let e = self.remove_error(Some(shown), e);
                tracing::warn!(key = shown, error = %e, "could not remove an expired or corrupt entry");
                Removal::Failed
            }
        }
    }

    /// Whether the file at the entry's path (`m`, with the counters held) is
    /// still what a read found (see [`Inner::remove_if_bad`]). The caller
    /// keeps the file it read (`id`) open until this is decided: then no
    /// other file can have its inode number, and a file too large to be
    /// recycled is the one read exactly when its identity matches.
    pub(crate) fn still_bad(
        &self,
        key: Option<&str>,
        hash: &str,
        m: &Meta,
        id: (u64, u64),
        why: Bad,
    ) -> bool {
        if m.len > SPARE_MAX {
            return m.id == id;
        }
        let mut buf = Vec::with_capacity(m.len as usize);
        let Ok(file) = self.dirs.open_entry(hash, How::Read) else {
            return false;
        };
        if (&file).take(SPARE_MAX + 1).read_to_end(&mut buf).is_err() {
            return false;
        }
        if buf.len() < HEADER_FIXED_LEN + 4 + TRAILER_LEN {
            return true;
        }
        let len = buf.len() as u64;
        match self.parse_entry(key, hash, &file, len, Some(buf)) {
            Err(CheckError::Corrupt(_)) => true,
            Err(CheckError::Io(_)) => false,
            Ok((meta, framing, header_len, whole)) => match why {
                Bad::Expired => meta.is_expired(self.config.clock.now()),
                Bad::Corrupt => check_whole_file(&framing, whole.expect("read whole"), header_len)
                    .and_then(|stored| decode_stored(&meta, stored))
                    .is_err(),
            },
        }
    }

    /// After a read found the entry corrupt (`reason`; `id` is the file it
    /// read, still open): removes it if the file at its path is still that
    /// one and bad, and fails the read as corrupt; `Ok(())` when the entry
    /// changed meanwhile and the caller looks again. `key` as for
    /// [`Inner::remove_if_bad`].
    pub(crate) fn corrupt_unless_changed(
        &self,
        key: Option<&str>,
        hash: &str,
        id: (u64, u64),
        reason: String,
        wait: Wait,
    ) -> Result<()> {
        let shown = key.unwrap_or(hash);
        match self.remove_if_bad(key, hash, id, Bad::Corrupt, wait) {
            Removal::Changed => Ok(()),
            Removal::Busy => Err(self.busy(shown)),
            Removal::Removed | Removal::Failed => Err(self.corrupt(shown, reason)),
        }
    }

    /// After a read found the entry of `key` expired (`id` as above):
    /// removes it if the file at its path still is that one and expired,
    /// and reports the expiry (`Done`); `Again` when the entry changed
    /// meanwhile.
    pub(crate) fn expired_unless_changed(
        &self,
        key: &str,
        hash: &str,
        id: (u64, u64),
        wait: Wait,
    ) -> Result<Look<()>> {
        let removal = match self.remove_if_bad(Some(key), hash, id, Bad::Expired, wait) {
            Removal::Changed => return Ok(Look::Again),
            Removal::Busy => return Err(self.busy(key)),
            removal => removal,
        };
        etl_cache_core::backend::obs::note(etl_cache_core::backend::obs::Outcome::Expired);
        if let Removal::Removed = removal {
            Counters::bump(&self.counters.expired);
        }
        Ok(Look::Done(()))
    }
}
