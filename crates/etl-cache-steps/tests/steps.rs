//! Steps on real caches: keys, fail-closed parts, manifests and history,
//! explanations, time saved, and runs that race or are dropped.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use etl_cache_core::{
    ByteStream, Cache, CacheExt, Clock, ManualClock, MemoryCache, SetOptions, Value, validate_key,
};
use etl_cache_fs::DiskCache;
use etl_cache_steps::{Error, Explanation, Manifest, Outcome, Ran, RunOptions, Step, StepExt};
use futures::{StreamExt, TryStreamExt};

use common::{Wrapped, computed_why};

type Res = Result<Value, std::io::Error>;

fn text(s: &str) -> Res {
    Ok(Value::from(s))
}

async fn disk(dir: &std::path::Path) -> DiskCache {
    DiskCache::builder().root(dir).build().await.unwrap()
}

fn transform(rows: u32) -> Step {
    transform_code("v1", rows)
}

fn transform_code(code: &str, rows: u32) -> Step {
    Step::new("transform")
        .code_version(code)
        .param("rows", &rows)
        .param(
            "opts",
            &serde_json::json!({"currency": "EUR", "strict": true}),
        )
}

/// Runs of a step whose computation returns a fixed text, expected to
/// succeed.
trait RunText: StepExt {
    /// Runs `step` with `opts`, computing `value` on a miss.
    async fn run_text_with(
        &self,
        step: &Step,
        opts: RunOptions,
        value: &'static str,
    ) -> Ran<Value> {
        self.run(step, opts, || async move { text(value) })
            .await
            .unwrap()
    }

    /// Runs `step` with the default options, computing `value` on a miss.
    async fn run_text(&self, step: &Step, value: &'static str) -> Ran<Value> {
        self.run_text_with(step, RunOptions::new(), value).await
    }

    /// Runs stream step `step` with `opts`, computing `n` pages from `seed`
    /// on a miss and counting the computation in `computed`.
    async fn run_pages_counted(
        &self,
        step: &Step,
        opts: RunOptions,
        computed: &AtomicUsize,
        n: u8,
        seed: u8,
    ) -> etl_cache_steps::Result<Ran<etl_cache_core::GetStream>> {
        self.run_stream(step, opts, 65536, || async move {
            computed.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(pages(n, seed))
        })
        .await
    }

    /// Runs stream step `step` with the default options, computing `n`
    /// pages from `seed` on a miss.
    async fn run_pages(&self, step: &Step, n: u8, seed: u8) -> Ran<etl_cache_core::GetStream> {
        self.run_stream(step, RunOptions::new(), 65536, || async move {
            Ok::<_, std::io::Error>(pages(n, seed))
        })
        .await
        .unwrap()
    }
}

impl<C: Cache + ?Sized> RunText for C {}

// ------------------------------------------------------------------ keys

#[tokio::test]
async fn key_is_name_and_digest_and_ignores_part_and_map_order() {
    let a = Step::new("load/day")
        .code_version("v1")
        .param("m", &serde_json::json!({"a": 1, "b": 2}))
        .input_bytes("raw", b"xyz");
    let mut m = HashMap::new();
    m.insert("b", 2);
    m.insert("a", 1);
    let b = Step::new("load/day")
        .input_bytes("raw", b"xyz")
        .param("m", &m)
        .code_version("v1");
    let (ra, rb) = (a.resolve().await.unwrap(), b.resolve().await.unwrap());
    assert_eq!(ra.key(), rb.key());
    let key = ra.key();
    validate_key(&key).unwrap();
    let digest = key
        .strip_prefix("step/load/day/")
        .expect("step/{name}/{digest}");
    assert_eq!(digest.len(), 64);
    assert!(
        digest
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    // Any part's change is a new key.
    let variant = |name: &str, code: &str, raw: &[u8]| {
        Step::new(name)
            .code_version(code)
            .param("m", &serde_json::json!({"a": 1, "b": 2}))
            .input_bytes("raw", raw)
    };
    assert_eq!(key_of(&variant("load/day", "v1", b"xyz")).await, key);
    for other in [
        variant("load/day", "v2", b"xyz"),
        variant("load/day2", "v1", b"xyz"),
        variant("load/day", "v1", b"xyZ"),
        a.clone().param("extra", &0),
    ] {
        assert_ne!(key_of(&other).await, key);
    }
}

/// Prints the digest of a one-variable step when run as a child (the
/// environment is set by the parent: changing it in-process needs `unsafe`).
#[tokio::test]
async fn an_unset_env_var_differs_from_an_empty_one() {
    let var = "ETL_CACHE_STEPS_TEST_VAR";
    let step = Step::new("env").env(var);
    if std::env::var_os("ETL_CACHE_STEPS_CHILD").is_some() {
        let r = step.resolve().await.unwrap();
        println!("DIGEST={} PREVIEW={}", r.digest, r.parts[0].preview);
        return;
    }
    let child = |value: Option<&str>| {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "an_unset_env_var_differs_from_an_empty_one",
            "--nocapture",
        ])
        .env("ETL_CACHE_STEPS_CHILD", "1");
        match value {
            Some(v) => cmd.env(var, v),
            None => cmd.env_remove(var),
        };
        let out = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
        out.lines()
            .find(|l| l.starts_with("DIGEST="))
            .expect("the child prints")
            .to_owned()
    };
    let secret = "postgres://user:hunter2@db/prod";
    let (unset, empty, set) = (child(None), child(Some("")), child(Some(secret)));
    let digest = |l: &str| l.split(' ').next().unwrap().to_owned();
    assert_ne!(digest(&unset), digest(&empty));
    assert_ne!(digest(&empty), digest(&set));
    assert_eq!(digest(&unset), digest(&child(None)));
    assert!(unset.ends_with(&format!("PREVIEW={var} unset")), "{unset}");
    assert!(
        empty.ends_with(&format!("PREVIEW={var} set (0 bytes, sha256 e3b0c442…)")),
        "{empty}"
    );
    // A value is never kept in the preview (manifests are shown by
    // `etl-cache explain`): its length and the start of its digest are.
    assert!(!set.contains("hunter2"), "{set}");
    assert!(set.contains(&format!("{} bytes", secret.len())), "{set}");
}

#[tokio::test]
async fn file_inputs_are_hashed_from_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.csv");
    std::fs::write(&path, vec![7u8; 600_000]).unwrap();
    let step = Step::new("f").input_file("csv", &path);
    let first = step.resolve().await.unwrap();
    assert_eq!(first.digest, step.resolve().await.unwrap().digest);
    std::fs::write(&path, vec![8u8; 600_000]).unwrap();
    assert_ne!(first.digest, step.resolve().await.unwrap().digest);
    assert!(first.parts[0].preview.contains("600000 bytes"));
}

// ------------------------------------------------------------ fail closed

async fn refused(step: Step, part: &str) {
    let cache = MemoryCache::new();
    let ran = AtomicUsize::new(0);
    let e = cache
        .run(&step, RunOptions::new(), || async {
            ran.fetch_add(1, Ordering::SeqCst);
            text("x")
        })
        .await
        .unwrap_err();
    match &e {
        Error::Part {
            step: s, part: p, ..
        } => {
            assert_eq!((s.as_str(), p.as_str()), (step.name(), part), "{e}")
        }
        other => panic!("expected a part error, got {other}"),
    }
    assert!(e.to_string().contains(step.name()) && e.to_string().contains(part));
    assert_eq!(ran.load(Ordering::SeqCst), 0, "nothing is computed");
    assert!(
        cache.keys(None).await.unwrap().is_empty(),
        "nothing is stored"
    );
    assert!(matches!(
        cache.explain(&step).await,
        Err(Error::Part { .. })
    ));
}

