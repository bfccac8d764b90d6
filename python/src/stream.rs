//! Streams between Python iterators and the cache, with bounded memory.
//!
//! In: the calling thread pulls chunks from the Python iterator (it holds the
//! GIL only while it does) and hands them through a small bounded channel to
//! `set_stream`, which runs on the shared runtime. A slow disk or upload makes
//! the iterator wait. Chunks travel in batches of about [`BATCH_BYTES`]
//! (without copying them): one hand-off between threads per 64 KiB chunk
//! would cost more than the write itself. At most [`IN_FLIGHT`] batches are
//! buffered.
//!
//! Out: [`ChunkIterator`] is a Python iterator over the entry's decompressed
//! bytes; each `next()` releases the GIL while it waits for the next chunk.

use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use etl_cache::{ByteStream, Cache, SetOptions};
use futures::{SinkExt, StreamExt};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyIterator};

use crate::convert;
use crate::errors::to_py;
use crate::runtime;

/// Batches buffered between the Python iterator and the writer.
const IN_FLIGHT: usize = 4;
/// A batch is sent once it holds this many bytes.
const BATCH_BYTES: usize = 1 << 20;

/// Writes the chunks of `iter` as the entry `key`. A Python exception from the
/// iterator fails the write (the previous value stays) and is re-raised.
pub(crate) fn set_from_iter(
    py: Python<'_>,
    cache: Arc<dyn Cache>,
    key: String,
    iter: Bound<'_, PyIterator>,
    opts: SetOptions,
) -> PyResult<()> {
    let (mut tx, rx) = futures::channel::mpsc::channel::<Vec<io::Result<Bytes>>>(IN_FLIGHT);
    let writer = {
        let key = key.clone();
        let chunks = rx.flat_map(futures::stream::iter).boxed();
        runtime::get().spawn(async move { cache.set_stream(&key, chunks, opts).await })
    };
    let mut failure: Option<PyErr> = None;
    let mut batch = Vec::new();
    let mut batch_bytes = 0;
    let mut iter = iter.into_iter();
    loop {
        let next = iter
            .next()
            .map(|item| item.and_then(|obj| convert::chunk(&obj, &key)));
        let end = match next {
            Some(Ok(chunk)) => {
                batch_bytes += chunk.len();
                batch.push(Ok(chunk));
                false
            }
            Some(Err(e)) => {
                batch.push(Err(io::Error::other(e.to_string())));
                failure = Some(e);
                true
            }
            None => true,
        };
        if batch_bytes >= BATCH_BYTES || (end && !batch.is_empty()) {
            let full = std::mem::take(&mut batch);
            batch_bytes = 0;
            let sent = py.detach(|| futures::executor::block_on(tx.send(full)));
            // A closed channel means the writer stopped: its error says why.
            if sent.is_err() {
                break;
            }
        }
        if end {
            break;
        }
    }
    drop(tx);
    let written = runtime::block_on(py, writer);
    if let Some(e) = failure {
        return Err(e);
    }
    match written {
        Ok(Ok(_meta)) => Ok(()),
        Ok(Err(e)) => Err(to_py(e)),
        Err(join) => Err(crate::errors::BackendError::new_err(format!(
            "the write of key {key:?} stopped: {join}"
        ))),
    }
}

/// An iterator over the decompressed bytes of one entry, in chunks of at most
/// the `chunk_size` given to `get_stream`; also file-like (`read`), as the
/// seed's S3Cache returns boto3's StreamingBody.
#[pyclass(module = "etl_cache", frozen)]
pub(crate) struct ChunkIterator {
    key: String,
    stream: Mutex<Reading>,
}

/// The entry's stream (`None` once ended, failed or closed) and what a
/// `read(size)` took from a chunk but did not return.
struct Reading {
    stream: Option<ByteStream>,
    left: Bytes,
}

impl Reading {
    /// The next piece: what a `read` left over, else the next chunk.
    fn next(&mut self) -> Option<io::Result<Bytes>> {
        if !self.left.is_empty() {
            return Some(Ok(std::mem::take(&mut self.left)));
        }
        let item = match self.stream.as_mut() {
            Some(s) => runtime::get().block_on(s.next()),
            None => None,
        };
        if !matches!(item, Some(Ok(_))) {
            // Ended or failed: release the entry now, not at garbage collection.
            self.stream = None;
        }
        item
    }
}

impl ChunkIterator {
    pub(crate) fn new(key: String, stream: ByteStream) -> Self {
        ChunkIterator {
            key,
            stream: Mutex::new(Reading {
                stream: Some(stream),
                left: Bytes::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Reading> {
        self.stream.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[pymethods]
impl ChunkIterator {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyBytes>>> {
        match py.detach(|| self.lock().next()) {
            Some(Ok(chunk)) => Ok(Some(PyBytes::new(py, &chunk).unbind())),
            Some(Err(e)) => Err(to_py(etl_cache::stream_read_error(&self.key, e))),
            None => Ok(None),
        }
    }

    /// Up to `size` bytes (all that is left when `size` is negative or
    /// absent); `b""` at the end. As a file's `read`, so the stream can be
    /// handed to what reads files (`pandas.read_csv`, `shutil.copyfileobj`).
    #[pyo3(signature = (size = -1))]
    fn read(&self, py: Python<'_>, size: i64) -> PyResult<Py<PyBytes>> {
        let read = py.detach(|| {
            let mut r = self.lock();
            let want = usize::try_from(size).unwrap_or(usize::MAX);
            let mut out = Vec::new();
            while out.len() < want {
                match r.next() {
                    Some(Ok(mut chunk)) => {
                        let room = want - out.len();
                        if chunk.len() > room {
                            r.left = chunk.split_off(room);
                        }
                        out.extend_from_slice(&chunk);
                    }
                    Some(Err(e)) => return Err(e),
                    None => break,
                }
            }
            Ok(out)
        });
        match read {
            Ok(bytes) => Ok(PyBytes::new(py, &bytes).unbind()),
            Err(e) => Err(to_py(etl_cache::stream_read_error(&self.key, e))),
        }
    }

    /// Stops reading and releases the entry. Waits, without the GIL, for a
    /// read under way in another thread.
    fn close(&self, py: Python<'_>) {
        py.detach(|| {
            let mut r = self.lock();
            r.stream = None;
            r.left = Bytes::new();
        });
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _ty: Option<Bound<'_, PyAny>>,
        _value: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) {
        self.close(py);
    }
}
