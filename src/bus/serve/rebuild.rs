//! A data directory rebuilt from the stream (SPEC §4): the input stream is the log, and a data
//! directory only vigil's copy of it. A new or lost directory on a stream that holds history is
//! never started from nothing: vigil reads the stream from its first record, applies every record
//! with the time and position it was stored at — so the states, the restart counts and every
//! output's id come out as whoever folded those records first had them — and then serves.
//!
//! What those records caused was decided before, and mostly published. While rebuilding, an
//! output goes out only if the output stream does not hold its id (read once from the output
//! stream's headers) and it is not older than the output stream keeps outputs: so a restart the
//! lost directory decided and never published goes out once, and nothing it published goes out
//! twice — even past the output stream's de-duplication window. Bad records are not dead-lettered
//! a second time. A rebuild cut short by a crash is taken up where it stopped (the directory
//! records how far it must go), with the same checks.

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};

use super::follow::Watched;
use super::ingest::stored_at;
use super::*;
use crate::bus::sequencer::Published;

/// How long a rebuild waits for the next records from the stream before it gives up (vigil then
/// exits, and the next start takes the rebuild up where it stopped).
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// A rebuild from the stream under way.
pub(super) struct Rebuild {
    /// The input stream position it must reach.
    pub(super) through: u64,
    /// What the output stream holds.
    published: Published,
    /// Outputs found in the output stream, expired, and published now.
    skipped: u64,
    expired: u64,
    republished: u64,
}

impl Serve {
    /// Starts a rebuild if this directory is to be rebuilt from the stream: reads which outputs the
    /// output stream holds, for the outputs of the records up to the rebuild's end.
    /// `published`: what the output stream holds, if read already.
    pub(super) async fn prepare_rebuild(
        &mut self,
        consumer: &mut jetstream::consumer::PullConsumer,
        published: Option<Published>,
    ) -> Result<(), BusError> {
        let Some(through) = self.store.rebuild_through() else { return Ok(()) };
        let started = Instant::now();
        // The input consumer is not moved while a rebuild runs: its ack floor is what the lost
        // directory (or whoever read the stream before) had read.
        self.read_before = consumer
            .info()
            .await
            .map_err(|e| BusError::nats("reading the input consumer's info", e))?
            .ack_floor
            .stream_sequence;
        let published = match published {
            Some(published) => published,
            None => self.read_published(None).await?,
        };
        if through > self.store.stream_seq() {
            tracing::info!(
                from = self.store.stream_seq() + 1,
                through,
                published = published.ids.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "rebuilding the data directory from the input stream"
            );
        }
        self.rebuild = Some(Rebuild { through, published, skipped: 0, expired: 0, republished: 0 });
        Ok(())
    }

    /// Of durable outputs, those to publish: all of them, unless they were caused by records a
    /// rebuild applies (`stream_seq`: the group's last record; `None` for what the outbox held at
    /// start, which a rebuild cut short may have left). The outbox entries of groups with nothing
    /// left to publish are cleared at once.
    pub(super) fn publishable(
        &mut self,
        stream_seq: Option<u64>,
        outputs: Vec<Pending>,
    ) -> Result<Vec<Pending>, BusError> {
        let Some(r) = self.rebuild.as_mut().filter(|r| stream_seq.is_none_or(|s| s <= r.through)) else {
            return Ok(outputs);
        };
        let sorted = sequencer::sort_rebuilt(&r.published, outputs);
        (r.skipped, r.expired, r.republished) =
            (r.skipped + sorted.already, r.expired + sorted.expired, r.republished + sorted.publish.len() as u64);
        if !sorted.settled.is_empty() {
            tokio::task::block_in_place(|| self.store.ack(&sorted.settled))?;
        }
        Ok(sorted.publish)
    }

    /// Applies the input stream's records up to the rebuild's end, in order and in groups.
    pub(super) async fn run_rebuild(&mut self) -> Result<(), BusError> {
        let Some(through) = self.rebuild.as_ref().map(|r| r.through) else { return Ok(()) };
        let started = Instant::now();
        let from = self.store.stream_seq() + 1;
        if from <= through {
            self.apply_rebuilt(from, through).await?;
        }
        self.rebuilt().await?;
        if let Some(r) = self.rebuild.take() {
            tracing::info!(
                records = (through + 1).saturating_sub(from),
                workspaces = self.store.engine().len(),
                took_ms = started.elapsed().as_millis() as u64,
                already_published = r.skipped,
                expired = r.expired,
                published_now = r.republished,
                "data directory rebuilt from the input stream"
            );
        }
        Ok(())
    }

    /// What an ordered reader of this partition's log filters on (nothing: the whole stream, with
    /// one partition).
    pub(super) fn own_filters(&self) -> Vec<String> {
        match self.subjects.part() {
            Some(_) => self.subjects.partition_filters(),
            None => Vec::new(),
        }
    }

    /// Reads and applies the input stream's records `from..=through` (of this partition).
    async fn apply_rebuilt(&mut self, from: u64, through: u64) -> Result<(), BusError> {
        if self.subjects.part().is_some() {
            // The partition's log may end before `through` (the rest is other partitions'): read
            // to its last record, then stand at `through`.
            let end = self.last_own().await?.unwrap_or(0).min(through);
            if end >= from {
                self.apply_rebuilt_records(from, end).await?;
            }
            if self.store.stream_seq() < through {
                self.submit(Vec::new(), Some(through)).await?;
                self.collect().await?;
            }
            return Ok(());
        }
        self.apply_rebuilt_records(from, through).await
    }

