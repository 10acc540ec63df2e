//! The time values of `moat logs --since/--until`: an RFC 3339 time, or a time ago.
//!
//! ```text
//!  2026-04-30T20:32:59Z  2026-04-30T22:32:59.5+02:00   an instant (fraction optional)
//!  90s  10m  2h  1d                                     that long before now
//! ```

use std::time::{Duration, SystemTime};

use moat_protocol::exec_log::parse_timestamp;

/// Parses `--since`/`--until` (see the module documentation), relative to `now`.
pub fn parse_time_at(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    if let Some(at) = parse_timestamp(text) {
        return Ok(at);
    }
    let bad = || format!("not an RFC 3339 time or a duration like 10m (s, m, h, d): {text:?}");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (count, unit) = text.split_at(split);
    let count: u64 = count.parse().map_err(|_| bad())?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let ago = count.checked_mul(unit_secs).map(Duration::from_secs).ok_or_else(bad)?;
    now.checked_sub(ago).ok_or_else(bad)
}

/// [`parse_time_at`] now: clap's value parser.
pub fn parse_time(text: &str) -> Result<SystemTime, String> {
    parse_time_at(text, SystemTime::now())
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn relative_times_count_back_from_now() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(parse_time_at("10m", now), Ok(now - Duration::from_secs(600)));
        assert_eq!(parse_time_at("2h", now), Ok(now - Duration::from_secs(7200)));
        assert_eq!(parse_time_at("1d", now), Ok(now - Duration::from_secs(86_400)));
        assert_eq!(parse_time_at("0s", now), Ok(now));
    }

    #[test]
    fn rfc3339_times_are_absolute() {
        let now = UNIX_EPOCH;
        assert_eq!(
            parse_time_at("1970-01-01T00:01:00Z", now),
            Ok(UNIX_EPOCH + Duration::from_secs(60))
        );
    }

    #[test]
    fn anything_else_is_refused() {
        let now = UNIX_EPOCH + Duration::from_secs(10);
        for bad in ["", "10", "m", "10w", "-5m", "1.5h", "yesterday", "99999999999999999999d"] {
            assert!(parse_time_at(bad, now).is_err(), "{bad}");
        }
    }
}
