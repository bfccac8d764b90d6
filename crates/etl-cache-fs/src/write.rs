//! Writes: a uniquely named temp file, locked while being written, then an
//! atomic rename into place under the key's lock.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use etl_cache_core::backend::blocks::BlockFramer;
use etl_cache_core::backend::codec::Encoder;
use etl_cache_core::backend::format::{DecodedHeader, Header, Layout, TRAILER_LEN, Trailer};
use etl_cache_core::{Codec, EntryMeta, Error, Kind, Result, SetOptions};
use tokio::sync::mpsc;

use crate::cancel::Cancel;
use crate::dirs::How;
use crate::fault::Point;
use crate::inner::Inner;
use crate::layout::unique_name;
use crate::publish::{Publish, Sealed, TempEntry};
use crate::spare::SPARE_MAX;
use crate::sys;

/// How many bytes of a stream the feeding task gathers before it hands them
/// to the writer thread: every message wakes one side or the other, and
/// with the 64 KiB chunks HTTP clients yield a message per chunk woke the
/// writer 8,192 times per 512 MiB.
pub(crate) const BATCH_BYTES: usize = 1 << 20;

/// Messages queued between the feeding task and the writer thread: a
/// stream is read at most this many batches, the one the writer holds and
/// the one being gathered ahead of the file, about 4 MiB.
pub(crate) const BATCHES_IN_FLIGHT: usize = 2;

/// At most this many pieces per batch: a stream of tiny chunks (a byte
/// each) would otherwise gather a million `Bytes` handles per batch, each
/// possibly keeping a larger buffer alive.
pub(crate) const BATCH_PIECES: usize = 256;

/// What the async side of `set_stream` sends to the writer thread.
pub(crate) enum Msg {
    /// Bytes of the stream, in order: framed bytes (blocks and their
    /// checksums) for an uncompressed stream, logical bytes for a compressed
    /// one. Gathered up to [`BATCH_BYTES`] per message (see there).
    Data(Vec<Bytes>),
    /// The stream ended. Uncompressed streams are framed by the async side
    /// as the chunks pass (see `DiskCache::set_stream`), which sends the
    /// trailer here; compressed ones are framed by the writer.
    End(Option<Trailer>),
}

/// The header of an entry in the format this crate writes, with its
/// encoding and checksum.
pub(crate) struct NewHeader {
    pub decoded: DecodedHeader,
    pub bytes: Vec<u8>,
}

impl NewHeader {
    /// The header of an entry written in `layout`: format 2, blocks of the
    /// size the write asks for ([`Layout::for_write`]), each checked before
    /// a stream hands it out.
    pub(crate) fn new(header: Header, layout: Layout) -> NewHeader {
        let (bytes, decoded) = header.encode_decoded(layout);
        NewHeader { decoded, bytes }
    }

    /// A framer for this entry's payload.
    pub(crate) fn framer(&self) -> BlockFramer {
        BlockFramer::new(
            self.decoded.crc,
            self.decoded
                .layout
                .block_size()
                .expect("entries are written in blocks"),
        )
    }

    /// The size of the entry file: this header, `stored_len` stored bytes
    /// framed in blocks, trailer.
    pub(crate) fn entry_len(&self, stored_len: u64) -> u64 {
        let framed = self
            .decoded
            .layout
            .framed_len(stored_len)
            .expect("a payload held in memory or on disk frames within u64");
        self.bytes.len() as u64 + framed + TRAILER_LEN as u64
    }
}

/// Ends a framed payload: the last block's checksum (appended to `out`)
/// and the trailer, whose encoding [`Inner::seal`] writes.
pub(crate) fn finish_framer(
    framer: BlockFramer,
    logical_len: u64,
    out: &mut Vec<Bytes>,
) -> Trailer {
    // `seal` writes the trailer.
    framer
        .finish_slices(logical_len, |crc| {
            out.push(Bytes::copy_from_slice(crc));
            Ok::<_, std::convert::Infallible>(())
        })
        .unwrap_or_else(|never| match never {})
}

/// Streamed writes end on multiples of this many bytes in the file.
const ALIGN: usize = 1 << 20;

