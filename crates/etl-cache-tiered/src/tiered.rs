//! `TieredCache` and its `Cache` implementation.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use etl_cache_core::backend::{Counters, SingleFlight};
use etl_cache_core::{
    ByteStream, Cache, Clock, Codec, Compression, EntryMeta, Error, GetStream, InitFuture, Kind,
    MAX_TTL, Result, SetOptions, Stats, Value, validate_key,
};
use futures::channel::{mpsc, oneshot};
use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};

use crate::TieredCacheBuilder;
use crate::epochs::{Epochs, State, Ticket};

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

/// What the memory tier keeps of an entry: its metadata and its logical
/// bytes (UTF-8 for text, the serialized document for JSON), rebuilt into a
/// [`Value`] on each hit.
///
/// JSON is kept as its text, not as the `serde_json::Value` tree, so that
/// the tier weighs what it holds. Measured here (serde_json 1.0.154, x86-64):
/// a tree takes 8 to 20 times its text on the heap (874 B of records: 13,954
/// B; 409 KB: 8.0 MB; an array of 1,000 numbers: 8.4x), so a tier weighed by
/// text length held up to 20 times its limit. Parsing the text on a hit costs
/// little more than the clone of the tree a hit paid before (874 B: 7.8 µs
/// against 5.7 µs; 72 B: 0.32 µs against 0.15 µs; 409 KB: 9.9 ms against
/// 8.8 ms), where estimating a tree's heap size would depend on the layout of
/// serde_json's maps (B-tree nodes, or an index map with `preserve_order`).
struct MemEntry {
    meta: EntryMeta,
    bytes: Bytes,
}

impl MemEntry {
    fn value(&self, key: &str) -> Result<Value> {
        Value::from_stored(self.meta.kind, self.bytes.clone()).map_err(|reason| Error::Corrupt {
            key: Error::display_key(key),
            reason,
        })
    }
}

/// Tells moka when an entry expires, from the TTL stored with it.
struct MemExpiry;

