//! Fleet disruption modes (SPEC §3.4 step 3): how many automatic restarts the fleet's state allows.
//!
//! Many workspaces going bad at once is far more likely one sick observer — a Docker daemon, a
//! control plane, a network — than many deaths; but a real mass death (a host gone, a bad image)
//! must still be restarted, at a pace that cannot make an outage worse. Kubernetes' node lifecycle
//! controller answers both with zone states and rate-limited evictions; vigil does the same:
//!
//! - The [`Census`] counts the *active* fleet — workspaces heard from (a heartbeat) within
//!   `active_window`, so invented or long-gone ids do not dilute it — and how many of those are
//!   Suspect or Dead. Suspects count: the mode must switch before the first wave of wrong restarts.
//! - [`Mode::of`] reads it: *healthy*; *partial*, more than max(`breaker_min`, `breaker_pct`%)
//!   unhealthy; *full*, more than `disruption_full_pct`% (and `breaker_min`).
//! - [`Disruption`] holds the mode (it steps down only after `breaker_cooldown` below its
//!   threshold) and a token bucket of `restart_rate` with room for `restart_burst`. Healthy: a
//!   restart goes if a token is there and nobody older waits. Partial: none goes until the
//!   disruption has lasted `disruption_settle` (time for the rest of the fleet to show whether the
//!   observer is what is sick); then held workspaces get their turn one token at a time, oldest
//!   first, and each is restarted only on a fresh probe. Full: none goes at all.
//!
//! The census costs no memory per workspace: a ring of per-minute buckets keyed by each active
//! workspace's last heartbeat, which the engine moves a workspace between as it changes. Pure data
//! and integer arithmetic, like the rest of the core.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::Reason;
use crate::policy::Policy;
use crate::time::At;

const MINUTE_MS: i64 = 60_000;

/// The fleet's disruption mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Healthy,
    Partial,
    Full,
}

impl Mode {
    /// The mode `unhealthy` Suspect-or-Dead workspaces among `active` ones call for.
    pub fn of(active: u32, unhealthy: u32, policy: &Policy) -> Mode {
        let over = |pct: u32| {
            unhealthy > policy.breaker_min && u64::from(unhealthy) * 100 > u64::from(pct) * u64::from(active)
        };
        if over(policy.disruption_full_pct) {
            Mode::Full
        } else if over(policy.breaker_pct) {
            Mode::Partial
        } else {
            Mode::Healthy
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Healthy => "healthy",
            Mode::Partial => "partial",
            Mode::Full => "full",
        }
    }

    /// The reason an alert announcing this mode, or a restart it holds, gives.
    pub fn reason(self) -> Reason {
        match self {
            Mode::Healthy => Reason::BreakerCalm,
            Mode::Partial => Reason::DisruptionPartial,
            Mode::Full => Reason::DisruptionFull,
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A workspace's place in the census: the minute of its last heartbeat, and whether it is Suspect
/// or Dead. Parked workspaces and those never heard from have none.
pub type CensusKey = (i64, bool);

/// The minute an instant falls in.
pub fn minute_of(t: At) -> i64 {
    t.0.div_euclid(MINUTE_MS)
}

/// Active workspaces by the minute of their last heartbeat, and those among them unhealthy.
///
/// `counts` after `advance(now)` is exactly the number of workspaces whose last heartbeat falls in
/// the last `active_window` whole minutes before `now`'s (and of those, the Suspect or Dead): it
/// depends on the workspaces and `now` only, never on the order things happened in, so an engine
/// restored from a checkpoint counts what the original counts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Census {
    /// The minute of `buckets[0]`: anything older is not active.
    first: i64,
    /// `[active, unhealthy]` per minute from `first` on.
    buckets: VecDeque<[u32; 2]>,
    totals: [u32; 2],
    /// How many minutes back from the current one count.
    window: i64,
}

impl Census {
    pub fn new(policy: &Policy) -> Census {
        let window = policy.active_window.as_millis().div_ceil(MINUTE_MS as u128).max(1) as i64;
        Census { first: i64::MIN, buckets: VecDeque::new(), totals: [0, 0], window }
    }

    /// Moves the window on to `now`: buckets that fell out of it stop counting. Never back.
    pub fn advance(&mut self, now: At) {
        let oldest = minute_of(now) - self.window;
        while self.first < oldest {
            let Some(b) = self.buckets.pop_front() else {
                self.first = oldest;
                break;
            };
            self.totals[0] -= b[0];
            self.totals[1] -= b[1];
            self.first += 1;
        }
    }

    /// Counts a workspace in (`delta` 1) or out (`delta` -1) of its place. A place older than the
    /// window is not counted, either way.
    fn count(&mut self, (minute, unhealthy): CensusKey, delta: i32) {
        if minute < self.first {
            return;
        }
        // A heartbeat is never later than the engine's clock, which `advance` followed: a later
        // minute would be a bug, and is counted as the newest rather than grow the ring.
        let i = (minute.saturating_sub(self.first) as usize).min(self.window as usize + 1);
        if self.buckets.len() <= i {
            self.buckets.resize(i + 1, [0, 0]);
        }
        let b = &mut self.buckets[i];
        for (k, counts) in [true, unhealthy].into_iter().enumerate() {
            if counts {
                b[k] = b[k].saturating_add_signed(delta);
                self.totals[k] = self.totals[k].saturating_add_signed(delta);
            }
        }
    }

    /// A workspace moved from `before` to `after` (either may be none). Returns whether the census
    /// changed.
    pub fn moved(&mut self, before: Option<CensusKey>, after: Option<CensusKey>) -> bool {
        if before == after {
            return false;
        }
        if let Some(k) = before {
            self.count(k, -1);
        }
        if let Some(k) = after {
            self.count(k, 1);
        }
        true
    }

    /// Active workspaces, and those among them Suspect or Dead (after `advance`).
    pub fn counts(&self) -> (u32, u32) {
        (self.totals[0], self.totals[1])
    }
}

/// The mode in force, and the token bucket automatic restarts are paced by.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disruption {
    pub mode: Mode,
    /// When the fleet last went into partial disruption (the settle counts from there).
    #[serde(default)]
    pub partial_since: Option<At>,
    /// Below the current mode's threshold since then: it steps down `breaker_cooldown` later.
    #[serde(default)]
    pub calm_since: Option<At>,
    /// The token bucket, as a generic cell rate algorithm: the theoretical time the next restart
    /// is due at if restarts went at exactly `restart_rate` (none yet: the bucket is full).
    #[serde(default)]
    pub tat: Option<At>,
}

/// A change of mode, to announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModeChange {
    pub from: Mode,
    pub to: Mode,
}

