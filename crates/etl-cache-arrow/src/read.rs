//! An Arrow IPC file read back from a byte stream, one message at a time.
//!
//! The file is the magic, the messages of an IPC stream (schema,
//! dictionaries, batches, end-of-stream marker) and a footer. The messages
//! are framed here, in the order they were written, and each is handed whole
//! to arrow-ipc's `FileDecoder`, which decodes dictionaries and batches (and
//! their compression). arrow-ipc's readers do not fit as they are: its
//! `FileReader` needs `Seek` to read the footer first, and its
//! `StreamDecoder` reads the footer after the end marker as a message and
//! waits for more bytes after a message with an empty body (a schema, a
//! batch of no rows). Framing here also bounds memory to one message and one
//! chunk.

use std::hash::{BuildHasher, DefaultHasher, Hash, Hasher, RandomState};
use std::io;

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::reader::FileDecoder;
use arrow_ipc::{Block, MessageHeader};
use arrow_schema::SchemaRef;
use bytes::{Buf, Bytes, BytesMut};
use etl_cache_core::{ByteStream, Error, Result, stream_read_error};
use futures::StreamExt;
use futures::stream::BoxStream;

/// A stream of record batches read from the cache.
pub type BatchStream = BoxStream<'static, Result<RecordBatch>>;

/// The 6 bytes an Arrow IPC file starts and ends with.
const MAGIC: &[u8; 6] = b"ARROW1";
/// The largest padding after the magic a file may have.
const MAX_ALIGNMENT: u64 = 64;
const CONTINUATION: [u8; 4] = [0xff; 4];
/// The most one compressed buffer may decompress to: 2 GiB, what 32-bit
/// offsets address (a larger buffer is refused with an error naming the
/// key; see `Reader::check_buffers`).
const MAX_DECOMPRESSED: i64 = 1 << 31;
/// What a footer may hold beyond the schema and its list of messages: a
/// writer's custom metadata.
const FOOTER_SLACK: u64 = 16 << 20;

/// Messages of one kind, counted and digested in the order given.
struct Placed {
    count: u64,
    digest: DefaultHasher,
}

impl Placed {
    fn new(order: &RandomState) -> Placed {
        Placed {
            count: 0,
            digest: order.build_hasher(),
        }
    }

    fn add(&mut self, (offset, header, body): (i64, i32, i64)) {
        self.count += 1;
        (offset, header, body).hash(&mut self.digest);
    }
}

pub(crate) struct Reader {
    key: String,
    bytes: ByteStream,
    /// Read from `bytes`, not yet framed.
    pending: BytesMut,
    /// Bytes of the payload not yet read from `bytes`.
    left: u64,
    /// Set once the schema is read.
    decoder: Option<FileDecoder>,
    /// Where the next message starts in the file.
    offset: u64,
    /// The batch and dictionary messages read: how many, and a digest of
    /// where each lies (offset, header length with its framing, body
    /// length), in order, to check the footer against in constant memory.
    batches: Placed,
    dictionaries: Placed,
    /// The keys of the digests (random: an entry cannot be made to match).
    order: RandomState,
    /// The length of the schema message, which bounds the footer's.
    schema_len: u64,
    done: bool,
}

impl Reader {
    /// Reads the magic and the schema; the batches are read on demand.
    pub(crate) async fn open(
        key: &str,
        bytes: ByteStream,
        len: u64,
    ) -> Result<(SchemaRef, Reader)> {
        let order = RandomState::new();
        let mut r = Reader {
            key: key.to_owned(),
            bytes,
            pending: BytesMut::new(),
            left: len,
            decoder: None,
            offset: 0,
            batches: Placed::new(&order),
            dictionaries: Placed::new(&order),
            order,
            schema_len: 0,
            done: false,
        };
        let start = r.read_exact(MAGIC.len(), "its magic").await?;
        if start[..] != MAGIC[..] {
            return Err(r.bad("it does not start with the Arrow IPC file magic ARROW1"));
        }
        // Zeros pad the magic to the writer's alignment: 8 bytes in all
        // by the format's description, 64 as arrow-rs writes it.
        let pad = r.read_exact(2, "its magic").await?;
        if pad[..] != [0, 0] {
            return Err(r.bad("its magic is not followed by padding"));
        }
        r.offset = 8;
        while r.peek(4, "its magic").await?[..] == [0; 4] {
            if r.offset >= MAX_ALIGNMENT {
                return Err(r.bad("its magic is followed by no message"));
            }
            r.pending.advance(4);
            r.offset += 4;
        }
        let schema = match r.message().await? {
            Some(Message::Schema(schema)) => schema,
            _ => return Err(r.bad("its first message is not a schema")),
        };
        Ok((schema, r))
    }

