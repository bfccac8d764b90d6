//! A wrapper store for the tests: counts requests, can hold data requests
//! at a gate, and can cut a body short.

#![allow(dead_code)]

#[path = "../../../etl-cache-object/tests/support/forward.rs"]
#[macro_use]
mod forward;
#[path = "../../../etl-cache-object/tests/support/on_get.rs"]
pub mod on_get;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etl_cache_core::Cache;
use etl_cache_store::{CachedStore, CachedStoreBuilder, Revalidate};
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{GetOptions, GetResult, GetResultPayload, ObjectStore, ObjectStoreExt};
use tokio::sync::Semaphore;

#[derive(Debug, Default)]
pub struct Hooks {
    /// Data requests (get_opts without `head`).
    pub gets: AtomicUsize,
    /// Metadata requests (get_opts with `head`).
    pub heads: AtomicUsize,
    /// Data requests waiting at the gate now.
    pub paused: AtomicUsize,
    /// When set, each data request takes a permit first.
    pub gate: Mutex<Option<Arc<Semaphore>>>,
    /// The gate holds a data request after the inner store answered it
    /// (its body is of the version current then), not before.
    pub gate_after: std::sync::atomic::AtomicBool,
    /// When set, the next data body fails after this many bytes.
    pub cut_after: Mutex<Option<usize>>,
    /// When set, every answer carries these attributes, as after a change
    /// of the object's metadata that kept its e-tag.
    pub relabel: Mutex<Option<object_store::Attributes>>,
}

#[derive(Debug)]
pub struct Watched {
    pub inner: Arc<InMemory>,
    pub hooks: Arc<Hooks>,
}

impl Watched {
    pub fn new() -> (Arc<Watched>, Arc<InMemory>, Arc<Hooks>) {
        let inner = Arc::new(InMemory::new());
        let hooks = Arc::new(Hooks::default());
        (
            Arc::new(Watched {
                inner: inner.clone(),
                hooks: hooks.clone(),
            }),
            inner,
            hooks,
        )
    }
}

impl Hooks {
    pub fn requests(&self) -> usize {
        self.gets.load(SeqCst) + self.heads.load(SeqCst)
    }

    /// Holds every data request from now on until [`Hooks::release`].
    pub fn close_gate(&self) -> Arc<Semaphore> {
        let s = Arc::new(Semaphore::new(0));
        *self.gate.lock().unwrap() = Some(s.clone());
        s
    }

    pub fn open_gate(&self) {
        if let Some(s) = self.gate.lock().unwrap().take() {
            s.add_permits(1 << 20);
        }
    }

