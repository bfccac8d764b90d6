//! `BlockChecker` fed random chunkings, against `verify_payload` and
//! `verify_payload_in_place` over the same bytes.
//!
//! - A payload framed by `BlockFramer` comes back whole, however it is cut.
//! - With one byte changed, the checker fails and has handed out exactly
//!   the blocks before the changed one (but the last, which waits for the
//!   trailer), never a byte of it.
//! - Over arbitrary bytes it never panics, hands out only whole blocks
//!   before its end, and agrees with the whole-payload checks.
#![no_main]
#![forbid(unsafe_code)]

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use etl_cache_core::backend::blocks::{
    BlockChecker, BlockError, BlockFramer, BlockSize, verify_payload, verify_payload_in_place,
};
use etl_cache_core::backend::format::{Layout, Trailer};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    header_crc: u32,
    log2: u8,
    stored: Vec<u8>,
    /// Chunk lengths for the framer's input and for the checker's.
    frame_cuts: Vec<u8>,
    check_cuts: Vec<u16>,
    /// A changed byte (`flip` 0: none), or arbitrary bytes to check.
    flip_at: u16,
    flip: u8,
    raw: Option<Vec<u8>>,
}

fn chunks<'a, T: Copy + Into<usize>>(bytes: &'a [u8], cuts: &[T]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    for &c in cuts {
        let n = c.into().min(bytes.len() - at);
        out.push(&bytes[at..at + n]);
        at += n;
    }
    out.push(&bytes[at..]);
    out
}

/// Feeds the checker; returns what it handed out, whole-block checks of
/// each push, and how it ended.
fn check(
    crc: u32,
    b: BlockSize,
    framed: &[u8],
    cuts: &[u16],
) -> (Vec<u8>, Result<Trailer, BlockError>) {
    let mut c = BlockChecker::new(crc, b);
    let mut out = Vec::new();
    for chunk in chunks(framed, cuts) {
        let r = c.push(Bytes::copy_from_slice(chunk));
        while let Some(p) = c.pop() {
            out.extend_from_slice(&p);
        }
        assert_eq!(out.len() as u64 % b.get(), 0, "a partial block handed out");
        if let Err(e) = r {
            return (out, Err(e));
        }
    }
    let end = c.finish();
    while let Some(p) = c.pop() {
        out.extend_from_slice(&p);
    }
    (out, end)
}

fuzz_target!(|input: Input| {
    let b = BlockSize::from_log2(4 + input.log2 % 5).expect("in range");
    let layout = Layout::Blocks(b);
    let crc = input.header_crc;
    if let Some(raw) = input.raw {
        let (out, end) = check(crc, b, &raw, &input.check_cuts);
        let whole = verify_payload(layout, crc, Bytes::from(raw.clone()));
        let in_place = verify_payload_in_place(layout, crc, BytesMut::from(&raw[..]));
        match (&end, whole, in_place) {
            (Ok(t), Ok(w), Ok((bytes, t2))) => {
                assert_eq!((w.trailer(), &t2), (t, t));
                assert_eq!(w.into_bytes(), out);
                assert_eq!(bytes, out);
            }
            (Err(_), Err(_), Err(_)) => {}
            (end, whole, in_place) => {
                panic!("disagree: stream {end:?}, whole {whole:?}, in place {in_place:?}")
            }
        }
        return;
    }
    let mut framed = Vec::new();
    let mut f = BlockFramer::new(crc, b);
    for chunk in chunks(&input.stored, &input.frame_cuts) {
        f.push(Bytes::copy_from_slice(chunk), &mut framed);
    }
    let trailer = f.finish(7, &mut framed);
    let mut framed = framed.concat();
    let len = input.stored.len() as u64;
    assert_eq!(framed.len() as u64, b.framed_len(len).unwrap() + 32);
    if input.flip == 0 {
        let (out, end) = check(crc, b, &framed, &input.check_cuts);
        assert_eq!(end, Ok(trailer));
        assert_eq!(out, input.stored);
        return;
    }
    let at = input.flip_at as usize % framed.len();
    framed[at] ^= input.flip;
    let blocks = b.block_count(len);
    let bad = (0..blocks)
        .find(|&i| b.span(i, len).unwrap().framed.contains(&(at as u64)))
        .unwrap_or(blocks);
    let good = (bad.min(blocks.saturating_sub(1)) * b.get()) as usize;
    let (out, end) = check(crc, b, &framed, &input.check_cuts);
    assert!(end.is_err(), "byte {at} ^ {:#x} accepted", input.flip);
    assert_eq!(out, input.stored[..good], "byte {at}: {end:?}");
    assert!(verify_payload(layout, crc, Bytes::from(framed)).is_err());
});
