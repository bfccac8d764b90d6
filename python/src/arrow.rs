//! Arrow tables in and out: `set_arrow`, `get_arrow`, `get_arrow_batches`
//! and `get_polars` on every cache class.
//!
//! Data crosses the boundary through the Arrow PyCapsule interface (the C
//! data and stream interfaces), so pyarrow, Polars and any other producer
//! hand their batches over without a copy, and the batches read come back
//! the same way. The entry is an Arrow IPC file of kind `arrow`, written
//! and read by `etl_cache::arrow` exactly as a Rust service does, so a
//! table stored by one reads in the other.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{RecordBatch, RecordBatchReader};
use arrow_schema::{ArrowError, SchemaRef};
use etl_cache::Cache;
use etl_cache::arrow::{ArrowCacheExt, ArrowOptions, BatchStream, IpcCompression};
use futures::{StreamExt, TryStreamExt};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3_arrow::input::AnyRecordBatch;
use pyo3_arrow::{PyRecordBatchReader, PyTable};

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
        let stream = &mut self.stream;
        let step = move || runtime::get().block_on(stream.next());
        // This runs under the C stream interface's `get_next`, which must
        // not unwind: a panic becomes the stream's error. A consumer that
        // pulls from inside a Tokio runtime of its own (a Rust library
        // reading through pyarrow, or another cache's `set_arrow`) cannot
        // block on ours on that thread: the batch is read on a scoped
        // thread instead.
        let got = if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| s.spawn(step).join())
        } else {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(step))
        };
        match got {
            Ok(item) => item.map(|r| r.map_err(|e| ArrowError::ExternalError(Box::new(e)))),
            Err(panic) => Some(Err(ArrowError::ExternalError(
                format!("reading the entry failed: {}", panic_text(&*panic)).into(),
            ))),
        }
    }
}

impl RecordBatchReader for Batches {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// The message of a panic's payload.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown".into())
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
                Some(Err(ArrowError::InvalidArgumentError(format!(
                    "the Arrow source handed over a batch that does not match its schema ({})",
                    panic_text(&*panic)
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

/// `set_arrow` (see the method on `BaseCache`), with the TTL the call's
/// `ttl_seconds` gave.
pub(crate) fn set_arrow(
    cache: &Arc<dyn Cache>,
    py: Python<'_>,
    key: String,
    data: AnyRecordBatch,
    ttl: Option<Duration>,
    compression: &str,
) -> PyResult<()> {
    let mut opts = ArrowOptions::new().compression(parse_ipc_compression(compression)?);
    if let Some(ttl) = ttl {
        opts = opts.ttl(ttl);
    }
    let reader = data.into_reader()?;
    let schema = reader.schema();
    // The source is pulled on this thread, with the GIL released and
    // outside the runtime (a source may block on a runtime of its own, such
    // as another cache's `get_arrow_batches`), and its batches handed to the
    // write on the runtime one at a time: memory holds the batch being
    // handed over and the ones the writer encodes.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let writer = {
        let cache = cache.clone();
        let batches = tokio_stream::wrappers::ReceiverStream::new(rx);
        runtime::get().spawn(async move { cache.set_batches(&key, schema, batches, opts).await })
    };
    py.detach(|| {
        for item in Checked(Some(reader)) {
            let failed = item.is_err();
            // An error ends the write; so does a writer that stopped (its
            // error is the one returned).
            if tx.blocking_send(item).is_err() || failed {
                break;
            }
        }
        drop(tx);
        match runtime::get().block_on(writer) {
            Ok(written) => written.map(|_| ()).map_err(to_py),
            Err(e) => Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                "the Arrow write stopped: {e}"
            ))),
        }
    })
}

/// The entry's batches as a `pyarrow.Table`, or `None` on a miss. Read in
/// full before the table is made, so that any failure is the cache's
/// error (`CacheError` and its kinds), not pyarrow's.
pub(crate) fn get_arrow<'py>(
    cache: &Arc<dyn Cache>,
    py: Python<'py>,
    key: &str,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let found = runtime::block_on(py, async {
        match cache.get_batches(key).await? {
            Some((schema, stream)) => Ok(Some((schema, stream.try_collect::<Vec<_>>().await?))),
            None => Ok(None),
        }
    })
    .map_err(to_py)?;
    match found {
        Some((schema, batches)) => Ok(Some(PyTable::try_new(batches, schema)?.into_pyarrow(py)?)),
        None => Ok(None),
    }
}

/// The entry's batches as a `pyarrow.RecordBatchReader`, or `None` on a
/// miss.
pub(crate) fn get_arrow_batches<'py>(
    cache: &Arc<dyn Cache>,
    py: Python<'py>,
    key: &str,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let found = runtime::block_on(py, cache.get_batches(key)).map_err(to_py)?;
    match found {
        Some((schema, stream)) => {
            let reader = PyRecordBatchReader::new(Box::new(Batches { schema, stream }));
            Ok(Some(reader.into_pyarrow(py)?))
        }
        None => Ok(None),
    }
}