impl Disruption {
    /// Follows the level the census calls for at `now`: up at once, down only after
    /// `breaker_cooldown` below the current mode's threshold. Returns the change, if any.
    pub fn follow(&mut self, now: At, level: Mode, policy: &Policy) -> Option<ModeChange> {
        let from = self.mode;
        if level >= from {
            self.calm_since = None;
            if level == from {
                return None;
            }
        } else {
            let calm = *self.calm_since.get_or_insert(now);
            if now < calm.plus(policy.breaker_cooldown) {
                return None;
            }
            self.calm_since = None;
        }
        self.mode = level;
        if level == Mode::Partial {
            self.partial_since = Some(now);
        }
        Some(ModeChange { from, to: level })
    }

    /// Whether a token is there at `now`.
    pub fn has_token(&self, now: At, policy: &Policy) -> bool {
        self.token_at(policy).is_none_or(|t| t <= now)
    }

    /// When the next token is there (none: it is there now, the bucket being full).
    fn token_at(&self, policy: &Policy) -> Option<At> {
        let tat = self.tat?;
        let room = i64::from(policy.restart_burst.saturating_sub(1)).saturating_mul(policy.restart_every_ms());
        Some(At(tat.0.saturating_sub(room)))
    }

    /// Takes a token at `now` (whether or not one was there: a `user` restart is never held, but
    /// nothing here spends for it).
    pub fn spend(&mut self, now: At, policy: &Policy) {
        let from = self.tat.map_or(now, |t| t.max(now));
        self.tat = Some(At(from.0.saturating_add(policy.restart_every_ms())));
    }

    /// Whether a held workspace may get its turn at `now`.
    pub fn may_release(&self, now: At, policy: &Policy) -> bool {
        self.release_at(policy).is_some_and(|t| t <= now)
    }

    /// Whether the fleet gives held workspaces turns at `now` (tokens aside): when healthy, or
    /// partially disrupted for `disruption_settle` already. A workspace whose turn came is
    /// restarted on its fresh evidence only if this still holds then.
    pub fn gives_turns(&self, now: At, policy: &Policy) -> bool {
        self.turns_from(policy).is_some_and(|t| t <= now)
    }

    /// From when the fleet gives turns, in the mode it is in: never in full disruption.
    fn turns_from(&self, policy: &Policy) -> Option<At> {
        match self.mode {
            Mode::Full => None,
            Mode::Partial => Some(self.partial_since.map_or(At(i64::MIN), |t| t.plus(policy.disruption_settle))),
            Mode::Healthy => Some(At(i64::MIN)),
        }
    }

    /// When the next held workspace may get its turn: when the fleet gives turns and a token is
    /// there.
    fn release_at(&self, policy: &Policy) -> Option<At> {
        let turns = self.turns_from(policy)?;
        Some(self.token_at(policy).map_or(turns, |token| token.max(turns)))
    }

