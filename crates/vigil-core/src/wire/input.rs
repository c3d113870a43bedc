//! An input on the wire: [`RawInput`], the flat record of every field any input may carry, and
//! its validation into a typed [`Input`] — field limits included.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::event::*;
use crate::ids::IdKey;
use crate::time::At;

use super::{DecodeError, SCHEMA_VERSION, Stamping};

/// Every field any input may carry, flat and optional: the shape of an input on the wire.
#[derive(Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct RawInput<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<u64>,
    #[serde(rename = "type", borrow, default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_s: Option<u64>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_tasks: Option<u64>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub probe_id: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u64>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub restart_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub id_key: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unwatched_after_ms: Option<u64>,
    // vigil's own records' fields with names a producer may well use for something else: of
    // another type they are ignored, like any field an event does not have (SPEC §1).
    #[serde(default, deserialize_with = "lenient", skip_serializing_if = "Option::is_none")]
    pub partition: Option<u64>,
    #[serde(default, deserialize_with = "lenient", skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u64>,
    #[serde(default, deserialize_with = "lenient", skip_serializing_if = "Option::is_none")]
    pub monitored: Option<u64>,
    #[serde(default, deserialize_with = "lenient", skip_serializing_if = "Option::is_none")]
    pub awaits: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_seq: Option<u64>,
}

/// Every field an input may carry, in wire order: the envelope (`v`, `type`, `workspace`, `at`,
/// and `sent_at`, vigil's copy of a producer's `at`), the event's own fields, and vigil's own
/// (`id_key`, `unwatched_after_ms`, `partitions`: `resume` records only; `partition`: `resume`
/// and `declaration`; `monitored`, `awaits`: `declaration` only; `stream_seq`: the record's
/// position in the input stream, in logs and exports). `tests/schemas.rs` holds it to [`RawInput`] and to the
/// schemas.
pub const INPUT_FIELDS: &[&str] = &[
    "v",
    "type",
    "workspace",
    "at",
    "sent_at",
    "id",
    "interval_s",
    "incarnation",
    "active_tasks",
    "result",
    "error",
    "backend",
    "probe_id",
    "status",
    "origin",
    "reason",
    "request_id",
    "restart_id",
    "phase",
    "id_key",
    "unwatched_after_ms",
    "partition",
    "partitions",
    "monitored",
    "awaits",
    "stream_seq",
];

/// How many of [`INPUT_FIELDS`] come after the event's own: those of vigil's own records, and
/// `stream_seq`.
const VIGIL_FIELDS: usize = 7;

/// The most partitions a deployment may have (`partitions`, SPEC §4).
pub const MAX_PARTITIONS: u32 = 256;

/// The event's own fields, between the envelope and vigil's: what `vigil emit` accepts as
/// `--name value`.
pub const EVENT_FIELDS: &[&str] = INPUT_FIELDS.split_at(5).1.split_at(INPUT_FIELDS.len() - 5 - VIGIL_FIELDS).0;

/// Longest accepted idempotency key or name (`id`, `request_id`, `probe_id`, `backend`), in bytes.
/// Keys are remembered for the dedup window, so their size is memory a producer controls.
pub const ID_MAX_LEN: usize = 128;
/// Longest accepted `incarnation`, in bytes: kept per workspace for as long as it lives.
pub const INCARNATION_MAX_LEN: usize = 128;
/// Longest accepted `restart_id`, in bytes: vigil's own ids (a workspace id, a counter and a tag).
pub const RESTART_ID_MAX_LEN: usize = 256;
/// Longest accepted free text (`error`, `reason`), in bytes.
pub const TEXT_MAX_LEN: usize = 1024;

