//! The one Tokio runtime of the module.

use std::future::Future;
use std::sync::OnceLock;

use pyo3::Python;
use tokio::runtime::Runtime;

/// The runtime every cache of the process shares. Built on first use; two
/// worker threads carry the I/O that futures hand off (uploads, blocking
/// file work), while the calling Python thread drives its own operation.
pub(crate) fn get() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("etl-cache")
            .enable_all()
            .build()
            .expect("cannot start the Tokio runtime of etl_cache")
    })
}

/// Runs `fut` to completion with the GIL released.
pub(crate) fn block_on<F>(py: Python<'_>, fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    py.detach(|| get().block_on(fut))
}
