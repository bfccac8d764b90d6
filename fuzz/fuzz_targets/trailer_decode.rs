//! `Trailer::decode` and `EntryMeta::from_parts` over arbitrary bytes read
//! as a whole entry (header first, trailer last): never panic, whatever
//! lengths the trailer claims; what they accept is consistent.
#![no_main]
#![forbid(unsafe_code)]

use etl_cache_core::EntryMeta;
use etl_cache_core::backend::format::{Header, TRAILER_LEN, Trailer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() >= TRAILER_LEN {
        let tail = &data[data.len() - TRAILER_LEN..];
        if let Ok(t) = Trailer::decode(tail) {
            assert_eq!(&t.encode()[..], tail);
            if let Ok((h, len, crc)) = Header::decode(data) {
                if let Ok(m) = EntryMeta::from_parts(h, len, crc, t, data.len() as u64) {
                    assert_eq!(m.size, data.len() as u64);
                    assert_eq!(len as u64 + m.stored_len + TRAILER_LEN as u64, m.size);
                }
            }
        }
    }
    // And a trailer alone, of any length.
    let _ = Trailer::decode(data);
});
