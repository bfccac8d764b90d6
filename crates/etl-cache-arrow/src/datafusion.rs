//! DataFusion: a `DataFrame` computed once and read from the cache after
//! that, and cached entries scanned as tables.
//!
//! - [`cached_dataframe`]: on a miss, runs the query, stores its batches
//!   under the key (single flight, as [`ArrowCacheExt::get_or_compute_batches`]);
//!   on a hit, runs nothing. Either way it returns a `DataFrame` that scans
//!   the cached entry.
//! - [`register_cached_table`] / [`CachedTable`]: an entry as a table of a
//!   `SessionContext`, scanned as a stream of its batches (one partition,
//!   decoded as they are read; nothing is loaded whole).
//!
//! A scan reads the entry as it is when the scan starts. An entry deleted,
//! expired or evicted since the table was registered ends the scan with an
//! error naming the key; so does one rewritten with another schema (one
//! rewritten with the same schema is scanned as it is now).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> datafusion::error::Result<()> {
//! use std::sync::Arc;
//! use datafusion::prelude::SessionContext;
//! use etl_cache_arrow::ArrowOptions;
//! use etl_cache_arrow::datafusion::cached_dataframe;
//!
//! let ctx = SessionContext::new();
//! let cache: Arc<dyn etl_cache_core::Cache> = Arc::new(etl_cache_core::MemoryCache::new());
//! let compute = || async { ctx.sql("SELECT 6 * 7 AS answer").await };
//! let df = cached_dataframe(&ctx, cache.clone(), "answer/v1", ArrowOptions::new(), compute).await?;
//! let batches = df.collect().await?;
//! assert_eq!(batches[0].num_rows(), 1);
//! // The second time, the query is not run: the result comes from the cache.
//! let again = cached_dataframe(&ctx, cache, "answer/v1", ArrowOptions::new(), || async {
//!     unreachable!("a hit computes nothing")
//! })
//! .await?;
//! assert_eq!(again.collect().await?, batches);
//! # Ok(()) }
//! ```

use std::future::Future;
use std::sync::{Arc, Mutex};

use arrow_schema::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::{DataFrame, SessionContext};
use etl_cache_core::{Cache, Error};
use futures::{StreamExt, TryStreamExt};

use crate::{ArrowCacheExt, ArrowOptions, BatchStream};

