//! Checks of bytes read from an entry file, and what is made of them: the
//! stored bytes of a whole file, its logical bytes, its value. Pure
//! functions; the reads that feed them are in `read.rs` and `range.rs`.

use std::io;

use bytes::{Bytes, BytesMut};
use etl_cache_core::backend::blocks::verify_framed;
use etl_cache_core::backend::format::{FormatError, Layout, TRAILER_LEN, Trailer};
use etl_cache_core::{EntryMeta, Value};

/// How an entry's payload is framed and checked: what its header and
/// trailer say.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Framing {
    /// The header's checksum, which the trailer and every block repeat.
    pub header_crc: u32,
    /// Format 1 (one checksum, in the trailer) or 2 (a checksum per block).
    pub layout: Layout,
    /// The trailer, as read when the entry was opened.
    pub trailer: Trailer,
}

pub(crate) fn invalid(e: FormatError) -> String {
    match e {
        FormatError::Truncated(n) => format!("entry is truncated (at least {n} bytes expected)"),
        FormatError::Invalid(s) => s,
    }
}

/// Checks the payload of an entry file read whole (`whole`), whose trailer
/// was decoded from these same bytes when it was opened, and returns its
/// stored bytes: a slice of `whole` when they lie in one piece (format 1, or
/// one block: every entry small enough to be read whole), else one copy.
pub(crate) fn check_whole_file(
    framing: &Framing,
    whole: Vec<u8>,
    header_len: u64,
) -> std::result::Result<Bytes, String> {
    let whole = Bytes::from(whole);
    let header_len = header_len as usize;
    let end = whole
        .len()
        .checked_sub(TRAILER_LEN)
        .filter(|&end| end >= header_len)
        .ok_or("the entry is shorter than its header and a trailer")?;
    verify_framed(
        framing.layout,
        framing.header_crc,
        whole.slice(header_len..end),
        &framing.trailer,
    )
    .map_err(|e| e.to_string())
}

/// The stored bytes of a checked payload, if its trailer is the one read
/// when the entry was opened.
pub(crate) fn same_trailer(
    framing: &Framing,
    (stored, trailer): (Bytes, Trailer),
) -> std::result::Result<Bytes, String> {
    if trailer != framing.trailer {
        return Err("the trailer changed while the entry was read".into());
    }
    Ok(stored)
}

/// The logical bytes of an entry from its checked stored bytes:
/// decompressed, their length checked.
pub(crate) fn logical_of(meta: &EntryMeta, stored: Bytes) -> std::result::Result<Bytes, String> {
    etl_cache_core::backend::codec::logical_bytes(meta, stored)
}

/// What a whole read hands out, made from an entry's checked stored bytes:
/// its value ([`decode_stored`]) or its logical bytes ([`logical_of`]).
pub(crate) type Decode<T> = fn(&EntryMeta, Bytes) -> std::result::Result<T, String>;

/// Decodes the checked stored bytes of an entry into its value.
pub(crate) fn decode_stored(meta: &EntryMeta, stored: Bytes) -> std::result::Result<Value, String> {
    logical_of(meta, stored).and_then(|logical| Value::from_stored(meta.kind, logical))
}

/// Pieces in one buffer: the piece itself when there is one.
pub(crate) fn concat(pieces: Vec<Bytes>) -> Bytes {
    match <[Bytes; 1]>::try_from(pieces) {
        Ok([one]) => one,
        Err(pieces) => {
            let mut all = BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
            for p in &pieces {
                all.extend_from_slice(p);
            }
            all.freeze()
        }
    }
}

pub(crate) enum CheckError {
    Io(io::Error),
    Corrupt(String),
}

impl CheckError {
    pub(crate) fn read(e: io::Error) -> CheckError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            CheckError::Corrupt("entry is shorter than its size".into())
        } else {
            CheckError::Io(e)
        }
    }
}
