//! Who may act on the log: one instance at a time owns it, through a JetStream KV lease, and every
//! record it appends is fenced by its epoch — so two vigils started on one stream (by mistake, or
//! a standby waiting for a crashed owner) never both decide, and an owner paused past its lease
//! (SIGSTOP, a stuck disk, a GC-like stall) cannot append a tick or a snapshot once another has
//! taken over (SPEC §4 "ownership").
//!
//! - The lease is one key in the `<PREFIX>_LEASES` bucket, whose `max_age` is the lease time: the
//!   owner creates it (create fails while another holds it), renews it with `update` against its
//!   revision every quarter of the lease, and gives it up on a clean stop. Per-key TTLs are not
//!   used (async-nats 0.51 drops them on `update`). An owner that has not renewed for the lease
//!   time less a margin stops acting at once, by its own monotonic clock, whatever it is doing.
//! - The epoch is a record on `<prefix>.log.epoch` in the input stream, appended by each new owner
//!   with `Nats-Expected-Last-Subject-Sequence` against the previous epoch record: its stream
//!   position is the fence. Every record the owner appends carries
//!   `Nats-Expected-Last-Subject-Sequence: <epoch>` and
//!   `Nats-Expected-Last-Subject-Sequence-Subject: <prefix>.log.epoch` (nats-server ≥ 2.11), so
//!   once a successor's epoch is in the stream the server refuses the old owner's appends
//!   ("wrong last sequence", 10071) and it steps down. Safety rests on that server-side check
//!   alone; the lease only decides who tries.
//!
//! Outputs are not fenced and need not be: those caused by an input are the same for whoever
//! folds it (same ids, de-duplicated by the output stream), and those caused by a tick exist only
//! once the tick, a fenced record, is in the stream.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::bus::headers::{self, HeaderText};
use crate::bus::{BusError, NatsError};

/// The header naming the subject `Nats-Expected-Last-Subject-Sequence` is checked against (no
/// constant for it in async-nats 0.51).
pub const EXPECTED_SUBJECT_HEADER: &str = "Nats-Expected-Last-Subject-Sequence-Subject";

/// The lease key of the one partition there is today (the multi-partition design keeps one key
/// per partition: `p.<k>`).
const LEASE_KEY: &str = "p.0";

/// How often a standby tries to take the lease.
const TRY_EVERY: Duration = Duration::from_millis(500);

/// Who holds a lease: the instance's name (for people) and its data directory's token (for
/// safety: drawn once per directory, and only the one process that holds the directory — sled
/// locks it — can present it; so two instances started under one name never take each other's
/// lease, while a restarted one takes its own back at once).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub instance: String,
    pub token: String,
}

/// What a lease's validity is, as the renewing task last left it.
#[derive(Debug)]
struct Validity {
    /// By the monotonic clock: past it, the lease may have expired on the server.
    until: Instant,
    lost: bool,
}

/// A lease held: valid while it is renewed in time. Dropping it stops renewing (the lease then
/// expires); [`Lease::release`] gives it up at once.
pub struct Lease {
    kv: kv::Store,
    validity: Arc<Mutex<Validity>>,
    revision: Arc<Mutex<u64>>,
    renewing: tokio::task::JoinHandle<()>,
}

/// The lease time less this share of it is how long a renewal counts for: the server counts the
/// lease from when it stored the renewal, later than vigil sent it.
const MARGIN_DIVISOR: u32 = 5;

