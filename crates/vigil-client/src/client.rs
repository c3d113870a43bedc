//! A small client for producers: what an agent runtime, a provisioner or a proxy links to publish
//! events to vigil, and what `vigil emit` and `vigil watch` use.
//!
//! Events are published with JetStream acknowledgement, so `publish` returning `Ok` means the event
//! is stored in vigil's input stream and will be applied even if vigil is down right now.

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage as Publish};
use futures::StreamExt;

use vigil_core::event::{Heartbeat, Input, InputKind, Output, WorkspaceId};
use vigil_core::wire::{self, DecodeError, Stamping};

use crate::headers::{self, HeaderText};
use crate::subjects::Subjects;
use crate::wall_clock;

/// Why the client could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to NATS at {url}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    /// The event is not one vigil would accept (it would be dead-lettered): nothing was published.
    #[error(transparent)]
    Invalid(#[from] DecodeError),
    #[error("`{0}` events are vigil's own; producers cannot publish them")]
    Internal(&'static str),
    #[error("publishing to {subject}")]
    Publish {
        subject: String,
        #[source]
        source: async_nats::jetstream::context::PublishError,
    },
    #[error("subscribing to {subject}")]
    Subscribe {
        subject: String,
        #[source]
        source: async_nats::SubscribeError,
    },
}

/// A connection to vigil's subjects.
#[derive(Clone)]
pub struct Client {
    js: jetstream::Context,
    nats: async_nats::Client,
    subjects: Subjects,
}

impl Client {
    /// Connects to `url` (no auth; a cluster's URLs comma-separated) with the default prefix
    /// `vigil`.
    pub async fn connect(url: &str) -> Result<Client, ClientError> {
        let failed = |source| ClientError::Connect { url: url.into(), source };
        let mut addrs = Vec::new();
        for one in url.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            addrs.push(one.parse::<async_nats::ServerAddr>().map_err(|e| failed(e.into()))?);
        }
        let nats = async_nats::connect(addrs).await.map_err(failed)?;
        Ok(Client::with(nats, "vigil"))
    }

    /// Wraps an existing NATS connection, for a given subject prefix.
    pub fn with(nats: async_nats::Client, prefix: &str) -> Client {
        Client { js: jetstream::new(nats.clone()), nats, subjects: Subjects::new(prefix) }
    }

    /// Publishes one event and waits until vigil's input stream has stored it. The event's `at`
    /// is the producer's clock; vigil keeps it as `sent_at` and stamps its own receive time.
    ///
    /// An event vigil would dead-letter (a field too long, say) is refused here with the same
    /// words, and nothing is published. An event with an `id` carries a `Nats-Msg-Id` scoped by its
    /// type and workspace ([`message_id`]), so the input stream drops a re-publish of it — and
    /// only of it.
    pub async fn publish(&self, input: &Input) -> Result<(), ClientError> {
        let payload = wire::encode_msgpack(input);
        wire::decode_msgpack(&payload, Stamping::ReceivedAt(input.at))?;
        let Some(ws) = input.kind.workspace() else {
            return Err(ClientError::Internal(input.kind.type_name()));
        };
        let kind = input.kind.type_name();
        let mut message = Publish::build().payload(payload.into());
        if let Some(id) = &input.id {
            message = headers::with_message_id(message, &message_id(kind, ws, id));
        }
        let subject = self.subjects.input(kind, ws);
        let failed = |source| ClientError::Publish { subject: subject.clone(), source };
        let ack = self.js.send_publish(subject.clone(), message).await.map_err(failed)?;
        ack.await.map(|_| ()).map_err(failed)
    }

    /// Publishes one heartbeat.
    pub async fn heartbeat(
        &self,
        workspace: &WorkspaceId,
        interval: Duration,
        incarnation: Option<&str>,
    ) -> Result<(), ClientError> {
        let input = Input {
            at: wall_clock(),
            sent_at: None,
            id: None,
            stream_seq: None,
            kind: InputKind::Heartbeat(Heartbeat {
                workspace: workspace.clone(),
                interval_s: Some(interval.as_secs().clamp(1, 3600) as u16),
                incarnation: incarnation.map(Into::into),
                active_tasks: None,
            }),
        };
        self.publish(&input).await
    }

    /// Heartbeats every `interval` on a background task (on its own, so a busy agent loop cannot
    /// starve it) until the returned handle is dropped. Failures are logged and retried next beat.
    pub fn spawn_heartbeats(
        &self,
        workspace: WorkspaceId,
        interval: Duration,
        incarnation: Option<String>,
    ) -> Heartbeats {
        let client = self.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if let Err(e) = client.heartbeat(&workspace, interval, incarnation.as_deref()).await {
                    tracing::warn!(workspace = %workspace, error = %chain(&e), "heartbeat not published");
                }
            }
        });
        Heartbeats(task)
    }

    /// Every output vigil publishes from now on (optionally only one workspace's), as they arrive.
    pub async fn watch(
        &self,
        workspace: Option<&WorkspaceId>,
    ) -> Result<impl futures::Stream<Item = Result<Output, String>>, ClientError> {
        let subject = match workspace {
            Some(ws) => format!("{}.out.*.{ws}", self.subjects.prefix()),
            None => format!("{}.out.>", self.subjects.prefix()),
        };
        let sub = self
            .nats
            .subscribe(subject.clone())
            .await
            .map_err(|source| ClientError::Subscribe { subject: subject.clone(), source })?;
        Ok(sub.map(|m| wire::decode_output_msgpack(&m.payload).map_err(|e| e.to_string())))
    }
}

/// The `Nats-Msg-Id` of an event with idempotency key `id`: `<type>:<workspace>:<id>`. The input
/// stream de-duplicates by `Nats-Msg-Id` across all its subjects, so a bare `id` would let one
/// workspace's event drop another's. vigil itself de-duplicates per workspace (SPEC §1); the
/// stream's scope is narrower still (per type too), so it never drops what vigil would apply.
/// Producers in other languages should set the same header.
pub fn message_id(kind: &str, workspace: &WorkspaceId, id: &str) -> HeaderText {
    HeaderText::escape(&format!("{kind}:{workspace}:{id}"))
}

/// Background heartbeats; they stop when this is dropped.
pub struct Heartbeats(tokio::task::JoinHandle<()>);

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An error and its sources, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
