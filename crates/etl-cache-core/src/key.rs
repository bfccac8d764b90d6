//! Key rules.

use crate::{Error, Result};

/// The longest key accepted, in bytes of UTF-8.
///
/// 1024 bytes is the object key limit of S3 and GCS. Every backend accepts
/// every key valid here: the object backend stores a key that does not fit
/// beside its prefix under a name derived from its hash, and keeps the key
/// itself in the entry.
pub const MAX_KEY_LEN: usize = 1024;

/// Checks a key against the rules every backend shares: non-empty, at most
/// [`MAX_KEY_LEN`] bytes, no NUL character. Keys are never rewritten to fit.
///
/// # Errors
///
/// [`Error::InvalidKey`] naming the rule that is broken.
///
/// ```
/// use etl_cache_core::validate_key;
/// assert!(validate_key("reports/2026-11-28.xml").is_ok());
/// assert!(validate_key("").is_err());
/// assert!(validate_key("a\0b").is_err());
/// ```
pub fn validate_key(key: &str) -> Result<()> {
    let reason = if key.is_empty() {
        "a key must not be empty"
    } else if key.len() > MAX_KEY_LEN {
        "a key must be at most 1024 bytes of UTF-8"
    } else if key.contains('\0') {
        "a key must not contain a NUL character"
    } else {
        return Ok(());
    };
    Err(Error::InvalidKey {
        key: Error::display_key(key),
        reason,
    })
}
