//! `OnGet`: a wrapper store for tests that change only how reads are
//! answered. Every call but `get_opts` goes straight to the wrapped store;
//! `get_opts` goes to the test's [`GetHook`], which holds the state the
//! test counts or sets and is reached through the wrapper (`Deref`).
//!
//! Include it after `forward.rs`, whose macro it uses: `#[path =
//! "<relative path>/on_get.rs"] mod on_get;`.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use async_trait::async_trait;
use object_store::path::Path;
use object_store::{GetOptions, GetResult, ObjectStore};

/// How a test's wrapper store answers a read.
#[async_trait]
pub trait GetHook: fmt::Debug + Send + Sync + 'static {
    /// Answers `get_opts(location, options)`, asking `inner` (the wrapped
    /// store) as the test needs.
    async fn get_opts(
        &self,
        inner: &dyn ObjectStore,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult>;
}

/// A store that hands every call on to `inner` but `get_opts`, which its
/// hook answers; it derefs to the hook.
#[derive(Debug)]
pub struct OnGet<H> {
    inner: Arc<dyn ObjectStore>,
    hook: H,
}

impl<H: GetHook> OnGet<H> {
    /// `inner`, with its reads answered by `hook`.
    pub fn new(inner: Arc<dyn ObjectStore>, hook: H) -> Arc<OnGet<H>> {
        Arc::new(OnGet { inner, hook })
    }
}

impl<H> Deref for OnGet<H> {
    type Target = H;

    fn deref(&self) -> &H {
        &self.hook
    }
}

impl<H> fmt::Display for OnGet<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OnGet({})", self.inner)
    }
}

#[async_trait]
impl<H: GetHook> ObjectStore for OnGet<H> {
    forward_object_store!(
        inner;
        put_opts, put_multipart_opts, delete_stream, list, list_with_delimiter, copy_opts
    );

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.hook.get_opts(&*self.inner, location, options).await
    }
}
