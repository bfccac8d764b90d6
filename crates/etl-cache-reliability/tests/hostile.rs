//! Hostile inputs: keys that look like paths (`../`, absolute, Windows),
//! NUL, a 1 MB key, characters from all 17 Unicode planes, names of the
//! caches' own files; symbolic links planted in the cache root pointing
//! outside it; a root shared with unrelated files; stored files replaced by
//! a directory or a FIFO; a crafted entry whose lengths overflow. The
//! planted links, directories and FIFOs, and foreign files under the prefix
//! (which `clear` must keep), also run on ObjectCache over LocalFileSystem.
//!
//! Nothing may be read or written outside the root (every test snapshots a
//! sibling directory and checks it is untouched), and nothing may hang or
//! panic: every operation runs under a timeout.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etl_cache_core::backend::format::{Header, Layout, Trailer};
use etl_cache_core::{Cache, CacheExt, Codec, Error, Kind, ManualClock, SetOptions, Value};
use etl_cache_fs::DiskCache;
use etl_cache_object::ObjectCache;
use etl_cache_reliability::fixtures::{open_capped, open_with_clock};
use etl_cache_reliability::{layout, report, runtime};
use etl_cache_tiered::TieredCache;
use futures::{StreamExt, TryStreamExt};

/// Runs `f` with a deadline: a hang is a failure, not a stuck CI.
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(30), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} hung (no answer within 30 s)"),
    }
}

/// Whether the read `op` ("get", "get_stream" or "head") of `key` fails
/// with `Error::Corrupt` (within 30 s).
async fn read_is_corrupt(c: &DiskCache, op: &str, key: &str) -> bool {
    match op {
        "get" => matches!(within(op, c.get(key)).await, Err(Error::Corrupt { .. })),
        "get_stream" => matches!(
            within(op, c.get_stream(key, 10)).await,
            Err(Error::Corrupt { .. })
        ),
        "head" => matches!(within(op, c.head(key)).await, Err(Error::Corrupt { .. })),
        other => panic!("{other} is not a read"),
    }
}

/// Reports `line` for this suite.
fn report_hostile(line: &str) {
    report("hostile", line);
}

/// A work directory: `root/` for the cache, `outside/` with bait files that
/// must never change, and the snapshot of `outside/` to compare with.
struct Work {
    dir: tempfile::TempDir,
    before: Vec<(PathBuf, String)>,
}

impl Work {
    fn new() -> Work {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("outside");
        std::fs::create_dir_all(out.join("sub")).expect("mkdir");
        std::fs::write(out.join("secret.txt"), b"do not touch").expect("write");
        std::fs::write(out.join("sub/data.csv"), b"a,b\n1,2\n").expect("write");
        let before = layout::snapshot(&out);
        Work { dir, before }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A new work directory, its root and a `DiskCache` opened on it.
    async fn with_disk() -> (Work, PathBuf, DiskCache) {
        let w = Work::new();
        let root = w.root();
        let c = DiskCache::open(&root).await.expect("open");
        (w, root, c)
    }

    /// Runs `test` on a new runtime with a fresh work directory, its root
    /// and a `DiskCache` opened there ([`Work::with_disk`]); returns what
    /// `test` returns.
    fn on_disk<T>(test: impl AsyncFnOnce(Work, PathBuf, DiskCache) -> T) -> T {
        runtime().block_on(async {
            let (w, root, c) = Work::with_disk().await;
            test(w, root, c).await
        })
    }

    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    /// Fails if anything outside the root changed, or anything but `root`
    /// and `outside` appeared beside them.
    fn assert_outside_untouched(&self, what: &str) {
        assert_eq!(
            layout::snapshot(&self.outside()),
            self.before,
            "{what}: something outside the root changed"
        );
        let mut top: Vec<String> = layout::files_in(self.dir.path())
            .into_iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        top.sort();
        top.retain(|n| n != "root" && n != "outside");
        assert!(
            top.is_empty(),
            "{what}: files appeared beside the root: {top:?}"
        );
    }

    /// A valid entry for `key` written by another cache, for planting.
    async fn foreign_entry(&self, key: &str, text: &str) -> PathBuf {
        let other = self.dir.path().join("outside").join("other-cache");
        let c = DiskCache::open(&other).await.expect("open another cache");
        c.set(key, text.into(), SetOptions::new())
            .await
            .expect("set");
        drop(c);
        let src = layout::entry_path(&other, key);
        let dst = self.outside().join("planted-entry");
        std::fs::copy(&src, &dst).expect("copy");
        std::fs::remove_dir_all(&other).expect("remove the other cache");
        dst
    }
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "this test needs mkfifo(1) (coreutils) to make a FIFO at {path:?}"
    );
}

// ------------------------------------------------------------ keys

/// Valid keys that look dangerous; each must be a plain key.
fn hostile_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "../../../../../../../../etc/passwd",
        "../outside/secret.txt",
        "..",
        ".",
        "./.",
        "a/../../b",
        "/etc/passwd",
        "/tmp",
        "//double//slash",
        "/",
        "a/",
        "a//b",
        "C:\\Windows\\System32\\config",
        "..\\..\\outside\\secret.txt",
        "~/.ssh/id_rsa",
        "$HOME/x",
        "%2e%2e%2f%2e%2e%2fsecret",
        "%",
        "%%",
        "a%",
        "a%/b",
        "CON",
        "NUL.txt",
        "\u{202E}txt.exe",
        "tab\tnew\nline\rcr",
        " spaces ",
        "*?[]{}|<>:\"'`;&!#",
        ".etl-cache/leases/x",
        ".etl-cache/long/0000",
        "etl-cache-v1/entries/00/usage",
        "etl-cache-v1/tmp/x.tmp",
        "Key",
        "key",
        "é",
        "e\u{301}",
        "\u{FEFF}bom",
        "\u{FFFD}",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    // One character of every Unicode plane (0 to 16), alone and together.
    let planes: Vec<char> = (0..=16u32)
        .map(|p| {
            let c = match p {
                0 => 0x4E2D,
                1 => 0x1F600,
                2 => 0x20000,
                3 => 0x30000,
                14 => 0xE0001,
                15 => 0xF0000,
                16 => 0x10FFFD,
                p => (p << 16) | 0x0041,
            };
            char::from_u32(c).expect("a scalar value")
        })
        .collect();
    for c in &planes {
        keys.push(format!("plane/{c}"));
    }
    keys.push(planes.iter().collect());
    // The longest key: 1024 bytes of four-byte characters.
    keys.push(std::iter::repeat_n('\u{10FFFD}', 256).collect());
    keys.push("/".repeat(1024));
    keys
}