/// Writes `carry` (bytes not yet written, which start at a multiple of
/// [`ALIGN`] in the file) and as much of `chunk` as makes the write end on a
/// multiple of [`ALIGN`], with one vectored write; the rest of `chunk`
/// becomes the new carry (for chunks of `ALIGN` bytes, just the header's
/// length is copied). Whole-folio writes at aligned offsets are cheaper for
/// the page cache than the same writes shifted by the header.
fn write_aligned(file: &mut File, carry: &mut BytesMut, chunk: &[u8]) -> io::Result<()> {
    let total = carry.len() + chunk.len();
    let n = total / ALIGN * ALIGN;
    if n == 0 {
        carry.extend_from_slice(chunk);
        return Ok(());
    }
    // A carry is always shorter than ALIGN (the rest of a total cut at a
    // multiple of it), so the write takes all of it and part of `chunk`.
    let (head, rest) = chunk.split_at(n - carry.len());
    let mut done = 0;
    while done < n {
        let parts = if done < carry.len() {
            [io::IoSlice::new(&carry[done..]), io::IoSlice::new(head)]
        } else {
            [
                io::IoSlice::new(&[]),
                io::IoSlice::new(&head[done - carry.len()..]),
            ]
        };
        match file.write_vectored(&parts) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(w) => done += w,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    carry.clear();
    carry.extend_from_slice(rest);
    Ok(())
}

impl Inner {
    pub(crate) fn io(
        &self,
        key: &str,
        path: impl Into<PathBuf>,
        op: &'static str,
    ) -> impl FnOnce(io::Error) -> Error {
        let key = Error::display_key(key);
        let path = path.into();
        move |source| Error::Io {
            key,
            path,
            op,
            source,
        }
    }

    /// Creates a fresh temp file (O_EXCL, 0600), locked so that a sweep by
    /// another process never removes a write in progress.
    fn create_temp(&self, key: &str, buffer: usize) -> Result<TempEntry> {
        loop {
            let name = unique_name("tmp");
            let dir = self.dirs.tmp();
            let path = dir.path().join(&name);
            match dir.open(OsStr::new(&name), How::CreateNew) {
                Ok(file) => {
                    file.lock()
                        .map_err(self.io(key, &path, "lock the temp file"))?;
                    // Opening a cache sweeps unlocked temp files: a sweep may
                    // have removed this one between its creation and the
                    // lock. Then the lock guards nothing: start over.
                    let ours =
                        file.metadata()
                            .map_err(self.io(key, &path, "stat the temp file"))?;
                    match dir.stat(OsStr::new(&name)) {
                        Ok(m) if m.id == sys::file_id(&ours) => {}
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(self.io(key, &path, "stat the temp file")(e)),
                    }
                    return Ok(TempEntry {
                        out: BufWriter::with_capacity(buffer, file),
                        path,
                        dirs: self.dirs.clone(),
                        published: false,
                        spare_len: None,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(self.io(key, &path, "create a temp file")(e)),
            }
        }
    }

    fn check_size(&self, key: &str, size: u64) -> Result<()> {
        match self.config.max_bytes {
            Some(limit) if size > limit => Err(Error::TooLarge {
                key: Error::display_key(key),
                size,
                limit,
            }),
            _ => Ok(()),
        }
    }

    pub(crate) fn header(&self, key: &str, kind: Kind, opts: &SetOptions) -> Result<NewHeader> {
        let created = self.config.clock.now();
        Ok(NewHeader::new(
            Header {
                key: key.to_owned(),
                kind,
                codec: opts.compression.codec(),
                created,
                expires: opts.expires_at(created)?,
            },
            Layout::for_write(opts.check_block),
        ))
    }

    /// Writes a whole value and publishes it. Runs on a blocking thread.
    /// `held` says the caller already holds the key's lock.
    #[allow(clippy::too_many_arguments)] // the publication's three switches, named at each call
    pub(crate) fn write_value(
        &self,
        key: &str,
        hash: &str,
        kind: Kind,
        payload: Bytes,
        opts: SetOptions,
        held: bool,
        may_block: bool,
        cancel: &Cancel,
    ) -> Result<Publish> {
        let header = self.header(key, kind, &opts)?;
        // The framer checksums the stored bytes block by block: no checksum
        // of the whole.
        let (stored, totals) = Encoder::encode_all_without_checksum(opts.compression, payload)
            .map_err(self.io(key, &self.layout.tmp, "compress"))?;
        let len = header.entry_len(totals.stored_len);
        self.check_size(key, len)?;
        let len = len as usize;
        // A small entry is written into a file a set of this handle replaced
        // when there is one: no file is created (see `spare`).
        let spare = if len as u64 <= SPARE_MAX {
            self.spares.take()
        } else {
            None
        };
        let mut tmp = match spare {
            Some((file, spare)) => TempEntry {
                out: BufWriter::with_capacity(len, file),
                path: spare.path,
                dirs: self.dirs.clone(),
                published: false,
                spare_len: Some(spare.len),
            },
            None => self.create_temp(key, len.min(1 << 20))?,
        };
        let path = tmp.path.clone();
        // Framed as it is written: the blocks as slices of `stored`, each
        // followed by its checksum, nothing allocated.
        let mut framer = header.framer();
        let trailer = self
            .fault(Point::Write)
            .and_then(|()| {
                if len < ALIGN {
                    // One write, from the buffered writer, at the end.
                    let out = &mut tmp.out;
                    out.write_all(&header.bytes)?;
                    framer.push_slices(&stored, |b| out.write_all(b))?;
                    framer.finish_slices(totals.logical_len, |b| out.write_all(b))
                } else {
                    // Blocks and their checksums alternate: aligned writes
                    // of whole MiBs (see `write_aligned`).
                    let mut carry = BytesMut::from(&header.bytes[..]);
                    let file = tmp.out.get_mut();
                    framer.push_slices(&stored, |b| write_aligned(file, &mut carry, b))?;
                    let trailer = framer.finish_slices(totals.logical_len, |b| {
                        write_aligned(file, &mut carry, b)
                    })?;
                    tmp.out.write_all(&carry)?;
                    Ok(trailer)
                }
            })
            .map_err(self.io(key, &path, "write the entry"))?;
        debug_assert_eq!(trailer.stored_len, totals.stored_len);
        let sealed = self.seal(key, tmp, header, trailer)?;
        self.publish(key, hash, sealed, held, may_block, cancel)
    }

    /// Writes what arrives on `rx` and publishes it when `Msg::End` comes; a
    /// closed channel without `End` (a failed or dropped stream) publishes
    /// nothing. `header` is the entry's (made by the caller, which frames an
    /// uncompressed stream's chunks with its checksum). Runs on a blocking
    /// thread.
    pub(crate) fn write_stream(
        &self,
        key: &str,
        hash: &str,
        header: NewHeader,
        mut rx: mpsc::Receiver<Msg>,
        opts: SetOptions,
        cancel: &Cancel,
    ) -> Result<EntryMeta> {
        let mut tmp = self.create_temp(key, 1 << 20)?;
        let path = tmp.path.clone();
        // No encoder for an uncompressed stream: its chunks arrive framed.
        // A compressed one is compressed and framed here.
        let mut enc = match opts.compression.codec() {
            Codec::None => None,
            _ => Some((
                Encoder::new(opts.compression)
                    .map_err(self.io(key, &path, "start compressing"))?
                    .without_checksum(),
                header.framer(),
            )),
        };
        let mut written = (header.bytes.len() + TRAILER_LEN) as u64;
        // The header leads the first aligned write (see `write_aligned`).
        let mut carry = BytesMut::from(&header.bytes[..]);
        let mut framed = Vec::new();
        // A message is a batch of pieces (see `BATCH_BYTES`), so the feeding
        // task is woken once per MiB rather than once per chunk; on a small
        // VM each wake-up costs about as much as a chunk's copy into the page
        // cache. One message is taken at a time: the stream is then read at
        // most one batch in hand, `BATCHES_IN_FLIGHT` queued and one being
        // gathered ahead of the file. (One `writev` per batch instead of one
        // write per piece measured no better, so each piece is its own.)
        let mut batch = Vec::with_capacity(1);
        let fed = 'recv: loop {
            if rx.blocking_recv_many(&mut batch, 1) == 0 {
                return Err(Error::Stream {
                    key: Error::display_key(key),
                    source: io::Error::new(
                        io::ErrorKind::Interrupted,
                        "the stream ended without completing",
                    ),
                });
            }
            for msg in batch.drain(..) {
                let chunks = match msg {
                    Msg::Data(chunks) => chunks,
                    Msg::End(fed) => break 'recv fed,
                };
                match &mut enc {
                    Some((enc, framer)) => {
                        for chunk in chunks {
                            let stored =
                                enc.encode(chunk).map_err(self.io(key, &path, "compress"))?;
                            framer.push(stored, &mut framed);
                        }
                    }
                    None => framed.extend(chunks),
                }
                written += framed.iter().map(|b| b.len() as u64).sum::<u64>();
                self.check_size(key, written)?;
                // The buffered writer stays empty until the end: the chunks
                // go straight to the file.
                self.fault(Point::Write)
                    .and_then(|()| {
                        framed
                            .drain(..)
                            .try_for_each(|out| write_aligned(tmp.out.get_mut(), &mut carry, &out))
                    })
                    .map_err(self.io(key, &path, "write the entry"))?;
            }
        };
        drop(rx);
        let trailer = match (enc, fed) {
            (Some((enc, mut framer)), _) => {
                let (last, totals) = enc.finish().map_err(self.io(key, &path, "compress"))?;
                framer.push(last, &mut framed);
                finish_framer(framer, totals.logical_len, &mut framed)
            }
            (None, Some(trailer)) => trailer,
            (None, None) => unreachable!("an uncompressed stream ends with its trailer"),
        };
        written += framed.iter().map(|b| b.len() as u64).sum::<u64>();
        self.check_size(key, written)?;
        tmp.out
            .write_all(&carry)
            .and_then(|()| framed.iter().try_for_each(|b| tmp.out.write_all(b)))
            .map_err(self.io(key, &path, "write the entry"))?;
        let sealed = self.seal(key, tmp, header, trailer)?;
        self.publish(key, hash, sealed, false, true, cancel)
            .map(Publish::done)
    }

    /// Writes the trailer and the entry's time, syncs if durable: the temp
    /// file is then ready to be published.
    fn seal(
        &self,
        key: &str,
        mut tmp: TempEntry,
        header: NewHeader,
        trailer: Trailer,
    ) -> Result<Sealed> {
        let path = tmp.path.clone();
        let size = header.entry_len(trailer.stored_len);
        tmp.out
            .write_all(&trailer.encode())
            .and_then(|()| tmp.out.flush())
            .and_then(|()| match tmp.spare_len {
                Some(old) if old > size => tmp.out.get_ref().set_len(size),
                _ => Ok(()),
            })
            .map_err(self.io(key, &path, "write the entry"))?;
        let file = tmp.out.get_ref();
        // Recency is the file's mtime, set precisely (the kernel's own stamp is coarse).
        file.set_modified(SystemTime::now()).map_err(self.io(
            key,
            &path,
            "set the entry's time",
        ))?;
        if self.config.durable {
            file.sync_all()
                .map_err(self.io(key, &path, "fsync the entry"))?;
        }
        debug_assert_eq!(
            Header::decode_any(&header.bytes).as_ref(),
            Ok(&header.decoded)
        );
        let meta = EntryMeta::from_decoded_parts(header.decoded, trailer, size)
            .expect("a fresh header and trailer agree");
        Ok(Sealed { tmp, meta, size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Streams of every shape of chunk come out whole and in order, and
    /// what is left to write after each chunk is less than `ALIGN`.
    #[test]
    fn aligned_writes_keep_every_byte_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let shapes: [&[usize]; 5] = [
            &[ALIGN; 5],
            &[1; 3000],
            &[ALIGN - 7, 7, ALIGN + 1, 3 * ALIGN + 5, 1],
            &[100_000, 2 * ALIGN, 17, ALIGN / 2, ALIGN / 2, 999_999],
            &[],
        ];
        for (i, shape) in shapes.iter().enumerate() {
            let path = dir.path().join(format!("s{i}"));
            let mut file = File::create(&path).unwrap();
            let header = b"header of 42 bytes, more or less, anyway.";
            let mut want = header.to_vec();
            let mut carry = BytesMut::from(&header[..]);
            for (j, &len) in shape.iter().enumerate() {
                let chunk: Vec<u8> = (0..len).map(|k| (k * 31 + j * 7 + i) as u8).collect();
                want.extend_from_slice(&chunk);
                write_aligned(&mut file, &mut carry, &chunk).unwrap();
                assert!(carry.len() < ALIGN, "shape {i}: carry {}", carry.len());
                let on_disk = file.metadata().unwrap().len() as usize;
                assert_eq!(on_disk % ALIGN, 0, "shape {i}: a write ended unaligned");
                assert_eq!(on_disk + carry.len(), want.len(), "shape {i}");
            }
            file.write_all(&carry).unwrap();
            drop(file);
            assert_eq!(std::fs::read(&path).unwrap(), want, "shape {i}");
        }
    }
}
