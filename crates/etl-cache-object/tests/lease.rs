//! Single flight across processes against the local S3 server (moto): the
//! computation runs once; a holder that dies is taken over after its lease.
//!
//! The processes are this test binary run again with `lease_child` as the
//! filter and its settings in `ETL_CACHE_LEASE_CHILD_*` variables.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etl_cache_core::{SetOptions, Value};
use etl_cache_object::ObjectCache;

const CHILD: &str = "ETL_CACHE_LEASE_CHILD_ENDPOINT";

/// The child half of the tests below: one worker asking for the value. It
/// does nothing unless spawned by them (the variables are unset otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_child() {
    let Ok(endpoint) = std::env::var(CHILD) else {
        return;
    };
    let var = |k: &str| std::env::var(format!("ETL_CACHE_LEASE_CHILD_{k}")).unwrap();
    let bucket = var("BUCKET");
    let markers = std::path::PathBuf::from(var("MARKERS"));
    let hang = var("HANG") == "1";
    let lease_ms: u64 = var("LEASE_MS").parse().unwrap();
    let mut opts = common::s3_options_at(&endpoint);
    opts.push(("aws_region".into(), "us-east-1".into()));
    let cache = ObjectCache::builder()
        .url(format!("s3://{bucket}/lease-test"))
        .options(opts)
        .lease_duration(Duration::from_millis(lease_ms))
        .lease_poll_interval(Duration::from_millis(20), Duration::from_millis(200))
        .build()
        .unwrap();
    let me = std::process::id();
    let v = cache
        .get_or_insert_with_timeout(
            "reference/table",
            SetOptions::new(),
            Duration::from_secs(60),
            || async move {
                std::fs::write(markers.join(format!("computed-by-{me}")), b"").unwrap();
                if hang {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                tokio::time::sleep(Duration::from_millis(800)).await;
                Ok::<_, etl_cache_core::Error>(Value::Text(format!("computed by {me}")))
            },
        )
        .await
        .unwrap();
    println!("\nVALUE={}", v.as_text().unwrap());
}

fn spawn_child(endpoint: &str, bucket: &str, markers: &Path, hang: bool, lease_ms: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["lease_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, endpoint)
        .env("ETL_CACHE_LEASE_CHILD_BUCKET", bucket)
        .env("ETL_CACHE_LEASE_CHILD_MARKERS", markers)
        .env("ETL_CACHE_LEASE_CHILD_HANG", if hang { "1" } else { "0" })
        .env("ETL_CACHE_LEASE_CHILD_LEASE_MS", lease_ms.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a child (at most 90 s) and returns the value it printed.
fn value_of(child: Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut child = child;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("a worker process did not finish in 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "worker failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.split_once("VALUE=").map(|(_, v)| v))
        .unwrap_or_else(|| panic!("no value printed:\n{stdout}"))
        .to_string()
}

fn markers(dir: &Path) -> Vec<String> {
    let mut m: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    m.sort();
    m
}

#[test]
fn four_processes_compute_once() {
    let Some((moto, bucket)) = common::moto_bucket("lease-once") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let children: Vec<Child> = (0..4)
        .map(|_| spawn_child(&moto.endpoint(), &bucket, dir.path(), false, 5_000))
        .collect();
    let values: Vec<String> = children.into_iter().map(value_of).collect();
    let computed = markers(dir.path());
    assert_eq!(computed.len(), 1, "computed by {computed:?}");
    let holder = computed[0].trim_start_matches("computed-by-");
    for v in &values {
        assert_eq!(
            v,
            &format!("computed by {holder}"),
            "every worker got the holder's value"
        );
    }
}

#[test]
fn a_dead_holder_is_taken_over_after_its_lease() {
    let Some((moto, bucket)) = common::moto_bucket("lease-dead") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lease_ms = 2_000;
    let mut holder = spawn_child(&moto.endpoint(), &bucket, dir.path(), true, lease_ms);
    let deadline = Instant::now() + Duration::from_secs(60);
    while markers(dir.path()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first worker never started computing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let holder_pid = holder.id();
    let waiters: Vec<Child> = (0..3)
        .map(|_| spawn_child(&moto.endpoint(), &bucket, dir.path(), false, lease_ms))
        .collect();
    // The holder keeps renewing its lease while it lives: the waiters wait.
    std::thread::sleep(Duration::from_millis(2 * lease_ms));
    assert_eq!(
        markers(dir.path()).len(),
        1,
        "nobody took a live lease over"
    );
    holder.kill().unwrap(); // kill -9: no release, no cleanup
    holder.wait().unwrap();
    let killed_at = Instant::now();
    let values: Vec<String> = waiters.into_iter().map(value_of).collect();
    let took = killed_at.elapsed();
    let computed = markers(dir.path());
    assert_eq!(
        computed.len(),
        2,
        "the dead holder and one taker: {computed:?}"
    );
    let taker = computed
        .iter()
        .map(|m| m.trim_start_matches("computed-by-"))
        .find(|p| *p != holder_pid.to_string())
        .unwrap();
    for v in &values {
        assert_eq!(v, &format!("computed by {taker}"));
    }
    assert!(
        took < Duration::from_millis(lease_ms) * 5,
        "taken over {took:?} after the holder died (lease {lease_ms} ms)"
    );
}
