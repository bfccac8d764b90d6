//! The performance suite of etl-cache lives in `benches/`; this library is
//! empty. `cargo bench -p etl-cache-bench --bench suite` runs it (see
//! `docs/performance.md`).
#![forbid(unsafe_code)]
