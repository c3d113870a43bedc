//! How events look on the wire: one MessagePack map with named fields, or the same record as one
//! JSON object per line (JSONL, the replay and export format).
//!
//! Decoding is two steps. First the bytes are read into [`RawInput`], a flat record of every field
//! any event type may carry, each optional and typed; a wrong type or a syntax error is caught here
//! and named by its field. Then [`RawInput::validate`] checks what the type requires (known `type`,
//! a valid workspace id, values in range) and builds a typed [`Input`]. Unknown fields are ignored,
//! so producers may add fields without breaking vigil. Encoding goes the other way through the same
//! record, so decoding an encoded event gives the event back.
//!
//! MessagePack in the plain shape producers send is read into [`RawInput`] by a hand-rolled reader
//! ([`crate::fast_map`]) rather than serde, about twice as fast; anything else goes through
//! serde, so the result is the same either way.

use std::borrow::Cow;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::event::*;
use crate::fast_map;
use crate::ids::IdKey;
use crate::time::At;

/// The only schema version this build reads and writes.
pub const SCHEMA_VERSION: u64 = 1;

/// Why bytes are not a valid event. Every variant names what is wrong; none of them panics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not MessagePack / not JSON, or not a map at the top level.
    #[error("not a valid {format} event map: {msg}")]
    Syntax { format: &'static str, msg: String },
    /// A field has the wrong type or a value out of range.
    #[error("field `{field}`: {msg}")]
    Field { field: String, msg: String },
    /// A field the event type requires is absent.
    #[error("missing field `{0}`")]
    Missing(&'static str),
    /// `type` is not one of SPEC §1's types.
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    /// `v` is not a version this build understands.
    #[error("unsupported schema version {0} (this build reads v1)")]
    Version(u64),
    /// A complete event map followed by more bytes: one message is one event.
    #[error("{0} bytes follow the event map; a message holds exactly one event")]
    TrailingBytes(usize),
}

impl DecodeError {
    /// A short, stable code for metrics and the DLQ header.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::Syntax { .. } => "syntax",
            DecodeError::Field { .. } => "bad_field",
            DecodeError::Missing(_) => "missing_field",
            DecodeError::UnknownType(_) => "unknown_type",
            DecodeError::Version(_) => "bad_version",
            DecodeError::TrailingBytes(_) => "trailing_bytes",
        }
    }

    fn field(field: &str, msg: impl Into<String>) -> DecodeError {
        DecodeError::Field { field: field.to_string(), msg: msg.into() }
    }
}

/// Where an event's `at` comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stamping {
    /// From a log or replay: the record's own `at` is the receive time and is required.
    Logged,
    /// From a producer, received at this instant: the producer's `at` is kept as `sent_at`.
    ReceivedAt(At),
}

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
}

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
        let (at, sent_at) = match stamping {
            Stamping::Logged => {
                let sent = self.sent_at.as_deref().map(|s| parse_at("sent_at", s)).transpose()?;
                (own_at.ok_or(DecodeError::Missing("at"))?, sent)
            }
            Stamping::ReceivedAt(now) => {
                let sent = self.sent_at.as_deref().map(|s| parse_at("sent_at", s)).transpose()?;
                (now, own_at.or(sent))
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
            }),
            other => return Err(DecodeError::UnknownType(other.to_string())),
        };
        Ok(Input { at, sent_at, id: text("id", &self.id)?, kind })
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
            InputKind::Resume(r) => raw.id_key = r.id_key.map(|k| Cow::Owned(k.to_hex())),
            InputKind::Tick => {}
        }
        raw
    }
}

/// Re-runs a failed decode with path tracking, so the error names the offending field.
fn locate<'de, D>(format: &'static str, de: D) -> DecodeError
where
    D: serde::Deserializer<'de>,
{
    match serde_path_to_error::deserialize::<_, RawInput<'de>>(de) {
        Ok(_) => DecodeError::Syntax { format, msg: "inconsistent decoder state".into() },
        Err(e) => {
            let path = e.path().to_string();
            let msg = e.into_inner().to_string();
            if path.is_empty() || path == "." || path == "?" {
                DecodeError::Syntax { format, msg }
            } else {
                DecodeError::Field { field: path, msg }
            }
        }
    }
}

/// Events are maps with named fields; serde would also accept a positional array for a struct,
/// which the contract does not allow, so the top level is checked first.
fn not_a_map(format: &'static str) -> DecodeError {
    DecodeError::Syntax { format, msg: "the top level must be a map with named fields".into() }
}

fn is_msgpack_map(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(0x80..=0x8f | 0xde | 0xdf))
}

