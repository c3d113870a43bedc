//! The dead-letter queue: every input vigil refuses is published to `<prefix>.dlq` with the reason
//! in its headers, so nothing a producer sends is dropped silently.
//!
//! Two promises shape this module. A DLQ message is always publishable: its headers are
//! [`HeaderText`] (one line of printable ASCII each) and its copy of the producer's bytes is cut so
//! that the whole message fits the server's maximum payload — a `Vigil-Truncated` header then says
//! how long the original was. And dead-lettering never holds up the serve loop: rejections go
//! through a bounded queue to a task of their own, which sends them in batches (one round trip for
//! many) and retries a failed publish a few times; only when that queue is full, or the retries
//! are spent, does a rejection stay in the logs and metrics alone (`vigil_dlq_dropped_total`). The
//! original message stays in the input stream either way, and every rejection is counted
//! (`vigil_dlq_total`); the logs say at most 20 lines a second of each kind, and how many they
//! left out.

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::bus::headers::{self, HeaderText};
use crate::bus::intake::Rejection;

/// The headers of a DLQ message (`docs/SPEC.md` §5.3).
pub const HEADERS: &[&str] =
    &["Nats-Msg-Id", "Vigil-Reason", "Vigil-Error", "Vigil-Subject", "Vigil-Stream-Seq", "Vigil-Truncated"];

/// Rejections waiting for the DLQ task; beyond this many they are only logged and counted.
pub const QUEUE_CAPACITY: usize = 1024;

/// Publish attempts per DLQ message before it is given up (about 3 s of backoff in all).
const ATTEMPTS: u32 = 6;

/// One refused input, as the DLQ will show it. Bounded whatever the producer sent: the subject
/// and the error are header text already, and the copy of the payload is at most `copy_max`
/// bytes of its own (so a queued letter never keeps a connection's read buffer alive).
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// The subject the producer published on.
    subject: HeaderText,
    /// The producer's bytes, or their first `copy_max`.
    payload: Bytes,
    /// How long the producer's payload was.
    original_len: usize,
    /// Its input stream sequence.
    seq: u64,
    code: &'static str,
    detail: HeaderText,
}

/// A DLQ message, ready to publish.
#[derive(Clone, Debug)]
pub struct DlqMessage {
    pub headers: HeaderMap,
    pub payload: Bytes,
}

impl DlqMessage {
    /// The size the server counts against its maximum payload.
    pub fn wire_len(&self) -> usize {
        headers::wire_len(&self.headers) + self.payload.len()
    }

    fn publish(self) -> PublishMessage {
        PublishMessage::build().headers(self.headers).payload(self.payload)
    }
}

impl DeadLetter {
    /// The letter for input `seq`, published on `subject` with `payload`, refused for
    /// `rejection`; it keeps at most `copy_max` bytes of the payload.
    pub fn new(subject: &str, payload: &Bytes, seq: u64, rejection: Rejection, copy_max: usize) -> DeadLetter {
        // Always a copy: a message's `Bytes` shares the connection's read buffer, which a small
        // message read after a large one keeps alive whole.
        DeadLetter {
            subject: HeaderText::escape(subject),
            payload: Bytes::copy_from_slice(&payload[..payload.len().min(copy_max)]),
            original_len: payload.len(),
            seq,
            code: rejection.code,
            detail: HeaderText::escape(&rejection.detail),
        }
    }

    /// The DLQ message: the reason, the error, the subject and the stream sequence in headers, the
    /// producer's bytes as payload — cut so that headers and payload together fit `limit` (the
    /// server's maximum payload). `Nats-Msg-Id` is the input's position in stream `stream_id`, so
    /// a redelivered input is dead-lettered once.
    pub fn message(&self, stream_id: &str, limit: usize) -> DlqMessage {
        let mut h = HeaderMap::new();
        let dedup = format!("dlq-{stream_id}-{}", self.seq);
        headers::insert(&mut h, "Nats-Msg-Id", &HeaderText::escape(&dedup));
        headers::insert(&mut h, "Vigil-Reason", &HeaderText::escape(self.code));
        headers::insert(&mut h, "Vigil-Error", &self.detail);
        headers::insert(&mut h, "Vigil-Subject", &self.subject);
        headers::insert(&mut h, "Vigil-Stream-Seq", &HeaderText::escape(&self.seq.to_string()));
        let fits = |h: &HeaderMap| limit.saturating_sub(headers::wire_len(h));
        let mut payload = self.payload.clone();
        if self.original_len > payload.len() || payload.len() > fits(&h) {
            let original = HeaderText::escape(&self.original_len.to_string());
            headers::insert(&mut h, "Vigil-Truncated", &original);
            payload.truncate(fits(&h));
        }
        DlqMessage { headers: h, payload }
    }
}

