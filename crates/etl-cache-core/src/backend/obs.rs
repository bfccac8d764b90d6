//! What every backend reports of its operations: a `tracing` span per
//! operation and, behind the `metrics` feature, counters and latency
//! histograms through the `metrics` facade.
//!
//! # Spans
//!
//! Each operation of a backend (`get`, `set`, `get_stream`, ...) runs in a
//! span named `cache_op`, target `etl_cache`, level `DEBUG`, with the fields
//! `backend` (`memory`, `disk`, `object`, `tiered`), `op`, `key` (absent for
//! `clear`, `purge_expired` and `stats`), then, once it ends, `outcome` (see
//! [`Outcome`]) and `bytes` (the value's length, decompressed, for a hit or a
//! write). Events a backend logs inside an operation belong to its span,
//! including those logged on a blocking thread; a [`TieredCache`]'s span
//! holds those of its tiers. Entries removed to respect the capacity are
//! reported by an event (`evicted`) in the span of the write that made room.
//!
//! With no subscriber interested in the span and the `metrics` feature off,
//! an operation pays one check of the span's callsite and nothing else.
//!
//! # Metrics
//!
//! With the `metrics` feature, through whatever recorder is installed
//! (Prometheus, OpenTelemetry, ...):
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `etl_cache_operations_total` | counter | `backend`, `op`, `outcome` |
//! | `etl_cache_operation_seconds` | histogram | `backend`, `op` |
//! | `etl_cache_bytes_total` | counter | `backend`, `op` (bytes of hits and writes) |
//! | `etl_cache_evictions_total` | counter | `backend` |
//!
//! [`TieredCache`]: https://docs.rs/etl-cache-tiered

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use futures::future::Either;
use tracing::Span;
use tracing::field::Empty;

use crate::{EntryMeta, Error, GetStream, InitFuture, Result, Stats, Value};

/// What one operation came to, as its span's `outcome` field and its
/// metrics' `outcome` label say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// A read found a live entry.
    Hit,
    /// A read found nothing.
    Miss,
    /// A read found an expired entry (and removed it): a miss.
    Expired,
    /// A read found a damaged entry: an error, and the entry is removed.
    Corrupt,
    /// A write published its entry.
    Stored,
    /// `get_or_insert_with` ran its computation (and stored the result).
    Computed,
    /// `delete` removed an entry.
    Deleted,
    /// `delete` found nothing to remove.
    Absent,
    /// An operation with no hit or miss (`clear`, `purge_expired`, `stats`,
    /// `list`) completed.
    Done,
    /// The operation failed (other than [`Outcome::Corrupt`]).
    Error,
    /// The operation's future was dropped before it completed.
    Cancelled,
}

impl Outcome {
    /// The name used in spans and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Expired => "expired",
            Outcome::Corrupt => "corrupt",
            Outcome::Stored => "stored",
            Outcome::Computed => "computed",
            Outcome::Deleted => "deleted",
            Outcome::Absent => "absent",
            Outcome::Done => "done",
            Outcome::Error => "error",
            Outcome::Cancelled => "cancelled",
        }
    }

    fn code(self) -> u8 {
        self as u8 + 1
    }

    fn from_code(code: u8) -> Option<Outcome> {
        const ALL: [Outcome; 11] = [
            Outcome::Hit,
            Outcome::Miss,
            Outcome::Expired,
            Outcome::Corrupt,
            Outcome::Stored,
            Outcome::Computed,
            Outcome::Deleted,
            Outcome::Absent,
            Outcome::Done,
            Outcome::Error,
            Outcome::Cancelled,
        ];
        ALL.get(usize::from(code).checked_sub(1)?).copied()
    }
}

/// What an operation's result says of its outcome and of the bytes it moved.
pub trait Report {
    /// The outcome and the value's length (decompressed), when there is one.
    fn report(&self) -> (Outcome, Option<u64>);
}

/// The length of a value that has one without serializing it (a JSON
/// value's would cost its serialization: none).
fn value_len(v: &Value) -> Option<u64> {
    match v {
        Value::Text(t) => Some(t.len() as u64),
        Value::Bytes(b) => Some(b.len() as u64),
        Value::Json(_) => None,
    }
}

impl Report for Option<Value> {
    fn report(&self) -> (Outcome, Option<u64>) {
        match self {
            Some(v) => (Outcome::Hit, value_len(v)),
            None => (Outcome::Miss, None),
        }
    }
}

