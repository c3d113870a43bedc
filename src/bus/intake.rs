//! Intake: what a message on `<prefix>.in.<type>.<workspace>` must be before vigil applies it.
//!
//! Every check a producer's message meets on its way in lives here, in one pure function, so that
//! a property test can drive arbitrary subjects and bytes through exactly the code the service
//! runs: its size, its subject's shape, the payload's decoding, and the payload agreeing with the
//! subject. An input that fails any of them is a [`Rejection`] with a stable code — it goes to the
//! DLQ ([`crate::bus::dlq`]), never into the log.

use crate::bus::subjects::Subjects;
use crate::core::At;
use crate::core::event::{Input, InputKind};
use crate::core::wire::{self, DecodeError, Stamping};

/// Why an input message was refused: a stable code (the DLQ's `Vigil-Reason`, a metric label) and
/// a sentence for people. The sentence may quote what the producer sent; it is escaped wherever
/// it is shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub code: &'static str,
    pub detail: String,
}

impl Rejection {
    pub fn new(code: &'static str, detail: impl Into<String>) -> Rejection {
        Rejection { code, detail: detail.into() }
    }
}

impl From<DecodeError> for Rejection {
    fn from(e: DecodeError) -> Rejection {
        Rejection { code: e.code(), detail: e.to_string() }
    }
}

/// Every reason an input can be dead-lettered for: intake's own, the decoder's
/// ([`DecodeError::code`]) and admission's. `docs/SPEC.md` §5.3 describes each.
pub const REASONS: &[&str] = &[
    "too_large",
    "bad_subject",
    "syntax",
    "trailing_bytes",
    "bad_field",
    "missing_field",
    "unknown_type",
    "bad_version",
    "internal_type",
    "subject_mismatch",
    "quota_exceeded",
];

/// The checks, for one prefix and size limit.
#[derive(Clone, Debug)]
pub struct Intake {
    subjects: Subjects,
    max_payload: usize,
}

impl Intake {
    pub fn new(subjects: Subjects, max_payload: usize) -> Intake {
        Intake { subjects, max_payload }
    }

    /// The largest payload accepted, in bytes.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Decodes one input message received at `now`, checking it against its subject.
    pub fn decode(&self, subject: &str, payload: &[u8], now: At) -> Result<Input, Rejection> {
        if payload.len() > self.max_payload {
            return Err(Rejection::new(
                "too_large",
                format!("{} bytes; at most {} are accepted", payload.len(), self.max_payload),
            ));
        }
        if let Some(kind) = self.subjects.parse_log(subject) {
            return self.decode_own(subject, kind, payload, now);
        }
        let Some(subject) = self.subjects.parse_input(subject) else {
            return Err(Rejection::new(
                "bad_subject",
                format!("expected {}.in.<type>.<workspace>", self.subjects.prefix()),
            ));
        };
        let input = wire::decode_msgpack(payload, Stamping::ReceivedAt(now))?;
        let kind = input.kind.type_name();
        if input.kind.is_own() {
            return Err(Rejection::new("internal_type", format!("`{kind}` events are vigil's own")));
        }
        if kind != subject.kind {
            return Err(Rejection::new(
                "subject_mismatch",
                format!("the subject says {}, the payload {kind}", subject.kind),
            ));
        }
        if input.kind.workspace().is_none_or(|w| w.as_str() != subject.workspace) {
            return Err(Rejection::new("subject_mismatch", "the subject's workspace is not the payload's"));
        }
        // Published straight onto a partition's subject (not through the stream's transform), and
        // the wrong one: its partition's owner would never see it.
        if let (Some(ws), Some(part)) = (input.kind.workspace(), self.subjects.part())
            && !self.subjects.holds(ws)
        {
            return Err(Rejection::new(
                "subject_mismatch",
                format!(
                    "stored under partition {}, but workspace {ws} belongs to partition {}",
                    part.index,
                    Subjects::partition(ws, part.of)
                ),
            ));
        }
        Ok(input)
    }
}

