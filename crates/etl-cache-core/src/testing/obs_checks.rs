//! The contract checks of what every backend reports of its operations
//! (see [`crate::backend::obs`]): one span per operation with its backend, key,
//! outcome and bytes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tracing::instrument::WithSubscriber;
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Event, Metadata, Subscriber};

use super::harness::Harness;
use crate::{CacheExt, SetOptions, Value};

/// A span as the recorder saw it.
#[derive(Debug, Clone, Default)]
pub struct SeenSpan {
    /// The span's name.
    pub name: String,
    /// Its fields, as text.
    pub fields: BTreeMap<String, String>,
    /// The span it was created in, if any.
    pub parent: Option<u64>,
    meta: Option<&'static Metadata<'static>>,
}

impl SeenSpan {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// A `tracing` subscriber that keeps every span and event, for checks.
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    spans: Arc<Mutex<Vec<SeenSpan>>>,
    events: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
    next: Arc<AtomicU64>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

thread_local! {
    static ENTERED: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let parent = match attrs.parent() {
            Some(p) => Some(p.into_u64()),
            None if attrs.is_contextual() => ENTERED.with(|e| e.borrow().last().copied()),
            None => None,
        };
        let mut spans = self.spans.lock().unwrap();
        spans.push(SeenSpan {
            name: attrs.metadata().name().to_owned(),
            fields,
            parent,
            meta: Some(attrs.metadata()),
        });
        self.next.fetch_add(1, Ordering::Relaxed);
        Id::from_u64(spans.len() as u64)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut spans = self.spans.lock().unwrap();
        if let Some(s) = spans.get_mut(span.into_u64() as usize - 1) {
            values.record(&mut Fields(&mut s.fields));
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        if let Some(span) = ENTERED.with(|e| e.borrow().last().copied()) {
            fields.insert("in_span".into(), span.to_string());
        }
        self.events.lock().unwrap().push(fields);
    }

    /// What `Span::current()` asks (and `obs::carry` relies on).
    fn current_span(&self) -> tracing_core::span::Current {
        let Some(id) = ENTERED.with(|e| e.borrow().last().copied()) else {
            return tracing_core::span::Current::none();
        };
        let spans = self.spans.lock().unwrap();
        match spans.get(id as usize - 1).and_then(|s| s.meta) {
            Some(meta) => tracing_core::span::Current::new(Id::from_u64(id), meta),
            None => tracing_core::span::Current::none(),
        }
    }

    fn enter(&self, span: &Id) {
        ENTERED.with(|e| e.borrow_mut().push(span.into_u64()));
    }

    fn exit(&self, span: &Id) {
        ENTERED.with(|e| {
            let mut e = e.borrow_mut();
            if let Some(at) = e.iter().rposition(|s| *s == span.into_u64()) {
                e.remove(at);
            }
        });
    }
}

impl Recorder {
    /// A new, empty recorder.
    pub fn new() -> Recorder {
        // While one dispatcher exists in the process, `tracing` decides
        // whether a callsite is enabled from the current thread's
        // dispatcher alone, and caches the answer: a span first met on a
        // thread this recorder is not the default of would stay disabled
        // for good. A second dispatcher, kept for the life of the process,
        // makes it ask every dispatcher.
        static KEEPER: std::sync::OnceLock<Dispatch> = std::sync::OnceLock::new();
        KEEPER.get_or_init(|| Dispatch::new(Recorder::default()));
        Recorder::default()
    }

    /// Every span seen so far, in creation order (ids are positions + 1).
    pub fn spans(&self) -> Vec<SeenSpan> {
        self.spans.lock().unwrap().clone()
    }

    /// Every event seen so far.
    pub fn events(&self) -> Vec<BTreeMap<String, String>> {
        self.events.lock().unwrap().clone()
    }

    /// The outermost operation spans (those of the cache under test, not of
    /// the tiers or handles it calls) with the given op and key.
    pub fn ops(&self, op: &str, key: &str) -> Vec<SeenSpan> {
        let spans = self.spans();
        spans
            .iter()
            .filter(|s| s.name == "cache_op" && s.field("op") == Some(op))
            .filter(|s| s.field("key") == Some(key))
            .filter(|s| {
                // Outermost: no operation span above it.
                let mut up = s.parent;
                while let Some(p) = up {
                    let parent = &spans[p as usize - 1];
                    if parent.name == "cache_op" {
                        return false;
                    }
                    up = parent.parent;
                }
                true
            })
            .cloned()
            .collect()
    }

