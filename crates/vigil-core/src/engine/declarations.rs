//! The fleet's breaker across partitions (SPEC §3.4, §4 "Partitions"): `declaration` records.
//!
//! With several partitions, a death declaration is not counted where it is made: the machine
//! records it as an [`Outgoing`] entry and waits, Suspect, with nothing armed. The partition's owner
//! appends the entry as a `declaration` record, which every partition reads in the stream's one
//! order and counts — so all breakers open on the same record and close at the same instant — and
//! the declaring partition, when its own record comes back, admits its workspace (Dead, and a
//! restart) or holds it. Only partition 0 says so in an alert: one alert for the fleet.

use super::*;
use crate::fleet::{Declaration as Verdict, Outgoing};

impl Engine {
    /// A `declaration` record: counted in the breaker; this partition's own gets its verdict.
    pub(super) fn declaration(&mut self, d: &Declaration, at: At, out: &mut Vec<Output>) {
        let verdict = self.fleet.breaker.declare(at, d.monitored as usize, &self.policy);
        self.fleet.fleet_monitored = Some(d.monitored);
        if verdict == (Verdict::Held { opened: true }) && self.speaks_for_the_fleet() {
            let detail = format!(
                "{} automatic death declarations within {}s among {} monitored workspaces, fleet-wide \
                 (the last: {} in partition {}, {})",
                self.fleet.breaker.recent_count(),
                self.policy.breaker_window.as_secs(),
                d.monitored,
                d.workspace,
                d.partition,
                d.reason
            );
            let body = OutputBody::Alert {
                kind: AlertKind::BreakerOpen,
                reason: Reason::BreakerThresholdExceeded,
                detail: Some(detail),
            };
            self.push_output(out, None, at, body);
        }
        let Some(entry) = self.take_own(d) else { return };
        if !entry.awaits {
            return;
        }
        // Overtaken meanwhile (a heartbeat, a removal) or not: the machine knows.
        if let Some(idx) = self.lookup(d.workspace.as_str()) {
            let event = Event::FleetVerdict { admitted: verdict == Verdict::Go, reason: entry.reason };
            self.dispatch(idx, &event, at, None, out);
        }
    }

    /// The entry this partition's own record answers, taken off the outgoing list.
    fn take_own(&mut self, d: &Declaration) -> Option<Outgoing> {
        let own = self.fleet.shared?.index == d.partition;
        let pos = self.fleet.outgoing.iter().position(|o| o.workspace == d.workspace && o.awaits == d.awaits);
        own.then_some(pos?).map(|pos| self.fleet.outgoing.remove(pos))
    }

    /// Whether this engine's breaker alerts are the fleet's: with one partition, always; with
    /// several, partition 0's only (every partition's breaker opens and closes alike).
    pub(super) fn speaks_for_the_fleet(&self) -> bool {
        self.fleet.shared.is_none_or(|p| p.index == 0)
    }

    /// Gives the declarations the input just applied made their cause: its stream position (or
    /// log sequence).
    pub(super) fn stamp_declarations(&mut self, cause: u64) {
        for o in self.fleet.outgoing.iter_mut().rev().take_while(|o| o.cause == 0) {
            o.cause = cause;
        }
    }

    /// Declarations made here whose `declaration` record has not come back yet, oldest first:
    /// what the owner appends (each once per term; a successor appends those still listed).
    pub fn declarations(&self) -> &[Outgoing] {
        &self.fleet.outgoing
    }

    /// Which partition of how many this engine folds, once a `resume` said (none with one).
    pub fn partition(&self) -> Option<Partition> {
        self.fleet.shared
    }
}
