//! One term of ownership: from taking the log (the lease held) to giving it up — the store
//! opened, the directory brought level with the stream (rebuilt, or caught up on what other owners
//! appended), this instance's epoch appended, its resume appended, then the loop until a signal,
//! a lost lease or a fence stops it.

use super::*;

/// One term: opens the store, waits as a standby until this instance holds the lease, then serves
/// until `shutdown` completes (`Ok`), the lease lapses or another instance's epoch fences this one
/// ([`BusError::SteppedDown`]), or a fatal error occurs.
pub(super) async fn serve(
    cfg: &ServeConfig,
    policy: &Policy,
    client: &async_nats::Client,
    (leases, members): (&async_nats::jetstream::kv::Store, &async_nats::jetstream::kv::Store),
    shutdown: impl Future<Output = ()> + Clone,
) -> Result<(), BusError> {
    let store_config = StoreConfig { checkpoint_every: cfg.checkpoint_every, ..StoreConfig::default() };
    let (data_dir, for_store) = (cfg.data_dir.clone(), policy.clone());
    let (mut store, recovery) =
        tokio::task::spawn_blocking(move || Store::open(&data_dir, for_store, store_config, OpenMode::CreateIfMissing))
            .await
            .map_err(|source| BusError::Panicked { what: "opening the store", source })??;
    // The lease names the data directory's token: only the process holding the directory (sled
    // locks it) can be the holder it names, so a restarted vigil takes its own lease back at once.
    let token = tokio::task::block_in_place(|| store.owner_token())?;
    let holder = Holder { instance: cfg.instance.clone(), token };
    let announcing = Announcing(tokio::spawn(ownership::announce(members.clone(), holder.clone(), cfg.lease)));
    let Some(lease) = Lease::acquire(leases, &holder, cfg.lease, shutdown.clone()).await? else {
        tracing::info!("stopped while waiting as a standby");
        tokio::task::block_in_place(|| store.close())?;
        return Ok(());
    };
    tracing::info!(instance = %holder.instance, "took the lease: this instance owns the log");
    metrics::gauge!("vigil_owner").set(1.0);
    // The services API and the queries are answered by the owner only, while it owns the log.
    let service = client
        .service_builder()
        .description("vigil: liveness and restart decisions for agent workspaces")
        .start("vigil", env!("CARGO_PKG_VERSION"))
        .await
        .map_err(BusError::Service)?;
    let view = lease.view();
    let held = Held(Arc::new(tokio::sync::Mutex::new(Some(lease))));
    let served =
        owned(cfg, policy, client, (store, recovery), (&holder, members), (view, held.clone()), &service, shutdown)
            .await;
    let _ = service.stop().await;
    metrics::gauge!("vigil_owner").set(0.0);
    held.release().await;
    drop(announcing);
    served
}

/// The task saying this instance is up, stopped with the term.
struct Announcing(tokio::task::JoinHandle<()>);

