//! A stream never hands out a byte that was not checked (DESIGN invariant 9).
//!
//! DiskCache entries are written in format 2: blocks of 1 MiB, each followed
//! by its checksum. A byte is flipped in block `k` (one of its bytes, or one
//! of its checksum's), of a text entry set whole and of a multi-MB entry
//! set as a stream, uncompressed (read by one thread, and by two for the
//! large one), gzip and zstd. `get_stream` must hand out exactly the blocks
//! before `k` and nothing after (for a compressed entry: a correct prefix of
//! the value, no longer than what those blocks decompress to), then end with
//! `InvalidData` carrying `Error::Corrupt`, and the entry must be gone. A
//! trailer whose list of block checksums is wrong withholds the last block.
//!
//! Entries of format 1 (written by older versions, one checksum over the
//! whole payload) are still read, and a stream of a damaged one hands out
//! nothing at all: it is checked whole before its first byte goes.

use std::io::Read;
use std::path::Path;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use etl_cache_core::backend::blocks::BlockSize;
use etl_cache_core::backend::codec::{Encoder, PayloadReader, crc32c};
use etl_cache_core::backend::format::{Header, Layout, TRAILER_LEN, Trailer};
use etl_cache_core::testing::sample_bytes;
use etl_cache_core::{ByteStream, Cache, Codec, Compression, Error, Kind, SetOptions, Value};
use etl_cache_fs::DiskCache;
use etl_cache_reliability::fixtures::{on_fresh_disk, temp_root};
use etl_cache_reliability::{layout, report, runtime};
use futures::StreamExt;

const B: usize = 1 << 20;

fn compressions() -> [Compression; 3] {
    [Compression::NONE, Compression::gzip(), Compression::zstd()]
}

/// How a test entry is written.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// `set` of a text value of this many bytes.
    Text(usize),
    /// `set_stream` of this many bytes, in chunks of 256 KiB.
    Stream(usize),
}

async fn write(cache: &DiskCache, key: &str, source: Source, c: Compression) -> Bytes {
    let opts = SetOptions::new().compression(c);
    match source {
        Source::Text(len) => {
            let text = String::from_utf8(sample_bytes(len, 11)).expect("ASCII");
            cache
                .set(key, Value::Text(text.clone()), opts)
                .await
                .expect("set");
            Bytes::from(text)
        }
        Source::Stream(len) => {
            let data = Bytes::from(sample_bytes(len, 12));
            let chunks: Vec<_> = data
                .chunks(256 << 10)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let s: ByteStream = futures::stream::iter(chunks).boxed();
            cache.set_stream(key, s, opts).await.expect("set_stream");
            data
        }
    }
}

/// An entry file as written: header length, layout, trailer.
struct Parsed {
    bytes: Vec<u8>,
    header_len: usize,
    layout: Layout,
    trailer: Trailer,
}

fn parse(path: &Path) -> Parsed {
    let bytes = std::fs::read(path).expect("read the entry");
    let d = Header::decode_any(&bytes).expect("a header");
    let trailer = Trailer::decode(&bytes[bytes.len() - TRAILER_LEN..]).expect("a trailer");
    Parsed {
        header_len: d.len,
        layout: d.layout,
        trailer,
        bytes,
    }
}

impl Parsed {
    fn blocks(&self) -> u64 {
        BlockSize::DEFAULT.block_count(self.trailer.stored_len)
    }

    /// The file offset of a byte of block `k`: in its middle, or in its
    /// checksum.
    fn offset(&self, k: u64, in_crc: bool) -> usize {
        let span = BlockSize::DEFAULT
            .span(k, self.trailer.stored_len)
            .expect("block k exists");
        let at = if in_crc {
            span.framed.end - 2
        } else {
            span.framed.start + (span.stored.end - span.stored.start) / 2
        };
        self.header_len + at as usize
    }

    /// The stored bytes of the blocks before `k`.
    fn stored_before(&self, k: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..k {
            let span = BlockSize::DEFAULT
                .span(i, self.trailer.stored_len)
                .expect("block");
            let start = self.header_len + span.framed.start as usize;
            out.extend_from_slice(
                &self.bytes[start..start + (span.stored.end - span.stored.start) as usize],
            );
        }
        out
    }
}

fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).expect("read");
    b[at] ^= 0x10;
    std::fs::write(path, b).expect("write");
}

