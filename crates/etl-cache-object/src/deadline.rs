//! An idle timeout around every request of a store.
//!
//! object_store 0.13 (the version DataFusion 55 uses) has a connect timeout
//! and a whole-request timeout, but nothing between: with the whole-request
//! timeout off (it would cut multi-gigabyte bodies), a server that accepts a
//! connection and then goes silent holds a request forever. [`Deadline`]
//! wraps a store and bounds each wait on it instead:
//!
//! - the time to the answer of a get, head, delete, listing page or small
//!   put: the idle timeout;
//! - the gap between two chunks of a get's body, or two items of a listing:
//!   the idle timeout (only while the caller waits for the next one);
//! - the answer to a put or an upload part: the idle timeout plus the time
//!   its body takes at [`MIN_UPLOAD_RATE`]. The body is sent before the
//!   answer can come and its progress is not visible from outside the HTTP
//!   client, so a bound that did not grow with the size would cut large
//!   uploads on slow links; the completion of a multipart upload likewise
//!   gets an allowance for the whole upload, since some stores assemble the
//!   object before they answer.
//!
//! A wait that runs out fails with an `io::Error` of kind `TimedOut`, which
//! the cache reports as [`crate::ObjectErrorKind::Timeout`]. Copies and
//! renames (server-side, of unknown size) are passed through unbounded.

use std::fmt;
use std::future::Future;
use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
    UploadPart,
};

/// The idle timeout unless another is set: 30 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The slowest upload the bound of a put allows for, in bytes per second
/// (128 KiB/s, about 1 Mbit/s): an 8 MiB part gets 64 s on top of the idle
/// timeout.
pub const MIN_UPLOAD_RATE: u64 = 128 * 1024;

/// A store whose every wait is bounded by an idle timeout.
#[derive(Debug)]
pub(crate) struct Deadline {
    inner: Arc<dyn ObjectStore>,
    idle: Duration,
}

impl Deadline {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, idle: Duration) -> Deadline {
        Deadline { inner, idle }
    }
}

/// Shown as the wrapped store, so that errors name the real one.
impl fmt::Display for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

fn timed_out(what: &str, limit: Duration) -> object_store::Error {
    object_store::Error::Generic {
        store: "object store",
        source: Box::new(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no progress on {what} within {limit:?} (idle timeout)"),
        )),
    }
}

/// The time a body of `bytes` takes at [`MIN_UPLOAD_RATE`].
fn allowance(bytes: u64) -> Duration {
    Duration::from_millis(bytes.saturating_mul(1000) / MIN_UPLOAD_RATE)
}

async fn bounded<T>(
    limit: Duration,
    what: &'static str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(timed_out(what, limit)),
    }
}

/// `s`, failing (and ending) when the next item takes longer than `idle`.
fn idle_stream<T: Send + 'static>(
    s: BoxStream<'static, Result<T>>,
    idle: Duration,
    what: &'static str,
) -> BoxStream<'static, Result<T>> {
    futures::stream::unfold(Some(s), move |s| async move {
        let mut s = s?;
        match tokio::time::timeout(idle, s.next()).await {
            Ok(Some(item)) => Some((item, Some(s))),
            Ok(None) => None,
            Err(_) => Some((Err(timed_out(what, idle)), None)),
        }
    })
    .boxed()
}

