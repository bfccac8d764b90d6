//! Reading a range of an object block by block: each block from the cache,
//! from a fetch another read has under way, or from a fetch this read leads
//! for a run of missing blocks (one ranged request for the whole run).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{Attributes, GetOptions, GetRange};
use tokio::sync::watch;

use crate::engine::{Coord, Engine, Flight, Held, Landing, Obj, Slot, identity, share_error, wait};

/// The error a read meets when the object is no longer the version its
/// other blocks came from.
pub(crate) fn changed(path: &Path) -> object_store::Error {
    object_store::Error::Precondition {
        path: path.to_string(),
        source: "the object changed while it was being read".into(),
    }
}

/// What [`Reader::next_block`] found: a whole block, or only the part of
/// it that the read wants.
enum Got {
    Block(Bytes),
    Part(Bytes),
}

/// A ranged request under way for blocks `next..end` of an object, which
/// hands them out in order as they complete. Blocks whose fetch another
/// read had already registered are read here too, but not announced.
pub(crate) struct Run {
    eng: Arc<Engine>,
    obj: Arc<Obj>,
    next: u64,
    end: u64,
    body: BoxStream<'static, object_store::Result<Bytes>>,
    buf: BytesMut,
    /// One per block `next..end`: the key, and the sender when this run
    /// announced the fetch.
    slots: VecDeque<(String, Option<watch::Sender<Slot>>)>,
    /// The cache's lock on the run, when it took one (other handles and
    /// processes wait for this run): released when the run ends and its
    /// blocks are kept.
    held: Option<Held>,
    /// The tasks keeping this run's blocks in the cache.
    keeping: Vec<tokio::task::JoinHandle<()>>,
    /// The store's write count before the request: a block kept after a
    /// write through the store to the object is dropped again.
    snapshot: u64,
    /// The object's attributes as the inner store answered the request.
    attributes: Attributes,
}

impl Run {
    /// Ends the registration of blocks this caller will not fetch after
    /// all: reads waiting for them look again.
    pub(crate) fn release(eng: &Engine, slots: VecDeque<(String, Option<watch::Sender<Slot>>)>) {
        for (key, tx) in slots {
            if let Some(tx) = tx {
                eng.land(&key, &tx);
            }
        }
    }

    /// Registers the blocks `first..end` it can, without a request yet.
    pub(crate) fn register(
        eng: &Arc<Engine>,
        obj: &Obj,
        first: u64,
        end: u64,
    ) -> VecDeque<(String, Option<watch::Sender<Slot>>)> {
        (first..end)
            .map(|i| {
                let key = eng.block_key(obj, i);
                let tx = eng.try_lead(&key);
                (key, tx)
            })
            .collect()
    }

    /// A run over a body already requested (the first read of an object,
    /// whose response told its metadata).
    pub(crate) fn over(
        eng: Arc<Engine>,
        obj: Arc<Obj>,
        first: u64,
        end: u64,
        body: BoxStream<'static, object_store::Result<Bytes>>,
        held: Option<Held>,
        snapshot: u64,
    ) -> Run {
        let slots = Self::register(&eng, &obj, first, end);
        // The caller has the response's attributes already: the run's stay
        // empty.
        let mut run = Self::assemble(eng, obj, first..end, slots, held, snapshot);
        run.body = body;
        run
    }

    /// A run over blocks `blocks` (registered in `slots`) with no body yet.
    fn assemble(
        eng: Arc<Engine>,
        obj: Arc<Obj>,
        blocks: std::ops::Range<u64>,
        slots: VecDeque<(String, Option<watch::Sender<Slot>>)>,
        held: Option<Held>,
        snapshot: u64,
    ) -> Run {
        Run {
            eng,
            obj,
            next: blocks.start,
            end: blocks.end,
            body: futures::stream::empty().boxed(),
            buf: BytesMut::new(),
            slots,
            held,
            keeping: Vec::new(),
            snapshot,
            attributes: Attributes::new(),
        }
    }

    /// Requests blocks `first..end` (registered in `slots`) on condition
    /// that the object is still the version of `obj`.
    async fn start(
        eng: Arc<Engine>,
        obj: Arc<Obj>,
        first: u64,
        end: u64,
        slots: VecDeque<(String, Option<watch::Sender<Slot>>)>,
        held: Option<Held>,
    ) -> object_store::Result<Run> {
        let snapshot = eng.snapshot();
        let bs = eng.bs();
        let size = obj.meta.size;
        let want = first * bs..(end * bs).min(size);
        let mut opts = GetOptions::new().with_range(Some(GetRange::Bounded(want.clone())));
        match (&obj.meta.e_tag, &obj.meta.version) {
            (Some(e), _) => opts.if_match = Some(e.clone()),
            (None, Some(v)) => opts.version = Some(v.clone()),
            (None, None) => {}
        }
        let mut run = Run::assemble(eng.clone(), obj.clone(), first..end, slots, held, snapshot);
        let path = &obj.meta.location;
        let got = match eng.fetch(path, opts).await {
            Ok(got) => got,
            Err(e) => return Err(run.fail(e)),
        };
        if identity(&got.meta) != identity(&obj.meta) {
            return Err(run.fail(changed(path)));
        }
        if got.range != want {
            let e = object_store::Error::Generic {
                store: "CachedStore",
                source: format!(
                    "asked the inner store for bytes {want:?} of {path}, it sent {:?}",
                    got.range
                )
                .into(),
            };
            return Err(run.fail(e));
        }
        run.attributes = got.attributes.clone();
        run.body = got.into_stream();
        Ok(run)
    }

