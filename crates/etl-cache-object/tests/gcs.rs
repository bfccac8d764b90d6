//! The shared contract suite on real Google Cloud Storage, when credentials
//! are given. No local emulator here accepts object_store's GCS writes, so
//! without them these tests say why and return.
//!
//! ```text
//! ETL_CACHE_GCS_URL=gs://my-bucket/etl-cache-tests      # required
//! GOOGLE_SERVICE_ACCOUNT=/path/to/key.json               # or any GOOGLE_* object_store reads
//! cargo test -p etl-cache-object --features gcp --test gcs
//! ```
//!
//! Each test works under its own prefix below the URL's and clears it after.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use etl_cache_core::testing::Harness;
use etl_cache_core::{Cache, ManualClock};
use etl_cache_object::ObjectCache;

/// Clears the test's prefix when the test ends.
struct Cleanup(ObjectCache);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let cache = self.0.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(cache.clear())
        })
        .join();
    }
}

async fn make(clock: Arc<ManualClock>) -> Option<Harness> {
    let Ok(url) = std::env::var("ETL_CACHE_GCS_URL") else {
        eprintln!(
            "skipping: set ETL_CACHE_GCS_URL=gs://bucket/prefix and GOOGLE_* credentials to run the suite on GCS"
        );
        return None;
    };
    static N: AtomicU64 = AtomicU64::new(0);
    let probe = ObjectCache::from_url(&url).unwrap();
    let prefix = format!(
        "{}/run-{}-{}",
        probe.prefix(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let cache = ObjectCache::builder()
        .url(url)
        .prefix(prefix.trim_start_matches('/'))
        .clock(clock.clone())
        .build()
        .unwrap();
    Some(
        Harness::new(Arc::new(cache.clone()), clock, Cleanup(cache))
            .keeps_expired_until_purge()
            .dropped_writes_may_land_later(),
    )
}

server_contract_tests!(make);
