//! Fleet-wide restart admission: the disruption modes or the cascade breaker, and the concurrency
//! cap (SPEC §3.4 steps 3–4).
//!
//! With one partition and a `restart_rate`, automatic restarts pass the disruption modes
//! (`core::disruption`): the fleet's share of Suspect and Dead workspaces sets the mode, and a
//! token bucket paces restarts; what may not go now is *held* and gets its turn later, oldest
//! first. The rest of this module is the breaker that came before, which several partitions still
//! use (and a policy with `restart_rate = 0`):
//!
//! Six workspaces "dying" in the same second is far more likely one sick observer (a Docker daemon
//! under load, a control plane returning 5xx, a network blip) than six deaths. The breaker counts
//! automatic death declarations in a sliding window; past the threshold it holds them all until the
//! fleet has been calm for a while. The cap bounds how many automatic restarts run at once, so even
//! a legitimate mass failure recovers as a controlled queue rather than a stampede.
//!
//! With several partitions (SPEC §4) each is folded by its own engine, but the breaker and the cap
//! are the fleet's: an automatic death declaration is not counted where it is made. It becomes an
//! [`Outgoing`] entry, which the partition's owner appends to the input stream as a `declaration`
//! record; every partition reads every such record, in the stream's one order, and counts it — so
//! every breaker sees the same declarations at the same times and opens on the same one — and the
//! declaring partition learns from its own record whether its workspace is admitted or held. The
//! workspace waits Suspect meanwhile (a few milliseconds), with nothing armed. The cap is split:
//! each partition runs at most its share of `max_restarts_in_flight` (rounded up).
//!
//! Pure data: the engine owns one `Fleet` and hands it to each machine through its context.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::disruption::{Disruption, Mode};
use crate::event::{Partition, Reason, WorkspaceId};
use crate::policy::Policy;
use crate::time::At;

/// A stable reference to a workspace slot in the engine (index plus generation, so a reused slot
/// is never mistaken for the workspace that used to live there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    pub idx: u32,
    pub generation: u32,
}

/// The outcome of an automatic death declaration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Declaration {
    /// Below the threshold: go ahead.
    Go,
    /// Held by the breaker; `opened` is true for the declaration that tripped it.
    Held { opened: bool },
}

/// The breaker: automatic death declarations in a sliding window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Breaker {
    open: bool,
    /// Declarations (admitted or held) within the window, oldest first.
    recent: VecDeque<At>,
    /// While open: when it closes, unless more declarations arrive.
    close_at: Option<At>,
}

/// Everything fleet-level the machines consult and the engine maintains.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    pub breaker: Breaker,
    /// Automatic restarts currently in Restarting.
    pub in_flight: u32,
    /// Dead workspaces waiting for a restart slot, in declaration order: those that were ever
    /// seen alive (a heartbeat) ...
    pub queue: VecDeque<Handle>,
    /// ... ahead of those that never were (see [`Fleet::enqueue`]).
    pub queue_unseen: VecDeque<Handle>,
    /// Workspaces held by the open breaker, in the order they were held.
    pub held: Vec<Handle>,
    /// Workspaces that are not parked: the breaker's percentage is of these.
    pub monitored: usize,
    /// The queue head the engine is handing a freed slot to.
    pub granted: Option<Handle>,
    /// With several partitions: which one this engine folds (from the latest `resume` that said).
    pub shared: Option<Partition>,
    /// With several partitions: declarations made here whose `declaration` record has not come
    /// back yet, oldest first (the owner appends them; a successor appends those still here).
    pub outgoing: Vec<Outgoing>,
    /// With several partitions: the fleet's monitored workspaces by the latest `declaration`
    /// record, which every partition measures the breaker's threshold against.
    pub fleet_monitored: Option<u32>,
    /// The disruption mode and the restart token bucket (one partition, `restart_rate` > 0).
    pub disruption: Disruption,
    /// The held workspace being given its turn (the token is spent for it already).
    pub turn: Option<Handle>,
    /// How many at the head of `held` were held again after their turn came for nothing.
    pub held_front: usize,
}

