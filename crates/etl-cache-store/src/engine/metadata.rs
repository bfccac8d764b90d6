//! What a store knows of objects' metadata: kept in memory and in the
//! cache, trusted while fresh, and forgotten when a write through the store
//! changes the object.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use etl_cache_core::{SetOptions, Value};
use object_store::path::Path;
use object_store::{Attributes, ObjectMeta};

use super::{Engine, Metas, identity, lock};
use crate::config::Revalidate;
use crate::meta::{Known, StoredMeta};

/// Known metadata, at most this many objects in memory (then forgotten
/// all at once; the cache keeps a copy of each).
const KNOWN_MAX: usize = 100_000;

impl Engine {
    /// What is known about `path`: from memory, else from the cache.
    pub(crate) async fn known(&self, path: &Path) -> Option<Known> {
        if let Some(k) = lock(&self.metas).known.get(path) {
            return Some(k.clone());
        }
        let snapshot = self.snapshot();
        let key = self.meta_key(path);
        let stored = match self.cache.get(&key).await {
            Ok(Some(Value::Json(j))) => serde_json::from_value::<StoredMeta>(j).ok(),
            Ok(_) => None,
            Err(e) => {
                self.stats.cache_error();
                tracing::warn!(key, error = %e, "the cache failed to read an object's metadata");
                None
            }
        }?;
        let known = stored.into_known()?;
        if known.meta.location != *path {
            return None; // a digest collision; never seen in practice
        }
        let mut m = lock(&self.metas);
        if m.writes
            .last
            .get(path)
            .is_some_and(|&(_, at)| known.checked <= at)
        {
            // Kept before a write through this store whose removal of it
            // has not run (or not yet).
            return None;
        }
        if !Self::written_since(&m, path, snapshot) {
            Self::insert_known(&mut m, path, known.clone());
        }
        Some(known)
    }

    fn insert_known(m: &mut Metas, path: &Path, known: Known) {
        if m.known.len() >= KNOWN_MAX && !m.known.contains_key(path) {
            m.known.clear();
        }
        m.known.insert(path.clone(), known);
    }

    /// Whether `known` may be trusted without asking the store.
    pub(crate) fn fresh(&self, known: &Known) -> bool {
        match self.cfg.revalidate {
            Revalidate::Never => true,
            Revalidate::Always => false,
            Revalidate::After(d) => SystemTime::now()
                .duration_since(known.checked)
                .is_ok_and(|age| age < d),
        }
    }

    /// Remembers `meta` and `attributes` as checked now, in memory and in
    /// the cache, unless `path` was written through this store since
    /// `snapshot`.
    pub(crate) async fn remember(
        &self,
        path: &Path,
        meta: &ObjectMeta,
        attributes: &Attributes,
        snapshot: u64,
    ) {
        let known = Known {
            meta: meta.clone(),
            attributes: attributes.clone(),
            checked: SystemTime::now(),
        };
        {
            let mut m = lock(&self.metas);
            if Self::written_since(&m, path, snapshot) {
                return;
            }
            let unchanged = m.known.get(path).is_some_and(|k| {
                identity(&k.meta) == identity(meta) && k.attributes == *attributes
            });
            Self::insert_known(&mut m, path, known.clone());
            // The cache's copy matters only across restarts, and for
            // `Revalidate::After`, its check time: write it when the object
            // is new or changed, or when that time matters.
            if unchanged && !matches!(self.cfg.revalidate, Revalidate::After(_)) {
                return;
            }
        }
        let key = self.meta_key(path);
        let value = match serde_json::to_value(StoredMeta::from_known(&known)) {
            Ok(v) => Value::Json(v),
            Err(_) => return,
        };
        if let Err(e) = self.cache.set(&key, value, SetOptions::default()).await {
            self.stats.cache_error();
            tracing::warn!(key, error = %e, "the cache failed to keep an object's metadata");
            return;
        }
        // A write that came while this was being kept: its removal of the
        // copy may have run before this set; remove it again.
        if Self::written_since(&lock(&self.metas), path, snapshot) {
            let _ = self.cache.delete(&key).await;
        }
    }

    /// Forgets what is known of `path` (it changed, as a read found).
    pub(crate) async fn forget_meta(&self, path: &Path) {
        lock(&self.metas).known.remove(path);
        let key = self.meta_key(path);
        if let Err(e) = self.cache.delete(&key).await {
            self.stats.cache_error();
            tracing::warn!(key, error = %e, "the cache failed to drop an object's metadata");
        }
    }

    /// `path` is about to change through this store: reads that began
    /// before remember nothing of it, and what memory knows is forgotten.
    /// Returns what memory knew.
    pub(crate) fn mark_written(&self, path: &Path) -> Option<Known> {
        let mut m = lock(&self.metas);
        let w = self.write_count.fetch_add(1, Ordering::SeqCst);
        if m.writes.last.len() >= KNOWN_MAX && !m.writes.last.contains_key(path) {
            m.writes.last.clear();
            m.writes.floor = w + 1;
        }
        m.writes.last.insert(path.clone(), (w, SystemTime::now()));
        m.known.remove(path)
    }

    /// `path` was written, deleted, copied or renamed onto through this
    /// store: as [`Engine::mark_written`], and the cache's copy of its
    /// metadata and the blocks of the version known are dropped.
    pub(crate) async fn written(&self, path: &Path) {
        // Blocks of the old version still being kept behind reads drop
        // themselves once kept (see `keep_behind`).
        let old = match self.mark_written(path) {
            Some(k) => Some(k),
            None => self.stored_meta(path).await,
        };
        self.forget_meta(path).await;
        if let Some(old) = old {
            let obj = self.obj(old.meta);
            let blocks = obj.meta.size.div_ceil(self.bs());
            for i in 0..blocks {
                let key = self.block_key(&obj, i);
                if let Err(e) = self.cache.delete(&key).await {
                    self.stats.cache_error();
                    tracing::warn!(key, error = %e, "the cache failed to drop a block");
                }
            }
        }
    }

    async fn stored_meta(&self, path: &Path) -> Option<Known> {
        match self.cache.get(&self.meta_key(path)).await {
            Ok(Some(Value::Json(j))) => serde_json::from_value::<StoredMeta>(j)
                .ok()?
                .into_known()
                .filter(|k| k.meta.location == *path),
            _ => None,
        }
    }
}
