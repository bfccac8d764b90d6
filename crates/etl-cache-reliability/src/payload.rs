//! Deterministic payloads, and self-describing values a checker can verify
//! without knowing what was written: each names its key, its sequence
//! number and its length, and its body is a function of those.

use bytes::Bytes;
use etl_cache_core::{Kind, Value};

/// SplitMix64's finalizer: a good 64-bit mix.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 64-bit fingerprint of bytes (not cryptographic).
pub fn mix_bytes(b: &[u8]) -> u64 {
    let mut h = 0x6A09_E667_F3BC_C908u64 ^ b.len() as u64;
    for chunk in b.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = mix(h ^ u64::from_le_bytes(w));
    }
    h
}

/// How a body looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// ASCII letters with little entropy: compresses about 4x, valid UTF-8.
    Text,
    /// Random bytes: does not compress.
    Random,
}

impl Style {
    fn code(self) -> char {
        match self {
            Style::Text => 't',
            Style::Random => 'r',
        }
    }

    fn from_code(c: &str) -> Option<Style> {
        match c {
            "t" => Some(Style::Text),
            "r" => Some(Style::Random),
            _ => None,
        }
    }
}

/// Fills `buf` with the body bytes of `seed` from position `pos` on: the
/// same bytes whatever the chunking.
pub fn fill(seed: u64, style: Style, pos: u64, buf: &mut [u8]) {
    let base = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut word_at = u64::MAX;
    let mut word = 0u64;
    for (i, out) in buf.iter_mut().enumerate() {
        let p = pos + i as u64;
        if p / 8 != word_at {
            word_at = p / 8;
            word = mix(base ^ word_at);
        }
        let b = (word >> ((p % 8) * 8)) as u8;
        *out = match style {
            Style::Random => b,
            Style::Text => b"etlc"[(b % 4) as usize],
        };
    }
}

/// `len` body bytes of `seed`.
pub fn body(seed: u64, style: Style, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill(seed, style, 0, &mut v);
    v
}

/// The header line of a self-describing value.
fn header(key: &str, seq: u64, len: usize, style: Style) -> String {
    // The key is hex-encoded so any key fits on one line.
    let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
    format!("etlv {hex} {seq} {len} {}\n", style.code())
}

/// A self-describing value of `kind`: `len` body bytes of `(key, seq)`.
pub fn value(key: &str, seq: u64, kind: Kind, len: usize, style: Style) -> Value {
    let style = if kind == Kind::Bytes {
        style
    } else {
        Style::Text
    };
    let mut bytes = header(key, seq, len, style).into_bytes();
    bytes.extend_from_slice(&body(seq, style, len));
    match kind {
        Kind::Text => Value::Text(String::from_utf8(bytes).expect("ASCII")),
        Kind::Json => Value::Json(serde_json::json!({
            "v": String::from_utf8(bytes).expect("ASCII"),
            "seq": seq,
            "n": [1, 2.5, null, true],
        })),
        _ => Value::Bytes(Bytes::from(bytes)),
    }
}

/// The stream of a self-describing bytes value, cut in chunks of the sizes
/// `chunks` yields (cycled), each generated on demand.
pub fn stream(
    key: &str,
    seq: u64,
    len: usize,
    style: Style,
    chunk_sizes: Vec<usize>,
) -> etl_cache_core::ByteStream {
    use futures::StreamExt;
    let head = Bytes::from(header(key, seq, len, style).into_bytes());
    let mut pos = 0u64;
    let mut i = 0;
    let body = futures::stream::iter(std::iter::from_fn(move || {
        if pos >= len as u64 {
            return None;
        }
        let n = chunk_sizes[i % chunk_sizes.len()]
            .max(1)
            .min(len - pos as usize);
        i += 1;
        let mut buf = vec![0u8; n];
        fill(seq, style, pos, &mut buf);
        pos += n as u64;
        Some(Ok(Bytes::from(buf)))
    }));
    futures::stream::iter([Ok(head)]).chain(body).boxed()
}

/// Checks that `bytes` are a complete self-describing value written for
/// `key`; returns its sequence number.
///
/// # Errors
///
/// What is wrong, when the bytes are torn, foreign or of another key.
pub fn verify_bytes(key: &str, bytes: &[u8]) -> Result<u64, String> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| format!("no header line in {} bytes", bytes.len()))?;
    let head = std::str::from_utf8(&bytes[..nl]).map_err(|_| "header is not UTF-8")?;
    let parts: Vec<&str> = head.split(' ').collect();
    let [magic, hex, seq, len, style] = parts[..] else {
        return Err(format!("bad header {head:?}"));
    };
    if magic != "etlv" {
        return Err(format!("bad header {head:?}"));
    }
    let want_hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
    if hex != want_hex {
        return Err(format!("value of another key: {head:?}"));
    }
    let seq: u64 = seq.parse().map_err(|_| format!("bad seq in {head:?}"))?;
    let len: usize = len.parse().map_err(|_| format!("bad len in {head:?}"))?;
    let style = Style::from_code(style).ok_or_else(|| format!("bad style in {head:?}"))?;
    let body_got = &bytes[nl + 1..];
    if body_got.len() != len {
        return Err(format!(
            "torn value: seq {seq} has {} body bytes, {len} written",
            body_got.len()
        ));
    }
    let mut want = vec![0u8; 64 * 1024];
    for (i, got) in body_got.chunks(want.len()).enumerate() {
        let w = &mut want[..got.len()];
        fill(seq, style, (i * 64 * 1024) as u64, w);
        if got != w {
            return Err(format!(
                "mixed or corrupt value: seq {seq} differs in chunk {i}"
            ));
        }
    }
    Ok(seq)
}

/// As [`verify_bytes`] for a value of any kind.
///
/// # Errors
///
/// What is wrong.
pub fn verify(key: &str, v: &Value) -> Result<u64, String> {
    match v {
        Value::Text(s) => verify_bytes(key, s.as_bytes()),
        Value::Bytes(b) => verify_bytes(key, b),
        Value::Json(j) => {
            let s = j
                .get("v")
                .and_then(|s| s.as_str())
                .ok_or("JSON value without \"v\"")?;
            let seq = verify_bytes(key, s.as_bytes())?;
            if j.get("seq").and_then(|s| s.as_u64()) != Some(seq) {
                return Err("JSON seq does not match".into());
            }
            Ok(seq)
        }
    }
}
