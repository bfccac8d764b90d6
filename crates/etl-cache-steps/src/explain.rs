//! Why a step is, or is not, served from the cache.

use std::fmt;
use std::time::SystemTime;

use etl_cache_core::{Cache, RemovalCause};
use serde::Serialize;

use crate::manifest::{Manifest, Stored, read_history, read_manifest};
use crate::step::{PartRecord, Resolved, result_key};

/// The answer of [`crate::StepExt::explain`] for the current parts of a
/// step, and the reason a run computed (see [`crate::Outcome`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Explanation {
    /// A live result exists for these parts; its manifest when one is kept.
    Hit {
        /// The manifest of the result.
        manifest: Option<Box<Manifest>>,
    },
    /// The step name has never been run in this cache (no manifest, no history).
    NoEarlierRun,
    /// Earlier runs exist, with other parts: what differs from the most
    /// recent one.
    PartsChanged {
        /// The parts that differ, by name.
        changes: Vec<PartChange>,
        /// The run compared with.
        previous: Box<Manifest>,
    },
    /// The result for these parts existed and expired.
    Expired {
        /// When it expired (by its manifest), or when it was found expired
        /// and removed (by the removal journal), in seconds since the Unix
        /// epoch.
        at: f64,
        /// Its manifest.
        manifest: Box<Manifest>,
    },
    /// The result for these parts was evicted to bring the cache under a
    /// limit (the backend's removal journal remembers it).
    Evicted {
        /// When, in seconds since the Unix epoch.
        at: f64,
        /// The limit the cache was over: `max_entries` or `max_bytes`.
        limit: String,
        /// Its manifest.
        manifest: Box<Manifest>,
    },
    /// The result for these parts was removed by `delete` (`by` is
    /// `delete`) or `clear` (`clear`), as the backend's removal journal
    /// remembers.
    Deleted {
        /// When, in seconds since the Unix epoch.
        at: f64,
        /// `delete` or `clear`.
        by: String,
        /// Its manifest.
        manifest: Box<Manifest>,
    },
    /// The result for these parts existed, had not expired, and is gone,
    /// and no removal of it is remembered: the backend keeps no removal
    /// journal (only `DiskCache`, and `TieredCache` over one, do), or the
    /// journal forgot it among later removals.
    EvictedOrDeleted {
        /// Its manifest.
        manifest: Box<Manifest>,
    },
    /// The backend reports the entry as corrupt (and removed it).
    Corrupt {
        /// What check failed.
        detail: String,
    },
    /// The result or its manifest was written in a format this build does
    /// not read.
    IncompatibleFormat {
        /// The format version found.
        found: u32,
        /// The version this build reads and writes (of manifests, or of
        /// entries when the entry's format is the one that differs).
        supported: u32,
    },
    /// The run was asked to compute again ([`crate::RunOptions::refresh`]).
    RefreshForced,
    /// The result was missing and what would say why (its manifest, the
    /// step's history) could not be read; the run computed all the same.
    Unexplained {
        /// Why the manifest or history could not be read.
        error: String,
    },
}

/// A part that differs between the current step and an earlier run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartChange {
    /// The part's name.
    pub part: String,
    /// Its preview in the earlier run; `None` when it is new.
    pub old: Option<String>,
    /// Its preview now; `None` when it was removed.
    pub new: Option<String>,
}

impl Explanation {
    /// Whether the result is served from the cache.
    pub fn is_hit(&self) -> bool {
        matches!(self, Explanation::Hit { .. })
    }

