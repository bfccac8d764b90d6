//! Helpers shared by the subcommands: human sizes, durations and times, TTL
//! parsing, progress bars, streams over readers, and the failure type.

use std::fmt;
use std::io::{self, IsTerminal, Read};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use etl_cache::{ByteStream, Error};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

/// Chunk size of every transfer: large enough that per-chunk costs vanish,
/// small enough that a few chunks in flight keep memory bounded.
pub const CHUNK: usize = 256 * 1024;

/// Transfers smaller than this never show a progress bar.
pub const PROGRESS_THRESHOLD: u64 = 4 << 20;

/// How a command ended, when it did not fail. Maps to the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Found / done: exit 0.
    Ok,
    /// No entry for the key: exit 1.
    Miss,
    /// The command ran but found problems it reported (verify): exit 2.
    Problems,
}

/// Why a command failed (exit 2): a message and, where we know one, what to do.
#[derive(Debug)]
pub enum Failure {
    /// An error to print.
    Error {
        /// What went wrong.
        message: String,
        /// What to do about it.
        hint: Option<String>,
    },
    /// Standard output was closed by its reader (`etl-cache get k | head`): quit quietly.
    BrokenPipe,
}

impl Failure {
    /// A failure with a hint.
    pub fn new(message: impl Into<String>, hint: impl Into<String>) -> Failure {
        Failure::Error {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    /// A failure writing standard output.
    pub fn stdout(e: io::Error) -> Failure {
        if e.kind() == io::ErrorKind::BrokenPipe {
            return Failure::BrokenPipe;
        }
        Failure::Error {
            message: format!("cannot write to standard output: {e}"),
            hint: None,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let hint = match &e {
            Error::InvalidKey { .. } => {
                Some("keys are non-empty UTF-8 of at most 1024 bytes, without NUL".to_owned())
            }
            Error::LockTimeout { .. } => {
                Some("another process is writing this key; retry when it is done".to_owned())
            }
            Error::Corrupt { .. } => Some(
                "the entry failed its checksum and is gone; store it again with `etl-cache set`"
                    .to_owned(),
            ),
            Error::TooLarge { .. } => {
                Some("raise the cache's max_bytes, or store the value compressed".to_owned())
            }
            Error::Io { .. } => Some(
                "check that the cache directory exists, is writable and its disk is not full"
                    .to_owned(),
            ),
            Error::Open { .. } => Some(
                "pass another location with --cache URL or the ETL_CACHE_URL variable".to_owned(),
            ),
            _ => None,
        };
        Failure::Error {
            message: e.to_string(),
            hint,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Error { message, hint } => {
                write!(f, "error: {message}")?;
                if let Some(hint) = hint {
                    write!(f, "\n  hint: {hint}")?;
                }
                Ok(())
            }
            Failure::BrokenPipe => f.write_str("standard output closed"),
        }
    }
}

/// The result of a command.
pub type CmdResult = Result<Status, Failure>;

/// `1536` → `1.5 KiB`; exact below 1 KiB.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration in its two largest units: `42s`, `3m 12s`, `2h 5m`, `3d 4h`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, _) if secs == 0 => format!("{mins}m"),
        (0, 0, _) => format!("{mins}m {secs}s"),
        (0, _, 0) => format!("{hours}h"),
        (0, _, _) => format!("{hours}h {mins}m"),
        (_, 0, _) => format!("{days}d"),
        _ => format!("{days}d {hours}h"),
    }
}

/// Seconds from `a` to `b` (negative when `b` is earlier), for JSON output.
pub fn seconds_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// How long ago `t` was, for humans: `3m`, or `0s` for times in the future.
pub fn age(t: SystemTime, now: SystemTime) -> String {
    human_duration(now.duration_since(t).unwrap_or(Duration::ZERO))
}

/// When an entry expires, for humans: `never`, `expired`, or `in 59m 58s`.
pub fn expires_in(expires: Option<SystemTime>, now: SystemTime) -> String {
    match expires {
        None => "never".to_owned(),
        Some(e) => match e.duration_since(now) {
            Ok(left) if !left.is_zero() => format!("in {}", human_duration(left)),
            _ => "expired".to_owned(),
        },
    }
}

/// `t` as RFC 3339 in UTC, to the second: `2026-11-28T01:21:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Parses a TTL: `30s`, `15m`, `1h`, `2d`, `1w`, combinations such as
/// `1h30m`, or a bare number of seconds.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let bad =
        || format!("invalid TTL {s:?}: use a number with a unit, as in 30s, 15m, 1h, 2d or 1h30m");
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    // Numbers too large for 64 bits are TTLs too long, not typos.
    let too_long = || positive(Duration::MAX, s);
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<u64>() {
            Ok(secs) => positive(Duration::from_secs(secs), s),
            Err(_) => too_long(),
        };
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        if digits.is_empty() {
            return Err(bad());
        }
        let Some(sum) = digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit))
            .and_then(|v| total.checked_add(v))
        else {
            return too_long();
        };
        digits.clear();
        total = sum;
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    positive(Duration::from_secs(total), s)
}

/// A TTL the cache accepts: above zero, at most [`etl_cache::MAX_TTL`].
fn positive(d: Duration, s: &str) -> Result<Duration, String> {
    if d.is_zero() {
        Err(format!(
            "TTL {s:?} is zero: an entry would expire at once; leave --ttl out to keep it"
        ))
    } else if d > etl_cache::MAX_TTL {
        Err(format!(
            "TTL {s:?} is longer than the longest an entry may keep, 100 years ({} s); \
             leave --ttl out to keep it until it is evicted or removed",
            etl_cache::MAX_TTL.as_secs()
        ))
    } else {
        Ok(d)
    }
}

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
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}

/// Displays a key on one line: control characters escaped.
pub fn display_key(key: &str) -> String {
    if key.chars().any(char::is_control) {
        key.escape_debug().to_string()
    } else {
        key.to_owned()
    }
}

/// Lays out rows as columns separated by two spaces; the last column is not padded.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                let pad = widths[i] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse() {
        assert_eq!(parse_ttl("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_ttl("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_ttl("1w2d3h4m5s"), Ok(Duration::from_secs(788_645)));
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        for bad in ["", "h", "1x", "1h30", "-1s", "1.5h", "0s", "0"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_ttl("99999999999999999999w").is_err());
        assert_eq!(parse_ttl("5214w"), Ok(Duration::from_secs(5214 * 604_800)));
        for huge in [
            "10000000000000000000",
            "18446744073709551615",
            "18446744073709551615s",
            "30500w",
            "3153600001",
            "1000000000000w",
            "36501d",
        ] {
            let e = parse_ttl(huge).unwrap_err();
            assert!(e.contains("100 years"), "{huge}: {e}");
        }
    }

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_bytes(300 << 20), "300 MiB");
        assert_eq!(human_duration(Duration::from_secs(42)), "42s");
        assert_eq!(human_duration(Duration::from_secs(192)), "3m 12s");
        assert_eq!(human_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(human_duration(Duration::from_secs(7500)), "2h 5m");
        assert_eq!(human_duration(Duration::from_secs(273_600)), "3d 4h");
    }

    #[test]
    fn times_format_as_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_764_292_860);
        assert_eq!(rfc3339(t), "2025-11-28T01:21:00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn tables_align() {
        let rows = vec![
            vec!["KEY".into(), "SIZE".into(), "X".into()],
            vec!["a_long_key".into(), "1 B".into(), "".into()],
        ];
        assert_eq!(table(&rows), "KEY         SIZE  X\na_long_key  1 B\n");
    }
}