/// As `Step::param` says: the digest is of the JSON, so values that
/// serialize alike are one parameter, and a tagged form tells them apart.
#[tokio::test]
async fn parameters_that_serialize_alike_are_one_and_a_tagged_form_differs() {
    let key = |step: Step| async move { key_of(&step).await };
    let none: Option<Option<u32>> = None;
    let some_none: Option<Option<u32>> = Some(None);
    assert_eq!(
        key(Step::new("s").param("limit", &none)).await,
        key(Step::new("s").param("limit", &some_none)).await
    );
    #[derive(serde::Serialize)]
    enum Limit {
        Unset,
        NoLimit,
    }
    assert_ne!(
        key(Step::new("s").param("limit", &Limit::Unset)).await,
        key(Step::new("s").param("limit", &Limit::NoLimit)).await
    );
}

#[tokio::test]
async fn a_nan_parameter_is_an_error_not_null() {
    refused(
        Step::new("s").param("threshold", &f64::NAN),
        "param.threshold",
    )
    .await;
    refused(
        Step::new("s").param("v", &vec![1.0, f64::INFINITY]),
        "param.v",
    )
    .await;
}

#[tokio::test]
async fn a_nan_map_key_is_an_error() {
    struct FloatKeyed(f64);
    impl serde::Serialize for FloatKeyed {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut m = s.serialize_map(Some(1))?;
            m.serialize_entry(&self.0, "v")?;
            m.end()
        }
    }
    refused(
        Step::new("s").param("by_rate", &FloatKeyed(f64::NAN)),
        "param.by_rate",
    )
    .await;
    // A finite float key is fine.
    Step::new("s")
        .param("ok", &FloatKeyed(0.5))
        .resolve()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_parameter_that_fails_to_serialize_is_an_error() {
    struct Broken;
    impl serde::Serialize for Broken {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no serialized form"))
        }
    }
    refused(Step::new("s").param("conn", &Broken), "param.conn").await;
    // A map with keys JSON cannot name.
    let mut m = HashMap::new();
    m.insert((1, 2), "pair");
    refused(Step::new("s").param("pairs", &m), "param.pairs").await;
}

#[tokio::test]
async fn an_environment_variable_name_that_cannot_be_set_is_an_error() {
    refused(Step::new("s").env(""), "env.").await;
    refused(Step::new("s").env("REGION=eu"), "env.REGION=eu").await;
    // NUL: the error's text escapes it, so only its part is checked.
    let e = Step::new("s").env("A\0B").resolve().await.unwrap_err();
    assert!(
        matches!(&e, Error::Part { part, .. } if part == "env.A\0B"),
        "{e}"
    );
}

#[tokio::test]
async fn an_unreadable_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    refused(
        Step::new("s").input_file("raw", dir.path().join("missing")),
        "input.raw",
    )
    .await;
    refused(Step::new("s").input_file("dir", dir.path()), "input.dir").await;
}

#[tokio::test]
async fn a_part_given_twice_or_a_bad_name_is_an_error() {
    refused(Step::new("s").param("a", &1).param("a", &2), "param.a").await;
    let cache = MemoryCache::new();
    for name in ["", "a\nb"] {
        let e = cache.explain(&Step::new(name)).await.unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }), "{e}");
    }
}

// ------------------------------------------------ runs, manifests, history

#[tokio::test]
async fn runs_compute_once_and_keep_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    let cache = disk(dir.path()).await;
    let values = [
        Value::from("text"),
        Value::Bytes(Bytes::from_static(b"\x00\x01bytes")),
        Value::Json(serde_json::json!({"rows": 3, "ok": true})),
    ];
    for (i, v) in values.iter().enumerate() {
        let step = Step::new("kinds").param("i", &i);
        let first = cache
            .run(&step, RunOptions::new(), || async {
                Ok::<_, std::io::Error>(v.clone())
            })
            .await
            .unwrap();
        assert!(!first.outcome.is_hit());
        let again = cache.run_text(&step, "recomputed").await;
        assert!(again.outcome.is_hit());
        assert_eq!(&again.value, v);
    }
    let history = cache.step_history("kinds").await.unwrap();
    assert_eq!(history.len(), 3);
    let m = &history[2];
    assert_eq!((m.kind.as_str(), m.pid), ("json", std::process::id()));
    assert!(!m.host.is_empty());
    assert_eq!(m.parts[0].name, "param.i");
    assert_eq!(m.parts[0].preview, "2");
}

/// The `rows` parameter's preview in each run of `history`, oldest first.
fn rows_of(history: &[Manifest]) -> Vec<String> {
    history
        .iter()
        .map(|m| {
            m.parts
                .iter()
                .find(|p| p.name == "param.rows")
                .unwrap()
                .preview
                .clone()
        })
        .collect()
}

#[tokio::test]
async fn history_keeps_the_last_runs_only() {
    let cache = MemoryCache::new();
    for i in 0..11u32 {
        cache.run_text(&transform(i), "r").await;
    }
    let rows = rows_of(&cache.step_history("transform").await.unwrap());
    assert_eq!(rows, (3..11).map(|i| i.to_string()).collect::<Vec<_>>());
    cache
        .run_text_with(&transform(99), RunOptions::new().history(2), "r")
        .await;
    assert_eq!(cache.step_history("transform").await.unwrap().len(), 2);
}

#[tokio::test]
async fn previews_are_short() {
    let long = "x".repeat(500);
    let r = Step::new("p").param("long", &long).resolve().await.unwrap();
    assert_eq!(
        r.parts[0].preview.chars().count(),
        etl_cache_steps::PREVIEW_LEN
    );
    assert!(r.parts[0].preview.ends_with('…'));
}

/// A changed parameter reads as its JSON, once quoted: `"EUR" -> "USD"`.
#[tokio::test]
async fn a_changed_parameter_is_shown_as_written() {
    let cache = MemoryCache::new();
    let step = |c: &str| Step::new("fx").param("currency", c);
    cache.run_text(&step("EUR"), "r").await;
    let e = cache.explain(&step("USD")).await.unwrap();
    assert!(
        e.to_string()
            .ends_with("\n  param.currency: \"EUR\" -> \"USD\""),
        "{e}"
    );
}

// ----------------------------------------------------------- explanations

/// A new memory cache, and a `Wrapped` around it.
fn wrapped_memory() -> (Arc<dyn Cache>, Wrapped) {
    let mem: Arc<dyn Cache> = Arc::new(MemoryCache::new());
    (mem.clone(), Wrapped::new(mem))
}

/// The key `step` is stored under.
async fn key_of(step: &Step) -> String {
    step.resolve().await.unwrap().key()
}

/// Why `step` would miss in `cache` at `now`, or "hit".
async fn reason_at(cache: &dyn Cache, step: &Step, now: std::time::SystemTime) -> &'static str {
    cache.explain_at(step, now).await.unwrap().reason()
}