fn invalid_keys() -> Vec<(String, &'static str)> {
    vec![
        (String::new(), "empty"),
        ("a\0b".into(), "NUL"),
        ("\0".into(), "NUL alone"),
        ("../\0/etc/passwd".into(), "NUL after dots"),
        ("x".repeat(1025), "1025 bytes"),
        ("a".repeat(1 << 20), "1 MB"),
        ("\u{10FFFD}".repeat(257), "1028 bytes of plane 16"),
    ]
}

async fn exercise_keys(cache: &dyn Cache, what: &str) -> usize {
    let keys = hostile_keys();
    for (i, k) in keys.iter().enumerate() {
        let v = Value::Text(format!("value {i}"));
        within("set", cache.set(k, v, SetOptions::new()))
            .await
            .unwrap_or_else(|e| panic!("{what}: set {k:?}: {e}"));
    }
    for (i, k) in keys.iter().enumerate() {
        let got = within("get", cache.get(k)).await.expect("get");
        assert_eq!(
            got,
            Some(Value::Text(format!("value {i}"))),
            "{what}: get {k:?}"
        );
        let m = within("head", cache.head(k))
            .await
            .expect("head")
            .expect("present");
        assert_eq!(&m.key, k, "{what}: head names the key");
        let s = within("get_stream", cache.get_stream(k, 3))
            .await
            .expect("get_stream")
            .expect("present");
        let chunks: Vec<Bytes> = s.try_collect().await.expect("stream");
        assert_eq!(chunks.concat(), format!("value {i}").as_bytes());
    }
    let mut listed: Vec<String> = within("list", cache.list(None).map_ok(|m| m.key).try_collect())
        .await
        .expect("list");
    listed.sort();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(listed, want, "{what}: list gives back exactly the keys");
    let dots: Vec<String> = within(
        "list prefix",
        cache.list(Some("..")).map_ok(|m| m.key).try_collect(),
    )
    .await
    .expect("list");
    assert!(dots.iter().all(|k| k.starts_with("..")), "{what}: {dots:?}");
    for k in &keys {
        assert!(
            within("delete", cache.delete(k)).await.expect("delete"),
            "{what}: delete {k:?}"
        );
    }
    assert_eq!(
        within("keys", cache.keys(None)).await.expect("keys"),
        Vec::<String>::new()
    );
    for (k, why) in invalid_keys() {
        let shown = k.len().min(40);
        let check = |r: etl_cache_core::Result<()>, op: &str| match r {
            Err(e @ Error::InvalidKey { .. }) => assert!(
                e.to_string().len() < 1_000,
                "{what}: {op} of a {why} key: the message is {} bytes",
                e.to_string().len()
            ),
            other => panic!(
                "{what}: {op} of a {why} key ({:?}…): want InvalidKey, got {other:?}",
                &k[..shown]
            ),
        };
        check(
            within("set", cache.set(&k, "x".into(), SetOptions::new()))
                .await
                .map(|_| ()),
            "set",
        );
        check(
            within(
                "set_stream",
                cache.set_stream(
                    &k,
                    futures::stream::iter([Ok(Bytes::from_static(b"x"))]).boxed(),
                    SetOptions::new(),
                ),
            )
            .await
            .map(|_| ()),
            "set_stream",
        );
        check(within("get", cache.get(&k)).await.map(|_| ()), "get");
        check(
            within("get_stream", cache.get_stream(&k, 10))
                .await
                .map(|_| ()),
            "get_stream",
        );
        check(within("head", cache.head(&k)).await.map(|_| ()), "head");
        check(
            within("delete", cache.delete(&k)).await.map(|_| ()),
            "delete",
        );
        check(
            within(
                "get_or_insert_with",
                cache.get_or_insert_with(&k, SetOptions::new(), || async { "x".into() }),
            )
            .await
            .map(|_| ()),
            "get_or_insert_with",
        );
    }
    keys.len()
}

#[test]
fn hostile_keys_are_plain_keys_on_every_backend() {
    let mut n = 0;
    runtime().block_on(async {
        // DiskCache
        let w = Work::new();
        // Keys naming real absolute paths must not touch them.
        let passwd = |p: &str| {
            std::fs::symlink_metadata(p)
                .ok()
                .map(|m| (m.len(), m.modified().ok()))
        };
        let passwd_before = passwd("/etc/passwd");
        let c = DiskCache::open(w.root()).await.expect("open");
        n = exercise_keys(&c, "DiskCache").await;
        w.assert_outside_untouched("DiskCache keys");
        // Every file the cache made is under its layout directory.
        for p in layout::walk(&w.root()) {
            assert!(
                p.starts_with(layout::base(&w.root())),
                "a file outside the layout: {p:?}"
            );
        }
        assert_eq!(
            passwd("/etc/passwd"),
            passwd_before,
            "/etc/passwd untouched"
        );

        // ObjectCache over InMemory and LocalFileSystem.
        let mem = ObjectCache::new(Arc::new(object_store::memory::InMemory::new()), "pre/fix")
            .expect("ObjectCache");
        exercise_keys(&mem, "ObjectCache(InMemory)").await;
        let w = Work::new();
        std::fs::create_dir_all(w.root()).expect("mkdir");
        let local = ObjectCache::new(
            Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(w.root()).expect("local"),
            ),
            "cache",
        )
        .expect("ObjectCache");
        exercise_keys(&local, "ObjectCache(LocalFileSystem)").await;
        w.assert_outside_untouched("ObjectCache(LocalFileSystem) keys");
        for p in layout::walk(&w.root()) {
            assert!(
                p.starts_with(w.root().join("cache")),
                "outside the prefix: {p:?}"
            );
        }

        // TieredCache: memory -> disk -> object store.
        let w = Work::new();
        let clock = Arc::new(ManualClock::new());
        let disk = open_with_clock(&w.root(), &clock).await;
        let t = TieredCache::builder()
            .clock(clock.clone())
            .tier(Arc::new(disk))
            .tier(Arc::new(
                ObjectCache::builder()
                    .store(Arc::new(object_store::memory::InMemory::new()))
                    .clock(clock)
                    .build()
                    .expect("ObjectCache"),
            ))
            .build()
            .expect("TieredCache");
        exercise_keys(&t, "TieredCache").await;
        w.assert_outside_untouched("TieredCache keys");
    });
    report_hostile(&format!(
        "{n} hostile keys x 4 backends round-trip as plain keys; {} invalid keys (NUL, empty, 1025 B, 1 MB, …) x 7 operations refused",
        invalid_keys().len()
    ));
}

