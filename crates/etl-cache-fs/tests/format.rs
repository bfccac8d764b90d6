//! The bytes DiskCache writes: entry format 2 (see
//! `crates/etl-cache-core/FORMAT.md`), pinned for a fixed key, value and
//! creation time, and checked field by field for a stream of several blocks.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use etl_cache_core::backend::blocks::{BlockSize, chain_block_crc, verify_block, verify_payload};
use etl_cache_core::backend::codec::crc32c;
use etl_cache_core::backend::format::{FORMAT_V2, Header, Layout, TRAILER_LEN, Trailer};
use etl_cache_core::testing::sample_bytes;
use etl_cache_core::{Cache, Clock, Codec, Kind, SetOptions};
use etl_cache_fs::DiskCache;
use futures::StreamExt;

use common::*;

/// A clock stopped at 1,700,000,000 s after the epoch.
#[derive(Debug)]
struct Stopped;

impl Clock for Stopped {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().unwrap())
}

#[tokio::test]
async fn a_small_text_entry_is_pinned_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cache = DiskCache::builder()
        .root(root)
        .clock(Arc::new(Stopped))
        .build()
        .await
        .unwrap();
    cache
        .set("k", "extract, transform, load".into(), SetOptions::new())
        .await
        .unwrap();
    let file = std::fs::read(entry_path(root, "k")).unwrap();

    // Field by field, as FORMAT.md describes format 2.
    let (header, block, trailer) = (&file[..31], &file[31..59], &file[59..]);
    assert_eq!(file.len(), 31 + 24 + 4 + TRAILER_LEN);
    assert_eq!(&header[..4], b"ETLC");
    assert_eq!(header[4], FORMAT_V2);
    assert_eq!(header[5], 1, "kind text");
    assert_eq!(header[6], 0, "codec none");
    assert_eq!(header[7], 20, "blocks of 2^20 bytes");
    assert_eq!(&header[8..16], &1_700_000_000_000_000_000u64.to_le_bytes());
    assert_eq!(&header[16..24], &[0; 8], "no expiry");
    assert_eq!(&header[24..27], b"\x01\x00k");
    let header_crc = le32(&header[27..]);
    assert_eq!(header_crc, crc32c(&header[..27]));
    assert_eq!(&block[..24], b"extract, transform, load");
    let mut seed = header_crc.to_le_bytes().to_vec();
    seed.extend_from_slice(&0u64.to_le_bytes());
    seed.extend_from_slice(&block[..24]);
    let block_crc = le32(&block[24..]);
    assert_eq!(
        block_crc,
        crc32c(&seed),
        "crc 0 binds the block to its header and place"
    );
    assert_eq!(
        &trailer[..16],
        &[24, 0, 0, 0, 0, 0, 0, 0, 24, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(le32(&trailer[16..20]), crc32c(&block_crc.to_le_bytes()));
    assert_eq!(le32(&trailer[20..24]), header_crc);
    assert_eq!(le32(&trailer[24..28]), crc32c(&trailer[..24]));
    assert_eq!(&trailer[28..], b"CLTE");

    // And pinned: any change to what DiskCache writes shows here.
    assert_eq!(
        hex(&file),
        concat!(
            "45544c4302010014",
            "00002a36fe9c9717",
            "0000000000000000",
            "01006b",
            "1820c416",
            "657874726163742c207472616e73666f726d2c206c6f6164",
            "2da94722",
            "1800000000000000",
            "1800000000000000",
            "6576ee7c",
            "1820c416",
            "f0cf7b15",
            "434c5445",
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_entry_is_framed_in_blocks_of_one_mib() {
    check_framing(None, (5 << 19) + 17, true, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_written_with_check_block_is_framed_in_blocks_of_that_size() {
    let kib64 = BlockSize::new(64 << 10);
    // 1 MiB + 17 bytes: sixteen whole blocks and a short one.
    check_framing(kib64, (1 << 20) + 17, true, 17).await;
    check_framing(kib64, (1 << 20) + 17, false, 17).await;
}

/// Writes `len` bytes (streamed in 300,000-byte chunks, or whole) with
/// `check_block` (the default when `None`), plain and with zstd, and checks
/// the file block by block: header, one checksum per block of that size,
/// trailer. A plain payload must take `plain_blocks` blocks.
async fn check_framing(
    check_block: Option<BlockSize>,
    len: usize,
    streamed: bool,
    plain_blocks: u64,
) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cache = DiskCache::builder().root(root).build().await.unwrap();
    let data = Bytes::from(sample_bytes(len, 3));
    for compression in [
        etl_cache_core::Compression::NONE,
        etl_cache_core::Compression::zstd(),
    ] {
        let mut opts = SetOptions::new().compression(compression);
        if let Some(b) = check_block {
            opts = opts.check_block(b);
        }
        let meta = if streamed {
            let chunks: Vec<_> = data
                .chunks(300_000)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            cache
                .set_stream("s", futures::stream::iter(chunks).boxed(), opts)
                .await
                .unwrap()
        } else {
            cache
                .set("s", etl_cache_core::Value::Bytes(data.clone()), opts)
                .await
                .unwrap()
        };
        let file = Bytes::from(std::fs::read(entry_path(root, "s")).unwrap());
        let d = Header::decode_any(&file).unwrap();
        let b = check_block.unwrap_or(BlockSize::DEFAULT);
        assert_eq!(d.layout, Layout::Blocks(b));
        assert_eq!(
            (d.header.kind, d.header.codec),
            (Kind::Bytes, compression.codec())
        );
        let trailer = Trailer::decode(&file[file.len() - TRAILER_LEN..]).unwrap();
        assert_eq!(trailer.stored_len, meta.stored_len);
        assert_eq!(trailer.logical_len, data.len() as u64);
        assert_eq!(trailer.header_crc, d.crc);
        let n = b.block_count(meta.stored_len);
        assert_eq!(
            file.len() as u64,
            d.len as u64 + meta.stored_len + 4 * n + TRAILER_LEN as u64
        );
        assert_eq!(meta.size, file.len() as u64);
        let mut list = 0;
        let mut stored = Vec::new();
        for i in 0..n {
            let span = b.span(i, meta.stored_len).unwrap();
            let at = d.len + span.framed.start as usize;
            let framed = file.slice(at..d.len + span.framed.end as usize);
            list = chain_block_crc(list, le32(&framed[framed.len() - 4..]));
            stored.extend_from_slice(&verify_block(b, d.crc, i, framed).unwrap());
        }
        assert_eq!(list, trailer.payload_crc);
        let whole = verify_payload(d.layout, d.crc, file.slice(d.len..)).unwrap();
        assert_eq!(whole.into_bytes()[..], stored[..]);
        if compression.codec() == Codec::None {
            assert_eq!(n, plain_blocks);
            assert!(stored == data);
        }
    }
}

#[tokio::test]
async fn a_bad_block_spoils_only_the_ranges_that_read_it() {
    // With 64 KiB blocks, a flipped byte in the eleventh block leaves a
    // range of the first readable (with the default 1 MiB blocks both
    // ranges would lie in the one bad block); a range over the bad block is
    // corrupt and the entry removed.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cache = DiskCache::builder().root(root).build().await.unwrap();
    let data = Bytes::from(sample_bytes(1 << 20, 9));
    let b = BlockSize::new(64 << 10).unwrap();
    cache
        .set(
            "k",
            etl_cache_core::Value::Bytes(data.clone()),
            SetOptions::new().check_block(b),
        )
        .await
        .unwrap();
    let path = entry_path(root, "k");
    let mut file = std::fs::read(&path).unwrap();
    let d = Header::decode_any(&file).unwrap();
    let bad = d.len + b.span(10, data.len() as u64).unwrap().framed.start as usize + 5;
    file[bad] ^= 0x40;
    std::fs::write(&path, &file).unwrap();
    let (_, first) = cache.get_range("k", 100..60_000).await.unwrap().unwrap();
    assert_eq!(first, data.slice(100..60_000));
    let err = cache
        .get_range("k", (10 << 16) + 1..(10 << 16) + 9)
        .await
        .unwrap_err();
    assert!(
        matches!(err, etl_cache_core::Error::Corrupt { .. }),
        "{err:?}"
    );
    assert!(cache.get("k").await.unwrap().is_none());
}
