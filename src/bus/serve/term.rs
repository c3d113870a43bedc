//! One term: the store opened, the directory placed in the input stream, then — while another
//! instance owns the log — following it as a standby (see [`super::follow`]), and once this one
//! holds the lease, its term of ownership: the directory brought level with the stream (the last
//! few records a follower has not applied yet, or a rebuild), this instance's epoch appended, its
//! resume appended, then the loop until a signal, a lost lease or a fence stops it.

use super::*;

/// The least sled cache a partition's directory gets, however many partitions share the instance.
const MIN_CACHE_BYTES: u64 = 16 << 20;

/// One term: opens the store, waits as a standby until this instance holds the lease, then serves
/// until `shutdown` completes (`Ok`), the lease lapses or another instance's epoch fences this one
/// ([`BusError::SteppedDown`]), or a fatal error occurs.
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve(
    cfg: &ServeConfig,
    subjects: &Subjects,
    policy: &Policy,
    client: &async_nats::Client,
    leases: &async_nats::jetstream::kv::Store,
    membership: &Membership,
    handed_over: bool,
    shutdown: impl Future<Output = ()> + Clone,
) -> Result<(), BusError> {
    // Each partition's directory has its own sled cache: together they get what one would.
    let whole = StoreConfig::default().cache_bytes;
    let cache_bytes = (whole / u64::from(cfg.partitions())).max(MIN_CACHE_BYTES);
    let store_config = StoreConfig { checkpoint_every: cfg.checkpoint_every, cache_bytes };
    let (data_dir, for_store) = (cfg.data_dir.clone(), policy.clone());
    let (mut store, recovery) =
        tokio::task::spawn_blocking(move || Store::open(&data_dir, for_store, store_config, OpenMode::CreateIfMissing))
            .await
            .map_err(|source| BusError::Panicked { what: "opening the store", source })??;
    // The lease names the data directory's token: only the process holding the directory (sled
    // locks it) can be the holder it names, so a restarted vigil takes its own lease back at once.
    let token = tokio::task::block_in_place(|| store.owner_token())?;
    let holder = Holder { instance: cfg.instance.clone(), token };
    let (mut serve, mut loose) = assemble(cfg, subjects, policy, client, store, &recovery, &holder, membership).await?;
    let restored = match serve.adopt_input_stream(&mut loose.consumer).await {
        Ok(restored) => restored,
        Err(e) => return loose.stop(serve, Err(e)).await,
    };
    let pending = [recovery.pending, restored].concat();
    // Nobody else holds the lease (one instance, or this one's own lease after a restart): taken
    // at once, without following first.
    let key = subjects.lease_key();
    let partition = (key.as_str(), subjects.partition_index());
    // (Not a partition this instance has just handed over: its successor takes it.)
    let at_once = match handed_over {
        false => Lease::try_at_start(leases, partition, &holder, cfg.lease, membership).await,
        true => ownership::Attempt::Failed,
    };
    let (lease, taken) = match at_once {
        ownership::Attempt::Taken(lease) => (*lease, Taken::AtOnce(pending)),
        _ => {
            let acquire = Lease::acquire(leases, partition, &holder, cfg.lease, membership, shutdown.clone());
            match wait_for_lease(&mut serve, acquire, pending).await {
                Ok(Some(taken)) => taken,
                Ok(None) => {
                    tracing::info!("stopped while waiting as a standby");
                    return loose.stop(serve, Ok(())).await;
                }
                Err(e) => return loose.stop(serve, Err(e)).await,
            }
        }
    };
    let partition = subjects.partition_index().to_string();
    tracing::info!(instance = %holder.instance, partition, "took the lease: this instance owns the partition's log");
    metrics::gauge!("vigil_owner", "partition" => partition.clone()).set(1.0);
    serve.lease = lease.view();
    *serve.held.0.lock().await = Some(lease);
    // The partition's part of the queries is answered by its owner only, while it owns the log
    // (every instance's services API forwards them here: see `bus::api`).
    let queries = match client.subscribe(subjects.partition_query(subjects.partition_index(), ">")).await {
        Ok(queries) => queries,
        Err(e) => return loose.stop(serve, Err(BusError::nats("subscribing to the partition's queries", e))).await,
    };
    let held = serve.held.clone();
    let served = owned(serve, loose, taken, queries, shutdown).await;
    metrics::gauge!("vigil_owner", "partition" => partition).set(0.0);
    held.release().await;
    served
}

