//! Bit rot: random bytes of stored files are flipped (in the header, the
//! payload or the trailer; one byte or several), or files are cut short or
//! grown, in place. Every read must then be `Error::Corrupt` naming the key
//! (or, for a stream, end with an `InvalidData` error) — never different
//! bytes — and the entry must be gone afterwards, with the counters in step
//! with the disk.
//!
//! DiskCache: `ETL_CACHE_FLIPS` trials (default 1,500; 20,000 with
//! `ETL_CACHE_LONG=1`) over every kind, codec and the three read paths
//! (small entries read inline, whole reads, large entries read in parts).
//! ObjectCache over LocalFileSystem: a third as many; and a fifteenth as
//! many files cut short while a stream of them is read.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use etl_cache_core::{Cache, Compression, Error, Kind, SetOptions, Value};
use etl_cache_fs::DiskCache;
use etl_cache_object::ObjectCache;
use etl_cache_reliability::payload::{self, Style};
use etl_cache_reliability::{Rng, iterations, layout, report, runtime, seed};
use futures::{StreamExt, TryStreamExt};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Region {
    Header,
    Payload,
    Trailer,
    Truncate,
    Extend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Read {
    Get,
    GetEntry,
    Stream,
    HeadThenGet,
    ListThenGet,
}

#[derive(Default, Debug)]
struct Tally {
    trials: u64,
    bytes_flipped: u64,
    by_region: BTreeMap<String, u64>,
    by_read: BTreeMap<String, u64>,
    corrupt_on_open: u64,
    corrupt_mid_stream: u64,
    stream_bytes_before_error: u64,
    head_passed_payload_damage: u64,
    list_skipped: u64,
    size_drifts: u64,
    foreign_after_magic_damage: u64,
}

fn compression(rng: &mut Rng) -> Compression {
    match rng.below(4) {
        0 | 1 => Compression::NONE,
        2 => Compression::gzip(),
        _ => Compression::zstd(),
    }
}

fn length(rng: &mut Rng) -> usize {
    match rng.below(4) {
        0 => rng.range(0, 100) as usize,
        1 => rng.range(100, 16_000) as usize,
        2 => rng.range(16_000, 60_000) as usize,
        _ => rng.range(70_000, 400_000) as usize,
    }
}

/// Damages `file` in place; returns the region, how many bytes changed, and
/// whether the four magic bytes at the start were hit.
fn damage(file: &Path, header_len: u64, rng: &mut Rng) -> (Region, u64, bool) {
    let size = std::fs::metadata(file).expect("stat").len();
    let payload_len = size - header_len - 32;
    let region = match rng.below(20) {
        0..6 => Region::Header,
        6..13 if payload_len > 0 => Region::Payload,
        6..18 => Region::Trailer,
        18 => Region::Truncate,
        _ => Region::Extend,
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .expect("open the entry");
    match region {
        Region::Truncate => {
            let to = rng.below(size);
            f.set_len(to).expect("truncate");
            return (region, 1, to < 4);
        }
        Region::Extend => {
            let extra = rng.range(1, 64);
            f.write_all_at(&vec![0xA5; extra as usize], size)
                .expect("extend");
            return (region, extra, false);
        }
        _ => {}
    }
    let (lo, hi) = match region {
        Region::Header => (0, header_len),
        Region::Payload => (header_len, header_len + payload_len),
        _ => (size - 32, size),
    };
    let n = if rng.chance(70) {
        1
    } else {
        rng.range(2, 8).min(hi - lo)
    };
    let mut offsets = std::collections::BTreeSet::new();
    while (offsets.len() as u64) < n {
        offsets.insert(rng.range(lo, hi - 1));
    }
    for &at in &offsets {
        let mut b = [0u8];
        f.read_exact_at(&mut b, at).expect("read a byte");
        b[0] ^= rng.range(1, 255) as u8;
        f.write_all_at(&b, at).expect("write a byte");
    }
    (region, n, offsets.first().is_some_and(|&at| at < 4))
}

fn expect_corrupt(r: &etl_cache_core::Result<impl std::fmt::Debug>, key: &str, what: &str) {
    match r {
        Err(Error::Corrupt { key: k, .. }) => {
            assert_eq!(
                k,
                &Error::display_key(key),
                "{what}: the error names the key"
            )
        }
        other => panic!("{what}: want Error::Corrupt for {key:?}, got {other:?}"),
    }
}

/// Reads the damaged entry one way; checks the answer.
async fn read_damaged(
    cache: &dyn Cache,
    key: &str,
    region: Region,
    how: Read,
    want: &Value,
    t: &mut Tally,
    removes_on_read: bool,
) {
    match how {
        Read::Get => expect_corrupt(&cache.get(key).await, key, "get"),
        Read::GetEntry => expect_corrupt(&cache.get_entry(key).await, key, "get_entry"),
        Read::Stream => match cache.get_stream(key, 7_777).await {
            Err(e) => {
                expect_corrupt(&Err::<(), _>(e), key, "get_stream");
                t.corrupt_on_open += 1;
            }
            Ok(None) => panic!("get_stream of a damaged entry: a miss, not an error"),
            Ok(Some(s)) => {
                let mut s = s.into_parts().1;
                let mut got = 0u64;
                loop {
                    match s.next().await {
                        Some(Ok(c)) => got += c.len() as u64,
                        Some(Err(e)) => {
                            assert_eq!(
                                e.kind(),
                                std::io::ErrorKind::InvalidData,
                                "a damaged stream ends with InvalidData: {e}"
                            );
                            let err = etl_cache_core::stream_read_error(key, e);
                            expect_corrupt(&Err::<(), _>(err), key, "stream");
                            break;
                        }
                        None => panic!(
                            "a stream of a damaged entry ({region:?}) completed ({got} bytes; want {})",
                            want.to_bytes().len()
                        ),
                    }
                }
                t.corrupt_mid_stream += 1;
                t.stream_bytes_before_error += got;
            }
        },
        Read::HeadThenGet => {
            match cache.head(key).await {
                Ok(Some(m)) => {
                    // head reads the header and trailer only: payload damage
                    // shows on the read that follows.
                    assert_eq!(region, Region::Payload, "head passed {region:?} damage");
                    assert_eq!(m.logical_len, want.to_bytes().len() as u64);
                    t.head_passed_payload_damage += 1;
                    expect_corrupt(&cache.get(key).await, key, "get after head");
                }
                r => expect_corrupt(&r, key, "head"),
            }
        }
        Read::ListThenGet => {
            let listed = listed_keys(cache, "list never fails on a damaged entry").await;
            if listed.iter().any(|k| k == key) {
                assert_eq!(region, Region::Payload, "list passed {region:?} damage");
                expect_corrupt(&cache.get(key).await, key, "get after list");
            } else {
                // Skipped by the listing; removed by it too where reads
                // remove (DiskCache), still reported where they cannot
                // (ObjectCache).
                t.list_skipped += 1;
                match cache.get(key).await {
                    Ok(None) if removes_on_read => {}
                    r => expect_corrupt(&r, key, "get after list"),
                }
            }
        }
    }
}

async fn set_random(cache: &dyn Cache, key: &str, rng: &mut Rng, seq: u64) -> Value {
    let opts = SetOptions::new().compression(compression(rng));
    let len = length(rng);
    let style = *rng.pick(&[Style::Text, Style::Random]);
    if rng.chance(25) {
        let s = payload::stream(key, seq, len, style, vec![rng.range(1000, 70_000) as usize]);
        cache.set_stream(key, s, opts).await.expect("set_stream");
        let mut all = Vec::new();
        let mut s = payload::stream(key, seq, len, style, vec![65536]);
        while let Some(c) = s.next().await {
            all.extend_from_slice(&c.expect("chunk"));
        }
        Value::Bytes(Bytes::from(all))
    } else {
        let kind = *rng.pick(&[Kind::Text, Kind::Bytes, Kind::Json]);
        let v = payload::value(key, seq, kind, len, style);
        cache.set(key, v.clone(), opts).await.expect("set");
        v
    }
}

fn pick_read(rng: &mut Rng) -> Read {
    *rng.pick(&[
        Read::Get,
        Read::Get,
        Read::GetEntry,
        Read::Stream,
        Read::Stream,
        Read::HeadThenGet,
        Read::ListThenGet,
    ])
}

/// A trial's setup: its share (one in `share`) of the flips to try, the
/// run's seed, a generator seeded from it and `salt`, and a new temporary
/// directory.
fn trial_setup(share: u64, salt: u64) -> (u64, u64, Rng, tempfile::TempDir) {
    let trials = iterations("ETL_CACHE_FLIPS", 1_500, 20_000) / share;
    let seed = seed();
    let rng = Rng::new(seed ^ salt);
    let dir = tempfile::tempdir().expect("tempdir");
    (trials, seed, rng, dir)
}

/// The keys `cache` lists; `what` names the listing if it fails.
async fn listed_keys(cache: &dyn Cache, what: &str) -> Vec<String> {
    cache
        .list(None)
        .map_ok(|m| m.key)
        .try_collect()
        .await
        .expect(what)
}

#[test]
fn disk_cache_reports_and_removes_damaged_entries() {
    let (trials, seed, mut rng, dir) = trial_setup(1, 0);
    let root = dir.path().join("cache");
    let rt = runtime();
    let started = Instant::now();
    let mut t = Tally::default();
    rt.block_on(async {
        let cache = DiskCache::open(&root).await.expect("open");
        // A bystander that must survive every trial untouched.
        cache
            .set("bystander", "still here".into(), SetOptions::new())
            .await
            .expect("set");
        for i in 0..trials {
            let key = format!("rot/{}/entry", i % 8);
            let want = set_random(&cache, &key, &mut rng, i).await;
            let file = layout::entry_path(&root, &key);
            let header_len = (26 + key.len() + 4) as u64;
            let (region, n, _) = damage(&file, header_len, &mut rng);
            let how = pick_read(&mut rng);
            read_damaged(&cache, &key, region, how, &want, &mut t, true).await;
            assert!(
                !file.exists(),
                "trial {i}: the damaged entry ({region:?}, read by {how:?}) was not removed"
            );
            assert_eq!(cache.get(&key).await.expect("get"), None, "gone for good");
            if matches!(region, Region::Truncate | Region::Extend) {
                // The counters subtract the size found on disk when removing
                // an entry: a file whose size changed behind the cache's back
                // leaves them off by the difference until a recount (done at
                // every open alone, e.g. after the power loss that tore it).
                let s = cache.stats().await.expect("stats");
                let truth = layout::disk_usage(&root);
                t.size_drifts += u64::from((s.entries, s.bytes) != truth);
                let r = cache.recount().await.expect("recount");
                assert_eq!((r.entries, r.bytes), truth, "recount repairs the counters");
            }
            t.trials += 1;
            t.bytes_flipped += n;
            *t.by_region.entry(format!("{region:?}")).or_default() += 1;
            *t.by_read.entry(format!("{how:?}")).or_default() += 1;
            if i % 64 == 0 {
                let s = cache.stats().await.expect("stats");
                assert_eq!(
                    (s.entries, s.bytes),
                    layout::disk_usage(&root),
                    "counters out of step with the disk"
                );
            }
        }
        assert_eq!(
            cache
                .get("bystander")
                .await
                .expect("get")
                .and_then(|v| v.as_text().map(String::from))
                .as_deref(),
            Some("still here")
        );
        let s = cache.stats().await.expect("stats");
        assert_eq!((s.entries, s.bytes), layout::disk_usage(&root));
        assert_eq!(s.entries, 1);
    });
    report(
        "bitrot",
        &format!(
            "DiskCache: seed={seed} trials={} bytes_damaged={} by_region={:?} by_read={:?} \
             corrupt_at_open(stream)={} corrupt_mid_stream={} bytes_streamed_before_error={} \
             head_passed_payload_damage={} list_skipped={} counter_drifts_after_size_change={} took={:.1}s",
            t.trials,
            t.bytes_flipped,
            t.by_region,
            t.by_read,
            t.corrupt_on_open,
            t.corrupt_mid_stream,
            t.stream_bytes_before_error,
            t.head_passed_payload_damage,
            t.list_skipped,
            t.size_drifts,
            started.elapsed().as_secs_f64()
        ),
    );
}

/// The single file under `dir` whose name is not one of `known`.
fn stored_file(dir: &Path, key_marker: &str) -> PathBuf {
    let files: Vec<PathBuf> = layout::walk(dir)
        .into_iter()
        .filter(|p| p.is_file() && p.to_string_lossy().contains(key_marker))
        .collect();
    assert_eq!(
        files.len(),
        1,
        "one object file for {key_marker}: {files:?}"
    );
    files.into_iter().next().expect("one")
}

#[test]
fn object_cache_on_local_files_reports_and_removes_damaged_entries() {
    let (trials, seed, mut rng, dir) = trial_setup(3, 0x000B_1EC7);
    let rt = runtime();
    let started = Instant::now();
    let mut t = Tally::default();
    rt.block_on(async {
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir.path())
            .expect("LocalFileSystem");
        let cache: Arc<dyn Cache> =
            Arc::new(ObjectCache::new(Arc::new(store), "cache").expect("ObjectCache"));
        for i in 0..trials {
            let key = format!("rot/entry{}", i % 8);
            let want = set_random(&*cache, &key, &mut rng, i).await;
            let file = stored_file(dir.path(), &format!("entry{}", i % 8));
            let header_len = (26 + key.len() + 4) as u64;
            let (region, n, magic) = damage(&file, header_len, &mut rng);
            let how = pick_read(&mut rng);
            if magic {
                // Without its magic the object is not an entry to the cache:
                // a read fails naming the key and the object, and the object
                // is kept (an ObjectCache never deletes what it did not
                // write). No bytes come back.
                foreign_read(&*cache, &key, how).await;
                assert!(file.exists(), "a foreign object must be kept");
                t.foreign_after_magic_damage += 1;
            } else {
                read_damaged(&*cache, &key, region, how, &want, &mut t, false).await;
                // Reads never delete from an object store (no conditional
                // delete: another host may have written the key since);
                // purge_expired removes the damaged object.
                assert!(
                    file.exists(),
                    "trial {i}: a read ({region:?}, {how:?}) removed the damaged object"
                );
                // A purge reads headers and trailers, not payloads: damage to
                // those it removes; payload damage stays reported on every
                // read until the key is written again.
                cache.purge_expired().await.expect("purge");
                if region == Region::Payload {
                    assert!(file.exists(), "trial {i}: purge found payload damage");
                    expect_corrupt(&cache.get(&key).await, &key, "get after purge");
                } else {
                    assert!(
                        !file.exists(),
                        "trial {i}: the damaged object ({region:?}, read by {how:?}) was not purged"
                    );
                }
            }
            t.trials += 1;
            t.bytes_flipped += n;
            *t.by_region.entry(format!("{region:?}")).or_default() += 1;
            *t.by_read.entry(format!("{how:?}")).or_default() += 1;
        }
    });
    report(
        "bitrot",
        &format!(
            "ObjectCache(LocalFileSystem): seed={seed} trials={} bytes_damaged={} by_region={:?} \
             by_read={:?} corrupt_mid_stream={} head_passed_payload_damage={} list_skipped={} \
             magic_damaged_kept_as_foreign={} took={:.1}s",
            t.trials,
            t.bytes_flipped,
            t.by_region,
            t.by_read,
            t.corrupt_mid_stream,
            t.head_passed_payload_damage,
            t.list_skipped,
            t.foreign_after_magic_damage,
            started.elapsed().as_secs_f64()
        ),
    );
}

/// Reads an object whose magic is damaged: an error naming the key (kind
/// NotAnEntry), or nothing listed.
async fn foreign_read(cache: &dyn Cache, key: &str, how: Read) {
    let not_an_entry = |e: &Error| {
        matches!(e, Error::Backend { key: k, source, .. }
            if k == &Error::display_key(key)
                && etl_cache_object::ObjectError::find(e)
                    .is_some_and(|o| o.kind() == etl_cache_object::ObjectErrorKind::NotAnEntry)
                && !source.to_string().is_empty())
    };
    match how {
        Read::ListThenGet => {
            let listed = listed_keys(cache, "list").await;
            assert!(
                !listed.iter().any(|k| k == key),
                "a foreign object is not listed"
            );
        }
        Read::Stream => match cache.get_stream(key, 4096).await {
            Err(e) => assert!(not_an_entry(&e), "get_stream: {e:?}"),
            Ok(s) => panic!(
                "get_stream of a foreign object: {:?}",
                s.map(|s| s.meta().clone())
            ),
        },
        Read::HeadThenGet => match cache.head(key).await {
            Err(e) => assert!(not_an_entry(&e), "head: {e:?}"),
            Ok(m) => panic!("head of a foreign object: {m:?}"),
        },
        _ => match cache.get(key).await {
            Err(e) => assert!(not_an_entry(&e), "get: {e:?}"),
            Ok(v) => panic!("get of a foreign object returned {:?}", v.map(|v| v.kind())),
        },
    }
}

/// A file cut short while a stream of it is read, on an ObjectCache over
/// LocalFileSystem: the stream must end with an error naming the key (the
/// body is resumed pinned to the object's version, which the cut changed),
/// or — when everything was already read before the cut — with exactly the
/// right bytes. Never a hang, never short or wrong data. Every step runs
/// under a deadline; a hang fails the test without waiting for the threads
/// stuck in it.
#[test]
fn object_cache_on_local_files_fails_a_file_cut_while_streamed() {
    let (trials, seed, mut rng, dir) = trial_setup(15, 0x00C0_77ED);
    let rt = runtime();
    let started = Instant::now();
    let mut by_error: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_codec: BTreeMap<String, u64> = BTreeMap::new();
    let (mut errors, mut complete, mut streamed_before_error) = (0u64, 0u64, 0u64);
    let deadline = std::time::Duration::from_secs(30);
    let body = async {
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir.path())
            .expect("LocalFileSystem");
        let cache = ObjectCache::new(Arc::new(store), "cache").expect("ObjectCache");
        for i in 0..trials {
            let key = format!("cut/entry{}", i % 8);
            let compression = compression(&mut rng);
            let len = rng.range(300_000, 1_500_000) as usize;
            let want = payload::value(&key, i, Kind::Bytes, len, Style::Random).to_bytes();
            tokio::time::timeout(
                deadline,
                cache.set(
                    &key,
                    Value::Bytes(want.clone()),
                    SetOptions::new().compression(compression),
                ),
            )
            .await
            .expect("set hung")
            .expect("set");
            let file = stored_file(dir.path(), &format!("entry{}", i % 8));
            let size = std::fs::metadata(&file).expect("stat").len();
            let chunk = rng.range(1, 64 * 1024) as usize;
            let mut s = tokio::time::timeout(deadline, cache.get_stream(&key, chunk))
                .await
                .expect("get_stream hung")
                .expect("get_stream")
                .expect("present")
                .into_parts()
                .1;
            let mut got: Vec<u8> = Vec::new();
            for _ in 0..rng.below(3) {
                match tokio::time::timeout(deadline, s.next()).await {
                    Ok(Some(Ok(b))) => got.extend_from_slice(&b),
                    other => panic!("trial {i}: before the cut: {other:?}"),
                }
            }
            let cut_to = rng.below(size);
            std::fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .expect("open")
                .set_len(cut_to)
                .expect("cut");
            let end = loop {
                match tokio::time::timeout(deadline, s.next()).await {
                    Err(_) => panic!(
                        "trial {i} ({compression:?}, {size} bytes cut to {cut_to}): the stream hangs"
                    ),
                    Ok(Some(Ok(b))) => got.extend_from_slice(&b),
                    Ok(Some(Err(e))) => break Some(e),
                    Ok(None) => break None,
                }
            };
            *by_codec
                .entry(format!("{:?}", compression.codec()))
                .or_default() += 1;
            match end {
                None => {
                    assert_eq!(
                        got, want,
                        "trial {i}: a stream that completes has exactly the value"
                    );
                    complete += 1;
                }
                Some(e) => {
                    assert!(got.len() < want.len(), "trial {i}: an error after it all");
                    assert_eq!(&got[..], &want[..got.len()], "trial {i}: wrong bytes");
                    let err = etl_cache_core::stream_read_error(&key, e);
                    assert_eq!(
                        err.key(),
                        Some(Error::display_key(&key).as_str()),
                        "trial {i}: the error names the key: {err}"
                    );
                    let kind = match etl_cache_object::ObjectError::find(&err) {
                        Some(o) => {
                            assert!(
                                matches!(
                                    o.kind(),
                                    etl_cache_object::ObjectErrorKind::Truncated
                                        | etl_cache_object::ObjectErrorKind::Changed
                                ),
                                "trial {i}: {o}"
                            );
                            format!("{:?}", o.kind())
                        }
                        None => {
                            assert!(matches!(err, Error::Corrupt { .. }), "trial {i}: {err:?}");
                            "Corrupt".into()
                        }
                    };
                    *by_error.entry(kind).or_default() += 1;
                    errors += 1;
                    streamed_before_error += got.len() as u64;
                }
            }
            drop(s);
            // The next read of the cut file: an error or a miss, never a hang.
            let r = tokio::time::timeout(deadline, cache.get(&key))
                .await
                .unwrap_or_else(|_| panic!("trial {i}: get of the cut file hangs"));
            assert!(
                !matches!(r, Ok(Some(_))),
                "trial {i}: a cut entry read back"
            );
        }
    };
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(body)));
    rt.shutdown_background();
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
    report(
        "bitrot",
        &format!(
            "ObjectCache(LocalFileSystem), file cut while streamed: seed={seed} trials={trials} \
             by_codec={by_codec:?} ended_with_error={errors} by_error={by_error:?} \
             bytes_streamed_before_error={streamed_before_error} complete_and_exact={complete} \
             took={:.1}s",
            started.elapsed().as_secs_f64()
        ),
    );
}
