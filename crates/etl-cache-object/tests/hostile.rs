//! Hostile contents of the store: symbolic links, FIFOs and directories at
//! an entry's path in a local directory, a file cut short while it is
//! streamed, bodies that send nothing but empty chunks, and objects under the
//! prefix that the cache did not write.
//!
//! Nothing may hang (every test runs under a deadline), be read through a
//! link, touch anything outside the cache's directory, or be deleted by
//! `clear` unless the cache wrote it.

#[path = "support/forward.rs"]
#[macro_use]
mod forward;
#[path = "support/on_get.rs"]
mod on_get;

use std::fmt::Debug;
use std::future::Future;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etl_cache_core::testing::{noise_bytes, sample_bytes};
use etl_cache_core::{Cache, CacheExt, Compression, SetOptions, Value};
use etl_cache_object::{ObjectCache, ObjectError, ObjectErrorKind};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, GetResult, GetResultPayload, ObjectStore, ObjectStoreExt,
};
use on_get::{GetHook, OnGet};
use sha2::Digest;

/// Runs a test body on its own runtime under a deadline. A hang fails the
/// test: the body runs as a task, so even one that never yields (a stream
/// that is always ready) cannot hold the deadline back, and a thread stuck
/// in a blocking call is left behind, not waited for.
fn run(limit_secs: u64, body: impl Future<Output = ()> + Send + 'static) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let done = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(limit_secs), tokio::spawn(body)).await
    });
    rt.shutdown_background();
    match done {
        Err(_) => panic!("the test hung (no end within {limit_secs} s)"),
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(r) => r.expect("the test task"),
    }
}

/// Checks that `r` is a `NotAnEntry` error naming `key`; returns its text.
fn not_an_entry<T: Debug>(r: etl_cache_core::Result<T>, key: &str, what: &str) -> String {
    let e = match r {
        Err(e) => e,
        Ok(v) => panic!("{what}: want NotAnEntry, got Ok({v:?})"),
    };
    let o = ObjectError::find(&e).unwrap_or_else(|| panic!("{what}: not an ObjectError: {e:?}"));
    assert_eq!(o.kind(), ObjectErrorKind::NotAnEntry, "{what}: {o}");
    assert_eq!(o.key(), key, "{what}: {o}");
    assert_eq!(e.key(), Some(key), "{what}: {e}");
    o.to_string()
}

/// Every file, directory, link and FIFO under `dir`, with contents, read
/// without following links.
fn snapshot(dir: &FsPath) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.expect("dir entry").path();
            let m = std::fs::symlink_metadata(&p).expect("stat");
            let what = if m.file_type().is_symlink() {
                format!("link to {:?}", std::fs::read_link(&p).expect("readlink"))
            } else if m.is_dir() {
                todo.push(p.clone());
                "dir".into()
            } else if m.is_file() {
                format!("{:?}", std::fs::read(&p).expect("read"))
            } else {
                "special".into()
            };
            out.push((p, what));
        }
    }
    out.sort();
    out
}

fn symlink(target: &FsPath, link: &FsPath) {
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

fn mkfifo(path: &FsPath) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "this test needs mkfifo(1) to make a FIFO at {path:?}");
}

fn is_fifo(path: &FsPath) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

fn is_link(path: &FsPath) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// A cache on a local directory, with a directory beside it that must
/// never change.
struct Local {
    dir: tempfile::TempDir,
    /// The directory the store keeps its objects in.
    store_root: PathBuf,
    cache: ObjectCache,
}

