//! Where things live under the cache root, and how its files are named.
//!
//! ```text
//! ROOT/                       created 0700
//!   etl-cache-v1/             one directory per layout version
//!     entries/ab/<sha256>     one file per entry (see `etl_cache_core::backend::format`)
//!     locks/<sha256>.lock     per-key lock files, present only while held
//!     tmp/<random>.tmp        writes in progress; renamed into entries/
//!     spare/<owner>.owner     one per open handle that keeps spare files,
//!                             locked while it lives
//!     spare/<owner>.<n>.spare small entry files a set replaced (Linux) or
//!                             eviction removed, kept by that handle to be
//!                             written again by its next sets (see `spare`)
//!     usage                   shared counters: entries, bytes, next journal record (24 bytes)
//!     journal                 the last 4,096 removals and why (see `journal`)
//!     evict.lock              held by the one process scanning for victims
//!     users.lock              shared by every open handle
//! ```
//!
//! File names are the lowercase hex SHA-256 of the key, so no key can name a
//! path outside the root; the key itself is kept in the entry header for
//! listing. `ab` is the first two hex digits, which spreads a million entries
//! over 256 directories.
//!
//! These paths name files in errors and logs; the files themselves are
//! reached relative to directories the handle keeps open (see `dirs`).

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

/// Bump when an older release could misread the directory.
pub const LAYOUT_VERSION: u32 = 1;

/// Paths of one cache root.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub root: PathBuf,
    pub base: PathBuf,
    pub entries: PathBuf,
    pub locks: PathBuf,
    pub tmp: PathBuf,
    pub spare: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        let base = root.join(format!("etl-cache-v{LAYOUT_VERSION}"));
        Layout {
            root: root.to_path_buf(),
            entries: base.join("entries"),
            locks: base.join("locks"),
            tmp: base.join("tmp"),
            spare: base.join("spare"),
            base,
        }
    }

    pub fn usage_file(&self) -> PathBuf {
        self.base.join("usage")
    }

    /// The removal journal (see `journal`).
    pub fn journal_file(&self) -> PathBuf {
        self.base.join("journal")
    }

    pub fn evict_lock(&self) -> PathBuf {
        self.base.join("evict.lock")
    }

    pub fn users_lock(&self) -> PathBuf {
        self.base.join("users.lock")
    }

    pub fn entry_path(&self, hash: &str) -> PathBuf {
        self.entries.join(&hash[..2]).join(hash)
    }

    pub fn lock_path(&self, hash: &str) -> PathBuf {
        self.locks.join(format!("{hash}.lock"))
    }

    /// The 256 fan-out directories under `entries/`.
    pub fn fanout_dirs(&self) -> impl Iterator<Item = PathBuf> + '_ {
        (0..=255u8).map(|b| self.entries.join(format!("{b:02x}")))
    }
}

/// The lowercase hex SHA-256 of a key.
pub(crate) fn key_hash(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from_digit(u32::from(b >> 4), 16).expect("nibble"));
        out.push(char::from_digit(u32::from(b & 0xf), 16).expect("nibble"));
    }
    out
}

/// Whether a file name in a fan-out directory is an entry name.
pub(crate) fn is_entry_name(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A file name no other writer uses: random, then the process id, then
/// `.{ext}`.
pub(crate) fn unique_name(ext: &str) -> String {
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    // The process id is only informative (the lock tells whether a writer is
    // alive); read once, as each read is a system call.
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    format!(
        "{:016x}-{}.{ext}",
        h.finish(),
        PID.get_or_init(std::process::id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_path_is_pinned() {
        let l = Layout::new(Path::new("/r"));
        let h = key_hash("my_folder/financial_data");
        assert!(is_entry_name(&h));
        assert_eq!(
            l.entry_path(&h),
            PathBuf::from(format!("/r/etl-cache-v1/entries/{}/{h}", &h[..2]))
        );
        assert_eq!(
            key_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