impl Intake {
    /// One of vigil's own records (`<prefix>.log.<kind>`): a `tick` or a `resume`, and nothing else.
    fn decode_own(&self, subject: &str, kind: &str, payload: &[u8], now: At) -> Result<Input, Rejection> {
        let input = wire::decode_msgpack(payload, Stamping::ReceivedAt(now))?;
        if !input.kind.is_own() || input.kind.type_name() != kind {
            return Err(Rejection::new(
                "subject_mismatch",
                format!("{subject} carries vigil's own {kind} records only"),
            ));
        }
        if let InputKind::Declaration(d) = &input.kind
            && subject != self.subjects.declaration_record(d.partition)
        {
            return Err(Rejection::new(
                "subject_mismatch",
                format!("a declaration of partition {} on {subject}", d.partition),
            ));
        }
        Ok(input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    enum Value {
        S(&'static str),
        U(u64),
    }

    /// A MessagePack map of string and integer values.
    fn map(fields: &[(&str, Value)]) -> Vec<u8> {
        let mut out = Vec::new();
        rmp::encode::write_map_len(&mut out, fields.len() as u32).unwrap();
        for (k, v) in fields {
            rmp::encode::write_str(&mut out, k).unwrap();
            match v {
                Value::S(s) => rmp::encode::write_str(&mut out, s).unwrap(),
                Value::U(n) => {
                    rmp::encode::write_uint(&mut out, *n).unwrap();
                }
            }
        }
        out
    }

    #[test]
    fn every_reason_intake_gives_is_listed() {
        use Value::*;
        let intake = Intake::new(Subjects::new("vigil"), 1000);
        let hb = |ws: &'static str| map(&[("v", U(1)), ("type", S("heartbeat")), ("workspace", S(ws))]);
        let typed = |v: u64, t: &'static str| map(&[("v", U(v)), ("type", S(t)), ("workspace", S("ws-a"))]);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("vigil.in.heartbeat.ws-a", vec![0x90; 2000], "too_large"),
            ("vigil.other.ws-a", hb("ws-a"), "bad_subject"),
            ("vigil.in.heartbeat.ws-a", b"garbage".to_vec(), "syntax"),
            ("vigil.in.heartbeat.ws-a", [hb("ws-a"), vec![0xc0]].concat(), "trailing_bytes"),
            (
                "vigil.in.heartbeat.ws-a",
                map(&[("v", U(1)), ("type", S("heartbeat")), ("workspace", U(7))]),
                "bad_field",
            ),
            ("vigil.in.heartbeat.ws-a", map(&[("v", U(1)), ("type", S("heartbeat"))]), "missing_field"),
            ("vigil.in.reboot.ws-a", typed(1, "reboot"), "unknown_type"),
            ("vigil.in.heartbeat.ws-a", typed(2, "heartbeat"), "bad_version"),
            ("vigil.in.tick.ws-a", map(&[("v", U(1)), ("type", S("tick"))]), "internal_type"),
            ("vigil.in.heartbeat.ws-a", hb("ws-b"), "subject_mismatch"),
            ("vigil.log.tick", hb("ws-a"), "subject_mismatch"),
            ("vigil.log.resume", map(&[("v", U(1)), ("type", S("tick"))]), "subject_mismatch"),
        ];
        let tick = map(&[("v", U(1)), ("type", S("tick"))]);
        assert_eq!(intake.decode("vigil.log.tick", &tick, At(5)).map(|i| (i.kind, i.at)), Ok((InputKind::Tick, At(5))));
        for (subject, payload, code) in cases {
            let got = intake.decode(subject, &payload, At(0)).err().map(|r| r.code);
            assert_eq!(got, Some(code), "{subject}");
            assert!(REASONS.contains(&code));
        }
        assert!(REASONS.contains(&crate::bus::admission::QUOTA_EXCEEDED), "admission's");
        for e in [
            DecodeError::Syntax { format: "x", msg: String::new() },
            DecodeError::Field { field: String::new(), msg: String::new() },
            DecodeError::Missing("v"),
            DecodeError::UnknownType(String::new()),
            DecodeError::Version(2),
            DecodeError::TrailingBytes(1),
        ] {
            assert!(REASONS.contains(&e.code()), "{}", e.code());
        }
    }

    #[test]
    fn a_partition_reads_its_own_inputs_and_refuses_another_partitions() {
        use crate::core::event::WorkspaceId;
        use Value::*;
        // Given partition 3 of 16, and workspaces in it and elsewhere,
        let intake = Intake::new(Subjects::new("vigil").scoped(3, 16), 1000);
        let ids = ["ws-0", "ws-1", "ws-2", "ws-3", "ws-4", "ws-5", "ws-6", "ws-7", "ws-8", "ws-9", "ws-10", "ws-11"];
        let part = |ws: &str| Subjects::partition(&WorkspaceId::parse(ws).unwrap(), 16);
        let ours = *ids.iter().find(|ws| part(ws) == 3).expect("one of a dozen ids lands in partition 3");
        let theirs = *ids.iter().find(|ws| part(ws) != 3).unwrap();
        let hb = |ws: &'static str| map(&[("v", U(1)), ("type", S("heartbeat")), ("workspace", S(ws))]);
        // then its own, as the stream's transform stores them, are read;
        let own = intake.decode(&format!("vigil.in.3.heartbeat.{ours}"), &hb(ours), At(0));
        assert!(own.is_ok(), "{own:?}");
        assert!(intake.decode("vigil.log.3.tick", &map(&[("v", U(1)), ("type", S("tick"))]), At(0)).is_ok());
        // one published straight onto partition 3's subject for another partition's workspace is
        // refused, and so is the unpartitioned shape the transform never leaves in the stream.
        let wrong = intake.decode(&format!("vigil.in.3.heartbeat.{theirs}"), &hb(theirs), At(0)).unwrap_err();
        assert_eq!(wrong.code, "subject_mismatch");
        assert!(wrong.detail.contains(&format!("belongs to partition {}", part(theirs))), "{}", wrong.detail);
        let bare = intake.decode(&format!("vigil.in.heartbeat.{ours}"), &hb(ours), At(0)).unwrap_err();
        assert_eq!(bare.code, "bad_subject");
    }
}
