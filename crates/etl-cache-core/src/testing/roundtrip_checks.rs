//! The contract checks of values and streams going in and coming back out
//! exactly: kinds, empty values, overwrites, misses, codecs, chunk sizes, and
//! streams that fail or are dropped part way.

use std::io;

use bytes::Bytes;
use futures::StreamExt;

use super::harness::{Harness, assert_no_debris, collect, sample_bytes, set_previous, stream_of};
use crate::{CacheExt, Codec, Compression, DEFAULT_CHUNK_SIZE, Error, Kind, SetOptions, Value};

/// Text that looks like JSON stays text; UTF-8 bytes stay bytes; JSON stays JSON.
pub async fn kinds_roundtrip_exactly(h: &Harness) {
    let c = &*h.cache;
    let o = SetOptions::new();
    c.set("text", Value::Text("{\"looks\": \"like json\"}".into()), o)
        .await
        .unwrap();
    c.set("bytes", Value::Bytes(Bytes::from_static(b"plain utf-8")), o)
        .await
        .unwrap();
    let doc =
        serde_json::json!({"records_processed": 1042, "status": "success", "list": [1, 2.5, null]});
    c.set("json", Value::Json(doc.clone()), o).await.unwrap();
    c.set(
        "binary",
        Value::Bytes(Bytes::from((0..=255u8).collect::<Vec<_>>())),
        o,
    )
    .await
    .unwrap();
    assert_eq!(
        c.get("text").await.unwrap(),
        Some(Value::Text("{\"looks\": \"like json\"}".into()))
    );
    assert_eq!(
        c.get("bytes").await.unwrap(),
        Some(Value::Bytes(Bytes::from_static(b"plain utf-8")))
    );
    assert_eq!(c.get("json").await.unwrap(), Some(Value::Json(doc)));
    assert_eq!(
        c.get("binary").await.unwrap(),
        Some(Value::Bytes(Bytes::from((0..=255u8).collect::<Vec<_>>())))
    );
}

/// Empty text, bytes and streams are values, not misses.
pub async fn empty_values_roundtrip(h: &Harness) {
    let c = &*h.cache;
    for comp in [Compression::NONE, Compression::gzip(), Compression::zstd()] {
        let o = SetOptions::new().compression(comp);
        c.set("t", Value::Text(String::new()), o).await.unwrap();
        assert_eq!(
            c.get("t").await.unwrap(),
            Some(Value::Text(String::new())),
            "{comp}"
        );
        c.set_stream("s", stream_of(vec![]), o).await.unwrap();
        assert_eq!(
            c.get("s").await.unwrap(),
            Some(Value::Bytes(Bytes::new())),
            "{comp}"
        );
        let (sizes, data) = collect(c, "s", 10).await.expect("present");
        assert!(sizes.is_empty() && data.is_empty(), "{comp}");
    }
}

/// A set replaces the previous value and its kind.
pub async fn overwrite_replaces(h: &Harness) {
    let c = &*h.cache;
    c.set("k", "first".into(), SetOptions::new()).await.unwrap();
    c.set(
        "k",
        Value::Bytes(Bytes::from_static(b"second")),
        SetOptions::new().compress(true),
    )
    .await
    .unwrap();
    assert_eq!(
        c.get("k").await.unwrap(),
        Some(Value::Bytes(Bytes::from_static(b"second")))
    );
    assert_eq!(c.keys(None).await.unwrap(), vec!["k".to_string()]);
    assert_eq!(c.stats().await.unwrap().entries, 1);
}

/// Every read of a missing key is `Ok(None)` or `false`.
pub async fn misses_are_none(h: &Harness) {
    let c = &*h.cache;
    assert_eq!(c.get("nope").await.unwrap(), None);
    assert_eq!(c.head("nope").await.unwrap(), None);
    assert!(c.get_stream("nope", 10).await.unwrap().is_none());
    assert!(!c.contains("nope").await.unwrap());
    assert!(!c.delete("nope").await.unwrap());
    assert_eq!(c.get_json::<serde_json::Value>("nope").await.unwrap(), None);
}