/// Waits until `acquire` takes the lease (`None`: the stop signal inside it came first). While
/// this instance is one of the partition's standbys (see [`Membership::follows`]) it follows the
/// log; otherwise, or once another instance takes its place, it waits without following, and
/// looks again every [`LOOK_AGAIN`].
async fn wait_for_lease(
    serve: &mut Serve,
    acquire: impl Future<Output = Result<Option<Lease>, BusError>>,
    mut pending: Vec<Pending>,
) -> Result<Option<(Lease, Taken)>, BusError> {
    let (partition, standbys) = (serve.subjects.partition_index(), serve.cfg.standbys);
    tokio::pin!(acquire);
    let mut waiting = false;
    loop {
        if serve.membership.follows(partition, standbys) {
            waiting = false;
            match serve.follow(&mut acquire, pending).await? {
                follow::Followed::Lease(lease) => {
                    let following = serve.following.take().expect("a follower's state while it follows");
                    return Ok(Some((*lease, Taken::Following(following))));
                }
                follow::Followed::Stopped => return Ok(None),
                follow::Followed::Dismissed(still) => pending = still,
            }
            continue;
        }
        if !waiting {
            tracing::info!(partition, standbys, "not one of the partition's standbys: waiting without following");
            waiting = true;
        }
        tokio::select! {
            lease = &mut acquire => return Ok(lease?.map(|lease| (lease, Taken::AtOnce(std::mem::take(&mut pending))))),
            _ = tokio::time::sleep(LOOK_AGAIN) => {}
        }
    }
}

/// How often an instance that does not follow a partition looks whether it should.
const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// How the lease came to this instance: at once (or after waiting without following), with what
/// its outbox held; or after following the log.
enum Taken {
    AtOnce(Vec<Pending>),
    Following(follow::Following),
}

/// The lease while it is held, for whoever gives it up first: a stopping owner gives it up as soon
/// as it appends nothing more, before its drain and checkpoint, so a standby takes over at once.
#[derive(Clone, Default)]
pub(super) struct Held(Arc<tokio::sync::Mutex<Option<Lease>>>);

impl Held {
    pub(super) async fn release(&self) {
        if let Some(lease) = self.0.lock().await.take() {
            lease.release().await;
        }
    }
}

/// What the loop works with besides [`Serve`]: the input consumer, the publisher and DLQ tasks
/// and what they report back.
struct Loose {
    consumer: jetstream::consumer::PullConsumer,
    publisher: tokio::task::JoinHandle<()>,
    dlq_task: tokio::task::JoinHandle<()>,
    confirmed: mpsc::UnboundedReceiver<Vec<OutboxKey>>,
    tick_results: mpsc::UnboundedReceiver<Result<(), AppendError>>,
    snapshots_done: mpsc::UnboundedReceiver<()>,
}

impl Loose {
    /// Ends the term: see [`Serve::shutdown`].
    async fn stop(self, serve: Serve, result: Result<(), BusError>) -> Result<(), BusError> {
        serve.shutdown(self.publisher, self.dlq_task, self.confirmed, result).await
    }
}