    /// The one outermost span of `op` on `key`, with its outcome and bytes.
    pub fn one(&self, op: &str, key: &str) -> (String, Option<String>) {
        let found = self.ops(op, key);
        assert_eq!(
            found.len(),
            1,
            "one `{op}` span for key {key:?}, found {found:#?}"
        );
        let s = &found[0];
        assert!(
            s.field("backend").is_some_and(|b| !b.is_empty()),
            "the span names its backend: {s:?}"
        );
        (
            s.field("outcome")
                .unwrap_or_else(|| panic!("`{op}` on {key:?} recorded no outcome: {s:?}"))
                .to_owned(),
            s.field("bytes").map(str::to_owned),
        )
    }
}

/// Each operation of the cache runs in one span that names the backend, the
/// operation and the key, and ends with the outcome and the bytes.
pub async fn operations_are_observed(h: &Harness) {
    let rec = Recorder::new();
    let dispatch = Dispatch::new(rec.clone());
    let c = h.cache.clone();
    let clock = h.clock.clone();
    async move {
        let opts = SetOptions::new();
        c.set("obs/a", Value::Bytes(vec![7u8; 100].into()), opts)
            .await
            .unwrap();
        assert_eq!(
            rec.one("set", "obs/a"),
            ("stored".into(), Some("100".into()))
        );

        c.get("obs/a").await.unwrap().unwrap();
        assert_eq!(rec.one("get", "obs/a"), ("hit".into(), Some("100".into())));
        assert!(c.get("obs/none").await.unwrap().is_none());
        assert_eq!(rec.one("get", "obs/none").0, "miss");

        let s = c.get_stream("obs/a", 10).await.unwrap().unwrap();
        assert_eq!(
            s.map(|c| c.unwrap().len())
                .collect::<Vec<_>>()
                .await
                .iter()
                .sum::<usize>(),
            100
        );
        assert_eq!(
            rec.one("get_stream", "obs/a"),
            ("hit".into(), Some("100".into()))
        );

        c.set(
            "obs/short",
            Value::Text("soon gone".into()),
            SetOptions::new().ttl(Duration::from_secs(10)),
        )
        .await
        .unwrap();
        clock.advance(Duration::from_secs(11));
        assert!(c.get("obs/short").await.unwrap().is_none());
        assert_eq!(rec.one("get", "obs/short").0, "expired");

        assert!(c.delete("obs/a").await.unwrap());
        assert_eq!(rec.one("delete", "obs/a").0, "deleted");
        assert!(!c.delete("obs/none").await.unwrap());
        assert_eq!(rec.one("delete", "obs/none").0, "absent");

        let v = c
            .get_or_insert_with("obs/computed", opts, || async {
                Value::Text("made".into())
            })
            .await
            .unwrap();
        assert_eq!(v, Value::Text("made".into()));
        assert_eq!(rec.one("get_or_insert", "obs/computed").0, "computed");
        c.get_or_insert_with("obs/computed", opts, || async {
            Value::Text("not again".into())
        })
        .await
        .unwrap();
        let both = rec.ops("get_or_insert", "obs/computed");
        assert_eq!(both.len(), 2);
        assert_eq!(both[1].field("outcome"), Some("hit"));

        assert!(c.get("bad\0key").await.is_err());
        assert_eq!(rec.one("get", "bad\0key").0, "error");

        // A future dropped before it completes is reported as cancelled.
        {
            let mut pending =
                Box::pin(c.get_or_insert_with("obs/dropped", opts, std::future::pending::<Value>));
            for _ in 0..50 {
                if futures::poll!(pending.as_mut()).is_ready() {
                    panic!("a computation that never ends completed");
                }
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(rec.one("get_or_insert", "obs/dropped").0, "cancelled");

        let listed: Vec<_> = c.list(Some("obs/")).collect().await;
        assert!(!listed.is_empty());
        let list = rec
            .spans()
            .into_iter()
            .filter(|s| s.field("op") == Some("list") && s.field("prefix") == Some("obs/"))
            .collect::<Vec<_>>();
        assert!(
            list.iter().any(|s| s.field("outcome") == Some("done")),
            "a listing read to its end is done: {list:?}"
        );
    }
    .with_subscriber(dispatch)
    .await;
}

/// Operations running at once on one handle, and on a second handle where
/// there is one, each report their own outcome: what one of them meets (an
/// expired entry) never shows in another's span.
pub async fn concurrent_operations_report_their_own_outcome(h: &Harness) {
    let rec = Recorder::new();
    let dispatch = Dispatch::new(rec.clone());
    let handles: Vec<_> = std::iter::once(h.cache.clone())
        .chain(h.second.clone())
        .collect();
    for i in 0..16 {
        let ttl = (i % 2 == 0).then_some(Duration::from_secs(10));
        let mut opts = SetOptions::new();
        if let Some(ttl) = ttl {
            opts = opts.ttl(ttl);
        }
        h.cache
            .set(
                &format!("obs/c{i}"),
                Value::Text(format!("value {i}")),
                opts,
            )
            .await
            .unwrap();
    }
    h.clock.advance(Duration::from_secs(11));
    let mut tasks = Vec::new();
    for i in 0..16 {
        let c = handles[i % handles.len()].clone();
        tasks.push(tokio::spawn(
            async move { c.get(&format!("obs/c{i}")).await.unwrap() }
                .with_subscriber(dispatch.clone()),
        ));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let got = t.await.unwrap();
        let key = format!("obs/c{i}");
        let (outcome, bytes) = rec.one("get", &key);
        if i % 2 == 0 {
            assert!(got.is_none());
            assert_eq!(outcome, "expired", "{key}");
        } else {
            assert_eq!(got, Some(Value::Text(format!("value {i}"))));
            assert_eq!(outcome, "hit", "{key}");
            assert_eq!(bytes, Some(format!("value {i}").len().to_string()));
        }
    }
}
