//! The removal journal: the last [`SLOTS`] removals of entries (evictions
//! with the limit that made them, expiries, corrupt entries, deletes,
//! clears) with when they happened, in one file of the cache's directory,
//! so that "why is this entry gone?" has an answer after the fact, in any
//! process that uses the directory.
//!
//! The file is a ring of fixed slots after a header that names the format.
//! Records are written with the counters held exclusively (every removal
//! holds them), so writers of all processes take turns; the number of the
//! next record is kept in the counters' file (see `usage`), so a removal
//! and its record cost one more write than a removal alone: the slot.
//! Readers take no lock on the journal. Each slot and the header carry a
//! CRC-32C: a slot torn by a crash is skipped; when the next number is
//! unknown (a root from before the journal) it is found from the slots.
//! The journal is information, never a condition of a removal: a
//! failure to write it is logged and the removal stands. It is not synced:
//! a machine crash may lose its last records.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etl_cache_core::{Removal, RemovalCause};

use crate::sys;
use crate::usage::Locked;

/// How many removals the journal remembers (the file is `(SLOTS + 1) *
/// SLOT_LEN` bytes: 256 KiB).
pub(crate) const SLOTS: u64 = 4096;
const SLOT_LEN: usize = 64;
const MAGIC: [u8; 4] = *b"ETLJ";
const VERSION: u32 = 1;

/// A removal to record: the entry's name (its key's hash, 64 hex digits)
/// and why.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    pub hash: &'a str,
    pub cause: RemovalCause,
}

/// The journal file of one handle; `None` when it could not be opened (the
/// handle then records and remembers nothing, and said so once).
#[derive(Debug)]
pub(crate) struct Journal {
    file: Option<File>,
    /// Whether a failure to write was logged already: on a capped cache
    /// every set records, and one warning says it.
    warned: AtomicBool,
}

impl Journal {
    /// The journal in `file` (opened already, read and write). A new file
    /// gets its header; a file of another format version, or one whose
    /// header cannot be read or written, leaves the handle without a
    /// journal (logged).
    pub(crate) fn open(file: Option<File>) -> Journal {
        let file = file.and_then(|f| match check_header(&f) {
            Ok(()) => Some(f),
            Err(e) => {
                tracing::warn!(error = %e, "cannot use the removal journal; removals go unrecorded");
                None
            }
        });
        Journal {
            file,
            warned: AtomicBool::new(false),
        }
    }

    /// Appends `records`, all at `at`, with the counters held (`u`), which
    /// keep the next record's number. Never fails: the first failure of
    /// the handle is logged.
    pub(crate) fn record(&self, u: &Locked<'_>, records: &[Record<'_>], at: SystemTime) {
        let Some(file) = &self.file else {
            return;
        };
        if records.is_empty() {
            return;
        }
        if let Err(e) = append(file, u, records, at)
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(error = %e, "could not write the removal journal; removals go on unrecorded");
        }
    }

    /// The latest record of the entry `hash`, if the journal still holds
    /// one; `next` is the next record's number from the counters' file.
    pub(crate) fn last(&self, hash: &str, next: Option<u64>) -> io::Result<Option<Removal>> {
        match &self.file {
            Some(file) => last(file, hash, next),
            None => Ok(None),
        }
    }
}

/// Writes the header of a new (or torn) journal; fails on another version.
fn check_header(file: &File) -> io::Result<()> {
    match read_header(file)? {
        Header::Current => Ok(()),
        // Written by every handle that finds it so: the same bytes.
        Header::Missing => sys::write_all_at(file, &encode_header(), 0),
        Header::Version(v) => Err(io::Error::other(format!(
            "the removal journal has version {v}, this build writes {VERSION}"
        ))),
    }
}

/// Appends `records` at `at` (see [`Journal::record`]).
fn append(file: &File, u: &Locked<'_>, records: &[Record<'_>], at: SystemTime) -> io::Result<()> {
    let mut next = match u.next_record()? {
        Some(n) => n,
        None => recover_next(file)?,
    };
    let nanos = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    for r in records {
        let Some(hash) = decode_hash(r.hash) else {
            continue;
        };
        let slot = encode_slot(next, nanos, r.cause, &hash);
        sys::write_all_at(file, &slot, slot_offset(next))?;
        // Numbers wrap rather than overflow (a forged counters' file may
        // say anything); a record is only believed at its own position.
        next = next.wrapping_add(1);
    }
    u.set_next_record(next)
}

