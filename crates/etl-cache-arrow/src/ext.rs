//! The extension trait: record batches on any cache.

use std::future::Future;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use etl_cache_core::{BoxError, Cache, CacheExt, EntryMeta, Error, Kind, Result, Value};
use futures::Stream;

use crate::ArrowOptions;
use crate::read::{BatchStream, Reader, in_memory};
use crate::write::{encode_all, set_batches};

/// The chunk size batches are read back in.
const READ_CHUNK: usize = 1 << 20;

/// Record batches on every [`Cache`], `dyn Cache` included. Do not implement
/// it: it is implemented for all caches.
///
/// An entry written here holds an Arrow IPC file (kind [`Kind::Arrow`]):
/// the magic, the schema, the dictionaries and batches, the footer. Read as
/// it is stored (`etl-cache get KEY -o out.arrow`, [`Cache::get_stream`]), it
/// opens with `pyarrow.ipc.open_file`, `polars.read_ipc` and DataFusion.
pub trait ArrowCacheExt: Cache {
    /// Stores `batches` (each of `schema`) under `key` as an Arrow IPC file,
    /// encoding and writing each batch as it arrives: at most a couple of
    /// encoded batches are held in memory, whatever the number of batches.
    /// The entry is published when the stream ends, and only then.
    ///
    /// # Errors
    ///
    /// Nothing is published on any error, and the previous value stays:
    /// - [`Error::InvalidInput`] naming the key and the batch when a batch
    ///   does not match `schema` (columns, types, nulls in a non-nullable
    ///   field), or changes the dictionary of a dictionary column (an IPC
    ///   file holds one dictionary per column);
    /// - [`Error::Stream`] naming the key when `batches` yields an error
    ///   (the error is its source);
    /// - the errors of [`Cache::set_stream`].
    fn set_batches<S, E>(
        &self,
        key: &str,
        schema: SchemaRef,
        batches: S,
        opts: ArrowOptions,
    ) -> impl Future<Output = Result<EntryMeta>> + Send
    where
        S: Stream<Item = std::result::Result<RecordBatch, E>> + Send,
        E: Into<BoxError> + Send,
    {
        set_batches(self, key, schema, batches, opts)
    }

