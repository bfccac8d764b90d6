//! The contract checks of kinds and JSON: JSON nested too deep, the Arrow
//! kind, which payloads take a kind, JSON stored from bytes, and the kind of
//! a computed value.

use bytes::Bytes;
use futures::TryStreamExt;

use super::harness::{Harness, collect, nested_json, sample_bytes, stream_of};
use crate::{CacheExt, CacheIoExt, Compression, Error, Kind, MAX_JSON_DEPTH, SetOptions, Value};

/// JSON up to [`crate::MAX_JSON_DEPTH`] levels is stored and read back;
/// deeper JSON is refused with `InvalidInput` naming the key and the limit
/// (by `set_json`, `get_or_insert_with`, and by `set` where the backend
/// checks), or, where `set` takes it, read back as it went in: never stored
/// and then reported corrupt.
pub async fn json_too_deep_to_read_is_never_stored(h: &Harness) {
    let c = &*h.cache;
    let o = SetOptions::new();
    let deepest = nested_json(crate::MAX_JSON_DEPTH);
    c.set("k", Value::Json(deepest.clone()), o).await.unwrap();
    assert_eq!(
        c.get("k").await.unwrap(),
        Some(Value::Json(deepest.clone()))
    );
    let mut held = Value::Json(deepest);
    let refusal = |e: Error, what: &str| match e {
        Error::InvalidInput { message } => {
            assert!(
                message.contains("\"k\"") || message.contains("\"fresh\""),
                "{what}: the key is named: {message}"
            );
            assert!(
                message.contains(&crate::MAX_JSON_DEPTH.to_string()),
                "{what}: the limit is named: {message}"
            );
        }
        e => panic!("{what}: expected InvalidInput, got {e}"),
    };
    for depth in [crate::MAX_JSON_DEPTH + 1, 200, 1000] {
        let doc = nested_json(depth);
        for comp in [Compression::NONE, Compression::zstd()] {
            let o = SetOptions::new().compression(comp);
            match c.set("k", Value::Json(doc.clone()), o).await {
                Ok(_) => held = Value::Json(doc.clone()),
                Err(e) => refusal(e, &format!("set, depth {depth}")),
            }
            assert_eq!(
                c.get("k").await.unwrap().as_ref(),
                Some(&held),
                "depth {depth}, {comp}"
            );
            assert_eq!(
                c.get_entry("k").await.unwrap().map(|(_, v)| v).as_ref(),
                Some(&held)
            );
            let e = c.set_json("k", &doc, o).await.unwrap_err();
            refusal(e, &format!("set_json, depth {depth}"));
            let e = c
                .get_or_insert_with("fresh", o, || async { Value::Json(doc.clone()) })
                .await
                .unwrap_err();
            refusal(e, &format!("get_or_insert_with, depth {depth}"));
            assert_eq!(c.get("fresh").await.unwrap(), None);
            assert_eq!(c.get("k").await.unwrap().as_ref(), Some(&held));
        }
    }
}

fn assert_kind_mismatch<T: std::fmt::Debug>(r: crate::Result<T>, expected: Kind, found: Kind) {
    match r {
        Err(e @ Error::KindMismatch { .. }) => {
            let text = e.to_string();
            let Error::KindMismatch {
                key,
                expected: e_expected,
                found: e_found,
            } = e
            else {
                unreachable!()
            };
            assert_eq!((e_expected, e_found), (expected, found), "{text}");
            assert!(text.contains(found.as_str()), "{text}");
            assert!(text.contains(&key), "{text}");
        }
        other => panic!("expected KindMismatch ({expected} asked, {found} found), got {other:?}"),
    }
}

fn assert_invalid_input<T: std::fmt::Debug>(r: crate::Result<T>) {
    assert!(
        matches!(r, Err(Error::InvalidInput { .. })),
        "expected InvalidInput, got {r:?}"
    );
}

