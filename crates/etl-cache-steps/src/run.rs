//! Running a step: the cached result, or the computation once.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use etl_cache_core::backend::SingleFlight;
use etl_cache_core::{BoxError, ByteStream, Cache, GetStream, Value};

use crate::explain::{Explanation, corrupt, explain, explain_absent};
use crate::manifest::{Manifest, Stored, read_manifest, write_run};
use crate::outcome::{Outcome, Ran, RunOptions, RunReport};
use crate::step::{Resolved, Step};
use crate::tally::{
    StepStats, StepStatsReport, background, record, record_hit, remember, remembered, report,
};
use crate::{Error, Result};

/// A computed value the cache would refuse, carried through the backend as
/// the computation's error and unwrapped again.
#[derive(Debug)]
struct Refused(etl_cache_core::Error);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Refused {}

/// An input (a file, an object) changed while the step computed: the
/// result is handed to the caller that computed it, not stored (its key
/// names the inputs as they were before). A caller that waited for it finds
/// nothing stored and computes itself (its own inputs were read before the
/// change, so it sees the change too and keeps its own result).
#[derive(Debug)]
struct InputChanged(String);

impl std::fmt::Display for InputChanged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the input {} changed while the step computed: its result was not stored",
            self.0
        )
    }
}

impl std::error::Error for InputChanged {}

fn unwrap_refused(e: etl_cache_core::Error) -> Error {
    match e {
        etl_cache_core::Error::Init { key, source } => match source.downcast::<Refused>() {
            Ok(r) => Error::Cache(r.0),
            Err(source) => Error::Cache(etl_cache_core::Error::Init { key, source }),
        },
        e => Error::Cache(e),
    }
}

fn value_len(v: &Value) -> u64 {
    match v {
        Value::Text(s) => s.len() as u64,
        Value::Bytes(b) => b.len() as u64,
        Value::Json(j) => serde_json::to_vec(j).map_or(0, |b| b.len() as u64),
    }
}

/// The single flight of stream steps in this process: streams have none in
/// the `Cache` contract, so tasks of one process running the same stream
/// step take turns here (each waits at most its
/// [`RunOptions::lock_timeout`]).
fn stream_flights() -> &'static SingleFlight {
    static FLIGHTS: OnceLock<SingleFlight> = OnceLock::new();
    FLIGHTS.get_or_init(SingleFlight::default)
}

/// Steps on every [`Cache`], `dyn Cache` included. Do not implement it: it is
/// implemented for all caches.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> etl_cache_steps::Result<()> {
/// use etl_cache_core::{MemoryCache, Value};
/// use etl_cache_steps::{RunOptions, Step, StepExt};
///
/// let cache = MemoryCache::new();
/// let step = Step::new("summary").code_version("v1").param("day", &"2026-12-01");
/// let first = cache
///     .run(&step, RunOptions::new(), || async { Ok::<_, std::io::Error>(Value::from("42 rows")) })
///     .await?;
/// assert!(!first.outcome.is_hit());
/// let again = cache
///     .run(&step, RunOptions::new(), || async { Ok::<_, std::io::Error>(Value::from("never")) })
///     .await?;
/// assert_eq!(again.value, Value::from("42 rows"));
///
/// let other_day = step.clone().param("day", &"2026-12-02");
/// let why = cache.explain(&Step::new("summary").code_version("v1").param("day", &"2026-12-02")).await?;
/// assert_eq!(why.reason(), "parts_changed");
/// # let _ = other_day;
/// # Ok(()) }
/// ```
#[async_trait::async_trait]
pub trait StepExt: Cache {
    /// Returns the step's cached result, or runs `compute` once, stores its
    /// value with a manifest, and returns it. Many callers running the same
    /// step at once compute it once (the backend's single flight, as
    /// [`etl_cache_core::CacheExt::get_or_insert_with`]). A corrupt entry is
    /// computed again, with [`Explanation::Corrupt`] as the reason.
    ///
    /// A result whose manifest this handle read in the last second (a step
    /// run in a loop) is read with a plain `get`: the backend's span and
    /// metrics show it as a `get`, not a `get_or_insert`; should the result
    /// be gone by then, the backend counts two misses for the run.
    ///
    /// # Errors
    ///
    /// [`Error::Part`] when a part cannot be digested (nothing is read or
    /// run); [`Error::Cache`] with [`etl_cache_core::Error::Init`] when
    /// `compute` fails (nothing is stored); otherwise the cache's errors.
    async fn run<F, Fut, E>(&self, step: &Step, opts: RunOptions, compute: F) -> Result<Ran<Value>>
    where
        F: FnOnce() -> Fut + Send,
        Fut: std::future::Future<Output = std::result::Result<Value, E>> + Send,
        E: Into<BoxError> + Send,
    {
        let started = Instant::now();
        let r = step.resolved().await?;
        let mut forced = opts.refresh.then_some(Explanation::RefreshForced);
        // A result whose manifest this handle read in the last second (a
        // step run in a loop) is read with a plain `get`: setting up the
        // single flight was a quarter of what a 1 KB hit cost over a `get`
        // (0.25 of 0.9 µs). Should the entry be gone meanwhile, the path
        // below looks again (the backend then counts two misses for this
        // run).
        // The options are checked on every run, as the single flight does.
        opts.set.validate_for(r.key_ref())?;
        // A kept resolution took no time; another read files or objects.
        let resolved_at = match step.is_kept() {
            true => started,
            false => Instant::now(),
        };
        let known = match forced {
            None => remembered(self, &r.name, &r.digest, resolved_at),
            Some(_) => None,
        };
        if let Some(known) = known {
            match self.get(r.key_ref()).await {
                Ok(Some(value)) => {
                    let ended = Instant::now();
                    let took = ended - started;
                    let saved =
                        finish_hit(self, &r, ended, took, Some(known), || value_len(&value)).await;
                    return Ok(Ran {
                        value,
                        outcome: Outcome::Hit {
                            took,
                            saved_seconds: saved,
                        },
                    });
                }
                Ok(None) => {}
                // Removed by the backend: computed again, with the reason.
                Err(etl_cache_core::Error::Corrupt { reason, .. }) => {
                    forced = Some(corrupt(self, &r, reason).await);
                }
                Err(e) => return Err(Error::Cache(e)),
            }
        }
        // Boxed: the computing path's state is large, and a hit above then
        // does not allocate and move it.
        Box::pin(run_computing(self, r, opts, compute, started, forced)).await
    }

