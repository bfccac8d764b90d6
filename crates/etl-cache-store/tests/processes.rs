//! Two processes share a cache directory and read the same cold object at
//! once: the object is fetched from the inner store once in all.
//!
//! The test binary runs itself twice as children (the environment variable
//! `ETL_CACHE_STORE_CHILD` selects the child part). The inner store is a
//! local directory both see, behind a store that counts data requests in
//! a file per process and holds each at a file gate that the parent opens
//! once one request waits there and both children asked the cache for the
//! lock on the object's first block (or, were reads not coordinated, once
//! both sent a request).

mod common;

use std::path::{Path as FsPath, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use async_trait::async_trait;
use common::on_get::{GetHook, OnGet};
use common::{MIB, Spied, bytes, mib_blocks};
use etl_cache_fs::DiskCache;
use etl_cache_store::Revalidate;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, GetResult, ObjectStore, ObjectStoreExt};

const CHILD: &str = "ETL_CACHE_STORE_CHILD";
const ID: &str = "ETL_CACHE_STORE_CHILD_ID";
const SIZE: usize = 3 * MIB;

/// Reads that count data requests in `count_file`, and hold each until
/// `go` exists.
#[derive(Debug)]
struct Counted {
    gets: AtomicUsize,
    count_file: PathBuf,
    go: PathBuf,
}

async fn wait_for(path: &FsPath) {
    while !path.exists() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[async_trait]
impl GetHook for Counted {
    async fn get_opts(
        &self,
        inner: &dyn ObjectStore,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if !options.head {
            let n = self.gets.fetch_add(1, SeqCst) + 1;
            std::fs::write(&self.count_file, n.to_string()).unwrap();
            wait_for(&self.go).await;
        }
        inner.get_opts(location, options).await
    }
}

fn object() -> Path {
    Path::from("lake/part-0.parquet")
}

async fn child(dir: PathBuf, id: String) {
    let inner = LocalFileSystem::new_with_prefix(dir.join("inner")).unwrap();
    let counted = OnGet::new(
        Arc::new(inner),
        Counted {
            gets: AtomicUsize::new(0),
            count_file: dir.join(format!("count-{id}")),
            go: dir.join("go"),
        },
    );
    std::fs::write(&counted.count_file, "0").unwrap();
    let disk = DiskCache::open(dir.join("cache")).await.unwrap();
    let spied = Arc::new(Spied {
        inner: Arc::new(disk),
        entered: Default::default(),
        computing: Default::default(),
        fail_lock: Default::default(),
        entered_file: Some(dir.join(format!("entered-{id}"))),
        set_gate: Default::default(),
        sets_parked: Default::default(),
    });
    let store = mib_blocks(counted.clone(), spied)
        .revalidate(Revalidate::Always)
        .namespace("shared-inner")
        .build()
        .await
        .unwrap();
    // Both children start the read together.
    std::fs::write(dir.join(format!("ready-{id}")), b"").unwrap();
    wait_for(&dir.join("ready-0")).await;
    wait_for(&dir.join("ready-1")).await;
    let got = store.get(&object()).await.unwrap().bytes().await.unwrap();
    assert!(got == bytes(SIZE, 40), "child {id} read the wrong bytes");
    // As a process about to exit does: the blocks being kept behind the
    // read are on disk before it ends.
    store.settle().await;
    std::fs::write(dir.join(format!("done-{id}")), b"").unwrap();
}

fn count(dir: &FsPath, id: usize) -> usize {
    std::fs::read_to_string(dir.join(format!("count-{id}")))
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn parent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    std::fs::create_dir_all(dir.join("inner")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let inner = LocalFileSystem::new_with_prefix(dir.join("inner")).unwrap();
        inner.put(&object(), bytes(SIZE, 40).into()).await.unwrap();
    });
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = (0..2)
        .map(|id| {
            Command::new(&exe)
                .env(CHILD, &dir)
                .env(ID, id.to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    // Open the gate once one request waits and both children asked for
    // the lock, or once both sent a request.
    loop {
        let total = count(&dir, 0) + count(&dir, 1);
        let entered = (0..2).all(|id| dir.join(format!("entered-{id}")).exists());
        if (total == 1 && entered) || total >= 2 {
            break;
        }
        if let Some((i, s)) = children
            .iter_mut()
            .enumerate()
            .find_map(|(i, c)| c.try_wait().unwrap().map(|s| (i, s)))
        {
            panic!("child {i} ended before the gate opened: {s}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    std::fs::write(dir.join("go"), b"").unwrap();
    for (i, mut c) in children.into_iter().enumerate() {
        let status = c.wait().unwrap();
        assert!(status.success(), "child {i}: {status}");
    }
    let total = count(&dir, 0) + count(&dir, 1);
    assert_eq!(total, 1, "data requests across both processes");
    println!("test two_processes_read_a_cold_object_with_one_request ... ok");
}

fn main() {
    match (std::env::var_os(CHILD), std::env::var(ID)) {
        (Some(dir), Ok(id)) => {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(child(PathBuf::from(dir), id));
        }
        _ => parent(),
    }
}