/// Every string field of an input and its longest accepted value in bytes. A longer one makes the
/// event invalid (it goes to the DLQ as `bad_field`), so no producer can make vigil hold, log or
/// re-publish more than this of its text.
pub const FIELD_LIMITS: &[(&str, usize)] = &[
    ("id", ID_MAX_LEN),
    ("incarnation", INCARNATION_MAX_LEN),
    ("error", TEXT_MAX_LEN),
    ("backend", ID_MAX_LEN),
    ("probe_id", ID_MAX_LEN),
    ("reason", TEXT_MAX_LEN),
    ("request_id", ID_MAX_LEN),
    ("restart_id", RESTART_ID_MAX_LEN),
];

/// The longest accepted value of string field `field`, if it is one of [`FIELD_LIMITS`].
pub fn field_limit(field: &str) -> Option<usize> {
    FIELD_LIMITS.iter().find(|(f, _)| *f == field).map(|(_, n)| *n)
}

fn text(field: &'static str, v: &Option<Cow<'_, str>>) -> Result<Option<String>, DecodeError> {
    let max = field_limit(field).unwrap_or(TEXT_MAX_LEN);
    match v {
        Some(s) if s.len() > max => {
            Err(DecodeError::field(field, format!("is {} bytes long; at most {max} are allowed", s.len())))
        }
        Some(s) => Ok(Some(s.to_string())),
        None => Ok(None),
    }
}

fn required<'s, 'a>(field: &'static str, v: &'s Option<Cow<'a, str>>) -> Result<&'s str, DecodeError> {
    v.as_deref().ok_or(DecodeError::Missing(field))
}

fn choice<T>(
    field: &'static str,
    v: &Option<Cow<'_, str>>,
    parse: fn(&str) -> Option<T>,
    all: &[&str],
) -> Result<T, DecodeError> {
    let s = required(field, v)?;
    parse(s).ok_or_else(|| DecodeError::field(field, format!("{s:?} is not one of {}", all.join(", "))))
}

/// A field read as `T` if it is one, and as absent if it is anything else.
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either<T> {
        Is(T),
        Other(serde::de::IgnoredAny),
    }
    Ok(match Either::<T>::deserialize(d)? {
        Either::Is(v) => Some(v),
        Either::Other(_) => None,
    })
}

/// Partition `index` of `of`: 2 to [`MAX_PARTITIONS`] partitions, the index below their number.
fn partition_of(index: u64, of: u64) -> Result<Partition, DecodeError> {
    if !(2..=u64::from(MAX_PARTITIONS)).contains(&of) {
        return Err(DecodeError::field("partitions", format!("{of} is not within 2..={MAX_PARTITIONS}")));
    }
    if index >= of {
        return Err(DecodeError::field("partition", format!("{index} is not below partitions ({of})")));
    }
    Ok(Partition { index: index as u32, of: of as u32 })
}

fn names<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|t| name(*t)).collect()
}