    /// As [`StepExt::run`] for a result written as a stream: `compute`
    /// returns the stream, which is stored with `set_stream` (never held
    /// whole in memory), and the run returns a stream of the stored bytes
    /// in chunks of `chunk_size`. Tasks of one process running the same
    /// step compute it once (the others wait, at most
    /// [`RunOptions::lock_timeout`], then read the stored result);
    /// processes are not coordinated for streams (the `Cache` contract has
    /// no single flight for them): two may both compute, and the last write
    /// wins.
    ///
    /// # Errors
    ///
    /// As [`StepExt::run`]; a stream that fails leaves nothing stored
    /// ([`etl_cache_core::Error::Stream`]);
    /// [`etl_cache_core::Error::LockTimeout`] when another task of this
    /// process computed the step for longer than the lock timeout.
    async fn run_stream<F, Fut, E>(
        &self,
        step: &Step,
        opts: RunOptions,
        chunk_size: usize,
        compute: F,
    ) -> Result<Ran<GetStream>>
    where
        F: FnOnce() -> Fut + Send,
        Fut: std::future::Future<Output = std::result::Result<ByteStream, E>> + Send,
        E: Into<BoxError> + Send,
    {
        let started = Instant::now();
        let r = step.resolved().await?;
        let key = r.key();
        // Why the step computes, as the last look found it.
        let why: Mutex<Option<Explanation>> = Mutex::new(None);
        let (this, resolved, why_slot, refresh, now) =
            (self, &r, &why, opts.refresh, opts.clock.now());
        // A look: the stored result as a hit, or `None` with the reason of
        // the miss in `why`. Its `Ok(Err(_))` carries this crate's errors
        // through the core's single flight.
        let look = move |first: bool| async move {
            let miss = if refresh {
                Explanation::RefreshForced
            } else {
                match this.get_stream(&resolved.key(), chunk_size).await {
                    Ok(Some(s)) => {
                        let ended = Instant::now();
                        let took = ended - started;
                        let len = s.meta().logical_len;
                        let saved = finish_hit(this, resolved, ended, took, None, || len).await;
                        return Ok(Some(Ok(Ran {
                            value: s,
                            outcome: Outcome::Hit {
                                took,
                                saved_seconds: saved,
                            },
                        })));
                    }
                    // A miss is explained once, at the look before the
                    // fill; a corrupt entry (removed once seen) at the look
                    // that saw it.
                    Ok(None) if first || why_slot.lock().is_ok_and(|w| w.is_some()) => {
                        return Ok(None);
                    }
                    Ok(None) => explain_absent(this, resolved, now)
                        .await
                        .unwrap_or_else(|e| unexplained(resolved, e)),
                    Err(etl_cache_core::Error::Corrupt { reason, .. }) => {
                        corrupt(this, resolved, reason).await
                    }
                    Err(e) => return Err(e),
                }
            };
            *why_slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(miss);
            Ok(None)
        };
        let timeout = opts.lock_timeout;
        let fill = || async {
            let why = why
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .expect("a look explained the miss before the fill");
            Ok(compute_stream(self, &r, opts, chunk_size, compute, why).await)
        };
        stream_flights()
            .run_with_timeout(&key, timeout, look, fill)
            .await?
    }

