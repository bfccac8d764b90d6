//! Errors of the object store, classified and named.
//!
//! Every failure of the store reaches the caller as
//! [`etl_cache_core::Error::Backend`] whose source is an [`ObjectError`]: it
//! says which store, bucket, object and operation, and what kind of failure it
//! is, so that a missing bucket, rejected credentials, an unreachable endpoint
//! and a timeout can be told apart (and retried or reported differently).

use std::error::Error as StdError;
use std::fmt;
use std::io;

/// What kind of failure an [`ObjectError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ObjectErrorKind {
    /// The bucket (S3, GCS) or container (Azure) does not exist.
    BucketNotFound,
    /// The store rejected the credentials (unknown key, bad signature, expired token).
    Unauthenticated,
    /// The credentials are valid but may not do this.
    PermissionDenied,
    /// The endpoint could not be connected to (refused, unknown host, TLS failure).
    Unreachable,
    /// The store did not answer in time (connect, read or retry timeout).
    Timeout,
    /// The object changed while it was being read, so the rest of it cannot be
    /// fetched: the read was stopped rather than mixing two writes.
    Changed,
    /// The body of a read ended early and could not be resumed.
    Truncated,
    /// The store does not support an operation the cache needs.
    NotSupported,
    /// An object stands where the entry should be, but it was not written by
    /// the cache (no entry header), or, on a local directory, the entry's
    /// path holds something other than a regular file (a symbolic link, a
    /// FIFO, a directory) or goes through a linked folder. It is left in
    /// place.
    NotAnEntry,
    /// Any other failure of the store.
    Other,
}

impl ObjectErrorKind {
    fn describe(self) -> &'static str {
        match self {
            ObjectErrorKind::BucketNotFound => "the bucket does not exist",
            ObjectErrorKind::Unauthenticated => "the store rejected the credentials",
            ObjectErrorKind::PermissionDenied => "the credentials may not do this",
            ObjectErrorKind::Unreachable => "the endpoint cannot be reached",
            ObjectErrorKind::Timeout => "the store did not answer in time",
            ObjectErrorKind::Changed => {
                "the object changed while it was read; the rest of this version cannot be fetched"
            }
            ObjectErrorKind::Truncated => "the body ended early and could not be resumed",
            ObjectErrorKind::NotSupported => "the store does not support this operation",
            ObjectErrorKind::NotAnEntry => {
                "the object is not an etl-cache entry (no entry header, or not a regular file); \
                 it was left in place"
            }
            ObjectErrorKind::Other => "the request failed",
        }
    }
}

/// A failure of the object store, naming the store, bucket, key and object.
///
/// Find it behind a cache error with [`ObjectError::find`], or behind the
/// `io::Error` of a stream with [`ObjectError::find_io`]:
///
/// ```
/// use etl_cache_object::{ObjectError, ObjectErrorKind};
/// fn is_config_problem(e: &etl_cache_core::Error) -> bool {
///     ObjectError::find(e).is_some_and(|o| {
///         matches!(o.kind(), ObjectErrorKind::BucketNotFound | ObjectErrorKind::Unauthenticated)
///     })
/// }
/// ```
#[derive(Debug)]
pub struct ObjectError {
    pub(crate) kind: ObjectErrorKind,
    pub(crate) store: &'static str,
    pub(crate) bucket: String,
    pub(crate) key: String,
    pub(crate) path: String,
    pub(crate) op: &'static str,
    pub(crate) source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl ObjectError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ObjectErrorKind {
        self.kind
    }

