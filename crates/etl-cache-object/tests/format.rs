//! The bytes of the objects ObjectCache writes: entry format 2, blocks of
//! 1 MiB (`etl-cache-core/FORMAT.md`), built here from the specification
//! alone and compared byte for byte.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use etl_cache_core::backend::codec::crc32c;
use etl_cache_core::{Cache, Clock, SetOptions, Value};
use etl_cache_object::ObjectCache;
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};

/// Always 1,700,000,000 s after the epoch.
#[derive(Debug)]
struct Fixed;

impl Clock for Fixed {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }
}

fn cache(store: Arc<dyn ObjectStore>) -> ObjectCache {
    ObjectCache::builder()
        .store(store)
        .prefix("p")
        .clock(Arc::new(Fixed))
        .build()
        .expect("ObjectCache")
}

async fn object(store: &dyn ObjectStore, cache: &ObjectCache, key: &str) -> Vec<u8> {
    let path = cache.object_path(key).expect("path");
    let got = store.get(&path).await.expect("get");
    got.bytes().await.expect("body").to_vec()
}

/// The header FORMAT.md describes for key `k`, kind bytes, codec none,
/// created at 1,700,000,000 s, no expiry, format 2 with blocks of 2^20.
fn expected_header() -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(b"ETLC");
    h.extend_from_slice(&[2, 2, 0, 20]);
    h.extend_from_slice(&1_700_000_000_000_000_000u64.to_le_bytes());
    h.extend_from_slice(&0u64.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(b"k");
    let crc = crc32c(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

fn block_crc(header_crc: u32, index: u64, block: &[u8]) -> u32 {
    let mut bytes = header_crc.to_le_bytes().to_vec();
    bytes.extend_from_slice(&index.to_le_bytes());
    bytes.extend_from_slice(block);
    crc32c(&bytes)
}

fn trailer(logical: u64, stored: u64, payload_crc: u32, header_crc: u32) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&logical.to_le_bytes());
    t.extend_from_slice(&stored.to_le_bytes());
    t.extend_from_slice(&payload_crc.to_le_bytes());
    t.extend_from_slice(&header_crc.to_le_bytes());
    let crc = crc32c(&t);
    t.extend_from_slice(&crc.to_le_bytes());
    t.extend_from_slice(b"CLTE");
    t
}

/// A small value written with `set` and with `set_stream` is the same
/// object: header, one block and its checksum, trailer.
#[tokio::test]
async fn a_small_entry_is_pinned() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let c = cache(store.clone());
    let payload = b"extract, transform, load";
    let header = expected_header();
    let header_crc = u32::from_le_bytes(header[header.len() - 4..].try_into().unwrap());
    let crc0 = block_crc(header_crc, 0, payload);
    let mut want = header.clone();
    want.extend_from_slice(payload);
    want.extend_from_slice(&crc0.to_le_bytes());
    want.extend_from_slice(&trailer(24, 24, crc32c(&crc0.to_le_bytes()), header_crc));
    assert_eq!(want.len(), 31 + 24 + 4 + 32);
    // The same bytes, pinned (as laid out in FORMAT.md's example).
    let pinned = concat!(
        "45544c43 02 02 00 14 00002a36fe9c9717 0000000000000000 0100 6b c413faf2",
        "657874726163742c207472616e73666f726d2c206c6f6164 c0bc35f8",
        "1800000000000000 1800000000000000 8f6afe69 c413faf2 6fc72670 434c5445",
    );
    assert_eq!(hex(&want), pinned.replace(' ', ""));

    let v = Value::Bytes(Bytes::from_static(payload));
    c.set("k", v, SetOptions::new()).await.unwrap();
    assert_eq!(hex(&object(&*store, &c, "k").await), hex(&want), "set");

    c.delete("k").await.unwrap();
    let body = futures::stream::iter([
        Ok::<_, std::io::Error>(Bytes::from_static(b"extract, ")),
        Ok(Bytes::from_static(b"transform, load")),
    ])
    .boxed();
    c.set_stream("k", body, SetOptions::new()).await.unwrap();
    assert_eq!(
        hex(&object(&*store, &c, "k").await),
        hex(&want),
        "set_stream"
    );
}

/// A payload of 2.5 blocks: blocks of 1 MiB, each followed by its
/// checksum (bound to the header and the block's index), the last short;
/// the trailer sums up the block checksums.
#[tokio::test]
async fn blocks_are_one_mebibyte_each_with_its_checksum() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let c = cache(store.clone());
    let b = 1usize << 20;
    let data: Vec<u8> = (0..b * 5 / 2).map(|i| (i * 7 + i / 1000) as u8).collect();
    let v = Value::Bytes(Bytes::from(data.clone()));
    let meta = c.set("k", v, SetOptions::new()).await.unwrap();

    let header = expected_header();
    let header_crc = u32::from_le_bytes(header[header.len() - 4..].try_into().unwrap());
    let mut want = header.clone();
    let mut crcs = Vec::new();
    for (i, block) in data.chunks(b).enumerate() {
        let crc = block_crc(header_crc, i as u64, block);
        want.extend_from_slice(block);
        want.extend_from_slice(&crc.to_le_bytes());
        crcs.extend_from_slice(&crc.to_le_bytes());
    }
    let n = data.len() as u64;
    want.extend_from_slice(&trailer(n, n, crc32c(&crcs), header_crc));
    let got = object(&*store, &c, "k").await;
    assert_eq!(got.len(), want.len());
    assert!(got == want, "object differs from the specification");
    assert_eq!(meta.size, want.len() as u64, "EntryMeta::size");
    assert_eq!(meta.stored_len, n);
    let back = c.head("k").await.unwrap().expect("head");
    assert_eq!(back, meta);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
