//! The one error type of the contract.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::Kind;

/// The result type of every cache operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a cache operation.
///
/// A miss is never an error: lookups return `Ok(None)`. Each variant names the
/// key (and the path or backend where there is one) so that a log line is
/// enough to find the entry.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use etl_cache_core::{Cache, Error, MemoryCache, SetOptions};
///
/// let cache = MemoryCache::new();
/// // An empty key is refused before anything is stored; the error says why.
/// match cache.set("", "value".into(), SetOptions::new()).await {
///     Err(e @ Error::InvalidKey { .. }) => {
///         assert!(e.to_string().contains("must not be empty"), "{e}");
///         eprintln!("refused: {e}");
///     }
///     other => panic!("expected InvalidKey, got {other:?}"),
/// }
/// // A miss is not an error.
/// assert!(matches!(cache.get("absent").await, Ok(None)));
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key breaks the key rules (see [`crate::validate_key`]).
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key, shortened to 80 characters for display.
        key: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// An argument or a configuration value is out of range.
    #[error("invalid input: {message}")]
    InvalidInput {
        /// What is wrong and what is accepted.
        message: String,
    },

    /// The entry is larger than the cache may hold.
    #[error(
        "entry {key:?} is too large: {size} bytes stored, the cache holds at most {limit} bytes"
    )]
    TooLarge {
        /// The key being written.
        key: String,
        /// Bytes the entry needs (at least; a stream is stopped as soon as it passes the limit).
        size: u64,
        /// The configured limit.
        limit: u64,
    },

    /// Another worker held the key's lock for longer than the lock timeout.
    #[error(
        "timed out after {waited:?} waiting for the lock on key {key:?}; another worker holds it"
    )]
    LockTimeout {
        /// The key whose lock was wanted.
        key: String,
        /// How long this call waited.
        waited: Duration,
    },

    /// The stored entry failed an integrity check. It has been removed; the
    /// bytes were not returned.
    #[error("entry {key:?} is corrupt and was removed: {reason}")]
    Corrupt {
        /// The key of the entry.
        key: String,
        /// What check failed.
        reason: String,
    },

    /// A typed read asked for a kind the entry does not hold.
    #[error("entry {key:?} holds {found} but {expected} was asked for")]
    KindMismatch {
        /// The key of the entry.
        key: String,
        /// The kind the call expected.
        expected: Kind,
        /// The kind stored with the entry.
        found: Kind,
    },

    /// A value could not be converted to or from JSON.
    #[error("JSON conversion failed for key {key:?}: {source}")]
    Json {
        /// The key of the entry.
        key: String,
        /// The serde error.
        source: serde_json::Error,
    },

    /// The stream handed to `set_stream` failed; nothing was published.
    #[error("the input stream for key {key:?} failed; the previous value is intact: {source}")]
    Stream {
        /// The key being written.
        key: String,
        /// The error the stream yielded.
        source: io::Error,
    },

    /// A filesystem operation failed.
    #[error("I/O error on {path} (key {key:?}) while trying to {op}: {source}")]
    Io {
        /// The key concerned, or empty for cache-wide operations.
        key: String,
        /// The file or directory concerned.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },

    /// The cache could not be opened with the given configuration.
    #[error("cannot open cache at {location}: {message}")]
    Open {
        /// The root directory or URL.
        location: String,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// The computation handed to `get_or_insert_with` failed; nothing was stored.
    #[error("computing the value for key {key:?} failed: {source}")]
    Init {
        /// The key being computed.
        key: String,
        /// The computation's error (downcast it to get yours back).
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// A backend (an object store, a lower tier) failed.
    #[error("{backend} backend failed for key {key:?}: {source}")]
    Backend {
        /// Which backend, for example `"s3"`.
        backend: &'static str,
        /// The key concerned, or empty for cache-wide operations.
        key: String,
        /// The backend's error.
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl Error {
    /// Shortens a key for display inside an error.
    pub fn display_key(key: &str) -> String {
        if key.len() <= 200 {
            return key.to_owned();
        }
        let mut end = 200;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &key[..end])
    }

    /// The key this error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            Error::InvalidKey { key, .. }
            | Error::TooLarge { key, .. }
            | Error::LockTimeout { key, .. }
            | Error::Corrupt { key, .. }
            | Error::KindMismatch { key, .. }
            | Error::Json { key, .. }
            | Error::Stream { key, .. }
            | Error::Io { key, .. }
            | Error::Init { key, .. }
            | Error::Backend { key, .. } => (!key.is_empty()).then_some(key.as_str()),
            Error::InvalidInput { .. } | Error::Open { .. } => None,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Io { source, .. } | Error::Stream { source, .. } => source.kind(),
            Error::Corrupt { .. } => io::ErrorKind::InvalidData,
            Error::InvalidKey { .. } | Error::InvalidInput { .. } => io::ErrorKind::InvalidInput,
            Error::LockTimeout { .. } => io::ErrorKind::TimedOut,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}
