//! Reads: an entry's header and trailer, whole values, and streams that
//! resume a cut body and decompress on the fly.
//!
//! Entries of both formats are read (see `etl-cache-core/FORMAT.md`); no
//! read hands out a byte before it was checked: whole values are checked
//! before they are decoded, streams block by block ([`Checked`]).
//!
//! Every read that takes more than one request pins the later ones to the
//! e-tag of the first, so the parts of two writes are never mixed.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use etl_cache_core::backend::blocks::{
    BlockChecker, BlockError, verify_framed, verify_payload, verify_payload_in_place,
};
use etl_cache_core::backend::codec::PayloadReader;
use etl_cache_core::backend::format::{
    DecodedHeader, FormatError, HEADER_FIXED_LEN, Header, Layout, MAGIC, TRAILER_LEN, Trailer,
};
use etl_cache_core::{Codec, EntryMeta, Error, GetStream, Result, Value};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{GetOptions, GetResult, ObjectMeta, ObjectStoreExt};
use tokio::sync::mpsc;

use crate::error::{ObjectError, ObjectErrorKind, is_not_found};
use crate::inner::Inner;
use crate::local::Standing;

/// Bytes read from the start of an object to find its header; small entries
/// come whole with it.
const PROBE_LEN: u64 = 64 * 1024;
/// How often a read starts over when the object is replaced between its
/// first request and the next.
const CHANGE_RETRIES: u32 = 3;
/// The smallest valid entry: a one-byte key, empty payload.
pub(crate) const MIN_ENTRY: u64 = (HEADER_FIXED_LEN + 1 + 4 + TRAILER_LEN) as u64;
/// How many empty chunks in a row a body may send before it counts as cut:
/// object_store's `LocalFileSystem` sends empty chunks without end for a
/// file cut short while it is read.
const MAX_EMPTY_CHUNKS: u32 = 64;
/// The first size of the buffer a decompressed chunk is read into; it
/// doubles up to the chunk size as bytes come.
const FIRST_DECODE_BUF: usize = 64 * 1024;
/// Format 1 entries (written by older versions) up to this size are read
/// whole and checked before a stream hands out their first byte; larger
/// ones are read twice: once to check them, once to stream them.
pub(crate) const LEGACY_WHOLE_LIMIT: u64 = 8 << 20;

/// An entry's metadata, read from its header and trailer.
#[derive(Debug)]
pub(crate) struct Probed {
    pub meta: EntryMeta,
    /// The version of the object it was read from.
    pub judged: ObjectMeta,
}

/// What stands at an entry's location.
#[derive(Debug)]
pub(crate) enum Probe {
    Missing,
    /// An object not written by the cache, or (on a local directory)
    /// something that is not a regular file, with why when it is known.
    Foreign(Option<String>),
    Entry(Box<Probed>),
    /// An entry that fails its checks: why, and the version judged.
    Corrupt {
        reason: String,
        judged: ObjectMeta,
    },
}

/// The first bytes of an object, and the version they come from.
struct Start {
    head: Bytes,
    size: u64,
    e_tag: Option<String>,
    version: Option<String>,
    meta: ObjectMeta,
}

enum Bad {
    Foreign,
    Corrupt(String),
}

fn reason(e: FormatError) -> String {
    match e {
        FormatError::Truncated(n) => format!("entry is truncated (at least {n} bytes expected)"),
        FormatError::Invalid(s) => s,
    }
}

/// Checks a trailer against its header and the object's size; returns the
/// metadata and the trailer.
fn check_trailer(
    header: &DecodedHeader,
    trailer: &[u8],
    size: u64,
) -> std::result::Result<(EntryMeta, Trailer), Bad> {
    let trailer = Trailer::decode(trailer).map_err(|e| Bad::Corrupt(reason(e)))?;
    let meta = EntryMeta::from_decoded_parts(header.clone(), trailer, size)
        .map_err(|e| Bad::Corrupt(reason(e)))?;
    Ok((meta, trailer))
}

fn is_ours(head: &[u8], size: u64) -> bool {
    size >= 4 && head.len() >= 4 && head[..4] == MAGIC
}