    /// The reader as a stream of batches; it ends after the footer is checked.
    pub(crate) fn into_stream(self) -> BatchStream {
        futures::stream::try_unfold(self, |mut r| async move {
            Ok(r.next_batch().await?.map(|b| (b, r)))
        })
        .boxed()
    }

    async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if self.done {
                return Ok(None);
            }
            match self.message().await? {
                Some(Message::Batch(b)) => return Ok(Some(b)),
                Some(Message::Schema(_)) => {
                    return Err(self.bad("it holds a second schema message"));
                }
                Some(Message::Dictionary) => {}
                None => {
                    self.footer().await?;
                    self.done = true;
                }
            }
        }
    }

    /// Reads and decodes the next message; `None` at the end-of-stream marker.
    async fn message(&mut self) -> Result<Option<Message>> {
        let first = self.peek(4, "a message length").await?;
        let (prefix, len) = if first[..4] == CONTINUATION {
            let len = self.peek(8, "a message length").await?;
            (
                8,
                i32::from_le_bytes(len[4..8].try_into().expect("4 bytes")),
            )
        } else {
            // Files written before the continuation marker (Arrow < 0.15).
            (
                4,
                i32::from_le_bytes(first[..4].try_into().expect("4 bytes")),
            )
        };
        if len == 0 {
            self.pending.advance(prefix);
            self.offset += prefix as u64;
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| self.bad("a message has a negative length"))?;
        self.peek(prefix + len, "a message header").await?;
        // The header is parsed where it lies; then the whole message (its
        // framing, header and body) is taken in one piece, as the decoder
        // wants it: no copy but the one into `pending`.
        let (header, body_len) = {
            let message = arrow_ipc::root_as_message(&self.pending[prefix..prefix + len])
                .map_err(|e| self.bad(&format!("a message header does not parse: {e}")))?;
            let body_len = usize::try_from(message.bodyLength())
                .map_err(|_| self.bad("a message has a negative body length"))?;
            if message.header_type() == MessageHeader::Schema {
                let schema = message
                    .header_as_schema()
                    .ok_or_else(|| self.bad("its schema message does not parse"))?;
                let schema = std::sync::Arc::new(arrow_ipc::convert::fb_to_schema(schema));
                if self.decoder.is_some() {
                    return Err(self.bad("it holds a second schema message"));
                }
                self.decoder = Some(FileDecoder::new(schema.clone(), message.version()));
                self.schema_len = (prefix + len + body_len) as u64;
                self.read_exact(prefix + len + body_len, "a message body")
                    .await?;
                self.offset += (prefix + len + body_len) as u64;
                return Ok(Some(Message::Schema(schema)));
            }
            (message.header_type(), body_len)
        };
        let whole = self
            .read_exact(prefix + len + body_len, "a message body")
            .await?;
        self.check_buffers(&whole[prefix..], len, header)?;
        let (Ok(meta_len), Ok(body_len)) = (i32::try_from(prefix + len), i64::try_from(body_len))
        else {
            return Err(self.bad("a message is larger than the format allows"));
        };
        let at = (self.offset as i64, meta_len, body_len);
        let block = Block::new(at.0, at.1, at.2);
        self.offset += whole.len() as u64;
        let buffer = Buffer::from(whole);
        let Some(decoder) = self.decoder.as_mut() else {
            return Err(self.bad("its first message is not a schema"));
        };
        // arrow-ipc asserts some of what it reads instead of returning an
        // error; what `check_buffers` does not rule out ends here as an
        // error naming the key, not as a panic of the caller's task.
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match header {
            MessageHeader::RecordBatch => decoder.read_record_batch(&block, &buffer).map(Some),
            MessageHeader::DictionaryBatch => {
                decoder.read_dictionary(&block, &buffer).map(|()| None)
            }
            _ => Ok(None),
        }));
        let decoded = match decoded {
            Ok(d) => d,
            Err(_) => return Err(self.bad("a message does not decode (the decoder gave up on it)")),
        };
        match header {
            MessageHeader::RecordBatch => match decoded {
                Ok(Some(Some(batch))) => {
                    self.batches.add(at);
                    Ok(Some(Message::Batch(batch)))
                }
                Ok(_) => Err(self.bad("a record batch message holds no batch")),
                Err(e) => Err(self.bad(&format!("a record batch does not decode: {e}"))),
            },
            MessageHeader::DictionaryBatch => match decoded {
                Ok(_) => {
                    self.dictionaries.add(at);
                    Ok(Some(Message::Dictionary))
                }
                Err(e) => Err(self.bad(&format!("a dictionary does not decode: {e}"))),
            },
            other => Err(self.bad(&format!("it holds an unexpected message ({other:?})"))),
        }
    }

    /// Reads the rest (the footer, its length and the magic) and checks it
    /// against what was read: a file cut short or spliced fails here.
    async fn footer(&mut self) -> Result<()> {
        let rest = self.left + self.pending.len() as u64;
        // The footer repeats the schema and lists each message in 24
        // bytes; the slack is for a writer's custom metadata. Anything
        // longer is not a footer, and is not read into memory.
        let blocks = self.batches.count + self.dictionaries.count;
        let most = 2 * self.schema_len + 32 * (blocks + 1) + FOOTER_SLACK;
        if rest > most {
            return Err(self.bad(&format!(
                "{rest} bytes follow its last message, more than a footer of its {blocks} \
                 messages takes"
            )));
        }
        let rest = self.read_exact(rest as usize, "its footer").await?;
        if rest.len() < 10 || rest[rest.len() - 6..] != MAGIC[..] {
            return Err(self.bad("it does not end with the Arrow IPC file magic ARROW1"));
        }
        let at = rest.len() - 10;
        let footer_len = i32::from_le_bytes(rest[at..at + 4].try_into().expect("4 bytes"));
        let footer_len = usize::try_from(footer_len)
            .ok()
            .filter(|&n| n <= at)
            .ok_or_else(|| self.bad("its footer length is out of range"))?;
        let footer = arrow_ipc::root_as_footer(&rest[at - footer_len..at])
            .map_err(|e| self.bad(&format!("its footer does not parse: {e}")))?;
        let (mut batches, mut dictionaries) = (Placed::new(&self.order), Placed::new(&self.order));
        for b in footer.recordBatches().into_iter().flat_map(|v| v.iter()) {
            batches.add((b.offset(), b.metaDataLength(), b.bodyLength()));
        }
        for b in footer.dictionaries().into_iter().flat_map(|v| v.iter()) {
            dictionaries.add((b.offset(), b.metaDataLength(), b.bodyLength()));
        }
        if (batches.count, dictionaries.count) != (self.batches.count, self.dictionaries.count) {
            return Err(self.bad(&format!(
                "its footer lists {} batches and {} dictionaries, the file holds {} and {}",
                batches.count, dictionaries.count, self.batches.count, self.dictionaries.count
            )));
        }
        // Readers that go by the footer (pyarrow, Polars) read the messages
        // where it says and in its order: it must say what was read here.
        if batches.digest.finish() != self.batches.digest.finish()
            || dictionaries.digest.finish() != self.dictionaries.digest.finish()
        {
            return Err(self.bad(
                "its footer places its messages elsewhere or in another order than the file holds them",
            ));
        }
        Ok(())
    }

    /// The next `n` bytes of the payload, left to be read.
    async fn peek(&mut self, n: usize, what: &str) -> Result<&[u8]> {
        if (n as u64) > self.pending.len() as u64 + self.left {
            return Err(self.bad(&format!("it ends inside {what}")));
        }
        while self.pending.len() < n {
            let chunk = self.next_chunk(what).await?;
            self.pending.extend_from_slice(&chunk);
        }
        Ok(&self.pending[..n])
    }

    async fn next_chunk(&mut self, what: &str) -> Result<Bytes> {
        match self.bytes.next().await {
            Some(Ok(chunk)) => {
                self.left = self.left.saturating_sub(chunk.len() as u64);
                Ok(chunk)
            }
            Some(Err(e)) => Err(stream_read_error(&self.key, e)),
            None => Err(self.bad(&format!("it ends inside {what}"))),
        }
    }

    /// The next `n` bytes of the payload.
    async fn read_exact(&mut self, n: usize, what: &str) -> Result<Bytes> {
        if (n as u64) > self.pending.len() as u64 + self.left {
            return Err(self.bad(&format!("it ends inside {what}")));
        }
        while self.pending.len() < n {
            let chunk = self.next_chunk(what).await?;
            if self.pending.is_empty() && chunk.len() >= n {
                // The common case for small reads inside a chunk: no copy
                // of the chunk, only of what stays pending.
                let mut chunk = chunk;
                let out = chunk.split_to(n);
                self.pending.extend_from_slice(&chunk);
                return Ok(out);
            }
            self.pending.extend_from_slice(&chunk);
        }
        Ok(self.pending.split_to(n).freeze())
    }

    /// Checks the buffers of a record batch or dictionary message (its
    /// header and body, the body from `body_at`) before arrow-ipc decodes it: each must
    /// lie inside the body, and a compressed one must not claim to
    /// decompress to more than [`MAX_DECOMPRESSED`]. arrow-ipc allocates the
    /// size a compressed buffer claims before it decompresses it: without
    /// this, an entry of a few hundred bytes claiming a terabyte would abort
    /// the process, and a buffer past the body would panic in its slicing.
    fn check_buffers(&self, message: &[u8], body_at: usize, header: MessageHeader) -> Result<()> {
        let (header_bytes, body) = message.split_at(body_at);
        let message = arrow_ipc::root_as_message(header_bytes)
            .map_err(|e| self.bad(&format!("a message header does not parse: {e}")))?;
        let batch = match header {
            MessageHeader::RecordBatch => message.header_as_record_batch(),
            MessageHeader::DictionaryBatch => {
                message.header_as_dictionary_batch().and_then(|d| d.data())
            }
            _ => return Ok(()),
        };
        let Some(batch) = batch else {
            return Err(self.bad("a batch message has no batch header"));
        };
        let compressed = batch.compression().is_some();
        for b in batch.buffers().iter().flatten() {
            let range = usize::try_from(b.offset())
                .ok()
                .zip(usize::try_from(b.length()).ok())
                .and_then(|(at, len)| Some(at..at.checked_add(len)?))
                .filter(|r| r.end <= body.len());
            let Some(range) = range else {
                return Err(self.bad(&format!(
                    "a buffer ({} bytes at {}) lies outside its message's body of {} bytes",
                    b.length(),
                    b.offset(),
                    body.len()
                )));
            };
            if compressed && range.len() >= 8 {
                let claimed = i64::from_le_bytes(
                    body[range.start..range.start + 8]
                        .try_into()
                        .expect("8 bytes"),
                );
                if claimed > MAX_DECOMPRESSED {
                    return Err(self.bad(&format!(
                        "a compressed buffer claims {claimed} bytes, more than the {MAX_DECOMPRESSED} a reader accepts"
                    )));
                }
            }
        }
        Ok(())
    }

    fn bad(&self, what: &str) -> Error {
        Error::Backend {
            backend: "arrow",
            key: Error::display_key(&self.key),
            source: Box::new(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the entry is not a readable Arrow IPC file: {what}"),
            )),
        }
    }
}

