//! Single flight across processes and hosts: a lease object per key.
//!
//! The lease lives at `<prefix>/.etl-cache/leases/<sha256 of key>` and holds
//! its owner and its expiry (JSON). It is created with `PutMode::Create`, so
//! one caller wins; the winner computes, renews the lease every third of its
//! duration (`PutMode::Update` on the e-tag it holds), writes the value and
//! deletes the lease. The others poll for the value with backoff; a lease
//! whose expiry has passed (its holder died) is taken over with
//! `PutMode::Update` on the e-tag read, so only one waiter takes it.
//!
//! Stores without conditional updates (`LocalFileSystem`) take an expired
//! lease over by deleting and re-creating it; two waiters racing for the same
//! expired lease may then both compute, once each.
//!
//! Before its first lease a handle checks that the store refuses a second
//! conditional create of one object; a store that ignores the condition
//! altogether makes single flight fail with `NotSupported` rather than
//! compute on every host. A store whose conditional create is not atomic
//! under contention (several simultaneous creates all succeed) cannot be
//! told apart this way: there, single flight may compute more than once.
//!
//! A caller whose future is dropped leaves no lease behind: each attempt at
//! the lease runs as its own task, which releases a lease it won once it
//! finds its caller gone (the create may be applied after the drop: on a
//! blocking thread, or by a server that already had the request); a
//! holder's drop, while computing, publishing or part way through its own
//! release, releases in the background. The renewal stops only between
//! two renewals, so none lands after the release. Without a Tokio runtime
//! at the drop, the lease expires by itself after `lease_duration`.
//!
//! Releasing reads the lease and deletes it if this owner still holds it.
//! With no conditional delete in `object_store`, a waiter that takes the
//! lease over between that read and the delete (only possible once the
//! lease expired: the holder stalled past `lease_duration`) loses its lease
//! to the delete, and a third caller may compute again. The value is
//! never lost: at worst it is computed and written twice.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etl_cache_core::backend::init_failed;
use etl_cache_core::{BoxError, Cache, Error, Result, SetOptions, Value, validate_key};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::ObjectCache;
use crate::error::{ObjectErrorKind, is_not_found};
use crate::inner::Inner;
use crate::local::Standing;

/// What a lease object holds.
#[derive(Debug, Serialize, Deserialize)]
struct LeaseBody {
    owner: String,
    key: String,
    /// Nanoseconds since the Unix epoch.
    expires: u64,
}

enum Acquire {
    Won(UpdateVersion),
    Held,
}

/// Nanoseconds since the epoch; a time too far out for 64 bits (after the
/// year 2554) saturates.
fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u64(nanos(SystemTime::now()));
    h.finish()
}

fn owner_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!("{host}/{}/{:016x}", std::process::id(), random_u64())
}

fn is_conflict(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }
    )
}

fn is_unsupported(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. }
    )
}

impl Inner {
    /// Checks, once per handle, that the store refuses a second create of
    /// one object (`PutMode::Create`, `If-None-Match: *` on S3): a store
    /// that ignores the condition would let every waiter win the lease.
    /// Two creates of a fresh object under `.etl-cache/probe/`, then its
    /// delete. This finds a store that ignores the condition altogether, not
    /// one whose conditional create is merely not atomic under contention.
    async fn check_conditional_create(&self) -> Result<()> {
        let honoured = *self
            .create_honoured
            .get_or_try_init(|| self.probe_conditional_create())
            .await?;
        if honoured {
            return Ok(());
        }
        let path = self.layout.probe("create");
        let why = "the store accepted a second conditional create (PutMode::Create, \
                   If-None-Match) of one object: it ignores the condition, so single \
                   flight across hosts cannot work on it";
        Err(self.wrap(self.object_error(
            ObjectErrorKind::NotSupported,
            "check conditional creates",
            "",
            &path,
            Some(why.into()),
        )))
    }

    async fn probe_conditional_create(&self) -> Result<bool> {
        let path = self.layout.probe(&format!("create-{:016x}", random_u64()));
        let body = || {
            PutPayload::from_static(b"etl-cache: a check of conditional creates; safe to delete")
        };
        let create = || PutOptions::from(PutMode::Create);
        let op = "check conditional creates";
        match self.store.put_opts(&path, body(), create()).await {
            Ok(_) => {}
            Err(e) => return Err(self.fail(op, "", &path, e)),
        }
        let second = self.store.put_opts(&path, body(), create()).await;
        // A name nobody else writes: an unconditional delete is safe.
        if let Err(e) = self.store.delete(&path).await
            && !is_not_found(&e)
        {
            tracing::warn!(object = %path, error = %e, "could not remove a probe object");
        }
        match second {
            Ok(_) => {
                tracing::error!(store = self.name, bucket = %self.bucket,
                    "the store ignores conditional creates: single flight across hosts is refused");
                Ok(false)
            }
            Err(e) if is_conflict(&e) => Ok(true),
            Err(e) => Err(self.fail(op, "", &path, e)),
        }
    }

