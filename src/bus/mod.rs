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
pub mod api;
pub mod connect;
pub mod dlq;
mod fault;
pub mod intake;
pub mod ownership;
pub mod placement;
mod publisher;
mod queries;
pub mod sequencer;
pub mod serve;

pub use serve::run;
/// The subjects, header text and client the service shares with producers (`vigil-client`).
pub use vigil_client::{Subjects, headers, subjects};

use crate::store::StoreError;

/// The error async-nats gave, whichever of its many types it was.
pub type NatsError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why the service stopped or could not start. Each variant keeps the error behind it as its
/// source; [`crate::report::Chain`] tells the whole story.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("cannot read the NATS credentials file {path}")]
    Credentials {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot declare {what}")]
    Declare {
        what: String,
        #[source]
        source: NatsError,
    },
    #[error("cannot start the NATS service API")]
    Service(#[source] NatsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("NATS failed while {doing}")]
    Nats {
        doing: String,
        #[source]
        source: NatsError,
    },
    #[error("{0} stopped")]
    Stopped(&'static str),
    #[error("{what} sent nothing for {waited:?}")]
    Stalled { what: String, waited: std::time::Duration },
    #[error("{what} panicked")]
    Panicked {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("no random source")]
    Random(#[source] getrandom::Error),
    /// This instance no longer owns the log (its lease lapsed, or another's epoch fenced it): it
    /// stops acting and waits as a standby.
    #[error("stepped down: {0}")]
    SteppedDown(&'static str),
    /// A stream read in order stopped delivering (the connection closed under it).
    #[error("{0} ended")]
    StreamEnded(&'static str),
    /// The input stream was created for another number of partitions than the one configured.
    #[error(
        "the input stream {stream} is split into {recorded} partitions, but `partitions` is {configured}: the \
         number of partitions is fixed for a deployment (set it back to {recorded}, or start a new deployment \
         under another prefix)"
    )]
    PartitionsChanged { stream: String, configured: u32, recorded: String },
    /// Another instance has been this partition's preferred owner for a whole lease: this one
    /// hands the partition over (a planned handover) and follows it as a standby.
    #[error("handing the partition over to {0}, its preferred owner")]
    HandingOver(String),
    #[error("stepping down did not finish within {0:?}")]
    StepDownOverran(std::time::Duration),
    /// The data directory applied the log through `applied`, the records after it expired
    /// (the stream now starts at `first`), and another instance folded them: its snapshot record
    /// covers through `covers`. Resuming would skip what the others applied; the directory is set
    /// aside and rebuilt from that snapshot instead.
    #[error(
        "this data directory applied the log through {applied}, the records after it expired (the stream starts \
         at {first}), and another instance's snapshot covers through {covers}"
    )]
    StaleDirectory { applied: u64, first: u64, covers: u64 },
    /// The data directory holds one partition's state at its top, on a deployment of several:
    /// opening it would start new directories inside it and leave that state behind unread.
    #[error(
        "the data directory {dir} holds a one-partition deployment's state, but this deployment has {partitions} \
         partitions: give this instance a new data directory (or set `partitions = 1` on a deployment of one)"
    )]
    OnePartitionDirectory { dir: std::path::PathBuf, partitions: u32 },
    #[error("cannot set the stale data directory {dir} aside")]
    SetAside {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl BusError {
    /// A NATS request that failed while vigil was `doing` something.
    pub fn nats(doing: impl Into<String>, source: impl Into<NatsError>) -> BusError {
        BusError::Nats { doing: doing.into(), source: source.into() }
    }

    /// Whether a term that ended with this error is followed by waiting as a standby (the log
    /// lost, or NATS failing — which is when takeovers happen) rather than by the process's exit
    /// (the store's errors, a panic, a stop that overran).
    pub fn goes_on_as_standby(&self) -> bool {
        matches!(
            self,
            BusError::SteppedDown(_)
                | BusError::HandingOver(_)
                | BusError::Nats { .. }
                | BusError::Stalled { .. }
                | BusError::StreamEnded(_)
        )
    }
}
