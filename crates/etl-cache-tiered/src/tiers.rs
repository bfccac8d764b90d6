//! The tiers and what moves between them: finding an entry (memory first,
//! then each tier, promoting what is found), filling the tiers above the
//! last after a write, and the guards that keep a write's or a clear's
//! effects in order when its future is dropped.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use etl_cache_core::backend::{Counters, SingleFlight};
use etl_cache_core::{
    BlockSize, Cache, Clock, Codec, Compression, EntryMeta, Error, Kind, Result, SetOptions, Value,
};

use crate::epochs::{Epochs, State, Ticket};
use crate::memory::{MemEntry, Memory};

/// Where a read was served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// The memory tier.
    Memory,
    /// The lower tier at this index (0 is the first added).
    Tier(usize),
}

/// The state shared by the clones of one `TieredCache`.
pub(crate) struct Inner {
    pub(crate) memory: Option<Memory>,
    pub(crate) max_memory_entry: u64,
    pub(crate) tiers: Vec<Arc<dyn Cache>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) counters: Counters,
    pub(crate) memory_hits: AtomicU64,
    pub(crate) tier_hits: Vec<AtomicU64>,
    pub(crate) flights: SingleFlight,
    /// This handle's identity (see `Cache::handle_id`).
    pub(crate) id: etl_cache_core::HandleId,
    pub(crate) epochs: Arc<Epochs>,
}

/// The compression that writes an entry of this codec again.
pub(crate) fn compression_of(codec: Codec) -> Compression {
    match codec {
        Codec::Gzip => Compression::gzip(),
        Codec::Zstd => Compression::zstd(),
        _ => Compression::NONE,
    }
}

/// A value a write puts into the tiers above the last once it is done.
pub(crate) struct Fill<'a> {
    pub(crate) meta: &'a EntryMeta,
    pub(crate) value: &'a Value,
    pub(crate) compression: Compression,
    /// The checked blocks the write asked for ([`SetOptions::check_block`]),
    /// kept by the copies in the tiers above.
    pub(crate) check_block: Option<BlockSize>,
}

/// A write of one key between its start and its end. Dropped before
/// [`Inner::end_write`] (the write failed, or its future was dropped), it
/// still ends the write: memory forgets the key and, when there are tiers
/// above the last, a task drops the key from them, since the last tier may
/// or may not have taken the value.
pub(crate) struct WriteGuard {
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

impl Inner {
    pub(crate) fn fits_memory(&self, meta: &EntryMeta) -> bool {
        self.memory.is_some() && meta.logical_len <= self.max_memory_entry
    }

    /// The live memory entry under `key`; an expired one is dropped.
    pub(crate) fn memory_get(&self, key: &str) -> Option<Arc<MemEntry>> {
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
    pub(crate) fn memory_put(
        &self,
        _st: &State,
        key: &str,
        meta: &EntryMeta,
        bytes: Option<Bytes>,
    ) {
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
    pub(crate) fn memory_invalidate(&self, _st: &State, key: &str) {
        if let Some(memory) = &self.memory {
            memory.invalidate(key);
        }
    }

    /// The bytes memory would keep of `value`, if its entry fits there.
    pub(crate) fn bytes_for_memory(&self, meta: &EntryMeta, value: &Value) -> Option<Bytes> {
        self.fits_memory(meta).then(|| value.to_bytes())
    }

    /// Looks through memory, then each tier; promotes what it finds.
    pub(crate) async fn find(
        &self,
        key: &str,
        count: bool,
    ) -> Result<Option<(EntryMeta, Value, Served)>> {
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
    pub(crate) async fn promote(
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
            // The entry's metadata does not tell its checked blocks: a
            // promoted copy gets the default ones.
            let copy = SetOptions::new().compression(compression_of(meta.codec));
            self.fill_upper(ticket.key(), meta, value, copy, found)
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
    /// above `below`, slowest first, stored as `copy` says (compression,
    /// checked blocks), with the time the entry has left and its expiry as
    /// the latest instant the copies may live: time that passes before a
    /// tier writes its copy does not extend it. Best effort: a tier that
    /// refuses the value (too large for it, an I/O error) is left without
    /// the key, and reads fall through to the tiers below. Call with the
    /// key's lock held.
    pub(crate) async fn fill_upper(
        &self,
        key: &str,
        meta: &EntryMeta,
        value: &Value,
        copy: SetOptions,
        below: usize,
    ) {
        let now = self.clock.now();
        if meta.is_expired(now) {
            return;
        }
        let mut opts = copy;
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
    pub(crate) async fn refused(&self, tier: &Arc<dyn Cache>, key: &str, error: &Error) {
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
    pub(crate) async fn begin_write(self: &Arc<Self>, key: &str) -> Result<(WriteGuard, bool)> {
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
    pub(crate) async fn end_write(&self, mut guard: WriteGuard, fill: Option<Fill<'_>>) {
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
                let mut copy = SetOptions::new().compression(f.compression);
                if let Some(size) = f.check_block {
                    copy = copy.check_block(size);
                }
                self.fill_upper(&key, f.meta, f.value, copy, upper.len())
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
    pub(crate) fn expired(&self, meta: &EntryMeta) -> bool {
        meta.is_expired(self.clock.now())
    }

    /// The tiers above the last, fastest first.
    pub(crate) fn upper(&self) -> &[Arc<dyn Cache>] {
        &self.tiers[..self.tiers.len() - 1]
    }

    pub(crate) fn last(&self) -> &Arc<dyn Cache> {
        self.tiers.last().expect("the builder requires a tier")
    }
}

/// Counts the end of a `clear` even when its future is dropped part way:
/// a promotion whose read began before then installs nothing.
pub(crate) struct ClearGuard<'a> {
    pub(crate) inner: &'a Inner,
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
