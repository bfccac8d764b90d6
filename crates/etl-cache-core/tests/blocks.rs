//! Format 2 payloads through `BlockFramer` and `BlockChecker`: every size
//! from no block to three blocks and a bit, cut into chunks every way; any
//! changed byte, and any block moved, repeated, dropped or taken from
//! another entry, is caught before a byte of its block is handed out.

use bytes::{Bytes, BytesMut};
use etl_cache_core::backend::blocks::{
    BlockChecker, BlockError, BlockFramer, BlockSize, read_payload_at, verify_block, verify_framed,
    verify_payload, verify_payload_in_place,
};
use etl_cache_core::backend::format::{Layout, TRAILER_LEN, Trailer};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const HEADER_CRC: u32 = 0xC0FF_EE11;

fn small() -> BlockSize {
    BlockSize::new(16).unwrap()
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The framed payload and trailer of `stored`, framed in chunks of `step`.
fn frame(header_crc: u32, b: BlockSize, stored: &[u8], step: usize) -> (Vec<u8>, Trailer) {
    let mut out: Vec<Bytes> = Vec::new();
    let mut f = BlockFramer::new(header_crc, b);
    for chunk in stored.chunks(step.max(1)) {
        f.push(Bytes::copy_from_slice(chunk), &mut out);
    }
    let t = f.finish(stored.len() as u64 * 3, &mut out);
    (out.concat(), t)
}

/// What a checker fed `framed` cut at `cuts` hands out, popping after every
/// push (and after an error, what had been checked before it), and how it
/// ended.
struct Outcome {
    handed_out: Vec<u8>,
    /// Handed out after each push, before finish: always whole blocks.
    after_pushes: Vec<usize>,
    end: Result<Trailer, BlockError>,
}

fn check(header_crc: u32, b: BlockSize, framed: &[u8], cuts: &[usize]) -> Outcome {
    let mut c = BlockChecker::new(header_crc, b);
    let mut handed_out = Vec::new();
    let mut after_pushes = Vec::new();
    let mut at = 0;
    let mut ends: Vec<usize> = cuts.iter().copied().filter(|&x| x < framed.len()).collect();
    ends.sort_unstable();
    ends.push(framed.len());
    let mut end = None;
    for cut in ends {
        let pushed = c.push(Bytes::copy_from_slice(&framed[at..cut]));
        at = cut;
        while let Some(p) = c.pop() {
            assert!(!p.is_empty());
            handed_out.extend_from_slice(&p);
        }
        after_pushes.push(handed_out.len());
        if let Err(e) = pushed {
            end = Some(Err(e));
            break;
        }
    }
    let end = end.unwrap_or_else(|| c.finish());
    while let Some(p) = c.pop() {
        handed_out.extend_from_slice(&p);
    }
    Outcome {
        handed_out,
        after_pushes,
        end,
    }
}

/// Fills `buf` with the bytes of `file` at `at`, as a positional read of a
/// file holding `file` would: an unexpected end when they run past it.
fn read_at(file: &[u8], buf: &mut [u8], at: u64) -> std::io::Result<()> {
    let at = at as usize;
    match file.get(at..at + buf.len()) {
        Some(src) => {
            buf.copy_from_slice(src);
            Ok(())
        }
        None => Err(std::io::ErrorKind::UnexpectedEof.into()),
    }
}

/// `read_payload_at` over `after_header` as a file would hold it; counts
/// the reads.
fn positional(
    layout: Layout,
    header_crc: u32,
    after_header: &[u8],
) -> (Result<(Bytes, Trailer), BlockError>, usize) {
    let mut reads = 0;
    let r = read_payload_at(layout, header_crc, after_header.len() as u64, |buf, at| {
        reads += 1;
        read_at(after_header, buf, at)
    })
    .expect("no read error");
    (r, reads)
}

fn every_step(len: usize) -> Vec<usize> {
    (1..=len.max(1)).collect()
}

fn cuts_every(step: usize, len: usize) -> Vec<usize> {
    (step..len).step_by(step).collect()
}

#[test]
fn every_size_roundtrips_in_every_chunking() {
    let b = small();
    for len in 0..=3 * 16 + 7 {
        let stored = data(len, len as u8);
        let (framed, trailer) = frame(HEADER_CRC, b, &stored, 5);
        assert_eq!(
            framed.len() as u64,
            b.framed_len(len as u64).unwrap() + TRAILER_LEN as u64
        );
        // Framing does not depend on how the stored bytes were cut.
        for step in [1, 16, 17, 1000] {
            assert_eq!(frame(HEADER_CRC, b, &stored, step).0, framed);
        }
        for step in every_step(framed.len()) {
            let o = check(HEADER_CRC, b, &framed, &cuts_every(step, framed.len()));
            assert_eq!(o.end, Ok(trailer), "len {len} step {step}");
            assert_eq!(o.handed_out, stored, "len {len} step {step}");
            for n in &o.after_pushes {
                assert_eq!(
                    n % 16,
                    0,
                    "a partial block handed out (len {len} step {step})"
                );
            }
            // The last block waits for finish.
            let last_full = len.saturating_sub(1) / 16 * 16;
            assert!(o.after_pushes.iter().all(|&n| n <= last_full));
        }
        let v = verify_payload(Layout::Blocks(b), HEADER_CRC, Bytes::from(framed.clone())).unwrap();
        assert_eq!(v.trailer(), &trailer);
        assert_eq!(v.pieces().len() as u64, b.block_count(len as u64));
        assert_eq!(v.into_bytes(), stored);
        let (in_place, t) =
            verify_payload_in_place(Layout::Blocks(b), HEADER_CRC, BytesMut::from(&framed[..]))
                .unwrap();
        assert_eq!((in_place.as_ref(), t), (&stored[..], trailer));
        // With the trailer decoded already.
        let payload = Bytes::from(framed[..framed.len() - TRAILER_LEN].to_vec());
        assert_eq!(
            verify_framed(Layout::Blocks(b), HEADER_CRC, payload.clone(), &trailer).unwrap(),
            stored
        );
        assert_eq!(
            verify_framed(Layout::Blocks(b), HEADER_CRC ^ 1, payload, &trailer),
            Err(BlockError::OtherHeader)
        );
        // By position: the trailer, then one read per block.
        let (by_position, reads) = positional(Layout::Blocks(b), HEADER_CRC, &framed);
        let (at, t) = by_position.unwrap();
        assert_eq!((at.as_ref(), t), (&stored[..], trailer));
        assert_eq!(reads as u64, 1 + b.block_count(len as u64));
    }
}

#[test]
fn random_chunkings_roundtrip() {
    let mut runner = TestRunner::new(Config {
        cases: 2_000,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        0usize..300,
        4u8..8,
        1usize..40,
        proptest::collection::vec(0usize..400, 0..30),
    );
    runner
        .run(&strategy, |(len, log2, step, cuts)| {
            let b = BlockSize::from_log2(log2).unwrap();
            let stored = data(len, 7);
            let (framed, trailer) = frame(HEADER_CRC, b, &stored, step);
            let o = check(HEADER_CRC, b, &framed, &cuts);
            prop_assert_eq!(o.end, Ok(trailer));
            prop_assert_eq!(o.handed_out, stored);
            Ok(())
        })
        .unwrap();
}

/// The block (or, past the last, the trailer) holding framed byte `at`.
fn block_of(b: BlockSize, stored_len: u64, at: u64) -> u64 {
    (0..b.block_count(stored_len))
        .find(|&i| b.span(i, stored_len).unwrap().framed.contains(&at))
        .unwrap_or(b.block_count(stored_len))
}

#[test]
fn a_changed_byte_fails_before_any_byte_of_its_block_is_handed_out() {
    let b = small();
    let mut cases = 0;
    for len in [0usize, 1, 5, 15, 16, 17, 31, 32, 33, 47, 48, 49] {
        let stored = data(len, 3);
        let (framed, _) = frame(HEADER_CRC, b, &stored, 1000);
        let blocks = b.block_count(len as u64);
        for at in 0..framed.len() {
            let bad_block = block_of(b, len as u64, at as u64);
            // Blocks before the bad one are handed out, but the last block,
            // which waits for the trailer.
            let good = bad_block.min(blocks.saturating_sub(1)) as usize * 16;
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut bad = framed.clone();
                bad[at] ^= flip;
                for step in [1, 3, 16, 20, 37, bad.len()] {
                    cases += 1;
                    let o = check(HEADER_CRC, b, &bad, &cuts_every(step, bad.len()));
                    let err = o.end.expect_err("a changed byte was accepted");
                    if bad_block < blocks {
                        assert_eq!(err, BlockError::Block { index: bad_block });
                    } else {
                        assert!(
                            matches!(err, BlockError::Trailer { .. }),
                            "len {len} at {at}: {err}"
                        );
                    }
                    assert_eq!(
                        o.handed_out,
                        stored[..good],
                        "len {len}, byte {at} ^ {flip:#x}, chunks of {step}"
                    );
                }
                let in_place = verify_payload_in_place(
                    Layout::Blocks(b),
                    HEADER_CRC,
                    BytesMut::from(&bad[..]),
                );
                if at < bad.len() - TRAILER_LEN {
                    // A changed payload byte, the trailer decoded already.
                    let payload = Bytes::from(bad[..bad.len() - TRAILER_LEN].to_vec());
                    let trailer = Trailer::decode(&bad[bad.len() - TRAILER_LEN..]).unwrap();
                    assert_eq!(
                        verify_framed(Layout::Blocks(b), HEADER_CRC, payload, &trailer).err(),
                        in_place.clone().err(),
                        "len {len} at {at}"
                    );
                }
                let (by_position, _) = positional(Layout::Blocks(b), HEADER_CRC, &bad);
                let whole = verify_payload(Layout::Blocks(b), HEADER_CRC, Bytes::from(bad));
                assert!(whole.is_err());
                assert_eq!(by_position, in_place.clone());
                assert_eq!(in_place.map(|_| ()), whole.map(|_| ()));
            }
        }
    }
    assert!(cases > 10_000, "{cases}");
}

/// Framed blocks of `stored` (each with its checksum) and the trailer.
fn framed_blocks(header_crc: u32, stored: &[u8]) -> (Vec<Vec<u8>>, Vec<u8>) {
    let b = small();
    let (framed, _) = frame(header_crc, b, stored, 1000);
    let blocks = (0..b.block_count(stored.len() as u64))
        .map(|i| {
            let s = b.span(i, stored.len() as u64).unwrap();
            framed[s.framed.start as usize..s.framed.end as usize].to_vec()
        })
        .collect();
    (blocks, framed[framed.len() - TRAILER_LEN..].to_vec())
}

/// Feeds `blocks` then `trailer` in several chunkings; checks that it fails
/// and that what was handed out is exactly the stored bytes of the first
/// `good` blocks.
fn assert_fails_after(blocks: &[Vec<u8>], trailer: &[u8], stored: &[u8], good: usize, what: &str) {
    let mut framed = blocks.concat();
    framed.extend_from_slice(trailer);
    for step in [1, 7, 20, framed.len()] {
        let o = check(
            HEADER_CRC,
            small(),
            &framed,
            &cuts_every(step, framed.len()),
        );
        assert!(o.end.is_err(), "{what}: accepted");
        assert_eq!(
            o.handed_out,
            stored[..(good * 16).min(stored.len())],
            "{what}, chunks of {step}: {:?}",
            o.end
        );
    }
    let in_place = verify_payload_in_place(
        Layout::Blocks(small()),
        HEADER_CRC,
        BytesMut::from(&framed[..]),
    );
    assert!(in_place.is_err(), "{what}: accepted in place");
    let whole = verify_payload(Layout::Blocks(small()), HEADER_CRC, Bytes::from(framed));
    assert!(whole.is_err(), "{what}: accepted whole");
}

#[test]
fn blocks_moved_repeated_dropped_or_foreign_fail_where_they_stand() {
    // Five blocks, the last short.
    let stored = data(16 * 4 + 5, 1);
    let (blocks, trailer) = framed_blocks(HEADER_CRC, &stored);
    assert_eq!(blocks.len(), 5);
    for i in 0..4 {
        for j in i + 1..5 {
            if blocks[i].len() != blocks[j].len() {
                continue; // a short block moved changes the framing too
            }
            let mut swapped = blocks.clone();
            swapped.swap(i, j);
            assert_fails_after(&swapped, &trailer, &stored, i, &format!("swap {i} {j}"));
        }
        let mut repeated = blocks.clone();
        repeated.insert(i + 1, blocks[i].clone());
        assert_fails_after(&repeated, &trailer, &stored, i + 1, &format!("repeat {i}"));
        let mut dropped = blocks.clone();
        dropped.remove(i);
        assert_fails_after(&dropped, &trailer, &stored, i, &format!("drop {i}"));
    }
    // The last full blocks cut off: what is left frames, but the trailer
    // counts more; the new last block waits for the trailer and is not
    // handed out.
    for keep in 0usize..4 {
        let good = keep.saturating_sub(1);
        assert_fails_after(
            &blocks[..keep],
            &trailer,
            &stored,
            good,
            &format!("keep {keep}"),
        );
    }
    // The same bytes in another entry (another header checksum).
    let (other, other_trailer) = framed_blocks(HEADER_CRC ^ 1, &stored);
    for i in 0..5 {
        let mut mixed = blocks.clone();
        mixed[i] = other[i].clone();
        assert_fails_after(&mixed, &trailer, &stored, i, &format!("foreign {i}"));
    }
    assert_fails_after(&blocks, &other_trailer, &stored, 4, "foreign trailer");
    let o = check(
        HEADER_CRC,
        small(),
        &[other.concat(), other_trailer].concat(),
        &[],
    );
    assert_eq!(o.end, Err(BlockError::Block { index: 0 }));
}

#[test]
fn two_entries_with_the_same_header_do_not_mix() {
    // Same header checksum, other bytes: every block passes where it
    // stands, the list of block checksums in the trailer does not.
    let stored = data(16 * 3 + 2, 1);
    let other_stored = data(16 * 3 + 2, 99);
    let (blocks, trailer) = framed_blocks(HEADER_CRC, &stored);
    let (other, _) = framed_blocks(HEADER_CRC, &other_stored);
    let mut mixed = blocks.clone();
    mixed[1] = other[1].clone();
    let mut framed = mixed.concat();
    framed.extend_from_slice(&trailer);
    let o = check(HEADER_CRC, small(), &framed, &cuts_every(5, framed.len()));
    assert_eq!(o.end, Err(BlockError::BlockList));
    assert_eq!(o.handed_out.len(), 3 * 16, "all but the last block");
    assert_eq!(
        verify_payload(Layout::Blocks(small()), HEADER_CRC, Bytes::from(framed)).unwrap_err(),
        BlockError::BlockList
    );
}

#[test]
fn short_or_misframed_streams_fail() {
    let b = small();
    let stored = data(20, 0);
    let (framed, _) = frame(HEADER_CRC, b, &stored, 1000);
    for cut in 0..framed.len() {
        let o = check(HEADER_CRC, b, &framed[..cut], &cuts_every(3, cut));
        assert!(o.end.is_err(), "cut at {cut}");
        // Block 0 (checked, and with more than a trailer after it) at most;
        // never the last block.
        let n = o.handed_out.len();
        assert!(n == 0 || n == 16, "cut at {cut}: {n} bytes");
        assert_eq!(o.handed_out, stored[..n], "cut at {cut}");
    }
    assert_eq!(
        check(HEADER_CRC, b, &framed[..10], &[]).end,
        Err(BlockError::Truncated { len: 10 })
    );
    // A trailer after 1 to 4 bytes: no block fits.
    let mut out = Vec::new();
    let t = BlockFramer::new(HEADER_CRC, b).finish(0, &mut out);
    for extra in 1..=4 {
        let mut f = vec![0u8; extra];
        f.extend_from_slice(&t.encode());
        assert_eq!(
            check(HEADER_CRC, b, &f, &[]).end,
            Err(BlockError::Framing {
                framed_len: extra as u64
            })
        );
    }
}

#[test]
fn a_checker_stays_failed_and_keeps_what_it_checked() {
    let b = small();
    let stored = data(50, 0);
    let (mut framed, _) = frame(HEADER_CRC, b, &stored, 1000);
    framed[21] ^= 4; // block 1
    let mut c = BlockChecker::new(HEADER_CRC, b);
    let err = c.push(Bytes::from(framed)).unwrap_err();
    assert_eq!(err, BlockError::Block { index: 1 });
    assert_eq!(c.push(Bytes::from_static(b"more")), Err(err.clone()));
    assert_eq!(c.finish(), Err(err));
    assert_eq!(c.checked_len(), 16);
    assert_eq!(c.pop().as_deref(), Some(&stored[..16]));
    assert_eq!(c.pop(), None);
}

#[test]
fn positional_reads_check_one_block() {
    let b = small();
    let stored = data(40, 2);
    let (framed, _) = frame(HEADER_CRC, b, &stored, 1000);
    let framed = Bytes::from(framed);
    for i in 0..3 {
        let s = b.span(i, 40).unwrap();
        let one = framed.slice(s.framed.start as usize..s.framed.end as usize);
        let got = verify_block(b, HEADER_CRC, i, one.clone()).unwrap();
        assert_eq!(got, stored[s.stored.start as usize..s.stored.end as usize]);
        assert_eq!(
            verify_block(b, HEADER_CRC, i + 1, one.clone()),
            Err(BlockError::Block { index: i + 1 })
        );
        assert_eq!(
            verify_block(b, HEADER_CRC ^ 1, i, one.clone()),
            Err(BlockError::Block { index: i })
        );
    }
    assert!(matches!(
        verify_block(b, HEADER_CRC, 0, framed.slice(..4)),
        Err(BlockError::Framing { .. })
    ));
    assert!(matches!(
        verify_block(b, HEADER_CRC, 0, framed.slice(..21)),
        Err(BlockError::Framing { .. })
    ));
}

#[test]
fn format_1_payloads_verify_whole() {
    let stored = b"format one payload".to_vec();
    let trailer = Trailer {
        logical_len: 18,
        stored_len: 18,
        payload_crc: etl_cache_core::backend::codec::crc32c(&stored),
        header_crc: HEADER_CRC,
    };
    let mut framed = stored.clone();
    framed.extend_from_slice(&trailer.encode());
    let v = verify_payload(Layout::Whole, HEADER_CRC, Bytes::from(framed.clone())).unwrap();
    assert_eq!(v.trailer(), &trailer);
    assert_eq!(
        verify_payload_in_place(Layout::Whole, HEADER_CRC, BytesMut::from(&framed[..])),
        Ok((Bytes::from(stored.clone()), trailer))
    );
    assert_eq!(v.into_bytes(), stored);
    assert_eq!(
        positional(Layout::Whole, HEADER_CRC, &framed).0,
        Ok((Bytes::from(stored.clone()), trailer))
    );
    let mut bad = framed.clone();
    bad[3] ^= 1;
    assert_eq!(
        positional(Layout::Whole, HEADER_CRC, &bad).0,
        Err(BlockError::Payload)
    );
    assert_eq!(
        verify_payload(Layout::Whole, HEADER_CRC, Bytes::from(bad)),
        Err(BlockError::Payload)
    );
    assert_eq!(
        verify_payload(Layout::Whole, HEADER_CRC ^ 1, Bytes::from(framed.clone())),
        Err(BlockError::OtherHeader)
    );
    assert_eq!(
        verify_payload(Layout::Whole, HEADER_CRC, Bytes::from(framed[1..].to_vec())),
        Err(BlockError::StoredLength {
            trailer: 18,
            found: 17
        })
    );
}

#[test]
fn positional_reads_of_a_file_that_shrank_or_failed() {
    let b = small();
    let stored = data(40, 9);
    let (framed, _) = frame(HEADER_CRC, b, &stored, 1000);
    // The file was this long when opened, and is shorter now.
    let short = &framed[..framed.len() - 10];
    let r = read_payload_at(
        Layout::Blocks(b),
        HEADER_CRC,
        framed.len() as u64,
        |buf, at| read_at(short, buf, at),
    )
    .unwrap();
    assert_eq!(
        r,
        Err(BlockError::Truncated {
            len: framed.len() as u64
        })
    );
    // Less than a trailer after the header.
    let (r, reads) = positional(Layout::Blocks(b), HEADER_CRC, &framed[..TRAILER_LEN - 1]);
    assert_eq!(
        (r, reads),
        (
            Err(BlockError::Truncated {
                len: TRAILER_LEN as u64 - 1
            }),
            0
        )
    );
    // Any other read error is the caller's, as it was.
    let e = read_payload_at(
        Layout::Blocks(b),
        HEADER_CRC,
        framed.len() as u64,
        |_, _| Err(std::io::Error::other("disk on fire")),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "disk on fire");
}

/// A backend moves these into tasks and streams; dropping one half-way (a
/// cancelled read) leaves nothing behind.
#[test]
fn framer_and_checker_move_between_tasks() {
    fn send_sync<T: Send + Sync + 'static>(_: &T) {}
    let mut c = BlockChecker::new(HEADER_CRC, small());
    c.push(Bytes::from_static(&[0; 50])).unwrap();
    send_sync(&c);
    send_sync(&BlockFramer::new(HEADER_CRC, small()));
    let (framed, _) = frame(HEADER_CRC, small(), &data(40, 0), 3);
    let v = verify_payload(Layout::Blocks(small()), HEADER_CRC, Bytes::from(framed)).unwrap();
    send_sync(&v);
}
