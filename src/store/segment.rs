//! Log segments: the inputs of one group commit, stored as one sled value.
//!
//! One insert per group instead of one per event is what lets the log keep up with the engine
//! (measured on this machine: ~150 000 events/s with an insert per event, over 1 000 000 with a
//! segment per group). A segment is a small header — how many records, and the receive time of the
//! last one (for retention) — followed by the records, each a length-prefixed MessagePack array.
//!
//! Records are positional MessagePack with times as integer milliseconds, not the named maps of the
//! wire: the log is read back in bulk on every recovery, and parsing RFC 3339 text and field names
//! for ten million events would cost seconds. `vigil export` turns records back into wire events.
//! The layout is versioned by [`super::FORMAT`]. It is defined by serde (`Record`); heartbeats,
//! most of any log, also have a hand-written encoder and decoder for speed, held to serde's bytes
//! and serde's reading by property tests.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::core::event::*;
use crate::core::ids::IdKey;
use crate::core::time::At;

use super::heartbeat_record::{encode_heartbeat, fast_heartbeat};

const HEADER: usize = 4 + 8;

/// One input as the log stores it.
#[derive(Serialize, Deserialize)]
struct Record<'a> {
    at: i64,
    sent_at: Option<i64>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    event: Event<'a>,
    /// The input stream position (store format 4; records written before it have four fields and
    /// read as `None`).
    #[serde(default)]
    stream_seq: Option<u64>,
}

