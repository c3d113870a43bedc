//! Log segments: the inputs of one group commit, stored as one sled value.
//!
//! One insert per group instead of one per event is what lets the log keep up with the engine
//! (measured on this machine: ~150 000 events/s with an insert per event, over 1 000 000 with a
//! segment per group). A segment is a small header — how many records, and the receive time of the
//! last one (for retention) — followed by the records, each a length-prefixed MessagePack map
//! exactly as on the wire (named fields, `at` = receive time).

use crate::core::event::Input;
use crate::core::time::At;
use crate::core::wire::{self, DecodeError, Stamping};

const HEADER: usize = 4 + 8;

/// Builds a segment.
pub struct SegmentWriter {
    bytes: Vec<u8>,
    count: u32,
    last_at: At,
}

impl SegmentWriter {
    pub fn with_capacity(records: usize) -> SegmentWriter {
        let mut bytes = Vec::with_capacity(HEADER + records * 112);
        bytes.resize(HEADER, 0);
        SegmentWriter { bytes, count: 0, last_at: At(0) }
    }

    pub fn push(&mut self, input: &Input) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&[0; 4]);
        rmp_serde::encode::write_named(&mut self.bytes, &wire::RawInput::from_input(input))
            .expect("an event map always encodes");
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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("record {index} is truncated")]
    Truncated { index: u32 },
    #[error("record {index}: {error}")]
    Record { index: u32, error: DecodeError },
    #[error("the header says {declared} records but {found} follow")]
    Count { declared: u32, found: u32 },
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
        let input =
            wire::decode_msgpack(record, Stamping::Logged).map_err(|error| SegmentError::Record { index, error })?;
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
    use crate::core::event::InputKind;

    #[test]
    fn a_segment_round_trips_and_damage_is_detected() {
        let inputs: Vec<Input> = (0..3)
            .map(|i| Input { at: At(1_000 + i), sent_at: None, id: Some(format!("e{i}")), kind: InputKind::Tick })
            .collect();
        let mut w = SegmentWriter::with_capacity(3);
        inputs.iter().for_each(|i| w.push(i));
        let bytes = w.finish();
        assert_eq!(header(&bytes), Some((3, At(1_002))));
        assert_eq!(decode(&bytes).unwrap(), inputs);
        assert!(matches!(decode(&bytes[..bytes.len() - 1]), Err(SegmentError::Truncated { index: 2 })));
        let mut flipped = bytes.clone();
        flipped[HEADER + 4] = 0xc1; // a byte MessagePack never uses
        assert!(matches!(decode(&flipped), Err(SegmentError::Record { index: 0, .. })));
    }
}
