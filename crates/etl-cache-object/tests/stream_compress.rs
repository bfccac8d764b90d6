//! Compressed streams of large chunks: each chunk above the inline limit is
//! compressed on the blocking pool, the encoder going there and back. These
//! tests hold the write to what users rely on around that hop: a future
//! dropped at any poll publishes nothing and leaves the older value whole,
//! writes racing on one handle and on two each land whole, and a value set
//! by another writer while the stream is being compressed is replaced
//! whole, never mixed.

use etl_cache_core::testing::poll_then_drop;
use std::sync::Arc;

use bytes::Bytes;
use etl_cache_core::testing::sample_bytes;
use etl_cache_core::{ByteStream, Cache, Compression, SetOptions, Value};
use etl_cache_object::ObjectCache;
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::memory::InMemory;

/// Chunks of 1 MiB: well above the 256 KiB a compressed chunk may take on
/// the calling task.
const CHUNK: usize = 1 << 20;

fn compressions() -> [Compression; 2] {
    [
        Compression::zstd(),
        Compression::gzip_level(1).expect("level"),
    ]
}

/// Two handles on one fresh in-memory store.
fn two_handles() -> (ObjectCache, ObjectCache) {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let handle = || ObjectCache::new(store.clone(), "cache").expect("cache");
    (handle(), handle())
}

fn payload(chunks: usize, seed: u64) -> Bytes {
    Bytes::from(sample_bytes(chunks * CHUNK + 777, seed))
}

fn chunked(b: &Bytes) -> ByteStream {
    let parts: Vec<Bytes> = b.chunks(CHUNK).map(|c| b.slice_ref(c)).collect();
    futures::stream::iter(parts.into_iter().map(Ok)).boxed()
}

async fn bytes_of(cache: &dyn Cache, key: &str) -> Option<Bytes> {
    match cache.get(key).await.expect("get") {
        Some(Value::Bytes(b)) => Some(b),
        Some(other) => panic!("{key}: not bytes: {other:?}"),
        None => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_stream_dropped_at_any_poll_leaves_the_older_value_whole() {
    for comp in compressions() {
        let (cache, other) = two_handles();
        let old = payload(1, 1);
        let new = payload(6, 2);
        cache
            .set_stream("k", chunked(&old), SetOptions::new().compression(comp))
            .await
            .expect("older value");
        let mut polls = 1;
        loop {
            let fut = cache.set_stream("k", chunked(&new), SetOptions::new().compression(comp));
            let done = poll_then_drop(fut, polls).await;
            // Whatever the drop interrupted has settled: a blocking
            // compression still running has nowhere to send its result.
            let seen = bytes_of(&other, "k").await.expect("an entry is there");
            match done {
                Some(r) => {
                    r.expect("set_stream");
                    assert_eq!(seen, new, "{comp:?}: the completed write is read");
                    break;
                }
                None => assert_eq!(
                    seen, old,
                    "{comp:?}: dropped after {polls} polls, the older value must stay"
                ),
            }
            polls += 1;
            assert!(polls < 1_000, "{comp:?}: the write never completed");
        }
        // The 1 MiB chunks are compressed off the task: the write waits for
        // them. (Not once for each: a compression that finishes before its
        // handle is first polled, on a loaded machine, costs no wait.)
        assert!(
            polls > 1,
            "{comp:?}: the write completed after {polls} polls; its chunks were compressed on the task"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_streams_racing_on_one_handle_and_on_two_each_land_whole() {
    for comp in compressions() {
        let (one, two) = two_handles();
        let values: Vec<Bytes> = (0..4).map(|i| payload(2, 10 + i)).collect();
        let writes = values.iter().enumerate().map(|(i, v)| {
            let cache = if i % 2 == 0 { one.clone() } else { two.clone() };
            let v = v.clone();
            async move {
                cache
                    .set_stream("k", chunked(&v), SetOptions::new().compression(comp))
                    .await
            }
        });
        for r in futures::future::join_all(writes).await {
            r.expect("set_stream");
        }
        let seen = bytes_of(&one, "k").await.expect("an entry");
        assert!(
            values.contains(&seen),
            "{comp:?}: the value read is none of the values written whole"
        );
        assert_eq!(bytes_of(&two, "k").await.as_ref(), Some(&seen));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_set_while_a_stream_is_compressed_is_replaced_whole() {
    for comp in compressions() {
        let (cache, other) = two_handles();
        let ours = payload(3, 20);
        let theirs = Bytes::from_static(b"set by another writer meanwhile");
        let parts: Vec<Bytes> = ours.chunks(CHUNK).map(|c| ours.slice_ref(c)).collect();
        // The other writer's set lands after the first chunk was handed
        // over (and compressed off the task) and before the second.
        let meddler = other.clone();
        let theirs2 = theirs.clone();
        let stream = futures::stream::iter(parts.into_iter().enumerate())
            .then(move |(i, c)| {
                let meddler = meddler.clone();
                let theirs = theirs2.clone();
                async move {
                    if i == 1 {
                        meddler
                            .set("k", Value::Bytes(theirs), SetOptions::new())
                            .await
                            .expect("the other writer's set");
                    }
                    Ok(c)
                }
            })
            .boxed();
        cache
            .set_stream("k", stream, SetOptions::new().compression(comp))
            .await
            .expect("set_stream");
        assert_eq!(
            bytes_of(&other, "k").await,
            Some(ours.clone()),
            "{comp:?}: the write that completed last is read, whole"
        );
        assert_eq!(bytes_of(&cache, "k").await, Some(ours));
    }
}
