//! Python payloads to cache values and back.
//!
//! `str` is text, `bytes`/`bytearray`/`memoryview` are bytes, `dict`/`list`
//! are JSON (through Python's own `json` module, so keys and numbers convert
//! exactly as the seed's `json.dumps` does), anything else that iterates is a
//! stream of `bytes` chunks.

use bytes::Bytes;
use etl_cache::Value;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyIterator, PyList, PyMemoryView, PyString};

/// What a `set` received.
pub(crate) enum Payload<'py> {
    /// A whole value.
    Value(Value),
    /// An iterator of `bytes` chunks, streamed.
    Stream(Bound<'py, PyIterator>),
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
        return Ok(Payload::Value(Value::Json(to_json(obj)?)));
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

/// One chunk of a streamed payload: must be bytes-like.
pub(crate) fn chunk(obj: &Bound<'_, PyAny>, key: &str) -> PyResult<Bytes> {
    bytes_like(obj)?.ok_or_else(|| {
        let ty = obj
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        PyTypeError::new_err(format!(
            "the stream for key {key:?} yielded {ty}; stream chunks must be bytes"
        ))
    })
}

fn to_json(obj: &Bound<'_, PyAny>) -> PyResult<serde_json::Value> {
    let py = obj.py();
    let json = py.import("json")?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("ensure_ascii", false)?;
    kwargs.set_item("allow_nan", false)?;
    let text = json.call_method("dumps", (obj,), Some(&kwargs))?;
    let text: &str = text.cast::<PyString>()?.to_str()?;
    serde_json::from_str(text)
        .map_err(|e| PyTypeError::new_err(format!("the payload does not convert to JSON: {e}")))
}

/// The Python object for a value read from the cache.
pub(crate) fn to_python(py: Python<'_>, value: Value) -> PyResult<Py<PyAny>> {
    Ok(match value {
        Value::Text(s) => PyString::new(py, &s).into_any().unbind(),
        Value::Bytes(b) => PyBytes::new(py, &b).into_any().unbind(),
        Value::Json(j) => {
            let text = j.to_string();
            py.import("json")?.call_method1("loads", (text,))?.unbind()
        }
    })
}