impl Report for Option<(EntryMeta, Value)> {
    fn report(&self) -> (Outcome, Option<u64>) {
        match self {
            Some((m, _)) => (Outcome::Hit, Some(m.logical_len)),
            None => (Outcome::Miss, None),
        }
    }
}

impl Report for Option<(EntryMeta, Bytes)> {
    fn report(&self) -> (Outcome, Option<u64>) {
        match self {
            Some((_, b)) => (Outcome::Hit, Some(b.len() as u64)),
            None => (Outcome::Miss, None),
        }
    }
}

impl Report for Option<GetStream> {
    fn report(&self) -> (Outcome, Option<u64>) {
        match self {
            Some(s) => (Outcome::Hit, Some(s.meta().logical_len)),
            None => (Outcome::Miss, None),
        }
    }
}

impl Report for Option<EntryMeta> {
    fn report(&self) -> (Outcome, Option<u64>) {
        match self {
            Some(_) => (Outcome::Hit, None),
            None => (Outcome::Miss, None),
        }
    }
}

/// A journal lookup: `done` when a removal of the key is remembered,
/// `absent` when none is.
impl Report for Option<crate::Removal> {
    fn report(&self) -> (Outcome, Option<u64>) {
        match self {
            Some(_) => (Outcome::Done, None),
            None => (Outcome::Absent, None),
        }
    }
}

impl Report for EntryMeta {
    fn report(&self) -> (Outcome, Option<u64>) {
        (Outcome::Stored, Some(self.logical_len))
    }
}

impl Report for Value {
    fn report(&self) -> (Outcome, Option<u64>) {
        (Outcome::Hit, value_len(self))
    }
}

impl Report for bool {
    fn report(&self) -> (Outcome, Option<u64>) {
        match self {
            true => (Outcome::Deleted, None),
            false => (Outcome::Absent, None),
        }
    }
}

impl Report for u64 {
    fn report(&self) -> (Outcome, Option<u64>) {
        (Outcome::Done, None)
    }
}

impl Report for Stats {
    fn report(&self) -> (Outcome, Option<u64>) {
        (Outcome::Done, None)
    }
}

/// What the code inside an operation says of it: an outcome its result
/// cannot show (an expired entry reads as a miss) and the entries it
/// evicted.
#[derive(Debug, Default)]
struct Note {
    outcome: AtomicU8,
    evicted: AtomicU64,
}

tokio::task_local! {
    static NOTE: Arc<Note>;
}

thread_local! {
    /// The note of the operation a blocking thread works for (see [`carry`]).
    static CARRIED: RefCell<Option<Arc<Note>>> = const { RefCell::new(None) };
}

fn with_note(f: impl FnOnce(&Note)) {
    let mut f = Some(f);
    let _ = NOTE.try_with(|n| {
        if let Some(f) = f.take() {
            f(n)
        }
    });
    if let Some(f) = f {
        CARRIED.with(|c| {
            if let Some(n) = c.borrow().as_ref() {
                f(n)
            }
        });
    }
}

/// Says that the operation under way came to `outcome` whatever its result
/// shows; for backends (an expired entry read as `None`: [`Outcome::Expired`]).
/// Does nothing outside an observed operation.
pub fn note(outcome: Outcome) {
    with_note(|n| n.outcome.store(outcome.code(), Ordering::Relaxed));
}

