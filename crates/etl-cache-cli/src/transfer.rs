//! Moving payloads: the chunk size of every transfer, the progress bar on
//! stderr, and a reader (stdin, a file) turned into a bounded stream.

use std::io::{self, IsTerminal, Read};

use bytes::{Bytes, BytesMut};
use etl_cache::ByteStream;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

/// Chunk size of every transfer: large enough that per-chunk costs vanish,
/// small enough that a few chunks in flight keep memory bounded.
pub const CHUNK: usize = 256 * 1024;

/// Transfers smaller than this never show a progress bar.
pub const PROGRESS_THRESHOLD: u64 = 4 << 20;

/// A progress bar on stderr for one transfer, or nothing: shown only when
/// stderr is a terminal, `--quiet` is off, and the transfer passes
/// [`PROGRESS_THRESHOLD`] (known sizes are judged up front, unknown ones once
/// they pass it).
pub struct Progress {
    bar: Option<ProgressBar>,
    shown: bool,
}

impl Progress {
    /// A bar for `total` bytes (or an unknown amount) labelled `what`.
    pub fn new(total: Option<u64>, what: &str, quiet: bool) -> Progress {
        let wanted =
            !quiet && io::stderr().is_terminal() && total.is_none_or(|t| t >= PROGRESS_THRESHOLD);
        if !wanted {
            return Progress {
                bar: None,
                shown: false,
            };
        }
        let (bar, template) = match total {
            Some(t) => (
                ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
                "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} \
                 {binary_bytes_per_sec} eta {eta}",
            ),
            None => (
                ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()),
                "{spinner} {msg} {binary_bytes} {binary_bytes_per_sec} {elapsed}",
            ),
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_owned());
        Progress {
            shown: total.is_some(),
            bar: Some(bar),
        }
    }

    /// Records `n` more bytes.
    pub fn inc(&mut self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
            if !self.shown && bar.position() >= PROGRESS_THRESHOLD {
                bar.set_draw_target(ProgressDrawTarget::stderr());
                self.shown = true;
            }
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Streams `reader` in [`CHUNK`]-sized chunks from a thread of its own (so a
/// read blocked on a pipe never holds up the runtime or its shutdown), with at
/// most a few chunks in flight.
pub fn reader_stream(mut reader: impl Read + Send + 'static, mut progress: Progress) -> ByteStream {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
    std::thread::spawn(move || {
        loop {
            let mut buf = BytesMut::zeroed(CHUNK);
            let mut filled = 0;
            while filled < CHUNK {
                match reader.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
            if filled == 0 {
                progress.finish();
                return;
            }
            buf.truncate(filled);
            progress.inc(filled as u64);
            if tx.blocking_send(Ok(buf.freeze())).is_err() || filled < CHUNK {
                progress.finish();
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}
