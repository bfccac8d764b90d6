//! Races in `TieredCache` made deterministic: a lower tier that pauses a
//! chosen call after it has done its work (a gate), while another call on
//! the same handle completes. What a user relies on: once a `set`, `delete`
//! or `clear` has returned, no read of this handle returns what it replaced,
//! whatever promotion was under way, and whatever future was dropped; a
//! value is served with the metadata of its own write; and no copy is
//! served after the expiry its write returned, however late it was made.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use etl_cache_core::async_trait;
use etl_cache_core::testing::{Hooks, Op};
use etl_cache_core::{
    Cache, CacheExt, Clock, Codec, Compression, DynCache, ManualClock, MemoryCache, Result,
    SetOptions, Value,
};
use etl_cache_fs::DiskCache;
use etl_cache_tiered::{Served, TieredCache};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::oneshot;

/// The calls a gate can pause, after the inner tier has done them (or,
/// for the `...Start` ones, before it begins them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    GetEntry,
    GetStream,
    Head,
    Set,
    GetOrInsert,
    SetStart,
    SetStreamStart,
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
impl Hooks for Gate {
    fn inner(&self) -> &DynCache {
        &*self.inner
    }

    async fn before(&self, op: Op, _key: &str) -> Result<()> {
        match op {
            Op::Set => self.pause(Call::SetStart).await,
            Op::SetStream => self.pause(Call::SetStreamStart).await,
            _ => {}
        }
        Ok(())
    }

    async fn after(&self, op: Op, _key: &str, _ok: bool) {
        let call = match op {
            Op::Set => Call::Set,
            // A promotion reads the entry's bytes as stored: the same pause.
            Op::GetEntry | Op::GetRaw => Call::GetEntry,
            Op::GetStream => Call::GetStream,
            Op::Head => Call::Head,
            Op::GetOrInsert => Call::GetOrInsert,
            _ => return,
        };
        self.pause(call).await;
    }
}

#[async_trait]
impl Cache for Gate {
    etl_cache_core::forward_cache! {
        set, set_stream, get_entry, get_raw, get_stream, head, delete, list, purge_expired,
        clear, stats, get_or_insert_boxed
    }

    /// A read of the whole value pauses as `get_entry` does.
    async fn get(&self, key: &str) -> Result<Option<Value>> {
        Ok(self.get_entry(key).await?.map(|(_, v)| v))
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

impl Setup {
    /// A `get_text("k")` of the cache, spawned and paused at the last
    /// tier's `get_entry`: the pause and the read.
    async fn paused_read(&self) -> (Pause, tokio::task::JoinHandle<Option<String>>) {
        let mut pause = self.gate.arm(Call::GetEntry);
        let reader = {
            let cache = self.cache.clone();
            tokio::spawn(async move { cache.get_text("k").await.unwrap() })
        };
        pause.reached().await;
        (pause, reader)
    }

    /// Puts `old` in the last tier, holds a read of "k" there (a promotion
    /// under way) while `during` runs, then lets the read go and checks it
    /// returned `old`. Returns what `during` returned.
    async fn race_a_promotion<T>(&self, during: impl AsyncFnOnce(&Setup) -> T) -> T {
        old_below(self).await;
        let (pause, reader) = self.paused_read().await;
        let out = during(self).await;
        pause.release();
        assert_eq!(reader.await.unwrap().as_deref(), Some("old"));
        out
    }

    /// A `get_or_insert_with("k", opts, ..)` computing "computed", spawned
    /// and paused at the last tier once it has stored the value there: the
    /// pause and the computation.
    async fn paused_compute(
        &self,
        opts: SetOptions,
    ) -> (Pause, tokio::task::JoinHandle<Result<Value>>) {
        let mut pause = self.gate.arm(Call::GetOrInsert);
        let computing = {
            let cache = self.cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_insert_with("k", opts, || async { Value::from("computed") })
                    .await
            })
        };
        pause.reached().await;
        (pause, computing)
    }
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
    s.race_a_promotion(async |s| s.cache.set("k", "new".into(), o()).await.unwrap())
        .await;
    for _ in 0..3 {
        assert_eq!(s.cache.get_text("k").await.unwrap().as_deref(), Some("new"));
    }
}