impl Lease {
    /// Takes the lease, waiting as a standby while another instance holds it (saying who, once).
    /// Returns `None` if `stop` completes first.
    pub async fn acquire(
        kv: &kv::Store,
        holder: &Holder,
        ttl: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<Option<Lease>, BusError> {
        let value = Bytes::from(serde_json::to_vec(holder).expect("a holder always encodes"));
        tokio::pin!(stop);
        let mut said = None;
        loop {
            let sent = Instant::now();
            match kv.create(LEASE_KEY, value.clone()).await {
                Ok(revision) => return Ok(Some(Lease::held(kv.clone(), value, revision, sent, ttl))),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => match kv.entry(LEASE_KEY).await {
                    // Ours: held by this directory before a crash or a restart. Taken back
                    // against its revision, so a standby that took it meanwhile wins.
                    Ok(Some(entry)) if entry.value == value => {
                        let sent = Instant::now();
                        if let Ok(revision) = kv.update(LEASE_KEY, value.clone(), entry.revision).await {
                            tracing::info!("took back this directory's own lease");
                            return Ok(Some(Lease::held(kv.clone(), value, revision, sent, ttl)));
                        }
                    }
                    Ok(entry) => {
                        let owner = entry
                            .and_then(|e| serde_json::from_slice::<Holder>(&e.value).ok())
                            .map_or_else(|| "?".to_string(), |h| h.instance);
                        if said.as_ref() != Some(&owner) {
                            tracing::info!(owner = %owner, "standby: another instance owns the log");
                            said = Some(owner);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read the lease; retrying"),
                },
                Err(e) => tracing::warn!(error = %e, "cannot take the lease; retrying"),
            }
            tokio::select! {
                _ = &mut stop => return Ok(None),
                _ = tokio::time::sleep(TRY_EVERY) => {}
            }
        }
    }

    fn held(kv: kv::Store, value: Bytes, revision: u64, sent: Instant, ttl: Duration) -> Lease {
        let counts_for = ttl - ttl / MARGIN_DIVISOR;
        let validity = Arc::new(Mutex::new(Validity { until: sent + counts_for, lost: false }));
        let revision = Arc::new(Mutex::new(revision));
        let renewing = tokio::spawn(renew(kv.clone(), value, revision.clone(), validity.clone(), ttl, counts_for));
        Lease { kv, validity, revision, renewing }
    }

    /// A view of whether the lease holds, for the loop that acts under it.
    pub fn view(&self) -> LeaseView {
        LeaseView(self.validity.clone())
    }

    fn valid(&self) -> bool {
        self.view().valid()
    }

    /// Gives the lease up, so a standby takes over at once (only if it is still ours).
    pub async fn release(self) {
        self.renewing.abort();
        let revision = *self.revision.lock().unwrap_or_else(|e| e.into_inner());
        if self.valid()
            && let Err(e) = self.kv.delete_expect_revision(LEASE_KEY, Some(revision)).await
        {
            tracing::warn!(error = %e, "cannot give the lease up; it expires by itself");
        }
    }
}

/// Whether a lease still holds, as seen by whoever acts under it.
#[derive(Clone, Debug)]
pub struct LeaseView(Arc<Mutex<Validity>>);

impl LeaseView {
    /// Renewed in time and not taken by another.
    pub fn valid(&self) -> bool {
        let v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        !v.lost && Instant::now() < v.until
    }

    /// Completes once the lease no longer holds (looked at every 100 ms).
    pub async fn lost(&self) {
        while self.valid() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewing.abort();
    }
}

/// Renews every quarter of the lease; marks it lost when another holds it (a revision that is not
/// ours) or when no renewal succeeded in time.
async fn renew(
    kv: kv::Store,
    value: Bytes,
    revision: Arc<Mutex<u64>>,
    validity: Arc<Mutex<Validity>>,
    ttl: Duration,
    counts_for: Duration,
) {
    loop {
        tokio::time::sleep(ttl / 4).await;
        let sent = Instant::now();
        let current = *revision.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = tokio::time::timeout(ttl / 4, kv.update(LEASE_KEY, value.clone(), current)).await;
        let mut v = validity.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            // Renewed against our own revision: nobody else can have held it meanwhile.
            Ok(Ok(next)) => {
                *revision.lock().unwrap_or_else(|e| e.into_inner()) = next;
                v.until = sent + counts_for;
            }
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                tracing::warn!("the lease was taken by another instance");
                v.lost = true;
                return;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot renew the lease; retrying"),
            Err(_) => tracing::warn!("renewing the lease timed out; retrying"),
        }
        if Instant::now() >= v.until {
            tracing::warn!("the lease could not be renewed in time");
            v.lost = true;
            return;
        }
    }
}

/// Creates or updates the lease bucket: history 1, `max_age` the lease time.
pub async fn declare_bucket(
    js: &jetstream::Context,
    bucket: &str,
    ttl: Duration,
    replicas: usize,
) -> Result<kv::Store, BusError> {
    let config = kv::Config {
        bucket: bucket.to_string(),
        description: "vigil's leases: who owns the log".into(),
        history: 1,
        max_age: ttl,
        num_replicas: replicas,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    match js.create_key_value(config.clone()).await {
        Ok(store) => Ok(store),
        Err(created) => js.update_key_value(config).await.map_err(|updated| BusError::Declare {
            what: format!("the lease bucket {bucket}"),
            source: format!("{created}; updating it: {updated}").into(),
        }),
    }
}

/// The epoch an owner acts under: the stream position of its epoch record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub subject: String,
    pub seq: u64,
}

/// An epoch record's body.
#[derive(Debug, Serialize, Deserialize)]
struct EpochRecord {
    v: u32,
    instance: String,
    token: String,
}

/// What taking an epoch found.
#[derive(Debug)]
pub struct Epoch {
    pub fence: Fence,
    /// The previous epoch record's position (0: none).
    pub previous: u64,
}

/// Appends a new epoch record on `subject`, fenced against the last one: fails (another instance
/// appended one meanwhile) rather than split the log between two owners.
pub async fn take_epoch(
    js: &jetstream::Context,
    stream: &jetstream::stream::Stream,
    subject: &str,
    holder: &Holder,
) -> Result<Epoch, BusError> {
    let doing = "appending an epoch record";
    let previous = match stream.get_last_raw_message_by_subject(subject).await {
        Ok(m) => m.sequence,
        Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => 0,
        Err(e) => return Err(BusError::nats(doing, e)),
    };
    let body = EpochRecord { v: 1, instance: holder.instance.clone(), token: holder.token.clone() };
    let payload = serde_json::to_vec(&body).expect("an epoch record always encodes");
    let publish =
        jetstream::message::PublishMessage::build().payload(payload.into()).expected_last_subject_sequence(previous);
    let ack = js.send_publish(subject.to_string(), publish).await.map_err(|e| BusError::nats(doing, e))?;
    match ack.await {
        Ok(ack) => Ok(Epoch { fence: Fence { subject: subject.to_string(), seq: ack.sequence }, previous }),
        Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
            Err(BusError::SteppedDown("another instance appended an epoch first"))
        }
        Err(e) => Err(BusError::nats(doing, e)),
    }
}

/// Why an append of vigil's own record failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another instance's epoch is in the stream: this one no longer owns the log.
    #[error("refused: another instance owns the log now (its epoch is in the stream)")]
    Fenced,
    #[error(transparent)]
    Nats(NatsError),
}

/// A message of vigil's own, fenced by `fence`.
pub fn fenced(payload: Bytes, fence: &Fence) -> jetstream::message::PublishMessage {
    let mut headers = async_nats::HeaderMap::new();
    headers::insert(&mut headers, EXPECTED_SUBJECT_HEADER, &HeaderText::escape(&fence.subject));
    jetstream::message::PublishMessage::build()
        .payload(payload)
        .headers(headers)
        .expected_last_subject_sequence(fence.seq)
}

/// Sorts a publish failure into fenced or not.
pub fn append_error(e: jetstream::context::PublishError) -> AppendError {
    if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence {
        AppendError::Fenced
    } else {
        AppendError::Nats(e.into())
    }
}