/// Every cause of a miss, each set up and explained: all must be named right.
#[tokio::test]
async fn each_miss_gets_its_reason() {
    let clock = Arc::new(ManualClock::new());
    let mem: Arc<dyn Cache> = Arc::new(MemoryCache::with_clock(clock.clone()));
    let cache = Wrapped::new(mem.clone());
    let now = || clock.now();
    let opts = || RunOptions::new().clock(clock.clone());
    let mut table: Vec<(&str, &str)> = Vec::new();

    // No earlier run.
    let e = cache.explain_at(&transform(1), now()).await.unwrap();
    table.push(("no_earlier_run", e.reason()));
    let ran = cache.run_text_with(&transform(1), opts(), "one").await;
    table.push(("no_earlier_run", computed_why(&ran.outcome)));
    // Hit.
    table.push(("hit", reason_at(&cache, &transform(1), now()).await));

    // A parameter changed: old and new previews.
    let e = cache.explain_at(&transform(2), now()).await.unwrap();
    table.push(("parts_changed", e.reason()));
    let Explanation::PartsChanged { changes, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (
            changes[0].part.as_str(),
            changes[0].old.as_deref(),
            changes[0].new.as_deref()
        ),
        ("param.rows", Some("1"), Some("2"))
    );
    assert!(e.to_string().ends_with("\n  param.rows: 1 -> 2"), "{e}");
    // The code changed, and a part was added.
    let e = cache
        .explain_at(&transform_code("v2", 1).env("ETL_STEPS_NOT_SET"), now())
        .await
        .unwrap();
    table.push(("parts_changed", e.reason()));
    let Explanation::PartsChanged { changes, .. } = &e else {
        panic!("{e}")
    };
    let names: Vec<_> = changes.iter().map(|c| c.part.as_str()).collect();
    assert_eq!(names, ["code", "env.ETL_STEPS_NOT_SET"]);
    assert_eq!(changes[1].old, None);

    // Expired.
    let hour = RunOptions::new()
        .clock(clock.clone())
        .set_options(SetOptions::new().ttl(Duration::from_secs(3600)));
    cache.run_text_with(&transform(3), hour, "3").await;
    clock.advance(Duration::from_secs(7200));
    let e = cache.explain_at(&transform(3), now()).await.unwrap();
    table.push(("expired", e.reason()));
    let ran = cache.run_text_with(&transform(3), opts(), "3").await;
    table.push(("expired", computed_why(&ran.outcome)));

    // Deleted (or evicted): gone before its expiry.
    cache.run_text_with(&transform(4), opts(), "4").await;
    let key = key_of(&transform(4)).await;
    mem.delete(&key).await.unwrap();
    table.push((
        "evicted_or_deleted",
        reason_at(&cache, &transform(4), now()).await,
    ));

    // Corrupt: explain sees it, and a run computes again with that reason.
    cache.run_text_with(&transform(5), opts(), "5").await;
    let key = key_of(&transform(5)).await;
    cache.corrupt.lock().unwrap().insert(key.clone());
    table.push(("corrupt", reason_at(&cache, &transform(5), now()).await));
    let ran = cache.run_text_with(&transform(5), opts(), "5 again").await;
    table.push(("corrupt", computed_why(&ran.outcome)));
    assert_eq!(ran.value, Value::from("5 again"));

    // Written by an incompatible format version.
    cache.run_text_with(&transform(6), opts(), "6").await;
    let r6 = transform(6).resolve().await.unwrap();
    let mkey = format!("step-manifest/transform/{}", r6.digest);
    let mut m: serde_json::Value = mem.get_json(&mkey).await.unwrap().unwrap();
    m["format"] = 99.into();
    mem.set_json(&mkey, &m, SetOptions::new()).await.unwrap();
    mem.delete(&r6.key()).await.unwrap();
    table.push((
        "incompatible_format",
        reason_at(&cache, &transform(6), now()).await,
    ));

    // Refresh forced.
    let ran = cache
        .run_text_with(&transform(1), opts().refresh(true), "one, again")
        .await;
    table.push(("refresh_forced", computed_why(&ran.outcome)));
    assert_eq!(
        cache.get(&key_of(&transform(1)).await).await.unwrap(),
        Some(Value::from("one, again"))
    );

    let right = table.iter().filter(|(want, got)| want == got).count();
    assert_eq!(right, table.len(), "{table:?}");
    assert_eq!(table.len(), 12);
}

// ------------------------------------------------------------- time saved

#[tokio::test]
async fn hits_add_the_time_they_saved_across_handles() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (disk(dir.path()).await, disk(dir.path()).await);
    let step = Step::new("slow").code_version("v1");
    let compute = || async {
        // The cost of a computation, simulated: the figure under test.
        tokio::time::sleep(Duration::from_millis(120)).await;
        text("done")
    };
    let first = a.run(&step, RunOptions::new(), compute).await.unwrap();
    let Outcome::Computed { took, .. } = first.outcome else {
        panic!()
    };
    assert!(took >= Duration::from_millis(120));
    let mut saved = 0.0;
    for c in [&a, &b, &b] {
        let ran = c.run_text(&step, "never").await;
        let Outcome::Hit {
            took: hit,
            saved_seconds,
        } = ran.outcome
        else {
            panic!()
        };
        assert!((saved_seconds - (took.as_secs_f64() - hit.as_secs_f64())).abs() < 0.005);
        saved += saved_seconds;
    }
    let report = b.step_stats(None).await.unwrap();
    let s = report.by_step["slow"];
    assert_eq!((s.hits, s.misses, s.bytes_served), (3, 1, 12));
    assert!((s.saved_seconds - saved).abs() < 1e-9);
    assert!(s.saved_seconds > 3.0 * 0.1, "{s:?}");
    assert_eq!(report.total, s);
    // Reopened, the figures are still there.
    let c = disk(dir.path()).await;
    assert_eq!(c.step_stats(Some("slow")).await.unwrap().total, s);
    assert!(
        c.step_stats(Some("other"))
            .await
            .unwrap()
            .by_step
            .is_empty()
    );
}

#[tokio::test]
async fn a_step_reused_reads_its_file_again_and_a_part_added_later_counts() {
    let dir = tempfile::tempdir().unwrap();
    let cache = disk(dir.path()).await;
    let file = dir.path().join("input.csv");
    std::fs::write(&file, "a,b\n1,2\n").unwrap();
    // One step object, run twice around a change of its input file: the
    // second run digests the file again and computes.
    let step = Step::new("reused").input_file("rows", &file);
    let first = cache.run_text(&step, "one").await;
    assert!(!first.outcome.is_hit());
    std::fs::write(&file, "a,b\n1,2\n3,4\n").unwrap();
    let second = cache.run_text(&step, "two").await;
    assert!(
        !second.outcome.is_hit(),
        "a changed file was taken for the old one"
    );
    assert_eq!(second.value.into_bytes(), "two");
    // A step of fixed parts, resolved once and reused: a clone given one
    // more part has another key, the original keeps its own.
    let base = Step::new("fixed").param("a", &1);
    let key = key_of(&base).await;
    cache.run_text(&base, "base").await;
    let more = base.clone().param("b", &2);
    assert_ne!(key_of(&more).await, key);
    let ran = cache.run_text(&more, "more").await;
    assert!(!ran.outcome.is_hit());
    assert_eq!(key_of(&base).await, key);
    let ran = cache.run_text(&base, "never").await;
    assert_eq!(ran.value.into_bytes(), "base");
}

