//! `vigil serve`: the loop that connects NATS, the store and the engine.
//!
//! One task owns the store (and so the engine); everything that touches them happens here, in
//! order, so there are no locks and the log order is the apply order:
//!
//! - a batch of input messages: decode (bad ones to the DLQ) and submit one group commit; the
//!   store's writer thread flushes it while the loop goes on with the next batch;
//! - the store reports groups durable: only now is each batch acknowledged (one acknowledgement
//!   per batch: the consumer acknowledges everything up to it) and are its outputs handed to the
//!   publisher;
//! - a deadline reached with no input: a `tick` is committed, so the log replays with the same
//!   timing;
//! - the publisher confirmed outputs: they leave the outbox;
//! - a query: answered from the engine;
//! - shutdown: stop fetching, let the publisher drain, checkpoint, return.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::service::ServiceExt;
use futures::StreamExt;
use tokio::sync::{Notify, mpsc};

use crate::bus::admission::Admission;
use crate::bus::dlq::{DeadLetter, Dlq};
use crate::bus::headers::HeaderText;
use crate::bus::intake::Intake;
use crate::bus::publisher::Released;
use crate::bus::subjects::Subjects;
use crate::bus::{BusError, connect, dlq, fault, publisher, queries};
use crate::config::ServeConfig;
use crate::core::event::{Input, InputKind, OutputBody, Resume, StateName};
use crate::core::ids::IdKey;
use crate::core::{At, Policy};
use crate::store::{Committed, OpenMode, OutboxKey, Store, StoreConfig};
use vigil_client::wall_clock;

mod ingest;
mod shutdown;

pub use shutdown::{SHUTDOWN_LIMIT, watchdog};

/// Deadlines within this many milliseconds of each other fire in one tick.
const TICK_GRANULARITY_MS: i64 = 10;

