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

use async_nats::jetstream::consumer::pull::OrderedConfig;

use super::ingest::stored_at;
use super::*;
use crate::bus::sequencer::start;
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
        let Some(fence) = self.fence.clone() else { return Ok(()) };
        self.last_snapshot = Instant::now();
        let covers = self.store.stream_seq();
        if covers == 0 {
            return Ok(());
        }
        // Taking it is the loop's (it holds the store); encoding and appending it are not.
        let started = Instant::now();
        let snapshot = tokio::task::block_in_place(|| self.store.snapshot())?;
        let taken_ms = started.elapsed().as_millis() as u64;
        let max_payload = self.appends.client().server_info().max_payload.saturating_sub(4096).max(4096);
        let part_max = PART_MAX.min(max_payload);
        let (js, subjects, done) = (self.appends.clone(), self.subjects.clone(), self.snapshot_done.clone());
        self.snapshot_in_flight = true;
        tokio::spawn(async move {
            let encoded = tokio::task::spawn_blocking(move || {
                let bytes = snapshot.encode();
                let fnv = hash::fnv1a64(&bytes);
                (bytes, fnv)
            })
            .await;
            match encoded {
                Ok((bytes, fnv)) => {
                    match append_snapshot(&js, &subjects, &fence, covers, &bytes, fnv, part_max).await {
                        Ok(parts) => tracing::info!(covers, bytes = bytes.len(), parts, taken_ms, "snapshot appended"),
                        Err(AppendError::Fenced) => {
                            metrics::counter!("vigil_fenced_appends_total", "partition" => subjects.partition_index().to_string()).increment(1);
                            tracing::warn!(covers, "a snapshot was refused by the fence: the epoch moved on");
                        }
                        Err(e) => tracing::warn!(covers, error = %e, "cannot append a snapshot to the input stream"),
                    }
                }
                Err(e) => tracing::warn!(covers, error = %e, "encoding a snapshot failed"),
            }
            let _ = done.send(());
        });
        Ok(())
    }

    /// Schedules the next snapshot `snapshot_every` after the latest one in the stream, not after
    /// this start: a vigil restarted more often than that still leaves snapshots behind.
    pub(super) async fn schedule_snapshots(&mut self) {
        let subject = self.subjects.log_record("snapshot");
        let Ok(latest) = self.input_stream.get_last_raw_message_by_subject(&subject).await else {
            // None yet (or unreadable now): the first one is due at once.
            self.last_snapshot = Instant::now().checked_sub(self.cfg.snapshot_every).unwrap_or_else(Instant::now);
            return;
        };
        let age =
            Duration::from_millis(wall_clock().millis().saturating_sub(stored_at(latest.time).millis()).max(0) as u64);
        self.last_snapshot = Instant::now().checked_sub(age.min(self.cfg.snapshot_every)).unwrap_or_else(Instant::now);
    }
}

async fn append_snapshot(
    js: &jetstream::Context,
    subjects: &Subjects,
    fence: &Fence,
    covers: u64,
    bytes: &[u8],
    fnv: u64,
    part_max: usize,
) -> Result<usize, AppendError> {
    let mut parts = Vec::new();
    for part in bytes.chunks(part_max) {
        parts.push(append_raw(js, subjects.log_record("snap"), fence, part.to_vec()).await?);
    }
    let described = Described { v: 1, covers, parts, bytes: bytes.len() as u64, fnv };
    let n = described.parts.len();
    let payload = rmp_serde::to_vec_named(&described).expect("a snapshot description always encodes");
    append_raw(js, subjects.log_record("snapshot"), fence, payload).await?;
    Ok(n)
}

/// Appends one record, fenced by this instance's epoch, and returns its stream position.
async fn append_raw(
    js: &jetstream::Context,
    subject: String,
    fence: &Fence,
    payload: Vec<u8>,
) -> Result<u64, AppendError> {
    let publish = async {
        let ack = js
            .send_publish(subject, ownership::fenced(payload.into(), fence))
            .await
            .map_err(ownership::append_error)?;
        ack.await.map(|a| a.sequence).map_err(ownership::append_error)
    };
    match tokio::time::timeout(PART_TIMEOUT, publish).await {
        Ok(result) => result,
        Err(elapsed) => Err(AppendError::Nats(elapsed.into())),
    }
}

