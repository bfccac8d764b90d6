//! The header written before an entry's payload: its fields, and how it is
//! encoded and decoded in either format.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::layout::{FORMAT_V1, FORMAT_V2, FormatError, HEADER_FIXED_LEN, Layout, MAGIC};
use crate::backend::blocks::size::BlockSize;
use crate::{Codec, Kind, MAX_KEY_LEN};

/// The part of an entry's metadata written before the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The key.
    pub key: String,
    /// What the payload holds.
    pub kind: Kind,
    /// How the payload is compressed.
    pub codec: Codec,
    /// When the entry was written.
    pub created: SystemTime,
    /// When the entry expires.
    pub expires: Option<SystemTime>,
}

fn to_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn from_nanos(n: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(n)
}

/// A header as [`Header::decode_any`] read it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecodedHeader {
    /// The header.
    pub header: Header,
    /// Its length in bytes (where the payload starts).
    pub len: usize,
    /// Its checksum, which the trailer (and in format 2 each block) repeats.
    pub crc: u32,
    /// Its format: how the payload is laid out and checked.
    pub layout: Layout,
}

impl Header {
    /// Serializes the header in format 1. The key must already be valid.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_as(Layout::Whole)
    }

    /// Serializes the header in the format of `layout` (format 1 for
    /// [`Layout::Whole`], format 2 with its block size for
    /// [`Layout::Blocks`]). The key must already be valid. Its checksum is
    /// the last 4 bytes (little endian).
    pub fn encode_as(&self, layout: Layout) -> Vec<u8> {
        let key = self.key.as_bytes();
        assert!(key.len() <= MAX_KEY_LEN, "key validated before encoding");
        let mut out = Vec::with_capacity(HEADER_FIXED_LEN + key.len() + 4);
        out.extend_from_slice(&MAGIC);
        out.push(layout.version());
        out.push(self.kind.to_u8());
        out.push(self.codec.to_u8());
        out.push(layout.block_size().map_or(0, BlockSize::log2));
        out.extend_from_slice(&to_nanos(self.created).to_le_bytes());
        // An expiry is never stored as 0 (which means "never").
        let expires = self.expires.map(|t| to_nanos(t).max(1)).unwrap_or(0);
        out.extend_from_slice(&expires.to_le_bytes());
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// [`Header::encode_as`], returning with the bytes the header as
    /// [`Header::decode_any`] would read them back: a writer that needs both
    /// (to build the entry's metadata once it is written) need not parse what
    /// it just wrote.
    pub fn encode_decoded(self, layout: Layout) -> (Vec<u8>, DecodedHeader) {
        let bytes = self.encode_as(layout);
        let crc = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().expect("4 bytes"));
        let decoded = DecodedHeader {
            header: self,
            len: bytes.len(),
            crc,
            layout,
        };
        (bytes, decoded)
    }

    /// Parses a format 1 header from the start of `buf`; returns it with its
    /// length in bytes and its checksum. A format 2 header is refused as an
    /// unsupported version: see [`Header::decode_any`].
    ///
    /// # Errors
    ///
    /// [`FormatError::Truncated`] when `buf` is too short to tell,
    /// [`FormatError::Invalid`] when the bytes are not a header.
    pub fn decode(buf: &[u8]) -> Result<(Header, usize, u32), FormatError> {
        let d = Self::decode_versions(buf, &[FORMAT_V1])?;
        Ok((d.header, d.len, d.crc))
    }

    /// Parses a header of either format from the start of `buf`.
    ///
    /// # Errors
    ///
    /// [`FormatError::Truncated`] when `buf` is too short to tell,
    /// [`FormatError::Invalid`] when the bytes are not a header.
    pub fn decode_any(buf: &[u8]) -> Result<DecodedHeader, FormatError> {
        Self::decode_versions(buf, &[FORMAT_V1, FORMAT_V2])
    }

    fn decode_versions(buf: &[u8], versions: &[u8]) -> Result<DecodedHeader, FormatError> {
        if buf.len() < HEADER_FIXED_LEN {
            if !MAGIC.starts_with(&buf[..buf.len().min(4)]) {
                return Err(FormatError::Invalid("bad magic".into()));
            }
            return Err(FormatError::Truncated(HEADER_FIXED_LEN));
        }
        if buf[..4] != MAGIC {
            return Err(FormatError::Invalid("bad magic".into()));
        }
        if !versions.contains(&buf[4]) {
            return Err(FormatError::Invalid(format!(
                "unsupported format version {}",
                buf[4]
            )));
        }
        let key_len = u16::from_le_bytes([buf[24], buf[25]]) as usize;
        if key_len == 0 || key_len > MAX_KEY_LEN {
            return Err(FormatError::Invalid(format!(
                "key length {key_len} out of range"
            )));
        }
        let total = HEADER_FIXED_LEN + key_len + 4;
        if buf.len() < total {
            return Err(FormatError::Truncated(total));
        }
        let body = &buf[..total - 4];
        let crc = u32::from_le_bytes(buf[total - 4..total].try_into().expect("4 bytes"));
        if crc32c::crc32c(body) != crc {
            return Err(FormatError::Invalid("header checksum mismatch".into()));
        }
        let kind = Kind::from_u8(buf[5])
            .ok_or_else(|| FormatError::Invalid(format!("unknown kind {}", buf[5])))?;
        let codec = Codec::from_u8(buf[6])
            .ok_or_else(|| FormatError::Invalid(format!("unknown codec {}", buf[6])))?;
        // Format 1 leaves the flags byte reserved (written 0, not read).
        let layout = if buf[4] == FORMAT_V1 {
            Layout::Whole
        } else {
            Layout::Blocks(BlockSize::from_log2(buf[7]).ok_or_else(|| {
                FormatError::Invalid(format!("block size 2^{} out of range", buf[7]))
            })?)
        };
        let created = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
        let expires = u64::from_le_bytes(buf[16..24].try_into().expect("8 bytes"));
        let key = std::str::from_utf8(&buf[HEADER_FIXED_LEN..HEADER_FIXED_LEN + key_len])
            .map_err(|_| FormatError::Invalid("key is not UTF-8".into()))?
            .to_owned();
        Ok(DecodedHeader {
            header: Header {
                key,
                kind,
                codec,
                created: from_nanos(created),
                expires: (expires != 0).then(|| from_nanos(expires)),
            },
            len: total,
            crc,
            layout,
        })
    }
}
