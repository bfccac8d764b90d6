//! ObjectCache on a real S3 server: moto's, on a free port of 127.0.0.1.
//! The shared contract suite, the folder structure of keys, multipart
//! streams with compression, and the listing of a bucket.

mod common;
mod foreign;
#[path = "support/s3.rs"]
mod s3_support;
#[macro_use]
mod server_suite;

use std::sync::Arc;

use bytes::Bytes;
use etl_cache_core::testing::{Harness, sample_bytes};
use etl_cache_core::{Cache, CacheExt, Compression, ManualClock, SetOptions};
use etl_cache_object::ObjectCache;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;

/// A cache on a fresh bucket of the shared moto server.
fn cache_on_moto(
    tag: &str,
    clock: Option<Arc<ManualClock>>,
) -> Option<(ObjectCache, Arc<common::Server>)> {
    let (moto, bucket) = common::moto_bucket(tag)?;
    let mut b = s3_support::s3_cache(&moto, &bucket, "etl/cache");
    if let Some(c) = clock {
        b = b.clock(c);
    }
    Some((b.build().unwrap(), moto))
}

server_suite!(cache_on_moto);
