//! A step run again and again on one handle: once its manifest is known, a
//! hit is a plain read of the result. What another writer does to the
//! result between two runs is seen by the next one, and the reason of a
//! miss stays right.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use etl_cache_core::{Cache, MemoryCache, SetOptions, Value};
use etl_cache_steps::{Outcome, RunOptions, Step, StepExt};

use common::{Wrapped, computed_why};

fn step() -> Step {
    Step::new("repeated").code_version("v1").param("rows", &3)
}

/// A wrapper over a MemoryCache that shares its handle id, as a backend
/// does: hits then wait for their tally's write and manifests are
/// remembered on the handle.
fn shared() -> (Arc<dyn Cache>, Arc<Wrapped>) {
    let mem: Arc<dyn Cache> = Arc::new(MemoryCache::new());
    let w = Arc::new(Wrapped::new(mem.clone()));
    w.share_id.store(true, Ordering::SeqCst);
    (mem, w)
}

async fn run(w: &Wrapped, computes: &'static str) -> (Value, Outcome) {
    let ran = w
        .run(&step(), RunOptions::new(), || async move {
            Ok::<_, std::io::Error>(Value::from(computes))
        })
        .await
        .unwrap();
    (ran.value, ran.outcome)
}

/// Between two hits of one handle, another writer replaces the result,
/// corrupts it, deletes it: each next run sees it.
#[tokio::test]
async fn a_run_after_hits_sees_what_another_writer_did() {
    let (mem, w) = shared();
    let key = step().resolve().await.unwrap().key();
    assert_eq!(computed_why(&run(&w, "one").await.1), "no_earlier_run");
    for _ in 0..3 {
        let (v, o) = run(&w, "never").await;
        assert!(o.is_hit());
        assert_eq!(v, Value::from("one"));
    }

    // Replaced by another writer: the next run serves what is stored now.
    mem.set(&key, Value::from("two"), SetOptions::new())
        .await
        .unwrap();
    let (v, o) = run(&w, "never").await;
    assert!(o.is_hit());
    assert_eq!(v, Value::from("two"));

    // Corrupt: computed again once, with that reason, and stored.
    w.corrupt.lock().unwrap().insert(key.clone());
    let (v, o) = run(&w, "three").await;
    assert_eq!((computed_why(&o), v), ("corrupt", Value::from("three")));
    let (v, o) = run(&w, "never").await;
    assert!(o.is_hit());
    assert_eq!(v, Value::from("three"));

    // Deleted: computed again, and explained as gone.
    mem.delete(&key).await.unwrap();
    let (v, o) = run(&w, "four").await;
    assert_eq!(
        (computed_why(&o), v),
        ("evicted_or_deleted", Value::from("four"))
    );
    assert_eq!(mem.get(&key).await.unwrap(), Some(Value::from("four")));

    // Every hit is counted once, every miss once.
    let s = w.step_stats(Some("repeated")).await.unwrap().total;
    assert_eq!((s.hits, s.misses), (5, 3));
}

/// A repeated hit dropped while it reads the result: nothing is counted
/// for it, and the next run is a hit of the same value.
#[tokio::test]
async fn a_repeated_hit_dropped_while_it_reads_leaves_the_result_and_the_counts() {
    let (_, w) = shared();
    run(&w, "one").await;
    assert!(run(&w, "never").await.1.is_hit());
    // The next call the wrapper sees is the hit's read of the result.
    w.park_at
        .store(w.calls.load(Ordering::SeqCst), Ordering::SeqCst);
    let task = {
        let w = w.clone();
        tokio::spawn(async move { run(&w, "never").await })
    };
    w.parked.notified().await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    w.park_at.store(usize::MAX, Ordering::SeqCst);

    let (v, o) = run(&w, "never").await;
    assert!(o.is_hit());
    assert_eq!(v, Value::from("one"));
    let s = w.step_stats(Some("repeated")).await.unwrap().total;
    assert_eq!((s.hits, s.misses), (2, 1));
}

/// Many tasks repeating one step on one handle, and on a second handle of
/// the same cache, while another writer replaces the result: every run
/// returns a value some writer stored, and every hit is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeated_hits_racing_a_writer_on_two_handles_are_all_counted() {
    let (mem, one) = shared();
    let two = Arc::new(Wrapped::new(mem.handle().expect("a handle")));
    two.share_id.store(true, Ordering::SeqCst);
    let key = step().resolve().await.unwrap().key();
    run(&one, "v0").await;
    let writer = {
        let mem = mem.clone();
        let key = key.clone();
        tokio::spawn(async move {
            for i in 1..=50 {
                mem.set(&key, Value::from(format!("v{i}")), SetOptions::new())
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let mut tasks = Vec::new();
    for t in 0..8 {
        let w = if t % 2 == 0 { one.clone() } else { two.clone() };
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                let (v, o) = run(&w, "never").await;
                assert!(o.is_hit());
                let Value::Text(s) = v else { panic!("{v:?}") };
                let n: u32 = s.trim_start_matches('v').parse().unwrap();
                assert!(n <= 50, "{s}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    writer.await.unwrap();
    one.step_stats(None).await.unwrap();
    let s = two.step_stats(Some("repeated")).await.unwrap().total;
    assert_eq!((s.hits, s.misses), (400, 1));
}