    /// Takes a permit of the gate, if it is closed.
    async fn pass_gate(&self) {
        let gate = self.gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            self.paused.fetch_add(1, SeqCst);
            let permit = gate.acquire().await.unwrap();
            permit.forget();
            self.paused.fetch_sub(1, SeqCst);
        }
    }

    /// Waits until `n` data requests wait at the gate.
    pub async fn wait_paused(&self, n: usize) {
        while self.paused.load(SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

impl std::fmt::Display for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Watched({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Watched {
    forward_object_store!(
        inner;
        put_opts, put_multipart_opts, get_ranges, delete_stream, list, list_with_delimiter,
        copy_opts
    );

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let relabel = self.hooks.relabel.lock().unwrap().clone();
        if options.head {
            self.hooks.heads.fetch_add(1, SeqCst);
            let mut got = self.inner.get_opts(location, options).await?;
            if let Some(a) = relabel {
                got.attributes = a;
            }
            return Ok(got);
        }
        self.hooks.gets.fetch_add(1, SeqCst);
        let after = self.hooks.gate_after.load(SeqCst);
        if !after {
            self.hooks.pass_gate().await;
        }
        let mut got = self.inner.get_opts(location, options).await?;
        if after {
            self.hooks.pass_gate().await;
        }
        if let Some(a) = relabel {
            got.attributes = a;
        }
        let cut = self.hooks.cut_after.lock().unwrap().take();
        if let Some(cut) = cut {
            let GetResultPayload::Stream(stream) = got.payload else {
                unreachable!("InMemory streams its bodies")
            };
            // Re-chunked into 64 KiB pieces, then cut.
            let bytes = stream
                .map(|r| r.unwrap())
                .collect::<Vec<Bytes>>()
                .await
                .concat();
            let mut pieces: Vec<object_store::Result<Bytes>> = bytes[..cut.min(bytes.len())]
                .chunks(64 << 10)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            pieces.push(Err(object_store::Error::Generic {
                store: "Watched",
                source: "connection reset".into(),
            }));
            got.payload = GetResultPayload::Stream(futures::stream::iter(pieces).boxed());
        }
        Ok(got)
    }
}

/// `n` bytes that differ at every offset and between `seed`s.
pub fn bytes(n: usize, seed: u8) -> Bytes {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect::<Vec<u8>>()
        .into()
}

pub const MIB: usize = 1 << 20;

/// A builder of a store in front of `inner` keeping 1 MiB blocks in `cache`.
pub fn mib_blocks(inner: Arc<dyn ObjectStore>, cache: Arc<dyn Cache>) -> CachedStoreBuilder {
    CachedStore::builder(inner)
        .cache(cache)
        .block_size(MIB as u64)
}

/// A store in front of `inner` keeping 1 MiB blocks in `cache`, that
/// revalidates as `revalidate` says.
pub async fn mib_store(
    inner: Arc<dyn ObjectStore>,
    cache: Arc<dyn Cache>,
    revalidate: Revalidate,
) -> CachedStore {
    mib_blocks(inner, cache)
        .revalidate(revalidate)
        .build()
        .await
        .unwrap()
}

/// A watched inner store holding `data` at `name`: the store, the bare
/// store behind it, its hooks and the path.
pub async fn holding(name: &str, data: &Bytes) -> (Arc<Watched>, Arc<InMemory>, Arc<Hooks>, Path) {
    let (inner, bare, hooks) = Watched::new();
    let p = Path::from(name);
    bare.put(&p, data.clone().into()).await.unwrap();
    (inner, bare, hooks, p)
}

/// A cache in front of another that counts the calls of
/// `get_or_insert_boxed` (the lock a `CachedStore` takes before it
/// fetches a run of blocks), touches `entered_file` at each, and can fail
/// them.
#[derive(Debug)]
pub struct Spied {
    pub inner: Arc<dyn etl_cache_core::Cache>,
    /// Calls of `get_or_insert_boxed` so far.
    pub entered: AtomicUsize,
    /// Computations of `get_or_insert_boxed` begun so far: each is the
    /// caller holding the cache's lock.
    pub computing: AtomicUsize,
    /// When set, `get_or_insert_boxed` fails at once.
    pub fail_lock: std::sync::atomic::AtomicBool,
    /// Created at each call of `get_or_insert_boxed`, when given.
    pub entered_file: Option<std::path::PathBuf>,
    /// When set, each `set` of bytes (a block) waits for a permit of it
    /// (taken for good), counted in `sets_parked` meanwhile.
    pub set_gate: std::sync::Mutex<Option<Arc<Semaphore>>>,
    /// Sets of bytes waiting at `set_gate` now.
    pub sets_parked: AtomicUsize,
}

impl Spied {
    pub fn new(inner: Arc<dyn etl_cache_core::Cache>) -> Arc<Spied> {
        Arc::new(Spied {
            inner,
            entered: AtomicUsize::new(0),
            computing: AtomicUsize::new(0),
            fail_lock: Default::default(),
            entered_file: None,
            set_gate: Default::default(),
            sets_parked: AtomicUsize::new(0),
        })
    }

    /// Makes sets of blocks wait until [`Spied::open_sets`].
    pub fn close_sets(&self) {
        *self.set_gate.lock().unwrap() = Some(Arc::new(Semaphore::new(0)));
    }

    /// Lets every waiting and later set of blocks through.
    pub fn open_sets(&self) {
        if let Some(g) = self.set_gate.lock().unwrap().take() {
            g.add_permits(Semaphore::MAX_PERMITS / 2);
        }
    }

    /// Waits until `n` sets of blocks wait at the gate.
    pub async fn sets_parked(&self, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.sets_parked.load(SeqCst) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{n} sets never parked"
            );
            tokio::task::yield_now().await;
        }
    }
}

#[async_trait]
impl etl_cache_core::testing::Hooks for Spied {
    fn inner(&self) -> &etl_cache_core::DynCache {
        &*self.inner
    }

    /// Counts the calls of `get_or_insert_boxed`, touches `entered_file`,
    /// and fails them when `fail_lock` is set.
    async fn before(
        &self,
        op: etl_cache_core::testing::Op,
        key: &str,
    ) -> etl_cache_core::Result<()> {
        if op != etl_cache_core::testing::Op::GetOrInsert {
            return Ok(());
        }
        self.entered.fetch_add(1, SeqCst);
        if let Some(f) = &self.entered_file {
            std::fs::write(f, b"").unwrap();
        }
        if self.fail_lock.load(SeqCst) {
            return Err(etl_cache_core::Error::LockTimeout {
                key: key.to_owned(),
                waited: Duration::from_secs(60),
            });
        }
        Ok(())
    }

    /// Holds sets of bytes at `set_gate`, when closed.
    async fn before_set(&self, _key: &str, value: &etl_cache_core::Value) {
        let gate = self.set_gate.lock().unwrap().clone();
        if let (Some(gate), etl_cache_core::Value::Bytes(_)) = (gate, value) {
            self.sets_parked.fetch_add(1, SeqCst);
            gate.acquire().await.unwrap().forget();
            self.sets_parked.fetch_sub(1, SeqCst);
        }
    }

    /// Counts the computations begun.
    fn init<'a>(
        &'a self,
        _key: &'a str,
        init: etl_cache_core::InitFuture<'a>,
    ) -> etl_cache_core::InitFuture<'a> {
        Box::pin(async move {
            self.computing.fetch_add(1, SeqCst);
            init.await
        })
    }
}

#[async_trait]
impl etl_cache_core::Cache for Spied {
    etl_cache_core::forward_cache! {
        set, get_range, set_stream, get, get_stream, head, contains, delete, list, purge_expired,
        clear, get_or_insert_boxed, stats
    }
}
