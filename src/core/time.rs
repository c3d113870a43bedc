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

impl From<Option<At>> for Stamp {
    fn from(at: Option<At>) -> Self {
        at.map_or(Stamp::NEVER, Stamp::at)
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
