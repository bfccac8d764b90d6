//! The shared contract suite on ObjectCache over the stores every build has:
//! object_store's InMemory and LocalFileSystem. Small parts make the
//! suite's streams go through multipart uploads.

use std::sync::Arc;

use etl_cache_core::ManualClock;
use etl_cache_core::testing::Harness;
use etl_cache_object::{ObjectCache, ObjectCacheBuilder};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;

/// A second handle on the entries of `cache`: another ObjectCache built on
/// the same store and prefix, as another process would build it.
fn second(cache: &ObjectCache, clock: &Arc<ManualClock>) -> Arc<ObjectCache> {
    Arc::new(
        ObjectCache::builder()
            .store(cache.store().clone())
            .prefix(cache.prefix())
            .clock(clock.clone())
            .part_size(64 * 1024)
            .build()
            .unwrap(),
    )
}

/// The suite's harness on the cache `builder` makes with `clock`, with a
/// second handle on its entries and `keep` held alive as long as the harness.
fn harness(
    builder: ObjectCacheBuilder,
    clock: Arc<ManualClock>,
    keep: impl std::any::Any + Send + Sync,
) -> Harness {
    let cache = builder.clock(clock.clone()).build().unwrap();
    let second = second(&cache, &clock);
    Harness::new(Arc::new(cache), clock, keep)
        .keeps_expired_until_purge()
        .with_second_handle(second)
}

mod memory {
    use super::*;

    async fn make(clock: Arc<ManualClock>) -> Harness {
        let builder = ObjectCache::builder()
            .store(Arc::new(InMemory::new()))
            .prefix("etl/cache");
        harness(builder, clock, ())
    }

    etl_cache_core::contract_tests!(make);
}

mod memory_multipart {
    use super::*;

    async fn make(clock: Arc<ManualClock>) -> Harness {
        let builder = ObjectCache::builder()
            .store(Arc::new(InMemory::new()))
            .part_size(64 * 1024)
            .max_concurrency(3);
        harness(builder, clock, ())
    }

    etl_cache_core::contract_tests!(make);
}

mod local {
    use super::*;

    async fn make(clock: Arc<ManualClock>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let builder = ObjectCache::builder()
            .store(Arc::new(store))
            .prefix("cache")
            .part_size(64 * 1024);
        harness(builder, clock, dir)
    }

    etl_cache_core::contract_tests!(make);
}

mod local_dir {
    use super::*;

    async fn make(clock: Arc<ManualClock>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let builder = ObjectCache::builder().local_dir(dir.path().join("cache"));
        harness(builder, clock, dir)
    }

    etl_cache_core::contract_tests!(make);
}
