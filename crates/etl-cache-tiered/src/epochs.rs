//! Orders the copies a `TieredCache` keeps above its last tier (memory, and
//! the tiers above the last) against the writes that make them stale.
//!
//! A promotion reads a lower tier, then copies what it read upwards. A write
//! (set, delete, clear) that completes between the two would be shadowed by
//! the older copy. So every key with an operation in flight has a
//! generation, bumped by every write of the key on this handle at its start
//! and at its end, and the handle has a count of clears. A promotion takes
//! a [`Ticket`] (a snapshot of both) before it reads below and copies what
//! it read only if, at the moment of the copy, neither has moved and no
//! write of the key is in flight (a promotion that installs a copy bumps
//! the generation too; one that may not install drops the key instead, so
//! that of two racing promotions the earlier read never wins):
//!
//! - into memory, the check and the insert happen under one lock, the same
//!   lock under which writes bump the generation and invalidate memory;
//! - into the tiers above the last (async writes), the promotion holds the
//!   key's async lock while it checks and writes; a write bumps the
//!   generation and deletes the key from those tiers under the same lock,
//!   and `clear` excludes them all with a read-write lock.
//!
//! The state of a key lives only while tickets for it are held, so it costs
//! nothing for keys at rest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard, RwLock};

/// Generations of the keys with operations in flight, and the clears.
#[derive(Debug, Default)]
pub(crate) struct Epochs {
    state: Mutex<State>,
    /// Held (read) while a tier above the last is written by a promotion or
    /// by the start or end of a write; held (write) by `clear`.
    pub(crate) clear: RwLock<()>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    clears: u64,
    keys: HashMap<String, Slot>,
}

#[derive(Debug)]
struct Slot {
    generation: u64,
    /// Tickets held for the key.
    users: usize,
    /// Writes of the key between their start and their end.
    writing: usize,
    lock: Arc<AsyncMutex<()>>,
}

impl State {
    fn slot(&mut self, key: &str) -> &mut Slot {
        self.keys
            .get_mut(key)
            .expect("a ticket keeps its key's slot")
    }

    /// Counts a clear (at its start and at its end).
    pub(crate) fn bump_clears(&mut self) {
        self.clears += 1;
    }
}

/// A snapshot of a key's generation and of the clears, taken before a read
/// of the tiers below (or at the start of a write). Keeps the key's state
/// alive while held.
#[derive(Debug)]
pub(crate) struct Ticket {
    epochs: Arc<Epochs>,
    key: String,
    generation: u64,
    clears: u64,
    writing: bool,
    lock: Arc<AsyncMutex<()>>,
}

impl Epochs {
    /// The state, locked (a panic elsewhere does not poison it for good).
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A ticket for `key`: its generation and the clears, as of now.
    pub(crate) fn enter(self: &Arc<Self>, key: &str) -> Ticket {
        let mut st = self.state();
        let clears = st.clears;
        let slot = st.keys.entry(key.to_owned()).or_insert_with(|| Slot {
            generation: 0,
            users: 0,
            writing: 0,
            lock: Arc::new(AsyncMutex::new(())),
        });
        slot.users += 1;
        Ticket {
            epochs: self.clone(),
            key: key.to_owned(),
            generation: slot.generation,
            clears,
            writing: false,
            lock: slot.lock.clone(),
        }
    }
}

impl Ticket {
    /// The key.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The key's async lock, under which the tiers above the last are
    /// written or cleaned of the key.
    pub(crate) async fn lock(&self) -> OwnedMutexGuard<()> {
        self.lock.clone().lock_owned().await
    }

    /// For a promotion: true when no write of the key began or ended since
    /// the ticket was taken, none is in flight, and no clear happened.
    /// Call with the state locked, and copy while it is.
    pub(crate) fn may_promote(&self, st: &mut State) -> bool {
        let clears = st.clears;
        let slot = st.slot(&self.key);
        clears == self.clears && slot.generation == self.generation && slot.writing == 0
    }

    /// After a promotion installed a copy: bumps the generation, so that a
    /// promotion that read earlier (and may have read an older value that
    /// another handle has since replaced below) installs nothing over it.
    pub(crate) fn promoted(&self, st: &mut State) {
        st.slot(&self.key).generation += 1;
    }

    /// For a write at its end: true when no other write of the key began
    /// or ended since this one began, and no clear happened.
    pub(crate) fn still_newest(&self, st: &mut State) -> bool {
        let clears = st.clears;
        clears == self.clears && st.slot(&self.key).generation == self.generation
    }

    /// The start of a write: bumps the key's generation (taking the new
    /// one as this ticket's) and counts the write as in flight.
    pub(crate) fn begin_write(&mut self, st: &mut State) {
        let clears = st.clears;
        let slot = st.slot(&self.key);
        slot.generation += 1;
        if !self.writing {
            slot.writing += 1;
        }
        self.generation = slot.generation;
        self.clears = clears;
        self.writing = true;
    }

    /// The end of a write (done, failed or dropped): bumps the generation,
    /// so that no promotion whose read began before now installs what it
    /// read.
    pub(crate) fn end_write(&mut self, st: &mut State) {
        let slot = st.slot(&self.key);
        slot.generation += 1;
        if self.writing {
            slot.writing -= 1;
            self.writing = false;
        }
    }

    /// True while this ticket's write is in flight (begun, not ended).
    pub(crate) fn is_writing(&self) -> bool {
        self.writing
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let epochs = self.epochs.clone();
        let mut st = epochs.state();
        if self.writing {
            self.end_write(&mut st);
        }
        let slot = st.slot(&self.key);
        slot.users -= 1;
        if slot.users == 0 {
            st.keys.remove(&self.key);
        }
    }
}
