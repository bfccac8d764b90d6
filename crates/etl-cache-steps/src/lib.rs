//! Steps: keys made from what a result depends on.
//!
//! A [`Step`] has a name and named parts: the version of its code, its
//! parameters (any `serde` value, canonically serialized), its inputs
//! (bytes, files, object-store objects with their e-tag) and chosen
//! environment variables. Its key is a digest of all of them, so a change in
//! any part is a new key, never a stale result. [`StepExt::run`] returns the
//! cached result or computes it once; a [`Manifest`] of the parts, the
//! compute time, and the host and process is stored with each result, and
//! the last few of each step name are kept, so that [`StepExt::explain`]
//! can say why a step runs again, and each hit adds the compute time it
//! saved to [`StepExt::step_stats`].
//!
//! Everything lives in the cache itself, under reserved keys: it works on
//! every backend and across processes. See [`Step`] for the key layout.
//!
//! You probably want the `etl-cache` facade (feature `steps`), which
//! re-exports this crate as `etl_cache::steps`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> etl_cache_steps::Result<()> {
//! use etl_cache_core::{MemoryCache, Value};
//! use etl_cache_steps::{Explanation, RunOptions, Step, StepExt};
//!
//! let cache = MemoryCache::new();
//! let transform = |rows: u32| Step::new("transform").code_version("v2").param("rows", &rows);
//! cache
//!     .run(&transform(100), RunOptions::new(), || async {
//!         Ok::<_, std::io::Error>(Value::from("100 rows"))
//!     })
//!     .await?;
//! match cache.explain(&transform(200)).await? {
//!     Explanation::PartsChanged { changes, .. } => {
//!         assert_eq!(changes[0].part, "param.rows");
//!         assert_eq!((changes[0].old.as_deref(), changes[0].new.as_deref()), (Some("100"), Some("200")));
//!     }
//!     other => panic!("{other}"),
//! }
//! # Ok(()) }
//! ```
// On docs.rs, items that a feature gates carry a badge naming it.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod canonical;
mod error;
mod explain;
mod manifest;
mod outcome;
mod run;
mod step;
mod tally;

pub use crate::error::{Error, Result};
pub use crate::explain::{Explanation, PartChange};
pub use crate::manifest::{DEFAULT_HISTORY, MANIFEST_VERSION, Manifest};
pub use crate::outcome::{Outcome, Ran, RunOptions, RunReport};
pub use crate::run::StepExt;
pub use crate::step::{MAX_NAME_LEN, PREVIEW_LEN, PartRecord, Resolved, Step};
pub use crate::tally::{StepStats, StepStatsReport};
