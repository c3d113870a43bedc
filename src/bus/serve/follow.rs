//! A standby follows the log (SPEC §4 "Ownership"). While another instance owns it, this one
//! folds the same records into its own directory: the same intake, the same admission, the same
//! engine, with each record's stored time and position. So its state is the owner's and its next
//! output ids are the owner's. It publishes nothing, dead-letters nothing and appends nothing.
//!
//! What the records cause waits in its outbox until the output stream shows it published: the
//! owner publishes it under the same id, and a watcher on the output stream reads the ids (headers
//! only). When the lease comes to this instance, it is level with the log but for the last few
//! records. What the old owner decided and never published — a restart it decided just before
//! it crashed — is still in this outbox and goes out once. So a takeover needs no replay and no
//! second read of the output stream.

use std::collections::VecDeque;

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};

use super::ingest::stored_at;
use super::*;
use crate::bus::sequencer::Published;

/// How often a follower checks its outbox against what it has seen published, and whether a
/// checkpoint is due.
const SETTLE_EVERY: Duration = Duration::from_millis(250);

/// How much earlier than the last record a follower applied an output must have been stored for
/// its id to be forgotten: its cause was applied (and its outbox checked) by then, whatever the
/// skew between the clocks of the servers that lead the two streams.
const DECIDED_MARGIN: Duration = Duration::from_secs(60);

/// A follower's state besides its directory.
pub(super) struct Following {
    watched: Watched,
    /// Outputs decided and not yet seen in the output stream (or older than it keeps outputs).
    pending: Vec<Pending>,
    /// The stored time of the last record applied.
    applied_at: At,
    /// How many of the log's records the stream held past the last one applied, when it was read.
    behind: u64,
}

impl Following {
    /// What a follower decided has been published, for a later check or publish.
    pub(super) fn decided(&mut self, outputs: Vec<Pending>) {
        self.pending.extend(outputs);
    }

    /// What the output stream showed, and what is still unconfirmed.
    pub(super) fn into_parts(self) -> (Option<Watched>, Vec<Pending>) {
        (Some(self.watched), self.pending)
    }
}

/// What a reader of the output stream has seen of it: the `Nats-Msg-Id` of every output, up to
/// which position, and (to forget them again) when each was stored.
pub(super) struct Watched {
    published: Published,
    stored: VecDeque<(At, String)>,
    seq: u64,
    max_age: Duration,
}

impl Watched {
    /// Nothing read yet, of an output stream in `state`: it keeps outputs from its oldest
    /// message's time, or, empty, from `max_age` ago.
    pub(super) fn new(state: &jetstream::stream::State, max_age: Duration) -> Watched {
        let horizon = At(wall_clock().millis().saturating_sub(max_age.as_millis() as i64));
        let kept_since = if state.messages == 0 { horizon } else { stored_at(state.first_timestamp).max(horizon) };
        let published = Published { ids: Default::default(), kept_since };
        Watched { published, stored: VecDeque::new(), seq: 0, max_age }
    }

    /// The last position read.
    pub(super) fn seq(&self) -> u64 {
        self.seq
    }

    /// Where reading goes on.
    pub(super) fn next(&self) -> DeliverPolicy {
        match self.seq {
            0 => DeliverPolicy::All,
            seq => DeliverPolicy::ByStartSequence { start_sequence: seq + 1 },
        }
    }

    /// Notes an output read from the stream; returns its position (`None` without metadata).
    pub(super) fn note(&mut self, message: &jetstream::Message) -> Option<u64> {
        let info = message.info().ok()?;
        let seq = info.stream_sequence;
        if seq <= self.seq {
            return None;
        }
        self.seq = seq;
        if let Some(id) = message.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")) {
            let id = id.to_string();
            self.stored.push_back((stored_at(info.published), id.clone()));
            self.published.ids.insert(id);
        }
        Some(seq)
    }

    /// Forgets the outputs older than the stream keeps: an output decided that long ago counts as
    /// expired whether it was published or not (see [`sequencer::sort_rebuilt`]).
    fn forget_expired(&mut self) {
        let horizon = At(wall_clock().millis().saturating_sub(self.max_age.as_millis() as i64));
        self.published.kept_since = self.published.kept_since.max(horizon);
        let kept_since = self.published.kept_since;
        self.forget_before(kept_since);
    }

    /// Forgets the ids of outputs the stream stored before `before`.
    fn forget_before(&mut self, before: At) {
        while let Some((at, _)) = self.stored.front()
            && *at < before
        {
            let (_, id) = self.stored.pop_front().expect("looked at the front");
            self.published.ids.remove(&id);
        }
    }

    pub(super) fn into_published(self) -> Published {
        self.published
    }
}

/// How following the log ended.
pub(super) enum Followed {
    /// This instance took the lease (its follower's state is in `Serve::following`).
    Lease(Box<Lease>),
    /// The stop signal came.
    Stopped,
    /// Another instance is to follow the partition instead (one joined, preferred before this
    /// one): what was decided and not yet seen published, still to be checked.
    Dismissed(Vec<Pending>),
}

