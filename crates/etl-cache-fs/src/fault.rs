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
}

impl crate::cache::Inner {
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
pub use plan::{clear, inject, remaining};

#[cfg(feature = "fault-injection")]
mod plan {
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

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