    fn lease_payload(&self, key: &str, owner: &str) -> PutPayload {
        let body = LeaseBody {
            owner: owner.to_owned(),
            key: key.to_owned(),
            expires: self
                .config
                .clock
                .now()
                .checked_add(self.config.lease_duration)
                .map_or(u64::MAX, nanos),
        };
        PutPayload::from(serde_json::to_vec(&body).expect("a lease serializes"))
    }

    async fn put_lease(
        &self,
        path: &Path,
        key: &str,
        owner: &str,
        mode: PutMode,
    ) -> object_store::Result<UpdateVersion> {
        self.store
            .put_opts(path, self.lease_payload(key, owner), PutOptions::from(mode))
            .await
            .map(UpdateVersion::from)
    }

    /// Reads a lease: its body and version, or `None` when there is none.
    async fn read_lease(
        &self,
        path: &Path,
        key: &str,
    ) -> Result<Option<(Option<LeaseBody>, UpdateVersion)>> {
        // On a local directory, a FIFO or a link in place of the lease is
        // not read (a FIFO would block the read forever).
        match self.standing(path).await {
            Standing::File | Standing::Unknown => {}
            Standing::Missing => return Ok(None),
            Standing::Other { why, .. } => {
                return Err(self.not_an_entry_because("read the lease", key, path, Some(why)));
            }
        }
        let got = match self.store.get(path).await {
            Ok(r) => r,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.fail("read the lease", key, path, e)),
        };
        let version = UpdateVersion {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        let bytes = match got.bytes().await {
            Ok(b) => b,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.fail("read the lease", key, path, e)),
        };
        Ok(Some((serde_json::from_slice(&bytes).ok(), version)))
    }

    /// Tries to become the holder of the lease of `key`.
    async fn try_acquire(&self, path: &Path, key: &str, owner: &str) -> Result<Acquire> {
        match self.put_lease(path, key, owner, PutMode::Create).await {
            Ok(v) => return Ok(Acquire::Won(v)),
            Err(e) if is_conflict(&e) => {}
            Err(e) => return Err(self.fail("create the lease", key, path, e)),
        }
        let Some((body, version)) = self.read_lease(path, key).await? else {
            return Ok(Acquire::Held); // just released: the next round tries again
        };
        let now = nanos(self.config.clock.now());
        if body.as_ref().is_some_and(|b| b.expires > now) {
            return Ok(Acquire::Held);
        }
        tracing::info!(key, previous = ?body.map(|b| b.owner), "taking over an expired lease");
        match self
            .put_lease(path, key, owner, PutMode::Update(version))
            .await
        {
            Ok(v) => Ok(Acquire::Won(v)),
            Err(e) if is_conflict(&e) || is_not_found(&e) => Ok(Acquire::Held),
            Err(e) if is_unsupported(&e) => {
                // No conditional update here: delete the expired lease and
                // race for a new one.
                match self.store.delete(path).await {
                    Ok(()) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(self.fail("delete the expired lease", key, path, e)),
                }
                match self.put_lease(path, key, owner, PutMode::Create).await {
                    Ok(v) => Ok(Acquire::Won(v)),
                    Err(e) if is_conflict(&e) => Ok(Acquire::Held),
                    Err(e) => Err(self.fail("create the lease", key, path, e)),
                }
            }
            Err(e) => Err(self.fail("take over the lease", key, path, e)),
        }
    }

    /// Deletes the lease if this owner still holds it (a read, then an
    /// unconditional delete: see the module docs for the window between).
    async fn release(&self, path: &Path, key: &str, owner: &str) {
        match self.read_lease(path, key).await {
            Ok(Some((Some(b), _))) if b.owner == owner => {
                if let Err(e) = self.store.delete(path).await
                    && !is_not_found(&e)
                {
                    tracing::warn!(key, error = %e, "could not release a lease; it expires by itself");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(key, error = %e, "could not read a lease to release it"),
        }
    }

    /// Renews the lease every third of its duration until told to stop.
    /// It stops only between renewals, never part way through one: a
    /// renewal cut short could still land (a store that writes on a
    /// blocking thread) after the release, and bring the lease back.
    async fn renew_forever(
        self: Arc<Self>,
        path: Path,
        key: String,
        owner: String,
        mut version: UpdateVersion,
        stop: Arc<tokio::sync::Notify>,
    ) {
        let every = self.config.lease_duration / 3;
        loop {
            let sleep = std::pin::pin!(tokio::time::sleep(every));
            let stopped = std::pin::pin!(stop.notified());
            if let futures::future::Either::Right(_) = futures::future::select(sleep, stopped).await
            {
                return;
            }
            match self
                .put_lease(&path, &key, &owner, PutMode::Update(version.clone()))
                .await
            {
                Ok(v) => version = v,
                Err(e) if is_unsupported(&e) => {
                    match self.read_lease(&path, &key).await {
                        Ok(Some((Some(b), _))) if b.owner == owner => {}
                        _ => {
                            tracing::warn!(key, "lost the lease while computing");
                            return;
                        }
                    }
                    if let Ok(v) = self
                        .put_lease(&path, &key, &owner, PutMode::Overwrite)
                        .await
                    {
                        version = v;
                    }
                }
                Err(e) if is_conflict(&e) || is_not_found(&e) => {
                    tracing::warn!(
                        key,
                        "lost the lease while computing (it expired and was taken over)"
                    );
                    return;
                }
                Err(e) => tracing::warn!(key, error = %e, "could not renew the lease; will retry"),
            }
        }
    }
}

/// Stops the renewal when the computation ends, however it ends; releases
/// the lease in the background when the caller's future was dropped
/// (before or part way through its own release).
struct Holding {
    inner: Arc<Inner>,
    path: Path,
    key: String,
    owner: String,
    stop: Arc<tokio::sync::Notify>,
    renewal: Option<tokio::task::JoinHandle<()>>,
    released: bool,
}

impl Holding {
    fn new(
        inner: &Arc<Inner>,
        path: &Path,
        key: &str,
        owner: &str,
        version: UpdateVersion,
    ) -> Self {
        let stop = Arc::new(tokio::sync::Notify::new());
        let renewal = tokio::spawn(inner.clone().renew_forever(
            path.clone(),
            key.to_owned(),
            owner.to_owned(),
            version,
            stop.clone(),
        ));
        Holding {
            inner: inner.clone(),
            path: path.clone(),
            key: key.to_owned(),
            owner: owner.to_owned(),
            stop,
            renewal: Some(renewal),
            released: false,
        }
    }

    /// Stops the renewal (waiting for one under way), then deletes the
    /// lease if it is still ours. Marked released only once done: a drop
    /// part way through starts the release again in the background.
    async fn release(mut self) {
        finish_and_release(
            &self.inner,
            &self.path,
            &self.key,
            &self.owner,
            &self.stop,
            &mut self.renewal,
        )
        .await;
        self.released = true;
    }
}

async fn finish_and_release(
    inner: &Inner,
    path: &Path,
    key: &str,
    owner: &str,
    stop: &tokio::sync::Notify,
    renewal: &mut Option<tokio::task::JoinHandle<()>>,
) {
    stop.notify_one();
    if let Some(r) = renewal.as_mut() {
        let _ = r.await;
        *renewal = None;
    }
    inner.release(path, key, owner).await;
}

impl Drop for Holding {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.stop.notify_one();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let (inner, path, key, owner, stop, mut renewal) = (
                    self.inner.clone(),
                    self.path.clone(),
                    self.key.clone(),
                    self.owner.clone(),
                    self.stop.clone(),
                    self.renewal.take(),
                );
                rt.spawn(async move {
                    finish_and_release(&inner, &path, &key, &owner, &stop, &mut renewal).await;
                });
            }
            // No runtime to release on: the lease expires by itself.
            Err(_) => {
                if let Some(r) = self.renewal.take() {
                    r.abort();
                }
            }
        }
    }
}

