//! Helpers shared by the DiskCache integration tests: where the cache keeps
//! things on disk (the documented layout) and how to look at them directly.

#![allow(dead_code)] // each test crate uses its own subset

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

/// `<root>/etl-cache-v1/entries/<first 2 hex>/<sha256 hex>`.
pub fn entry_path(root: &Path, key: &str) -> PathBuf {
    let h = key_hash(key);
    base(root).join("entries").join(&h[..2]).join(&h)
}

/// `<root>/etl-cache-v1/locks/<sha256 hex>.lock`.
pub fn lock_path(root: &Path, key: &str) -> PathBuf {
    base(root)
        .join("locks")
        .join(format!("{}.lock", key_hash(key)))
}

pub fn tmp_dir(root: &Path) -> PathBuf {
    base(root).join("tmp")
}

pub fn locks_dir(root: &Path) -> PathBuf {
    base(root).join("locks")
}

pub fn usage_file(root: &Path) -> PathBuf {
    base(root).join("usage")
}

/// Every directory entry directly in `dir` (empty if `dir` is missing).
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    match fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Every file under `<root>/etl-cache-v1/entries/*/`, with its size.
pub fn entry_files(root: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for dir in files_in(&base(root).join("entries")) {
        for f in files_in(&dir) {
            let m = fs::symlink_metadata(&f).unwrap();
            out.push((f, m.len()));
        }
    }
    out
}

/// Number of entry files on disk and their total size.
pub fn disk_usage(root: &Path) -> (u64, u64) {
    let files = entry_files(root);
    (files.len() as u64, files.iter().map(|(_, n)| n).sum())
}
