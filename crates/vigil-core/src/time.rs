//! Time as the core sees it: milliseconds on the UTC timeline, taken only from event timestamps.
//!
//! The core never reads a clock. Every instant it reasons about comes from an event's `at` (or a
//! deadline derived from one), so a log replays to the same decisions on any machine at any time.
//! On the wire an instant is an RFC 3339 UTC string with millisecond precision
//! (`2026-04-16T09:10:26.100Z`); in memory it is an `i64` count of milliseconds since the Unix epoch.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant: milliseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct At(pub i64);

/// Why a timestamp string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 timestamp ({0}); expected e.g. 2026-04-16T09:10:26.100Z")]
pub struct BadTimestamp(String);

impl At {
    /// Parses an RFC 3339 timestamp with any offset; sub-millisecond digits are truncated.
    pub fn parse(s: &str) -> Result<At, BadTimestamp> {
        if let Some(at) = parse_canonical(s.as_bytes()) {
            return Ok(at);
        }
        let dt = DateTime::parse_from_rfc3339(s).map_err(|e| BadTimestamp(e.to_string()))?;
        Ok(At(dt.timestamp_millis()))
    }

    /// Milliseconds since the epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// This instant plus a duration, saturating at the end of time rather than overflowing.
    pub fn plus(self, d: Duration) -> At {
        At(self.0.saturating_add(millis_of(d)))
    }

    /// How long after `earlier` this instant is (zero if it is not later).
    pub fn since(self, earlier: At) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    /// Whole seconds from `self` until `later`, rounded up (what a `Retry-After` wants).
    pub fn secs_until_ceil(self, later: At) -> u32 {
        let ms = later.0.saturating_sub(self.0).max(0);
        u32::try_from((ms + 999) / 1000).unwrap_or(u32::MAX)
    }
}

/// The fast path for the one shape vigil writes and most producers send, `YYYY-MM-DDTHH:MM:SS.mmmZ`
/// (every event carries a timestamp, and general RFC 3339 parsing is a large share of decoding an
/// event). Anything else — other offsets, precisions, out-of-range fields — returns `None` and goes
/// to the general parser, which also produces the error message.
fn parse_canonical(b: &[u8]) -> Option<At> {
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        b[range].iter().try_fold(0i64, |n, &c| c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0')))
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second, milli) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month[month as usize - 1]
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(At(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + milli))
}

/// A duration in whole milliseconds, saturating for absurd values.
pub fn millis_of(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match DateTime::<Utc>::from_timestamp_millis(self.0) {
            Some(dt) => f.write_str(&dt.to_rfc3339_opts(SecondsFormat::Millis, true)),
            None => write!(f, "@{}ms", self.0),
        }
    }
}

impl Serialize for At {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for At {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<At, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        At::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An optional instant packed into eight bytes (`NEVER` means "none").
///
/// Per-workspace state is kept for up to millions of workspaces; `Option<At>` would double the
/// size of every timestamp field, so the machine's bookkeeping uses this instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Stamp(i64);

impl Stamp {
    /// No instant.
    pub const NEVER: Stamp = Stamp(i64::MIN);

    /// The instant `at`.
    pub fn at(at: At) -> Stamp {
        Stamp(at.0)
    }

    /// The instant, if there is one.
    pub fn get(self) -> Option<At> {
        (self != Stamp::NEVER).then_some(At(self.0))
    }

    /// The same instant `d` later; no instant stays none.
    pub fn later(self, d: Duration) -> Stamp {
        self.get().map_or(Stamp::NEVER, |t| Stamp::at(t.plus(d)))
    }

    /// True when there is an instant and it lies no more than `window` before `now`.
    pub fn within(self, now: At, window: Duration) -> bool {
        self.get().is_some_and(|t| now.since(t) <= window)
    }
}

impl Default for Stamp {
    fn default() -> Self {
        Stamp::NEVER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_millisecond_utc() {
        let at = At::parse("2026-04-16T09:10:26.100Z").unwrap();
        assert_eq!(at.to_string(), "2026-04-16T09:10:26.100Z");
    }

    #[test]
    fn normalises_offsets_to_utc_and_truncates_below_a_millisecond() {
        let at = At::parse("2026-04-16T11:10:26.1234567+02:00").unwrap();
        assert_eq!(at.to_string(), "2026-04-16T09:10:26.123Z");
    }

    #[test]
    fn the_fast_path_agrees_with_the_general_parser() {
        // Every 7 919 007 ms (an odd stride) over 1900..2300, leap days and year ends included.
        let (start, end) =
            (At::parse("1900-01-01T00:00:00.000Z").unwrap(), At::parse("2300-01-01T00:00:00.000Z").unwrap());
        let mut t = start.0;
        while t < end.0 {
            let text = At(t).to_string();
            assert_eq!(parse_canonical(text.as_bytes()), Some(At(t)), "{text}");
            t += 7_919_007;
        }
        for text in ["2024-02-29T23:59:59.999Z", "2000-02-29T00:00:00.000Z", "1970-01-01T00:00:00.000Z"] {
            let general = DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis();
            assert_eq!(parse_canonical(text.as_bytes()), Some(At(general)), "{text}");
        }
        // Not canonical, or not a date: left to the general parser.
        for text in [
            "2023-02-29T00:00:00.000Z",
            "2026-04-16T24:00:00.000Z",
            "2026-04-16T09:10:26.1Z",
            "2026-04-16t09:10:26.100Z",
        ] {
            assert_eq!(parse_canonical(text.as_bytes()), None, "{text}");
        }
        assert!(At::parse("2023-02-29T00:00:00.000Z").is_err());
    }

    #[test]
    fn refuses_non_timestamps() {
        assert!(At::parse("yesterday").is_err());
        assert!(At::parse("").is_err());
        assert!(At::parse("2026-04-16 09:10:26").is_err());
    }

    #[test]
    fn stamp_windows() {
        let now = At(100_000);
        assert!(!Stamp::NEVER.within(now, Duration::from_secs(3600)));
        assert!(Stamp::at(At(90_000)).within(now, Duration::from_secs(10)));
        assert!(!Stamp::at(At(89_999)).within(now, Duration::from_secs(10)));
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(At(0).secs_until_ceil(At(1)), 1);
        assert_eq!(At(0).secs_until_ceil(At(15_000)), 15);
        assert_eq!(At(10).secs_until_ceil(At(0)), 0);
    }
}
