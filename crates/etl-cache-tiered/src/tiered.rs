//! `TieredCache` and its `Cache` implementation.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use etl_cache_core::{
    ByteStream, Cache, Clock, Codec, Compression, Counters, EntryMeta, Error, GetStream,
    InitFuture, KeyedMutex, Result, SetOptions, Stats, Value, validate_key,
};
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::TieredCacheBuilder;

/// Where a read was served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// The memory tier.
    Memory,
    /// The lower tier at this index (0 is the first added).
    Tier(usize),
}

/// Hits per tier since the cache was built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TierCounts {
    /// Reads served from memory.
    pub memory: u64,
    /// Reads served from each lower tier, in the order they were added.
    pub tiers: Vec<u64>,
    /// Reads that no tier could serve.
    pub misses: u64,
}

struct MemEntry {
    meta: EntryMeta,
    value: Value,
}

/// Tells moka when an entry expires, from the TTL stored with it.
struct MemExpiry;

impl MemExpiry {
    fn left(entry: &MemEntry) -> Option<Duration> {
        entry.meta.expires.map(|e| {
            e.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        })
    }
}

impl moka::Expiry<String, Arc<MemEntry>> for MemExpiry {
    fn expire_after_create(&self, _: &String, v: &Arc<MemEntry>, _: Instant) -> Option<Duration> {
        Self::left(v)
    }

    fn expire_after_update(
        &self,
        _: &String,
        v: &Arc<MemEntry>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Self::left(v)
    }
}

type Memory = moka::future::Cache<String, Arc<MemEntry>>;

/// A memory tier ahead of lower tiers. See the crate documentation.
///
/// Cheap to clone: clones share the tiers.
#[derive(Clone)]
pub struct TieredCache {
    inner: Arc<Inner>,
}

struct Inner {
    memory: Option<Memory>,
    max_memory_entry: u64,
    tiers: Vec<Arc<dyn Cache>>,
    clock: Arc<dyn Clock>,
    counters: Counters,
    memory_hits: AtomicU64,
    tier_hits: Vec<AtomicU64>,
    flights: KeyedMutex,
}

impl fmt::Debug for TieredCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TieredCache")
            .field(
                "memory",
                &self
                    .inner
                    .memory
                    .as_ref()
                    .map(|m| m.policy().max_capacity()),
            )
            .field("tiers", &self.inner.tiers)
            .finish_non_exhaustive()
    }
}

fn weight(key: &str, e: &MemEntry) -> u32 {
    u32::try_from(e.meta.logical_len + key.len() as u64 + 96).unwrap_or(u32::MAX)
}

fn compression_of(codec: Codec) -> Compression {
    match codec {
        Codec::Gzip => Compression::gzip(),
        Codec::Zstd => Compression::zstd(),
        _ => Compression::NONE,
    }
}

/// Streams `bytes` in chunks of `chunk` bytes, without copying.
fn chunked(bytes: Bytes, chunk: usize) -> ByteStream {
    let chunks: Vec<std::io::Result<Bytes>> = (0..bytes.len())
        .step_by(chunk)
        .map(|at| Ok(bytes.slice(at..(at + chunk).min(bytes.len()))))
        .collect();
    futures::stream::iter(chunks).boxed()
}

impl TieredCache {
    /// A builder: add at least one lower tier.
    pub fn builder() -> TieredCacheBuilder {
        TieredCacheBuilder::new()
    }

    pub(crate) fn from_builder(b: TieredCacheBuilder) -> TieredCache {
        let memory = (b.memory_bytes > 0).then(|| {
            moka::future::Cache::builder()
                .max_capacity(b.memory_bytes)
                .weigher(|k: &String, v: &Arc<MemEntry>| weight(k, v))
                .expire_after(MemExpiry)
                .build()
        });
        let tier_hits = b.tiers.iter().map(|_| AtomicU64::new(0)).collect();
        TieredCache {
            inner: Arc::new(Inner {
                memory,
                max_memory_entry: b.max_memory_entry,
                tiers: b.tiers,
                clock: b.clock,
                counters: Counters::default(),
                memory_hits: AtomicU64::new(0),
                tier_hits,
                flights: KeyedMutex::new(),
            }),
        }
    }