/// Verifies and decodes a whole object read into `whole`: its payload (of
/// either format) is checked first, then decompressed; returns its logical
/// bytes.
fn decode_logical(
    meta: &EntryMeta,
    header: &DecodedHeader,
    trailer: &Trailer,
    whole: Bytes,
) -> std::result::Result<Bytes, String> {
    let one_piece = header
        .layout
        .block_size()
        .is_none_or(|b| meta.stored_len <= b.get());
    // One piece (format 1, or one block: every small entry): checked where
    // it lies, against the trailer decoded from the same bytes. Else in
    // place when the buffer is ours alone (no copy), or as slices joined.
    let verified = if one_piece {
        let end = whole.len() - TRAILER_LEN;
        verify_framed(
            header.layout,
            header.crc,
            whole.slice(header.len..end),
            trailer,
        )
    } else {
        match whole.try_into_mut() {
            Ok(mut all) => {
                let framed = all.split_off(header.len);
                verify_payload_in_place(header.layout, header.crc, framed).map(|(stored, _)| stored)
            }
            Err(whole) => verify_payload(header.layout, header.crc, whole.slice(header.len..))
                .map(|v| v.into_bytes()),
        }
    };
    let stored = verified.map_err(|e| e.to_string())?;
    let logical = if meta.codec == Codec::None {
        stored
    } else {
        let mut out = Vec::with_capacity(meta.logical_len.min(1 << 30) as usize);
        PayloadReader::new(meta.codec, &stored[..])
            .and_then(|mut r| r.read_to_end(&mut out))
            .map_err(|e| format!("payload does not decompress: {e}"))?;
        Bytes::from(out)
    };
    if logical.len() as u64 != meta.logical_len {
        return Err(format!(
            "payload is {} bytes after decompression, {} expected",
            logical.len(),
            meta.logical_len
        ));
    }
    Ok(logical)
}

/// [`decode_logical`], then the value of the entry's kind.
fn decode_value(
    meta: &EntryMeta,
    header: &DecodedHeader,
    trailer: &Trailer,
    whole: Bytes,
) -> std::result::Result<Value, String> {
    decode_logical(meta, header, trailer, whole)
        .and_then(|logical| Value::from_stored(meta.kind, logical))
}

impl Inner {
    /// Wraps an [`ObjectError`] of this store into a cache error.
    pub(crate) fn wrap(&self, e: ObjectError) -> Error {
        Error::Backend {
            backend: self.name,
            key: Error::display_key(&e.key),
            source: Box::new(e),
        }
    }

    pub(crate) fn not_an_entry(&self, key: &str, location: &Path) -> Error {
        self.not_an_entry_because("read", key, location, None)
    }

    /// A [`ObjectErrorKind::NotAnEntry`] error, with why when it is more
    /// than a missing header (a link, a FIFO, a directory).
    pub(crate) fn not_an_entry_because(
        &self,
        op: &'static str,
        key: &str,
        location: &Path,
        why: Option<String>,
    ) -> Error {
        let source = why.map(|w| Box::new(io::Error::other(w)) as _);
        self.error(ObjectErrorKind::NotAnEntry, op, key, location, source)
    }

    /// Looks at what stands at an entry's location before a read: `true`
    /// when it may be read, `false` when nothing is there, an error when it
    /// is not an entry (on a local directory: a link, a FIFO, a directory).
    async fn readable(&self, key: &str, location: &Path) -> Result<bool> {
        match self.standing(location).await {
            Standing::File | Standing::Unknown => Ok(true),
            Standing::Missing => Ok(false),
            Standing::Other { why, .. } => {
                Err(self.not_an_entry_because("read", key, location, Some(why)))
            }
        }
    }