/// How an automatic restart comes to the disruption modes' gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// For the first time: it needs a token.
    New,
    /// Its turn came: its token is spent; it goes if the fleet still gives turns.
    Turn,
    /// Admitted before and queued for a slot (step 4): its token is spent; only full disruption
    /// stops it.
    Queued,
}

/// A declaration made by this partition, waiting for its `declaration` record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outgoing {
    pub workspace: WorkspaceId,
    pub reason: Reason,
    /// The fleet's monitored workspaces as this partition estimates them (its own × partitions).
    pub monitored: u32,
    /// The workspace waits Suspect for the verdict (else the record is only counted).
    pub awaits: bool,
    /// Where the input that caused it stands in the log (its stream position, or its log
    /// sequence): with the partition and the workspace, the record's `Nats-Msg-Id`, the same on
    /// every replica, so a successor's append of one already appended is dropped by the stream.
    pub cause: u64,
}

impl Breaker {
    /// True while declarations are held.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// When the open breaker is due to close.
    pub fn close_at(&self) -> Option<At> {
        self.close_at
    }

    fn prune(&mut self, now: At, policy: &Policy) {
        while self.recent.front().is_some_and(|t| now.since(*t) > policy.breaker_window) {
            self.recent.pop_front();
        }
    }

    /// Counts a declaration at `now` and says whether it may proceed.
    pub fn declare(&mut self, now: At, monitored: usize, policy: &Policy) -> Declaration {
        self.prune(now, policy);
        self.recent.push_back(now);
        if self.open {
            self.close_at = Some(self.calm_from(now, monitored, policy).plus(policy.breaker_cooldown));
            return Declaration::Held { opened: false };
        }
        if policy.breaker_exceeded(self.recent.len(), monitored) {
            self.open = true;
            self.close_at = Some(self.calm_from(now, monitored, policy).plus(policy.breaker_cooldown));
            return Declaration::Held { opened: true };
        }
        Declaration::Go
    }

    /// The instant from which the window no longer exceeds the threshold, given what it holds.
    fn calm_from(&self, now: At, monitored: usize, policy: &Policy) -> At {
        let n = self.recent.len();
        let aged_out = (0..=n).find(|k| !policy.breaker_exceeded(n - k, monitored)).unwrap_or(n);
        // An entry leaves the window one millisecond after it is `breaker_window` old (see
        // `prune`), so that is when it stops counting.
        match aged_out {
            0 => now,
            k => self.recent[k - 1].plus(policy.breaker_window).plus(std::time::Duration::from_millis(1)).max(now),
        }
    }

    /// Called when `close_at` is reached: closes the breaker if the fleet stayed calm, or pushes
    /// the closing time out. Returns true when it closed.
    pub fn try_close(&mut self, now: At, monitored: usize, policy: &Policy) -> bool {
        self.prune(now, policy);
        if policy.breaker_exceeded(self.recent.len(), monitored) {
            self.close_at = Some(self.calm_from(now, monitored, policy).plus(policy.breaker_cooldown));
            return false;
        }
        self.open = false;
        self.close_at = None;
        true
    }

    /// Declarations counted in the window at `now`.
    pub fn recent_count(&self) -> usize {
        self.recent.len()
    }
}

impl Fleet {
    /// Whether automatic restarts pass the disruption modes (else the declaration breaker).
    pub fn modes(&self, policy: &Policy) -> bool {
        policy.disruption_modes() && !self.is_shared()
    }

