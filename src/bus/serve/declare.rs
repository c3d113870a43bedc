//! The owner's half of the fleet's breaker across partitions (see `core::fleet`): appending this
//! partition's death declarations to the input stream, where every partition counts them.
//!
//! The engine lists the declarations whose record has not come back yet; the owner appends each
//! once per term, fenced by its epoch like any record of its own, with a `Nats-Msg-Id` made of the
//! partition, the position of the input that caused it and the workspace — the same on every
//! replica — so a successor that appends again what its predecessor had appended just before it
//! died is told "duplicate" by the stream. An append that fails (NATS, or a fence that moved: this
//! owner's own epoch renewed meanwhile) is tried again at the next wake-up.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::*;
use crate::core::event::Declaration;
use crate::core::fleet::Outgoing;

/// The `Nats-Msg-Id`s of the declarations appended (or on their way) in this term.
#[derive(Clone, Default)]
pub(super) struct Declared(Arc<Mutex<HashSet<String>>>);

impl Declared {
    /// Marks `id` as on its way; false if it already was.
    fn claim(&self, id: &str) -> bool {
        self.0.lock().expect("never poisoned: no panics while held").insert(id.to_string())
    }

    /// `id` did not reach the stream: it is appended again next time.
    fn release(&self, id: &str) {
        self.0.lock().expect("never poisoned: no panics while held").remove(id);
    }

    fn is_empty(&self) -> bool {
        self.0.lock().expect("never poisoned: no panics while held").is_empty()
    }

    /// Forgets the ids no longer outstanding, so the set stays as small as the engine's list.
    fn retain(&self, outstanding: &HashSet<String>) {
        self.0.lock().expect("never poisoned: no panics while held").retain(|id| outstanding.contains(id));
    }
}

/// The record's `Nats-Msg-Id`: partition, cause, workspace, and whether it awaits a verdict.
fn message_id(partition: u32, o: &Outgoing) -> String {
    format!("vigil-declaration.{partition}.{}.{}.{}", o.cause, o.workspace, if o.awaits { "a" } else { "c" })
}

impl Serve {
    /// Appends, off the loop, every declaration the engine lists that this term has not appended
    /// yet. Only the owner does, once its epoch is in the stream.
    pub(super) fn append_declarations(&mut self) {
        let (Some(fence), None, None, true) =
            (self.fence.clone(), self.following.as_ref(), self.rebuild.as_ref(), self.level)
        else {
            return;
        };
        let Some(partition) = self.store.engine().partition() else { return };
        let outgoing = self.store.engine().declarations();
        if outgoing.is_empty() && self.declared.is_empty() {
            return;
        }
        let ids: HashSet<String> = outgoing.iter().map(|o| message_id(partition.index, o)).collect();
        self.declared.retain(&ids);
        if !outgoing.is_empty() {
            fault::before_declaring();
        }
        // The new ones, appended in order by one task: a workspace's declarations reach the
        // stream in the order they were made.
        let mut batch = Vec::new();
        for o in outgoing {
            let id = message_id(partition.index, o);
            if !self.declared.claim(&id) {
                continue;
            }
            let record = Input {
                at: wall_clock(),
                sent_at: None,
                id: None,
                stream_seq: None,
                kind: InputKind::Declaration(Declaration {
                    partition: partition.index,
                    workspace: o.workspace.clone(),
                    reason: o.reason,
                    monitored: o.monitored,
                    awaits: o.awaits,
                }),
            };
            batch.push((id, record));
        }
        if batch.is_empty() {
            return;
        }
        let (js, subject, declared) =
            (self.appends.clone(), self.subjects.declaration_record(partition.index), self.declared.clone());
        tokio::spawn(async move {
            let mut left = batch.into_iter();
            for (id, record) in left.by_ref() {
                match super::append::append(&js, subject.clone(), &record, &fence, Some(&id)).await {
                    Ok(()) => continue,
                    // Another instance's epoch (the next tick's fence check ends the term), or
                    // this one's own renewed while the record was on its way: tried again under it.
                    Err(AppendError::Fenced) => {}
                    Err(AppendError::Nats(e)) => {
                        tracing::warn!(error = %e, id, "cannot append a death declaration; trying again shortly");
                    }
                }
                // This one and the rest go again, in order, next time.
                declared.release(&id);
                break;
            }
            for (id, _) in left {
                declared.release(&id);
            }
        });
    }
}
