//! ObjectCache streams hand out no byte before it was checked.
//!
//! - Format 2 (what ObjectCache writes): a byte changed in block `k` of a
//!   multi-block entry (a payload byte, or a byte of the block's checksum),
//!   written by `set` or `set_stream`, uncompressed, gzip or zstd: the
//!   stream hands out exactly what blocks `0..k` hold, then fails with
//!   `InvalidData`. Also when the store sends the body in 7-byte pieces.
//! - Format 1 (entries written by older versions): read by `get` and
//!   `get_stream`; with a changed byte the stream hands out nothing; a large
//!   one is checked by a first read, then streamed by a second one pinned to
//!   the e-tag of the first, chunk by chunk rather than read whole.
//!
//! Each case runs on `InMemory` and `LocalFileSystem`. A wrapper store
//! re-cuts GET bodies and counts what each body delivered.

#[path = "../../etl-cache-object/tests/support/forward.rs"]
#[macro_use]
mod forward;
#[path = "../../etl-cache-object/tests/support/on_get.rs"]
mod on_get;

use std::io::Read;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use etl_cache_core::backend::blocks::{BLOCK_CRC_LEN, BlockSize, verify_payload};
use etl_cache_core::backend::codec::{Encoder, PayloadReader};
use etl_cache_core::backend::format::{Header, Layout, Trailer};
use etl_cache_core::testing::noise_bytes;
use etl_cache_core::{Cache, Codec, Compression, Error, Kind, SetOptions, Value};
use etl_cache_object::ObjectCache;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload,
};
use on_get::{GetHook, OnGet};

/// The block size ObjectCache writes.
const B: usize = 1 << 20;

/// One GET the wrapper served: its pinning, and the bytes its body has
/// delivered so far.
#[derive(Debug)]
struct Served {
    if_match: Option<String>,
    range_start: Option<u64>,
    e_tag: Option<String>,
    delivered: Arc<AtomicU64>,
}

/// Reads that re-cut every GET body into pieces of `piece` bytes (0: as
/// the inner store sends it) and record each GET.
#[derive(Debug)]
struct Recut {
    piece: AtomicUsize,
    served: Mutex<Vec<Served>>,
}

impl Recut {
    /// `inner`, with its reads answered by a fresh `Recut`.
    fn new(inner: Arc<dyn ObjectStore>) -> Arc<OnGet<Recut>> {
        let recut = Recut {
            piece: AtomicUsize::new(0),
            served: Mutex::new(Vec::new()),
        };
        OnGet::new(inner, recut)
    }
}

#[async_trait]
impl GetHook for Recut {
    async fn get_opts(
        &self,
        inner: &dyn ObjectStore,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if options.head {
            return inner.get_opts(location, options).await;
        }
        let if_match = options.if_match.clone();
        let range_start = match &options.range {
            Some(object_store::GetRange::Bounded(r)) => Some(r.start),
            Some(object_store::GetRange::Offset(o)) => Some(*o),
            _ => None,
        };
        let mut r = inner.get_opts(location, options).await?;
        let delivered = Arc::new(AtomicU64::new(0));
        self.served.lock().unwrap().push(Served {
            if_match,
            range_start,
            e_tag: r.meta.e_tag.clone(),
            delivered: delivered.clone(),
        });
        let empty = GetResultPayload::Stream(futures::stream::empty().boxed());
        let body = match std::mem::replace(&mut r.payload, empty) {
            GetResultPayload::Stream(s) => s,
            GetResultPayload::File(file, _) => file_stream(file, r.range.clone()),
        };
        let piece = self.piece.load(Ordering::SeqCst);
        let body = body.flat_map(move |chunk| {
            let parts: Vec<object_store::Result<Bytes>> = match chunk {
                Ok(mut b) if piece > 0 => {
                    let mut out = Vec::new();
                    while !b.is_empty() {
                        out.push(Ok(b.split_to(piece.min(b.len()))));
                    }
                    out
                }
                other => vec![other],
            };
            futures::stream::iter(parts)
        });
        let body = body.inspect(move |c| {
            if let Ok(b) = c {
                delivered.fetch_add(b.len() as u64, Ordering::SeqCst);
            }
        });
        r.payload = GetResultPayload::Stream(body.boxed());
        Ok(r)
    }
}

