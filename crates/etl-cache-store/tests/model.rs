//! Random sequences of reads and writes through a CachedStore, each read
//! checked against the same read of the bare inner store: the bytes, the
//! range and the metadata are the same, or both fail (with the same kind
//! when it is NotFound). Writes go through the store or behind its back.

mod common;

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use common::{MIB, Watched, bytes, mib_store};
use etl_cache_core::{Cache, MemoryCache};
use etl_cache_store::Revalidate;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Write `size` bytes of pattern `seed`, through the store or behind it.
    Put {
        path: u8,
        size: usize,
        seed: u8,
        behind: bool,
    },
    Delete {
        path: u8,
        behind: bool,
    },
    Get {
        path: u8,
        range: Option<GetRange>,
    },
    Ranges {
        path: u8,
        ranges: Vec<Range<u64>>,
    },
    Head {
        path: u8,
    },
}

fn pattern(seed: u8) -> Bytes {
    static POOL: OnceLock<Vec<Bytes>> = OnceLock::new();
    POOL.get_or_init(|| (0..4).map(|s| bytes(3 * MIB + 64, s)).collect())[seed as usize % 4].clone()
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        1usize..300,
        Just(MIB - 1),
        Just(MIB),
        Just(MIB + 1),
        (MIB - 100)..(3 * MIB + 64),
    ]
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..10,
        (MIB as u64 - 5)..(MIB as u64 + 5),
        0u64..(3 * MIB as u64 + 200),
    ]
}

fn range() -> impl Strategy<Value = Option<GetRange>> {
    prop_oneof![
        Just(None),
        (offset(), 1u64..(2 * MIB as u64)).prop_map(|(s, l)| Some(GetRange::Bounded(s..s + l))),
        offset().prop_map(|o| Some(GetRange::Offset(o))),
        (1u64..(3 * MIB as u64)).prop_map(|n| Some(GetRange::Suffix(n))),
    ]
}

fn op(behind_writes: bool) -> impl Strategy<Value = Op> {
    let behind = if behind_writes {
        any::<bool>().boxed()
    } else {
        Just(false).boxed()
    };
    prop_oneof![
        3 => (0u8..3, size(), any::<u8>(), behind.clone())
            .prop_map(|(path, size, seed, behind)| Op::Put { path, size, seed, behind }),
        1 => (0u8..3, behind).prop_map(|(path, behind)| Op::Delete { path, behind }),
        5 => (0u8..3, range()).prop_map(|(path, range)| Op::Get { path, range }),
        2 => (0u8..3, prop::collection::vec((offset(), 1u64..(MIB as u64 + 9)), 1..5))
            .prop_map(|(path, rs)| Op::Ranges { path, ranges: rs.into_iter().map(|(s, l)| s..s + l).collect() }),
        1 => (0u8..3).prop_map(|path| Op::Head { path }),
    ]
}

fn same_error(a: &object_store::Error, b: &object_store::Error) -> bool {
    use object_store::Error::NotFound;
    matches!(a, NotFound { .. }) == matches!(b, NotFound { .. })
}

async fn run(ops: Vec<Op>, revalidate: Revalidate, cache: Arc<dyn Cache>) -> Result<(), String> {
    let (inner, bare, _) = Watched::new();
    let store = mib_store(inner, cache, revalidate).await;
    let path = |i: u8| Path::from(format!("t/part-{i}.parquet"));
    for (n, op) in ops.iter().enumerate() {
        let ctx = format!("op {n} {op:?}");
        match op {
            Op::Put {
                path: p,
                size,
                seed,
                behind,
            } => {
                let payload = pattern(*seed).slice(..*size);
                let target: &dyn ObjectStore = if *behind { bare.as_ref() } else { &store };
                target.put(&path(*p), payload.into()).await.unwrap();
            }
            Op::Delete { path: p, behind } => {
                let target: &dyn ObjectStore = if *behind { bare.as_ref() } else { &store };
                let _ = target.delete(&path(*p)).await;
            }
            Op::Get { path: p, range } => {
                let o = GetOptions::new().with_range(range.clone());
                let want = bare.get_opts(&path(*p), o.clone()).await;
                let got = store.get_opts(&path(*p), o).await;
                match (want, got) {
                    (Ok(w), Ok(g)) => {
                        if w.range != g.range || w.meta != g.meta {
                            return Err(format!(
                                "{ctx}: range/meta {:?} {:?} vs {:?} {:?}",
                                g.range, g.meta, w.range, w.meta
                            ));
                        }
                        let (w, g) = (w.bytes().await.unwrap(), g.bytes().await);
                        match g {
                            Ok(g) if g == w => {}
                            Ok(g) => {
                                return Err(format!(
                                    "{ctx}: {} bytes differ from the bare {}",
                                    g.len(),
                                    w.len()
                                ));
                            }
                            Err(e) => return Err(format!("{ctx}: stream failed: {e}")),
                        }
                    }
                    (Err(w), Err(g)) if same_error(&w, &g) => {}
                    (w, g) => {
                        return Err(format!(
                            "{ctx}: bare {:?} vs cached {:?}",
                            w.map(|r| r.range),
                            g.map(|r| r.range)
                        ));
                    }
                }
            }
            Op::Ranges { path: p, ranges } => {
                let want = bare.get_ranges(&path(*p), ranges).await;
                let got = store.get_ranges(&path(*p), ranges).await;
                match (want, got) {
                    (Ok(w), Ok(g)) if w == g => {}
                    (Err(w), Err(g)) if same_error(&w, &g) => {}
                    (w, g) => {
                        return Err(format!(
                            "{ctx}: bare {:?} vs cached {:?}",
                            w.map(|v| v.len()),
                            g.map(|v| v.len())
                        ));
                    }
                }
            }
            Op::Head { path: p } => {
                let want = bare.head(&path(*p)).await;
                let got = store.head(&path(*p)).await;
                match (want, got) {
                    (Ok(w), Ok(g)) if w == g => {}
                    (Err(w), Err(g)) if same_error(&w, &g) => {}
                    (w, g) => return Err(format!("{ctx}: bare {w:?} vs cached {g:?}")),
                }
            }
        }
    }
    Ok(())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn cases(default: u32) -> u32 {
    std::env::var("ETL_CACHE_LONG").map_or(default, |_| default * 10)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(10_000), failure_persistence: None, ..ProptestConfig::default() })]

    /// Revalidated at every call, with writes through the store and behind
    /// it: every read is the bare store's.
    #[test]
    fn always_revalidated_reads_are_the_inner_stores(ops in prop::collection::vec(op(true), 1..10)) {
        let r = rt().block_on(run(ops, Revalidate::Always, Arc::new(MemoryCache::new())));
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2_000), failure_persistence: None, ..ProptestConfig::default() })]

    /// Never revalidated, with every write through the store: every read
    /// is the bare store's too.
    #[test]
    fn never_revalidated_reads_see_every_write_made_through_the_store(ops in prop::collection::vec(op(false), 1..10)) {
        let r = rt().block_on(run(ops, Revalidate::Never, Arc::new(MemoryCache::new())));
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(100), failure_persistence: None, ..ProptestConfig::default() })]

    /// The same on the default cache, a DiskCache.
    #[test]
    fn reads_through_a_disk_cache_are_the_inner_stores(ops in prop::collection::vec(op(true), 1..8)) {
        let dir = tempfile::tempdir().unwrap();
        let r = rt().block_on(async {
            let cache: Arc<dyn Cache> = Arc::new(etl_cache_fs::DiskCache::open(dir.path()).await.unwrap());
            run(ops, Revalidate::Always, cache).await
        });
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}