impl Local {
    /// `LocalFileSystem` injected, the cache under the prefix `cache`.
    fn injected() -> Local {
        let dir = tempfile::tempdir().expect("tempdir");
        let store_root = dir.path().join("root");
        std::fs::create_dir_all(&store_root).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("outside")).expect("mkdir");
        let store = LocalFileSystem::new_with_prefix(&store_root).expect("LocalFileSystem");
        let cache = ObjectCache::new(Arc::new(store), "cache").expect("ObjectCache");
        Local {
            dir,
            store_root,
            cache,
        }
    }

    /// Opened with `ObjectCache::local_dir`.
    fn from_dir() -> Local {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("outside")).expect("mkdir");
        let store_root = dir.path().join("root/cache");
        let cache = ObjectCache::local_dir(&store_root).expect("ObjectCache");
        Local {
            dir,
            store_root,
            cache,
        }
    }

    fn both() -> [(&'static str, Local); 2] {
        [
            ("injected LocalFileSystem", Local::injected()),
            ("local_dir", Local::from_dir()),
        ]
    }

    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    /// The file of `key`'s entry.
    fn file(&self, key: &str) -> PathBuf {
        let p = self.cache.object_path(key).expect("valid key");
        self.store_root.join(p.as_ref())
    }

    /// Writes `text` at `key`, then removes its entry file so something
    /// else can be put in its place; returns the file's path.
    async fn vacated_entry(&self, key: &str, text: &str) -> PathBuf {
        self.cache
            .set(key, text.into(), SetOptions::new())
            .await
            .expect("set");
        let file = self.file(key);
        std::fs::remove_file(&file).expect("rm");
        file
    }

    /// The file of `key`'s lease.
    fn lease_file(&self, key: &str) -> PathBuf {
        let hash: String = sha2::Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let entry = self.cache.object_path("x").expect("valid key");
        let prefix = entry.as_ref().strip_suffix("x%").expect("a leaf name");
        self.store_root
            .join(prefix)
            .join(".etl-cache/leases")
            .join(hash)
    }

    /// A valid entry of `key` with `text`, written by another cache into
    /// `outside/other`; returns the file.
    async fn entry_elsewhere(&self, key: &str, text: &str) -> PathBuf {
        let root = self.outside().join("other");
        std::fs::create_dir_all(&root).expect("mkdir");
        let store = LocalFileSystem::new_with_prefix(&root).expect("LocalFileSystem");
        let other = ObjectCache::new(Arc::new(store), "").expect("ObjectCache");
        other
            .set(key, text.into(), SetOptions::new())
            .await
            .expect("set elsewhere");
        root.join(other.object_path(key).expect("valid key").as_ref())
    }
}

// ------------------------------------------------------------ links

#[test]
fn a_link_at_an_entry_is_not_read_through() {
    run(60, async {
        for (what, l) in Local::both() {
            let key = "planted";
            let target = l.entry_elsewhere(key, "outside bytes").await;
            let c = &l.cache;
            let file = l.vacated_entry(key, "mine").await;
            symlink(&target, &file);
            let before = snapshot(&l.outside());

            let text = not_an_entry(c.get(key).await, key, what);
            assert!(text.contains("symbolic link"), "{what}: {text}");
            not_an_entry(c.get_entry(key).await, key, what);
            not_an_entry(c.get_stream(key, 10).await.map(|s| s.is_some()), key, what);
            not_an_entry(c.head(key).await, key, what);
            assert!(c.keys(None).await.expect("keys").is_empty(), "{what}");
            assert_eq!(c.list_all(None).count().await, 0, "{what}");
            assert_eq!(c.purge_expired().await.expect("purge"), 0, "{what}");
            assert_eq!(c.clear().await.expect("clear"), 0, "{what}");
            assert!(is_link(&file), "{what}: the link is kept");
            not_an_entry(c.delete(key).await, key, what);
            assert!(is_link(&file), "{what}: delete keeps the link");
            assert_eq!(snapshot(&l.outside()), before, "{what}: outside changed");

            // A write replaces the link itself, not what it points to.
            c.set(key, "new".into(), SetOptions::new())
                .await
                .expect("set over the link");
            assert!(!is_link(&file), "{what}");
            assert_eq!(
                c.get_text(key).await.expect("get").as_deref(),
                Some("new"),
                "{what}"
            );
            assert_eq!(snapshot(&l.outside()), before, "{what}: outside changed");
        }
    });
}

