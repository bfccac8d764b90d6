//! The body of one version of an object: its bytes as they come, a cut
//! connection resumed with ranged gets pinned to the version's e-tag (or
//! version id), so the bytes of two writes are never joined.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etl_cache_core::backend::format::TRAILER_LEN;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{GetOptions, GetResult};

use crate::error::{ObjectError, ObjectErrorKind, is_not_found};
use crate::inner::Inner;

/// How many empty chunks in a row a body may send before it counts as cut:
/// object_store's `LocalFileSystem` sends empty chunks without end for a
/// file cut short while it is read.
const MAX_EMPTY_CHUNKS: u32 = 64;

/// The body of one version of an object, resumed with ranged gets pinned to
/// its e-tag when the connection is cut.
pub(crate) struct Body {
    pub(crate) inner: Arc<Inner>,
    pub(crate) key: String,
    location: Path,
    stream: Option<BoxStream<'static, object_store::Result<Bytes>>>,
    pos: u64,
    /// The object's size.
    pub(crate) size: u64,
    e_tag: Option<String>,
    version: Option<String>,
    resumes: u32,
    /// Empty chunks received in a row.
    empty_run: u32,
}

impl Body {
    pub(crate) fn new(inner: Arc<Inner>, key: &str, location: Path, res: GetResult) -> Body {
        Body {
            inner,
            key: key.to_owned(),
            location,
            pos: res.range.start,
            size: res.meta.size,
            e_tag: res.meta.e_tag.clone(),
            version: res.meta.version.clone(),
            resumes: 0,
            empty_run: 0,
            stream: Some(res.into_stream()),
        }
    }

    pub(crate) fn error(
        &self,
        kind: ObjectErrorKind,
        source: Option<object_store::Error>,
    ) -> ObjectError {
        self.inner.object_error(
            kind,
            "read body",
            &self.key,
            &self.location,
            source.map(|e| Box::new(e) as _),
        )
    }

    /// Whether later requests can be pinned to this version (an e-tag or a
    /// version id).
    pub(crate) fn pinnable(&self) -> bool {
        self.e_tag.is_some() || self.version.is_some()
    }

    /// This version of the object again, from `start`: a new request
    /// pinned to its e-tag (or version).
    pub(crate) async fn reopen(&mut self, start: u64) -> std::result::Result<Body, ObjectError> {
        let opts = self.pinned().with_range(Some(start..self.size));
        match self.inner.store.get_opts(&self.location, opts).await {
            Ok(r) if r.meta.size == self.size && r.range.start == start => Ok(Body::new(
                self.inner.clone(),
                &self.key,
                self.location.clone(),
                r,
            )),
            Ok(_) | Err(object_store::Error::Precondition { .. }) => {
                Err(self.error(ObjectErrorKind::Changed, None))
            }
            Err(e) if is_not_found(&e) => Err(self.error(ObjectErrorKind::Changed, Some(e))),
            Err(e) => Err(self.error(crate::error::classify(&e), Some(e))),
        }
    }

    fn pinned(&self) -> GetOptions {
        GetOptions::new()
            .with_if_match(self.e_tag.clone())
            .with_version(self.version.clone())
    }

    /// The last bytes of this version of the object.
    pub(crate) async fn trailer(&mut self) -> std::result::Result<Bytes, ObjectError> {
        let opts = self
            .pinned()
            .with_range(Some(self.size - TRAILER_LEN as u64..self.size));
        let got = match self.inner.store.get_opts(&self.location, opts).await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        got.map_err(|e| match e {
            object_store::Error::Precondition { .. } => self.error(ObjectErrorKind::Changed, None),
            e if is_not_found(&e) => self.error(ObjectErrorKind::Changed, Some(e)),
            e => self.error(crate::error::classify(&e), Some(e)),
        })
    }

    /// The next bytes of the body; `None` at its end.
    pub(crate) async fn next(&mut self) -> std::result::Result<Option<Bytes>, ObjectError> {
        loop {
            if self.pos >= self.size {
                return Ok(None);
            }
            let cause = match self.stream.as_mut() {
                None => None,
                Some(s) => match s.next().await {
                    Some(Ok(b)) if b.is_empty() => {
                        // A few empty chunks are harmless; a run of them is
                        // a body that stopped short (a file cut while it is
                        // read): resume it, which fails if the object changed.
                        self.empty_run += 1;
                        if self.empty_run <= MAX_EMPTY_CHUNKS {
                            continue;
                        }
                        None
                    }
                    Some(Ok(mut b)) => {
                        self.empty_run = 0;
                        let left = self.size - self.pos;
                        if b.len() as u64 > left {
                            b.truncate(left as usize);
                        }
                        self.pos += b.len() as u64;
                        return Ok(Some(b));
                    }
                    Some(Err(e)) => Some(e),
                    None => None,
                },
            };
            self.stream = None;
            self.resume(cause).await?;
        }
    }

    /// Asks for the rest of this version of the object.
    async fn resume(
        &mut self,
        cause: Option<object_store::Error>,
    ) -> std::result::Result<(), ObjectError> {
        if self.e_tag.is_none() && self.version.is_none() {
            return Err(self.error(ObjectErrorKind::Truncated, cause));
        }
        if self.resumes >= self.inner.config.resume_attempts {
            return Err(self.error(ObjectErrorKind::Truncated, cause));
        }
        self.resumes += 1;
        self.empty_run = 0;
        tracing::warn!(
            key = %self.key,
            object = %self.location,
            at = self.pos,
            of = self.size,
            attempt = self.resumes,
            cause = cause.as_ref().map(|e| e.to_string()).unwrap_or_else(|| "body ended early".into()),
            "resuming a cut read with a ranged get pinned to the e-tag"
        );
        tokio::time::sleep(Duration::from_millis(50 * u64::from(self.resumes))).await;
        let opts = self.pinned().with_range(Some(self.pos..self.size));
        match self.inner.store.get_opts(&self.location, opts).await {
            Ok(r) if r.meta.size == self.size && r.range.start == self.pos => {
                self.stream = Some(r.into_stream());
                Ok(())
            }
            Ok(_) => Err(self.error(ObjectErrorKind::Changed, None)),
            Err(object_store::Error::Precondition { .. }) => {
                Err(self.error(ObjectErrorKind::Changed, None))
            }
            Err(e) if is_not_found(&e) => Err(self.error(ObjectErrorKind::Changed, Some(e))),
            Err(e) => Err(self.error(crate::error::classify(&e), Some(e))),
        }
    }
}
