//! `get_range` on DiskCache, which reads an uncompressed entry by position
//! (only the 1 MiB blocks that hold the range, each checked):
//!
//! - a byte changed in a block the range needs makes the read
//!   `Error::Corrupt` and removes the entry; one changed elsewhere is not
//!   read, and the range comes back exact: never a wrong byte;
//! - a range read held after it opened the entry, while the key is
//!   replaced (same length, another length) or deleted, returns the bytes
//!   and metadata of the version it opened, and the next read the new one;
//! - ranges read on one handle while another handle on the same root
//!   replaces the entry each match one version;
//! - a range read dropped while its read is under way leaves the cache as
//!   it was, and the counters in step with the disk.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use etl_cache_core::testing::assert_range_of_one_version;
use etl_cache_core::{Cache, CacheExt, EntryMeta, Error, SetOptions, Value};
use etl_cache_fs::DiskCache;
use etl_cache_fs::fault::{self, Point};
use etl_cache_reliability::{Rng, layout, report, runtime, seed};

const MIB: u64 = 1 << 20;
/// Bytes of the checksum after each block.
const CRC: u64 = 4;
const TRAILER: u64 = 32;

fn random_bytes(rng: &mut Rng, len: u64) -> Vec<u8> {
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// Where block `index`'s stored bytes start in the entry file of `key`.
fn block_offset(root: &Path, key: &str, stored_len: u64, index: u64) -> u64 {
    let path = layout::entry_path(root, key);
    let file_len = std::fs::metadata(&path).unwrap().len();
    let framed = stored_len + CRC * stored_len.div_ceil(MIB);
    let header_len = file_len - framed - TRAILER;
    header_len + index * (MIB + CRC)
}

async fn open(root: &Path) -> DiskCache {
    DiskCache::builder().root(root).build().await.unwrap()
}

#[test]
fn a_range_reads_only_its_blocks_and_never_a_wrong_byte() {
    runtime().block_on(async {
        let mut rng = Rng::new(seed());
        let len = 5 * MIB + 1000;
        let blocks = len.div_ceil(MIB);
        let (mut served, mut refused) = (0, 0);
        for bad in 0..blocks {
            let dir = tempfile::tempdir().unwrap();
            let cache = open(dir.path()).await;
            let data = random_bytes(&mut rng, len);
            let key = "ranges/bitrot";
            set_bytes(&cache, key, &data).await;
            // One byte of block `bad` (its data or its checksum) changed.
            let in_block = rng.below((MIB + CRC).min(len - bad * MIB + CRC));
            let at = block_offset(dir.path(), key, len, bad) + in_block;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(layout::entry_path(dir.path(), key))
                .unwrap();
            let mut b = [0u8];
            file.read_exact_at(&mut b, at).unwrap();
            file.write_all_at(&[b[0] ^ (1 << rng.below(8))], at).unwrap();
            drop(file);
            // Ranges in every other block read exactly.
            for other in (0..blocks).filter(|&i| i != bad) {
                let block_len = MIB.min(len - other * MIB);
                let start = other * MIB + rng.below(block_len / 2);
                let r = start..(start + 65_536).min(len);
                let (meta, got) = cache.get_range(key, r.clone()).await.unwrap().unwrap();
                assert_eq!(meta.logical_len, len);
                assert_eq!(
                    &got[..],
                    &data[r.start as usize..r.end as usize],
                    "block {bad} changed, range {r:?}"
                );
                served += 1;
            }
            // A range that needs the changed block fails, naming the key,
            // and the entry is removed.
            let start = bad * MIB;
            let r = start.saturating_sub(10)..(start + MIB).min(len);
            match cache.get_range(key, r.clone()).await {
                Err(Error::Corrupt { key: k, .. }) => assert_eq!(k, key),
                other => panic!("block {bad} changed, range {r:?}: {other:?}"),
            }
            refused += 1;
            assert!(cache.get_range(key, 0..1).await.unwrap().is_none());
            let stats = cache.stats().await.unwrap();
            assert_eq!((stats.entries, stats.bytes), (0, 0));
            assert!(layout::entry_files(dir.path()).is_empty());
        }
        report(
            "ranges_disk/bitrot",
            &format!(
                "{blocks} entries each with one block changed: {served} ranges elsewhere exact, {refused} ranges over the block Corrupt and the entry removed"
            ),
        );
    });
}

/// The entry changes between the range read's open and its read of the
/// blocks: replaced by a value of the same length, of another length, or
/// deleted.
#[test]
fn a_range_read_held_after_its_open_returns_the_version_it_opened() {
    runtime().block_on(async {
        let mut rng = Rng::new(seed() ^ 1);
        for change in ["same length", "other length", "delete"] {
            let dir = tempfile::tempdir().unwrap();
            let cache = Arc::new(open(dir.path()).await);
            let key = "ranges/held";
            let old = random_bytes(&mut rng, 4 * MIB + 5);
            let new_len = if change == "other length" {
                3 * MIB + 77
            } else {
                old.len() as u64
            };
            let new = random_bytes(&mut rng, new_len);
            let old_meta = set_bytes(&*cache, key, &old).await;
            let r = 2 * MIB - 100..2 * MIB + 65_536;
            let hold = fault::hold(dir.path(), Point::RangeOpened);
            let reading = tokio::spawn({
                let (cache, r) = (cache.clone(), r.clone());
                async move { cache.get_range(key, r).await }
            });
            let reached = tokio::task::block_in_place(|| hold.reached(Duration::from_secs(10)));
            assert!(reached, "{change}: the range read never opened the entry");
            if change == "delete" {
                assert!(cache.delete(key).await.unwrap());
            } else {
                set_bytes(&*cache, key, &new).await;
            }
            hold.release();
            let (meta, got) = reading.await.unwrap().unwrap().expect("it had opened it");
            assert_eq!(meta, old_meta, "{change}");
            assert_eq!(&got[..], &old[r.start as usize..r.end as usize], "{change}");
            let after = cache.get_range(key, r.clone()).await.unwrap();
            match change {
                "delete" => assert!(after.is_none()),
                _ => {
                    let (meta, got) = after.unwrap();
                    assert_eq!(meta.logical_len, new_len, "{change}");
                    assert_eq!(&got[..], &new[r.start as usize..r.end as usize], "{change}");
                }
            }
            let stats = cache.stats().await.unwrap();
            assert_eq!(
                (stats.entries, stats.bytes),
                layout::disk_usage(dir.path()),
                "{change}"
            );
        }
    });
}

#[test]
fn ranges_on_one_handle_while_another_handle_replaces_the_entry() {
    runtime().block_on(async {
        let mut rng = Rng::new(seed() ^ 2);
        let dir = tempfile::tempdir().unwrap();
        let writer = open(dir.path()).await;
        let reader = Arc::new(open(dir.path()).await);
        let key = "ranges/two handles";
        // Distinct lengths tell the versions apart by their metadata.
        let versions: Arc<Vec<Vec<u8>>> = Arc::new(
            (0..5)
                .map(|i| random_bytes(&mut rng, 2 * MIB + i * 65_537 + 3))
                .collect(),
        );
        set_bytes(&writer, key, &versions[0]).await;
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for t in 0..3u64 {
            let (reader, versions, stop) = (reader.clone(), versions.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let (mut reads, mut at) = (0u64, t * 700_001);
                while !stop.load(Ordering::SeqCst) || reads < 10 {
                    assert_range_of_one_version(&*reader, key, at..at + 100_000, &versions).await;
                    reads += 1;
                    at = (at + 1_048_573) % (2 * MIB);
                }
                reads
            }));
        }
        for round in 0..40 {
            let v = &versions[round % versions.len()];
            set_bytes(&writer, key, v).await;
        }
        stop.store(true, Ordering::SeqCst);
        let mut reads = 0;
        for t in tasks {
            reads += t.await.unwrap();
        }
        report(
            "ranges_disk/two_handles",
            &format!(
                "{reads} ranges read on one handle during 40 sets on another: each one version"
            ),
        );
        let stats = writer.stats().await.unwrap();
        assert_eq!((stats.entries, stats.bytes), layout::disk_usage(dir.path()));
    });
}