    /// The first `len` bytes of the object at `location`; `None` when there
    /// is none.
    async fn read_start(&self, key: &str, location: &Path, len: u64) -> Result<Option<Start>> {
        let opts = GetOptions::new().with_range(Some(0..len));
        let res = match self.store.get_opts(location, opts).await {
            Ok(r) => r,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.fail("get", key, location, e)),
        };
        let size = res.meta.size;
        let e_tag = res.meta.e_tag.clone();
        let version = res.meta.version.clone();
        let meta = res.meta.clone();
        let head = match res.bytes().await {
            Ok(b) => b,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.fail("get", key, location, e)),
        };
        Ok(Some(Start {
            head,
            size,
            e_tag,
            version,
            meta,
        }))
    }

    /// Whether the object at `location` is an entry of this cache: it starts
    /// with the entry magic (a ranged get of four bytes) and, on a local
    /// directory, it is a regular file. Damaged entries with their magic
    /// intact are entries; a vanished object is not.
    pub(crate) async fn is_entry(&self, key: &str, location: &Path) -> Result<bool> {
        match self.standing(location).await {
            Standing::File | Standing::Unknown => {}
            Standing::Missing | Standing::Other { .. } => return Ok(false),
        }
        Ok(self
            .read_start(key, location, MAGIC.len() as u64)
            .await?
            .is_some_and(|s| is_ours(&s.head, s.size)))
    }

    /// Checks the framing of an object (either format): its header, its
    /// trailer, its size and that its name is the one its key maps to.
    /// Returns the metadata and the header.
    fn parse(
        &self,
        location: &Path,
        head: &[u8],
        trailer: &[u8],
        size: u64,
    ) -> std::result::Result<(EntryMeta, DecodedHeader, Trailer), Bad> {
        let header = self.parse_header(location, head, size)?;
        check_trailer(&header, trailer, size).map(|(meta, trailer)| (meta, header, trailer))
    }

    /// Checks an object's header (either format) and that its name is the
    /// one its key maps to.
    fn parse_header(
        &self,
        location: &Path,
        head: &[u8],
        size: u64,
    ) -> std::result::Result<DecodedHeader, Bad> {
        if !is_ours(head, size) {
            return Err(Bad::Foreign);
        }
        if size < MIN_ENTRY {
            return Err(Bad::Corrupt(format!("entry is truncated ({size} bytes)")));
        }
        let header = Header::decode_any(head).map_err(|e| Bad::Corrupt(reason(e)))?;
        if self.layout.entry(&header.header.key) != *location {
            return Err(Bad::Corrupt(
                "the object's name does not match the key in its header".into(),
            ));
        }
        Ok(header)
    }

    /// Reads the metadata of the object at `location` (the entry of `key`,
    /// or a listed object): its first bytes, and its trailer pinned to the
    /// same version. Nothing is removed: a corrupt entry is reported with
    /// the version judged (see [`Inner::remove_judged`]).
    pub(crate) async fn probe(&self, key: &str, location: &Path) -> Result<Probe> {
        match self.standing(location).await {
            Standing::File | Standing::Unknown => {}
            Standing::Missing => return Ok(Probe::Missing),
            Standing::Other { why, .. } => return Ok(Probe::Foreign(Some(why))),
        }
        for _ in 0..CHANGE_RETRIES {
            let Some(Start {
                head,
                size,
                e_tag,
                version,
                meta: judged,
            }) = self.read_start(key, location, PROBE_LEN).await?
            else {
                return Ok(Probe::Missing);
            };
            if !is_ours(&head, size) {
                return Ok(Probe::Foreign(None));
            }
            if size < MIN_ENTRY {
                return Ok(Probe::Corrupt {
                    reason: format!("entry is truncated ({size} bytes)"),
                    judged,
                });
            }
            let trailer = if size <= head.len() as u64 {
                head.slice((size as usize - TRAILER_LEN)..size as usize)
            } else {
                let opts = GetOptions::new()
                    .with_range(Some(size - TRAILER_LEN as u64..size))
                    .with_if_match(e_tag.clone())
                    .with_version(version.clone());
                let got = match self.store.get_opts(location, opts).await {
                    Ok(r) => r.bytes().await,
                    Err(e) => Err(e),
                };
                match got {
                    Ok(b) => b,
                    Err(object_store::Error::Precondition { .. }) => continue,
                    Err(e) if is_not_found(&e) => return Ok(Probe::Missing),
                    Err(e) => return Err(self.fail("get", key, location, e)),
                }
            };
            return match self.parse(location, &head, &trailer, size) {
                Ok((meta, ..)) => Ok(Probe::Entry(Box::new(Probed { meta, judged }))),
                Err(Bad::Foreign) => Ok(Probe::Foreign(None)),
                Err(Bad::Corrupt(reason)) => Ok(Probe::Corrupt { reason, judged }),
            };
        }
        Err(self.error(ObjectErrorKind::Changed, "get", key, location, None))
    }

    /// Reads and verifies a whole value. An expired entry is a miss and a
    /// corrupt one an error; neither is removed (see [`crate::ObjectCache`]).
    pub(crate) async fn read_value(&self, key: &str) -> Result<Option<(EntryMeta, Value)>> {
        self.read_decoded(key, decode_value).await
    }

    /// Reads and verifies a whole entry's logical bytes, in one request (one
    /// version), as [`Inner::read_value`].
    pub(crate) async fn read_logical(&self, key: &str) -> Result<Option<(EntryMeta, Bytes)>> {
        self.read_decoded(key, decode_logical).await
    }

    async fn read_decoded<T: Send + 'static>(
        &self,
        key: &str,
        decode: fn(&EntryMeta, &DecodedHeader, &Trailer, Bytes) -> std::result::Result<T, String>,
    ) -> Result<Option<(EntryMeta, T)>> {
        let location = self.layout.entry(key);
        if !self.readable(key, &location).await? {
            return Ok(None);
        }
        let res = match self.store.get(&location).await {
            Ok(r) => r,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.fail("get", key, &location, e)),
        };
        let size = res.meta.size;
        let bytes = res
            .bytes()
            .await
            .map_err(|e| self.fail("get", key, &location, e))?;
        if bytes.len() as u64 != size {
            return Err(self.error(ObjectErrorKind::Truncated, "get", key, &location, None));
        }
        if !is_ours(&bytes, size) {
            return Err(self.not_an_entry(key, &location));
        }
        if size < MIN_ENTRY {
            return Err(self.corrupt(key, format!("entry is truncated ({size} bytes)")));
        }
        let trailer = &bytes[bytes.len() - TRAILER_LEN..];
        let (meta, header, trailer) = match self.parse(&location, &bytes, trailer, size) {
            Ok(x) => x,
            Err(Bad::Foreign) => return Err(self.not_an_entry(key, &location)),
            Err(Bad::Corrupt(why)) => return Err(self.corrupt(key, why)),
        };
        if meta.is_expired(self.config.clock.now()) {
            etl_cache_core::backend::obs::note(etl_cache_core::backend::obs::Outcome::Expired);
            return Ok(None);
        }
        let decoded = if !crate::inner::work_inline(meta.codec, meta.stored_len as usize) {
            let m = meta.clone();
            tokio::task::spawn_blocking(move || decode(&m, &header, &trailer, bytes))
                .await
                .map_err(|e| self.corrupt(key, format!("decoding failed: {e}")))?
        } else {
            decode(&meta, &header, &trailer, bytes)
        };
        match decoded {
            Ok(v) => Ok(Some((meta, v))),
            Err(why) => Err(self.corrupt(key, why)),
        }
    }

    /// Opens a stream of an entry's logical bytes in chunks of `chunk_size`.
    /// No byte is handed out before it was checked (see [`Checked`]).
    pub(crate) async fn open_stream(
        self: &Arc<Self>,
        key: &str,
        chunk_size: usize,
    ) -> Result<Option<GetStream>> {
        let location = self.layout.entry(key);
        if !self.readable(key, &location).await? {
            return Ok(None);
        }
        for _ in 0..CHANGE_RETRIES {
            // One request for the body. An uncompressed entry's lengths follow
            // from the object's size and its header, so its trailer is read
            // and checked where the body ends; only a compressed entry (whose
            // logical length is in the trailer) needs a second request, a
            // range pinned to the body's e-tag.
            let res = match self.store.get(&location).await {
                Ok(r) => r,
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(self.fail("get", key, &location, e)),
            };
            let mut body = Body::new(self.clone(), key, location.clone(), res);
            let size = body.size;
            let mut buf = BytesMut::new();
            loop {
                if buf.len() >= 4 && buf[..4] != MAGIC {
                    break;
                }
                match Header::decode_any(&buf) {
                    Err(FormatError::Truncated(_)) if (buf.len() as u64) < size => {
                        match body.next().await.map_err(|e| self.wrap(e))? {
                            Some(b) => buf.extend_from_slice(&b),
                            None => break,
                        }
                    }
                    _ => break,
                }
            }
            let header = match self.parse_header(&location, &buf, size) {
                Ok(x) => x,
                Err(Bad::Foreign) => return Err(self.not_an_entry(key, &location)),
                Err(Bad::Corrupt(why)) => return Err(self.corrupt(key, why)),
            };
            let checked = if buf.len() as u64 >= size {
                let t = &buf[size as usize - TRAILER_LEN..size as usize];
                check_trailer(&header, t, size).map(|(meta, t)| (meta, Some(t)))
            } else if header.header.codec == Codec::None {
                EntryMeta::from_decoded_header(header.clone(), size)
                    .map(|meta| (meta, None))
                    .map_err(|e| Bad::Corrupt(reason(e)))
            } else {
                let t = match body.trailer().await {
                    Ok(t) => t,
                    Err(e) if e.kind == ObjectErrorKind::Changed => continue,
                    Err(e) => return Err(self.wrap(e)),
                };
                check_trailer(&header, &t, size).map(|(meta, t)| (meta, Some(t)))
            };
            let (meta, trailer) = match checked {
                Ok(x) => x,
                Err(Bad::Foreign) => return Err(self.not_an_entry(key, &location)),
                Err(Bad::Corrupt(why)) => return Err(self.corrupt(key, why)),
            };
            if meta.is_expired(self.config.clock.now()) {
                etl_cache_core::backend::obs::note(etl_cache_core::backend::obs::Outcome::Expired);
                return Ok(None);
            }
            let first = buf.split_off(header.len).freeze();
            let framed = Framed {
                body,
                first: Some(first),
            };
            let source = Checked::new(framed, header, meta.clone(), trailer);
            let stream = if meta.codec == Codec::None {
                plain_stream(source, chunk_size)
            } else {
                decoded_stream(source, meta.clone(), chunk_size)
            };
            return Ok(Some(GetStream::new(meta, stream)));
        }
        Err(self.error(ObjectErrorKind::Changed, "get", key, &location, None))
    }
}

