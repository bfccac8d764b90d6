//! DataFusion: `cached_dataframe` computes once and then reads the cache,
//! on one handle and across handles; cached entries registered as tables
//! scan as their batches; an entry changed or gone between registration
//! and scan is a clear error naming the key.

#![cfg(feature = "datafusion")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::prelude::{DataFrame, SessionContext};
use etl_cache_arrow::datafusion::{CachedTable, cached_dataframe, register_cached_table};
use etl_cache_arrow::{ArrowCacheExt, ArrowOptions};
use etl_cache_core::{Cache, Error};
use etl_cache_fs::DiskCache;

fn orders_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("region", DataType::Utf8, false),
        Field::new("amount", DataType::Int64, false),
    ]))
}

fn orders(rows: usize) -> RecordBatch {
    let regions = ["north", "south", "east"];
    RecordBatch::try_new(
        orders_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                (0..rows).map(|i| regions[i % 3]),
            )) as ArrayRef,
            Arc::new(Int64Array::from_iter_values((0..rows).map(|i| i as i64))),
        ],
    )
    .unwrap()
}

/// A context with the table `orders` (in memory, 4 batches of 1,000 rows).
fn context() -> SessionContext {
    let ctx = SessionContext::new();
    let parts = vec![(0..4).map(|_| orders(1000)).collect()];
    let table = MemTable::try_new(orders_schema(), parts).unwrap();
    ctx.register_table("orders", Arc::new(table)).unwrap();
    ctx
}

const QUERY: &str = "SELECT region, count(*) AS n, sum(amount) AS total FROM orders GROUP BY region ORDER BY region";

/// The rows of `batches` as (region, n, total).
fn rows(batches: &[RecordBatch]) -> Vec<(String, i64, i64)> {
    let mut out = Vec::new();
    for b in batches {
        let region = b.column(0).as_string::<i32>();
        let n = b.column(1).as_primitive::<Int64Type>();
        let total = b.column(2).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            out.push((region.value(i).to_owned(), n.value(i), total.value(i)));
        }
    }
    out
}

fn expected() -> Vec<(String, i64, i64)> {
    let mut by: std::collections::BTreeMap<&str, (i64, i64)> = Default::default();
    for _ in 0..4 {
        for i in 0..1000usize {
            let e = by.entry(["north", "south", "east"][i % 3]).or_default();
            e.0 += 1;
            e.1 += i as i64;
        }
    }
    by.into_iter()
        .map(|(r, (n, t))| (r.to_owned(), n, t))
        .collect()
}

async fn disk(dir: &std::path::Path) -> Arc<dyn Cache> {
    Arc::new(DiskCache::open(dir).await.unwrap())
}

/// A cache in a new directory with `count` batches of `rows` orders each
/// under `key`; the directory lives as long as the handle returned with it.
async fn cache_with_orders(
    key: &str,
    count: usize,
    rows: usize,
) -> (tempfile::TempDir, Arc<dyn Cache>) {
    let dir = tempfile::tempdir().unwrap();
    let cache = disk(dir.path()).await;
    set_orders(&*cache, key, count, rows).await;
    (dir, cache)
}

/// The batches `sql` answers on `ctx`.
async fn collect_sql(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    ctx.sql(sql).await.unwrap().collect().await.unwrap()
}

/// [`QUERY`] on `ctx` through `cached_dataframe` under `key`, each
/// computation counted in `calls`.
async fn counted_query(
    ctx: &SessionContext,
    cache: Arc<dyn Cache>,
    key: &str,
    calls: &AtomicUsize,
) -> DataFrame {
    cached_dataframe(ctx, cache, key, ArrowOptions::new(), || async {
        calls.fetch_add(1, SeqCst);
        ctx.sql(QUERY).await
    })
    .await
    .unwrap()
}

/// Stores `count` batches of `rows` orders each under `key`.
async fn set_orders(cache: &dyn Cache, key: &str, count: usize, rows: usize) {
    let batches = (0..count).map(|_| Ok::<_, std::io::Error>(orders(rows)));
    cache
        .set_batches(
            key,
            orders_schema(),
            futures::stream::iter(batches),
            ArrowOptions::new(),
        )
        .await
        .unwrap();
}

