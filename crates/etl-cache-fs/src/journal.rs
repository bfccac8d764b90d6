//! The removal journal: the last [`SLOTS`] removals of entries (evictions
//! with the limit that made them, expiries, corrupt entries, deletes,
//! clears) with when they happened, in one file of the cache's directory,
//! so that "why is this entry gone?" has an answer after the fact, in any
//! process that uses the directory.
//!
//! The file is a ring of fixed slots after a header that holds the number
//! of the next record. Records are written with the counters held
//! exclusively (every removal holds them), so writers of all processes take
//! turns; readers take no lock. Each slot and the header carry a CRC-32C: a
//! slot torn by a crash is skipped, a torn header is rebuilt from the
//! slots. The journal is information, never a condition of a removal: a
//! failure to write it is logged and the removal stands. It is not synced:
//! a machine crash may lose its last records.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etl_cache_core::{Removal, RemovalCause};

use crate::sys;

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
    pub(crate) fn new(file: Option<File>) -> Journal {
        Journal {
            file,
            warned: AtomicBool::new(false),
        }
    }

    /// Appends `records`, all at `at`. Call with the counters held
    /// exclusively. Never fails: the first failure of the handle is logged.
    pub(crate) fn record(&self, records: &[Record<'_>], at: SystemTime) {
        let Some(file) = &self.file else {
            return;
        };
        if records.is_empty() {
            return;
        }
        if let Err(e) = append(file, records, at)
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(error = %e, "could not write the removal journal; removals go on unrecorded");
        }
    }

    /// The latest record of the entry `hash`, if the journal still holds one.
    pub(crate) fn last(&self, hash: &str) -> io::Result<Option<Removal>> {
        match &self.file {
            Some(file) => last(file, hash),
            None => Ok(None),
        }
    }
}

