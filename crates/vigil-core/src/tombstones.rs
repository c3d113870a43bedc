//! Tombstones: what is left of a removed workspace, so that a zombie agent's heartbeat can never
//! bring it back to be restarted, and a re-created one never reuses an id.
//!
//! The engine reads a tombstone only for a workspace it does not hold, and it never reads a disk:
//! its [`TombstoneBook`] holds the tombstones it wrote or deleted since the store last took them,
//! and, in a service whose tombstones live on disk, the ones the store loaded for the inputs at
//! hand. When an input names a workspace the engine holds no machine and no tombstone for, and
//! the store may have one on disk, `Engine::try_apply_batch` stops before that input (the ones
//! before it are applied) and names the workspace; the store reads the tombstone and goes on. A
//! read error therefore stops before anything about that input is decided — never a wrong
//! decision taken for "no tombstone" — and poisons the store like any failed group.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::event::WorkspaceId;
use crate::time::At;

/// What is left of a removed workspace: enough to keep its ids unique if it is ever re-created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub removed_at: At,
    pub restarts: u32,
    pub probes: u32,
}

/// The tombstones an engine knows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TombstoneBook {
    /// Written (`Some`) or deleted (`None`) since the store last took them. An engine without a
    /// store (a replay) keeps all of its tombstones here.
    changed: BTreeMap<WorkspaceId, Option<Tombstone>>,
    /// Read from disk for the inputs at hand (`None`: there is none), forgotten after each group.
    loaded: FxHashMap<WorkspaceId, Option<Tombstone>>,
    /// More tombstones live on disk than this book holds: an unknown workspace's must be loaded
    /// before an input about it is applied.
    on_disk: bool,
}

impl TombstoneBook {
    /// Whether the book can answer for `ws` (always, when no tombstones live on disk).
    pub fn knows(&self, ws: &WorkspaceId) -> bool {
        !self.on_disk || self.changed.contains_key(ws) || self.loaded.contains_key(ws)
    }

    /// The tombstone of `ws`, if it has one. The book must know it ([`TombstoneBook::knows`]).
    pub fn get(&self, ws: &WorkspaceId) -> Option<Tombstone> {
        debug_assert!(self.knows(ws), "the tombstone of {ws} was not loaded before an input about it");
        match self.changed.get(ws) {
            Some(t) => t.clone(),
            None => self.loaded.get(ws).cloned().flatten(),
        }
    }

    pub fn put(&mut self, ws: &WorkspaceId, t: Tombstone) {
        self.changed.insert(ws.clone(), Some(t));
    }

    pub fn remove(&mut self, ws: &WorkspaceId) {
        self.changed.insert(ws.clone(), None);
    }

    /// From now on tombstones also live on disk, and must be loaded before they are needed.
    pub fn keep_on_disk(&mut self) {
        self.on_disk = true;
    }

    /// Records what the store read for `ws`.
    pub fn load(&mut self, ws: WorkspaceId, t: Option<Tombstone>) {
        self.loaded.insert(ws, t);
    }

    /// Forgets what was loaded (after a group: what a later group needs is loaded again).
    pub fn forget_loaded(&mut self) {
        self.loaded.clear();
    }

    /// Takes what changed since the last call, for the store to write.
    pub fn take_changed(&mut self) -> BTreeMap<WorkspaceId, Option<Tombstone>> {
        std::mem::take(&mut self.changed)
    }
}