#[test]
fn a_linked_directory_is_never_entered() {
    run(60, async {
        for (what, l) in Local::both() {
            let c = &l.cache;
            // Outside: a valid entry of `a/victim` and a file named like an
            // entry, in a directory that a link in the cache points to.
            let victim = l.entry_elsewhere("a/victim", "outside bytes").await;
            let out_dir = victim.parent().expect("parent").to_path_buf();
            std::fs::write(out_dir.join("notes%"), b"not an entry").expect("write");
            c.set("b", "mine".into(), SetOptions::new())
                .await
                .expect("set");
            let link = l.file("b").with_file_name("a");
            symlink(&out_dir, &link);
            let before = snapshot(&l.outside());

            assert_eq!(
                c.keys(None).await.expect("keys"),
                vec!["b".to_string()],
                "{what}"
            );
            assert!(c.keys(Some("a/")).await.expect("keys").is_empty(), "{what}");
            let text = not_an_entry(c.get("a/victim").await, "a/victim", what);
            assert!(text.contains("folder \"a\""), "{what}: {text}");
            not_an_entry(
                c.get_stream("a/victim", 10).await.map(|s| s.is_some()),
                "a/victim",
                what,
            );
            not_an_entry(c.head("a/victim").await, "a/victim", what);
            not_an_entry(c.delete("a/victim").await, "a/victim", what);
            // Writes through the link are refused.
            not_an_entry(
                c.set("a/new", "x".into(), SetOptions::new()).await,
                "a/new",
                what,
            );
            not_an_entry(
                c.set_stream(
                    "a/new",
                    futures::stream::iter([Ok(Bytes::from_static(b"x"))]).boxed(),
                    SetOptions::new(),
                )
                .await,
                "a/new",
                what,
            );
            assert!(
                c.get_or_insert_with("a/new", SetOptions::new(), || async { "x".into() })
                    .await
                    .is_err(),
                "{what}"
            );
            assert_eq!(c.purge_expired().await.expect("purge"), 0, "{what}");
            assert_eq!(c.clear().await.expect("clear"), 1, "{what}: b only");
            assert!(is_link(&link), "{what}: the link is kept");
            assert_eq!(snapshot(&l.outside()), before, "{what}: outside changed");
        }
    });
}

// ------------------------------------------------------------ FIFOs, dirs

#[test]
fn a_fifo_at_an_entry_neither_blocks_nor_is_removed() {
    run(60, async {
        for (what, l) in Local::both() {
            let c = &l.cache;
            let key = "piped";
            let file = l.vacated_entry(key, "v").await;
            mkfifo(&file);
            let text = not_an_entry(c.get(key).await, key, what);
            assert!(text.contains("FIFO"), "{what}: {text}");
            not_an_entry(c.get_entry(key).await, key, what);
            not_an_entry(c.get_stream(key, 10).await.map(|s| s.is_some()), key, what);
            not_an_entry(c.head(key).await, key, what);
            not_an_entry(c.delete(key).await, key, what);
            assert!(
                c.get_or_insert_with(key, SetOptions::new(), || async { "x".into() })
                    .await
                    .is_err(),
                "{what}"
            );
            assert!(c.keys(None).await.expect("keys").is_empty(), "{what}");
            assert_eq!(c.purge_expired().await.expect("purge"), 0, "{what}");
            assert_eq!(c.clear().await.expect("clear"), 0, "{what}");
            assert!(is_fifo(&file), "{what}: the FIFO is kept");
            c.set(key, "w".into(), SetOptions::new())
                .await
                .expect("a set replaces the FIFO");
            assert_eq!(
                c.get_text(key).await.expect("get").as_deref(),
                Some("w"),
                "{what}"
            );

            // A FIFO in place of a key's lease: single flight fails, naming
            // the key, instead of blocking.
            let lease = l.lease_file("computed");
            std::fs::create_dir_all(lease.parent().expect("parent")).expect("mkdir");
            mkfifo(&lease);
            let r = c
                .get_or_insert_with("computed", SetOptions::new(), || async { "x".into() })
                .await;
            let text = not_an_entry(r, "computed", what);
            assert!(text.contains("FIFO"), "{what}: {text}");
            assert!(is_fifo(&lease), "{what}");
        }
    });
}

