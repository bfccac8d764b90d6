//! The shared contract suite on ObjectCache over the stores every build has:
//! object_store's InMemory and LocalFileSystem. Small parts make the
//! suite's streams go through multipart uploads.

use std::sync::Arc;

use etl_cache_core::ManualClock;
use etl_cache_core::testing::Harness;
use etl_cache_object::ObjectCache;
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

mod memory {
    use super::*;

    async fn make(clock: Arc<ManualClock>) -> Harness {
        let cache = ObjectCache::builder()
            .store(Arc::new(InMemory::new()))
            .prefix("etl/cache")
            .clock(clock.clone())
            .build()
            .unwrap();
        {
            let second = second(&cache, &clock);
            Harness::new(Arc::new(cache), clock, ())
                .keeps_expired_until_purge()
                .with_second_handle(second)
        }
    }

    etl_cache_core::contract_tests!(make);
}

mod memory_multipart {
    use super::*;

    async fn make(clock: Arc<ManualClock>) -> Harness {
        let cache = ObjectCache::builder()
            .store(Arc::new(InMemory::new()))
            .clock(clock.clone())
            .part_size(64 * 1024)
            .max_concurrency(3)
            .build()
            .unwrap();
        {
            let second = second(&cache, &clock);
            Harness::new(Arc::new(cache), clock, ())
                .keeps_expired_until_purge()
                .with_second_handle(second)
        }
    }

    etl_cache_core::contract_tests!(make);
}

mod local {
    use super::*;

    async fn make(clock: Arc<ManualClock>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let cache = ObjectCache::builder()
            .store(Arc::new(store))
            .prefix("cache")
            .clock(clock.clone())
            .part_size(64 * 1024)
            .build()
            .unwrap();
        {
            let second = second(&cache, &clock);
            Harness::new(Arc::new(cache), clock, dir)
                .keeps_expired_until_purge()
                .with_second_handle(second)
        }
    }

    etl_cache_core::contract_tests!(make);
}

mod local_dir {
    use super::*;

    async fn make(clock: Arc<ManualClock>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let cache = ObjectCache::builder()
            .local_dir(dir.path().join("cache"))
            .clock(clock.clone())
            .build()
            .unwrap();
        {
            let second = second(&cache, &clock);
            Harness::new(Arc::new(cache), clock, dir)
                .keeps_expired_until_purge()
                .with_second_handle(second)
        }
    }

    etl_cache_core::contract_tests!(make);
}
