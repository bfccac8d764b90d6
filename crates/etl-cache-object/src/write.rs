//! Writes: one `PUT` for what fits in a part, a multipart upload with
//! bounded memory for the rest. Nothing is visible until the store publishes
//! the whole object; a failed or cancelled write aborts its upload.

use std::sync::Arc;

use bytes::Bytes;
use etl_cache_core::backend::Counters;
use etl_cache_core::backend::blocks::BlockFramer;
use etl_cache_core::backend::codec::Encoder;
use etl_cache_core::backend::format::{DecodedHeader, Header, Layout, TRAILER_LEN, Trailer};
use etl_cache_core::{ByteStream, Codec, EntryMeta, Error, Kind, Result, SetOptions, Value};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{MultipartUpload, PutMultipartOptions, PutOptions, PutPayload};
use tokio::task::JoinSet;

use crate::inner::Inner;
use crate::local::Standing;
use crate::staged::Staged;

/// Whole values up to this size go up in one request.
const SINGLE_PUT_LIMIT: usize = 64 << 20;

/// Whole entries up to this size are assembled in one buffer before they go
/// up; larger ones go up as slices of their stored bytes, without a copy.
const ASSEMBLED_MAX: usize = 64 << 10;

/// An entry's header, ready to write.
struct Head {
    header: DecodedHeader,
    bytes: Bytes,
}

impl Head {
    /// A framer for this entry's payload.
    fn framer(&self) -> BlockFramer {
        let size = self
            .header
            .layout
            .block_size()
            .expect("entries are written in blocks");
        BlockFramer::new(self.header.crc, size)
    }
}

impl Inner {
    fn head(&self, key: &str, kind: Kind, opts: SetOptions) -> Result<Head> {
        let now = self.config.clock.now();
        let header = Header {
            key: key.to_owned(),
            kind,
            codec: opts.compression.codec(),
            created: now,
            expires: opts.expires_at(now)?,
        };
        // Format 2, blocks of the size the write asks for, each checked by
        // a reader before it is handed out.
        let (bytes, header) = header.encode_decoded(Layout::for_write(opts.check_block));
        Ok(Head {
            header,
            bytes: Bytes::from(bytes),
        })
    }

    /// The metadata of the entry `head` and `trailer` (from the framer) end.
    fn finish_meta(head: Head, trailer: Trailer) -> EntryMeta {
        let header_len = head.bytes.len() as u64;
        let framed = head
            .header
            .layout
            .framed_len(trailer.stored_len)
            .expect("a payload that was written frames");
        let size = header_len + framed + TRAILER_LEN as u64;
        EntryMeta::from_decoded_parts(head.header, trailer, size)
            .expect("a trailer built for its header")
    }

    /// On a local directory, refuses a write whose path goes through a
    /// linked folder (the store would write wherever the link points).
    /// What stands at the entry's own name is replaced by the write.
    async fn check_before_write(&self, key: &str, location: &Path) -> Result<()> {
        match self.standing(location).await {
            Standing::Other {
                why,
                in_folder: true,
            } => Err(self.not_an_entry_because("put", key, location, Some(why))),
            _ => Ok(()),
        }
    }

    fn compress_error(&self, key: &str, location: &Path, source: std::io::Error) -> Error {
        Error::Io {
            key: Error::display_key(key),
            path: location.as_ref().into(),
            op: "compress the payload",
            source,
        }
    }

    /// Writes a whole value.
    pub(crate) async fn write_value(
        self: &Arc<Self>,
        key: &str,
        value: Value,
        opts: SetOptions,
    ) -> Result<EntryMeta> {
        let head = self.head(key, opts.value_kind(key, &value)?, opts)?;
        let location = self.layout.entry(key);
        self.check_before_write(key, &location).await?;
        let logical = value.into_bytes();
        let compression = opts.compression;
        // The framer checksums each block as it passes: the encoder's own
        // checksum of the stored bytes would be a second pass for nothing.
        let encoded = if crate::inner::work_inline(compression.codec(), logical.len()) {
            Encoder::encode_all_without_checksum(compression, logical)
        } else {
            tokio::task::spawn_blocking(move || {
                Encoder::encode_all_without_checksum(compression, logical)
            })
            .await
            .map_err(|e| self.compress_error(key, &location, std::io::Error::other(e)))?
        };
        let (stored, totals) = encoded.map_err(|e| self.compress_error(key, &location, e))?;
        let entry_len = head.bytes.len()
            + head
                .header
                .layout
                .framed_len(totals.stored_len)
                .expect("a payload that was encoded frames") as usize
            + TRAILER_LEN;
        let mut framer = head.framer();
        let (framed, trailer) = if entry_len <= ASSEMBLED_MAX {
            // Small: one buffer, one piece to upload. Per piece, a 1 KiB set
            // on object_store's InMemory cost more than the copy of its
            // bytes (callgrind: 4 pieces, a buffer per checksum).
            let mut entry = Vec::with_capacity(entry_len);
            entry.extend_from_slice(&head.bytes);
            let mut append = |s: &[u8]| {
                entry.extend_from_slice(s);
                Ok::<_, std::convert::Infallible>(())
            };
            let framed = framer
                .push_slices(&stored, &mut append)
                .and_then(|()| framer.finish_slices(totals.logical_len, &mut append));
            let trailer = framed.unwrap_or_else(|never| match never {});
            entry.extend_from_slice(&trailer.encode());
            (vec![Bytes::from(entry)], trailer)
        } else {
            // Large: the blocks go up as slices of the stored bytes.
            let mut framed = vec![head.bytes.clone()];
            framer.push(stored, &mut framed);
            let trailer = framer.finish(totals.logical_len, &mut framed);
            (framed, trailer)
        };
        let meta = Self::finish_meta(head, trailer);
        let size: usize = framed.iter().map(Bytes::len).sum();
        let mut up = Uploader::new(self.clone(), key, location, size > SINGLE_PUT_LIMIT);
        let written = async {
            for piece in framed {
                up.push(piece).await?;
            }
            up.finish().await
        }
        .await;
        if let Err(e) = written {
            up.abort().await;
            return Err(e);
        }
        Counters::bump(&self.counters.sets);
        Ok(meta)
    }

