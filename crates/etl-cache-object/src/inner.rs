//! The state shared by the clones of one `ObjectCache` handle, and the
//! settings and small rules every operation uses. The listing methods of
//! [`Inner`] live in `cache.rs`, beside `list` and `purge_expired`.

use std::sync::Arc;
use std::time::Duration;

use etl_cache_core::backend::{Counters, SingleFlight};
use etl_cache_core::{Clock, Error};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::error::{ObjectError, ObjectErrorKind, classify, is_not_found};
use crate::layout::Layout;
use crate::local::{LocalFiles, Standing};
use crate::staged::LocalWrites;

/// Settings shared by every operation of one handle.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub clock: Arc<dyn Clock>,
    pub part_size: usize,
    pub max_concurrency: usize,
    pub lease_duration: Duration,
    pub poll_min: Duration,
    pub poll_max: Duration,
    pub resume_attempts: u32,
    pub lock_timeout: Duration,
}

/// Whether two listings or heads of one path show the same version of it.
/// Without an e-tag or a version (a store that gives neither), the size
/// and the modification time must do.
fn same_version(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    a.e_tag == b.e_tag
        && a.version == b.version
        && a.size == b.size
        && a.last_modified == b.last_modified
}

/// Whether the CPU work on a whole value of `len` stored bytes (its
/// checksum, and its compression or decompression unless `codec` is none)
/// runs on the calling task rather than on the blocking pool. Both limits
/// keep a task busy for well under a millisecond; below them, the hop to
/// the pool (a thread wake-up, ~50-200 µs on a busy two-core machine)
/// would cost more than the work. Summing runs at ~20 GB/s, compressing
/// at ~0.5, so an uncompressed value may be far larger.
pub(crate) fn work_inline(codec: etl_cache_core::Codec, len: usize) -> bool {
    match codec {
        etl_cache_core::Codec::None => len <= 4 << 20,
        _ => len <= 256 << 10,
    }
}

/// State shared by the clones of one cache handle.
#[derive(Debug)]
pub(crate) struct Inner {
    pub store: Arc<dyn ObjectStore>,
    pub layout: Layout,
    pub name: &'static str,
    pub bucket: String,
    pub config: Config,
    pub counters: Counters,
    /// Tasks of this process missing one key queue here; one of them takes
    /// the key's lease.
    pub flights: SingleFlight,
    /// This handle's identity (see `Cache::handle_id`).
    pub id: etl_cache_core::HandleId,
    /// The directory of a store that keeps objects as local files: what
    /// stands at an object's path is looked at before it is read, deleted
    /// or listed.
    pub local: Option<LocalFiles>,
    /// On a plain `LocalFileSystem`: entries are written by the cache, so
    /// that a write whose future is dropped never publishes later.
    pub local_writes: Option<LocalWrites>,
    /// Whether the store honours conditional creates (checked once, before
    /// the first lease).
    pub create_honoured: tokio::sync::OnceCell<bool>,
}

impl Inner {
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        layout: Layout,
        name: &'static str,
        bucket: String,
        config: Config,
        local: Option<LocalFiles>,
        local_writes: Option<LocalWrites>,
    ) -> Inner {
        Inner {
            flights: SingleFlight::new(config.lock_timeout),
            id: etl_cache_core::HandleId::new(),
            store,
            layout,
            name,
            bucket,
            config,
            counters: Counters::default(),
            local,
            local_writes,
            create_honoured: tokio::sync::OnceCell::new(),
        }
    }

    /// What stands at `location`: on a local directory, looked at without
    /// following links; elsewhere always [`Standing::File`] (an object is an
    /// object).
    pub(crate) async fn standing(&self, location: &Path) -> Standing {
        match &self.local {
            Some(local) => local.standing(location).await,
            None => Standing::File,
        }
    }

    /// An [`ObjectError`] of this store.
    pub(crate) fn object_error(
        &self,
        kind: ObjectErrorKind,
        op: &'static str,
        key: &str,
        path: &Path,
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> ObjectError {
        ObjectError {
            kind,
            store: self.name,
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            path: path.to_string(),
            op,
            source,
        }
    }

    /// A cache error for an `object_store` error.
    pub(crate) fn fail(
        &self,
        op: &'static str,
        key: &str,
        path: &Path,
        e: object_store::Error,
    ) -> Error {
        self.wrap(self.object_error(classify(&e), op, key, path, Some(Box::new(e))))
    }

    /// Wraps an [`ObjectError`] of this store into a cache error.
    pub(crate) fn wrap(&self, e: ObjectError) -> Error {
        Error::Backend {
            backend: self.name,
            key: Error::display_key(&e.key),
            source: Box::new(e),
        }
    }

    /// An I/O error for a stream, carrying the cache error (so that
    /// `stream_read_error` and [`ObjectError::find_io`] get it back).
    pub(crate) fn to_io(&self, e: ObjectError) -> std::io::Error {
        std::io::Error::new(e.io_kind(), self.wrap(e))
    }

    pub(crate) fn corrupt(&self, key: &str, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            key: Error::display_key(key),
            reason: reason.into(),
        }
    }

    /// Removes the object at `location` if it is still the version that
    /// was judged (expired or corrupt), logging rather than failing; returns
    /// whether it removed it.
    ///
    /// `object_store` has no conditional delete, so the object's version
    /// (e-tag, version, size and modification time) is read again with a
    /// `HEAD` just before an unconditional `DELETE`, which goes ahead only
    /// if nothing changed. A write of the key that lands between the two
    /// (one round trip) is still deleted: only `purge_expired`, an explicit
    /// bulk call, takes that risk; reads never remove anything.
    pub(crate) async fn remove_judged(
        &self,
        key: &str,
        location: &Path,
        judged: &ObjectMeta,
    ) -> bool {
        let now = match self.store.head(location).await {
            Ok(m) => m,
            Err(e) if is_not_found(&e) => return false,
            Err(e) => {
                tracing::warn!(key, object = %location, error = %e, "could not look at an entry to remove it");
                return false;
            }
        };
        if !same_version(judged, &now) {
            tracing::debug!(key, object = %location, "not removed: the entry was written again since it was read");
            return false;
        }
        match self.store.delete(location).await {
            Ok(()) => true,
            Err(e) if is_not_found(&e) => false,
            Err(e) => {
                tracing::warn!(key, object = %location, error = %e, "could not remove an entry");
                false
            }
        }
    }
}
