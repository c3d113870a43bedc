//! Tombstones on disk: the engine's [`Tombstones`] backed by sled.
//!
//! Tombstones written since the last checkpoint wait in a small overlay and go to disk with the
//! checkpoint, in the same atomic batch as the machine records they belong with. That keeps the
//! tombstones on disk consistent with the snapshot position, so recovery (snapshot + log tail)
//! rebuilds exactly the overlay the original engine had.

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::core::event::WorkspaceId;
use crate::core::{Tombstone, Tombstones};
use crate::store::keys;

/// Tombstones in the database, plus those not yet checkpointed.
pub struct SledTombstones {
    tree: sled::Tree,
    pending: BTreeMap<WorkspaceId, Option<Tombstone>>,
    /// A read that failed; the store refuses to commit once one has.
    failure: RefCell<Option<String>>,
}

impl SledTombstones {
    pub fn new(tree: sled::Tree) -> SledTombstones {
        SledTombstones { tree, pending: BTreeMap::new(), failure: RefCell::new(None) }
    }

    /// Moves the pending tombstones into a checkpoint batch.
    pub fn drain_into(&mut self, batch: &mut sled::Batch) {
        for (ws, t) in std::mem::take(&mut self.pending) {
            match t {
                Some(t) => {
                    batch.insert(&keys::tomb(ws.as_str())[..], rmp_serde::to_vec_named(&t).expect("tombstones encode"))
                }
                None => batch.remove(&keys::tomb(ws.as_str())[..]),
            }
        }
    }

    /// The first read failure, if any, clearing it.
    pub fn take_failure(&self) -> Option<String> {
        self.failure.borrow_mut().take()
    }

    fn fail(&self, msg: String) {
        self.failure.borrow_mut().get_or_insert(msg);
    }
}

impl Tombstones for SledTombstones {
    fn get(&self, ws: &WorkspaceId) -> Option<Tombstone> {
        if let Some(t) = self.pending.get(ws) {
            return t.clone();
        }
        match self.tree.get(keys::tomb(ws.as_str())) {
            Ok(None) => None,
            Ok(Some(bytes)) => match rmp_serde::from_slice(&bytes) {
                Ok(t) => Some(t),
                Err(e) => {
                    self.fail(format!("corrupted tombstone of {ws}: {e}"));
                    None
                }
            },
            Err(e) => {
                self.fail(format!("reading the tombstone of {ws}: {e}"));
                None
            }
        }
    }

    fn put(&mut self, ws: &WorkspaceId, t: Tombstone) {
        self.pending.insert(ws.clone(), Some(t));
    }

    fn remove(&mut self, ws: &WorkspaceId) {
        self.pending.insert(ws.clone(), None);
    }
}