/// Runs the service until `shutdown` completes or a fatal error occurs.
pub async fn run(cfg: ServeConfig, policy: Policy, shutdown: impl Future<Output = ()>) -> Result<(), BusError> {
    let subjects = Subjects::new(&cfg.prefix);
    let client = connect::connect(&cfg, "vigil").await?;
    let js = jetstream::new(client.clone());
    let mut consumer = connect::declare(&js, &subjects, &cfg).await?;

    let store_config = StoreConfig { checkpoint_every: cfg.checkpoint_every, ..StoreConfig::default() };
    let data_dir = cfg.data_dir.clone();
    let (mut store, recovery) =
        tokio::task::spawn_blocking(move || Store::open(&data_dir, policy, store_config, OpenMode::CreateIfMissing))
            .await
            .map_err(|source| BusError::Panicked { what: "opening the store", source })??;
    // The store's writer thread wakes the loop when a group is durable.
    let durable = Arc::new(Notify::new());
    let wake = durable.clone();
    store.set_wake(Box::new(move || wake.notify_one()))?;
    for repair in &recovery.repairs {
        tracing::warn!(data_dir = %cfg.data_dir.display(), "{repair}");
    }
    if let Some(seq) = recovery.policy_changed_at {
        tracing::warn!(
            from_seq = seq,
            "the policy differs from the one this data directory ran under: the log was recovered under the old \
             one and checkpointed; the new one applies from here on"
        );
    }
    tracing::info!(
        data_dir = %cfg.data_dir.display(),
        workspaces = store.engine().len(),
        log_seq = store.engine().seq(),
        checkpoint = recovery.checkpoint_seq,
        replayed = recovery.replayed,
        unconfirmed = recovery.pending.len(),
        "store recovered"
    );

    // Unbounded: the outputs are durable in the outbox anyway, and the loop must never block on
    // a publisher stuck behind a NATS outage (it would stop answering queries and SIGTERM).
    let (outbox, outbox_rx) = mpsc::unbounded_channel::<Released>();
    let (confirmed_tx, mut confirmed) = mpsc::unbounded_channel();
    let publisher = tokio::spawn(publisher::run(js.clone(), subjects.clone(), outbox_rx, confirmed_tx));
    if !recovery.pending.is_empty() {
        let _ = outbox.send(Released::now(recovery.pending));
    }

    let service = client
        .service_builder()
        .description("vigil: liveness and restart decisions for agent workspaces")
        .start("vigil", env!("CARGO_PKG_VERSION"))
        .await
        .map_err(BusError::Service)?;
    let group = service.group(subjects.query_group());
    let state_endpoint = group.endpoint("state.*").await.map_err(BusError::Service)?;
    let fleet_endpoint = group.endpoint("fleet").await.map_err(BusError::Service)?;

    let mut input_stream = js
        .get_stream(subjects.input_stream())
        .await
        .map_err(|e| BusError::Declare { what: format!("stream {}", subjects.input_stream()), source: e.into() })?;
    let created = input_stream.info().await.map_err(|e| BusError::nats("reading the input stream's info", e))?.created;
    let stream_id = format!("{}@{}", subjects.input_stream(), created.unix_timestamp_nanos());
    let (dlq, dlq_task) =
        Dlq::start(dlq::Target { js: js.clone(), subject: subjects.dlq(), stream_id: stream_id.clone() });
    let mut serve = Serve {
        intake: Intake::new(subjects.clone(), cfg.max_payload),
        dlq,
        admission: Admission::new(cfg.max_workspaces),
        cfg,
        subjects,
        input_stream,
        stream_id,
        store,
        outbox,
        durable,
        acks: VecDeque::new(),
        last_ticket: 0,
        durable_ticket: 0,
        last_stamp: At(i64::MIN),
        last_checkpoint: Instant::now(),
    };
    // vigil was away: every deadline gets full grace from now (SPEC §1 `resume`).
    // It carries the directory's id key (a new one for a new directory), so output ids are
    // unguessable and never repeat those of a lost directory (`core::ids`).
    let id_key = match serve.store.engine().id_key() {
        Some(key) => key,
        None => new_id_key()?,
    };
    let resume =
        Input { at: serve.stamp(), sent_at: None, id: None, kind: InputKind::Resume(Resume { id_key: Some(id_key) }) };
    serve.adopt_input_stream(&mut consumer).await?;
    serve.submit(vec![resume], None).await?;
    serve.level_consumer(&mut consumer).await?;
    tracing::info!(prefix = serve.subjects.prefix(), "serving");

    let result = serve.run_loop(&consumer, state_endpoint, fleet_endpoint, &mut confirmed, shutdown).await;
    serve.shutdown(publisher, dlq_task, confirmed, result).await
}

struct Serve {
    cfg: ServeConfig,
    /// What an input must be; what fails goes to `dlq`.
    intake: Intake,
    dlq: Dlq,
    /// The cap on tracked workspaces.
    admission: Admission,
    subjects: Subjects,
    /// The input stream, for reading messages the consumer did not deliver in order.
    input_stream: jetstream::stream::Stream,
    /// Its identity (name and creation time): stream sequences only mean something within it.
    stream_id: String,
    store: Store,
    outbox: mpsc::UnboundedSender<Released>,
    /// Notified by the store's writer thread when a group is durable.
    durable: Arc<Notify>,
    /// Input messages whose acknowledgement waits for a group to be durable, with that group's
    /// ticket and when the batch arrived (for the batch latency metric).
    acks: VecDeque<(u64, Option<jetstream::Message>, Instant)>,
    /// The ticket of the last group submitted, and of the last one durable.
    last_ticket: u64,
    durable_ticket: u64,
    last_stamp: At,
    last_checkpoint: Instant,
}

impl Serve {
    /// The receive time for what arrives now; never earlier than the last one given out.
    fn stamp(&mut self) -> At {
        self.last_stamp = self.last_stamp.max(wall_clock());
        self.last_stamp
    }