// ------------------------------------------------------------ planted links

#[test]
fn symlinks_planted_in_the_root_are_never_followed() {
    let mut cases = 0;
    Work::on_disk(async |w, root, c| {
        // 1. An entry file replaced by a link to a valid entry outside.
        let key = "planted/entry";
        c.set(key, "mine".into(), SetOptions::new())
            .await
            .expect("set");
        let planted = w.foreign_entry(key, "outside bytes").await;
        let w = Work {
            before: layout::snapshot(&w.outside()),
            ..w
        };
        let entry = layout::entry_path(&root, key);
        std::fs::remove_file(&entry).expect("rm");
        symlink(&planted, &entry);
        match within("get", c.get(key)).await {
            Err(Error::Corrupt { key: k, reason }) => {
                assert_eq!(k, key);
                assert!(reason.contains("symbolic link"), "{reason}");
            }
            other => panic!("a planted link: want Corrupt, got {other:?}"),
        }
        assert!(
            std::fs::symlink_metadata(&entry).is_err(),
            "the link was removed"
        );
        for op in ["get_stream", "head", "list", "clear", "purge"] {
            symlink(&planted, &entry);
            match op {
                "get_stream" | "head" => assert!(read_is_corrupt(&c, op, key).await, "{op}"),
                "list" => assert_eq!(
                    within(op, c.keys(None)).await.expect("list"),
                    Vec::<String>::new()
                ),
                "clear" => {
                    within(op, c.clear()).await.expect("clear");
                }
                _ => {
                    within(op, c.purge_expired()).await.expect("purge");
                }
            }
            let _ = std::fs::remove_file(&entry);
            cases += 1;
        }
        w.assert_outside_untouched("entry links");

        // 2. A key's lock file replaced by a link to a file outside.
        let bait = w.outside().join("secret.txt");
        let lock = layout::lock_path(&root, key);
        symlink(&bait, &lock);
        match within("set", c.set(key, "new".into(), SetOptions::new())).await {
            Err(e) => assert_eq!(e.key(), Some(key), "a clear error naming the key: {e}"),
            Ok(_) => panic!("a set through a planted lock link succeeded"),
        }
        match within("delete", c.delete(key)).await {
            Err(e) => assert_eq!(e.key(), Some(key), "{e}"),
            Ok(_) => panic!("a delete through a planted lock link succeeded"),
        }
        std::fs::remove_file(&lock).expect("rm");
        c.set(key, "new".into(), SetOptions::new())
            .await
            .expect("set once the link is gone");
        cases += 2;

        // 3. A temp file that is a link outside: the sweep at open skips it.
        symlink(&bait, &layout::tmp_dir(&root).join("planted.tmp"));
        drop(c);
        let c = DiskCache::open(&root).await.expect("reopen");
        assert_eq!(c.get_text(key).await.expect("get").as_deref(), Some("new"));
        w.assert_outside_untouched("lock and temp links");
        cases += 1;
        drop(c);
        std::fs::remove_file(layout::tmp_dir(&root).join("planted.tmp")).expect("rm");

        // 4. Directories of the layout, and its files, replaced by links
        //    before a cache opens: the open fails, naming the root.
        let base = layout::base(&root);
        let h = layout::key_hash(key);
        let fanout = layout::entries_dir(&root).join(&h[..2]);
        for (victim, is_dir) in [
            (fanout.clone(), true),
            (layout::tmp_dir(&root), true),
            (layout::locks_dir(&root), true),
            (layout::entries_dir(&root), true),
            (layout::usage_file(&root), false),
            (base.join("users.lock"), false),
            (base.clone(), true),
        ] {
            let aside = w.dir.path().join("aside");
            std::fs::rename(&victim, &aside).expect("move aside");
            let target = if is_dir {
                w.outside().join("sub")
            } else {
                w.outside().join("secret.txt")
            };
            symlink(&target, &victim);
            match within("open", DiskCache::open(&root)).await {
                Err(e @ Error::Open { .. }) => {
                    assert!(e.to_string().contains(&root.display().to_string()), "{e}")
                }
                Ok(c) => {
                    // Opened: then it must not have used the link.
                    drop(c);
                    panic!("opened through a link planted at {victim:?}")
                }
                Err(e) => panic!("{victim:?}: want Error::Open, got {e}"),
            }
            std::fs::remove_file(&victim).expect("rm link");
            std::fs::rename(&aside, &victim).expect("move back");
            w.assert_outside_untouched(&format!("link at {victim:?}"));
            cases += 1;
        }
        let c = DiskCache::open(&root).await.expect("open once repaired");
        assert_eq!(c.get_text(key).await.expect("get").as_deref(), Some("new"));

        // 5. A link to a directory outside planted at the root's top level
        //    (a shared root): clear and eviction never go through it.
        symlink(&w.outside(), &root.join("link-to-outside"));
        c.clear().await.expect("clear");
        w.assert_outside_untouched("top-level link");
        cases += 1;
    });
    report_hostile(&format!(
        "{cases} planted-symlink cases: nothing followed, outside untouched"
    ));
}

/// Keys whose entries share the fan-out directory of `key`.
fn keys_beside(key: &str, n: usize) -> Vec<String> {
    let fan = layout::key_hash(key)[..2].to_owned();
    (0..)
        .map(|i| format!("beside/{i}"))
        .filter(|k| layout::key_hash(k)[..2] == fan)
        .take(n)
        .collect()
}

