//! Hits, misses, bytes served and time saved, per step name, kept in the
//! cache so that they add up across processes.
//!
//! Each process keeps its own tally entry per step name,
//! `step-stats/{name}/{host}.{pid}`, and only that process writes it (its
//! tasks one at a time): no two writers ever race on one tally.
//! [`crate::StepExt::step_stats`] adds the entries up; it lists the cache,
//! which on a directory of many entries reads every header. A tally is an
//! entry like any other: a cache with capacity limits may evict it.
//!
//! A hit of a result not hit in the last second on the same handle is
//! written in its call (a batch job reading many results once each writes
//! every hit before it ends). A hit of a result hit in the last second
//! waits in memory, and a background task, spawned on the caller's Tokio
//! runtime, writes what waits a second later through its own handle on the
//! cache ([`Cache::handle`]), so that neither the caller's drop nor the
//! handle's loses it; `step_stats` writes what waits on its handle first.
//! A write whose runtime ends or is no longer driven is replaced: a hit
//! that waits more than three seconds after it was scheduled schedules
//! another on its own runtime. What a hit's manifest says (the
//! compute time it saved) is remembered for the same second. Reading the
//! manifest and reading and writing the tally on every hit made a 1 KB hit
//! cost 7.2x a plain `get` (about 1.05x now: see `StepExt::run`).
//!
//! A write is made once, never repeated: one that fails (logged) or whose
//! call is dropped may lose the hits it carried, it never counts them
//! twice. Hits still waiting when the process ends (its last second of a
//! loop over one result), or whose runtime ended with no later hit to
//! schedule their write again, are not counted. A forked child must not
//! use a handle of its parent's with steps: it would write the parent's
//! waiting hits too. Backends without a
//! [`Cache::handle_id`] and [`Cache::handle`], and calls outside a Tokio
//! runtime, write every hit in its call.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use etl_cache_core::backend::KeyedMutex;
use etl_cache_core::{Cache, CacheExt, HandleId, SetOptions};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::manifest::host;

/// The maps a hit looks in: up to seven lookups of a name or a 64-digit
/// digest per hit. With foldhash instead of std's SipHash a 1 KB hit went
/// from 1.063x to 1.057x a plain `get` (p50 of 20,000, three rounds each).
/// The keys are this process's own step names and digests, not input from
/// a network peer.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

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

/// Adds `delta` to this process's tally of `name`, in the call (a miss;
/// a hit of a result not seen lately).
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

/// How long a hit of a result already written waits before a background
/// write takes it with the others of that step.
const WRITE_EVERY: Duration = Duration::from_secs(1);

/// Digests remembered at most per handle and step (seen ones, manifests):
/// past it they are forgotten, and hits are written at once more often.
const MAX_REMEMBERED: usize = 4096;

/// How late a scheduled background write may be before another is
/// scheduled in its place.
const LATE: Duration = Duration::from_secs(3);

/// Handle and step pairs kept before the idle ones are forgotten.
const MAX_KEPT: usize = 1024;

/// What one handle keeps in memory about one step name.
#[derive(Default)]
struct Waiting {
    /// Hits not written yet: a background write takes them.
    delta: StepStats,
    /// When the current period began (the first hit written in it); `None`
    /// before the first.
    period: Option<Instant>,
    /// The results (digests) whose hits were written in this period. A hit
    /// of another result is written at once (a batch job that reads many
    /// results once each writes every hit in its own call); a hit of one of
    /// these waits for the background write.
    seen: HashSet<String>,
    /// Compute seconds and bytes of results, by digest, from their
    /// manifests, for this period: a result computed again elsewhere is
    /// seen in the next period.
    manifests: HashMap<String, (f64, u64)>,
    /// When a background write was scheduled, until it takes what waits.
    /// One older than [`LATE`] is taken for lost (its runtime ended or is
    /// not driven) and the next waiting hit schedules another; two that
    /// both run are harmless: the second takes nothing.
    scheduled: Option<Instant>,
}

impl Waiting {
    /// Starts a new period when the current one is over.
    fn roll(&mut self, now: Instant) {
        if self
            .period
            .is_none_or(|t| now.duration_since(t) >= WRITE_EVERY)
        {
            self.period = Some(now);
            self.seen.clear();
            self.manifests.clear();
        }
    }

    fn idle(&self, now: Instant) -> bool {
        self.scheduled.is_none()
            && self.delta == StepStats::default()
            && self
                .period
                .is_none_or(|t| now.duration_since(t) >= WRITE_EVERY)
    }
}