/// The serve loop's end of the DLQ: hands rejections to the DLQ task without ever waiting.
#[derive(Clone)]
pub struct Dlq {
    queue: mpsc::Sender<DeadLetter>,
}

/// Where the DLQ task publishes, and how big its messages may be.
pub struct Target {
    pub js: jetstream::Context,
    pub subject: String,
    /// The input stream's identity, for the `Nats-Msg-Id`.
    pub stream_id: String,
}

impl Dlq {
    /// Starts the DLQ task; it runs until every [`Dlq`] handle is dropped and its queue is empty.
    pub fn start(target: Target) -> (Dlq, tokio::task::JoinHandle<()>) {
        let (queue, letters) = mpsc::channel(QUEUE_CAPACITY);
        (Dlq { queue }, tokio::spawn(run(target, letters)))
    }

    /// Counts and logs a rejection and queues it for the DLQ; never waits.
    pub fn send(&self, letter: DeadLetter) {
        metrics::counter!("vigil_dlq_total", "reason" => letter.code).increment(1);
        if let Some(since) = REJECTED_LOG.admit() {
            tracing::warn!(
                subject = %letter.subject,
                seq = letter.seq,
                reason = letter.code,
                detail = %letter.detail,
                not_logged_since_last = since,
                "dead-lettered an input"
            );
        }
        if let Err(e) = self.queue.try_send(letter) {
            let letter = match e {
                mpsc::error::TrySendError::Full(l) | mpsc::error::TrySendError::Closed(l) => l,
            };
            dropped(letter.seq, "the DLQ queue is full");
        }
    }
}

/// DLQ messages sent before their confirmations are awaited: one round trip for many, so the task
/// keeps up with a flood of rejections instead of dropping them.
const PUBLISH_BATCH: usize = 256;

async fn run(target: Target, mut letters: mpsc::Receiver<DeadLetter>) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    while letters.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        let mut waiting = Vec::with_capacity(batch.len());
        for letter in &batch {
            waiting.push(send(&target, letter).await);
        }
        for (letter, sent) in batch.iter().zip(waiting) {
            let confirmed = match sent {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            if let Err(e) = confirmed {
                tracing::warn!(seq = letter.seq, error = %e, "publishing to the DLQ failed; retrying");
                retry(&target, letter).await;
            }
        }
        batch.clear();
    }
}

async fn send(target: &Target, letter: &DeadLetter) -> Result<jetstream::context::PublishAckFuture, String> {
    // The server's limit, as negotiated on the current connection.
    let message = letter.message(&target.stream_id, target.js.client().max_payload());
    target.js.send_publish(target.subject.clone(), message.publish()).await.map_err(|e| e.to_string())
}

/// Publishes one DLQ message again, a few times with backoff, then gives it up.
async fn retry(target: &Target, letter: &DeadLetter) {
    let mut backoff = Duration::from_millis(100);
    for attempt in 2..=ATTEMPTS {
        tokio::time::sleep(backoff).await;
        backoff *= 2;
        let confirmed = match send(target, letter).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match confirmed {
            Ok(()) => return,
            Err(e) if attempt == ATTEMPTS => dropped(letter.seq, &e),
            Err(e) => tracing::warn!(seq = letter.seq, error = %e, "publishing to the DLQ failed; retrying"),
        }
    }
}

/// A rejection that will not reach the DLQ (`vigil_dlq_dropped_total`), logged through
/// [`DROPPED_LOG`].
fn dropped(seq: u64, why: &str) {
    metrics::counter!("vigil_dlq_dropped_total").increment(1);
    if let Some(since) = DROPPED_LOG.admit() {
        tracing::error!(
            seq,
            why,
            not_logged_since_last = since,
            "a rejection did not reach the DLQ; it is only in the logs and metrics"
        );
    }
}

