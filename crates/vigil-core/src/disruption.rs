//! Fleet disruption modes (SPEC §3.4 step 3): how many automatic restarts the fleet's state allows.
//!
//! Many workspaces going bad at once is far more likely one sick observer — a Docker daemon, a
//! control plane, a network — than many deaths; but a real mass death (a host gone, a bad image)
//! must still be restarted, at a pace that cannot make an outage worse. Kubernetes' node lifecycle
//! controller answers both with zone states and rate-limited evictions; vigil does the same:
//!
//! - The [`Census`] counts the *active* fleet — workspaces heard from (a heartbeat), neither parked
//!   nor given up on, so invented or long-gone ids do not dilute it — and how many of those are
//!   Suspect or Dead. Suspects count: the mode must switch before the first wave of wrong restarts.
//! - [`Mode::of`] reads it: *healthy*; *partial*, more than max(`breaker_min`, `breaker_pct`%)
//!   unhealthy; *full*, more than `disruption_full_pct`% (and `breaker_min`).
//! - [`Disruption`] holds the mode (it steps down only after `breaker_cooldown` below its
//!   threshold) and a token bucket of `restart_rate` with room for `restart_burst`. Healthy: a
//!   restart goes if a token is there and nobody older waits. Partial: none goes until the
//!   disruption has lasted `disruption_settle` (time for the rest of the fleet to show whether the
//!   observer is what is sick); then held workspaces get their turn one token at a time, oldest
//!   first, and each held Suspect is restarted only on a fresh probe. Full: none goes at all.
//!
//! The census costs no memory per workspace: two counters the engine moves a workspace between as
//! its state changes. Pure data and integer arithmetic, like the rest of the core.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::Reason;
use crate::policy::Policy;
use crate::time::At;

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

/// A workspace's place in the census: counted or not, and if so whether it is unhealthy.
pub type CensusKey = bool;

/// The active fleet, and how many of it are unhealthy.
///
/// A workspace is *active* once vigil has heard from it (a heartbeat), while it is not parked and
/// vigil has not given up restarting it; it is *unhealthy* while Suspect or Dead. The state machine
/// keeps the rest honest: a healthy (Alive) workspace that stops heartbeating turns Suspect within
/// its own `ttl`, so every active one has been heard from within its cadence's window or is
/// counted unhealthy — ids nobody ever heard from, and workspaces given up on, do not dilute the
/// fleet, and a fleet of hourly heartbeaters counts as fully as one of 30 s ones. Two counters,
/// moved as the engine dispatches: a pure function of the workspaces, so an engine restored from a
/// checkpoint counts what the original counts, and no memory per workspace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Census {
    active: u32,
    unhealthy: u32,
}

impl Census {
    /// A workspace moved from `before` to `after` (either may be none: not counted). Returns
    /// whether the census changed.
    pub fn moved(&mut self, before: Option<CensusKey>, after: Option<CensusKey>) -> bool {
        if before == after {
            return false;
        }
        if let Some(unhealthy) = before {
            self.active = self.active.saturating_sub(1);
            self.unhealthy = self.unhealthy.saturating_sub(u32::from(unhealthy));
        }
        if let Some(unhealthy) = after {
            self.active = self.active.saturating_add(1);
            self.unhealthy = self.unhealthy.saturating_add(u32::from(unhealthy));
        }
        true
    }

    /// Active workspaces, and those among them Suspect or Dead.
    pub fn counts(&self) -> (u32, u32) {
        (self.active, self.unhealthy)
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

    /// Nobody watched for `gap` (nothing reached the log): the settle, the calm and the pacing
    /// count only watched time, like every workspace's deadlines — an outage is neither a settle
    /// in which the rest of the fleet showed itself, nor calm.
    pub fn unwatched(&mut self, gap: Duration) {
        for t in [&mut self.partial_since, &mut self.calm_since, &mut self.tat] {
            *t = t.map(|t| t.plus(gap));
        }
    }

    /// vigil restarted in a log that does not say how long nobody watched (before `unwatched`):
    /// as every workspace gets full grace, a partial disruption's settle starts again and a calm
    /// must be seen anew.
    pub fn resumed(&mut self, now: At) {
        if self.mode == Mode::Partial {
            self.partial_since = Some(now);
        }
        self.calm_since = None;
    }

    /// Gives back the token of a restart that did not go after all.
    pub fn refund(&mut self, policy: &Policy) {
        if let Some(tat) = self.tat {
            self.tat = Some(At(tat.0.saturating_sub(policy.restart_every_ms())));
        }
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
    fn the_census_counts_each_workspace_once_as_it_moves() {
        let mut c = Census::default();
        assert!(c.moved(None, Some(false)));
        assert!(c.moved(None, Some(false)));
        assert!(c.moved(Some(false), Some(true)), "one goes suspect");
        assert!(!c.moved(Some(true), Some(true)));
        assert_eq!(c.counts(), (2, 1));
        assert!(c.moved(Some(true), None), "and is parked, or given up on");
        assert_eq!(c.counts(), (1, 0));
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