    /// Why `step`, with its current parts, would or would not be served from
    /// the cache. Reads one entry's metadata and, on a miss, at most two
    /// small entries; computes nothing, stores nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Part`] when a part cannot be digested; the cache's errors.
    async fn explain(&self, step: &Step) -> Result<Explanation> {
        self.explain_at(step, SystemTime::now()).await
    }

    /// As [`StepExt::explain`], deciding expiry at `now`.
    ///
    /// # Errors
    ///
    /// As [`StepExt::explain`].
    async fn explain_at(&self, step: &Step, now: SystemTime) -> Result<Explanation> {
        let r = step.resolved().await?;
        Ok(explain(self, &r, now).await?)
    }

    /// The runs kept for a step name, oldest first: each run's manifest,
    /// the state of its result now ([`Explanation::Hit`],
    /// [`Explanation::Expired`], [`Explanation::Evicted`],
    /// [`Explanation::Deleted`], [`Explanation::EvictedOrDeleted`],
    /// [`Explanation::Corrupt`], …) and the parts that changed since the run
    /// before it. What `etl-cache explain STEP` shows: the command line
    /// cannot rebuild a step's current parts, the program can (see
    /// [`StepExt::explain`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`]; the cache's errors.
    async fn explain_runs(&self, name: &str) -> Result<Vec<RunReport>> {
        self.explain_runs_at(name, SystemTime::now()).await
    }

    /// As [`StepExt::explain_runs`], deciding expiry at `now`.
    ///
    /// # Errors
    ///
    /// As [`StepExt::explain_runs`].
    async fn explain_runs_at(&self, name: &str, now: SystemTime) -> Result<Vec<RunReport>> {
        let runs = self.step_history(name).await?;
        let mut out: Vec<RunReport> = Vec::with_capacity(runs.len());
        for (i, m) in runs.iter().enumerate() {
            let r = Resolved {
                name: m.step.clone(),
                digest: m.digest.clone(),
                parts: m.parts.clone(),
                inputs: Default::default(),
                key: OnceLock::new(),
            };
            let state = explain(self, &r, now).await?;
            let changed = match i.checked_sub(1) {
                Some(p) => crate::explain::changes(&m.parts, &runs[p].parts),
                None => Vec::new(),
            };
            out.push(RunReport {
                manifest: m.clone(),
                state,
                changed,
            });
        }
        Ok(out)
    }

    /// The manifests kept for a step name, oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`]; the cache's errors.
    async fn step_history(&self, name: &str) -> Result<Vec<Manifest>> {
        crate::step::check_name(name)?;
        Ok(match crate::manifest::read_history(self, name).await? {
            Stored::Known(runs) => runs,
            Stored::Foreign(_) => Vec::new(),
        })
    }

    /// Hits, misses, bytes served and time saved, per step name and in
    /// total, over every process that used this cache (see
    /// [`crate::StepStats`]). `name` limits it to one step name.
    ///
    /// # Errors
    ///
    /// The cache's errors.
    async fn step_stats(&self, name: Option<&str>) -> Result<StepStatsReport> {
        Ok(report(self, name).await?)
    }
}

impl<C: Cache + ?Sized> StepExt for C {}