fn is_json_object(line: &str) -> bool {
    line.trim_start().starts_with('{')
}

/// How deep MessagePack values may nest. An event is a flat map, so a nested value is only ever an
/// unknown field's; rmp-serde's own limit (1024) recurses deep enough to overflow a worker
/// thread's stack.
pub const MAX_DEPTH: usize = 16;

fn msgpack_deserializer(bytes: &[u8]) -> rmp_serde::Deserializer<rmp_serde::decode::ReadRefReader<'_, [u8]>> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_DEPTH);
    de
}

/// Decodes one MessagePack event.
pub fn decode_msgpack(bytes: &[u8], stamping: Stamping) -> Result<Input, DecodeError> {
    match fast_map::read(bytes) {
        Some(raw) => raw.validate(stamping),
        None => decode_msgpack_with_serde(bytes, stamping),
    }
}

/// Decodes one MessagePack event through serde alone: what [`decode_msgpack`] does for anything
/// the fast reader does not take, and the reference it is tested against.
pub fn decode_msgpack_with_serde(bytes: &[u8], stamping: Stamping) -> Result<Input, DecodeError> {
    if !is_msgpack_map(bytes) {
        return Err(not_a_map("MessagePack"));
    }
    // serde stops at the end of the map and would ignore what follows.
    if let Some(end) = fast_map::value_end(bytes)
        && end < bytes.len()
    {
        return Err(DecodeError::TrailingBytes(bytes.len() - end));
    }
    match RawInput::deserialize(&mut msgpack_deserializer(bytes)) {
        Ok(raw) => raw.validate(stamping),
        Err(_) => Err(locate("MessagePack", &mut msgpack_deserializer(bytes))),
    }
}

/// Decodes one JSON event (one JSONL line).
pub fn decode_json(line: &str, stamping: Stamping) -> Result<Input, DecodeError> {
    if !is_json_object(line) {
        return Err(not_a_map("JSON"));
    }
    match serde_json::from_str::<RawInput<'_>>(line) {
        Ok(raw) => raw.validate(stamping),
        Err(_) => Err(locate("JSON", &mut serde_json::Deserializer::from_str(line))),
    }
}

/// Encodes an input as a MessagePack map with named fields.
pub fn encode_msgpack(input: &Input) -> Vec<u8> {
    rmp_serde::to_vec_named(&RawInput::from_input(input)).expect("an event map always encodes")
}

/// Encodes an input as one JSON line (without the newline).
pub fn encode_json(input: &Input) -> String {
    serde_json::to_string(&RawInput::from_input(input)).expect("an event map always encodes")
}

impl Serialize for Output {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut fields: Vec<(&'static str, FieldValue<'_>)> = Vec::with_capacity(10);
        use FieldValue as F;
        fields.push(("type", F::Str(self.body.type_name())));
        fields.push(("v", F::Num(SCHEMA_VERSION)));
        fields.push(("id", F::Str(&self.id)));
        if let Some(ws) = &self.workspace {
            fields.push(("workspace", F::Str(ws.as_str())));
        }
        fields.push(("at", F::At(self.at)));
        match &self.body {
            OutputBody::StateChanged { from, to, reason, retry_after_s } => {
                fields.push(("from", F::Opt(from.map(StateName::as_str))));
                fields.push(("to", F::Opt(to.map(StateName::as_str))));
                fields.push(("reason", F::Str(reason.as_str())));
                if let Some(n) = retry_after_s {
                    fields.push(("retry_after_s", F::Num(u64::from(*n))));
                }
            }
            OutputBody::Restart { restart_id, origin, reason, attempt, detail } => {
                fields.push(("restart_id", F::Str(restart_id)));
                fields.push(("origin", F::Str(origin.as_str())));
                fields.push(("reason", F::Str(reason.as_str())));
                fields.push(("attempt", F::Num(u64::from(*attempt))));
                fields.extend(detail.as_deref().map(|d| ("detail", F::Str(d))));
            }
            OutputBody::ProbeRequest { probe_id, reason } => {
                fields.push(("probe_id", F::Str(probe_id)));
                fields.push(("reason", F::Str(reason.as_str())));
            }
            OutputBody::Suppressed { reason, input, detail, retry_after_s } => {
                fields.push(("reason", F::Str(reason.as_str())));
                fields.extend(input.map(|i| ("input", F::Str(i))));
                fields.extend(detail.as_deref().map(|d| ("detail", F::Str(d))));
                fields.extend(retry_after_s.map(|n| ("retry_after_s", F::Num(u64::from(n)))));
            }
            OutputBody::Alert { kind, reason, detail } => {
                fields.push(("kind", F::Str(kind.as_str())));
                fields.push(("reason", F::Str(reason.as_str())));
                fields.extend(detail.as_deref().map(|d| ("detail", F::Str(d))));
            }
        }
        let mut map = s.serialize_map(Some(fields.len()))?;
        for (k, v) in &fields {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// One value in an output map.
enum FieldValue<'a> {
    Str(&'a str),
    Opt(Option<&'a str>),
    Num(u64),
    At(At),
}

impl Serialize for FieldValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FieldValue::Str(v) => s.serialize_str(v),
            FieldValue::Opt(v) => v.serialize(s),
            FieldValue::Num(n) => s.serialize_u64(*n),
            FieldValue::At(at) => at.serialize(s),
        }
    }
}