    async fn apply_rebuilt_records(&mut self, from: u64, through: u64) -> Result<(), BusError> {
        let consumer = self
            .input_stream
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: from },
                filter_subjects: self.own_filters(),
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::nats("reading the input stream to rebuild from it", e))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| BusError::nats("reading the input stream to rebuild from it", e))?
            .ready_chunks(self.cfg.batch_max);
        while self.store.stream_seq() < through {
            self.lease.touch();
            let batch = match tokio::time::timeout(STALL_LIMIT, messages.next()).await {
                Ok(Some(batch)) => batch,
                Ok(None) | Err(_) => {
                    let what = format!("the input stream {}, while rebuilding from it,", self.subjects.input_stream());
                    return Err(BusError::Stalled { what, waited: STALL_LIMIT });
                }
            };
            self.apply_records(batch, through, "reading the input stream to rebuild from it").await?;
        }
        Ok(())
    }

    /// Applies a batch of records read in order from the input stream, up to `through`, as one
    /// group: those applied already skipped, each with its stored time and position.
    pub(super) async fn apply_records(
        &mut self,
        batch: Vec<Result<jetstream::Message, async_nats::jetstream::consumer::pull::OrderedError>>,
        through: u64,
        doing: &str,
    ) -> Result<(), BusError> {
        let mut inputs = Vec::with_capacity(batch.len());
        let mut last = self.store.stream_seq();
        for message in batch {
            let message = message.map_err(|e| BusError::nats(doing, e))?;
            let Ok(info) = message.info() else { continue };
            let seq = info.stream_sequence;
            if seq > through {
                // Past the end: `through` itself was deleted or expired meanwhile.
                last = last.max(through);
                continue;
            }
            if seq <= last {
                continue;
            }
            self.accept(&message.subject, &message.payload, seq, stored_at(info.published), &mut inputs);
            last = seq;
        }
        if last > self.store.stream_seq() {
            self.submit(inputs, Some(last)).await?;
            self.collect().await?;
        }
        Ok(())
    }

    /// Records that the directory is level with the rebuild's end (every group it applied is
    /// durable), and puts the configured policy in force: rebuilt from a snapshot, the records
    /// were folded under the snapshot's.
    pub(super) async fn rebuilt(&mut self) -> Result<(), BusError> {
        self.wait_durable().await?;
        tokio::task::block_in_place(|| self.store.finish_rebuild())?;
        let policy = self.policy.clone();
        if let Some(seq) = tokio::task::block_in_place(|| self.store.adopt_policy(policy))? {
            tracing::warn!(
                from_seq = seq,
                "the configured policy differs from the snapshot's; it applies from here on"
            );
        }
        Ok(())
    }

    /// Of `pending` outputs, those the output stream does not hold (and keeps outputs as old as):
    /// the outbox groups left with nothing to publish are cleared at once.
    pub(super) fn unpublished(
        &mut self,
        published: &Published,
        pending: Vec<Pending>,
    ) -> Result<Vec<Pending>, BusError> {
        let sorted = sequencer::sort_rebuilt(published, pending);
        if !sorted.settled.is_empty() {
            tokio::task::block_in_place(|| self.store.ack(&sorted.settled))?;
        }
        Ok(sorted.publish)
    }

    /// What the output stream holds: read from its first message, or from where `watched` (a
    /// follower's reading) stopped, to its last.
    pub(super) async fn read_published(&self, watched: Option<Watched>) -> Result<Published, BusError> {
        let doing = || format!("reading the output stream {}", self.subjects.output_stream());
        let mut stream =
            self.js.get_stream(self.subjects.output_stream()).await.map_err(|e| BusError::nats(doing(), e))?;
        let state = stream.info().await.map_err(|e| BusError::nats(doing(), e))?.state.clone();
        let mut watched = watched.unwrap_or_else(|| Watched::new(&state, self.cfg.output_max_age));
        if state.messages == 0 || state.last_sequence <= watched.seq() {
            return Ok(watched.into_published());
        }
        let consumer = stream
            .create_consumer(OrderedConfig { headers_only: true, deliver_policy: watched.next(), ..Default::default() })
            .await
            .map_err(|e| BusError::nats(doing(), e))?;
        let mut messages = consumer.messages().await.map_err(|e| BusError::nats(doing(), e))?;
        loop {
            let message = match tokio::time::timeout(STALL_LIMIT, messages.next()).await {
                Ok(Some(m)) => m.map_err(|e| BusError::nats(doing(), e))?,
                Ok(None) | Err(_) => {
                    let what = format!(
                        "the output stream {}, while reading which outputs it holds,",
                        self.subjects.output_stream()
                    );
                    return Err(BusError::Stalled { what, waited: STALL_LIMIT });
                }
            };
            let Some(seq) = watched.note(&message) else { continue };
            let pending = message.info().map_or(0, |i| i.pending);
            if pending == 0 || seq >= state.last_sequence {
                return Ok(watched.into_published());
            }
        }
    }

    /// Whether a record at `seq` is being applied a second time by a rebuild: read before by
    /// whoever the input consumer acknowledged it for (and dead-lettered then, if it had to be).
    pub(super) fn rebuilding(&self, seq: u64) -> bool {
        self.rebuild.as_ref().is_some_and(|r| seq <= r.through && seq <= self.read_before)
    }
}