/// The body of one version of an object, resumed with ranged gets pinned to
/// its e-tag when the connection is cut.
pub(crate) struct Body {
    inner: Arc<Inner>,
    key: String,
    location: Path,
    stream: Option<BoxStream<'static, object_store::Result<Bytes>>>,
    pos: u64,
    size: u64,
    e_tag: Option<String>,
    version: Option<String>,
    resumes: u32,
    /// Empty chunks received in a row.
    empty_run: u32,
}

impl Body {
    fn new(inner: Arc<Inner>, key: &str, location: Path, res: GetResult) -> Body {
        Body {
            inner,
            key: key.to_owned(),
            location,
            pos: res.range.start,
            size: res.meta.size,
            e_tag: res.meta.e_tag.clone(),
            version: res.meta.version.clone(),
            resumes: 0,
            empty_run: 0,
            stream: Some(res.into_stream()),
        }
    }

    fn error(&self, kind: ObjectErrorKind, source: Option<object_store::Error>) -> ObjectError {
        self.inner.object_error(
            kind,
            "read body",
            &self.key,
            &self.location,
            source.map(|e| Box::new(e) as _),
        )
    }

    /// Whether later requests can be pinned to this version (an e-tag or a
    /// version id).
    fn pinnable(&self) -> bool {
        self.e_tag.is_some() || self.version.is_some()
    }

