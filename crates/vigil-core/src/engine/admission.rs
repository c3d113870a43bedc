//! An input's way to its workspace: the dedup window, workspaces the engine does not hold yet
//! (created, turned away by a tombstone or by `registration`), and the first state change.

use std::collections::VecDeque;
use std::hash::BuildHasher;

use statig::blocking::IntoStateMachineExt;

use super::*;

/// Idempotency keys seen within the dedup window.
#[derive(Default)]
pub(super) struct Dedup {
    pub(super) seen: FxHashMap<Box<str>, At>,
    pub(super) order: VecDeque<(At, Box<str>)>,
}

impl Dedup {
    /// True if `key` was seen within `window` before `now`; otherwise remembers it.
    pub(super) fn seen_before(&mut self, key: String, now: At, window: std::time::Duration) -> bool {
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

impl Engine {
    pub(super) fn apply_to_workspace(&mut self, input: &Input, known: Option<u32>, at: At, out: &mut Vec<Output>) {
        let ws = input.kind.workspace().expect("workspace events name a workspace");
        let type_name = input.kind.input_type();
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

    pub(super) fn is_duplicate(&mut self, input: &Input, ws: &WorkspaceId, at: At) -> bool {
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
    pub(super) fn admit_unknown(
        &mut self,
        ws: &WorkspaceId,
        kind: &InputKind,
        at: At,
        out: &mut Vec<Output>,
    ) -> Option<u32> {
        let type_name = kind.input_type();
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

    pub(super) fn create(
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
                overdue: self.overdue,
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
}

/// The machine event for an input, if the machine handles it.
pub(super) fn machine_event(kind: &InputKind) -> Option<Event<'_>> {
    Some(match kind {
        InputKind::Heartbeat(e) => Event::Heartbeat(e),
        InputKind::Probe(e) => Event::Probe(e),
        InputKind::UpstreamError(e) => Event::Upstream(e),
        InputKind::RestartRequested(e) => Event::RestartRequested(e),
        InputKind::RestartProgress(e) => Event::Progress(e),
        InputKind::Lifecycle(e) => Event::Lifecycle(e.phase),
        InputKind::Tick | InputKind::Resume(_) | InputKind::Declaration(_) => return None,
    })
}

/// Whether an event about an unknown workspace is one `registration = "lifecycle"` acts on:
/// `lifecycle created` adds it, `lifecycle removed` records its tombstone.
pub(super) fn registers(kind: &InputKind) -> bool {
    matches!(kind, InputKind::Lifecycle(l) if matches!(l.phase, LifecyclePhase::Created | LifecyclePhase::Removed))
}

pub(super) fn suppressed(reason: Reason, input: InputType, detail: Option<String>) -> OutputBody {
    OutputBody::Suppressed { reason, input: Some(input), detail, retry_after_s: None }
}
