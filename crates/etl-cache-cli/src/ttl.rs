//! Parsing `--ttl`: `30s`, `15m`, `1h`, `2d`, `1w`, combinations, bare seconds
//! (units through humantime).

use std::time::Duration;

/// Parses a TTL: `30s`, `15m`, `1h`, `2d`, `1w`, combinations such as
/// `1h30m` or `1h 30m`, spelled-out units (`2days`), or a bare number of
/// seconds.
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
    // humantime panics on a sum past 2^64 seconds in parts (`{u64::MAX}s
    // 1000ms`): that is a TTL too long, as its overflow error is, unless
    // the text has a fraction, whose digits it also reports as overflowing.
    match std::panic::catch_unwind(|| humantime::parse_duration(s)) {
        Ok(Ok(d)) => positive(d, s),
        Ok(Err(humantime::DurationError::NumberOverflow)) if !s.contains('.') => too_long(),
        Ok(Err(_)) => Err(bad()),
        Err(_) => too_long(),
    }
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
        // Fractions of a unit, as humantime reads them.
        assert_eq!(parse_ttl("1.5h"), Ok(Duration::from_secs(5400)));
        let e = parse_ttl("0.3333h").unwrap_err();
        assert!(e.contains("invalid TTL"), "{e}");
        let e = parse_ttl("18446744073709551615s 1000ms").unwrap_err();
        assert!(e.contains("100 years"), "{e}");
        for bad in ["", "h", "1x", "1h30", "-1s", "0s", "0"] {
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
}