    /// Writes a stream, compressing on the fly, with at most
    /// `max_concurrency` parts in flight.
    pub(crate) async fn write_stream(
        self: &Arc<Self>,
        key: &str,
        mut stream: ByteStream,
        opts: SetOptions,
    ) -> Result<EntryMeta> {
        let head = self.head(key, opts.stream_kind(key)?, opts)?;
        let location = self.layout.entry(key);
        self.check_before_write(key, &location).await?;
        let codec = opts.compression.codec();
        let mut enc = Encoder::new(opts.compression)
            .map_err(|e| self.compress_error(key, &location, e))?
            .without_checksum();
        let mut framer = head.framer();
        let mut framed = Vec::new();
        let mut up = Uploader::new(self.clone(), key, location.clone(), true);
        let written = async {
            up.push(head.bytes.clone()).await?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|source| Error::Stream {
                    key: Error::display_key(key),
                    source,
                })?;
                // A chunk large enough to keep the task busy is compressed
                // on the blocking pool (the encoder goes there and back);
                // small ones, and every chunk of an uncompressed stream,
                // stay here, where the hop would cost more than the work.
                // The framer's checksum (~20 GB/s) runs here either way.
                let out =
                    if codec == Codec::None || crate::inner::work_inline(codec, chunk.len()) {
                        enc.encode(chunk)
                    } else {
                        let mut moved = enc;
                        let (back, out) = tokio::task::spawn_blocking(move || {
                            let out = moved.encode(chunk);
                            (moved, out)
                        })
                        .await
                        .map_err(|e| {
                            self.compress_error(key, &location, std::io::Error::other(e))
                        })?;
                        enc = back;
                        out
                    }
                    .map_err(|e| self.compress_error(key, &location, e))?;
                framer.push(out, &mut framed);
                for piece in framed.drain(..) {
                    up.push(piece).await?;
                }
            }
            let (last, totals) = enc
                .finish()
                .map_err(|e| self.compress_error(key, &location, e))?;
            framer.push(last, &mut framed);
            let trailer = framer.finish(totals.logical_len, &mut framed);
            for piece in framed.drain(..) {
                up.push(piece).await?;
            }
            up.finish().await?;
            Ok::<_, Error>(trailer)
        }
        .await;
        let trailer = match written {
            Ok(t) => t,
            Err(e) => {
                up.abort().await;
                return Err(e);
            }
        };
        Counters::bump(&self.counters.sets);
        Ok(Self::finish_meta(head, trailer))
    }
}

/// Sends bytes to one object: buffered up to a part, then as a multipart
/// upload with bounded parts in flight; a single `PUT` when everything fits
/// in one part.
///
/// Why not object_store's `WriteMultipart`: its `finish` uploads the last,
/// short part it buffers and, when that part fails, returns the error having
/// dropped the upload unaborted, with no way back to it: the parts already
/// uploaded stay in the bucket, billed, until a lifecycle rule removes them.
/// This uploader keeps the upload until it completed or was aborted. Built
/// on `WriteMultipart`, 1 GiB through moto stored at 140-154 MB/s against
/// 142-152 MB/s here (three runs each, side by side; docs/performance.md),
/// so the library would have saved code, not time.
struct Uploader {
    inner: Arc<Inner>,
    key: String,
    location: Path,
    part_size: usize,
    pending: Vec<Bytes>,
    pending_len: usize,
    multipart_allowed: bool,
    upload: Option<Box<dyn MultipartUpload>>,
    tasks: JoinSet<object_store::Result<()>>,
    /// On a plain `LocalFileSystem`: the cache's own write, which publishes
    /// before its future completes or never.
    local: Option<Staged>,
}

