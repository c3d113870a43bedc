//! Handing an event to one machine, and keeping the fleet's books from the state before and after:
//! counts per state, restart slots, the breaker's held list and the restart queue, tombstones of
//! removed workspaces, and each slot's live timer entry.

use std::hash::BuildHasher;

use super::*;
use crate::disruption::Mode;

impl Engine {
    /// Marks a slot as changed since the last checkpoint.
    pub(super) fn touch(&mut self, idx: u32) {
        self.slots[idx as usize].dirty = true;
    }

    /// Hands one event to one machine and keeps the fleet's books from the state before and after.
    pub(super) fn dispatch(
        &mut self,
        idx: u32,
        event: &Event<'_>,
        now: At,
        input: Option<InputType>,
        out: &mut Vec<Output>,
    ) {
        let handle = self.handle(idx);
        let mut scratch = std::mem::take(&mut self.scratch);
        let slot = &mut self.slots[idx as usize];
        let Some(machine) = slot.machine.as_mut() else { return };
        let (was, slot_before, list_before) = {
            let before = machine.state();
            (before.name(), before.holds_restart_slot(), fleet_list(before))
        };
        // The census is only kept while the disruption modes are on (they never turn on later: a
        // partition, once declared, stays; a restore counts afresh).
        let counting = self.fleet.modes(&self.policy);
        let census_before = if counting { modes::census_key(machine) } else { None };
        let plain_restart =
            if self.plain_restarts.is_empty() { None } else { self.plain_restarts.get(&slot.name).copied() };
        let removed = {
            let mut ctx = Ctx {
                now,
                policy: &self.policy,
                overdue: self.overdue,
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
            debug_assert!(
                ctx.removed || ctx.current == machine.state().name(),
                "{} announced as {} but is {}",
                slot.name,
                ctx.current,
                machine.state().name()
            );
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
        let census_after = if removed || !counting { None } else { modes::census_key(machine) };
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
                FleetList::Held => self.fleet.unhold(handle),
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
        let recounted = self.recount(census_before, census_after);
        if recounted || (counting && self.fleet.disruption.mode != Mode::Healthy) {
            self.reconsider(now, out);
        }
    }

    pub(super) fn refresh_monitored(&mut self) {
        self.fleet.monitored = self.index.len() - self.counts[state_index(StateName::Parked)] as usize;
    }

    /// Starts queued automatic restarts while slots are free, oldest declaration first.
    pub(super) fn drain_queue(&mut self, now: At, out: &mut Vec<Output>) {
        if self.draining {
            return;
        }
        self.draining = true;
        while self.fleet.in_flight < self.fleet.cap(&self.policy) {
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

    pub(super) fn remove_slot(&mut self, idx: u32, at: At) {
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
    pub(super) fn rearm(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        let Some(machine) = slot.machine.as_ref() else { return };
        if let Some(next) = machine.state().next_deadline(machine.inner(), &self.policy, &self.overdue)
            && slot.armed.get().is_none_or(|armed| next < armed)
        {
            slot.armed = Stamp::at(next);
            self.timers.push(next, idx);
        }
    }
}