/// Issue 20, item 13: a directory of the layout (a fan-out directory,
/// `tmp`, `spare`, `locks`, `entries`, `etl-cache-v1` itself) swapped for a
/// link to a directory outside the root while a cache is open. The bait
/// directory holds a valid entry file for the key, so a followed link would
/// serve its value back. Every operation either works on the real directory
/// or fails with a clear error; nothing outside the root is created,
/// changed, removed or read back.
#[test]
fn directories_swapped_for_links_after_open_are_never_followed() {
    let mut cases = 0;
    runtime().block_on(async {
        let key = "swapped/fanout";
        let h = layout::key_hash(key);
        let beside = keys_beside(key, 3);
        for victim in ["fanout", "tmp", "spare", "locks", "entries", "base"] {
            let (w, root, c) = Work::with_disk().await;
            c.set(key, "mine".into(), SetOptions::new())
                .await
                .expect("set");
            for k in &beside {
                c.set(k, "mine".into(), SetOptions::new())
                    .await
                    .expect("set");
            }
            // Replacing a key leaves a spare file (Linux): the spare
            // directory is in use.
            c.set(&beside[0], "mine".into(), SetOptions::new())
                .await
                .expect("set");
            // The bait: a directory outside shaped like the victim, with a
            // valid entry for `key` (in place, and in a fan-out within).
            let planted = w.foreign_entry(key, "outside bytes").await;
            let bait = w.outside().join("bait");
            std::fs::create_dir_all(bait.join(&h[..2])).expect("mkdir");
            std::fs::copy(&planted, bait.join(&h)).expect("copy");
            std::fs::copy(&planted, bait.join(&h[..2]).join(&h)).expect("copy");
            for d in ["entries", "tmp", "spare", "locks"] {
                std::fs::create_dir_all(bait.join(d).join(&h[..2])).expect("mkdir");
                std::fs::copy(&planted, bait.join(d).join(&h[..2]).join(&h)).expect("copy");
            }
            let w = Work {
                before: layout::snapshot(&w.outside()),
                ..w
            };
            let base = layout::base(&root);
            let dir = match victim {
                "fanout" => layout::entries_dir(&root).join(&h[..2]),
                "base" => base.clone(),
                d => base.join(d),
            };
            // The real directory is moved aside within the root, and a link
            // to the bait takes its place.
            let aside = root.join(format!("aside-{victim}"));
            std::fs::rename(&dir, &aside).expect("move aside");
            symlink(&bait, &dir);

            let what = |op: &str| format!("{victim} swapped for a link: {op}");
            let no_bait = |op: &str, got: Option<String>| {
                assert_ne!(
                    got.as_deref(),
                    Some("outside bytes"),
                    "{}: read the bait back",
                    what(op)
                );
            };
            // Errors, when there are any, must say something useful.
            let clear_error = |op: &str, e: Error| {
                let shown = e.to_string();
                assert!(!shown.contains("/proc/self/fd"), "{}: {shown}", what(op));
                assert!(
                    shown.contains(&root.display().to_string()) || e.key().is_some(),
                    "{}: an error naming the path or the key: {shown}",
                    what(op)
                );
            };
            for round in 0..2 {
                let op = format!("set (round {round})");
                if let Err(e) = within(&op, c.set(key, "new".into(), SetOptions::new())).await {
                    clear_error(&op, e);
                }
                w.assert_outside_untouched(&what(&op));
                for k in std::iter::once(key).chain(beside.iter().map(String::as_str)) {
                    match within("get", c.get_text(k)).await {
                        Ok(v) => no_bait("get", v),
                        Err(e) => clear_error("get", e),
                    }
                    match within("get_stream", c.get_stream(k, 7)).await {
                        Ok(Some(s)) => {
                            let chunks: std::io::Result<Vec<Bytes>> =
                                within("stream", s.try_collect()).await;
                            if let Ok(chunks) = chunks {
                                let all: Vec<u8> = chunks.concat();
                                assert!(
                                    !String::from_utf8_lossy(&all).contains("outside bytes"),
                                    "{}: streamed the bait",
                                    what("get_stream")
                                );
                            }
                        }
                        Ok(None) => {}
                        Err(e) => clear_error("get_stream", e),
                    }
                    if let Err(e) = within("head", c.head(k)).await {
                        clear_error("head", e);
                    }
                }
                w.assert_outside_untouched(&what("reads"));
                match within("list", c.keys(None)).await {
                    Ok(keys) => assert!(keys.iter().all(|k| k == key || beside.contains(k))),
                    Err(e) => clear_error("list", e),
                }
                if let Err(e) = within("purge", c.purge_expired()).await {
                    clear_error("purge", e);
                }
                match within(
                    "get_or_insert_with",
                    c.get_or_insert_with(&beside[1], SetOptions::new(), || async {
                        Value::from("computed")
                    }),
                )
                .await
                {
                    Ok(v) => no_bait("get_or_insert_with", v.as_text().map(str::to_owned)),
                    Err(e) => clear_error("get_or_insert_with", e),
                }
                if let Err(e) = within("delete", c.delete(&beside[2])).await {
                    clear_error("delete", e);
                }
                w.assert_outside_untouched(&what(&format!("round {round}")));
            }
            // Once refused, the cache works on its real directories.
            c.set(key, "last".into(), SetOptions::new())
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", what("a set after the refusal")));
            assert_eq!(
                c.get_text(key).await.expect("get").as_deref(),
                Some("last"),
                "{}",
                what("read back")
            );
            if let Err(e) = within("clear", c.clear()).await {
                clear_error("clear", e);
            }
            drop(c);
            w.assert_outside_untouched(&what("the end"));
            cases += 1;
        }
    });
    report_hostile(&format!(
        "{cases} directories swapped for links after open: none followed"
    ));
}