/// The part of [`StepExt::run`] that may compute: the backend's single
/// flight, with the reason of a miss and the result's bookkeeping.
async fn run_computing<C, F, Fut, E>(
    cache: &C,
    r: std::sync::Arc<Resolved>,
    opts: RunOptions,
    compute: F,
    started: Instant,
    mut forced: Option<Explanation>,
) -> Result<Ran<Value>>
where
    C: Cache + ?Sized,
    F: FnOnce() -> Fut + Send,
    Fut: std::future::Future<Output = std::result::Result<Value, E>> + Send,
    E: Into<BoxError> + Send,
{
    let key = r.key();
    // The computation waits here until a path takes it: a read that
    // finds the entry corrupt leaves it for the computation that follows.
    let cell = Mutex::new(Some(compute));
    let take = || cell.lock().unwrap_or_else(|p| p.into_inner()).take();
    loop {
        if let Some(why) = forced.take() {
            let f = take().expect("a forced computation runs at most once");
            let t = Instant::now();
            let value = f().await.map_err(|e| {
                Error::Cache(etl_cache_core::Error::Init {
                    key: key.clone(),
                    source: e.into(),
                })
            })?;
            let took = t.elapsed();
            value.check(&key)?;
            if let Some(what) = r.changed_input().await {
                tracing::warn!(step = %r.name, "{}", InputChanged(what));
                return Ok(Ran {
                    value,
                    outcome: Outcome::Computed { took, why },
                });
            }
            cache.set(&key, value.clone(), opts.set).await?;
            finish_miss(cache, &r, &opts, took, &value).await;
            return Ok(Ran {
                value,
                outcome: Outcome::Computed { took, why },
            });
        }
        let slot: Mutex<Option<(Explanation, Duration)>> = Mutex::new(None);
        // A result computed from inputs that changed meanwhile: kept
        // here for this caller, never stored.
        let unstored: Mutex<Option<Value>> = Mutex::new(None);
        let init = {
            let (slot, unstored, r, key, now, take) =
                (&slot, &unstored, &r, &key, opts.clock.now(), &take);
            Box::pin(async move {
                let why = explain_absent(cache, r, now)
                    .await
                    .unwrap_or_else(|e| unexplained(r, e));
                let Some(f) = take() else {
                    return Err(BoxError::from("the step's computation was already used"));
                };
                let t = Instant::now();
                let value = f().await.map_err(|e| -> BoxError { e.into() })?;
                let took = t.elapsed();
                if let Err(e) = value.check(key) {
                    return Err(Box::new(Refused(e)) as BoxError);
                }
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some((why, took));
                if let Some(what) = r.changed_input().await {
                    *unstored.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
                    return Err(Box::new(InputChanged(what)) as BoxError);
                }
                Ok::<Value, BoxError>(value)
            })
        };
        match cache.get_or_insert_boxed(&key, opts.set, init).await {
            Ok(value) => {
                let computed = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some((why, took)) = computed {
                    finish_miss(cache, &r, &opts, took, &value).await;
                    return Ok(Ran {
                        value,
                        outcome: Outcome::Computed { took, why },
                    });
                }
                let ended = Instant::now();
                let took = ended - started;
                let saved = finish_hit(cache, &r, ended, took, None, || value_len(&value)).await;
                return Ok(Ran {
                    value,
                    outcome: Outcome::Hit {
                        took,
                        saved_seconds: saved,
                    },
                });
            }
            Err(etl_cache_core::Error::Corrupt { key: k, reason }) => {
                // The backend removed the entry. Compute it again, once,
                // unless the computation already ran (the corruption was
                // found after it): then report it.
                if cell.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
                    return Err(Error::Cache(etl_cache_core::Error::Corrupt {
                        key: k,
                        reason,
                    }));
                }
                forced = Some(corrupt(cache, &r, reason).await);
            }
            Err(e) => {
                let kept = unstored.lock().unwrap_or_else(|p| p.into_inner()).take();
                let computed = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let (Some(value), Some((why, took))) = (kept, computed) {
                    tracing::warn!(step = %r.name, "{}", unwrap_refused(e));
                    return Ok(Ran {
                        value,
                        outcome: Outcome::Computed { took, why },
                    });
                }
                return Err(unwrap_refused(e));
            }
        }
    }
}

fn miss_delta(took: Duration) -> StepStats {
    StepStats {
        misses: 1,
        compute_seconds: took.as_secs_f64(),
        ..StepStats::default()
    }
}

/// A miss whose reason could not be read: the run goes on.
fn unexplained(r: &Resolved, e: etl_cache_core::Error) -> Explanation {
    tracing::warn!(step = %r.name, error = %e, "could not read why the step missed");
    Explanation::Unexplained {
        error: e.to_string(),
    }
}

/// Records a computed result's manifest, history line and tally. What
/// explains results never fails the result: a cache that refuses these
/// writes (read-only credentials, a lock held too long) is logged. The
/// records are written by a task of their own where the cache gives a
/// handle for it ([`Cache::handle`]) and a Tokio runtime runs: a caller
/// dropped once its result is stored does not leave the result without
/// its manifest.
async fn finish_miss<C: Cache + ?Sized>(
    cache: &C,
    r: &Resolved,
    opts: &RunOptions,
    took: Duration,
    value: &Value,
) {
    finish(
        cache,
        r,
        opts.history,
        took,
        value.kind().as_str(),
        value_len(value),
    )
    .await;
}