impl MemExpiry {
    /// The time `entry` has left, at most [`MAX_TTL`]: an expiry read from a
    /// lower tier may lie further out than any write accepts, and moka adds
    /// this to its clock.
    fn left(entry: &MemEntry) -> Option<Duration> {
        entry.meta.expires.map(|e| {
            e.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .min(MAX_TTL)
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

/// The memory tier. Its operations are synchronous so that a check of a
/// key's generation and the change it allows happen under one lock (see
/// `epochs`).
type Memory = moka::sync::Cache<String, Arc<MemEntry>>;

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
    flights: SingleFlight,
    epochs: Arc<Epochs>,
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

/// What an entry costs the memory tier: its bytes, the key (twice: the
/// map's and the metadata's) and the fixed parts.
fn weight(key: &str, e: &MemEntry) -> u32 {
    let fixed = (std::mem::size_of::<MemEntry>() + 64) as u64;
    u32::try_from(e.bytes.len() as u64 + 2 * key.len() as u64 + fixed).unwrap_or(u32::MAX)
}

fn compression_of(codec: Codec) -> Compression {
    match codec {
        Codec::Gzip => Compression::gzip(),
        Codec::Zstd => Compression::zstd(),
        _ => Compression::NONE,
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

/// A value a write puts into the tiers above the last once it is done.
struct Fill<'a> {
    meta: &'a EntryMeta,
    value: &'a Value,
    compression: Compression,
}

/// A write of one key between its start and its end. Dropped before
/// [`Inner::end_write`] (the write failed, or its future was dropped), it
/// still ends the write: memory forgets the key and, when there are tiers
/// above the last, a task drops the key from them, since the last tier may
/// or may not have taken the value.
struct WriteGuard {
    inner: Arc<Inner>,
    ticket: Ticket,
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        if !self.ticket.is_writing() {
            return;
        }
        {
            let mut st = self.inner.epochs.state();
            self.inner.memory_invalidate(&st, self.ticket.key());
            self.ticket.end_write(&mut st);
        }
        if self.inner.upper().is_empty() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let inner = self.inner.clone();
            let ticket = inner.epochs.enter(self.ticket.key());
            rt.spawn(async move {
                let _clear = inner.epochs.clear.read().await;
                let _key = ticket.lock().await;
                // A write or a clear since the drop has already cleaned the
                // tiers above (each cleans them at its start) and may have
                // filled them with its newer value: leave that alone.
                if !ticket.may_promote(&mut inner.epochs.state()) {
                    return;
                }
                for tier in inner.upper() {
                    if let Err(e) = tier.delete(ticket.key()).await {
                        tracing::warn!(
                            key = ticket.key(),
                            tier = %format!("{tier:?}"),
                            error = %e,
                            "could not drop the key of an unfinished write from an upper tier"
                        );
                    }
                }
            });
        }
    }
}

impl TieredCache {
    /// A builder: add at least one lower tier.
    pub fn builder() -> TieredCacheBuilder {
        TieredCacheBuilder::new()
    }

    pub(crate) fn from_builder(b: TieredCacheBuilder) -> TieredCache {
        let memory = (b.memory_bytes > 0).then(|| {
            moka::sync::Cache::builder()
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
                flights: SingleFlight::new(b.lock_timeout),
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

impl Inner {
    fn fits_memory(&self, meta: &EntryMeta) -> bool {
        self.memory.is_some() && meta.logical_len <= self.max_memory_entry
    }

    /// The live memory entry under `key`; an expired one is dropped.
    fn memory_get(&self, key: &str) -> Option<Arc<MemEntry>> {
        let memory = self.memory.as_ref()?;
        let e = memory.get(key)?;
        if e.meta.is_expired(self.clock.now()) {
            etl_cache_core::backend::obs::note(etl_cache_core::backend::obs::Outcome::Expired);
            memory.invalidate(key);
            return None;
        }
        Some(e)
    }

    /// Puts `bytes` (the logical bytes of the entry `meta`) into memory, or
    /// drops `key` from memory when they do not belong there. Call with the
    /// epochs' state locked (`_st`), after checking a ticket.
    fn memory_put(&self, _st: &State, key: &str, meta: &EntryMeta, bytes: Option<Bytes>) {
        let Some(memory) = &self.memory else { return };
        match bytes {
            Some(bytes) if self.fits_memory(meta) && !meta.is_expired(self.clock.now()) => {
                let entry = MemEntry {
                    meta: meta.clone(),
                    bytes,
                };
                memory.insert(key.to_owned(), Arc::new(entry));
            }
            _ => memory.invalidate(key),
        }
    }

    /// Drops `key` from memory. Call with the epochs' state locked (`_st`).
    fn memory_invalidate(&self, _st: &State, key: &str) {
        if let Some(memory) = &self.memory {
            memory.invalidate(key);
        }
    }

    /// The bytes memory would keep of `value`, if its entry fits there.
    fn bytes_for_memory(&self, meta: &EntryMeta, value: &Value) -> Option<Bytes> {
        self.fits_memory(meta).then(|| value.to_bytes())
    }

    /// Looks through memory, then each tier; promotes what it finds.
    async fn find(&self, key: &str, count: bool) -> Result<Option<(EntryMeta, Value, Served)>> {
        if let Some(e) = self.memory_get(key) {
            let value = e.value(key)?;
            if count {
                Counters::bump(&self.counters.hits);
                Counters::bump(&self.memory_hits);
            }
            return Ok(Some((e.meta.clone(), value, Served::Memory)));
        }
        // Taken before any tier is read: a write that completes while this
        // read is under way makes the promotion give up.
        let ticket = self.epochs.enter(key);
        for (i, tier) in self.tiers.iter().enumerate() {
            // The entry's bytes as stored: a JSON entry is promoted with its
            // text (key order, number digits), not as serde_json would write
            // it again, so every tier and memory hold the same bytes.
            if let Some((meta, raw)) = tier.get_raw(key).await? {
                if self.expired(&meta) {
                    continue;
                }
                let value = Value::from_stored(meta.kind, raw.clone()).map_err(|reason| {
                    Error::Corrupt {
                        key: Error::display_key(key),
                        reason,
                    }
                })?;
                let text;
                let promoted = if meta.kind == Kind::Json {
                    text = Value::Bytes(raw);
                    &text
                } else {
                    &value
                };
                self.promote(&ticket, &meta, promoted, None, i).await;
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

    /// Copies an entry found in tier `found` into the tiers above it and
    /// into memory, with the time it has left, unless a write or a clear of
    /// the key began or ended since `ticket` was taken (before the read):
    /// what was read may then be older than what a completed write left.
    /// Failures are logged: the read still succeeds.
    async fn promote(
        &self,
        ticket: &Ticket,
        meta: &EntryMeta,
        value: &Value,
        bytes: Option<Bytes>,
        found: usize,
    ) {
        if meta.is_expired(self.clock.now()) {
            return;
        }
        let bytes = bytes
            .filter(|_| self.fits_memory(meta))
            .or_else(|| self.bytes_for_memory(meta, value));
        // Held while the tiers above are written, so that no write of the
        // key starts (and no clear runs) between the check and the copy.
        let _locks = if found > 0 {
            let clear = self.epochs.clear.read().await;
            let key = ticket.lock().await;
            if !ticket.may_promote(&mut self.epochs.state()) {
                // Another promotion may have copied a newer value, or an
                // older one: leave the key to the tiers below.
                for tier in &self.tiers[..found] {
                    let _ = tier.delete(ticket.key()).await;
                }
                self.memory_invalidate(&self.epochs.state(), ticket.key());
                return;
            }
            let compression = compression_of(meta.codec);
            self.fill_upper(ticket.key(), meta, value, compression, found)
                .await;
            Some((clear, key))
        } else {
            None
        };
        let mut st = self.epochs.state();
        if !ticket.may_promote(&mut st) {
            self.memory_invalidate(&st, ticket.key());
        } else if bytes.is_some() || found > 0 {
            self.memory_put(&st, ticket.key(), meta, bytes);
            ticket.promoted(&mut st);
        }
    }

    /// Copies `value` (whose entry in a lower tier is `meta`) into the tiers
    /// above `below`, slowest first, with the time the entry has left and
    /// its expiry as the latest instant the copies may live: time that
    /// passes before a tier writes its copy does not extend it. Best
    /// effort: a tier that refuses the value (too large for it, an I/O
    /// error) is left without the key, and reads fall through to the tiers
    /// below. Call with the key's lock held.
    async fn fill_upper(
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
        if value.kind() != meta.kind {
            // A byte payload stored as another kind (Arrow): the copy
            // keeps the entry's kind.
            opts = opts.kind(meta.kind);
        }
        if let (Some(left), Some(expires)) = (meta.ttl_left(now), meta.expires) {
            opts = opts.ttl(left).expires_by(expires);
        }
        for tier in self.tiers[..below].iter().rev() {
            if let Err(e) = tier.set(key, value.clone(), opts).await {
                self.refused(tier, key, &e).await;
            }
        }
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

    /// The start of every write (set, set_stream, delete, a computed
    /// value): bumps the key's generation, drops the key from memory, then
    /// from every tier above the last (under the key's lock), so that none
    /// of them serves a value the last tier is about to replace and no
    /// promotion under way installs one. Returns whether an upper tier held
    /// the key. On an error nothing has been written: the previous value is
    /// still in the last tier.
    async fn begin_write(self: &Arc<Self>, key: &str) -> Result<(WriteGuard, bool)> {
        let mut guard = WriteGuard {
            inner: self.clone(),
            ticket: self.epochs.enter(key),
        };
        let upper = self.upper();
        let _locks = if upper.is_empty() {
            None
        } else {
            let clear = self.epochs.clear.read().await;
            Some((clear, guard.ticket.lock().await))
        };
        {
            let mut st = self.epochs.state();
            guard.ticket.begin_write(&mut st);
            self.memory_invalidate(&st, key);
        }
        let mut any = false;
        for tier in upper {
            any |= tier.delete(key).await?;
        }
        Ok((guard, any))
    }

    /// The end of a write. If no other write of the key began or ended
    /// since this one began (and no clear ran), the tiers above the last
    /// and memory get `fill` (a `set_stream` has already fed the upper
    /// tiers; memory does not take streams); otherwise the order of the
    /// writes in the last tier is unknown here, so the key is dropped from
    /// memory and from the upper tiers and reads go to the last tier.
    async fn end_write(&self, mut guard: WriteGuard, fill: Option<Fill<'_>>) {
        let key = guard.ticket.key().to_owned();
        let upper = self.upper();
        let _locks = if upper.is_empty() {
            None
        } else {
            let clear = self.epochs.clear.read().await;
            let lock = guard.ticket.lock().await;
            let newest = guard.ticket.still_newest(&mut self.epochs.state());
            if !newest {
                for tier in upper {
                    if let Err(e) = tier.delete(&key).await {
                        tracing::warn!(
                            key,
                            tier = %format!("{tier:?}"),
                            error = %e,
                            "could not drop the key from an upper tier after concurrent writes"
                        );
                    }
                }
            } else if let Some(f) = &fill {
                self.fill_upper(&key, f.meta, f.value, f.compression, upper.len())
                    .await;
            }
            Some((clear, lock))
        };
        let bytes = fill
            .as_ref()
            .and_then(|f| self.bytes_for_memory(f.meta, f.value));
        let mut st = self.epochs.state();
        match (&fill, guard.ticket.still_newest(&mut st)) {
            (Some(f), true) => self.memory_put(&st, &key, f.meta, bytes),
            _ => self.memory_invalidate(&st, &key),
        }
        guard.ticket.end_write(&mut st);
    }

    /// True when `meta` has expired by this cache's clock. Each tier reads
    /// its own clock; a copy is never served past the instant this one says
    /// its entry expires.
    fn expired(&self, meta: &EntryMeta) -> bool {
        meta.is_expired(self.clock.now())
    }

    /// The tiers above the last, fastest first.
    fn upper(&self) -> &[Arc<dyn Cache>] {
        &self.tiers[..self.tiers.len() - 1]
    }

    fn last(&self) -> &Arc<dyn Cache> {
        self.tiers.last().expect("the builder requires a tier")
    }
}

/// Counts the end of a `clear` even when its future is dropped part way:
/// a promotion whose read began before then installs nothing.
struct ClearGuard<'a> {
    inner: &'a Inner,
}

impl Drop for ClearGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.inner.epochs.state();
        st.bump_clears();
        if let Some(memory) = &self.inner.memory {
            memory.invalidate_all();
        }
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
                });
                inner.end_write(guard, fill).await;
                Ok(value)
            })
            .await
        })
        .await
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
}