    /// Whether an automatic restart may go now, and if not, why it waits. With the declaration
    /// breaker: whether the breaker is open.
    pub fn gate(&self, now: At, policy: &Policy, pass: Pass) -> Option<Reason> {
        if !self.modes(policy) {
            return self.breaker.is_open().then_some(Reason::BreakerOpen);
        }
        match (self.disruption.mode, pass) {
            (Mode::Full, _) => Some(Reason::DisruptionFull),
            // Admitted before, waiting only for a slot: only full disruption stops it now.
            (_, Pass::Queued) => None,
            // Its turn came, and the fleet still gives turns (it may have got worse since).
            (_, Pass::Turn) if self.disruption.gives_turns(now, policy) => None,
            (Mode::Partial, _) => Some(Reason::DisruptionPartial),
            (Mode::Healthy, _) if !self.held.is_empty() || !self.disruption.has_token(now, policy) => {
                Some(Reason::RestartRateLimited)
            }
            (Mode::Healthy, _) => None,
        }
    }

    /// An automatic restart passed the gate (it goes, or waits only for a slot): a new one takes
    /// its token; one whose token is spent already (a turn, a queued one) takes none.
    pub fn spend(&mut self, now: At, policy: &Policy, pass: Pass) {
        if self.modes(policy) && pass == Pass::New {
            self.disruption.spend(now, policy);
        }
    }

    /// A workspace whose token was spent (a turn, a queued restart) did not restart after all
    /// (debounce, backoff, give-up, or the fleet got worse): its token goes back.
    pub fn refund(&mut self, policy: &Policy, pass: Pass) {
        if self.modes(policy) && pass != Pass::New {
            self.disruption.refund(policy);
        }
    }

    /// Holds a workspace whose turn came for nothing (the fleet got worse before its fresh
    /// evidence): back at the front, behind those re-held before it, so the oldest stay first.
    pub fn hold_again(&mut self, who: Handle) {
        let at = self.held_front.min(self.held.len());
        self.held.insert(at, who);
        self.held_front = at + 1;
    }

    /// Takes `who` out of the held list (it no longer waits there).
    pub fn unhold(&mut self, who: Handle) {
        if let Some(pos) = self.held.iter().position(|h| *h == who) {
            self.held.remove(pos);
            if pos < self.held_front {
                self.held_front -= 1;
            }
        }
    }

    /// The oldest held workspace, taken off the list for its turn.
    pub fn next_held(&mut self) -> Option<Handle> {
        if self.held.is_empty() {
            return None;
        }
        self.held_front = self.held_front.saturating_sub(1);
        Some(self.held.remove(0))
    }

    /// True when `who` may start an automatic restart now: a slot is free and nobody queued
    /// earlier is waiting for it (unless `who` is the queue head being granted the slot).
    pub fn has_slot(&self, policy: &Policy, who: Handle) -> bool {
        self.in_flight < self.cap(policy) && (self.queued() == 0 || self.granted == Some(who))
    }

    /// How many automatic restarts may be in flight here: `max_restarts_in_flight`, or with
    /// several partitions this partition's share of it (rounded up, so at least one).
    pub fn cap(&self, policy: &Policy) -> u32 {
        match self.shared {
            Some(p) => policy.max_restarts_in_flight.div_ceil(p.of.max(1)),
            None => policy.max_restarts_in_flight,
        }
    }

    /// The monitored count the breaker's threshold is measured against: this engine's own, or with
    /// several partitions the fleet's by the latest `declaration` record.
    pub fn breaker_monitored(&self) -> usize {
        match (self.shared, self.fleet_monitored) {
            (Some(_), Some(n)) => n as usize,
            _ => self.monitored,
        }
    }

    /// The fleet's monitored workspaces as this partition estimates them: its own, times the
    /// number of partitions (workspaces spread evenly by hash).
    pub fn monitored_estimate(&self) -> u32 {
        let of = self.shared.map_or(1, |p| p.of);
        u32::try_from(self.monitored.saturating_mul(of as usize)).unwrap_or(u32::MAX)
    }

