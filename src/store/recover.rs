//! Recovery: what a data directory says about itself (meta, policy, states), and the log tail
//! re-applied after the last checkpoint, checked for gaps.

use crate::core::event::{Input, WorkspaceId};
use crate::core::policy::LaterKeys;
use crate::core::snapshot::{FleetRecord, WorkspaceRecord};

use super::*;

pub(super) struct Meta {
    pub(super) applied: u64,
    pub(super) stream: u64,
    pub(super) stream_id: Option<String>,
    pub(super) rebuild: u64,
    pub(super) history_lost: bool,
    pub(super) epoch: u64,
    pub(super) first: u64,
    pub(super) chunks: u32,
    pub(super) checkpoint: FleetRecord,
}

pub(super) fn read_meta(db: &sled::Db) -> Result<Meta, StoreError> {
    let number = |key: &[u8], default: u64| -> Result<u64, StoreError> {
        match db.get(key).map_err(io("reading meta"))? {
            None => Ok(default),
            Some(v) => keys::read_u64(&v).ok_or_else(|| StoreError::CorruptRecord {
                what: "meta",
                key: String::from_utf8_lossy(&key[1..]).into_owned(),
                source: Corruption::Length { found: v.len(), expected: 8 },
            }),
        }
    };
    let checkpoint = match db.get(keys::META_CHECKPOINT).map_err(io("reading the checkpoint"))? {
        None => FleetRecord::default(),
        Some(v) => rmp_serde::from_slice(&v).map_err(|e| StoreError::CorruptRecord {
            what: "meta",
            key: "checkpoint".into(),
            source: e.into(),
        })?,
    };
    Ok(Meta {
        applied: number(keys::META_APPLIED, 0)?,
        stream: number(keys::META_STREAM, 0)?,
        stream_id: db
            .get(keys::META_STREAM_ID)
            .map_err(io("reading meta"))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()),
        rebuild: number(keys::META_REBUILD, 0)?,
        history_lost: number(keys::META_HISTORY_LOST, 0)? != 0,
        epoch: number(keys::META_EPOCH, 0)?,
        first: number(keys::META_FIRST, 1)?,
        chunks: u32::try_from(number(keys::META_CHUNKS, 0)?).unwrap_or(u32::MAX),
        checkpoint,
    })
}

pub(super) fn read_policy(db: &sled::Db) -> Result<Option<Policy>, StoreError> {
    match db.get(keys::META_POLICY).map_err(io("reading the policy"))? {
        None => Ok(None),
        Some(v) => {
            let corrupt = |e: rmp_serde::decode::Error| StoreError::CorruptRecord {
                what: "meta",
                key: "policy".into(),
                source: e.into(),
            };
            // A policy stored before a rule existed had it off: its log replays as it ran.
            let policy: Policy = rmp_serde::from_slice(&v).map_err(corrupt)?;
            let later: LaterKeys = rmp_serde::from_slice(&v).map_err(corrupt)?;
            Ok(Some(later.applied_to(policy)))
        }
    }
}

pub(super) fn read_states(db: &sled::Db) -> Result<Vec<(WorkspaceId, WorkspaceRecord)>, StoreError> {
    let mut all = Vec::new();
    for item in db.scan_prefix([keys::STATE]) {
        let (key, value) = item.map_err(io("reading workspace states"))?;
        let chunk: Vec<(WorkspaceId, WorkspaceRecord)> = rmp_serde::from_slice(&value).map_err(|e| {
            StoreError::CorruptRecord { what: "state chunk", key: format!("{:?}", &key[1..]), source: e.into() }
        })?;
        all.extend(chunk);
    }
    Ok(all)
}

/// The key of the segment holding sequence `seq`, if any.
pub(super) fn segment_start(db: &sled::Db, seq: u64) -> Option<u64> {
    let (key, _) = db.range(keys::log(0)..=keys::log(seq)).next_back()?.ok()?;
    keys::log_seq(&key)
}

pub(super) fn decode_segment(first: u64, bytes: &[u8]) -> Result<Vec<Input>, StoreError> {
    segment::decode(bytes).map_err(|e| {
        let at = match &e {
            SegmentError::Truncated { index } | SegmentError::Record { index, .. } => first + u64::from(*index),
            SegmentError::Count { .. } => first,
        };
        StoreError::CorruptLog { seq: at, source: e.into() }
    })
}

/// Re-applies the inputs after the checkpoint, checking that the log has no gap.
pub(super) fn replay_tail(
    db: &sled::Db,
    engine: &mut Engine,
    checkpoint: u64,
    applied: u64,
) -> Result<u64, StoreError> {
    if applied < checkpoint {
        return Err(StoreError::Inconsistent(format!(
            "the checkpoint covers {checkpoint} but only {applied} were committed"
        )));
    }
    let Some(start) = segment_start(db, checkpoint + 1).or((applied == checkpoint).then_some(checkpoint + 1)) else {
        return Err(StoreError::Inconsistent(format!("no log segment holds sequence {}", checkpoint + 1)));
    };
    // Reading and decoding the log runs on its own thread, ahead of the engine: on two cores
    // that hides most of the decoding behind the applying.
    let mut replayed = 0;
    let mut sink = Vec::new();
    std::thread::scope(|scope| -> Result<(), StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(u64, Vec<Input>), StoreError>>(16);
        let reader = scope.spawn(move || {
            for item in db.range(keys::log(start)..=keys::log(u64::MAX)) {
                let segment = item.map_err(io("reading the log")).and_then(|(key, value)| {
                    let first = keys::log_seq(&key)
                        .ok_or_else(|| StoreError::Inconsistent("a log key without a sequence".into()))?;
                    Ok((first, decode_segment(first, &value)?))
                });
                let failed = segment.is_err();
                if tx.send(segment).is_err() || failed {
                    return;
                }
            }
        });
        for segment in rx {
            let (first, inputs) = segment?;
            let skip = usize::try_from(checkpoint.saturating_sub(first.saturating_sub(1)))
                .unwrap_or(usize::MAX)
                .min(inputs.len());
            let tail = &inputs[skip..];
            let seq = first + skip as u64;
            if !tail.is_empty() && (seq != engine.seq() + 1 || seq + tail.len() as u64 - 1 > applied) {
                return Err(StoreError::Inconsistent(format!("expected sequence {}, found {seq}", engine.seq() + 1)));
            }
            tombstones::apply_loading(db, engine, tail, &mut sink)?;
            sink.clear();
            replayed += tail.len() as u64;
        }
        reader.join().map_err(|_| StoreError::Inconsistent("the log reader thread panicked".into()))
    })?;
    if engine.seq() != applied {
        return Err(StoreError::Inconsistent(format!(
            "{applied} inputs were committed but the log ends at {}",
            engine.seq()
        )));
    }
    Ok(replayed)
}