/// As above, with the fan-out directory swapped back and forth while two
/// handles set, read and delete keys in it from several tasks: no call
/// writes through the link or reads the bait back, none panics or hangs.
#[test]
fn a_fanout_swapped_under_concurrent_calls_is_never_followed() {
    runtime().block_on(async {
        let w = Work::new();
        let root = w.root();
        let keys = keys_beside("swapped/concurrent", 6);
        let h = layout::key_hash(&keys[0]);
        let a = DiskCache::open(&root).await.expect("open");
        let b = DiskCache::open(&root).await.expect("open a second handle");
        for k in &keys {
            a.set(k, "mine".into(), SetOptions::new())
                .await
                .expect("set");
        }
        let planted = w.foreign_entry(&keys[0], "outside bytes").await;
        let bait = w.outside().join("bait");
        std::fs::create_dir_all(&bait).expect("mkdir");
        std::fs::copy(&planted, bait.join(&h)).expect("copy");
        let w = Work {
            before: layout::snapshot(&w.outside()),
            ..w
        };
        let fanout = layout::entries_dir(&root).join(&h[..2]);
        let mut tasks = Vec::new();
        for t in 0..4usize {
            let c = if t % 2 == 0 { a.clone() } else { b.clone() };
            let keys = keys.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..150usize {
                    let k = &keys[(t + i) % keys.len()];
                    match i % 4 {
                        0 => {
                            let _ = c
                                .set(k, format!("v{t}-{i}").into(), SetOptions::new())
                                .await;
                        }
                        1 | 2 => {
                            if let Ok(v) = c.get_text(k).await {
                                assert_ne!(v.as_deref(), Some("outside bytes"), "read the bait");
                            }
                        }
                        _ => {
                            let _ = c.delete(k).await;
                        }
                    }
                }
            }));
        }
        // Swap the fan-out directory for the link, again and again, while
        // the tasks run (each refusal makes it a directory again).
        for n in 0..40 {
            let aside = root.join(format!("aside-{n}"));
            if std::fs::rename(&fanout, &aside).is_ok() {
                let _ = std::os::unix::fs::symlink(&bait, &fanout);
            }
            tokio::task::yield_now().await;
        }
        for t in tasks {
            within("concurrent calls", t).await.expect("no panic");
        }
        w.assert_outside_untouched("a fan-out swapped under concurrent calls");
        // The cache still works on its real directories.
        let _ = std::fs::remove_file(&fanout);
        a.set(&keys[0], "last".into(), SetOptions::new())
            .await
            .expect("set after the swaps");
        assert_eq!(
            b.get_text(&keys[0]).await.expect("get").as_deref(),
            Some("last")
        );
        w.assert_outside_untouched("the end");
    });
}

// ------------------------------------------------------------ shared root

