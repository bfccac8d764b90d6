//! Whole entries built from arbitrary fields: encode, decode, and check
//! that every field comes back, that any single changed byte of the header
//! or trailer is refused, and that a well-formed trailer claiming arbitrary
//! lengths never makes `EntryMeta::from_parts` panic (it did, on overflow,
//! before the checked arithmetic). Format 2 entries (blocks) too: there
//! any single changed byte, payload included, is refused.
#![no_main]
#![forbid(unsafe_code)]

use std::time::{Duration, UNIX_EPOCH};

use arbitrary::Arbitrary;
use bytes::Bytes;
use etl_cache_core::backend::blocks::{BlockFramer, BlockSize, verify_payload};
use etl_cache_core::EntryMeta;
use etl_cache_core::backend::format::{Header, Layout, TRAILER_LEN, Trailer};
use etl_cache_core::{Codec, Kind, MAX_KEY_LEN};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    key: String,
    kind: u8,
    codec: u8,
    created: u64,
    expires: Option<u64>,
    payload: Vec<u8>,
    logical_len: u64,
    flip_at: u16,
    flip: u8,
    claimed_stored_len: u64,
    claimed_total_len: u64,
    /// Format 2 with blocks of 2^(4 + n % 21) bytes; format 1 when `None`.
    blocks: Option<u8>,
}

fuzz_target!(|input: Input| {
    let mut key: String = input.key.replace('\0', "");
    while key.len() > MAX_KEY_LEN {
        key.pop();
    }
    if key.is_empty() {
        key.push('k');
    }
    let kind = [Kind::Text, Kind::Bytes, Kind::Json][input.kind as usize % 3];
    let codec = [Codec::None, Codec::Gzip, Codec::Zstd][input.codec as usize % 3];
    let header = Header {
        key,
        kind,
        codec,
        created: UNIX_EPOCH + Duration::from_nanos(input.created),
        expires: input
            .expires
            .map(|e| UNIX_EPOCH + Duration::from_nanos(e.max(1))),
    };
    if let Some(n) = input.blocks {
        let size = BlockSize::from_log2(4 + n % 21).expect("in range");
        return blocks(header, size, &input);
    }
    let mut entry = header.encode();
    let (back, len, crc) = Header::decode(&entry).expect("a fresh header decodes");
    assert_eq!(back, header);
    assert_eq!(len, entry.len());
    entry.extend_from_slice(&input.payload);
    let stored_len = input.payload.len() as u64;
    let trailer = Trailer {
        logical_len: if codec == Codec::None {
            stored_len
        } else {
            input.logical_len
        },
        stored_len,
        payload_crc: etl_cache_core::backend::codec::crc32c(&input.payload),
        header_crc: crc,
    };
    entry.extend_from_slice(&trailer.encode());
    let tail = &entry[entry.len() - TRAILER_LEN..];
    assert_eq!(
        Trailer::decode(tail).expect("a fresh trailer decodes"),
        trailer
    );
    let meta = EntryMeta::from_parts(back, len, crc, trailer, entry.len() as u64)
        .expect("a fresh entry is consistent");
    assert_eq!(meta.stored_len, stored_len);
    // A trailer with valid checksums may still claim any lengths (a crafted
    // file): never a panic, and only the lengths that add up are accepted.
    let claimed = Trailer {
        stored_len: input.claimed_stored_len,
        ..trailer
    };
    let header_again = Header::decode(&entry).expect("decodes").0;
    if let Ok(m) = EntryMeta::from_parts(header_again, len, crc, claimed, input.claimed_total_len) {
        assert_eq!(
            Some(m.size),
            (len as u64)
                .checked_add(claimed.stored_len)
                .and_then(|n| n.checked_add(TRAILER_LEN as u64))
        );
    }
    // One changed byte in the framing is always refused.
    if input.flip != 0 {
        let framing = len + TRAILER_LEN;
        let i = input.flip_at as usize % framing;
        let at = if i < len {
            i
        } else {
            entry.len() - TRAILER_LEN + (i - len)
        };
        let mut bad = entry.clone();
        bad[at] ^= input.flip;
        let h = Header::decode(&bad);
        let t = Trailer::decode(&bad[bad.len() - TRAILER_LEN..]);
        let accepted = match (h, t) {
            (Ok((h, l, c)), Ok(t)) => EntryMeta::from_parts(h, l, c, t, bad.len() as u64).is_ok(),
            _ => false,
        };
        assert!(
            !accepted,
            "byte {at} ^ {:#x} of the framing was accepted",
            input.flip
        );
    }
});

/// A format 2 entry: built, read back, and refused with any byte changed.
fn blocks(header: Header, size: BlockSize, input: &Input) {
    let layout = Layout::Blocks(size);
    let mut entry = header.encode_as(layout);
    let d = Header::decode_any(&entry).expect("a fresh header decodes");
    assert_eq!((&d.header, d.len, d.layout), (&header, entry.len(), layout));
    assert!(Header::decode(&entry).is_err(), "format 2 read as format 1");
    let stored_len = input.payload.len() as u64;
    let logical_len = if header.codec == Codec::None {
        stored_len
    } else {
        input.logical_len
    };
    let mut framed = Vec::new();
    let mut framer = BlockFramer::new(d.crc, size);
    framer.push(Bytes::copy_from_slice(&input.payload), &mut framed);
    let trailer = framer.finish(logical_len, &mut framed);
    entry.extend_from_slice(&framed.concat());
    let read = |entry: &[u8]| -> Option<(EntryMeta, Bytes)> {
        let d = Header::decode_any(entry).ok()?;
        let body = Bytes::copy_from_slice(&entry[d.len..]);
        let v = verify_payload(d.layout, d.crc, body).ok()?;
        let meta = EntryMeta::from_decoded_parts(d, *v.trailer(), entry.len() as u64).ok()?;
        Some((meta, v.into_bytes()))
    };
    let (meta, stored) = read(&entry).expect("a fresh entry reads back");
    assert_eq!(stored, input.payload);
    assert_eq!(
        (meta.stored_len, meta.logical_len, meta.size),
        (stored_len, trailer.logical_len, entry.len() as u64)
    );
    if logical_len == stored_len {
        let from_size = EntryMeta::from_decoded_header(
            Header::decode_any(&entry).expect("decodes"),
            entry.len() as u64,
        );
        if header.codec == Codec::None {
            assert_eq!(from_size.expect("uncompressed"), meta);
        }
    }
    if input.flip != 0 {
        let at = input.flip_at as usize % entry.len();
        let mut bad = entry.clone();
        bad[at] ^= input.flip;
        assert!(
            read(&bad).is_none(),
            "byte {at} ^ {:#x} of a format 2 entry was accepted",
            input.flip
        );
    }
}
