//! Awaitable operations for asyncio: they run on the shared runtime and
//! complete an asyncio future, so the event loop never blocks on I/O.

use std::sync::Arc;

use bytes::Bytes;
use etl_cache::{Cache, EntryMeta, SetOptions, Value};
use pyo3::prelude::*;

use crate::convert;
use crate::errors::to_py;

/// An entry on its way to Python (converted once the GIL is held).
struct Got(Option<(EntryMeta, Bytes)>);

impl<'py> IntoPyObject<'py> for Got {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.0 {
            Some((meta, bytes)) => Ok(convert::to_python(py, &meta, bytes)?.into_bound(py)),
            None => Ok(py.None().into_bound(py)),
        }
    }
}

pub(crate) fn get(
    py: Python<'_>,
    cache: Arc<dyn Cache>,
    key: String,
) -> PyResult<Bound<'_, PyAny>> {
    pyo3_async_runtimes::tokio::future_into_py(py, async move {
        cache.get_raw(&key).await.map(Got).map_err(to_py)
    })
}

pub(crate) fn set(
    py: Python<'_>,
    cache: Arc<dyn Cache>,
    key: String,
    value: Value,
    opts: SetOptions,
) -> PyResult<Bound<'_, PyAny>> {
    pyo3_async_runtimes::tokio::future_into_py(py, async move {
        cache
            .set(&key, value, opts)
            .await
            .map(|_| ())
            .map_err(to_py)
    })
}

pub(crate) fn delete(
    py: Python<'_>,
    cache: Arc<dyn Cache>,
    key: String,
) -> PyResult<Bound<'_, PyAny>> {
    pyo3_async_runtimes::tokio::future_into_py(py, async move {
        cache.delete(&key).await.map_err(to_py)
    })
}