/// `get_range` awaits once, for its blocking read: dropped before its first
/// poll, and dropped while that read is held open.
#[test]
fn a_dropped_range_read_leaves_the_cache_as_it_was() {
    runtime().block_on(async {
        let mut rng = Rng::new(seed() ^ 3);
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(open(dir.path()).await);
        let key = "ranges/dropped";
        let data = random_bytes(&mut rng, 3 * MIB);
        set_bytes(&*cache, key, &data).await;
        drop(cache.get_range(key, 0..10));
        let hold = fault::hold(dir.path(), Point::RangeOpened);
        let reading = tokio::spawn({
            let cache = cache.clone();
            async move { cache.get_range(key, MIB..MIB + 10).await }
        });
        assert!(tokio::task::block_in_place(
            || hold.reached(Duration::from_secs(10))
        ));
        reading.abort();
        assert!(reading.await.unwrap_err().is_cancelled());
        hold.release();
        // The entry, the counters and later writes are as if the reads had
        // not been made.
        let r = 2 * MIB..2 * MIB + 65_536;
        let (_, got) = cache.get_range(key, r.clone()).await.unwrap().unwrap();
        assert_eq!(&got[..], &data[r.start as usize..r.end as usize]);
        cache
            .set_text(key, "replaced", SetOptions::new())
            .await
            .unwrap();
        assert_eq!(
            cache.get_text(key).await.unwrap().as_deref(),
            Some("replaced")
        );
        let stats = cache.stats().await.unwrap();
        assert_eq!((stats.entries, stats.bytes), layout::disk_usage(dir.path()));
    });
}

/// Sets `key` to a copy of the bytes `data`, with the default options.
async fn set_bytes(cache: &dyn Cache, key: &str, data: &[u8]) -> EntryMeta {
    let value = Value::Bytes(Bytes::copy_from_slice(data));
    cache.set(key, value, SetOptions::new()).await.unwrap()
}
