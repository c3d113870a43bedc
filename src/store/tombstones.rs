//! Tombstones on disk: one sled value per removed workspace (`t<workspace>`).
//!
//! The engine never reads them itself. The store applies a group with
//! `Engine::try_apply_batch`, which stops before an input about a workspace the engine does not
//! hold and whose tombstone it has not been told about; the store reads that tombstone and goes on
//! from that input ([`apply_loading`]). A read error stops the group before anything about that
//! input is decided.
//! Tombstones the engine wrote or deleted since the last checkpoint go to disk with the checkpoint
//! ([`write_changed`]), in the same atomic batch as the machine records they belong with: the
//! tombstones on disk stay consistent with the snapshot position, so recovery (snapshot + log tail)
//! rebuilds exactly what the original engine knew.

use crate::core::event::{Input, Output, WorkspaceId};
use crate::core::{Engine, Tombstone};
use crate::store::{StoreError, io, keys};

/// Applies `inputs` to `engine`, reading from `tree` each tombstone it asks for.
pub fn apply_loading(
    tree: &sled::Tree,
    engine: &mut Engine,
    inputs: &[Input],
    out: &mut Vec<Output>,
) -> Result<(), StoreError> {
    let mut from = 0;
    while let Err(needs) = engine.try_apply_batch(inputs, from, out) {
        let found = read(tree, &needs.workspace)?;
        engine.tombstones_mut().load(needs.workspace, found);
        from = needs.applied;
    }
    engine.tombstones_mut().forget_loaded();
    Ok(())
}

fn read(tree: &sled::Tree, ws: &WorkspaceId) -> Result<Option<Tombstone>, StoreError> {
    let Some(bytes) = tree.get(keys::tomb(ws.as_str())).map_err(io("reading a tombstone"))? else { return Ok(None) };
    rmp_serde::from_slice(&bytes).map(Some).map_err(|e| StoreError::CorruptRecord {
        what: "tombstone",
        key: ws.to_string(),
        source: e.into(),
    })
}

/// Moves the tombstones the engine changed since the last checkpoint into a checkpoint batch.
pub fn write_changed(engine: &mut Engine, batch: &mut sled::Batch) {
    for (ws, t) in engine.tombstones_mut().take_changed() {
        match t {
            Some(t) => {
                batch.insert(&keys::tomb(ws.as_str())[..], rmp_serde::to_vec_named(&t).expect("tombstones encode"))
            }
            None => batch.remove(&keys::tomb(ws.as_str())[..]),
        }
    }
}