    /// Whether declarations are the fleet's (several partitions), made through `declaration`
    /// records rather than counted here.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Records a declaration for this partition's owner to append (`cause` is stamped by the
    /// engine once the input that caused it is numbered).
    pub fn declare_shared(&mut self, workspace: &WorkspaceId, reason: Reason, awaits: bool) {
        let monitored = self.monitored_estimate();
        self.outgoing.push(Outgoing { workspace: workspace.clone(), reason, monitored, awaits, cause: 0 });
    }

    /// Queues a dead workspace for a restart slot. A workspace that never heartbeated waits behind
    /// every one that did: anyone can invent workspace ids, and a thousand invented ones must not
    /// stand in front of a real agent that really died.
    pub fn enqueue(&mut self, who: Handle, seen_alive: bool) {
        if seen_alive { self.queue.push_back(who) } else { self.queue_unseen.push_back(who) }
    }

    /// The workspace the next free slot goes to.
    pub fn queue_head(&self) -> Option<Handle> {
        self.queue.front().or(self.queue_unseen.front()).copied()
    }

    /// Drops the queue head (it took its slot, or no longer waits for one).
    pub fn pop_queue_head(&mut self) {
        if self.queue.pop_front().is_none() {
            self.queue_unseen.pop_front();
        }
    }

    /// Takes `who` out of the queue.
    pub fn dequeue(&mut self, who: Handle) {
        self.queue.retain(|h| *h != who);
        self.queue_unseen.retain(|h| *h != who);
    }

    /// How many wait for a slot.
    pub fn queued(&self) -> usize {
        self.queue.len() + self.queue_unseen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(s: i64) -> At {
        At(s * 1000)
    }

    #[test]
    fn opens_past_the_threshold_and_closes_after_a_calm_cooldown() {
        let p = Policy::default();
        let mut b = Breaker::default();
        for i in 0..3 {
            assert_eq!(b.declare(at(i), 20, &p), Declaration::Go, "declaration {i}");
        }
        assert_eq!(b.declare(at(3), 20, &p), Declaration::Held { opened: true });
        assert_eq!(b.declare(at(4), 20, &p), Declaration::Held { opened: false });
        // Five in the window; the count drops to 3 when the declaration at 1 s ages out (just
        // after 31 s), and the breaker closes 60 s after that.
        let close = at(1).plus(Duration::from_millis(30_001 + 60_000));
        assert_eq!(b.close_at(), Some(close));
        // Another declaration while open pushes the closing time out.
        let mut busier = b.clone();
        assert_eq!(busier.declare(at(20), 20, &p), Declaration::Held { opened: false });
        assert!(busier.close_at().unwrap() > close);
        assert!(b.try_close(close, 20, &p));
        assert!(!b.is_open());
        assert_eq!(b.close_at(), None);
    }

    #[test]
    fn a_zero_cooldown_closes_instead_of_spinning() {
        let p = Policy { breaker_cooldown: Duration::ZERO, ..Policy::default() };
        let mut b = Breaker::default();
        for i in 0..5 {
            b.declare(at(i), 20, &p);
        }
        let close = b.close_at().unwrap();
        assert!(close > at(4), "the closing time is after the last declaration");
        assert!(b.try_close(close, 20, &p), "and at that time the window is calm");
    }

    #[test]
    fn workspaces_never_seen_alive_wait_behind_those_that_were() {
        let h = |idx| Handle { idx, generation: 0 };
        let mut fleet = Fleet::default();
        fleet.enqueue(h(1), false);
        fleet.enqueue(h(2), false);
        fleet.enqueue(h(3), true);
        assert_eq!(fleet.queued(), 3);
        let mut order = Vec::new();
        while let Some(head) = fleet.queue_head() {
            order.push(head.idx);
            fleet.pop_queue_head();
        }
        assert_eq!(order, [3, 1, 2]);
    }

    #[test]
    fn declarations_spread_beyond_the_window_never_open_it() {
        let p = Policy::default();
        let mut b = Breaker::default();
        for i in 0..20 {
            assert_eq!(b.declare(at(i * 11), 20, &p), Declaration::Go);
        }
    }
}