/// The tally entries of `name` as stored, added up, without writing the
/// hits that wait in memory (what another process would read now).
async fn stored_hits(cache: &dyn Cache, name: &str) -> u64 {
    let keys: Vec<String> = cache
        .list(Some(&format!("step-stats/{name}/")))
        .map_ok(|m| m.key)
        .try_collect()
        .await
        .unwrap();
    let mut hits = 0;
    for k in keys {
        let v: serde_json::Value = cache.get_json(&k).await.unwrap().unwrap();
        hits += v["hits"].as_u64().unwrap();
    }
    hits
}

#[tokio::test]
async fn hits_in_a_loop_are_written_together_and_none_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let cache = disk(dir.path()).await;
    let step = Step::new("hot").param("n", &1);
    cache.run_text(&step, "v").await;
    for _ in 0..200 {
        let ran = cache.run_text(&step, "never").await;
        assert!(ran.outcome.is_hit());
    }
    // The first hit was written at once, the others wait for the next
    // write, a second later (a loop of 200 hits of a 1-byte value takes
    // less than that; more than one write on a very slow machine).
    let stored = stored_hits(&cache, "hot").await;
    assert!((1..200).contains(&stored), "{stored} hits stored");
    // Reading the figures writes what waits: every hit is counted.
    let s = cache.step_stats(Some("hot")).await.unwrap().total;
    assert_eq!((s.hits, s.misses, s.bytes_served), (200, 1, 200));
    assert_eq!(stored_hits(&cache, "hot").await, 200);
    // Hits that wait are written in the background within about a second,
    // with no call of the caller's, even after the handle is dropped.
    for _ in 0..5 {
        cache.run_text(&step, "never").await;
    }
    drop(cache);
    let other = disk(dir.path()).await;
    eventually(|| async { stored_hits(&other, "hot").await == 205 }).await;
    assert_eq!(other.step_stats(Some("hot")).await.unwrap().total.hits, 205);
}

