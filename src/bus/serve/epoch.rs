//! This owner's epoch in the stream (SPEC §4 "ownership"): taken when it takes the lease,
//! renewed before the stream's `max_age` could expire it (an expired epoch record would leave
//! the fence pointing at nothing, and every append refused), and looked at again when an append
//! is refused — the refusal may be this owner's own renewal overtaking an append in flight, or
//! the record expired, and only another instance's epoch means stepping down. And the partitions
//! query, which reports the epoch, the owner and its standbys.

use super::*;

impl Serve {
    /// Appends this instance's epoch record (see [`ownership`]) and records it in the directory.
    /// With `catch_up`, if others owned the log since this directory's last epoch, what they
    /// appended is caught up like a rebuild: only outputs the output stream lacks go out. (With no
    /// epoch record in the stream at all — none ever, or every one expired because nobody owned
    /// the log for most of `input_max_age` — there is nobody to catch up on.)
    /// Returns whether others owned the log since this directory's last epoch.
    pub(super) async fn take_epoch(&mut self, catch_up: bool) -> Result<bool, BusError> {
        let subject = self.subjects.log_record("epoch");
        let epoch = ownership::take_epoch(&self.appends, &self.input_stream, &subject, &self.holder).await?;
        let others = catch_up && epoch.previous != 0 && epoch.previous != self.store.epoch();
        let others_through = others.then(|| epoch.fence.seq - 1);
        if others {
            metrics::counter!("vigil_takeovers_total", "partition" => self.subjects.partition_index().to_string())
                .increment(1);
            // A standby that followed the log has at most the last few records to catch up.
            tracing::info!(
                epoch = epoch.fence.seq,
                previous = epoch.previous,
                to_catch_up = (epoch.fence.seq - 1).saturating_sub(self.store.stream_seq()),
                "taking over from another instance: what it appended and this one has not applied is caught up \
                 like a rebuild"
            );
        }
        self.adopt_fence(epoch.fence, others_through)?;
        Ok(others)
    }

    /// Appends a fresh epoch record once a quarter of `input_max_age` has gone by since the last (and
    /// no snapshot is being appended).
    pub(super) async fn renew_epoch_if_due(&mut self) -> Result<(), BusError> {
        let Some(fence) = self.fence.clone() else { return Ok(()) };
        // Not under a snapshot on its way: its parts carry the current epoch.
        if self.snapshot_in_flight || self.epoch_at.elapsed() < self.cfg.input_max_age / 4 {
            return Ok(());
        }
        match ownership::renew_epoch(&self.appends, &fence, &self.holder).await {
            Ok(renewed) => self.adopt_fence(renewed, None),
            Err(AppendError::Fenced) => self.recheck_fence().await,
            Err(AppendError::Nats(e)) => {
                tracing::warn!(error = %e, "cannot renew the epoch record; retrying");
                Ok(())
            }
        }
    }

    /// An append was refused by the fence: goes on under this instance's own latest epoch, takes
    /// the epoch afresh if the stream no longer holds one, and steps down only if the last epoch
    /// is another instance's.
    pub(super) async fn recheck_fence(&mut self) -> Result<(), BusError> {
        let subject = self.subjects.log_record("epoch");
        match ownership::last_epoch(&self.input_stream, &subject).await? {
            Some((seq, Some(token))) if token == self.holder.token => self.adopt_fence(Fence { subject, seq }, None),
            None => {
                tracing::warn!("the epoch record is gone from the stream (input_max_age): taking it afresh");
                self.take_epoch(false).await.map(|_| ())
            }
            Some(_) => Err(BusError::SteppedDown("another instance's epoch is in the stream")),
        }
    }

    fn adopt_fence(&mut self, fence: Fence, others_through: Option<u64>) -> Result<(), BusError> {
        tokio::task::block_in_place(|| self.store.take_over(fence.seq, others_through))?;
        metrics::gauge!("vigil_epoch", "partition" => self.subjects.partition_index().to_string())
            .set(fence.seq as f64);
        self.fence = Some(fence);
        self.epoch_at = Instant::now();
        Ok(())
    }

    /// This partition's entry in `<prefix>.query.partitions`: owned by this instance, the
    /// instances up that follow it as standbys (`standbys`), how far it has applied its log — all from the loop's own state —
    /// and, filled in by [`with_lag`] away from the loop, how far behind the end of its log that is.
    pub(super) fn partition_entry(&self) -> serde_json::Value {
        let standbys: Vec<String> = self
            .membership
            .followers(self.subjects.partition_index(), self.cfg.standbys)
            .into_iter()
            .filter(|name| *name != self.holder.instance)
            .collect();
        serde_json::json!({
            "partition": self.subjects.partition_index(),
            "owner": self.holder.instance,
            "epoch": self.fence.as_ref().map_or(0, |f| f.seq),
            "standbys": standbys,
            "log_seq": self.store.stream_seq(),
        })
    }
}

/// How long the partitions query waits for the consumer's info.
const LAG_TIMEOUT: Duration = Duration::from_secs(2);

/// A partition's entry with its `lag`: the records of its log the consumer has not yet delivered
/// or had acknowledged. Asked of the server on a task of its own, so a slow JetStream never holds
/// up the loop; `503` if it does not answer in time.
pub(super) async fn with_lag(
    mut entry: serde_json::Value,
    mut consumer: jetstream::consumer::PullConsumer,
) -> Result<bytes::Bytes, async_nats::service::error::Error> {
    let failed = |e: String| crate::bus::api::error(503, &format!("reading the input consumer's info: {e}"));
    let info = match tokio::time::timeout(LAG_TIMEOUT, consumer.info()).await {
        Ok(Ok(info)) => info,
        Ok(Err(e)) => return Err(failed(e.to_string())),
        Err(_) => return Err(failed(format!("no answer within {LAG_TIMEOUT:?}"))),
    };
    entry["lag"] = (info.num_pending + info.num_ack_pending as u64).into();
    Ok(serde_json::to_vec(&entry).expect("json always encodes").into())
}