/// [`finish_miss`] for a result of `kind` and `len` bytes (a stream's too).
async fn finish<C: Cache + ?Sized>(
    cache: &C,
    r: &Resolved,
    keep: usize,
    took: Duration,
    kind: &'static str,
    len: u64,
) {
    match background(cache) {
        Some((handle, rt)) => {
            let r = r.clone();
            let task = rt.spawn(async move {
                record_miss(handle.as_ref(), &r, keep, took, kind, len).await;
            });
            let _ = task.await;
        }
        None => record_miss(cache, r, keep, took, kind, len).await,
    }
}

/// What [`finish_miss`] writes.
async fn record_miss<C: Cache + ?Sized>(
    cache: &C,
    r: &Resolved,
    keep: usize,
    took: Duration,
    kind: &'static str,
    len: u64,
) {
    let recorded = async {
        let expires = cache.head(&r.key()).await?.and_then(|m| m.expires);
        let m = Manifest::new(r, took, SystemTime::now(), expires, kind, len);
        write_run(cache, &m, keep).await?;
        record(cache, &r.name, miss_delta(took)).await?;
        remember(
            cache,
            &r.name,
            &r.digest,
            Instant::now(),
            (m.compute_seconds, m.bytes),
        );
        Ok::<(), etl_cache_core::Error>(())
    };
    if let Err(e) = recorded.await {
        tracing::warn!(step = %r.name, error = %e, "could not record the step's run");
    }
}

/// The time a hit saved, recorded in this process's tally. As for
/// [`finish_miss`], a failure to read the manifest or write the tally is
/// logged, and the hit is served all the same (having saved 0 s when the
/// manifest cannot be read).
async fn finish_hit<C: Cache + ?Sized>(
    cache: &C,
    r: &Resolved,
    ended: Instant,
    took: Duration,
    known: Option<(f64, u64)>,
    len: impl FnOnce() -> u64 + Send,
) -> f64 {
    // The clock as of the tally's write: read again after a manifest read,
    // which may take a network round trip.
    let mut now = ended;
    let (saved, bytes) = match known.or_else(|| remembered(cache, &r.name, &r.digest, ended)) {
        Some((seconds, bytes)) => (seconds - took.as_secs_f64(), bytes),
        // Boxed: a read's state is large, and the hits that find the
        // manifest remembered should not carry it.
        None => match Box::pin(read_manifest(cache, &r.name, &r.digest)).await {
            Ok(Some(Stored::Known(m))) => {
                now = Instant::now();
                remember(cache, &r.name, &r.digest, now, (m.compute_seconds, m.bytes));
                (m.compute_seconds - took.as_secs_f64(), m.bytes)
            }
            Ok(_) => (0.0, len()),
            Err(e) => {
                tracing::warn!(step = %r.name, error = %e, "could not read the step's manifest");
                (0.0, len())
            }
        },
    };
    let tallied = record_hit(
        cache,
        &r.name,
        &r.digest,
        now,
        StepStats {
            hits: 1,
            bytes_served: bytes,
            saved_seconds: saved,
            ..StepStats::default()
        },
    )
    .await;
    if let Err(e) = tallied {
        tracing::warn!(step = %r.name, error = %e, "could not record the step's hit");
    }
    saved
}

/// The computing half of [`StepExt::run_stream`], run by the one task of
/// this process whose turn it is: compute, store, keep the manifest, and
/// hand out the stored bytes.
async fn compute_stream<C, F, Fut, E>(
    cache: &C,
    r: &Resolved,
    opts: RunOptions,
    chunk_size: usize,
    compute: F,
    why: Explanation,
) -> Result<Ran<GetStream>>
where
    C: Cache + ?Sized,
    F: FnOnce() -> Fut + Send,
    Fut: std::future::Future<Output = std::result::Result<ByteStream, E>> + Send,
    E: Into<BoxError> + Send,
{
    let key = r.key();
    let t = Instant::now();
    let stream = compute().await.map_err(|e| {
        Error::Cache(etl_cache_core::Error::Init {
            key: key.clone(),
            source: e.into(),
        })
    })?;
    let meta = cache.set_stream(&key, stream, opts.set).await?;
    let took = t.elapsed();
    finish(cache, r, opts.history, took, "stream", meta.logical_len).await;
    let value = cache.get_stream(&key, chunk_size).await?.ok_or_else(|| {
        etl_cache_core::Error::Corrupt {
            key: key.clone(),
            reason: "the entry vanished right after it was written".into(),
        }
    })?;
    Ok(Ran {
        value,
        outcome: Outcome::Computed { took, why },
    })
}
