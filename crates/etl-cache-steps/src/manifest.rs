//! The manifest stored with each result, and the bounded history of the
//! last manifests of each step name.
//!
//! Both are JSON values in the cache itself, under reserved keys (see the
//! key layout in [`crate::Step`]'s module), so they work on every backend
//! and every process sharing the cache sees them.
//!
//! # Races on the history
//!
//! The history of a step name is one entry, read, merged and written back:
//! the `Cache` contract has no compare-and-swap. Two writers that both read
//! it before either wrote it would each write a version without the
//! other's run. A writer therefore re-reads the history after writing it and,
//! when its run is missing, merges again and rewrites it, once. What is left:
//! a writer whose check ran before the other's write can still lose its
//! history line to it. Nothing else is lost: each result's own manifest is
//! an entry of its own (`step-manifest/{name}/{digest}`), written once by the
//! run that computed it, so the compute time of a hit and the explanation
//! of a miss of that exact digest never depend on the history.

use std::time::{Duration, SystemTime};

use etl_cache_core::{Cache, CacheExt, SetOptions};
use serde::{Deserialize, Serialize};

use crate::step::{PartRecord, Resolved, history_key, manifest_key};

/// The version of the manifest and history layout written here. A manifest
/// with another version is not compared part by part: the step's miss is
/// reported as [`crate::Explanation::IncompatibleFormat`].
pub const MANIFEST_VERSION: u32 = 1;

/// How many manifests each step name keeps when the caller does not say.
pub const DEFAULT_HISTORY: usize = 8;

/// What a result was computed from, how long it took, when and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Manifest {
    /// [`MANIFEST_VERSION`] of the writer.
    pub format: u32,
    /// The entry format version of the writer's backends
    /// ([`etl_cache_core::backend::format::FORMAT_VERSION`]).
    pub entry_format: u8,
    /// The step's name.
    pub step: String,
    /// The digest of all parts: the last segment of the result's key.
    pub digest: String,
    /// Each part: name, digest, preview.
    pub parts: Vec<PartRecord>,
    /// How long the computation took, in seconds.
    pub compute_seconds: f64,
    /// When the result was stored, in seconds since the Unix epoch.
    pub computed_at: f64,
    /// When the result expires, in seconds since the Unix epoch, if it has a TTL.
    pub expires_at: Option<f64>,
    /// The host that computed it.
    pub host: String,
    /// The process that computed it.
    pub pid: u32,
    /// Names this run among all runs: host, process, time and a counter.
    pub run_id: String,
    /// The kind of the result: `text`, `bytes`, `json`, `arrow` or `stream`.
    pub kind: String,
    /// The logical length of the result, in bytes.
    pub bytes: u64,
}

impl Manifest {
    pub(crate) fn new(
        r: &Resolved,
        took: Duration,
        at: SystemTime,
        expires: Option<SystemTime>,
        kind: &str,
        bytes: u64,
    ) -> Manifest {
        Manifest {
            format: MANIFEST_VERSION,
            entry_format: etl_cache_core::backend::format::FORMAT_VERSION,
            step: r.name.clone(),
            digest: r.digest.clone(),
            parts: r.parts.clone(),
            compute_seconds: took.as_secs_f64(),
            computed_at: crate::step::unix_seconds(at),
            expires_at: expires.map(crate::step::unix_seconds),
            host: host().to_owned(),
            pid: std::process::id(),
            run_id: run_id(at),
            kind: kind.to_owned(),
            bytes,
        }
    }

    /// When the result was stored.
    pub fn computed_time(&self) -> SystemTime {
        from_unix(self.computed_at)
    }

    /// When the result expires, if it has a TTL.
    pub fn expiry(&self) -> Option<SystemTime> {
        self.expires_at.map(from_unix)
    }

    /// How long the computation took.
    pub fn compute_time(&self) -> Duration {
        Duration::try_from_secs_f64(self.compute_seconds).unwrap_or_default()
    }
}

/// A name no other run shares: floats do not survive a JSON round trip
/// exactly, so runs are told apart by this, not by their time.
fn run_id(at: SystemTime) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}.{}.{nanos}.{n}", host(), std::process::id())
}

