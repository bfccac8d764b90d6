//! `MemoryCache`: the reference implementation of the contract, in memory.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::backend::codec::{Encoder, PayloadReader};
use crate::backend::format::{HEADER_FIXED_LEN, TRAILER_LEN};
use crate::backend::{Counters, SingleFlight};
use crate::{
    ByteStream, Cache, Clock, EntryMeta, Error, GetStream, InitFuture, Kind, Result, SetOptions,
    Stats, SystemClock, Value, validate_key,
};

#[derive(Debug, Clone)]
struct Stored {
    meta: EntryMeta,
    payload: Bytes,
}

/// A cache in this process's memory: the reference implementation of the
/// [`Cache`] contract, for tests and examples. It has no capacity limit and
/// `set_stream` collects the stream in memory; for a bounded memory tier use
/// the tiered crate.
///
/// Clones share one cache. Its entries live as long as the last clone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> etl_cache_core::Result<()> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use etl_cache_core::{Cache, CacheExt, ManualClock, MemoryCache, SetOptions};
///
/// // A clock the test moves by hand, to see an entry expire.
/// let clock = Arc::new(ManualClock::new());
/// let cache = MemoryCache::with_clock(clock.clone());
/// let ttl = SetOptions::new().ttl(Duration::from_secs(60));
/// cache.set_json("config", &serde_json::json!({"currency": "EUR"}), ttl).await?;
///
/// let shared = cache.clone();
/// let config: Option<serde_json::Value> = shared.get_json("config").await?;
/// assert_eq!(config.unwrap()["currency"], "EUR");
///
/// clock.advance(Duration::from_secs(61));
/// assert!(cache.get("config").await?.is_none(), "expired");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MemoryCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    map: Mutex<HashMap<String, Stored>>,
    clock: Arc<dyn Clock>,
    counters: Counters,
    flights: SingleFlight,
    id: crate::HandleId,
}

impl Default for MemoryCache {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryCache {
    /// An empty cache on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty cache reading time from `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemoryCache {
            inner: Arc::new(Inner {
                map: Mutex::new(HashMap::new()),
                clock,
                counters: Counters::default(),
                flights: SingleFlight::default(),
                id: crate::HandleId::new(),
            }),
        }
    }

    /// How long a `get_or_insert_with` caller waits for another caller
    /// computing the same key before it fails with [`Error::LockTimeout`]
    /// (default [`crate::backend::DEFAULT_LOCK_TIMEOUT`]); for this handle
    /// and its clones.
    pub fn lock_timeout(self, timeout: Duration) -> Self {
        self.inner.flights.set_timeout(timeout);
        self
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Stored>> {
        self.inner.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn store(
        &self,
        key: &str,
        kind: Kind,
        opts: SetOptions,
        payload: Bytes,
        totals: crate::backend::codec::Totals,
    ) -> Result<EntryMeta> {
        let now = self.inner.clock.now();
        let expires = opts.expires_at(now)?;
        let meta = EntryMeta {
            key: key.to_owned(),
            kind,
            codec: opts.compression.codec(),
            created: now,
            expires,
            logical_len: totals.logical_len,
            stored_len: totals.stored_len,
            size: (HEADER_FIXED_LEN + key.len() + 4 + TRAILER_LEN) as u64 + totals.stored_len,
        };
        self.map().insert(
            key.to_owned(),
            Stored {
                meta: meta.clone(),
                payload,
            },
        );
        Counters::bump(&self.inner.counters.sets);
        Ok(meta)
    }

    /// The live entry under `key`, removing it when expired.
    fn live(&self, key: &str) -> Option<Stored> {
        let now = self.inner.clock.now();
        let mut map = self.map();
        match map.get(key) {
            Some(s) if s.meta.is_expired(now) => {
                map.remove(key);
                crate::backend::obs::note(crate::backend::obs::Outcome::Expired);
                Counters::bump(&self.inner.counters.expired);
                None
            }
            other => other.cloned(),
        }
    }

    fn list_filtered(
        &self,
        prefix: Option<&str>,
        include_expired: bool,
    ) -> BoxStream<'static, Result<EntryMeta>> {
        let now = self.inner.clock.now();
        let prefix = prefix.unwrap_or("");
        let metas: Vec<Result<EntryMeta>> = self
            .map()
            .values()
            .filter(|s| {
                s.meta.key.starts_with(prefix) && (include_expired || !s.meta.is_expired(now))
            })
            .map(|s| Ok(s.meta.clone()))
            .collect();
        futures::stream::iter(metas).boxed()
    }

    fn lookup(&self, key: &str) -> Result<Option<Stored>> {
        validate_key(key)?;
        let found = self.live(key);
        Counters::bump(if found.is_some() {
            &self.inner.counters.hits
        } else {
            &self.inner.counters.misses
        });
        Ok(found)
    }
}

