//! The bus: vigil over NATS JetStream. Only this module knows NATS.
//!
//! Producers publish events on `<prefix>.in.<type>.<workspace>`; a JetStream stream captures them,
//! so a producer needs no JetStream knowledge. vigil pulls them in batches from a durable consumer,
//! stamps the receive time, hands each batch to the store as one group commit, and only then
//! acknowledges it: nothing acknowledged is ever lost, and a message redelivered after a crash is
//! recognised by its stream sequence and applied once. Outputs leave through the store's outbox to
//! the output stream, with the output id as `Nats-Msg-Id`, and are cleared from the outbox only once
//! the server has confirmed them — so a restart command reaches a consumer exactly once, even if
//! vigil crashes between committing and publishing it.

mod admission;
pub mod connect;
pub mod dlq;
mod fault;
pub mod intake;
mod publisher;
mod queries;
pub mod serve;

pub use serve::run;
/// The subjects, header text and client the service shares with producers (`vigil-client`).
pub use vigil_client::{Subjects, headers, subjects};

use crate::store::StoreError;

/// Why the service stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot declare {0}")]
    Declare(String),
    #[error("cannot start the NATS service API: {0}")]
    Service(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("NATS: {0}")]
    Nats(String),
}