    /// This version of the object again, from `start`: a new request
    /// pinned to its e-tag (or version).
    async fn reopen(&mut self, start: u64) -> std::result::Result<Body, ObjectError> {
        let opts = self.pinned().with_range(Some(start..self.size));
        match self.inner.store.get_opts(&self.location, opts).await {
            Ok(r) if r.meta.size == self.size && r.range.start == start => Ok(Body::new(
                self.inner.clone(),
                &self.key,
                self.location.clone(),
                r,
            )),
            Ok(_) | Err(object_store::Error::Precondition { .. }) => {
                Err(self.error(ObjectErrorKind::Changed, None))
            }
            Err(e) if is_not_found(&e) => Err(self.error(ObjectErrorKind::Changed, Some(e))),
            Err(e) => Err(self.error(crate::error::classify(&e), Some(e))),
        }
    }

    fn pinned(&self) -> GetOptions {
        GetOptions::new()
            .with_if_match(self.e_tag.clone())
            .with_version(self.version.clone())
    }

    /// The last bytes of this version of the object.
    async fn trailer(&mut self) -> std::result::Result<Bytes, ObjectError> {
        let opts = self
            .pinned()
            .with_range(Some(self.size - TRAILER_LEN as u64..self.size));
        let got = match self.inner.store.get_opts(&self.location, opts).await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        got.map_err(|e| match e {
            object_store::Error::Precondition { .. } => self.error(ObjectErrorKind::Changed, None),
            e if is_not_found(&e) => self.error(ObjectErrorKind::Changed, Some(e)),
            e => self.error(crate::error::classify(&e), Some(e)),
        })
    }

    /// The next bytes of the body; `None` at its end.
    pub(crate) async fn next(&mut self) -> std::result::Result<Option<Bytes>, ObjectError> {
        loop {
            if self.pos >= self.size {
                return Ok(None);
            }
            let cause = match self.stream.as_mut() {
                None => None,
                Some(s) => match s.next().await {
                    Some(Ok(b)) if b.is_empty() => {
                        // A few empty chunks are harmless; a run of them is
                        // a body that stopped short (a file cut while it is
                        // read): resume it, which fails if the object changed.
                        self.empty_run += 1;
                        if self.empty_run <= MAX_EMPTY_CHUNKS {
                            continue;
                        }
                        None
                    }
                    Some(Ok(mut b)) => {
                        self.empty_run = 0;
                        let left = self.size - self.pos;
                        if b.len() as u64 > left {
                            b.truncate(left as usize);
                        }
                        self.pos += b.len() as u64;
                        return Ok(Some(b));
                    }
                    Some(Err(e)) => Some(e),
                    None => None,
                },
            };
            self.stream = None;
            self.resume(cause).await?;
        }
    }

