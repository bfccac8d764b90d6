//! The contract checks of `get_range`: the logical bytes of a range, and
//! ranges read while other tasks replace the entry.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::harness::{Harness, assert_range_of_one_version, collect, sample_bytes};
use crate::{BlockSize, CacheExt, Compression, Error, SetOptions, Value};

/// `get_range` reads the logical bytes of a range, cut at the end, for
/// every kind and codec, across the blocks and chunks backends read in.
pub async fn ranges_read_the_logical_bytes(h: &Harness) {
    let c = &*h.cache;
    let mib = 1u64 << 20;
    let len = 3 * mib + 17;
    let data = sample_bytes(len as usize, 11);
    let ranges = [
        0..0,
        0..1,
        5..10,
        0..len,
        mib - 1..mib + 1,
        mib..2 * mib,
        2 * mib - 7..3 * mib + 3,
        len - 1..len,
        len - 3..len + 100,
        len..len + 5,
        len + 10..len + 20,
        7..u64::MAX,
    ];
    // Every codec with the default checked blocks, and smaller blocks
    // (`check_block`) whose edges fall inside the ranges above; each
    // written whole and streamed.
    let (kib4, kib64) = (BlockSize::new(4096), BlockSize::new(64 << 10));
    for (comp, block) in [
        (Compression::NONE, None),
        (Compression::zstd(), None),
        (Compression::gzip(), None),
        (Compression::NONE, kib4),
        (Compression::NONE, kib64),
        (Compression::zstd(), kib64),
    ] {
        let mut opts = SetOptions::new().compression(comp);
        if let Some(b) = block {
            opts = opts.check_block(b);
        }
        let value = Value::Bytes(Bytes::from(data.clone()));
        for streamed in [false, true] {
            let meta = if streamed {
                let chunks: Vec<Bytes> = data.chunks(100_000).map(Bytes::copy_from_slice).collect();
                let stream = futures::stream::iter(chunks.into_iter().map(Ok));
                c.set_stream("big", Box::pin(stream), opts).await.unwrap()
            } else {
                c.set("big", value.clone(), opts).await.unwrap()
            };
            let case = format!("{comp}, blocks {block:?}, streamed {streamed}");
            for r in ranges.clone() {
                let (got_meta, got) = c.get_range("big", r.clone()).await.unwrap().unwrap();
                let end = r.end.min(len);
                let start = r.start.min(end);
                assert_eq!(
                    &got[..],
                    &data[start as usize..end as usize],
                    "{case}, range {r:?}"
                );
                assert_eq!(got_meta.logical_len, len, "{case}, range {r:?}");
                assert_eq!(got_meta.created, meta.created, "{case}, range {r:?}");
            }
            assert_eq!(c.get("big").await.unwrap(), Some(value.clone()), "{case}");
            let (_, all) = collect(c, "big", 1 << 16).await.unwrap();
            assert_eq!(&all[..], &data[..], "{case}: streamed back");
        }
    }
    // Checked blocks below 4 KiB are refused by every write, naming the
    // key; nothing is stored.
    let tiny = SetOptions::new().check_block(BlockSize::new(2048).unwrap());
    let e = c
        .set("tiny", Value::Bytes(Bytes::from_static(b"x")), tiny)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidInput { message } if message.contains("tiny")),
        "{e:?}"
    );
    let one = futures::stream::iter([Ok(Bytes::from_static(b"x"))]);
    let e = c.set_stream("tiny", Box::pin(one), tiny).await.unwrap_err();
    assert!(
        matches!(&e, Error::InvalidInput { message } if message.contains("tiny")),
        "{e:?}"
    );
    assert!(c.get("tiny").await.unwrap().is_none());
    // Every kind: the bytes a stream of it yields.
    c.set_json(
        "doc",
        &serde_json::json!({"a": [1, 2, 3], "b": "x"}),
        SetOptions::new(),
    )
    .await
    .unwrap();
    c.set("text", Value::Text("héllo wörld".into()), SetOptions::new())
        .await
        .unwrap();
    for key in ["doc", "text"] {
        let (_, all) = collect(c, key, 3).await.unwrap();
        for start in 0..all.len() as u64 {
            let (meta, got) = c.get_range(key, start..start + 4).await.unwrap().unwrap();
            let end = (start + 4).min(all.len() as u64);
            assert_eq!(
                &got[..],
                &all[start as usize..end as usize],
                "{key} at {start}"
            );
            assert_eq!(meta.logical_len, all.len() as u64);
        }
    }
    c.set("empty", Value::Bytes(Bytes::new()), SetOptions::new())
        .await
        .unwrap();
    let (meta, got) = c.get_range("empty", 0..10).await.unwrap().unwrap();
    assert_eq!((meta.logical_len, got.len()), (0, 0));
    assert!(c.get_range("missing", 0..10).await.unwrap().is_none());
    // A range that starts after its end, on purpose.
    #[allow(clippy::reversed_empty_ranges)]
    let backwards = 10..5;
    assert!(matches!(
        c.get_range("big", backwards).await,
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        c.get_range("", 0..1).await,
        Err(Error::InvalidKey { .. })
    ));
    // Expired entries are misses, as for `get`.
    c.set(
        "short",
        Value::Text("brief".into()),
        SetOptions::new().ttl_seconds(5),
    )
    .await
    .unwrap();
    h.clock.advance(Duration::from_secs(6));
    assert!(c.get_range("short", 0..2).await.unwrap().is_none());
}

/// Ranges read while other tasks replace the entry each come from one
/// version: the bytes and the metadata of the same one, never a mix.
pub async fn ranges_come_from_one_version(h: &Harness) {
    let mib = 1usize << 20;
    // Versions of different lengths and contents, uncompressed and not.
    let versions: Vec<Vec<u8>> = (0..6)
        .map(|i| sample_bytes(2 * mib + i * 100_003, 100 + i as u64))
        .collect();
    h.cache
        .set(
            "v",
            Value::Bytes(Bytes::from(versions[0].clone())),
            SetOptions::new(),
        )
        .await
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2 {
        let (c, versions) = (h.cache.clone(), versions.clone());
        writers.push(tokio::spawn(async move {
            for round in 0..6 {
                let i = (w + round * 2) % versions.len();
                let comp = if round % 2 == 0 {
                    Compression::NONE
                } else {
                    Compression::zstd()
                };
                c.set(
                    "v",
                    Value::Bytes(Bytes::from(versions[i].clone())),
                    SetOptions::new().compression(comp),
                )
                .await
                .unwrap();
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut readers = Vec::new();
    for r in 0..3u64 {
        let (c, versions, stop) = (h.cache.clone(), versions.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0;
            let mut at = r * 300_007;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) || reads < 5 {
                assert_range_of_one_version(&*c, "v", at..at + 70_000, &versions).await;
                reads += 1;
                at = (at + 524_309) % (2 * mib as u64);
                tokio::task::yield_now().await;
            }
            reads
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for r in readers {
        assert!(r.await.unwrap() >= 5);
    }
}
