//! Python payloads to cache values and back.
//!
//! `str` is text, `bytes`/`bytearray`/`memoryview` are bytes, `dict`/`list`
//! are JSON, anything else that iterates is a stream of `bytes` chunks.
//!
//! JSON goes through Python's own `json` module both ways, and its text is
//! stored as written (an entry of kind JSON that the engine checks but does
//! not rewrite): key order, integers of any size and float digits come back
//! as `json.dumps` wrote them, as with the seed. A `serde_json::Value` on the
//! way would sort keys and turn large integers into floats.

use bytes::Bytes;
use etl_cache::{EntryMeta, Kind, SetOptions, Value};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyIterator, PyList, PyMemoryView, PyString};

/// What a `set` received.
pub(crate) enum Payload<'py> {
    /// A whole value.
    Value(Value),
    /// A `dict` or `list`: the UTF-8 text `json.dumps` made of it.
    Json(Bytes),
    /// An iterator of `bytes` chunks, streamed.
    Stream(Bound<'py, PyIterator>),
}

impl Payload<'_> {
    /// The value a whole payload stores, and the options it is stored with
    /// (JSON text is stored as bytes of kind JSON); `None` for a stream.
    pub(crate) fn whole(self, opts: SetOptions) -> Option<(Value, SetOptions)> {
        match self {
            Payload::Value(v) => Some((v, opts)),
            Payload::Json(text) => Some((Value::Bytes(text), opts.kind(Kind::Json))),
            Payload::Stream(_) => None,
        }
    }
}

/// Sorts a payload the way the seed does, keeping its type.
pub(crate) fn payload<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Payload<'py>> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Payload::Value(Value::Text(s.to_str()?.to_owned())));
    }
    if let Some(b) = bytes_like(obj)? {
        return Ok(Payload::Value(Value::Bytes(b)));
    }
    if obj.is_instance_of::<PyDict>() || obj.is_instance_of::<PyList>() {
        return Ok(Payload::Json(json_text(obj)?));
    }
    match obj.try_iter() {
        Ok(it) => Ok(Payload::Stream(it)),
        Err(_) => Err(PyTypeError::new_err(format!(
            "unsupported payload type {}: pass str, bytes, dict, list or an iterator of bytes",
            obj.get_type().name()?
        ))),
    }
}

/// The bytes of a `bytes`, `bytearray` or `memoryview`; `None` for other types.
/// A `bytes` object is shared, not copied: it stays alive as long as the
/// `Bytes` does.
pub(crate) fn bytes_like(obj: &Bound<'_, PyAny>) -> PyResult<Option<Bytes>> {
    if obj.is_instance_of::<PyBytes>() {
        let backed: PyBackedBytes = obj.extract()?;
        return Ok(Some(Bytes::from_owner(backed)));
    }
    if let Ok(a) = obj.cast::<PyByteArray>() {
        return Ok(Some(Bytes::from(a.to_vec())));
    }
    if obj.is_instance_of::<PyMemoryView>() {
        let b = obj.call_method0("tobytes")?;
        let backed: PyBackedBytes = b.extract()?;
        return Ok(Some(Bytes::from_owner(backed)));
    }
    Ok(None)
}

/// The name of the type of `obj`, for a message (empty if it has none).
pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

/// One chunk of a streamed payload: must be bytes-like.
pub(crate) fn chunk(obj: &Bound<'_, PyAny>, key: &str) -> PyResult<Bytes> {
    bytes_like(obj)?.ok_or_else(|| {
        let ty = type_name(obj);
        PyTypeError::new_err(format!(
            "the stream for key {key:?} yielded {ty}; stream chunks must be bytes"
        ))
    })
}

/// The text of `json.dumps(obj, ensure_ascii=False, allow_nan=False)` as
/// UTF-8. NaN and infinities raise `ValueError` there: a JSON reader
/// elsewhere could not read them back.
fn json_text(obj: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    let py = obj.py();
    let json = py.import("json")?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("ensure_ascii", false)?;
    kwargs.set_item("allow_nan", false)?;
    let text = json.call_method("dumps", (obj,), Some(&kwargs))?;
    // A lone surrogate in a `str` has no UTF-8 form: UnicodeEncodeError.
    let utf8 = text
        .cast::<PyString>()?
        .call_method1("encode", ("utf-8",))?;
    let backed: PyBackedBytes = utf8.extract()?;
    Ok(Bytes::from_owner(backed))
}

/// The Python object for an entry read from the cache: its kind and its
/// logical bytes ([`etl_cache::Cache::get_raw`]). A JSON entry's text goes
/// to `json.loads` as stored.
pub(crate) fn to_python(py: Python<'_>, meta: &EntryMeta, bytes: Bytes) -> PyResult<Py<PyAny>> {
    let text = |what: &str| {
        std::str::from_utf8(&bytes).map_err(|e| {
            crate::errors::to_py(etl_cache::Error::Corrupt {
                key: meta.key.clone(),
                reason: format!("{what} entry is not valid UTF-8: {e}"),
            })
        })
    };
    Ok(match meta.kind {
        Kind::Text => PyString::new(py, text("text")?).into_any().unbind(),
        Kind::Json => py
            .import("json")?
            .call_method1("loads", (text("JSON")?,))?
            .unbind(),
        // Bytes, and the byte payload kinds (Arrow).
        _ => PyBytes::new(py, &bytes).into_any().unbind(),
    })
}