impl<'a> RawInput<'a> {
    /// Checks the record against SPEC §1 and builds the typed event.
    pub fn validate(&self, stamping: Stamping) -> Result<Input, DecodeError> {
        let v = self.v.ok_or(DecodeError::Missing("v"))?;
        if v != SCHEMA_VERSION {
            return Err(DecodeError::Version(v));
        }
        let kind_name = required("type", &self.kind)?;
        let parse_at =
            |field: &'static str, s: &str| At::parse(s).map_err(|e| DecodeError::field(field, e.to_string()));
        let own_at = self.at.as_deref().map(|s| parse_at("at", s)).transpose()?;
        // In a log, the record says when the stream stored it and where; from a producer, the
        // stream says so (the caller's `now`, and the position it sets), whatever the producer wrote.
        let (at, sent_at, stream_seq) = match stamping {
            Stamping::Logged => {
                let sent = self.sent_at.as_deref().map(|s| parse_at("sent_at", s)).transpose()?;
                let seq = match self.stream_seq {
                    Some(0) => return Err(DecodeError::field("stream_seq", "stream sequences start at 1")),
                    seq => seq,
                };
                (own_at.ok_or(DecodeError::Missing("at"))?, sent, seq)
            }
            Stamping::ReceivedAt(now) => {
                let sent = self.sent_at.as_deref().map(|s| parse_at("sent_at", s)).transpose()?;
                (now, own_at.or(sent), None)
            }
        };
        let ws = || -> Result<WorkspaceId, DecodeError> {
            let s = required("workspace", &self.workspace)?;
            WorkspaceId::parse(s).map_err(|e| DecodeError::field("workspace", e.to_string()))
        };
        let kind = match kind_name {
            "heartbeat" => InputKind::Heartbeat(Heartbeat {
                workspace: ws()?,
                interval_s: match self.interval_s {
                    None => None,
                    Some(n @ 1..=3600) => Some(n as u16),
                    Some(n) => return Err(DecodeError::field("interval_s", format!("{n} is outside 1..=3600"))),
                },
                incarnation: text("incarnation", &self.incarnation)?.map(compact_str::CompactString::from),
                active_tasks: match self.active_tasks {
                    None => None,
                    Some(n) => Some(
                        u32::try_from(n)
                            .map_err(|_| DecodeError::field("active_tasks", format!("{n} is too large")))?,
                    ),
                },
            }),
            "probe" => InputKind::Probe(Probe {
                workspace: ws()?,
                result: choice(
                    "result",
                    &self.result,
                    ProbeResult::parse,
                    &names(ProbeResult::ALL, ProbeResult::as_str),
                )?,
                error: text("error", &self.error)?,
                backend: text("backend", &self.backend)?,
                probe_id: text("probe_id", &self.probe_id)?,
            }),
            "upstream_error" => InputKind::UpstreamError(UpstreamError {
                workspace: ws()?,
                status: match self.status {
                    None => None,
                    Some(n @ 100..=599) => Some(n as u16),
                    Some(n) => {
                        return Err(DecodeError::field("status", format!("{n} is not an HTTP status (100..=599)")));
                    }
                },
                error: text("error", &self.error)?,
            }),
            "restart_requested" => InputKind::RestartRequested(RestartRequested {
                workspace: ws()?,
                origin: choice("origin", &self.origin, Origin::parse, &names(Origin::ALL, Origin::as_str))?,
                reason: text("reason", &self.reason)?.ok_or(DecodeError::Missing("reason"))?,
                request_id: text("request_id", &self.request_id)?,
            }),
            "restart_progress" => InputKind::RestartProgress(RestartProgress {
                workspace: ws()?,
                restart_id: text("restart_id", &self.restart_id)?.ok_or(DecodeError::Missing("restart_id"))?,
                phase: choice(
                    "phase",
                    &self.phase,
                    ProgressPhase::parse,
                    &names(ProgressPhase::ALL, ProgressPhase::as_str),
                )?,
                error: text("error", &self.error)?,
            }),
            "lifecycle" => InputKind::Lifecycle(Lifecycle {
                workspace: ws()?,
                phase: choice(
                    "phase",
                    &self.phase,
                    LifecyclePhase::parse,
                    &names(LifecyclePhase::ALL, LifecyclePhase::as_str),
                )?,
            }),
            "tick" => InputKind::Tick,
            "resume" => InputKind::Resume(Resume {
                id_key: match self.id_key.as_deref() {
                    None => None,
                    Some(k) => {
                        Some(IdKey::parse_hex(k).ok_or_else(|| DecodeError::field("id_key", "is not 32 hex digits"))?)
                    }
                },
                unwatched_after_ms: match self.unwatched_after_ms {
                    None => None,
                    // At least a second: a shorter promise would call the gaps between a service's
                    // own ticks unwatched, and no deadline would ever fire.
                    Some(ms @ 1000..=3_600_000) => Some(ms as u32),
                    Some(_) => {
                        return Err(DecodeError::field(
                            "unwatched_after_ms",
                            "must be 1 000 to 3 600 000 (a second to an hour)",
                        ));
                    }
                },
                partition: match (self.partition, self.partitions) {
                    (None, None) => None,
                    (Some(index), Some(of)) => Some(partition_of(index, of)?),
                    (None, Some(_)) => return Err(DecodeError::Missing("partition")),
                    (Some(_), None) => return Err(DecodeError::Missing("partitions")),
                },
            }),
            "declaration" => InputKind::Declaration(Declaration {
                partition: match self.partition {
                    Some(k) if k < u64::from(MAX_PARTITIONS) => k as u32,
                    Some(k) => {
                        return Err(DecodeError::field("partition", format!("{k} is not below {MAX_PARTITIONS}")));
                    }
                    None => return Err(DecodeError::Missing("partition")),
                },
                workspace: ws()?,
                reason: choice("reason", &self.reason, Reason::parse, &names(Reason::ALL, Reason::as_str))?,
                monitored: match self.monitored {
                    Some(n) => {
                        u32::try_from(n).map_err(|_| DecodeError::field("monitored", format!("{n} is too large")))?
                    }
                    None => return Err(DecodeError::Missing("monitored")),
                },
                awaits: self.awaits.unwrap_or(false),
            }),
            other => return Err(DecodeError::UnknownType(other.to_string())),
        };
        Ok(Input { at, sent_at, id: text("id", &self.id)?, stream_seq, kind })
    }

