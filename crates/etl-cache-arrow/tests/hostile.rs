//! Entries whose IPC messages lie: a compressed buffer that claims to
//! decompress to a terabyte, a buffer that reaches past its message's body.
//! Both pass the cache's checksums (they were stored as they are); reading
//! them must end in an error naming the key, never in an abort or a panic.

mod common;

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use arrow_ipc::MessageHeader;
use arrow_schema::{DataType, Field, Schema};
use common::set_raw;
use etl_cache_arrow::{ArrowCacheExt, ArrowOptions, IpcCompression};
use etl_cache_core::{CacheExt, Error, Kind, MemoryCache, SetOptions};
use futures::TryStreamExt;

/// The bytes of a zstd-compressed Arrow entry of one batch.
async fn payload(cache: &MemoryCache) -> Vec<u8> {
    payload_of(cache, 1).await
}

/// Batch `n` of a payload: 10,000 values, other ones for each `n`.
fn numbered_batch(n: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
    let values: Vec<i64> = (0..10_000)
        .map(|i| n * 1_000_000 + i * 7_919 % 100_003)
        .collect();
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values)) as ArrayRef]).unwrap()
}

/// The bytes of a zstd-compressed Arrow entry of `count` batches.
async fn payload_of(cache: &MemoryCache, count: i64) -> Vec<u8> {
    let schema = numbered_batch(0).schema();
    let opts = ArrowOptions::new().compression(IpcCompression::Zstd);
    let batches =
        futures::stream::iter((0..count).map(|n| Ok::<_, std::io::Error>(numbered_batch(n))));
    cache
        .set_batches("good", schema, batches, opts)
        .await
        .unwrap();
    cache.get_bytes("good").await.unwrap().unwrap().to_vec()
}

/// The first record batch message of an IPC file: where its header
/// (flatbuffer) starts, its length, and where its body starts.
fn first_batch(file: &[u8]) -> (usize, usize, usize) {
    // The magic, then zero padding up to the first message.
    let mut at = 6;
    while file[at] == 0 {
        at += 1;
    }
    loop {
        assert_eq!(file[at..at + 4], [0xff; 4], "a continuation marker");
        let len = i32::from_le_bytes(file[at + 4..at + 8].try_into().unwrap()) as usize;
        let header = at + 8;
        let m = arrow_ipc::root_as_message(&file[header..header + len]).unwrap();
        let body = header + len;
        if m.header_type() == MessageHeader::RecordBatch {
            return (header, len, body);
        }
        at = body + m.bodyLength() as usize;
    }
}

/// The first buffer at least `min_len` bytes long that the record batch
/// message with header (flatbuffer) `message` lists.
fn buffer_at_least(message: &[u8], min_len: i64) -> arrow_ipc::Buffer {
    *arrow_ipc::root_as_message(message)
        .unwrap()
        .header_as_record_batch()
        .unwrap()
        .buffers()
        .unwrap()
        .iter()
        .find(|b| b.length() >= min_len)
        .expect("a buffer that long")
}

async fn read_all(cache: &MemoryCache, bytes: Vec<u8>) -> Error {
    set_raw(cache, "hostile", bytes, SetOptions::new().kind(Kind::Arrow)).await;
    let opened = cache.get_batches("hostile").await;
    let read = match opened {
        Err(e) => return e,
        Ok(found) => {
            let (_, batches) = found.expect("just stored");
            batches.try_collect::<Vec<RecordBatch>>().await
        }
    };
    read.expect_err("a lying entry must not read")
}

#[tokio::test]
async fn a_buffer_claiming_a_terabyte_is_an_error_not_an_abort() {
    let cache = MemoryCache::new();
    let mut file = payload(&cache).await;
    let (header, len, body) = first_batch(&file);
    let m = arrow_ipc::root_as_message(&file[header..header + len]).unwrap();
    assert!(m.header_as_record_batch().unwrap().compression().is_some());
    let b = buffer_at_least(&file[header..header + len], 8);
    let at = body + b.offset() as usize;
    file[at..at + 8].copy_from_slice(&(1i64 << 40).to_le_bytes());
    let err = read_all(&cache, file).await;
    let text = err.to_string();
    assert!(text.contains("hostile"), "{text}");
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert!(source.is_some_and(|s| s.contains("claims")), "{err:?}");
}

