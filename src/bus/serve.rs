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

/// Deadlines within this many milliseconds of each other fire in one tick.
const TICK_GRANULARITY_MS: i64 = 10;

/// How long shutdown waits for the publisher to confirm what is left (the rest stays in the
/// outbox and is published on the next start).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a shutdown may take, whatever it waits for: past it, vigil exits at once with
/// status 2. Everything it acknowledged is durable by then; only the final checkpoint is skipped,
/// and the next start replays the log tail instead.
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(60);

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
            .map_err(|e| BusError::Nats(format!("opening the store panicked: {e}")))??;
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
        .map_err(|e| BusError::Service(e.to_string()))?;
    let group = service.group(subjects.query_group());
    let state_endpoint = group.endpoint("state.*").await.map_err(|e| BusError::Service(e.to_string()))?;
    let fleet_endpoint = group.endpoint("fleet").await.map_err(|e| BusError::Service(e.to_string()))?;

    let mut input_stream = js
        .get_stream(subjects.input_stream())
        .await
        .map_err(|e| BusError::Declare(format!("stream {}: {e}", subjects.input_stream())))?;
    let created = input_stream.info().await.map_err(|e| BusError::Nats(e.to_string()))?.created;
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

    async fn handle_batch(&mut self, batch: Vec<Result<jetstream::Message, String>>) -> Result<(), BusError> {
        let started = Instant::now();
        let now = self.stamp();
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
            let Ok(seq) = message.info().map(|i| i.stream_sequence) else {
                let subject = HeaderText::escape(&message.subject);
                tracing::warn!(%subject, "a message without JetStream metadata; ignored");
                continue;
            };
            if seq <= last_seq {
                // Redelivered after a lost acknowledgement or a crash: already applied. (Acked by
                // the batch's acknowledgement only if nothing newer is in the batch.)
                metrics::counter!("vigil_redelivered_total").increment(1);
                if last_message.is_none() {
                    last_message = Some(message);
                }
                continue;
            }
            if seq > last_seq + 1 {
                // Messages the consumer delivered elsewhere (to an instance that crashed before
                // committing them, or to a pull request lost with the connection) come back only
                // after the ack wait, out of order, and would be acknowledged by this batch's ack.
                // The stream sequence is the truth: read them from the stream, in order.
                self.fill_gap(last_seq + 1..seq, now, &mut inputs).await?;
            }
            self.accept(&message.subject, &message.payload, seq, now, &mut inputs);
            last_seq = seq;
            last_message = Some(message);
        }
        if last_seq > self.store.stream_seq() {
            self.submit(inputs, Some(last_seq)).await?;
        }
        // Acknowledged once the last group submitted is durable: this batch's, or for a batch of
        // redeliveries only, the one that applied them.
        self.acks.push_back((self.last_ticket, last_message, started));
        self.collect().await
    }

    /// Decodes one input into `inputs`, or dead-letters it.
    fn accept(&mut self, subject: &str, payload: &bytes::Bytes, seq: u64, now: At, inputs: &mut Vec<Input>) {
        let engine = self.store.engine();
        let checked =
            self.intake.decode(subject, payload, now).and_then(|input| self.admission.admit(engine, input, inputs));
        match checked {
            Ok(input) => {
                metrics::counter!("vigil_inputs_total", "type" => input.kind.type_name()).increment(1);
                inputs.push(input);
            }
            Err(rejection) => {
                self.dlq.send(DeadLetter::new(subject, payload, seq, rejection, self.cfg.max_payload));
            }
        }
    }

    /// Makes sure the stored stream position counts in this input stream. A data directory that
    /// has never seen it (new directory, or the stream was deleted and recreated) starts after the
    /// position the consumer has acknowledged: never re-applying what an earlier instance handled,
    /// never skipping what nobody did.
    async fn adopt_input_stream(&mut self, consumer: &mut jetstream::consumer::PullConsumer) -> Result<(), BusError> {
        if self.store.stream_id() == Some(self.stream_id.as_str()) {
            return Ok(());
        }
        let acked = consumer.info().await.map_err(|e| BusError::Nats(e.to_string()))?.ack_floor.stream_sequence;
        let remembered = self.store.stream_id();
        if remembered.is_none() && self.store.engine().seq() == 0 {
            // A new data directory: nothing to warn about.
            tracing::info!(stream = %self.stream_id, position = acked, "counting in the input stream");
        } else {
            tracing::warn!(
                stream = %self.stream_id,
                ?remembered,
                position = acked,
                "the input stream is not the one this data directory counted in; starting after the consumer's \
                 acknowledged position"
            );
        }
        tokio::task::block_in_place(|| self.store.adopt_stream(&self.stream_id, acked))?;
        Ok(())
    }

    /// Brings the input consumer level with the data directory: its next delivery is the input
    /// after the last one committed here, nothing counts as delivered and unacknowledged, and its
    /// ack floor is what this directory committed. So the inputs a crashed instance received but
    /// did not commit come again at once (not after the ack wait), and a new data directory —
    /// which starts after the ack floor — never applies again what this one applied.
    /// (`$JS.API.CONSUMER.RESET`, nats-server 2.14; on an older server the undelivered inputs are
    /// read from the stream instead, and the ack floor catches up with the next acknowledgement.)
    async fn level_consumer(&mut self, consumer: &mut jetstream::consumer::PullConsumer) -> Result<(), BusError> {
        let next = self.store.stream_seq() + 1;
        match consumer.reset(Some(next)).await {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot reset the input consumer; reading undelivered inputs from the stream");
                let info = consumer.info().await.map_err(|e| BusError::Nats(e.to_string()))?;
                let delivered = info.delivered.stream_sequence;
                self.catch_up(delivered).await
            }
        }
    }

    /// Applies, in order and in groups, the inputs between the last committed one and `through`.
    async fn catch_up(&mut self, through: u64) -> Result<(), BusError> {
        while self.store.stream_seq() < through {
            let from = self.store.stream_seq() + 1;
            let to = through.min(from + self.cfg.batch_max as u64 - 1);
            let mut inputs = Vec::new();
            let now = self.stamp();
            self.fill_gap(from..to + 1, now, &mut inputs).await?;
            self.submit(inputs, Some(to)).await?;
        }
        self.wait_durable().await
    }

    /// Reads the input messages with stream sequences in `missing` directly from the stream.
    async fn fill_gap(
        &mut self,
        missing: std::ops::Range<u64>,
        now: At,
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
        for seq in missing {
            let mut attempt = 0;
            loop {
                match self.input_stream.get_raw_message(seq).await {
                    Ok(m) => {
                        metrics::counter!("vigil_gap_filled_total").increment(1);
                        self.accept(&m.subject, &m.payload, seq, now, inputs);
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
                    Err(e) => return Err(BusError::Nats(format!("reading input {seq} from the stream: {e}"))),
                }
            }
        }
        Ok(())
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
                return Err(BusError::Nats("the output publisher stopped".into()));
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

    /// Stops: lets the publisher confirm what it can, clears that from the outbox, checkpoints.
    async fn shutdown(
        mut self,
        publisher: tokio::task::JoinHandle<()>,
        dlq_task: tokio::task::JoinHandle<()>,
        mut confirmed: mpsc::UnboundedReceiver<Vec<OutboxKey>>,
        result: Result<(), BusError>,
    ) -> Result<(), BusError> {
        tracing::info!("shutting down");
        if let Err(e) = &result {
            tracing::error!(error = %e, "stopping after an error");
        }
        watchdog(fault::shutdown_limit(SHUTDOWN_LIMIT));
        fault::stall_shutdown().await;
        // Groups still in flight: once durable, their messages are acknowledged and their outputs
        // go to the publisher like any others.
        let result = match self.wait_durable().await {
            Ok(()) => result,
            Err(e) => result.and(Err(e)),
        };
        let Serve { mut store, outbox, dlq, .. } = self;
        drop(outbox); // the publisher finishes what it has, then stops
        drop(dlq); // so does the DLQ task
        let (published, dead_lettered) =
            tokio::join!(tokio::time::timeout(DRAIN_TIMEOUT, publisher), tokio::time::timeout(DRAIN_TIMEOUT, dlq_task));
        if published.is_err() {
            tracing::warn!("outputs still unconfirmed at shutdown stay in the outbox for the next start");
        }
        if dead_lettered.is_err() {
            tracing::warn!("rejections not yet in the DLQ at shutdown are only in the logs and metrics");
        }
        while let Ok(keys) = confirmed.try_recv() {
            tokio::task::block_in_place(|| store.ack(&keys))?;
        }
        let closed = tokio::task::block_in_place(|| store.close());
        result?;
        closed?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// 128 bits from the operating system's random source.
fn new_id_key() -> Result<IdKey, BusError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| BusError::Config(format!("no random source for the id key: {e}")))?;
    Ok(IdKey::from_bytes(bytes))
}

/// Exits the process with status 2 if it is still running `limit` from now: a shutdown must end
/// even if something it waits for never does (a NATS server that stopped answering, a disk that
/// stopped writing).
pub fn watchdog(limit: Duration) {
    let spawned = std::thread::Builder::new().name("vigil-shutdown-watchdog".into()).spawn(move || {
        std::thread::sleep(limit);
        eprintln!("vigil: the shutdown did not finish within {limit:?}; exiting now");
        std::process::exit(2);
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the shutdown watchdog");
    }
}

/// Input messages in batches of whatever is ready.
type MessageBatches = std::pin::Pin<Box<dyn futures::Stream<Item = Vec<Result<jetstream::Message, String>>> + Send>>;
