//! The command line against a real S3 server (moto on 127.0.0.1): every
//! command, its exit code and its JSON, on an `s3://bucket/prefix` URL.

#[path = "../../etl-cache-object/tests/common/mod.rs"]
mod common;
mod support;

use std::process::Command;

use support::output_with_stdin;

const BIN: &str = env!("CARGO_BIN_EXE_etl-cache");

struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

fn run(server: &common::Server, url: &str, args: &[&str], stdin: &[u8]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.env("ETL_CACHE_URL", url)
        .env("AWS_ENDPOINT", server.endpoint())
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .args(args);
    let out = output_with_stdin(&mut cmd, stdin);
    Run {
        code: out.status.code().expect("exited"),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(r: Run) -> Run {
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    r
}

fn json(r: &Run) -> serde_json::Value {
    serde_json::from_slice(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", r.stdout))
}

#[test]
fn every_command_works_on_s3() {
    let Some(server) = common::moto() else { return };
    let bucket = common::unique_name("cli");
    common::create_bucket(&server, &bucket);
    let url = format!("s3://{bucket}/etl");
    let s = &*server;

    // set: a stream from stdin (compressed), text, JSON; folders are kept.
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    ok(run(
        s,
        &url,
        &["set", "my_folder/financial_data", "-", "--compress", "zstd"],
        &payload,
    ));
    ok(run(
        s,
        &url,
        &["set", "note", "-", "--text", "--ttl", "1h"],
        b"{\"looks\": \"like json\"}",
    ));
    ok(run(
        s,
        &url,
        &["set", "stats", "-", "--json"],
        b"{\"records_processed\": 1042}",
    ));

    // get: the logical bytes, whatever the codec; a miss exits 1.
    assert_eq!(
        ok(run(s, &url, &["get", "my_folder/financial_data"], b"")).stdout,
        payload
    );
    assert_eq!(
        ok(run(s, &url, &["get", "note"], b"")).stdout,
        b"{\"looks\": \"like json\"}"
    );
    assert_eq!(
        ok(run(s, &url, &["get", "stats"], b"")).stdout,
        b"{\"records_processed\":1042}"
    );
    let miss = run(s, &url, &["get", "missing"], b"");
    assert_eq!(miss.code, 1, "{}", miss.stderr);

    // ls and stat speak JSON.
    let ls = json(&ok(run(s, &url, &["ls", "--json"], b"")));
    let keys: Vec<&str> = ls
        .as_array()
        .expect("an array")
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec!["my_folder/financial_data", "note", "stats"]);
    let ls_prefix = json(&ok(run(s, &url, &["ls", "my_folder/", "--json"], b"")));
    assert_eq!(ls_prefix.as_array().unwrap().len(), 1);
    let stat = json(&ok(run(s, &url, &["stat", "--json"], b"")));
    assert_eq!(stat["entries"], 3, "{stat}");

    // verify reads everything back; purge finds nothing expired yet.
    let verify = json(&ok(run(s, &url, &["verify", "--json"], b"")));
    assert_eq!(
        verify["corrupt"].as_array().map(Vec::len).unwrap_or(0),
        0,
        "{verify}"
    );
    ok(run(s, &url, &["purge", "--expired"], b""));

    // rm, then clear (which refuses without --yes).
    ok(run(s, &url, &["rm", "note"], b""));
    assert_eq!(run(s, &url, &["rm", "note"], b"").code, 1);
    assert_eq!(run(s, &url, &["clear"], b"").code, 2);
    ok(run(s, &url, &["clear", "--yes"], b""));
    let after = json(&ok(run(s, &url, &["stat", "--json"], b"")));
    assert_eq!(after["entries"], 0, "{after}");
}

#[test]
fn a_missing_bucket_is_an_error_that_names_it() {
    let Some(server) = common::moto() else { return };
    let url = "s3://no-such-bucket-for-etl-cache/prefix";
    let r = run(&server, url, &["set", "k", "-", "--text"], b"v");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("no-such-bucket-for-etl-cache"),
        "{}",
        r.stderr
    );
}
