//! The contract checks of expiry: TTLs that hide and remove entries,
//! `purge_expired`, TTLs too long to store, and `expires_by`.

use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;

use super::harness::{Harness, stream_of};
use crate::{CacheExt, Error, SetOptions, Value};

/// An expired entry reads as a miss everywhere and is removed (when seen,
/// or by `purge_expired` for a backend that keeps it until then).
pub async fn ttl_hides_and_removes_expired(h: &Harness) {
    let c = &*h.cache;
    c.set(
        "daily_report",
        "ok".into(),
        SetOptions::new().ttl_seconds(3600),
    )
    .await
    .unwrap();
    c.set_stream(
        "stream",
        stream_of(vec![Bytes::from_static(b"abc")]),
        SetOptions::new().ttl(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    c.set("forever", "stays".into(), SetOptions::new())
        .await
        .unwrap();
    h.clock.advance(Duration::from_secs(59));
    assert!(c.get_stream("stream", 2).await.unwrap().is_some());
    assert_eq!(
        c.get_text("daily_report").await.unwrap().as_deref(),
        Some("ok")
    );
    let ttl = c.head("daily_report").await.unwrap().unwrap();
    assert!(ttl.expires.is_some());
    h.clock.advance(Duration::from_secs(2));
    assert!(c.get_stream("stream", 2).await.unwrap().is_none());
    h.clock.advance(Duration::from_secs(3600));
    assert_eq!(c.get("daily_report").await.unwrap(), None);
    assert_eq!(c.head("daily_report").await.unwrap(), None);
    assert!(!c.contains("daily_report").await.unwrap());
    let all: Vec<_> = c.list_all(None).try_collect().await.unwrap();
    assert!(
        all.iter()
            .all(|m| m.key == "forever" || m.is_expired(h.clock.now_for_tests()))
    );
    assert_eq!(c.keys(None).await.unwrap(), vec!["forever".to_string()]);
    assert_eq!(
        c.get_text("forever").await.unwrap().as_deref(),
        Some("stays")
    );
    if !h.removes_expired_on_read {
        assert_eq!(c.purge_expired().await.unwrap(), 2, "purge removes them");
    }
    assert_eq!(
        c.stats().await.unwrap().entries,
        1,
        "expired entries were removed when seen"
    );
}

/// `purge_expired` removes exactly the expired entries.
pub async fn purge_expired_removes_only_expired(h: &Harness) {
    let c = &*h.cache;
    for i in 0..10 {
        let ttl = if i % 2 == 0 {
            Some(Duration::from_secs(10))
        } else {
            None
        };
        let mut o = SetOptions::new();
        if let Some(t) = ttl {
            o = o.ttl(t);
        }
        c.set(&format!("k{i}"), Value::Text(format!("v{i}")), o)
            .await
            .unwrap();
    }
    assert_eq!(c.purge_expired().await.unwrap(), 0);
    h.clock.advance(Duration::from_secs(11));
    let all: Vec<_> = c.list_all(None).try_collect().await.unwrap();
    let now = h.clock.now_for_tests();
    assert_eq!(
        all.len(),
        10,
        "list_all still shows expired entries before a purge"
    );
    assert_eq!(all.iter().filter(|m| m.is_expired(now)).count(), 5);
    assert_eq!(c.purge_expired().await.unwrap(), 5);
    assert_eq!(c.stats().await.unwrap().entries, 5);
    assert_eq!(
        c.keys(None).await.unwrap(),
        vec!["k1", "k3", "k5", "k7", "k9"]
    );
    assert_eq!(c.purge_expired().await.unwrap(), 0);
}

/// A TTL too long to store is `InvalidInput` on every write path (never a
/// panic, never a silently shortened TTL), and leaves the previous value; the
/// longest accepted one is kept.
pub async fn extreme_ttls_are_refused_cleanly(h: &Harness) {
    let c = &*h.cache;
    c.set("k", "before".into(), SetOptions::new())
        .await
        .unwrap();
    for ttl in [
        Duration::MAX,
        Duration::from_secs(u64::MAX),
        Duration::from_secs(10_000_000_000_000_000_000),
        crate::MAX_TTL + Duration::from_secs(1),
    ] {
        let opts = SetOptions::new().ttl(ttl);
        let e = c.set("k", "after".into(), opts).await.unwrap_err();
        assert!(
            matches!(e, Error::InvalidInput { .. }),
            "set, ttl {ttl:?}: {e}"
        );
        let e = c
            .set_stream("k", stream_of(vec![Bytes::from_static(b"after")]), opts)
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::InvalidInput { .. }),
            "set_stream, ttl {ttl:?}: {e}"
        );
        let e = c
            .get_or_insert_with("fresh", opts, || async { Value::from("computed") })
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::InvalidInput { .. }),
            "get_or_insert_with, ttl {ttl:?}: {e}"
        );
        assert_eq!(c.get_text("k").await.unwrap().as_deref(), Some("before"));
        assert_eq!(c.get("fresh").await.unwrap(), None);
    }
    let meta = c
        .set("k", "longest".into(), SetOptions::new().ttl(crate::MAX_TTL))
        .await
        .unwrap();
    assert!(meta.expires.is_some());
    h.clock.advance(Duration::from_secs(3600 * 24 * 365));
    assert_eq!(c.get_text("k").await.unwrap().as_deref(), Some("longest"));
}

