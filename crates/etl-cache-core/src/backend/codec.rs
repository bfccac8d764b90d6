//! Streaming compression with checksums, shared by every backend.
//!
//! [`Encoder`] is push based: hand it logical chunks, write what it returns.
//! [`PayloadReader`] is pull based, so a highly compressed payload never
//! expands into more memory than the caller's read buffer.

use std::io::{self, BufReader, Read, Write};

use bytes::Bytes;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

use crate::{Codec, Compression};

/// The logical bytes of an entry from its checked stored bytes:
/// decompressed as `meta.codec` says, their length checked against
/// `meta.logical_len`. The error says what is wrong, in words (for
/// [`crate::Error::Corrupt`]).
///
/// # Errors
///
/// When the bytes do not decompress, or decompress to another length.
pub fn logical_bytes(meta: &crate::EntryMeta, stored: Bytes) -> Result<Bytes, String> {
    let logical = if meta.codec == Codec::None {
        stored
    } else {
        let mut out = Vec::with_capacity(meta.logical_len.min(1 << 30) as usize);
        PayloadReader::new(meta.codec, &stored[..])
            .and_then(|mut r| r.read_to_end(&mut out))
            .map_err(|e| format!("payload does not decompress: {e}"))?;
        Bytes::from(out)
    };
    if logical.len() as u64 != meta.logical_len {
        return Err(format!(
            "payload is {} bytes after decompression, {} expected",
            logical.len(),
            meta.logical_len
        ));
    }
    Ok(logical)
}

/// The crc32c of `bytes` (hardware accelerated where the CPU has it).
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// The crc32c polynomial with its bits reversed, x^32 left out: the form in
/// which the top bit of a `u32` stands for x^0 and the lowest for x^31.
const CRC32C_POLY: u32 = 0x82F6_3B78;

/// `a` times `b`, modulo the crc32c polynomial, over GF(2), in that form.
fn crc32c_mul(a: u32, mut b: u32) -> u32 {
    let mut product = 0;
    for bit in (0..32).rev() {
        // `b` is the second factor times x^(31 - bit) here.
        if a & (1 << bit) != 0 {
            product ^= b;
        }
        b = if b & 1 != 0 {
            (b >> 1) ^ CRC32C_POLY
        } else {
            b >> 1
        };
    }
    product
}

/// x^(8 * len) modulo the crc32c polynomial: what appending `len` bytes
/// multiplies the checksum before them by (the bytes' own checksum is then
/// added).
fn crc32c_shift(mut len: u64) -> u32 {
    let mut result = 1 << 31; // x^0
    let mut power = 1 << (31 - 8); // x^8: one byte
    while len > 0 {
        if len & 1 != 0 {
            result = crc32c_mul(result, power);
        }
        power = crc32c_mul(power, power);
        len >>= 1;
    }
    result
}

/// Puts together the crc32c of a payload from the checksums of its
/// consecutive pieces, each computed on its own (by several threads, say):
/// the payload is then summed once, by whoever holds each piece while it is
/// hot in cache. A push costs a few dozen instructions, none of them
/// proportional to the piece's length.
///
/// ```
/// use etl_cache_core::backend::codec::{crc32c, CrcChain};
///
/// let data = b"extract, transform, load";
/// let mut chain = CrcChain::new(8);
/// for piece in data.chunks(8) {
///     chain.push(crc32c(piece), piece.len() as u64);
/// }
/// assert_eq!(chain.crc(), crc32c(data));
/// assert_eq!(chain.len(), data.len() as u64);
/// ```
#[derive(Debug, Clone)]
pub struct CrcChain {
    crc: u32,
    len: u64,
    /// The length most pieces have, and its shift, worked out once.
    usual_len: u64,
    usual_shift: u32,
}

impl CrcChain {
    /// An empty chain whose pieces are mostly `usual_len` bytes long (any
    /// length works; that one is the cheapest).
    pub fn new(usual_len: u64) -> Self {
        CrcChain {
            crc: 0,
            len: 0,
            usual_len,
            usual_shift: crc32c_shift(usual_len),
        }
    }

    /// Appends a piece of `len` bytes whose crc32c is `crc`.
    pub fn push(&mut self, crc: u32, len: u64) {
        let shift = if len == self.usual_len {
            self.usual_shift
        } else {
            crc32c_shift(len)
        };
        self.crc = crc32c_mul(self.crc, shift) ^ crc;
        self.len += len;
    }

