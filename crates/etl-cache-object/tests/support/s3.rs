//! An `ObjectCache` on moto, for this crate's tests only: `common/mod.rs`
//! is also included by the tests of crates that do not depend on this one
//! (the command line's, the DataFusion example's).
//!
//! Include it after `common`: `#[path = "support/s3.rs"] mod s3_support;`.

use crate::common::{Server, s3_options};

/// A builder of a cache under `prefix` in `bucket` on moto.
pub fn s3_cache(moto: &Server, bucket: &str, prefix: &str) -> etl_cache_object::ObjectCacheBuilder {
    etl_cache_object::ObjectCache::builder()
        .url(format!("s3://{bucket}/{prefix}"))
        .options(s3_options(moto))
}
