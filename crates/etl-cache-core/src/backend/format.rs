//! The self-describing entry format shared by every backend.
//!
//! An entry is stored as one blob (a file, an object): a header, the
//! payload, a trailer. Two versions exist; both are read.
//!
//! Format 1 (what [`Header::encode`] writes), one checksum over the whole
//! payload:
//!
//! ```text
//! header   magic "ETLC" | version u8 = 1 | kind u8 | codec u8 | flags u8 = 0
//!          | created u64 (ns since the Unix epoch) | expires u64 (ns, 0 = never)
//!          | key length u16 | key (UTF-8) | crc32c of all the above
//! payload  the stored (possibly compressed) bytes
//! trailer  logical length u64 | stored length u64 | crc32c of the payload
//!          | crc32c of the header | crc32c of the 24 bytes before | magic "CLTE"
//! ```
//!
//! Format 2 (what [`Header::encode_as`] writes for [`Layout::Blocks`]), a
//! checksum per block, so a reader checks each block before handing it out
//! (see [`crate::backend::blocks`]):
//!
//! ```text
//! header   magic "ETLC" | version u8 = 2 | kind u8 | codec u8
//!          | block size log2 u8 (4..=24)
//!          | created u64 | expires u64 | key length u16 | key | crc32c of all the above
//! payload  block 0 | crc 0 | block 1 | crc 1 | ... | block n-1 | crc n-1
//!          every block 2^log2 stored bytes but the last, which may be
//!          shorter (1 byte or more); no block at all for an empty payload;
//!          crc i = crc32c(header crc u32 | i u64 | block i)
//! trailer  logical length u64 | stored length u64 (without the block crcs)
//!          | crc32c of crc 0 | crc 1 | ... | crc n-1 (0 when n = 0)
//!          | crc32c of the header | crc32c of the 24 bytes before | magic "CLTE"
//! ```
//!
//! All integers are little endian. Everything known before the payload is
//! written sits in the header, so a stream can be written front to back without
//! seeking; what is known only at the end sits in the fixed-size trailer. The
//! trailer repeats the header's checksum, so a header and a trailer from two
//! different writes never pass as one entry; in format 2 each block's
//! checksum does the same for the block, and names its place. FORMAT.md in
//! this crate has the field tables.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

// From its own file: `blocks` takes the trailer and the format's errors
// from here.
use crate::backend::blocks::size::BlockSize;
use crate::{Codec, EntryMeta, Kind, MAX_KEY_LEN};

/// The first four bytes of every entry.
pub const MAGIC: [u8; 4] = *b"ETLC";
/// The last four bytes of every entry.
pub const TRAILER_MAGIC: [u8; 4] = *b"CLTE";
/// Format 1: one checksum over the whole payload ([`Layout::Whole`]).
pub const FORMAT_V1: u8 = 1;
/// Format 2: a checksum after each block of the payload ([`Layout::Blocks`]).
pub const FORMAT_V2: u8 = 2;
/// The format version the backends write: that of [`WRITTEN_LAYOUT`]. Bump
/// when an older reader could misread newer entries. ([`Header::encode`]
/// writes format 1, which every reader still reads.)
pub const FORMAT_VERSION: u8 = WRITTEN_LAYOUT.version();
/// How the backends lay out the entries they write: format 2, blocks of
/// 1 MiB.
pub const WRITTEN_LAYOUT: Layout = Layout::DEFAULT_BLOCKS;
/// Bytes before the key in the header.
pub const HEADER_FIXED_LEN: usize = 26;
/// The largest header: fixed part, longest key, checksum.
pub const MAX_HEADER_LEN: usize = HEADER_FIXED_LEN + MAX_KEY_LEN + 4;
/// Size of the trailer.
pub const TRAILER_LEN: usize = 32;

/// Why bytes are not a valid header or trailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// More bytes are needed: at least this many in all.
    Truncated(usize),
    /// The bytes are not a valid entry.
    Invalid(String),
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormatError::Truncated(n) => write!(f, "truncated: at least {n} bytes needed"),
            FormatError::Invalid(s) => f.write_str(s),
        }
    }
}

/// How an entry's payload is laid out and checked: what its format version
/// says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Layout {
    /// Format 1: the stored bytes as they are, with one checksum over all of
    /// them in the trailer. Nothing can be checked before the end: a reader
    /// that must not hand out unchecked bytes reads the payload whole and
    /// checks it first ([`crate::backend::blocks::verify_payload`]).
    Whole,
    /// Format 2: the stored bytes in blocks of this size, each followed by
    /// its checksum ([`crate::backend::blocks`]).
    Blocks(BlockSize),
}

impl Layout {
    /// Format 2 with the default block size (1 MiB).
    pub const DEFAULT_BLOCKS: Layout = Layout::Blocks(BlockSize::DEFAULT);

    /// The format version of entries with this layout.
    pub const fn version(self) -> u8 {
        match self {
            Layout::Whole => FORMAT_V1,
            Layout::Blocks(_) => FORMAT_V2,
        }
    }