/// Reports `count` entries removed to respect the capacity limits, in the
/// span of the operation under way (on a blocking thread too, see [`carry`]).
pub fn evicted(backend: &'static str, count: u64, bytes: u64) {
    if count == 0 {
        return;
    }
    tracing::debug!(target: "etl_cache", backend, count, bytes, "evicted");
    // Inside an operation, the count goes out with its other metrics (from
    // the task that awaits it, whose recorder that is).
    let mut noted = false;
    with_note(|n| {
        n.evicted.fetch_add(count, Ordering::Relaxed);
        noted = true;
    });
    #[cfg(feature = "metrics")]
    if !noted {
        metrics::counter!("etl_cache_evictions_total", "backend" => backend).increment(count);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (backend, noted);
}

/// The operation under way, to carry onto a blocking thread: its span (with
/// the subscriber it reports to) and its note.
#[derive(Debug)]
pub struct Carried {
    span: Span,
    dispatch: Option<tracing::Dispatch>,
    note: Option<Arc<Note>>,
}

/// Takes the current operation along; [`Carried::run`] on the blocking
/// thread makes it current there. For backends that do their work on
/// `spawn_blocking`.
pub fn carry() -> Carried {
    let note = NOTE.try_with(Arc::clone).ok();
    let span = Span::current();
    // Nothing observes this operation: nothing to carry (and no scoped
    // dispatcher to set, which would slow every later `tracing` call).
    let dispatch = match (&note, span.is_none()) {
        (None, true) => None,
        _ => Some(tracing::dispatcher::get_default(|d| d.clone())),
    };
    Carried {
        span,
        dispatch,
        note,
    }
}

impl Carried {
    /// Runs `f` inside the carried operation.
    pub fn run<T>(self, f: impl FnOnce() -> T) -> T {
        let Carried {
            span,
            dispatch,
            note,
        } = self;
        let inner = move || {
            let _entered = span.enter();
            match note {
                None => f(),
                Some(note) => {
                    let before = CARRIED.with(|c| c.replace(Some(note)));
                    let _restore = Restore(before);
                    f()
                }
            }
        };
        match dispatch {
            Some(dispatch) => tracing::dispatcher::with_default(&dispatch, inner),
            None => inner(),
        }
    }
}

struct Restore(Option<Arc<Note>>);

impl Drop for Restore {
    fn drop(&mut self) {
        let before = self.0.take();
        CARRIED.with(|c| *c.borrow_mut() = before);
    }
}

/// Runs one operation of `backend` in its span, and reports its outcome.
/// For backends: every method of their [`Cache`](crate::Cache)
/// implementation goes through this (or [`observe_init`],
/// [`observe_stream`]).
///
/// Not an `async fn`: when nothing observes, `fut` is returned as it is
/// (an `async fn` would move the whole operation's state once more; on a
/// 1 KiB DiskCache hit that was about 1,000 instructions in 15,000).
#[inline(always)]
pub fn observe<T, F>(
    backend: &'static str,
    op: &'static str,
    key: Option<&str>,
    fut: F,
) -> Either<F, impl Future<Output = Result<T>>>
where
    T: Report,
    F: Future<Output = Result<T>>,
{
    let span = op_span(backend, op, key);
    if span.is_disabled() && !cfg!(feature = "metrics") {
        return Either::Left(fut);
    }
    Either::Right(run(span, backend, op, Arc::default(), fut))
}

/// [`observe`] for `get_or_insert_boxed`: `f` gets `init` back, wrapped so
/// that running it makes the outcome [`Outcome::Computed`].
pub async fn observe_init<'a, F, Fut>(
    backend: &'static str,
    key: &str,
    init: InitFuture<'a>,
    f: F,
) -> Result<Value>
where
    F: FnOnce(InitFuture<'a>) -> Fut,
    Fut: Future<Output = Result<Value>>,
{
    let span = op_span(backend, "get_or_insert", Some(key));
    if span.is_disabled() && !cfg!(feature = "metrics") {
        return f(init).await;
    }
    let note = Arc::new(Note::default());
    let noted = note.clone();
    let init: InitFuture<'a> = Box::pin(async move {
        let v = init.await;
        if v.is_ok() {
            noted
                .outcome
                .store(Outcome::Computed.code(), Ordering::Relaxed);
        }
        v
    });
    run(span, backend, "get_or_insert", note, f(init)).await
}

#[inline(always)]
fn op_span(backend: &'static str, op: &'static str, key: Option<&str>) -> Span {
    match key {
        Some(key) => tracing::debug_span!(
            target: "etl_cache", "cache_op", backend, op, key, outcome = Empty, bytes = Empty
        ),
        None => tracing::debug_span!(
            target: "etl_cache", "cache_op", backend, op, outcome = Empty, bytes = Empty
        ),
    }
}