/// `range` of a local file, in pieces of 64 KiB read on a blocking thread
/// (what `LocalFileSystem` hands back as a file rather than a stream).
fn file_stream(
    file: std::fs::File,
    range: std::ops::Range<u64>,
) -> BoxStream<'static, object_store::Result<Bytes>> {
    futures::stream::unfold(Some((file, range.start)), move |state| async move {
        let (mut file, pos) = state?;
        if pos >= range.end {
            return None;
        }
        let n = (range.end - pos).min(64 << 10) as usize;
        let (file, read) = tokio::task::spawn_blocking(move || {
            use std::io::{Seek, SeekFrom};
            let mut buf = vec![0u8; n];
            let read = file
                .seek(SeekFrom::Start(pos))
                .and_then(|_| file.read_exact(&mut buf));
            (file, read.map(|()| buf))
        })
        .await
        .expect("read task");
        Some(match read {
            Ok(buf) => (Ok(Bytes::from(buf)), Some((file, pos + n as u64))),
            Err(e) => {
                let e = object_store::Error::Generic {
                    store: "Recut",
                    source: Box::new(e),
                };
                (Err(e), None)
            }
        })
    })
    .boxed()
}

/// A store under test: the writing handle on the plain store (on a local
/// directory: its own staged writes), the reading handle through [`Recut`].
struct Setup {
    raw: Arc<dyn ObjectStore>,
    recut: Arc<OnGet<Recut>>,
    writer: ObjectCache,
    reader: ObjectCache,
    _dir: Option<tempfile::TempDir>,
}

#[derive(Debug, Clone, Copy)]
enum Backend {
    Memory,
    Local,
}

fn setup(backend: Backend) -> Setup {
    let (raw, dir): (Arc<dyn ObjectStore>, _) = match backend {
        Backend::Memory => (Arc::new(InMemory::new()), None),
        Backend::Local => {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = LocalFileSystem::new_with_prefix(dir.path()).expect("LocalFileSystem");
            (Arc::new(store), Some(dir))
        }
    };
    let recut = Recut::new(raw.clone());
    // Parts of 1 MiB: a set_stream of a few MiB is a multipart upload.
    let writer = ObjectCache::builder()
        .store(raw.clone())
        .prefix("c")
        .part_size(1 << 20)
        .build()
        .expect("writer");
    let mut reader = ObjectCache::builder().store(recut.clone()).prefix("c");
    if let Some(d) = &dir {
        reader = reader.local_root(d.path());
    }
    Setup {
        raw,
        recut,
        writer,
        reader: reader.build().expect("reader"),
        _dir: dir,
    }
}

fn compressions() -> [Compression; 3] {
    [Compression::NONE, Compression::gzip(), Compression::zstd()]
}

async fn object(store: &dyn ObjectStore, path: &Path) -> Vec<u8> {
    let got = store.get(path).await.expect("get");
    got.bytes().await.expect("body").to_vec()
}

async fn replace(store: &dyn ObjectStore, path: &Path, bytes: Vec<u8>) {
    store.put(path, PutPayload::from(bytes)).await.expect("put");
}

/// Fails unless a `get` of `key` from `cache` is refused as corrupt.
async fn assert_get_corrupt(cache: &ObjectCache, key: &str) {
    let e = cache.get(key).await.expect_err("get of a changed entry");
    assert!(matches!(e, Error::Corrupt { .. }), "{key}: {e:?}");
}

