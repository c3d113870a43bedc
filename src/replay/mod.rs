//! Replays: JSONL logs run through the engine with no NATS and no disk.
//!
//! A log is one input event per line (the same records vigil writes to its own log and `vigil
//! export` prints). Replaying it gives the outputs vigil gave — byte for byte, on any machine —
//! because the engine is a pure fold. This module reads logs, reports lines it cannot read with
//! their line numbers, and renders outputs as JSONL or as a transcript for people.

use std::fmt::Write as _;

use crate::core::event::{Input, InputType, Output, OutputBody};
use crate::core::wire::{self, DecodeError, Stamping};
use crate::core::{Engine, Policy};

/// A line that is not a valid event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{source_name}:{line}: {error}")]
pub struct Malformed {
    /// The file (or stream) the line came from.
    pub source_name: String,
    /// 1-based line number.
    pub line: usize,
    pub error: DecodeError,
}

/// Parses a JSONL log: one event per non-blank line.
pub fn parse_jsonl<'a>(source_name: &'a str, text: &'a str) -> impl Iterator<Item = Result<Input, Malformed>> + 'a {
    text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(move |(i, line)| {
        wire::decode_json(line, Stamping::Logged).map_err(|error| Malformed {
            source_name: source_name.to_string(),
            line: i + 1,
            error,
        })
    })
}

/// What a replay produced.
#[derive(Debug, Default)]
pub struct Replay {
    /// Inputs applied.
    pub inputs: usize,
    /// Outputs, in order.
    pub outputs: Vec<Output>,
    /// Lines skipped because they are not valid events.
    pub malformed: Vec<Malformed>,
}

/// Runs parsed lines through a fresh engine. With `strict`, stops at the first malformed line.
pub fn run(policy: Policy, lines: impl IntoIterator<Item = Result<Input, Malformed>>, strict: bool) -> Replay {
    let mut engine = Engine::new(policy);
    let mut replay = Replay::default();
    for line in lines {
        match line {
            Ok(input) => {
                engine.apply(&input, &mut replay.outputs);
                replay.inputs += 1;
            }
            Err(m) => {
                replay.malformed.push(m);
                if strict {
                    break;
                }
            }
        }
    }
    replay
}

/// The outputs as JSONL, one event per line, each line ending in a newline.
pub fn to_jsonl(outputs: &[Output]) -> String {
    let mut s = String::new();
    for o in outputs {
        s.push_str(&wire::encode_output_json(o));
        s.push('\n');
    }
    s
}

/// One output as a transcript line: time, workspace, what happened, why.
pub fn transcript_line(o: &Output) -> String {
    let ws = o.workspace.as_ref().map_or("(fleet)", |w| w.as_str());
    let (kind, what, extra) = match &o.body {
        OutputBody::StateChanged { from, to, retry_after_s, .. } => {
            let name = |s: Option<crate::core::StateName>| s.map_or("∅", |s| s.as_str());
            let extra = retry_after_s.map(|n| format!("retry-after {n}s"));
            ("state", format!("{} → {}", name(*from), name(*to)), extra)
        }
        OutputBody::Restart { restart_id, origin, attempt, detail, .. } => {
            ("RESTART", format!("{restart_id} {origin} attempt {attempt}"), detail.clone())
        }
        OutputBody::ProbeRequest { probe_id, .. } => ("probe?", probe_id.clone(), None),
        OutputBody::Suppressed { input, detail, retry_after_s, .. } => {
            let mut extra = detail.clone().unwrap_or_default();
            if let Some(n) = retry_after_s {
                let _ = write!(extra, "{}retry in {n}s", if extra.is_empty() { "" } else { "; " });
            }
            ("suppress", input.map_or("timer", InputType::as_str).to_string(), (!extra.is_empty()).then_some(extra))
        }
        OutputBody::Alert { kind, detail, .. } => ("ALERT", kind.as_str().to_string(), detail.clone()),
    };
    let mut line = format!("{}  {ws:<16} {kind:<9} {what:<30} {}", o.at, o.body.reason());
    if let Some(extra) = extra {
        let _ = write!(line, "  ({extra})");
    }
    line
}

/// The outputs as a transcript, one line each.
pub fn to_transcript(outputs: &[Output]) -> String {
    outputs.iter().map(|o| transcript_line(o) + "\n").collect()
}

/// A one-line summary: inputs, outputs by type, malformed lines.
pub fn summary(replay: &Replay) -> String {
    let count = |t: &str| replay.outputs.iter().filter(|o| o.body.type_name() == t).count();
    format!(
        "{} inputs, {} outputs ({} state changes, {} restarts, {} probe requests, {} suppressed, {} alerts), {} malformed lines",
        replay.inputs,
        replay.outputs.len(),
        count("state_changed"),
        count("restart"),
        count("probe_request"),
        count("suppressed"),
        count("alert"),
        replay.malformed.len()
    )
}
