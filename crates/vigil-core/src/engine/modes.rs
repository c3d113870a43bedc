//! The disruption modes in the engine (SPEC §3.4 step 3, `core::disruption`): the census follows
//! every dispatch, the mode follows the census, and held workspaces get their turns as the mode
//! and the token bucket allow — on the fleet's own deadline when no input comes.

use super::*;
use crate::disruption::{Census, CensusKey, Disruption, Mode, ModeChange};

/// Where a workspace stands in the census: counted once heard from (a heartbeat), unless parked
/// or given up on; unhealthy while Suspect or Dead.
pub(super) fn census_key(machine: &Machine) -> Option<CensusKey> {
    machine.inner().last_heartbeat.get()?;
    match machine.state() {
        State::Parked {} => None,
        State::Dead { w } if w.on == Wait::GaveUp => None,
        State::Suspect { .. } | State::Dead { .. } => Some(true),
        State::Alive {} | State::Restarting { .. } => Some(false),
    }
}

impl Engine {
    /// Whether this engine admits automatic restarts through the disruption modes.
    pub(super) fn modes(&self) -> bool {
        self.fleet.modes(&self.policy)
    }

    /// Moves one workspace in the census; returns whether it changed.
    pub(super) fn recount(&mut self, before: Option<CensusKey>, after: Option<CensusKey>) -> bool {
        self.census.moved(before, after) && self.modes()
    }

    /// Counts every workspace afresh (after a restore): the census depends on the workspaces'
    /// states only, so this is what the engine that wrote the checkpoint counted.
    pub(super) fn rebuild_census(&mut self) {
        self.census = Census::default();
        for slot in &self.slots {
            if let Some(key) = slot.machine.as_ref().and_then(census_key) {
                self.census.moved(None, Some(key));
            }
        }
    }

    /// The mode follows the census at `now`, and held workspaces get their turns while the mode
    /// and the token bucket allow, oldest first.
    pub(super) fn reconsider(&mut self, now: At, out: &mut Vec<Output>) {
        if self.reconsidering || !self.modes() {
            return;
        }
        self.reconsidering = true;
        let (active, unhealthy) = self.census.counts();
        let level = Mode::of(active, unhealthy, &self.policy);
        if let Some(change) = self.fleet.disruption.follow(now, level, &self.policy) {
            self.announce(change, active, unhealthy, now, out);
        }
        let mut turned = false;
        while !self.fleet.held.is_empty() && self.fleet.disruption.may_release(now, &self.policy) {
            let Some(h) = self.fleet.next_held() else { break };
            if !self.valid(h) {
                continue;
            }
            self.fleet.disruption.spend(now, &self.policy);
            self.fleet.turn = Some(h);
            self.dispatch(h.idx, &Event::Turn, now, None, out);
            self.fleet.turn = None;
            turned = true;
        }
        if turned {
            // The turns moved the census (a dead workspace restarting): the mode follows it now,
            // so a calm that began here is timed from here.
            let (active, unhealthy) = self.census.counts();
            let level = Mode::of(active, unhealthy, &self.policy);
            if let Some(change) = self.fleet.disruption.follow(now, level, &self.policy) {
                self.announce(change, active, unhealthy, now, out);
            }
        }
        self.considered = now;
        self.reconsidering = false;
    }

    /// The next instant the disruption modes may change something without an input.
    /// Never at or before the last reconsideration (which left nothing due then); a deadline
    /// already due (a restored engine that has not reconsidered yet) is due at once.
    pub(super) fn modes_deadline(&self) -> Option<At> {
        let next = self.fleet.disruption.next_deadline(!self.fleet.held.is_empty(), &self.policy)?;
        Some(next.max(At(self.considered.0.saturating_add(1))))
    }

    /// The `breaker_open` / `breaker_closed` alert that says which mode the fleet is in now.
    fn announce(&mut self, change: ModeChange, active: u32, unhealthy: u32, at: At, out: &mut Vec<Output>) {
        let p = &self.policy;
        let share = format!("{unhealthy} of {active} active workspaces are suspect or dead");
        let (settle, every) = Disruption::pace(p);
        let detail = match change.to {
            Mode::Full => format!(
                "{share} (more than {}%): full disruption, no automatic restart until fewer are",
                p.disruption_full_pct
            ),
            Mode::Partial => format!(
                "{share} (more than max({}, {}%)): partial disruption, automatic restarts wait until it \
                 has lasted {}s, then go one per {} ms, oldest first, each on a fresh probe",
                p.breaker_min,
                p.breaker_pct,
                settle.as_secs(),
                every.as_millis()
            ),
            Mode::Healthy => format!(
                "{share}, below max({}, {}%) for {}s: healthy after a {} disruption; {} held workspaces get \
                 their turns at restart_rate",
                p.breaker_min,
                p.breaker_pct,
                p.breaker_cooldown.as_secs(),
                change.from,
                self.fleet.held.len()
            ),
        };
        let kind = if change.to == Mode::Healthy { AlertKind::BreakerClosed } else { AlertKind::BreakerOpen };
        let body = OutputBody::Alert { kind, reason: change.to.reason(), detail: Some(detail) };
        self.push_output(out, None, at, body);
    }

    /// The fleet's disruption mode now, and the census it was read from.
    pub fn disruption(&self) -> (Mode, u32, u32) {
        let (active, unhealthy) = self.census.counts();
        (self.fleet.disruption.mode, active, unhealthy)
    }
}
