//! The errors of steps.

/// What can go wrong when a step is run or explained.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A part of the step could not be serialized or read. The step is not
    /// run and nothing is read or stored: a part that cannot be digested
    /// never falls back to a constant.
    #[error("step {step:?}: part {part:?} cannot be digested: {reason}")]
    Part {
        /// The step's name.
        step: String,
        /// The part's name (`param.rows`, `input.raw`, `env.HOME`, …).
        part: String,
        /// What failed.
        reason: String,
    },

    /// The step's name breaks the naming rules (see [`crate::Step::new`]).
    #[error("invalid step name {name:?}: {reason}")]
    InvalidName {
        /// The name, as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// The cache failed; [`etl_cache_core::Error::Init`] carries the
    /// computation's own error.
    #[error(transparent)]
    Cache(#[from] etl_cache_core::Error),
}

/// The result type of steps.
pub type Result<T, E = Error> = std::result::Result<T, E>;
