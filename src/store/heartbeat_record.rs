//! Heartbeat records of a log segment, by hand: heartbeats are nine in ten records of a busy log,
//! and serde's machinery was a visible share of writing them at a group commit and of reading
//! them back at a recovery. Both directions here produce exactly what `segment`'s serde `Record`
//! does (the same `rmp` calls, in the same order); anything unexpected on the way back is `None`,
//! and serde decides. `segment`'s property tests hold the two to each other.

use std::borrow::Cow;

use crate::core::event::*;
use crate::core::fast_map::Reader;
use crate::core::time::At;

/// Writes a heartbeat's record byte for byte as rmp-serde writes `segment::Record` (the same `rmp`
/// calls, in the same order), without serde's machinery: heartbeats are nine in ten records, and
/// encoding them was a visible share of a group commit. A property test holds the two identical.
pub(super) fn encode_heartbeat(bytes: &mut Vec<u8>, input: &Input, heartbeat: &Heartbeat) {
    use rmp::encode::{write_array_len, write_map_len, write_str};
    // Writing to a Vec<u8> cannot fail, so the results are ignored here and below.
    let _ = write_array_len(bytes, 5);
    write_opt_sint(bytes, Some(input.at.millis()));
    write_opt_sint(bytes, input.sent_at.map(At::millis));
    write_opt_str(bytes, input.id.as_deref());
    let _ = write_map_len(bytes, 1);
    let _ = write_str(bytes, "Heartbeat");
    let _ = write_array_len(bytes, 4);
    write_opt_str(bytes, Some(heartbeat.workspace.as_str()));
    write_opt_uint(bytes, heartbeat.interval_s.map(u64::from));
    write_opt_str(bytes, heartbeat.incarnation.as_deref());
    write_opt_uint(bytes, heartbeat.active_tasks.map(u64::from));
    write_opt_uint(bytes, input.stream_seq);
}

fn write_opt_sint(bytes: &mut Vec<u8>, v: Option<i64>) {
    match v {
        Some(v) => drop(rmp::encode::write_sint(bytes, v)),
        None => drop(rmp::encode::write_nil(bytes)),
    }
}

fn write_opt_uint(bytes: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(v) => drop(rmp::encode::write_uint(bytes, v)),
        None => drop(rmp::encode::write_nil(bytes)),
    }
}

fn write_opt_str(bytes: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(v) => drop(rmp::encode::write_str(bytes, v)),
        None => drop(rmp::encode::write_nil(bytes)),
    }
}

/// Reads the record of a heartbeat — nine in ten records of a busy log — in one pass over its
/// bytes, without serde's visitor machinery (which made decoding the log the slower half of a
/// recovery). Anything else, or anything unexpected in a heartbeat, is `None`: the serde decoder
/// then decides, errors and all, so this can only be faster, never different (a test holds it to
/// that).
pub(super) fn fast_heartbeat(record: &[u8]) -> Option<Input> {
    let mut r = Reader::new(record);
    let fields = r.array_len()?;
    if fields != 4 && fields != 5 {
        return None;
    }
    let at = r.int()?;
    let sent_at = r.opt_int()?;
    let id = r.opt_str()?;
    if r.map_len()? != 1 || r.str()? != b"Heartbeat" || r.array_len()? != 4 {
        return None;
    }
    let workspace = WorkspaceId::parse(std::str::from_utf8(r.str()?).ok()?).ok()?;
    let interval_s = r.opt_uint()?.map(u16::try_from).transpose().ok()?;
    let incarnation = r.opt_str()?.map(|s| compact_str::CompactString::new(s));
    let active_tasks = r.opt_uint()?.map(u32::try_from).transpose().ok()?;
    let stream_seq = if fields == 5 { r.opt_uint()? } else { None };
    r.at_end().then(|| Input {
        at: At(at),
        sent_at: sent_at.map(At),
        id: id.map(Cow::into_owned),
        stream_seq,
        kind: InputKind::Heartbeat(Heartbeat { workspace, interval_s, incarnation, active_tasks }),
    })
}