/// `SetOptions::expires_by` bounds the expiry of every kind of write:
/// the earlier of it and the TTL wins, an instant beyond [`crate::MAX_TTL`]
/// is brought in (not refused), and one already past stores nothing that
/// reads back.
pub async fn expires_by_bounds_the_expiry(h: &Harness) {
    let c = &*h.cache;
    let now = h.clock.now_for_tests();
    let soon = now + Duration::from_secs(10);
    let opts = SetOptions::new().ttl_seconds(3600).expires_by(soon);
    let m = c.set("set", "v".into(), opts).await.unwrap();
    assert_eq!(m.expires, Some(soon));
    let m = c
        .set_stream("stream", stream_of(vec![Bytes::from_static(b"v")]), opts)
        .await
        .unwrap();
    assert_eq!(m.expires, Some(soon));
    let only = SetOptions::new().expires_by(soon);
    let m = c.set("only", "v".into(), only).await.unwrap();
    assert_eq!(m.expires, Some(soon));
    c.get_or_insert_with("computed", only, || async { Value::from("v") })
        .await
        .unwrap();
    assert_eq!(
        c.head("computed").await.unwrap().unwrap().expires,
        Some(soon)
    );
    let later = SetOptions::new().ttl_seconds(5).expires_by(soon);
    let m = c.set("ttl first", "v".into(), later).await.unwrap();
    assert_eq!(m.expires, Some(now + Duration::from_secs(5)));
    let far = SetOptions::new().expires_by(now + crate::MAX_TTL * 2);
    let m = c.set("far", "v".into(), far).await.unwrap();
    assert!(m.expires.is_some_and(|e| e <= now + crate::MAX_TTL));
    let past = SetOptions::new().expires_by(now - Duration::from_secs(1));
    c.set("past", "v".into(), past).await.unwrap();
    assert_eq!(c.get("past").await.unwrap(), None);
    h.clock.advance(Duration::from_secs(9));
    for k in ["set", "stream", "only", "computed"] {
        assert!(c.get(k).await.unwrap().is_some(), "{k}");
    }
    h.clock.advance(Duration::from_secs(1));
    for k in ["set", "stream", "only", "computed", "ttl first"] {
        assert_eq!(c.get(k).await.unwrap(), None, "{k}");
        assert_eq!(c.head(k).await.unwrap(), None, "{k}");
    }
    assert!(c.get("far").await.unwrap().is_some());
}