    /// A short name of the reason: `hit`, `no_earlier_run`, `parts_changed`,
    /// `expired`, `evicted`, `deleted`, `evicted_or_deleted`, `corrupt`,
    /// `incompatible_format`, `refresh_forced`, `unexplained`.
    pub fn reason(&self) -> &'static str {
        match self {
            Explanation::Hit { .. } => "hit",
            Explanation::NoEarlierRun => "no_earlier_run",
            Explanation::PartsChanged { .. } => "parts_changed",
            Explanation::Expired { .. } => "expired",
            Explanation::Evicted { .. } => "evicted",
            Explanation::Deleted { .. } => "deleted",
            Explanation::EvictedOrDeleted { .. } => "evicted_or_deleted",
            Explanation::Corrupt { .. } => "corrupt",
            Explanation::IncompatibleFormat { .. } => "incompatible_format",
            Explanation::RefreshForced => "refresh_forced",
            Explanation::Unexplained { .. } => "unexplained",
        }
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Explanation::Hit { manifest: Some(m) } => write!(
                f,
                "hit: computed in {:.3} s by {} (pid {})",
                m.compute_seconds, m.host, m.pid
            ),
            Explanation::Hit { manifest: None } => f.write_str("hit (no manifest kept)"),
            Explanation::NoEarlierRun => f.write_str("miss: no earlier run of this step"),
            Explanation::PartsChanged { changes, .. } => {
                f.write_str("miss: parts changed since the last run:")?;
                for c in changes {
                    // Previews are written for people (a parameter's JSON,
                    // `"EUR"`): shown as they are, quoted only when they
                    // hold a control character that would break the line.
                    let show = |p: &Option<String>| match p {
                        Some(p) if p.chars().any(char::is_control) => format!("{p:?}"),
                        Some(p) => p.clone(),
                        None => "(absent)".to_owned(),
                    };
                    write!(f, "\n  {}: {} -> {}", c.part, show(&c.old), show(&c.new))?;
                }
                Ok(())
            }
            Explanation::Expired { at, .. } => {
                write!(f, "miss: the result expired at {at:.0} (Unix seconds)")
            }
            Explanation::Evicted { at, limit, .. } => write!(
                f,
                "miss: the result was evicted at {at:.0} (Unix seconds): the cache was over its {limit}"
            ),
            Explanation::Deleted { at, by, .. } => write!(
                f,
                "miss: the result was removed by {by} at {at:.0} (Unix seconds)"
            ),
            Explanation::EvictedOrDeleted { .. } => f.write_str(
                "miss: the result was evicted or deleted before it expired \
                 (no removal of it is remembered)",
            ),
            Explanation::Corrupt { detail } => {
                write!(f, "miss: the result was corrupt and removed: {detail}")
            }
            Explanation::IncompatibleFormat { found, supported } => write!(
                f,
                "miss: written in format version {found}; this build reads {supported}"
            ),
            Explanation::RefreshForced => f.write_str("miss: refresh forced"),
            Explanation::Unexplained { error } => {
                write!(f, "miss: the reason could not be read: {error}")
            }
        }
    }
}

/// Compares the current parts with the most recent run of the step name.
pub(crate) fn changes(now: &[PartRecord], before: &[PartRecord]) -> Vec<PartChange> {
    let mut out = Vec::new();
    for p in now {
        match before.iter().find(|b| b.name == p.name) {
            Some(b) if b.digest == p.digest => {}
            Some(b) => out.push(PartChange {
                part: p.name.clone(),
                old: Some(b.preview.clone()),
                new: Some(p.preview.clone()),
            }),
            None => out.push(PartChange {
                part: p.name.clone(),
                old: None,
                new: Some(p.preview.clone()),
            }),
        }
    }
    for b in before {
        if !now.iter().any(|p| p.name == b.name) {
            out.push(PartChange {
                part: b.name.clone(),
                old: Some(b.preview.clone()),
                new: None,
            });
        }
    }
    out
}

fn foreign(found: u32) -> Explanation {
    Explanation::IncompatibleFormat {
        found,
        supported: crate::MANIFEST_VERSION,
    }
}

/// Why there is no result for `r`, the entry being known absent.
pub(crate) async fn explain_absent(
    cache: &(impl Cache + ?Sized),
    r: &Resolved,
    now: SystemTime,
) -> etl_cache_core::Result<Explanation> {
    match read_manifest(cache, &r.name, &r.digest).await? {
        Some(Stored::Foreign(v)) => return Ok(foreign(v)),
        Some(Stored::Known(m)) => return Ok(gone(cache, r, m, now).await),
        None => {}
    }
    let runs = match read_history(cache, &r.name).await? {
        Stored::Known(runs) => runs,
        Stored::Foreign(v) => return Ok(foreign(v)),
    };
    if let Some(m) = runs.iter().rev().find(|m| m.digest == r.digest) {
        return Ok(gone(cache, r, m.clone(), now).await);
    }
    Ok(match runs.into_iter().last() {
        None => Explanation::NoEarlierRun,
        Some(previous) => Explanation::PartsChanged {
            changes: changes(&r.parts, &previous.parts),
            previous: Box::new(previous),
        },
    })
}