    pub(crate) fn done(&self) -> bool {
        self.next >= self.end
    }

    /// Announces `e` to every read waiting for a block of this run and
    /// hands it back.
    fn fail(&mut self, e: object_store::Error) -> object_store::Error {
        let shared = Arc::new(share_error(&e));
        for (key, tx) in self.slots.drain(..) {
            if let Some(tx) = tx {
                tx.send_replace(Some(Err(shared.clone())));
                self.eng.land(&key, &tx);
            }
        }
        self.next = self.end;
        self.release_held();
        e
    }

    /// Releases the cache's lock on the run, if held, once the blocks kept
    /// behind it are in the cache: the next waiter, in another handle or
    /// process, then finds them there instead of fetching them again. The
    /// wait runs in a task of its own (none is needed when nothing is
    /// being kept, or outside a runtime, where the lock is released now).
    fn release_held(&mut self) {
        let Some(mut held) = self.held.take() else {
            return;
        };
        let keeping = std::mem::take(&mut self.keeping);
        let handle = tokio::runtime::Handle::try_current();
        match handle {
            Ok(rt) if !keeping.is_empty() => {
                rt.spawn(async move {
                    for k in keeping {
                        let _ = k.await;
                    }
                    held.finish();
                });
            }
            _ => held.finish(),
        }
    }

    /// The next block, once all its bytes arrived. A body that ends early
    /// or fails is an error, and no part of a block is ever kept.
    pub(crate) async fn next_block(&mut self) -> object_store::Result<Bytes> {
        let len = self.eng.block_len(self.obj.meta.size, self.next) as usize;
        while self.buf.len() < len {
            match self.body.next().await {
                Some(Ok(chunk)) => {
                    if self.buf.is_empty() && chunk.len() >= len {
                        // The common case of a store that sends large
                        // chunks: no copy unless a block straddles two.
                        let mut chunk = chunk;
                        let block = chunk.split_to(len);
                        self.buf.extend_from_slice(&chunk);
                        return self.complete(block).await;
                    }
                    self.buf.extend_from_slice(&chunk);
                }
                Some(Err(e)) => return Err(self.fail(e)),
                None => {
                    let path = self.obj.meta.location.to_string();
                    let e = object_store::Error::Generic {
                        store: "CachedStore",
                        source: format!(
                            "the inner store's body for {path} ended {} bytes into block {} of {len} bytes",
                            self.buf.len(),
                            self.next
                        )
                        .into(),
                    };
                    return Err(self.fail(e));
                }
            }
        }
        let block = self.buf.split_to(len).freeze();
        self.complete(block).await
    }

    async fn complete(&mut self, block: Bytes) -> object_store::Result<Bytes> {
        let (key, tx) = self.slots.pop_front().expect("a slot per block");
        // Lands the flight however this ends: kept, or this future dropped
        // while it waits to keep the block (readers then lead anew).
        let landing = Landing::new(&self.eng, key, tx);
        self.next += 1;
        if self.done() && !self.buf.is_empty() {
            let n = self.buf.len();
            let e = object_store::Error::Generic {
                store: "CachedStore",
                source: format!(
                    "the inner store sent {n} bytes more than asked for {}",
                    self.obj.meta.location
                )
                .into(),
            };
            self.slots.push_front(landing.into_slot());
            return Err(self.fail(e));
        }
        self.eng.stats.miss(block.len() as u64);
        landing.send(&block);
        let path = self.obj.meta.location.clone();
        let keeping = self
            .eng
            .keep_behind(landing, path, self.snapshot, block.clone())
            .await;
        self.keeping.push(keeping);
        if self.done() {
            self.release_held();
        }
        Ok(block)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // Senders dropped unsent: readers waiting for these blocks see the
        // fetch abandoned and fetch them themselves. The lock, if held, is
        // released once the blocks handed out are kept: the next waiter
        // leads from what is in the cache.
        Self::release(&self.eng, std::mem::take(&mut self.slots));
        self.release_held();
    }
}

/// Reads `range` of an object, whose metadata is fixed for the read.
pub(crate) struct Reader {
    eng: Arc<Engine>,
    obj: Arc<Obj>,
    range: Range<u64>,
    next: u64,
    /// One past the last block.
    end: u64,
    run: Option<Run>,
    /// Whether a block came from the inner store (by this read's request,
    /// or one it joined), which checked the object's version.
    fetched: bool,
    /// The attributes the inner store answered this read's own first
    /// request with.
    answered: Option<Attributes>,
    /// The block last looked for again after waiting for another run.
    looked_again: Option<u64>,
}

