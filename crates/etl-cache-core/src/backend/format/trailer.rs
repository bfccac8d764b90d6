//! The trailer written after an entry's payload, and the entry's metadata
//! read from its header and trailer together.

use super::header::{DecodedHeader, Header};
use super::layout::{FormatError, Layout, TRAILER_LEN, TRAILER_MAGIC};
use crate::{Codec, EntryMeta};

/// The part of an entry's metadata written after the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// Length of the payload after decompression.
    pub logical_len: u64,
    /// Length of the payload as stored (in format 2, without the block
    /// checksums).
    pub stored_len: u64,
    /// Format 1: crc32c of the stored payload. Format 2: crc32c of the
    /// list of block checksums (see [`crate::backend::blocks`]).
    pub payload_crc: u32,
    /// crc32c of the header this trailer belongs to.
    pub header_crc: u32,
}

impl Trailer {
    /// Serializes the trailer.
    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut out = [0u8; TRAILER_LEN];
        out[0..8].copy_from_slice(&self.logical_len.to_le_bytes());
        out[8..16].copy_from_slice(&self.stored_len.to_le_bytes());
        out[16..20].copy_from_slice(&self.payload_crc.to_le_bytes());
        out[20..24].copy_from_slice(&self.header_crc.to_le_bytes());
        let crc = crc32c::crc32c(&out[0..24]);
        out[24..28].copy_from_slice(&crc.to_le_bytes());
        out[28..32].copy_from_slice(&TRAILER_MAGIC);
        out
    }

    /// Parses a trailer.
    ///
    /// # Errors
    ///
    /// A description when the bytes are not a valid trailer.
    pub fn decode(buf: &[u8]) -> Result<Trailer, FormatError> {
        if buf.len() != TRAILER_LEN {
            return Err(FormatError::Truncated(TRAILER_LEN));
        }
        if buf[28..32] != TRAILER_MAGIC {
            return Err(FormatError::Invalid(
                "bad trailer magic (entry incomplete?)".into(),
            ));
        }
        let crc = u32::from_le_bytes(buf[24..28].try_into().expect("4 bytes"));
        if crc32c::crc32c(&buf[0..24]) != crc {
            return Err(FormatError::Invalid("trailer checksum mismatch".into()));
        }
        Ok(Trailer {
            logical_len: u64::from_le_bytes(buf[0..8].try_into().expect("8 bytes")),
            stored_len: u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes")),
            payload_crc: u32::from_le_bytes(buf[16..20].try_into().expect("4 bytes")),
            header_crc: u32::from_le_bytes(buf[20..24].try_into().expect("4 bytes")),
        })
    }
}

/// Building metadata from what was read of an entry: for backends.
impl EntryMeta {
    /// Combines a format 1 header and a trailer that were checked to belong
    /// together.
    ///
    /// # Errors
    ///
    /// A description when the trailer belongs to another header or the sizes disagree.
    pub fn from_parts(
        header: Header,
        header_len: usize,
        header_crc: u32,
        trailer: Trailer,
        total_len: u64,
    ) -> Result<EntryMeta, FormatError> {
        Self::combine(
            header,
            header_len,
            header_crc,
            Layout::Whole,
            trailer,
            total_len,
        )
    }

    /// Combines a header of either format and a trailer that were checked
    /// to belong together.
    ///
    /// # Errors
    ///
    /// A description when the trailer belongs to another header or the sizes disagree.
    pub fn from_decoded_parts(
        header: DecodedHeader,
        trailer: Trailer,
        total_len: u64,
    ) -> Result<EntryMeta, FormatError> {
        Self::combine(
            header.header,
            header.len,
            header.crc,
            header.layout,
            trailer,
            total_len,
        )
    }

    fn combine(
        header: Header,
        header_len: usize,
        header_crc: u32,
        layout: Layout,
        trailer: Trailer,
        total_len: u64,
    ) -> Result<EntryMeta, FormatError> {
        if trailer.header_crc != header_crc {
            return Err(FormatError::Invalid(
                "trailer belongs to another header".into(),
            ));
        }
        // Checked: a crafted trailer may claim any length (an overflow
        // panicked in debug builds).
        let expected = layout
            .framed_len(trailer.stored_len)
            .and_then(|n| n.checked_add(header_len as u64))
            .and_then(|n| n.checked_add(TRAILER_LEN as u64));
        if expected != Some(total_len) {
            return Err(FormatError::Invalid(format!(
                "entry is {total_len} bytes but its trailer says {}",
                expected.map_or_else(|| "more than 2^64".into(), |n| n.to_string())
            )));
        }
        if header.codec == Codec::None && trailer.logical_len != trailer.stored_len {
            return Err(FormatError::Invalid(
                "uncompressed entry with differing lengths".into(),
            ));
        }
        Ok(Self::of_header(
            header,
            trailer.logical_len,
            trailer.stored_len,
            total_len,
        ))
    }

    /// The metadata of an uncompressed format 1 entry of `total_len` bytes
    /// from its header alone: its lengths follow from its size. For a reader
    /// that checks the trailer at the end of the body (one request instead
    /// of two); it must then check that [`EntryMeta::from_parts`] with the
    /// trailer gives the same metadata, and the payload's checksum.
    ///
    /// # Errors
    ///
    /// A description when the entry is compressed (its logical length is
    /// only in the trailer) or too short for its header and a trailer.
    pub fn from_header(
        header: Header,
        header_len: usize,
        total_len: u64,
    ) -> Result<EntryMeta, FormatError> {
        Self::from_size(header, header_len, Layout::Whole, total_len)
    }

    /// [`EntryMeta::from_header`] for a header of either format; then check
    /// [`EntryMeta::from_decoded_parts`] against the trailer.
    ///
    /// # Errors
    ///
    /// A description when the entry is compressed, too short for its header
    /// and a trailer, or of a size no payload frames to.
    pub fn from_decoded_header(
        header: DecodedHeader,
        total_len: u64,
    ) -> Result<EntryMeta, FormatError> {
        Self::from_size(header.header, header.len, header.layout, total_len)
    }

    /// The metadata of an entry of `size` bytes with `header` and these
    /// lengths, once they are checked.
    fn of_header(header: Header, logical_len: u64, stored_len: u64, size: u64) -> EntryMeta {
        EntryMeta {
            key: header.key,
            kind: header.kind,
            codec: header.codec,
            created: header.created,
            expires: header.expires,
            logical_len,
            stored_len,
            size,
        }
    }

    fn from_size(
        header: Header,
        header_len: usize,
        layout: Layout,
        total_len: u64,
    ) -> Result<EntryMeta, FormatError> {
        if header.codec != Codec::None {
            return Err(FormatError::Invalid(
                "a compressed entry's length is in its trailer".into(),
            ));
        }
        let framed_len = total_len
            .checked_sub(header_len as u64 + TRAILER_LEN as u64)
            .ok_or(FormatError::Truncated(header_len + TRAILER_LEN))?;
        let stored_len = layout.stored_len(framed_len).ok_or_else(|| {
            FormatError::Invalid(format!(
                "{framed_len} bytes between header and trailer cannot be cut into blocks"
            ))
        })?;
        Ok(Self::of_header(header, stored_len, stored_len, total_len))
    }
}
