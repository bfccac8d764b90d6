//! The `etl-cache` binary, run as a user would: every command, the exit codes,
//! the JSON outputs, a corrupt entry found by `verify`, TTL expiry, and 1 GiB
//! through pipes in bounded memory.

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use support::output_with_stdin;
use wait4::Wait4;

const BIN: &str = env!("CARGO_BIN_EXE_etl-cache");

/// What a run of the binary left behind.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn out(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("stdout is UTF-8")
    }

    fn json(&self) -> Json {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.out()))
    }

    /// Asserts that stderr says `text`.
    #[track_caller]
    fn assert_stderr(&self, text: &str) {
        assert!(self.stderr.contains(text), "{}", self.stderr);
    }

    #[track_caller]
    fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.code,
            code,
            "exit code; stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        );
        self
    }
}

/// The binary with a clean environment for the variables it reads.
fn bin() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("ETL_CACHE_URL");
    c
}

/// Runs `etl-cache --cache URL ARGS…` with `stdin` piped in.
fn run_with(url: &str, args: &[&str], stdin: &[u8]) -> Run {
    let out = output_with_stdin(bin().arg("--cache").arg(url).args(args), stdin);
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: out.stdout,
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Runs against the cache in `dir`.
fn run(dir: &Path, args: &[&str]) -> Run {
    run_with(dir.to_str().unwrap(), args, b"")
}

fn run_in(dir: &Path, args: &[&str], stdin: &[u8]) -> Run {
    run_with(dir.to_str().unwrap(), args, stdin)
}

/// A fresh cache directory (inside a temp dir that lives as long as the guard).
fn cache_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    (tmp, root)
}

/// Where DiskCache keeps the entry of `key` (its documented layout).
fn entry_file(root: &Path, key: &str) -> PathBuf {
    let hex: String = Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    root.join("etl-cache-v1")
        .join("entries")
        .join(&hex[..2])
        .join(hex)
}

/// Flips one byte in the middle of the stored file (inside the payload).
fn corrupt(root: &Path, key: &str) {
    let path = entry_file(root, key);
    let mut bytes = std::fs::read(&path).expect("the entry file exists where the layout says");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&path, bytes).unwrap();
}

