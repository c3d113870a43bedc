//! How late is late for this workspace: its heartbeat cadence, learned, and when a heartbeat is
//! *overdue* (SPEC §3.2).
//!
//! A fixed TTL has to be long enough for the slowest, most irregular agent in the fleet, so a
//! regular 30 s heartbeater that dies silently waits three minutes before vigil even asks. The
//! phi-accrual detector (Hayashibara et al., 2004; Akka's and Pekko's cluster failure detector)
//! instead learns each sender's inter-arrival times and suspects it once the silence has become
//! improbable for *that* sender: φ(Δt) = −log10(1 − F(Δt)), F the normal CDF with the learned mean
//! (plus an acceptable pause) and deviation (at least a floor). φ crossing a threshold is a time,
//! `mean + pause + y·σ`, where `y` depends only on the threshold; this module computes that time.
//!
//! Memory is bounded and small (a workspace idles at a couple of hundred bytes): instead of a
//! window of samples, an exponentially weighted mean and mean deviation of the inter-arrival
//! times, in integer milliseconds (Jacobson and Karels' estimator, as TCP keeps its round-trip
//! time), with σ ≈ 1.25 × the mean deviation (exact for a normal distribution). A sample longer
//! than the overdue time it arrived after is counted as that time: one long pause moves the
//! estimate a little, not by the pause, while a cadence that really slowed is still learned.
//! Only inter-arrivals vigil watched count: not across a gap nobody watched, a restart or a park.
//!
//! Overdue is a reason to *ask* (a probe), never a verdict by itself (SPEC §3.3).

use serde::{Deserialize, Serialize};

use crate::policy::Policy;
use crate::time::At;

/// One workspace's learned heartbeat cadence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cadence {
    /// Smoothed inter-arrival time, ms.
    pub mean_ms: u32,
    /// Smoothed mean absolute deviation of it, ms.
    pub dev_ms: u32,
    /// Inter-arrivals learned so far (saturating).
    pub samples: u8,
    /// The next heartbeat starts a new run: the time since the last one is not a sample.
    pub broken: bool,
}

/// The policy's overdue rule, derived once per engine (`y` needs a logarithm).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overdue {
    /// `y` for the policy's φ threshold, in thousandths; 0 when the rule is off.
    pub y_milli: u32,
    /// The floor on σ, ms.
    pub min_deviation_ms: u32,
    /// Added to the mean, ms.
    pub pause_ms: u32,
    /// Inter-arrivals needed before the rule applies.
    pub min_samples: u8,
}

impl Overdue {
    /// The rule as the policy sets it.
    pub fn of(policy: &Policy) -> Overdue {
        Overdue {
            y_milli: y_milli(policy.phi_threshold),
            min_deviation_ms: millis_u32(policy.phi_min_deviation),
            pause_ms: millis_u32(policy.phi_acceptable_pause),
            min_samples: policy.phi_min_samples.max(1),
        }
    }

    /// Whether the rule is in force.
    pub fn is_on(&self) -> bool {
        self.y_milli > 0
    }

    /// How long after the last heartbeat (or moment of full grace) the next one is overdue, for
    /// a workspace with enough history; `None` otherwise (the TTL alone applies).
    pub fn after(&self, c: &Cadence) -> Option<std::time::Duration> {
        if !self.is_on() || c.samples < self.min_samples {
            return None;
        }
        let sigma = (u64::from(c.dev_ms) * 5 / 4).max(u64::from(self.min_deviation_ms));
        let margin = (u64::from(self.y_milli) * sigma).div_ceil(1000);
        Some(std::time::Duration::from_millis(u64::from(c.mean_ms) + u64::from(self.pause_ms) + margin))
    }
}

impl Cadence {
    /// A heartbeat arrived `since` after the previous one: learn from it, unless the run was
    /// broken. `overdue` is when it was due to be overdue (to clamp outliers), if known.
    pub fn learn(&mut self, since: Option<std::time::Duration>, overdue: Option<std::time::Duration>) {
        let broken = std::mem::take(&mut self.broken);
        let Some(since) = since.filter(|_| !broken) else { return };
        let sample = since.min(overdue.unwrap_or(since));
        let x = u32::try_from(sample.as_millis()).unwrap_or(u32::MAX);
        if self.samples == 0 {
            // As TCP seeds its estimator, but wider: the first deviation is a quarter of the mean.
            (self.mean_ms, self.dev_ms) = (x, x / 4);
        } else {
            let err = i64::from(x) - i64::from(self.mean_ms);
            self.mean_ms = (i64::from(self.mean_ms) + err / 8).clamp(0, i64::from(u32::MAX)) as u32;
            let dev_err = err.abs() - i64::from(self.dev_ms);
            self.dev_ms = (i64::from(self.dev_ms) + dev_err / 4).clamp(0, i64::from(u32::MAX)) as u32;
        }
        self.samples = self.samples.saturating_add(1);
    }

    /// The next inter-arrival is not a sample (a gap nobody watched, a restart, a park).
    pub fn break_run(&mut self) {
        self.broken = true;
    }

    /// Forgets everything learned (the agent declared another cadence); the heartbeat that said
    /// so starts the new run.
    pub fn reset(&mut self) {
        *self = Cadence::default();
    }
}

/// When a workspace whose silence is measured from `from` becomes overdue, if the rule applies.
pub fn overdue_at(rule: &Overdue, c: &Cadence, from: At) -> Option<At> {
    rule.after(c).map(|d| from.plus(d))
}