    /// The flat record of a typed event (borrowing its strings).
    pub fn from_input(input: &'a Input) -> RawInput<'a> {
        let b = |s: &'a str| Some(Cow::Borrowed(s));
        let o = |s: &'a Option<String>| s.as_deref().map(Cow::Borrowed);
        let mut raw = RawInput {
            v: Some(SCHEMA_VERSION),
            kind: b(input.kind.type_name()),
            workspace: input.kind.workspace().map(|w| Cow::Borrowed(w.as_str())),
            at: Some(Cow::Owned(input.at.to_string())),
            sent_at: input.sent_at.map(|t| Cow::Owned(t.to_string())),
            id: o(&input.id),
            stream_seq: input.stream_seq,
            ..RawInput::default()
        };
        match &input.kind {
            InputKind::Heartbeat(e) => {
                raw.interval_s = e.interval_s.map(u64::from);
                raw.incarnation = e.incarnation.as_deref().map(Cow::Borrowed);
                raw.active_tasks = e.active_tasks.map(u64::from);
            }
            InputKind::Probe(e) => {
                raw.result = b(e.result.as_str());
                raw.error = o(&e.error);
                raw.backend = o(&e.backend);
                raw.probe_id = o(&e.probe_id);
            }
            InputKind::UpstreamError(e) => {
                raw.status = e.status.map(u64::from);
                raw.error = o(&e.error);
            }
            InputKind::RestartRequested(e) => {
                raw.origin = b(e.origin.as_str());
                raw.reason = b(&e.reason);
                raw.request_id = o(&e.request_id);
            }
            InputKind::RestartProgress(e) => {
                raw.restart_id = b(&e.restart_id);
                raw.phase = b(e.phase.as_str());
                raw.error = o(&e.error);
            }
            InputKind::Lifecycle(e) => raw.phase = b(e.phase.as_str()),
            InputKind::Resume(r) => {
                raw.id_key = r.id_key.map(|k| Cow::Owned(k.to_hex()));
                raw.unwatched_after_ms = r.unwatched_after_ms.map(u64::from);
                raw.partition = r.partition.map(|p| u64::from(p.index));
                raw.partitions = r.partition.map(|p| u64::from(p.of));
            }
            InputKind::Declaration(d) => {
                raw.workspace = Some(Cow::Borrowed(d.workspace.as_str()));
                raw.partition = Some(u64::from(d.partition));
                raw.reason = b(d.reason.as_str());
                raw.monitored = Some(u64::from(d.monitored));
                raw.awaits = d.awaits.then_some(true);
            }
            InputKind::Tick => {}
        }
        raw
    }
}