    /// Asks for the rest of this version of the object.
    async fn resume(
        &mut self,
        cause: Option<object_store::Error>,
    ) -> std::result::Result<(), ObjectError> {
        if self.e_tag.is_none() && self.version.is_none() {
            return Err(self.error(ObjectErrorKind::Truncated, cause));
        }
        if self.resumes >= self.inner.config.resume_attempts {
            return Err(self.error(ObjectErrorKind::Truncated, cause));
        }
        self.resumes += 1;
        self.empty_run = 0;
        tracing::warn!(
            key = %self.key,
            object = %self.location,
            at = self.pos,
            of = self.size,
            attempt = self.resumes,
            cause = cause.as_ref().map(|e| e.to_string()).unwrap_or_else(|| "body ended early".into()),
            "resuming a cut read with a ranged get pinned to the e-tag"
        );
        tokio::time::sleep(Duration::from_millis(50 * u64::from(self.resumes))).await;
        let opts = self.pinned().with_range(Some(self.pos..self.size));
        match self.inner.store.get_opts(&self.location, opts).await {
            Ok(r) if r.meta.size == self.size && r.range.start == self.pos => {
                self.stream = Some(r.into_stream());
                Ok(())
            }
            Ok(_) => Err(self.error(ObjectErrorKind::Changed, None)),
            Err(object_store::Error::Precondition { .. }) => {
                Err(self.error(ObjectErrorKind::Changed, None))
            }
            Err(e) if is_not_found(&e) => Err(self.error(ObjectErrorKind::Changed, Some(e))),
            Err(e) => Err(self.error(crate::error::classify(&e), Some(e))),
        }
    }
}

/// Everything of one version of an object after its header: what came with
/// the header, then the rest of the body.
struct Framed {
    body: Body,
    first: Option<Bytes>,
}

impl Framed {
    async fn next(&mut self) -> std::result::Result<Option<Bytes>, ObjectError> {
        if let Some(b) = self.first.take()
            && !b.is_empty()
        {
            return Ok(Some(b));
        }
        self.body.next().await
    }
}

/// Why a stream stopped.
enum Fail {
    /// The store failed, or the object changed or was cut.
    Read(Box<ObjectError>),
    /// The entry failed a check.
    Corrupt(String),
}

impl From<ObjectError> for Fail {
    fn from(e: ObjectError) -> Fail {
        Fail::Read(Box::new(e))
    }
}

impl From<BlockError> for Fail {
    fn from(e: BlockError) -> Fail {
        Fail::Corrupt(e.to_string())
    }
}

/// Checks that the trailer found at the end of a payload is the one the
/// stream began with (read first, or derived from the object's size).
fn check_end(
    header: &DecodedHeader,
    meta: &EntryMeta,
    read_first: Option<&Trailer>,
    found: Trailer,
) -> std::result::Result<(), Fail> {
    if read_first.is_some_and(|t| *t != found) {
        return Err(Fail::Corrupt(
            "the trailer at the end differs from the one read first".into(),
        ));
    }
    match EntryMeta::from_decoded_parts(header.clone(), found, meta.size) {
        Ok(m) if m == *meta => Ok(()),
        Ok(_) => Err(Fail::Corrupt(
            "the trailer does not match the entry's size".into(),
        )),
        Err(e) => Err(Fail::Corrupt(reason(e))),
    }
}

/// The stored bytes of an entry, handed out only once they were checked.
///
/// - Format 2: the framed bytes go through a [`BlockChecker`]; a block is
///   handed out once it matched its checksum, the last one once the trailer
///   was checked too. It holds one block at most.
/// - Format 1 (entries written by older versions) has one checksum, at the
///   end. Up to [`LEGACY_WHOLE_LIMIT`] the payload is read whole and checked
///   before its first byte is handed out. A larger one is read twice: a
///   first pass checks it in bounded memory, then a second request, pinned
///   to the e-tag (or version) of the first, streams it. (An object without
///   either cannot be pinned and is read whole.)
struct Checked {
    framed: Framed,
    header: DecodedHeader,
    meta: EntryMeta,
    /// The trailer, when it was read before the stream began.
    trailer: Option<Trailer>,
    state: CheckState,
}

enum CheckState {
    /// Format 2: the checker, and how the framed bytes ended.
    Blocks(Box<BlockChecker>, BlocksEnd),
    /// Format 1, not read yet.
    Legacy,
    /// A format 1 payload read whole and checked.
    Whole(Option<Bytes>),
    /// A format 1 payload checked by a first pass, read again: stored bytes
    /// left, their checksum so far, the checksum the first pass found.
    Again { left: u64, crc: u32, expected: u32 },
}

