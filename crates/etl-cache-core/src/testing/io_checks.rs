//! The contract checks of [`CacheWriter`](crate::CacheWriter) and
//! [`CacheReader`](crate::CacheReader) on every backend.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use super::harness::{Harness, assert_no_debris, sample_bytes, set_previous};
use crate::io::WRITE_CHUNK_SIZE;
use crate::{Cache, CacheExt, CacheIoExt, Compression, EntryMeta, Error, Kind, SetOptions, Value};

/// The cache error an `io::Error` from a writer or reader carries.
fn carried(e: &io::Error) -> &Error {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>())
        .unwrap_or_else(|| panic!("the io::Error carries no cache error: {e:?}"))
}

async fn bytes_of(c: &dyn Cache, key: &str) -> Option<Bytes> {
    c.get_bytes(key).await.unwrap()
}

/// Writes `data` in pieces whose sizes cycle through 1..=13 bytes.
async fn write_in_tiny_pieces(w: &mut crate::CacheWriter<'_>, data: &[u8]) {
    let mut at = 0;
    let mut size = 1;
    while at < data.len() {
        let end = (at + size).min(data.len());
        w.write_all(&data[at..end]).await.unwrap();
        at = end;
        size = size % 13 + 1;
    }
}

/// The bytes come back exactly, however they were written: many tiny
/// writes, one huge write, `tokio::io::copy`; with and without compression.
pub async fn io_writer_stores_exact_bytes(h: &Harness) {
    let c = &*h.cache;
    for comp in [Compression::NONE, Compression::zstd()] {
        let opts = SetOptions::new().compression(comp);

        let tiny = sample_bytes(3 * WRITE_CHUNK_SIZE + 1001, 21);
        let mut w = c.writer("tiny", opts);
        write_in_tiny_pieces(&mut w, &tiny).await;
        let meta = w.commit().await.unwrap();
        assert_eq!(meta.logical_len, tiny.len() as u64, "{comp}");
        assert_eq!(
            bytes_of(c, "tiny").await.as_deref(),
            Some(&tiny[..]),
            "{comp}"
        );

        // One write of many chunks, not a multiple of the chunk size.
        let huge = sample_bytes(9 * WRITE_CHUNK_SIZE + 77, 22);
        let mut w = c.writer("huge", opts);
        w.write_all(&huge).await.unwrap();
        w.shutdown().await.unwrap();
        assert_eq!(
            bytes_of(c, "huge").await.as_deref(),
            Some(&huge[..]),
            "{comp}"
        );

        // A write that ends exactly on a chunk boundary, after gathered bytes.
        let exact = sample_bytes(2 * WRITE_CHUNK_SIZE, 23);
        let mut w = c.writer("exact", opts);
        w.write_all(&exact[..100]).await.unwrap();
        w.write_all(&exact[100..]).await.unwrap();
        assert_eq!(w.commit().await.unwrap().logical_len, exact.len() as u64);
        assert_eq!(bytes_of(c, "exact").await.as_deref(), Some(&exact[..]));

        let copied = sample_bytes(1_000_003, 24);
        let mut w = c.writer("copied", opts);
        let n = tokio::io::copy(&mut &copied[..], &mut w).await.unwrap();
        assert_eq!(n, copied.len() as u64);
        w.shutdown().await.unwrap();
        assert_eq!(
            bytes_of(c, "copied").await.as_deref(),
            Some(&copied[..]),
            "{comp}"
        );

        // Nothing written: an empty entry, not a miss.
        let meta = c.writer("empty", opts).commit().await.unwrap();
        assert_eq!(meta.logical_len, 0);
        assert_eq!(
            c.get("empty").await.unwrap(),
            Some(Value::Bytes(Bytes::new()))
        );
    }
}

