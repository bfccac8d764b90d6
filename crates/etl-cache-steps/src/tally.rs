//! Hits, misses, bytes served and time saved, per step name, kept in the
//! cache so that they add up across processes.
//!
//! Each process keeps its own tally entry per step name,
//! `step-stats/{name}/{host}.{pid}`, and only that process writes it (its
//! tasks one at a time): no two writers ever race on one tally, so no count
//! is lost. [`crate::StepExt::step_stats`] adds the entries up; it lists the
//! cache, which on a directory of many entries reads every header. A tally
//! is an entry like any other: a cache with capacity limits may evict it.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use etl_cache_core::backend::KeyedMutex;
use etl_cache_core::{Cache, CacheExt, SetOptions};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::manifest::host;

/// The counters of one step name (or of all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StepStats {
    /// Runs served from the cache.
    pub hits: u64,
    /// Runs that computed their result.
    pub misses: u64,
    /// Logical bytes of the results served by hits.
    pub bytes_served: u64,
    /// Seconds spent computing, over all misses.
    pub compute_seconds: f64,
    /// Seconds saved: over all hits, the stored compute time minus the time
    /// the hit itself took (negative when a hit is slower than computing).
    pub saved_seconds: f64,
}

impl StepStats {
    fn add(&mut self, o: &StepStats) {
        self.hits += o.hits;
        self.misses += o.misses;
        self.bytes_served += o.bytes_served;
        self.compute_seconds += o.compute_seconds;
        self.saved_seconds += o.saved_seconds;
    }

    /// The time saved, as a duration (zero when hits cost more than they saved).
    pub fn saved(&self) -> Duration {
        Duration::try_from_secs_f64(self.saved_seconds.max(0.0)).unwrap_or_default()
    }
}

/// The counters of every step name found, and their sum.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StepStatsReport {
    /// Per step name.
    pub by_step: BTreeMap<String, StepStats>,
    /// All step names together.
    pub total: StepStats,
}

const PREFIX: &str = "step-stats/";

fn tally_key(name: &str) -> String {
    format!("{PREFIX}{name}/{}.{}", host(), std::process::id())
}

/// Adds `delta` to this process's tally of `name`.
pub(crate) async fn record(
    cache: &(impl Cache + ?Sized),
    name: &str,
    delta: StepStats,
) -> etl_cache_core::Result<()> {
    // One writer per tally entry in this process; other processes have
    // entries of their own.
    static LOCKS: OnceLock<KeyedMutex> = OnceLock::new();
    let key = tally_key(name);
    let _guard = LOCKS
        .get_or_init(KeyedMutex::new)
        .lock(&key, Duration::from_secs(30))
        .await?;
    let mut t: StepStats = match cache.get_json(&key).await {
        Ok(t) => t.unwrap_or_default(),
        // A tally that cannot be read starts again rather than stopping runs.
        Err(etl_cache_core::Error::Corrupt { .. } | etl_cache_core::Error::Json { .. }) => {
            StepStats::default()
        }
        Err(e) => return Err(e),
    };
    t.add(&delta);
    cache.set_json(&key, &t, SetOptions::new()).await?;
    Ok(())
}

/// Adds up the tallies of `name` (every step name when `None`).
pub(crate) async fn report(
    cache: &(impl Cache + ?Sized),
    name: Option<&str>,
) -> etl_cache_core::Result<StepStatsReport> {
    let prefix = match name {
        Some(n) => format!("{PREFIX}{n}/"),
        None => PREFIX.to_owned(),
    };
    let keys: Vec<String> = cache
        .list(Some(&prefix))
        .map_ok(|m| m.key)
        .try_collect()
        .await?;
    let mut out = StepStatsReport::default();
    for key in keys {
        // `{name}/{host}.{pid}`: the name may hold slashes, the writer not.
        let Some((step, _writer)) = key[PREFIX.len()..].rsplit_once('/') else {
            continue;
        };
        if name.is_some_and(|n| n != step) {
            continue;
        }
        let t: StepStats = match cache.get_json(&key).await {
            Ok(Some(t)) => t,
            Ok(None) | Err(etl_cache_core::Error::Corrupt { .. }) => continue,
            Err(etl_cache_core::Error::Json { .. }) => continue,
            Err(e) => return Err(e),
        };
        out.by_step.entry(step.to_owned()).or_default().add(&t);
        out.total.add(&t);
    }
    Ok(out)
}
