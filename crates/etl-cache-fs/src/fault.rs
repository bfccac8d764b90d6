//! Fault injection for reliability tests (cargo feature `fault-injection`,
//! off by default).
//!
//! A process-global plan says "fail the next N operations of this kind, in
//! the cache rooted here, with this `io::ErrorKind`". A few call sites in the
//! write, read and remove paths consult it; without the feature the check is an
//! inlined `Ok(())` and the plan does not exist.
//!
//! ```rs
//! use etl_cache_fs::fault::{self, Point};
//! fault::inject(root, Point::Write, 1, std::io::ErrorKind::StorageFull);
//! assert!(cache.set("k", "v".into(), SetOptions::new()).await.is_err());
//! fault::clear(root);
//! ```

use std::io;

/// Where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Point {
    /// Writing the header or payload of a temp file (each chunk of a stream).
    Write,
    /// Renaming a complete temp file over the entry (publication).
    Rename,
    /// Reading an entry: opening checks, and each chunk of a stream.
    Read,
    /// Removing an entry file (`delete`, `clear`, `purge_expired`, and
    /// reads that find an entry expired or corrupt; not eviction).
    Remove,
    /// A sweep (`purge_expired`, `clear`) has read an entry and judged it,
    /// and is about to take the counters to remove it. Only [`hold`] acts
    /// here: a race test changes the entry in between.
    Judged,
    /// A range read (`get_range`) has opened and checked an entry, and is
    /// about to read the blocks that hold the range. Only [`hold`] acts
    /// here: a race test changes the entry in between.
    RangeOpened,
}

impl crate::inner::Inner {
    /// Parks the calling thread while a test [`hold`]s `point` in this cache.
    #[inline]
    pub(crate) fn pause(&self, point: Point) {
        #[cfg(feature = "fault-injection")]
        plan::park(&self.layout.root, point);
        #[cfg(not(feature = "fault-injection"))]
        let _ = point;
    }

    /// Fails with the planned error if a fault is due at `point` in this cache.
    #[inline]
    pub(crate) fn fault(&self, point: Point) -> io::Result<()> {
        #[cfg(feature = "fault-injection")]
        {
            plan::check(&self.layout.root, point)
        }
        #[cfg(not(feature = "fault-injection"))]
        {
            let _ = point;
            Ok(())
        }
    }
}

#[cfg(feature = "fault-injection")]
pub use plan::{Hold, clear, hold, inject, remaining};

#[cfg(feature = "fault-injection")]
mod plan {
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::Duration;

    use super::Point;

    struct Rule {
        root: PathBuf,
        point: Point,
        remaining: u64,
        kind: io::ErrorKind,
    }

    static ARMED: AtomicBool = AtomicBool::new(false);
    static PLAN: Mutex<Vec<Rule>> = Mutex::new(Vec::new());

    fn plan() -> std::sync::MutexGuard<'static, Vec<Rule>> {
        PLAN.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the next `times` operations at `point` of the cache whose root
    /// is `root` (as given to the builder) fail with an error of `kind`.
    /// Adds to what is already planned for that root and point.
    pub fn inject(root: &Path, point: Point, times: u64, kind: io::ErrorKind) {
        let mut plan = plan();
        match plan.iter_mut().find(|r| r.root == root && r.point == point) {
            Some(r) => {
                r.remaining += times;
                r.kind = kind;
            }
            None => plan.push(Rule {
                root: root.to_path_buf(),
                point,
                remaining: times,
                kind,
            }),
        }
        ARMED.store(true, Ordering::SeqCst);
    }

    /// Removes every fault planned for `root`.
    pub fn clear(root: &Path) {
        let mut plan = plan();
        plan.retain(|r| r.root != root);
        ARMED.store(!plan.is_empty(), Ordering::SeqCst);
    }

    /// How many faults are still planned at `point` for `root`.
    pub fn remaining(root: &Path, point: Point) -> u64 {
        plan()
            .iter()
            .filter(|r| r.root == root && r.point == point)
            .map(|r| r.remaining)
            .sum()
    }

    #[derive(Default)]
    struct Gate {
        reached: bool,
        released: bool,
    }

    struct HoldRule {
        root: PathBuf,
        point: Point,
        gate: Arc<(Mutex<Gate>, Condvar)>,
    }

    static HOLDS: Mutex<Vec<HoldRule>> = Mutex::new(Vec::new());

    /// A point held by [`hold`]: the first thread of that cache to reach it
    /// waits there until [`Hold::release`] (or the drop of this).
    pub struct Hold {
        gate: Arc<(Mutex<Gate>, Condvar)>,
    }

    /// Makes the first thread that reaches `point` in the cache whose root is
    /// `root` wait there until the returned [`Hold`] is released; later ones
    /// pass. For race tests: change an entry between a check and an action.
    pub fn hold(root: &Path, point: Point) -> Hold {
        let gate = Arc::new((Mutex::new(Gate::default()), Condvar::new()));
        HOLDS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(HoldRule {
                root: root.to_path_buf(),
                point,
                gate: gate.clone(),
            });
        ARMED.store(true, Ordering::SeqCst);
        Hold { gate }
    }

    impl Hold {
        /// Waits until a thread reached the point (at most `timeout`);
        /// whether one did.
        pub fn reached(&self, timeout: Duration) -> bool {
            let (m, cv) = &*self.gate;
            let g = m.lock().unwrap_or_else(|p| p.into_inner());
            let (g, _) = cv
                .wait_timeout_while(g, timeout, |g| !g.reached)
                .unwrap_or_else(|p| p.into_inner());
            g.reached
        }

        /// Lets the waiting thread (if any) go on.
        pub fn release(self) {}
    }

    impl Drop for Hold {
        fn drop(&mut self) {
            let (m, cv) = &*self.gate;
            m.lock().unwrap_or_else(|p| p.into_inner()).released = true;
            cv.notify_all();
        }
    }

    pub(super) fn park(root: &Path, point: Point) {
        if !ARMED.load(Ordering::Relaxed) {
            return;
        }
        let gate = {
            let mut holds = HOLDS.lock().unwrap_or_else(|p| p.into_inner());
            let Some(i) = holds
                .iter()
                .position(|h| h.point == point && h.root == root)
            else {
                return;
            };
            holds.remove(i).gate
        };
        let (m, cv) = &*gate;
        let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
        g.reached = true;
        cv.notify_all();
        while !g.released {
            g = cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub(super) fn check(root: &Path, point: Point) -> io::Result<()> {
        if !ARMED.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut plan = plan();
        let Some(rule) = plan
            .iter_mut()
            .find(|r| r.point == point && r.remaining > 0 && r.root == root)
        else {
            return Ok(());
        };
        rule.remaining -= 1;
        Err(io::Error::new(
            rule.kind,
            format!("injected fault at {point:?} (fault-injection test hook)"),
        ))
    }
}