impl Uploader {
    fn new(inner: Arc<Inner>, key: &str, location: Path, multipart_allowed: bool) -> Uploader {
        let part_size = inner.config.part_size;
        let local = inner
            .local_writes
            .as_ref()
            .and_then(|w| w.stage(&location).ok());
        Uploader {
            inner,
            key: key.to_owned(),
            location,
            part_size,
            pending: Vec::new(),
            pending_len: 0,
            multipart_allowed,
            upload: None,
            tasks: JoinSet::new(),
            local,
        }
    }

    fn local_error(&self, op: &'static str, source: std::io::Error) -> Error {
        let path = self
            .local
            .as_ref()
            .map_or_else(|| self.location.as_ref().into(), |l| l.dest().to_path_buf());
        Error::Io {
            key: Error::display_key(&self.key),
            path,
            op,
            source,
        }
    }

    fn fail(&self, op: &'static str, e: object_store::Error) -> Error {
        self.inner.fail(op, &self.key, &self.location, e)
    }

    async fn push(&mut self, mut b: Bytes) -> Result<()> {
        if let Some(local) = self.local.as_mut() {
            self.pending_len += b.len();
            self.pending.push(b);
            if self.pending_len >= self.part_size {
                let parts = std::mem::take(&mut self.pending);
                self.pending_len = 0;
                let written = local.write(parts).await;
                written.map_err(|e| self.local_error("write the staging file", e))?;
            }
            return Ok(());
        }
        if !self.multipart_allowed {
            self.pending_len += b.len();
            self.pending.push(b);
            return Ok(());
        }
        while !b.is_empty() {
            let room = self.part_size - self.pending_len;
            if b.len() < room {
                self.pending_len += b.len();
                self.pending.push(b);
                break;
            }
            self.pending.push(b.split_to(room));
            self.pending_len += room;
            let part: PutPayload = std::mem::take(&mut self.pending).into_iter().collect();
            self.pending_len = 0;
            self.send(part).await?;
        }
        Ok(())
    }

    async fn send(&mut self, part: PutPayload) -> Result<()> {
        if self.upload.is_none() {
            let up = self
                .inner
                .store
                .put_multipart_opts(&self.location, PutMultipartOptions::default())
                .await
                .map_err(|e| self.fail("start a multipart upload", e))?;
            self.upload = Some(up);
        }
        while self.tasks.len() >= self.inner.config.max_concurrency {
            self.join_one().await?;
        }
        let fut = self.upload.as_mut().expect("started above").put_part(part);
        self.tasks.spawn(fut);
        Ok(())
    }

    async fn join_one(&mut self) -> Result<()> {
        match self.tasks.join_next().await {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(self.fail("upload a part", e)),
            Some(Err(e)) => Err(self.fail(
                "upload a part",
                object_store::Error::Generic {
                    store: "upload task",
                    source: Box::new(e),
                },
            )),
        }
    }

    async fn finish(&mut self) -> Result<()> {
        if let Some(local) = self.local.as_mut() {
            let rest = std::mem::take(&mut self.pending);
            self.pending_len = 0;
            let published = local.publish(rest).await;
            return published.map_err(|e| self.local_error("publish the entry", e));
        }
        let rest: PutPayload = std::mem::take(&mut self.pending).into_iter().collect();
        self.pending_len = 0;
        if self.upload.is_none() {
            return self
                .inner
                .store
                .put_opts(&self.location, rest, PutOptions::default())
                .await
                .map(drop)
                .map_err(|e| self.fail("put", e));
        }
        if rest.content_length() > 0 {
            self.send(rest).await?;
        }
        while !self.tasks.is_empty() {
            self.join_one().await?;
        }
        let mut up = self.upload.take().expect("checked above");
        match up.complete().await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.upload = Some(up);
                Err(self.fail("complete the multipart upload", e))
            }
        }
    }

    /// Stops the upload: parts in flight are cancelled, uploaded parts discarded.
    async fn abort(&mut self) {
        if let Some(local) = self.local.as_mut() {
            local.discard().await;
        }
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        if let Some(mut up) = self.upload.take()
            && let Err(e) = up.abort().await
        {
            tracing::warn!(key = %self.key, object = %self.location, error = %e,
                "could not abort a multipart upload; a bucket lifecycle rule will remove its parts");
        }
    }
}

impl Drop for Uploader {
    /// A cancelled write (its future dropped) aborts its upload in the
    /// background, so no parts are left behind.
    fn drop(&mut self) {
        if let Some(mut up) = self.upload.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = up.abort().await;
            });
        }
    }
}
