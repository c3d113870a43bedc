//! The engine: every workspace's machine, their timers, and the fleet, folded one input at a time.
//!
//! `Engine::apply` is the whole of vigil's decision making: before an input stamped `at` is applied,
//! every deadline up to `at` fires, in deadline order (ties in workspace-id order); then the input
//! goes to its workspace's machine; the outputs come back numbered with deterministic ids. Nothing
//! here reads a clock, touches a disk or a socket, draws a random number, or lets a hash map's
//! iteration order reach an output — so the same inputs give the same outputs, byte for byte.
//!
//! Workspaces live in a slab (`Vec<Slot>`) found through a hash table of slab indices, which keeps
//! an idle workspace to a couple of hundred bytes. Removed workspaces leave a [`Tombstone`] in the
//! engine's [`TombstoneBook`] — all of them, in a replay; in the service, those not yet
//! checkpointed and those the store loaded for the inputs at hand — so a zombie agent's heartbeat
//! can never bring a removed workspace back.
//!
//! This file holds the engine and the fold itself; the rest is split by concern: an input's way to
//! its workspace (`admission`), one machine's dispatch and the fleet's books (`books`), time
//! (`deadlines`), the disruption modes (`modes`), the breaker shared by several partitions
//! (`declarations`), checkpoints
//! (`checkpoint`) and read-only views (`views`).

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::time::Duration;

use rustc_hash::{FxBuildHasher, FxHashMap};
use serde::Serialize;
use statig::blocking::InitializedStateMachine;

use crate::cadence::Overdue;
use crate::disruption::Census;
use crate::event::*;
use crate::fleet::{Fleet, Handle};
use crate::ids::{self, IdKey};
use crate::index::{Index, prefetch_line};
use crate::machine::{Ctx, Emitted, Event, State, Wait, Workspace};
use crate::policy::{Policy, Registration};
use crate::snapshot::{Chunks, FleetRecord, RestoreError, StreamPos, WorkspaceRecord};
use crate::time::{At, Stamp};
use crate::timers::Timers;
use crate::tombstones::{Tombstone, TombstoneBook};

mod admission;
mod books;
mod checkpoint;
mod deadlines;
mod declarations;
mod modes;
mod views;

use admission::Dedup;
pub use views::{FleetView, WorkspaceView};

/// How many inputs make one prefetch stage of `apply_batch`.
const PREFETCH_AHEAD: usize = 16;

/// Asks the CPU to start loading the cache lines of `len` bytes at `p` (a hint; never dereferenced).
#[inline]
fn prefetch_lines(p: *const i8, len: usize) {
    for offset in (0..len).step_by(64) {
        prefetch_line(p.wrapping_add(offset));
    }
}

/// How many times one workspace's timer may fire at one instant before it is considered stuck.
const MAX_FIRES_PER_INSTANT: usize = 8;

/// A workspace's machine.
pub type Machine = InitializedStateMachine<Workspace>;

/// One slab entry.
struct Slot {
    name: WorkspaceId,
    generation: u32,
    /// Changed since the last checkpoint (and listed in `Engine::dirty`).
    dirty: bool,
    /// The deadline of this slot's live timer entry, if any.
    armed: Stamp,
    machine: Option<Machine>,
}

/// What [`Engine::try_apply_batch`] stopped for: the input at `applied` names `workspace`, whose
/// tombstone must be loaded ([`TombstoneBook::load`]) before it can be applied; the next call
/// goes on from there (`from` = `applied`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeedsTombstone {
    /// How many of the inputs were applied (counted from the first, not from `from`).
    pub applied: usize,
    pub workspace: WorkspaceId,
}

impl std::fmt::Display for NeedsTombstone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the tombstone of {} is not loaded", self.workspace)
    }
}