/// Everything a term needs, set up around the store: the streams, the publisher, the DLQ.
#[allow(clippy::too_many_arguments)]
async fn assemble(
    cfg: &ServeConfig,
    subjects: &Subjects,
    policy: &Policy,
    client: &async_nats::Client,
    mut store: Store,
    recovery: &crate::store::Recovery,
    holder: &Holder,
    membership: &Membership,
) -> Result<(Serve, Loose), BusError> {
    let (cfg, policy) = (cfg.clone(), policy.clone());
    let subjects = subjects.clone();
    let js = jetstream::new(client.clone());
    // vigil's own records go through a context of their own: a tick must never wait for a
    // publish permit behind a burst of outputs.
    let appends = jetstream::new(client.clone());
    let consumer = connect::declare_consumer(&js, &subjects, &cfg).await?;
    let cfg_tick_every = cfg.tick_every;
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
    let (confirmed_tx, confirmed) = mpsc::unbounded_channel();
    let publisher = tokio::spawn(publisher::run(js.clone(), subjects.clone(), outbox_rx, confirmed_tx));

    let mut input_stream = js
        .get_stream(subjects.input_stream())
        .await
        .map_err(|e| BusError::Declare { what: format!("stream {}", subjects.input_stream()), source: e.into() })?;
    let created = input_stream.info().await.map_err(|e| BusError::nats("reading the input stream's info", e))?.created;
    let stream_id = format!("{}@{}", subjects.input_stream(), created.unix_timestamp_nanos());
    let (dlq, dlq_task) =
        Dlq::start(dlq::Target { js: js.clone(), subject: subjects.dlq(), stream_id: stream_id.clone() });
    let (tick_done, tick_results) = mpsc::unbounded_channel();
    let (snapshot_done, snapshots_done) = mpsc::unbounded_channel();
    let serve = Serve {
        intake: Intake::new(subjects.clone(), cfg.max_payload),
        dlq,
        // With several partitions each holds its share of the fleet's cap (workspaces spread
        // evenly by hash, invented ones too).
        admission: Admission::new(cfg.max_workspaces.div_ceil(cfg.partitions() as usize)),
        cfg,
        subjects,
        input_stream,
        stream_id,
        store,
        outbox,
        durable,
        last_checkpoint: Instant::now(),
        js,
        appends,
        ticks: Ticks::new(cfg_tick_every, Duration::ZERO),
        origin: Instant::now(),
        tick_done,
        rebuild: None,
        read_before: 0,
        policy,
        snapshot_in_flight: false,
        last_snapshot: Instant::now(),
        snapshot_done,
        lease: LeaseView::not_held(),
        held: Held::default(),
        fence: None,
        holder: holder.clone(),
        epoch_at: Instant::now(),
        membership: membership.clone(),
        preferred_since: None,
        delivered: None,
        following: None,
        declared: Default::default(),
        level: false,
        resumed: false,
    };
    let loose = Loose { consumer, publisher, dlq_task, confirmed, tick_results, snapshots_done };
    Ok((serve, loose))
}

