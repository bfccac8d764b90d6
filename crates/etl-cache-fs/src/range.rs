//! Range reads: the logical bytes of part of an entry. An uncompressed
//! format 2 entry too large to have been read whole is read by position
//! (only the blocks that hold the range, each checked); any other entry is
//! read whole and checked, and the range cut from its logical bytes.

use std::io;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use etl_cache_core::backend::blocks::{BlockSize, verify_block};
use etl_cache_core::backend::clamp_range;
use etl_cache_core::backend::format::Layout;
use etl_cache_core::{Codec, EntryMeta, Result};

use crate::check::{concat, logical_of};
use crate::fault::Point;
use crate::inner::Inner;
use crate::look::Look;
use crate::read::Opened;
use crate::sys;
use crate::usage::Wait;

impl Inner {
    /// Reads the logical bytes `range` of an entry (cut at its end), with
    /// its metadata. An uncompressed format 2 entry too large to have been
    /// read whole is read by position: only the blocks that hold the range,
    /// in one read, each checked; any other is read whole and checked, and
    /// the range cut from its logical bytes. Runs on a blocking thread.
    pub(crate) fn read_range(
        &self,
        key: &str,
        hash: &str,
        range: Range<u64>,
    ) -> Result<Option<(EntryMeta, Bytes)>> {
        let mut count = true;
        self.look_again(key, || {
            let Some(o) = self.lookup(key, hash, true, count, Wait::Timeout)? else {
                return Ok(Look::Done(None));
            };
            count = false;
            let (start, end) = clamp_range(&range, o.meta.logical_len);
            let found = match o.framing.layout {
                Layout::Blocks(size) if o.whole.is_none() && o.meta.codec == Codec::None => {
                    self.finish_blocks(key, hash, *o, size, start..end)?
                }
                _ => self.finish_with(key, hash, *o, Wait::Timeout, |meta, stored| {
                    logical_of(meta, stored).map(|l| l.slice(start as usize..end as usize))
                })?,
            };
            Ok(Look::or_again(found.map(Some)))
        })
    }

    /// The stored bytes `range` (within the entry) of an opened format 2
    /// entry, read by position: the blocks that hold them in one read, each
    /// checked against its checksum. `None` as for [`Inner::finish_value`].
    fn finish_blocks(
        &self,
        key: &str,
        hash: &str,
        o: Opened,
        size: BlockSize,
        range: Range<u64>,
    ) -> Result<Option<(EntryMeta, Bytes)>> {
        if range.is_empty() {
            return Ok(Some((o.meta, Bytes::new())));
        }
        self.pause(Point::RangeOpened);
        let stored_len = o.meta.stored_len;
        let span = |i| size.span(i, stored_len).expect("a block of the range");
        let (first, last) = (range.start / size.get(), (range.end - 1) / size.get());
        let framed = span(first).framed.start..span(last).framed.end;
        let mut buf = BytesMut::zeroed((framed.end - framed.start) as usize);
        let read = self
            .fault(Point::Read)
            .and_then(|()| sys::read_exact_at(&o.file, &mut buf, o.header_len + framed.start));
        let reason = match read {
            Ok(()) => {
                let buf = buf.freeze();
                let mut pieces = Vec::with_capacity((last - first + 1) as usize);
                let mut failed = None;
                for i in first..=last {
                    let s = span(i);
                    let at = (s.framed.start - framed.start) as usize;
                    let block = buf.slice(at..at + (s.framed.end - s.framed.start) as usize);
                    match verify_block(size, o.framing.header_crc, i, block) {
                        Ok(data) => {
                            let from = range.start.max(s.stored.start) - s.stored.start;
                            let to = range.end.min(s.stored.end) - s.stored.start;
                            pieces.push(data.slice(from as usize..to as usize));
                        }
                        Err(e) => {
                            failed = Some(e.to_string());
                            break;
                        }
                    }
                }
                match failed {
                    None => return Ok(Some((o.meta, concat(pieces)))),
                    Some(reason) => reason,
                }
            }
            // Shorter than when it was opened: not the file it was.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                "entry is shorter than its size".to_owned()
            }
            Err(e) => {
                let path = self.layout.entry_path(hash);
                return Err(self.io(key, &path, "read the entry")(e));
            }
        };
        self.corrupt_unless_changed(Some(key), hash, o.id(), reason, Wait::Timeout)?;
        Ok(None)
    }
}