/// The latest record of the entry `hash` in `file`. A slot counts only at
/// the position of its number, and below the next number (`below`) when it
/// is known (a slot left by a writer that crashed before saving the number
/// is written over by the next records).
fn last(file: &File, hash: &str, below: Option<u64>) -> io::Result<Option<Removal>> {
    let Some(want) = decode_hash(hash) else {
        return Ok(None);
    };
    if let Header::Version(_) = read_header(file)? {
        // Another format: nothing in it is read as this one.
        return Ok(None);
    }
    let all = read_all(file)?;
    let mut best: Option<(u64, Removal)> = None;
    for (i, slot) in all.chunks_exact(SLOT_LEN).enumerate().skip(1) {
        let Some((seq, nanos, cause, h)) = decode_slot(slot) else {
            continue;
        };
        let in_place = slot_offset(seq) == (i * SLOT_LEN) as u64;
        let written = below.is_none_or(|n| seq < n);
        if h != want || !in_place || !written || best.as_ref().is_some_and(|(s, _)| *s > seq) {
            continue;
        }
        let at = UNIX_EPOCH + Duration::from_nanos(nanos);
        best = Some((seq, Removal::new(at, cause)));
    }
    Ok(best.map(|(_, r)| r))
}

fn read_all(file: &File) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; (SLOTS as usize + 1) * SLOT_LEN];
    let n = sys::fill_at(file, &mut buf, 0)?;
    buf.truncate(n - n % SLOT_LEN);
    Ok(buf)
}

/// What the header says.
#[derive(Debug)]
enum Header {
    /// This version's.
    Current,
    /// Missing or torn: written again.
    Missing,
    /// Written in another version of the format.
    Version(u32),
}

fn read_header(file: &File) -> io::Result<Header> {
    let mut h = [0u8; SLOT_LEN];
    let n = sys::fill_at(file, &mut h, 0)?;
    if n < SLOT_LEN || h[..4] != MAGIC || crc(&h[..20]) != u32_at(&h, 20) {
        return Ok(Header::Missing);
    }
    if u32_at(&h, 4) != VERSION {
        return Ok(Header::Version(u32_at(&h, 4)));
    }
    Ok(Header::Current)
}

/// When the counters' file has no number yet: the number after the
/// highest in the slots (those at their own position).
fn recover_next(file: &File) -> io::Result<u64> {
    let all = read_all(file)?;
    Ok(all
        .chunks_exact(SLOT_LEN)
        .enumerate()
        .skip(1)
        .filter_map(|(i, s)| decode_slot(s).filter(|d| slot_offset(d.0) == (i * SLOT_LEN) as u64))
        .map(|(seq, ..)| seq.wrapping_add(1))
        .max()
        .unwrap_or(0))
}

fn slot_offset(seq: u64) -> u64 {
    (1 + seq % SLOTS) * SLOT_LEN as u64
}

/// The header: magic (4 bytes), version (4), twelve spare bytes, CRC-32C
/// of the 20 bytes before it (4), spare bytes to the slot's length.
fn encode_header() -> [u8; SLOT_LEN] {
    let mut h = [0u8; SLOT_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4..8].copy_from_slice(&VERSION.to_le_bytes());
    let c = crc(&h[..20]);
    h[20..24].copy_from_slice(&c.to_le_bytes());
    h
}

/// A slot: record number (8 bytes), time in nanoseconds since the epoch
/// (8), cause (1), limit (1), two spare bytes, the entry's hash (32), CRC-32C
/// of the 52 bytes before it (4), eight spare bytes.
fn encode_slot(seq: u64, nanos: u64, cause: RemovalCause, hash: &[u8; 32]) -> [u8; SLOT_LEN] {
    let mut s = [0u8; SLOT_LEN];
    s[..8].copy_from_slice(&seq.to_le_bytes());
    s[8..16].copy_from_slice(&nanos.to_le_bytes());
    s[16..18].copy_from_slice(&cause.to_code());
    s[20..52].copy_from_slice(hash);
    let sum = crc(&s[..52]);
    s[52..56].copy_from_slice(&sum.to_le_bytes());
    s
}

