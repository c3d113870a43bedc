//! `vigil serve`: the loop that connects NATS, the store and the engine.
//!
//! One task owns the store (and so the engine); everything that touches them happens here, in
//! order, so there are no locks and the log order is the apply order:
//!
//! - a batch of input messages: decode (bad ones to the DLQ), apply one group and hand it to the
//!   store's writer thread, which flushes it while the loop goes on; the batch is acknowledged
//!   (one acknowledgement: the consumer acknowledges everything up to it) and the group's outputs
//!   go to the publisher at once — the records are durable in the input stream, which is the log,
//!   and the local copy catches up (SPEC §4);
//! - the store reports groups durable: their outputs stand in the outbox from then on;
//! - a deadline reached, or nothing read for `tick_every`: a `tick` is appended to the input
//!   stream, and applied when it comes back like any input (SPEC §1 "time": every record's time
//!   is the time the stream stored it, and the stream shows when it was watched);
//! - the publisher confirmed outputs: they leave the outbox;
//! - a query: answered from the engine;
//! - shutdown: stop fetching, let the publisher drain, checkpoint, return.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::{FutureExt, StreamExt};
use tokio::sync::{Notify, mpsc};

use crate::bus::admission::Admission;
use crate::bus::dlq::{DeadLetter, Dlq};
use crate::bus::fault::wall_clock;
use crate::bus::headers::HeaderText;
use crate::bus::intake::Intake;
use crate::bus::ownership::{self, AppendError, Fence, Holder, Lease, LeaseView};
use crate::bus::placement::Membership;
use crate::bus::publisher::Released;
use crate::bus::sequencer::{self, Ticks, start};
use crate::bus::subjects::Subjects;
use crate::bus::{BusError, connect, dlq, fault, publisher, queries};
use crate::config::ServeConfig;
use crate::core::event::{Input, InputKind, OutputBody, Partition, Resume, StateName};
use crate::core::ids::IdKey;
use crate::core::wire;
use crate::core::{At, Policy};
use crate::store::{OpenMode, OutboxKey, Pending, Store, StoreConfig};

mod append;
mod declare;
mod epoch;
mod follow;
mod ingest;
mod rebuild;
mod shutdown;
mod snapshot;
mod term;

pub use shutdown::{SHUTDOWN_LIMIT, watchdog};

/// How many times (a second apart) declaring the streams is retried at start.
const DECLARE_ATTEMPTS: u32 = 30;

/// How often an owner looks at whether another instance should own its partition.
const REBALANCE_EVERY: Duration = Duration::from_secs(1);