/// Shutting down publishes (and nothing is visible before, flushed or not);
/// `commit` returns the entry's metadata; writing after either is an error.
pub async fn io_shutdown_publishes_and_commit_reports_meta(h: &Harness) {
    let c = &*h.cache;
    let data = sample_bytes(2 * WRITE_CHUNK_SIZE + 5000, 31);
    let mut w = c.writer("shut", SetOptions::new().compress(true));
    w.write_all(&data).await.unwrap();
    w.flush().await.unwrap();
    assert_eq!(
        c.get("shut").await.unwrap(),
        None,
        "visible before the commit"
    );
    w.shutdown().await.unwrap();
    assert_eq!(bytes_of(c, "shut").await.as_deref(), Some(&data[..]));
    w.shutdown().await.unwrap(); // a second shutdown changes nothing
    w.flush().await.unwrap();
    let err = w.write_all(b"late").await.unwrap_err();
    assert!(matches!(carried(&err), Error::InvalidInput { .. }), "{err}");
    // Commit after shutdown: the metadata of the published entry.
    let meta = w.commit().await.unwrap();
    assert_eq!(meta.logical_len, data.len() as u64);
    assert_eq!(bytes_of(c, "shut").await.as_deref(), Some(&data[..]));

    c.set("meta", "previous".into(), SetOptions::new())
        .await
        .unwrap();
    let data = sample_bytes(700_001, 32);
    let mut w = c.writer("meta", SetOptions::new().ttl_seconds(60));
    assert_eq!(w.key(), "meta");
    w.write_all(&data).await.unwrap();
    assert_eq!(
        c.get_text("meta").await.unwrap().as_deref(),
        Some("previous")
    );
    let meta: EntryMeta = w.commit().await.unwrap();
    assert_eq!(meta.key, "meta");
    assert_eq!(meta.kind, Kind::Bytes);
    assert_eq!(meta.logical_len, data.len() as u64);
    assert!(meta.expires.is_some());
    let head = c.head("meta").await.unwrap().unwrap();
    assert_eq!(
        (head.logical_len, head.stored_len, head.kind),
        (meta.logical_len, meta.stored_len, meta.kind)
    );
    assert_eq!(bytes_of(c, "meta").await.as_deref(), Some(&data[..]));
}

/// A writer dropped without commit or shutdown publishes nothing, whatever
/// it had written or flushed, and leaves no debris.
pub async fn io_dropped_writer_keeps_previous_value(h: &Harness) {
    let c = &*h.cache;
    let before = set_previous(c).await;
    for (i, len) in [10, WRITE_CHUNK_SIZE, 3 * WRITE_CHUNK_SIZE + 1]
        .into_iter()
        .enumerate()
    {
        let mut w = c.writer("k", SetOptions::new().compress(i % 2 == 0));
        w.write_all(&sample_bytes(len, i as u64)).await.unwrap();
        if i > 0 {
            w.flush().await.unwrap();
        }
        drop(w);
        assert_eq!(c.get_text("k").await.unwrap().as_deref(), Some("previous"));
        let mut w = c.writer("fresh", SetOptions::new());
        w.write_all(&sample_bytes(len, 9)).await.unwrap();
        drop(w);
        assert_eq!(c.get("fresh").await.unwrap(), None);
    }
    assert_no_debris(c, &before, "dropped writers").await;
}

/// Wakes the test's poll loop.
struct Woken(tokio::sync::Notify);

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.notify_one();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.notify_one();
    }
}

/// Polls `fut` at most `limit` times, each time after it asked to be woken
/// and was: every await point it passes is a poll of its own. Returns the
/// output if it completed within the limit.
async fn poll_at_most<F: Future>(fut: F, limit: usize) -> Option<F::Output> {
    let woken = Arc::new(Woken(tokio::sync::Notify::new()));
    let waker = Waker::from(woken.clone());
    let mut fut = pin!(fut);
    for polls in 0..limit {
        if polls > 0 {
            // A guard against a writer that never wakes its caller, not a
            // pause that orders anything.
            tokio::time::timeout(Duration::from_secs(120), woken.0.notified())
                .await
                .expect("a pending writer woke its task");
        }
        if let Poll::Ready(out) = fut.as_mut().poll(&mut Context::from_waker(&waker)) {
            return Some(out);
        }
    }
    None
}

/// A writer dropped after each number of polls (so at each of its await
/// points, while writing and while committing) publishes nothing. The one
/// exception the contract has: a drop while the commit is under way may find
/// the publication done (a drop waits for a rename in progress), or, on a
/// remote store, the final request sent, which the server may apply after
/// the drop. Before the commit starts, never.
pub async fn io_writer_dropped_at_any_poll_publishes_nothing(h: &Harness) {
    let c = &*h.cache;
    let data = Bytes::from(sample_bytes(2 * WRITE_CHUNK_SIZE + 3001, 41));
    // (key, dropped while committing, what it held right after the drop)
    let mut outcomes: Vec<(String, bool, Bytes)> = Vec::new();
    let mut completed = false;
    for n in 0..5000usize {
        let key = format!("dropped/{n}");
        let previous = Bytes::from(format!("previous {n}"));
        c.set(&key, Value::Bytes(previous.clone()), SetOptions::new())
            .await
            .unwrap();
        let committing = AtomicBool::new(false);
        let write = async {
            let mut w = c.writer(&key, SetOptions::new());
            for part in data.chunks(100_000) {
                w.write_all(part).await?;
            }
            committing.store(true, Ordering::SeqCst);
            w.commit().await.map_err(io::Error::from)
        };
        if let Some(done) = poll_at_most(write, n).await {
            assert_eq!(done.unwrap().logical_len, data.len() as u64);
            assert_eq!(bytes_of(c, &key).await, Some(data.clone()));
            completed = true;
            break;
        }
        let now = bytes_of(c, &key).await.unwrap();
        let committing = committing.load(Ordering::SeqCst);
        if committing {
            assert!(now == previous || now == data, "{key}: a partial value");
        } else {
            assert_eq!(
                now, previous,
                "{key}: dropped before its commit, yet published"
            );
        }
        outcomes.push((key, committing, now));
    }
    assert!(completed, "the write completes when polled to its end");
    // Nothing lands afterwards either (but where the contract allows it).
    for (key, committing, then) in outcomes {
        let now = bytes_of(c, &key).await.unwrap();
        if committing && h.dropped_writes_may_land_later {
            assert!(now == then || now == data, "{key}: a partial value");
        } else {
            assert_eq!(now, then, "{key}: a dropped write landed later");
        }
    }
}