/// The same with a delete: the key stays gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_completed_during_a_promotion_is_not_undone() {
    let s = two_tiers().await;
    s.race_a_promotion(async |s| assert!(s.cache.delete("k").await.unwrap()))
        .await;
    assert_eq!(s.cache.get("k").await.unwrap(), None);
    assert_eq!(s.cache.head("k").await.unwrap(), None);
}

/// The same with a clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_completed_during_a_promotion_is_not_undone() {
    let s = two_tiers().await;
    s.race_a_promotion(async |s| s.cache.clear().await.unwrap())
        .await;
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
    s.race_a_promotion(async |s| {
        // Written below only, as by another handle, then read (and
        // promoted) by this one, while the first read is still held.
        s.gate.inner.set("k", "new".into(), o()).await.unwrap();
        assert_eq!(
            s.cache.get_traced("k").await.unwrap(),
            Some((Value::from("new"), Served::Tier(0)))
        );
    })
    .await;
    assert_eq!(s.cache.get_text("k").await.unwrap().as_deref(), Some("new"));
}

/// get_or_insert_with stores its computed value below, then fills memory:
/// a set that completes in between wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_completed_before_a_computed_value_is_filled_wins() {
    let s = two_tiers().await;
    let (pause, computing) = s.paused_compute(o()).await;
    s.cache.set("k", "new".into(), o()).await.unwrap();
    pause.release();
    assert_eq!(computing.await.unwrap().unwrap(), Value::from("computed"));
    assert_eq!(s.cache.get_text("k").await.unwrap().as_deref(), Some("new"));
}

/// A set whose future is dropped after the last tier published it, while a
/// promotion read the value before: memory must not keep the old value in
/// front of the one the last tier holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_set_leaves_no_stale_copy_in_memory() {
    let s = two_tiers().await;
    // Once the set is held, the last tier holds the new value; the held
    // read saw the old one.
    let (set_pause, writer) = s
        .race_a_promotion(async |s| {
            let mut set_pause = s.gate.arm(Call::Set);
            let writer = {
                let cache = s.cache.clone();
                tokio::spawn(async move { cache.set("k", "new".into(), o()).await })
            };
            set_pause.reached().await;
            (set_pause, writer)
        })
        .await;
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
        s.race_a_promotion(async |s| s.cache.set("k", "new".into(), o()).await.unwrap())
            .await;
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
        s.race_a_promotion(async |s| {
            if clear {
                s.cache.clear().await.unwrap();
            } else {
                s.cache.delete("k").await.unwrap();
            }
        })
        .await;
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

/// get_or_insert_with stored its computed value below; before it copies it
/// upwards, another handle replaces it there with another codec and a TTL.
/// Every tier must serve a value with the metadata of the write that made
/// it, and the computed value, replaced before anything was copied, must
/// not be put in front of the newer one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_computed_value_is_copied_up_with_its_own_metadata_only() {
    for memory_bytes in [1 << 20, 0] {
        let s = chained(memory_bytes).await;
        let (pause, computing) = s.paused_compute(o()).await;
        let other_opts = o()
            .compression(Compression::zstd())
            .ttl(Duration::from_secs(3600));
        let other = s
            .gate
            .inner
            .set("k", "other".into(), other_opts)
            .await
            .unwrap();
        pause.release();
        assert_eq!(computing.await.unwrap().unwrap(), Value::from("computed"));
        let (meta, value) = s.cache.get_entry("k").await.unwrap().unwrap();
        assert_eq!(
            (value, meta.codec, meta.expires),
            (Value::from("other"), Codec::Zstd, other.expires),
            "memory_bytes {memory_bytes}"
        );
        for (i, tier) in s.upper.iter().enumerate() {
            if let Some((meta, value)) = tier.get_entry("k").await.unwrap() {
                assert_eq!(
                    (value, meta.codec, meta.expires),
                    (Value::from("other"), Codec::Zstd, other.expires),
                    "tier {i}, memory_bytes {memory_bytes}"
                );
            }
        }
    }
}

/// The same pause, with the get_or_insert_with future dropped there: the
/// value below is what the handle serves, with its metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_computation_dropped_before_its_copy_leaves_the_last_tier_in_charge() {
    let s = chained(1 << 20).await;
    let (pause, computing) = s.paused_compute(o().compress(true)).await;
    computing.abort();
    assert!(computing.await.unwrap_err().is_cancelled());
    drop(pause);
    let below = s.gate.inner.get_entry("k").await.unwrap().unwrap();
    assert_eq!(below.1, Value::from("computed"));
    let (meta, value) = s.cache.get_entry("k").await.unwrap().unwrap();
    assert_eq!((value, meta.codec), (below.1, below.0.codec));
    uppers_hold_no_other(&s, Some("computed")).await;
}

