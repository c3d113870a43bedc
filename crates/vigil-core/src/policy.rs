//! Every window and threshold the state machine and the engine use, in one struct with SPEC
//! defaults, loadable from TOML (durations as `"30s"`, `"12m"`).
//!
//! Windows that depend on a workspace's heartbeat cadence are derived here (SPEC §3.2), so the
//! 15-second window that once sat below a 30-second cadence cannot come back by accident.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Liveness and restart policy. `Policy::default()` is SPEC §3's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Heartbeat cadence assumed until a heartbeat declares `interval_s`.
    pub default_interval_s: u16,
    /// `recent` = max(`recent_min`, `recent_factor` × interval).
    #[serde(with = "humantime_serde")]
    pub recent_min: Duration,
    pub recent_factor: u32,
    /// `ttl` = max(`ttl_min`, `ttl_factor` × interval).
    #[serde(with = "humantime_serde")]
    pub ttl_min: Duration,
    pub ttl_factor: u32,
    /// After leaving Restarting, a definitive not-running only makes the workspace Suspect.
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    /// A second definitive not-running within this window of the first confirms death.
    #[serde(with = "humantime_serde")]
    pub confirm_window: Duration,
    /// An unanswered `probe_request` younger than this suppresses another one.
    #[serde(with = "humantime_serde")]
    pub probe_repeat: Duration,
    /// While Suspect, vigil re-asks for a probe this often...
    #[serde(with = "humantime_serde")]
    pub reprobe_every: Duration,
    /// ...at most this many times.
    pub reprobe_max: u8,
    /// Silent for `ttl`, then only transient probe errors for this long: Dead (`unprobeable`).
    #[serde(with = "humantime_serde")]
    pub unprobeable_after: Duration,
    /// No fresh heartbeat this long after a restart command: the restart failed.
    #[serde(with = "humantime_serde")]
    pub restart_timeout: Duration,
    /// With neither incarnation nor progress events, a heartbeat this long after the command is fresh.
    #[serde(with = "humantime_serde")]
    pub fresh_after: Duration,
    /// A `system` restart within this long of the last restart command is dropped.
    #[serde(with = "humantime_serde")]
    pub debounce: Duration,
    /// Crash-loop backoff: `backoff_base` × 2^(failures−1), at most `backoff_cap`...
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_cap: Duration,
    /// ...plus up to this many percent of jitter, derived from a hash of workspace and attempt.
    pub backoff_jitter_pct: u32,
    /// The failure count resets after this long Alive.
    #[serde(with = "humantime_serde")]
    pub failure_reset: Duration,
    /// After this many consecutive failed restarts, only a `user` restart goes.
    pub give_up_after: u8,
    /// The breaker counts automatic death declarations in this sliding window...
    #[serde(with = "humantime_serde")]
    pub breaker_window: Duration,
    /// ...and opens when they exceed max(`breaker_min`, `breaker_pct`% of monitored workspaces).
    pub breaker_min: u32,
    pub breaker_pct: u32,
    /// It closes after this long below the threshold (and a disruption mode steps down after this
    /// long below its threshold).
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
    /// Automatic restarts per second, fleet-wide, at most (a token bucket, `core::disruption`):
    /// restarts beyond it wait their turn, oldest first. 0 turns the disruption modes off and
    /// brings back the breaker that counts death declarations (as before it).
    pub restart_rate: f64,
    /// How many automatic restarts may go at once ahead of `restart_rate` (the bucket's size).
    pub restart_burst: u32,
    /// Full disruption: more than this percentage of the active fleet (and more than
    /// `breaker_min`) is Suspect or Dead; no automatic restart goes until it is back under.
    /// (Partial disruption is more than max(`breaker_min`, `breaker_pct`%).)
    pub disruption_full_pct: u32,
    /// In a partial disruption, no automatic restart goes until it has lasted this long: time for
    /// the rest of the fleet to show whether the observer, not the workspaces, is sick.
    #[serde(with = "humantime_serde")]
    pub disruption_settle: Duration,
    /// At most this many automatic restarts in Restarting at once, fleet-wide.
    pub max_restarts_in_flight: u32,
    /// A repeated `id` / `request_id` for the same workspace within this window is applied once.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// `retry_after_s` advertised while a workspace restarts (how long a boot usually takes).
    pub restart_retry_after_s: u32,
    /// `retry_after_s` advertised for a dead workspace whose restart waits on the breaker, the
    /// restart queue or a person.
    pub dead_retry_after_s: u32,
    /// Which events may add a workspace vigil does not know yet.
    pub registration: Registration,
    /// A heartbeat is overdue once φ, the phi-accrual suspicion level of the silence since the
    /// last one, reaches this (`core::cadence`); then vigil asks for a probe at once, and one
    /// definitive not-running convicts. 0 turns the rule off (the TTL alone counts silence).
    pub phi_threshold: f64,
    /// The floor on the learned deviation of inter-arrival times (a very regular sender must not
    /// become overdue on a few milliseconds of delivery jitter).
    #[serde(with = "humantime_serde")]
    pub phi_min_deviation: Duration,
    /// Lateness a heartbeat may show on top of the learned mean before φ starts to rise.
    #[serde(with = "humantime_serde")]
    pub phi_acceptable_pause: Duration,
    /// Inter-arrival times learned before the rule applies (until then, the TTL alone).
    pub phi_min_samples: u8,
}

