//! Checkpoints (the machines changed since the last one, the tombstones and the fleet record,
//! tagged with the log position they cover, in one atomic batch) and compaction of the log they
//! cover.

use crate::core::time::At;

use super::*;

impl Store {
    /// Writes the machines changed since the last checkpoint (whole slab chunks of
    /// [`CHUNK_SIZE`] workspaces), the tombstones and the fleet record, tagged with the log position
    /// they cover, as one atomic batch.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.checkpoint_with(sled::Batch::default())
    }

    /// A checkpoint written in one atomic batch with what `batch` already holds.
    pub(super) fn checkpoint_with(&mut self, mut batch: sled::Batch) -> Result<(), StoreError> {
        self.check_poison()?;
        let drained = self.wait_all();
        self.poison_on(drained)?;
        let chunks = self.engine.take_dirty_chunks(CHUNK_SIZE, self.full_checkpoint_due);
        let fleet = self.engine.fleet_record();
        for (k, records) in &chunks.chunks {
            batch.insert(&keys::state(*k)[..], rmp_serde::to_vec(records).expect("records always encode"));
        }
        for k in chunks.count..self.stored_chunks.max(chunks.count) {
            batch.remove(&keys::state(k)[..]);
        }
        batch.insert(keys::META_CHUNKS, &keys::u64_value(u64::from(chunks.count))[..]);
        tombstones::write_changed(&mut self.engine, &mut batch);
        batch.insert(keys::META_CHECKPOINT, rmp_serde::to_vec_named(&fleet).expect("records always encode"));
        let result = self.db.apply_batch(batch).and_then(|_| self.db.flush()).map_err(io("writing a checkpoint"));
        if let Err(e) = &result {
            self.poisoned = Some(Chain(e).to_string());
        }
        result?;
        self.checkpoint_seq = fleet.seq;
        self.stored_chunks = chunks.count;
        self.full_checkpoint_due = false;
        self.since_checkpoint = 0;
        Ok(())
    }

    /// Drops log segments that are entirely older than `before` and covered by the last checkpoint
    /// (the snapshot carries their effect). Returns how many inputs were dropped.
    pub fn compact(&mut self, before: At) -> Result<u64, StoreError> {
        self.check_poison()?;
        let mut dropped = 0;
        let mut batch = sled::Batch::default();
        let mut first = self.first_seq;
        for item in self.db.range(keys::log(0)..=keys::log(u64::MAX)) {
            let (key, value) = item.map_err(io("reading the log"))?;
            let seq =
                keys::log_seq(&key).ok_or_else(|| StoreError::Inconsistent("a log key without a sequence".into()))?;
            let (count, last_at) = segment::header(&value)
                .ok_or(StoreError::CorruptLog { seq, source: Corruption::Malformed("no segment header") })?;
            let last = seq + u64::from(count).saturating_sub(1);
            if last_at >= before || last > self.checkpoint_seq {
                break;
            }
            batch.remove(key);
            dropped += u64::from(count);
            first = last + 1;
        }
        batch.insert(keys::META_FIRST, &keys::u64_value(first)[..]);
        let written = self.db.apply_batch(batch).and_then(|_| self.db.flush()).map_err(io("compacting the log"));
        self.poison_on(written)?;
        self.first_seq = first;
        Ok(dropped)
    }
}