    /// Appends the bytes of a piece that has no checksum yet.
    pub fn append(&mut self, bytes: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.len += bytes.len() as u64;
    }

    /// The crc32c of the pieces pushed so far, in order.
    pub fn crc(&self) -> u32 {
        self.crc
    }

    /// The bytes pushed so far.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        self.len
    }
}

/// Lengths and checksum of a payload, as recorded in the entry trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Bytes before compression.
    pub logical_len: u64,
    /// Bytes as stored.
    pub stored_len: u64,
    /// crc32c of the stored bytes.
    pub crc: u32,
}

enum Enc {
    None,
    Gzip(GzEncoder<Vec<u8>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

/// Compresses a payload chunk by chunk and checksums what is stored.
pub struct Encoder {
    enc: Enc,
    totals: Totals,
    checksum: bool,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("totals", &self.totals)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// An encoder for `compression`.
    ///
    /// # Errors
    ///
    /// When the compressor cannot be set up (out of memory).
    pub fn new(compression: Compression) -> io::Result<Encoder> {
        let enc = match compression.codec() {
            Codec::None => Enc::None,
            Codec::Gzip => Enc::Gzip(GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(compression.level() as u32),
            )),
            Codec::Zstd => Enc::Zstd(zstd::stream::write::Encoder::new(
                Vec::new(),
                compression.level(),
            )?),
        };
        Ok(Encoder {
            enc,
            totals: Totals::default(),
            checksum: true,
        })
    }

    /// Leaves the stored bytes unchecksummed ([`Totals::crc`] stays 0), for
    /// format 2 entries, whose [`BlockFramer`](crate::backend::blocks::BlockFramer)
    /// checksums them block by block as they pass: one pass over the bytes
    /// instead of two.
    #[must_use]
    pub fn without_checksum(self) -> Encoder {
        Encoder {
            checksum: false,
            ..self
        }
    }

    fn account(&mut self, out: &[u8]) {
        self.totals.stored_len += out.len() as u64;
        if self.checksum {
            self.totals.crc = crc32c::crc32c_append(self.totals.crc, out);
        }
    }

    /// Feeds logical bytes; returns the stored bytes ready to write (possibly empty).
    ///
    /// # Errors
    ///
    /// When the compressor fails.
    pub fn encode(&mut self, input: Bytes) -> io::Result<Bytes> {
        self.totals.logical_len += input.len() as u64;
        let out = match &mut self.enc {
            Enc::None => input,
            Enc::Gzip(e) => {
                e.write_all(&input)?;
                Bytes::from(std::mem::take(e.get_mut()))
            }
            Enc::Zstd(e) => {
                e.write_all(&input)?;
                Bytes::from(std::mem::take(e.get_mut()))
            }
        };
        self.account(&out);
        Ok(out)
    }

    /// Ends the payload; returns the last stored bytes and the totals.
    ///
    /// # Errors
    ///
    /// When the compressor fails.
    pub fn finish(mut self) -> io::Result<(Bytes, Totals)> {
        let out = match std::mem::replace(&mut self.enc, Enc::None) {
            Enc::None => Bytes::new(),
            Enc::Gzip(e) => Bytes::from(e.finish()?),
            Enc::Zstd(e) => Bytes::from(e.finish()?),
        };
        self.account(&out);
        Ok((out, self.totals))
    }

    /// Compresses a whole value at once.
    ///
    /// # Errors
    ///
    /// When the compressor fails.
    pub fn encode_all(compression: Compression, input: Bytes) -> io::Result<(Bytes, Totals)> {
        Self::encode_all_with(compression, input, true)
    }

    /// [`Encoder::encode_all`] without the checksum of the stored bytes
    /// ([`Totals::crc`] is 0): see [`Encoder::without_checksum`].
    ///
    /// # Errors
    ///
    /// When the compressor fails.
    pub fn encode_all_without_checksum(
        compression: Compression,
        input: Bytes,
    ) -> io::Result<(Bytes, Totals)> {
        Self::encode_all_with(compression, input, false)
    }

    fn encode_all_with(
        compression: Compression,
        input: Bytes,
        checksum: bool,
    ) -> io::Result<(Bytes, Totals)> {
        // A whole value is compressed in one call: zstd then knows the size
        // up front and reads the input where it lies, where its streaming
        // API copies every byte into its window first (the same frame
        // format either way).
        if compression.codec() == Codec::Zstd {
            let stored = Bytes::from(zstd::bulk::compress(&input, compression.level())?);
            let totals = Totals {
                logical_len: input.len() as u64,
                stored_len: stored.len() as u64,
                crc: if checksum { crc32c::crc32c(&stored) } else { 0 },
            };
            return Ok((stored, totals));
        }
        let mut enc = Encoder::new(compression)?;
        enc.checksum = checksum;
        let first = enc.encode(input)?;
        let (last, totals) = enc.finish()?;
        if last.is_empty() {
            return Ok((first, totals));
        }
        let mut all = Vec::with_capacity(first.len() + last.len());
        all.extend_from_slice(&first);
        all.extend_from_slice(&last);
        Ok((Bytes::from(all), totals))
    }
}

/// A reader that checksums and counts what passes through it.
#[derive(Debug)]
pub struct CrcReader<R> {
    inner: R,
    crc: u32,
    len: u64,
    io_failed: bool,
}

impl<R: Read> CrcReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        CrcReader {
            inner,
            crc: 0,
            len: 0,
            io_failed: false,
        }
    }
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
                self.len += n as u64;
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.io_failed = true;
                }
                Err(e)
            }
        }
    }
}

