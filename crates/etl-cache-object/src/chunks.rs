//! The chunks a stream hands out: checked stored bytes cut to the caller's
//! chunk size, or decompressed on a blocking thread.

use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;
use etl_cache_core::EntryMeta;
use etl_cache_core::backend::Rechunker;
use etl_cache_core::backend::codec::PayloadReader;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::checked::Checked;
use crate::inner::Inner;

/// The first size of the buffer a decompressed chunk is read into; it
/// doubles up to the chunk size as bytes come.
const FIRST_DECODE_BUF: usize = 64 * 1024;

/// An uncompressed payload: cut into chunks as it is checked.
pub(crate) fn plain_stream(
    src: Checked,
    chunk_size: usize,
) -> BoxStream<'static, io::Result<Bytes>> {
    struct State {
        src: Checked,
        chunks: Rechunker,
        done: bool,
    }
    let st = State {
        src,
        chunks: Rechunker::new(),
        done: false,
    };
    futures::stream::unfold(st, move |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            if let Some(out) = st.chunks.pop(chunk_size, false) {
                return Some((Ok(out), st));
            }
            match st.src.next().await {
                Ok(Some(b)) => st.chunks.push(b),
                Ok(None) => {
                    st.done = true;
                    let out = st.chunks.pop(chunk_size, true)?;
                    return Some((Ok(out), st));
                }
                Err(e) => {
                    st.done = true;
                    let e = st.src.to_io(e);
                    return Some((Err(e), st));
                }
            }
        }
    })
    .boxed()
}

/// The checked stored bytes as a byte stream, for a reader on a blocking
/// thread ([`SyncIoBridge`] over a [`StreamReader`]): pulled on demand, so
/// at most one chunk is held ahead of the decompressor.
fn stored_bytes(src: Checked) -> impl futures::Stream<Item = io::Result<Bytes>> + Send + Unpin {
    futures::stream::unfold(Some(src), |src| async move {
        let mut src = src?;
        match src.next().await {
            Ok(Some(b)) => Some((Ok(b), Some(src))),
            Ok(None) => None,
            // The first failure ends the stream.
            Err(e) => Some((Err(src.to_io(e)), None)),
        }
    })
    .boxed()
}

/// A compressed payload: its checked stored bytes decompressed on a
/// blocking thread (pull based, so memory stays at a few chunks whatever
/// the ratio) and sent through a bounded channel.
pub(crate) fn decoded_stream(
    src: Checked,
    meta: EntryMeta,
    chunk_size: usize,
) -> BoxStream<'static, io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(2);
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let spoiled = Spoiled {
            inner: src.framed.body.inner.clone(),
            key: src.framed.body.key.clone(),
        };
        let source = SyncIoBridge::new_with_handle(StreamReader::new(stored_bytes(src)), handle);
        let mut reader = match PayloadReader::new(meta.codec, source) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        // No chunk is longer than the entry: the buffer is never larger than
        // the entry's logical length, and it grows with what is decoded (a
        // trailer could claim any length), never more than twice that.
        let chunk_size = chunk_size
            .min(usize::try_from(meta.logical_len).unwrap_or(usize::MAX))
            .max(1);
        let result = (|| -> io::Result<()> {
            loop {
                let mut buf = Vec::new();
                let mut filled = 0;
                while filled < chunk_size {
                    if filled == buf.len() {
                        let grown = (buf.len() * 2).max(FIRST_DECODE_BUF).min(chunk_size);
                        buf.resize(grown, 0);
                    }
                    match reader.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e)
                            if e.kind() == io::ErrorKind::InvalidData
                                && !reader.source_failed() =>
                        {
                            return Err(spoiled.report(e.to_string()));
                        }
                        Err(e) => return Err(e),
                    }
                }
                if filled == 0 {
                    break;
                }
                buf.truncate(filled);
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return Ok(()); // the reader went away
                }
                if filled < chunk_size {
                    break;
                }
            }
            let totals = reader.finish()?;
            // Every stored byte was checked before it was decompressed; what
            // is left to check is what decompression made of them.
            if totals.stored_len != meta.stored_len {
                return Err(spoiled.report(format!(
                    "payload is {} stored bytes, {} expected",
                    totals.stored_len, meta.stored_len
                )));
            }
            if totals.logical_len != meta.logical_len {
                return Err(spoiled.report(format!(
                    "payload is {} bytes after decompression, {} expected",
                    totals.logical_len, meta.logical_len
                )));
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}

/// Reports a corrupt entry from the decoding thread (it is not removed:
/// see [`crate::ObjectCache`]).
struct Spoiled {
    inner: Arc<Inner>,
    key: String,
}

impl Spoiled {
    fn report(&self, why: String) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            self.inner.corrupt(&self.key, why),
        )
    }
}