/// An attempt at the lease, run as its own task so that it ends even when
/// the caller's future is dropped part way (a conditional create may be
/// applied by a blocking thread or a server after that): if the caller is
/// gone by then, a lease the attempt won is released.
struct Attempt {
    inner: Arc<Inner>,
    path: Path,
    key: String,
    owner: String,
    task: Option<tokio::task::JoinHandle<Result<Acquire>>>,
}

impl Attempt {
    fn start(inner: &Arc<Inner>, path: &Path, key: &str, owner: &str) -> Attempt {
        let (i, p, k, o) = (
            inner.clone(),
            path.clone(),
            key.to_owned(),
            owner.to_owned(),
        );
        Attempt {
            inner: inner.clone(),
            path: path.clone(),
            key: key.to_owned(),
            owner: owner.to_owned(),
            task: Some(tokio::spawn(async move { i.try_acquire(&p, &k, &o).await })),
        }
    }

    /// The attempt's outcome; the caller holds what it won from the moment
    /// this returns (there is no await between it and the [`Holding`]).
    async fn outcome(mut self) -> Result<Acquire> {
        let task = self.task.as_mut().expect("awaited once");
        let joined = task.await;
        self.task = None;
        match joined {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(Error::Io {
                key: Error::display_key(&self.key),
                path: self.path.as_ref().into(),
                op: "take the lease",
                source: std::io::Error::other(e),
            }),
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        let (inner, path, key, owner) = (
            self.inner.clone(),
            self.path.clone(),
            self.key.clone(),
            self.owner.clone(),
        );
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Ok(Ok(Acquire::Won(_))) = task.await {
                        inner.release(&path, &key, &owner).await;
                    }
                });
            }
            Err(_) => task.abort(),
        }
    }
}