/// By handle, then step name (looked up by `&str`: no allocation on a hit).
#[derive(Default)]
struct WaitingMap {
    by_handle: HashMap<HandleId, HashMap<String, Waiting>>,
    kept: usize,
    /// The count of pairs at which to look for idle ones next: twice what
    /// the last look left (at least [`MAX_KEPT`]), so that a process with
    /// many busy pairs does not scan them all on every hit.
    prune_at: usize,
}

impl WaitingMap {
    /// What `id` keeps about `name`, made when missing.
    fn entry(&mut self, id: HandleId, name: &str) -> &mut Waiting {
        if self.kept >= self.prune_at.max(MAX_KEPT) {
            self.forget_idle();
        }
        let names = self.by_handle.entry(id).or_default();
        if !names.contains_key(name) {
            names.insert(name.to_owned(), Waiting::default());
            self.kept += 1;
        }
        names.get_mut(name).expect("inserted above")
    }

    fn get(&self, id: HandleId, name: &str) -> Option<&Waiting> {
        self.by_handle.get(&id).and_then(|names| names.get(name))
    }

    /// Forgets the pairs with nothing waiting, no write scheduled and their
    /// period over (a dropped handle's among them): a process that opens
    /// handle after handle, or runs step after step, keeps what the last
    /// second needs.
    fn forget_idle(&mut self) {
        let now = Instant::now();
        for names in self.by_handle.values_mut() {
            names.retain(|_, w| !w.idle(now));
        }
        self.by_handle.retain(|_, names| !names.is_empty());
        self.kept = self.by_handle.values().map(HashMap::len).sum();
        self.prune_at = (2 * self.kept).max(MAX_KEPT);
    }
}

fn waiting() -> std::sync::MutexGuard<'static, WaitingMap> {
    static WAITING: OnceLock<Mutex<WaitingMap>> = OnceLock::new();
    WAITING
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The compute seconds and bytes of the result `digest` of `name`, as its
/// manifest said when this handle read it in the period that holds `now`
/// (the caller's clock reading: each costs about 50 ns on a virtual
/// machine, and a hit reads it twice in all).
pub(crate) fn remembered(
    cache: &(impl Cache + ?Sized),
    name: &str,
    digest: &str,
    now: Instant,
) -> Option<(f64, u64)> {
    let id = cache.handle_id()?;
    let map = waiting();
    let w = map.get(id, name)?;
    if w.period
        .is_none_or(|t| now.duration_since(t) >= WRITE_EVERY)
    {
        return None;
    }
    w.manifests.get(digest).copied()
}

/// Remembers what the manifest of `digest` says, the compute seconds and
/// bytes (see [`remembered`]).
pub(crate) fn remember(
    cache: &(impl Cache + ?Sized),
    name: &str,
    digest: &str,
    now: Instant,
    said: (f64, u64),
) {
    let Some(id) = cache.handle_id() else {
        return;
    };
    let mut map = waiting();
    let w = map.entry(id, name);
    w.roll(now);
    if w.manifests.len() >= MAX_REMEMBERED {
        w.manifests.clear();
    }
    w.manifests.insert(digest.to_owned(), said);
}

/// Another handle on `cache` and the Tokio runtime of the caller, for work
/// that must outlive the call that starts it (see [`Cache::handle`]);
/// `None` where either is missing, and the work is then done in the call.
pub(crate) fn background(
    cache: &(impl Cache + ?Sized),
) -> Option<(std::sync::Arc<dyn Cache>, tokio::runtime::Handle)> {
    cache
        .handle()
        .zip(tokio::runtime::Handle::try_current().ok())
}

