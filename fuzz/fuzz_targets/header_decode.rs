//! `Header::decode` over arbitrary bytes: never panics; what it accepts is
//! canonical (re-encodes to the same bytes but the reserved flags byte), and
//! `Truncated(n)` always asks for more than it was given.
#![no_main]
#![forbid(unsafe_code)]

use etl_cache_core::format::{FormatError, HEADER_FIXED_LEN, Header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Header::decode(data) {
        Ok((h, len, crc)) => {
            assert_eq!(len, HEADER_FIXED_LEN + h.key.len() + 4);
            assert!(len <= data.len());
            let mut again = h.encode();
            again[7] = data[7];
            assert_eq!(&again[..len - 4], &data[..len - 4]);
            assert_eq!(crc.to_le_bytes(), data[len - 4..len]);
        }
        Err(FormatError::Truncated(n)) => assert!(n > data.len()),
        Err(FormatError::Invalid(_)) => {}
    }
});
