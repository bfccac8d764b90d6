//! Reads: an entry's header and trailer, whole values, and streams that
//! resume a cut body and decompress on the fly.
//!
//! Entries of both formats are read (see `etl-cache-core/FORMAT.md`); no
//! read hands out a byte before it was checked: whole values are checked
//! before they are decoded, streams block by block ([`Checked`]).
//!
//! Every read that takes more than one request pins the later ones to the
//! e-tag of the first, so the parts of two writes are never mixed.

use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use etl_cache_core::backend::blocks::{verify_framed, verify_payload, verify_payload_in_place};
use etl_cache_core::backend::format::{
    DecodedHeader, FormatError, HEADER_FIXED_LEN, Header, MAGIC, TRAILER_LEN, Trailer,
};
use etl_cache_core::{Codec, EntryMeta, Error, GetStream, Result, Value};
use object_store::path::Path;
use object_store::{GetOptions, ObjectMeta, ObjectStoreExt};

use crate::body::Body;
use crate::checked::{Checked, Framed, reason};
use crate::chunks::{decoded_stream, plain_stream};
use crate::error::{ObjectErrorKind, is_not_found};
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
    etl_cache_core::backend::codec::logical_bytes(meta, stored)
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
    /// A check's verdict on the object at `location` as the read's answer:
    /// a foreign object is not an entry, a bad one is corrupt.
    fn judged<T>(
        &self,
        key: &str,
        location: &Path,
        checked: std::result::Result<T, Bad>,
    ) -> Result<T> {
        checked.map_err(|bad| match bad {
            Bad::Foreign => self.not_an_entry(key, location),
            Bad::Corrupt(why) => self.corrupt(key, why),
        })
    }

    /// Whether `meta` has expired; when it has, the call's span says so.
    fn expired(&self, meta: &EntryMeta) -> bool {
        let expired = meta.is_expired(self.config.clock.now());
        if expired {
            etl_cache_core::backend::obs::note(etl_cache_core::backend::obs::Outcome::Expired);
        }
        expired
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
        self.wrap(self.object_error(ObjectErrorKind::NotAnEntry, op, key, location, source))
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
        Err(self.wrap(self.object_error(ObjectErrorKind::Changed, "get", key, location, None)))
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
            return Err(self.wrap(self.object_error(
                ObjectErrorKind::Truncated,
                "get",
                key,
                &location,
                None,
            )));
        }
        if !is_ours(&bytes, size) {
            return Err(self.not_an_entry(key, &location));
        }
        if size < MIN_ENTRY {
            return Err(self.corrupt(key, format!("entry is truncated ({size} bytes)")));
        }
        let trailer = &bytes[bytes.len() - TRAILER_LEN..];
        let (meta, header, trailer) =
            self.judged(key, &location, self.parse(&location, &bytes, trailer, size))?;
        if self.expired(&meta) {
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
            let header = self.judged(key, &location, self.parse_header(&location, &buf, size))?;
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
            let (meta, trailer) = self.judged(key, &location, checked)?;
            if self.expired(&meta) {
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
        Err(self.wrap(self.object_error(ObjectErrorKind::Changed, "get", key, &location, None)))
    }
}
