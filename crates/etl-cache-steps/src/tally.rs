//! Hits, misses, bytes served and time saved, per step name, kept in the
//! cache so that they add up across processes.
//!
//! Each process keeps its own tally entry per step name,
//! `step-stats/{name}/{host}.{pid}`, and only that process writes it (its
//! tasks one at a time): no two writers ever race on one tally, so no count
//! is lost. [`crate::StepExt::step_stats`] adds the entries up; it lists the
//! cache, which on a directory of many entries reads every header. A tally
//! is an entry like any other: a cache with capacity limits may evict it.
//!
//! A hit of a result already hit in the last second, on the same handle,
//! is not written at once: it is added up in memory and written with the
//! next write of that step's tally (a hit of another result, any hit once
//! the second is over, a miss, [`crate::StepExt::step_stats`]); and what a
//! hit's manifest says (the compute time it saved) is remembered until
//! that write: reading the manifest and reading and writing the tally on every
//! hit made a 1 KB hit cost 7.1x a plain `get` (1.12x now). A batch job
//! that reads many results once each writes every hit; a loop over one
//! result that ends with its process loses the hits of its last second
//! unless a miss or `step_stats` comes after them. Backends without a
//! [`Cache::handle_id`] write every hit through.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use etl_cache_core::backend::KeyedMutex;
use etl_cache_core::{Cache, CacheExt, HandleId, SetOptions};
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
async fn record(
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

/// How often the hits of one step on one handle are written to its tally.
const WRITE_EVERY: Duration = Duration::from_secs(1);

/// Manifests remembered at most (then all are forgotten): a bound on the
/// memory of a process that runs many steps.
const MAX_REMEMBERED: usize = 4096;

/// What waits for the next write of one handle's tally of one step.
#[derive(Default)]
struct Waiting {
    /// Hits not written yet.
    delta: StepStats,
    /// When the first hit's write of the current period was made; `None`
    /// before the first.
    period: Option<Instant>,
    /// The results (digests) whose hits were written in this period: a
    /// hit of another result is written at once (a batch job reading many
    /// results once each writes every hit, and loses none when it ends);
    /// a hit of one of these waits for the next period.
    seen: HashSet<String>,
    /// A hit's write is under way (the other hits wait for the next).
    writing: bool,
    /// Compute seconds and bytes of results, by digest, from their
    /// manifests: forgotten at each write, so a result computed again by
    /// another process is seen within [`WRITE_EVERY`].
    manifests: HashMap<String, (f64, u64)>,
}

/// By handle, then step name (looked up by `&str`: no allocation on a hit).
type WaitingMap = HashMap<HandleId, HashMap<String, Waiting>>;

/// What waits for `name` on handle `id`, made when missing.
fn entry<'m>(map: &'m mut WaitingMap, id: HandleId, name: &str) -> &'m mut Waiting {
    let names = map.entry(id).or_default();
    if !names.contains_key(name) {
        names.insert(name.to_owned(), Waiting::default());
    }
    names.get_mut(name).expect("inserted above")
}

fn waiting() -> std::sync::MutexGuard<'static, WaitingMap> {
    static WAITING: OnceLock<Mutex<WaitingMap>> = OnceLock::new();
    WAITING
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The compute seconds and bytes of the result `digest` of `name`, as its
/// manifest said when this handle last read it (within [`WRITE_EVERY`]).
pub(crate) fn remembered(
    cache: &(impl Cache + ?Sized),
    name: &str,
    digest: &str,
) -> Option<(f64, u64)> {
    let id = cache.handle_id()?;
    waiting()
        .get(&id)
        .and_then(|names| names.get(name))
        .and_then(|w| w.manifests.get(digest).copied())
}

/// Remembers what the manifest of `digest` says (see [`remembered`]).
pub(crate) fn remember(
    cache: &(impl Cache + ?Sized),
    name: &str,
    digest: &str,
    seconds: f64,
    bytes: u64,
) {
    let Some(id) = cache.handle_id() else {
        return;
    };
    let mut map = waiting();
    let w = entry(&mut map, id, name);
    if w.manifests.len() >= MAX_REMEMBERED {
        w.manifests.clear();
    }
    w.manifests.insert(digest.to_owned(), (seconds, bytes));
}

/// Handles remembered before those with nothing waiting are forgotten: a
/// process that opens handle after handle keeps no state for old ones.
const MAX_HANDLES: usize = 1024;

/// Forgets the steps with no hits waiting and no write within
/// [`WRITE_EVERY`] (their next hit is then written at once, as a first).
fn forget_idle(map: &mut WaitingMap) {
    for names in map.values_mut() {
        names.retain(|_, w| {
            w.writing
                || w.delta != StepStats::default()
                || w.period.is_some_and(|t| t.elapsed() < WRITE_EVERY)
        });
    }
    map.retain(|_, names| !names.is_empty());
}

