//! Group commits: a group of inputs is applied to the engine and handed to the writer thread
//! (`submit`), which writes and flushes it while the caller goes on; the caller learns which groups
//! are durable (`poll_durable`, `wait_durable`). A caller whose inputs are durable nowhere else
//! acknowledges or publishes a group only then; one whose inputs are in a stream it can read again
//! (the service) takes the outputs at once (`submit_released`). A store whose write failed is
//! poisoned: its engine may be ahead of the disk.

use crate::core::event::Input;

use super::*;

impl Store {
    /// Applies a group of inputs and makes them durable: one atomic batch (log segment, outbox,
    /// positions) and one flush. `stream_seq` is the input stream sequence of the group's last
    /// message, if the inputs came from one. Groups submitted earlier and not yet taken stay for
    /// [`Store::poll_durable`]; this returns only its own.
    ///
    /// On error the store is poisoned: its engine may be ahead of the disk, so it refuses further
    /// writes; reopen it to recover from what is durable.
    pub fn commit(&mut self, inputs: &[Input], stream_seq: Option<u64>) -> Result<Committed, StoreError> {
        let ticket = self.submit(inputs, stream_seq)?;
        self.wait_all()?;
        let own = self.durable.iter().position(|c| c.ticket == ticket);
        let own = own.and_then(|i| self.durable.remove(i));
        own.ok_or_else(|| StoreError::Inconsistent(format!("group {ticket} was not reported durable")))
    }

    /// Applies a group of inputs to the engine and hands its batch to the writer thread, which
    /// writes and flushes it while the caller goes on. Applying overlaps the previous group's
    /// flush; handing over waits for it. Returns the group's ticket; [`Store::poll_durable`] reports it once it is on disk,
    /// and only then may its inputs be acknowledged or its outputs published.
    ///
    /// On error the store is poisoned, as for [`Store::commit`].
    pub fn submit(&mut self, inputs: &[Input], stream_seq: Option<u64>) -> Result<u64, StoreError> {
        self.check_poison()?;
        let result = self.submit_inner(inputs, stream_seq, false);
        self.poison_on(result).map(|(ticket, _)| ticket)
    }

    /// As [`Store::submit`], but hands the group's outputs back at once, for a caller whose inputs
    /// are durable elsewhere already (the input stream): it may publish them before the group is on
    /// this disk. They are in the outbox all the same once the group is durable, so a crash before
    /// they are confirmed publishes them again; the group reported durable carries none.
    pub fn submit_released(
        &mut self,
        inputs: &[Input],
        stream_seq: Option<u64>,
    ) -> Result<(u64, Vec<Pending>), StoreError> {
        self.check_poison()?;
        let result = self.submit_inner(inputs, stream_seq, true);
        self.poison_on(result)
    }

    /// The groups that became durable since the last call, in order, without waiting.
    pub fn poll_durable(&mut self) -> Result<Vec<Committed>, StoreError> {
        while !self.in_flight.is_empty() {
            match self.writer.try_next() {
                None => break,
                Some(result) => self.settle(result)?,
            }
        }
        self.write_removals_when_idle();
        Ok(self.durable.drain(..).collect())
    }

    /// Waits until every submitted group is durable, then returns those not yet taken, in order.
    pub fn wait_durable(&mut self) -> Result<Vec<Committed>, StoreError> {
        self.wait_all()?;
        Ok(self.durable.drain(..).collect())
    }

    /// Whether groups are submitted and not yet reported durable.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub(super) fn submit_inner(
        &mut self,
        inputs: &[Input],
        stream_seq: Option<u64>,
        release: bool,
    ) -> Result<(u64, Vec<Pending>), StoreError> {
        let first_seq = self.engine.seq() + 1;
        let mut segment = segment::SegmentWriter::with_capacity(inputs.len());
        let mut outputs = Vec::new();
        tombstones::apply_loading(&self.db, &mut self.engine, inputs, &mut outputs)?;
        for input in inputs {
            segment.push(input);
        }
        let last_seq = self.engine.seq();
        let mut batch = sled::Batch::default();
        if !inputs.is_empty() {
            batch.insert(&keys::log(first_seq)[..], segment.finish());
            batch.insert(keys::META_APPLIED, &keys::u64_value(last_seq)[..]);
        }
        let key = OutboxKey { seq: first_seq };
        if !outputs.is_empty() {
            batch.insert(&key.bytes()[..], encode_outputs(&outputs));
        }
        while self.in_flight.len() >= WRITE_DEPTH {
            let result = self.writer.wait();
            self.settle(result)?;
        }
        self.take_removals(&mut batch);
        if let Some(s) = stream_seq {
            batch.insert(keys::META_STREAM, &keys::u64_value(s)[..]);
            self.stream_seq = s;
        }
        self.writer.send(batch)?;
        self.tickets += 1;
        let outputs: Vec<Pending> = outputs.into_iter().map(|output| Pending { key, output }).collect();
        let (released, kept) = if release { (outputs, Vec::new()) } else { (Vec::new(), outputs) };
        self.in_flight.push_back(Committed { ticket: self.tickets, first_seq, last_seq, stream_seq, outputs: kept });
        self.since_checkpoint += inputs.len() as u64;
        if self.config.checkpoint_every > 0 && self.since_checkpoint >= self.config.checkpoint_every {
            self.checkpoint()?;
        }
        Ok((self.tickets, released))
    }

    /// Takes the writer's report on the oldest group in flight.
    pub(super) fn settle(&mut self, result: Result<(), StoreError>) -> Result<(), StoreError> {
        if let Err(e) = result {
            if self.poisoned.is_none() {
                self.poisoned = Some(Chain(&e).to_string()); // the first failure is the one worth telling
            }
            return Err(e);
        }
        let group = self
            .in_flight
            .pop_front()
            .ok_or_else(|| StoreError::Inconsistent("the writer reported a group that was never submitted".into()))?;
        if let Some(s) = group.stream_seq {
            self.durable_stream_seq = s;
        }
        self.durable.push_back(group);
        Ok(())
    }

    /// Waits for every group in flight (their reports are kept for [`Store::poll_durable`]).
    pub(super) fn wait_all(&mut self) -> Result<(), StoreError> {
        while !self.in_flight.is_empty() {
            let result = self.writer.wait();
            self.settle(result)?;
        }
        self.write_removals_when_idle();
        Ok(())
    }

    pub(super) fn check_poison(&self) -> Result<(), StoreError> {
        match &self.poisoned {
            Some(why) => Err(StoreError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    pub(super) fn poison_on<T>(&mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &result
            && self.poisoned.is_none()
        {
            self.poisoned = Some(Chain(e).to_string());
        }
        result
    }
}
