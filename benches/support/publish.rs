//! Filling a stream for a benchmark (included by `#[path]`): acknowledged publishes, a window at a
//! time — a burst of a million plain publishes outruns what the server buffers for a stream.

use async_nats::jetstream;

/// Publishes every `(subject, payload)` and waits for the stream to confirm each, 1 000 in flight.
pub async fn publish_acked(js: &jetstream::Context, messages: impl IntoIterator<Item = (String, Vec<u8>)>) {
    let mut messages = messages.into_iter().peekable();
    while messages.peek().is_some() {
        let mut acks = Vec::with_capacity(1000);
        for (subject, payload) in messages.by_ref().take(1000) {
            acks.push(js.publish(subject, payload.into()).await.unwrap());
        }
        for ack in acks {
            ack.await.unwrap();
        }
    }
}