/// Values and streams come back decompressed whatever the codec.
pub async fn compression_roundtrips(h: &Harness) {
    let c = &*h.cache;
    let xml = String::from_utf8(sample_bytes(300_000, 1)).unwrap();
    for comp in [
        Compression::NONE,
        Compression::gzip(),
        Compression::gzip_level(1).unwrap(),
        Compression::zstd(),
        Compression::zstd_level(19).unwrap(),
    ] {
        let meta = c
            .set(
                "xml",
                Value::Text(xml.clone()),
                SetOptions::new().compression(comp),
            )
            .await
            .unwrap();
        assert_eq!(meta.codec, comp.codec());
        assert_eq!(meta.logical_len, xml.len() as u64);
        if comp.codec() != Codec::None {
            assert!(
                meta.stored_len * 2 < meta.logical_len,
                "{comp} should shrink XML: {meta:?}"
            );
        }
        assert_eq!(
            c.get_text("xml").await.unwrap().as_deref(),
            Some(xml.as_str()),
            "{comp}"
        );
        let (_, streamed) = collect(c, "xml", 4096).await.unwrap();
        assert_eq!(
            streamed,
            xml.as_bytes(),
            "stream of {comp} returns logical bytes"
        );
    }
}

/// `set_stream` stores many chunks; `get_stream` yields exact chunk sizes.
pub async fn streams_roundtrip_in_exact_chunks(h: &Harness) {
    let c = &*h.cache;
    let data = sample_bytes(1_000_003, 7);
    for comp in [Compression::NONE, Compression::gzip(), Compression::zstd()] {
        let chunks: Vec<Bytes> = data.chunks(10_007).map(Bytes::copy_from_slice).collect();
        let meta = c
            .set_stream(
                "big",
                stream_of(chunks),
                SetOptions::new().compression(comp),
            )
            .await
            .unwrap();
        assert_eq!(meta.kind, Kind::Bytes);
        assert_eq!(meta.logical_len, data.len() as u64);
        for chunk in [1000, DEFAULT_CHUNK_SIZE, 2_000_000] {
            let (sizes, back) = collect(c, "big", chunk).await.unwrap();
            assert_eq!(back, data, "{comp} chunk {chunk}");
            let (last, rest) = sizes.split_last().unwrap();
            assert!(
                rest.iter().all(|&s| s == chunk),
                "{comp}: every chunk but the last is {chunk}"
            );
            assert!(*last <= chunk && *last > 0);
        }
        assert_eq!(
            c.get("big").await.unwrap(),
            Some(Value::Bytes(Bytes::from(data.clone())))
        );
    }
}

/// A stream that fails part way publishes nothing and keeps the old value.
pub async fn failing_stream_keeps_previous_value(h: &Harness) {
    let c = &*h.cache;
    let before = set_previous(c).await;
    for comp in [Compression::NONE, Compression::zstd()] {
        let chunks: Vec<std::io::Result<Bytes>> = vec![
            Ok(Bytes::from(sample_bytes(100_000, 3))),
            Ok(Bytes::from(sample_bytes(100_000, 4))),
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "upstream API hung up",
            )),
            Ok(Bytes::from_static(b"never read")),
        ];
        let err = c
            .set_stream(
                "k",
                futures::stream::iter(chunks).boxed(),
                SetOptions::new().compression(comp),
            )
            .await
            .unwrap_err();
        match &err {
            Error::Stream { key, source } => {
                assert_eq!(key, "k");
                assert_eq!(source.kind(), io::ErrorKind::ConnectionReset);
            }
            other => panic!("expected Error::Stream, got {other:?}"),
        }
        assert_eq!(c.get_text("k").await.unwrap().as_deref(), Some("previous"));
        let new_key_err = c
            .set_stream(
                "fresh",
                futures::stream::iter(vec![Err(io::Error::other("boom"))]).boxed(),
                SetOptions::new(),
            )
            .await;
        assert!(new_key_err.is_err());
        assert_eq!(c.get("fresh").await.unwrap(), None);
    }
    assert_no_debris(c, &before, "failed sets").await;
}

/// A zero chunk size is invalid input, not a hang.
pub async fn zero_chunk_size_is_invalid(h: &Harness) {
    let c = &*h.cache;
    c.set("k", "v".into(), SetOptions::new()).await.unwrap();
    assert!(matches!(
        c.get_stream("k", 0).await,
        Err(Error::InvalidInput { .. })
    ));
}

/// Dropping a stream part way leaves the entry readable.
pub async fn dropped_stream_reader_leaves_entry(h: &Harness) {
    let c = &*h.cache;
    let data = sample_bytes(2_000_000, 5);
    c.set(
        "k",
        Value::Bytes(Bytes::from(data.clone())),
        SetOptions::new().compress(true),
    )
    .await
    .unwrap();
    let mut s = c.get_stream("k", 1000).await.unwrap().unwrap();
    assert_eq!(s.next().await.unwrap().unwrap().len(), 1000);
    drop(s);
    assert_eq!(c.get_bytes("k").await.unwrap().as_deref(), Some(&data[..]));
}