/// Every field any output may carry: the shape of an output on the wire, for reading outputs back
/// (tests, `vigil watch`, consumers written in Rust).
#[derive(Debug, Default, Deserialize)]
struct RawOutput {
    #[serde(rename = "type")]
    kind: String,
    v: u64,
    id: String,
    #[serde(default)]
    workspace: Option<WorkspaceId>,
    at: At,
    #[serde(default)]
    from: Option<StateName>,
    #[serde(default)]
    to: Option<StateName>,
    #[serde(default)]
    reason: Option<Reason>,
    #[serde(default)]
    retry_after_s: Option<u32>,
    #[serde(default)]
    restart_id: Option<String>,
    #[serde(default)]
    origin: Option<Origin>,
    #[serde(default)]
    attempt: Option<u32>,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    probe_id: Option<String>,
    #[serde(default)]
    input: Option<String>,
}

impl RawOutput {
    fn into_output(self, alert_kind: Option<AlertKind>) -> Result<Output, DecodeError> {
        if self.v != SCHEMA_VERSION {
            return Err(DecodeError::Version(self.v));
        }
        let reason = self.reason.ok_or(DecodeError::Missing("reason"))?;
        let body = match self.kind.as_str() {
            "state_changed" => {
                OutputBody::StateChanged { from: self.from, to: self.to, reason, retry_after_s: self.retry_after_s }
            }
            "restart" => OutputBody::Restart {
                restart_id: self.restart_id.ok_or(DecodeError::Missing("restart_id"))?,
                origin: self.origin.ok_or(DecodeError::Missing("origin"))?,
                reason,
                attempt: self.attempt.ok_or(DecodeError::Missing("attempt"))?,
                detail: self.detail,
            },
            "probe_request" => {
                OutputBody::ProbeRequest { probe_id: self.probe_id.ok_or(DecodeError::Missing("probe_id"))?, reason }
            }
            "suppressed" => OutputBody::Suppressed {
                reason,
                input: match self.input.as_deref() {
                    None => None,
                    Some(t) => Some(
                        *INPUT_TYPES
                            .iter()
                            .find(|n| **n == t)
                            .ok_or_else(|| DecodeError::field("input", format!("unknown input type {t:?}")))?,
                    ),
                },
                detail: self.detail,
                retry_after_s: self.retry_after_s,
            },
            "alert" => {
                OutputBody::Alert { kind: alert_kind.ok_or(DecodeError::Missing("kind"))?, reason, detail: self.detail }
            }
            other => return Err(DecodeError::UnknownType(other.to_string())),
        };
        Ok(Output { id: self.id, workspace: self.workspace, at: self.at, body })
    }
}

/// Reads an output event back from one JSON line.
pub fn decode_output_json(line: &str) -> Result<Output, DecodeError> {
    if !is_json_object(line) {
        return Err(not_a_map("JSON"));
    }
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| DecodeError::Syntax { format: "JSON", msg: e.to_string() })?;
    decode_output_value(value)
}

/// Reads an output event back from MessagePack.
pub fn decode_output_msgpack(bytes: &[u8]) -> Result<Output, DecodeError> {
    if !is_msgpack_map(bytes) {
        return Err(not_a_map("MessagePack"));
    }
    let value: serde_json::Value = serde_json::Value::deserialize(&mut msgpack_deserializer(bytes))
        .map_err(|e| DecodeError::Syntax { format: "MessagePack", msg: e.to_string() })?;
    decode_output_value(value)
}