/// The first call runs the query and stores its result; the next reads the
/// result from the cache (its compute is never called), on a new context
/// and a new handle as a new process would.
#[tokio::test]
async fn a_cached_dataframe_is_computed_once_and_then_read_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let calls = AtomicUsize::new(0);
    let ctx = context();
    let df = counted_query(&ctx, disk(dir.path()).await, "q/v1", &calls).await;
    assert_eq!(rows(&df.collect().await.unwrap()), expected());

    let ctx2 = context();
    let cache2 = disk(dir.path()).await;
    let df = counted_query(&ctx2, cache2.clone(), "q/v1", &calls).await;
    // The result can be queried further, like any DataFrame.
    let north = df
        .filter(datafusion::prelude::col("region").eq(datafusion::prelude::lit("north")))
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(rows(&north), vec![expected()[1].clone()]);
    assert_eq!(calls.load(SeqCst), 1, "the second call computed nothing");
    assert_eq!(
        cache2.head("q/v1").await.unwrap().unwrap().kind,
        etl_cache_core::Kind::Arrow
    );
}

/// Eight tasks on one handle and eight on a second handle on the same
/// directory miss at once: the query runs once and every task gets its
/// result.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_on_one_and_two_handles_compute_once() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let (a, b) = (disk(dir.path()).await, disk(dir.path()).await);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
        let calls = calls.clone();
        tasks.push(tokio::spawn(async move {
            let ctx = context();
            let df = cached_dataframe(&ctx, cache, "q/shared", ArrowOptions::new(), || async {
                calls.fetch_add(1, SeqCst);
                tokio::task::yield_now().await;
                ctx.sql(QUERY).await
            })
            .await
            .unwrap();
            rows(&df.collect().await.unwrap())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), expected());
    }
    assert_eq!(calls.load(SeqCst), 1);
}

/// A query that fails stores nothing; the next call computes.
#[tokio::test]
async fn a_failing_query_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = disk(dir.path()).await;
    let ctx = context();
    let err = cached_dataframe(
        &ctx,
        cache.clone(),
        "q/bad",
        ArrowOptions::new(),
        || async { ctx.sql("SELECT no_such_column FROM orders").await },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("no_such_column"), "{err}");
    assert!(cache.head("q/bad").await.unwrap().is_none());
}

/// An entry registered as a table answers SQL with its rows, projected
/// and filtered; an absent key registers nothing.
#[tokio::test]
async fn a_cached_entry_registered_as_a_table_answers_sql() {
    let (_dir, cache) = cache_with_orders("orders", 4, 1000).await;
    let ctx = SessionContext::new();
    assert!(
        register_cached_table(&ctx, "t", cache.clone(), "orders")
            .await
            .unwrap()
    );
    assert!(
        !register_cached_table(&ctx, "none", cache.clone(), "absent")
            .await
            .unwrap()
    );
    let got = collect_sql(&ctx, &QUERY.replace("orders", "t")).await;
    assert_eq!(rows(&got), expected());
    let one = collect_sql(&ctx, "SELECT amount FROM t WHERE amount = 999 LIMIT 1").await;
    assert_eq!(one[0].num_columns(), 1);
    assert_eq!(one[0].column(0).as_primitive::<Int64Type>().value(0), 999);
}

/// Between registration and a scan another writer replaces the entry: with
/// the same schema the scan reads the new rows; with another schema, or
/// once the entry is gone, the scan fails with an error naming the key and
/// returns no rows.
#[tokio::test]
async fn an_entry_changed_or_gone_after_registration_is_seen_by_the_scan() {
    let (_dir, cache) = cache_with_orders("t", 1, 10).await;
    let ctx = SessionContext::new();
    let table = CachedTable::open(cache.clone(), "t")
        .await
        .unwrap()
        .unwrap();
    ctx.register_table("t", table.provider().unwrap()).unwrap();
    let count = |ctx: SessionContext| async move {
        ctx.sql("SELECT count(*) FROM t")
            .await
            .unwrap()
            .collect()
            .await
            .map(|b| b[0].column(0).as_primitive::<Int64Type>().value(0))
    };
    assert_eq!(count(ctx.clone()).await.unwrap(), 10);
    set_orders(&*cache, "t", 1, 25).await;
    assert_eq!(
        count(ctx.clone()).await.unwrap(),
        25,
        "the entry as it is now"
    );

    let other = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
    let b = RecordBatch::try_new(
        other.clone(),
        vec![Arc::new(Int64Array::from(vec![1])) as ArrayRef],
    )
    .unwrap();
    cache
        .set_batches(
            "t",
            other,
            futures::stream::iter([Ok::<_, std::io::Error>(b)]),
            ArrowOptions::new(),
        )
        .await
        .unwrap();
    let err = count(ctx.clone()).await.unwrap_err().to_string();
    assert!(
        err.contains("another schema") && err.contains("entry t "),
        "{err}"
    );

    cache.delete("t").await.unwrap();
    let err = count(ctx.clone()).await.unwrap_err().to_string();
    assert!(err.contains("is gone") && err.contains("entry t "), "{err}");
}

