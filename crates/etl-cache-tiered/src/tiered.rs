//! `TieredCache` and its `Cache` implementation.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use etl_cache_core::{
    ByteStream, Cache, Clock, Codec, Compression, Counters, EntryMeta, Error, GetStream,
    InitFuture, KeyedMutex, Result, SetOptions, Stats, Value, validate_key,
};
use futures::channel::{mpsc, oneshot};
use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};

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

/// Chunks in flight to each tier while `set_stream` feeds them.
const TEE_CHUNKS: usize = 2;

/// The stream an upper tier's `set_stream` reads: the chunks sent on `rx`,
/// then, once they are done, an end only if the last tier took the value
/// (`gate` says so); otherwise an error, so the upper tier publishes nothing.
fn gated(rx: mpsc::Receiver<io::Result<Bytes>>, gate: oneshot::Receiver<bool>) -> ByteStream {
    let end = futures::stream::once(async move {
        match gate.await {
            Ok(true) => None,
            _ => Some(Err(io::Error::other(
                "the last tier did not take the value; nothing is published above it",
            ))),
        }
    })
    .filter_map(futures::future::ready);
    rx.chain(end).boxed()
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
        self.fill(key, meta, value, compression_of(meta.codec), found)
            .await;
    }

    /// Copies `value` (whose entry in a lower tier is `meta`) into the tiers
    /// above `below`, slowest first, then into memory, with the time the
    /// entry has left. Best effort: a tier that refuses the value (too large
    /// for it, an I/O error) is left without the key, and reads fall through
    /// to the tiers below.
    async fn fill(
        &self,
        key: &str,
        meta: &EntryMeta,
        value: &Value,
        compression: Compression,
        below: usize,
    ) {
        let now = self.clock.now();
        if meta.is_expired(now) {
            return;
        }
        let mut opts = SetOptions::new().compression(compression);
        if let Some(left) = meta.ttl_left(now) {
            opts = opts.ttl(left);
        }
        for tier in self.tiers[..below].iter().rev() {
            if let Err(e) = tier.set(key, value.clone(), opts).await {
                self.refused(tier, key, &e).await;
            }
        }
        self.memory_put(key, meta.clone(), value.clone()).await;
    }

    /// An upper tier refused a value: make sure it holds no other one under
    /// `key` (reads then fall through to the tiers below), and say so.
    async fn refused(&self, tier: &Arc<dyn Cache>, key: &str, error: &Error) {
        tracing::warn!(
            key,
            tier = %format!("{tier:?}"),
            error = %error,
            "an upper tier refused a value; reads of it fall through to the tiers below"
        );
        if let Err(e) = tier.delete(key).await {
            tracing::warn!(
                key,
                tier = %format!("{tier:?}"),
                error = %e,
                "could not drop the key from an upper tier that refused its new value"
            );
        }
    }

    /// Before a write: drops `key` from memory and from every tier above the
    /// last, so that none of them serves a value the last tier is about to
    /// replace. On an error nothing has been written: the previous value is
    /// still in the last tier.
    async fn invalidate_upper(&self, key: &str) -> Result<()> {
        self.memory_invalidate(key).await;
        for tier in self.upper() {
            tier.delete(key).await?;
        }
        Ok(())
    }

    /// The tiers above the last, fastest first.
    fn upper(&self) -> &[Arc<dyn Cache>] {
        &self.tiers[..self.tiers.len() - 1]
    }

    fn last(&self) -> &Arc<dyn Cache> {
        self.tiers.last().expect("the builder requires a tier")
    }
}

#[async_trait]
impl Cache for TieredCache {
    /// Invalidates the key in memory and the upper tiers, writes the last
    /// tier, then fills the upper tiers and memory (best effort: see the
    /// crate documentation). Fails only when the invalidation or the last
    /// tier fails; the previous value is then intact in the last tier.
    async fn set(&self, key: &str, value: Value, opts: SetOptions) -> Result<EntryMeta> {
        validate_key(key)?;
        opts.validate()?;
        let inner = &self.inner;
        inner.invalidate_upper(key).await?;
        let meta = inner.last().set(key, value.clone(), opts).await?;
        let below = inner.tiers.len() - 1;
        inner
            .fill(key, &meta, &value, opts.compression, below)
            .await;
        Ok(meta)
    }

    /// Invalidates the key in memory and the upper tiers, then reads the
    /// stream once and feeds it to every tier at the same time (never
    /// buffering more than a few chunks per tier). The upper tiers see the
    /// end of their stream only once the last tier has published the entry:
    /// if the last tier fails, their streams fail too and they publish
    /// nothing. An upper tier that refuses the stream is left without the
    /// key. Memory is not filled by streams.
    async fn set_stream(
        &self,
        key: &str,
        stream: ByteStream,
        opts: SetOptions,
    ) -> Result<EntryMeta> {
        validate_key(key)?;
        opts.validate()?;
        let inner = &self.inner;
        inner.invalidate_upper(key).await?;
        let upper = inner.upper();
        if upper.is_empty() {
            return inner.last().set_stream(key, stream, opts).await;
        }
        let (bottom_tx, bottom_rx) = mpsc::channel::<io::Result<Bytes>>(TEE_CHUNKS);
        let mut feeds = Vec::with_capacity(upper.len());
        let mut gates = Vec::with_capacity(upper.len());
        let mut writes = Vec::with_capacity(upper.len());
        for tier in upper {
            let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(TEE_CHUNKS);
            let (gate_tx, gate_rx) = oneshot::channel::<bool>();
            feeds.push(Some(tx));
            gates.push(gate_tx);
            writes.push(tier.set_stream(key, gated(rx, gate_rx), opts));
        }
        let feed = async move {
            let mut stream = stream;
            let mut bottom_tx = bottom_tx;
            while let Some(item) = stream.next().await {
                let chunk = match item {
                    Ok(chunk) => chunk,
                    Err(e) => {
                        // The last tier reports the stream's error; the
                        // upper tiers fail at their gate.
                        let _ = bottom_tx.send(Err(e)).await;
                        return;
                    }
                };
                for feed in &mut feeds {
                    if let Some(tx) = feed
                        && tx.send(Ok(chunk.clone())).await.is_err()
                    {
                        // That tier stopped (it refused the value); the
                        // others go on.
                        *feed = None;
                    }
                }
                if bottom_tx.send(Ok(chunk)).await.is_err() {
                    return; // the last tier stopped; its error says why
                }
            }
        };
        let bottom = async move {
            let r = inner.last().set_stream(key, bottom_rx.boxed(), opts).await;
            for gate in gates {
                let _ = gate.send(r.is_ok());
            }
            r
        };
        let ((), meta, uppers) = futures::join!(feed, bottom, futures::future::join_all(writes));
        let meta = meta?;
        for (tier, r) in upper.iter().zip(uppers) {
            if let Err(e) = r {
                inner.refused(tier, key, &e).await;
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
        opts.validate()?;
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
        // The last tier holds it now; the tiers above are filled best effort.
        if let Some(meta) = last.head(key).await? {
            let below = inner.tiers.len() - 1;
            let compression = if meta.codec == opts.compression.codec() {
                opts.compression
            } else {
                compression_of(meta.codec)
            };
            inner.fill(key, &meta, &value, compression, below).await;
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
