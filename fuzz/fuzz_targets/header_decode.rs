//! `Header::decode` and `Header::decode_any` over arbitrary bytes: never
//! panic; what they accept is canonical (re-encodes to the same bytes, but
//! format 1's reserved flags byte), `decode` accepts only format 1, and
//! `Truncated(n)` always asks for more than it was given.
#![no_main]
#![forbid(unsafe_code)]

use etl_cache_core::backend::format::{FormatError, HEADER_FIXED_LEN, Header, Layout};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let v1 = Header::decode(data);
    match &v1 {
        Ok((h, len, crc)) => {
            let len = *len;
            assert_eq!(len, HEADER_FIXED_LEN + h.key.len() + 4);
            assert!(len <= data.len());
            let mut again = h.encode();
            again[7] = data[7];
            assert_eq!(&again[..len - 4], &data[..len - 4]);
            assert_eq!(crc.to_le_bytes(), data[len - 4..len]);
        }
        Err(FormatError::Truncated(n)) => assert!(*n > data.len()),
        Err(FormatError::Invalid(_)) => {}
    }
    match Header::decode_any(data) {
        Ok(d) => {
            assert_eq!(d.len, HEADER_FIXED_LEN + d.header.key.len() + 4);
            assert!(d.len <= data.len());
            let mut again = d.header.encode_as(d.layout);
            if d.layout == Layout::Whole {
                again[7] = data[7];
                assert_eq!(v1, Ok((d.header.clone(), d.len, d.crc)));
            } else {
                assert!(v1.is_err(), "format 2 read as format 1");
                assert_eq!(again[..], data[..d.len], "format 2 is canonical");
            }
            assert_eq!(&again[..d.len - 4], &data[..d.len - 4]);
            assert_eq!(d.crc.to_le_bytes(), data[d.len - 4..d.len]);
        }
        Err(FormatError::Truncated(n)) => assert!(n > data.len()),
        Err(FormatError::Invalid(_)) => assert!(v1.is_err()),
    }
});
