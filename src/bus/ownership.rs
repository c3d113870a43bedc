//! Who may act on the log: one instance at a time owns it, through a JetStream KV lease, and every
//! record it appends is fenced by its epoch — so two vigils started on one stream (by mistake, or
//! a standby waiting for a crashed owner) never both decide, and an owner paused past its lease
//! (SIGSTOP, a stuck disk, a GC-like stall) cannot append a tick or a snapshot once another has
//! taken over (SPEC §4 "ownership").
//!
//! - The lease of a partition is its key `p.<partition>` in the `<PREFIX>_LEASES` bucket, whose `max_age` is the lease time: the
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
use crate::bus::placement::Membership;
use crate::bus::{BusError, NatsError};

/// The header naming the subject `Nats-Expected-Last-Subject-Sequence` is checked against (no
/// constant for it in async-nats 0.51).
pub const EXPECTED_SUBJECT_HEADER: &str = "Nats-Expected-Last-Subject-Sequence-Subject";

/// How often a standby tries to take the lease.
const TRY_EVERY: Duration = Duration::from_millis(250);

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
    /// When the loop acting under the lease last said it is alive ([`LeaseView::touch`]): a loop
    /// stuck longer than a renewal counts for lets the lease lapse, so a standby takes over.
    touched: Instant,
}

/// A lease held: valid while it is renewed in time. Dropping it stops renewing (the lease then
/// expires); [`Lease::release`] gives it up at once.
pub struct Lease {
    kv: kv::Store,
    key: String,
    holder: Holder,
    validity: Arc<Mutex<Validity>>,
    revision: Arc<Mutex<u64>>,
    renewing: Option<tokio::task::JoinHandle<()>>,
}

/// The lease time less this share of it is how long a renewal counts for: the server counts the
/// lease from when it stored the renewal, later than vigil sent it.
const MARGIN_DIVISOR: u32 = 5;

/// Whether a lease entry's value names `holder`'s directory (the instance name may change).
fn is_ours(value: &[u8], holder: &Holder) -> bool {
    serde_json::from_slice::<Holder>(value).is_ok_and(|h| h.token == holder.token)
}

