//! The engine's state in a form that survives a restart: one record per workspace plus one for the
//! fleet. The store writes them at checkpoints; `Engine::restore` rebuilds an engine from them that
//! behaves exactly as the original would have from that point on.
//!
//! Records are plain serde data, and the store writes workspace records positionally (a MessagePack
//! array per record, for size and speed): their field order, and the machine's state enum (statig
//! derives its variant names from the state handlers' names), are part of the store's format. A
//! new field, a reordering or a renamed state is a store format change: bump `store::FORMAT` in
//! the `vigil` crate, which is what a data directory records and checks. The fleet record is
//! written with named fields, so a field added with `#[serde(default)]` is not.

use serde::{Deserialize, Serialize};

use crate::disruption::Disruption;
use crate::event::{Partition, WorkspaceId};
use crate::fleet::{Breaker, Outgoing};
use crate::ids::IdKey;
use crate::machine::{State, Workspace};
use crate::time::At;

/// One workspace's machine: its shared storage and its state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceRecord {
    pub shared: Workspace,
    pub state: State,
}

/// Everything fleet-wide, and where in the log the snapshot stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetRecord {
    /// The log sequence of the last input applied.
    pub seq: u64,
    /// The engine's clock.
    pub clock: Option<At>,
    pub breaker: Breaker,
    /// Dead workspaces waiting for a restart slot, in order: those once seen alive...
    pub queue: Vec<WorkspaceId>,
    /// ...then those never seen alive (absent from checkpoints written before the split).
    #[serde(default)]
    pub queue_unseen: Vec<WorkspaceId>,
    /// Workspaces held by the breaker, in order.
    pub held: Vec<WorkspaceId>,
    /// Idempotency keys still inside the dedup window, oldest first.
    pub dedup: Vec<(At, String)>,
    /// The id key outputs take their tags from (`core::ids`).
    #[serde(default)]
    pub id_key: Option<IdKey>,
    /// Restarts in flight when the first key came, which keep their plain ids.
    #[serde(default)]
    pub plain_restarts: Vec<(WorkspaceId, u32)>,
    /// From the latest `resume` that declared it: a longer stretch with no record is time nobody
    /// watched (absent: `resume` re-arms with full grace, as logs from before expect).
    #[serde(default)]
    pub unwatched_after_ms: Option<u32>,
    /// The last input stream position applied, and the stream epoch (see `Engine`).
    #[serde(default)]
    pub stream_pos: StreamPos,
    /// With several partitions: which one, of how many (see `core::fleet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<Partition>,
    /// Declarations made here whose record has not come back yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outgoing: Vec<Outgoing>,
    /// The fleet's monitored workspaces by the latest `declaration` record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_monitored: Option<u32>,
    /// The disruption mode and the restart token bucket (absent before them: healthy, full).
    #[serde(default, skip_serializing_if = "is_calm")]
    pub disruption: Disruption,
    /// How many at the head of `held` were held again after their turn came for nothing.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub held_front: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_calm(d: &Disruption) -> bool {
    *d == Disruption::default()
}

/// The input stream position of the last record applied, and how many times positions went back
/// (a stream deleted and declared again counts from 1 once more).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPos {
    pub last: u64,
    pub epoch: u32,
}

impl StreamPos {
    /// Applies a record at stream position `seq`; returns the epoch it belongs to.
    pub fn enter(&mut self, seq: u64) -> u32 {
        if seq <= self.last {
            self.epoch = self.epoch.saturating_add(1);
        }
        self.last = seq;
        self.epoch
    }
}

/// The machines a checkpoint writes, chunk by chunk (see `Engine::take_dirty_chunks`).
#[derive(Debug, Default)]
pub struct Chunks {
    /// Chunk number and every live workspace in it, for each chunk to (re)write.
    pub chunks: Vec<(u32, Vec<(WorkspaceId, WorkspaceRecord)>)>,
    /// How many chunks the slab spans: stored chunks numbered from here on are obsolete.
    pub count: u32,
}

/// Why records could not be turned back into an engine.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("workspace {0} appears twice in the snapshot")]
    Duplicate(WorkspaceId),
    #[error("the fleet record names workspace {0}, which has no snapshot")]
    UnknownInFleet(WorkspaceId),
}