fn corrupt(key: &str, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        key: Error::display_key(key),
        reason: reason.into(),
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn set(&self, key: &str, value: Value, opts: SetOptions) -> Result<EntryMeta> {
        crate::backend::obs::observe("memory", "set", Some(key), async move {
            validate_key(key)?;
            opts.validate_for(key)?;
            let kind = opts.value_kind(key, &value)?;
            let (payload, totals) = Encoder::encode_all(opts.compression, value.into_bytes())
                .map_err(|source| Error::Io {
                    key: key.to_owned(),
                    path: "memory".into(),
                    op: "compress",
                    source,
                })?;
            self.store(key, kind, opts, payload, totals)
        })
        .await
    }

    async fn set_stream(
        &self,
        key: &str,
        mut stream: ByteStream,
        opts: SetOptions,
    ) -> Result<EntryMeta> {
        crate::backend::obs::observe("memory", "set_stream", Some(key), async move {
            validate_key(key)?;
            opts.validate_for(key)?;
            let kind = opts.stream_kind(key)?;
            let io = |source| Error::Io {
                key: key.to_owned(),
                path: "memory".into(),
                op: "compress",
                source,
            };
            let mut enc = Encoder::new(opts.compression).map_err(io)?;
            let mut buf = BytesMut::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|source| Error::Stream {
                    key: Error::display_key(key),
                    source,
                })?;
                buf.extend_from_slice(&enc.encode(chunk).map_err(io)?);
            }
            let (last, totals) = enc.finish().map_err(io)?;
            buf.extend_from_slice(&last);
            self.store(key, kind, opts, buf.freeze(), totals)
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<Value>> {
        crate::backend::obs::observe("memory", "get", Some(key), async move {
            let Some(s) = self.lookup(key)? else {
                return Ok(None);
            };
            let mut out = Vec::with_capacity(s.meta.logical_len as usize);
            PayloadReader::new(s.meta.codec, &s.payload[..])
                .and_then(|mut r| r.read_to_end(&mut out))
                .map_err(|e| corrupt(key, e.to_string()))?;
            Value::from_stored(s.meta.kind, Bytes::from(out))
                .map(Some)
                .map_err(|r| corrupt(key, r))
        })
        .await
    }

    async fn get_stream(&self, key: &str, chunk_size: usize) -> Result<Option<GetStream>> {
        crate::backend::obs::observe("memory", "get_stream", Some(key), async move {
            if chunk_size == 0 {
                return Err(Error::InvalidInput {
                    message: "chunk_size must be at least 1".into(),
                });
            }
            let Some(s) = self.lookup(key)? else {
                return Ok(None);
            };
            let reader = PayloadReader::new(s.meta.codec, std::io::Cursor::new(s.payload.clone()))
                .map_err(|e| corrupt(key, e.to_string()))?;
            let stream = futures::stream::unfold(Some(reader), move |state| async move {
                let mut reader = state?;
                let mut buf = vec![0u8; chunk_size];
                let mut filled = 0;
                while filled < chunk_size {
                    match reader.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) => return Some((Err(e), None)),
                    }
                }
                if filled == 0 {
                    return None;
                }
                buf.truncate(filled);
                Some((Ok(Bytes::from(buf)), Some(reader)))
            });
            Ok(Some(GetStream::new(s.meta, stream.boxed())))
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<Option<EntryMeta>> {
        crate::backend::obs::observe("memory", "head", Some(key), async move {
            validate_key(key)?;
            Ok(self.live(key).map(|s| s.meta))
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        crate::backend::obs::observe("memory", "delete", Some(key), async move {
            validate_key(key)?;
            let removed = self.map().remove(key).is_some();
            if removed {
                Counters::bump(&self.inner.counters.deletes);
            }
            Ok(removed)
        })
        .await
    }

    fn list(&self, prefix: Option<&str>) -> BoxStream<'static, Result<EntryMeta>> {
        crate::backend::obs::observe_stream("memory", "list", prefix, {
            self.list_filtered(prefix, false)
        })
    }

    fn list_all(&self, prefix: Option<&str>) -> BoxStream<'static, Result<EntryMeta>> {
        crate::backend::obs::observe_stream("memory", "list_all", prefix, {
            self.list_filtered(prefix, true)
        })
    }

    async fn purge_expired(&self) -> Result<u64> {
        crate::backend::obs::observe("memory", "purge_expired", None, async move {
            let now = self.inner.clock.now();
            let mut map = self.map();
            let before = map.len();
            map.retain(|_, s| !s.meta.is_expired(now));
            let n = (before - map.len()) as u64;
            self.inner
                .counters
                .expired
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            Ok(n)
        })
        .await
    }

    async fn clear(&self) -> Result<u64> {
        crate::backend::obs::observe("memory", "clear", None, async move {
            let mut map = self.map();
            let n = map.len() as u64;
            map.clear();
            Ok(n)
        })
        .await
    }

    async fn get_or_insert_boxed<'a>(
        &'a self,
        key: &'a str,
        opts: SetOptions,
        init: InitFuture<'a>,
    ) -> Result<Value> {
        crate::backend::obs::observe_init("memory", key, init, |init| async move {
            opts.validate_for(key)?;
            // The second look skips the miss count of the first.
            let look = |first: bool| async move {
                if first || self.live(key).is_some() {
                    self.get(key).await
                } else {
                    Ok(None)
                }
            };
            self.inner
                .flights
                .run(key, look, || async move {
                    let value = init
                        .await
                        .map_err(|source| crate::backend::init_failed(key, source))?;
                    self.set(key, value.clone(), opts).await?;
                    Ok(value)
                })
                .await
        })
        .await
    }

    async fn stats(&self) -> Result<Stats> {
        crate::backend::obs::observe("memory", "stats", None, async move {
            let map = self.map();
            let bytes = map.values().map(|s| s.meta.size).sum();
            Ok(self.inner.counters.snapshot(map.len() as u64, bytes))
        })
        .await
    }

    fn handle_id(&self) -> Option<crate::HandleId> {
        Some(self.inner.id)
    }

    fn handle(&self) -> Option<std::sync::Arc<dyn Cache>> {
        Some(std::sync::Arc::new(self.clone()))
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use std::sync::Arc;

    use crate::testing::Harness;
    use crate::{ManualClock, MemoryCache};

    async fn make(clock: Arc<ManualClock>) -> Harness {
        Harness::new(Arc::new(MemoryCache::with_clock(clock.clone())), clock, ())
    }

    crate::contract_tests!(make);

    #[test]
    fn clones_share_their_handle_id_and_new_caches_get_another() {
        use crate::Cache;
        let a = MemoryCache::new();
        assert!(a.handle_id().is_some());
        assert_eq!(a.clone().handle_id(), a.handle_id());
        assert_ne!(MemoryCache::new().handle_id(), a.handle_id());
    }
}