/// The pure core of vigil.
pub struct Engine {
    policy: Policy,
    /// The policy's overdue rule, derived once (`core::cadence`).
    overdue: Overdue,
    clock: At,
    seq: u64,
    slots: Vec<Slot>,
    free: Vec<u32>,
    index: Index,
    hasher: FxBuildHasher,
    timers: Timers,
    fleet: Fleet,
    counts: [u32; 5],
    dedup: Dedup,
    tombstones: TombstoneBook,
    /// The workspace the last `try_apply_batch` stopped for: it was looked up then and found
    /// absent, so the call that goes on from that input need not look it up again.
    stopped_for: Option<WorkspaceId>,
    /// From the latest `resume` that declared it: a longer stretch of the log with no record is
    /// time nobody watched (SPEC §1 "time").
    unwatched_after_ms: Option<u32>,
    /// The data directory's id key, from the latest `resume` that carried one (`core::ids`).
    id_key: Option<IdKey>,
    /// Where the stream positions stand: the last one applied, and how many times they went back
    /// (the input stream was deleted and declared again, so positions count from 1 once more:
    /// output ids then take the epoch into their tag and never repeat an earlier stream's).
    stream_pos: StreamPos,
    /// Restarts in flight when the log first carried a key (a directory from before keys): their
    /// ids stay plain, so the provisioner's progress for them still matches. Workspace → the
    /// restart number issued plain; an entry goes when that restart is no longer in flight.
    plain_restarts: BTreeMap<WorkspaceId, u32>,
    scratch: Vec<Emitted>,
    due: Vec<u32>,
    draining: bool,
    /// The active fleet and its Suspect and Dead, for the disruption modes (`modes`).
    census: Census,
    /// The disruption modes were last reconsidered at this instant.
    considered: At,
    reconsidering: bool,
}

fn state_index(s: StateName) -> usize {
    match s {
        StateName::Alive => 0,
        StateName::Suspect => 1,
        StateName::Restarting => 2,
        StateName::Dead => 3,
        StateName::Parked => 4,
    }
}

/// Which fleet list a state waits in, if any.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FleetList {
    None,
    Held,
    Queue,
}

fn fleet_list(state: &State) -> FleetList {
    match state {
        State::Suspect { s } if s.held => FleetList::Held,
        State::Dead { w } if w.on == Wait::Breaker => FleetList::Held,
        State::Dead { w } if w.on == Wait::Queue => FleetList::Queue,
        _ => FleetList::None,
    }
}

