//! An output on the wire: written as a map with exactly the fields its type carries, and read back
//! (for tests, `vigil watch`, consumers written in Rust).

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::event::*;
use crate::time::At;

use super::{DecodeError, SCHEMA_VERSION, is_json_object, is_msgpack_map, msgpack_deserializer, not_a_map};

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
                fields.extend(input.map(|i| ("input", F::Str(i.as_str()))));
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
                        InputType::parse(t)
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