/// How long an append of vigil's own record waits for the stream's confirmation.
const APPEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the service until `shutdown` completes or a fatal error occurs: the services API (see
/// [`crate::bus::api`]), and for each partition, a term after term (see [`term`]) — waiting as a
/// standby while another instance owns the partition's log, serving while this one does, and
/// going back to waiting if it loses it.
pub async fn run(mut cfg: ServeConfig, policy: Policy, shutdown: impl Future<Output = ()>) -> Result<(), BusError> {
    let subjects = Subjects::new(&cfg.prefix);
    let client = connect::connect(&cfg, "vigil").await?;
    let js = jetstream::new(client.clone());
    // A cluster that has just started (or lost a node) answers JetStream requests only once its
    // streams have leaders: declaring is retried for a while before vigil gives up.
    let mut attempt = 0;
    let buckets = loop {
        let declared = match resolve_partitions(&js, &subjects, &mut cfg).await {
            Ok(()) => connect::declare_streams(&js, &subjects, &cfg).await,
            Err(e) => Err(e),
        };
        let declared = match declared {
            Ok(()) => {
                let buckets = async {
                    let leases =
                        ownership::declare_bucket(&js, &subjects.lease_bucket(), cfg.lease, cfg.stream_replicas)
                            .await?;
                    let members =
                        ownership::declare_bucket(&js, &subjects.members_bucket(), cfg.lease, cfg.stream_replicas)
                            .await?;
                    Ok::<_, BusError>((leases, members))
                };
                buckets.await
            }
            Err(e) => Err(e),
        };
        match declared {
            Ok(buckets) => break buckets,
            Err(e @ (BusError::PartitionsChanged { .. } | BusError::OnePartitionDirectory { .. })) => return Err(e),
            Err(e) if attempt < DECLARE_ATTEMPTS => {
                attempt += 1;
                tracing::warn!(error = %crate::report::Chain(&e), "cannot declare vigil's streams yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let shutdown = shutdown.shared();
    let membership = Membership::join(buckets.1.clone(), &cfg.instance, cfg.lease);
    let partitions = (0..cfg.partitions()).map(|index| {
        let scoped = subjects.scoped(index, cfg.partitions());
        let mut part_cfg = cfg.clone();
        if cfg.partitions() > 1 {
            part_cfg.data_dir = cfg.data_dir.join(format!("p{index}"));
        }
        let (policy, client, leases, membership, shutdown) =
            (&policy, &client, &buckets.0, &membership, shutdown.clone());
        async move { terms(&part_cfg, &scoped, policy, client, (leases, membership), shutdown).await }
    });
    // The first partition to stop with an error stops the process (the others with it); a clean
    // stop is every partition's. The services API runs until the shutdown.
    let all = futures::future::try_join_all(partitions);
    tokio::pin!(all);
    tokio::select! {
        served = &mut all => served.map(|_| ()),
        api = crate::bus::api::serve(client.clone(), subjects.clone(), cfg.partitions(), shutdown.clone()) => match api {
            Ok(()) => all.await.map(|_| ()),
            Err(e) => Err(e),
        },
    }
}

/// Settles an unset `partitions` on the deployment's (see [`connect::deployed_partitions`]), or
/// [`crate::config::DEFAULT_PARTITIONS`] for a new deployment, and says which; refuses a
/// one-partition data directory on a deployment of several.
async fn resolve_partitions(
    js: &jetstream::Context,
    subjects: &Subjects,
    cfg: &mut ServeConfig,
) -> Result<(), BusError> {
    if cfg.partitions.is_none() {
        let (partitions, why) = match connect::deployed_partitions(js, subjects, &cfg.data_dir).await? {
            Some(n) => (n, "the deployment's"),
            None => (crate::config::DEFAULT_PARTITIONS, "a new deployment's default"),
        };
        tracing::info!(partitions, "partitions not configured: {why}");
        cfg.partitions = Some(partitions);
    }
    if cfg.partitions() > 1 && crate::store::is_data_dir(&cfg.data_dir) {
        return Err(BusError::OnePartitionDirectory { dir: cfg.data_dir.clone(), partitions: cfg.partitions() });
    }
    Ok(())
}

/// One partition's terms, one after another, until `shutdown` completes or a fatal error occurs.
async fn terms(
    cfg: &ServeConfig,
    subjects: &Subjects,
    policy: &Policy,
    client: &async_nats::Client,
    (leases, membership): (&jetstream::kv::Store, &Membership),
    shutdown: impl Future<Output = ()> + Clone,
) -> Result<(), BusError> {
    let partition = subjects.partition_index().to_string();
    metrics::gauge!("vigil_owner", "partition" => partition.clone()).set(0.0);
    let (mut handed_over, mut declare_failures) = (false, 0);
    loop {
        let served = term::serve(cfg, subjects, policy, client, leases, membership, handed_over, shutdown.clone());
        handed_over = false;
        let served = served.await;
        declare_failures = if matches!(served, Err(BusError::Declare { .. })) { declare_failures + 1 } else { 0 };
        match served {
            // The partition's consumer not declared yet (a cluster still electing its leaders):
            // retried for a while, as the streams are at start, before the process gives up.
            Err(e @ BusError::Declare { .. }) if declare_failures <= DECLARE_ATTEMPTS => {
                tracing::warn!(error = %crate::report::Chain(&e), partition, "cannot declare the partition's consumer yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            // A directory that missed what others folded (see `start::is_stale`): set aside, kept
            // for inspection, and the next term rebuilds a new one from the stream.
            Err(e @ BusError::StaleDirectory { .. }) => {
                let aside = set_aside(&cfg.data_dir)?;
                tracing::warn!(reason = %e, dir = %cfg.data_dir.display(), aside = %aside.display(), partition, "the data directory is stale: set aside, rebuilding a new one from the input stream");
            }
            Err(BusError::HandingOver(to)) => {
                tracing::info!(to, partition, "handed the partition over: following it as a standby");
                handed_over = true;
            }
            Err(BusError::SteppedDown(why)) => {
                metrics::counter!("vigil_stepped_down_total", "partition" => partition.clone()).increment(1);
                tracing::warn!(why, partition, "stepped down: waiting as a standby");
            }
            // NATS trouble is when takeovers happen: an owner that cannot reach the stream gives
            // the log up and waits as a standby, rather than leave the fleet to a lease's lapse
            // and a restart by its supervisor. (The store's errors stay fatal.)
            Err(e) if e.goes_on_as_standby() => {
                metrics::counter!("vigil_stepped_down_total", "partition" => partition.clone()).increment(1);
                tracing::warn!(error = %crate::report::Chain(&e), partition, "stepped down after a NATS failure: waiting as a standby");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}

/// Renames `dir` to `<dir>.stale-<unix ms>` beside it, and returns the new name.
fn set_aside(dir: &std::path::Path) -> Result<std::path::PathBuf, BusError> {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let mut name = dir.as_os_str().to_owned();
    name.push(format!(".stale-{ms}"));
    let aside = std::path::PathBuf::from(name);
    std::fs::rename(dir, &aside).map_err(|source| BusError::SetAside { dir: dir.to_path_buf(), source })?;
    Ok(aside)
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
    last_checkpoint: Instant,
    js: jetstream::Context,
    /// The context vigil's own records (ticks, resumes, snapshots) are appended through.
    appends: jetstream::Context,
    /// When ticks are appended, and the stream's clock (see [`sequencer`]), in monotonic time since
    /// `origin`.
    ticks: Ticks,
    origin: Instant,
    /// Where a tick append reports a failure (see [`Serve::append_tick`]).
    tick_done: mpsc::UnboundedSender<Result<(), AppendError>>,
    /// A rebuild of the data directory from the stream under way (see [`rebuild`]).
    rebuild: Option<rebuild::Rebuild>,
    /// How far the input consumer had acknowledged when this directory was rebuilt: records up to
    /// there were read (and dead-lettered, where they had to be) before.
    read_before: u64,
    /// The policy configured: a directory rebuilt from a snapshot record runs under it once the
    /// rebuild is over (the snapshot's own applies to the records it is rebuilt from).
    policy: Policy,
    /// A snapshot record being appended (see [`snapshot`]), when the last was taken, and where
    /// its append reports that it is over.
    snapshot_in_flight: bool,
    last_snapshot: Instant,
    snapshot_done: mpsc::UnboundedSender<()>,
    /// Whether this instance still owns the log, and the epoch its appends are fenced by (set
    /// once its epoch record is in the stream).
    lease: LeaseView,
    held: term::Held,
    fence: Option<Fence>,
    /// Who this instance is, and when its epoch record was last appended (it is renewed before
    /// the stream's `max_age` could take it away).
    holder: Holder,
    epoch_at: Instant,
    /// Who is up, and who should own this partition (see [`crate::bus::placement`]): for the
    /// partitions query and planned handovers.
    membership: Membership,
    /// Another instance preferred for this partition, and since when (see [`Serve::rebalance`]).
    preferred_since: Option<(String, Instant)>,
    /// The consumer's number of the last delivery (see [`Serve::handle_batch`]); `None` until the
    /// first since the consumer was brought level.
    delivered: Option<u64>,
    /// While a standby follows the log (see [`follow`]): what it decided and has not yet seen
    /// published, and what the output stream holds.
    following: Option<follow::Following>,
    /// The death declarations appended in this term (see [`declare`]).
    declared: declare::Declared,
    /// This owner has brought the directory level with the stream in this term: only then are
    /// declarations appended, so none already in the stream is appended again.
    level: bool,
    /// The directory was resumed at the term's start (not created or rebuilt in it).
    resumed: bool,
}

impl Serve {
    /// Monotonic time since the loop began, as [`Ticks`] reads it.
    fn mono(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Now, by the stream's clock; `None` before the first record.
    fn stream_now(&self) -> Option<At> {
        self.ticks.stream_now(self.mono())
    }

    /// Notes a record read from the stream: its stored time, and what the consumer still holds.
    fn note_record(&mut self, subject: &str, stored: At, pending: u64) {
        let kind = match self.subjects.parse_log(subject) {
            Some("tick") => sequencer::Kind::Tick,
            Some("snap" | "snapshot") => sequencer::Kind::Snapshot,
            _ => sequencer::Kind::Other,
        };
        let now = self.mono();
        self.ticks.note_record(kind, stored, pending, now);
    }

    async fn run_loop(
        &mut self,
        consumer: &jetstream::consumer::PullConsumer,
        mut queries: async_nats::Subscriber,
        confirmed: &mut mpsc::UnboundedReceiver<Vec<OutboxKey>>,
        (tick_results, snapshots_done): (
            &mut mpsc::UnboundedReceiver<Result<(), AppendError>>,
            &mut mpsc::UnboundedReceiver<()>,
        ),
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), BusError> {
        tokio::pin!(shutdown);
        let mut messages = self.pull(consumer).await;
        let lease = self.lease.clone();
        let mut rebalance = tokio::time::interval(REBALANCE_EVERY);
        loop {
            // Checked before anything else, each time round: after a pause (SIGSTOP, a stall) the
            // lease may have lapsed while inputs and deadlines wait.
            if !lease.valid() {
                return Err(BusError::SteppedDown("the lease lapsed"));
            }
            lease.touch();
            let wake = self.next_wake();
            tokio::select! {
                biased;
                _ = &mut shutdown => return Ok(()),
                _ = lease.lost() => return Err(BusError::SteppedDown("the lease lapsed")),
                _ = self.durable.notified() => self.collect().await?,
                Some(result) = tick_results.recv() => self.tick_appended(result).await?,
                Some(()) = snapshots_done.recv() => self.snapshot_in_flight = false,
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
                Some(query) = queries.next() => self.answer(consumer, query).await,
                _ = rebalance.tick() => self.rebalance()?,
                _ = tokio::time::sleep_until(wake) => self.on_clock().await?,
            }
        }
    }

    /// Hands the partition over once another instance has been its preferred owner for a whole
    /// lease (see [`crate::bus::placement`]). With one partition there is nothing to spread.
    fn rebalance(&mut self) -> Result<(), BusError> {
        if self.cfg.partitions() < 2 {
            return Ok(());
        }
        let preferred = self.membership.preferred_other(self.subjects.partition_index());
        match (preferred, &self.preferred_since) {
            (None, _) => self.preferred_since = None,
            (Some(other), Some((name, since))) if *name == other => {
                if since.elapsed() >= self.cfg.lease {
                    return Err(BusError::HandingOver(other));
                }
            }
            (Some(other), _) => self.preferred_since = Some((other, Instant::now())),
        }
        Ok(())
    }

    /// Answers a query forwarded to this partition's owner (see [`crate::bus::api`]).
    async fn answer(&mut self, consumer: &jetstream::consumer::PullConsumer, query: async_nats::Message) {
        let Some(reply) = query.reply.clone() else { return };
        let base = self.subjects.partition_query(self.subjects.partition_index(), "");
        let what = query.subject.as_str().strip_prefix(base.as_str()).unwrap_or_default();
        let answer = match what {
            "fleet" => queries::fleet(self.store.engine(), self.store.durable_stream_seq()),
            "partition" => {
                let (entry, consumer, client) = (self.partition_entry(), consumer.clone(), self.js.client());
                tokio::spawn(async move {
                    let (headers, body) = crate::bus::api::encode(epoch::with_lag(entry, consumer).await);
                    if let Err(e) = client.publish_with_headers(reply, headers, body).await {
                        tracing::warn!(error = %e, "answering a partitions query failed");
                    }
                });
                return;
            }
            _ => match what.strip_prefix("state.") {
                Some(ws) => queries::state(self.store.engine(), ws)
                    .map(|body| crate::bus::api::served_by(body, &self.holder.instance, None)),
                None => Err(crate::bus::api::error(404, &format!("no query {what:?}"))),
            },
        };
        let (headers, body) = crate::bus::api::encode(answer);
        if let Err(e) = self.js.client().publish_with_headers(reply, headers, body).await {
            tracing::warn!(error = %e, "answering a query failed");
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

    /// When the loop must wake up on its own: to look at ticks again (see [`Ticks::wake`]), or for a
    /// checkpoint.
    fn next_wake(&mut self) -> tokio::time::Instant {
        let checkpoint = Instant::now() + self.cfg.checkpoint_interval.saturating_sub(self.last_checkpoint.elapsed());
        let deadline = self.store.next_deadline();
        let ticks = self.origin + self.ticks.wake(deadline, self.mono());
        tokio::time::Instant::from_std(ticks.min(checkpoint))
    }

    /// A deadline may be due, or the stream quiet for `tick_every`: append a tick (it fires what
    /// is due when it comes back, with the time the stream stored it, after everything stored
    /// before it). Only once vigil has read all the stream holds, and one at a time. Also
    /// checkpoints, and drops log segments past retention, on schedule.
    async fn on_clock(&mut self) -> Result<(), BusError> {
        let deadline = self.store.next_deadline();
        if self.ticks.tick_due(deadline, self.mono()) {
            self.append_tick();
        }
        self.append_declarations();
        self.checkpoint_if_due()?;
        // The epoch first: a snapshot taken now goes out under the renewed one.
        self.renew_epoch_if_due().await?;
        self.snapshot_if_due()?;
        // A checkpoint waits for the groups in flight; release them now rather than at the next
        // wake-up.
        self.collect().await
    }

    /// Checkpoints, and drops log segments past retention, once `checkpoint_interval` has gone by.
    fn checkpoint_if_due(&mut self) -> Result<(), BusError> {
        if self.last_checkpoint.elapsed() < self.cfg.checkpoint_interval {
            return Ok(());
        }
        let now = self.stream_now().unwrap_or_else(wall_clock);
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
        Ok(())
    }

    /// Applies one group and hands it to the store's writer thread, and its outputs to the
    /// publisher at once: its records are durable in the input stream already, and whoever folds
    /// them again decides the same outputs with the same ids (SPEC §4), so nothing waits for the
    /// local flush. (A crash before the group is on disk re-reads its records from the stream; one
    /// before its outputs are confirmed publishes them again, de-duplicated by id.)
    async fn submit(&mut self, inputs: Vec<Input>, stream_seq: Option<u64>) -> Result<(), BusError> {
        let (_, outputs) = tokio::task::block_in_place(|| self.store.submit_released(&inputs, stream_seq))?;
        self.admission.group_applied();
        if self.following.is_none() {
            self.record_gauges();
            self.append_declarations();
        }
        self.release(stream_seq, outputs)
    }

    /// Hands a group's outputs to the publisher (those a rebuild may publish: see [`rebuild`]).
    fn release(&mut self, stream_seq: Option<u64>, outputs: Vec<Pending>) -> Result<(), BusError> {
        fault::after_commit();
        if outputs.iter().any(|p| matches!(p.output.body, OutputBody::Restart { .. })) {
            fault::after_deciding_a_restart();
        }
        // A standby's outputs wait in its outbox for the owner's publish (see [`follow`]).
        if let Some(following) = self.following.as_mut() {
            following.decided(outputs);
            return Ok(());
        }
        for p in &outputs {
            metrics::counter!("vigil_outputs_total", "type" => p.output.body.type_name()).increment(1);
            if let OutputBody::Suppressed { reason, .. } = p.output.body {
                metrics::counter!("vigil_suppressed_total", "reason" => reason.as_str()).increment(1);
            }
        }
        let outputs = self.publishable(stream_seq, outputs)?;
        if !outputs.is_empty() && self.outbox.send(Released::now(outputs)).is_err() {
            return Err(BusError::Stopped("the output publisher"));
        }
        Ok(())
    }

    /// Lets the store settle the groups its writer made durable: from then on their outputs stand
    /// in the outbox until the publisher confirms them.
    async fn collect(&mut self) -> Result<(), BusError> {
        let durable = tokio::task::block_in_place(|| self.store.poll_durable())?;
        debug_assert!(durable.iter().all(|c| c.outputs.is_empty()), "outputs were released when applied");
        Ok(())
    }

    /// Waits until every submitted group is durable.
    async fn wait_durable(&mut self) -> Result<(), BusError> {
        let durable = tokio::task::block_in_place(|| self.store.wait_durable())?;
        debug_assert!(durable.iter().all(|c| c.outputs.is_empty()), "outputs were released when applied");
        Ok(())
    }

    fn record_gauges(&self) {
        let fleet = self.store.engine().fleet_view();
        let partition = self.subjects.partition_index().to_string();
        for (state, n) in [
            (StateName::Alive, fleet.alive),
            (StateName::Suspect, fleet.suspect),
            (StateName::Restarting, fleet.restarting),
            (StateName::Dead, fleet.dead),
            (StateName::Parked, fleet.parked),
        ] {
            metrics::gauge!("vigil_workspaces", "state" => state.as_str(), "partition" => partition.clone())
                .set(f64::from(n));
        }
        let open = if fleet.breaker_open { 1.0 } else { 0.0 };
        metrics::gauge!("vigil_breaker_open", "partition" => partition.clone()).set(open);
        metrics::gauge!("vigil_restarts_in_flight", "partition" => partition).set(f64::from(fleet.restarts_in_flight));
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
