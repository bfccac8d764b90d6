//! The entry header and trailer parsers over arbitrary bytes (the stable
//! counterpart of the cargo-fuzz targets in `fuzz/`): they never panic,
//! accept only what they could have written, and round-trip what they write.
//!
//! `ETL_CACHE_PARSER_CASES` cases per property (default 100,000; 1,000,000 with
//! `ETL_CACHE_LONG=1`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etl_cache_core::EntryMeta;
use etl_cache_core::backend::format::{
    FormatError, HEADER_FIXED_LEN, Header, MAGIC, TRAILER_LEN, TRAILER_MAGIC, Trailer,
};
use etl_cache_core::{Codec, Kind, MAX_KEY_LEN};
use etl_cache_reliability::{iterations, report};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: iterations("ETL_CACHE_PARSER_CASES", 100_000, 1_000_000) as u32,
        failure_persistence: None,
        ..Config::default()
    })
}

fn check(name: &str, result: Result<(), proptest::test_runner::TestError<impl std::fmt::Debug>>) {
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

/// Bytes that often start like an entry, so the checks past the magic run.
fn entryish() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80),
        (
            proptest::collection::vec(any::<u8>(), 0..1200),
            any::<u8>(),
            any::<u8>()
        )
            .prop_map(|(rest, v, kl)| {
                let mut b = MAGIC.to_vec();
                b.push(v % 3);
                b.extend_from_slice(&rest);
                if b.len() > 25 {
                    b[24] = kl % 40;
                    b[25] = 0;
                }
                b
            }),
    ]
}

fn key_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z/._ -]{1,40}",
        "\\PC{1,60}",
        Just("k".repeat(MAX_KEY_LEN)),
    ]
    .prop_filter("valid keys", |k| {
        !k.is_empty() && k.len() <= MAX_KEY_LEN && !k.contains('\0')
    })
}

fn header_strategy() -> impl Strategy<Value = Header> {
    (
        key_strategy(),
        prop_oneof![Just(Kind::Text), Just(Kind::Bytes), Just(Kind::Json)],
        prop_oneof![Just(Codec::None), Just(Codec::Gzip), Just(Codec::Zstd)],
        any::<u64>(),
        proptest::option::of(1u64..),
    )
        .prop_map(|(key, kind, codec, created, expires)| Header {
            key,
            kind,
            codec,
            created: UNIX_EPOCH + Duration::from_nanos(created),
            expires: expires.map(|e| UNIX_EPOCH + Duration::from_nanos(e)),
        })
}

#[test]
fn header_decode_never_panics_and_accepts_only_canonical_headers() {
    let accepted = std::sync::atomic::AtomicU64::new(0);
    let r = runner().run(&entryish(), |bytes| {
        match Header::decode(&bytes) {
            Ok((h, len, crc)) => {
                accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                prop_assert!(len <= bytes.len() && len == HEADER_FIXED_LEN + h.key.len() + 4);
                // What was accepted is what encode writes (but the reserved
                // flags byte, which encode leaves 0).
                let mut again = h.encode();
                again[7] = bytes[7];
                prop_assert_eq!(&again[..len - 4], &bytes[..len - 4]);
                prop_assert_eq!(
                    crc,
                    u32::from_le_bytes(bytes[len - 4..len].try_into().unwrap())
                );
            }
            Err(FormatError::Truncated(n)) => {
                prop_assert!(n > bytes.len(), "Truncated({n}) for {} bytes", bytes.len())
            }
            Err(FormatError::Invalid(_)) => {}
        }
        Ok(())
    });
    check("Header::decode", r);
    report(
        "parsers",
        &format!(
            "Header::decode over arbitrary bytes: no panic; {} accepted, all canonical",
            accepted.into_inner()
        ),
    );
}

#[test]
fn header_roundtrips_and_every_prefix_asks_for_more() {
    let r = runner().run(
        &(header_strategy(), any::<prop::sample::Index>(), any::<u8>()),
        |(h, at, flip)| {
            let bytes = h.encode();
            let (back, len, _) = Header::decode(&bytes).expect("decodes");
            prop_assert_eq!(len, bytes.len());
            prop_assert_eq!(&back, &h);
            // Trailing bytes (the payload) do not matter.
            let mut longer = bytes.clone();
            longer.extend_from_slice(b"payload");
            prop_assert_eq!(Header::decode(&longer).expect("decodes").0, h);
            // A cut header is never accepted.
            let cut = at.index(bytes.len());
            prop_assert!(Header::decode(&bytes[..cut]).is_err());
            // A changed byte is never accepted as another header.
            if flip != 0 {
                let i = at.index(bytes.len());
                let mut bad = bytes.clone();
                bad[i] ^= flip;
                prop_assert!(
                    Header::decode(&bad).is_err(),
                    "byte {i} ^ {flip:#x} accepted"
                );
            }
            Ok(())
        },
    );
    check("Header round trip", r);
}

#[test]
fn trailer_decode_never_panics_and_roundtrips() {
    let r = runner().run(&proptest::collection::vec(any::<u8>(), 0..64), |bytes| {
        if let Ok(t) = Trailer::decode(&bytes) {
            prop_assert_eq!(bytes.len(), TRAILER_LEN);
            prop_assert_eq!(&t.encode()[..], &bytes[..]);
        }
        Ok(())
    });
    check("Trailer::decode", r);
    let r = runner().run(
        &(
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<prop::sample::Index>(),
            1u8..,
        ),
        |(logical_len, stored_len, payload_crc, header_crc, at, flip)| {
            let t = Trailer {
                logical_len,
                stored_len,
                payload_crc,
                header_crc,
            };
            let enc = t.encode();
            prop_assert_eq!(&enc[28..], &TRAILER_MAGIC[..]);
            prop_assert_eq!(Trailer::decode(&enc).expect("decodes"), t);
            let mut bad = enc;
            bad[at.index(TRAILER_LEN)] ^= flip;
            prop_assert!(Trailer::decode(&bad).is_err());
            Ok(())
        },
    );
    check("Trailer round trip", r);
}

#[test]
fn entry_meta_from_parts_never_panics_and_checks_sizes() {
    let r = runner().run(
        &(
            header_strategy(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<bool>(),
            any::<u64>(),
        ),
        |(h, logical_len, stored_len, payload_crc, same_header, total)| {
            let bytes = h.encode();
            let (h, len, crc) = Header::decode(&bytes).expect("decodes");
            let t = Trailer {
                logical_len,
                stored_len,
                payload_crc,
                header_crc: if same_header { crc } else { crc ^ 1 },
            };
            // Arbitrary totals, and the one that fits.
            let fitting = (len as u64)
                .checked_add(stored_len)
                .and_then(|n| n.checked_add(TRAILER_LEN as u64));
            for total in [Some(total), fitting].into_iter().flatten() {
                match EntryMeta::from_parts(h.clone(), len, crc, t, total) {
                    Ok(m) => {
                        prop_assert!(same_header);
                        prop_assert_eq!(Some(total), fitting);
                        prop_assert_eq!(m.size, total);
                        prop_assert!(h.codec != Codec::None || logical_len == stored_len);
                    }
                    Err(FormatError::Invalid(_)) => {}
                    Err(e) => prop_assert!(false, "unexpected {e:?}"),
                }
            }
            Ok(())
        },
    );
    check("EntryMeta::from_parts", r);
    let _ = SystemTime::now();
}