#[test]
fn a_directory_at_an_entry_is_not_an_entry() {
    run(60, async {
        for (what, l) in Local::both() {
            let c = &l.cache;
            let key = "dir";
            let file = l.vacated_entry(key, "v").await;
            std::fs::create_dir(&file).expect("mkdir");
            std::fs::write(file.join("x%"), b"inside").expect("write");
            symlink(&l.outside(), &file.join("out"));
            let before = snapshot(&l.outside());
            let text = not_an_entry(c.get(key).await, key, what);
            assert!(text.contains("directory"), "{what}: {text}");
            not_an_entry(c.get_stream(key, 10).await.map(|s| s.is_some()), key, what);
            not_an_entry(c.head(key).await, key, what);
            not_an_entry(c.delete(key).await, key, what);
            assert!(c.keys(None).await.expect("keys").is_empty(), "{what}");
            assert_eq!(c.purge_expired().await.expect("purge"), 0, "{what}");
            assert_eq!(c.clear().await.expect("clear"), 0, "{what}");
            // A set cannot replace a directory: it fails naming the key.
            let e = c
                .set(key, "w".into(), SetOptions::new())
                .await
                .expect_err("a set onto a directory");
            assert_eq!(e.key(), Some(key), "{what}: {e}");
            assert_eq!(
                std::fs::read(file.join("x%")).expect("kept"),
                b"inside",
                "{what}"
            );
            assert!(is_link(&file.join("out")), "{what}");
            assert_eq!(snapshot(&l.outside()), before, "{what}: outside changed");
        }
    });
}

// ------------------------------------------------------------ cut files

#[test]
fn a_file_cut_while_it_is_streamed_ends_with_an_error() {
    run(120, async {
        let l = Local::injected();
        let c = &l.cache;
        let len = 3 << 20;
        for (i, compression) in [Compression::NONE, Compression::gzip(), Compression::zstd()]
            .into_iter()
            .enumerate()
        {
            for cut_to in [len as u64 / 2, 40_000] {
                let key = format!("cut/{i}/{cut_to}");
                let data = noise_bytes(len, 7 + i as u64);
                c.set(
                    &key,
                    Value::Bytes(data.into()),
                    SetOptions::new().compression(compression),
                )
                .await
                .expect("set");
                let file = l.file(&key);
                let mut s = c
                    .get_stream(&key, 16 * 1024)
                    .await
                    .expect("get_stream")
                    .expect("present")
                    .into_parts()
                    .1;
                let first = s.next().await.expect("a chunk").expect("the first chunk");
                let mut got = first.len() as u64;
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&file)
                    .expect("open")
                    .set_len(cut_to)
                    .expect("cut the file");
                let e = loop {
                    match tokio::time::timeout(Duration::from_secs(20), s.next()).await {
                        Err(_) => panic!("{compression:?} cut to {cut_to}: the stream hangs"),
                        Ok(Some(Ok(b))) => got += b.len() as u64,
                        Ok(Some(Err(e))) => break e,
                        Ok(None) => panic!(
                            "{compression:?} cut to {cut_to}: the stream completed ({got} bytes)"
                        ),
                    }
                };
                assert!(got < len as u64, "never the whole value");
                let err = etl_cache_core::stream_read_error(&key, e);
                assert_eq!(err.key(), Some(key.as_str()), "names the key: {err}");
                match ObjectError::find(&err) {
                    Some(o) => assert!(
                        matches!(
                            o.kind(),
                            ObjectErrorKind::Truncated | ObjectErrorKind::Changed
                        ),
                        "{compression:?} cut to {cut_to}: {o}"
                    ),
                    None => assert!(
                        matches!(err, etl_cache_core::Error::Corrupt { .. }),
                        "{compression:?} cut to {cut_to}: {err:?}"
                    ),
                }
            }
        }
    });
}

// ------------------------------------------------------------ a test store

/// The reads of an InMemory: bodies that stop short and then send empty
/// chunks without end, and slow, counted ranged reads of first bytes.
#[derive(Debug, Default)]
struct Wrapped {
    /// How many more whole-object bodies to cut (`usize::MAX`: all, and
    /// every resumed body too).
    cut: AtomicUsize,
    /// Ranged gets of an object's first bytes (at most 64) seen, in flight,
    /// and the most in flight at once.
    starts: AtomicUsize,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

impl Wrapped {
    /// A new InMemory whose reads a fresh `Wrapped` answers.
    fn store() -> Arc<OnGet<Wrapped>> {
        OnGet::new(Arc::new(InMemory::new()), Wrapped::default())
    }
}

/// A body that sends its first `keep` bytes, then empty chunks forever.
fn stutter(all: Bytes, keep: usize) -> BoxStream<'static, object_store::Result<Bytes>> {
    let first = all.slice(..keep.min(all.len()));
    futures::stream::once(async move { Ok(first) })
        .chain(futures::stream::repeat_with(|| Ok(Bytes::new())))
        .boxed()
}

