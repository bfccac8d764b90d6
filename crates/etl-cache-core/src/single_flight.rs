//! In-process coalescing of concurrent work on one key, and the one
//! single-flight sequence every backend of this workspace runs.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::{Error, Result};

/// One async mutex per key, created on demand and dropped with its last user.
///
/// Backends use it so that, of many tasks of one process missing the same key,
/// one does the work (and takes any cross-process lock) while the others wait
/// here without tying up a thread.
#[derive(Debug, Default)]
pub struct KeyedMutex {
    map: Mutex<HashMap<String, Weak<AsyncMutex<()>>>>,
}

/// Held while this task owns the key within the process.
#[derive(Debug)]
pub struct KeyedGuard {
    _guard: OwnedMutexGuard<()>,
}

impl KeyedMutex {
    /// An empty set of locks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Locks `key`, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`] when another task held it for longer.
    pub async fn lock(&self, key: &str, timeout: Duration) -> Result<KeyedGuard> {
        let m = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(key).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    if map.len() > 64 {
                        map.retain(|_, w| w.strong_count() > 0);
                    }
                    let m = Arc::new(AsyncMutex::new(()));
                    map.insert(key.to_owned(), Arc::downgrade(&m));
                    m
                }
            }
        };
        let started = std::time::Instant::now();
        match tokio::time::timeout(timeout, m.lock_owned()).await {
            Ok(guard) => Ok(KeyedGuard { _guard: guard }),
            Err(_) => Err(Error::LockTimeout {
                key: Error::display_key(key),
                waited: started.elapsed(),
            }),
        }
    }
}

/// How long a caller of `get_or_insert_with` waits for another caller
/// computing the same key before it fails with [`Error::LockTimeout`], on
/// every backend unless its builder is told otherwise (the holder's own
/// computation has no time limit).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// The single-flight sequence of `get_or_insert_with`, written once for
/// every backend: look; on a miss, wait for this key's turn in this process
/// (at most the timeout); look again, since the caller before may have
/// stored the value; still missing, `fill` (which takes any cross-process
/// lock, computes and stores).
#[derive(Debug)]
pub struct SingleFlight {
    locks: KeyedMutex,
    /// The timeout, in nanoseconds: shared by the clones of a handle and
    /// settable after they were made.
    timeout_nanos: AtomicU64,
}

impl Default for SingleFlight {
    fn default() -> Self {
        Self::new(DEFAULT_LOCK_TIMEOUT)
    }
}

impl SingleFlight {
    /// Callers wait at most `timeout` for their turn.
    pub fn new(timeout: Duration) -> Self {
        let s = SingleFlight {
            locks: KeyedMutex::new(),
            timeout_nanos: AtomicU64::new(0),
        };
        s.set_timeout(timeout);
        s
    }

    /// How long a caller waits for its turn.
    pub fn timeout(&self) -> Duration {
        Duration::from_nanos(self.timeout_nanos.load(Ordering::Relaxed))
    }

    /// Changes the timeout for the calls that start from now on.
    pub fn set_timeout(&self, timeout: Duration) {
        let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        self.timeout_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Runs the sequence with this handle's timeout: `look(true)` first,
    /// then `look(false)` once this caller's turn came, then `fill`.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`] when the turn did not come in time; the errors
    /// of `look` and `fill`.
    pub async fn run<T, L, LF, F, FF>(&self, key: &str, look: L, fill: F) -> Result<T>
    where
        L: FnMut(bool) -> LF,
        LF: Future<Output = Result<Option<T>>>,
        F: FnOnce() -> FF,
        FF: Future<Output = Result<T>>,
    {
        self.run_with_timeout(key, self.timeout(), look, fill).await
    }

    /// [`SingleFlight::run`] with a timeout of this call's own.
    ///
    /// # Errors
    ///
    /// As [`SingleFlight::run`].
    pub async fn run_with_timeout<T, L, LF, F, FF>(
        &self,
        key: &str,
        timeout: Duration,
        mut look: L,
        fill: F,
    ) -> Result<T>
    where
        L: FnMut(bool) -> LF,
        LF: Future<Output = Result<Option<T>>>,
        F: FnOnce() -> FF,
        FF: Future<Output = Result<T>>,
    {
        if let Some(v) = look(true).await? {
            return Ok(v);
        }
        let _turn = self.locks.lock(key, timeout).await?;
        if let Some(v) = look(false).await? {
            return Ok(v);
        }
        fill().await
    }
}

/// The error of a computation that failed, for the caller that ran it.
pub fn init_failed(key: &str, source: crate::BoxError) -> Error {
    Error::Init {
        key: Error::display_key(key),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_and_timeouts() {
        let m = Arc::new(KeyedMutex::new());
        let g = m.lock("k", Duration::from_secs(1)).await.unwrap();
        assert!(matches!(
            m.lock("k", Duration::from_millis(20)).await,
            Err(Error::LockTimeout { .. })
        ));
        let other = m.lock("other", Duration::from_millis(20)).await;
        assert!(other.is_ok(), "keys are independent");
        drop(g);
        assert!(m.lock("k", Duration::from_millis(20)).await.is_ok());
    }

    #[tokio::test]
    async fn the_second_caller_finds_what_the_first_stored() {
        use std::sync::atomic::AtomicUsize;
        let flight = Arc::new(SingleFlight::new(Duration::from_secs(5)));
        let stored = Arc::new(Mutex::new(None::<u32>));
        let fills = Arc::new(AtomicUsize::new(0));
        let call = || {
            let (flight, stored, fills) = (flight.clone(), stored.clone(), fills.clone());
            async move {
                let look = |_first| {
                    let v = *stored.lock().unwrap();
                    async move { Ok(v) }
                };
                flight
                    .run("k", look, || async {
                        fills.fetch_add(1, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        *stored.lock().unwrap() = Some(7);
                        Ok(7)
                    })
                    .await
            }
        };
        let (a, b) = tokio::join!(tokio::spawn(call()), tokio::spawn(call()));
        assert_eq!((a.unwrap().unwrap(), b.unwrap().unwrap()), (7, 7));
        assert_eq!(fills.load(Ordering::SeqCst), 1, "one computation");
    }

    #[tokio::test]
    async fn a_caller_waits_at_most_the_timeout_set_last() {
        let flight = SingleFlight::new(Duration::from_secs(60));
        flight.set_timeout(Duration::from_millis(20));
        assert_eq!(flight.timeout(), Duration::from_millis(20));
        let _held = flight
            .locks
            .lock("k", Duration::from_secs(1))
            .await
            .unwrap();
        let r: Result<u32> = flight
            .run("k", |_| async { Ok(None) }, || async { Ok(1) })
            .await;
        assert!(matches!(r, Err(Error::LockTimeout { .. })), "{r:?}");
    }
}