impl Reader {
    pub(crate) fn new(
        eng: Arc<Engine>,
        obj: Arc<Obj>,
        range: Range<u64>,
        run: Option<Run>,
    ) -> Self {
        let bs = eng.bs();
        let (next, end) = if range.is_empty() {
            (0, 0)
        } else {
            (range.start / bs, range.end.div_ceil(bs))
        };
        Reader {
            eng,
            obj,
            range,
            next,
            end,
            fetched: run.is_some(),
            answered: None,
            run,
            looked_again: None,
        }
    }

    /// Whether a block came from the inner store so far.
    pub(crate) fn fetched(&self) -> bool {
        self.fetched
    }

    /// The attributes the inner store answered this read's first own
    /// request with, if it sent one (a read served from the cache, or by
    /// another read's request, has none).
    pub(crate) fn answered_attributes(&self) -> Option<&Attributes> {
        self.answered.as_ref()
    }

    /// The next block's part of the range, or `None` at the end.
    pub(crate) async fn next_chunk(&mut self) -> object_store::Result<Option<Bytes>> {
        if self.next >= self.end {
            return Ok(None);
        }
        let i = self.next;
        let bs = self.eng.bs();
        let len = self.eng.block_len(self.obj.meta.size, i);
        let want = self.range.start.saturating_sub(i * bs)..(self.range.end - i * bs).min(len);
        let Some(got) = self.next_block(&want).await? else {
            return Ok(None);
        };
        Ok(Some(match got {
            Got::Block(block) => block.slice(want.start as usize..want.end as usize),
            Got::Part(part) => part,
        }))
    }

    /// Block `self.next`, or the part `want` of it when only that was read
    /// (from the cache).
    async fn next_block(&mut self, want: &Range<u64>) -> object_store::Result<Option<Got>> {
        loop {
            if self.next >= self.end {
                return Ok(None);
            }
            let i = self.next;
            if let Some(run) = self.run.as_mut() {
                let block = run.next_block().await?;
                if run.done() {
                    self.run = None;
                }
                self.next += 1;
                return Ok(Some(Got::Block(block)));
            }
            let len = self.eng.block_len(self.obj.meta.size, i);
            let key = self.eng.block_key(&self.obj, i);
            let got = if want.start == 0 && want.end == len {
                self.eng.cached(&key, len).await.map(Got::Block)
            } else {
                // Part of a block: only that part is read (by position,
                // where the cache can).
                self.eng.cached_part(&key, len, want).await.map(Got::Part)
            };
            if let Some(got) = got {
                self.next += 1;
                return Ok(Some(got));
            }
            match self.eng.join_or_lead(&key) {
                Flight::Join(rx) => {
                    self.eng.stats.join();
                    // A joined block is as one from the cache: it does not
                    // count as a check of the object now. Its request may
                    // have been answered before this read began (the
                    // leader's if-match, against what was known then), so
                    // a change made in between would go unseen.
                    match wait(rx).await {
                        Some(Ok(b)) => {
                            self.next += 1;
                            return Ok(Some(Got::Block(b)));
                        }
                        Some(Err(e)) => return Err(share_error(&e)),
                        None => continue, // abandoned: look again
                    }
                }
                Flight::Lead(tx) => {
                    let mut slots = VecDeque::from([(key, Some(tx))]);
                    let mut j = i + 1;
                    while j < self.end {
                        let key = self.eng.block_key(&self.obj, j);
                        if self.eng.holds(&key).await {
                            break;
                        }
                        match self.eng.try_lead(&key) {
                            Some(tx) => slots.push_back((key, Some(tx))),
                            None => break,
                        }
                        j += 1;
                    }
                    // Across handles and processes: wait for one leading a
                    // run from this block, if any, then look again.
                    let lock = self.eng.lock_key(&self.obj.meta.location, i);
                    let held = match self.eng.coordinate(lock).await {
                        Coord::Off => None,
                        c => {
                            if self.looked_again != Some(i) && self.eng.holds(&slots[0].0).await {
                                // Once per block: a block the cache holds
                                // but cannot serve is fetched.
                                self.looked_again = Some(i);
                                self.eng.stats.join();
                                // Kept meanwhile (by the run waited for, or
                                // one that ended just before the lock was
                                // taken): read the blocks from the cache.
                                Run::release(&self.eng, slots);
                                continue;
                            }
                            match c {
                                Coord::Led(h) => Some(h),
                                // The holder did not keep the block (not
                                // admitted, or the cache refused it).
                                _ => None,
                            }
                        }
                    };
                    let run =
                        Run::start(self.eng.clone(), self.obj.clone(), i, j, slots, held).await?;
                    self.fetched = true;
                    self.answered.get_or_insert_with(|| run.attributes.clone());
                    self.run = Some(run);
                }
            }
        }
    }

    /// The rest of the range as a stream of chunks.
    pub(crate) fn into_stream(self) -> BoxStream<'static, object_store::Result<Bytes>> {
        futures::stream::try_unfold(self, |mut r| async move {
            Ok(r.next_chunk().await?.map(|c| (c, r)))
        })
        .boxed()
    }
}