/// A byte payload stored with kind Arrow reads back as the same bytes; its
/// metadata (`get_entry`, `head`, `list`, `get_stream`) says arrow; typed
/// reads as text or JSON are a `KindMismatch` naming arrow. Streams take the
/// kind too, and a later plain write stores bytes again.
pub async fn arrow_kind_roundtrips(h: &Harness) {
    let c = &*h.cache;
    let data = Bytes::from(sample_bytes(40_000, 21));
    for (i, compression) in [Compression::NONE, Compression::zstd(), Compression::gzip()]
        .into_iter()
        .enumerate()
    {
        let key = format!("table-{i}");
        let opts = SetOptions::new().compression(compression).kind(Kind::Arrow);
        let set = c.set(&key, Value::Bytes(data.clone()), opts).await.unwrap();
        assert_eq!(set.kind, Kind::Arrow);
        assert_eq!(set.codec, compression.codec());
        assert_eq!(c.get(&key).await.unwrap(), Some(Value::Bytes(data.clone())));
        let (meta, value) = c.get_entry(&key).await.unwrap().unwrap();
        assert_eq!(
            (meta.kind, value),
            (Kind::Arrow, Value::Bytes(data.clone()))
        );
        assert_eq!(c.head(&key).await.unwrap().unwrap().kind, Kind::Arrow);
        let s = c.get_stream(&key, 4096).await.unwrap().unwrap();
        assert_eq!(s.meta().kind, Kind::Arrow);
        let chunks: Vec<Bytes> = s.try_collect().await.unwrap();
        assert_eq!(chunks.concat(), data);
        assert_eq!(c.get_bytes(&key).await.unwrap(), Some(data.clone()));
        assert_kind_mismatch(c.get_text(&key).await, Kind::Text, Kind::Arrow);
        assert_kind_mismatch(
            c.get_json::<serde_json::Value>(&key).await,
            Kind::Json,
            Kind::Arrow,
        );
    }
    let listed: Vec<_> = c.list(Some("table-")).try_collect().await.unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|m| m.kind == Kind::Arrow), "{listed:?}");

    let chunks: Vec<Bytes> = data.chunks(7000).map(Bytes::copy_from_slice).collect();
    let streamed = c
        .set_stream(
            "streamed",
            stream_of(chunks),
            SetOptions::new()
                .compression(Compression::zstd())
                .kind(Kind::Arrow),
        )
        .await
        .unwrap();
    assert_eq!(streamed.kind, Kind::Arrow);
    assert_eq!(c.head("streamed").await.unwrap().unwrap().kind, Kind::Arrow);
    let (_, back) = collect(c, "streamed", 1000).await.unwrap();
    assert_eq!(back, data);

    // Stored again without a kind: plain bytes.
    c.set("table-0", Value::Bytes(data.clone()), SetOptions::new())
        .await
        .unwrap();
    assert_eq!(c.head("table-0").await.unwrap().unwrap().kind, Kind::Bytes);
    let kind = SetOptions::new().kind(Kind::Bytes);
    c.set_stream("streamed", stream_of(vec![data.clone()]), kind)
        .await
        .unwrap();
    assert_eq!(c.head("streamed").await.unwrap().unwrap().kind, Kind::Bytes);
}

/// Only byte payloads take a kind: text as the kind of a write, JSON as the
/// kind of a stream or of bytes that are not JSON, or a kind on a text or
/// JSON value, is `InvalidInput`, and the previous value stays as it was.
pub async fn kind_only_on_byte_payloads(h: &Harness) {
    let c = &*h.cache;
    c.set("k", Value::from("before"), SetOptions::new())
        .await
        .unwrap();
    let bytes = Value::Bytes(Bytes::from_static(b"payload"));
    for kind in [Kind::Text, Kind::Json] {
        let opts = SetOptions::new().kind(kind);
        // Each refusal names the key it was for.
        assert_invalid_input(names(c.set("k", bytes.clone(), opts).await, "k"));
        assert_invalid_input(names(
            c.set_stream("k", stream_of(vec![bytes.to_bytes()]), opts)
                .await,
            "k",
        ));
        assert_invalid_input(names(
            c.get_or_insert_with("new", opts, || async { Value::from("x") })
                .await,
            "new",
        ));
    }
    let arrow = SetOptions::new().kind(Kind::Arrow);
    assert_invalid_input(c.set("k", Value::from("text"), arrow).await);
    assert_invalid_input(
        c.set("k", Value::Json(serde_json::json!({"a": 1})), arrow)
            .await,
    );
    assert_invalid_input(c.set_json("k", &[1, 2], arrow).await);
    assert_invalid_input(c.set_text("k", "text", arrow).await);
    assert_eq!(c.get_text("k").await.unwrap().as_deref(), Some("before"));
    assert_eq!(c.head("k").await.unwrap().unwrap().kind, Kind::Text);
    assert_eq!(c.get("new").await.unwrap(), None);
}

