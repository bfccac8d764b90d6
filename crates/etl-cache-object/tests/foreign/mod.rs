//! A check shared by the server suites: `clear` deletes the cache's
//! entries and keeps every other object under the prefix.

/// Puts objects the cache did not write under its prefix, with names it
/// gives entries (plain, in a folder, tiny, large, in the folder of entries
/// stored by hash) beside `n` entries; checks that `clear` deletes the
/// entries only and that reads report the foreign objects and keep them.
pub async fn clear_keeps_foreign_objects(cache: &etl_cache_object::ObjectCache, n: u64) {
    use etl_cache_core::{Cache, SetOptions};
    use etl_cache_object::{ObjectError, ObjectErrorKind};
    use object_store::ObjectStoreExt;
    use object_store::path::Path;

    let at = |name: &str| Path::parse(format!("{}/{name}", cache.prefix())).unwrap();
    let foreign: Vec<(Path, bytes::Bytes)> = vec![
        (at("report.csv"), bytes::Bytes::from_static(b"a,b\n1,2\n")),
        (at("sub/data.json"), bytes::Bytes::from_static(b"{}")),
        (at("xy"), bytes::Bytes::from_static(b"xy")),
        (
            at("big"),
            bytes::Bytes::from(etl_cache_core::testing::sample_bytes(200_000, 5)),
        ),
        (
            at(&format!(".etl-cache/long/{}", "cd".repeat(32))),
            bytes::Bytes::from_static(b"not an entry"),
        ),
    ];
    for (p, b) in &foreign {
        cache.store().put(p, b.clone().into()).await.unwrap();
    }
    for i in 0..n {
        cache
            .set(
                &format!("e/{i}"),
                format!("v{i}").into(),
                SetOptions::new().compress(i % 2 == 0),
            )
            .await
            .unwrap();
    }
    let e = cache.get("report.csv").await.unwrap_err();
    assert_eq!(
        ObjectError::find(&e).map(|o| o.kind()),
        Some(ObjectErrorKind::NotAnEntry),
        "{e}"
    );
    assert_eq!(
        cache.clear().await.unwrap(),
        n,
        "clear deletes the entries only"
    );
    for (p, b) in &foreign {
        let got = cache
            .store()
            .get(p)
            .await
            .unwrap_or_else(|e| panic!("clear deleted the foreign object {p}: {e}"))
            .bytes()
            .await
            .unwrap();
        assert_eq!(&got, b, "{p}");
    }
    assert_eq!(cache.clear().await.unwrap(), 0);
}