    /// The lower tiers, fastest first.
    pub fn tiers(&self) -> &[Arc<dyn Cache>] {
        &self.inner.tiers
    }

    /// Hits per tier and misses since the cache was built.
    pub fn tier_counts(&self) -> TierCounts {
        TierCounts {
            memory: self.inner.memory_hits.load(Ordering::Relaxed),
            tiers: self
                .inner
                .tier_hits
                .iter()
                .map(|h| h.load(Ordering::Relaxed))
                .collect(),
            misses: self.inner.counters.misses.load(Ordering::Relaxed),
        }
    }

    /// As [`Cache::get`], and says which tier served the value.
    ///
    /// # Errors
    ///
    /// As [`Cache::get`].
    pub async fn get_traced(&self, key: &str) -> Result<Option<(Value, Served)>> {
        validate_key(key)?;
        Ok(self
            .inner
            .find(key, true)
            .await?
            .map(|(_, value, served)| (value, served)))
    }
}

impl Inner {
    fn fits_memory(&self, meta: &EntryMeta) -> bool {
        self.memory.is_some() && meta.logical_len <= self.max_memory_entry
    }

    /// The live memory entry under `key`; an expired one is dropped.
    async fn memory_get(&self, key: &str) -> Option<Arc<MemEntry>> {
        let memory = self.memory.as_ref()?;
        let e = memory.get(key).await?;
        if e.meta.is_expired(self.clock.now()) {
            memory.invalidate(key).await;
            return None;
        }
        Some(e)
    }

    async fn memory_put(&self, key: &str, meta: EntryMeta, value: Value) {
        if let Some(memory) = &self.memory {
            if self.fits_memory(&meta) && !meta.is_expired(self.clock.now()) {
                memory
                    .insert(key.to_owned(), Arc::new(MemEntry { meta, value }))
                    .await;
            } else {
                memory.invalidate(key).await;
            }
        }
    }

    async fn memory_invalidate(&self, key: &str) {
        if let Some(memory) = &self.memory {
            memory.invalidate(key).await;
        }
    }

    /// Looks through memory, then each tier; promotes what it finds.
    async fn find(&self, key: &str, count: bool) -> Result<Option<(EntryMeta, Value, Served)>> {
        if let Some(e) = self.memory_get(key).await {
            if count {
                Counters::bump(&self.counters.hits);
                Counters::bump(&self.memory_hits);
            }
            return Ok(Some((e.meta.clone(), e.value.clone(), Served::Memory)));
        }
        for (i, tier) in self.tiers.iter().enumerate() {
            if let Some((meta, value)) = tier.get_entry(key).await? {
                self.promote(key, &meta, &value, i).await;
                if count {
                    Counters::bump(&self.counters.hits);
                    Counters::bump(&self.tier_hits[i]);
                }
                return Ok(Some((meta, value, Served::Tier(i))));
            }
        }
        if count {
            Counters::bump(&self.counters.misses);
        }
        Ok(None)
    }

    /// Copies an entry found in tier `found` into memory and the tiers above,
    /// with the time it has left. Failures are logged: the read still succeeds.
    async fn promote(&self, key: &str, meta: &EntryMeta, value: &Value, found: usize) {
        let now = self.clock.now();
        if meta.is_expired(now) {
            return;
        }
        let mut opts = SetOptions::new().compression(compression_of(meta.codec));
        if let Some(left) = meta.ttl_left(now) {
            opts = opts.ttl(left);
        }
        for tier in &self.tiers[..found] {
            if let Err(e) = tier.set(key, value.clone(), opts).await {
                tracing::warn!(key, tier = %format!("{tier:?}"), error = %e, "promotion into an upper tier failed");
            }
        }
        self.memory_put(key, meta.clone(), value.clone()).await;
    }