impl Serve {
    /// Follows the log until `acquire` takes the lease, the stop signal inside it completes, or
    /// this instance is no longer one of the partition's standbys. `pending`: what the outbox
    /// held, still to be checked against the output stream.
    pub(super) async fn follow(
        &mut self,
        acquire: impl Future<Output = Result<Option<Lease>, BusError>>,
        pending: Vec<Pending>,
    ) -> Result<Followed, BusError> {
        let doing = |what: &str| format!("following the {what} stream as a standby");
        let mut output_stream =
            self.js.get_stream(self.subjects.output_stream()).await.map_err(|e| BusError::nats(doing("output"), e))?;
        let state = output_stream.info().await.map_err(|e| BusError::nats(doing("output"), e))?.state.clone();
        let watched = Watched::new(&state, self.cfg.output_max_age);
        let mut outputs = output_stream
            .create_consumer(OrderedConfig { headers_only: true, deliver_policy: watched.next(), ..Default::default() })
            .await
            .map_err(|e| BusError::nats(doing("output"), e))?
            .messages()
            .await
            .map_err(|e| BusError::nats(doing("output"), e))?
            .ready_chunks(self.cfg.batch_max);
        let from = self.store.stream_seq() + 1;
        let mut inputs = self
            .input_stream
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: from },
                filter_subjects: self.own_filters(),
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::nats(doing("input"), e))?
            .messages()
            .await
            .map_err(|e| BusError::nats(doing("input"), e))?
            .ready_chunks(self.cfg.batch_max);
        // While the partition has no owner, one standby answers its state queries from its copy.
        let index = self.subjects.partition_index();
        let mut queries = self
            .js
            .client()
            .queue_subscribe(self.subjects.standby_query(index, "state.*"), format!("vigil-standby-{index}"))
            .await
            .map_err(|e| BusError::nats("subscribing to the standby's queries", e))?;
        self.following = Some(Following { watched, pending, applied_at: At(i64::MIN), behind: 0 });
        tracing::info!(from, "standby: following the log");
        let mut settle = tokio::time::interval(SETTLE_EVERY);
        tokio::pin!(acquire);
        loop {
            tokio::select! {
                biased;
                lease = &mut acquire => return Ok(lease?.map_or(Followed::Stopped, |lease| Followed::Lease(Box::new(lease)))),
                _ = self.durable.notified() => self.collect().await?,
                batch = inputs.next() => {
                    let batch = batch.ok_or(BusError::StreamEnded("the input stream, followed as a standby,"))?;
                    self.apply_followed(batch).await?;
                }
                batch = outputs.next() => {
                    let batch = batch.ok_or(BusError::StreamEnded("the output stream, watched as a standby,"))?;
                    self.note_published(batch)?;
                }
                Some(query) = queries.next() => self.answer_as_standby(query).await,
                _ = settle.tick() => {
                    self.settle_followed()?;
                    self.checkpoint_if_due()?;
                    if !self.membership.follows(index, self.cfg.standbys) {
                        let following = self.following.take().expect("a follower's state while it follows");
                        return Ok(Followed::Dismissed(following.pending));
                    }
                }
            }
        }
    }

    /// Answers a state query from this standby's copy, saying how far behind the log it is.
    async fn answer_as_standby(&mut self, query: async_nats::Message) {
        let Some(reply) = query.reply.clone() else { return };
        let ws = query.subject.rsplit('.').next().unwrap_or_default();
        let behind = self.following.as_ref().map_or(0, |f| f.behind);
        let answer = super::queries::state(self.store.engine(), ws)
            .map(|body| crate::bus::api::served_by(body, &self.holder.instance, Some(behind)));
        let (headers, body) = crate::bus::api::encode(answer);
        if let Err(e) = self.js.client().publish_with_headers(reply, headers, body).await {
            tracing::warn!(error = %e, "answering a query as a standby failed");
        }
    }

    /// Applies a batch of the log's records, as the owner applied them.
    async fn apply_followed(
        &mut self,
        batch: Vec<Result<jetstream::Message, async_nats::jetstream::consumer::pull::OrderedError>>,
    ) -> Result<(), BusError> {
        let last_stored = batch.iter().rev().find_map(|m| Some(stored_at(m.as_ref().ok()?.info().ok()?.published)));
        let behind = batch.iter().rev().find_map(|m| Some(m.as_ref().ok()?.info().ok()?.pending));
        self.apply_records(batch, u64::MAX, "following the input stream as a standby").await?;
        if let (Some(following), Some(at)) = (self.following.as_mut(), last_stored) {
            following.applied_at = following.applied_at.max(at);
            following.behind = behind.unwrap_or(following.behind);
        }
        // A new directory, restored from a snapshot record or started from the first record, is
        // rebuilt by following: level with where the rebuild had to go, it is an ordinary copy.
        if self.store.rebuild_through().is_some_and(|through| self.store.stream_seq() >= through) {
            self.rebuilt().await?;
            tracing::info!(log_seq = self.store.stream_seq(), "standby: the data directory is rebuilt from the stream");
        }
        Ok(())
    }

    /// Notes the outputs the output stream now holds.
    fn note_published(
        &mut self,
        batch: Vec<Result<jetstream::Message, async_nats::jetstream::consumer::pull::OrderedError>>,
    ) -> Result<(), BusError> {
        let Some(following) = self.following.as_mut() else { return Ok(()) };
        for message in batch {
            let message = message.map_err(|e| BusError::nats("following the output stream as a standby", e))?;
            following.watched.note(&message);
        }
        Ok(())
    }

    /// Clears from the outbox what the output stream has shown published (or no longer keeps).
    fn settle_followed(&mut self) -> Result<(), BusError> {
        let Some(following) = self.following.as_mut() else { return Ok(()) };
        following.watched.forget_expired();
        let pending = std::mem::take(&mut following.pending);
        let sorted = sequencer::sort_rebuilt(&following.watched.published, pending);
        following.pending = sorted.publish;
        // An output stored well before the last record applied was caused by a record applied
        // already: it was just checked against the outbox, and is not needed again. So a follower
        // keeps the ids of the outputs it is behind on, not a week of them.
        let decided = At(following.applied_at.millis().saturating_sub(DECIDED_MARGIN.as_millis() as i64));
        following.watched.forget_before(decided);
        if !sorted.settled.is_empty() {
            tokio::task::block_in_place(|| self.store.ack(&sorted.settled))?;
        }
        Ok(())
    }
}