fn decode_slot(s: &[u8]) -> Option<(u64, u64, RemovalCause, [u8; 32])> {
    if s.iter().all(|&b| b == 0) || crc(&s[..52]) != u32_at(s, 52) {
        return None;
    }
    let cause = RemovalCause::from_code([s[16], s[17]])?;
    let hash: [u8; 32] = s[20..52].try_into().ok()?;
    Some((u64_at(s, 0), u64_at(s, 8), cause, hash))
}

fn decode_hash(hex: &str) -> Option<[u8; 32]> {
    let b = hex.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

fn crc(b: &[u8]) -> u32 {
    etl_cache_core::backend::codec::crc32c(b)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::{Usage, Wait};
    use etl_cache_core::EvictionLimit;

    /// A journal and the counters' file that keeps its next number.
    struct Fixture {
        dir: tempfile::TempDir,
        usage: Usage,
        j: Journal,
    }

    fn open(dir: &std::path::Path, name: &str) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(name))
            .unwrap()
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage");
        let usage = Usage::with_file(open(dir.path(), "usage"), &path, Duration::from_secs(5));
        let j = Journal::open(Some(open(dir.path(), "journal")));
        Fixture { dir, usage, j }
    }

    impl Fixture {
        fn record(&self, hash: &str, cause: RemovalCause, at: SystemTime) {
            self.usage
                .exclusive(Wait::Timeout, |u| {
                    self.j.record(u, &[Record { hash, cause }], at)
                })
                .unwrap();
        }

        fn last(&self, hash: &str) -> Option<Removal> {
            let next = self.usage.next_record().unwrap();
            self.j.last(hash, next).unwrap()
        }

        fn file(&self) -> &File {
            self.j.file.as_ref().unwrap()
        }
    }

    fn hash(i: u64) -> String {
        format!("{i:064x}")
    }

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn the_latest_record_of_an_entry_is_found_and_the_ring_stays_bounded() {
        let f = fixture();
        f.record(&hash(1), RemovalCause::Deleted, t0());
        let later = t0() + Duration::from_millis(1500);
        let evicted = RemovalCause::Evicted {
            limit: EvictionLimit::MaxBytes,
        };
        f.record(&hash(1), evicted, later);
        let r = f.last(&hash(1)).unwrap();
        assert_eq!(r.at, later);
        assert_eq!(r.cause, evicted);
        assert_eq!(f.last(&hash(2)), None);
        // The next number is in the counters' file, beside the counts it
        // leaves alone.
        assert_eq!(f.usage.next_record().unwrap(), Some(2));
        assert_eq!(f.usage.get().unwrap(), Default::default());
        // More records than slots: the oldest are forgotten, the file does
        // not grow.
        for i in 0..SLOTS + 10 {
            f.record(&hash(100 + i), RemovalCause::Expired, t0());
        }
        assert_eq!(f.last(&hash(1)), None);
        assert_eq!(f.last(&hash(100)), None);
        assert!(f.last(&hash(100 + SLOTS + 9)).is_some());
        let len = std::fs::metadata(f.dir.path().join("journal"))
            .unwrap()
            .len();
        assert_eq!(len, (SLOTS + 1) * SLOT_LEN as u64);
    }

    #[test]
    fn a_record_and_a_change_of_the_counts_in_one_hold_are_saved_together() {
        let f = fixture();
        f.usage
            .exclusive(Wait::Timeout, |u| {
                u.add(3, 300).unwrap();
                f.j.record(
                    u,
                    &[Record {
                        hash: &hash(1),
                        cause: RemovalCause::Deleted,
                    }],
                    t0(),
                );
                u.add(-1, -100).unwrap();
            })
            .unwrap();
        assert_eq!(f.usage.next_record().unwrap(), Some(1));
        let c = f.usage.get().unwrap();
        assert_eq!((c.entries, c.bytes), (2, 200));
        assert!(f.last(&hash(1)).is_some());
    }

    #[test]
    fn a_torn_slot_is_skipped_and_an_unknown_number_is_found_from_the_slots() {
        let f = fixture();
        for i in 0..3 {
            f.record(&hash(i), RemovalCause::Deleted, t0());
        }
        // Slot of record 1 torn: skipped; the others still read.
        sys::write_all_at(f.file(), &[0xff; 8], slot_offset(1) + 20).unwrap();
        assert_eq!(f.last(&hash(1)), None);
        assert!(f.last(&hash(2)).is_some());
        // A counters' file without the number (a root from before the
        // journal, a file cut short): the next record goes after the
        // highest one found, not over it.
        let usage = f.dir.path().join("usage");
        let counts = std::fs::read(&usage).unwrap();
        std::fs::write(&usage, &counts[..16]).unwrap();
        assert_eq!(f.usage.next_record().unwrap(), None);
        assert!(f.last(&hash(2)).is_some());
        f.record(&hash(9), RemovalCause::Cleared, t0());
        assert!(f.last(&hash(2)).is_some());
        assert_eq!(f.last(&hash(9)).unwrap().cause, RemovalCause::Cleared);
        assert_eq!(f.usage.next_record().unwrap(), Some(4));
        // A slot written by a writer that died before saving the number is
        // not believed, and the next record goes over it.
        let ghost = encode_slot(4, 0, RemovalCause::Deleted, &decode_hash(&hash(7)).unwrap());
        sys::write_all_at(f.file(), &ghost, slot_offset(4)).unwrap();
        assert_eq!(f.last(&hash(7)), None);
        f.record(&hash(8), RemovalCause::Expired, t0());
        assert_eq!(f.last(&hash(7)), None);
        assert!(f.last(&hash(8)).is_some());
        // A torn header is written again when a handle opens the journal.
        sys::write_all_at(f.file(), &[0xff; 8], 0).unwrap();
        let again = Journal::open(Some(open(f.dir.path(), "journal")));
        assert!(matches!(read_header(f.file()).unwrap(), Header::Current));
        assert!(
            again
                .last(&hash(8), f.usage.next_record().unwrap())
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn forged_numbers_neither_panic_nor_shadow_newer_records() {
        let f = fixture();
        // A counters' file whose next number is the largest there is: the
        // records wrap, nothing overflows.
        let mut forged_usage = [0u8; 24];
        forged_usage[16..].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(f.dir.path().join("usage"), forged_usage).unwrap();
        for i in 0..2 {
            f.record(&hash(i), RemovalCause::Deleted, t0());
        }
        assert_eq!(f.usage.next_record().unwrap(), Some(1));
        // A slot claiming a huge number, planted where that number does not
        // go, is not believed over the real record.
        let forged = encode_slot(
            u64::MAX - 7,
            0,
            RemovalCause::Cleared,
            &decode_hash(&hash(1)).unwrap(),
        );
        sys::write_all_at(f.file(), &forged, slot_offset(5)).unwrap();
        assert_eq!(f.last(&hash(1)).unwrap().cause, RemovalCause::Deleted);
        // Another version's journal: nothing read; a handle opened on it
        // records nothing and leaves it as it is.
        let mut other = encode_header();
        other[4..8].copy_from_slice(&2u32.to_le_bytes());
        let c = crc(&other[..20]);
        other[20..24].copy_from_slice(&c.to_le_bytes());
        sys::write_all_at(f.file(), &other, 0).unwrap();
        assert_eq!(f.last(&hash(0)), None);
        let newer = Journal::open(Some(open(f.dir.path(), "journal")));
        assert!(newer.file.is_none());
        let before = std::fs::read(f.dir.path().join("journal")).unwrap();
        f.usage
            .exclusive(Wait::Timeout, |u| {
                newer.record(
                    u,
                    &[Record {
                        hash: &hash(7),
                        cause: RemovalCause::Deleted,
                    }],
                    t0(),
                )
            })
            .unwrap();
        assert_eq!(std::fs::read(f.dir.path().join("journal")).unwrap(), before);
    }
}