    /// The block size, for format 2.
    pub const fn block_size(self) -> Option<BlockSize> {
        match self {
            Layout::Whole => None,
            Layout::Blocks(b) => Some(b),
        }
    }

    /// Bytes between header and trailer for `stored_len` stored bytes;
    /// `None` past `u64::MAX`.
    pub const fn framed_len(self, stored_len: u64) -> Option<u64> {
        match self {
            Layout::Whole => Some(stored_len),
            Layout::Blocks(b) => b.framed_len(stored_len),
        }
    }

    /// The stored bytes `framed_len` bytes between header and trailer hold;
    /// `None` when no payload frames to that length.
    pub const fn stored_len(self, framed_len: u64) -> Option<u64> {
        match self {
            Layout::Whole => Some(framed_len),
            Layout::Blocks(b) => b.stored_len(framed_len),
        }
    }
}

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
        Ok(EntryMeta {
            key: header.key,
            kind: header.kind,
            codec: header.codec,
            created: header.created,
            expires: header.expires,
            logical_len: trailer.logical_len,
            stored_len: trailer.stored_len,
            size: total_len,
        })
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
        Ok(EntryMeta {
            key: header.key,
            kind: header.kind,
            codec: header.codec,
            created: header.created,
            expires: header.expires,
            logical_len: stored_len,
            stored_len,
            size: total_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            key: "reports/2026.xml".into(),
            kind: Kind::Text,
            codec: Codec::Zstd,
            created: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
            expires: Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
        }
    }

    #[test]
    fn header_roundtrips_and_is_pinned() {
        let h = header();
        let bytes = h.encode();
        assert_eq!(bytes.len(), HEADER_FIXED_LEN + 16 + 4);
        assert_eq!(&bytes[..8], b"ETLC\x01\x01\x02\x00");
        let (back, len, crc) = Header::decode(&bytes).unwrap();
        assert_eq!(back, h);
        assert_eq!(len, bytes.len());
        assert_eq!(
            crc,
            u32::from_le_bytes(bytes[len - 4..].try_into().unwrap())
        );
    }

    #[test]
    fn encode_decoded_gives_what_decoding_the_bytes_gives() {
        for layout in [Layout::Whole, WRITTEN_LAYOUT] {
            let (bytes, decoded) = header().encode_decoded(layout);
            assert_eq!(bytes, header().encode_as(layout));
            assert_eq!(Header::decode_any(&bytes).unwrap(), decoded);
        }
    }

    #[test]
    fn header_detects_every_single_bit_flip() {
        let bytes = header().encode();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                match Header::decode(&b) {
                    Err(_) => {}
                    Ok((h, ..)) => panic!("flip at byte {i} bit {bit} accepted as {h:?}"),
                }
            }
        }
    }

    #[test]
    fn truncated_header_asks_for_more() {
        let bytes = header().encode();
        assert_eq!(
            Header::decode(&bytes[..10]),
            Err(FormatError::Truncated(HEADER_FIXED_LEN))
        );
        assert_eq!(
            Header::decode(&bytes[..30]),
            Err(FormatError::Truncated(bytes.len()))
        );
    }

    #[test]
    fn trailer_roundtrips_and_ties_to_header() {
        let t = Trailer {
            logical_len: 10,
            stored_len: 7,
            payload_crc: 42,
            header_crc: 7,
        };
        let enc = t.encode();
        assert_eq!(Trailer::decode(&enc).unwrap(), t);
        let mut bad = enc;
        bad[3] ^= 1;
        assert!(Trailer::decode(&bad).is_err());
        let h = header();
        let hb = h.encode();
        let err = EntryMeta::from_parts(h, hb.len(), 8, t, hb.len() as u64 + 7 + 32).unwrap_err();
        assert!(matches!(err, FormatError::Invalid(_)));
    }

    /// A small format 2 entry, pinned byte for byte: two blocks of 16 bytes
    /// (the second short), their checksums, the trailer.
    fn v2_entry() -> (Header, Vec<u8>) {
        use bytes::Bytes;

        use crate::backend::blocks::BlockFramer;

        let h = Header {
            key: "k".into(),
            kind: Kind::Bytes,
            codec: Codec::None,
            created: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_000),
            expires: None,
        };
        let layout = Layout::Blocks(BlockSize::new(16).unwrap());
        let mut entry = h.encode_as(layout);
        let crc = u32::from_le_bytes(entry[entry.len() - 4..].try_into().unwrap());
        let mut framed = Vec::new();
        let mut f = BlockFramer::new(crc, BlockSize::new(16).unwrap());
        f.push(Bytes::from_static(b"extract, transform, load"), &mut framed);
        f.finish(24, &mut framed);
        entry.extend_from_slice(&framed.concat());
        (h, entry)
    }

    #[test]
    fn v2_entry_is_pinned() {
        let (h, entry) = v2_entry();
        let hex: String = entry.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            concat!(
                // magic, version 2, bytes, none, 2^4, created, expires, key "k", crc
                "45544c4302020004",
                "00002a36fe9c9717",
                "0000000000000000",
                "01006b",
                "07f3f188",
                // block 0, crc 0, block 1, crc 1
                "657874726163742c207472616e73666f",
                "d844489c",
                "726d2c206c6f6164",
                "d52d4751",
                // trailer: logical 24, stored 24, crc of crcs, header crc, crc, magic
                "1800000000000000",
                "1800000000000000",
                "c97b2863",
                "07f3f188",
                "15398ca6",
                "434c5445",
            )
        );
        // The checksums, worked out from the format's definition.
        let d = Header::decode_any(&entry).unwrap();
        assert_eq!(d.header, h);
        assert_eq!(d.layout, Layout::Blocks(BlockSize::new(16).unwrap()));
        let seal = |i: u64, data: &[u8]| {
            let mut b = d.crc.to_le_bytes().to_vec();
            b.extend_from_slice(&i.to_le_bytes());
            b.extend_from_slice(data);
            crc32c::crc32c(&b)
        };
        let (c0, c1) = (seal(0, b"extract, transfo"), seal(1, b"rm, load"));
        let at = d.len;
        assert_eq!(entry[at + 16..at + 20], c0.to_le_bytes());
        assert_eq!(entry[at + 28..at + 32], c1.to_le_bytes());
        let list = crc32c::crc32c(&[c0.to_le_bytes(), c1.to_le_bytes()].concat());
        let t = Trailer::decode(&entry[at + 32..]).unwrap();
        assert_eq!(
            t,
            Trailer {
                logical_len: 24,
                stored_len: 24,
                payload_crc: list,
                header_crc: d.crc,
            }
        );
        let meta = EntryMeta::from_decoded_parts(d.clone(), t, entry.len() as u64).unwrap();
        assert_eq!((meta.stored_len, meta.size), (24, entry.len() as u64));
        assert_eq!(
            EntryMeta::from_decoded_header(d, entry.len() as u64).unwrap(),
            meta
        );
    }

    #[test]
    fn v1_decode_refuses_v2_and_decode_any_reads_both() {
        let h = header();
        let v1 = h.encode();
        assert_eq!(v1, h.encode_as(Layout::Whole));
        let d = Header::decode_any(&v1).unwrap();
        assert_eq!(
            (d.header, d.len, d.layout),
            (h.clone(), v1.len(), Layout::Whole)
        );
        let v2 = h.encode_as(Layout::DEFAULT_BLOCKS);
        assert_eq!(&v2[4..8], &[2, 1, 2, 20]);
        assert_eq!(
            Header::decode(&v2),
            Err(FormatError::Invalid("unsupported format version 2".into()))
        );
        let d = Header::decode_any(&v2).unwrap();
        assert_eq!(d.layout, Layout::DEFAULT_BLOCKS);
        assert_eq!(d.header, h);
        // Only the block sizes in range, even with a valid checksum.
        for log2 in [0u8, 3, 25, 255] {
            let mut bad = v2.clone();
            bad[7] = log2;
            let n = bad.len();
            let crc = crc32c::crc32c(&bad[..n - 4]);
            bad[n - 4..].copy_from_slice(&crc.to_le_bytes());
            assert!(matches!(
                Header::decode_any(&bad),
                Err(FormatError::Invalid(_))
            ));
        }
        for version in [0u8, 3] {
            let mut bad = v2.clone();
            bad[4] = version;
            assert_eq!(
                Header::decode_any(&bad),
                Err(FormatError::Invalid(format!(
                    "unsupported format version {version}"
                )))
            );
        }
    }

    #[test]
    fn v2_header_detects_every_single_bit_flip() {
        let bytes = header().encode_as(Layout::Blocks(BlockSize::new(4096).unwrap()));
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                if let Ok(d) = Header::decode_any(&b) {
                    panic!("flip at byte {i} bit {bit} accepted as {d:?}");
                }
            }
        }
    }

    #[test]
    fn v2_sizes_count_the_block_checksums() {
        let h = header();
        let layout = Layout::Blocks(BlockSize::new(16).unwrap());
        let hb = h.encode_as(layout);
        let d = Header::decode_any(&hb).unwrap();
        let t = Trailer {
            logical_len: 100,
            stored_len: 33,
            payload_crc: 0,
            header_crc: d.crc,
        };
        // 33 stored bytes: three blocks, three checksums.
        let total = hb.len() as u64 + 33 + 12 + 32;
        let m = EntryMeta::from_decoded_parts(d.clone(), t, total).unwrap();
        assert_eq!((m.stored_len, m.logical_len, m.size), (33, 100, total));
        for wrong in [total - 12, total - 1, total + 1, total + 4] {
            assert!(EntryMeta::from_decoded_parts(d.clone(), t, wrong).is_err());
        }
        // The format 1 reading of the same sizes is refused.
        assert!(EntryMeta::from_parts(d.header.clone(), d.len, d.crc, t, total).is_err());
        let huge = Trailer {
            stored_len: u64::MAX - 40,
            ..t
        };
        assert!(EntryMeta::from_decoded_parts(d, huge, u64::MAX).is_err());
    }
}
