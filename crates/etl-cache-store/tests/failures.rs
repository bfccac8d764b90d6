//! A cache that fails, or holds corrupt blocks, never breaks a read; two
//! stores on one cache directory read the same object at once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use common::{MIB, bytes, holding, mib_store};
use etl_cache_core::testing::{Hooks, Op};
use etl_cache_core::{Cache, DynCache, Error, MemoryCache, Result};
use etl_cache_store::{CachedStore, Revalidate};
use object_store::ObjectStoreExt;

/// A MemoryCache that fails every call while `broken` is set.
#[derive(Debug, Default)]
struct Flaky {
    inner: MemoryCache,
    broken: AtomicBool,
}

/// The calls on a key fail while `broken` is set.
#[async_trait::async_trait]
impl Hooks for Flaky {
    fn inner(&self) -> &DynCache {
        &self.inner
    }

    async fn before(&self, _op: Op, _key: &str) -> Result<()> {
        if self.broken.load(SeqCst) {
            return Err(Error::Io {
                key: String::new(),
                path: "/cache".into(),
                op: "write",
                source: std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full"),
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Cache for Flaky {
    etl_cache_core::forward_cache! {
        set, set_stream, get, get_stream, head, delete, list, purge_expired, clear, stats
    }
}

#[tokio::test]
async fn a_failing_cache_never_breaks_a_read() {
    let data = bytes(2 * MIB + 9, 20);
    let (inner, bare, hooks, p) = holding("f", &data).await;
    let cache = Arc::new(Flaky::default());
    let store = mib_store(inner, cache.clone(), Revalidate::Never).await;
    // Broken from the first read: served from the inner store, every time.
    cache.broken.store(true, SeqCst);
    for _ in 0..2 {
        assert_eq!(store.get(&p).await.unwrap().bytes().await.unwrap(), data);
        assert_eq!(
            store.get_range(&p, 5..MIB as u64 + 5).await.unwrap(),
            data.slice(5..MIB + 5)
        );
        assert_eq!(store.head(&p).await.unwrap().size, data.len() as u64);
    }
    assert!(store.stats().cache_errors > 0);
    // Mended: blocks are kept again, and served.
    cache.broken.store(false, SeqCst);
    store.get(&p).await.unwrap().bytes().await.unwrap();
    let gets = hooks.gets.load(SeqCst);
    assert_eq!(store.get(&p).await.unwrap().bytes().await.unwrap(), data);
    assert_eq!(hooks.gets.load(SeqCst), gets);
    // Broken again while blocks are kept: still the right bytes.
    cache.broken.store(true, SeqCst);
    assert_eq!(store.get(&p).await.unwrap().bytes().await.unwrap(), data);
    // Writes through the store still reach the inner store.
    store.put(&p, bytes(10, 1).into()).await.unwrap();
    assert_eq!(
        bare.get(&p).await.unwrap().bytes().await.unwrap(),
        bytes(10, 1)
    );
}

#[tokio::test]
async fn a_corrupt_block_on_disk_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(3 * MIB, 21);
    let (inner, _, hooks, p) = holding("rot", &data).await;
    let store = CachedStore::builder(inner)
        .dir(dir.path())
        .block_size(MIB as u64)
        .revalidate(Revalidate::Never)
        .build()
        .await
        .unwrap();
    assert_eq!(store.get(&p).await.unwrap().bytes().await.unwrap(), data);
    store.settle().await;
    // Flip a byte in the middle of every entry file of a block (over 1 MiB).
    let mut flipped = 0;
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let md = e.metadata().unwrap();
            if md.is_dir() {
                stack.push(e.path());
            } else if md.len() > MIB as u64 {
                let mut b = std::fs::read(e.path()).unwrap();
                let mid = b.len() / 2;
                b[mid] ^= 0x40;
                std::fs::write(e.path(), b).unwrap();
                flipped += 1;
            }
        }
    }
    assert_eq!(flipped, 3);
    let gets = hooks.gets.load(SeqCst);
    assert_eq!(store.get(&p).await.unwrap().bytes().await.unwrap(), data);
    assert!(
        hooks.gets.load(SeqCst) > gets,
        "the blocks were read again from the store"
    );
    assert!(store.stats().cache_errors >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_directory_read_the_same_object_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(4 * MIB + 1, 22);
    let (inner, _, _, p) = holding("shared", &data).await;
    let open = || async {
        Arc::new(
            CachedStore::builder(inner.clone())
                .dir(dir.path())
                .block_size(MIB as u64)
                .build()
                .await
                .unwrap(),
        )
    };
    let (a, b) = (open().await, open().await);
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let start = (i * 300_007) % (4 * MIB as u64);
            (start, s.get_range(&p, start..start + MIB as u64 / 2).await)
        }));
    }
    for t in tasks {
        let (start, got) = t.await.unwrap();
        let got = got.unwrap();
        let end = (start as usize + MIB / 2).min(data.len());
        assert_eq!(got, data.slice(start as usize..end));
    }
    // And whole reads, both warm now.
    assert_eq!(a.get(&p).await.unwrap().bytes().await.unwrap(), data);
    assert_eq!(b.get(&p).await.unwrap().bytes().await.unwrap(), data);
}