    /// The next instant something may change without an input: the mode stepping down, or (with
    /// workspaces `held`) the next turn.
    pub fn next_deadline(&self, held: bool, policy: &Policy) -> Option<At> {
        let step_down = self.calm_since.map(|t| t.plus(policy.breaker_cooldown));
        let release = if held { self.release_at(policy) } else { None };
        match (step_down, release) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How long after entering partial disruption restarts wait, and how far apart they go.
    pub fn pace(policy: &Policy) -> (Duration, Duration) {
        (policy.disruption_settle, Duration::from_millis(policy.restart_every_ms().max(0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> At {
        At(s * 1000)
    }

    #[test]
    fn the_mode_follows_the_share_of_the_active_fleet_that_is_suspect_or_dead() {
        let p = Policy::default();
        assert_eq!(Mode::of(100, 10, &p), Mode::Healthy, "10 % is not more than 10 %");
        assert_eq!(Mode::of(100, 11, &p), Mode::Partial);
        assert_eq!(Mode::of(100, 55, &p), Mode::Partial, "55 % is not more than 55 %");
        assert_eq!(Mode::of(100, 56, &p), Mode::Full);
        assert_eq!(Mode::of(4, 3, &p), Mode::Healthy, "never on three or fewer");
        assert_eq!(Mode::of(4, 4, &p), Mode::Full);
    }

    #[test]
    fn the_census_counts_those_heard_from_within_the_window_only() {
        let p = Policy::default();
        let mut c = Census::new(&p);
        c.advance(at(0));
        assert!(c.moved(None, Some((minute_of(at(0)), false))));
        assert!(c.moved(None, Some((minute_of(at(0)), false))));
        c.advance(at(300));
        // One goes suspect (its place keeps its heartbeat's minute).
        assert!(c.moved(Some((0, false)), Some((0, true))));
        assert_eq!(c.counts(), (2, 1));
        // The other heartbeats at 5 min: it moves to that minute.
        c.moved(Some((0, false)), Some((minute_of(at(300)), false)));
        // Ten whole minutes after the first minute, the silent one is no longer active.
        c.advance(at(659));
        assert_eq!(c.counts(), (2, 1));
        c.advance(at(660));
        assert_eq!(c.counts(), (1, 0));
        // Moving it out of a place that aged out changes nothing.
        c.moved(Some((0, true)), None);
        assert_eq!(c.counts(), (1, 0));
        // A fresh census over the same workspaces at the same time counts the same.
        let mut fresh = Census::new(&p);
        fresh.advance(at(660));
        fresh.moved(None, Some((0, true)));
        fresh.moved(None, Some((minute_of(at(300)), false)));
        assert_eq!(fresh.counts(), c.counts());
    }

    #[test]
    fn the_bucket_lets_a_burst_go_then_one_per_token() {
        let p = Policy::default();
        let mut d = Disruption::default();
        for _ in 0..p.restart_burst {
            assert!(d.has_token(at(10), &p));
            d.spend(at(10), &p);
        }
        assert!(!d.has_token(at(10), &p));
        assert!(!d.has_token(at(14), &p));
        assert!(d.has_token(at(15), &p), "one every 5 s at the default 0.2/s");
        // Left alone, the bucket fills up again, to the burst and no further.
        let later = at(1000);
        let mut n = 0;
        while d.has_token(later, &p) {
            d.spend(later, &p);
            n += 1;
        }
        assert_eq!(n, p.restart_burst);
    }

    #[test]
    fn a_mode_goes_up_at_once_and_down_after_a_calm_cooldown() {
        let p = Policy::default();
        let mut d = Disruption::default();
        assert_eq!(d.follow(at(0), Mode::Partial, &p), Some(ModeChange { from: Mode::Healthy, to: Mode::Partial }));
        assert_eq!(d.partial_since, Some(at(0)));
        assert_eq!(d.follow(at(5), Mode::Full, &p), Some(ModeChange { from: Mode::Partial, to: Mode::Full }));
        assert!(!d.may_release(at(1000), &p), "nothing goes in full disruption");
        assert_eq!(d.follow(at(10), Mode::Healthy, &p), None);
        assert_eq!(d.next_deadline(false, &p), Some(at(70)));
        // Back over the threshold for a moment: the calm starts again.
        assert_eq!(d.follow(at(20), Mode::Full, &p), None);
        assert_eq!(d.follow(at(30), Mode::Partial, &p), None);
        assert_eq!(d.follow(at(90), Mode::Partial, &p), Some(ModeChange { from: Mode::Full, to: Mode::Partial }));
        // Partial again: turns wait for the settle.
        assert!(!d.may_release(at(149), &p));
        assert!(d.may_release(at(150), &p));
    }
}