/// Why the result `m` describes is gone: expired by its manifest, else
/// what the cache's removal journal remembers of a removal since it was
/// computed.
async fn gone(
    cache: &(impl Cache + ?Sized),
    r: &Resolved,
    m: Manifest,
    now: SystemTime,
) -> Explanation {
    if let Some(at) = m.expiry()
        && at <= now
    {
        return Explanation::Expired {
            at: m.expires_at.unwrap_or_default(),
            manifest: Box::new(m),
        };
    }
    let removal = match cache.last_removal(&result_key(&r.name, &r.digest)).await {
        Ok(removal) => removal,
        Err(e) => {
            tracing::warn!(step = %r.name, error = %e, "could not read the removal journal");
            None
        }
    };
    // The manifest is written once the result is stored: a removal before
    // it was of an earlier value under the same key (an old value evicted
    // while a refresh computed, say), and says nothing of this one. One
    // right between the store and the manifest is left unexplained rather
    // than risk a wrong answer.
    let Some(removal) = removal.filter(|x| unix(x.at) >= m.computed_at) else {
        return Explanation::EvictedOrDeleted {
            manifest: Box::new(m),
        };
    };
    let at = unix(removal.at);
    let manifest = Box::new(m);
    match removal.cause {
        RemovalCause::Evicted { limit } => Explanation::Evicted {
            at,
            limit: limit.name().to_owned(),
            manifest,
        },
        RemovalCause::Expired => Explanation::Expired { at, manifest },
        RemovalCause::Corrupt => Explanation::Corrupt {
            detail: format!("found corrupt and removed at {at:.0} (Unix seconds)"),
        },
        RemovalCause::Deleted => Explanation::Deleted {
            at,
            by: "delete".to_owned(),
            manifest,
        },
        RemovalCause::Cleared => Explanation::Deleted {
            at,
            by: "clear".to_owned(),
            manifest,
        },
        _ => Explanation::EvictedOrDeleted { manifest },
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The explanation for `r` as the cache stands: one `head` and, on a
/// miss, at most two reads.
pub(crate) async fn explain(
    cache: &(impl Cache + ?Sized),
    r: &Resolved,
    now: SystemTime,
) -> etl_cache_core::Result<Explanation> {
    match cache.head(&result_key(&r.name, &r.digest)).await {
        Ok(Some(meta)) if !meta.is_expired(now) => {
            let manifest = match read_manifest(cache, &r.name, &r.digest).await? {
                Some(Stored::Known(m)) => Some(Box::new(m)),
                _ => None,
            };
            Ok(Explanation::Hit { manifest })
        }
        Ok(_) => explain_absent(cache, r, now).await,
        Err(etl_cache_core::Error::Corrupt { reason, .. }) => Ok(corrupt(cache, r, reason).await),
        Err(e) => Err(e),
    }
}

/// A corrupt entry, unless its manifest says a newer format wrote it.
pub(crate) async fn corrupt(
    cache: &(impl Cache + ?Sized),
    r: &Resolved,
    reason: String,
) -> Explanation {
    match read_manifest(cache, &r.name, &r.digest).await {
        Ok(Some(Stored::Foreign(v))) => foreign(v),
        Ok(Some(Stored::Known(m)))
            if m.entry_format > etl_cache_core::backend::format::FORMAT_VERSION =>
        {
            Explanation::IncompatibleFormat {
                found: u32::from(m.entry_format),
                supported: u32::from(etl_cache_core::backend::format::FORMAT_VERSION),
            }
        }
        _ => Explanation::Corrupt { detail: reason },
    }
}
