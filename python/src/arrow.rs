//! Arrow tables in and out: `set_arrow`, `get_arrow`, `get_arrow_batches`
//! and `get_polars` on every cache class.
//!
//! Data crosses the boundary through the Arrow PyCapsule interface (the C
//! data and stream interfaces), so pyarrow, Polars and any other producer
//! hand their batches over without a copy, and the batches read come back
//! the same way. The entry is an Arrow IPC file of kind `arrow`, written
//! and read by `etl_cache::arrow` exactly as a Rust service does, so a
//! table stored by one reads in the other.

use arrow_array::{RecordBatch, RecordBatchReader};
use arrow_schema::{ArrowError, SchemaRef};
use etl_cache::arrow::{ArrowCacheExt, ArrowOptions, BatchStream, IpcCompression};
use futures::StreamExt;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3_arrow::PyRecordBatchReader;
use pyo3_arrow::input::AnyRecordBatch;

use crate::cache::BaseCache;
use crate::errors::to_py;
use crate::runtime;

/// The batches of an entry as a blocking [`RecordBatchReader`]: each batch
/// is read and decoded from the cache when the consumer asks for it, so
/// memory holds one batch whatever the size of the table.
struct Batches {
    schema: SchemaRef,
    stream: BatchStream,
}

impl Iterator for Batches {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        // The consumer (pyarrow, Polars) calls this from a Python thread,
        // never from a thread of the runtime, so blocking here is allowed.
        runtime::get()
            .block_on(self.stream.next())
            .map(|r| r.map_err(|e| ArrowError::ExternalError(Box::new(e))))
    }
}

impl RecordBatchReader for Batches {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// A source's batches, with a panic while importing one (arrow's C data
/// import asserts that a batch matches the stream's schema, and pyarrow
/// lets a `RecordBatchReader.from_batches` yield one that does not) turned
/// into an error that fails the write, as any bad batch does. The source is
/// not asked again after that.
struct Checked(Option<Box<dyn RecordBatchReader + Send>>);

impl Iterator for Checked {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        let reader = self.0.as_mut()?;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.next())) {
            Ok(item) => item,
            Err(panic) => {
                self.0 = None;
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown".into());
                Some(Err(ArrowError::InvalidArgumentError(format!(
                    "the Arrow source handed over a batch that does not match its schema ({why})"
                ))))
            }
        }
    }
}

fn parse_ipc_compression(name: &str) -> PyResult<IpcCompression> {
    match name {
        "zstd" => Ok(IpcCompression::Zstd),
        "lz4" => Ok(IpcCompression::Lz4),
        "none" => Ok(IpcCompression::None),
        other => Err(PyValueError::new_err(format!(
            "compression must be \"zstd\", \"lz4\" or \"none\" for Arrow data, got {other:?}"
        ))),
    }
}

/// `set_arrow`: see [`BaseCache::set_arrow`].
pub(crate) fn set_arrow(
    cache: &BaseCache,
    py: Python<'_>,
    key: String,
    data: AnyRecordBatch,
    ttl_seconds: Option<f64>,
    compression: &str,
) -> PyResult<()> {
    let mut opts = ArrowOptions::new().compression(parse_ipc_compression(compression)?);
    if let Some(ttl) = cache.options(ttl_seconds, None, None)?.ttl {
        opts = opts.ttl(ttl);
    }
    let reader = data.into_reader()?;
    let schema = reader.schema();
    // The reader is pulled on this thread as `set_batches` asks for
    // batches, with the GIL released: a source backed by Python code takes
    // the GIL itself while it runs.
    let batches = futures::stream::iter(Checked(Some(reader)));
    let cache = &cache.cache;
    runtime::block_on(py, cache.set_batches(&key, schema, batches, opts)).map_err(to_py)?;
    Ok(())
}

/// The entry's batches as a `pyarrow.RecordBatchReader`, or `None` on a
/// miss.
pub(crate) fn get_arrow_batches<'py>(
    cache: &BaseCache,
    py: Python<'py>,
    key: &str,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let cache = &cache.cache;
    let found = runtime::block_on(py, cache.get_batches(key)).map_err(to_py)?;
    match found {
        Some((schema, stream)) => {
            let reader = PyRecordBatchReader::new(Box::new(Batches { schema, stream }));
            Ok(Some(reader.into_pyarrow(py)?))
        }
        None => Ok(None),
    }
}