/// The logical bytes that can be decompressed from `stored` (a prefix of a
/// compressed payload): at most this many can come out of it.
fn decodable(codec: Codec, stored: &[u8]) -> usize {
    let mut r = PayloadReader::new(codec, stored).expect("a decoder");
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0;
    while let Ok(m) = r.read(&mut buf) {
        if m == 0 {
            break;
        }
        n += m;
    }
    n
}

/// Reads a stream to its end: the bytes it handed out, and how it ended.
async fn drain(
    cache: &DiskCache,
    key: &str,
    chunk: usize,
) -> (Vec<u8>, Result<(), etl_cache_core::Error>) {
    let mut s = match cache.get_stream(key, chunk).await {
        Ok(Some(s)) => s.into_parts().1,
        Ok(None) => panic!("{key}: a miss"),
        Err(e) => return (Vec::new(), Err(e)),
    };
    let mut got = Vec::new();
    while let Some(c) = s.next().await {
        match c {
            Ok(c) => got.extend_from_slice(&c),
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{key}: {e}");
                assert!(s.next().await.is_none(), "{key}: nothing follows the error");
                return (got, Err(etl_cache_core::stream_read_error(key, e)));
            }
        }
    }
    (got, Ok(()))
}

fn assert_corrupt(r: &Result<(), Error>, key: &str, what: &str) {
    match r {
        Err(Error::Corrupt { key: k, .. }) => assert_eq!(k, key, "{what}"),
        other => panic!("{what}: want Error::Corrupt, got {other:?}"),
    }
}

#[test]
fn a_damaged_block_and_what_follows_it_are_never_handed_out() {
    let mut trials = 0;
    on_fresh_disk(async |root, cache| {
        let sources = [
            // The sizes: a 64 KB text entry (one block) and an 8 MB
            // stream (read by two threads when uncompressed); and a text
            // entry of a few blocks read by one thread.
            Source::Text(64 << 10),
            Source::Text((3 << 20) + 12_345),
            Source::Stream(8 << 20),
        ];
        let chunks = [64 << 10, 100_000, B];
        for source in sources {
            for c in compressions() {
                let key = format!("check/{source:?}/{c}");
                let path = layout::entry_path(root, &key);
                write(&cache, &key, source, c).await;
                let n = parse(&path).blocks();
                let mut ks = vec![0, 1.min(n - 1), n - 1];
                ks.dedup();
                for k in ks {
                    for in_crc in [false, true] {
                        let chunk = chunks[trials % chunks.len()];
                        trials += 1;
                        let data = write(&cache, &key, source, c).await;
                        let p = parse(&path);
                        assert_eq!(p.layout, Layout::DEFAULT_BLOCKS, "{key}: format 2");
                        let what = format!(
                            "{key}, block {k} of {n}, in its crc: {in_crc}, chunks of {chunk}"
                        );
                        flip(&path, p.offset(k, in_crc));
                        let (got, end) = drain(&cache, &key, chunk).await;
                        assert_corrupt(&end, &key, &what);
                        assert!(
                            got[..] == data[..got.len()],
                            "{what}: wrong bytes handed out"
                        );
                        if c == Compression::NONE {
                            assert_eq!(
                                got.len(),
                                k as usize * B,
                                "{what}: exactly the blocks before k come out"
                            );
                        } else {
                            let most = decodable(c.codec(), &p.stored_before(k));
                            assert!(
                                got.len() <= most,
                                "{what}: {} bytes handed out, the blocks before k hold {most}",
                                got.len()
                            );
                        }
                        assert!(!path.exists(), "{what}: the entry was not removed");
                        assert_eq!(cache.get(&key).await.expect("get"), None, "{what}");
                    }
                }
            }
        }
        let s = cache.stats().await.expect("stats");
        assert_eq!((s.entries, s.bytes), layout::disk_usage(root));
    });
    report("stream_check", &format!("damaged blocks: {trials} trials"));
}