enum Message {
    Schema(SchemaRef),
    Dictionary,
    Batch(RecordBatch),
}

/// A byte stream over bytes already in memory, in chunks of `chunk` bytes.
pub(crate) fn in_memory(bytes: Bytes, chunk: usize) -> ByteStream {
    let mut bytes = bytes;
    futures::stream::iter(std::iter::from_fn(move || {
        (!bytes.is_empty()).then(|| Ok(bytes.split_to(chunk.min(bytes.remaining()))))
    }))
    .boxed()
}

#[cfg(test)]
mod tests {
    //! The framing where a cache's chunks cut the file anywhere: inside the
    //! magic, a length, a header, a body, the footer. (A cache hands out
    //! 1 MiB chunks, so the suites' small entries arrive in one.)

    use std::sync::Arc;

    use arrow_array::types::Int32Type;
    use arrow_array::{
        ArrayRef, DictionaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
    };
    use arrow_schema::{DataType, Field, Schema};
    use futures::TryStreamExt;

    use super::*;
    use crate::write::encode_all;
    use crate::{ArrowOptions, IpcCompression};

    fn batches() -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, false),
            Field::new(
                "d",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                false,
            ),
        ]));
        let dict = Arc::new(StringArray::from(vec!["north", "south", "east"]));
        (0..3i64)
            .map(|b| {
                let rows = [0, 5, 40][b as usize];
                let n: Int64Array = (0..rows)
                    .map(|i| (i % 4 != 0).then_some(b * 100 + i))
                    .collect();
                let s = StringArray::from_iter_values((0..rows).map(|i| format!("row {b}.{i}")));
                let keys = Int32Array::from_iter_values((0..rows).map(|i| (i % 3) as i32));
                let d = DictionaryArray::<Int32Type>::try_new(keys, dict.clone()).unwrap();
                let columns: Vec<ArrayRef> = vec![Arc::new(n), Arc::new(s), Arc::new(d)];
                RecordBatch::try_new(schema.clone(), columns).unwrap()
            })
            .collect()
    }

    async fn file(compression: IpcCompression) -> (Bytes, Vec<RecordBatch>) {
        let all = batches();
        let schema = all[0].schema();
        let stream = futures::stream::iter(all.clone().into_iter().map(Ok::<_, io::Error>));
        let opts = ArrowOptions::new().compression(compression);
        (encode_all("k", schema, stream, &opts).await.unwrap(), all)
    }

    async fn read(bytes: Bytes, chunk: usize) -> Result<Vec<RecordBatch>> {
        let len = bytes.len() as u64;
        read_declared(bytes, chunk, len).await
    }

    /// `bytes` read as a payload said to be `len` bytes long.
    async fn read_declared(bytes: Bytes, chunk: usize, len: u64) -> Result<Vec<RecordBatch>> {
        let (_, reader) = Reader::open("k", in_memory(bytes, chunk), len).await?;
        reader.into_stream().try_collect().await
    }

    #[tokio::test]
    async fn every_chunk_size_reads_the_same_batches() {
        for compression in [
            IpcCompression::None,
            IpcCompression::Zstd,
            IpcCompression::Lz4,
        ] {
            let (bytes, want) = file(compression).await;
            for chunk in (1..=17).chain([63, 64, 65, 1000, bytes.len() - 1, bytes.len()]) {
                let got = read(bytes.clone(), chunk).await.unwrap();
                assert_eq!(got, want, "{compression:?}, chunks of {chunk}");
            }
        }
    }

    #[tokio::test]
    async fn a_file_cut_anywhere_in_small_chunks_is_an_error() {
        let (bytes, want) = file(IpcCompression::None).await;
        let full = bytes.len() as u64;
        for cut in 0..bytes.len() {
            let short = bytes.slice(..cut);
            // Cut before it was stored (the length says so), and cut while
            // it is read (the stream ends before the length it declared).
            for declared in [cut as u64, full] {
                match read_declared(short.clone(), 3, declared).await {
                    Err(Error::Backend { key, .. }) => assert_eq!(key, "k"),
                    Err(e) => panic!("cut at {cut} of {declared}: {e:?}"),
                    Ok(got) => panic!(
                        "cut at {cut} of {declared} read {} of {} batches",
                        got.len(),
                        want.len()
                    ),
                }
            }
        }
    }
}
