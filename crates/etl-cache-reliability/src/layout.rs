//! Where `DiskCache` keeps things, as documented in `etl-cache-fs`'s
//! `layout.rs`: the suites look at and tamper with the files directly.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The layout version directory under the root.
pub fn base(root: &Path) -> PathBuf {
    root.join("etl-cache-v1")
}

/// The lowercase hex SHA-256 of a key: the name of its entry file.
pub fn key_hash(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `ROOT/etl-cache-v1/entries`.
pub fn entries_dir(root: &Path) -> PathBuf {
    base(root).join("entries")
}

/// `ROOT/etl-cache-v1/entries/<first 2 hex>/<sha256 hex>`.
pub fn entry_path(root: &Path, key: &str) -> PathBuf {
    let h = key_hash(key);
    entries_dir(root).join(&h[..2]).join(&h)
}

/// `ROOT/etl-cache-v1/locks/<sha256 hex>.lock`.
pub fn lock_path(root: &Path, key: &str) -> PathBuf {
    locks_dir(root).join(format!("{}.lock", key_hash(key)))
}

/// `ROOT/etl-cache-v1/tmp`.
pub fn tmp_dir(root: &Path) -> PathBuf {
    base(root).join("tmp")
}

/// `ROOT/etl-cache-v1/locks`.
pub fn locks_dir(root: &Path) -> PathBuf {
    base(root).join("locks")
}

/// `ROOT/etl-cache-v1/usage`: the shared counters (entries, bytes).
pub fn usage_file(root: &Path) -> PathBuf {
    base(root).join("usage")
}

/// `ROOT/etl-cache-v1/evict.lock`.
pub fn evict_lock(root: &Path) -> PathBuf {
    base(root).join("evict.lock")
}

/// Every directory entry directly in `dir` (empty if `dir` is missing).
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Every file under `entries/*/`, with its size (symlinks not followed).
pub fn entry_files(root: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for dir in files_in(&entries_dir(root)) {
        for f in files_in(&dir) {
            if let Ok(m) = fs::symlink_metadata(&f) {
                out.push((f, m.len()));
            }
        }
    }
    out
}

/// Number of entry files on disk and their total size.
pub fn disk_usage(root: &Path) -> (u64, u64) {
    let files = entry_files(root);
    (files.len() as u64, files.iter().map(|(_, n)| n).sum())
}

/// Every path under `dir` (depth first, symlinks not followed), sorted.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for p in files_in(&d) {
            if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A snapshot of a tree: every path with its type, size, mode, mtime and
/// (for small regular files) contents; for proving nothing changed there.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, String)> {
    use std::os::unix::fs::MetadataExt;
    walk(dir)
        .into_iter()
        .map(|p| {
            let desc = match fs::symlink_metadata(&p) {
                Ok(m) => {
                    let content = if m.is_file() && m.len() < 1 << 16 {
                        fs::read(&p).map(|b| crate::payload::mix_bytes(&b)).ok()
                    } else {
                        None
                    };
                    let link = fs::read_link(&p).ok();
                    format!(
                        "type={:?} len={} mode={:o} mtime={}.{} content={content:?} link={link:?}",
                        m.file_type(),
                        m.len(),
                        m.mode(),
                        m.mtime(),
                        m.mtime_nsec()
                    )
                }
                Err(e) => format!("unreadable: {e}"),
            };
            (p, desc)
        })
        .collect()
}