/// Appends `records` at `at` (see [`Journal::record`]).
fn append(file: &File, records: &[Record<'_>], at: SystemTime) -> io::Result<()> {
    let mut next = match read_header(file)? {
        Header::Next(n) => n,
        Header::Torn => recover_next(file)?,
        Header::Version(v) => {
            return Err(io::Error::other(format!(
                "the removal journal has version {v}, this build writes {VERSION}"
            )));
        }
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
        // Numbers wrap rather than overflow (a forged header may say
        // anything); a record is only believed at its own position.
        next = next.wrapping_add(1);
    }
    sys::write_all_at(file, &encode_header(next), 0)
}

/// The latest record of the entry `hash` in `file`. A slot counts only at
/// the position of its number, and below the header's next number when the
/// header is whole (a slot left by a writer that crashed before moving the
/// header on is written over by the next records).
fn last(file: &File, hash: &str) -> io::Result<Option<Removal>> {
    let Some(want) = decode_hash(hash) else {
        return Ok(None);
    };
    let below = match read_header(file)? {
        Header::Next(n) => Some(n),
        Header::Torn => None,
        // Another format: nothing in it is read as this one.
        Header::Version(_) => return Ok(None),
    };
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
enum Header {
    /// The next record's number (0 for a new journal).
    Next(u64),
    /// Missing or torn: rebuilt from the slots.
    Torn,
    /// Written in another version of the format.
    Version(u32),
}

fn read_header(file: &File) -> io::Result<Header> {
    let mut h = [0u8; SLOT_LEN];
    let n = sys::fill_at(file, &mut h, 0)?;
    if n == 0 {
        return Ok(Header::Next(0));
    }
    if n < SLOT_LEN || h[..4] != MAGIC || crc(&h[..20]) != u32_at(&h, 20) {
        return Ok(Header::Torn);
    }
    if u32_at(&h, 4) != VERSION {
        return Ok(Header::Version(u32_at(&h, 4)));
    }
    Ok(Header::Next(u64_at(&h, 8)))
}

/// After a torn header: the number after the highest in the slots (those
/// at their own position).
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

fn encode_header(next: u64) -> [u8; SLOT_LEN] {
    let mut h = [0u8; SLOT_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4..8].copy_from_slice(&VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&next.to_le_bytes());
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
    use etl_cache_core::EvictionLimit;

    fn journal() -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.path().join("journal"))
            .unwrap();
        (dir, Journal::new(Some(f)))
    }

    fn hash(i: u64) -> String {
        format!("{i:064x}")
    }

    #[test]
    fn the_latest_record_of_an_entry_is_found_and_the_ring_stays_bounded() {
        let (dir, j) = journal();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        j.record(
            &[Record {
                hash: &hash(1),
                cause: RemovalCause::Deleted,
            }],
            t0,
        );
        let later = t0 + Duration::from_millis(1500);
        j.record(
            &[Record {
                hash: &hash(1),
                cause: RemovalCause::Evicted {
                    limit: EvictionLimit::MaxBytes,
                },
            }],
            later,
        );
        let r = j.last(&hash(1)).unwrap().unwrap();
        assert_eq!(r.at, later);
        assert!(matches!(
            r.cause,
            RemovalCause::Evicted {
                limit: EvictionLimit::MaxBytes
            }
        ));
        assert_eq!(j.last(&hash(2)).unwrap(), None);
        // More records than slots: the oldest are forgotten, the file does
        // not grow.
        for i in 0..SLOTS + 10 {
            j.record(
                &[Record {
                    hash: &hash(100 + i),
                    cause: RemovalCause::Expired,
                }],
                t0,
            );
        }
        assert_eq!(j.last(&hash(1)).unwrap(), None);
        assert_eq!(j.last(&hash(100)).unwrap(), None);
        assert!(j.last(&hash(100 + SLOTS + 9)).unwrap().is_some());
        let len = std::fs::metadata(dir.path().join("journal")).unwrap().len();
        assert_eq!(len, (SLOTS + 1) * SLOT_LEN as u64);
    }

    #[test]
    fn a_torn_slot_is_skipped_and_a_torn_header_is_rebuilt() {
        let (_dir, j) = journal();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for i in 0..3 {
            j.record(
                &[Record {
                    hash: &hash(i),
                    cause: RemovalCause::Deleted,
                }],
                t0,
            );
        }
        // Slot of record 1 torn: skipped; the others still read.
        let file = j.file.as_ref().unwrap();
        sys::write_all_at(file, &[0xff; 8], slot_offset(1) + 20).unwrap();
        assert_eq!(j.last(&hash(1)).unwrap(), None);
        assert!(j.last(&hash(2)).unwrap().is_some());
        // Header torn: the next record goes after the highest one found,
        // not over it.
        sys::write_all_at(file, &[0xff; 8], 8).unwrap();
        j.record(
            &[Record {
                hash: &hash(9),
                cause: RemovalCause::Cleared,
            }],
            t0,
        );
        assert!(j.last(&hash(2)).unwrap().is_some());
        assert_eq!(
            j.last(&hash(9)).unwrap().unwrap().cause,
            RemovalCause::Cleared
        );
        assert!(matches!(read_header(file).unwrap(), Header::Next(4)));
    }

    #[test]
    fn forged_numbers_neither_panic_nor_shadow_newer_records() {
        let (_dir, j) = journal();
        let file = j.file.as_ref().unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        // A header whose next number is the largest there is: the records
        // wrap, nothing overflows.
        sys::write_all_at(file, &encode_header(u64::MAX), 0).unwrap();
        for i in 0..2 {
            j.record(
                &[Record {
                    hash: &hash(i),
                    cause: RemovalCause::Deleted,
                }],
                t0,
            );
        }
        assert!(matches!(read_header(file).unwrap(), Header::Next(1)));
        // A slot claiming a huge number, planted where that number does not
        // go, is not believed over the real record.
        let forged = encode_slot(
            u64::MAX - 7,
            0,
            RemovalCause::Cleared,
            &decode_hash(&hash(1)).unwrap(),
        );
        sys::write_all_at(file, &forged, slot_offset(5)).unwrap();
        assert_eq!(
            j.last(&hash(1)).unwrap().unwrap().cause,
            RemovalCause::Deleted
        );
        // Another version's journal: nothing read, writes refused.
        let mut other = encode_header(3);
        other[4..8].copy_from_slice(&2u32.to_le_bytes());
        let c = crc(&other[..20]);
        other[20..24].copy_from_slice(&c.to_le_bytes());
        sys::write_all_at(file, &other, 0).unwrap();
        assert_eq!(j.last(&hash(0)).unwrap(), None);
        assert!(
            append(
                file,
                &[Record {
                    hash: &hash(7),
                    cause: RemovalCause::Deleted
                }],
                t0
            )
            .is_err()
        );
    }
}