/// What a stream handed out before it ended, and how it ended.
async fn drain(cache: &ObjectCache, key: &str, chunk: usize) -> (Vec<u8>, Option<std::io::Error>) {
    let got = match cache.get_stream(key, chunk).await {
        Ok(Some(s)) => s,
        Ok(None) => panic!("{key}: missing"),
        Err(e) => {
            let io = std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string());
            assert!(
                matches!(e, Error::Corrupt { .. }),
                "{key}: get_stream failed with {e:?}"
            );
            return (Vec::new(), Some(io));
        }
    };
    let (_, mut s) = got.into_parts();
    let mut out = Vec::new();
    while let Some(item) = s.next().await {
        match item {
            Ok(b) => {
                assert!(
                    !b.is_empty() && b.len() <= chunk,
                    "{key}: chunk of {}",
                    b.len()
                );
                out.extend_from_slice(&b);
            }
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// The logical bytes a decoder can make of the first stored bytes of a
/// payload (all it could have handed out had it seen no more).
fn decodable(codec: Codec, stored: &[u8]) -> Vec<u8> {
    let mut r = PayloadReader::new(codec, stored).expect("decoder");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Where a changed byte goes.
#[derive(Debug, Clone, Copy)]
enum Flip {
    /// A payload byte in the middle of the block.
    Payload,
    /// The second byte of the block's checksum.
    Crc,
}

#[derive(Debug, Clone, Copy)]
enum Writer {
    Set,
    SetStream,
}

async fn changed_block_case(backend: Backend, piece: usize) {
    let s = setup(backend);
    s.recut.piece.store(piece, Ordering::SeqCst);
    let blocks = 4;
    let k = 2u64;
    let data = noise_bytes(blocks * B - B / 3, piece as u64 + 11);
    let mut cases = 0;
    for (ci, codec) in compressions().into_iter().enumerate() {
        for writer in [Writer::Set, Writer::SetStream] {
            for flip in [Flip::Payload, Flip::Crc] {
                let key = format!("k/{ci}/{writer:?}/{flip:?}");
                let opts = SetOptions::new().compression(codec);
                let value = Bytes::from(data.clone());
                match writer {
                    Writer::Set => s.writer.set(&key, Value::Bytes(value), opts).await,
                    Writer::SetStream => {
                        let parts: Vec<std::io::Result<Bytes>> = value
                            .chunks(300_001)
                            .map(|c| Ok(Bytes::copy_from_slice(c)))
                            .collect();
                        s.writer
                            .set_stream(&key, futures::stream::iter(parts).boxed(), opts)
                            .await
                    }
                }
                .expect("set");
                let path = s.writer.object_path(&key).expect("path");
                let good = object(&*s.raw, &path).await;
                let d = Header::decode_any(&good).expect("header");
                assert_eq!(d.layout, Layout::Blocks(BlockSize::new(B as u64).unwrap()));
                let verified =
                    verify_payload(d.layout, d.crc, Bytes::copy_from_slice(&good[d.len..]))
                        .expect("written entry checks");
                let stored: Vec<u8> = verified.pieces().concat();
                assert!(
                    stored.len() > (k as usize + 1) * B,
                    "{key}: not enough blocks"
                );

                // Intact first: every chunk size hands out the value.
                let (whole, err) = drain(&s.reader, &key, 64 << 10).await;
                assert!(err.is_none(), "{key}: {err:?}");
                assert!(whole == data, "{key}: intact entry read back wrong");

                let block_at = d.len + k as usize * (B + BLOCK_CRC_LEN);
                let at = match flip {
                    Flip::Payload => block_at + B / 2,
                    Flip::Crc => block_at + B + 1,
                };
                let mut bad = good.clone();
                bad[at] ^= 0x10;
                replace(&*s.raw, &path, bad).await;

                for chunk in [4096, 64 << 10] {
                    let (got, err) = drain(&s.reader, &key, chunk).await;
                    let err = err.unwrap_or_else(|| panic!("{key}: no error"));
                    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{key}: {err}");
                    let before_k = &stored[..k as usize * B];
                    if codec.codec() == Codec::None {
                        assert!(
                            got[..] == *before_k,
                            "{key}, chunks of {chunk}: {} bytes handed out, {} expected \
                             (blocks before {k}, exactly)",
                            got.len(),
                            before_k.len()
                        );
                    } else {
                        let most = decodable(codec.codec(), before_k);
                        assert!(
                            got.len() <= most.len() && data.starts_with(&got),
                            "{key}, chunks of {chunk}: {} bytes handed out, at most {} of the \
                             value may be (what blocks before {k} decode to)",
                            got.len(),
                            most.len()
                        );
                    }
                }
                assert_get_corrupt(&s.reader, &key).await;
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 12);
}

/// A byte changed in block 2 of a 4-block entry: the stream hands out
/// blocks 0 and 1 only (for a compressed entry: no more than they decode
/// to), then fails; on memory and files, bodies as sent and in 7-byte
/// pieces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_block_is_never_handed_out() {
    for backend in [Backend::Memory, Backend::Local] {
        for piece in [0, 7] {
            changed_block_case(backend, piece).await;
        }
    }
}

/// A format 1 entry, as older versions wrote it.
fn legacy_entry(key: &str, codec: Compression, data: &[u8]) -> Vec<u8> {
    let header = Header {
        key: key.to_owned(),
        kind: Kind::Bytes,
        codec: codec.codec(),
        created: std::time::SystemTime::now(),
        expires: None,
    };
    let mut out = header.encode();
    let header_crc = u32::from_le_bytes(out[out.len() - 4..].try_into().unwrap());
    let (stored, totals) = Encoder::encode_all(codec, Bytes::copy_from_slice(data)).unwrap();
    out.extend_from_slice(&stored);
    let trailer = Trailer {
        logical_len: totals.logical_len,
        stored_len: totals.stored_len,
        payload_crc: totals.crc,
        header_crc,
    };
    out.extend_from_slice(&trailer.encode());
    out
}

async fn legacy_case(backend: Backend) {
    let s = setup(backend);
    for (ci, codec) in compressions().into_iter().enumerate() {
        // Small (read whole and checked) and large (checked, then read again).
        for len in [100_000usize, 20 << 20] {
            let key = format!("old/{ci}/{len}");
            let data = noise_bytes(len, len as u64 + ci as u64);
            let path = s.reader.object_path(&key).expect("path");
            let good = legacy_entry(&key, codec, &data);
            replace(&*s.raw, &path, good.clone()).await;

            let v = s.reader.get(&key).await.expect("get").expect("hit");
            assert!(v == Value::Bytes(Bytes::from(data.clone())), "{key}: get");
            let (back, err) = drain(&s.reader, &key, 64 << 10).await;
            assert!(err.is_none(), "{key}: {err:?}");
            assert!(back == data, "{key}: get_stream");

            let mut bad = good;
            let at = bad.len() / 2;
            bad[at] ^= 0x01;
            replace(&*s.raw, &path, bad).await;
            assert_get_corrupt(&s.reader, &key).await;
            let (got, err) = drain(&s.reader, &key, 4096).await;
            let err = err.unwrap_or_else(|| panic!("{key}: no error"));
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{key}: {err}");
            assert!(
                got.is_empty(),
                "{key}: {} unchecked bytes handed out",
                got.len()
            );
        }
    }
}

/// Format 1 entries are read by `get` and `get_stream`; with a changed
/// byte, a stream hands out nothing before it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_entries_are_read_and_checked_before_streaming() {
    for backend in [Backend::Memory, Backend::Local] {
        legacy_case(backend).await;
    }
}

/// A large format 1 entry is streamed by a second GET pinned to the e-tag of
/// the first, as it arrives: when its first chunk is handed out, that body
/// has delivered a small part of the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_legacy_entry_streams_in_bounded_memory() {
    for backend in [Backend::Memory, Backend::Local] {
        let s = setup(backend);
        let len = 64 << 20;
        let key = "old/large";
        let data = noise_bytes(len, 5);
        let path = s.reader.object_path(key).expect("path");
        replace(&*s.raw, &path, legacy_entry(key, Compression::NONE, &data)).await;
        s.recut.served.lock().unwrap().clear();
        // Bodies pass in pieces of 64 KiB, so what a body delivered shows
        // how far it was read.
        s.recut.piece.store(64 << 10, Ordering::SeqCst);

        let chunk = 64 << 10;
        let got = s.reader.get_stream(key, chunk).await.unwrap().unwrap();
        let (_, mut stream) = got.into_parts();
        let first = stream.next().await.expect("a chunk").expect("checked");
        assert!(first[..] == data[..chunk], "{backend:?}: first chunk");
        {
            let served = s.recut.served.lock().unwrap();
            assert_eq!(served.len(), 2, "{backend:?}: two reads: {served:?}");
            let (check, again) = (&served[0], &served[1]);
            assert_eq!(
                check.delivered.load(Ordering::SeqCst),
                (data.len() + 32 + 26 + key.len() + 4) as u64,
                "{backend:?}: the first read checks the whole entry"
            );
            assert!(
                again.e_tag.is_some() && again.if_match == check.e_tag,
                "{backend:?}: the second read is pinned to the first one's e-tag: {served:?}"
            );
            assert_eq!(
                again.range_start,
                Some((26 + key.len() + 4) as u64),
                "{backend:?}: the second read starts at the payload"
            );
            let delivered = again.delivered.load(Ordering::SeqCst);
            assert!(
                delivered < (len / 4) as u64,
                "{backend:?}: {delivered} bytes of {len} read before the first chunk"
            );
        }
        let mut n = first.len();
        while let Some(c) = stream.next().await {
            let c = c.expect("checked");
            assert!(c[..] == data[n..n + c.len()], "{backend:?}: at {n}");
            n += c.len();
        }
        assert_eq!(n, len, "{backend:?}");
    }
}