/// Adds a hit of the result `digest` to this process's tally of `name`:
/// written in the call unless a hit of the same result was written in
/// this period, on this handle; then added to what waits, which a
/// background write takes within [`WRITE_EVERY`], with another handle on
/// the cache ([`Cache::handle`]): neither a dropped call nor a dropped
/// handle loses it, and a write is never repeated, so no hit counts twice.
/// Where there is no background (no handle to give, no Tokio runtime),
/// every hit is written in its call.
pub(crate) async fn record_hit(
    cache: &(impl Cache + ?Sized),
    name: &str,
    digest: &str,
    now: Instant,
    delta: StepStats,
) -> etl_cache_core::Result<()> {
    let Some(id) = cache.handle_id() else {
        return Box::pin(record(cache, name, delta)).await;
    };
    let schedule = {
        let mut map = waiting();
        let w = map.entry(id, name);
        w.roll(now);
        if !w.seen.contains(digest) {
            if w.seen.len() >= MAX_REMEMBERED {
                w.seen.clear();
            }
            w.seen.insert(digest.to_owned());
            None
        } else {
            w.delta.add(&delta);
            let first = w.scheduled.is_none_or(|t| now.duration_since(t) >= LATE);
            if first {
                w.scheduled = Some(now);
            }
            Some(first)
        }
    };
    match schedule {
        // Written in the call, as every hit of a result not seen lately.
        // Boxed here and below: a write's state is large, and the hits
        // that wait for the background write should not carry it.
        None => Box::pin(record(cache, name, delta)).await,
        Some(false) => Ok(()),
        Some(true) => {
            match background(cache) {
                Some((handle, rt)) => {
                    let scheduled = Scheduled {
                        id,
                        name: name.to_owned(),
                        armed: true,
                    };
                    rt.spawn(write_later(handle, scheduled));
                    Ok(())
                }
                // Nowhere to write later: what waits is written now.
                None => {
                    let all = take(id, name);
                    Box::pin(record(cache, name, all)).await
                }
            }
        }
    }
}

/// Takes what waits for `name` on handle `id`; nothing is scheduled after.
fn take(id: HandleId, name: &str) -> StepStats {
    let mut map = waiting();
    let w = map.entry(id, name);
    w.scheduled = None;
    std::mem::take(&mut w.delta)
}

/// The background write: after [`WRITE_EVERY`], the hits waiting for
/// `name` on handle `id`, written through `cache` (which keeps the cache
/// open meanwhile). A failure is logged and the hits it carried are not
/// counted: a write is never repeated, as it may have been stored.
async fn write_later(cache: std::sync::Arc<dyn Cache>, mut scheduled: Scheduled) {
    tokio::time::sleep(WRITE_EVERY).await;
    let delta = take(scheduled.id, &scheduled.name);
    scheduled.armed = false;
    write_taken(cache.as_ref(), &scheduled.name, delta).await;
}

/// The background write of `name` on handle `id`, from the moment it is
/// scheduled: a task dropped before it took what waits (its runtime shut
/// down, even before the task first ran) leaves no write scheduled, and
/// the next hit that waits schedules one again.
struct Scheduled {
    id: HandleId,
    name: String,
    armed: bool,
}

impl Drop for Scheduled {
    fn drop(&mut self) {
        if self.armed {
            waiting().entry(self.id, &self.name).scheduled = None;
        }
    }
}

async fn write_taken(cache: &dyn Cache, name: &str, delta: StepStats) {
    if delta == StepStats::default() {
        return;
    }
    if let Err(e) = record(cache, name, delta).await {
        tracing::warn!(step = %name, hits = delta.hits, error = %e, "could not record the step's hits; they are not counted");
    }
}

/// Writes what waits on this handle (for `name` only, when given), in a
/// background task that the caller's drop does not stop (in the call
/// where there is no background).
async fn write_waiting(cache: &(impl Cache + ?Sized), name: Option<&str>) {
    let Some(id) = cache.handle_id() else {
        return;
    };
    let taken: Vec<(String, StepStats)> = {
        let mut map = waiting();
        let Some(names) = map.by_handle.get_mut(&id) else {
            return;
        };
        names
            .iter_mut()
            .filter(|(n, w)| {
                name.is_none_or(|want| want == n.as_str()) && w.delta != StepStats::default()
            })
            .map(|(n, w)| (n.clone(), std::mem::take(&mut w.delta)))
            .collect()
    };
    if taken.is_empty() {
        return;
    }
    match background(cache) {
        Some((handle, rt)) => {
            let task = rt.spawn(async move {
                for (n, d) in taken {
                    write_taken(handle.as_ref(), &n, d).await;
                }
            });
            let _ = task.await;
        }
        None => {
            for (n, d) in taken {
                if let Err(e) = record(cache, &n, d).await {
                    tracing::warn!(step = %n, hits = d.hits, error = %e, "could not record the step's hits; they are not counted");
                }
            }
        }
    }
}

/// Adds up the tallies of `name` (every step name when `None`), after
/// writing this handle's waiting hits.
pub(crate) async fn report(
    cache: &(impl Cache + ?Sized),
    name: Option<&str>,
) -> etl_cache_core::Result<StepStatsReport> {
    write_waiting(cache, name).await;
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