/// How a TTL'd entry reaches the tier above the last.
#[derive(Debug, Clone, Copy)]
enum Fills {
    Promotion,
    Set,
    SetStream,
    Computed,
}

/// A tier above the last writes its copy of a TTL'd entry late (its set
/// is held while the clock moves on): the copy must still expire at the
/// instant the entry does, and no read of the handle serves it after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_written_late_expires_with_its_entry() {
    for via in [
        Fills::Promotion,
        Fills::Set,
        Fills::SetStream,
        Fills::Computed,
    ] {
        let clock = Arc::new(ManualClock::new());
        let upper = Gate::new(Arc::new(MemoryCache::with_clock(clock.clone())));
        let last = Arc::new(MemoryCache::with_clock(clock.clone()));
        let cache = TieredCache::builder()
            .memory_bytes(0)
            .clock(clock.clone())
            .tier(upper.clone())
            .tier(last.clone())
            .build()
            .unwrap();
        let ttl = o().ttl(Duration::from_secs(10));
        let mut pause = upper.arm(match via {
            Fills::SetStream => Call::SetStreamStart,
            _ => Call::SetStart,
        });
        let writing = {
            let cache = cache.clone();
            let last = last.clone();
            tokio::spawn(async move {
                match via {
                    Fills::Promotion => {
                        last.set("k", "v".into(), ttl).await.unwrap();
                        cache.get_entry("k").await.unwrap().unwrap().0
                    }
                    Fills::Set => cache.set("k", "v".into(), ttl).await.unwrap(),
                    Fills::SetStream => {
                        let chunks = futures::stream::iter([Ok(Bytes::from_static(b"v"))]);
                        cache.set_stream("k", chunks.boxed(), ttl).await.unwrap()
                    }
                    Fills::Computed => {
                        cache
                            .get_or_insert_with("k", ttl, || async { Value::from("v") })
                            .await
                            .unwrap();
                        last.head("k").await.unwrap().unwrap()
                    }
                }
            })
        };
        pause.reached().await;
        clock.advance(Duration::from_secs(5));
        pause.release();
        let meta = writing.await.unwrap();
        let expires = meta.expires.expect("a TTL was given");
        let copy = upper.inner.head("k").await.unwrap();
        assert!(
            copy.as_ref()
                .is_none_or(|c| c.expires.is_some_and(|e| e <= expires)),
            "{via:?}: the copy above expires at {:?}, the entry at {expires:?}",
            copy.map(|c| c.expires)
        );
        clock.advance(expires.duration_since(clock.now()).unwrap());
        assert_eq!(cache.get("k").await.unwrap(), None, "{via:?}");
        assert_eq!(cache.head("k").await.unwrap(), None, "{via:?}");
        assert!(cache.get_stream("k", 4).await.unwrap().is_none(), "{via:?}");
    }
}

/// A tier above the last whose clock lags the cache's: past the entry's
/// expiry on the cache's clock, its copy is a miss, whatever the tier says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_in_a_tier_with_a_slower_clock_is_not_served_past_the_expiry() {
    for memory_bytes in [0, 1 << 20] {
        let clock = Arc::new(ManualClock::new());
        let slow = Arc::new(ManualClock::new());
        let upper = Arc::new(MemoryCache::with_clock(slow.clone()));
        let last = Arc::new(MemoryCache::with_clock(clock.clone()));
        let cache = TieredCache::builder()
            .memory_bytes(memory_bytes)
            .clock(clock.clone())
            .tier(upper.clone())
            .tier(last)
            .build()
            .unwrap();
        let meta = cache
            .set("k", "v".into(), o().ttl(Duration::from_secs(10)))
            .await
            .unwrap();
        assert!(upper.head("k").await.unwrap().is_some());
        clock.advance(meta.expires.unwrap().duration_since(clock.now()).unwrap());
        assert_eq!(cache.get("k").await.unwrap(), None, "{memory_bytes}");
        assert_eq!(cache.get_entry("k").await.unwrap(), None, "{memory_bytes}");
        assert_eq!(cache.head("k").await.unwrap(), None, "{memory_bytes}");
        assert!(cache.get_stream("k", 4).await.unwrap().is_none());
    }
}