fn decode_output_value(mut value: serde_json::Value) -> Result<Output, DecodeError> {
    let alert_kind = match value.get_mut("kind").map(serde_json::Value::take) {
        None | Some(serde_json::Value::Null) => None,
        Some(k) => Some(serde_json::from_value::<AlertKind>(k).map_err(|e| DecodeError::field("kind", e.to_string()))?),
    };
    if let Some(obj) = value.as_object_mut() {
        obj.remove("kind");
    }
    let raw: RawOutput = serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        DecodeError::Field { field, msg: e.into_inner().to_string() }
    })?;
    raw.into_output(alert_kind)
}

/// Encodes an output as one JSON line (without the newline).
pub fn encode_output_json(out: &Output) -> String {
    serde_json::to_string(out).expect("an output map always encodes")
}

/// Encodes an output as a MessagePack map with named fields.
pub fn encode_output_msgpack(out: &Output) -> Vec<u8> {
    rmp_serde::to_vec_named(out).expect("an output map always encodes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(line: &str) -> Result<Input, DecodeError> {
        decode_json(line, Stamping::Logged)
    }

    #[test]
    fn a_heartbeat_decodes_and_re_encodes_to_the_same_line() {
        let line = r#"{"v":1,"type":"heartbeat","workspace":"ws-a","at":"2026-04-16T09:10:26.100Z","interval_s":30,"incarnation":"c1"}"#;
        let input = logged(line).unwrap();
        assert_eq!(encode_json(&input), line);
        assert_eq!(decode_msgpack(&encode_msgpack(&input), Stamping::Logged).unwrap(), input);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let line = r#"{"v":1,"type":"tick","at":"2026-04-16T09:10:26.100Z","future_field":[1,2,{"x":null}]}"#;
        assert_eq!(logged(line).unwrap().kind, InputKind::Tick);
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let err = logged(
            r#"{"v":1,"type":"heartbeat","workspace":"ws-a","at":"2026-04-16T09:10:26.100Z","interval_s":"thirty"}"#,
        )
        .unwrap_err();
        assert!(matches!(&err, DecodeError::Field { field, .. } if field == "interval_s"), "{err}");
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let err =
            logged(r#"{"v":1,"type":"heartbeat","workspace":"ws-a","at":"2026-04-16T09:10:26.100Z","interval_s":0}"#)
                .unwrap_err();
        assert!(matches!(&err, DecodeError::Field { field, .. } if field == "interval_s"), "{err}");
        let err = logged(
            r#"{"v":1,"type":"upstream_error","workspace":"ws-a","at":"2026-04-16T09:10:26.100Z","status":7000}"#,
        )
        .unwrap_err();
        assert!(matches!(&err, DecodeError::Field { field, .. } if field == "status"), "{err}");
    }

    #[test]
    fn bad_workspace_ids_bad_timestamps_and_unknown_types_are_typed_errors() {
        let err =
            logged(r#"{"v":1,"type":"heartbeat","workspace":"ws.a","at":"2026-04-16T09:10:26.100Z"}"#).unwrap_err();
        assert!(matches!(&err, DecodeError::Field { field, .. } if field == "workspace"), "{err}");
        let err = logged(r#"{"v":1,"type":"heartbeat","workspace":"ws-a","at":"noon"}"#).unwrap_err();
        assert!(matches!(&err, DecodeError::Field { field, .. } if field == "at"), "{err}");
        let err = logged(r#"{"v":1,"type":"reboot","workspace":"ws-a","at":"2026-04-16T09:10:26.100Z"}"#).unwrap_err();
        assert_eq!(err, DecodeError::UnknownType("reboot".into()));
        let err = logged(r#"{"v":2,"type":"tick","at":"2026-04-16T09:10:26.100Z"}"#).unwrap_err();
        assert_eq!(err, DecodeError::Version(2));
        let err =
            logged(r#"{"v":1,"type":"probe","workspace":"ws-a","at":"2026-04-16T09:10:26.100Z","result":"dead"}"#)
                .unwrap_err();
        assert!(matches!(&err, DecodeError::Field { field, .. } if field == "result"), "{err}");
        let err = logged(r#"{"v":1,"type":"probe","workspace":"ws-a","at":"2026-04-16T09:10:26.100Z"}"#).unwrap_err();
        assert_eq!(err, DecodeError::Missing("result"));
    }

    #[test]
    fn garbage_is_a_syntax_error_not_a_panic() {
        assert!(matches!(logged("not json"), Err(DecodeError::Syntax { .. })));
        assert!(matches!(logged("[1,2,3]"), Err(DecodeError::Syntax { .. })));
        assert!(matches!(decode_msgpack(&[0xc1, 0xff, 0x00], Stamping::Logged), Err(DecodeError::Syntax { .. })));
        assert!(matches!(decode_msgpack(&[], Stamping::Logged), Err(DecodeError::Syntax { .. })));
        // A positional array is not an event, even one whose values would fit the fields.
        let positional = rmp_serde::to_vec(&(1u8, "tick", "ws-a", "2026-04-16T09:10:26.100Z")).unwrap();
        assert!(matches!(decode_msgpack(&positional, Stamping::Logged), Err(DecodeError::Syntax { .. })));
    }

    #[test]
    fn one_message_is_one_event_map_and_nothing_after_it() {
        let line = r#"{"v":1,"type":"heartbeat","workspace":"ws-a","at":"2026-04-16T09:10:26.100Z"}"#;
        let mut bytes = encode_msgpack(&logged(line).unwrap());
        bytes.extend_from_slice(&[0x01, 0xc0]);
        assert_eq!(decode_msgpack(&bytes, Stamping::Logged), Err(DecodeError::TrailingBytes(2)));
        assert_eq!(DecodeError::TrailingBytes(2).code(), "trailing_bytes");
        // A declared length no bytes could hold is an error, not an allocation.
        let huge = [0x81, 0xa1, b'v', 0xdd, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(fast_map::value_end(&huge), None);
        assert!(decode_msgpack(&huge, Stamping::Logged).is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        // An unknown field holding arrays nested 100 000 deep, decoded on a small stack.
        let mut bytes = vec![0x82, 0xa1, b'v', 0x01, 0xa1, b'x'];
        bytes.extend(std::iter::repeat_n(0x91, 100_000));
        bytes.push(0xc0);
        let decoded = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || decode_msgpack(&bytes, Stamping::Logged))
            .unwrap()
            .join()
            .expect("no stack overflow");
        assert!(matches!(decoded, Err(DecodeError::Field { .. } | DecodeError::Syntax { .. })), "{decoded:?}");
    }

    #[test]
    fn over_long_ids_and_incarnations_are_field_errors() {
        let long = |field: &str, n: usize| {
            let line = format!(
                r#"{{"v":1,"type":"heartbeat","workspace":"ws-a","at":"2026-04-16T09:10:26.100Z","{field}":"{}"}}"#,
                "x".repeat(n)
            );
            logged(&line)
        };
        assert!(long("id", ID_MAX_LEN).is_ok());
        assert!(matches!(long("id", ID_MAX_LEN + 1), Err(DecodeError::Field { field, .. }) if field == "id"));
        assert!(long("incarnation", INCARNATION_MAX_LEN).is_ok());
        assert!(matches!(long("incarnation", INCARNATION_MAX_LEN + 1), Err(DecodeError::Field { .. })));
    }

    #[test]
    fn a_producer_timestamp_becomes_sent_at() {
        let now = At::parse("2026-04-16T09:10:27.000Z").unwrap();
        let input = decode_json(
            r#"{"v":1,"type":"heartbeat","workspace":"ws-a","at":"2026-04-16T09:10:26.100Z"}"#,
            Stamping::ReceivedAt(now),
        )
        .unwrap();
        assert_eq!(input.at, now);
        assert_eq!(input.sent_at, Some(At::parse("2026-04-16T09:10:26.100Z").unwrap()));
        let bare = decode_json(r#"{"v":1,"type":"heartbeat","workspace":"ws-a"}"#, Stamping::ReceivedAt(now)).unwrap();
        assert_eq!((bare.at, bare.sent_at), (now, None));
    }

    #[test]
    fn outputs_round_trip_through_json_and_msgpack() {
        let out = Output {
            id: "7.0".into(),
            workspace: Some(WorkspaceId::parse("ws-a").unwrap()),
            at: At(1_000),
            body: OutputBody::StateChanged {
                from: None,
                to: Some(StateName::Alive),
                reason: Reason::FirstSeen,
                retry_after_s: None,
            },
        };
        let line = encode_output_json(&out);
        assert_eq!(
            line,
            r#"{"type":"state_changed","v":1,"id":"7.0","workspace":"ws-a","at":"1970-01-01T00:00:01.000Z","from":null,"to":"alive","reason":"first_seen"}"#
        );
        assert_eq!(decode_output_json(&line).unwrap(), out);
        assert_eq!(decode_output_msgpack(&encode_output_msgpack(&out)).unwrap(), out);
        let alert = Output {
            id: "8.0".into(),
            workspace: None,
            at: At(2_000),
            body: OutputBody::Alert {
                kind: AlertKind::BreakerOpen,
                reason: Reason::BreakerThresholdExceeded,
                detail: Some("x".into()),
            },
        };
        assert_eq!(decode_output_json(&encode_output_json(&alert)).unwrap(), alert);
    }
}