/// `y` at which Akka's logistic approximation of the normal tail, 1 − F(y) with
/// F(y) = 1 / (1 + e^(−y(1.5976 + 0.070566 y²))), equals 10^−φ — in thousandths, so that every
/// deadline derived from it is integer arithmetic, the same on every machine.
fn y_milli(phi: f64) -> u32 {
    if phi.is_nan() || phi <= 0.0 {
        return 0;
    }
    // 1 − F(y) = 10^−φ  ⇔  y(1.5976 + 0.070566 y²) = ln(10^φ − 1) = φ ln 10 + ln(1 − 10^−φ).
    // Basic arithmetic only (no platform `ln`/`exp`), so every machine computes the same y.
    let tail = exp_neg(phi * std::f64::consts::LN_10);
    let g = phi * std::f64::consts::LN_10 + ln_one_minus(tail);
    if g.is_nan() || g <= 0.0 {
        return 0;
    }
    let mut y = 3.0f64;
    for _ in 0..32 {
        let f = 0.070566 * y * y * y + 1.5976 * y - g;
        let df = 0.211698 * y * y + 1.5976;
        y -= f / df;
    }
    (y * 1000.0).round().clamp(1.0, f64::from(u32::MAX)) as u32
}

/// e^−a for a ≥ 0 by Taylor series on a / 2^20, squared back up twenty times: only +, ×, ÷.
fn exp_neg(a: f64) -> f64 {
    let x = -a / 1_048_576.0;
    let (mut term, mut sum) = (1.0f64, 1.0f64);
    for k in 1..12 {
        term *= x / f64::from(k);
        sum += term;
    }
    (0..20).fold(sum, |e, _| e * e)
}

/// ln(1 − x) for 0 ≤ x ≤ 0.35 by its series −Σ xᵏ/k: only +, ×, ÷.
fn ln_one_minus(x: f64) -> f64 {
    let (mut power, mut sum) = (1.0f64, 0.0f64);
    for k in 1..120 {
        power *= x;
        sum -= power / f64::from(k);
    }
    sum
}

fn millis_u32(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rule() -> Overdue {
        Overdue { y_milli: y_milli(8.0), min_deviation_ms: 100, pause_ms: 3000, min_samples: 1 }
    }

    #[test]
    fn akkas_defaults_give_akkas_figures() {
        // anchors-scaleout §C.1: mean 1 s, σ at the 100 ms floor, pause 3 s: φ reaches 8 about
        // 4.52 s after the last heartbeat (5.05 s at σ = 200 ms, 6.61 s at σ = 500 ms).
        let centis = |d: Duration| (d.as_millis() + 5) / 10;
        let steady = Cadence { mean_ms: 1000, dev_ms: 0, samples: 10, broken: false };
        assert_eq!(centis(rule().after(&steady).unwrap()), 452);
        let sigma = |ms: u32| Cadence { dev_ms: ms * 4 / 5, ..steady };
        assert_eq!(centis(rule().after(&sigma(200)).unwrap()), 505);
        assert_eq!(centis(rule().after(&sigma(500)).unwrap()), 661);
    }

    #[test]
    fn learns_a_steady_cadence_and_an_outlier_moves_it_only_a_little() {
        let mut c = Cadence::default();
        for i in 0..40 {
            c.learn(Some(Duration::from_millis(30_000 + (i % 3) * 500)), None);
        }
        assert!((30_000..=31_000).contains(&c.mean_ms), "{c:?}");
        assert!(c.dev_ms < 1_000, "{c:?}");
        // A five-minute stall, clamped to the overdue time it arrived after.
        let overdue = rule().after(&c).unwrap();
        let before = c;
        c.learn(Some(Duration::from_secs(300)), Some(overdue));
        assert!(c.mean_ms < before.mean_ms + 1_000, "{before:?} -> {c:?}");
    }

    #[test]
    fn a_broken_run_skips_one_sample_and_the_rule_waits_for_history() {
        let r = Overdue { min_samples: 3, ..rule() };
        let mut c = Cadence::default();
        c.learn(None, None);
        c.learn(Some(Duration::from_secs(30)), None);
        c.learn(Some(Duration::from_secs(30)), None);
        assert_eq!(r.after(&c), None, "two samples are not enough");
        c.break_run();
        c.learn(Some(Duration::from_secs(900)), None);
        assert_eq!(c.samples, 2, "the inter-arrival across the gap was not learned");
        c.learn(Some(Duration::from_secs(30)), None);
        assert!(r.after(&c).is_some());
        assert_eq!(Overdue { y_milli: 0, ..r }.after(&c), None, "off");
    }

    #[test]
    fn the_hand_made_logarithm_agrees_with_the_platforms() {
        for phi in [0.5, 1.0, 3.0, 8.0, 12.0, 30.0] {
            let platform = ((10f64.powf(phi) - 1.0).ln() * 1e6).round();
            let tail = exp_neg(phi * std::f64::consts::LN_10);
            let ours = ((phi * std::f64::consts::LN_10 + ln_one_minus(tail)) * 1e6).round();
            assert!((platform - ours).abs() <= 1.0, "φ = {phi}: {platform} vs {ours}");
        }
        assert_eq!(y_milli(8.0), 5226);
    }

    #[test]
    fn the_threshold_orders_the_margin() {
        assert_eq!(y_milli(0.0), 0);
        assert_eq!(y_milli(f64::NAN), 0);
        assert!(y_milli(1.0) < y_milli(3.0) && y_milli(3.0) < y_milli(8.0) && y_milli(8.0) < y_milli(16.0));
    }
}