enum Dec<R: Read> {
    None(CrcReader<R>),
    Gzip(Box<GzDecoder<CrcReader<R>>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<CrcReader<R>>>>),
}

/// Reads the logical bytes of a stored payload, checksumming the stored bytes.
///
/// Read it to the end, then call [`PayloadReader::finish`] and compare with the
/// entry's trailer. A decompression failure is reported as
/// [`io::ErrorKind::InvalidData`]; a failure of the underlying reader keeps its
/// own kind (see [`PayloadReader::source_failed`]).
pub struct PayloadReader<R: Read> {
    dec: Dec<R>,
    logical: u64,
}

impl<R: Read> std::fmt::Debug for PayloadReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadReader")
            .field("logical", &self.logical)
            .finish_non_exhaustive()
    }
}

impl<R: Read> PayloadReader<R> {
    /// Decodes the stored bytes read from `inner` with `codec`. `inner` must end
    /// where the payload ends (use [`Read::take`]).
    ///
    /// # Errors
    ///
    /// When the decompressor cannot be set up.
    pub fn new(codec: Codec, inner: R) -> io::Result<Self> {
        let inner = CrcReader::new(inner);
        let dec = match codec {
            Codec::None => Dec::None(inner),
            Codec::Gzip => Dec::Gzip(Box::new(GzDecoder::new(inner))),
            Codec::Zstd => Dec::Zstd(Box::new(zstd::stream::read::Decoder::new(inner)?)),
        };
        Ok(PayloadReader { dec, logical: 0 })
    }

    fn crc_reader(&mut self) -> &mut CrcReader<R> {
        match &mut self.dec {
            Dec::None(r) => r,
            Dec::Gzip(d) => d.get_mut(),
            Dec::Zstd(d) => d.get_mut().get_mut(),
        }
    }

    /// Whether the underlying reader (not the decompressor) failed.
    pub fn source_failed(&mut self) -> bool {
        self.crc_reader().io_failed
    }

    /// Reads whatever stored bytes the decompressor left unread, so the
    /// checksum covers the whole payload, and returns the totals.
    ///
    /// # Errors
    ///
    /// When the underlying reader fails.
    pub fn finish(&mut self) -> io::Result<Totals> {
        let logical = self.logical;
        let r = self.crc_reader();
        io::copy(r, &mut io::sink())?;
        Ok(Totals {
            logical_len: logical,
            stored_len: r.len,
            crc: r.crc,
        })
    }
}

