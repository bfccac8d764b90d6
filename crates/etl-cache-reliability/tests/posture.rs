//! Posture: no `unsafe` anywhere, and a private cache directory whatever
//! the umask.
//!
//! - The workspace lints forbid `unsafe_code`, every member inherits them,
//!   and every library and binary root (and every fuzz target) also says
//!   `#![forbid(unsafe_code)]`.
//! - A DiskCache created under umask 000, 002, 022, 027 and 077 has its
//!   root and every directory at 0700 and every file at 0600: entries, temp
//!   files being written, lock files while held, the counters, the lock
//!   files of the handle and of eviction. (Each umask runs in a child
//!   process: setting the umask needs `sh`, since `umask(2)` is not in std.)
//!
//! `cargo deny check licenses bans sources` runs in CI (`.ci/run`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use etl_cache_core::{Cache, CacheExt, SetOptions};
use etl_cache_reliability::fixtures::open_capped;
use etl_cache_reliability::{layout, proc, report, runtime};
use futures::StreamExt;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the workspace root")
        .to_path_buf()
}

/// The `members = [...]` of the root manifest.
fn members(manifest: &str) -> Vec<String> {
    let start = manifest.find("members").expect("a members list");
    let open = start + manifest[start..].find('[').expect("[");
    let close = open + manifest[open..].find(']').expect("]");
    manifest[open + 1..close]
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn crate_roots(dir: &Path) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    for f in ["src/lib.rs", "src/main.rs"] {
        if dir.join(f).exists() {
            roots.push(dir.join(f));
        }
    }
    for bin in layout::files_in(&dir.join("src/bin")) {
        if bin.is_dir() && bin.join("main.rs").exists() {
            roots.push(bin.join("main.rs"));
        } else if bin.extension().is_some_and(|e| e == "rs") {
            roots.push(bin);
        }
    }
    for target in layout::files_in(&dir.join("fuzz_targets")) {
        roots.push(target);
    }
    roots
}

/// Fails unless the crate root at `r` has `#![forbid(unsafe_code)]`.
fn assert_forbids_unsafe(r: &Path) {
    let text = std::fs::read_to_string(r).expect("read");
    assert!(
        text.contains("#![forbid(unsafe_code)]"),
        "{} lacks #![forbid(unsafe_code)]",
        r.display()
    );
}

#[test]
fn every_crate_forbids_unsafe_code() {
    if proc::role().is_some() {
        return;
    }
    let ws = workspace();
    let root_manifest = std::fs::read_to_string(ws.join("Cargo.toml")).expect("Cargo.toml");
    let lints = root_manifest
        .split("[workspace.lints.rust]")
        .nth(1)
        .expect("a [workspace.lints.rust] table");
    let lints = lints.split("\n[").next().unwrap_or(lints);
    assert!(
        lints.contains("unsafe_code = \"forbid\""),
        "the workspace lints forbid unsafe_code"
    );
    let mut dirs: Vec<PathBuf> = vec![ws.clone()];
    dirs.extend(members(&root_manifest).iter().map(|m| ws.join(m)));
    let mut checked = Vec::new();
    for dir in &dirs {
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("manifest");
        assert!(
            manifest.contains("[lints]\nworkspace = true"),
            "{}: [lints] workspace = true",
            dir.display()
        );
        let roots = crate_roots(dir);
        assert!(!roots.is_empty(), "{}: no crate root found", dir.display());
        for r in roots {
            assert_forbids_unsafe(&r);
            checked.push(r);
        }
    }
    // The fuzz crate lives outside the workspace: its own lints and targets.
    let fuzz = ws.join("fuzz");
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    assert!(
        manifest.contains("unsafe_code = \"forbid\""),
        "fuzz/Cargo.toml forbids unsafe_code"
    );
    for r in crate_roots(&fuzz) {
        assert_forbids_unsafe(&r);
        checked.push(r);
    }
    report(
        "posture",
        &format!(
            "forbid(unsafe_code): workspace lints + {} crate roots checked",
            checked.len()
        ),
    );
}

const ROLE: &str = "umask-child";

/// Creates a cache under the umask the parent set, and reports the modes
/// of everything it makes, including files that exist only for a moment.
#[test]
fn umask_child() {
    let Some(root) = proc::role_path(ROLE, "UMASK_ROOT") else {
        return;
    };
    let mode = |p: &Path| {
        std::fs::symlink_metadata(p)
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777
    };
    runtime().block_on(async {
        let cache = open_capped(&root, 2).await;
        for i in 0..4 {
            cache
                .set(&format!("k{i}"), "v".into(), SetOptions::new())
                .await
                .expect("set");
        }
        // A temp file while a stream is being written.
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(1);
        let rx =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
                .boxed();
        let writer = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.set_stream("streamed", rx, SetOptions::new()).await })
        };
        tx.send(Ok(Bytes::from_static(b"part")))
            .await
            .expect("send");
        let tmp = layout::tmp_dir(&root);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while layout::files_in(&tmp).is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for f in layout::files_in(&tmp) {
            println!("mode {:o} temp", mode(&f));
        }
        drop(tx);
        let _ = writer.await;
        // A key's lock file, while held.
        let lock = layout::lock_path(&root, "held");
        let _ = cache
            .get_or_insert_with("held", SetOptions::new(), || async {
                println!("mode {:o} lock", mode(&lock));
                "v".into()
            })
            .await
            .expect("get_or_insert_with");
        for p in std::iter::once(root.clone()).chain(layout::walk(&root)) {
            println!("mode {:o} {}", mode(&p), p.display());
        }
    });
}

#[test]
fn directories_are_0700_and_files_0600_whatever_the_umask() {
    if proc::role().is_some() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = 0;
    for umask in ["000", "002", "022", "027", "077"] {
        let root = dir.path().join(format!("umask-{umask}/deeper/cache"));
        let exe = proc::exe();
        let mut args = vec![
            "-c".to_string(),
            format!("umask {umask} && exec \"$0\" \"$@\""),
            exe.display().to_string(),
        ];
        args.extend(proc::test_args("umask_child"));
        let out = Command::new("sh")
            .args(&args)
            .env(proc::ROLE_VAR, ROLE)
            .env("UMASK_ROOT", &root)
            .output()
            .expect("run sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "umask {umask}: the child failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("mode ")).collect();
        assert!(
            lines.iter().any(|l| l.ends_with(" temp")),
            "umask {umask}: saw a temp file: {stdout}"
        );
        assert!(
            lines.iter().any(|l| l.ends_with(" lock")),
            "umask {umask}: saw a lock file"
        );
        for line in lines {
            let mut parts = line.splitn(3, ' ');
            let (_, mode, what) = (
                parts.next(),
                parts.next().expect("mode"),
                parts.next().expect("path"),
            );
            let mode = u32::from_str_radix(mode, 8).expect("octal");
            let is_dir = Path::new(what).is_dir();
            let want = if is_dir { 0o700 } else { 0o600 };
            assert_eq!(
                mode, want,
                "umask {umask}: {what} is {mode:o}, want {want:o}"
            );
            files += 1;
        }
    }
    report(
        "posture",
        &format!(
            "modes under umask 000/002/022/027/077: {files} paths checked, directories 0700, files 0600"
        ),
    );
}
