//! Writes whose caller went away never take effect later.
//!
//! A write runs its file work on a blocking thread, which carries on when
//! the caller's future is dropped (a timeout, a `select!`, an aborted task).
//! Without a check, such a write could wait for a key's lock for seconds and
//! then publish over a value written after the caller gave up. So the future
//! holds an [`Armed`] guard whose drop marks the write cancelled, and the
//! thread makes its change (the rename that publishes, the removal that
//! deletes) inside [`Cancel::commit`], which refuses once the mark is set.
//! Both take one mutex: a drop waits for a change already under way (a
//! rename, microseconds), so a write either took effect before its future
//! was dropped or never does.

use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Cancelled,
    Done,
}

/// The blocking side's view of whether its caller is still there.
#[derive(Debug, Clone)]
pub(crate) struct Cancel(Arc<Mutex<State>>);

/// Held by the caller's future: dropping it before the write is done
/// cancels the write.
#[derive(Debug)]
pub(crate) struct Armed(Cancel);

impl Cancel {
    /// A write and the guard its future holds.
    pub(crate) fn new() -> (Cancel, Armed) {
        let c = Cancel(Arc::new(Mutex::new(State::Pending)));
        (c.clone(), Armed(c))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the caller went away (then waiting for anything is pointless).
    pub(crate) fn is_cancelled(&self) -> bool {
        *self.state() == State::Cancelled
    }

    /// Runs `change` (the step that makes the write visible) unless the
    /// caller went away; `None` then. A drop of the caller's future waits
    /// for a change under way.
    pub(crate) fn commit<T>(&self, change: impl FnOnce() -> T) -> Option<T> {
        let mut state = self.state();
        if *state == State::Cancelled {
            return None;
        }
        let out = change();
        *state = State::Done;
        Some(out)
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        let mut state = self.0.state();
        if *state == State::Pending {
            *state = State::Cancelled;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_guard_stops_the_change_and_a_done_one_does_not_matter() {
        let (c, armed) = Cancel::new();
        assert!(!c.is_cancelled());
        drop(armed);
        assert!(c.is_cancelled());
        assert_eq!(c.commit(|| 1), None);

        let (c, armed) = Cancel::new();
        assert_eq!(c.commit(|| 2), Some(2));
        drop(armed);
        assert!(!c.is_cancelled());
    }
}