/// The keys of a stored policy that came later than others: whether it had them at all.
#[derive(Debug, Default, Deserialize)]
pub struct LaterKeys {
    #[serde(default)]
    pub phi_threshold: Option<f64>,
    #[serde(default)]
    pub restart_rate: Option<f64>,
}

impl LaterKeys {
    /// `policy`, as it was in force when a policy with these keys was stored.
    pub fn applied_to(&self, policy: Policy) -> Policy {
        let policy = if self.phi_threshold.is_none() { policy.before_overdue() } else { policy };
        if self.restart_rate.is_none() { policy.before_modes() } else { policy }
    }
}

/// Which events may add a workspace vigil does not know yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// Any event about it (a heartbeat, a probe, an upstream error, a restart request, or a
    /// lifecycle change other than `removed`): agents register themselves by heartbeating.
    #[default]
    Open,
    /// Only `lifecycle created`, from the provisioner: events about any other workspace are
    /// `suppressed` (`unknown_workspace`), so nobody can make vigil track invented workspaces.
    Lifecycle,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            default_interval_s: 30,
            recent_min: secs(15),
            recent_factor: 2,
            ttl_min: secs(180),
            ttl_factor: 5,
            settle: secs(30),
            confirm_window: secs(30),
            probe_repeat: secs(5),
            reprobe_every: secs(10),
            reprobe_max: 3,
            unprobeable_after: secs(600),
            restart_timeout: secs(720),
            fresh_after: secs(5),
            debounce: secs(60),
            backoff_base: secs(10),
            backoff_cap: secs(300),
            backoff_jitter_pct: 10,
            failure_reset: secs(600),
            give_up_after: 10,
            breaker_window: secs(30),
            breaker_min: 3,
            breaker_pct: 10,
            breaker_cooldown: secs(60),
            restart_rate: 0.2,
            restart_burst: 3,
            disruption_full_pct: 55,
            disruption_settle: secs(60),
            max_restarts_in_flight: 16,
            dedup_window: secs(120),
            restart_retry_after_s: 15,
            dead_retry_after_s: 60,
            registration: Registration::Open,
            phi_threshold: 8.0,
            phi_min_deviation: Duration::from_millis(500),
            phi_acceptable_pause: Duration::ZERO,
            phi_min_samples: 4,
        }
    }
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy is not valid TOML or has an unknown or mistyped key")]
    Toml(#[from] toml::de::Error),
    #[error("policy value out of range: {0}")]
    Range(String),
}