/// A cache error as DataFusion carries it (`DataFusionError::External`,
/// whose source is the [`etl_cache_core::Error`]).
fn external(e: Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The cached result of a query: the entry under `key` when there is one,
/// else the `DataFrame` that `compute` returns, run and stored under `key`
/// first. Of the callers that miss the same key at once, one computes and
/// the others wait for it and read its result (between tasks of a process,
/// and between processes or hosts where the cache coordinates them).
///
/// The `DataFrame` returned scans the entry (see [`CachedTable`]), as it
/// is when the scan runs; an entry deleted, expired or evicted by then
/// fails the scan with an error naming the key. The query's result is
/// stored as [`ArrowCacheExt::get_or_compute_batches`] stores it, held in
/// memory while it is written; when this call computed it, the first scan
/// yields that result from memory (it stays held until then), so that a
/// cache too small to keep it, or a short TTL, does not fail the scan.
///
/// # Errors
///
/// The errors of `compute` and of running its plan (nothing is stored), and
/// the cache's errors as `DataFusionError::External`.
pub async fn cached_dataframe<F, Fut>(
    ctx: &SessionContext,
    cache: Arc<dyn Cache>,
    key: &str,
    opts: ArrowOptions,
    compute: F,
) -> Result<DataFrame>
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<DataFrame>> + Send,
{
    let computed = std::sync::atomic::AtomicBool::new(false);
    let computed = &computed;
    let run = || async move {
        computed.store(true, std::sync::atomic::Ordering::Relaxed);
        let df = compute().await?;
        let schema: SchemaRef = df.schema().inner().clone();
        let batches = df.execute_stream().await?;
        Ok::<_, DataFusionError>((schema, batches))
    };
    let (schema, batches) = cache
        .get_or_compute_batches(key, opts, run)
        .await
        .map_err(external)?;
    let table = CachedTable::with_schema(cache, key, schema);
    if computed.load(std::sync::atomic::Ordering::Relaxed) {
        // The result computed here is in memory already: the first scan
        // yields it, so that an entry evicted or expired before the scan
        // (a cache smaller than the result, a short TTL) does not fail it.
        *table.first.lock().expect("not poisoned") = Some(batches);
    } else {
        // A hit: the scan opens the entry when it runs. Holding it open
        // from now on would keep a file (and on DiskCache reading threads)
        // for as long as the DataFrame lives unscanned.
        drop(batches);
    }
    ctx.read_table(table.provider()?)
}

/// Registers the entry under `key` as the table `name` of `ctx`. `false`
/// (and nothing registered) when the cache holds no entry under `key`.
///
/// # Errors
///
/// The cache's errors (`KindMismatch` when the entry is not Arrow data) as
/// `DataFusionError::External`, and those of registering the table (a name
/// already taken).
pub async fn register_cached_table(
    ctx: &SessionContext,
    name: &str,
    cache: Arc<dyn Cache>,
    key: &str,
) -> Result<bool> {
    let Some(table) = CachedTable::open(cache, key).await.map_err(external)? else {
        return Ok(false);
    };
    ctx.register_table(name, table.provider()?)?;
    Ok(true)
}

/// An entry of Arrow data as a DataFusion table: [`CachedTable::provider`]
/// scans it as a stream of its batches.
#[derive(Clone)]
pub struct CachedTable {
    cache: Arc<dyn Cache>,
    key: String,
    schema: SchemaRef,
    /// Batches already open, for the first scan (see [`cached_dataframe`]).
    first: Arc<Mutex<Option<BatchStream>>>,
}

impl std::fmt::Debug for CachedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedTable")
            .field("cache", &self.cache)
            .field("key", &self.key)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl CachedTable {
    /// The entry under `key`, whose schema is read now (the header of the
    /// entry, not its batches). `None` on a miss.
    ///
    /// # Errors
    ///
    /// As [`ArrowCacheExt::get_batches`].
    pub async fn open(cache: Arc<dyn Cache>, key: &str) -> etl_cache_core::Result<Option<Self>> {
        let Some((schema, _batches)) = cache.get_batches(key).await? else {
            return Ok(None);
        };
        Ok(Some(Self::with_schema(cache, key, schema)))
    }

    fn with_schema(cache: Arc<dyn Cache>, key: &str, schema: SchemaRef) -> Self {
        CachedTable {
            cache,
            key: key.to_owned(),
            schema,
            first: Arc::new(Mutex::new(None)),
        }
    }

    /// The schema the entry had when it was opened.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// A table provider that scans the entry: one partition, its batches
    /// decoded as the scan reads them. Projections are applied by the scan.
    ///
    /// # Errors
    ///
    /// None in practice (the partition's schema is the table's).
    pub fn provider(&self) -> Result<Arc<dyn TableProvider>> {
        let partition = Arc::new(self.clone());
        Ok(Arc::new(StreamingTable::try_new(
            self.schema.clone(),
            vec![partition],
        )?))
    }
}

impl PartitionStream for CachedTable {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        if let Some(batches) = self.first.lock().expect("not poisoned").take() {
            return Box::pin(RecordBatchStreamAdapter::new(
                self.schema.clone(),
                batches.map_err(external),
            ));
        }
        let (cache, key, schema) = (self.cache.clone(), self.key.clone(), self.schema.clone());
        let open = async move {
            match cache.get_batches(&key).await {
                Ok(Some((now, batches))) if now == schema => Ok(batches.map_err(external).boxed()),
                Ok(Some(_)) => Err(DataFusionError::Execution(format!(
                    "the cache entry {} was rewritten with another schema since its table was registered",
                    Error::display_key(&key)
                ))),
                Ok(None) => Err(DataFusionError::Execution(format!(
                    "the cache entry {} is gone (deleted, expired or evicted) since its table was registered",
                    Error::display_key(&key)
                ))),
                Err(e) => Err(external(e)),
            }
        };
        let batches = futures::stream::once(open).try_flatten();
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), batches))
    }
}