/// The best complete snapshot in the input stream that reads back whole, and the position it
/// stands at: the descriptions are tried in [`start::preferred_snapshots`]'s order (on a stream
/// whose first record is `first`), and one whose parts are gone or damaged is said so and passed
/// over for the next. `None` when the stream holds no usable snapshot.
/// A failure to read the stream is an error, not "no snapshot": rebuilding without one would
/// throw away the history it holds.
pub(super) async fn latest(
    stream: &jetstream::stream::Stream,
    subjects: &Subjects,
    first: u64,
) -> Result<Option<(u64, Snapshot)>, BusError> {
    let doing = "looking for a snapshot record in the input stream";
    let subject = subjects.log_record("snapshot");
    let last = match stream.get_last_raw_message_by_subject(&subject).await {
        Ok(m) => m.sequence,
        Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => return Ok(None),
        Err(e) => return Err(BusError::nats(doing, e)),
    };
    let consumer = stream
        .create_consumer(OrderedConfig { filter_subject: subject, ..Default::default() })
        .await
        .map_err(|e| BusError::nats(doing, e))?;
    let mut messages = consumer.messages().await.map_err(|e| BusError::nats(doing, e))?;
    let mut descriptions = Vec::new();
    loop {
        let message = match tokio::time::timeout(PART_TIMEOUT, messages.next()).await {
            Ok(Some(m)) => m.map_err(|e| BusError::nats(doing, e))?,
            Ok(None) | Err(_) => {
                return Err(BusError::Stalled {
                    what: "the input stream's snapshot records".into(),
                    waited: PART_TIMEOUT,
                });
            }
        };
        let seq = message.info().map(|i| i.stream_sequence).unwrap_or(last);
        descriptions.push((seq, message.payload.clone()));
        if seq >= last {
            break;
        }
    }
    // Retention removes records by age, not by what covers them: a snapshot taken after a crash
    // can cover less than one before it, and its tail be gone first.
    let mut usable = Vec::new();
    for (seq, description) in descriptions {
        match describe(&description) {
            Ok(described) => usable.push((described.covers, seq, described)),
            Err(why) => tracing::warn!(record = seq, "a snapshot in the input stream is unusable: {why}"),
        }
    }
    for (_, seq, described) in start::preferred_snapshots(first, usable) {
        match read(stream, subjects, &described).await {
            Ok(found) => return Ok(Some(found)),
            Err(why) => tracing::warn!(record = seq, "a snapshot in the input stream is unusable: {why}"),
        }
    }
    Ok(None)
}

/// Decodes a snapshot description, refusing one that could not be true.
/// What the partition's newest snapshot record covers (through which stream position), read from
/// its description alone; `None` without a usable one.
pub(super) async fn newest_covers(
    stream: &jetstream::stream::Stream,
    subjects: &Subjects,
) -> Result<Option<u64>, BusError> {
    match stream.get_last_raw_message_by_subject(&subjects.log_record("snapshot")).await {
        Ok(m) => Ok(describe(&m.payload).ok().map(|d| d.covers)),
        Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(BusError::nats("looking for the newest snapshot record in the input stream", e)),
    }
}

fn describe(description: &[u8]) -> Result<Described, String> {
    let mut de = rmp_serde::Deserializer::from_read_ref(description);
    de.set_max_depth(crate::core::wire::MAX_DEPTH);
    let described = Described::deserialize(&mut de).map_err(|e| format!("its description: {e}"))?;
    if described.v != 1 {
        return Err(format!("version {} of the description", described.v));
    }
    // Reserved by what the parts can hold, not by what the description claims: a forged one must
    // not make vigil allocate a gigabyte up front.
    let most = described.parts.len().saturating_mul(PART_MAX);
    if usize::try_from(described.bytes).map_or(true, |n| n > most) {
        return Err(format!("its description claims {} bytes in {} parts", described.bytes, described.parts.len()));
    }
    Ok(described)
}

async fn read(
    stream: &jetstream::stream::Stream,
    subjects: &Subjects,
    described: &Described,
) -> Result<(u64, Snapshot), String> {
    let mut bytes = Vec::with_capacity((described.bytes as usize).min(64 << 20));
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
