//! The engine's state as records for a checkpoint, and an engine rebuilt from them that goes on
//! exactly as the original would have.

use std::hash::BuildHasher;

use statig::blocking::IntoStateMachineExt;

use super::*;

impl Engine {
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
            unwatched_after_ms: self.unwatched_after_ms,
            stream_pos: self.stream_pos,
            partition: self.fleet.shared,
            outgoing: self.fleet.outgoing.clone(),
            fleet_monitored: self.fleet.fleet_monitored,
            disruption: self.fleet.disruption.clone(),
            held_front: self.fleet.held_front,
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
        engine.unwatched_after_ms = fleet.unwatched_after_ms;
        engine.stream_pos = fleet.stream_pos;
        engine.fleet.shared = fleet.partition;
        engine.fleet.outgoing = fleet.outgoing;
        engine.fleet.fleet_monitored = fleet.fleet_monitored;
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
                overdue: engine.overdue,
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
        engine.fleet.disruption = fleet.disruption;
        engine.fleet.held_front = fleet.held_front.min(engine.fleet.held.len());
        engine.rebuild_census();
        for (t, key) in fleet.dedup {
            let key: Box<str> = key.into();
            engine.dedup.seen.insert(key.clone(), t);
            engine.dedup.order.push_back((t, key));
        }
        Ok(engine)
    }
}

pub(super) fn record_of(machine: &Machine) -> WorkspaceRecord {
    WorkspaceRecord { shared: machine.inner().clone(), state: machine.state().clone() }
}