/// The event of a record, one variant per input type.
#[derive(Serialize, Deserialize)]
enum Event<'a> {
    Heartbeat(#[serde(borrow)] Cow<'a, str>, Option<u16>, #[serde(borrow)] Option<Cow<'a, str>>, Option<u32>),
    Probe(
        #[serde(borrow)] Cow<'a, str>,
        ProbeResult,
        #[serde(borrow)] Option<Cow<'a, str>>,
        #[serde(borrow)] Option<Cow<'a, str>>,
        #[serde(borrow)] Option<Cow<'a, str>>,
    ),
    Upstream(#[serde(borrow)] Cow<'a, str>, Option<u16>, #[serde(borrow)] Option<Cow<'a, str>>),
    RestartRequested(
        #[serde(borrow)] Cow<'a, str>,
        Origin,
        #[serde(borrow)] Cow<'a, str>,
        #[serde(borrow)] Option<Cow<'a, str>>,
    ),
    RestartProgress(
        #[serde(borrow)] Cow<'a, str>,
        #[serde(borrow)] Cow<'a, str>,
        ProgressPhase,
        #[serde(borrow)] Option<Cow<'a, str>>,
    ),
    Lifecycle(#[serde(borrow)] Cow<'a, str>, LifecyclePhase),
    Tick,
    Resume,
    /// A resume carrying the directory's id key (appended last: the variants before it keep their
    /// numbers, so older segments read as before).
    ResumeKeyed(u64, u64),
    /// A resume that also declares `unwatched_after_ms` (store format 3; appended last, as above).
    ResumeWatched(Option<(u64, u64)>, u32),
    /// A resume of one partition of several: key, `unwatched_after_ms`, partition, of how many.
    ResumePartition(Option<(u64, u64)>, Option<u32>, u32, u32),
    /// A partition's death declaration: partition, workspace, reason, monitored, awaits.
    Declaration(u32, #[serde(borrow)] Cow<'a, str>, Reason, u32, bool),
}

fn b(s: &str) -> Cow<'_, str> {
    Cow::Borrowed(s)
}

fn ob(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(Cow::Borrowed)
}

fn owned(s: Option<Cow<'_, str>>) -> Option<String> {
    s.map(Cow::into_owned)
}

impl<'a> Record<'a> {
    fn of(input: &'a Input) -> Record<'a> {
        let event = match &input.kind {
            InputKind::Heartbeat(e) => {
                Event::Heartbeat(b(e.workspace.as_str()), e.interval_s, e.incarnation.as_deref().map(b), e.active_tasks)
            }
            InputKind::Probe(e) => {
                Event::Probe(b(e.workspace.as_str()), e.result, ob(&e.error), ob(&e.backend), ob(&e.probe_id))
            }
            InputKind::UpstreamError(e) => Event::Upstream(b(e.workspace.as_str()), e.status, ob(&e.error)),
            InputKind::RestartRequested(e) => {
                Event::RestartRequested(b(e.workspace.as_str()), e.origin, b(&e.reason), ob(&e.request_id))
            }
            InputKind::RestartProgress(e) => {
                Event::RestartProgress(b(e.workspace.as_str()), b(&e.restart_id), e.phase, ob(&e.error))
            }
            InputKind::Lifecycle(e) => Event::Lifecycle(b(e.workspace.as_str()), e.phase),
            InputKind::Tick => Event::Tick,
            InputKind::Resume(Resume { id_key, unwatched_after_ms, partition: Some(p) }) => {
                Event::ResumePartition(id_key.map(|k| (k.0[0], k.0[1])), *unwatched_after_ms, p.index, p.of)
            }
            InputKind::Resume(Resume { id_key: None, unwatched_after_ms: None, partition: None }) => Event::Resume,
            InputKind::Resume(Resume { id_key: Some(k), unwatched_after_ms: None, partition: None }) => {
                Event::ResumeKeyed(k.0[0], k.0[1])
            }
            InputKind::Resume(Resume { id_key, unwatched_after_ms: Some(ms), partition: None }) => {
                Event::ResumeWatched(id_key.map(|k| (k.0[0], k.0[1])), *ms)
            }
            InputKind::Declaration(d) => {
                Event::Declaration(d.partition, b(d.workspace.as_str()), d.reason, d.monitored, d.awaits)
            }
        };
        Record {
            at: input.at.millis(),
            sent_at: input.sent_at.map(At::millis),
            id: ob(&input.id),
            event,
            stream_seq: input.stream_seq,
        }
    }

    fn into_input(self) -> Result<Input, RecordError> {
        let ws = |s: Cow<'_, str>| {
            WorkspaceId::parse(&s).map_err(|source| RecordError::Workspace { id: s.into_owned(), source })
        };
        let kind = match self.event {
            Event::Heartbeat(w, interval_s, incarnation, active_tasks) => InputKind::Heartbeat(Heartbeat {
                workspace: ws(w)?,
                interval_s,
                incarnation: incarnation.map(|s| compact_str::CompactString::new(s)),
                active_tasks,
            }),
            Event::Probe(w, result, error, backend, probe_id) => InputKind::Probe(Probe {
                workspace: ws(w)?,
                result,
                error: owned(error),
                backend: owned(backend),
                probe_id: owned(probe_id),
            }),
            Event::Upstream(w, status, error) => {
                InputKind::UpstreamError(UpstreamError { workspace: ws(w)?, status, error: owned(error) })
            }
            Event::RestartRequested(w, origin, reason, request_id) => InputKind::RestartRequested(RestartRequested {
                workspace: ws(w)?,
                origin,
                reason: reason.into_owned(),
                request_id: owned(request_id),
            }),
            Event::RestartProgress(w, restart_id, phase, error) => InputKind::RestartProgress(RestartProgress {
                workspace: ws(w)?,
                restart_id: restart_id.into_owned(),
                phase,
                error: owned(error),
            }),
            Event::Lifecycle(w, phase) => InputKind::Lifecycle(Lifecycle { workspace: ws(w)?, phase }),
            Event::Tick => InputKind::Tick,
            Event::Resume => InputKind::Resume(Resume::default()),
            Event::ResumeKeyed(a, b) => InputKind::Resume(Resume { id_key: Some(IdKey([a, b])), ..Resume::default() }),
            Event::ResumeWatched(key, ms) => InputKind::Resume(Resume {
                id_key: key.map(|(a, b)| IdKey([a, b])),
                unwatched_after_ms: Some(ms),
                partition: None,
            }),
            Event::ResumePartition(key, ms, index, of) => InputKind::Resume(Resume {
                id_key: key.map(|(a, b)| IdKey([a, b])),
                unwatched_after_ms: ms,
                partition: Some(Partition { index, of }),
            }),
            Event::Declaration(partition, w, reason, monitored, awaits) => {
                InputKind::Declaration(Declaration { partition, workspace: ws(w)?, reason, monitored, awaits })
            }
        };
        Ok(Input {
            at: At(self.at),
            sent_at: self.sent_at.map(At),
            id: owned(self.id),
            stream_seq: self.stream_seq,
            kind,
        })
    }
}

/// Builds a segment.
pub struct SegmentWriter {
    bytes: Vec<u8>,
    count: u32,
    last_at: At,
}

impl SegmentWriter {
    pub fn with_capacity(records: usize) -> SegmentWriter {
        let mut bytes = Vec::with_capacity(HEADER + records * 64);
        bytes.resize(HEADER, 0);
        SegmentWriter { bytes, count: 0, last_at: At(0) }
    }

    pub fn push(&mut self, input: &Input) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&[0; 4]);
        match &input.kind {
            InputKind::Heartbeat(heartbeat) => encode_heartbeat(&mut self.bytes, input, heartbeat),
            _ => rmp_serde::encode::write(&mut self.bytes, &Record::of(input)).expect("a record always encodes"),
        }
        let len = (self.bytes.len() - start - 4) as u32;
        self.bytes[start..start + 4].copy_from_slice(&len.to_le_bytes());
        self.count += 1;
        self.last_at = input.at;
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.bytes[..4].copy_from_slice(&self.count.to_le_bytes());
        self.bytes[4..HEADER].copy_from_slice(&self.last_at.millis().to_le_bytes());
        self.bytes
    }
}

