//! vigil's client: what an agent runtime, a provisioner or a proxy links to talk to vigil over
//! NATS — publish heartbeats and events ([`Client`]), watch outputs — and the pieces the service
//! shares with it: the subjects ([`Subjects`]), header text that cannot break a NATS header
//! ([`headers`]), and the wall clock in the core's terms ([`wall_clock`]).
//!
//! It is vigil-core's types over async-nats: no storage, no command line, no metrics.

#![forbid(unsafe_code)]

mod client;
pub mod headers;
pub mod subjects;

pub use client::{Client, ClientError, Heartbeats, message_id};
pub use subjects::Subjects;

use std::time::{SystemTime, UNIX_EPOCH};

use vigil_core::At;

/// The wall clock, in the core's terms: what a producer stamps its events with (vigil keeps it as
/// `sent_at`) and what the service stamps what it receives with. The core itself never reads it.
pub fn wall_clock() -> At {
    At(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64))
}