#[tokio::test]
async fn a_buffer_past_its_body_is_an_error_not_a_panic() {
    let cache = MemoryCache::new();
    let mut file = payload(&cache).await;
    let (header, len, _) = first_batch(&file);
    let b = buffer_at_least(&file[header..header + len], 1);
    // The buffer as the header stores it (offset, length), made a MiB long.
    let mut pattern = b.offset().to_le_bytes().to_vec();
    pattern.extend_from_slice(&b.length().to_le_bytes());
    let found = file[header..header + len]
        .windows(16)
        .position(|w| w == pattern)
        .expect("the buffer in its header");
    let at = header + found + 8;
    file[at..at + 8].copy_from_slice(&(1i64 << 20).to_le_bytes());
    let err = read_all(&cache, file).await;
    assert!(err.to_string().contains("hostile"), "{err}");
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert!(source.is_some_and(|s| s.contains("outside")), "{err:?}");
}

/// Where the footer of an IPC file lies: `(start, end)`, before its length
/// and the closing magic.
fn footer_span(file: &[u8]) -> (usize, usize) {
    let end = file.len() - 10;
    let len = i32::from_le_bytes(file[end..end + 4].try_into().unwrap()) as usize;
    (end - len, end)
}

#[tokio::test]
async fn a_footer_that_reorders_the_batches_is_refused() {
    let cache = MemoryCache::new();
    let mut file = payload_of(&cache, 2).await;
    let (start, end) = footer_span(&file);
    let footer = arrow_ipc::root_as_footer(&file[start..end]).unwrap();
    // Each block as the footer stores it: offset, header length, 4 bytes
    // of padding, body length.
    let blocks: Vec<Vec<u8>> = footer
        .recordBatches()
        .unwrap()
        .iter()
        .map(|b| {
            let mut v = b.offset().to_le_bytes().to_vec();
            v.extend_from_slice(&b.metaDataLength().to_le_bytes());
            v.extend_from_slice(&[0; 4]);
            v.extend_from_slice(&b.bodyLength().to_le_bytes());
            v
        })
        .collect();
    assert_eq!(blocks.len(), 2);
    let find = |file: &[u8], pattern: &[u8]| {
        start
            + file[start..end]
                .windows(24)
                .position(|w| w == pattern)
                .expect("a block")
    };
    let (a, b) = (find(&file, &blocks[0]), find(&file, &blocks[1]));
    file[a..a + 24].copy_from_slice(&blocks[1]);
    file[b..b + 24].copy_from_slice(&blocks[0]);
    // A reader that goes by the footer now yields batch 1 before batch 0.
    let by_footer: Vec<RecordBatch> =
        arrow_ipc::reader::FileReader::try_new(std::io::Cursor::new(file.clone()), None)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    assert_eq!(by_footer, [numbered_batch(1), numbered_batch(0)]);
    // Read front to back, the same entry must not give the other order.
    let err = read_all(&cache, file).await;
    let text = err.to_string();
    assert!(text.contains("hostile"), "{text}");
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        source.is_some_and(|s| s.contains("another order")),
        "{err:?}"
    );
}

#[tokio::test]
async fn bytes_past_the_last_message_beyond_a_footer_are_refused_unread() {
    let cache = MemoryCache::new();
    let file = payload_of(&cache, 2).await;
    let (start, _) = footer_span(&file);
    // 20 MiB between the end-of-stream marker and the footer: more than a
    // footer of two batches can take.
    let mut long = file[..start].to_vec();
    long.extend(std::iter::repeat_n(0u8, 20 << 20));
    long.extend_from_slice(&file[start..]);
    let err = read_all(&cache, long).await;
    assert!(err.to_string().contains("hostile"), "{err}");
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        source.is_some_and(|s| s.contains("more than a footer")),
        "{err:?}"
    );
    // A footer with room to spare still reads.
    let cache = MemoryCache::new();
    let file = payload_of(&cache, 3).await;
    set_raw(&cache, "again", file, SetOptions::new().kind(Kind::Arrow)).await;
    let (_, batches) = cache.get_batches("again").await.unwrap().unwrap();
    let got: Vec<RecordBatch> = batches.try_collect().await.unwrap();
    assert_eq!(
        got,
        [numbered_batch(0), numbered_batch(1), numbered_batch(2)]
    );
}