/// Waits until `done` holds, up to 20 s (a background write due within a
/// second): fails the test otherwise.
async fn eventually<F, Fut>(done: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(std::time::Instant::now() < deadline, "not done within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_reading_many_results_once_each_writes_every_hit() {
    let dir = tempfile::tempdir().unwrap();
    let cache = disk(dir.path()).await;
    // A backfill: one step name, one result per day, computed once...
    let day = |d: u32| Step::new("daily").param("day", &d);
    for d in 0..30 {
        cache.run_text(&day(d), "rows").await;
    }
    // ...then read back once each by a rerun that ends right after: every
    // hit is in the tally already, with nothing left waiting in memory.
    for d in 0..30 {
        let ran = cache.run_text(&day(d), "never").await;
        assert!(ran.outcome.is_hit());
    }
    assert_eq!(stored_hits(&cache, "daily").await, 30);
    // The same for 30 other days, read by 30 tasks at once on one handle.
    for d in 30..60 {
        cache.run_text(&day(d), "rows").await;
    }
    let cache = Arc::new(cache);
    let tasks: Vec<_> = (30..60)
        .map(|d| {
            let cache = cache.clone();
            tokio::spawn(async move {
                let ran = cache.run_text(&day(d), "never").await;
                assert!(ran.outcome.is_hit());
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(stored_hits(&*cache, "daily").await, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hits_racing_on_one_handle_and_on_two_are_all_counted() {
    let dir = tempfile::tempdir().unwrap();
    let one: Arc<dyn Cache> = Arc::new(disk(dir.path()).await);
    let two: Arc<dyn Cache> = Arc::new(disk(dir.path()).await);
    let step = Step::new("shared").param("n", &1);
    one.run_text(&step, "v").await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let cache = if i % 2 == 0 { one.clone() } else { two.clone() };
        let step = step.clone();
        tasks.push(tokio::spawn(async move {
            // The run spelled out: the helper's future on a `dyn Cache`
            // is not known to be `Send` for a spawned task.
            for _ in 0..50 {
                let ran = cache
                    .run(&step, RunOptions::new(), || async { text("never") })
                    .await
                    .unwrap();
                assert!(ran.outcome.is_hit());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Each handle writes what waits on it; together, every hit.
    one.step_stats(Some("shared")).await.unwrap();
    let s = two.step_stats(Some("shared")).await.unwrap().total;
    assert_eq!((s.hits, s.misses), (400, 1));
}

#[tokio::test]
async fn a_hit_dropped_at_any_call_counts_at_most_once_and_waiting_hits_survive() {
    let dir = tempfile::tempdir().unwrap();
    let wrapped = Arc::new(Wrapped::new(Arc::new(disk(dir.path()).await)));
    wrapped.share_id.store(true, Ordering::SeqCst);
    let step = |n: u32| Step::new("dropped").param("n", &n);
    // The first hit of a result writes its tally in its call: the value,
    // the tally's read, its write. Dropped at each in turn (each time the
    // first hit of another result): a hit dropped while its tally is
    // written is not counted (a write is never put back to be made again:
    // it may have been stored), and none counts twice.
    let mut dropped = 0;
    for at in 0.. {
        wrapped.run_text(&step(at), "v").await;
        let start = wrapped.calls.load(Ordering::SeqCst);
        wrapped.park_at.store(start + at as usize, Ordering::SeqCst);
        let w = wrapped.clone();
        let s = step(at);
        let mut run = tokio::spawn(async move {
            w.run(&s, RunOptions::new(), || async { text("never") })
                .await
        });
        tokio::select! {
            _ = wrapped.parked.notified() => {
                run.abort();
                let _ = run.await;
                dropped += 1;
            }
            done = &mut run => {
                assert!(done.unwrap().unwrap().outcome.is_hit());
                break;
            }
        }
        wrapped.park_at.store(usize::MAX, Ordering::SeqCst);
    }
    wrapped.park_at.store(usize::MAX, Ordering::SeqCst);
    assert_eq!(dropped, 3, "the hit was dropped at {dropped} calls");
    assert_eq!(stored_hits(&*wrapped.inner, "dropped").await, 1);
    let step = step(dropped);
    // More hits of that result wait; the handle is dropped: the
    // background write has its own handle on the cache, and the four are
    // counted once, with the one written in its call.
    for _ in 0..4 {
        wrapped.run_text(&step, "never").await;
    }
    drop(wrapped);
    let other = disk(dir.path()).await;
    eventually(|| async { stored_hits(&other, "dropped").await == 5 }).await;
    // Written once: a second later, still five.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = other.step_stats(Some("dropped")).await.unwrap().total;
    assert_eq!((s.hits, s.misses), (5, 4), "{s:?}");
}

/// A runtime that ends while the background write sleeps (a test's, a
/// short-lived one) leaves the hits waiting, and the next hit that waits,
/// on another runtime, schedules their write again.
#[test]
fn waiting_hits_outlive_the_runtime_that_scheduled_their_write() {
    let dir = tempfile::tempdir().unwrap();
    let first = current_thread();
    // The runtime ends before the write of the waiting hits is due.
    let (step, cache) = five_runs_on(&first, dir.path(), "runtimes");
    drop(first);
    current_thread().block_on(async {
        assert_eq!(stored_hits(&cache, "runtimes").await, 1);
        runs(&cache, &step, 2).await;
        eventually(|| async { stored_hits(&cache, "runtimes").await == 6 }).await;
    });
}

/// A runtime of one thread, as a sync wrapper makes for its calls.
fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `n` runs of `step` (the first a miss on a new cache, then hits).
async fn runs(cache: &DiskCache, step: &Step, n: usize) {
    for _ in 0..n {
        cache.run_text(step, "v").await;
    }
}

/// A step named `name` and a disk cache in `dir` opened on `rt`, with
/// five runs of the step made on it there: a miss, a hit written in its
/// call, three hits that wait.
fn five_runs_on(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    name: &str,
) -> (Step, DiskCache) {
    let step = Step::new(name).param("n", &1);
    let cache = rt.block_on(disk(dir));
    rt.block_on(runs(&cache, &step, 5));
    (step, cache)
}

/// A runtime kept but no longer driven (one a sync wrapper keeps for
/// later calls) holds a scheduled write that does not run: after a few
/// seconds a waiting hit on another runtime schedules one there.
#[test]
fn a_write_scheduled_on_a_runtime_no_longer_driven_is_scheduled_again() {
    let dir = tempfile::tempdir().unwrap();
    let kept = current_thread();
    let (step, cache) = five_runs_on(&kept, dir.path(), "undriven");
    current_thread().block_on(async {
        assert_eq!(stored_hits(&cache, "undriven").await, 1);
        // Past the time a scheduled write may be late, and past the period:
        // of three hits one is written in its call, two wait with the three
        // of the first runtime, and all are written from this one.
        tokio::time::sleep(Duration::from_millis(3200)).await;
        runs(&cache, &step, 3).await;
        eventually(|| async { stored_hits(&cache, "undriven").await == 7 }).await;
    });
    drop(kept);
}

/// A run dropped once its result is stored (while its manifest is being
/// written) still leaves the manifest: the records are written by a task
/// of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_dropped_after_its_result_is_stored_still_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Cache> = Arc::new(disk(dir.path()).await);
    let wrapped = Arc::new(Wrapped::new(inner.clone()));
    wrapped.share_id.store(true, Ordering::SeqCst);
    // The records go through a second wrapper, parked at its first call
    // (the result's head).
    let records = Arc::new(Wrapped::new(inner.clone()));
    records.park_at.store(0, Ordering::SeqCst);
    *wrapped.background.lock().unwrap() = Some(records.clone());
    let step = Step::new("recorded").param("n", &1);
    let run = {
        let (w, step) = (wrapped.clone(), step.clone());
        tokio::spawn(async move {
            w.run(&step, RunOptions::new(), || async { text("v") })
                .await
        })
    };
    tokio::time::timeout(Duration::from_secs(20), records.parked.notified())
        .await
        .expect("the records are written through the cache's background handle");
    // The result is stored; the caller goes away.
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    assert_eq!(
        inner
            .get_text(&key_of(&step).await)
            .await
            .unwrap()
            .as_deref(),
        Some("v")
    );
    records.release.notify_one();
    eventually(|| async {
        let s = inner.step_stats(Some("recorded")).await.unwrap().total;
        s.misses == 1
    })
    .await;
    let e = inner.explain(&step).await.unwrap();
    assert!(e.is_hit(), "{e}");
    let ran = inner.run_text(&step, "never").await;
    let Outcome::Hit { saved_seconds, .. } = ran.outcome else {
        panic!()
    };
    assert!(saved_seconds.is_finite());
    // The manifest is there: the run is in the step's history.
    let again = Step::new("recorded").param("n", &2);
    let why = inner.explain(&again).await.unwrap();
    assert!(matches!(why, Explanation::PartsChanged { .. }), "{why}");
}

/// `step_stats` dropped at each of its await points, with hits waiting,
/// concurrently with more hits: the hits it took are written all the same
/// (by a task of its own), each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_stats_dropped_at_any_await_still_writes_the_hits_it_took() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(disk(dir.path()).await);
    let step = Step::new("stats").param("n", &1);
    runs(&cache, &step, 1).await;
    let mut hits = 0;
    for polls in 0..6 {
        // Hits of a result written in this period: they wait.
        runs(&cache, &step, 3).await;
        hits += 3;
        let racing = {
            let (cache, step) = (cache.clone(), step.clone());
            tokio::spawn(async move { runs(&cache, &step, 2).await })
        };
        let _ =
            etl_cache_core::testing::poll_then_drop(cache.step_stats(Some("stats")), polls).await;
        racing.await.unwrap();
        hits += 2;
    }
    let s = cache.step_stats(Some("stats")).await.unwrap().total;
    assert_eq!((s.hits, s.misses), (hits, 1), "{s:?}");
    eventually(|| async { stored_hits(&*cache, "stats").await == hits }).await;
}

#[tokio::test]
async fn a_backend_without_a_handle_id_writes_every_hit() {
    let dir = tempfile::tempdir().unwrap();
    let wrapped = Wrapped::new(Arc::new(disk(dir.path()).await));
    let step = Step::new("through").param("n", &1);
    wrapped.run_text(&step, "v").await;
    for _ in 0..20 {
        wrapped.run_text(&step, "never").await;
    }
    assert_eq!(stored_hits(&wrapped, "through").await, 20);
}

#[tokio::test]
async fn a_result_computed_again_on_the_handle_saves_its_new_time() {
    let dir = tempfile::tempdir().unwrap();
    let cache = disk(dir.path()).await;
    let step = Step::new("timed").param("n", &1);
    let quick = || async { text("v") };
    cache.run(&step, RunOptions::new(), quick).await.unwrap();
    let hit = cache.run(&step, RunOptions::new(), quick).await.unwrap();
    let Outcome::Hit { saved_seconds, .. } = hit.outcome else {
        panic!()
    };
    assert!(saved_seconds < 0.05, "{saved_seconds}");
    // Computed again (refresh), slowly: the next hit saves the new time,
    // not the one remembered from the first manifest.
    let slow = || async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        text("v")
    };
    cache
        .run(&step, RunOptions::new().refresh(true), slow)
        .await
        .unwrap();
    let hit = cache.run(&step, RunOptions::new(), quick).await.unwrap();
    let Outcome::Hit { saved_seconds, .. } = hit.outcome else {
        panic!()
    };
    assert!(saved_seconds > 0.1, "{saved_seconds}");
}

// ---------------------------------------------------------------- streams

#[tokio::test]
async fn stream_steps_store_and_serve_streams() {
    let dir = tempfile::tempdir().unwrap();
    let cache = disk(dir.path()).await;
    let step = Step::new("extract").param("pages", &3);
    let pages = || async {
        let s: ByteStream =
            futures::stream::iter((0..3).map(|i| Ok(Bytes::from(vec![i as u8; 100_000])))).boxed();
        Ok::<_, std::io::Error>(s)
    };
    let first = cache
        .run_stream(&step, RunOptions::new(), 65536, pages)
        .await
        .unwrap();
    assert!(!first.outcome.is_hit());
    let bytes: Vec<Bytes> = first.value.try_collect().await.unwrap();
    assert_eq!(bytes.concat().len(), 300_000);
    let again = cache
        .run_stream(&step, RunOptions::new(), 65536, || async {
            Err::<ByteStream, _>(std::io::Error::other("not called"))
        })
        .await
        .unwrap();
    assert!(again.outcome.is_hit());
    let bytes: Vec<Bytes> = again.value.try_collect().await.unwrap();
    assert_eq!(bytes.concat()[200_000], 2);
    assert_eq!(
        cache.step_history("extract").await.unwrap()[0].kind,
        "stream"
    );
    assert_eq!(
        cache.step_stats(None).await.unwrap().total.bytes_served,
        300_000
    );
}

/// A stream of `pages` pages of 100,000 bytes, page `i` all `i + seed`.
fn pages(pages: u8, seed: u8) -> ByteStream {
    futures::stream::iter((0..pages).map(move |i| Ok(Bytes::from(vec![i + seed; 100_000])))).boxed()
}

async fn all_bytes(s: etl_cache_core::GetStream) -> Vec<u8> {
    let parts: Vec<Bytes> = s.try_collect().await.unwrap();
    parts.concat()
}

/// Runs a stream step in 8 tasks at once, spread over `handles`; every task
/// reads the whole result. Returns how many times the computation ran.
async fn run_stream_together(handles: &[Arc<dyn Cache>], step: &Step) -> usize {
    let computed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (cache, computed, step) = (
            handles[i % handles.len()].clone(),
            computed.clone(),
            step.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let ran = cache
                .run_stream(&step, RunOptions::new(), 65536, || async move {
                    computed.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    Ok::<_, std::io::Error>(pages(3, 7))
                })
                .await
                .unwrap();
            all_bytes(ran.value).await
        }));
    }
    for t in tasks {
        let b = t.await.unwrap();
        assert_eq!(b.len(), 300_000);
        assert_eq!((b[0], b[150_000], b[299_999]), (7, 8, 9));
    }
    computed.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_stream_runs_on_one_handle_and_on_two_compute_once() {
    let dir = tempfile::tempdir().unwrap();
    let one: Arc<dyn Cache> = Arc::new(disk(dir.path()).await);
    let step = Step::new("pages").param("n", &1);
    assert_eq!(
        run_stream_together(std::slice::from_ref(&one), &step).await,
        1
    );
    let s = one.step_stats(Some("pages")).await.unwrap().total;
    assert_eq!((s.hits, s.misses), (7, 1));

    let two: Arc<dyn Cache> = Arc::new(disk(dir.path()).await);
    let step = Step::new("pages").param("n", &2);
    assert_eq!(run_stream_together(&[one, two], &step).await, 1);
}

/// A task waiting for another computing the same stream step gives up after
/// its `lock_timeout`, naming the key; the holder's result lands, and is
/// computed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_run_waits_its_lock_timeout_then_fails_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(disk(dir.path()).await);
    let step = Step::new("slow pages");
    let key = key_of(&step).await;
    let (started, gate) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    let computed = Arc::new(AtomicUsize::new(0));
    let holder = {
        let (cache, step, started, gate, computed) = (
            cache.clone(),
            step.clone(),
            started.clone(),
            gate.clone(),
            computed.clone(),
        );
        tokio::spawn(async move {
            let ran = cache
                .run_stream(&step, RunOptions::new(), 65536, || async move {
                    computed.fetch_add(1, Ordering::SeqCst);
                    started.notify_one();
                    gate.notified().await;
                    Ok::<_, std::io::Error>(pages(2, 1))
                })
                .await
                .unwrap();
            all_bytes(ran.value).await
        })
    };
    started.notified().await;
    let waited = std::time::Instant::now();
    let short = RunOptions::new().lock_timeout(Duration::from_millis(200));
    let e = cache
        .run_pages_counted(&step, short, &computed, 1, 50)
        .await
        .unwrap_err();
    let waited = waited.elapsed();
    match &e {
        Error::Cache(etl_cache_core::Error::LockTimeout { key: k, .. }) => assert_eq!(k, &key),
        other => panic!("expected a lock timeout, got {other}"),
    }
    assert!(e.to_string().contains(&key), "{e}");
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(30),
        "gave up after {waited:?}"
    );
    gate.notify_one();
    let b = holder.await.unwrap();
    assert_eq!((b.len(), b[0], b[199_999]), (200_000, 1, 2));
    let again = cache.run_pages(&step, 1, 60).await;
    assert!(again.outcome.is_hit());
    assert_eq!(all_bytes(again.value).await.len(), 200_000);
    assert_eq!(computed.load(Ordering::SeqCst), 1);
}

/// A stream run dropped at each of its cache calls leaves no lock behind
/// and nothing half-stored: the next run computes at most once, serves the
/// whole result, and the step is a hit after.
#[tokio::test]
async fn a_stream_run_dropped_at_any_await_leaves_a_usable_cache() {
    let step = || Step::new("dropped pages").param("n", &3);
    let run = |w: Arc<Wrapped>| async move {
        w.run_stream(&step(), RunOptions::new(), 65536, || async {
            Ok::<_, std::io::Error>(pages(3, 1))
        })
        .await
    };
    for park in 0..cache_calls(&run).await {
        let inner = dropped_at(&run, park).await;
        let computed = AtomicUsize::new(0);
        let opts = RunOptions::new().lock_timeout(Duration::from_secs(5));
        let ran = inner
            .run_pages_counted(&step(), opts, &computed, 3, 1)
            .await
            .unwrap();
        let b = all_bytes(ran.value).await;
        assert_eq!(
            (b.len(), b[299_999]),
            (300_000, 3),
            "dropped at call {park}"
        );
        assert!(computed.load(Ordering::SeqCst) <= 1);
        let e = inner.explain(&step()).await.unwrap();
        assert!(e.is_hit(), "dropped at call {park}: {e}");
    }
}

/// Another writer stores under a stream step's key between the run's look
/// and its write: the run's own stream is what it returns and what stays.
#[tokio::test]
async fn a_writer_between_look_and_set_stream_is_overwritten_by_the_stream_run() {
    let (mem, w) = wrapped_memory();
    let step = Step::new("sneaked pages");
    let key = key_of(&step).await;
    *w.sneak.lock().unwrap() = Some((key.clone(), Value::from("from elsewhere")));
    let ran = w.run_pages(&step, 2, 5).await;
    assert!(matches!(ran.outcome, Outcome::Computed { .. }));
    assert_eq!(all_bytes(ran.value).await.len(), 200_000);
    assert!(
        w.sneak.lock().unwrap().is_none(),
        "the other writer did write"
    );
    match mem.get(&key).await.unwrap() {
        Some(Value::Bytes(b)) => assert_eq!((b.len(), b[0], b[199_999]), (200_000, 5, 6)),
        other => panic!("{other:?}"),
    }
}

/// Why a stream step computed: no earlier run the first time, a forced
/// refresh when asked, the corruption when its entry was corrupt.
#[tokio::test]
async fn a_stream_run_says_why_it_computed() {
    let (_, w) = wrapped_memory();
    let step = Step::new("explained pages");
    let key = key_of(&step).await;
    let run = |opts: RunOptions| {
        let (w, step) = (&w, &step);
        async move {
            w.run_stream(step, opts, 65536, || async {
                Ok::<_, std::io::Error>(pages(1, 1))
            })
            .await
            .unwrap()
            .outcome
        }
    };
    match run(RunOptions::new()).await {
        Outcome::Computed { why, .. } => assert_eq!(why.reason(), "no_earlier_run", "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(run(RunOptions::new()).await.is_hit());
    match run(RunOptions::new().refresh(true)).await {
        Outcome::Computed { why, .. } => {
            assert!(matches!(why, Explanation::RefreshForced), "{why}")
        }
        other => panic!("{other:?}"),
    }
    w.corrupt.lock().unwrap().insert(key);
    match run(RunOptions::new()).await {
        Outcome::Computed { why, .. } => {
            assert!(matches!(why, Explanation::Corrupt { .. }), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert!(run(RunOptions::new()).await.is_hit());
}

/// On a DiskCache, whose removal journal every process shares, a gone
/// result is explained by what removed it: evicted over which limit, or
/// deleted; a removal older than the result's computation is not taken for
/// its own.
#[tokio::test]
async fn a_disk_cache_journal_tells_evicted_from_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let cache = DiskCache::builder()
        .root(dir.path())
        .max_bytes(1_500_000)
        .build()
        .await
        .unwrap();
    let big = |seed: u8| Value::Bytes(Bytes::from(vec![seed; 1_000_000]));
    let step = |n: u32| Step::new("big").param("n", &n);
    cache
        .run(&step(1), RunOptions::new(), || async {
            Ok::<_, std::io::Error>(big(1))
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The second result pushes the cache over 1.5 MB: the first goes.
    cache
        .run(&step(2), RunOptions::new(), || async {
            Ok::<_, std::io::Error>(big(2))
        })
        .await
        .unwrap();
    let e = cache.explain(&step(1)).await.unwrap();
    match &e {
        Explanation::Evicted { limit, .. } => assert_eq!(limit, "max_bytes", "{e}"),
        other => panic!("expected evicted, got {other}"),
    }
    assert!(e.to_string().contains("over its max_bytes"), "{e}");

    let key = key_of(&step(2)).await;
    assert!(cache.delete(&key).await.unwrap());
    let e = cache.explain(&step(2)).await.unwrap();
    assert_eq!(e.reason(), "deleted", "{e}");
    match &e {
        Explanation::Deleted { by, .. } => assert_eq!(by, "delete"),
        other => panic!("{other}"),
    }
    let ran = cache
        .run(&step(2), RunOptions::new(), || async {
            Ok::<_, std::io::Error>(big(3))
        })
        .await
        .unwrap();
    match &ran.outcome {
        Outcome::Computed { why, .. } => assert_eq!(why.reason(), "deleted", "{why}"),
        o => panic!("{o:?}"),
    }

    // Computed again after that delete, then removed behind the cache's
    // back: the journal's delete is older than this result, so no removal
    // of it is known.
    let hash = sha256_hex(&key);
    let file = walk(dir.path())
        .into_iter()
        .find(|p| p.ends_with(&hash))
        .expect("entry file");
    std::fs::remove_file(file).unwrap();
    let e = cache.explain(&step(2)).await.unwrap();
    assert_eq!(e.reason(), "evicted_or_deleted", "{e}");
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

// ------------------------------------------------------------ concurrency

/// Runs `transform(rows)` in 8 tasks at once, spread over `handles`; every
/// task gets `answer`. Returns how many times the computation ran.
async fn run_together(handles: &[Arc<DiskCache>], rows: u32, answer: &'static str) -> usize {
    let computed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (cache, computed) = (handles[i % handles.len()].clone(), computed.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .run(&transform(rows), RunOptions::new(), || async move {
                    computed.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    text(answer)
                })
                .await
                .unwrap()
                .value
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Value::from(answer));
    }
    computed.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_runs_on_one_handle_compute_once() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(disk(dir.path()).await);
    assert_eq!(
        run_together(std::slice::from_ref(&cache), 7, "seven").await,
        1
    );
    let s = cache.step_stats(Some("transform")).await.unwrap().total;
    assert_eq!((s.hits, s.misses), (7, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_handles_over_one_directory_compute_once() {
    let dir = tempfile::tempdir().unwrap();
    let handles = [
        Arc::new(disk(dir.path()).await),
        Arc::new(disk(dir.path()).await),
    ];
    assert_eq!(run_together(&handles, 8, "eight").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_writing_history_keep_both_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        Arc::new(disk(dir.path()).await),
        Arc::new(disk(dir.path()).await),
    );
    let mut tasks = Vec::new();
    for i in 0..6u32 {
        let c = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            c.run_text(&transform(100 + i), "r").await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Every run's own manifest is there whatever the race did to the history.
    for i in 0..6u32 {
        let e = a.explain(&transform(100 + i)).await.unwrap();
        let Explanation::Hit { manifest: Some(_) } = e else {
            panic!("{e}")
        };
    }
    let history = a.step_history("transform").await.unwrap();
    assert!(!history.is_empty() && history.len() <= 6, "{history:?}");
}

/// The history re-check: `b` reads the history, `a` reads, writes and is
/// held before its re-check, `b` writes over `a`'s version, and `a`'s
/// re-check puts its run back. Both runs end in the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_write_lost_to_another_handle_is_put_back() {
    let dir = tempfile::tempdir().unwrap();
    let a = Arc::new(Wrapped::new(Arc::new(disk(dir.path()).await)));
    let b = Arc::new(Wrapped::new(Arc::new(disk(dir.path()).await)));
    // The calls of a miss: get, manifest get, history get, set, head,
    // manifest set, history get (6), history set (7), re-check get (8), ...
    b.park_at.store(7, Ordering::SeqCst);
    a.park_at.store(8, Ordering::SeqCst);
    let spawn = |c: Arc<Wrapped>, rows: u32| {
        tokio::spawn(async move {
            c.run_text(&transform(rows), "r").await;
        })
    };
    let run_b = spawn(b.clone(), 1);
    b.parked.notified().await; // b has read the empty history
    let run_a = spawn(a.clone(), 2);
    a.parked.notified().await; // a has written [a] and waits to re-check
    b.release.notify_one();
    run_b.await.unwrap(); // b wrote [b] over [a]
    a.release.notify_one();
    run_a.await.unwrap(); // a's re-check finds its run missing, merges
    let rows = rows_of(&a.step_history("transform").await.unwrap());
    assert_eq!(rows, ["1", "2"]);
}

/// How many cache calls a miss of `run` makes (at least five), counted on
/// a new memory cache.
async fn cache_calls<F, Fut, T>(run: &F) -> usize
where
    F: Fn(Arc<Wrapped>) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let probe = Arc::new(Wrapped::new(Arc::new(MemoryCache::new())));
    run(probe.clone()).await.unwrap();
    let calls = probe.calls.load(Ordering::SeqCst);
    assert!(calls >= 5, "{calls}");
    calls
}

/// A new memory cache on which a run of `run` was dropped as it made its
/// cache call number `park`.
async fn dropped_at<F, Fut, T>(run: &F, park: usize) -> Arc<dyn Cache>
where
    F: Fn(Arc<Wrapped>) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>> + Send + 'static,
    T: Send + 'static,
{
    let inner: Arc<dyn Cache> = Arc::new(MemoryCache::new());
    let w = Arc::new(Wrapped::new(inner.clone()));
    w.park_at.store(park, Ordering::SeqCst);
    let parked = w.parked.clone();
    let dropped = run(w);
    let task = tokio::spawn(async move {
        let _ = dropped.await;
    });
    parked.notified().await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    inner
}

/// A run dropped at each of its awaits leaves a cache where the next run
/// returns the right value and computes at most once.
#[tokio::test]
async fn a_run_dropped_at_any_await_leaves_a_usable_cache() {
    let run = |w: Arc<Wrapped>| async move {
        w.run(&transform(1), RunOptions::new(), || async { text("v") })
            .await
    };
    for park in 0..cache_calls(&run).await {
        let inner = dropped_at(&run, park).await;
        let computed = AtomicUsize::new(0);
        let ran = inner
            .run(&transform(1), RunOptions::new(), || async {
                computed.fetch_add(1, Ordering::SeqCst);
                text("v")
            })
            .await
            .unwrap();
        assert_eq!(ran.value, Value::from("v"), "dropped at call {park}");
        assert!(computed.load(Ordering::SeqCst) <= 1);
        let e = inner.explain(&transform(1)).await.unwrap();
        assert!(e.is_hit(), "dropped at call {park}: {e}");
    }
}

/// Another writer stores under the step's key between the run's check and
/// its set: the run's own value is what it returns and what stays.
#[tokio::test]
async fn a_writer_between_check_and_set_is_overwritten_by_the_run() {
    let (mem, w) = wrapped_memory();
    let key = key_of(&transform(9)).await;
    *w.sneak.lock().unwrap() = Some((key.clone(), Value::from("from elsewhere")));
    let ran = w.run_text(&transform(9), "mine").await;
    assert_eq!(ran.value, Value::from("mine"));
    assert_eq!(mem.get(&key).await.unwrap(), Some(Value::from("mine")));
    assert!(
        w.sneak.lock().unwrap().is_none(),
        "the other writer did write"
    );
    let again = w.run_text(&transform(9), "no").await;
    assert_eq!(again.value, Value::from("mine"));
}

/// What explains results (manifests, history, tallies) never fails a run: a
/// cache that refuses those entries still computes, stores and serves.
#[tokio::test]
async fn a_cache_refusing_the_bookkeeping_still_runs_and_serves_the_step() {
    let cache = Wrapped::new(Arc::new(MemoryCache::new()));
    *cache.refuse.lock().unwrap() = vec![
        "step-manifest/".into(),
        "step-history/".into(),
        "step-stats/".into(),
    ];
    let ran = cache.run_text(&transform(5), "result").await;
    assert_eq!(ran.value, Value::Text("result".into()));
    match ran.outcome {
        Outcome::Computed { why, .. } => {
            assert_eq!(why.reason(), "unexplained", "{why}");
        }
        other => panic!("a first run computes: {other:?}"),
    }
    let again = cache.run_text(&transform(5), "not again").await;
    assert_eq!(again.value, Value::Text("result".into()));
    assert!(again.outcome.is_hit(), "{:?}", again.outcome);
    // A stream step too: its records refused, its result still served.
    let streamed = Step::new("pages").param("n", &5);
    let ran = cache.run_pages(&streamed, 2, 1).await;
    assert_eq!(all_bytes(ran.value).await.len(), 200_000);
}

/// A manifest is data anyone with write access may change: times out of
/// range read as the epoch, never a panic.
#[tokio::test]
async fn a_manifest_with_times_out_of_range_is_explained_without_panicking() {
    let cache = MemoryCache::new();
    let step = transform(9);
    cache.run_text(&step, "r").await;
    let r = step.resolve().await.unwrap();
    let key = format!("step-manifest/{}/{}", r.name, r.digest);
    let mut m: serde_json::Value = cache.get_json(&key).await.unwrap().unwrap();
    m["expires_at"] = serde_json::json!(1e19); // a Duration, past SystemTime's range
    m["computed_at"] = serde_json::json!(-1e19);
    cache
        .set(&key, Value::Json(m), SetOptions::new())
        .await
        .unwrap();
    cache.delete(&r.key()).await.unwrap();
    let e = cache.explain(&step).await.unwrap();
    assert!(
        matches!(e.reason(), "expired" | "evicted_or_deleted"),
        "{e}"
    );
}

/// An input file rewritten while the step computes: the run returns what it
/// computed, nothing is stored (the key names the file as it was hashed),
/// and the next run computes again from the file as it is. The same for a
/// forced refresh.
#[tokio::test]
async fn a_result_computed_while_an_input_changed_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.csv");
    std::fs::write(&path, "id\n1\n").unwrap();
    let cache = MemoryCache::new();
    let step = Step::new("load").input_file("orders", &path);
    for (round, opts) in [RunOptions::new(), RunOptions::new().refresh(true)]
        .into_iter()
        .enumerate()
    {
        let grown = format!("id\n1\n{}\n", "2\n".repeat(round + 1));
        let ran = cache
            .run(&step, opts, || async {
                std::fs::write(&path, &grown).unwrap();
                text("from a file that changed")
            })
            .await
            .unwrap();
        assert_eq!(ran.value.as_text(), Some("from a file that changed"));
        assert!(
            matches!(ran.outcome, Outcome::Computed { .. }),
            "round {round}"
        );
        assert!(
            cache.keys(None).await.unwrap().is_empty(),
            "round {round}: nothing stored, no manifest"
        );
    }
    // The file left alone: computed once, then a hit.
    let runs = AtomicUsize::new(0);
    for _ in 0..2 {
        cache
            .run(&step, RunOptions::new(), || async {
                runs.fetch_add(1, Ordering::SeqCst);
                text("steady")
            })
            .await
            .unwrap();
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// An object-store input: its e-tag is part of the digest (a new version is
/// a new key), and an object rewritten while the step computes leaves the
/// result unstored, as a file does.
#[cfg(feature = "object-store")]
#[tokio::test]
async fn object_inputs_key_by_version_and_a_change_while_computing_is_not_stored() {
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{ObjectStore, ObjectStoreExt};

    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let location = Path::from("lake/orders.parquet");
    store.put(&location, b"v1".to_vec().into()).await.unwrap();
    let step = Step::new("load").input_object("orders", store.clone(), location.clone());
    let first = step.resolve().await.unwrap();
    assert_eq!(first.digest, step.resolve().await.unwrap().digest);
    store.put(&location, b"v2".to_vec().into()).await.unwrap();
    let second = step.resolve().await.unwrap();
    assert_ne!(first.digest, second.digest);

    let cache = MemoryCache::new();
    let ran = cache
        .run(&step, RunOptions::new(), || async {
            store.put(&location, b"v3".to_vec().into()).await.unwrap();
            text("read while it changed")
        })
        .await
        .unwrap();
    assert!(matches!(ran.outcome, Outcome::Computed { .. }));
    assert!(cache.keys(None).await.unwrap().is_empty(), "nothing stored");
    // Left alone: stored, then a hit.
    cache.run_text(&step, "steady").await;
    let hit = cache.run_text(&step, "never").await;
    assert_eq!(hit.value.as_text(), Some("steady"));
    assert!(matches!(hit.outcome, Outcome::Hit { .. }));
    // A missing object is an error naming the part.
    store.delete(&location).await.unwrap();
    refused(step, "input.orders").await;
}

/// A file swapped in by rename while the step computes, with the same size
/// and modification time (as `cp -p` or `rsync -a` leave it): not stored.
#[cfg(unix)]
#[tokio::test]
async fn a_file_swapped_in_with_the_same_size_and_mtime_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.csv");
    std::fs::write(&path, "id\n1\n").unwrap();
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let cache = MemoryCache::new();
    let step = Step::new("load").input_file("orders", &path);
    let ran = cache
        .run(&step, RunOptions::new(), || async {
            let next = dir.path().join("orders.csv.new");
            std::fs::write(&next, "id\n2\n").unwrap();
            std::fs::File::options()
                .write(true)
                .open(&next)
                .unwrap()
                .set_modified(mtime)
                .unwrap();
            std::fs::rename(&next, &path).unwrap();
            text("read while it was swapped")
        })
        .await
        .unwrap();
    assert!(matches!(ran.outcome, Outcome::Computed { .. }));
    let now = std::fs::metadata(&path).unwrap();
    assert_eq!((now.len(), now.modified().unwrap()), (5, mtime));
    assert!(cache.keys(None).await.unwrap().is_empty(), "nothing stored");
}