#[test]
fn a_root_shared_with_unrelated_files_leaves_them_alone() {
    runtime().block_on(async {
        let w = Work::new();
        let root = w.root();
        std::fs::create_dir_all(root.join("data")).expect("mkdir");
        std::fs::write(root.join("notes.txt"), b"mine").expect("write");
        std::fs::write(root.join("data/2026.csv"), b"x,y\n").expect("write");
        std::fs::write(root.join("data/.hidden"), b"h").expect("write");
        let c = open_capped(&root, 5).await;
        // Unrelated files inside the cache's own directories, with names the
        // cache never writes.
        let h = layout::key_hash("k0");
        let fan = layout::entries_dir(&root).join(&h[..2]);
        std::fs::write(fan.join("README.txt"), b"not an entry").expect("write");
        std::fs::write(layout::entries_dir(&root).join("NOTES"), b"n").expect("write");
        std::fs::write(layout::locks_dir(&root).join("someone-else.pid"), b"1").expect("write");
        let user_files = [
            root.join("notes.txt"),
            root.join("data/2026.csv"),
            root.join("data/.hidden"),
            fan.join("README.txt"),
            layout::entries_dir(&root).join("NOTES"),
            layout::locks_dir(&root).join("someone-else.pid"),
        ];
        let snap = |files: &[PathBuf]| -> Vec<Option<Vec<u8>>> {
            files.iter().map(|f| std::fs::read(f).ok()).collect()
        };
        let before = snap(&user_files);
        for i in 0..40 {
            c.set(
                &format!("k{i}"),
                "v".into(),
                SetOptions::new().ttl(Duration::from_millis(if i % 2 == 0 { 1 } else { 600_000 })),
            )
            .await
            .expect("set");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        c.purge_expired().await.expect("purge");
        let s = c.stats().await.expect("stats");
        assert!(s.evictions > 0, "eviction ran");
        assert_eq!(
            s.entries,
            c.list_all(None).count().await as u64,
            "stats count entries only"
        );
        c.recount().await.expect("recount");
        assert_eq!(c.stats().await.expect("stats").entries, s.entries);
        c.clear().await.expect("clear");
        drop(c);
        let c = DiskCache::open(&root).await.expect("reopen");
        assert_eq!(c.stats().await.expect("stats").entries, 0);
        assert_eq!(snap(&user_files), before, "unrelated files changed");
        w.assert_outside_untouched("shared root");
    });
    report_hostile(
        "shared root: 6 unrelated files (root, subdirectories, inside entries/ and locks/) untouched by sets, eviction, purge, recount, clear, reopen",
    );
}

// ------------------------------------------------------------ dirs and FIFOs

#[test]
fn stored_files_replaced_by_a_directory_or_a_fifo_neither_hang_nor_escape() {
    let mut cases = 0;
    Work::on_disk(async |w, root, c| {
        let key = "replaced";
        let entry = layout::entry_path(&root, key);
        let plant_dir = || {
            // A directory holding links out: removing it must not follow them.
            std::fs::create_dir(&entry).expect("mkdir");
            symlink(&w.outside().join("secret.txt"), &entry.join("f"));
            symlink(&w.outside().join("sub"), &entry.join("d"));
            std::fs::create_dir(entry.join("nested")).expect("mkdir");
            std::fs::write(entry.join("nested/x"), b"x").expect("write");
        };
        let plant_fifo = || mkfifo(&entry);
        for (what, plant) in [
            ("directory", &plant_dir as &dyn Fn()),
            ("FIFO", &plant_fifo as &dyn Fn()),
        ] {
            for op in [
                "get",
                "get_stream",
                "head",
                "list",
                "clear",
                "set",
                "delete",
            ] {
                c.set(key, "v".into(), SetOptions::new())
                    .await
                    .expect("set");
                std::fs::remove_file(&entry).expect("rm");
                plant();
                match op {
                    "get" | "get_stream" | "head" => {
                        assert!(read_is_corrupt(&c, op, key).await, "{what} / {op}")
                    }
                    "list" => {
                        assert_eq!(
                            within(op, c.keys(None)).await.expect("list"),
                            Vec::<String>::new()
                        )
                    }
                    "clear" => {
                        within(op, c.clear()).await.expect("clear");
                    }
                    "set" => {
                        // Either it replaces what stands there, or it fails
                        // naming the key; a read then clears the way.
                        if let Err(e) = within(op, c.set(key, "w".into(), SetOptions::new())).await
                        {
                            assert_eq!(e.key(), Some(key), "{what}: {e}");
                            let _ = within("get", c.get(key)).await;
                            within(op, c.set(key, "w".into(), SetOptions::new()))
                                .await
                                .expect("set after the read removed the intruder");
                        }
                        assert_eq!(c.get_text(key).await.expect("get").as_deref(), Some("w"));
                    }
                    _ => {
                        let _ = within(op, c.delete(key)).await;
                        let _ = within("get", c.get(key)).await;
                    }
                }
                if op != "set" {
                    assert!(
                        std::fs::symlink_metadata(&entry).is_err(),
                        "{what} after {op}: the intruder was removed"
                    );
                }
                w.assert_outside_untouched(&format!("{what} / {op}"));
                cases += 1;
            }
        }
        // A FIFO in the temp directory (swept at open) and in place of a lock.
        mkfifo(&layout::tmp_dir(&root).join("x.tmp"));
        drop(c);
        let c = within("open", DiskCache::open(&root)).await.expect("open");
        assert!(layout::files_in(&layout::tmp_dir(&root)).is_empty());
        mkfifo(&layout::lock_path(&root, key));
        let _ = within("set", c.set(key, "z".into(), SetOptions::new())).await;
        let _ = within("delete", c.delete(key)).await;
        cases += 2;
        w.assert_outside_untouched("FIFOs");
    });
    report_hostile(&format!(
        "{cases} directory/FIFO-in-place cases: no hang, no panic, outside untouched"
    ));
}

// ------------------------------------------------------------ crafted entries

/// An entry of format `layout` with valid checksums (of its header, of its
/// payload or its one block, of its trailer) whose trailer claims
/// impossible lengths.
fn crafted(key: &str, logical_len: u64, stored_len: u64, codec: Codec, layout: Layout) -> Vec<u8> {
    let header = Header {
        key: key.to_owned(),
        kind: Kind::Bytes,
        codec,
        created: std::time::SystemTime::now(),
        expires: None,
    };
    let mut out = header.encode_as(layout);
    let header_crc = u32::from_le_bytes(out[out.len() - 4..].try_into().expect("4"));
    out.extend_from_slice(b"payload");
    let payload_crc = match layout {
        Layout::Whole => etl_cache_core::backend::codec::crc32c(b"payload"),
        _ => {
            let block = etl_cache_core::backend::blocks::block_crc(header_crc, 0, b"payload");
            out.extend_from_slice(&block.to_le_bytes());
            etl_cache_core::backend::blocks::chain_block_crc(0, block)
        }
    };
    out.extend_from_slice(
        &Trailer {
            logical_len,
            stored_len,
            payload_crc,
            header_crc,
        }
        .encode(),
    );
    out
}

#[test]
fn crafted_entries_with_impossible_lengths_are_corrupt_not_a_panic() {
    let mut cases = 0;
    Work::on_disk(async |_w, root, c| {
        let key = "crafted";
        // Format 1 (as earlier versions wrote), and format 2 with the blocks
        // DiskCache writes and with the smallest.
        let layouts = [
            Layout::Whole,
            Layout::DEFAULT_BLOCKS,
            Layout::Blocks(etl_cache_core::backend::blocks::BlockSize::new(16).expect("16")),
        ];
        for (logical, stored, codec, layout) in [
            (u64::MAX, u64::MAX, Codec::None),
            (7, u64::MAX, Codec::None),
            (7, u64::MAX - 40, Codec::None),
            (u64::MAX, 7, Codec::Gzip),
            (1 << 62, 7, Codec::Zstd),
            (7, 8, Codec::None),
            (7, 6, Codec::None),
        ]
        .into_iter()
        .flat_map(|(l, s, c)| layouts.map(|layout| (l, s, c, layout)))
        {
            for op in ["get", "get_stream", "head", "list"] {
                c.set(key, "v".into(), SetOptions::new())
                    .await
                    .expect("set");
                let entry = layout::entry_path(&root, key);
                std::fs::write(&entry, crafted(key, logical, stored, codec, layout))
                    .expect("write");
                let r = match op {
                    "get" => within(op, c.get(key)).await.map(|_| ()),
                    "get_stream" => match within(op, c.get_stream(key, 4)).await {
                        Ok(Some(s)) => s
                            .try_collect::<Vec<Bytes>>()
                            .await
                            .map(|_| ())
                            .map_err(|e| etl_cache_core::stream_read_error(key, e)),
                        Ok(None) => Ok(()),
                        Err(e) => Err(e),
                    },
                    // head reads the framing only: a compressed entry's
                    // logical length shows as wrong when it is read.
                    "head" => match within(op, c.head(key)).await {
                        Ok(Some(_)) if codec != Codec::None => {
                            within("get", c.get(key)).await.map(|_| ())
                        }
                        r => r.map(|_| ()),
                    },
                    _ => {
                        let keys = within(op, c.keys(None)).await.expect("list");
                        if codec == Codec::None {
                            assert!(keys.is_empty(), "a crafted entry is not listed");
                            assert!(!entry.exists(), "the listing removed it");
                            Err(Error::Corrupt {
                                key: key.into(),
                                reason: "skipped by the listing".into(),
                            })
                        } else {
                            within("get", c.get(key)).await.map(|_| ())
                        }
                    }
                };
                assert!(
                    matches!(r, Err(Error::Corrupt { .. })),
                    "logical {logical} stored {stored} {codec:?} {layout:?} via {op}: {r:?}"
                );
                cases += 1;
            }
        }
    });
    report_hostile(&format!(
        "{cases} crafted entries with impossible lengths: Corrupt, no panic"
    ));
}

// ------------------------------------------------------------ ObjectCache on local files

/// Runs a suite's body. When it fails (a hang reported by [`within`], say),
/// a thread stuck in a blocking call is left behind rather than waited for,
/// so the failure is reported instead of hanging the runtime's shutdown.
fn block_on_abandoning(rt: tokio::runtime::Runtime, body: impl Future<Output = ()>) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(body)));
    rt.shutdown_background();
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

/// An ObjectCache over a LocalFileSystem rooted at `root`, under the
/// prefix `cache`.
fn local_object_cache(root: &Path) -> ObjectCache {
    std::fs::create_dir_all(root).expect("mkdir");
    let store =
        object_store::local::LocalFileSystem::new_with_prefix(root).expect("LocalFileSystem");
    ObjectCache::new(Arc::new(store), "cache").expect("ObjectCache")
}

/// The file of `key`'s entry in a cache made by [`local_object_cache`].
fn object_file(root: &Path, c: &ObjectCache, key: &str) -> PathBuf {
    root.join(c.object_path(key).expect("valid key").as_ref())
}

