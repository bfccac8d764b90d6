//! What a DiskCache reports through `tracing` and the `metrics` facade
//! (feature `metrics`): the counters and histograms an exporter sees, and
//! evictions in the span of the write that made room.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use etl_cache::{Cache, DiskCache, SetOptions, Value};
use etl_cache_core::testing::Recorder as SpanRecorder;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};
use tracing::instrument::WithSubscriber;

/// Keeps every counter's total and every histogram's samples, by name and labels.
#[derive(Default, Clone)]
struct Metrics {
    counters: Arc<Mutex<BTreeMap<String, Arc<AtomicU64>>>>,
    histograms: Arc<Mutex<BTreeMap<String, Arc<Samples>>>>,
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

struct Total(Arc<AtomicU64>);

impl metrics::CounterFn for Total {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

impl metrics::HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

/// `name{label=value,...}`, labels sorted.
fn name_of(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

/// The handle kept in `map` for `key`, made on the first use of the key.
fn handle_for<T: Default + Clone>(map: &Mutex<BTreeMap<String, T>>, key: &Key) -> T {
    map.lock().unwrap().entry(name_of(key)).or_default().clone()
}

impl metrics::Recorder for Metrics {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Total(handle_for(&self.counters, key))))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(handle_for(&self.histograms, key))
    }
}

impl Metrics {
    fn counter(&self, name: &str) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .get(name)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    fn samples(&self, name: &str) -> usize {
        self.histograms
            .lock()
            .unwrap()
            .get(name)
            .map_or(0, |s| s.0.lock().unwrap().len())
    }
}

// A current-thread runtime: the local recorder belongs to the test's thread,
// which polls every operation.
#[tokio::test]
async fn operations_feed_counters_and_latency_histograms() {
    let metrics = Metrics::default();
    let _guard = metrics::set_default_local_recorder(&metrics);
    let dir = tempfile::tempdir().unwrap();
    let cache = DiskCache::open(dir.path()).await.unwrap();

    cache
        .set(
            "m/a",
            Value::Bytes(vec![1u8; 4096].into()),
            SetOptions::new(),
        )
        .await
        .unwrap();
    for _ in 0..3 {
        assert!(cache.get("m/a").await.unwrap().is_some());
    }
    assert!(cache.get("m/missing").await.unwrap().is_none());
    assert!(cache.delete("m/a").await.unwrap());

    let c = |s: &str| metrics.counter(s);
    assert_eq!(
        c("etl_cache_operations_total{backend=disk,op=set,outcome=stored}"),
        1
    );
    assert_eq!(
        c("etl_cache_operations_total{backend=disk,op=get,outcome=hit}"),
        3
    );
    assert_eq!(
        c("etl_cache_operations_total{backend=disk,op=get,outcome=miss}"),
        1
    );
    assert_eq!(
        c("etl_cache_operations_total{backend=disk,op=delete,outcome=deleted}"),
        1
    );
    assert_eq!(c("etl_cache_bytes_total{backend=disk,op=get}"), 3 * 4096);
    assert_eq!(c("etl_cache_bytes_total{backend=disk,op=set}"), 4096);
    assert_eq!(
        metrics.samples("etl_cache_operation_seconds{backend=disk,op=get}"),
        4
    );
    assert_eq!(
        metrics.samples("etl_cache_operation_seconds{backend=disk,op=set}"),
        1
    );
}

/// Entries evicted to make room are counted, and reported in the span of
/// the write that evicted them, although eviction runs on a blocking thread.
#[tokio::test]
async fn evictions_are_counted_and_reported_in_the_writing_span() {
    let metrics = Metrics::default();
    let _guard = metrics::set_default_local_recorder(&metrics);
    let spans = SpanRecorder::new();
    let dir = tempfile::tempdir().unwrap();
    let cache = DiskCache::builder()
        .root(dir.path())
        .max_entries(3)
        .build()
        .await
        .unwrap();
    async {
        for i in 0..10 {
            cache
                .set(
                    &format!("e/{i}"),
                    Value::Text(format!("v{i}")),
                    SetOptions::new(),
                )
                .await
                .unwrap();
        }
    }
    .with_subscriber(tracing::Dispatch::new(spans.clone()))
    .await;
    let evicted = cache.stats().await.unwrap().evictions;
    assert!(
        evicted >= 7,
        "10 entries into 3 places evict at least 7: {evicted}"
    );
    assert_eq!(
        metrics.counter("etl_cache_evictions_total{backend=disk}"),
        evicted
    );
    let all = spans.spans();
    let reported: u64 = spans
        .events()
        .iter()
        .filter(|e| e.get("message").map(String::as_str) == Some("evicted"))
        .map(|e| {
            let at: usize = e["in_span"].parse().unwrap();
            let span = &all[at - 1];
            assert_eq!(span.fields.get("op").map(String::as_str), Some("set"));
            assert_eq!(span.fields.get("backend").map(String::as_str), Some("disk"));
            e["count"].parse::<u64>().unwrap()
        })
        .sum();
    assert_eq!(reported, evicted);
}
