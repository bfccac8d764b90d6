//! What the contract suite runs on: the [`Harness`] a backend hands it, and
//! the payloads and helpers its checks share.

use std::any::Any;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::{ByteStream, Cache, Compression, ManualClock, Stats};

/// A cache under test with the clock it reads.
pub struct Harness {
    /// The cache.
    pub cache: Arc<dyn Cache>,
    /// The clock the cache reads expiry from.
    pub clock: Arc<ManualClock>,
    /// Whether a read that finds an entry expired removes it. A backend
    /// that cannot remove conditionally (an object store without
    /// conditional deletes) leaves it to `purge_expired`.
    pub removes_expired_on_read: bool,
    /// A second handle on the same entries (another `DiskCache` on the
    /// same directory, another `ObjectCache` on the same store), for the
    /// checks of writers racing across handles; `None` where there is none.
    pub second: Option<Arc<dyn Cache>>,
    /// Whether a write dropped while its final request is in flight may
    /// still be applied after the drop (a remote object store: see the
    /// `Cache` contract, "Cancellation").
    pub dropped_writes_may_land_later: bool,
    _keep: Box<dyn Any + Send + Sync>,
}

impl Harness {
    /// Bundles a cache, its clock and anything that must live as long as the test.
    pub fn new(
        cache: Arc<dyn Cache>,
        clock: Arc<ManualClock>,
        keep: impl Any + Send + Sync,
    ) -> Self {
        Harness {
            cache,
            clock,
            removes_expired_on_read: true,
            second: None,
            dropped_writes_may_land_later: false,
            _keep: Box::new(keep),
        }
    }

    /// For a backend whose reads leave expired entries in place (they are
    /// invisible, and removed by `purge_expired`).
    pub fn keeps_expired_until_purge(mut self) -> Self {
        self.removes_expired_on_read = false;
        self
    }

    /// Adds a second handle on the same entries as the cache under test.
    pub fn with_second_handle(mut self, second: Arc<dyn Cache>) -> Self {
        self.second = Some(second);
        self
    }

    /// For a remote store, where a write dropped while its final request is
    /// in flight may still be applied by the server after the drop.
    pub fn dropped_writes_may_land_later(mut self) -> Self {
        self.dropped_writes_may_land_later = true;
        self
    }
}

pub(super) fn stream_of(chunks: Vec<Bytes>) -> ByteStream {
    futures::stream::iter(chunks.into_iter().map(Ok)).boxed()
}

/// A deterministic, compressible payload of `len` bytes.
pub fn sample_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    while out.len() < len {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let line = format!("<row id=\"{}\" v=\"{}\"/>\n", x >> 40, (x >> 20) & 0xff);
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(len);
    out
}

pub(super) async fn collect(
    cache: &dyn Cache,
    key: &str,
    chunk: usize,
) -> Option<(Vec<usize>, Vec<u8>)> {
    let s = cache.get_stream(key, chunk).await.expect("get_stream")?;
    let chunks: Vec<Bytes> = s.try_collect().await.expect("stream reads");
    let sizes = chunks.iter().map(Bytes::len).collect();
    Some((sizes, chunks.concat()))
}

/// `len` bytes that no codec shrinks, different for each `seed`: the
/// middle byte of each step of xorshift64.
pub fn noise_bytes(len: usize, seed: u64) -> Vec<u8> {
    // Odd, so never zero (xorshift stays at zero from zero).
    let mut x = (0x9E37_79B9_7F4A_7C15u64 ^ seed.wrapping_mul(0xBF58_476D_1CE4_E5B9)) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The chunks `get_stream(key, chunk)` hands out; panics if `key` is
/// missing or a read fails.
pub async fn stream_chunks(cache: &dyn Cache, key: &str, chunk: usize) -> Vec<Bytes> {
    let stream = cache.get_stream(key, chunk).await.expect("get_stream");
    let stream = stream.unwrap_or_else(|| panic!("{key:?} is missing"));
    stream.try_collect().await.expect("stream reads")
}

/// Reads `range` of `key` from `cache` and asserts that it holds that
/// range (cut at the end) of the one of `versions` whose length its
/// metadata gives: bytes and metadata of one version, never a mix.
pub async fn assert_range_of_one_version<V: AsRef<[u8]>>(
    cache: &dyn Cache,
    key: &str,
    range: Range<u64>,
    versions: &[V],
) {
    let (meta, got) = cache.get_range(key, range.clone()).await.unwrap().unwrap();
    let v = versions
        .iter()
        .map(AsRef::as_ref)
        .find(|v| v.len() as u64 == meta.logical_len)
        .expect("the metadata of a version that was set");
    let end = range.end.min(v.len() as u64);
    let start = range.start.min(end);
    assert_eq!(
        &got[..],
        &v[start as usize..end as usize],
        "{key:?} {range:?}: a range mixed versions, or did not match its metadata"
    );
}

/// Sets `"k"` to the text `"previous"` and returns the cache's stats
/// then, for the checks that failed writes keep it and leave no debris.
pub(super) async fn set_previous(cache: &dyn Cache) -> Stats {
    cache
        .set("k", "previous".into(), crate::SetOptions::new())
        .await
        .unwrap();
    cache.stats().await.unwrap()
}

/// Asserts that a read of `key`, whose stored value `data` had a byte
/// changed after its first `good_len` bytes of blocks, handed out `got`
/// and no changed byte: exactly those blocks when stored with no codec,
/// else a prefix of `data`.
pub fn assert_no_changed_byte(
    key: &str,
    codec: Compression,
    data: &[u8],
    got: &[u8],
    good_len: usize,
) {
    if codec == Compression::NONE {
        assert!(
            got == &data[..good_len],
            "{key}: {} bytes handed out",
            got.len()
        );
    } else {
        assert!(
            data.starts_with(got),
            "{key}: a changed byte was handed out"
        );
    }
}

/// Asserts that `cache` holds as many entries and bytes as it did at
/// `before`: `what` (failed writes, say) left no debris.
pub(super) async fn assert_no_debris(cache: &dyn Cache, before: &Stats, what: &str) {
    let after = cache.stats().await.unwrap();
    assert_eq!(
        (after.entries, after.bytes),
        (before.entries, before.bytes),
        "{what} leave no debris"
    );
}

/// A JSON document nesting `depth` arrays and objects.
pub fn nested_json(depth: usize) -> serde_json::Value {
    let mut doc = serde_json::json!("leaf");
    for i in 0..depth {
        doc = if i % 2 == 0 {
            serde_json::json!([i, doc])
        } else {
            serde_json::json!({"level": i, "next": doc})
        };
    }
    doc
}

impl ManualClock {
    /// The clock's time; for the suite.
    pub fn now_for_tests(&self) -> std::time::SystemTime {
        crate::Clock::now(self)
    }
}

/// Polls `fut` at most `polls` times, each time only once it woke (so each
/// poll resumes it past one await point that was pending); the output if
/// it completed, else `None`, and the future is dropped where it waits:
/// for tests that drop an operation at each of its await points in turn.
pub async fn poll_then_drop<F: std::future::Future>(fut: F, polls: usize) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut n = 0;
    std::future::poll_fn(|cx: &mut std::task::Context<'_>| {
        if n == polls {
            return std::task::Poll::Ready(None);
        }
        n += 1;
        fut.as_mut().poll(cx).map(Some)
    })
    .await
}