/// `r` is the error for something that is not an entry, naming the key and
/// the object; returns its text.
fn assert_not_an_entry<T: std::fmt::Debug>(
    r: etl_cache_core::Result<T>,
    key: &str,
    what: &str,
) -> String {
    let e = match r {
        Err(e) => e,
        Ok(v) => panic!("{what}: want NotAnEntry, got Ok({v:?})"),
    };
    let o = etl_cache_object::ObjectError::find(&e)
        .unwrap_or_else(|| panic!("{what}: want an ObjectError, got {e:?}"));
    assert_eq!(
        o.kind(),
        etl_cache_object::ObjectErrorKind::NotAnEntry,
        "{what}: {o}"
    );
    assert_eq!(e.key(), Some(key), "{what}: {e}");
    assert!(!o.path().is_empty(), "{what}: names the object: {o}");
    o.to_string()
}

fn file_type(p: &Path) -> Option<std::fs::FileType> {
    std::fs::symlink_metadata(p).ok().map(|m| m.file_type())
}

/// What is planted at an entry's path of an ObjectCache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intruder {
    /// A link to a valid entry of the same key outside the root.
    LinkToEntry,
    /// A link to a directory outside the root holding files named like
    /// entries.
    LinkToDir,
    /// A directory holding links out and a file named like an entry.
    Dir,
    Fifo,
}

const OBJECT_OPS: [&str; 10] = [
    "get",
    "get_entry",
    "get_stream",
    "head",
    "delete",
    "get_or_insert_with",
    "list",
    "purge",
    "clear",
    "set",
];

/// Runs `op` on `key` whose entry is replaced by `intruder`; checks the
/// answer. Returns whether the intruder is still expected in place.
async fn object_op_on_intruder(
    c: &ObjectCache,
    key: &str,
    intruder: Intruder,
    op: &str,
    what: &str,
) -> bool {
    match op {
        "get" => {
            assert_not_an_entry(within(op, c.get(key)).await, key, what);
        }
        "get_entry" => {
            assert_not_an_entry(within(op, c.get_entry(key)).await, key, what);
        }
        "get_stream" => {
            let r = within(op, c.get_stream(key, 10)).await;
            assert_not_an_entry(r.map(|s| s.is_some()), key, what);
        }
        "head" => {
            assert_not_an_entry(within(op, c.head(key)).await, key, what);
        }
        "delete" => {
            assert_not_an_entry(within(op, c.delete(key)).await, key, what);
        }
        "get_or_insert_with" => {
            let r = within(
                op,
                c.get_or_insert_with(key, SetOptions::new(), || async { "x".into() }),
            )
            .await;
            assert_not_an_entry(r, key, what);
        }
        "list" => {
            assert_eq!(
                within(op, c.keys(None)).await.expect("list"),
                vec!["bystander".to_string()],
                "{what}: only the real entry is listed"
            );
        }
        "purge" => {
            assert_eq!(within(op, c.purge_expired()).await.expect("purge"), 0);
        }
        "clear" => {
            assert_eq!(
                within(op, c.clear()).await.expect("clear"),
                1,
                "{what}: clear removes the real entry only"
            );
            c.set("bystander", "here".into(), SetOptions::new())
                .await
                .expect("set");
        }
        _ => {
            let r = within(op, c.set(key, "new".into(), SetOptions::new())).await;
            if intruder == Intruder::Dir {
                // A directory cannot be replaced by a file: the set fails
                // naming the key, and the directory stays.
                let e = r.expect_err("a set onto a directory");
                assert_eq!(e.key(), Some(key), "{what}: {e}");
            } else {
                // A link or FIFO is replaced itself; what a link points to
                // is untouched.
                r.unwrap_or_else(|e| panic!("{what}: set over the intruder: {e}"));
                assert_eq!(
                    within("get", c.get_text(key))
                        .await
                        .expect("get")
                        .as_deref(),
                    Some("new"),
                    "{what}"
                );
                return false;
            }
        }
    }
    true
}