#[test]
fn the_last_block_waits_for_the_trailer() {
    on_fresh_disk(async |root, cache| {
        for source in [Source::Text((3 << 20) + 5), Source::Stream(8 << 20)] {
            for c in compressions() {
                let key = format!("trailer/{source:?}/{c}");
                let path = layout::entry_path(root, &key);

                // A trailer that is itself intact (its own checksum matches)
                // but sums up other block checksums: every block passes its
                // own check, and the last is still withheld.
                let data = write(&cache, &key, source, c).await;
                let p = parse(&path);
                let mut t = p.trailer;
                t.payload_crc ^= 1;
                let mut bytes = p.bytes.clone();
                let at = bytes.len() - TRAILER_LEN;
                bytes[at..].copy_from_slice(&t.encode());
                std::fs::write(&path, &bytes).expect("write");
                let what = format!("{key}, list of block checksums");
                let (got, end) = drain(&cache, &key, 100_000).await;
                assert_corrupt(&end, &key, &what);
                assert!(got[..] == data[..got.len()], "{what}: wrong bytes");
                let n = p.blocks();
                if c == Compression::NONE {
                    assert_eq!(
                        got.len(),
                        (n as usize - 1) * B,
                        "{what}: all but the last block"
                    );
                } else {
                    let most = decodable(c.codec(), &p.stored_before(n - 1));
                    assert!(got.len() <= most, "{what}: {} > {most}", got.len());
                }
                assert!(!path.exists(), "{what}: not removed");

                // A damaged trailer: nothing at all.
                write(&cache, &key, source, c).await;
                let len = std::fs::metadata(&path).expect("stat").len() as usize;
                flip(&path, len - 20);
                let what = format!("{key}, trailer byte");
                let (got, end) = drain(&cache, &key, 100_000).await;
                assert_corrupt(&end, &key, &what);
                assert!(got.is_empty(), "{what}: {} bytes handed out", got.len());
                assert!(!path.exists(), "{what}: not removed");
            }
        }
    });
}

/// A format 1 entry file, as versions before format 2 wrote it: header,
/// the stored bytes, a trailer with one crc32c over them.
fn legacy_entry(key: &str, kind: Kind, value: &[u8], c: Compression) -> Vec<u8> {
    let header = Header {
        key: key.to_owned(),
        kind,
        codec: c.codec(),
        created: UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
        expires: None,
    };
    let mut out = header.encode();
    let header_crc = u32::from_le_bytes(out[out.len() - 4..].try_into().expect("4 bytes"));
    let (stored, totals) = Encoder::encode_all(c, Bytes::copy_from_slice(value)).expect("compress");
    assert_eq!(totals.crc, crc32c(&stored));
    out.extend_from_slice(&stored);
    out.extend_from_slice(
        &Trailer {
            logical_len: totals.logical_len,
            stored_len: totals.stored_len,
            payload_crc: totals.crc,
            header_crc,
        }
        .encode(),
    );
    out
}

#[test]
fn format_1_entries_are_read_and_never_streamed_unchecked() {
    let (_dir, root) = temp_root();
    let rt = runtime();
    rt.block_on(async {
        // Opened once to make the directories, then again over the planted
        // files (an open recounts what is on disk).
        drop(DiskCache::open(&root).await.expect("open"));
        let sizes = [1_000, 200_000, (6 << 20) + 3];
        let mut planted = Vec::new();
        for len in sizes {
            for c in compressions() {
                let key = format!("legacy/{len}/{c}");
                let data = sample_bytes(len, len as u64);
                let path = layout::entry_path(&root, &key);
                std::fs::create_dir_all(path.parent().expect("fan-out")).expect("mkdir");
                let file = legacy_entry(&key, Kind::Text, &data, c);
                assert_eq!(file[4], 1, "format 1");
                std::fs::write(&path, &file).expect("plant");
                planted.push((key, data, c, path, file));
            }
        }
        let cache = DiskCache::open(&root).await.expect("open");
        for (key, data, c, path, file) in &planted {
            let what = format!("{key} ({c})");
            let v = cache.get(key).await.expect("get").expect("present");
            assert!(v.to_bytes() == data[..], "{what}: get");
            for chunk in [4096, 100_000, B] {
                let (got, end) = drain(&cache, key, chunk).await;
                end.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(got == *data, "{what}: get_stream in chunks of {chunk}");
            }
            // A byte flipped near the end of the payload: a stream hands
            // out nothing, not even the bytes before it.
            let header_len = Header::decode_any(file).expect("header").len;
            let stored = file.len() - header_len - TRAILER_LEN;
            flip(path, header_len + stored - 1);
            let (got, end) = drain(&cache, key, 4096).await;
            assert_corrupt(&end, key, &what);
            assert!(got.is_empty(), "{what}: {} bytes handed out", got.len());
            assert!(!path.exists(), "{what}: not removed");
            // And a whole read of one is refused as well.
            std::fs::write(path, file).expect("plant again");
            flip(path, header_len + stored / 2);
            assert_corrupt(&cache.get(key).await.map(|_| ()), key, &what);
            assert!(!path.exists(), "{what}: not removed by get");
        }
        cache.recount().await.expect("recount");
        let s = cache.stats().await.expect("stats");
        assert_eq!((s.entries, s.bytes), (0, 0));
    });
}
