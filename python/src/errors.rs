//! Python exception classes for [`etl_cache::Error`].
//!
//! Every message is the Rust error's, which names the key. A miss is never an
//! exception: `get` returns `None`.

use etl_cache::Error;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;

pyo3::create_exception!(
    etl_cache,
    CacheError,
    PyException,
    "Base class of every error the cache raises."
);
pyo3::create_exception!(
    etl_cache,
    InvalidKeyError,
    CacheError,
    "The key is empty, too long or holds a NUL character."
);
pyo3::create_exception!(
    etl_cache,
    TooLargeError,
    CacheError,
    "The entry is larger than the cache's max_bytes."
);
pyo3::create_exception!(
    etl_cache,
    LockTimeoutError,
    CacheError,
    "Another worker held the key's lock for longer than lock_timeout."
);
pyo3::create_exception!(
    etl_cache,
    CorruptEntryError,
    CacheError,
    "The entry failed its checksum and was removed; no wrong bytes were returned."
);
pyo3::create_exception!(
    etl_cache,
    StreamError,
    CacheError,
    "The payload iterator failed; the previous value is intact."
);
pyo3::create_exception!(
    etl_cache,
    BackendError,
    CacheError,
    "The disk or the object store failed (I/O, network, credentials)."
);
pyo3::create_exception!(
    etl_cache,
    OpenError,
    CacheError,
    "The cache cannot be opened at the given location or with the given settings."
);

/// Adds the exception classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("CacheError", py.get_type::<CacheError>())?;
    m.add("InvalidKeyError", py.get_type::<InvalidKeyError>())?;
    m.add("TooLargeError", py.get_type::<TooLargeError>())?;
    m.add("LockTimeoutError", py.get_type::<LockTimeoutError>())?;
    m.add("CorruptEntryError", py.get_type::<CorruptEntryError>())?;
    m.add("StreamError", py.get_type::<StreamError>())?;
    m.add("BackendError", py.get_type::<BackendError>())?;
    m.add("OpenError", py.get_type::<OpenError>())?;
    Ok(())
}

/// The Python exception for a cache error.
pub(crate) fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::InvalidKey { .. } => InvalidKeyError::new_err(msg),
        Error::InvalidInput { .. } => PyValueError::new_err(msg),
        Error::TooLarge { .. } => TooLargeError::new_err(msg),
        Error::LockTimeout { .. } => LockTimeoutError::new_err(msg),
        Error::Corrupt { .. } | Error::KindMismatch { .. } | Error::Json { .. } => {
            CorruptEntryError::new_err(msg)
        }
        Error::Stream { .. } => StreamError::new_err(msg),
        Error::Open { .. } => OpenError::new_err(msg),
        _ => BackendError::new_err(msg),
    }
}