/// A write of what waited: puts the hits it took back if it does not
/// finish (failed, or its future dropped), so that they go with the next
/// write and none is lost; a hit's write that does not finish leaves the
/// next hit due at once.
struct Write<'a> {
    id: HandleId,
    name: &'a str,
    /// The result whose hit made it, if a hit did (see [`Waiting::writing`]).
    hit: Option<&'a str>,
    /// What it took; `None` once written.
    taken: Option<StepStats>,
}

impl Write<'_> {
    /// Takes what waits for `name` on this handle, to be written now.
    fn start<'a>(id: HandleId, name: &'a str, hit: Option<&'a str>) -> Write<'a> {
        let mut map = waiting();
        let w = entry(&mut map, id, name);
        w.manifests.clear();
        Write {
            id,
            name,
            hit,
            taken: Some(std::mem::take(&mut w.delta)),
        }
    }

    fn end(mut self, written: bool) {
        let mut map = waiting();
        if map.len() > MAX_HANDLES {
            forget_idle(&mut map);
        }
        let w = entry(&mut map, self.id, self.name);
        if let Some(digest) = self.hit {
            w.writing = false;
            if written {
                if w.period.is_none_or(|t| t.elapsed() >= WRITE_EVERY)
                    || w.seen.len() >= MAX_REMEMBERED
                {
                    w.period = Some(Instant::now());
                    w.seen.clear();
                }
                w.seen.insert(digest.to_owned());
            }
        }
        if let Some(d) = self.taken.take()
            && !written
        {
            w.delta.add(&d);
        }
    }
}

impl Drop for Write<'_> {
    fn drop(&mut self) {
        if self.taken.is_some() {
            let unfinished = Write {
                id: self.id,
                name: self.name,
                hit: self.hit,
                taken: self.taken.take(),
            };
            unfinished.end(false);
        }
    }
}

/// Adds `delta` to the tally of `name` with the hits waiting on this
/// handle, written now (a miss, or a hit whose write is due).
async fn write_now(
    cache: &(impl Cache + ?Sized),
    id: HandleId,
    name: &str,
    delta: StepStats,
    hit: Option<&str>,
) -> etl_cache_core::Result<()> {
    let mut write = Write::start(id, name, hit);
    let mut all = write.taken.expect("just taken");
    all.add(&delta);
    write.taken = Some(all);
    let done = record(cache, name, all).await;
    write.end(done.is_ok());
    done
}

/// Adds a miss (or anything to be written at once) to this process's tally
/// of `name`, with the hits waiting on this handle.
pub(crate) async fn record_now(
    cache: &(impl Cache + ?Sized),
    name: &str,
    delta: StepStats,
) -> etl_cache_core::Result<()> {
    match cache.handle_id() {
        Some(id) => write_now(cache, id, name, delta, None).await,
        None => record(cache, name, delta).await,
    }
}

/// Adds a hit of the result `digest` to this process's tally of `name`:
/// written at once unless a hit of the same result was written in the last
/// [`WRITE_EVERY`] (then kept for the next write).
pub(crate) async fn record_hit(
    cache: &(impl Cache + ?Sized),
    name: &str,
    digest: &str,
    delta: StepStats,
) -> etl_cache_core::Result<()> {
    let Some(id) = cache.handle_id() else {
        return record(cache, name, delta).await;
    };
    {
        let mut map = waiting();
        let w = entry(&mut map, id, name);
        let new_period = w.period.is_none_or(|t| t.elapsed() >= WRITE_EVERY);
        let due = !w.writing && (new_period || !w.seen.contains(digest));
        if !due {
            w.delta.add(&delta);
            return Ok(());
        }
        w.writing = true;
    }
    write_now(cache, id, name, delta, Some(digest)).await
}

/// Writes every tally of this handle that has hits waiting (of `name`
/// only, when given).
async fn write_waiting(
    cache: &(impl Cache + ?Sized),
    name: Option<&str>,
) -> etl_cache_core::Result<()> {
    let Some(id) = cache.handle_id() else {
        return Ok(());
    };
    let names: Vec<String> = waiting()
        .get(&id)
        .into_iter()
        .flatten()
        .filter(|(n, w)| name.is_none_or(|want| want == *n) && w.delta != StepStats::default())
        .map(|(n, _)| n.clone())
        .collect();
    for n in names {
        write_now(cache, id, &n, StepStats::default(), None).await?;
    }
    Ok(())
}

/// Adds up the tallies of `name` (every step name when `None`), after
/// writing this handle's waiting hits.
pub(crate) async fn report(
    cache: &(impl Cache + ?Sized),
    name: Option<&str>,
) -> etl_cache_core::Result<StepStatsReport> {
    write_waiting(cache, name).await?;
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
