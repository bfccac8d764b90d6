//! The stored bytes of one entry, handed out only once they were checked:
//! block by block for format 2, after a first checking pass for format 1.

use std::io;

use bytes::{Bytes, BytesMut};
use etl_cache_core::EntryMeta;
use etl_cache_core::backend::blocks::{BlockChecker, BlockError, verify_payload_in_place};
use etl_cache_core::backend::format::{DecodedHeader, FormatError, Layout, TRAILER_LEN, Trailer};

use crate::body::Body;
use crate::error::{ObjectError, ObjectErrorKind};

/// Format 1 entries (written by older versions) up to this size are read
/// whole and checked before a stream hands out their first byte; larger
/// ones are read twice: once to check them, once to stream them.
pub(crate) const LEGACY_WHOLE_LIMIT: u64 = 8 << 20;

/// Why a format error makes an entry corrupt, in words.
pub(crate) fn reason(e: FormatError) -> String {
    match e {
        FormatError::Truncated(n) => format!("entry is truncated (at least {n} bytes expected)"),
        FormatError::Invalid(s) => s,
    }
}

/// Everything of one version of an object after its header: what came with
/// the header, then the rest of the body.
pub(crate) struct Framed {
    pub(crate) body: Body,
    pub(crate) first: Option<Bytes>,
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
pub(crate) enum Fail {
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
pub(crate) struct Checked {
    pub(crate) framed: Framed,
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
    pub(crate) fn new(
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
    pub(crate) async fn next(&mut self) -> std::result::Result<Option<Bytes>, Fail> {
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
    pub(crate) fn to_io(&self, fail: Fail) -> io::Error {
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
