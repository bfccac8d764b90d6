//! Multipart uploads, through a store whose parts land only when the test
//! lets them: never more than `max_concurrency` parts in flight, a write
//! whose future is dropped mid-upload aborts it and publishes nothing, and
//! a failed part fails the write and aborts the upload.

#[path = "support/forward.rs"]
#[macro_use]
mod forward;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etl_cache_core::testing::sample_bytes;
use etl_cache_core::{Cache, CacheExt, SetOptions};
use etl_cache_object::ObjectCache;
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    MultipartUpload, ObjectStore, PutMultipartOptions, PutPayload, PutResult, UploadPart,
};
use tokio::sync::Semaphore;

const PART: usize = 5 << 20;
const MAX_IN_FLIGHT: usize = 3;

/// InMemory, whose multipart parts wait for a permit each before they
/// land; it counts parts started, in flight, the most in flight, aborts.
#[derive(Debug)]
struct Gated {
    inner: InMemory,
    permits: Arc<Semaphore>,
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    started: AtomicUsize,
    in_flight: AtomicUsize,
    most: AtomicUsize,
    aborts: AtomicUsize,
    /// The part with this number (1 for the first started) fails instead
    /// of landing; 0: none does.
    fail_part: AtomicUsize,
}

impl Gated {
    fn new() -> Arc<Gated> {
        Arc::new(Gated {
            inner: InMemory::new(),
            permits: Arc::new(Semaphore::new(0)),
            counts: Arc::default(),
        })
    }

    /// Waits (yielding, never sleeping) until `n` parts were started; a
    /// test whose uploader stops starting parts fails instead of hanging.
    async fn started(&self, n: usize) {
        until(&self.counts.started, n, "parts started").await;
    }
}

impl std::fmt::Display for Gated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gated({})", self.inner)
    }
}

#[derive(Debug)]
struct GatedUpload {
    inner: Box<dyn MultipartUpload>,
    permits: Arc<Semaphore>,
    counts: Arc<Counts>,
}

#[async_trait]
impl MultipartUpload for GatedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let (permits, counts) = (self.permits.clone(), self.counts.clone());
        let number = counts.started.fetch_add(1, Ordering::SeqCst) + 1;
        let now = counts.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counts.most.fetch_max(now, Ordering::SeqCst);
        let landed = self.inner.put_part(data);
        Box::pin(async move {
            let permit = permits.acquire().await;
            counts.in_flight.fetch_sub(1, Ordering::SeqCst);
            permit.expect("the semaphore stays open").forget();
            if counts.fail_part.load(Ordering::SeqCst) == number {
                return Err(object_store::Error::Generic {
                    store: "Gated",
                    source: "a part failed".into(),
                });
            }
            landed.await
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.counts.aborts.fetch_add(1, Ordering::SeqCst);
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for Gated {
    forward_object_store!(
        inner;
        put_opts, get_opts, delete_stream, list, list_with_delimiter, copy_opts
    );

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(GatedUpload {
            inner,
            permits: self.permits.clone(),
            counts: self.counts.clone(),
        }))
    }
}

/// Waits (yielding) until `count` reaches `n`, for at most 30 s.
async fn until(count: &AtomicUsize, n: usize, what: &str) {
    let reached = tokio::time::timeout(Duration::from_secs(30), async {
        while count.load(Ordering::SeqCst) < n {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let now = count.load(Ordering::SeqCst);
    assert!(reached.is_ok(), "{what}: {now}, never reached {n}");
}

fn cache(store: &Arc<Gated>) -> ObjectCache {
    ObjectCache::builder()
        .store(store.clone())
        .prefix("etl")
        .part_size(PART)
        .max_concurrency(MAX_IN_FLIGHT)
        .build()
        .unwrap()
}

/// A stream of 1 MiB chunks of `data`.
fn chunks(data: &[u8]) -> etl_cache_core::ByteStream {
    let parts: Vec<std::io::Result<Bytes>> = data
        .chunks(1 << 20)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(parts).boxed()
}

/// Writes `data` to the key "big" as a stream, on a task of its own.
fn spawn_big_write(
    cache: &ObjectCache,
    data: &[u8],
) -> tokio::task::JoinHandle<etl_cache_core::Result<etl_cache_core::EntryMeta>> {
    let (cache, stream) = (cache.clone(), chunks(data));
    tokio::spawn(async move { cache.set_stream("big", stream, SetOptions::new()).await })
}

#[tokio::test]
async fn never_more_parts_in_flight_than_max_concurrency() {
    let store = Gated::new();
    let cache = cache(&store);
    let data = sample_bytes(10 * PART + 12_345, 7); // 11 parts
    let write = spawn_big_write(&cache, &data);
    store.started(MAX_IN_FLIGHT).await;
    // The writer has as many parts in flight as it may; it makes no more
    // until one lands, however long it is given.
    for _ in 0..1000 {
        tokio::task::yield_now().await;
    }
    assert_eq!(store.counts.started.load(Ordering::SeqCst), MAX_IN_FLIGHT);
    // Let the parts land one at a time: a new one starts as each lands,
    // up to the ten full parts.
    for landed in 1..=10 - MAX_IN_FLIGHT {
        store.permits.add_permits(1);
        store.started(MAX_IN_FLIGHT + landed).await;
    }
    // Three full parts and the short last one are left.
    store.permits.add_permits(MAX_IN_FLIGHT + 1);
    write.await.unwrap().unwrap();
    assert_eq!(store.counts.most.load(Ordering::SeqCst), MAX_IN_FLIGHT);
    assert_eq!(store.counts.aborts.load(Ordering::SeqCst), 0);
    let got = cache.get_bytes("big").await.unwrap().unwrap();
    assert!(got == data, "the value reads back whole");
}

#[tokio::test]
async fn a_write_dropped_mid_upload_aborts_it_and_publishes_nothing() {
    let store = Gated::new();
    let cache = cache(&store);
    cache
        .set_text("big", "the older value", SetOptions::new())
        .await
        .unwrap();
    let data = sample_bytes(6 * PART, 8);
    let write = spawn_big_write(&cache, &data);
    store.started(2).await;
    store.permits.add_permits(1); // one part lands, the others wait
    store.started(MAX_IN_FLIGHT + 1).await;
    write.abort();
    assert!(write.await.unwrap_err().is_cancelled());
    // The abort runs in the background: wait for it, then let every part go.
    until(&store.counts.aborts, 1, "aborts").await;
    store.permits.add_permits(100);
    assert_eq!(
        cache.get_text("big").await.unwrap().as_deref(),
        Some("the older value"),
        "the older value stays"
    );
}

#[tokio::test]
async fn a_failed_part_fails_the_write_and_aborts_the_upload() {
    // The first part, a middle one, and the short last one.
    for (fail, of) in [(1, 4), (2, 4), (3, 3)] {
        let store = Gated::new();
        let cache = cache(&store);
        store.counts.fail_part.store(fail, Ordering::SeqCst);
        store.permits.add_permits(100);
        let data = sample_bytes((of - 1) * PART + 1000, 9);
        let err = cache
            .set_stream("big", chunks(&data), SetOptions::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("big"), "names the key: {err}");
        assert_eq!(
            store.counts.aborts.load(Ordering::SeqCst),
            1,
            "part {fail} of {of} failed: the upload is aborted"
        );
        assert_eq!(cache.get_bytes("big").await.unwrap(), None);
    }
}
