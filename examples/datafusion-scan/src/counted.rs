//! `Counted`: an object store that counts what is asked of the store it
//! wraps (gets, heads, lists, and the body bytes of the gets) and passes
//! every call on.
//!
//! This example and the `store` section of the bench suite both include
//! it, each after `forward_object_store!` (which it uses) and with the
//! `object_store` crate in scope in the including module.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use async_trait::async_trait;
use futures::stream::BoxStream;

use super::object_store;
use object_store::path::Path;
use object_store::{GetOptions, GetResult, ListResult, ObjectMeta, ObjectStore};

/// What has been asked of the wrapped store so far.
#[derive(Debug, Default)]
pub struct Counts {
    /// Get requests (with a body).
    pub gets: AtomicU64,
    /// Head requests (gets without a body).
    pub heads: AtomicU64,
    /// List requests.
    pub lists: AtomicU64,
    /// Bytes of the bodies asked for (the ranges the store answered).
    pub bytes: AtomicU64,
}

/// Counts the requests and body bytes asked of the store it wraps.
///
/// `get_ranges` is left to the trait's default, which cuts the ranges into
/// coalesced `get_range` calls, as the S3, GCS and Azure stores do: each is
/// one GET here, counted. (`ThrottledStore` and `InMemory` answer a whole
/// `get_ranges` with one wait, which no cloud store does.)
#[derive(Debug)]
pub struct Counted {
    /// The store the calls go on to.
    pub inner: Arc<dyn ObjectStore>,
    /// Where the calls are counted.
    pub counts: Arc<Counts>,
}

impl std::fmt::Display for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

#[async_trait]
impl ObjectStore for Counted {
    // Writes, deletes and copies go on as they are, uncounted.
    forward_object_store!(inner; put_opts, put_multipart_opts, delete_stream, copy_opts);

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let head = options.head;
        if head {
            self.counts.heads.fetch_add(1, Relaxed);
        } else {
            self.counts.gets.fetch_add(1, Relaxed);
        }
        let got = self.inner.get_opts(location, options).await?;
        if !head {
            self.counts
                .bytes
                .fetch_add(got.range.end - got.range.start, Relaxed);
        }
        Ok(got)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.counts.lists.fetch_add(1, Relaxed);
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.counts.lists.fetch_add(1, Relaxed);
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.counts.lists.fetch_add(1, Relaxed);
        self.inner.list_with_delimiter(prefix).await
    }
}
