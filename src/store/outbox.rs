//! The outbox: a group's outputs are written with the group and stay until the bus has confirmed
//! every one of them; after a crash they are published again, and de-duplicated by their ids.

use crate::core::event::Output;
use crate::core::wire;

use super::*;

impl Store {
    /// Removes groups whose outputs the bus has all confirmed from the outbox (a key may appear
    /// once per output). While groups are in flight the removals ride in the next group's batch
    /// (a sled write of its own costs as much as a group's); otherwise they are written now. Not
    /// flushed on their own: if vigil crashes first, the outputs are published again and
    /// de-duplicated by their ids.
    pub fn ack(&mut self, delivered: &[OutboxKey]) -> Result<(), StoreError> {
        self.removals.extend_from_slice(delivered);
        if self.in_flight.is_empty() { self.write_removals() } else { Ok(()) }
    }

    /// Moves the outbox removals waiting for a batch into `batch`.
    pub(super) fn take_removals(&mut self, batch: &mut sled::Batch) {
        self.removals.sort_unstable();
        self.removals.dedup();
        for key in self.removals.drain(..) {
            batch.remove(&key.bytes()[..]);
        }
    }

    pub(super) fn write_removals(&mut self) -> Result<(), StoreError> {
        if self.removals.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        let keys = self.removals.clone();
        self.take_removals(&mut batch);
        let written = self.db.apply_batch(batch).map_err(io("clearing the outbox"));
        if written.is_err() {
            self.removals = keys; // tried again with the next write
            self.write_failed = true;
        }
        written
    }

    /// Clears confirmed outputs once nothing is in flight. A failure here is not a failure of
    /// the groups just reported durable: the removals stay for the next write, and at worst the
    /// outputs are published again after a crash and de-duplicated by their ids.
    pub(super) fn write_removals_when_idle(&mut self) {
        if self.in_flight.is_empty() {
            let _ = self.write_removals();
        }
    }
}

pub(super) fn read_outbox(db: &sled::Db) -> Result<Vec<Pending>, StoreError> {
    let mut pending = Vec::new();
    for item in db.scan_prefix([keys::OUTBOX]) {
        let (key, value) = item.map_err(io("reading the outbox"))?;
        let corrupt = |source| StoreError::CorruptRecord { what: "outbox", key: format!("{key:?}"), source };
        let key = OutboxKey::parse(&key).ok_or_else(|| corrupt(Corruption::Malformed("a malformed key")))?;
        for output in decode_outputs(&value).map_err(corrupt)? {
            pending.push(Pending { key, output });
        }
    }
    Ok(pending)
}

/// A group's outputs as one value: each a length-prefixed MessagePack map, as on the wire.
pub(super) fn encode_outputs(outputs: &[Output]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(outputs.len() * 160);
    for o in outputs {
        let one = wire::encode_output_msgpack(o);
        bytes.extend_from_slice(&(one.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&one);
    }
    bytes
}

pub(super) fn decode_outputs(mut bytes: &[u8]) -> Result<Vec<Output>, Corruption> {
    let mut outputs = Vec::new();
    while !bytes.is_empty() {
        let len = bytes.get(..4).ok_or(Corruption::Malformed("truncated"))?;
        let len = u32::from_le_bytes(len.try_into().expect("four bytes")) as usize;
        let one = bytes.get(4..4 + len).ok_or(Corruption::Malformed("truncated"))?;
        outputs.push(wire::decode_output_msgpack(one)?);
        bytes = &bytes[4 + len..];
    }
    Ok(outputs)
}
