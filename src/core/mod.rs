//! The pure core: events, policy, the per-workspace state machine and the engine that folds them.
//!
//! Invariant: nothing under `core` does I/O, reads a clock or draws a random number. Time comes
//! from event timestamps; outputs are returned, not sent. The store and the bus wrap the core; the
//! core never imports them.

pub mod classify;
pub mod engine;
pub mod event;
pub mod fast_map;
pub mod fleet;
pub mod ids;
mod index;
pub mod machine;
pub mod policy;
pub mod snapshot;
pub mod time;
pub mod timers;
pub mod wire;

pub use engine::{Engine, FleetView, MemoryTombstones, Tombstone, Tombstones, WorkspaceView};
pub use event::{Input, InputKind, Output, OutputBody, Reason, StateName, WorkspaceId};
pub use policy::{Policy, Registration};
pub use time::At;