/// An entry that is not Arrow data cannot be registered: the cache's
/// `KindMismatch`, naming the key, comes back through DataFusion's error.
#[tokio::test]
async fn an_entry_that_is_not_arrow_data_is_refused() {
    let cache: Arc<dyn Cache> = Arc::new(etl_cache_core::MemoryCache::new());
    cache
        .set(
            "text",
            "not a table".into(),
            etl_cache_core::SetOptions::new(),
        )
        .await
        .unwrap();
    let ctx = SessionContext::new();
    let err = register_cached_table(&ctx, "t", cache, "text")
        .await
        .unwrap_err();
    let datafusion::error::DataFusionError::External(source) = &err else {
        panic!("{err}")
    };
    let cache_err = source.downcast_ref::<Error>().expect("the cache's error");
    assert!(
        matches!(cache_err, Error::KindMismatch { .. }),
        "{cache_err}"
    );
    assert!(err.to_string().contains("text"), "{err}");
}

/// A scan stopped early (LIMIT) lets go of the entry: a write of the key
/// right after it succeeds and is what the next scan reads.
#[tokio::test]
async fn a_scan_stopped_early_releases_the_entry() {
    let (_dir, cache) = cache_with_orders("t", 50, 1000).await;
    let ctx = SessionContext::new();
    register_cached_table(&ctx, "t", cache.clone(), "t")
        .await
        .unwrap();
    let first = collect_sql(&ctx, "SELECT * FROM t LIMIT 3").await;
    assert_eq!(first.iter().map(RecordBatch::num_rows).sum::<usize>(), 3);
    set_orders(&*cache, "t", 1, 7).await;
    let all = collect_sql(&ctx, "SELECT count(*) FROM t").await;
    assert_eq!(all[0].column(0).as_primitive::<Int64Type>().value(0), 7);
}

/// The DataFrame `cached_dataframe` returns yields the result it computed
/// even when the entry is deleted before the frame is collected; a later
/// scan, and any scan of a hit, reads the entry as it is then.
#[tokio::test]
async fn a_cached_dataframe_keeps_its_result_when_the_entry_changes_before_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let cache = disk(dir.path()).await;
    let ctx = context();
    // Computed, then the entry deleted before the first scan.
    let df = cached_dataframe(&ctx, cache.clone(), "q", ArrowOptions::new(), || async {
        ctx.sql(QUERY).await
    })
    .await
    .unwrap();
    assert!(cache.delete("q").await.unwrap());
    assert_eq!(rows(&df.clone().collect().await.unwrap()), expected());
    // The second scan reads the entry, which is gone: an error naming it.
    let err = df.collect().await.unwrap_err().to_string();
    assert!(err.contains("entry q is gone"), "{err}");

    // Read from the cache (a hit), then the entry rewritten with other rows
    // of the same schema before the first scan: the scan reads them.
    let df = cached_dataframe(&ctx, cache.clone(), "q", ArrowOptions::new(), || async {
        ctx.sql(QUERY).await
    })
    .await
    .unwrap();
    drop(df);
    let hit = cached_dataframe(&ctx, cache.clone(), "q", ArrowOptions::new(), || async {
        unreachable!("a hit computes nothing")
    })
    .await
    .unwrap();
    let other = ctx.sql(QUERY).await.unwrap().limit(0, Some(1)).unwrap();
    let other_schema = other.schema().inner().clone();
    let other_batches = other.collect().await.unwrap();
    cache
        .set_batches(
            "q",
            other_schema,
            futures::stream::iter(other_batches.into_iter().map(Ok::<_, std::io::Error>)),
            ArrowOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(rows(&hit.clone().collect().await.unwrap()), expected()[..1]);
    assert!(cache.delete("q").await.unwrap());
    let err = hit.collect().await.unwrap_err().to_string();
    assert!(err.contains("entry q is gone"), "{err}");
}