    async fn run_loop(
        &mut self,
        consumer: &jetstream::consumer::PullConsumer,
        mut state_endpoint: async_nats::service::endpoint::Endpoint,
        mut fleet_endpoint: async_nats::service::endpoint::Endpoint,
        confirmed: &mut mpsc::UnboundedReceiver<Vec<OutboxKey>>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), BusError> {
        tokio::pin!(shutdown);
        let mut messages = self.pull(consumer).await;
        loop {
            let wake = self.next_wake();
            tokio::select! {
                biased;
                _ = &mut shutdown => return Ok(()),
                _ = self.durable.notified() => self.collect().await?,
                Some(keys) = confirmed.recv() => {
                    tokio::task::block_in_place(|| self.store.ack(&keys))?;
                }
                batch = messages.next() => match batch {
                    Some(mut batch) => {
                        self.fill_batch(&mut messages, &mut batch).await;
                        self.handle_batch(batch).await?
                    }
                    None => messages = self.pull(consumer).await,
                },
                Some(request) = state_endpoint.next() => {
                    let answer = queries::state(self.store.engine(), &request);
                    if let Err(e) = request.respond(answer).await {
                        tracing::warn!(error = %e, "answering a state query failed");
                    }
                }
                Some(request) = fleet_endpoint.next() => {
                    let answer = queries::fleet(self.store.engine(), self.store.durable_stream_seq());
                    if let Err(e) = request.respond(answer).await {
                        tracing::warn!(error = %e, "answering a fleet query failed");
                    }
                }
                _ = tokio::time::sleep_until(wake) => self.on_clock().await?,
            }
        }
    }

    /// The input messages, in batches of whatever is ready (at most `batch_max`).
    async fn pull(&self, consumer: &jetstream::consumer::PullConsumer) -> MessageBatches {
        let stream = consumer
            .stream()
            .max_messages_per_batch(self.cfg.batch_max)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await;
        match stream {
            Ok(stream) => stream.map(|m| m.map_err(|e| e.to_string())).ready_chunks(self.cfg.batch_max).boxed(),
            Err(e) => {
                // A stream that ends after a pause: the loop stays responsive (queries, ticks,
                // SIGTERM) and pulls again when it ends.
                tracing::warn!(error = %e, "cannot pull from the input consumer; retrying");
                futures::stream::once(tokio::time::sleep(Duration::from_secs(1))).filter_map(|_| async { None }).boxed()
            }
        }
    }

    /// Grows a batch with what arrives within `batch_wait` (up to `batch_max`): under load, bigger
    /// groups mean fewer flushes; when idle, an event waits at most `batch_wait` longer.
    async fn fill_batch(&self, messages: &mut MessageBatches, batch: &mut Vec<Result<jetstream::Message, String>>) {
        let until = tokio::time::Instant::now() + self.cfg.batch_wait;
        while batch.len() < self.cfg.batch_max {
            match tokio::time::timeout_at(until, messages.next()).await {
                Ok(Some(more)) => batch.extend(more),
                Ok(None) | Err(_) => break,
            }
        }
    }

    /// When the loop must wake up on its own: the engine's next deadline, or a checkpoint.
    fn next_wake(&mut self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let checkpoint = now + self.cfg.checkpoint_interval.saturating_sub(self.last_checkpoint.elapsed());
        let deadline = self.store.next_deadline().map(|d| {
            // Deadlines close together share one tick.
            let wait = d.millis().saturating_sub(wall_clock().millis()).max(TICK_GRANULARITY_MS) as u64;
            now + Duration::from_millis(wait)
        });
        deadline.map_or(checkpoint, |d| d.min(checkpoint))
    }

