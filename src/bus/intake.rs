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
        let Some(subject) = self.subjects.parse_input(subject) else {
            return Err(Rejection::new(
                "bad_subject",
                format!("expected {}.in.<type>.<workspace>", self.subjects.prefix()),
            ));
        };
        let input = wire::decode_msgpack(payload, Stamping::ReceivedAt(now))?;
        let kind = input.kind.type_name();
        if matches!(input.kind, InputKind::Tick | InputKind::Resume(_)) {
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
        Ok(input)
    }
}
