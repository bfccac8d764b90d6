//! Typed helpers over any [`Cache`].

use bytes::Bytes;
use futures::TryStreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Cache, EntryMeta, Error, Kind, Result, SetOptions, Value};

/// Typed helpers for every [`Cache`], `dyn Cache` included. Do not implement it:
/// it is implemented for all caches.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> etl_cache_core::Result<()> {
/// use etl_cache_core::{CacheExt, MemoryCache, SetOptions};
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct RunStats { records_processed: u64, status: String }
///
/// let cache = MemoryCache::new();
/// let stats = RunStats { records_processed: 1042, status: "success".into() };
/// cache.set_json("job_123_stats", &stats, SetOptions::new()).await?;
/// let back: Option<RunStats> = cache.get_json("job_123_stats").await?;
/// assert_eq!(back, Some(stats));
/// # Ok(()) }
/// ```
#[async_trait::async_trait]
pub trait CacheExt: Cache {
    /// Stores any `serde` value as JSON.
    ///
    /// # Errors
    ///
    /// [`Error::Json`] when the value does not serialize,
    /// [`Error::InvalidInput`] when it nests deeper than
    /// [`crate::MAX_JSON_DEPTH`]; otherwise as [`Cache::set`].
    async fn set_json<T: Serialize + Sync + ?Sized>(
        &self,
        key: &str,
        value: &T,
        opts: SetOptions,
    ) -> Result<EntryMeta> {
        let json = serde_json::to_value(value).map_err(|source| Error::Json {
            key: Error::display_key(key),
            source,
        })?;
        let value = Value::Json(json);
        value.check(key)?;
        self.set(key, value, opts).await
    }

    /// Reads a JSON entry into any `serde` type.
    ///
    /// # Errors
    ///
    /// [`Error::KindMismatch`] when the entry is not JSON, [`Error::Json`] when it
    /// does not fit `T`; otherwise as [`Cache::get`].
    async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.get_entry(key).await? {
            None => Ok(None),
            Some((meta, Value::Json(j))) if meta.kind == Kind::Json => serde_json::from_value(j)
                .map(Some)
                .map_err(|source| Error::Json {
                    key: Error::display_key(key),
                    source,
                }),
            Some((meta, _)) => Err(Error::KindMismatch {
                key: Error::display_key(key),
                expected: Kind::Json,
                found: meta.kind,
            }),
        }
    }

    /// Stores text.
    ///
    /// # Errors
    ///
    /// As [`Cache::set`].
    async fn set_text(&self, key: &str, text: &str, opts: SetOptions) -> Result<EntryMeta> {
        self.set(key, Value::Text(text.to_owned()), opts).await
    }

    /// Reads a text entry.
    ///
    /// # Errors
    ///
    /// [`Error::KindMismatch`] when the entry is not text; otherwise as [`Cache::get`].
    async fn get_text(&self, key: &str) -> Result<Option<String>> {
        match self.get_entry(key).await? {
            None => Ok(None),
            Some((meta, Value::Text(t))) if meta.kind == Kind::Text => Ok(Some(t)),
            Some((meta, _)) => Err(Error::KindMismatch {
                key: Error::display_key(key),
                expected: Kind::Text,
                found: meta.kind,
            }),
        }
    }

    /// Reads the logical bytes of an entry of any kind (UTF-8 for text, the
    /// serialized document for JSON).
    ///
    /// # Errors
    ///
    /// As [`Cache::get`].
    async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.get(key).await?.map(Value::into_bytes))
    }

    /// Returns the value under `key`, or computes it with `init`, stores it and
    /// returns it. Many callers missing the same key at once compute it once
    /// (see [`Cache::get_or_insert_boxed`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> etl_cache_core::Result<()> {
    /// use etl_cache_core::{CacheExt, MemoryCache, SetOptions, Value};
    /// let cache = MemoryCache::new();
    /// let v = cache
    ///     .get_or_insert_with("report", SetOptions::new(), || async { Value::from("expensive") })
    ///     .await?;
    /// assert_eq!(v, Value::from("expensive"));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Cache::get_or_insert_boxed`].
    async fn get_or_insert_with<F, Fut>(
        &self,
        key: &str,
        opts: SetOptions,
        init: F,
    ) -> Result<Value>
    where
        F: FnOnce() -> Fut + Send,
        Fut: std::future::Future<Output = Value> + Send,
    {
        let init = Box::pin(async move { checked(key, init().await) });
        self.get_or_insert_boxed(key, opts, init)
            .await
            .map_err(refused)
    }

    /// As [`CacheExt::get_or_insert_with`] for a computation that can fail. Its
    /// error comes back as [`Error::Init`] (downcast `source` to get it) and
    /// nothing is stored.
    ///
    /// # Errors
    ///
    /// As [`Cache::get_or_insert_boxed`].
    async fn try_get_or_insert_with<F, Fut, E>(
        &self,
        key: &str,
        opts: SetOptions,
        init: F,
    ) -> Result<Value>
    where
        F: FnOnce() -> Fut + Send,
        Fut: std::future::Future<Output = std::result::Result<Value, E>> + Send,
        E: Into<crate::BoxError> + Send,
    {
        let init = Box::pin(async move { checked(key, init().await.map_err(Into::into)?) });
        self.get_or_insert_boxed(key, opts, init)
            .await
            .map_err(refused)
    }

    /// The keys under `prefix`, sorted.
    ///
    /// # Errors
    ///
    /// As [`Cache::list`].
    async fn keys(&self, prefix: Option<&str>) -> Result<Vec<String>> {
        let mut keys: Vec<String> = self.list(prefix).map_ok(|m| m.key).try_collect().await?;
        keys.sort();
        Ok(keys)
    }
}

impl<C: Cache + ?Sized> CacheExt for C {}

/// A computed value [`Value::check`] refused, carried through the backend
/// as the computation's error and unwrapped by [`refused`].
#[derive(Debug)]
struct Refused(Error);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Refused {}

/// A computed value, checked before the backend stores it: what cannot be
/// read back is never stored.
fn checked(key: &str, value: Value) -> std::result::Result<Value, crate::BoxError> {
    match value.check(key) {
        Ok(()) => Ok(value),
        Err(e) => Err(Box::new(Refused(e))),
    }
}

/// The error of a computation: [`Error::Init`], unless it is a refusal of
/// the computed value by [`checked`], returned as itself.
fn refused(e: Error) -> Error {
    match e {
        Error::Init { key, source } => match source.downcast::<Refused>() {
            Ok(r) => r.0,
            Err(source) => Error::Init { key, source },
        },
        e => e,
    }
}
