//! A step run again and again on one handle: once its manifest is known, a
//! hit is a plain read of the result. What another writer does to the
//! result between two runs is seen by the next one, and the reason of a
//! miss stays right.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etl_cache_core::{Cache, MemoryCache, SetOptions, Value};
use etl_cache_fs::DiskCache;
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

/// A repeated hit checks the run's options as every run does, and fails
/// with the cache's error when its read fails.
#[tokio::test]
async fn a_repeated_hit_checks_its_options_and_reports_a_failed_read() {
    let (_, w) = shared();
    run(&w, "one").await;
    assert!(run(&w, "never").await.1.is_hit());
    let too_long = SetOptions::new().ttl(etl_cache_core::MAX_TTL + Duration::from_secs(1));
    let err = w
        .run(&step(), RunOptions::new().set_options(too_long), || async {
            Ok::<_, std::io::Error>(Value::from("never"))
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ttl"), "{err}");
    assert!(run(&w, "never").await.1.is_hit());

    w.refuse.lock().unwrap().push("step/".into());
    let err = w
        .run(&step(), RunOptions::new(), || async {
            Ok::<_, std::io::Error>(Value::from("never"))
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refused (simulated)"), "{err}");
    w.refuse.lock().unwrap().clear();
    assert!(run(&w, "never").await.1.is_hit());
}

/// A resolution handed out after runs makes its key from its fields, as
/// the caller may change them.
#[tokio::test]
async fn a_resolution_makes_its_key_from_its_fields() {
    let (_, w) = shared();
    run(&w, "one").await;
    run(&w, "never").await;
    let mut r = step().resolve().await.unwrap();
    assert_eq!(r.key(), format!("step/repeated/{}", r.digest));
    let again = Step::new("repeated").code_version("v1").param("rows", &4);
    let other = again.resolve().await.unwrap();
    assert_ne!(other.digest, r.digest);
    r.name = "renamed".into();
    r.digest = other.digest.clone();
    assert_eq!(r.key(), format!("step/renamed/{}", other.digest));
}

/// Many tasks repeating one step on two handles of one cache directory
/// (each with its own handle id, its own hits waiting and its own
/// remembered manifests), while another writer replaces the result: every
/// run returns a value some writer stored, and every hit is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeated_hits_racing_a_writer_on_two_handles_are_all_counted() {
    let dir = tempfile::tempdir().unwrap();
    let open = || async {
        let disk: Arc<dyn Cache> = Arc::new(DiskCache::open(dir.path()).await.unwrap());
        let w = Arc::new(Wrapped::new(disk));
        w.share_id.store(true, Ordering::SeqCst);
        w
    };
    let (one, two) = (open().await, open().await);
    assert_ne!(one.handle_id(), two.handle_id());
    let mem = one.inner.clone();
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