impl Engine {
    /// An engine with no workspaces, which holds all of its tombstones.
    pub fn new(policy: Policy) -> Self {
        Engine {
            overdue: Overdue::of(&policy),
            policy,
            clock: At(i64::MIN),
            seq: 0,
            slots: Vec::new(),
            free: Vec::new(),
            index: Index::new(),
            hasher: FxBuildHasher,
            timers: Timers::default(),
            fleet: Fleet::default(),
            counts: [0; 5],
            dedup: Dedup::default(),
            tombstones: TombstoneBook::default(),
            stopped_for: None,
            unwatched_after_ms: None,
            stream_pos: StreamPos::default(),
            id_key: None,
            plain_restarts: BTreeMap::new(),
            scratch: Vec::new(),
            due: Vec::new(),
            draining: false,
            census: Census::default(),
            considered: At(i64::MIN),
            reconsidering: false,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The engine's clock: the latest `at` applied (or deadline fired).
    pub fn clock(&self) -> Option<At> {
        (self.clock != At(i64::MIN)).then_some(self.clock)
    }

    /// How many inputs have been applied (the log sequence of the last one).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The tombstones the engine knows.
    pub fn tombstones(&self) -> &TombstoneBook {
        &self.tombstones
    }

    /// The tombstones the engine knows, for the shell that persists and loads them.
    pub fn tombstones_mut(&mut self) -> &mut TombstoneBook {
        &mut self.tombstones
    }

    /// Number of workspaces tracked.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when no workspace is tracked.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Applies inputs in order, exactly like `apply` on each, but with the memory each input will
    /// touch requested ahead of time: the index lines of the inputs two chunks ahead, the slots of
    /// the inputs one chunk ahead (whose index lines are cached by then). So an input's cache
    /// misses overlap with other inputs' work instead of queueing one after another — at a million
    /// workspaces, most of an input's cost would otherwise be waiting for memory.
    ///
    /// For an engine that holds all of its tombstones (a replay); one whose tombstones live on disk
    /// is driven with [`Engine::try_apply_batch`].
    pub fn apply_batch(&mut self, inputs: &[Input], out: &mut Vec<Output>) {
        if let Err(needs) = self.try_apply_batch(inputs, 0, out) {
            panic!("{needs}: an engine with tombstones on disk is driven with try_apply_batch");
        }
    }

    /// Applies `inputs[from..]` in order like [`Engine::apply_batch`], but stops before the first
    /// one that names a workspace the engine does not hold and whose tombstone it has no word on
    /// (only possible with tombstones on disk): the store loads it and calls again with `from` set
    /// to where it stopped. Nothing of that input is applied, so no decision is ever taken for a
    /// tombstone not yet read. A call that goes on (`from > 0`) does not request again what the
    /// call that stopped there already requested, so a group with many new workspaces costs no
    /// more memory requests than one without.
    pub fn try_apply_batch(
        &mut self,
        inputs: &[Input],
        from: usize,
        out: &mut Vec<Output>,
    ) -> Result<(), NeedsTombstone> {
        let ahead = |c: usize| inputs.get(c * PREFETCH_AHEAD..).map_or(&[][..], |r| &r[..r.len().min(PREFETCH_AHEAD)]);
        let first = from / PREFETCH_AHEAD;
        // Only the input the last call stopped at may skip its lookup: nothing was applied since.
        let mut stopped_for = self.stopped_for.take().filter(|_| from > 0);
        if from == 0 {
            self.prefetch_index(ahead(0));
            self.prefetch_index(ahead(1));
            self.prefetch_slots(ahead(0));
        }
        for (c, chunk) in inputs.chunks(PREFETCH_AHEAD).enumerate().skip(first) {
            if from == 0 || c > first {
                self.prefetch_index(ahead(c + 2));
                self.prefetch_slots(ahead(c + 1));
            }
            let skip = if c == first { from % PREFETCH_AHEAD } else { 0 };
            for (i, input) in chunk.iter().enumerate().skip(skip) {
                let absent = stopped_for.take().is_some_and(|ws| input.kind.workspace() == Some(&ws));
                if let Err(workspace) = self.try_apply(input, absent, out) {
                    self.stopped_for = Some(workspace.clone());
                    return Err(NeedsTombstone { applied: c * PREFETCH_AHEAD + i, workspace });
                }
            }
        }
        Ok(())
    }

    /// Prefetch stage one: the index lines where these inputs' workspaces are looked up.
    fn prefetch_index(&self, inputs: &[Input]) {
        for input in inputs {
            if let Some(ws) = input.kind.workspace() {
                self.index.prefetch(self.hash(ws.as_str()));
            }
        }
    }

    /// Prefetch stage two: the slots the index most likely points these inputs to (only a hint:
    /// `apply` does the real lookup).
    fn prefetch_slots(&self, inputs: &[Input]) {
        for input in inputs {
            let Some(ws) = input.kind.workspace() else { continue };
            if let Some(i) = self.index.candidate(self.hash(ws.as_str()))
                && let Some(slot) = self.slots.get(i as usize)
            {
                prefetch_lines(slot as *const Slot as *const i8, std::mem::size_of::<Slot>());
            }
        }
    }

    /// Applies one input and appends the outputs it causes (timers due before it first).
    /// For an engine that holds all of its tombstones (see [`Engine::apply_batch`]).
    pub fn apply(&mut self, input: &Input, out: &mut Vec<Output>) {
        self.stopped_for = None;
        if let Err(ws) = self.try_apply(input, false, out) {
            panic!(
                "the tombstone of {ws} is not loaded: an engine with tombstones on disk is driven with try_apply_batch"
            );
        }
    }

    /// Applies one input, or — before changing anything — names the workspace whose tombstone
    /// must be loaded first. `absent`: its workspace is known not to be held (looked up by the
    /// call that stopped for it), so it is not looked up again.
    fn try_apply(&mut self, input: &Input, absent: bool, out: &mut Vec<Output>) -> Result<(), WorkspaceId> {
        // Looked up before anything moves: timers neither create nor remove workspaces, so the
        // answer still holds when the input reaches its workspace.
        let known = match input.kind.workspace() {
            Some(ws) => {
                debug_assert!(!absent || self.lookup(ws.as_str()).is_none(), "{ws} was held after all");
                let idx = if absent { None } else { self.lookup(ws.as_str()) };
                if idx.is_none() && !self.tombstones.knows(ws) {
                    return Err(ws.clone());
                }
                idx
            }
            None => None,
        };
        self.seq += 1;
        let start = out.len();
        let at = input.at.max(self.clock);
        // Nothing reached the log for longer than its writer promised: nobody watched meanwhile,
        // and no deadline may fire for that time (SPEC §1 "time"). A `resume` that declares the
        // promise is already held to it.
        let promised = match &input.kind {
            InputKind::Resume(Resume { unwatched_after_ms: Some(ms), .. }) => Some(*ms),
            _ => self.unwatched_after_ms,
        };
        if let (Some(limit), Some(last)) = (promised, self.clock())
            && at.since(last) > Duration::from_millis(u64::from(limit))
        {
            self.unwatched(at.since(last), at, out);
        }
        // vigil was away until `at`: deadlines that passed meanwhile are re-armed with full grace
        // first, not fired — silence nobody watched is not evidence (SPEC §1 `resume`).
        if !matches!(input.kind, InputKind::Resume(_)) {
            self.fire_due(at, out);
        }
        self.clock = at;
        match &input.kind {
            InputKind::Tick => {}
            InputKind::Resume(r) => self.resume(r, at, out),
            InputKind::Declaration(d) => self.declaration(d, at, out),
            _ => self.apply_to_workspace(input, known, at, out),
        }
        // A deadline the input itself made due (never one in the past: see `fire_instant`).
        self.fire_due(at, out);
        let cause = match input.stream_seq {
            Some(seq) => ids::Cause::Stream { epoch: self.stream_pos.enter(seq), seq },
            None => ids::Cause::Log(self.seq),
        };
        self.number(cause, start, out);
        if self.fleet.outgoing.last().is_some_and(|o| o.cause == 0) {
            self.stamp_declarations(input.stream_seq.unwrap_or(self.seq));
        }
        Ok(())
    }

    /// Gives the outputs of the current input their ids: the restart id for restarts (it is also
    /// the `Nats-Msg-Id`), `<seq>.<n>` otherwise, seq being the input's stream position (or its
    /// log position in a log without them) — each with its tag once there is an id key.
    fn number(&self, cause: ids::Cause, start: usize, out: &mut [Output]) {
        for (n, o) in out[start..].iter_mut().enumerate() {
            o.id = match &o.body {
                OutputBody::Restart { restart_id, .. } => restart_id.clone(),
                _ => ids::output_id(self.id_key.as_ref(), cause, n),
            };
        }
    }

    /// The id key in force, if the log carried one.
    pub fn id_key(&self) -> Option<IdKey> {
        self.id_key
    }

    fn hash(&self, ws: &str) -> u64 {
        self.hasher.hash_one(ws)
    }

    fn lookup(&self, ws: &str) -> Option<u32> {
        let slots = &self.slots;
        self.index.find(self.hash(ws), |i| slots[i as usize].name.as_str() == ws)
    }

    fn handle(&self, idx: u32) -> Handle {
        Handle { idx, generation: self.slots[idx as usize].generation }
    }

    fn valid(&self, h: Handle) -> bool {
        self.slots.get(h.idx as usize).is_some_and(|s| s.generation == h.generation && s.machine.is_some())
    }

    fn push_output(&self, out: &mut Vec<Output>, ws: Option<&WorkspaceId>, at: At, body: OutputBody) {
        out.push(Output { id: String::new(), workspace: ws.cloned(), at, body });
    }
}

#[cfg(test)]
mod tests {
    /// The memory target (≤ 256 B per idle workspace at a million) leaves little room: a slot must
    /// not grow unnoticed. See BENCHMARKS.md for the measured figure.
    #[test]
    fn a_workspace_slot_stays_small() {
        assert!(std::mem::size_of::<super::Slot>() <= 176, "Slot is {} bytes", std::mem::size_of::<super::Slot>());
    }
}
