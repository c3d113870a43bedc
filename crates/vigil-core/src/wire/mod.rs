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

use serde::Deserialize;

use crate::event::*;
use crate::fast_map;
use crate::time::At;

mod input;
mod output;

pub use input::{
    EVENT_FIELDS, FIELD_LIMITS, ID_MAX_LEN, INCARNATION_MAX_LEN, INPUT_FIELDS, RESTART_ID_MAX_LEN, RawInput,
    TEXT_MAX_LEN, field_limit,
};
pub use output::{decode_output_json, decode_output_msgpack, encode_output_json, encode_output_msgpack};

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
    fn a_producers_fields_named_like_vigils_own_records_are_ignored_as_unknown_ones_are() {
        // Given a heartbeat whose producer added fields of its own under names vigil's records use,
        let line = r#"{"v":1,"type":"heartbeat","workspace":"ws-a","at":"2026-04-16T09:00:00.000Z","partition":"eu-west","partitions":[1],"monitored":-3,"awaits":1}"#;
        // then it is a heartbeat all the same, read from JSON or from MessagePack.
        assert!(matches!(logged(line).unwrap().kind, InputKind::Heartbeat(_)));
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let bytes = rmp_serde::to_vec_named(&value).unwrap();
        assert!(matches!(decode_msgpack(&bytes, Stamping::Logged).unwrap().kind, InputKind::Heartbeat(_)));
        // While vigil's own record with such a field mistyped says what it lacks.
        let resume = r#"{"v":1,"type":"resume","at":"2026-04-16T09:00:00.000Z","partition":"x","partitions":4}"#;
        assert_eq!(logged(resume).unwrap_err(), DecodeError::Missing("partition"));
    }

    #[test]
    fn event_fields_are_the_input_fields_between_the_envelope_and_the_resume_key() {
        assert_eq!(EVENT_FIELDS.first(), Some(&"id"));
        assert_eq!(EVENT_FIELDS.last(), Some(&"phase"));
        assert_eq!(INPUT_FIELDS.len(), EVENT_FIELDS.len() + 12);
        for (field, _) in FIELD_LIMITS {
            assert!(EVENT_FIELDS.contains(field), "{field} has a limit but is not an event field");
        }
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