/// This instance's term of ownership, once it holds the lease.
async fn owned(
    mut serve: Serve,
    mut loose: Loose,
    taken: Taken,
    queries: async_nats::Subscriber,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BusError> {
    match level(&mut serve, &mut loose, taken, shutdown).await {
        Ok(Some(shutdown)) => {
            tracing::info!(prefix = serve.subjects.prefix(), partition = serve.subjects.partition_index(), "serving");
            // Level with the stream: every declaration it holds is applied, so what is still
            // listed was never appended (see `declare`).
            serve.level = true;
            serve.append_declarations();
            let result = serve
                .run_loop(
                    &loose.consumer,
                    queries,
                    &mut loose.confirmed,
                    (&mut loose.tick_results, &mut loose.snapshots_done),
                    shutdown,
                )
                .await;
            loose.stop(serve, result).await
        }
        Ok(None) => loose.stop(serve, Ok(())).await,
        Err(e) => loose.stop(serve, Err(e)).await,
    }
}

/// Brings the directory level with the log and puts this instance's epoch and resume in it.
/// Returns the shutdown signal still to wait for, or `None` if it came meanwhile.
async fn level<S: Future<Output = ()>>(
    serve: &mut Serve,
    loose: &mut Loose,
    taken: Taken,
    shutdown: S,
) -> Result<Option<std::pin::Pin<Box<S>>>, BusError> {
    let (watched, pending) = match taken {
        Taken::AtOnce(pending) => (None, pending),
        Taken::Following(following) => following.into_parts(),
    };
    // An instance that waited without following may have waited past the stream's retention
    // while others folded the log: then its directory is stale, and rebuilt rather than resumed.
    // (Only a directory resumed at the term's start: one created or rebuilt in it is new.)
    if serve.resumed {
        let first = serve.stream_state().await?.first_sequence;
        serve.refuse_if_stale(first).await?;
    }
    // This instance's epoch in the stream: from here on the server refuses the appends of any
    // instance that owned the log before.
    serve.take_epoch(true).await?;
    // What others may have published meanwhile — a follower's outputs, the records others
    // appended, a directory that followed before its restart — is checked against the output
    // stream (see `Store::take_over`): a follower has read most of it already. A new or lost
    // directory on a stream with history is rebuilt from it; what the outbox holds from a
    // rebuild cut short, or a snapshot record held as pending, is checked like the rest of it.
    let published = match watched {
        Some(watched) => Some(serve.read_published(Some(watched)).await?),
        None => None,
    };
    let pending = match &published {
        Some(published) if serve.store.rebuild_through().is_none() => serve.unpublished(published, pending)?,
        _ => pending,
    };
    serve.prepare_rebuild(&mut loose.consumer, published).await?;
    let pending = serve.publishable(None, pending)?;
    if !pending.is_empty() {
        let _ = serve.outbox.send(Released::now(pending));
    }
    // A long rebuild still stops on a signal: what it applied is durable, and the next start takes
    // it up where it stopped.
    let mut shutdown = Box::pin(shutdown);
    let lease = serve.lease.clone();
    tokio::select! {
        rebuilt = serve.run_rebuild() => rebuilt?,
        _ = &mut shutdown => return Ok(None),
        _ = lease.lost() => return Err(BusError::SteppedDown("the lease lapsed during the rebuild")),
    }
    serve.level_consumer(&mut loose.consumer).await?;
    serve.schedule_snapshots().await;
    // vigil (re)started: a `resume` in the stream says so, after what it has not read yet. It
    // declares the promise of a record every `tick_every` (so a longer silence of the whole stream
    // is time nobody watched, SPEC §1), and carries the directory's id key (a new one for a new
    // directory), so output ids are unguessable and never repeat those of a lost one.
    // Rebuilt without part of the history, the restored restart counts may be lower than they
    // were, so ids under the old key could repeat: a new key makes every id from here on new.
    let history_lost = serve.store.history_lost();
    let id_key = match start::kept_id_key(serve.store.engine().id_key(), history_lost) {
        Some(key) => key,
        None if history_lost => {
            tracing::warn!(
                "rebuilt without part of the history: a new id key, so no id from here on can repeat one issued \
                 before (restarts in flight under the old key are no longer matched by their progress)"
            );
            new_id_key()?
        }
        None => new_id_key()?,
    };
    let unwatched_after_ms =
        u32::try_from(serve.cfg.unwatched_after.as_millis()).unwrap_or(u32::MAX).clamp(1000, 3_600_000);
    // With several partitions, the resume also says which one this log is: its breaker and its
    // restart cap are the fleet's from here on (`core::fleet`).
    let partition = serve.subjects.part().map(|p| Partition { index: p.index, of: p.of });
    let resume = Resume { id_key: Some(id_key), unwatched_after_ms: Some(unwatched_after_ms), partition };
    serve.append_resume(resume).await?;
    if history_lost {
        tokio::task::block_in_place(|| serve.store.set_history_lost(false))?;
    }
    Ok(Some(shutdown))
}
