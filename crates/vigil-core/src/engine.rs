//! The engine: every workspace's machine, their timers, and the fleet, folded one input at a time.
//!
//! `Engine::apply` is the whole of vigil's decision making: before an input stamped `at` is applied,
//! every deadline up to `at` fires, in deadline order (ties in workspace-id order); then the input
//! goes to its workspace's machine; the outputs come back numbered with deterministic ids. Nothing
//! here reads a clock, touches a disk or a socket, draws a random number, or lets a hash map's
//! iteration order reach an output — so the same inputs give the same outputs, byte for byte.
//!
//! Workspaces live in a slab (`Vec<Slot>`) found through a hash table of slab indices, which keeps
//! an idle workspace to a couple of hundred bytes. Removed workspaces leave a [`Tombstone`] in a
//! [`Tombstones`] store — in memory for replays, on disk (sled) in the service — so a zombie
//! agent's heartbeat can never bring a removed workspace back.

use std::collections::{BTreeMap, VecDeque};
use std::hash::BuildHasher;

use rustc_hash::{FxBuildHasher, FxHashMap};
use serde::Serialize;
use statig::blocking::InitializedStateMachine;
use statig::blocking::IntoStateMachineExt;

use crate::event::*;
use crate::fleet::{Fleet, Handle};
use crate::ids::{self, IdKey};
use crate::index::{Index, prefetch_line};
use crate::machine::{Ctx, Emitted, Event, State, Wait, Workspace};
use crate::policy::{Policy, Registration};
use crate::snapshot::{Chunks, FleetRecord, RestoreError, WorkspaceRecord};
use crate::time::{At, Stamp};
use crate::timers::Timers;
use crate::tombstones::{Tombstone, TombstoneBook};

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

/// Idempotency keys seen within the dedup window.
#[derive(Default)]
struct Dedup {
    seen: FxHashMap<Box<str>, At>,
    order: VecDeque<(At, Box<str>)>,
}

impl Dedup {
    /// True if `key` was seen within `window` before `now`; otherwise remembers it.
    fn seen_before(&mut self, key: String, now: At, window: std::time::Duration) -> bool {
        while let Some((t, _)) = self.order.front() {
            if now.since(*t) <= window {
                break;
            }
            let (t, k) = self.order.pop_front().expect("front exists");
            if self.seen.get(&k) == Some(&t) {
                self.seen.remove(&k);
            }
        }
        if self.seen.get(key.as_str()).is_some_and(|t| now.since(*t) <= window) {
            return true;
        }
        let key: Box<str> = key.into();
        self.seen.insert(key.clone(), now);
        self.order.push_back((now, key));
        false
    }
}

/// What [`Engine::try_apply_batch`] stopped for: the input at `applied` names `workspace`, whose
/// tombstone must be loaded ([`TombstoneBook::load`]) before it can be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeedsTombstone {
    /// How many of the inputs were applied.
    pub applied: usize,
    pub workspace: WorkspaceId,
}

impl std::fmt::Display for NeedsTombstone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the tombstone of {} is not loaded", self.workspace)
    }
}

/// A read-only view of one workspace, for queries and `vigil inspect`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkspaceView {
    pub workspace: WorkspaceId,
    pub state: StateName,
    pub since: At,
    pub last_heartbeat: Option<At>,
    pub interval_s: u16,
    pub incarnation: Option<String>,
    /// Restart commands issued over the workspace's life.
    pub restarts: u32,
    /// While Restarting: the id of the restart command in flight. A consumer can check a restart
    /// command against it before acting, so a forged command is recognised as one.
    pub restart_in_flight: Option<String>,
    /// The attempt number the next restart would carry (1 + consecutive failures).
    pub restart_attempt: u32,
    /// A mutation follow-up restart is owed when the current restart completes.
    pub followup_pending: bool,
    /// Held by the fleet breaker.
    pub held: bool,
    /// What a dead workspace's restart waits for (`time`, `breaker`, `queue`, `gave_up`).
    pub waiting_on: Option<&'static str>,
    pub next_deadline: Option<At>,
    pub retry_after_s: Option<u32>,
}

/// Fleet-wide figures, for queries and metrics.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FleetView {
    pub workspaces: usize,
    pub alive: u32,
    pub suspect: u32,
    pub restarting: u32,
    pub dead: u32,
    pub parked: u32,
    pub breaker_open: bool,
    pub breaker_close_at: Option<At>,
    pub restarts_in_flight: u32,
    pub restart_queue: usize,
    pub held: usize,
}