async fn run<T, F>(
    span: Span,
    backend: &'static str,
    op: &'static str,
    note: Arc<Note>,
    fut: F,
) -> Result<T>
where
    T: Report,
    F: Future<Output = Result<T>>,
{
    // The operation that called this one (a tier of a `TieredCache`): an
    // expiry met here is one it met too.
    let outer = NOTE.try_with(Arc::clone).ok();
    let mut watch = Watch::new(span.clone(), backend, op, note);
    let result = NOTE
        .scope(
            watch.note.clone(),
            tracing::Instrument::instrument(fut, span),
        )
        .await;
    let (outcome, bytes) = match &result {
        Ok(v) => v.report(),
        Err(Error::Corrupt { .. }) => (Outcome::Corrupt, None),
        Err(_) => (Outcome::Error, None),
    };
    if watch.finish(outcome, bytes) == Outcome::Expired
        && let Some(outer) = outer
    {
        let _ = outer.outcome.compare_exchange(
            0,
            Outcome::Expired.code(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
    result
}

/// The span and metrics of one operation; reports it as cancelled when
/// dropped before [`Watch::finish`].
struct Watch {
    span: Span,
    backend: &'static str,
    op: &'static str,
    note: Arc<Note>,
    #[cfg(feature = "metrics")]
    start: std::time::Instant,
    done: bool,
}

impl Watch {
    fn new(span: Span, backend: &'static str, op: &'static str, note: Arc<Note>) -> Watch {
        Watch {
            span,
            backend,
            op,
            note,
            #[cfg(feature = "metrics")]
            start: std::time::Instant::now(),
            done: false,
        }
    }

    /// Records the outcome (which a note may refine) and returns it.
    fn finish(&mut self, outcome: Outcome, bytes: Option<u64>) -> Outcome {
        self.done = true;
        // A note says more than the result: a miss that met an expired
        // entry, a value that was computed rather than found.
        let outcome = match (
            outcome,
            Outcome::from_code(self.note.outcome.load(Ordering::Relaxed)),
        ) {
            (Outcome::Miss, Some(Outcome::Expired)) => Outcome::Expired,
            (Outcome::Hit, Some(Outcome::Computed)) => Outcome::Computed,
            (outcome, _) => outcome,
        };
        self.span.record("outcome", outcome.as_str());
        if let Some(bytes) = bytes {
            self.span.record("bytes", bytes);
        }
        #[cfg(feature = "metrics")]
        {
            let (backend, op) = (self.backend, self.op);
            metrics::counter!("etl_cache_operations_total", "backend" => backend, "op" => op, "outcome" => outcome.as_str())
                .increment(1);
            metrics::histogram!("etl_cache_operation_seconds", "backend" => backend, "op" => op)
                .record(self.start.elapsed().as_secs_f64());
            if let Some(bytes) = bytes {
                metrics::counter!("etl_cache_bytes_total", "backend" => backend, "op" => op)
                    .increment(bytes);
            }
            let evicted = self.note.evicted.load(Ordering::Relaxed);
            if evicted > 0 {
                metrics::counter!("etl_cache_evictions_total", "backend" => backend)
                    .increment(evicted);
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (self.backend, self.op);
        outcome
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.finish(Outcome::Cancelled, None);
        }
    }
}

/// A listing in the span of its operation; reports how many entries it
/// gave (as `bytes`: none) when it ends. For backends.
pub fn observe_stream<S, T>(
    backend: &'static str,
    op: &'static str,
    prefix: Option<&str>,
    stream: S,
) -> futures::stream::BoxStream<'static, Result<T>>
where
    S: Stream<Item = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    use futures::StreamExt;
    let span = tracing::debug_span!(
        target: "etl_cache", "cache_op", backend, op, prefix, outcome = Empty, bytes = Empty
    );
    if span.is_disabled() && !cfg!(feature = "metrics") {
        return stream.boxed();
    }
    let watch = Watch::new(span, backend, op, Arc::default());
    Observed {
        stream: stream.boxed(),
        watch,
        failed: false,
    }
    .boxed()
}

struct Observed<T> {
    stream: futures::stream::BoxStream<'static, Result<T>>,
    watch: Watch,
    failed: bool,
}

impl<T> Stream for Observed<T> {
    type Item = Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.watch.done {
            return Poll::Ready(None);
        }
        let polled = {
            let _entered = this.watch.span.enter();
            this.stream.as_mut().poll_next(cx)
        };
        match &polled {
            Poll::Ready(Some(Err(_))) => this.failed = true,
            Poll::Ready(None) => {
                let outcome = if this.failed {
                    Outcome::Error
                } else {
                    Outcome::Done
                };
                let _ = this.watch.finish(outcome, None);
            }
            _ => {}
        }
        polled
    }
}
