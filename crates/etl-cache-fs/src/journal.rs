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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etl_cache_core::{EvictionLimit, Removal, RemovalCause};

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

/// The journal file of one handle.
#[derive(Debug)]
pub(crate) struct Journal {
    file: File,
}

impl Journal {
    pub(crate) fn new(file: File) -> Journal {
        Journal { file }
    }

    /// Appends `records`, all at `at`. Call with the counters held
    /// exclusively. Never fails: a failure is logged.
    pub(crate) fn record(&self, records: &[Record<'_>], at: SystemTime) {
        if records.is_empty() {
            return;
        }
        if let Err(e) = self.append(records, at) {
            tracing::warn!(error = %e, "could not write the removal journal");
        }
    }

    fn append(&self, records: &[Record<'_>], at: SystemTime) -> io::Result<()> {
        let mut next = match self.read_header()? {
            Some(n) => n,
            None => self.recover_next()?,
        };
        let nanos = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        for r in records {
            let Some(hash) = decode_hash(r.hash) else {
                continue;
            };
            let slot = encode_slot(next, nanos, r.cause, &hash);
            sys::write_all_at(&self.file, &slot, slot_offset(next))?;
            next += 1;
        }
        sys::write_all_at(&self.file, &encode_header(next), 0)
    }

    /// The latest record of the entry `hash`, if the journal still holds one.
    pub(crate) fn last(&self, hash: &str) -> io::Result<Option<Removal>> {
        let Some(want) = decode_hash(hash) else {
            return Ok(None);
        };
        let all = self.read_all()?;
        let mut best: Option<(u64, Removal)> = None;
        for slot in all.chunks_exact(SLOT_LEN).skip(1) {
            let Some((seq, nanos, cause, h)) = decode_slot(slot) else {
                continue;
            };
            if h != want || best.as_ref().is_some_and(|(s, _)| *s > seq) {
                continue;
            }
            let at = UNIX_EPOCH + Duration::from_nanos(nanos);
            best = Some((seq, Removal::new(at, cause)));
        }
        Ok(best.map(|(_, r)| r))
    }

    fn read_all(&self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; (SLOTS as usize + 1) * SLOT_LEN];
        let n = sys::fill_at(&self.file, &mut buf, 0)?;
        buf.truncate(n - n % SLOT_LEN);
        Ok(buf)
    }

    /// The next record's number from the header; `None` when the header is
    /// missing or torn.
    fn read_header(&self) -> io::Result<Option<u64>> {
        let mut h = [0u8; SLOT_LEN];
        let n = sys::fill_at(&self.file, &mut h, 0)?;
        if n == 0 {
            return Ok(Some(0));
        }
        if n < SLOT_LEN || h[..4] != MAGIC || crc(&h[..20]) != u32_at(&h, 20) {
            return Ok(None);
        }
        if u32_at(&h, 4) != VERSION {
            return Err(io::Error::other(format!(
                "the removal journal has version {}, this build writes {VERSION}",
                u32_at(&h, 4)
            )));
        }
        Ok(Some(u64_at(&h, 8)))
    }

    /// After a torn header: the number after the highest in the slots.
    fn recover_next(&self) -> io::Result<u64> {
        let all = self.read_all()?;
        Ok(all
            .chunks_exact(SLOT_LEN)
            .skip(1)
            .filter_map(decode_slot)
            .map(|(seq, ..)| seq + 1)
            .max()
            .unwrap_or(0))
    }
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
    let (c, l) = match cause {
        RemovalCause::Evicted {
            limit: EvictionLimit::MaxEntries,
        } => (1, 1),
        RemovalCause::Evicted { .. } => (1, 2),
        RemovalCause::Expired => (2, 0),
        RemovalCause::Corrupt => (3, 0),
        RemovalCause::Deleted => (4, 0),
        _ => (5, 0),
    };
    s[16] = c;
    s[17] = l;
    s[20..52].copy_from_slice(hash);
    let sum = crc(&s[..52]);
    s[52..56].copy_from_slice(&sum.to_le_bytes());
    s
}

fn decode_slot(s: &[u8]) -> Option<(u64, u64, RemovalCause, [u8; 32])> {
    if s.iter().all(|&b| b == 0) || crc(&s[..52]) != u32_at(s, 52) {
        return None;
    }
    let cause = match (s[16], s[17]) {
        (1, 1) => RemovalCause::Evicted {
            limit: EvictionLimit::MaxEntries,
        },
        (1, 2) => RemovalCause::Evicted {
            limit: EvictionLimit::MaxBytes,
        },
        (2, _) => RemovalCause::Expired,
        (3, _) => RemovalCause::Corrupt,
        (4, _) => RemovalCause::Deleted,
        (5, _) => RemovalCause::Cleared,
        _ => return None,
    };
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

    fn journal() -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.path().join("journal"))
            .unwrap();
        (dir, Journal::new(f))
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
        sys::write_all_at(&j.file, &[0xff; 8], slot_offset(1) + 20).unwrap();
        assert_eq!(j.last(&hash(1)).unwrap(), None);
        assert!(j.last(&hash(2)).unwrap().is_some());
        // Header torn: the next record goes after the highest one found,
        // not over it.
        sys::write_all_at(&j.file, &[0xff; 8], 8).unwrap();
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
        assert_eq!(j.read_header().unwrap(), Some(4));
    }
}