    /// A deadline may be due with nothing else arriving: commit a tick so that it fires (and the
    /// log says when). Also checkpoints, and drops log segments past retention, on schedule.
    async fn on_clock(&mut self) -> Result<(), BusError> {
        let now = self.stamp();
        if self.store.next_deadline().is_some_and(|d| d <= now) {
            let tick = Input { at: now, sent_at: None, id: None, kind: InputKind::Tick };
            self.submit(vec![tick], None).await?;
        }
        if self.last_checkpoint.elapsed() >= self.cfg.checkpoint_interval {
            let keep_after = At(now.millis().saturating_sub(self.cfg.log_retention.as_millis() as i64));
            tokio::task::block_in_place(|| -> Result<(), BusError> {
                self.store.checkpoint()?;
                let dropped = self.store.compact(keep_after)?;
                if dropped > 0 {
                    tracing::info!(dropped, first_seq = self.store.first_seq(), "log entries past retention dropped");
                }
                Ok(())
            })?;
            self.last_checkpoint = Instant::now();
        }
        // A checkpoint waits for the groups in flight; release them now rather than at the next
        // wake-up.
        self.collect().await
    }

    /// Applies one group and hands it to the store's writer thread; [`Serve::collect`] takes it
    /// from there once it is durable.
    async fn submit(&mut self, inputs: Vec<Input>, stream_seq: Option<u64>) -> Result<(), BusError> {
        self.last_ticket = tokio::task::block_in_place(|| self.store.submit(&inputs, stream_seq))?;
        self.admission.group_applied();
        self.record_gauges();
        Ok(())
    }

    /// Takes the groups the store made durable: their outputs go to the publisher, and the input
    /// messages waiting for them are acknowledged.
    async fn collect(&mut self) -> Result<(), BusError> {
        let durable = tokio::task::block_in_place(|| self.store.poll_durable())?;
        self.release(durable).await
    }

    /// Waits until every submitted group is durable, then releases them as [`Serve::collect`] does.
    async fn wait_durable(&mut self) -> Result<(), BusError> {
        let durable = tokio::task::block_in_place(|| self.store.wait_durable())?;
        self.release(durable).await
    }

    async fn release(&mut self, durable: Vec<Committed>) -> Result<(), BusError> {
        for committed in durable {
            fault::after_commit();
            self.durable_ticket = committed.ticket;
            for p in &committed.outputs {
                metrics::counter!("vigil_outputs_total", "type" => p.output.body.type_name()).increment(1);
                if let OutputBody::Suppressed { reason, .. } = p.output.body {
                    metrics::counter!("vigil_suppressed_total", "reason" => reason.as_str()).increment(1);
                }
            }
            if !committed.outputs.is_empty() && self.outbox.send(Released::now(committed.outputs)).is_err() {
                return Err(BusError::Stopped("the output publisher"));
            }
        }
        while self.acks.front().is_some_and(|(ticket, _, _)| *ticket <= self.durable_ticket) {
            let Some((_, message, started)) = self.acks.pop_front() else { break };
            if let Some(message) = message
                && let Err(e) = message.ack().await
            {
                // Harmless: the messages come again and are recognised by their stream sequence.
                tracing::warn!(error = %e, "acknowledging a batch failed");
            }
            metrics::histogram!("vigil_batch_seconds").record(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    fn record_gauges(&self) {
        let fleet = self.store.engine().fleet_view();
        for (state, n) in [
            (StateName::Alive, fleet.alive),
            (StateName::Suspect, fleet.suspect),
            (StateName::Restarting, fleet.restarting),
            (StateName::Dead, fleet.dead),
            (StateName::Parked, fleet.parked),
        ] {
            metrics::gauge!("vigil_workspaces", "state" => state.as_str()).set(f64::from(n));
        }
        metrics::gauge!("vigil_breaker_open").set(if fleet.breaker_open { 1.0 } else { 0.0 });
        metrics::gauge!("vigil_restarts_in_flight").set(f64::from(fleet.restarts_in_flight));
    }
}

/// 128 bits from the operating system's random source.
fn new_id_key() -> Result<IdKey, BusError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(BusError::Random)?;
    Ok(IdKey::from_bytes(bytes))
}

/// Input messages in batches of whatever is ready.
type MessageBatches = std::pin::Pin<Box<dyn futures::Stream<Item = Vec<Result<jetstream::Message, String>>> + Send>>;
