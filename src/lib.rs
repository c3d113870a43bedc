//! vigil decides whether AI-agent workspaces are alive and whether they may be restarted.
//!
//! Every fact about a workspace arrives as an event; a pure, explicit per-workspace state machine
//! folds them; restart commands leave as events. Because state is a fold of a log, any incident
//! replays byte for byte.
//!
//! # Layout
//!
//! - [`core`] (the `vigil-core` crate): the pure part — event types and their wire encoding, the
//!   policy, the statig state machine (`core::machine`, the transition table), the fleet breaker
//!   and the engine.
//! - [`replay`]: reads JSONL logs, runs them through the engine, writes transcripts.
//! - [`simulate`]: a seeded fleet in virtual time, in a closed loop with the engine, and the
//!   failure-detector metrics of a policy in it (`vigil simulate`).
//! - [`store`]: the engine made durable on sled: log segments, outbox, checkpoints, recovery.
//! - [`bus`]: the service over NATS JetStream.
//! - [`client`] (the `vigil-client` crate): what producers link to publish events to vigil.
//! - [`config`], [`telemetry`]: how `vigil serve` is configured, logs and metrics.
//! - [`report`]: an error told with its causes, for logs.

#![forbid(unsafe_code)]

pub mod bus;
pub mod config;
pub mod replay;
pub mod report;
pub mod simulate;
pub mod store;
pub mod telemetry;

/// The producers' client (the `vigil-client` crate): publish events, heartbeat on an interval.
pub use vigil_client as client;
/// The pure core (the `vigil-core` crate): events, the state machine, the engine.
pub use vigil_core as core;