#[test]
fn object_cache_on_local_files_never_follows_links_nor_blocks() {
    let rt = runtime();
    let mut cases = 0;
    block_on_abandoning(rt, async {
        let w = Work::new();
        let root = w.root();
        let c = local_object_cache(&root);
        let key = "planted/entry";
        // Outside: a valid entry of `key` written by another ObjectCache, and
        // a directory holding a valid entry of `k/victim` and a file named
        // like an entry.
        let other = w.outside().join("other");
        let o = local_object_cache(&other);
        o.set(key, "outside bytes".into(), SetOptions::new())
            .await
            .expect("set");
        o.set("k/victim", "outside victim".into(), SetOptions::new())
            .await
            .expect("set");
        let planted_entry = object_file(&other, &o, key);
        let bait_dir = object_file(&other, &o, "k/victim")
            .parent()
            .expect("parent")
            .to_path_buf();
        std::fs::write(bait_dir.join("plain%"), b"not an entry").expect("write");
        drop(o);
        let w = Work {
            before: layout::snapshot(&w.outside()),
            ..w
        };
        c.set("bystander", "here".into(), SetOptions::new())
            .await
            .expect("set");

        // 1. Links, a directory and a FIFO at an entry's path, under every
        //    operation.
        let entry = object_file(&root, &c, key);
        for intruder in [
            Intruder::LinkToEntry,
            Intruder::LinkToDir,
            Intruder::Dir,
            Intruder::Fifo,
        ] {
            for op in OBJECT_OPS {
                c.set(key, "mine".into(), SetOptions::new())
                    .await
                    .expect("set");
                std::fs::remove_file(&entry).expect("rm");
                match intruder {
                    Intruder::LinkToEntry => symlink(&planted_entry, &entry),
                    Intruder::LinkToDir => symlink(&bait_dir, &entry),
                    Intruder::Dir => {
                        std::fs::create_dir(&entry).expect("mkdir");
                        symlink(&w.outside().join("secret.txt"), &entry.join("f%"));
                        symlink(&w.outside().join("sub"), &entry.join("d"));
                        std::fs::write(entry.join("x%"), b"x").expect("write");
                    }
                    Intruder::Fifo => mkfifo(&entry),
                }
                let planted = file_type(&entry).expect("planted");
                let what = format!("ObjectCache: {intruder:?} / {op}");
                let kept = object_op_on_intruder(&c, key, intruder, op, &what).await;
                if kept {
                    assert_eq!(
                        file_type(&entry),
                        Some(planted),
                        "{what}: the intruder is left in place"
                    );
                } else {
                    assert!(
                        file_type(&entry).is_some_and(|t| t.is_file()),
                        "{what}: replaced by the entry"
                    );
                }
                if intruder == Intruder::Dir {
                    let _ = std::fs::remove_dir_all(&entry);
                } else {
                    let _ = std::fs::remove_file(&entry);
                }
                w.assert_outside_untouched(&what);
                cases += 1;
            }
        }

        // 2. A link to the directory outside at a folder of the keys: no
        //    operation goes through it.
        let folder = object_file(&root, &c, "k/x")
            .parent()
            .expect("parent")
            .to_path_buf();
        symlink(&bait_dir, &folder);
        let victim = "k/victim";
        for op in OBJECT_OPS {
            let what = format!("ObjectCache: linked folder / {op}");
            match op {
                "set" => {
                    let r = within(op, c.set("k/new", "x".into(), SetOptions::new())).await;
                    assert_not_an_entry(r, "k/new", &what);
                    let r = within(
                        "set_stream",
                        c.set_stream(
                            "k/new",
                            futures::stream::iter([Ok(Bytes::from_static(b"x"))]).boxed(),
                            SetOptions::new(),
                        ),
                    )
                    .await;
                    assert_not_an_entry(r, "k/new", &what);
                }
                _ => {
                    object_op_on_intruder(&c, victim, Intruder::LinkToDir, op, &what).await;
                }
            }
            assert!(
                file_type(&folder).is_some_and(|t| t.is_symlink()),
                "{what}: the link is left in place"
            );
            w.assert_outside_untouched(&what);
            cases += 1;
        }
        std::fs::remove_file(&folder).expect("rm");

        // 3. A FIFO in place of a key's lease: single flight fails naming
        //    the key, without blocking.
        let lease = root
            .join("cache/.etl-cache/leases")
            .join(layout::key_hash("computed"));
        std::fs::create_dir_all(lease.parent().expect("parent")).expect("mkdir");
        mkfifo(&lease);
        let r = within(
            "get_or_insert_with",
            c.get_or_insert_with("computed", SetOptions::new(), || async { "x".into() }),
        )
        .await;
        let text = assert_not_an_entry(r, "computed", "a FIFO lease");
        assert!(text.contains("FIFO"), "{text}");
        std::fs::remove_file(&lease).expect("rm");
        assert_eq!(
            within(
                "get_or_insert_with",
                c.get_or_insert_with("computed", SetOptions::new(), || async { "x".into() }),
            )
            .await
            .expect("once the FIFO is gone"),
            Value::Text("x".into())
        );
        cases += 1;
        assert_eq!(
            c.get_text("bystander").await.expect("get").as_deref(),
            Some("here")
        );
        w.assert_outside_untouched("ObjectCache links, directories and FIFOs");
    });
    report_hostile(&format!(
        "ObjectCache(LocalFileSystem): {cases} link/directory/FIFO cases (link to an entry outside, link to a directory outside at an entry and at a folder, directory, FIFO, FIFO lease; {} operations each): NotAnEntry naming the key, intruder kept, no hang, outside untouched",
        OBJECT_OPS.len()
    ));
}

#[test]
fn object_cache_clear_keeps_objects_it_did_not_write() {
    let rt = runtime();
    let mut kept = 0;
    let mut entries = 0;
    block_on_abandoning(rt, async {
        let w = Work::new();
        let root = w.root();
        let c = local_object_cache(&root);
        // Files under the prefix with names the cache gives entries, but
        // not written by it: small, large, in folders, in the folder of
        // entries stored by hash, and an entry whose magic bytes are gone.
        let mut foreign: Vec<(PathBuf, Vec<u8>)> = vec![
            (object_file(&root, &c, "notes.txt"), b"my notes".to_vec()),
            (
                object_file(&root, &c, "data/2026.csv"),
                b"x,y\n1,2\n".to_vec(),
            ),
            (object_file(&root, &c, "ab"), b"ab".to_vec()),
            (
                object_file(&root, &c, "big"),
                (0..200_000u32).map(|i| (i % 251) as u8).collect(),
            ),
            (
                root.join("cache/.etl-cache/long").join("ab".repeat(32)),
                b"not an entry".to_vec(),
            ),
        ];
        c.set("demagicked", "value".into(), SetOptions::new())
            .await
            .expect("set");
        let demagicked = object_file(&root, &c, "demagicked");
        let mut bytes = std::fs::read(&demagicked).expect("read");
        bytes[0] ^= 0x5A;
        foreign.push((demagicked, bytes));
        for (path, bytes) in &foreign {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, bytes).expect("write");
        }
        for i in 0..50 {
            c.set(
                &format!("e/{i}"),
                format!("value {i}").into(),
                SetOptions::new().compress(i % 2 == 0),
            )
            .await
            .expect("set");
            entries += 1;
        }
        c.set(&"z".repeat(600), "long".into(), SetOptions::new())
            .await
            .expect("set");
        entries += 1;
        // Reads report a foreign object and keep it.
        assert_not_an_entry(
            within("get", c.get("notes.txt")).await,
            "notes.txt",
            "foreign",
        );
        assert_not_an_entry(
            within("get", c.get("demagicked")).await,
            "demagicked",
            "foreign",
        );
        let listed = within("list", c.keys(None)).await.expect("list");
        assert_eq!(listed.len(), entries, "only the entries are listed");
        assert_eq!(
            within("clear", c.clear()).await.expect("clear"),
            entries as u64,
            "clear removes the entries only"
        );
        assert!(within("list", c.keys(None)).await.expect("list").is_empty());
        for (path, bytes) in &foreign {
            assert_eq!(
                std::fs::read(path).ok().as_ref(),
                Some(bytes),
                "{path:?}: a foreign object changed or went"
            );
            kept += 1;
        }
        assert_eq!(within("clear", c.clear()).await.expect("clear"), 0);
        w.assert_outside_untouched("ObjectCache clear");
    });
    report_hostile(&format!(
        "ObjectCache(LocalFileSystem): clear removed {entries} entries and kept {kept} foreign objects with entry names (small, large, in folders, by-hash folder, damaged magic)"
    ));
}
