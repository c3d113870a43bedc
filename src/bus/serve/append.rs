//! vigil's own records appended to the input stream (ticks and resumes here; death declarations
//! in `declare`, snapshots in `snapshot`, epochs in `epoch`): each fenced by this owner's epoch,
//! so a fenced-out owner's are refused by the server, and confirmed before they count.

use super::*;

impl Serve {
    /// Appends a tick to the input stream, off the loop: waiting for the stream's confirmation
    /// (up to [`APPEND_TIMEOUT`] when NATS is down) must not hold up inputs, queries or a signal.
    /// The outcome comes back through `tick_done` ([`Serve::tick_appended`]).
    pub(super) fn append_tick(&mut self) {
        let Some(fence) = self.fence.clone() else { return };
        let tick = Input { at: wall_clock(), sent_at: None, id: None, stream_seq: None, kind: InputKind::Tick };
        let (js, subject, done) = (self.appends.clone(), self.subjects.log_record("tick"), self.tick_done.clone());
        let now = self.mono();
        self.ticks.tick_sent(now);
        tokio::spawn(async move {
            let _ = done.send(append(&js, subject, &tick, &fence, None).await);
        });
    }

    /// A tick append failed (NATS is down): only logged, and retried after `tick_every` — no tick,
    /// no deadline fires: an outage is not a quiet stream. A tick refused by the fence: another instance owns the log now.
    pub(super) async fn tick_appended(&mut self, result: Result<(), AppendError>) -> Result<(), BusError> {
        match result {
            Ok(()) => Ok(()),
            Err(AppendError::Fenced) => {
                // Another instance's epoch — or this one's own, renewed while the tick was on its
                // way, or expired: the stream says which.
                metrics::counter!("vigil_fenced_appends_total", "partition" => self.subjects.partition_index().to_string()).increment(1);
                self.recheck_fence().await?;
                let now = self.mono();
                self.ticks.tick_failed(now);
                Ok(())
            }
            Err(AppendError::Nats(e)) => {
                let now = self.mono();
                self.ticks.tick_failed(now);
                tracing::warn!(error = %e, "cannot append a tick to the input stream; no deadline fires until one is");
                Ok(())
            }
        }
    }

    /// Appends `resume` to the input stream, retrying for a while: without it vigil cannot start.
    pub(super) async fn append_resume(&mut self, resume: Resume) -> Result<(), BusError> {
        let input =
            Input { at: wall_clock(), sent_at: None, id: None, stream_seq: None, kind: InputKind::Resume(resume) };
        let mut attempt = 0;
        loop {
            let fence = self.fence.clone().ok_or(BusError::SteppedDown("no epoch taken"))?;
            match append(&self.appends, self.subjects.log_record("resume"), &input, &fence, None).await {
                Ok(()) => return Ok(()),
                Err(AppendError::Fenced) => {
                    return Err(BusError::SteppedDown(
                        "the resume was refused: another instance's epoch is in the stream",
                    ));
                }
                Err(AppendError::Nats(e)) if attempt < 30 => {
                    attempt += 1;
                    tracing::warn!(error = %e, "cannot append a resume to the input stream; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(AppendError::Nats(e)) => {
                    return Err(BusError::Nats { doing: "appending a resume to the input stream".into(), source: e });
                }
            }
        }
    }
}

/// Appends one of vigil's own records on `subject` (`<prefix>.log.<kind>`), fenced by this
/// instance's epoch, with `id` as its `Nats-Msg-Id` if it has one, and waits for the stream to
/// confirm it.
pub(super) async fn append(
    js: &jetstream::Context,
    subject: String,
    input: &Input,
    fence: &Fence,
    id: Option<&str>,
) -> Result<(), AppendError> {
    let payload = wire::encode_msgpack(input);
    let publish = async {
        let mut message = ownership::fenced(payload.into(), fence);
        if let Some(id) = id {
            message = crate::bus::headers::with_message_id(message, &HeaderText::escape(id));
        }
        let ack = js.send_publish(subject, message).await.map_err(ownership::append_error)?;
        ack.await.map(|_| ()).map_err(ownership::append_error)
    };
    match tokio::time::timeout(APPEND_TIMEOUT, publish).await {
        Ok(result) => result,
        Err(elapsed) => Err(AppendError::Nats(elapsed.into())),
    }
}
