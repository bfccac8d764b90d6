//! Whole entries built from arbitrary fields: encode, decode, and check
//! that every field comes back, that any single changed byte of the header
//! or trailer is refused, and that a well-formed trailer claiming arbitrary
//! lengths never makes `EntryMeta::from_parts` panic (it did, on overflow,
//! before the checked arithmetic).
#![no_main]
#![forbid(unsafe_code)]

use std::time::{Duration, UNIX_EPOCH};

use arbitrary::Arbitrary;
use etl_cache_core::format::{EntryMeta, Header, TRAILER_LEN, Trailer};
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
        payload_crc: etl_cache_core::codec::crc32c(&input.payload),
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
