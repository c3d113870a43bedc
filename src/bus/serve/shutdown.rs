//! Stopping: the groups in flight made durable and acknowledged, the publisher and the DLQ task
//! drained for a while, a final checkpoint — all bounded by a watchdog, so a shutdown ends even if
//! what it waits for never answers.

use super::*;

/// How long shutdown waits for the publisher to confirm what is left (the rest stays in the
/// outbox and is published on the next start).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a shutdown may take, whatever it waits for: past it, vigil exits at once with
/// status 2. Everything it acknowledged is durable by then; only the final checkpoint is skipped,
/// and the next start replays the log tail instead.
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(60);

impl Serve {
    /// Stops: lets the publisher confirm what it can, clears that from the outbox, checkpoints.
    pub(super) async fn shutdown(
        self,
        publisher: tokio::task::JoinHandle<()>,
        dlq_task: tokio::task::JoinHandle<()>,
        confirmed: mpsc::UnboundedReceiver<Vec<OutboxKey>>,
        result: Result<(), BusError>,
    ) -> Result<(), BusError> {
        let limit = fault::shutdown_limit(SHUTDOWN_LIMIT);
        if let Err(e) = &result
            && e.goes_on_as_standby()
        {
            // Not a shutdown: the process goes on as a standby, so no watchdog may end it later;
            // the stop is bounded here instead, and one that overruns is fatal.
            tracing::info!(why = %crate::report::Chain(e), "stepping down: stopping the loop");
            // A planned handover: the loop appends nothing more, so the successor may take over
            // now, while this one drains and checkpoints.
            if matches!(e, BusError::HandingOver(_)) {
                self.held.release().await;
            }
            return match tokio::time::timeout(limit, self.stop(publisher, dlq_task, confirmed, result)).await {
                Ok(stopped) => stopped,
                Err(_) => Err(BusError::StepDownOverran(limit)),
            };
        }
        tracing::info!("shutting down");
        if let Err(e) = &result {
            tracing::error!(error = %crate::report::Chain(e), "stopping after an error");
        }
        watchdog(limit);
        // Gone from the members first, so the standbys see who should take over without it.
        self.membership.leave().await;
        // The loop appends nothing more: a standby may take over now, while this one drains its
        // publisher (outputs it publishes from here on are the successor's too, under the same
        // ids) and checkpoints its own copy.
        self.held.release().await;
        self.stop(publisher, dlq_task, confirmed, result).await
    }

    /// What a stop does, once its bound is set.
    async fn stop(
        mut self,
        publisher: tokio::task::JoinHandle<()>,
        dlq_task: tokio::task::JoinHandle<()>,
        mut confirmed: mpsc::UnboundedReceiver<Vec<OutboxKey>>,
        result: Result<(), BusError>,
    ) -> Result<(), BusError> {
        fault::stall_shutdown().await;
        // Groups still in flight: once durable, their messages are acknowledged and their outputs
        // go to the publisher like any others.
        // A write that failed wins over stepping down: the process must not go on as a standby
        // on a store it cannot write.
        let stepping_down = result.as_ref().is_err_and(BusError::goes_on_as_standby);
        let result = match self.wait_durable().await {
            Ok(()) => result,
            Err(e) if stepping_down => Err(e),
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
        if stepping_down && let Err(e) = closed {
            return Err(e.into());
        }
        result?;
        closed?;
        tracing::info!("stopped");
        Ok(())
    }
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