impl Lease {
    /// Takes the lease, waiting as a standby while another instance holds it (saying who, once),
    /// and trying a vacant one when `membership` says this instance may (see
    /// [`crate::bus::placement`]). The lease lasts what the bucket's `max_age` says (the last
    /// instance to start set it), not necessarily `configured`. Returns `None` if `stop` completes
    /// first.
    pub async fn acquire(
        kv: &kv::Store,
        (key, partition): (&str, u32),
        holder: &Holder,
        configured: Duration,
        membership: &Membership,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<Option<Lease>, BusError> {
        tokio::pin!(stop);
        let mut said: Option<String> = None;
        let mut vacant_since: Option<Instant> = None;
        loop {
            let entry = kv.entry(key).await;
            let held_by = match &entry {
                Ok(Some(e)) if e.operation == kv::Operation::Put && !is_ours(&e.value, holder) => {
                    Some(serde_json::from_slice::<Holder>(&e.value).map_or_else(|_| "?".to_string(), |h| h.instance))
                }
                _ => None,
            };
            match (held_by, entry) {
                (Some(owner), _) => {
                    vacant_since = None;
                    if said.as_ref() != Some(&owner) {
                        tracing::info!(owner = %owner, lease = key, "standby: another instance owns the log");
                        said = Some(owner);
                    }
                }
                (None, Ok(entry)) => {
                    // Given up (a delete marker): its holder lives on and stays a candidate.
                    // Expired (no entry): the holder is likely dead.
                    let ours = entry.as_ref().is_some_and(|e| e.operation == kv::Operation::Put);
                    let gone = if entry.is_none() { said.as_deref() } else { None };
                    let since = *vacant_since.get_or_insert_with(Instant::now);
                    if ours || membership.may_take(partition, since.elapsed(), gone).await {
                        match Lease::try_acquire(kv, key, holder, configured).await {
                            Attempt::Taken(lease) => return Ok(Some(*lease)),
                            Attempt::HeldBy(_) | Attempt::Failed => {}
                        }
                    }
                }
                (None, Err(e)) => tracing::warn!(error = %e, lease = key, "cannot read the lease; retrying"),
            }
            tokio::select! {
                _ = &mut stop => return Ok(None),
                _ = tokio::time::sleep(TRY_EVERY) => {}
            }
        }
    }

    /// One try at taking the lease at a term's start: this directory's own lease is taken back, a
    /// vacant one only by the partition's preferred owner (see [`crate::bus::placement`]; an
    /// owner that just handed the partition over must not take it straight back).
    pub async fn try_at_start(
        kv: &kv::Store,
        (key, partition): (&str, u32),
        holder: &Holder,
        configured: Duration,
        membership: &Membership,
    ) -> Attempt {
        match kv.entry(key).await {
            Ok(Some(e)) if e.operation == kv::Operation::Put && is_ours(&e.value, holder) => {}
            Ok(Some(e)) if e.operation == kv::Operation::Put => return Attempt::Failed,
            Ok(_) if membership.may_take(partition, Duration::ZERO, None).await => {}
            _ => return Attempt::Failed,
        }
        Lease::try_acquire(kv, key, holder, configured).await
    }

    /// One try at taking the lease (see [`Lease::acquire`]).
    pub async fn try_acquire(kv: &kv::Store, key: &str, holder: &Holder, configured: Duration) -> Attempt {
        let value = Bytes::from(serde_json::to_vec(holder).expect("a holder always encodes"));
        let ttl = match kv.status().await {
            Ok(status) if status.max_age() > Duration::ZERO => status.max_age(),
            _ => configured,
        };
        if ttl != configured {
            tracing::warn!(bucket_max_age = ?ttl, ?configured, "the lease bucket's max_age is not this instance's lease");
        }
        let sent = Instant::now();
        match kv.create(key, value.clone()).await {
            Ok(revision) => Attempt::Taken(Box::new(Lease::held(kv.clone(), key, holder, revision, sent, ttl))),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => match kv.entry(key).await {
                // Ours: held by this directory before a crash or a restart. Taken back against
                // its revision, so a standby that took it meanwhile wins.
                Ok(Some(entry)) if is_ours(&entry.value, holder) => {
                    let sent = Instant::now();
                    match kv.update(key, value, entry.revision).await {
                        Ok(revision) => {
                            tracing::info!(lease = key, "took back this directory's own lease");
                            Attempt::Taken(Box::new(Lease::held(kv.clone(), key, holder, revision, sent, ttl)))
                        }
                        Err(_) => Attempt::Failed,
                    }
                }
                Ok(entry) => Attempt::HeldBy(
                    entry
                        .and_then(|e| serde_json::from_slice::<Holder>(&e.value).ok())
                        .map_or_else(|| "?".to_string(), |h| h.instance),
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the lease; retrying");
                    Attempt::Failed
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot take the lease; retrying");
                Attempt::Failed
            }
        }
    }

    fn held(kv: kv::Store, key: &str, holder: &Holder, revision: u64, sent: Instant, ttl: Duration) -> Lease {
        let counts_for = ttl - ttl / MARGIN_DIVISOR;
        let validity =
            Arc::new(Mutex::new(Validity { until: sent + counts_for, lost: false, touched: Instant::now() }));
        let revision = Arc::new(Mutex::new(revision));
        let renewal = Renewal { kv: kv.clone(), key: key.to_string(), holder: holder.clone(), ttl, counts_for };
        let renewing = tokio::spawn(renewal.run(revision.clone(), validity.clone()));
        Lease { kv, key: key.to_string(), holder: holder.clone(), validity, revision, renewing: Some(renewing) }
    }

    /// A view of whether the lease holds, for the loop that acts under it.
    pub fn view(&self) -> LeaseView {
        LeaseView(self.validity.clone())
    }

    /// Gives the lease up, so a standby takes over at once (only if it is still ours).
    pub async fn release(mut self) {
        // The renewal stopped first, and waited for: one still in flight would move the revision
        // on, and the delete below would miss it.
        if let Some(renewing) = self.renewing.take() {
            renewing.abort();
            let _ = renewing.await;
        }
        let revision = *self.revision.lock().unwrap_or_else(|e| e.into_inner());
        if !self.view().valid() {
            return;
        }
        if self.kv.delete_expect_revision(&self.key, Some(revision)).await.is_ok() {
            return;
        }
        // A renewal that landed after its answer was given up on moved the revision on: the
        // entry says whether it is still ours.
        let deleted = match self.kv.entry(&self.key).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put && is_ours(&entry.value, &self.holder) => {
                self.kv.delete_expect_revision(&self.key, Some(entry.revision)).await.map_err(|e| e.to_string())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = deleted {
            tracing::warn!(error = %e, lease = self.key, "cannot give the lease up; it expires by itself");
        }
    }
}

/// What one try at taking the lease came to.
pub enum Attempt {
    Taken(Box<Lease>),
    /// Another instance holds it (its name).
    HeldBy(String),
    /// NATS did not answer; try again.
    Failed,
}

/// Whether a lease still holds, as seen by whoever acts under it.
#[derive(Clone, Debug)]
pub struct LeaseView(Arc<Mutex<Validity>>);

impl LeaseView {
    /// The view of a lease not held (yet): never valid.
    pub fn not_held() -> LeaseView {
        LeaseView(Arc::new(Mutex::new(Validity { until: Instant::now(), lost: true, touched: Instant::now() })))
    }

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

    /// Says the loop acting under the lease is alive: the lease is renewed only while it is.
    pub fn touch(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).touched = Instant::now();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(renewing) = &self.renewing {
            renewing.abort();
        }
    }
}

/// What renewing a lease needs.
struct Renewal {
    kv: kv::Store,
    key: String,
    holder: Holder,
    ttl: Duration,
    counts_for: Duration,
}

impl Renewal {
    /// Renews every quarter of the lease, while the loop acting under it is alive; marks it lost
    /// when another holds it or when no renewal succeeded in time.
    async fn run(self, revision: Arc<Mutex<u64>>, validity: Arc<Mutex<Validity>>) {
        let value = Bytes::from(serde_json::to_vec(&self.holder).expect("a holder always encodes"));
        loop {
            tokio::time::sleep(self.ttl / 4).await;
            let stuck = validity.lock().unwrap_or_else(|e| e.into_inner()).touched.elapsed() > self.counts_for;
            if stuck {
                tracing::warn!("the loop has not moved for most of the lease: letting the lease lapse");
            } else {
                let sent = Instant::now();
                let current = *revision.lock().unwrap_or_else(|e| e.into_inner());
                // Bounded by the lease, not a quarter of it: an update that lands after a shorter
                // timeout would move the revision on behind our back.
                let outcome =
                    tokio::time::timeout(self.counts_for, self.kv.update(&self.key, value.clone(), current)).await;
                match outcome {
                    // Renewed against our own revision: nobody else can have held it meanwhile.
                    Ok(Ok(next)) => {
                        *revision.lock().unwrap_or_else(|e| e.into_inner()) = next;
                        validity.lock().unwrap_or_else(|e| e.into_inner()).until = sent + self.counts_for;
                    }
                    Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        // Perhaps an earlier renewal of ours landed late: the entry says.
                        match self.kv.entry(&self.key).await {
                            Ok(Some(entry)) if is_ours(&entry.value, &self.holder) => {
                                *revision.lock().unwrap_or_else(|e| e.into_inner()) = entry.revision;
                            }
                            _ => {
                                tracing::warn!("the lease was taken by another instance");
                                validity.lock().unwrap_or_else(|e| e.into_inner()).lost = true;
                                return;
                            }
                        }
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot renew the lease; retrying"),
                    Err(_) => tracing::warn!("renewing the lease timed out; retrying"),
                }
            }
            let mut v = validity.lock().unwrap_or_else(|e| e.into_inner());
            if Instant::now() >= v.until {
                tracing::warn!("the lease could not be renewed in time");
                v.lost = true;
                return;
            }
        }
    }
}

/// Creates or updates a bucket of leases or of members: history 1, `max_age` the lease time.
pub async fn declare_bucket(
    js: &jetstream::Context,
    bucket: &str,
    ttl: Duration,
    replicas: usize,
) -> Result<kv::Store, BusError> {
    let config = kv::Config {
        bucket: bucket.to_string(),
        description: "vigil's leases and members: who owns the log, who is up".into(),
        history: 1,
        max_age: ttl,
        num_replicas: replicas,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    match js.create_key_value(config.clone()).await {
        Ok(store) => Ok(store),
        Err(created) => js.update_key_value(config).await.map_err(|updated| BusError::Declare {
            what: format!("the bucket {bucket}"),
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

/// The last epoch record on `subject`: its position and the directory token it names (`None`:
/// there is none — never taken, or expired with the stream's `max_age`).
pub async fn last_epoch(
    stream: &jetstream::stream::Stream,
    subject: &str,
) -> Result<Option<(u64, Option<String>)>, BusError> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(m) => Ok(Some((m.sequence, serde_json::from_slice::<EpochRecord>(&m.payload).ok().map(|r| r.token)))),
        Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(BusError::nats("reading the last epoch record", e)),
    }
}

/// Appends a fresh epoch record for the epoch `fence` holds, fenced by it: so the fence never
/// ages out of the stream with its `max_age` while its owner lives. Refused if another instance's
/// epoch came after it.
pub async fn renew_epoch(js: &jetstream::Context, fence: &Fence, holder: &Holder) -> Result<Fence, AppendError> {
    let body = EpochRecord { v: 1, instance: holder.instance.clone(), token: holder.token.clone() };
    let payload = serde_json::to_vec(&body).expect("an epoch record always encodes");
    let publish =
        jetstream::message::PublishMessage::build().payload(payload.into()).expected_last_subject_sequence(fence.seq);
    let ack = js.send_publish(fence.subject.clone(), publish).await.map_err(append_error)?;
    let ack = ack.await.map_err(append_error)?;
    Ok(Fence { subject: fence.subject.clone(), seq: ack.sequence })
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
