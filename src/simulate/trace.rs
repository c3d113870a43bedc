//! Heartbeat timing from a recording of real send times.
//!
//! Uniform jitter around a cadence is kinder than reality: real senders stall (a loaded host, a
//! long GC, a scheduler hiccup) in bursts no symmetric distribution produces. A trace replays the
//! gaps a real sender left between its heartbeats, stretched by `scale` to the cadence under test,
//! each workspace starting at its own offset in it (wrapping around at the end), so a fleet sees
//! the recorded stalls at different moments.
//!
//! The format is the PlanetLab failure-detector benchmark's: a header
//! `numseq,timestamp_start_send,timestamp_end_send`, then one heartbeat per line with its send
//! times in nanoseconds. Only the start-of-send column is used.

use std::path::{Path, PathBuf};

/// The header a trace must start with.
pub const HEADER: &str = "numseq,timestamp_start_send,timestamp_end_send";

/// The longest interval a trace may give (ms): the longest run there is.
const MAX_INTERVAL_MS: i64 = super::scenario::MAX_DURATION.as_millis() as i64;

/// Why a trace could not be used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("reading heartbeat trace {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("heartbeat trace {path}: the first line must be `{HEADER}`")]
    Header { path: PathBuf },
    #[error("heartbeat trace {path}:{line}: {msg}")]
    Line { path: PathBuf, line: usize, msg: String },
    #[error("heartbeat trace {path}: needs at least two sends to give an interval")]
    TooShort { path: PathBuf },
}

/// The inter-send intervals of a trace, scaled, in milliseconds (each at least 1).
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    intervals_ms: Vec<i64>,
}

impl Trace {
    /// Reads a trace file and scales its intervals.
    pub fn load(path: &Path, scale: f64) -> Result<Trace, TraceError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| TraceError::Read { path: path.to_path_buf(), source })?;
        Trace::parse(path, &text, scale)
    }

    /// Parses the text of a trace (`path` only names it in errors).
    pub fn parse(path: &Path, text: &str, scale: f64) -> Result<Trace, TraceError> {
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, header)) if header.trim() == HEADER => {}
            _ => return Err(TraceError::Header { path: path.to_path_buf() }),
        }
        let bad = |line: usize, msg: String| TraceError::Line { path: path.to_path_buf(), line: line + 1, msg };
        let mut previous: Option<i64> = None;
        let mut intervals_ms = Vec::new();
        for (i, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
            let field = line.split(',').nth(1).ok_or_else(|| bad(i, "expected three comma-separated fields".into()))?;
            let start: i64 =
                field.trim().parse().map_err(|e| bad(i, format!("timestamp_start_send {field:?}: {e}")))?;
            if let Some(prev) = previous {
                if start < prev {
                    return Err(bad(i, "timestamp_start_send goes back in time".into()));
                }
                // At least 1 ms, and no longer than a whole run could be: a gap of a century in a
                // hand-edited trace must not overflow the world's clock.
                let ms = ((start - prev) as f64 / 1e6 * scale).round();
                intervals_ms.push((ms as i64).clamp(1, MAX_INTERVAL_MS));
            }
            previous = Some(start);
        }
        if intervals_ms.is_empty() {
            return Err(TraceError::TooShort { path: path.to_path_buf() });
        }
        Ok(Trace { intervals_ms })
    }

    /// How many intervals it holds.
    pub fn len(&self) -> usize {
        self.intervals_ms.len()
    }

    /// Never true: a trace holds at least one interval.
    pub fn is_empty(&self) -> bool {
        self.intervals_ms.is_empty()
    }

    /// The interval at position `pos`, wrapping around.
    pub fn interval_ms(&self, pos: usize) -> i64 {
        self.intervals_ms[pos % self.intervals_ms.len()]
    }
}