#[async_trait]
impl GetHook for Wrapped {
    async fn get_opts(
        &self,
        inner: &dyn ObjectStore,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let first_bytes = matches!(
            options.range,
            Some(GetRange::Bounded(Range { start: 0, end })) if end <= 64
        );
        if first_bytes {
            self.starts.fetch_add(1, Ordering::SeqCst);
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        let whole = options.range.is_none() && !options.head;
        let resumed = matches!(
            options.range,
            Some(GetRange::Bounded(Range { start, end })) if start > 0 && end - start > 64
        );
        let mut r = inner.get_opts(location, options).await?;
        let cut = self.cut.load(Ordering::SeqCst);
        let cut_this = (whole && cut > 0) || (resumed && cut == usize::MAX);
        if cut_this {
            if cut != usize::MAX {
                self.cut.fetch_sub(1, Ordering::SeqCst);
            }
            let all = match r.payload {
                GetResultPayload::Stream(s) => {
                    let parts: Vec<Bytes> = s.try_collect().await?;
                    Bytes::from(parts.concat())
                }
                GetResultPayload::File(..) => unreachable!("InMemory streams"),
            };
            r.payload = GetResultPayload::Stream(stutter(all, 1000));
        }
        Ok(r)
    }
}

fn wrapped_cache(store: &Arc<OnGet<Wrapped>>, resume_attempts: u32) -> ObjectCache {
    ObjectCache::builder()
        .store(store.clone())
        .prefix("etl/cache")
        .resume_attempts(resume_attempts)
        .build()
        .expect("ObjectCache")
}

async fn drain(c: &ObjectCache, key: &str) -> (Vec<u8>, Option<etl_cache_core::Error>) {
    let mut s = c
        .get_stream(key, 4096)
        .await
        .expect("get_stream")
        .expect("present")
        .into_parts()
        .1;
    let mut got = Vec::new();
    while let Some(item) = s.next().await {
        match item {
            Ok(b) => got.extend_from_slice(&b),
            Err(e) => return (got, Some(etl_cache_core::stream_read_error(key, e))),
        }
    }
    (got, None)
}

#[test]
fn a_body_of_empty_chunks_is_resumed_or_fails() {
    run(60, async {
        let store = Wrapped::store();
        let c = wrapped_cache(&store, 2);
        let data = sample_bytes(300_000, 3);
        for compression in [Compression::NONE, Compression::zstd()] {
            let key = format!("stutter/{compression:?}");
            c.set(
                &key,
                Value::Bytes(data.clone().into()),
                SetOptions::new().compression(compression),
            )
            .await
            .expect("set");

            // One body stops short: the read resumes where it stopped.
            store.cut.store(1, Ordering::SeqCst);
            let (got, err) = drain(&c, &key).await;
            assert!(err.is_none(), "{compression:?}: {err:?}");
            assert_eq!(got, data, "{compression:?}: resumed to the exact bytes");
            assert_eq!(store.cut.load(Ordering::SeqCst), 0);

            // Every body stops short: the read fails, naming the key.
            store.cut.store(usize::MAX, Ordering::SeqCst);
            let (got, err) = drain(&c, &key).await;
            store.cut.store(0, Ordering::SeqCst);
            let err = err.unwrap_or_else(|| panic!("{compression:?}: the read completed"));
            assert!(got.len() < data.len(), "{compression:?}: never short data");
            assert_eq!(err.key(), Some(key.as_str()), "{err}");
            let o = ObjectError::find(&err).unwrap_or_else(|| panic!("{err:?}"));
            assert_eq!(o.kind(), ObjectErrorKind::Truncated, "{o}");

            // The entry is intact.
            assert_eq!(
                c.get(&key).await.expect("get"),
                Some(Value::Bytes(data.clone().into()))
            );
        }
    });
}

// ------------------------------------------------------------ clear

/// Objects the cache did not write, under its prefix, with names the cache
/// gives entries (plain names, and the folder of entries stored by hash).
fn foreign_names(file_store: bool) -> Vec<String> {
    let leaf = if file_store { "%" } else { "" };
    vec![
        format!("report.csv{leaf}"),
        format!("sub/data.json{leaf}"),
        format!("tiny{leaf}"),
        format!("big{leaf}"),
        format!(".etl-cache/long/{}", "ab".repeat(32)),
    ]
}

fn foreign_bytes(name: &str) -> Bytes {
    match name {
        n if n.starts_with("tiny") => Bytes::from_static(b"ab"),
        n if n.starts_with("big") => Bytes::from(sample_bytes(100_000, 9)),
        _ => Bytes::from_static(b"a,b\n1,2\n"),
    }
}

/// Sets entries (one stored by hash, one damaged with its magic intact),
/// puts foreign objects, clears; only the entries go.
async fn clear_case(c: &ObjectCache, file_store: bool, what: &str) {
    let store = c.store().clone();
    let prefix = c.prefix().to_owned();
    let at = |name: &str| {
        Path::parse(if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        })
        .expect("path")
    };
    let mut entries = 0u64;
    for i in 0..40 {
        let opts = SetOptions::new().compression(if i % 2 == 0 {
            Compression::NONE
        } else {
            Compression::gzip()
        });
        c.set(&format!("k/{i}"), format!("value {i}").into(), opts)
            .await
            .expect("set");
        entries += 1;
    }
    let long = "y".repeat(1000);
    c.set(&long, "long".into(), SetOptions::new())
        .await
        .expect("set");
    entries += 1;
    // An entry whose payload is damaged is still the cache's own.
    c.set("damaged", "some payload".into(), SetOptions::new())
        .await
        .expect("set");
    let p = c.object_path("damaged").expect("key");
    let mut b = store
        .get(&p)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes")
        .to_vec();
    let n = b.len();
    b[n - 40] ^= 0xFF;
    store.put(&p, b.into()).await.expect("put");
    entries += 1;
    // Foreign objects, and one outside the prefix.
    for name in foreign_names(file_store) {
        store
            .put(&at(&name), foreign_bytes(&name).into())
            .await
            .expect("put foreign");
    }
    let beside = Path::parse("beside/report.csv").expect("path");
    store
        .put(&beside, Bytes::from_static(b"x").into())
        .await
        .expect("put");