/// How the framed bytes of a format 2 stream ended, if they did.
enum BlocksEnd {
    Open,
    /// The last block and the trailer checked.
    Ended,
    /// A check or a read failed: reported once the blocks checked before
    /// it were handed out.
    Failed(Option<Fail>),
}

impl Checked {
    fn new(
        framed: Framed,
        header: DecodedHeader,
        meta: EntryMeta,
        trailer: Option<Trailer>,
    ) -> Self {
        let state = match header.layout {
            Layout::Blocks(size) => CheckState::Blocks(
                Box::new(BlockChecker::new(header.crc, size)),
                BlocksEnd::Open,
            ),
            _ => CheckState::Legacy,
        };
        Checked {
            framed,
            header,
            meta,
            trailer,
            state,
        }
    }

    /// The next checked stored bytes; `None` once all were handed out.
    async fn next(&mut self) -> std::result::Result<Option<Bytes>, Fail> {
        loop {
            match &mut self.state {
                CheckState::Blocks(checker, end) => {
                    // Blocks checked before a failure are still handed out.
                    if let Some(b) = checker.pop() {
                        return Ok(Some(b));
                    }
                    match end {
                        BlocksEnd::Open => {}
                        BlocksEnd::Ended => return Ok(None),
                        BlocksEnd::Failed(fail) => {
                            let fail = fail.take().unwrap_or_else(|| {
                                Fail::Corrupt("the stream already failed".into())
                            });
                            return Err(fail);
                        }
                    }
                    let (stepped, ended) = match self.framed.next().await {
                        Ok(Some(b)) => (checker.push(b).map_err(Fail::from), false),
                        Ok(None) => {
                            let checked = checker.finish().map_err(Fail::from);
                            let checked = checked.and_then(|found| {
                                check_end(&self.header, &self.meta, self.trailer.as_ref(), found)
                            });
                            (checked, true)
                        }
                        Err(e) => (Err(Fail::from(e)), false),
                    };
                    match stepped {
                        Ok(()) if ended => *end = BlocksEnd::Ended,
                        Ok(()) => {}
                        Err(fail) => {
                            if ended {
                                // The last block checked, the trailer not:
                                // it is not handed out.
                                while checker.pop().is_some() {}
                            }
                            *end = BlocksEnd::Failed(Some(fail));
                        }
                    }
                }
                CheckState::Legacy => self.check_legacy().await?,
                CheckState::Whole(b) => return Ok(b.take()),
                CheckState::Again {
                    left,
                    crc,
                    expected,
                } => {
                    if *left == 0 {
                        // Pinned to the version checked, so this holds
                        // unless the store served other bytes for it.
                        if *crc != *expected {
                            return Err(Fail::Corrupt(
                                "payload checksum mismatch on the second read".into(),
                            ));
                        }
                        return Ok(None);
                    }
                    let Some(mut b) = self.framed.next().await? else {
                        let e = self.framed.body.error(ObjectErrorKind::Truncated, None);
                        return Err(Fail::from(e));
                    };
                    if b.len() as u64 > *left {
                        b.truncate(*left as usize);
                    }
                    *left -= b.len() as u64;
                    *crc = crc32c::crc32c_append(*crc, &b);
                    return Ok(Some(b));
                }
            }
        }
    }

    /// Checks a format 1 payload before any of it is handed out.
    async fn check_legacy(&mut self) -> std::result::Result<(), Fail> {
        let framed_len = self.meta.size - self.header.len as u64;
        if framed_len <= LEGACY_WHOLE_LIMIT || !self.framed.body.pinnable() {
            let cap = framed_len.min(LEGACY_WHOLE_LIMIT) as usize;
            let mut all = BytesMut::with_capacity(cap);
            while let Some(b) = self.framed.next().await? {
                all.extend_from_slice(&b);
            }
            let (stored, found) = verify_payload_in_place(Layout::Whole, self.header.crc, all)?;
            check_end(&self.header, &self.meta, self.trailer.as_ref(), found)?;
            self.state = CheckState::Whole((!stored.is_empty()).then_some(stored));
            return Ok(());
        }
        // First pass: the payload's checksum, holding back the last bytes
        // read (the trailer once the body ends).
        let (mut crc, mut len) = (0u32, 0u64);
        let mut tail = BytesMut::new();
        while let Some(b) = self.framed.next().await? {
            let over = (tail.len() + b.len()).saturating_sub(TRAILER_LEN);
            let from_tail = over.min(tail.len());
            crc = crc32c::crc32c_append(crc, &tail.split_to(from_tail));
            let from_b = over - from_tail;
            crc = crc32c::crc32c_append(crc, &b[..from_b]);
            tail.extend_from_slice(&b[from_b..]);
            len += over as u64;
        }
        let found = Trailer::decode(&tail).map_err(|e| Fail::Corrupt(reason(e)))?;
        if found.header_crc != self.header.crc {
            return Err(Fail::Corrupt("trailer belongs to another header".into()));
        }
        if len != found.stored_len || crc != found.payload_crc {
            return Err(Fail::Corrupt("payload checksum mismatch".into()));
        }
        check_end(&self.header, &self.meta, self.trailer.as_ref(), found)?;
        let body = self.framed.body.reopen(self.header.len as u64).await?;
        self.framed = Framed { body, first: None };
        self.state = CheckState::Again {
            left: found.stored_len,
            crc: 0,
            expected: found.payload_crc,
        };
        Ok(())
    }