impl<R: Read> Read for PayloadReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let res = match &mut self.dec {
            Dec::None(r) => r.read(buf),
            Dec::Gzip(d) => d.read(buf),
            Dec::Zstd(d) => d.read(buf),
        };
        match res {
            Ok(n) => {
                self.logical += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                if self.source_failed() {
                    Err(e)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("payload does not decompress: {e}"),
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_chain_matches_the_checksum_of_the_whole() {
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for usual in [1usize, 7, 4096, 65_536, 1 << 20] {
            let mut chain = CrcChain::new(usual as u64);
            let mut at = 0;
            // Mostly the usual length, with odd and empty pieces between.
            for (i, piece) in data.chunks(usual).take(300).enumerate() {
                let cut = if i % 5 == 3 {
                    piece.len() / 3
                } else {
                    piece.len()
                };
                for part in [&piece[..cut], &piece[cut..cut], &piece[cut..]] {
                    chain.push(crc32c(part), part.len() as u64);
                }
                at += piece.len();
            }
            assert_eq!(chain.len(), at as u64, "usual {usual}");
            assert_eq!(chain.crc(), crc32c(&data[..at]), "usual {usual}");
            assert_eq!(
                crc32c::crc32c_append(crc32c(&data[..at / 2]), &data[at / 2..at]),
                chain.crc()
            );
        }
        assert_eq!(CrcChain::new(10).crc(), crc32c(b""));
    }

    fn roundtrip(c: Compression, data: &[u8]) {
        let mut enc = Encoder::new(c).unwrap();
        let mut stored = Vec::new();
        for chunk in data.chunks(7_000) {
            stored.extend_from_slice(&enc.encode(Bytes::copy_from_slice(chunk)).unwrap());
        }
        let (last, totals) = enc.finish().unwrap();
        stored.extend_from_slice(&last);
        assert_eq!(totals.logical_len, data.len() as u64);
        assert_eq!(totals.stored_len, stored.len() as u64);
        assert_eq!(totals.crc, crc32c::crc32c(&stored));
        let mut r = PayloadReader::new(c.codec(), &stored[..]).unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(r.finish().unwrap(), totals);
    }

    /// `rows` lines of XML-like text: compresses well.
    fn xml_rows(rows: u32) -> Vec<u8> {
        (0..rows)
            .flat_map(|i| format!("<row id=\"{i}\"/>").into_bytes())
            .collect()
    }

    /// Every codec, and zstd at a high level too.
    fn every_compression() -> [Compression; 4] {
        [
            Compression::NONE,
            Compression::gzip(),
            Compression::zstd(),
            Compression::zstd_level(19).unwrap(),
        ]
    }

    #[test]
    fn every_codec_roundtrips() {
        let data = xml_rows(100_000);
        for c in every_compression() {
            roundtrip(c, &data);
            roundtrip(c, b"");
        }
    }

    /// A whole value compressed at once (zstd in one call, the others
    /// through the streaming encoder) reads back whole through the same
    /// reader, with totals that describe what was stored.
    #[test]
    fn whole_values_roundtrip() {
        let data = xml_rows(50_000);
        for c in every_compression() {
            for input in [&data[..], b""] {
                let (stored, totals) =
                    Encoder::encode_all(c, Bytes::copy_from_slice(input)).unwrap();
                assert_eq!(totals.logical_len, input.len() as u64, "{c}");
                assert_eq!(totals.stored_len, stored.len() as u64, "{c}");
                assert_eq!(totals.crc, crc32c::crc32c(&stored), "{c}");
                if c.codec() != Codec::None && !input.is_empty() {
                    assert!(
                        stored.len() < input.len() / 4,
                        "{c}: {} bytes",
                        stored.len()
                    );
                }
                let mut r = PayloadReader::new(c.codec(), &stored[..]).unwrap();
                let mut back = Vec::new();
                r.read_to_end(&mut back).unwrap();
                assert!(back == input, "{c}");
                assert_eq!(r.finish().unwrap(), totals, "{c}");
            }
        }
    }

    #[test]
    fn without_checksum_stores_the_same_bytes() {
        let data = xml_rows(20_000);
        for c in every_compression() {
            let (with, t) = Encoder::encode_all(c, Bytes::from(data.clone())).unwrap();
            let (without, u) =
                Encoder::encode_all_without_checksum(c, Bytes::from(data.clone())).unwrap();
            assert_eq!(with, without, "{c}");
            assert_eq!(u, Totals { crc: 0, ..t }, "{c}");
            // Streamed (zstd frames it differently from a whole value).
            let streamed = |enc: Encoder| {
                let mut enc = enc;
                let mut stored = enc.encode(Bytes::from(data.clone())).unwrap().to_vec();
                let (last, totals) = enc.finish().unwrap();
                stored.extend_from_slice(&last);
                (stored, totals)
            };
            let (with, t) = streamed(Encoder::new(c).unwrap());
            let (without, u) = streamed(Encoder::new(c).unwrap().without_checksum());
            assert_eq!(with, without, "{c}");
            assert_eq!(u, Totals { crc: 0, ..t }, "{c}");
        }
    }

    #[test]
    fn garbage_is_invalid_data() {
        for codec in [Codec::Gzip, Codec::Zstd] {
            let mut r = PayloadReader::new(codec, &b"definitely not compressed"[..]).unwrap();
            let err = r.read_to_end(&mut Vec::new()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{codec}");
        }
    }
}
