//! Races in `TieredCache` made deterministic: a lower tier that pauses a
//! chosen call after it has done its work (a gate), while another call on
//! the same handle completes. What a user relies on: once a `set`, `delete`
//! or `clear` has returned, no read of this handle returns what it replaced,
//! whatever promotion was under way, and whatever future was dropped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use etl_cache_core::async_trait;
use etl_cache_core::{
    ByteStream, Cache, CacheExt, EntryMeta, GetStream, MemoryCache, Result, SetOptions, Stats,
    Value,
};
use etl_cache_fs::DiskCache;
use etl_cache_tiered::{Served, TieredCache};
use futures::TryStreamExt;
use futures::stream::BoxStream;
use tokio::sync::oneshot;

/// The calls a gate can pause, after the inner tier has done them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    GetEntry,
    GetStream,
    Head,
    Set,
}

/// A pause armed on a gate: the first matching call signals `reached`, then
/// waits for `release`.
struct Armed {
    call: Call,
    reached: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

/// A tier that passes every call to `inner`, and pauses the armed one after
/// `inner` has answered it.
#[derive(Debug)]
struct Gate {
    inner: Arc<dyn Cache>,
    armed: Mutex<Option<Armed>>,
}

impl std::fmt::Debug for Armed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Armed({:?})", self.call)
    }
}

/// The test's side of an armed pause.
struct Pause {
    reached: oneshot::Receiver<()>,
    release: oneshot::Sender<()>,
}

impl Pause {
    /// Waits until the paused call is held at the gate.
    async fn reached(&mut self) {
        tokio::time::timeout(Duration::from_secs(20), &mut self.reached)
            .await
            .expect("the gated call arrives")
            .expect("the gate is alive");
    }

    fn release(self) {
        let _ = self.release.send(());
    }
}

impl Gate {
    fn new(inner: Arc<dyn Cache>) -> Arc<Gate> {
        Arc::new(Gate {
            inner,
            armed: Mutex::new(None),
        })
    }

    /// Pauses the next `call` after the inner tier answered it.
    fn arm(&self, call: Call) -> Pause {
        let (reached_tx, reached_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        *self.armed.lock().unwrap() = Some(Armed {
            call,
            reached: reached_tx,
            release: release_rx,
        });
        Pause {
            reached: reached_rx,
            release: release_tx,
        }
    }

    async fn pause(&self, call: Call) {
        let armed = {
            let mut armed = self.armed.lock().unwrap();
            match armed.as_ref() {
                Some(a) if a.call == call => armed.take(),
                _ => None,
            }
        };
        if let Some(a) = armed {
            let _ = a.reached.send(());
            let _ = a.release.await;
        }
    }
}

#[async_trait]
impl Cache for Gate {
    async fn set(&self, key: &str, value: Value, opts: SetOptions) -> Result<EntryMeta> {
        let r = self.inner.set(key, value, opts).await;
        self.pause(Call::Set).await;
        r
    }

    async fn set_stream(
        &self,
        key: &str,
        stream: ByteStream,
        opts: SetOptions,
    ) -> Result<EntryMeta> {
        self.inner.set_stream(key, stream, opts).await
    }

    async fn get(&self, key: &str) -> Result<Option<Value>> {
        Ok(self.get_entry(key).await?.map(|(_, v)| v))
    }

    async fn get_entry(&self, key: &str) -> Result<Option<(EntryMeta, Value)>> {
        let r = self.inner.get_entry(key).await;
        self.pause(Call::GetEntry).await;
        r
    }

    async fn get_stream(&self, key: &str, chunk_size: usize) -> Result<Option<GetStream>> {
        let r = self.inner.get_stream(key, chunk_size).await;
        self.pause(Call::GetStream).await;
        r
    }

    async fn head(&self, key: &str) -> Result<Option<EntryMeta>> {
        let r = self.inner.head(key).await;
        self.pause(Call::Head).await;
        r
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.inner.delete(key).await
    }

    fn list(&self, prefix: Option<&str>) -> BoxStream<'static, Result<EntryMeta>> {
        self.inner.list(prefix)
    }

    async fn purge_expired(&self) -> Result<u64> {
        self.inner.purge_expired().await
    }

    async fn clear(&self) -> Result<u64> {
        self.inner.clear().await
    }

    async fn stats(&self) -> Result<Stats> {
        self.inner.stats().await
    }
}

struct Setup {
    cache: TieredCache,
    /// The last tier, behind the gate.
    gate: Arc<Gate>,
    /// The tiers above the last, fastest first (none with one lower tier).
    upper: Vec<Arc<MemoryCache>>,
    _dir: tempfile::TempDir,
}

/// Memory ahead of a gated DiskCache.
async fn two_tiers() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(DiskCache::open(dir.path()).await.unwrap());
    let gate = Gate::new(disk);
    let cache = TieredCache::builder().tier(gate.clone()).build().unwrap();
    Setup {
        cache,
        gate,
        upper: Vec::new(),
        _dir: dir,
    }
}

