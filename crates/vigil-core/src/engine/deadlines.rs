//! Time: deadlines fire in deadline order (ties in workspace-id order) before any input stamped
//! later; the breaker closes on its own deadline; time nobody watched (a stretch of the log with no
//! record, in a log that promises one every so often) moves every deadline later; in logs from
//! before that promise, `resume` re-arms every deadline with full grace.

use super::*;

impl Engine {
    /// The earliest instant at which a timer is due (possibly a stale entry, which is harmless:
    /// the shell ticks, nothing fires, and the next deadline is reported).
    pub fn next_deadline(&self) -> Option<At> {
        match (self.timers.peek(), self.fleet_deadline()) {
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

    /// The fleet's own next deadline: the disruption modes' (a mode stepping down, a held
    /// workspace's turn), or the declaration breaker's closing.
    fn fleet_deadline(&self) -> Option<At> {
        if self.modes() {
            return self.modes_deadline();
        }
        // Workspaces the disruption modes held, which are off now (a partition was declared, or
        // the policy changed): the closed breaker lets them go at once.
        let stranded = !self.fleet.held.is_empty() && !self.fleet.breaker.is_open();
        self.fleet.breaker.close_at().or(stranded.then_some(self.clock))
    }

    /// Fires every deadline up to and including `until`, earliest first; the fleet's (the
    /// breaker closing, the disruption modes) goes before workspace timers due at the same instant.
    pub(super) fn fire_due(&mut self, until: At, out: &mut Vec<Output>) {
        loop {
            let fleet = self.fleet_deadline().filter(|t| *t <= until);
            let workspace = self.timers.peek().filter(|t| *t <= until);
            match (fleet, workspace) {
                (Some(b), w) if w.is_none_or(|w| b <= w) => {
                    // Like a workspace timer: at its time, or the clock's if that is later.
                    self.clock = self.clock.max(b);
                    if self.modes() {
                        self.reconsider(self.clock, out);
                    } else {
                        self.close_breaker(self.clock, out);
                    }
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
    pub(super) fn fire_instant(&mut self, deadline: At, out: &mut Vec<Output>) {
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

    pub(super) fn deadline_of(&self, idx: u32) -> Option<At> {
        let machine = self.slots[idx as usize].machine.as_ref()?;
        machine.state().next_deadline(machine.inner(), &self.policy, &self.overdue)
    }

    pub(super) fn close_breaker(&mut self, at: At, out: &mut Vec<Output>) {
        if !self.fleet.breaker.is_open() {
            // Held by the disruption modes, which are off now: as if a breaker closed, quietly.
            self.fleet.held_front = 0;
            for h in std::mem::take(&mut self.fleet.held) {
                if self.valid(h) {
                    self.dispatch(h.idx, &Event::BreakerClosed, at, None, out);
                }
            }
            return;
        }
        if !self.fleet.breaker.try_close(at, self.fleet.breaker_monitored(), &self.policy) {
            return;
        }
        self.fleet.held_front = 0;
        let held = std::mem::take(&mut self.fleet.held);
        if self.speaks_for_the_fleet() {
            let detail = match self.fleet.shared {
                None => format!("{} held workspaces re-armed with full grace and re-probed", held.len()),
                Some(p) => format!(
                    "held workspaces re-armed with full grace and re-probed in every partition ({} in partition {})",
                    held.len(),
                    p.index
                ),
            };
            let body =
                OutputBody::Alert { kind: AlertKind::BreakerClosed, reason: Reason::BreakerCalm, detail: Some(detail) };
            self.push_output(out, None, at, body);
        }
        for h in held {
            if self.valid(h) {
                self.dispatch(h.idx, &Event::BreakerClosed, at, None, out);
            }
        }
    }

    /// vigil (re)started. In a log that promises a record at least every `unwatched_after_ms`,
    /// the time it was away is already excluded (see [`Engine::unwatched`]) and the silence
    /// observed before still counts, so nothing is re-armed; in a log from before, every
    /// workspace's deadlines are re-armed with full grace from `at`.
    pub(super) fn resume(&mut self, resume: &Resume, at: At, out: &mut Vec<Output>) {
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
        if let Some(ms) = resume.unwatched_after_ms {
            self.unwatched_after_ms = Some(ms);
        }
        if let Some(p) = resume.partition {
            self.fleet.shared = Some(p);
        }
        if self.unwatched_after_ms.is_some() {
            return;
        }
        self.fleet.disruption.resumed(at);
        self.each_in_id_order(&Event::Resume, Some(InputType::Resume), at, out);
    }

    /// Nothing reached the log for `gap` before `at`: every workspace's deadlines move `gap`
    /// later, so that only watched time counts towards them, and an alert says so.
    pub(super) fn unwatched(&mut self, gap: Duration, at: At, out: &mut Vec<Output>) {
        let log = match self.fleet.shared {
            Some(p) => format!("partition {}'s log", p.index),
            None => "the log".to_string(),
        };
        let detail = format!("nothing reached {log} for {} ms: every deadline extended by that", gap.as_millis());
        let body = OutputBody::Alert { kind: AlertKind::Unwatched, reason: Reason::Unwatched, detail: Some(detail) };
        self.push_output(out, None, at, body);
        self.fleet.disruption.unwatched(gap);
        self.each_in_id_order(&Event::Unwatched(gap), None, at, out);
    }

    /// Hands `event` to every workspace, in workspace-id order; the disruption modes look at the
    /// fleet once all have had it, never at a half-updated census.
    fn each_in_id_order(&mut self, event: &Event<'_>, input: Option<InputType>, at: At, out: &mut Vec<Output>) {
        let outer = std::mem::replace(&mut self.reconsidering, true);
        for idx in self.live_in_id_order() {
            self.dispatch(idx, event, at, input, out);
        }
        self.reconsidering = outer;
        self.reconsider(at, out);
    }

    /// Every workspace held, in workspace-id order (the slab's order is not the same after a
    /// restore, and a fold must not depend on it).
    fn live_in_id_order(&self) -> Vec<u32> {
        let mut live: Vec<u32> =
            (0..self.slots.len() as u32).filter(|&i| self.slots[i as usize].machine.is_some()).collect();
        live.sort_by(|&a, &b| self.slots[a as usize].name.cmp(&self.slots[b as usize].name));
        live
    }
}