/// Deterministic pseudo-random bytes: chunk `n` of `len` bytes (a multiple of 8).
fn pattern(n: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    for _ in 0..len / 8 {
        // splitmix64
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out
}

/// The keys `ls --json` lists in the cache at `root`.
fn listed_keys(root: &Path) -> Vec<String> {
    keys_of(&run(root, &["ls", "--json"]).expect(0).json())
}

fn keys_of(ls_json: &Json) -> Vec<String> {
    ls_json
        .as_array()
        .expect("ls --json is an array")
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn set_get_rm_round_trip_every_kind_with_exit_codes() {
    let (tmp, root) = cache_dir();

    // Text from stdin.
    run_in(
        &root,
        &["set", "payload_123", "--text"],
        b"<xml>caf\xc3\xa9</xml>",
    )
    .expect(0);
    let got = run(&root, &["get", "payload_123"]).expect(0);
    assert_eq!(got.stdout, "<xml>café</xml>".as_bytes());

    // JSON from a file: validated, stored as JSON, read back compact.
    let doc = tmp.path().join("stats.json");
    std::fs::write(
        &doc,
        "{ \"records_processed\" : 1042,\n \"status\": \"success\" }\n",
    )
    .unwrap();
    let set = run(
        &root,
        &["set", "job_stats", doc.to_str().unwrap(), "--json"],
    )
    .expect(0);
    assert!(set.out().contains("stored job_stats"), "{}", set.out());
    let got = run(&root, &["get", "job_stats"]).expect(0);
    assert_eq!(
        got.out(),
        r#"{"records_processed":1042,"status":"success"}"#
    );

    // Bytes from a file with each codec, to stdout and to a file with -o.
    let blob = pattern(7, 3 << 20);
    let src = tmp.path().join("blob.bin");
    std::fs::write(&src, &blob).unwrap();
    for codec in ["none", "gzip", "zstd", "gzip:1"] {
        let key = format!("blob/{codec}");
        run(
            &root,
            &["set", &key, src.to_str().unwrap(), "--compress", codec],
        )
        .expect(0);
        assert_eq!(run(&root, &["get", &key]).expect(0).stdout, blob, "{codec}");
        let dst = tmp
            .path()
            .join(format!("out-{}.bin", codec.replace(':', "-")));
        let quiet = run(&root, &["-q", "get", &key, "-o", dst.to_str().unwrap()]).expect(0);
        assert!(
            quiet.stdout.is_empty() && quiet.stderr.is_empty(),
            "{quiet:?}"
        );
        assert_eq!(std::fs::read(&dst).unwrap(), blob, "{codec} -o");
    }
    // `set KEY -` reads stdin too, and replaces the previous value.
    run_in(&root, &["set", "blob/none", "-"], b"replaced").expect(0);
    assert_eq!(
        run(&root, &["get", "blob/none", "-o", "-"])
            .expect(0)
            .stdout,
        b"replaced"
    );

    // A miss is exit 1 with a message; rm is 0 then 1.
    let miss = run(&root, &["get", "nope"]).expect(1);
    assert!(miss.stdout.is_empty());
    miss.assert_stderr("no entry for key \"nope\"");
    let rm = run(&root, &["rm", "payload_123"]).expect(0);
    assert!(rm.out().contains("removed payload_123"));
    let again = run(&root, &["rm", "payload_123"]).expect(1);
    again.assert_stderr("no entry for key");
    run(&root, &["get", "payload_123"]).expect(1);

    // Bad input is exit 2 with a message saying what to do; nothing is stored.
    let bad = run_in(&root, &["set", "j", "--json"], b"{not json").expect(2);
    bad.assert_stderr("not valid JSON");
    bad.assert_stderr("hint:");
    let bad = run_in(&root, &["set", "t", "--text"], b"ok\xff").expect(2);
    bad.assert_stderr("not valid UTF-8");
    let bad = run(&root, &["set", "f", "/definitely/not/here"]).expect(2);
    bad.assert_stderr("cannot read /definitely/not/here");
    let bad = run_in(&root, &["set", "x", "--ttl", "soon"], b"v").expect(2);
    bad.assert_stderr("invalid TTL");
    let bad = run_in(&root, &["set", "x", "--compress", "lz4"], b"v").expect(2);
    bad.assert_stderr("unknown compression");
    run_in(&root, &["set", "x", "--json", "--text"], b"1").expect(2);
    let long_key = "k".repeat(1025);
    let bad = run_in(&root, &["set", &long_key], b"v").expect(2);
    bad.assert_stderr("invalid key");
    for k in ["j", "t", "f", "x"] {
        run(&root, &["get", k]).expect(1);
    }
}

#[test]
fn ls_shows_every_column_and_its_json_parses() {
    let (_tmp, root) = cache_dir();
    run_in(
        &root,
        &["set", "reports/a.xml", "--text", "--compress", "zstd"],
        &[b'x'; 10_000],
    )
    .expect(0);
    run_in(
        &root,
        &["set", "reports/b.json", "--json", "--ttl", "1h30m"],
        b"[1,2,3]",
    )
    .expect(0);
    run_in(
        &root,
        &["set", "raw", "--compress", "gzip"],
        &pattern(1, 4096),
    )
    .expect(0);

    let ls = run(&root, &["ls"]).expect(0).out();
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(lines.len(), 4, "{ls}");
    for col in ["KEY", "KIND", "SIZE", "LOGICAL", "CODEC", "AGE", "EXPIRES"] {
        assert!(lines[0].contains(col), "{ls}");
    }
    // Each row: how it starts, and what else it shows.
    for (row, start, shows) in [
        (1, "raw ", &["gzip"][..]),
        (2, "reports/a.xml", &["9.77 KiB", "text", "never"]),
        (3, "", &["json", "in 1h 29m"]),
    ] {
        assert!(lines[row].starts_with(start), "{ls}");
        for part in shows {
            assert!(lines[row].contains(part), "{ls}");
        }
    }

    let prefixed = run(&root, &["ls", "reports/", "--json"]).expect(0).json();
    assert_eq!(keys_of(&prefixed), ["reports/a.xml", "reports/b.json"]);
    let a = &prefixed[0];
    assert_eq!(a["kind"], "text");
    assert_eq!(a["codec"], "zstd");
    assert_eq!(a["logical_size"], 10_000);
    assert!(
        a["size"].as_u64().unwrap() < 1000,
        "zstd shrinks a run of x: {a}"
    );
    assert_eq!(a["expires"], Json::Null);
    assert_eq!(a["expired"], false);
    assert!(a["created"].as_str().unwrap().ends_with('Z'));
    let b = &prefixed[1];
    assert_eq!(b["kind"], "json");
    let left = b["expires_in_seconds"].as_f64().unwrap();
    assert!((5300.0..=5400.0).contains(&left), "{b}");

    let none = run(&root, &["ls", "zzz"]).expect(0);
    assert!(none.stdout.is_empty());
    none.assert_stderr("no entries");
    assert_eq!(
        run(&root, &["ls", "zzz", "--json"]).expect(0).json(),
        serde_json::json!([])
    );
}

#[test]
fn ttls_too_long_to_store_are_usage_errors_not_panics() {
    let (_tmp, root) = cache_dir();
    run_in(&root, &["set", "k", "--ttl", "1h"], b"before").expect(0);
    for ttl in [
        "10000000000000000000",
        "18446744073709551615",
        "18446744073709551615s",
        "99999999999999999999w",
        "1000000000000w",
        "36501d",
        "3153600001s",
    ] {
        let r = run_in(&root, &["set", "k", "--ttl", ttl], b"after").expect(2);
        assert!(
            !r.stderr.contains("panicked") && r.stderr.contains("--ttl"),
            "{ttl}: {}",
            r.stderr
        );
        assert!(
            r.stderr.contains("100 years") || r.stderr.contains("too long"),
            "{ttl}: {}",
            r.stderr
        );
        assert_eq!(run(&root, &["get", "k"]).expect(0).stdout, b"before");
    }
    // The longest accepted TTL stores.
    run_in(&root, &["set", "k", "--ttl", "36500d"], b"longest").expect(0);
    assert_eq!(run(&root, &["get", "k"]).expect(0).stdout, b"longest");
}

#[test]
fn ttl_expiry_shows_in_stat_and_purge_removes_it() {
    let (_tmp, root) = cache_dir();
    run_in(&root, &["set", "short", "--ttl", "1s"], b"soon gone").expect(0);
    run_in(&root, &["set", "kept"], b"stays").expect(0);
    let before = run(&root, &["stat", "--json"]).expect(0).json();
    assert_eq!(before["entries"], 2);
    assert_eq!(before["expired"], 0);
    assert_eq!(before["oldest"]["key"], "short");
    assert_eq!(before["newest"]["key"], "kept");

    std::thread::sleep(Duration::from_millis(1200));

    let stat = run(&root, &["stat", "--json"]).expect(0).json();
    assert_eq!(stat["entries"], 2, "{stat}");
    assert_eq!(stat["expired"], 1, "{stat}");
    assert_eq!(stat["logical_bytes"], 9 + 5);
    assert!(stat["bytes"].as_u64().unwrap() > 14);
    assert_eq!(stat["counters"]["entries"], 2);
    let human = run(&root, &["stat"]).expect(0).out();
    assert!(human.contains("entries  2 (1 expired"), "{human}");
    assert!(
        human.contains("oldest") && human.contains("short"),
        "{human}"
    );
    let ls = run(&root, &["ls", "--json"]).expect(0).json();
    assert_eq!(ls[1]["key"], "short");
    assert_eq!(ls[1]["expired"], true);
    assert!(run(&root, &["ls"]).expect(0).out().contains("expired"));

    let purge = run(&root, &["purge", "--expired"]).expect(0);
    assert!(
        purge.out().contains("removed 1 expired entry"),
        "{}",
        purge.out()
    );
    let stat = run(&root, &["stat", "--json"]).expect(0).json();
    assert_eq!(
        (stat["entries"].as_u64(), stat["expired"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(listed_keys(&root), ["kept"]);
    assert_eq!(run(&root, &["get", "kept"]).expect(0).stdout, b"stays");

    // purge needs --expired: to remove everything there is clear --yes.
    let usage = run(&root, &["purge"]).expect(2);
    usage.assert_stderr("--expired");
}

#[test]
fn verify_reports_and_removes_corrupt_entries() {
    let (tmp, root) = cache_dir();
    run_in(&root, &["set", "good"], &pattern(2, 1 << 20)).expect(0);
    run_in(
        &root,
        &["set", "good.gz", "--compress", "gzip"],
        &pattern(3, 1 << 20),
    )
    .expect(0);
    for bad in ["bad1", "bad2", "bad3"] {
        run_in(&root, &["set", bad], &pattern(4, 1 << 20)).expect(0);
    }
    let clean = run(&root, &["verify"]).expect(0).out();
    assert!(
        clean.contains("verified 5 entries (5.00 MiB): 5 ok, 0 corrupt"),
        "{clean}"
    );

    // Text report: the key, the reason, exit 2; the entry is gone.
    corrupt(&root, "bad1");
    let report = run(&root, &["verify"]).expect(2).out();
    assert!(
        report.contains("corrupt  bad1: block 0 does not match its checksum (removed)"),
        "{report}"
    );
    assert!(report.contains("4 ok, 1 corrupt and removed"), "{report}");
    assert!(!listed_keys(&root).contains(&"bad1".into()));

    // JSON report.
    corrupt(&root, "bad2");
    let doc = run(&root, &["verify", "--json"]).expect(2).json();
    assert_eq!(doc["checked"], 4);
    assert_eq!(doc["ok"], 3);
    assert_eq!(doc["corrupt"][0]["key"], "bad2");
    assert_eq!(doc["corrupt"][0]["removed"], true, "{doc}");
    assert!(
        doc["corrupt"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("checksum"),
        "{doc}"
    );
    assert_eq!(doc["failed"], serde_json::json!([]));

    // get of a corrupt entry: exit 2, and -o leaves no file behind.
    corrupt(&root, "bad3");
    let out = tmp.path().join("out.bin");
    let got = run(&root, &["get", "bad3", "-o", out.to_str().unwrap()]).expect(2);
    got.assert_stderr("corrupt");
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("etl-cache"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let after = run(&root, &["verify", "--json"]).expect(0).json();
    assert_eq!(
        (after["checked"].as_u64(), after["ok"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(listed_keys(&root), ["good", "good.gz"]);
}

#[test]
fn clear_refuses_without_yes() {
    let (_tmp, root) = cache_dir();
    for k in ["a", "b", "c"] {
        run_in(&root, &["set", k], k.as_bytes()).expect(0);
    }
    let refused = run(&root, &["clear"]).expect(2);
    refused.assert_stderr("3 entries");
    refused.assert_stderr("clear --yes");
    assert_eq!(listed_keys(&root), ["a", "b", "c"]);
    let done = run(&root, &["clear", "--yes"]).expect(0);
    assert!(done.out().contains("removed 3 entries"), "{}", done.out());
    assert_eq!(
        run(&root, &["ls", "--json"]).expect(0).json(),
        serde_json::json!([])
    );
    let stat = run(&root, &["stat", "--json"]).expect(0).json();
    assert_eq!(
        (stat["entries"].as_u64(), stat["bytes"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(stat["oldest"], Json::Null);
}

#[test]
fn read_commands_never_create_a_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("typo");
    for args in [
        &["ls"][..],
        &["stat"],
        &["verify"],
        &["purge", "--expired"],
        &["clear", "--yes"],
    ] {
        let r = run(&missing, args).expect(2);
        assert!(
            r.stderr.contains("no cache at") && r.stderr.contains("--cache"),
            "{args:?}: {}",
            r.stderr
        );
    }
    // get and rm: a miss, with the reason.
    let r = run(&missing, &["get", "k"]).expect(1);
    r.assert_stderr("no entry for key \"k\": no cache at");
    run(&missing, &["rm", "k"]).expect(1);
    assert!(!missing.exists());
    // A directory that is not a cache root is left alone too.
    let r = run(tmp.path(), &["ls"]).expect(2);
    r.assert_stderr("not an etl-cache root");
    assert!(!tmp.path().join("etl-cache-v1").exists());
    // set creates it.
    run_in(&missing, &["set", "k"], b"v").expect(0);
    assert_eq!(run(&missing, &["get", "k"]).expect(0).stdout, b"v");
}

#[test]
fn cache_urls_and_the_environment() {
    let (_tmp, root) = cache_dir();
    // file:// with an absolute path is the same directory.
    let url = format!("file://{}", root.display());
    run_with(&url, &["set", "k"], b"via file://").expect(0);
    assert_eq!(run(&root, &["get", "k"]).expect(0).stdout, b"via file://");

    // ETL_CACHE_URL when --cache is not given; --cache wins over it.
    let env_get = bin()
        .env("ETL_CACHE_URL", &url)
        .args(["get", "k"])
        .output()
        .unwrap();
    assert_eq!(env_get.status.code(), Some(0));
    assert_eq!(env_get.stdout, b"via file://");
    let other = root.with_file_name("other");
    let flag_wins = bin()
        .env("ETL_CACHE_URL", &url)
        .args(["--cache", other.to_str().unwrap(), "get", "k"])
        .output()
        .unwrap();
    assert_eq!(flag_wins.status.code(), Some(1));

    // Default: .cache in the working directory.
    let cwd = root.with_file_name("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let mut child = bin()
        .current_dir(&cwd)
        .args(["set", "here"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"default root")
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(entry_file(&cwd.join(".cache"), "here").exists());

    // memory:// works within one process: a set succeeds, the next process sees nothing.
    run_with("memory://", &["set", "m"], b"v").expect(0);
    run_with("memory://", &["get", "m"], b"").expect(1);
    assert_eq!(
        run_with("memory://", &["ls", "--json"], b"")
            .expect(0)
            .json(),
        serde_json::json!([])
    );

    // Object stores built without their feature name it (with it, tests/cli_s3.rs
    // runs every command on a real S3 server); unknown schemes list the supported ones.
    for (url, feature, on) in [
        ("s3://bucket/prefix", "aws", cfg!(feature = "aws")),
        ("gs://bucket/prefix", "gcp", cfg!(feature = "gcp")),
        ("az://container/prefix", "azure", cfg!(feature = "azure")),
    ] {
        if !on {
            let r = run_with(url, &["ls"], b"").expect(2);
            r.assert_stderr(&format!("`{feature}` feature"));
        }
    }
    let ftp = run_with("ftp://host/dir", &["ls"], b"").expect(2);
    ftp.assert_stderr("unknown scheme");
    ftp.assert_stderr("memory://");
}

#[test]
fn help_documents_the_exit_codes_and_usage_errors_exit_2() {
    let help = bin().arg("--help").output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8(help.stdout).unwrap();
    for needle in [
        "Exit status",
        "0  found",
        "1  miss",
        "2  error",
        "ETL_CACHE_URL",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    for cmd in ["ls", "get", "set", "rm", "stat", "purge", "clear", "verify"] {
        assert!(
            text.contains(&format!("  {cmd} ")),
            "{cmd} missing from:\n{text}"
        );
    }
    let set_help =
        String::from_utf8(bin().args(["set", "--help"]).output().unwrap().stdout).unwrap();
    assert!(
        set_help.contains("--ttl") && set_help.contains("1h30m"),
        "{set_help}"
    );
    assert_eq!(
        bin().arg("frobnicate").output().unwrap().status.code(),
        Some(2)
    );
    assert_eq!(bin().arg("get").output().unwrap().status.code(), Some(2));
}

#[test]
fn get_into_a_closed_pipe_exits_quietly() {
    let (_tmp, root) = cache_dir();
    run_in(&root, &["set", "big"], &pattern(5, 4 << 20)).expect(0);
    let mut child = bin()
        .args(["--cache", root.to_str().unwrap(), "get", "big"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take()); // like `| head -c 16`
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(&first[..], &pattern(5, 16)[..]);
}

/// What a measured run of the binary left behind.
struct Measured {
    code: i32,
    stdout: String,
    stderr: String,
    /// Peak resident memory, in bytes.
    peak_rss: u64,
}

/// Reads what is left of `child`'s piped output, waits for it, and takes its
/// peak resident memory from wait4(2): the usage of this one child, whatever
/// else this process runs beside it.
fn wait_measured(mut child: Child) -> Measured {
    fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                pipe.read_to_end(&mut buf)
                    .expect("read the binary's output");
            }
            buf
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let usage = child.wait4().expect("wait for the binary");
    Measured {
        code: usage.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(stdout.join().unwrap()).unwrap(),
        stderr: String::from_utf8(stderr.join().unwrap()).unwrap(),
        peak_rss: usage.rusage.maxrss,
    }
}

const GIB_CHUNK: usize = 1 << 20;
const GIB_CHUNKS: u64 = 1024; // 1 GiB

/// Pipes 1 GiB into `etl-cache set big -`; returns the command's peak RSS.
fn gib_set(cache: &str) -> u64 {
    let mut set = bin()
        .args(["--cache", cache, "set", "big", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = set.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        for n in 0..GIB_CHUNKS {
            stdin.write_all(&pattern(n, GIB_CHUNK)).unwrap();
        }
    });
    let out = wait_measured(set);
    feeder.join().unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("1.00 GiB of bytes"), "{}", out.stdout);
    out.peak_rss
}

/// Reads `big` back through `etl-cache get big`, checking every byte;
/// returns the command's peak RSS.
fn gib_get(cache: &str) -> u64 {
    let mut get = bin()
        .args(["--cache", cache, "get", "big"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = get.stdout.take().unwrap();
    let mut buf = vec![0u8; GIB_CHUNK];
    for n in 0..GIB_CHUNKS {
        stdout
            .read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("output ends in chunk {n}: {e}"));
        assert!(buf == pattern(n, GIB_CHUNK), "chunk {n} differs");
    }
    assert_eq!(
        stdout.read(&mut buf).unwrap(),
        0,
        "output longer than 1 GiB"
    );
    let out = wait_measured(get);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.peak_rss
}

/// Selects a step of the 1 GiB test in a child process: `set:CACHE` or `get:CACHE`.
const GIB_STEP: &str = "ETL_CACHE_CLI_TEST_GIB_STEP";

/// Runs one step of the 1 GiB test in a fresh process of this test binary,
/// which spawns the command and prints its peak RSS. Not from this process:
/// the peak RSS the kernel reports for a process also counts the peak of the
/// process it was spawned from (std spawns through posix_spawn, whose child
/// runs in its parent's memory until exec, and exec keeps that memory's
/// high-water mark), and this process runs the other tests beside it; a
/// fresh one is a few MiB.
fn gib_step(step: &str, cache: &str) -> u64 {
    const TEST: &str = "one_gib_set_and_get_through_pipes_in_bounded_memory";
    let out = Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(GIB_STEP, format!("{step}:{cache}"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{step} failed:\n{stdout}\n{stderr}");
    stdout
        .lines()
        // libtest's `test NAME ... ` may start the line.
        .find_map(|l| l.split_once("peak_rss_bytes=").map(|(_, n)| n.trim()))
        .unwrap_or_else(|| panic!("{step} printed no peak_rss_bytes:\n{stdout}\n{stderr}"))
        .parse()
        .expect("a number of bytes")
}

#[test]
fn one_gib_set_and_get_through_pipes_in_bounded_memory() {
    if let Ok(step) = std::env::var(GIB_STEP) {
        // A child started by gib_step: one command, its peak RSS on stdout.
        let peak = match step.split_once(':') {
            Some(("set", cache)) => gib_set(cache),
            Some(("get", cache)) => gib_get(cache),
            _ => panic!("{GIB_STEP}={step}: expected set:CACHE or get:CACHE"),
        };
        println!("peak_rss_bytes={peak}");
        return;
    }
    const LIMIT: u64 = 64 << 20;
    let (_tmp, root) = cache_dir();
    let cache = root.to_str().unwrap();
    let set_rss = gib_step("set", cache);
    let get_rss = gib_step("get", cache);
    eprintln!("1 GiB through pipes: peak RSS set {set_rss} B, get {get_rss} B");
    assert!(set_rss < LIMIT, "set peaked at {set_rss} bytes");
    assert!(get_rss < LIMIT, "get peaked at {get_rss} bytes");
}

/// `get -o` writes through a temp file of a random name, created
/// exclusively: a link planted beside the output under any name the
/// command could have picked from its process id is never followed, and no
/// temp file is left behind.
#[test]
fn get_into_a_file_never_follows_a_planted_link() {
    let (tmp, root) = cache_dir();
    let blob = pattern(3, 200_000);
    let src = tmp.path().join("src.bin");
    std::fs::write(&src, &blob).unwrap();
    run(&root, &["set", "blob", src.to_str().unwrap()]).expect(0);
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let victim = tmp.path().join("victim.txt");
    std::fs::write(&victim, b"must not change").unwrap();
    // Process ids are handed out in order: the next commands get one of the
    // next few thousand.
    let mut recent = Command::new("true").spawn().unwrap();
    let base = recent.id();
    recent.wait().unwrap();
    for pid in base..base + 5000 {
        let name = format!(".out.bin.etl-cache-{pid}.tmp");
        std::os::unix::fs::symlink(&victim, out_dir.join(name)).unwrap();
    }
    let out = out_dir.join("out.bin");
    run(&root, &["-q", "get", "blob", "-o", out.to_str().unwrap()]).expect(0);
    assert!(
        std::fs::read(&out).unwrap() == blob,
        "the output is not the value"
    );
    assert!(
        std::fs::read(&victim).unwrap() == b"must not change",
        "a link planted beside the output was followed"
    );
    let mut names: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".out.bin.etl-cache-"))
        .collect();
    names.sort();
    assert_eq!(names, ["out.bin"], "a temp file was left behind");
}

/// `verify` reads every entry without refreshing its recency: the LRU
/// order (the entry files' times) is the same after a check as before.
#[test]
fn verify_leaves_the_lru_order_as_it_found_it() {
    let (_tmp, root) = cache_dir();
    for key in ["oldest", "middle", "newest"] {
        run_in(&root, &["set", key, "-"], key.as_bytes()).expect(0);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let times = || -> Vec<std::time::SystemTime> {
        ["oldest", "middle", "newest"]
            .iter()
            .map(|k| entry_file(&root, k).metadata().unwrap().modified().unwrap())
            .collect()
    };
    let before = times();
    assert!(before[0] < before[1] && before[1] < before[2]);
    let doc = run(&root, &["verify", "--json"]).expect(0).json();
    assert_eq!(doc["ok"].as_u64(), Some(3), "{doc}");
    assert_eq!(
        times(),
        before,
        "verify refreshed the recency of entries it checked"
    );
    // A plain get of one key still refreshes that key.
    run(&root, &["get", "oldest", "-o", "-"]).expect(0);
    let after = times();
    assert!(after[0] > before[2], "a get refreshes the entry it reads");
}

/// An entry of kind arrow (the bytes of an Arrow IPC file, as etl-cache-arrow
/// writes them): `ls` and `ls --json` say arrow, `get -o` writes the payload
/// as it was stored, ready for any Arrow reader.
#[test]
fn arrow_entries_list_as_arrow_and_get_writes_their_payload() {
    let (tmp, root) = cache_dir();
    let payload = pattern(7, 100_000);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            use etl_cache::{Cache, Compression, Kind, SetOptions, Value};
            let cache = etl_cache::DiskCache::builder()
                .root(&root)
                .build()
                .await
                .unwrap();
            let opts = SetOptions::new()
                .kind(Kind::Arrow)
                .compression(Compression::zstd());
            cache
                .set("tables/orders", Value::Bytes(payload.clone().into()), opts)
                .await
                .unwrap();
        });
    let ls = run(&root, &["ls"]).expect(0).out();
    let row = ls.lines().nth(1).unwrap();
    assert!(
        row.starts_with("tables/orders") && row.contains(" arrow "),
        "{ls}"
    );
    let listed = run(&root, &["ls", "--json"]).expect(0).json();
    assert_eq!(listed[0]["kind"], "arrow", "{listed}");
    let out = tmp.path().join("orders.arrow");
    run(
        &root,
        &["get", "tables/orders", "-o", out.to_str().unwrap()],
    )
    .expect(0);
    assert_eq!(std::fs::read(&out).unwrap(), payload);
}