    // A read reports a foreign object and keeps it.
    let foreign_key = "report.csv";
    not_an_entry(c.get(foreign_key).await, foreign_key, what);

    assert_eq!(c.clear().await.expect("clear"), entries, "{what}");
    assert!(c.keys(None).await.expect("keys").is_empty(), "{what}");
    for name in foreign_names(file_store) {
        let got = store
            .get(&at(&name))
            .await
            .unwrap_or_else(|e| panic!("{what}: clear deleted the foreign {name}: {e}"))
            .bytes()
            .await
            .expect("bytes");
        assert_eq!(got, foreign_bytes(&name), "{what}: {name}");
    }
    assert!(store.head(&beside).await.is_ok(), "{what}");
    not_an_entry(c.get(foreign_key).await, foreign_key, what);
    assert_eq!(c.clear().await.expect("clear again"), 0, "{what}");
}

#[test]
fn clear_deletes_only_what_the_cache_wrote() {
    run(60, async {
        let mem = ObjectCache::new(Arc::new(InMemory::new()), "etl/cache").expect("cache");
        clear_case(&mem, false, "InMemory").await;
        let root = ObjectCache::new(Arc::new(InMemory::new()), "").expect("cache");
        clear_case(&root, false, "InMemory at the root").await;
        for (what, l) in Local::both() {
            clear_case(&l.cache, true, what).await;
        }
    });
}

#[test]
fn clear_checks_objects_concurrently_with_a_bound() {
    run(60, async {
        let store = Wrapped::store();
        let c = wrapped_cache(&store, 3);
        let n = 300;
        for i in 0..n {
            c.set(&format!("e{i}"), "v".into(), SetOptions::new())
                .await
                .expect("set");
        }
        store
            .put(
                &Path::parse("etl/cache/foreign").expect("path"),
                Bytes::from_static(b"not an entry").into(),
            )
            .await
            .expect("put");
        assert_eq!(c.clear().await.expect("clear"), n);
        assert_eq!(
            store.starts.load(Ordering::SeqCst),
            n as usize + 1,
            "one small read per object"
        );
        let most = store.most_in_flight.load(Ordering::SeqCst);
        assert!((2..=32).contains(&most), "{most} reads in flight at most");
        assert!(
            store
                .head(&Path::parse("etl/cache/foreign").expect("path"))
                .await
                .is_ok()
        );
    });
}
