//! In-process coalescing of concurrent work on one key.

use std::collections::HashMap;
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
}
