//! Snapshot records in the input stream (SPEC §4): every `snapshot_every`, vigil appends the
//! engine's whole state to the stream it folds, so a new data directory is rebuilt from the
//! latest snapshot and the records after it — not from the stream's first record — and the
//! stream's retention can be bounded (`input_max_age` longer than two snapshots apart).
//!
//! A snapshot taken at stream position P (the engine has applied exactly the records up to P) is
//! cut into parts, each appended on `<prefix>.log.snap`, then described by one record on
//! `<prefix>.log.snapshot`: P, the parts' stream positions, their length and checksum. The
//! description is appended only once every part is stored, so the last record on that subject
//! always names a complete snapshot. The fold skips both kinds of record: they are not inputs.
//! Appending runs off the loop, one snapshot at a time; a failed one is only logged (the next is
//! taken on schedule).

use serde::{Deserialize, Serialize};

use super::*;
use crate::core::hash;
use crate::store::Snapshot;

/// The largest part: well under NATS's default maximum payload (1 MiB).
const PART_MAX: usize = 512 * 1024;

/// How long appending one part (or the description) may wait for the stream's confirmation.
const PART_TIMEOUT: Duration = Duration::from_secs(10);

/// The record that describes a complete snapshot.
#[derive(Debug, Serialize, Deserialize)]
struct Described {
    v: u32,
    /// The stream position the snapshot stands at.
    covers: u64,
    /// The stream positions of its parts, in order.
    parts: Vec<u64>,
    /// Their total length, and the FNV-1a of their bytes.
    bytes: u64,
    fnv: u64,
}

/// Whether `subject` carries one of vigil's snapshot records (which the fold skips).
pub(super) fn is_snapshot_record(subjects: &Subjects, subject: &str) -> bool {
    matches!(subjects.parse_log(subject), Some("snap" | "snapshot"))
}

impl Serve {
    /// Takes a snapshot and appends it to the stream, off the loop, if one is due: `snapshot_every`
    /// since the last, none in flight, and no rebuild under way.
    pub(super) fn snapshot_if_due(&mut self) -> Result<(), BusError> {
        if self.snapshot_in_flight || self.rebuild.is_some() || self.last_snapshot.elapsed() < self.cfg.snapshot_every {
            return Ok(());
        }
        self.last_snapshot = Instant::now();
        let covers = self.store.stream_seq();
        if covers == 0 {
            return Ok(());
        }
        let started = Instant::now();
        let bytes = tokio::task::block_in_place(|| self.store.snapshot())?.encode();
        let encoded_ms = started.elapsed().as_millis() as u64;
        let max_payload = self.appends.client().server_info().max_payload.saturating_sub(4096).max(4096);
        let part_max = PART_MAX.min(max_payload);
        let (js, subjects, done) = (self.appends.clone(), self.subjects.clone(), self.snapshot_done.clone());
        self.snapshot_in_flight = true;
        tokio::spawn(async move {
            let result = append_snapshot(&js, &subjects, covers, &bytes, part_max).await;
            match &result {
                Ok(parts) => tracing::info!(covers, bytes = bytes.len(), parts, encoded_ms, "snapshot appended"),
                Err(e) => tracing::warn!(covers, error = %e, "cannot append a snapshot to the input stream"),
            }
            let _ = done.send(());
        });
        Ok(())
    }
}

async fn append_snapshot(
    js: &jetstream::Context,
    subjects: &Subjects,
    covers: u64,
    bytes: &[u8],
    part_max: usize,
) -> Result<usize, NatsError> {
    let mut parts = Vec::new();
    for part in bytes.chunks(part_max) {
        parts.push(append_raw(js, subjects.log_record("snap"), part.to_vec()).await?);
    }
    let described = Described { v: 1, covers, parts, bytes: bytes.len() as u64, fnv: hash::fnv1a64(bytes) };
    let n = described.parts.len();
    let payload = rmp_serde::to_vec_named(&described).expect("a snapshot description always encodes");
    append_raw(js, subjects.log_record("snapshot"), payload).await?;
    Ok(n)
}

/// Appends one record and returns its stream position.
async fn append_raw(js: &jetstream::Context, subject: String, payload: Vec<u8>) -> Result<u64, NatsError> {
    let publish = async {
        let ack = js.publish(subject, payload.into()).await?;
        ack.await.map(|a| a.sequence)
    };
    match tokio::time::timeout(PART_TIMEOUT, publish).await {
        Ok(result) => result.map_err(NatsError::from),
        Err(elapsed) => Err(NatsError::from(elapsed)),
    }
}

/// The latest complete snapshot in the input stream and the position it stands at, if there is
/// one that reads back whole. One that does not (a part expired or damaged) is said so, and `None`.
pub(super) async fn latest(stream: &jetstream::stream::Stream, subjects: &Subjects) -> Option<(u64, Snapshot)> {
    let subject = subjects.log_record("snapshot");
    let record = match stream.get_last_raw_message_by_subject(&subject).await {
        Ok(m) => m,
        Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => return None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot look for a snapshot in the input stream");
            return None;
        }
    };
    match read(stream, subjects, &record.payload).await {
        Ok(found) => Some(found),
        Err(why) => {
            tracing::warn!(record = record.sequence, "the input stream's latest snapshot is unusable: {why}");
            None
        }
    }
}

async fn read(
    stream: &jetstream::stream::Stream,
    subjects: &Subjects,
    description: &[u8],
) -> Result<(u64, Snapshot), String> {
    let described: Described = rmp_serde::from_slice(description).map_err(|e| format!("its description: {e}"))?;
    if described.v != 1 {
        return Err(format!("version {} of the description", described.v));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(described.bytes).unwrap_or(0).min(1 << 30));
    let part_subject = subjects.log_record("snap");
    for seq in &described.parts {
        let part = stream.get_raw_message(*seq).await.map_err(|e| format!("part {seq}: {e}"))?;
        if part.subject.as_str() != part_subject {
            return Err(format!("record {seq} is not a snapshot part"));
        }
        bytes.extend_from_slice(&part.payload);
    }
    if bytes.len() as u64 != described.bytes || hash::fnv1a64(&bytes) != described.fnv {
        return Err("its parts do not add up to what the description says".into());
    }
    let snapshot = Snapshot::decode(&bytes).map_err(|e| crate::report::Chain(&e).to_string())?;
    Ok((described.covers, snapshot))
}
