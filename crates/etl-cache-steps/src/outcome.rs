//! What a run takes and gives: [`RunOptions`], [`Ran`] and its
//! [`Outcome`], and [`RunReport`], one kept run as `explain_runs` reports it.

use std::sync::Arc;
use std::time::Duration;

use etl_cache_core::backend::DEFAULT_LOCK_TIMEOUT;
use etl_cache_core::{Clock, SetOptions, SystemClock};

use crate::explain::Explanation;
use crate::manifest::{DEFAULT_HISTORY, Manifest};

/// How a step runs: the options of the write, whether to compute again
/// whatever is cached, how many manifests the step name keeps.
#[derive(Debug, Clone)]
#[must_use]
pub struct RunOptions {
    pub(crate) set: SetOptions,
    pub(crate) refresh: bool,
    pub(crate) history: usize,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) lock_timeout: Duration,
}

/// The system clock, shared: options made for every run do not allocate.
fn system_clock() -> Arc<dyn Clock> {
    static SYSTEM: std::sync::LazyLock<Arc<dyn Clock>> =
        std::sync::LazyLock::new(|| Arc::new(SystemClock));
    SYSTEM.clone()
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            set: SetOptions::new(),
            refresh: false,
            history: DEFAULT_HISTORY,
            clock: system_clock(),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }
}

impl RunOptions {
    /// Default options: no TTL, no compression, no refresh, a history of
    /// [`DEFAULT_HISTORY`] manifests.
    pub fn new() -> Self {
        Self::default()
    }

    /// The options of the result's write (TTL, compression, …).
    pub fn set_options(self, set: SetOptions) -> Self {
        RunOptions { set, ..self }
    }

    /// Computes again and replaces the cached result, whatever is there.
    pub fn refresh(self, on: bool) -> Self {
        RunOptions {
            refresh: on,
            ..self
        }
    }

    /// How many manifests the step name keeps (at least 1).
    pub fn history(self, runs: usize) -> Self {
        RunOptions {
            history: runs.max(1),
            ..self
        }
    }

    /// The clock that decides whether a vanished result had expired; give
    /// the cache's own clock in tests that move time.
    pub fn clock(self, clock: Arc<dyn Clock>) -> Self {
        RunOptions { clock, ..self }
    }

    /// How long [`StepExt::run_stream`](crate::StepExt::run_stream) waits for another task of this
    /// process computing the same step before it fails with
    /// [`etl_cache_core::Error::LockTimeout`]; [`DEFAULT_LOCK_TIMEOUT`]
    /// unless set. ([`StepExt::run`](crate::StepExt::run) waits through the backend's single
    /// flight, with the timeout of the cache handle.)
    pub fn lock_timeout(self, timeout: Duration) -> Self {
        RunOptions {
            lock_timeout: timeout,
            ..self
        }
    }
}

/// One kept run of a step name, as [`StepExt::explain_runs`](crate::StepExt::explain_runs) reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct RunReport {
    /// The run's manifest.
    pub manifest: Manifest,
    /// The state of its result now.
    pub state: Explanation,
    /// The parts that differ from the run before it (empty for the first).
    pub changed: Vec<crate::PartChange>,
}

/// What a run returns: the result and how it was obtained.
#[derive(Debug)]
#[non_exhaustive]
pub struct Ran<T> {
    /// The result.
    pub value: T,
    /// A hit or a computation, with its figures.
    pub outcome: Outcome,
}

/// How a run obtained its result.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// Served from the cache.
    Hit {
        /// How long the run took, digesting the parts included.
        took: Duration,
        /// The stored compute time minus `took`, in seconds (0 without a
        /// manifest; negative when the hit was slower than computing).
        saved_seconds: f64,
    },
    /// Computed, and stored.
    Computed {
        /// How long the computation took.
        took: Duration,
        /// Why it was not served from the cache.
        why: Explanation,
    },
}

impl Outcome {
    /// Whether the result came from the cache.
    pub fn is_hit(&self) -> bool {
        matches!(self, Outcome::Hit { .. })
    }
}