/// The pure core of vigil.
pub struct Engine {
    policy: Policy,
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
    /// The data directory's id key, from the latest `resume` that carried one (`core::ids`).
    id_key: Option<IdKey>,
    /// Restarts in flight when the log first carried a key (a directory from before keys): their
    /// ids stay plain, so the provisioner's progress for them still matches. Workspace → the
    /// restart number issued plain; an entry goes when that restart is no longer in flight.
    plain_restarts: BTreeMap<WorkspaceId, u32>,
    scratch: Vec<Emitted>,
    due: Vec<u32>,
    draining: bool,
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
            id_key: None,
            plain_restarts: BTreeMap::new(),
            scratch: Vec::new(),
            due: Vec::new(),
            draining: false,
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

    /// The earliest instant at which a timer is due (possibly a stale entry, which is harmless:
    /// the shell ticks, nothing fires, and the next deadline is reported).
    pub fn next_deadline(&self) -> Option<At> {
        match (self.timers.peek(), self.fleet.breaker.close_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The earliest deadline that is really due: stale timer entries at the top of the heap (their
    /// workspace's deadline moved later) are re-armed at their real deadline first. Changes no
    /// decision — a stale entry never fires — it only spares the shell ticks that do nothing.
    pub fn settle_next_deadline(&mut self) -> Option<At> {
        while let Some(top) = self.timers.peek() {
            let mut popped = std::mem::take(&mut self.due);
            self.timers.pop_at(top, &mut popped);
            let mut real = false;
            for idx in popped.drain(..) {
                let slot = &self.slots[idx as usize];
                if slot.machine.is_none() || slot.armed != Stamp::at(top) {
                    continue; // stale: its slot has a live entry elsewhere, or none
                }
                if self.deadline_of(idx).is_some_and(|d| d <= top) {
                    // Really due: put it back as it was.
                    self.timers.push(top, idx);
                    real = true;
                } else {
                    self.slots[idx as usize].armed = Stamp::NEVER;
                    self.rearm(idx);
                }
            }
            self.due = popped;
            if real {
                break;
            }
        }
        self.next_deadline()
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
        if let Err(needs) = self.try_apply_batch(inputs, out) {
            panic!("{needs}: an engine with tombstones on disk is driven with try_apply_batch");
        }
    }

    /// Applies inputs in order like [`Engine::apply_batch`], but stops before the first one that
    /// names a workspace the engine does not hold and whose tombstone it has no word on (only
    /// possible with tombstones on disk): the store loads it and goes on from there. Nothing of
    /// that input is applied, so no decision is ever taken for a tombstone not yet read.
    pub fn try_apply_batch(&mut self, inputs: &[Input], out: &mut Vec<Output>) -> Result<(), NeedsTombstone> {
        let ahead = |c: usize| inputs.get(c * PREFETCH_AHEAD..).map_or(&[][..], |r| &r[..r.len().min(PREFETCH_AHEAD)]);
        self.prefetch_index(ahead(0));
        self.prefetch_index(ahead(1));
        self.prefetch_slots(ahead(0));
        for (c, chunk) in inputs.chunks(PREFETCH_AHEAD).enumerate() {
            self.prefetch_index(ahead(c + 2));
            self.prefetch_slots(ahead(c + 1));
            for (i, input) in chunk.iter().enumerate() {
                if let Err(workspace) = self.try_apply(input, out) {
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
        if let Err(ws) = self.try_apply(input, out) {
            panic!(
                "the tombstone of {ws} is not loaded: an engine with tombstones on disk is driven with try_apply_batch"
            );
        }
    }

    /// Applies one input, or — before changing anything — names the workspace whose tombstone
    /// must be loaded first.
    fn try_apply(&mut self, input: &Input, out: &mut Vec<Output>) -> Result<(), WorkspaceId> {
        // Looked up before anything moves: timers neither create nor remove workspaces, so the
        // answer still holds when the input reaches its workspace.
        let known = match input.kind.workspace() {
            Some(ws) => {
                let idx = self.lookup(ws.as_str());
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
        // vigil was away until `at`: deadlines that passed meanwhile are re-armed with full grace
        // first, not fired — silence nobody watched is not evidence (SPEC §1 `resume`).
        if !matches!(input.kind, InputKind::Resume(_)) {
            self.fire_due(at, out);
        }
        self.clock = at;
        match &input.kind {
            InputKind::Tick => {}
            InputKind::Resume(r) => self.resume(r, at, out),
            _ => self.apply_to_workspace(input, known, at, out),
        }
        // A deadline the input itself made due (never one in the past: see `fire_instant`).
        self.fire_due(at, out);
        self.number(start, out);
        Ok(())
    }

    /// Gives the outputs of the current input their ids: the restart id for restarts (it is also
    /// the `Nats-Msg-Id`), `<seq>.<n>` otherwise — each with its tag once there is an id key.
    fn number(&self, start: usize, out: &mut [Output]) {
        for (n, o) in out[start..].iter_mut().enumerate() {
            o.id = match &o.body {
                OutputBody::Restart { restart_id, .. } => restart_id.clone(),
                _ => ids::output_id(self.id_key.as_ref(), self.seq, n),
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

    // -----------------------------------------------------------------------------------------
    // Inputs for a workspace.
    // -----------------------------------------------------------------------------------------

    fn apply_to_workspace(&mut self, input: &Input, known: Option<u32>, at: At, out: &mut Vec<Output>) {
        let ws = input.kind.workspace().expect("workspace events name a workspace");
        let type_name = input.kind.type_name();
        // An event that cannot register the unknown workspace it names is turned away below
        // without a dedup entry: nobody can make vigil remember keys for workspaces it does not
        // track.
        let remembered = known.is_some() || self.policy.registration == Registration::Open || registers(&input.kind);
        if remembered && self.is_duplicate(input, ws, at) {
            let detail = input.id.clone().or_else(|| match &input.kind {
                InputKind::RestartRequested(r) => r.request_id.clone(),
                _ => None,
            });
            self.push_output(out, Some(ws), at, suppressed(Reason::Duplicate, type_name, detail));
            return;
        }
        let event = machine_event(&input.kind);
        let idx = match known {
            Some(idx) => idx,
            None => match self.admit_unknown(ws, &input.kind, at, out) {
                Some(idx) => idx,
                None => return,
            },
        };
        if let Some(event) = event {
            self.dispatch(idx, &event, at, Some(type_name), out);
        }
    }

    fn is_duplicate(&mut self, input: &Input, ws: &WorkspaceId, at: At) -> bool {
        // A duplicate by either key is dropped without remembering its other key.
        let window = self.policy.dedup_window;
        if let Some(id) = &input.id
            && self.dedup.seen_before(format!("{ws}\u{1f}i\u{1f}{id}"), at, window)
        {
            return true;
        }
        if let InputKind::RestartRequested(RestartRequested { request_id: Some(rid), .. }) = &input.kind {
            return self.dedup.seen_before(format!("{ws}\u{1f}r\u{1f}{rid}"), at, window);
        }
        false
    }

    /// An event for a workspace the engine does not hold: create it, honour its tombstone, or
    /// say why nothing happens. Returns the slot to dispatch the event to, if any.
    fn admit_unknown(&mut self, ws: &WorkspaceId, kind: &InputKind, at: At, out: &mut Vec<Output>) -> Option<u32> {
        let type_name = kind.type_name();
        let phase = match kind {
            InputKind::Lifecycle(l) => Some(l.phase),
            _ => None,
        };
        if let Some(tomb) = self.tombstones.get(ws) {
            // A removed workspace comes back only through `lifecycle created`.
            if phase == Some(LifecyclePhase::Created) {
                self.tombstones.remove(ws);
                self.create(ws, at, StateName::Alive, Reason::Created, Some(&tomb), out);
            } else {
                self.push_output(out, Some(ws), at, suppressed(Reason::Removed, type_name, None));
            }
            return None;
        }
        if self.policy.registration == Registration::Lifecycle && !registers(kind) {
            let detail = Some("registration is `lifecycle`: only `lifecycle created` adds a workspace".to_string());
            self.push_output(out, Some(ws), at, suppressed(Reason::UnknownWorkspace, type_name, detail));
            return None;
        }
        match (kind, phase) {
            (InputKind::RestartProgress(p), _) => {
                let detail = Some(format!("{} for a workspace vigil does not know", p.restart_id));
                self.push_output(out, Some(ws), at, suppressed(Reason::UnknownWorkspace, type_name, detail));
                None
            }
            (_, Some(LifecyclePhase::Removed)) => {
                // Nothing to delete, but the tombstone still keeps a zombie agent from creating it.
                self.tombstones.put(ws, Tombstone { removed_at: at, restarts: 0, probes: 0 });
                let detail = Some("removed before vigil saw it; tombstone recorded".to_string());
                self.push_output(out, Some(ws), at, suppressed(Reason::UnknownWorkspace, type_name, detail));
                None
            }
            (_, Some(LifecyclePhase::Paused)) => {
                self.create(ws, at, StateName::Parked, Reason::Paused, None, out);
                None
            }
            (_, Some(LifecyclePhase::Hibernated)) => {
                self.create(ws, at, StateName::Parked, Reason::Hibernated, None, out);
                None
            }
            (_, Some(LifecyclePhase::Resumed)) => {
                self.create(ws, at, StateName::Alive, Reason::Resumed, None, out);
                None
            }
            (_, Some(LifecyclePhase::Created)) => {
                self.create(ws, at, StateName::Alive, Reason::Created, None, out);
                None
            }
            // A heartbeat, probe, upstream error or restart request: Alive, then handled.
            _ => Some(self.create(ws, at, StateName::Alive, Reason::FirstSeen, None, out)),
        }
    }

    /// Whether applying `input` now would add a workspace (a removed one's tombstone may still
    /// turn it away): what a cap on the number of workspaces has to refuse before it is applied.
    pub fn would_add(&self, input: &Input) -> bool {
        let Some(ws) = input.kind.workspace() else { return false };
        if self.lookup(ws.as_str()).is_some() {
            return false;
        }
        match &input.kind {
            InputKind::Lifecycle(l) => match l.phase {
                LifecyclePhase::Created => true,
                LifecyclePhase::Removed => false,
                _ => self.policy.registration == Registration::Open,
            },
            InputKind::RestartProgress(_) => false,
            _ => self.policy.registration == Registration::Open,
        }
    }

    fn create(
        &mut self,
        ws: &WorkspaceId,
        at: At,
        state: StateName,
        reason: Reason,
        tomb: Option<&Tombstone>,
        out: &mut Vec<Output>,
    ) -> u32 {
        let mut shared = Workspace::new(at);
        if let Some(t) = tomb {
            shared.restarts = t.restarts;
            shared.probes = t.probes;
        }
        let mut sm = shared.uninitialized_state_machine();
        if state == StateName::Parked {
            *sm.state_mut() = State::initial_parked();
        }
        let idx = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot { name: ws.clone(), generation: 0, dirty: false, armed: Stamp::NEVER, machine: None });
            (self.slots.len() - 1) as u32
        });
        let handle = self.handle(idx);
        let mut scratch = std::mem::take(&mut self.scratch);
        let machine = {
            let mut ctx = Ctx {
                now: at,
                policy: &self.policy,
                id_key: self.id_key.as_ref(),
                plain_restart: None,
                ws,
                handle,
                fleet: &mut self.fleet,
                out: &mut scratch,
                input: None,
                current: state,
                removed: false,
            };
            sm.init_with_context(&mut ctx)
        };
        debug_assert!(scratch.is_empty(), "no entry actions, so initialising emits nothing");
        scratch.clear();
        self.scratch = scratch;
        let slot = &mut self.slots[idx as usize];
        slot.name = ws.clone();
        slot.armed = Stamp::NEVER;
        slot.machine = Some(machine);
        let (slots, hasher) = (&self.slots, self.hasher);
        let hash = hasher.hash_one(ws.as_str());
        self.index.insert_unique(hash, idx, |i| hasher.hash_one(slots[i as usize].name.as_str()));
        self.counts[state_index(state)] += 1;
        self.refresh_monitored();
        let body = OutputBody::StateChanged { from: None, to: Some(state), reason, retry_after_s: None };
        self.push_output(out, Some(ws), at, body);
        self.touch(idx);
        self.rearm(idx);
        idx
    }

    /// Marks a slot as changed since the last checkpoint.
    fn touch(&mut self, idx: u32) {
        self.slots[idx as usize].dirty = true;
    }

    /// Hands one event to one machine and keeps the fleet's books from the state before and after.
    fn dispatch(&mut self, idx: u32, event: &Event<'_>, now: At, input: Option<&'static str>, out: &mut Vec<Output>) {
        let handle = self.handle(idx);
        let mut scratch = std::mem::take(&mut self.scratch);
        let slot = &mut self.slots[idx as usize];
        let Some(machine) = slot.machine.as_mut() else { return };
        let (was, slot_before, list_before) = {
            let before = machine.state();
            (before.name(), before.holds_restart_slot(), fleet_list(before))
        };
        let plain_restart =
            if self.plain_restarts.is_empty() { None } else { self.plain_restarts.get(&slot.name).copied() };
        let removed = {
            let mut ctx = Ctx {
                now,
                policy: &self.policy,
                id_key: self.id_key.as_ref(),
                plain_restart,
                ws: &slot.name,
                handle,
                fleet: &mut self.fleet,
                out: &mut scratch,
                input,
                current: was,
                removed: false,
            };
            machine.handle_with_context(event, &mut ctx);
            ctx.removed
        };
        let after = machine.state();
        let is = after.name();
        if let Some(n) = plain_restart
            && (removed || is != StateName::Restarting || machine.inner().restarts != n)
        {
            self.plain_restarts.remove(&slot.name);
        }
        let released = slot_before && (removed || !after.holds_restart_slot());
        let acquired = !slot_before && after.holds_restart_slot() && !removed;
        let list_after = if removed { FleetList::None } else { fleet_list(after) };
        for e in scratch.drain(..) {
            let workspace = if e.fleet { None } else { Some(slot.name.clone()) };
            out.push(Output { id: String::new(), workspace, at: now, body: e.body });
        }
        self.scratch = scratch;

        self.counts[state_index(was)] -= 1;
        if !removed {
            self.counts[state_index(is)] += 1;
        }
        if released {
            self.fleet.in_flight -= 1;
        }
        if acquired {
            self.fleet.in_flight += 1;
        }
        if list_before != list_after {
            match list_before {
                FleetList::Held => self.fleet.held.retain(|h| *h != handle),
                FleetList::Queue => self.fleet.dequeue(handle),
                FleetList::None => {}
            }
        }
        if removed {
            self.remove_slot(idx, now);
        } else {
            self.touch(idx);
            self.rearm(idx);
        }
        if was == StateName::Parked || is == StateName::Parked || removed {
            self.refresh_monitored();
        }
        self.drain_queue(now, out);
    }

    fn refresh_monitored(&mut self) {
        self.fleet.monitored = self.index.len() - self.counts[state_index(StateName::Parked)] as usize;
    }

    /// Starts queued automatic restarts while slots are free, oldest declaration first.
    fn drain_queue(&mut self, now: At, out: &mut Vec<Output>) {
        if self.draining {
            return;
        }
        self.draining = true;
        while self.fleet.in_flight < self.policy.max_restarts_in_flight {
            let Some(h) = self.fleet.queue_head() else { break };
            if !self.valid(h) {
                self.fleet.pop_queue_head();
                continue;
            }
            self.fleet.granted = Some(h);
            self.dispatch(h.idx, &Event::SlotFree, now, None, out);
            self.fleet.granted = None;
            if self.fleet.queue_head() == Some(h) {
                // The machine did not take the slot (it no longer waits for one): drop its entry.
                self.fleet.pop_queue_head();
            }
        }
        self.draining = false;
    }

    fn remove_slot(&mut self, idx: u32, at: At) {
        let slot = &mut self.slots[idx as usize];
        let machine = slot.machine.take().expect("removing a live slot");
        let name = slot.name.clone();
        slot.generation = slot.generation.wrapping_add(1);
        slot.armed = Stamp::NEVER;
        // Its chunk must be rewritten without it.
        slot.dirty = true;
        let (slots, hasher) = (&self.slots, self.hasher);
        let removed = self
            .index
            .remove(hasher.hash_one(name.as_str()), idx, |i| hasher.hash_one(slots[i as usize].name.as_str()));
        debug_assert!(removed, "a live slot is indexed");
        self.free.push(idx);
        let shared = machine.inner();
        self.tombstones.put(&name, Tombstone { removed_at: at, restarts: shared.restarts, probes: shared.probes });
    }

    /// Makes sure the slot's next deadline has a live timer entry (lazily: see `core::timers`).
    fn rearm(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        let Some(machine) = slot.machine.as_ref() else { return };
        if let Some(next) = machine.state().next_deadline(machine.inner(), &self.policy)
            && slot.armed.get().is_none_or(|armed| next < armed)
        {
            slot.armed = Stamp::at(next);
            self.timers.push(next, idx);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Time.
    // -----------------------------------------------------------------------------------------

    /// Fires every deadline up to and including `until`, earliest first; the fleet breaker's
    /// closing goes before workspace timers due at the same instant.
    fn fire_due(&mut self, until: At, out: &mut Vec<Output>) {
        loop {
            let breaker = self.fleet.breaker.close_at().filter(|t| *t <= until);
            let workspace = self.timers.peek().filter(|t| *t <= until);
            match (breaker, workspace) {
                (Some(b), w) if w.is_none_or(|w| b <= w) => {
                    // Like a workspace timer: at its time, or the clock's if that is later.
                    self.clock = self.clock.max(b);
                    self.close_breaker(self.clock, out);
                }
                (_, Some(w)) => {
                    self.clock = self.clock.max(w);
                    self.fire_instant(w, out);
                }
                _ => break,
            }
        }
    }

    /// Fires the workspace timers due at exactly `deadline`, in workspace-id order. They fire at
    /// the deadline, or at the engine's clock if that is later (a deadline an input moved into the
    /// past): time never runs backwards in the outputs.
    fn fire_instant(&mut self, deadline: At, out: &mut Vec<Output>) {
        let mut due = std::mem::take(&mut self.due);
        self.timers.pop_at(deadline, &mut due);
        let at = deadline.max(self.clock);
        due.retain(|&idx| {
            let slot = &self.slots[idx as usize];
            slot.machine.is_some() && slot.armed == Stamp::at(deadline)
        });
        if due.len() > 1 {
            due.sort_by(|&a, &b| self.slots[a as usize].name.cmp(&self.slots[b as usize].name));
            due.dedup();
        }
        for &idx in &due {
            self.slots[idx as usize].armed = Stamp::NEVER;
        }
        for idx in due.drain(..) {
            // Several of one machine's deadlines may fall on the same instant; each dispatch must
            // settle one of them, and a handler that does not is a bug, never a hang. (Timers
            // never remove a workspace, so the slot stays occupied throughout.)
            for round in 0.. {
                if self.deadline_of(idx).is_none_or(|d| d > at) {
                    break;
                }
                if round == MAX_FIRES_PER_INSTANT {
                    debug_assert!(false, "timer for {} does not advance", self.slots[idx as usize].name);
                    break;
                }
                self.dispatch(idx, &Event::Timer, at, None, out);
            }
            if self.deadline_of(idx).is_none_or(|d| d > at) {
                self.rearm(idx);
            }
        }
        self.due = due;
    }

    fn deadline_of(&self, idx: u32) -> Option<At> {
        let machine = self.slots[idx as usize].machine.as_ref()?;
        machine.state().next_deadline(machine.inner(), &self.policy)
    }

    fn close_breaker(&mut self, at: At, out: &mut Vec<Output>) {
        if !self.fleet.breaker.try_close(at, self.fleet.monitored, &self.policy) {
            return;
        }
        let held = std::mem::take(&mut self.fleet.held);
        let detail = format!("{} held workspaces re-armed with full grace and re-probed", held.len());
        let body =
            OutputBody::Alert { kind: AlertKind::BreakerClosed, reason: Reason::BreakerCalm, detail: Some(detail) };
        self.push_output(out, None, at, body);
        for h in held {
            if self.valid(h) {
                self.dispatch(h.idx, &Event::BreakerClosed, at, None, out);
            }
        }
    }

    /// vigil (re)started: every workspace's deadlines are re-armed with full grace from `at`.
    fn resume(&mut self, resume: &Resume, at: At, out: &mut Vec<Output>) {
        if let Some(key) = resume.id_key {
            if self.id_key.is_none() {
                // The first key: what is in flight was issued with a plain id and keeps it.
                for slot in &self.slots {
                    if let Some(m) = slot.machine.as_ref()
                        && matches!(m.state(), State::Restarting { .. })
                    {
                        self.plain_restarts.insert(slot.name.clone(), m.inner().restarts);
                    }
                }
            }
            self.id_key = Some(key);
        }
        // In workspace-id order: the slab's order is not the same after a restore.
        let mut live: Vec<u32> =
            (0..self.slots.len() as u32).filter(|&i| self.slots[i as usize].machine.is_some()).collect();
        live.sort_by(|&a, &b| self.slots[a as usize].name.cmp(&self.slots[b as usize].name));
        for idx in live {
            self.dispatch(idx, &Event::Resume, at, Some("resume"), out);
        }
    }

    fn push_output(&self, out: &mut Vec<Output>, ws: Option<&WorkspaceId>, at: At, body: OutputBody) {
        out.push(Output { id: String::new(), workspace: ws.cloned(), at, body });
    }

    // -----------------------------------------------------------------------------------------
    // Snapshots.
    // -----------------------------------------------------------------------------------------

    /// The machines to checkpoint: the slab is cut into chunks of `size` slots, and every chunk in
    /// which a workspace changed (was created, removed, or handled an event) since the last call is
    /// returned whole — or every chunk, with `all`. Also says how many chunks the slab spans now.
    ///
    /// A chunk is a stable unit only while the slab is: after `restore` (which packs the slab), the
    /// first checkpoint must be taken with `all`.
    pub fn take_dirty_chunks(&mut self, size: usize, all: bool) -> Chunks {
        let size = size.max(1);
        let count = self.slots.len().div_ceil(size);
        let mut chunks = Vec::new();
        for (k, range) in self.slots.chunks_mut(size).enumerate() {
            if !all && !range.iter().any(|s| s.dirty) {
                continue;
            }
            let records = range
                .iter_mut()
                .filter_map(|slot| {
                    slot.dirty = false;
                    slot.machine.as_ref().map(|m| (slot.name.clone(), record_of(m)))
                })
                .collect();
            chunks.push((k as u32, records));
        }
        Chunks { chunks, count: count as u32 }
    }

    /// Fleet-wide state and the log position it stands at.
    pub fn fleet_record(&self) -> FleetRecord {
        let names = |hs: &mut dyn Iterator<Item = &Handle>| -> Vec<WorkspaceId> {
            hs.filter(|h| self.valid(**h)).map(|h| self.slots[h.idx as usize].name.clone()).collect()
        };
        FleetRecord {
            seq: self.seq,
            clock: self.clock(),
            breaker: self.fleet.breaker.clone(),
            queue: names(&mut self.fleet.queue.iter()),
            queue_unseen: names(&mut self.fleet.queue_unseen.iter()),
            held: names(&mut self.fleet.held.iter()),
            dedup: self.dedup.order.iter().map(|(t, k)| (*t, k.to_string())).collect(),
            id_key: self.id_key,
            plain_restarts: self.plain_restarts.iter().map(|(ws, n)| (ws.clone(), *n)).collect(),
        }
    }

    /// Every workspace's record, sorted by id.
    pub fn records(&self) -> Vec<(WorkspaceId, WorkspaceRecord)> {
        let mut all: Vec<_> =
            self.slots.iter().filter_map(|s| s.machine.as_ref().map(|m| (s.name.clone(), record_of(m)))).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// A canonical encoding of everything the engine decides from: two engines with equal digests
    /// give the same outputs for the same inputs from here on.
    pub fn digest(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(&(self.fleet_record(), self.records())).expect("records always encode")
    }

    /// Rebuilds an engine from a checkpoint: the fleet record and every workspace record.
    pub fn restore(
        policy: Policy,
        fleet: FleetRecord,
        workspaces: impl IntoIterator<Item = (WorkspaceId, WorkspaceRecord)>,
    ) -> Result<Self, RestoreError> {
        let mut engine = Engine::new(policy);
        let workspaces = workspaces.into_iter();
        let expected = workspaces.size_hint().0;
        engine.slots.reserve(expected);
        let hasher = engine.hasher;
        engine.index.reserve(expected, |i| hasher.hash_one(engine.slots[i as usize].name.as_str()));
        engine.seq = fleet.seq;
        engine.id_key = fleet.id_key;
        engine.plain_restarts = fleet.plain_restarts.into_iter().collect();
        if let Some(clock) = fleet.clock {
            engine.clock = clock;
        }
        for (ws, record) in workspaces {
            if engine.lookup(ws.as_str()).is_some() {
                return Err(RestoreError::Duplicate(ws));
            }
            let idx = engine.slots.len() as u32;
            let state = record.state.name();
            let holds_slot = record.state.holds_restart_slot();
            let mut sm = record.shared.uninitialized_state_machine();
            *sm.state_mut() = record.state;
            let mut scratch = Vec::new();
            let machine = sm.init_with_context(&mut Ctx {
                now: engine.clock,
                policy: &engine.policy,
                id_key: engine.id_key.as_ref(),
                plain_restart: None,
                ws: &ws,
                handle: Handle { idx, generation: 0 },
                fleet: &mut engine.fleet,
                out: &mut scratch,
                input: None,
                current: state,
                removed: false,
            });
            debug_assert!(scratch.is_empty(), "no entry actions, so restoring emits nothing");
            engine.slots.push(Slot {
                name: ws.clone(),
                generation: 0,
                dirty: false,
                armed: Stamp::NEVER,
                machine: Some(machine),
            });
            let (slots, hasher) = (&engine.slots, engine.hasher);
            engine
                .index
                .insert_unique(hasher.hash_one(ws.as_str()), idx, |i| hasher.hash_one(slots[i as usize].name.as_str()));
            engine.counts[state_index(state)] += 1;
            engine.fleet.in_flight += u32::from(holds_slot);
            engine.rearm(idx);
        }
        engine.refresh_monitored();
        let handle_of = |e: &Engine, ws: WorkspaceId| {
            e.lookup(ws.as_str()).map(|i| e.handle(i)).ok_or(RestoreError::UnknownInFleet(ws))
        };
        engine.fleet.queue = fleet.queue.into_iter().map(|ws| handle_of(&engine, ws)).collect::<Result<_, _>>()?;
        engine.fleet.queue_unseen =
            fleet.queue_unseen.into_iter().map(|ws| handle_of(&engine, ws)).collect::<Result<_, _>>()?;
        engine.fleet.held = fleet.held.into_iter().map(|ws| handle_of(&engine, ws)).collect::<Result<_, _>>()?;
        engine.fleet.breaker = fleet.breaker;
        for (t, key) in fleet.dedup {
            let key: Box<str> = key.into();
            engine.dedup.seen.insert(key.clone(), t);
            engine.dedup.order.push_back((t, key));
        }
        Ok(engine)
    }

    // -----------------------------------------------------------------------------------------
    // Views.
    // -----------------------------------------------------------------------------------------

    /// One workspace's state, as queries and `vigil inspect` show it.
    pub fn view(&self, ws: &str) -> Option<WorkspaceView> {
        let idx = self.lookup(ws)?;
        let slot = &self.slots[idx as usize];
        let machine = slot.machine.as_ref()?;
        let (state, shared) = (machine.state(), machine.inner());
        let now = self.clock().unwrap_or(shared.since);
        Some(WorkspaceView {
            workspace: slot.name.clone(),
            state: state.name(),
            since: shared.since,
            last_heartbeat: shared.last_heartbeat.get(),
            interval_s: if shared.interval_s == 0 { self.policy.default_interval_s } else { shared.interval_s },
            incarnation: shared.incarnation.as_deref().map(str::to_string),
            restarts: shared.restarts,
            restart_in_flight: matches!(state, State::Restarting { .. }).then(|| {
                let plain = self.plain_restarts.get(&slot.name) == Some(&shared.restarts);
                ids::restart_id(self.id_key.as_ref().filter(|_| !plain), &slot.name, shared.restarts)
            }),
            restart_attempt: u32::from(shared.failures) + 1,
            followup_pending: matches!(state, State::Restarting { r } if r.followup),
            held: fleet_list(state) == FleetList::Held,
            waiting_on: match state {
                State::Dead { w } => Some(match w.on {
                    Wait::Time => "time",
                    Wait::Breaker => "breaker",
                    Wait::Queue => "queue",
                    Wait::GaveUp => "gave_up",
                }),
                _ => None,
            },
            next_deadline: state.next_deadline(shared, &self.policy),
            retry_after_s: state.retry_after_s(now, &self.policy),
        })
    }

    /// Every workspace id, sorted.
    pub fn workspace_ids(&self) -> Vec<WorkspaceId> {
        let mut ids: Vec<_> = self.slots.iter().filter(|s| s.machine.is_some()).map(|s| s.name.clone()).collect();
        ids.sort();
        ids
    }

    /// Counts per state and the fleet's admission status.
    pub fn fleet_view(&self) -> FleetView {
        let c = &self.counts;
        FleetView {
            workspaces: self.index.len(),
            alive: c[0],
            suspect: c[1],
            restarting: c[2],
            dead: c[3],
            parked: c[4],
            breaker_open: self.fleet.breaker.is_open(),
            breaker_close_at: self.fleet.breaker.close_at(),
            restarts_in_flight: self.fleet.in_flight,
            restart_queue: self.fleet.queued(),
            held: self.fleet.held.len(),
        }
    }

    /// Bytes the engine has reserved for its own structures (slab, index, timers), excluding
    /// heap allocations owned by individual workspaces (ids, incarnations).
    pub fn reserved_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.index.capacity() * (std::mem::size_of::<u32>() + 1)
            + self.timers.capacity_bytes()
    }
}

fn record_of(machine: &Machine) -> WorkspaceRecord {
    WorkspaceRecord { shared: machine.inner().clone(), state: machine.state().clone() }
}

/// The machine event for an input, if the machine handles it.
fn machine_event(kind: &InputKind) -> Option<Event<'_>> {
    Some(match kind {
        InputKind::Heartbeat(e) => Event::Heartbeat(e),
        InputKind::Probe(e) => Event::Probe(e),
        InputKind::UpstreamError(e) => Event::Upstream(e),
        InputKind::RestartRequested(e) => Event::RestartRequested(e),
        InputKind::RestartProgress(e) => Event::Progress(e),
        InputKind::Lifecycle(e) => Event::Lifecycle(e.phase),
        InputKind::Tick | InputKind::Resume(_) => return None,
    })
}

/// Whether an event about an unknown workspace is one `registration = "lifecycle"` acts on:
/// `lifecycle created` adds it, `lifecycle removed` records its tombstone.
fn registers(kind: &InputKind) -> bool {
    matches!(kind, InputKind::Lifecycle(l) if matches!(l.phase, LifecyclePhase::Created | LifecyclePhase::Removed))
}

fn suppressed(reason: Reason, input: &'static str, detail: Option<String>) -> OutputBody {
    OutputBody::Suppressed { reason, input: Some(input), detail, retry_after_s: None }
}

#[cfg(test)]
mod tests {
    /// The memory target (≤ 256 B per idle workspace at a million) leaves little room: a slot must
    /// not grow unnoticed. See BENCHMARKS.md for the measured figure.
    #[test]
    fn a_workspace_slot_stays_small() {
        assert!(std::mem::size_of::<super::Slot>() <= 168, "Slot is {} bytes", std::mem::size_of::<super::Slot>());
    }
}