    /// Reads the batches under `key`: the schema, read before this returns,
    /// and a stream of the batches, decoded one at a time as the entry is
    /// read (memory holds one encoded batch and one chunk). `None` on a miss.
    ///
    /// The stream reads the version of the entry that was current when this
    /// returned; on `DiskCache` a write that replaces it meanwhile does not
    /// change what the stream yields. Dropping the stream releases the entry.
    ///
    /// # Errors
    ///
    /// [`Error::KindMismatch`] naming the key when the entry is not Arrow
    /// data; [`Error::Corrupt`] when the cache finds the entry damaged (no
    /// batch of a damaged block is ever decoded); [`Error::Backend`]
    /// (backend `"arrow"`) naming the key when the payload is not a
    /// readable Arrow IPC file (truncated, for example); otherwise as
    /// [`Cache::get_stream`]. The stream's items fail the same ways.
    fn get_batches(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<(SchemaRef, BatchStream)>>> + Send {
        async move {
            let Some(s) = self.get_stream(key, READ_CHUNK).await? else {
                return Ok(None);
            };
            let (meta, bytes) = s.into_parts();
            if meta.kind != Kind::Arrow {
                return Err(Error::KindMismatch {
                    key: Error::display_key(key),
                    expected: Kind::Arrow,
                    found: meta.kind,
                });
            }
            let (schema, reader) = Reader::open(key, bytes, meta.logical_len).await?;
            Ok(Some((schema, reader.into_stream())))
        }
    }

    /// Single flight: reads the batches under `key`, or runs `compute` to
    /// produce them, stores them with `opts` and returns them. Of the
    /// callers that miss the same key at once, one computes and the others
    /// wait for its result, as [`CacheExt::get_or_insert_with`] does on the
    /// backend (between tasks of a process, and between processes or hosts
    /// where the backend coordinates them).
    ///
    /// A hit streams the entry as [`ArrowCacheExt::get_batches`] does. On a
    /// miss, this version holds the encoded result in memory while it is
    /// stored (the whole IPC file, compressed as `opts` says): compute
    /// results larger than memory with [`ArrowCacheExt::set_batches`]
    /// instead.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> etl_cache_core::Result<()> {
    /// use std::sync::Arc;
    /// use arrow_array::{Int64Array, RecordBatch};
    /// use arrow_schema::{DataType, Field, Schema};
    /// use etl_cache_arrow::{ArrowCacheExt, ArrowOptions};
    /// use futures::TryStreamExt;
    ///
    /// let cache = etl_cache_core::MemoryCache::new();
    /// let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
    /// let compute = || async {
    ///     let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2]))])?;
    ///     Ok::<_, arrow_schema::ArrowError>((schema.clone(), futures::stream::iter([Ok(batch)])))
    /// };
    /// let (_, batches) = cache.get_or_compute_batches("step", ArrowOptions::new(), compute).await?;
    /// assert_eq!(batches.try_collect::<Vec<_>>().await?[0].num_rows(), 2);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Init`] naming the key when `compute` or its stream fails
    /// (nothing is stored); [`Error::InvalidInput`] when a batch does not
    /// match the schema; otherwise as [`ArrowCacheExt::get_batches`] and
    /// [`Cache::get_or_insert_boxed`].
    fn get_or_compute_batches<F, Fut, S, E>(
        &self,
        key: &str,
        opts: ArrowOptions,
        compute: F,
    ) -> impl Future<Output = Result<(SchemaRef, BatchStream)>> + Send
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = std::result::Result<(SchemaRef, S), E>> + Send,
        S: Stream<Item = std::result::Result<RecordBatch, E>> + Send,
        E: Into<BoxError> + Send,
    {
        async move {
            if let Some(hit) = self.get_batches(key).await? {
                return Ok(hit);
            }
            let set_opts = opts.set_options();
            // Whether the value below is the one computed here (else another
            // caller's, which may be of another kind).
            let computed = std::sync::atomic::AtomicBool::new(false);
            let computed = &computed;
            let init = || async move {
                computed.store(true, std::sync::atomic::Ordering::Relaxed);
                let (schema, batches) = compute().await.map_err(Into::into)?;
                let bytes = encode_all(key, schema, batches, &opts)
                    .await
                    .map_err(|e| match e {
                        // The computation's own failure: Init, with its error.
                        Error::Stream { source, .. } => source
                            .into_inner()
                            .unwrap_or_else(|| "the batch stream failed".into()),
                        e => Box::new(Encoding(e)) as BoxError,
                    })?;
                Ok::<_, BoxError>(Value::Bytes(bytes))
            };
            let value = self
                .try_get_or_insert_with(key, set_opts, init)
                .await
                .map_err(|e| match e {
                    Error::Init { key, source } => match source.downcast::<Encoding>() {
                        Ok(encoding) => encoding.0,
                        Err(source) => Error::Init { key, source },
                    },
                    e => e,
                })?;
            if !computed.load(std::sync::atomic::Ordering::Relaxed) {
                // Another caller's value (a backend that polled `init`
                // returns what `init` returned): its kind is the entry's,
                // which a plain byte payload stored meanwhile does not pass.
                // The bytes in hand are decoded, not read again; an entry
                // gone since leaves them as they are.
                if let Some(meta) = self.head(key).await?
                    && meta.kind != Kind::Arrow
                {
                    return Err(Error::KindMismatch {
                        key: Error::display_key(key),
                        expected: Kind::Arrow,
                        found: meta.kind,
                    });
                }
            }
            let Value::Bytes(bytes) = value else {
                return Err(Error::KindMismatch {
                    key: Error::display_key(key),
                    expected: Kind::Arrow,
                    found: value.kind(),
                });
            };
            let len = bytes.len() as u64;
            let (schema, reader) = Reader::open(key, in_memory(bytes, READ_CHUNK), len).await?;
            Ok((schema, reader.into_stream()))
        }
    }
}

impl<C: Cache + ?Sized> ArrowCacheExt for C {}

/// An encoding error carried through the backend's single flight as the
/// computation's error, and unwrapped after it.
#[derive(Debug)]
struct Encoding(Error);

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Encoding {}
