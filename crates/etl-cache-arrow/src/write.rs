//! Record batches into an Arrow IPC file, piece by piece.

use std::io;

use arrow_array::{RecordBatch, RecordBatchOptions};
use arrow_ipc::writer::{FileWriter, IpcWriteOptions};
use arrow_schema::{ArrowError, SchemaRef};
use bytes::Bytes;
use etl_cache_core::{BoxError, Cache, EntryMeta, Error, Result};
use futures::{SinkExt, Stream, StreamExt};

use crate::ArrowOptions;

/// Batches smaller than this (in memory) are encoded on the calling task;
/// larger ones on tokio's blocking pool, where compressing them does not
/// hold up the runtime's other tasks (a hop there costs about 18 µs).
const INLINE_BATCH_BYTES: usize = 1 << 20;

/// An Arrow IPC file written front to back into memory, handed out a piece
/// at a time: the magic and schema, then each batch (with its dictionaries),
/// then the footer. arrow-ipc's `FileWriter` keeps only the block offsets
/// for the footer, so what it wrote can be taken away after each call.
pub(crate) struct Encoder {
    key: String,
    schema: SchemaRef,
    writer: FileWriter<Vec<u8>>,
    batches: u64,
}

impl Encoder {
    /// Starts a file of `schema`; the magic and the schema are the first piece.
    pub(crate) fn new(key: &str, schema: SchemaRef, opts: &ArrowOptions) -> Result<Encoder> {
        let options = IpcWriteOptions::default()
            .try_with_compression(opts.ipc_compression().codec())
            .map_err(|e| invalid(key, "the IPC write options are refused", e))?;
        let writer = FileWriter::try_new_with_options(Vec::new(), &schema, options)
            .map_err(|e| invalid(key, "the schema cannot be written as Arrow IPC", e))?;
        Ok(Encoder {
            key: key.to_owned(),
            schema,
            writer,
            batches: 0,
        })
    }

    /// What was written since the last call.
    pub(crate) fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(self.writer.get_mut()))
    }

    /// Encodes one batch, checked against the schema; returns its piece.
    pub(crate) fn write(&mut self, batch: RecordBatch) -> Result<Bytes> {
        let n = self.batches;
        // Rebuilt on the schema given: the column count, each column's type
        // (nested field names included) and the nulls of non-nullable
        // fields are checked, and the file holds the schema given.
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        let batch = RecordBatch::try_new_with_options(
            self.schema.clone(),
            batch.columns().to_vec(),
            &options,
        )
        .map_err(|e| {
            invalid(
                &self.key,
                &format!("batch {n} does not match the schema given"),
                e,
            )
        })?;
        self.writer.write(&batch).map_err(|e| {
            if e.to_string().contains("Dictionary replacement") {
                Error::InvalidInput {
                    message: format!(
                        "batch {n} for key {:?} has another dictionary for a dictionary column \
                         than an earlier batch: an Arrow IPC file holds one dictionary per \
                         column for all its batches (give every batch the same dictionary, or \
                         cast the column to its value type)",
                        Error::display_key(&self.key)
                    ),
                }
            } else {
                invalid(&self.key, &format!("batch {n} cannot be encoded"), e)
            }
        })?;
        self.batches += 1;
        Ok(self.take())
    }

    /// Writes the end-of-stream marker and the footer; returns the last piece.
    pub(crate) fn finish(&mut self) -> Result<Bytes> {
        self.writer
            .finish()
            .map_err(|e| invalid(&self.key, "the footer cannot be written", e))?;
        Ok(self.take())
    }

    /// [`Encoder::write`], off the runtime's threads for a large batch.
    async fn write_batch(mut self, batch: RecordBatch) -> Result<(Self, Bytes)> {
        if batch.get_array_memory_size() < INLINE_BATCH_BYTES {
            let piece = self.write(batch)?;
            return Ok((self, piece));
        }
        let key = self.key.clone();
        match tokio::task::spawn_blocking(move || {
            let r = self.write(batch);
            r.map(|piece| (self, piece))
        })
        .await
        {
            Ok(done) => done,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // The runtime is shutting down: the batch was never encoded.
                Err(e) => Err(Error::Backend {
                    backend: "arrow",
                    key: Error::display_key(&key),
                    source: format!("encoding a batch was cancelled: {e}").into(),
                }),
            },
        }
    }
}

