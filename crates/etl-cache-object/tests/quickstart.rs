//! The `s3_quickstart` example, run as a user would against the local S3
//! server (moto), configured only through its documented variables.

mod common;

use std::path::PathBuf;
use std::process::Command;

/// The example's binary next to this test's (`cargo test` builds examples);
/// built here when missing or older than this test (this test run alone).
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let bin = profile_dir.join("examples").join("s3_quickstart");
    let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&bin) < modified(&exe) {
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "-p",
            "etl-cache-object",
            "--features",
            "aws",
            "--example",
            "s3_quickstart",
        ]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().unwrap();
        assert!(status.success(), "building the example failed");
    }
    bin
}

#[test]
fn s3_quickstart_runs_against_the_local_s3_server() {
    let Some((moto, bucket)) = common::moto_bucket("quickstart") else {
        return;
    };
    let out = Command::new(example_binary())
        .env("ETL_CACHE_URL", format!("s3://{bucket}/etl-cache"))
        .env("AWS_ENDPOINT", moto.endpoint())
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "eu-west-1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("s3_quickstart: ok"), "{stdout}");
    assert!(stdout.contains("get_stream: 1024 chunks"), "{stdout}");
    assert!(stdout.contains("\"records_processed\":1042"), "{stdout}");
}
