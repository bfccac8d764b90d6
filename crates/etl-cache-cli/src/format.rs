//! Text for people and scripts: sizes, durations, times (RFC 3339), keys on
//! one line, counts of entries, and aligned tables.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `1536` → `1.50 KiB`; exact below 1 KiB.
pub fn human_bytes(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}

/// A duration in its two largest units: `42s`, `3m 12s`, `2h 5m`, `3d 4h`.
// Written here: listings want two units in a narrow column, and the
// libraries print one (indicatif's `HumanDuration`: `3 minutes`) or every
// unit (humantime: `3days 4h 5m 6s`).
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

/// `t` as RFC 3339 in UTC, to the second: `2026-11-28T01:21:00Z` (times
/// before 1970 show as 1970).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t.max(UNIX_EPOCH)).to_string()
}

/// Displays a key on one line: control characters escaped.
pub fn display_key(key: &str) -> String {
    if key.chars().any(char::is_control) {
        key.escape_debug().to_string()
    } else {
        key.to_owned()
    }
}

/// `entry` or `entries`, as `n` asks.
pub fn entries(n: u64) -> &'static str {
    if n == 1 { "entry" } else { "entries" }
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
    fn sizes_and_durations_read_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(1 << 30), "1.00 GiB");
        assert_eq!(human_bytes(300 << 20), "300.00 MiB");
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