/// Memory (of `memory_bytes`) ahead of two tiers ahead of a gated last one.
async fn chained(memory_bytes: u64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(DiskCache::open(dir.path()).await.unwrap());
    let gate = Gate::new(disk);
    let upper = vec![Arc::new(MemoryCache::new()), Arc::new(MemoryCache::new())];
    let cache = TieredCache::builder()
        .memory_bytes(memory_bytes)
        .tier(upper[0].clone())
        .tier(upper[1].clone())
        .tier(gate.clone())
        .build()
        .unwrap();
    Setup {
        cache,
        gate,
        upper,
        _dir: dir,
    }
}

fn o() -> SetOptions {
    SetOptions::new()
}

/// Puts `old` in the last tier only, as another handle would have.
async fn old_below(s: &Setup) {
    s.gate.inner.set("k", "old".into(), o()).await.unwrap();
}

/// No tier above the last holds a value other than `want` under "k".
async fn uppers_hold_no_other(s: &Setup, want: Option<&str>) {
    for (i, tier) in s.upper.iter().enumerate() {
        let got = tier.get_text("k").await.unwrap();
        assert!(
            got.is_none() || got.as_deref() == want,
            "tier {i} holds {got:?}, the last write left {want:?}"
        );
    }
}

/// A get that paused after reading the old value below, while a set
/// completed: the set's value is what every later read returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_completed_during_a_promotion_is_not_shadowed() {
    let s = two_tiers().await;
    old_below(&s).await;
    let mut pause = s.gate.arm(Call::GetEntry);
    let reader = {
        let cache = s.cache.clone();
        tokio::spawn(async move { cache.get_text("k").await.unwrap() })
    };
    pause.reached().await;
    s.cache.set("k", "new".into(), o()).await.unwrap();
    pause.release();
    assert_eq!(reader.await.unwrap().as_deref(), Some("old"));
    for _ in 0..3 {
        assert_eq!(s.cache.get_text("k").await.unwrap().as_deref(), Some("new"));
    }
}

/// The same with a delete: the key stays gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_completed_during_a_promotion_is_not_undone() {
    let s = two_tiers().await;
    old_below(&s).await;
    let mut pause = s.gate.arm(Call::GetEntry);
    let reader = {
        let cache = s.cache.clone();
        tokio::spawn(async move { cache.get_text("k").await.unwrap() })
    };
    pause.reached().await;
    assert!(s.cache.delete("k").await.unwrap());
    pause.release();
    assert_eq!(reader.await.unwrap().as_deref(), Some("old"));
    assert_eq!(s.cache.get("k").await.unwrap(), None);
    assert_eq!(s.cache.head("k").await.unwrap(), None);
}

/// The same with a clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_completed_during_a_promotion_is_not_undone() {
    let s = two_tiers().await;
    old_below(&s).await;
    let mut pause = s.gate.arm(Call::GetEntry);
    let reader = {
        let cache = s.cache.clone();
        tokio::spawn(async move { cache.get_text("k").await.unwrap() })
    };
    pause.reached().await;
    s.cache.clear().await.unwrap();
    pause.release();
    assert_eq!(reader.await.unwrap().as_deref(), Some("old"));
    assert_eq!(s.cache.get("k").await.unwrap(), None);
}

/// A small entry read by get_stream is promoted too: the same race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_completed_during_a_streamed_promotion_is_not_shadowed() {
    let s = two_tiers().await;
    old_below(&s).await;
    let mut pause = s.gate.arm(Call::GetStream);
    let reader = {
        let cache = s.cache.clone();
        tokio::spawn(async move {
            let st = cache.get_stream("k", 2).await.unwrap().unwrap();
            st.try_collect::<Vec<Bytes>>().await.unwrap().concat()
        })
    };
    pause.reached().await;
    s.cache.set("k", "new".into(), o()).await.unwrap();
    pause.release();
    assert_eq!(reader.await.unwrap(), b"old");
    assert_eq!(s.cache.get_text("k").await.unwrap().as_deref(), Some("new"));
    let st = s.cache.get_stream("k", 2).await.unwrap().unwrap();
    assert_eq!(
        st.try_collect::<Vec<Bytes>>().await.unwrap().concat(),
        b"new"
    );
}

/// Two promotions of one key race: the one that read before a set
/// completed installs nothing; the one that read after installs the new
/// value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_racing_promotions_the_stale_one_installs_nothing() {
    let s = two_tiers().await;
    old_below(&s).await;
    let mut pause = s.gate.arm(Call::GetEntry);
    let stale = {
        let cache = s.cache.clone();
        tokio::spawn(async move { cache.get_text("k").await.unwrap() })
    };
    pause.reached().await;
    // Written below only, as by another handle, then read (and promoted)
    // by this one, while the first read is still held.
    s.gate.inner.set("k", "new".into(), o()).await.unwrap();
    assert_eq!(
        s.cache.get_traced("k").await.unwrap(),
        Some((Value::from("new"), Served::Tier(0)))
    );
    pause.release();
    assert_eq!(stale.await.unwrap().as_deref(), Some("old"));
    assert_eq!(s.cache.get_text("k").await.unwrap().as_deref(), Some("new"));
}