/// The cache's errors reach the writer's caller: as an `io::Error` that
/// carries the cache error (first write, flush and shutdown alike), and as
/// the error itself from `commit`. Later writes are refused too.
pub async fn io_writer_errors_carry_the_cache_error(h: &Harness) {
    let c = &*h.cache;
    for bad in ["", "nul\0inside"] {
        let mut w = c.writer(bad, SetOptions::new());
        let err = w.write_all(b"rows").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert!(matches!(carried(&err), Error::InvalidKey { .. }), "{err}");
        for _ in 0..2 {
            let again = w.write_all(b"more rows").await.unwrap_err();
            assert!(
                matches!(carried(&again), Error::InvalidInput { .. }),
                "{again}"
            );
        }
        assert!(w.flush().await.is_err());
        assert!(w.shutdown().await.is_err());
        assert!(matches!(w.commit().await, Err(Error::InvalidInput { .. })));

        let mut w = c.writer(bad, SetOptions::new());
        let err = w.flush().await.unwrap_err();
        let owned = *err.into_inner().unwrap().downcast::<Error>().unwrap();
        assert!(matches!(owned, Error::InvalidKey { .. }), "{owned:?}");

        let w = c.writer(bad, SetOptions::new());
        assert!(matches!(w.commit().await, Err(Error::InvalidKey { .. })));
        let mut w = c.writer(bad, SetOptions::new());
        let err = w.shutdown().await.unwrap_err();
        assert!(matches!(carried(&err), Error::InvalidKey { .. }), "{err}");
    }
    assert_eq!(c.stats().await.unwrap().entries, 0);
}

/// Writes `value` through a writer in uneven pieces and commits.
async fn write_whole(c: &dyn Cache, key: &str, value: &[u8], compress: bool) {
    let mut w = c.writer(key, SetOptions::new().compress(compress));
    let mut at = 0;
    for size in [1, 1000, WRITE_CHUNK_SIZE - 3, 17, 300_000]
        .into_iter()
        .cycle()
    {
        if at == value.len() {
            break;
        }
        let end = (at + size).min(value.len());
        w.write_all(&value[at..end]).await.unwrap();
        at = end;
        tokio::task::yield_now().await;
    }
    w.commit().await.unwrap();
}