impl Policy {
    /// Parses a TOML policy; keys left out keep their defaults, unknown keys are an error.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let policy: Policy = toml::from_str(text)?;
        policy.check()?;
        Ok(policy)
    }

    /// The policy as a data directory written before the overdue rule (store format 4 and older)
    /// had it in force: its stored policy lacks `phi_threshold`, and the rule was off, so its log
    /// replays as it ran. (Left out of a policy *file*, the key takes its default instead.)
    pub fn before_overdue(self) -> Policy {
        Policy { phi_threshold: 0.0, ..self }
    }

    /// The policy as a data directory written before the disruption modes (store format 5 and
    /// older) had it in force: its stored policy lacks `restart_rate`, and the breaker counted
    /// death declarations, so its log replays as it ran.
    pub fn before_modes(self) -> Policy {
        Policy { restart_rate: 0.0, ..self }
    }

    /// Whether the disruption modes admit automatic restarts (else the declaration breaker).
    pub fn disruption_modes(&self) -> bool {
        self.restart_rate > 0.0
    }

    /// One token of `restart_rate`, in milliseconds (at least 1).
    pub fn restart_every_ms(&self) -> i64 {
        if self.restart_rate > 0.0 { ((1000.0 / self.restart_rate).round() as i64).max(1) } else { i64::MAX }
    }

    /// The policy as TOML (every key, for documentation and for the log header).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a policy always serialises")
    }

    fn check(&self) -> Result<(), PolicyError> {
        let bad = |what: &str| Err(PolicyError::Range(what.to_string()));
        if !(1..=3600).contains(&self.default_interval_s) {
            return bad("default_interval_s must be within 1..=3600");
        }
        if self.recent_factor == 0 || self.ttl_factor == 0 {
            return bad("recent_factor and ttl_factor must be at least 1");
        }
        if self.backoff_base.is_zero() || self.backoff_cap < self.backoff_base {
            return bad("backoff_base must be positive and no larger than backoff_cap");
        }
        if self.breaker_pct > 100 {
            return bad("breaker_pct is a percentage (0..=100)");
        }
        if self.disruption_full_pct > 100 || (self.disruption_modes() && self.disruption_full_pct < self.breaker_pct) {
            return bad("disruption_full_pct is a percentage (0..=100), no smaller than breaker_pct");
        }
        if !(self.restart_rate == 0.0 || (0.001..=1000.0).contains(&self.restart_rate)) {
            return bad("restart_rate must be 0 (the declaration breaker) or within 0.001..=1000 per second");
        }
        if self.restart_burst == 0 {
            return bad("restart_burst must be at least 1");
        }
        if self.max_restarts_in_flight == 0 {
            return bad("max_restarts_in_flight must be at least 1");
        }
        if self.reprobe_every.is_zero() {
            return bad("reprobe_every must be positive");
        }
        if !(self.phi_threshold == 0.0 || (0.5..=30.0).contains(&self.phi_threshold)) {
            return bad("phi_threshold must be 0 (off) or within 0.5..=30");
        }
        if self.phi_min_deviation.is_zero() {
            return bad("phi_min_deviation must be positive");
        }
        if self.phi_min_samples == 0 {
            return bad("phi_min_samples must be at least 1");
        }
        Ok(())
    }

    /// The heartbeat cadence in force for a workspace.
    pub fn interval(&self, declared_s: u16) -> Duration {
        secs(u64::from(if declared_s == 0 { self.default_interval_s } else { declared_s }))
    }

    /// `recent` = max(15 s, 2 × interval).
    pub fn recent(&self, declared_s: u16) -> Duration {
        self.recent_min.max(self.interval(declared_s) * self.recent_factor)
    }

    /// `ttl` = max(180 s, 5 × interval).
    pub fn ttl(&self, declared_s: u16) -> Duration {
        self.ttl_min.max(self.interval(declared_s) * self.ttl_factor)
    }

    /// How long the next automatic restart waits after `failures` consecutive failed restarts:
    /// base × 2^(failures−1), capped, plus a jitter of up to `backoff_jitter_pct` percent derived
    /// from a hash of the workspace id and the attempt (no RNG: replays stay identical, herds spread).
    pub fn backoff(&self, failures: u8, workspace: &str, attempt: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let base = self.backoff_base.as_millis() as u64;
        let shift = u32::from(failures - 1).min(32);
        let raw = base.saturating_mul(1u64 << shift).min(self.backoff_cap.as_millis() as u64);
        let spread = raw * u64::from(self.backoff_jitter_pct) / 100;
        let jitter = if spread == 0 { 0 } else { jitter_hash(workspace, attempt) % (spread + 1) };
        Duration::from_millis(raw + jitter)
    }

    /// The breaker threshold for a fleet of `monitored` workspaces: declarations must exceed it.
    pub fn breaker_exceeded(&self, declarations: usize, monitored: usize) -> bool {
        let d = declarations as u64;
        d > u64::from(self.breaker_min) && d * 100 > u64::from(self.breaker_pct) * monitored as u64
    }
}