    /// After a failed write part way down the tiers, drop the key from the
    /// tiers above the failure so no tier serves a value the ones below lack.
    async fn invalidate_above(&self, key: &str, failed: usize) {
        self.memory_invalidate(key).await;
        for tier in &self.tiers[..failed] {
            if let Err(e) = tier.delete(key).await {
                tracing::warn!(key, error = %e, "could not invalidate an upper tier after a failed write");
            }
        }
    }

    fn last(&self) -> &Arc<dyn Cache> {
        self.tiers.last().expect("the builder requires a tier")
    }
}

#[async_trait]
impl Cache for TieredCache {
    async fn set(&self, key: &str, value: Value, opts: SetOptions) -> Result<EntryMeta> {
        validate_key(key)?;
        let inner = &self.inner;
        inner.memory_invalidate(key).await;
        let mut bottom = None;
        // Slowest first: an upper tier never holds what the ones below lack.
        for (i, tier) in inner.tiers.iter().enumerate().rev() {
            match tier.set(key, value.clone(), opts).await {
                Ok(meta) => {
                    bottom.get_or_insert(meta);
                }
                Err(e) => {
                    inner.invalidate_above(key, i + 1).await;
                    return Err(e);
                }
            }
        }
        let meta = bottom.expect("at least one tier");
        inner.memory_put(key, meta.clone(), value).await;
        Ok(meta)
    }

    /// Streams into the first tier, then copies the entry down to the others
    /// by streaming it back from the first; memory is not filled by streams.
    async fn set_stream(
        &self,
        key: &str,
        stream: ByteStream,
        opts: SetOptions,
    ) -> Result<EntryMeta> {
        validate_key(key)?;
        let inner = &self.inner;
        inner.memory_invalidate(key).await;
        let first = &inner.tiers[0];
        let mut meta = first.set_stream(key, stream, opts).await?;
        for (i, tier) in inner.tiers.iter().enumerate().skip(1) {
            let copied = match first.get_stream(key, 1 << 20).await? {
                Some(s) => tier.set_stream(key, s.into_parts().1, opts).await,
                None => Err(Error::Backend {
                    backend: "tiered",
                    key: Error::display_key(key),
                    source: "the entry left the first tier before it was copied down".into(),
                }),
            };
            match copied {
                Ok(m) => meta = m,
                Err(e) => {
                    inner.invalidate_above(key, i).await;
                    return Err(e);
                }
            }
        }
        Ok(meta)
    }

    async fn get(&self, key: &str) -> Result<Option<Value>> {
        validate_key(key)?;
        Ok(self.inner.find(key, true).await?.map(|(_, v, _)| v))
    }

    async fn get_entry(&self, key: &str) -> Result<Option<(EntryMeta, Value)>> {
        validate_key(key)?;
        Ok(self.inner.find(key, true).await?.map(|(m, v, _)| (m, v)))
    }