#[async_trait]
impl ObjectStore for Deadline {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let limit = self
            .idle
            .saturating_add(allowance(payload.content_length() as u64));
        bounded(limit, "put", self.inner.put_opts(location, payload, opts)).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let upload = bounded(
            self.idle,
            "start of a multipart upload",
            self.inner.put_multipart_opts(location, opts),
        )
        .await?;
        Ok(Box::new(Upload {
            inner: upload,
            idle: self.idle,
            total: 0,
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let r = bounded(self.idle, "get", self.inner.get_opts(location, options)).await?;
        let payload = match r.payload {
            GetResultPayload::Stream(s) => {
                GetResultPayload::Stream(idle_stream(s, self.idle, "the body of a get"))
            }
            other => other,
        };
        Ok(GetResult { payload, ..r })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let bytes = ranges.iter().map(|r| r.end.saturating_sub(r.start)).sum();
        let limit = self.idle.saturating_add(allowance(bytes));
        bounded(limit, "ranged get", self.inner.get_ranges(location, ranges)).await
    }

    /// The gap between two results is bounded, which includes the wait for
    /// the next location of `locations`.
    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        idle_stream(self.inner.delete_stream(locations), self.idle, "delete")
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        idle_stream(self.inner.list(prefix), self.idle, "list")
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        idle_stream(
            self.inner.list_with_offset(prefix, offset),
            self.idle,
            "list",
        )
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        bounded(self.idle, "list", self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

/// A multipart upload whose requests are bounded like a put.
#[derive(Debug)]
struct Upload {
    inner: Box<dyn MultipartUpload>,
    idle: Duration,
    /// Bytes of the parts so far.
    total: u64,
}

#[async_trait]
impl MultipartUpload for Upload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let len = data.content_length() as u64;
        self.total = self.total.saturating_add(len);
        let limit = self.idle.saturating_add(allowance(len));
        let part = self.inner.put_part(data);
        Box::pin(bounded(limit, "upload part", part))
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let limit = self.idle.saturating_add(allowance(self.total));
        bounded(
            limit,
            "complete of a multipart upload",
            self.inner.complete(),
        )
        .await
    }

    async fn abort(&mut self) -> Result<()> {
        bounded(self.idle, "abort of a multipart upload", self.inner.abort()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, WriteMultipart};

    /// An in-memory store whose puts, upload parts, completions and gets
    /// answer after `delay` (of tokio's clock, paused in these tests).
    #[derive(Debug)]
    struct Slow {
        inner: Arc<InMemory>,
        delay: Duration,
    }

    impl fmt::Display for Slow {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "Slow")
        }
    }

    #[derive(Debug)]
    struct SlowUpload(Box<dyn MultipartUpload>, Duration);

    #[async_trait]
    impl MultipartUpload for SlowUpload {
        fn put_part(&mut self, data: PutPayload) -> UploadPart {
            let (part, delay) = (self.0.put_part(data), self.1);
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                part.await
            })
        }
        async fn complete(&mut self) -> Result<PutResult> {
            tokio::time::sleep(self.1).await;
            self.0.complete().await
        }
        async fn abort(&mut self) -> Result<()> {
            self.0.abort().await
        }
    }

    #[async_trait]
    impl ObjectStore for Slow {
        async fn put_opts(&self, l: &Path, p: PutPayload, o: PutOptions) -> Result<PutResult> {
            tokio::time::sleep(self.delay).await;
            self.inner.put_opts(l, p, o).await
        }
        async fn put_multipart_opts(
            &self,
            l: &Path,
            o: PutMultipartOptions,
        ) -> Result<Box<dyn MultipartUpload>> {
            let up = self.inner.put_multipart_opts(l, o).await?;
            Ok(Box::new(SlowUpload(up, self.delay)))
        }
        async fn get_opts(&self, l: &Path, o: GetOptions) -> Result<GetResult> {
            tokio::time::sleep(self.delay).await;
            self.inner.get_opts(l, o).await
        }
        fn delete_stream(
            &self,
            l: BoxStream<'static, Result<Path>>,
        ) -> BoxStream<'static, Result<Path>> {
            self.inner.delete_stream(l)
        }
        fn list(&self, p: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
            self.inner.list(p)
        }
        async fn list_with_delimiter(&self, p: Option<&Path>) -> Result<ListResult> {
            self.inner.list_with_delimiter(p).await
        }
        async fn copy_opts(&self, f: &Path, t: &Path, o: CopyOptions) -> Result<()> {
            self.inner.copy_opts(f, t, o).await
        }
    }

    const IDLE: Duration = Duration::from_secs(30);

    /// A store answering after `delay`, behind the idle timeout.
    fn slow(delay: Duration) -> Deadline {
        let inner = Arc::new(InMemory::new());
        Deadline::new(Arc::new(Slow { inner, delay }), IDLE)
    }

    fn is_timeout(e: &object_store::Error) -> bool {
        crate::error::classify(e) == crate::ObjectErrorKind::Timeout
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_answer_to_a_small_request_is_a_timeout() {
        let store = slow(IDLE + Duration::from_secs(1));
        let path = Path::from("a");
        let e = store.put(&path, "x".into()).await.unwrap_err();
        assert!(is_timeout(&e), "{e}");
        let e = store.get(&path).await.unwrap_err();
        assert!(is_timeout(&e), "{e}");
        assert!(e.to_string().contains("idle timeout"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_within_the_idle_timeout_is_kept() {
        let store = slow(IDLE - Duration::from_secs(1));
        let path = Path::from("a");
        store.put(&path, "x".into()).await.unwrap();
        let got = store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(got.as_ref(), b"x");
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_put_may_take_longer_than_the_idle_timeout() {
        // 4 MiB take 32 s at the slowest rate allowed for: the answer may
        // come 30 s + 32 s after the put starts.
        let body = vec![7u8; 4 << 20];
        let store = slow(IDLE + Duration::from_secs(20));
        let path = Path::from("big");
        store.put(&path, body.clone().into()).await.unwrap();
        // A part of that size likewise, and the completion of the upload.
        let up = store.put_multipart(&Path::from("parts")).await.unwrap();
        let mut w = WriteMultipart::new_with_chunk_size(up, 4 << 20);
        w.write(&body);
        w.write(&body);
        w.finish().await.unwrap();
        // Beyond its allowance, it is cut.
        let store = slow(IDLE + Duration::from_secs(40));
        let e = store.put(&path, body.into()).await.unwrap_err();
        assert!(is_timeout(&e), "{e}");
    }
}