/// Whole bytes written with kind JSON make a JSON entry: stored verbatim
/// (`get_raw` gives the text back byte for byte: key order, number digits,
/// spacing), read as the `Value::Json` of that text, reported as JSON by
/// `head`, `list` and `get_entry`, compressed or not. A document nested as
/// deep as a JSON value may be is taken, one level more is not. Bytes that
/// the reader could not read as JSON are refused as `InvalidInput` naming the
/// key, and so is any stream (or writer) with kind JSON: nothing is stored,
/// the previous value stays.
pub async fn json_bytes_store_a_json_entry(h: &Harness) {
    let c = &*h.cache;
    let doc: &[u8] =
        "{\"b\": 1, \"a\": [2.50, 1e300, 1180591620717411303424, -3], \"t\": \"\u{e9}t\u{e9}\"}"
            .as_bytes();
    let parsed: serde_json::Value = serde_json::from_slice(doc).unwrap();
    for (i, compression) in [Compression::NONE, Compression::zstd()]
        .into_iter()
        .enumerate()
    {
        let key = format!("doc-{i}");
        let opts = SetOptions::new().compression(compression).kind(Kind::Json);
        let set = c
            .set(&key, Value::Bytes(Bytes::from_static(doc)), opts)
            .await
            .unwrap();
        assert_eq!((set.kind, set.logical_len), (Kind::Json, doc.len() as u64));
        assert_eq!(
            c.get(&key).await.unwrap(),
            Some(Value::Json(parsed.clone()))
        );
        let (meta, value) = c.get_entry(&key).await.unwrap().unwrap();
        assert_eq!(
            (meta.kind, value),
            (Kind::Json, Value::Json(parsed.clone()))
        );
        let (meta, raw) = c.get_raw(&key).await.unwrap().unwrap();
        assert_eq!((meta.kind, &raw[..]), (Kind::Json, doc));
        assert_eq!(c.head(&key).await.unwrap().unwrap().kind, Kind::Json);
        let typed = c.get_json::<serde_json::Value>(&key).await.unwrap();
        assert_eq!(typed, Some(parsed.clone()));
    }
    let listed: Vec<_> = c.list(Some("doc-")).try_collect().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|m| m.kind == Kind::Json), "{listed:?}");

    let json = SetOptions::new().kind(Kind::Json);
    let nested = |depth: usize| Bytes::from(format!("{}0{}", "[".repeat(depth), "]".repeat(depth)));
    c.set("deep", Value::Bytes(nested(MAX_JSON_DEPTH)), json)
        .await
        .unwrap();
    let (meta, back) = c.get_entry("deep").await.unwrap().unwrap();
    assert_eq!(meta.kind, Kind::Json);
    assert_eq!(back.to_bytes(), nested(MAX_JSON_DEPTH));

    c.set("j", Value::from("before"), SetOptions::new())
        .await
        .unwrap();
    let too_deep = nested(MAX_JSON_DEPTH + 1);
    let refused: [&[u8]; 7] = [
        b"{\"a\": 1",
        b"{\"a\": 1} trailing",
        b"",
        b"[\"\\ud800\"]",
        b"[\"\xff\"]",
        b"[1e400]",
        &too_deep,
    ];
    for bad in refused {
        for key in ["j", "fresh"] {
            let r = c
                .set(key, Value::Bytes(Bytes::copy_from_slice(bad)), json)
                .await;
            assert_invalid_input(names(r, key));
        }
    }
    let r = c
        .set_stream("j", stream_of(vec![Bytes::from_static(doc)]), json)
        .await;
    let text = error_text(&r);
    assert!(
        text.contains("\"j\"") && text.contains("stream"),
        "{text:?}"
    );
    assert_invalid_input(r);
    assert_invalid_input(
        c.set_stream("fresh", stream_of(vec![Bytes::from_static(doc)]), json)
            .await,
    );
    // A writer streams too: refused at its first write or at its commit.
    use tokio::io::AsyncWriteExt;
    let mut w = c.writer("fresh", json);
    let refused = match w.write_all(doc).await {
        Ok(()) => matches!(w.commit().await, Err(Error::InvalidInput { .. })),
        Err(e) => matches!(
            e.get_ref().and_then(|i| i.downcast_ref::<Error>()),
            Some(Error::InvalidInput { .. })
        ),
    };
    assert!(refused, "a writer with kind json is refused");
    assert_eq!(c.get_text("j").await.unwrap().as_deref(), Some("before"));
    assert_eq!(c.get("fresh").await.unwrap(), None);
    assert_eq!(c.head("fresh").await.unwrap(), None);
}

/// `get_or_insert_with` stores a computed byte payload with the kind of its
/// options, and a later call returns it without computing.
pub async fn computed_values_keep_the_kind(h: &Harness) {
    let c = &*h.cache;
    let data = Bytes::from(sample_bytes(3000, 5));
    let opts = SetOptions::new()
        .compression(Compression::zstd())
        .kind(Kind::Arrow);
    let v = c
        .get_or_insert_with("t", opts, || {
            let data = data.clone();
            async move { Value::Bytes(data) }
        })
        .await
        .unwrap();
    assert_eq!(v, Value::Bytes(data.clone()));
    assert_eq!(c.head("t").await.unwrap().unwrap().kind, Kind::Arrow);
    let v = c
        .get_or_insert_with("t", opts, || async { panic!("must not run") })
        .await
        .unwrap();
    assert_eq!(v, Value::Bytes(data.clone()));
    let (meta, _) = c.get_entry("t").await.unwrap().unwrap();
    assert_eq!(meta.kind, Kind::Arrow);
    // A computed text cannot be stored as Arrow, and nothing is stored.
    assert_invalid_input(
        c.get_or_insert_with("u", opts, || async { Value::from("text") })
            .await,
    );
    assert_eq!(c.get("u").await.unwrap(), None);
}

/// The message of `r`'s error; empty for `Ok`.
fn error_text<T>(r: &crate::Result<T>) -> String {
    r.as_ref()
        .err()
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// Asserts that `r` is an error naming `key` (as `{key:?}`), and hands it
/// back.
fn names<T>(r: crate::Result<T>, key: &str) -> crate::Result<T> {
    let text = error_text(&r);
    assert!(text.contains(&format!("{key:?}")), "{text:?} names {key:?}");
    r
}
