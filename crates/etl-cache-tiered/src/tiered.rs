//! `TieredCache` and its `Cache` implementation.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use etl_cache_core::backend::{Counters, SingleFlight};
use etl_cache_core::{
    ByteStream, Cache, EntryMeta, Error, GetStream, InitFuture, Removal, Result, SetOptions, Stats,
    Value, validate_key,
};
use futures::channel::{mpsc, oneshot};
use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};

use crate::TieredCacheBuilder;
use crate::epochs::Epochs;
use crate::memory::new_memory;
use crate::tiers::{ClearGuard, Fill, Inner, Served, compression_of};

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

/// A memory tier ahead of lower tiers. See the crate documentation.
///
/// Cheap to clone: clones share the tiers.
#[derive(Clone)]
pub struct TieredCache {
    inner: Arc<Inner>,
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

/// True when an upper tier's `copy` of an entry would be served after the
/// entry (`last`, as the last tier wrote it) expires.
fn outlives(copy: &EntryMeta, last: &EntryMeta) -> bool {
    match (copy.expires, last.expires) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(c), Some(l)) => c > l,
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
        let memory = (b.memory_bytes > 0).then(|| new_memory(b.memory_bytes));
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
                flights: SingleFlight::new(b.lock_timeout),
                id: etl_cache_core::HandleId::new(),
                epochs: Arc::new(Epochs::default()),
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

#[async_trait]
impl Cache for TieredCache {
    /// Invalidates the key in memory and the upper tiers, writes the last
    /// tier, then fills the upper tiers and memory (best effort: see the
    /// crate documentation). Fails only when the invalidation or the last
    /// tier fails; the previous value is then intact in the last tier.
    async fn set(&self, key: &str, value: Value, opts: SetOptions) -> Result<EntryMeta> {
        etl_cache_core::backend::obs::observe("tiered", "set", Some(key), async move {
            validate_key(key)?;
            opts.validate_for(key)?;
            // Refused before any tier is touched (the last tier checks again).
            opts.value_kind(key, &value)?;
            let inner = &self.inner;
            let (guard, _) = inner.begin_write(key).await?;
            let meta = match inner.last().set(key, value.clone(), opts).await {
                Ok(meta) => meta,
                Err(e) => {
                    inner.end_write(guard, None).await;
                    return Err(e);
                }
            };
            let fill = Fill {
                meta: &meta,
                value: &value,
                compression: opts.compression,
                check_block: opts.check_block,
            };
            inner.end_write(guard, Some(fill)).await;
            Ok(meta)
        })
        .await
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
        etl_cache_core::backend::obs::observe("tiered", "set_stream", Some(key), async move {
            validate_key(key)?;
            opts.validate_for(key)?;
            opts.stream_kind(key)?;
            let inner = &self.inner;
            let (guard, _) = inner.begin_write(key).await?;
            let upper = inner.upper();
            if upper.is_empty() {
                let r = inner.last().set_stream(key, stream, opts).await;
                inner.end_write(guard, None).await;
                return r;
            }
            // The entry's expiry is fixed now, for every tier: each tier starts
            // its write a little later (and a tier reads its own clock), so
            // with the TTL alone the copies above would expire at other times
            // than the entry, and report other metadata. Given the same latest
            // expiry, each tier's is min(its start + TTL, now + TTL) = now + TTL.
            // (A copy that still ends up outliving the entry, on a tier whose
            // clock runs behind, is dropped below.)
            let opts = match opts.expires_at(inner.clock.now())? {
                Some(at) => opts.expires_by(at),
                None => opts,
            };
            let upper_opts = opts;
            let (bottom_tx, bottom_rx) = mpsc::channel::<io::Result<Bytes>>(TEE_CHUNKS);
            let mut feeds = Vec::with_capacity(upper.len());
            let mut gates = Vec::with_capacity(upper.len());
            let mut writes = Vec::with_capacity(upper.len());
            for tier in upper {
                let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(TEE_CHUNKS);
                let (gate_tx, gate_rx) = oneshot::channel::<bool>();
                feeds.push(Some(tx));
                gates.push(gate_tx);
                writes.push(tier.set_stream(key, gated(rx, gate_rx), upper_opts));
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
            let ((), meta, uppers) =
                futures::join!(feed, bottom, futures::future::join_all(writes));
            if let Ok(last) = &meta {
                for (tier, r) in upper.iter().zip(uppers) {
                    match r {
                        Err(e) => inner.refused(tier, key, &e).await,
                        Ok(copy) if outlives(&copy, last) => {
                            let e = Error::InvalidInput {
                                message: "the copy would expire after the entry".into(),
                            };
                            inner.refused(tier, key, &e).await;
                        }
                        Ok(_) => {}
                    }
                }
            }
            inner.end_write(guard, None).await;
            meta
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<Value>> {
        etl_cache_core::backend::obs::observe("tiered", "get", Some(key), async move {
            validate_key(key)?;
            Ok(self.inner.find(key, true).await?.map(|(_, v, _)| v))
        })
        .await
    }

    async fn get_entry(&self, key: &str) -> Result<Option<(EntryMeta, Value)>> {
        etl_cache_core::backend::obs::observe("tiered", "get_entry", Some(key), async move {
            validate_key(key)?;
            Ok(self.inner.find(key, true).await?.map(|(m, v, _)| (m, v)))
        })
        .await
    }

    async fn get_stream(&self, key: &str, chunk_size: usize) -> Result<Option<GetStream>> {
        etl_cache_core::backend::obs::observe("tiered", "get_stream", Some(key), async move {
            validate_key(key)?;
            if chunk_size == 0 {
                return Err(Error::InvalidInput {
                    message: "chunk_size must be at least 1".into(),
                });
            }
            let inner = &self.inner;
            if let Some(e) = inner.memory_get(key) {
                Counters::bump(&inner.counters.hits);
                Counters::bump(&inner.memory_hits);
                return Ok(Some(GetStream::new(
                    e.meta.clone(),
                    chunked(e.bytes.clone(), chunk_size),
                )));
            }
            let ticket = inner.epochs.enter(key);
            for (i, tier) in inner.tiers.iter().enumerate() {
                let Some(s) = tier.get_stream(key, chunk_size).await? else {
                    continue;
                };
                if inner.expired(s.meta()) {
                    continue;
                }
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
                let value = Value::from_stored(meta.kind, bytes.clone()).map_err(|reason| {
                    Error::Corrupt {
                        key: Error::display_key(key),
                        reason,
                    }
                })?;
                inner
                    .promote(&ticket, &meta, &value, Some(bytes.clone()), i)
                    .await;
                return Ok(Some(GetStream::new(meta, chunked(bytes, chunk_size))));
            }
            Counters::bump(&inner.counters.misses);
            Ok(None)
        })
        .await
    }

    /// A range from memory when the entry is there, else from the first
    /// tier that holds it, by that tier's own `get_range` (a `DiskCache`
    /// reads only the blocks that hold the range). A range is not promoted:
    /// copying the entry up would read all of it.
    async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Option<(EntryMeta, Bytes)>> {
        etl_cache_core::backend::obs::observe("tiered", "get_range", Some(key), async move {
            validate_key(key)?;
            etl_cache_core::backend::check_range(&range)?;
            let inner = &self.inner;
            if let Some(e) = inner.memory_get(key) {
                Counters::bump(&inner.counters.hits);
                Counters::bump(&inner.memory_hits);
                let (start, end) = etl_cache_core::backend::clamp_range(&range, e.meta.logical_len);
                let part = e.bytes.slice(start as usize..end as usize);
                return Ok(Some((e.meta.clone(), part)));
            }
            for (i, tier) in inner.tiers.iter().enumerate() {
                let Some((meta, part)) = tier.get_range(key, range.clone()).await? else {
                    continue;
                };
                if inner.expired(&meta) {
                    continue;
                }
                Counters::bump(&inner.counters.hits);
                Counters::bump(&inner.tier_hits[i]);
                return Ok(Some((meta, part)));
            }
            Counters::bump(&inner.counters.misses);
            Ok(None)
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<Option<EntryMeta>> {
        etl_cache_core::backend::obs::observe("tiered", "head", Some(key), async move {
            validate_key(key)?;
            if let Some(e) = self.inner.memory_get(key) {
                return Ok(Some(e.meta.clone()));
            }
            for tier in &self.inner.tiers {
                if let Some(m) = tier.head(key).await?
                    && !self.inner.expired(&m)
                {
                    return Ok(Some(m));
                }
            }
            Ok(None)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        etl_cache_core::backend::obs::observe("tiered", "delete", Some(key), async move {
            validate_key(key)?;
            let inner = &self.inner;
            let (guard, mut any) = inner.begin_write(key).await?;
            let r = inner.last().delete(key).await;
            inner.end_write(guard, None).await;
            any |= r?;
            if any {
                Counters::bump(&inner.counters.deletes);
            }
            Ok(any)
        })
        .await
    }

    fn list(&self, prefix: Option<&str>) -> BoxStream<'static, Result<EntryMeta>> {
        etl_cache_core::backend::obs::observe_stream("tiered", "list", prefix, {
            self.inner.last().list(prefix)
        })
    }

    fn list_all(&self, prefix: Option<&str>) -> BoxStream<'static, Result<EntryMeta>> {
        etl_cache_core::backend::obs::observe_stream("tiered", "list_all", prefix, {
            self.inner.last().list_all(prefix)
        })
    }

    async fn purge_expired(&self) -> Result<u64> {
        etl_cache_core::backend::obs::observe("tiered", "purge_expired", None, async move {
            let inner = &self.inner;
            if let Some(memory) = &inner.memory {
                let now = inner.clock.now();
                let expired: Vec<Arc<String>> = memory
                    .iter()
                    .filter(|(_, e)| e.meta.is_expired(now))
                    .map(|(k, _)| k)
                    .collect();
                for k in expired {
                    memory.invalidate(k.as_str());
                }
            }
            let mut last = 0;
            for tier in &inner.tiers {
                last = tier.purge_expired().await?;
            }
            inner.counters.expired.fetch_add(last, Ordering::Relaxed);
            Ok(last)
        })
        .await
    }

    /// Clears memory and every tier. Promotions and the ends of writes
    /// under way when it starts install nothing they read before it ended.
    async fn clear(&self) -> Result<u64> {
        etl_cache_core::backend::obs::observe("tiered", "clear", None, async move {
            let inner = &self.inner;
            let _excl = inner.epochs.clear.write().await;
            {
                let mut st = inner.epochs.state();
                st.bump_clears();
                if let Some(memory) = &inner.memory {
                    memory.invalidate_all();
                }
            }
            let _end = ClearGuard { inner };
            let mut last = 0;
            for tier in &inner.tiers {
                last = tier.clear().await?;
            }
            Ok(last)
        })
        .await
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
        etl_cache_core::backend::obs::observe_init("tiered", key, init, |init| async move {
            validate_key(key)?;
            opts.validate_for(key)?;
            let inner = &self.inner;
            let look =
                |first: bool| async move { Ok(inner.find(key, first).await?.map(|(_, v, _)| v)) };
            inner.flights.run(key, look, || async move {
                let (guard, _) = inner.begin_write(key).await?;
                let last = inner.last();
                let value = match last.get_or_insert_boxed(key, opts, init).await {
                    Ok(value) => value,
                    Err(e) => {
                        inner.end_write(guard, None).await;
                        return Err(e);
                    }
                };
                // The last tier holds it now; the tiers above are filled best
                // effort, with the value and the metadata of one entry, read
                // together: the metadata of a later write (another handle's, made
                // since) must not travel with this value. If the last tier no
                // longer holds this value, nothing is copied and reads go there.
                let entry = if inner.memory.is_some() || !inner.upper().is_empty() {
                    match last.get_entry(key).await {
                        Ok(entry) => entry.filter(|(_, v)| *v == value),
                        Err(e) => {
                            tracing::warn!(
                                key,
                                error = %e,
                                "could not read back a computed value; it is not copied above the last tier"
                            );
                            None
                        }
                    }
                } else {
                    None
                };
                let fill = entry.as_ref().map(|(meta, value)| Fill {
                    meta,
                    value,
                    compression: if meta.codec == opts.compression.codec() {
                        opts.compression
                    } else {
                        compression_of(meta.codec)
                    },
                    check_block: opts.check_block,
                });
                inner.end_write(guard, fill).await;
                Ok(value)
            })
            .await
        })
        .await
    }

    fn handle_id(&self) -> Option<etl_cache_core::HandleId> {
        Some(self.inner.id)
    }

    fn handle(&self) -> Option<std::sync::Arc<dyn Cache>> {
        Some(std::sync::Arc::new(self.clone()))
    }

    async fn stats(&self) -> Result<Stats> {
        etl_cache_core::backend::obs::observe("tiered", "stats", None, async move {
            let below = self.inner.last().stats().await?;
            let mut s = self.inner.counters.snapshot(below.entries, below.bytes);
            s.sets += below.sets;
            s.evictions = below.evictions;
            Ok(s)
        })
        .await
    }

    /// The last tier's answer: the tier that keeps an entry longest, and
    /// the one a `DiskCache` of several processes shares.
    async fn last_removal(&self, key: &str) -> Result<Option<Removal>> {
        etl_cache_core::backend::obs::observe("tiered", "last_removal", Some(key), async move {
            validate_key(key)?;
            self.inner.last().last_removal(key).await
        })
        .await
    }
}