    /// An I/O error for the stream, carrying the cache error.
    fn to_io(&self, fail: Fail) -> io::Error {
        let inner = &self.framed.body.inner;
        match fail {
            Fail::Read(e) => inner.to_io(*e),
            Fail::Corrupt(why) => io::Error::new(
                io::ErrorKind::InvalidData,
                inner.corrupt(&self.framed.body.key, why),
            ),
        }
    }
}

impl Inner {
    /// An I/O error for a stream, carrying the cache error (so that
    /// `stream_read_error` and [`ObjectError::find_io`] get it back).
    fn to_io(&self, e: ObjectError) -> io::Error {
        io::Error::new(e.io_kind(), self.wrap(e))
    }
}

/// Cuts a byte stream into chunks of one size: zero-copy when a piece
/// holds a whole chunk, one copy into an exact-size buffer otherwise.
struct Rechunker {
    parts: VecDeque<Bytes>,
    len: usize,
    chunk: usize,
}

impl Rechunker {
    fn new(chunk: usize) -> Rechunker {
        Rechunker {
            parts: VecDeque::new(),
            len: 0,
            chunk,
        }
    }

    fn push(&mut self, b: Bytes) {
        self.len += b.len();
        self.parts.push_back(b);
    }

    /// A chunk of exactly `chunk` bytes, if that many are buffered.
    fn full(&mut self) -> Option<Bytes> {
        (self.len >= self.chunk).then(|| self.take(self.chunk))
    }

    /// Whatever is buffered (the last, short chunk).
    fn rest(&mut self) -> Option<Bytes> {
        (self.len > 0).then(|| self.take(self.len))
    }

    fn take(&mut self, n: usize) -> Bytes {
        self.len -= n;
        let front = self.parts.front_mut().expect("n bytes are buffered");
        if front.len() >= n {
            let out = front.split_to(n);
            if front.is_empty() {
                self.parts.pop_front();
            }
            return out;
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            let need = n - out.len();
            let front = self.parts.front_mut().expect("n bytes are buffered");
            if front.len() <= need {
                out.extend_from_slice(front);
                self.parts.pop_front();
            } else {
                out.extend_from_slice(&front.split_to(need));
            }
        }
        out.freeze()
    }
}

/// An uncompressed payload: cut into chunks as it is checked.
fn plain_stream(src: Checked, chunk_size: usize) -> BoxStream<'static, io::Result<Bytes>> {
    struct State {
        src: Checked,
        chunks: Rechunker,
        done: bool,
    }
    let st = State {
        src,
        chunks: Rechunker::new(chunk_size),
        done: false,
    };
    futures::stream::unfold(st, move |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            if let Some(out) = st.chunks.full() {
                return Some((Ok(out), st));
            }
            match st.src.next().await {
                Ok(Some(b)) => st.chunks.push(b),
                Ok(None) => {
                    st.done = true;
                    let out = st.chunks.rest()?;
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

/// Reads the checked stored bytes from a blocking thread, pulling them on
/// demand.
struct BlockingSource {
    src: Checked,
    handle: tokio::runtime::Handle,
    cur: Bytes,
}

impl Read for BlockingSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cur.is_empty() {
            match self.handle.block_on(self.src.next()) {
                Ok(Some(b)) => self.cur = b,
                Ok(None) => return Ok(0),
                Err(e) => return Err(self.src.to_io(e)),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

/// A compressed payload: its checked stored bytes decompressed on a
/// blocking thread (pull based, so memory stays at a few chunks whatever
/// the ratio) and sent through a bounded channel.
fn decoded_stream(
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
        let source = BlockingSource {
            src,
            handle,
            cur: Bytes::new(),
        };
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
