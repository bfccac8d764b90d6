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
//!
//! The constants, versions and layouts are in `layout`, the header in
//! `header`, the trailer and the metadata read with it in `trailer`; the
//! tests here pin whole entries byte for byte.

mod header;
mod layout;
mod trailer;

pub use self::header::{DecodedHeader, Header};
pub use self::layout::{
    FORMAT_V1, FORMAT_V2, FORMAT_VERSION, FormatError, HEADER_FIXED_LEN, Layout, MAGIC,
    MAX_HEADER_LEN, TRAILER_LEN, TRAILER_MAGIC, WRITTEN_LAYOUT,
};
pub use self::trailer::Trailer;

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::backend::blocks::size::BlockSize;
    use crate::{Codec, EntryMeta, Kind};

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