/// Why a segment could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("record {index} is truncated")]
    Truncated { index: u32 },
    #[error("record {index} does not decode")]
    Record {
        index: u32,
        #[source]
        source: RecordError,
    },
    #[error("the header says {declared} records but {found} follow")]
    Count { declared: u32, found: u32 },
}

/// Why one record of a segment could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    MessagePack(#[from] rmp_serde::decode::Error),
    #[error("workspace {id:?}")]
    Workspace {
        id: String,
        #[source]
        source: crate::core::event::BadWorkspace,
    },
}

/// The header of a segment: record count and the receive time of its last record.
pub fn header(bytes: &[u8]) -> Option<(u32, At)> {
    let count = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
    let last = i64::from_le_bytes(bytes.get(4..HEADER)?.try_into().ok()?);
    Some((count, At(last)))
}

/// Decodes every record of a segment, in order.
pub fn decode(bytes: &[u8]) -> Result<Vec<Input>, SegmentError> {
    let (declared, _) = header(bytes).ok_or(SegmentError::Truncated { index: 0 })?;
    let mut inputs = Vec::with_capacity(declared as usize);
    let mut pos = HEADER;
    let mut index = 0u32;
    while pos < bytes.len() {
        let len = bytes.get(pos..pos + 4).ok_or(SegmentError::Truncated { index })?;
        let len = u32::from_le_bytes(len.try_into().expect("four bytes")) as usize;
        let record = bytes.get(pos + 4..pos + 4 + len).ok_or(SegmentError::Truncated { index })?;
        let input = match fast_heartbeat(record) {
            Some(input) => input,
            None => rmp_serde::from_slice::<Record<'_>>(record)
                .map_err(RecordError::from)
                .and_then(Record::into_input)
                .map_err(|source| SegmentError::Record { index, source })?,
        };
        inputs.push(input);
        pos += 4 + len;
        index += 1;
    }
    if index != declared {
        return Err(SegmentError::Count { declared, found: index });
    }
    Ok(inputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn serde_decode(record: &[u8]) -> Result<Input, String> {
        rmp_serde::from_slice::<Record<'_>>(record)
            .map_err(RecordError::from)
            .and_then(Record::into_input)
            .map_err(|e| crate::report::Chain(&e).to_string())
    }

    fn encode(input: &Input) -> Vec<u8> {
        let mut bytes = Vec::new();
        rmp_serde::encode::write(&mut bytes, &Record::of(input)).unwrap();
        bytes
    }

    fn heartbeats() -> impl Strategy<Value = Input> {
        (
            any::<i64>(),
            any::<Option<i64>>(),
            proptest::option::of("[a-z0-9.:]{0,12}"),
            "[A-Za-z0-9_-]{1,40}",
            any::<Option<u16>>(),
            proptest::option::of("\\PC{0,40}"),
            any::<Option<u32>>(),
            any::<Option<u64>>(),
        )
            .prop_map(|(at, sent_at, id, ws, interval_s, incarnation, active_tasks, stream_seq)| Input {
                at: At(at),
                sent_at: sent_at.map(At),
                id,
                stream_seq,
                kind: InputKind::Heartbeat(Heartbeat {
                    workspace: WorkspaceId::parse(&ws).unwrap(),
                    interval_s,
                    incarnation: incarnation.map(Into::into),
                    active_tasks,
                }),
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Given any heartbeat, the fast path reads exactly what serde reads.
        #[test]
        fn the_fast_path_reads_heartbeats_like_serde(input in heartbeats()) {
            let bytes = encode(&input);
            prop_assert_eq!(fast_heartbeat(&bytes), Some(input));
        }

        /// Given any heartbeat, the hand-written encoder writes exactly rmp-serde's bytes.
        #[test]
        fn the_heartbeat_encoder_writes_serde_bytes(input in heartbeats()) {
            let InputKind::Heartbeat(heartbeat) = &input.kind else { unreachable!() };
            let mut bytes = Vec::new();
            encode_heartbeat(&mut bytes, &input, heartbeat);
            prop_assert_eq!(bytes, encode(&input));
        }

        /// Given a damaged heartbeat record, the fast path either gives up or agrees with serde:
        /// it never accepts what serde refuses, nor reads it differently.
        #[test]
        fn the_fast_path_never_disagrees_on_damaged_records(
            input in heartbeats(),
            damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = encode(&input);
            for (at, value) in damage {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            if let Some(fast) = fast_heartbeat(&bytes) {
                prop_assert_eq!(Ok(fast), serde_decode(&bytes));
            }
        }
    }

    /// Given a record as store format 3 wrote it (four fields, no stream position), both readers
    /// read it as before, with no position.
    #[test]
    fn records_from_before_stream_positions_still_read() {
        let heartbeat = Input {
            at: At(5),
            sent_at: None,
            id: None,
            stream_seq: None,
            kind: InputKind::Heartbeat(Heartbeat {
                workspace: ws(),
                interval_s: Some(30),
                incarnation: None,
                active_tasks: None,
            }),
        };
        let lifecycle = Input {
            kind: InputKind::Lifecycle(Lifecycle { workspace: ws(), phase: LifecyclePhase::Created }),
            ..heartbeat.clone()
        };
        for input in [heartbeat, lifecycle] {
            let mut old = encode(&input);
            assert_eq!((old[0], old.last()), (0x95, Some(&0xc0)), "five fields, the last one nil");
            old[0] = 0x94;
            old.pop();
            assert_eq!(serde_decode(&old), Ok(input.clone()));
            if let Some(fast) = fast_heartbeat(&old) {
                assert_eq!(fast, input);
            }
        }
    }

    #[test]
    fn only_heartbeats_take_the_fast_path() {
        let tick = Input { at: At(5), sent_at: None, id: None, stream_seq: None, kind: InputKind::Tick };
        assert_eq!(fast_heartbeat(&encode(&tick)), None);
        let lifecycle = Input {
            at: At(5),
            sent_at: None,
            id: None,
            stream_seq: None,
            kind: InputKind::Lifecycle(Lifecycle { workspace: ws(), phase: LifecyclePhase::Created }),
        };
        assert_eq!(fast_heartbeat(&encode(&lifecycle)), None);
    }

    fn ws() -> WorkspaceId {
        WorkspaceId::parse("ws-a").unwrap()
    }

    #[test]
    fn every_kind_of_input_round_trips() {
        let kinds = vec![
            InputKind::Heartbeat(Heartbeat {
                workspace: ws(),
                interval_s: Some(30),
                incarnation: Some("c1".into()),
                active_tasks: Some(2),
            }),
            InputKind::Heartbeat(Heartbeat {
                workspace: ws(),
                interval_s: None,
                incarnation: None,
                active_tasks: None,
            }),
            InputKind::Probe(Probe {
                workspace: ws(),
                result: ProbeResult::Error,
                error: Some("EOF".into()),
                backend: Some("docker".into()),
                probe_id: Some("ws-a:p1".into()),
            }),
            InputKind::UpstreamError(UpstreamError { workspace: ws(), status: Some(502), error: None }),
            InputKind::RestartRequested(RestartRequested {
                workspace: ws(),
                origin: Origin::Mutation,
                reason: "secret".into(),
                request_id: Some("r1".into()),
            }),
            InputKind::RestartProgress(RestartProgress {
                workspace: ws(),
                restart_id: "ws-a:1".into(),
                phase: ProgressPhase::Failed,
                error: Some("quota".into()),
            }),
            InputKind::Lifecycle(Lifecycle { workspace: ws(), phase: LifecyclePhase::Hibernated }),
            InputKind::Tick,
            InputKind::Resume(Resume::default()),
            InputKind::Resume(Resume { id_key: Some(crate::core::ids::IdKey([7, u64::MAX])), ..Resume::default() }),
            InputKind::Resume(Resume {
                id_key: Some(crate::core::ids::IdKey([7, 1])),
                unwatched_after_ms: Some(5000),
                partition: None,
            }),
            InputKind::Resume(Resume { unwatched_after_ms: Some(1000), ..Resume::default() }),
            InputKind::Resume(Resume {
                id_key: Some(crate::core::ids::IdKey([3, 4])),
                unwatched_after_ms: Some(5000),
                partition: Some(Partition { index: 2, of: 16 }),
            }),
            InputKind::Resume(Resume { partition: Some(Partition { index: 0, of: 2 }), ..Resume::default() }),
            InputKind::Declaration(Declaration {
                partition: 5,
                workspace: ws(),
                reason: Reason::ConfirmedNotRunning,
                monitored: 160,
                awaits: true,
            }),
            InputKind::Declaration(Declaration {
                partition: 0,
                workspace: ws(),
                reason: Reason::RestartFailed,
                monitored: 7,
                awaits: false,
            }),
        ];
        let inputs: Vec<Input> = kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| Input {
                at: At(1_000 + i as i64),
                sent_at: Some(At(900)),
                id: Some(format!("e{i}")),
                stream_seq: (i % 2 == 0).then_some(40 + i as u64),
                kind,
            })
            .collect();
        let mut w = SegmentWriter::with_capacity(inputs.len());
        inputs.iter().for_each(|i| w.push(i));
        let bytes = w.finish();
        assert_eq!(header(&bytes), Some((inputs.len() as u32, At(1_000 + inputs.len() as i64 - 1))));
        assert_eq!(decode(&bytes).unwrap(), inputs);
    }

    #[test]
    fn damage_is_detected_not_misread() {
        let inputs: Vec<Input> = (0..3)
            .map(|i| Input { at: At(1_000 + i), sent_at: None, id: None, stream_seq: None, kind: InputKind::Tick })
            .collect();
        let mut w = SegmentWriter::with_capacity(3);
        inputs.iter().for_each(|i| w.push(i));
        let bytes = w.finish();
        assert!(matches!(decode(&bytes[..bytes.len() - 1]), Err(SegmentError::Truncated { index: 2 })));
        let mut flipped = bytes.clone();
        flipped[HEADER + 4] = 0xc1; // a byte MessagePack never uses
        assert!(matches!(decode(&flipped), Err(SegmentError::Record { index: 0, .. })));
        let mut bad_ws = Vec::new();
        let record = Record {
            at: 1,
            sent_at: None,
            id: None,
            event: Event::Lifecycle(b("ws.a"), LifecyclePhase::Created),
            stream_seq: None,
        };
        rmp_serde::encode::write(&mut bad_ws, &record).unwrap();
        let mut segment = vec![0u8; HEADER];
        segment[..4].copy_from_slice(&1u32.to_le_bytes());
        segment.extend_from_slice(&(bad_ws.len() as u32).to_le_bytes());
        segment.extend_from_slice(&bad_ws);
        assert!(matches!(decode(&segment), Err(SegmentError::Record { index: 0, .. })));
    }
}