impl ObjectCache {
    /// Single flight with an explicit wait: returns the value under `key`;
    /// when there is none, computes it with `compute`, stores it with `opts`
    /// and returns it — running the computation once even when many tasks,
    /// processes or hosts ask for the same missing key at once.
    ///
    /// This is [`etl_cache_core::CacheExt::try_get_or_insert_with`] with
    /// `timeout` in place of the cache's
    /// [`lock_timeout`](crate::ObjectCacheBuilder::lock_timeout).
    ///
    /// Tasks of one process queue in memory; one of them takes the key's
    /// lease (an object created only if absent) and computes, renewing the
    /// lease while it works; the other processes poll for the value with
    /// backoff (see [`crate::ObjectCacheBuilder::lease_poll_interval`]). If
    /// the holder dies, its lease expires after
    /// [`crate::ObjectCacheBuilder::lease_duration`] and one waiter takes it
    /// over. If the computation fails, the holder gets [`Error::Init`], the
    /// lease is released and a waiter computes in turn.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> etl_cache_core::Result<()> {
    /// use std::time::Duration;
    /// use etl_cache_core::{SetOptions, Value};
    /// use etl_cache_object::ObjectCache;
    ///
    /// let cache = ObjectCache::from_url("memory:///etl")?;
    /// let rows = cache
    ///     .get_or_insert_with_timeout("extract/2026-11-28", SetOptions::new().ttl_seconds(3600),
    ///         Duration::from_secs(600), || async {
    ///             // the expensive extraction, run once across every worker
    ///             Ok::<_, etl_cache_core::Error>(Value::Text("<rows>…</rows>".into()))
    ///         })
    ///     .await?;
    /// assert_eq!(rows.as_text(), Some("<rows>…</rows>"));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`] when another worker held the key for longer
    /// than `timeout` without producing the value (the holder's own
    /// computation has no time limit); [`Error::Init`] with the error of
    /// `compute` for the caller that ran it; [`Error::InvalidKey`] and
    /// backend failures as [`Cache::get`] and [`Cache::set`].
    pub async fn get_or_insert_with_timeout<F, Fut, E>(
        &self,
        key: &str,
        opts: SetOptions,
        timeout: Duration,
        compute: F,
    ) -> Result<Value>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<Value, E>>,
        E: Into<BoxError>,
    {
        self.single_flight(key, opts, timeout, async move {
            compute().await.map_err(Into::into)
        })
        .await
    }

    pub(crate) async fn single_flight(
        &self,
        key: &str,
        opts: SetOptions,
        timeout: Duration,
        init: impl Future<Output = std::result::Result<Value, BoxError>>,
    ) -> Result<Value> {
        validate_key(key)?;
        let inner = &self.inner;
        let started = Instant::now();
        let look = |_first: bool| async move { Ok(self.read_checked(key).await?.map(|(_, v)| v)) };
        let fill = || async move {
            // This caller's turn in this process; now the lease, among hosts.
            inner.check_conditional_create().await?;
            let path = inner.layout.lease(key);
            let owner = owner_id();
            let mut delay = inner.config.poll_min;
            let mut looked = true; // the single flight looked just now
            let version = loop {
                if !looked && let Some((_, v)) = self.read_checked(key).await? {
                    return Ok(v);
                }
                looked = false;
                if let Acquire::Won(v) = Attempt::start(inner, &path, key, &owner).outcome().await?
                {
                    break v;
                }
                let waited = started.elapsed();
                if waited >= timeout {
                    return Err(Error::LockTimeout {
                        key: Error::display_key(key),
                        waited,
                    });
                }
                // Jitter: between half the delay and the delay.
                let half = delay / 2;
                let span = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
                let jitter = Duration::from_nanos(random_u64() % span.saturating_add(1));
                tokio::time::sleep(half.saturating_add(jitter).min(timeout - waited)).await;
                delay = delay.saturating_mul(2).min(inner.config.poll_max);
            };
            let holding = Holding::new(inner, &path, key, &owner, version);
            // The value may have landed between the last look and the lease.
            if let Some((_, v)) = self.read_checked(key).await? {
                holding.release().await;
                return Ok(v);
            }
            let result = match init.await {
                Ok(value) => self.set(key, value.clone(), opts).await.map(|_| value),
                Err(source) => Err(init_failed(key, source)),
            };
            holding.release().await;
            result
        };
        inner
            .flights
            .run_with_timeout(key, timeout, look, fill)
            .await
    }
}
