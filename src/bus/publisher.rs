//! The outbox publisher: sends outputs to the output stream and reports which ones the server
//! confirmed, so the serve loop can clear them from the outbox.
//!
//! Every output is published with its id as `Nats-Msg-Id`; the stream's de-duplication window makes
//! a re-publish (after a crash, or a retry after a lost confirmation) a no-op. A publish that fails
//! is retried with backoff until it succeeds: an output is never dropped, only delayed.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage as Publish};
use tokio::sync::mpsc;

use crate::bus::fault;
use crate::bus::headers::{self, HeaderText};
use crate::bus::subjects::Subjects;
use crate::core::wire;
use crate::store::{OutboxKey, Pending};

/// Outputs sent before their confirmations are awaited: a tenth of the 5 000 publish
/// confirmations async-nats lets one JetStream context wait for at once (`max_ack_inflight`).
const PUBLISH_WINDOW: usize = 500;

/// Outputs handed to the publisher, and when (for the `vigil_publish_seconds` metric: how long an
/// output takes from durable to confirmed by the output stream).
pub struct Released {
    pub at: Instant,
    pub outputs: Vec<Pending>,
}

impl Released {
    pub fn now(outputs: Vec<Pending>) -> Released {
        Released { at: Instant::now(), outputs }
    }
}

/// Publishes batches from `outbox` until it closes; reports confirmed keys on `confirmed`.
pub async fn run(
    js: jetstream::Context,
    subjects: Subjects,
    mut outbox: mpsc::UnboundedReceiver<Released>,
    confirmed: mpsc::UnboundedSender<Vec<OutboxKey>>,
) {
    while let Some(first) = outbox.recv().await {
        let mut released = vec![first.at];
        let mut batch = first.outputs;
        // Whatever else is already waiting goes in the same round trip.
        while let Ok(more) = outbox.try_recv() {
            released.push(more.at);
            batch.extend(more.outputs);
        }
        if batch.is_empty() {
            continue;
        }
        // Send a window of them, then wait for its confirmations: one round trip per window, not
        // per output. The window stays well inside what the client lets wait for confirmation at
        // once: past that, a send waits for a permit that only the window's own unawaited
        // confirmations hold, and nothing is published again.
        let mut keys = Vec::with_capacity(batch.len());
        for window in batch.chunks(PUBLISH_WINDOW) {
            let mut waiting = Vec::with_capacity(window.len());
            for p in window {
                waiting.push(send(&js, &subjects, p).await);
            }
            for (p, sent) in window.iter().zip(waiting) {
                let ok = match sent {
                    Ok(ack) => ack.await.map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
                if let Err(e) = ok {
                    tracing::warn!(id = %p.output.id, error = %e, "publishing an output failed; retrying");
                    publish_until_confirmed(&js, &subjects, p).await;
                }
                metrics::counter!("vigil_outputs_published_total").increment(1);
                keys.push(p.key);
            }
        }
        fault::after_publish();
        for at in released {
            metrics::histogram!("vigil_publish_seconds").record(at.elapsed().as_secs_f64());
        }
        if confirmed.send(keys).is_err() {
            return;
        }
    }
}

async fn send(
    js: &jetstream::Context,
    subjects: &Subjects,
    p: &Pending,
) -> Result<jetstream::context::PublishAckFuture, String> {
    let payload = wire::encode_output_msgpack(&p.output);
    let message = headers::with_message_id(Publish::build().payload(payload.into()), &HeaderText::escape(&p.output.id));
    js.send_publish(subjects.output(&p.output), message).await.map_err(|e| e.to_string())
}

async fn publish_until_confirmed(js: &jetstream::Context, subjects: &Subjects, p: &Pending) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let result = match send(js, subjects, p).await {
            Ok(ack) => ack.await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match result {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(id = %p.output.id, error = %e, retry_in = ?backoff, "publishing an output failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
