//! The cap on tracked workspaces (`max_workspaces`): an input that would add one more is refused
//! before it reaches the log, as `quota_exceeded`, so a replay of the log never needs to know the
//! cap. (Which events may add a workspace at all is the policy's `registration`, decided by the
//! engine.)
//!
//! The cap counts what the engine holds when a group commit starts, plus what the group gathered
//! so far adds: a workspace removed in a group makes room from the next group on. Each input adds
//! at most one workspace, so while a group cannot reach the cap nothing is looked up; within a
//! group of it, what the group adds is counted exactly, input by input.

use std::collections::HashSet;

use crate::bus::intake::Rejection;
use crate::core::Engine;
use crate::core::event::{Input, WorkspaceId};

/// The DLQ reason of an input refused by the cap.
pub const QUOTA_EXCEEDED: &str = "quota_exceeded";

/// Admission for the group being gathered.
pub struct Admission {
    max_workspaces: usize,
    /// The group is within its own size of the cap, so what it adds is counted: these workspaces.
    near_cap: bool,
    adding: HashSet<WorkspaceId>,
}

impl Admission {
    pub fn new(max_workspaces: usize) -> Admission {
        Admission { max_workspaces, near_cap: false, adding: HashSet::new() }
    }

    /// Admits `input` into a group that has gathered `gathered` so far, or refuses it.
    pub fn admit(&mut self, engine: &Engine, input: Input, gathered: &[Input]) -> Result<Input, Rejection> {
        if !self.near_cap {
            if engine.len() + gathered.len() < self.max_workspaces {
                return Ok(input);
            }
            self.near_cap = true;
            let added = gathered.iter().filter(|i| engine.would_add(i)).filter_map(|i| i.kind.workspace());
            self.adding = added.cloned().collect();
        }
        let Some(ws) = input.kind.workspace().filter(|_| engine.would_add(&input)) else { return Ok(input) };
        if self.adding.contains(ws) {
            return Ok(input);
        }
        if engine.len() + self.adding.len() >= self.max_workspaces {
            metrics::counter!("vigil_quota_exceeded_total").increment(1);
            return Err(Rejection::new(
                QUOTA_EXCEEDED,
                format!("vigil tracks {} workspaces, its max_workspaces; {ws} is not added", self.max_workspaces),
            ));
        }
        self.adding.insert(ws.clone());
        Ok(input)
    }

    /// The group was applied: the engine counts what it added from now on.
    pub fn group_applied(&mut self) {
        self.near_cap = false;
        self.adding.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Policy;
    use crate::core::event::{Heartbeat, InputKind};

    fn beat(ws: &str) -> Input {
        Input {
            at: crate::core::At(0),
            sent_at: None,
            id: None,
            stream_seq: None,
            kind: InputKind::Heartbeat(Heartbeat {
                workspace: WorkspaceId::parse(ws).unwrap(),
                interval_s: None,
                incarnation: None,
                active_tasks: None,
            }),
        }
    }

    #[test]
    fn near_the_cap_what_a_group_adds_is_counted_exactly() {
        // Given two known workspaces and a cap of three,
        let mut engine = Engine::new(Policy::default());
        engine.apply_batch(&[beat("ws-0"), beat("ws-1")], &mut Vec::new());
        let mut admission = Admission::new(3);
        // when one group brings known ones first, then two new ones,
        let mut gathered = Vec::new();
        let mut refused = Vec::new();
        for ws in ["ws-0", "ws-1", "ws-0", "ws-2", "ws-3", "ws-2"] {
            match admission.admit(&engine, beat(ws), &gathered) {
                Ok(input) => gathered.push(input),
                Err(r) => refused.push((ws, r.code)),
            }
        }
        // then the known ones do not count against it, the first new one fits, the second not.
        assert_eq!(refused, [("ws-3", QUOTA_EXCEEDED)]);
        assert_eq!(gathered.len(), 5);
        // and once the group is applied, the engine counts them.
        engine.apply_batch(&gathered, &mut Vec::new());
        admission.group_applied();
        assert!(admission.admit(&engine, beat("ws-4"), &[]).is_err());
        assert!(admission.admit(&engine, beat("ws-1"), &[]).is_ok());
    }
}