    /// The store: `s3`, `azure`, `gcs`, `local`, `memory` or `object`.
    pub fn store(&self) -> &'static str {
        self.store
    }

    /// The bucket or container (the root directory for `local`).
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The cache key concerned, or empty for cache-wide operations.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The object name in the bucket.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The operation that failed, such as `get` or `upload part`.
    pub fn operation(&self) -> &'static str {
        self.op
    }

    /// The object store error behind a cache error, if it is one.
    pub fn find(e: &etl_cache_core::Error) -> Option<&ObjectError> {
        match e {
            etl_cache_core::Error::Backend { source, .. } => source.downcast_ref(),
            _ => None,
        }
    }

    /// The object store error behind an I/O error of a stream, if it is one.
    pub fn find_io(e: &io::Error) -> Option<&ObjectError> {
        let inner = e.get_ref()?;
        if let Some(o) = inner.downcast_ref::<ObjectError>() {
            return Some(o);
        }
        inner
            .downcast_ref::<etl_cache_core::Error>()
            .and_then(ObjectError::find)
    }

    /// The `io::ErrorKind` that best matches this failure.
    pub fn io_kind(&self) -> io::ErrorKind {
        match self.kind {
            ObjectErrorKind::BucketNotFound => io::ErrorKind::NotFound,
            ObjectErrorKind::Unauthenticated | ObjectErrorKind::PermissionDenied => {
                io::ErrorKind::PermissionDenied
            }
            ObjectErrorKind::Unreachable => io::ErrorKind::NotConnected,
            ObjectErrorKind::Timeout => io::ErrorKind::TimedOut,
            ObjectErrorKind::Truncated => io::ErrorKind::UnexpectedEof,
            ObjectErrorKind::Changed => io::ErrorKind::Other,
            ObjectErrorKind::NotSupported => io::ErrorKind::Unsupported,
            ObjectErrorKind::NotAnEntry => io::ErrorKind::InvalidData,
            ObjectErrorKind::Other => io::ErrorKind::Other,
        }
    }
}

impl fmt::Display for ObjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} of object {:?} in bucket {:?}",
            self.store, self.op, self.path, self.bucket
        )?;
        if !self.key.is_empty() {
            write!(
                f,
                " (key {:?})",
                etl_cache_core::Error::display_key(&self.key)
            )?;
        }
        write!(f, " failed: {}", self.kind.describe())?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl StdError for ObjectError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

/// Texts by which stores say that the bucket itself is missing (a 404 on an
/// object says nothing else).
const MISSING_BUCKET: &[&str] = &[
    "NoSuchBucket",
    "ContainerNotFound",
    "The specified bucket does not exist",
    "The specified container does not exist",
];

/// Texts by which stores say that the credentials themselves are wrong.
const BAD_CREDENTIALS: &[&str] = &[
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AuthenticationFailed",
    "InvalidClientTokenId",
    "ExpiredToken",
    "InvalidToken",
    "AuthorizationFailure",
    "Invalid Credentials",
];

fn chain_text(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push('\n');
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// How the transport failed, if the chain shows it.
fn transport_kind(e: &(dyn StdError + 'static)) -> Option<ObjectErrorKind> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(s) = cur {
        #[cfg(any(feature = "aws", feature = "azure", feature = "gcp"))]
        if let Some(h) = s.downcast_ref::<object_store::client::HttpError>() {
            use object_store::client::HttpErrorKind;
            match h.kind() {
                HttpErrorKind::Connect => return Some(ObjectErrorKind::Unreachable),
                HttpErrorKind::Timeout => return Some(ObjectErrorKind::Timeout),
                _ => {}
            }
        }
        if let Some(io) = s.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::TimedOut => return Some(ObjectErrorKind::Timeout),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::HostUnreachable => {
                    return Some(ObjectErrorKind::Unreachable);
                }
                _ => {}
            }
        }
        cur = s.source();
    }
    None
}

/// Whether `e` says the bucket is missing.
pub(crate) fn is_missing_bucket(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. }) && {
        let text = chain_text(e);
        MISSING_BUCKET.iter().any(|m| text.contains(m))
    }
}

/// Whether `e` is a plain "no such object".
pub(crate) fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. }) && !is_missing_bucket(e)
}

/// The kind of an object store error.
pub(crate) fn classify(e: &object_store::Error) -> ObjectErrorKind {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } if is_missing_bucket(e) => ObjectErrorKind::BucketNotFound,
        E::Unauthenticated { .. } => ObjectErrorKind::Unauthenticated,
        E::PermissionDenied { .. } => {
            let text = chain_text(e);
            if BAD_CREDENTIALS.iter().any(|m| text.contains(m)) {
                ObjectErrorKind::Unauthenticated
            } else {
                ObjectErrorKind::PermissionDenied
            }
        }
        E::Precondition { .. } => ObjectErrorKind::Changed,
        E::NotImplemented { .. } | E::NotSupported { .. } => ObjectErrorKind::NotSupported,
        _ => transport_kind(e).unwrap_or_else(|| {
            let text = chain_text(e);
            if BAD_CREDENTIALS.iter().any(|m| text.contains(m)) {
                ObjectErrorKind::Unauthenticated
            } else if MISSING_BUCKET.iter().any(|m| text.contains(m)) {
                ObjectErrorKind::BucketNotFound
            } else {
                ObjectErrorKind::Other
            }
        }),
    }
}
