//! The Tokio runtime of the module: one per process.

use std::future::Future;
use std::sync::Mutex;

use pyo3::Python;
use tokio::runtime::Runtime;

/// The runtime every cache of the process shares, built on first use. Two
/// worker threads carry the I/O that futures hand off (uploads, blocking
/// file work), while the calling Python thread drives its own operation.
///
/// A forked child (multiprocessing, Celery and Airflow workers) inherits the
/// parent's runtime without its threads, where any task would wait forever:
/// the child builds its own on first use. The parent's is leaked in the
/// child, as its threads cannot be joined there.
pub(crate) fn get() -> &'static Runtime {
    static CURRENT: Mutex<Option<(u32, &'static Runtime)>> = Mutex::new(None);
    let pid = std::process::id();
    let mut current = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
    match *current {
        Some((owner, rt)) if owner == pid => rt,
        _ => {
            let rt: &'static Runtime = Box::leak(Box::new(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("etl-cache")
                    .enable_all()
                    .build()
                    .expect("cannot start the Tokio runtime of etl_cache"),
            ));
            *current = Some((pid, rt));
            rt
        }
    }
}

/// Runs `fut` to completion with the GIL released.
pub(crate) fn block_on<F>(py: Python<'_>, fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    py.detach(|| get().block_on(fut))
}
