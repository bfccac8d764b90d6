//! The `etl_cache._native` Python module: the seed's `LocalDiskCache` and
//! `S3Cache` on the etl-cache engine.
//!
//! Every blocking call releases the GIL and runs on one Tokio runtime shared
//! by the whole module (`runtime::get`). Values keep their type: `str`
//! comes back as `str`, `bytes` as `bytes`, `dict`/`list` as `dict`/`list`.

// PyO3's macros generate the C API glue without needing unsafe code here.
#![forbid(unsafe_code)]

mod aio;
mod arrow;
mod cache;
mod convert;
mod errors;
mod runtime;
mod stream;

use pyo3::prelude::*;

/// The module: cache classes, the stream iterator and the exceptions.
#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // asyncio methods run on the same runtime as the blocking ones; a second
    // initialisation (a re-imported module) keeps the first.
    let _ = pyo3_async_runtimes::tokio::init_with_runtime(runtime::get());
    m.add_class::<cache::BaseCache>()?;
    m.add_class::<cache::LocalDiskCache>()?;
    m.add_class::<cache::S3Cache>()?;
    m.add_class::<stream::ChunkIterator>()?;
    m.add_function(wrap_pyfunction!(cache::open, m)?)?;
    errors::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