/// How many log lines of one kind a second: a flood of bad inputs must not flood the logs too.
const LOG_LINES_PER_SECOND: u64 = 20;

static REJECTED_LOG: Throttle = Throttle::new();
static DROPPED_LOG: Throttle = Throttle::new();

/// At most [`LOG_LINES_PER_SECOND`] lines a second; each line says how many were left out since
/// the last one. (The counters count every one.)
struct Throttle {
    state: std::sync::Mutex<Option<(Instant, u64, u64)>>,
}

impl Throttle {
    const fn new() -> Throttle {
        Throttle { state: std::sync::Mutex::new(None) }
    }

    /// `Some(left out since the last line)` if this one may be logged.
    fn admit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (started, logged, skipped) = state.get_or_insert((now, 0, 0));
        if now.duration_since(*started) >= Duration::from_secs(1) {
            (*started, *logged) = (now, 0);
        }
        if *logged < LOG_LINES_PER_SECOND {
            *logged += 1;
            Some(std::mem::take(skipped))
        } else {
            *skipped += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(payload: Vec<u8>, copy_max: usize) -> DeadLetter {
        let rejection = Rejection::new("too_large", "1048000 bytes; at most 65536 are accepted");
        DeadLetter::new("vigil.in.heartbeat.ws-a", &payload.into(), 7, rejection, copy_max)
    }

    #[test]
    fn a_flood_of_log_lines_is_cut_to_a_few_a_second_and_says_how_many_it_left_out() {
        let throttle = Throttle::new();
        let admitted: Vec<_> = (0..100).filter_map(|_| throttle.admit()).collect();
        assert_eq!(admitted.len() as u64, LOG_LINES_PER_SECOND);
        assert!(admitted.iter().all(|skipped| *skipped == 0));
        // A second later the next line reports the 80 left out.
        *throttle.state.lock().unwrap() = Some((Instant::now() - Duration::from_secs(2), 20, 80));
        assert_eq!(throttle.admit(), Some(80));
    }

    #[test]
    fn a_copy_that_fits_is_whole_and_says_nothing_about_truncation() {
        let m = letter(b"small".to_vec(), 64 << 10).message("VIGIL_IN@1", 1 << 20);
        assert_eq!(m.payload.as_ref(), b"small");
        assert!(m.headers.get("Vigil-Truncated").is_none());
        assert_eq!(m.headers.get("Nats-Msg-Id").unwrap().as_str(), "dlq-VIGIL_IN@1-7");
    }

    #[test]
    fn an_oversized_copy_is_cut_to_fit_the_server_and_says_how_long_it_was() {
        let big = letter(vec![0x90; 1_048_570], usize::MAX);
        let m = big.message("VIGIL_IN@1", 1 << 20);
        assert!(m.wire_len() <= 1 << 20, "{} bytes", m.wire_len());
        assert_eq!(m.headers.get("Vigil-Truncated").unwrap().as_str(), "1048570");
        let tiny = big.message("VIGIL_IN@1", 100);
        assert!(tiny.payload.is_empty(), "headers alone over the limit: no copy at all");
    }

    #[test]
    fn a_letter_keeps_at_most_its_copy_limit_of_its_own() {
        // A queued letter must not keep a megabyte message alive: it copies what it keeps.
        let original = Bytes::from(vec![0x90; 1_000_000]);
        let rejection = Rejection::new("too_large", "x".repeat(100_000));
        let letter = DeadLetter::new("vigil.in.heartbeat.ws-a", &original, 7, rejection, 64 << 10);
        assert_eq!(letter.payload.len(), 64 << 10);
        assert!(!std::ptr::eq(letter.payload.as_ptr(), original.as_ptr()), "a copy, not a slice of the original");
        let small = Bytes::from(vec![1u8; 100]);
        let kept = DeadLetter::new("s", &small.slice(..10), 8, Rejection::new("syntax", ""), 64 << 10);
        assert!(!std::ptr::eq(kept.payload.as_ptr(), small.as_ptr()), "a small one is copied too");
        assert!(letter.detail.as_str().len() <= crate::bus::headers::HEADER_TEXT_MAX);
        let m = letter.message("VIGIL_IN@1", 1 << 20);
        assert_eq!(m.payload.len(), 64 << 10);
        assert_eq!(m.headers.get("Vigil-Truncated").unwrap().as_str(), "1000000");
    }
}