fn invalid(key: &str, what: &str, e: ArrowError) -> Error {
    Error::InvalidInput {
        message: format!("key {:?}: {what}: {e}", Error::display_key(key)),
    }
}

/// The error a failed batch stream ends the byte stream with, so that the
/// cache publishes nothing; the caller reports the real error.
fn abandoned() -> io::Error {
    io::Error::other("the record batches could not be written")
}

/// Encodes `batches` as they arrive and hands the pieces to
/// `cache.set_stream` through a channel of one piece: at most that piece,
/// the one being encoded and what the backend holds are in memory.
pub(crate) async fn set_batches<C, S, E>(
    cache: &C,
    key: &str,
    schema: SchemaRef,
    batches: S,
    opts: ArrowOptions,
) -> Result<EntryMeta>
where
    C: Cache + ?Sized,
    S: Stream<Item = std::result::Result<RecordBatch, E>> + Send,
    E: Into<BoxError> + Send,
{
    etl_cache_core::validate_key(key)?;
    let set_opts = opts.set_options();
    set_opts.validate_for(key)?;
    let encoder = Encoder::new(key, schema, &opts)?;
    let (mut tx, rx) = futures::channel::mpsc::channel::<io::Result<Bytes>>(0);
    let store = cache.set_stream(key, rx.boxed(), set_opts);
    let feed = async move {
        let fed = feed(encoder, &mut tx, key, batches).await;
        if fed.is_err() {
            // Ends the byte stream with an error: nothing is published.
            let _ = tx.send(Err(abandoned())).await;
        }
        fed
    };
    let (fed, stored) = futures::join!(feed, store);
    match (fed, stored) {
        (Err(e), _) => Err(e),
        (Ok(()), stored) => stored,
    }
}

async fn feed<S, E>(
    mut encoder: Encoder,
    tx: &mut futures::channel::mpsc::Sender<io::Result<Bytes>>,
    key: &str,
    batches: S,
) -> Result<()>
where
    S: Stream<Item = std::result::Result<RecordBatch, E>> + Send,
    E: Into<BoxError> + Send,
{
    // A send fails only when the cache stopped reading (it refused the
    // write); its own error then says why.
    if tx.send(Ok(encoder.take())).await.is_err() {
        return Ok(());
    }
    let mut batches = std::pin::pin!(batches);
    while let Some(batch) = batches.next().await {
        let batch = batch.map_err(|e| batch_stream_error(key, e.into()))?;
        let (back, piece) = encoder.write_batch(batch).await?;
        encoder = back;
        if tx.send(Ok(piece)).await.is_err() {
            return Ok(());
        }
    }
    let last = encoder.finish()?;
    let _ = tx.send(Ok(last)).await;
    Ok(())
}

/// The error of a failing batch stream, naming the key.
pub(crate) fn batch_stream_error(key: &str, source: BoxError) -> Error {
    Error::Stream {
        key: Error::display_key(key),
        source: io::Error::other(source),
    }
}

/// Encodes a whole file in memory, for a computed value.
pub(crate) async fn encode_all<S, E>(
    key: &str,
    schema: SchemaRef,
    batches: S,
    opts: &ArrowOptions,
) -> Result<Bytes>
where
    S: Stream<Item = std::result::Result<RecordBatch, E>> + Send,
    E: Into<BoxError> + Send,
{
    let mut encoder = Encoder::new(key, schema, opts)?;
    let mut out = encoder.take().to_vec();
    let mut batches = std::pin::pin!(batches);
    while let Some(batch) = batches.next().await {
        let batch = batch.map_err(|e| batch_stream_error(key, e.into()))?;
        let (back, piece) = encoder.write_batch(batch).await?;
        encoder = back;
        out.extend_from_slice(&piece);
    }
    out.extend_from_slice(&encoder.finish()?);
    Ok(Bytes::from(out))
}