/// Writers racing on one key through `handles` leave one of their values,
/// whole, and readers never see a mix.
async fn writers_race(handles: &[Arc<dyn Cache>]) {
    let values: Vec<Vec<u8>> = (0..6)
        .map(|i| sample_bytes(600_000 + i * 1000, 50 + i as u64))
        .collect();
    let mut tasks = Vec::new();
    for (i, v) in values.iter().cloned().enumerate() {
        let c = handles[i % handles.len()].clone();
        tasks.push(tokio::spawn(async move {
            write_whole(&*c, "contended", &v, i % 2 == 0).await;
        }));
    }
    let reader = {
        let (handles, values) = (handles.to_vec(), values.clone());
        tokio::spawn(async move {
            for round in 0..40 {
                let c = &handles[round % handles.len()];
                if let Some(mut r) = c.reader("contended", 70_000).await.unwrap() {
                    let mut got = Vec::new();
                    r.read_to_end(&mut got).await.unwrap();
                    assert_eq!(got.len() as u64, r.meta().logical_len);
                    assert!(values.contains(&got), "a read saw a mixed or partial value");
                }
                tokio::task::yield_now().await;
            }
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    reader.await.unwrap();
    let first = bytes_of(&*handles[0], "contended").await.unwrap();
    assert!(
        values.iter().any(|v| v[..] == first[..]),
        "a mixed value won"
    );
    for c in handles {
        assert_eq!(bytes_of(&**c, "contended").await, Some(first.clone()));
        assert_eq!(c.stats().await.unwrap().entries, 1);
    }
}

/// Writers on one handle racing on one key: one whole value wins.
pub async fn io_concurrent_writers_leave_one_whole_value(h: &Harness) {
    writers_race(std::slice::from_ref(&h.cache)).await;
}

/// Writers on two handles racing on one key: one whole value wins, and
/// both handles read it. (A harness without a second handle skips this.)
pub async fn io_writers_on_two_handles_leave_one_whole_value(h: &Harness) {
    let Some(second) = &h.second else { return };
    writers_race(&[h.cache.clone(), second.clone()]).await;
}

/// A `set` that runs between a writer's writes and its commit. A backend
/// may make the set wait for the open writer (TieredCache with upper tiers
/// serializes the writes of a key), so the set runs on a task of its own
/// while the writer goes on. A set done before the commit is what readers
/// see until the commit (the writer publishes nothing before). The two
/// writes overlap in time, so the contract lets either be ordered last:
/// afterwards the entry is one of the two values, whole, and every read
/// agrees on which.
pub async fn io_set_between_writes_and_commit(h: &Harness) {
    let c = &*h.cache;
    let written = sample_bytes(3 * WRITE_CHUNK_SIZE + 123, 61);
    let set = Bytes::from(sample_bytes(400_000, 62));
    c.set("k", "first".into(), SetOptions::new()).await.unwrap();
    let mut w = c.writer("k", SetOptions::new());
    w.write_all(&written[..2 * WRITE_CHUNK_SIZE]).await.unwrap();
    w.flush().await.unwrap();
    let setter = {
        let (cache, set) = (h.cache.clone(), set.clone());
        tokio::spawn(async move {
            cache
                .set("k", Value::Bytes(set), SetOptions::new())
                .await
                .unwrap();
        })
    };
    w.write_all(&written[2 * WRITE_CHUNK_SIZE..]).await.unwrap();
    if setter.is_finished() {
        assert_eq!(
            bytes_of(c, "k").await,
            Some(set.clone()),
            "published before the commit"
        );
    }
    let meta = w.commit().await.unwrap();
    setter.await.unwrap();
    assert_eq!(meta.logical_len, written.len() as u64);
    let now = bytes_of(c, "k").await.unwrap();
    assert!(
        now == set || now[..] == written[..],
        "a mixed or partial value"
    );
    let mut r = c.reader("k", 100_000).await.unwrap().unwrap();
    let mut again = Vec::new();
    r.read_to_end(&mut again).await.unwrap();
    assert_eq!(again[..], now[..], "reads disagree on the winner");
    assert_eq!(
        c.head("k").await.unwrap().unwrap().logical_len,
        now.len() as u64
    );
    assert_eq!(c.stats().await.unwrap().entries, 1);
}

/// The reader yields the logical bytes exactly, through small `read`
/// buffers and through `AsyncBufRead`, with the entry's metadata; a missing
/// key is `None`; a zero chunk size is refused.
pub async fn io_reader_reads_exact_bytes(h: &Harness) {
    let c = &*h.cache;
    let data = sample_bytes(1_000_003, 71);
    for comp in [Compression::NONE, Compression::gzip(), Compression::zstd()] {
        let meta = c
            .set(
                "r",
                Value::Bytes(Bytes::from(data.clone())),
                SetOptions::new().compression(comp),
            )
            .await
            .unwrap();
        for chunk in [1000, 65_536, 2_000_000] {
            let mut r = c.reader("r", chunk).await.unwrap().unwrap();
            assert_eq!(r.meta().logical_len, meta.logical_len);
            assert_eq!(r.meta().kind, Kind::Bytes);
            let mut got = Vec::with_capacity(data.len());
            let mut buf = [0u8; 7];
            loop {
                let n = r.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert!(got == data, "{comp} chunk {chunk}: bytes differ");
            assert_eq!(r.read(&mut buf).await.unwrap(), 0, "the end stays the end");
        }
        let r = c.reader("r", 4096).await.unwrap().unwrap();
        let mut lines = r.lines();
        let mut joined = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            joined.extend_from_slice(line.as_bytes());
            joined.push(b'\n');
        }
        let trailing = data.last() != Some(&b'\n');
        let expected_len = data.len() + usize::from(trailing);
        assert_eq!(joined.len(), expected_len, "{comp}");
        assert!(joined.starts_with(&data[..data.len() - 1]), "{comp}");
    }
    // Text reads as its UTF-8 bytes.
    c.set("t", Value::Text("héllo".into()), SetOptions::new())
        .await
        .unwrap();
    let mut s = String::new();
    c.reader("t", 2)
        .await
        .unwrap()
        .unwrap()
        .read_to_string(&mut s)
        .await
        .unwrap();
    assert_eq!(s, "héllo");
    assert!(c.reader("missing", 1000).await.unwrap().is_none());
    assert!(matches!(
        c.reader("r", 0).await,
        Err(Error::InvalidInput { .. })
    ));
}
