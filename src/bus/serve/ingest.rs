//! Inputs on their way in: a batch from the consumer (redeliveries recognised by their stream
//! sequence, gaps read from the stream in order), each message checked by intake and admission or
//! dead-lettered, the group submitted; and, at start, the data directory's position adopted in the
//! input stream and the consumer brought level with it.

use super::*;

impl Serve {
    pub(super) async fn handle_batch(
        &mut self,
        batch: Vec<Result<jetstream::Message, String>>,
    ) -> Result<(), BusError> {
        let started = Instant::now();
        let mut inputs = Vec::with_capacity(batch.len());
        let mut last_message = None;
        let mut last_seq = self.store.stream_seq();
        for item in batch {
            let message = match item {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "pulling input messages");
                    continue;
                }
            };
            let Ok((seq, stored, pending, delivered)) =
                message.info().map(|i| (i.stream_sequence, stored_at(i.published), i.pending, i.consumer_sequence))
            else {
                let subject = HeaderText::escape(&message.subject);
                tracing::warn!(%subject, "a message without JetStream metadata; ignored");
                continue;
            };
            self.note_record(&message.subject, stored, pending);
            // A partition's consumer skips the other partitions' records: a gap in stream
            // positions is a gap in its log only if deliveries went elsewhere (the server numbers
            // every delivery of the consumer, redeliveries too).
            let contiguous = self.delivered.replace(delivered).is_some_and(|before| delivered == before + 1);
            match sequencer::delivery(seq, last_seq) {
                sequencer::Delivery::Redelivered => {
                    // Redelivered after a lost acknowledgement or a crash: already applied. (Acked
                    // by the batch's acknowledgement only if nothing newer is in the batch.)
                    metrics::counter!("vigil_redelivered_total").increment(1);
                    if last_message.is_none() {
                        last_message = Some(message);
                    }
                    continue;
                }
                sequencer::Delivery::Next => {}
                sequencer::Delivery::AfterGap { .. } if contiguous && self.subjects.part().is_some() => {}
                sequencer::Delivery::AfterGap { from, to } => {
                    // Messages the consumer delivered elsewhere (to an instance that crashed before
                    // committing them, or to a pull request lost with the connection) come back
                    // only after the ack wait, out of order, and would be acknowledged by this
                    // batch's ack. The stream sequence is the truth: read them from the stream,
                    // in order.
                    self.fill_gap(from..to + 1, &mut inputs).await?;
                }
            }
            // The time the stream stored it is the input's time, however late vigil reads it.
            self.accept(&message.subject, &message.payload, seq, stored, &mut inputs);
            last_seq = seq;
            last_message = Some(message);
        }
        if last_seq > self.store.stream_seq() {
            self.submit(inputs, Some(last_seq)).await?;
        }
        // Acknowledged at once: the records are durable in the stream and applied (their outputs
        // are on their way). The consumer's position only paces delivery: a restart starts from
        // the data directory's own position (see `level_consumer`), however far the ack went.
        if let Some(message) = last_message
            && let Err(e) = message.ack().await
        {
            // Harmless: the messages come again and are recognised by their stream sequence.
            tracing::warn!(error = %e, "acknowledging a batch failed");
        }
        metrics::histogram!("vigil_batch_seconds").record(started.elapsed().as_secs_f64());
        self.collect().await
    }

    /// Decodes one input into `inputs`, or dead-letters it.
    pub(super) fn accept(&mut self, subject: &str, payload: &bytes::Bytes, seq: u64, now: At, inputs: &mut Vec<Input>) {
        // vigil's snapshot and epoch records are in the log for a successor and for the fence,
        // not for the fold.
        if snapshot::is_snapshot_record(&self.subjects, subject) || self.subjects.parse_log(subject) == Some("epoch") {
            return;
        }
        let engine = self.store.engine();
        // Its place in the stream is its place in the log: the ids of what it causes derive from it.
        let checked = self
            .intake
            .decode(subject, payload, now)
            .map(|input| Input { stream_seq: Some(seq), ..input })
            .and_then(|input| self.admission.admit(engine, input, inputs));
        match checked {
            Ok(input) => {
                if self.following.is_none() {
                    metrics::counter!("vigil_inputs_total", "type" => input.kind.type_name()).increment(1);
                }
                inputs.push(input);
            }
            // A rebuild applies records a second time: they were dead-lettered the first time.
            // So does a standby: the owner dead-letters them.
            Err(_) if self.rebuilding(seq) || self.following.is_some() => {}
            Err(rejection) => {
                self.dlq.send(DeadLetter::new(subject, payload, seq, rejection, self.cfg.max_payload));
            }
        }
    }

    /// Makes sure the stored stream position counts in this input stream. A new data directory is
    /// vigil's copy of the stream, to be rebuilt from its first record (see [`super::rebuild`]):
    /// never started from nothing while the stream holds history. A directory that counted in
    /// another stream (this one was deleted and declared again) keeps its state and starts after
    /// the position the consumer has acknowledged in this one.
    /// Returns the outputs a snapshot record held as pending, when the directory was restored from
    /// one: they were decided and perhaps never published.
    pub(super) async fn adopt_input_stream(
        &mut self,
        consumer: &mut jetstream::consumer::PullConsumer,
    ) -> Result<Vec<Pending>, BusError> {
        let state = self.stream_state().await?;
        let directory = start::Directory { stream_id: self.store.stream_id(), applied: self.store.engine().seq() };
        let held = start::Held { stream_id: &self.stream_id, first: state.first_sequence, last: state.last_sequence };
        match start::opening(directory, held) {
            start::Opening::Resume { .. } => {
                self.refuse_if_stale(state.first_sequence).await?;
                self.resumed = true;
                Ok(Vec::new())
            }
            start::Opening::Empty { after } => {
                tracing::info!(stream = %self.stream_id, "a new data directory on an empty input stream");
                tokio::task::block_in_place(|| self.store.adopt_stream(&self.stream_id, after, 0))?;
                Ok(Vec::new())
            }
            start::Opening::Rebuild { first, last } => self.start_rebuild(first, last).await,
            start::Opening::Foreign => {
                let acked = consumer
                    .info()
                    .await
                    .map_err(|e| BusError::nats("reading the input consumer's info", e))?
                    .ack_floor
                    .stream_sequence;
                tracing::warn!(
                    stream = %self.stream_id,
                    remembered = ?self.store.stream_id(),
                    position = acked,
                    "the input stream is not the one this data directory counted in; starting after the consumer's \
                     acknowledged position"
                );
                tokio::task::block_in_place(|| self.store.adopt_stream(&self.stream_id, acked, 0))?;
                Ok(Vec::new())
            }
        }
    }

    /// What the input stream holds now: its first and last positions among the rest.
    pub(super) async fn stream_state(&mut self) -> Result<jetstream::stream::State, BusError> {
        let info = self.input_stream.info().await.map_err(|e| BusError::nats("reading the input stream's info", e))?;
        Ok(info.state.clone())
    }

    /// A directory that counts in the stream, whose missed records expired (the stream starts at
    /// `first`) after another instance folded them, is stale ([`BusError::StaleDirectory`]):
    /// resuming would skip their decisions (see `start::is_stale`).
    pub(super) async fn refuse_if_stale(&self, first: u64) -> Result<(), BusError> {
        let applied = self.store.stream_seq();
        if first <= applied + 1 || self.store.stream_id() != Some(self.stream_id.as_str()) {
            return Ok(());
        }
        // The snapshot a rebuild would restore, not merely the newest description: one that
        // cannot be read back must not send every term into setting its directory aside.
        let newest = snapshot::newest_covers(&self.input_stream, &self.subjects).await?;
        if !start::is_stale(applied, first, newest) {
            return Ok(());
        }
        let usable = snapshot::latest(&self.input_stream, &self.subjects, first).await?.map(|(covers, _)| covers);
        match usable.filter(|_| start::is_stale(applied, first, usable)) {
            Some(covers) => Err(BusError::StaleDirectory { applied, first, covers }),
            None => Ok(()),
        }
    }

    /// Sets a new directory up to be rebuilt from the stream's `first..=last`: from the latest
    /// snapshot record, or else from the first record the stream holds.
    async fn start_rebuild(&mut self, first: u64, last: u64) -> Result<Vec<Pending>, BusError> {
        let started = Instant::now();
        let latest = snapshot::latest(&self.input_stream, &self.subjects, first).await?;
        let read_ms = started.elapsed().as_millis() as u64;
        let plan = start::rebuild_from(first, latest);
        if plan.history_lost {
            tokio::task::block_in_place(|| self.store.set_history_lost(true))?;
        }
        match plan.from {
            start::RebuildFrom::Snapshot { covers, snapshot } => {
                if plan.history_lost {
                    tracing::warn!(
                        covers,
                        first,
                        "records after the latest snapshot expired (input_max_age): the directory is rebuilt without \
                         them"
                    );
                }
                let workspaces = snapshot.workspaces.len();
                let pending = tokio::task::block_in_place(|| {
                    self.store.restore_snapshot(snapshot, &self.stream_id, covers, last)
                })?;
                tracing::info!(
                    stream = %self.stream_id,
                    snapshot_at = covers,
                    workspaces,
                    last,
                    read_ms,
                    restored_ms = started.elapsed().as_millis() as u64 - read_ms,
                    "a new data directory: rebuilding it from the input stream's latest snapshot"
                );
                Ok(pending)
            }
            start::RebuildFrom::First { after } => {
                if plan.history_lost {
                    tracing::warn!(
                        first,
                        "the input stream's records before {first} expired (input_max_age) and it holds no snapshot: \
                         the directory is rebuilt from there, without the history they carried"
                    );
                }
                tracing::info!(stream = %self.stream_id, first, last, "a new data directory: rebuilding it from the input stream");
                tokio::task::block_in_place(|| self.store.adopt_stream(&self.stream_id, after, last))?;
                Ok(Vec::new())
            }
        }
    }

    /// Brings the input consumer level with the data directory: its next delivery is the input
    /// after the last one committed here, nothing counts as delivered and unacknowledged, and its
    /// ack floor is what this directory committed. So the inputs a crashed instance received but
    /// did not commit come again at once (not after the ack wait), and a new data directory —
    /// which starts after the ack floor — never applies again what this one applied.
    /// (`$JS.API.CONSUMER.RESET`, nats-server 2.14; on an older server the undelivered inputs are
    /// read from the stream instead, and the ack floor catches up with the next acknowledgement.)
    pub(super) async fn level_consumer(
        &mut self,
        consumer: &mut jetstream::consumer::PullConsumer,
    ) -> Result<(), BusError> {
        let next = self.store.stream_seq() + 1;
        self.delivered = None;
        match consumer.reset(Some(next)).await {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot reset the input consumer; reading undelivered inputs from the stream");
                let info = consumer.info().await.map_err(|e| BusError::nats("reading the input consumer's info", e))?;
                let delivered = info.delivered.stream_sequence;
                self.catch_up(delivered).await
            }
        }
    }

    /// Applies, in order and in groups, the inputs between the last committed one and `through`.
    pub(super) async fn catch_up(&mut self, through: u64) -> Result<(), BusError> {
        while self.store.stream_seq() < through {
            self.lease.touch();
            let from = self.store.stream_seq() + 1;
            let to = through.min(from + self.cfg.batch_max as u64 - 1);
            let mut inputs = Vec::new();
            self.fill_gap(from..to + 1, &mut inputs).await?;
            self.submit(inputs, Some(to)).await?;
        }
        self.wait_durable().await
    }

    /// The first record of this partition's log at or after stream position `from`.
    pub(super) async fn next_own(&self, from: u64) -> Result<Option<jetstream::message::StreamMessage>, BusError> {
        let mut first: Option<jetstream::message::StreamMessage> = None;
        for filter in self.subjects.partition_filters() {
            match self.input_stream.get_first_raw_message_by_subject(&filter, from).await {
                Ok(m) if first.as_ref().is_none_or(|f| m.sequence < f.sequence) => first = Some(m),
                Ok(_) => {}
                Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {}
                Err(e) => return Err(BusError::nats(format!("reading the input stream's next record of {filter}"), e)),
            }
        }
        Ok(first)
    }

    /// The stream position of this partition's last record, if it has any.
    pub(super) async fn last_own(&self) -> Result<Option<u64>, BusError> {
        let mut last = None;
        for filter in self.subjects.partition_filters() {
            match self.input_stream.get_last_raw_message_by_subject(&filter).await {
                Ok(m) => last = last.max(Some(m.sequence)),
                Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {}
                Err(e) => return Err(BusError::nats(format!("reading the input stream's last record of {filter}"), e)),
            }
        }
        Ok(last)
    }

    /// Reads the input messages with stream sequences in `missing` directly from the stream.
    pub(super) async fn fill_gap(
        &mut self,
        missing: std::ops::Range<u64>,
        inputs: &mut Vec<Input>,
    ) -> Result<(), BusError> {
        // What expired before vigil read it (after an outage longer than the stream's max age) is
        // skipped in one step, not asked for one sequence at a time.
        let first = match self.input_stream.info().await {
            Ok(info) => info.state.first_sequence,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the input stream's first sequence");
                missing.start
            }
        };
        let start = missing.start.max(first.min(missing.end));
        let expired = start - missing.start;
        let missing = start..missing.end;
        if expired > 0 {
            metrics::counter!("vigil_input_gaps_total").increment(expired);
            tracing::warn!(expired, first_in_stream = first, "inputs expired before vigil read them");
        }
        if missing.is_empty() {
            return Ok(());
        }
        tracing::info!(from = missing.start, to = missing.end - 1, "reading undelivered inputs from the stream");
        if self.subjects.part().is_some() {
            // Only the partition's own records, found by subject rather than read one position at
            // a time among every partition's.
            let mut from = missing.start;
            while let Some(m) = self.next_own(from).await?.filter(|m| m.sequence < missing.end) {
                metrics::counter!("vigil_gap_filled_total").increment(1);
                self.accept(&m.subject, &m.payload, m.sequence, stored_at(m.time), inputs);
                from = m.sequence + 1;
            }
            return Ok(());
        }
        for seq in missing {
            let mut attempt = 0;
            loop {
                match self.input_stream.get_raw_message(seq).await {
                    Ok(m) => {
                        metrics::counter!("vigil_gap_filled_total").increment(1);
                        self.accept(&m.subject, &m.payload, seq, stored_at(m.time), inputs);
                        break;
                    }
                    Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {
                        // Expired (max age) or deleted before vigil read it: nothing left to apply.
                        metrics::counter!("vigil_input_gaps_total").increment(1);
                        tracing::warn!(seq, "an input expired or was deleted before vigil read it");
                        break;
                    }
                    Err(e) if attempt < 20 => {
                        attempt += 1;
                        tracing::warn!(seq, error = %e, "reading an input from the stream failed; retrying");
                        tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                    }
                    Err(e) => return Err(BusError::nats(format!("reading input {seq} from the stream"), e)),
                }
            }
        }
        Ok(())
    }
}

/// A stream timestamp (when JetStream stored a message) as the core's time, in milliseconds.
pub(super) fn stored_at(t: async_nats::datetime::DateTime) -> At {
    At(i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX))
}