impl Drop for Announcing {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The lease while it is held, for whoever gives it up first: a stopping owner gives it up as soon
/// as it appends nothing more, before its drain and checkpoint, so a standby takes over at once.
#[derive(Clone)]
pub(super) struct Held(Arc<tokio::sync::Mutex<Option<Lease>>>);

impl Held {
    pub(super) async fn release(&self) {
        if let Some(lease) = self.0.lock().await.take() {
            lease.release().await;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn owned(
    cfg: &ServeConfig,
    policy: &Policy,
    client: &async_nats::Client,
    (mut store, recovery): (Store, crate::store::Recovery),
    (holder, members): (&Holder, &async_nats::jetstream::kv::Store),
    (lease, held): (LeaseView, Held),
    service: &async_nats::service::Service,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BusError> {
    let (cfg, policy) = (cfg.clone(), policy.clone());
    let subjects = Subjects::new(&cfg.prefix);
    let js = jetstream::new(client.clone());
    // vigil's own records go through a context of their own: a tick must never wait for a
    // publish permit behind a burst of outputs.
    let appends = jetstream::new(client.clone());
    let mut consumer = connect::declare(&js, &subjects, &cfg).await?;
    let policy_in_force = policy;
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
    let (confirmed_tx, mut confirmed) = mpsc::unbounded_channel();
    let publisher = tokio::spawn(publisher::run(js.clone(), subjects.clone(), outbox_rx, confirmed_tx));

    let group = service.group(subjects.query_group());
    let state_endpoint = group.endpoint("state.*").await.map_err(BusError::Service)?;
    let fleet_endpoint = group.endpoint("fleet").await.map_err(BusError::Service)?;
    let partitions_endpoint = group.endpoint("partitions").await.map_err(BusError::Service)?;

    let mut input_stream = js
        .get_stream(subjects.input_stream())
        .await
        .map_err(|e| BusError::Declare { what: format!("stream {}", subjects.input_stream()), source: e.into() })?;
    let created = input_stream.info().await.map_err(|e| BusError::nats("reading the input stream's info", e))?.created;
    let stream_id = format!("{}@{}", subjects.input_stream(), created.unix_timestamp_nanos());
    let (dlq, dlq_task) =
        Dlq::start(dlq::Target { js: js.clone(), subject: subjects.dlq(), stream_id: stream_id.clone() });
    let (tick_done, mut tick_results) = mpsc::unbounded_channel();
    let (snapshot_done, mut snapshots_done) = mpsc::unbounded_channel();
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
        last_checkpoint: Instant::now(),
        js,
        appends,
        ticks: Ticks::new(cfg_tick_every, Duration::ZERO),
        origin: Instant::now(),
        tick_done,
        rebuild: None,
        read_before: 0,
        policy: policy_in_force,
        snapshot_in_flight: false,
        last_snapshot: Instant::now(),
        snapshot_done,
        lease,
        held,
        fence: None,
        holder: holder.clone(),
        epoch_at: Instant::now(),
        members: members.clone(),
    };
    let restored = serve.adopt_input_stream(&mut consumer).await?;
    // This instance's epoch in the stream: from here on the server refuses the appends of any
    // instance that owned the log before.
    serve.take_epoch(true).await?;
    // A new or lost directory on a stream with history is rebuilt from it; what the outbox holds
    // from a rebuild cut short, or a snapshot record held as pending, is checked against the
    // output stream like the rest of it.
    serve.prepare_rebuild(&mut consumer).await?;
    let pending = serve.publishable(None, [recovery.pending, restored].concat())?;
    if !pending.is_empty() {
        let _ = serve.outbox.send(Released::now(pending));
    }
    // A long rebuild still stops on a signal: what it applied is durable, and the next start takes
    // it up where it stopped.
    tokio::pin!(shutdown);
    let lease = serve.lease.clone();
    tokio::select! {
        rebuilt = serve.run_rebuild() => rebuilt?,
        _ = &mut shutdown => return serve.shutdown(publisher, dlq_task, confirmed, Ok(())).await,
        _ = lease.lost() => {
            let lost = Err(BusError::SteppedDown("the lease lapsed during the rebuild"));
            return serve.shutdown(publisher, dlq_task, confirmed, lost).await;
        }
    }
    serve.level_consumer(&mut consumer).await?;
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
    let resume = Resume { id_key: Some(id_key), unwatched_after_ms: Some(unwatched_after_ms) };
    serve.append_resume(resume).await?;
    if history_lost {
        tokio::task::block_in_place(|| serve.store.set_history_lost(false))?;
    }
    tracing::info!(prefix = serve.subjects.prefix(), "serving");

    let result = serve
        .run_loop(
            &consumer,
            Endpoints { state: state_endpoint, fleet: fleet_endpoint, partitions: partitions_endpoint },
            &mut confirmed,
            (&mut tick_results, &mut snapshots_done),
            shutdown,
        )
        .await;
    serve.shutdown(publisher, dlq_task, confirmed, result).await
}