    async fn get_stream(&self, key: &str, chunk_size: usize) -> Result<Option<GetStream>> {
        validate_key(key)?;
        if chunk_size == 0 {
            return Err(Error::InvalidInput {
                message: "chunk_size must be at least 1".into(),
            });
        }
        let inner = &self.inner;
        if let Some(e) = inner.memory_get(key).await {
            Counters::bump(&inner.counters.hits);
            Counters::bump(&inner.memory_hits);
            return Ok(Some(GetStream::new(
                e.meta.clone(),
                chunked(e.value.to_bytes(), chunk_size),
            )));
        }
        for (i, tier) in inner.tiers.iter().enumerate() {
            let Some(s) = tier.get_stream(key, chunk_size).await? else {
                continue;
            };
            Counters::bump(&inner.counters.hits);
            Counters::bump(&inner.tier_hits[i]);
            let meta = s.meta().clone();
            if !inner.fits_memory(&meta) {
                // Big: stream it through, never buffered, not promoted.
                return Ok(Some(s));
            }
            let mut buf = bytes::BytesMut::with_capacity(meta.logical_len as usize);
            let mut stream = s.into_parts().1;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| etl_cache_core::stream_read_error(key, e))?;
                buf.extend_from_slice(&chunk);
            }
            let bytes = buf.freeze();
            let value =
                Value::from_stored(meta.kind, bytes.clone()).map_err(|reason| Error::Corrupt {
                    key: Error::display_key(key),
                    reason,
                })?;
            inner.promote(key, &meta, &value, i).await;
            return Ok(Some(GetStream::new(meta, chunked(bytes, chunk_size))));
        }
        Counters::bump(&inner.counters.misses);
        Ok(None)
    }

    async fn head(&self, key: &str) -> Result<Option<EntryMeta>> {
        validate_key(key)?;
        if let Some(e) = self.inner.memory_get(key).await {
            return Ok(Some(e.meta.clone()));
        }
        for tier in &self.inner.tiers {
            if let Some(m) = tier.head(key).await? {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        validate_key(key)?;
        self.inner.memory_invalidate(key).await;
        let mut any = false;
        for tier in &self.inner.tiers {
            any |= tier.delete(key).await?;
        }
        if any {
            Counters::bump(&self.inner.counters.deletes);
        }
        Ok(any)
    }

    fn list(&self, prefix: Option<&str>) -> BoxStream<'static, Result<EntryMeta>> {
        self.inner.last().list(prefix)
    }

    fn list_all(&self, prefix: Option<&str>) -> BoxStream<'static, Result<EntryMeta>> {
        self.inner.last().list_all(prefix)
    }

    async fn purge_expired(&self) -> Result<u64> {
        let inner = &self.inner;
        if let Some(memory) = &inner.memory {
            let now = inner.clock.now();
            let expired: Vec<Arc<String>> = memory
                .iter()
                .filter(|(_, e)| e.meta.is_expired(now))
                .map(|(k, _)| k)
                .collect();
            for k in expired {
                memory.invalidate(k.as_str()).await;
            }
        }
        let mut last = 0;
        for tier in &inner.tiers {
            last = tier.purge_expired().await?;
        }
        inner.counters.expired.fetch_add(last, Ordering::Relaxed);
        Ok(last)
    }

    async fn clear(&self) -> Result<u64> {
        if let Some(memory) = &self.inner.memory {
            memory.invalidate_all();
            memory.run_pending_tasks().await;
        }
        let mut last = 0;
        for tier in &self.inner.tiers {
            last = tier.clear().await?;
        }
        Ok(last)
    }

    /// Coordinates through the last tier (a DiskCache coordinates processes
    /// on one machine), after queueing this process's callers in memory; the
    /// value is then copied into the tiers above.
    async fn get_or_insert_boxed<'a>(
        &'a self,
        key: &'a str,
        opts: SetOptions,
        init: InitFuture<'a>,
    ) -> Result<Value> {
        validate_key(key)?;
        let inner = &self.inner;
        if let Some((_, v, _)) = inner.find(key, true).await? {
            return Ok(v);
        }
        let _flight = inner.flights.lock(key, Duration::from_secs(3600)).await?;
        if let Some((_, v, _)) = inner.find(key, false).await? {
            return Ok(v);
        }
        let last = inner.last();
        let value = last.get_or_insert_boxed(key, opts, init).await?;
        if let Some(meta) = last.head(key).await? {
            inner
                .promote(key, &meta, &value, inner.tiers.len() - 1)
                .await;
        }
        Ok(value)
    }

    async fn stats(&self) -> Result<Stats> {
        let below = self.inner.last().stats().await?;
        let mut s = self.inner.counters.snapshot(below.entries, below.bytes);
        s.sets += below.sets;
        s.evictions = below.evictions;
        Ok(s)
    }
}
