//! vigil's pure core: events and their wire encoding, the policy, the per-workspace state machine
//! and the engine that folds them.
//!
//! Invariant: nothing in this crate does I/O, reads a clock or draws a random number — it depends
//! on nothing that could (no tokio, no async-nats, no sled; `make check-core` holds the dependency
//! tree to that). Time comes from event timestamps; outputs are returned, not sent. The store and
//! the bus (the `vigil` crate) wrap the core; the core never imports them. The one `unsafe` block
//! is the cache-line prefetch in `index`.

#![deny(unsafe_code)]

pub mod cadence;
pub mod classify;
pub mod disruption;
pub mod engine;
pub mod event;
pub mod fast_map;
pub mod fleet;
pub mod hash;
pub mod ids;
mod index;
pub mod machine;
pub mod policy;
pub mod snapshot;
pub mod time;
pub mod timers;
pub mod tombstones;
pub mod wire;

pub use engine::{Engine, FleetView, WorkspaceView};
pub use event::{Input, InputKind, Output, OutputBody, Reason, StateName, WorkspaceId};
pub use policy::{Policy, Registration};
pub use time::At;
pub use tombstones::{Tombstone, TombstoneBook};