/// FNV-1a over the workspace id and the attempt number: a stable, platform-independent spread for
/// backoff jitter (its exact output is part of the replay contract).
fn jitter_hash(workspace: &str, attempt: u32) -> u64 {
    crate::hash::fnv1a64(workspace.as_bytes().iter().chain(attempt.to_le_bytes().iter()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_derived_from_the_cadence() {
        let p = Policy::default();
        // 30 s default cadence: recent 60 s (never the seed's 15 s), ttl 180 s.
        assert_eq!(p.recent(0), secs(60));
        assert_eq!(p.ttl(0), secs(180));
        assert_eq!(p.recent(5), secs(15));
        assert_eq!(p.ttl(5), secs(180));
        assert_eq!(p.recent(60), secs(120));
        assert_eq!(p.ttl(60), secs(300));
    }

    #[test]
    fn backoff_doubles_caps_and_jitters_deterministically() {
        let p = Policy::default();
        assert_eq!(p.backoff(0, "ws-a", 1), Duration::ZERO);
        for (failures, base) in [(1u8, 10u64), (2, 20), (3, 40), (4, 80), (5, 160), (6, 300), (9, 300)] {
            let b = p.backoff(failures, "ws-a", u32::from(failures) + 1);
            assert!(b >= secs(base) && b <= secs(base) + secs(base) / 10, "{failures}: {b:?}");
            assert_eq!(b, p.backoff(failures, "ws-a", u32::from(failures) + 1), "same inputs, same jitter");
        }
        let spread: std::collections::BTreeSet<_> = (0..20).map(|i| p.backoff(3, &format!("ws-{i}"), 4)).collect();
        assert!(spread.len() > 10, "a herd of workspaces spreads out: {spread:?}");
    }

    #[test]
    fn breaker_threshold_is_max_of_floor_and_fraction() {
        let p = Policy::default();
        assert!(!p.breaker_exceeded(3, 6));
        assert!(p.breaker_exceeded(4, 6));
        assert!(!p.breaker_exceeded(10, 100));
        assert!(p.breaker_exceeded(11, 100));
    }

    #[test]
    fn a_policy_stored_before_the_overdue_rule_reads_back_with_it_off() {
        // As a format-4 directory stored it: a named map without the phi keys.
        let mut old = serde_json::to_value(Policy::default()).unwrap();
        for key in ["phi_threshold", "phi_min_deviation", "phi_acceptable_pause", "phi_min_samples"] {
            old.as_object_mut().unwrap().remove(key);
        }
        let bytes = rmp_serde::to_vec_named(&old).unwrap();
        let read: Policy = rmp_serde::from_slice(&bytes).unwrap();
        let later: LaterKeys = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(later.applied_to(read).phi_threshold, 0.0, "folded with the rule off, replayed so");
        // A policy stored with the key keeps it.
        let bytes = rmp_serde::to_vec_named(&Policy::default()).unwrap();
        let later: LaterKeys = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(later.applied_to(Policy::default()), Policy::default());
    }

    #[test]
    fn a_policy_stored_before_the_disruption_modes_reads_back_with_the_declaration_breaker() {
        // As a format-5 directory stored it: a named map without the disruption keys.
        let mut old = serde_json::to_value(Policy::default()).unwrap();
        for key in ["restart_rate", "restart_burst", "disruption_full_pct", "disruption_settle"] {
            old.as_object_mut().unwrap().remove(key);
        }
        let bytes = rmp_serde::to_vec_named(&old).unwrap();
        let read: Policy = rmp_serde::from_slice(&bytes).unwrap();
        let later: LaterKeys = rmp_serde::from_slice(&bytes).unwrap();
        let applied = later.applied_to(read);
        assert!(!applied.disruption_modes(), "folded with the declaration breaker, replayed so");
        assert_eq!(applied.phi_threshold, 8.0, "and the overdue rule, which it had, stays on");
    }

    #[test]
    fn the_default_restart_rate_restarts_thirty_within_five_minutes() {
        let p = Policy::default();
        // The burst goes at once, the rest one token apart: 3 + 27 × 5 s = 135 s.
        let thirtieth = (30 - i64::from(p.restart_burst)) * p.restart_every_ms();
        assert!(thirtieth + p.disruption_settle.as_millis() as i64 <= 300_000, "{thirtieth} ms");
        assert!(Policy::from_toml("restart_rate = -1").is_err());
        assert!(Policy::from_toml("disruption_full_pct = 5").is_err(), "below breaker_pct");
        assert!(!Policy::from_toml("restart_rate = 0").unwrap().disruption_modes());
    }

    #[test]
    fn toml_overrides_keep_defaults_and_refuse_typos() {
        let p = Policy::from_toml("ttl_min = \"5m\"\nmax_restarts_in_flight = 4\n").unwrap();
        assert_eq!(p.registration, Registration::Open);
        assert_eq!(Policy::from_toml("registration = \"lifecycle\"").unwrap().registration, Registration::Lifecycle);
        assert!(Policy::from_toml("registration = \"closed\"").is_err());
        assert_eq!(p.ttl_min, secs(300));
        assert_eq!(p.max_restarts_in_flight, 4);
        assert_eq!(p.settle, secs(30));
        assert!(Policy::from_toml("tll_min = \"5m\"").is_err());
        assert!(Policy::from_toml("ttl_min = 5").is_err());
        assert!(Policy::from_toml("max_restarts_in_flight = 0").is_err());
        assert_eq!(Policy::from_toml(&Policy::default().to_toml()).unwrap(), Policy::default());
    }
}