pub(crate) fn from_unix(secs: f64) -> SystemTime {
    // A manifest is data anyone with write access may have changed: a time
    // out of range is the epoch, never a panic.
    let d = Duration::try_from_secs_f64(secs.abs()).unwrap_or_default();
    let t = if secs >= 0.0 {
        SystemTime::UNIX_EPOCH.checked_add(d)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(d)
    };
    t.unwrap_or(SystemTime::UNIX_EPOCH)
}

/// This host's name: `HOSTNAME`, else the kernel's, else `unknown`.
pub(crate) fn host() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .filter(|h| !h.is_empty() && !h.contains('/'))
            .unwrap_or_else(|| "unknown".to_owned())
    })
}

/// A stored manifest or history as read: readable, or of a format this
/// build does not know.
#[derive(Debug, Clone)]
pub(crate) enum Stored<T> {
    Known(T),
    Foreign(u32),
}

fn parse<T: serde::de::DeserializeOwned>(json: serde_json::Value) -> Option<Stored<T>> {
    let format = json.get("format").and_then(serde_json::Value::as_u64)?;
    if format != u64::from(MANIFEST_VERSION) {
        return Some(Stored::Foreign(u32::try_from(format).unwrap_or(u32::MAX)));
    }
    serde_json::from_value(json).ok().map(Stored::Known)
}

/// The manifest of one result, if there is a readable one. A manifest that
/// does not parse is treated as absent: it explains nothing.
pub(crate) async fn read_manifest(
    cache: &(impl Cache + ?Sized),
    name: &str,
    digest: &str,
) -> etl_cache_core::Result<Option<Stored<Manifest>>> {
    let json: Option<serde_json::Value> = match cache.get_json(&manifest_key(name, digest)).await {
        Ok(j) => j,
        Err(etl_cache_core::Error::Corrupt { .. } | etl_cache_core::Error::KindMismatch { .. }) => {
            None
        }
        Err(e) => return Err(e),
    };
    Ok(json.and_then(parse))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct History {
    format: u32,
    runs: Vec<Manifest>,
}

/// The last manifests of a step name, oldest first.
pub(crate) async fn read_history(
    cache: &(impl Cache + ?Sized),
    name: &str,
) -> etl_cache_core::Result<Stored<Vec<Manifest>>> {
    let json: Option<serde_json::Value> = match cache.get_json(&history_key(name)).await {
        Ok(j) => j,
        Err(etl_cache_core::Error::Corrupt { .. } | etl_cache_core::Error::KindMismatch { .. }) => {
            None
        }
        Err(e) => return Err(e),
    };
    Ok(match json.and_then(parse::<History>) {
        Some(Stored::Known(h)) => Stored::Known(h.runs),
        Some(Stored::Foreign(v)) => Stored::Foreign(v),
        None => Stored::Known(Vec::new()),
    })
}

fn merged(mut runs: Vec<Manifest>, m: &Manifest, keep: usize) -> Vec<Manifest> {
    // One line per digest: the newest run of it.
    runs.retain(|r| r.digest != m.digest || r.computed_at > m.computed_at);
    if !runs.iter().any(|r| r.digest == m.digest) {
        runs.push(m.clone());
    }
    runs.sort_by(|a, b| a.computed_at.total_cmp(&b.computed_at));
    let excess = runs.len().saturating_sub(keep.max(1));
    runs.drain(..excess);
    runs
}

fn same_run(a: &Manifest, b: &Manifest) -> bool {
    a.run_id == b.run_id
}

/// Stores a result's manifest, then adds it to its step's history (see the
/// module doc for what a race does).
pub(crate) async fn write_run(
    cache: &(impl Cache + ?Sized),
    m: &Manifest,
    keep: usize,
) -> etl_cache_core::Result<()> {
    // No TTL: the manifest outlives its result, so that "expired" can be told.
    cache
        .set_json(&manifest_key(&m.step, &m.digest), m, SetOptions::new())
        .await?;
    let key = history_key(&m.step);
    for _ in 0..2 {
        let runs = match read_history(cache, &m.step).await? {
            Stored::Known(runs) => runs,
            // A history written by another format is replaced: this writer
            // cannot merge into what it cannot read.
            Stored::Foreign(_) => Vec::new(),
        };
        if runs.iter().any(|r| same_run(r, m)) {
            return Ok(());
        }
        let history = History {
            format: MANIFEST_VERSION,
            runs: merged(runs, m, keep),
        };
        cache.set_json(&key, &history, SetOptions::new()).await?;
    }
    Ok(())
}
