//! Single flight across OS processes sharing one DiskCache root: a missing key
//! is computed once; a holder that dies hands over to the next process; a
//! holder that hangs makes the others fail with LockTimeout.
//!
//! The test re-runs its own binary as worker processes (`worker` below does
//! nothing unless ETL_SF_ROLE is set).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etl_cache_core::{CacheExt, Error, SetOptions, Value};
use etl_cache_fs::DiskCache;

const KEY: &str = "reference/fx_rates";

fn spawn(role: &str, dir: &Path, id: usize) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "worker", "--nocapture", "--test-threads=1"])
        .env("ETL_SF_ROLE", role)
        .env("ETL_SF_DIR", dir)
        .env("ETL_SF_ID", id.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn wait_for(path: &Path, within: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < within,
            "{} did not appear",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn output(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "worker failed: {stdout}");
    stdout
}

fn result_line(stdout: &str) -> &str {
    stdout
        .lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no RESULT line in {stdout:?}"))
}

/// A holder (process 0) that hangs in its computation, once it has started
/// it, and a waiter (process 1) in `role` started after it.
fn holder_and_waiter(dir: &Path, role: &str) -> (Child, Child) {
    let holder = spawn("hang", dir, 0);
    wait_for(&dir.join("computing0"), Duration::from_secs(60));
    (holder, spawn(role, dir, 1))
}

fn computations(dir: &Path) -> usize {
    fs::read_to_string(dir.join("computations"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[test]
fn four_processes_compute_a_missing_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let children: Vec<Child> = (0..4).map(|i| spawn("compute", dir.path(), i)).collect();
    for i in 0..4 {
        wait_for(
            &dir.path().join(format!("ready{i}")),
            Duration::from_secs(60),
        );
    }
    fs::write(dir.path().join("go"), b"").unwrap();
    let results: Vec<String> = children
        .into_iter()
        .map(|c| result_line(&output(c)).to_owned())
        .collect();
    assert_eq!(computations(dir.path()), 1, "exactly one process computed");
    assert!(results.iter().all(|r| r == &results[0]), "{results:?}");
    assert!(results[0].starts_with("value computed by "), "{results:?}");
}

#[test]
fn a_holder_killed_mid_computation_hands_over_to_the_next_process() {
    let dir = tempfile::tempdir().unwrap();
    let (mut holder, waiter) = holder_and_waiter(dir.path(), "compute_now");
    std::thread::sleep(Duration::from_millis(300));
    holder.kill().unwrap(); // SIGKILL: the OS releases its lock
    holder.wait().unwrap();
    let killed_at = Instant::now();
    let result = output(waiter);
    assert_eq!(result_line(&result), "value computed by 1");
    assert!(
        killed_at.elapsed() < Duration::from_secs(20),
        "the waiter got the lock after the holder died"
    );
    // The dead holder started a computation; the waiter did the only complete one.
    assert_eq!(computations(dir.path()), 2);
}

#[test]
fn a_holder_that_hangs_makes_waiters_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let (mut holder, waiter) = holder_and_waiter(dir.path(), "timeout");
    let result = output(waiter);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(result_line(&result), format!("lock timeout on {KEY}"));
}

fn record_computation(dir: &Path, id: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("computations"))
        .unwrap();
    writeln!(f, "{id}").unwrap();
}

/// The body of a worker process; a no-op in the parent test run.
#[tokio::test]
async fn worker() {
    let Ok(role) = std::env::var("ETL_SF_ROLE") else {
        return;
    };
    let dir = PathBuf::from(std::env::var("ETL_SF_DIR").unwrap());
    let id = std::env::var("ETL_SF_ID").unwrap();
    let timeout = if role == "timeout" {
        Duration::from_millis(700)
    } else {
        Duration::from_secs(30)
    };
    let cache = DiskCache::builder()
        .root(dir.join("cache"))
        .lock_timeout(timeout)
        .build()
        .await
        .unwrap();
    if role == "compute" {
        fs::write(dir.join(format!("ready{id}")), b"").unwrap();
        wait_for(&dir.join("go"), Duration::from_secs(60));
    }
    let (d, who) = (dir.clone(), id.clone());
    let hang = role == "hang";
    let result = cache
        .get_or_insert_with(KEY, SetOptions::new().compress(true), || async move {
            record_computation(&d, &who);
            fs::write(d.join(format!("computing{who}")), b"").unwrap();
            if hang {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            Value::Text(format!("value computed by {who}"))
        })
        .await;
    match result {
        Ok(Value::Text(t)) => println!("RESULT {t}"),
        Err(Error::LockTimeout { key, .. }) => println!("RESULT lock timeout on {key}"),
        other => panic!("unexpected {other:?}"),
    }
}
