//! A cache wrapper for the tests: parks a chosen call, reports chosen keys as
//! corrupt, or lets another writer in just before a chosen set.

#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use etl_cache_core::testing::{Hooks, Op};
use etl_cache_core::{Cache, DynCache, Error, Result, SetOptions, Value, async_trait};
use tokio::sync::Notify;

#[derive(Debug)]
pub struct Wrapped {
    pub inner: Arc<dyn Cache>,
    /// Calls made so far (every method counts one).
    pub calls: AtomicUsize,
    /// The call (0-based) that never returns; usize::MAX for none.
    pub park_at: AtomicUsize,
    /// Notified when the parked call is reached.
    pub parked: Arc<Notify>,
    /// Notified to let the parked call go on.
    pub release: Arc<Notify>,
    /// Keys whose reads report corruption (once each; the entry is removed).
    pub corrupt: Mutex<HashSet<String>>,
    /// Before the first write (set or set_stream) of this key, another
    /// writer stores this value.
    pub sneak: Mutex<Option<(String, Value)>>,
    /// Reads and writes of keys with these prefixes fail (a cache that
    /// refuses them: read-only credentials, a lock held too long).
    pub refuse: Mutex<Vec<String>>,
    /// Whether the wrapper gives the inner cache's `handle_id` (so that
    /// hits wait in memory for their tally's write, as on the inner cache);
    /// without it every hit is written through.
    pub share_id: std::sync::atomic::AtomicBool,
    /// With `share_id`: the handle background work gets (another wrapper,
    /// to watch or park it); the inner cache's own when `None`.
    pub background: Mutex<Option<Arc<dyn Cache>>>,
}

impl Wrapped {
    pub fn new(inner: Arc<dyn Cache>) -> Wrapped {
        Wrapped {
            inner,
            calls: AtomicUsize::new(0),
            park_at: AtomicUsize::new(usize::MAX),
            parked: Arc::new(Notify::new()),
            release: Arc::new(Notify::new()),
            corrupt: Mutex::new(HashSet::new()),
            sneak: Mutex::new(None),
            refuse: Mutex::new(Vec::new()),
            share_id: std::sync::atomic::AtomicBool::new(false),
            background: Mutex::new(None),
        }
    }

    fn check_refused(&self, key: &str) -> Result<()> {
        if self
            .refuse
            .lock()
            .unwrap()
            .iter()
            .any(|p| key.starts_with(p))
        {
            return Err(Error::InvalidInput {
                message: format!("{key}: refused (simulated)"),
            });
        }
        Ok(())
    }

    async fn enter(&self) {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n == self.park_at.load(Ordering::SeqCst) {
            self.parked.notify_one();
            self.release.notified().await;
        }
    }

    /// Before the first write of the `sneak` key, the other writer stores
    /// its value.
    async fn let_the_other_writer_in(&self, key: &str) -> Result<()> {
        let sneak = {
            let mut s = self.sneak.lock().unwrap();
            if s.as_ref().is_some_and(|(k, _)| k == key) {
                s.take()
            } else {
                None
            }
        };
        if let Some((k, v)) = sneak {
            self.inner.set(&k, v, SetOptions::new()).await?;
        }
        Ok(())
    }

    async fn check_corrupt(&self, key: &str) -> Result<()> {
        let hit = self.corrupt.lock().unwrap().remove(key);
        if hit {
            self.inner.delete(key).await?;
            return Err(Error::Corrupt {
                key: key.to_owned(),
                reason: "checksum mismatch (simulated)".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Hooks for Wrapped {
    fn inner(&self) -> &DynCache {
        &*self.inner
    }

    /// Every call but `last_removal` counts (and may park); then every one
    /// but a delete may be refused, a write may let the other writer in,
    /// and a read may find the entry corrupt.
    async fn before(&self, op: Op, key: &str) -> Result<()> {
        if op == Op::LastRemoval {
            return Ok(());
        }
        self.enter().await;
        if op == Op::Delete {
            return Ok(());
        }
        self.check_refused(key)?;
        match op {
            Op::Set | Op::SetStream => self.let_the_other_writer_in(key).await,
            Op::Head if self.corrupt.lock().unwrap().contains(key) => Err(Error::Corrupt {
                key: key.to_owned(),
                reason: "header checksum mismatch (simulated)".into(),
            }),
            Op::Head => Ok(()),
            _ => self.check_corrupt(key).await,
        }
    }
}

#[async_trait]
impl Cache for Wrapped {
    etl_cache_core::forward_cache! {
        set, set_stream, get, get_stream, head, delete, list, purge_expired, clear, stats,
        last_removal
    }

    fn handle_id(&self) -> Option<etl_cache_core::HandleId> {
        if self.share_id.load(Ordering::SeqCst) {
            self.inner.handle_id()
        } else {
            None
        }
    }

    /// `background`, else the inner cache's own handle: background writes
    /// bypass this wrapper.
    fn handle(&self) -> Option<Arc<dyn Cache>> {
        if self.share_id.load(Ordering::SeqCst) {
            let chosen = self.background.lock().unwrap().clone();
            chosen.or_else(|| self.inner.handle())
        } else {
            None
        }
    }
}

/// Why a run computed; fails the test for a hit.
pub fn computed_why(outcome: &etl_cache_steps::Outcome) -> &'static str {
    match outcome {
        etl_cache_steps::Outcome::Computed { why, .. } => why.reason(),
        o => panic!("not computed: {o:?}"),
    }
}