/// get_or_insert_with stores its computed value below, reads the entry's
/// metadata, then fills memory: a set that completes in between wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_completed_before_a_computed_value_is_filled_wins() {
    let s = two_tiers().await;
    let mut pause = s.gate.arm(Call::Head);
    let computing = {
        let cache = s.cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_insert_with("k", o(), || async { Value::from("computed") })
                .await
                .unwrap()
        })
    };
    pause.reached().await;
    s.cache.set("k", "new".into(), o()).await.unwrap();
    pause.release();
    assert_eq!(computing.await.unwrap(), Value::from("computed"));
    assert_eq!(s.cache.get_text("k").await.unwrap().as_deref(), Some("new"));
}

/// A set whose future is dropped after the last tier published it, while a
/// promotion read the value before: memory must not keep the old value in
/// front of the one the last tier holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_set_leaves_no_stale_copy_in_memory() {
    let s = two_tiers().await;
    old_below(&s).await;
    let mut read_pause = s.gate.arm(Call::GetEntry);
    let reader = {
        let cache = s.cache.clone();
        tokio::spawn(async move { cache.get_text("k").await.unwrap() })
    };
    read_pause.reached().await;
    let mut set_pause = s.gate.arm(Call::Set);
    let writer = {
        let cache = s.cache.clone();
        tokio::spawn(async move { cache.set("k", "new".into(), o()).await })
    };
    set_pause.reached().await;
    // The last tier holds the new value; the held read saw the old one.
    read_pause.release();
    assert_eq!(reader.await.unwrap().as_deref(), Some("old"));
    writer.abort();
    assert!(writer.await.unwrap_err().is_cancelled());
    drop(set_pause);
    let below = s.gate.inner.get_text("k").await.unwrap();
    assert_eq!(below.as_deref(), Some("new"));
    assert_eq!(s.cache.get_text("k").await.unwrap(), below);
}

/// With tiers chained, a promotion from the last tier writes the tiers
/// above it too: a set completed meanwhile leaves none of them (nor
/// memory) with the old value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_tiers_keep_no_stale_copy_after_a_racing_set() {
    for memory_bytes in [1 << 20, 0] {
        let s = chained(memory_bytes).await;
        old_below(&s).await;
        let mut pause = s.gate.arm(Call::GetEntry);
        let reader = {
            let cache = s.cache.clone();
            tokio::spawn(async move { cache.get_text("k").await.unwrap() })
        };
        pause.reached().await;
        s.cache.set("k", "new".into(), o()).await.unwrap();
        pause.release();
        assert_eq!(reader.await.unwrap().as_deref(), Some("old"));
        uppers_hold_no_other(&s, Some("new")).await;
        assert_eq!(
            s.cache.get_text("k").await.unwrap().as_deref(),
            Some("new"),
            "memory_bytes {memory_bytes}"
        );
    }
}

/// The same with a delete and a clear on chained tiers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_tiers_keep_no_stale_copy_after_a_racing_delete_or_clear() {
    for clear in [false, true] {
        let s = chained(0).await;
        old_below(&s).await;
        let mut pause = s.gate.arm(Call::GetEntry);
        let reader = {
            let cache = s.cache.clone();
            tokio::spawn(async move { cache.get_text("k").await.unwrap() })
        };
        pause.reached().await;
        if clear {
            s.cache.clear().await.unwrap();
        } else {
            s.cache.delete("k").await.unwrap();
        }
        pause.release();
        assert_eq!(reader.await.unwrap().as_deref(), Some("old"));
        uppers_hold_no_other(&s, None).await;
        assert_eq!(s.cache.get("k").await.unwrap(), None, "clear {clear}");
    }
}

/// Many sets and reads of a few keys at once on one handle, over chained
/// tiers: once they are all done, every key reads as the last tier holds
/// it, from memory and from every tier above.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sets_and_reads_leave_every_tier_agreeing_with_the_last() {
    let s = chained(1 << 20).await;
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let cache = s.cache.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..200u32 {
                let key = format!("k{}", (i + t) % 3);
                match (i + t) % 4 {
                    0 => {
                        cache
                            .set(&key, format!("{t}-{i}").into(), o())
                            .await
                            .unwrap();
                    }
                    1 if i % 16 == 1 => {
                        cache.delete(&key).await.unwrap();
                    }
                    _ => {
                        cache.get(&key).await.unwrap();
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for k in ["k0", "k1", "k2"] {
        let truth = s.gate.inner.get(k).await.unwrap();
        assert_eq!(s.cache.get(k).await.unwrap(), truth, "{k}");
        for (i, tier) in s.upper.iter().enumerate() {
            let got = tier.get(k).await.unwrap();
            assert!(
                got.is_none() || got == truth,
                "{k}: tier {i} holds {got:?}, the last {truth:?}"
            );
        }
    }
}
