//! A scenario's `[expect]` section: the targets a policy should meet in that world, checked
//! against what the run measured.
//!
//! Each key is a bound on one metric. A bound on a metric the run could not measure (a median
//! detection time with no detected death, a mass death with a victim never restarted) fails: the
//! scenario promised to measure it, and "nothing to measure" is not a pass.

use serde::{Deserialize, Serialize};

use super::metrics::Metrics;
use super::scenario::ScenarioError;

/// Thresholds, all optional.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub false_restarts_max: Option<u64>,
    pub restarts_max: Option<u64>,
    pub undetected_max: Option<u64>,
    pub median_detection_s_max: Option<f64>,
    pub p90_detection_s_max: Option<f64>,
    pub restarts_per_death_max: Option<f64>,
    /// Every mass death: every victim restarted within this many seconds of it.
    pub mass_death_restarted_within_s_max: Option<f64>,
    /// Every mass death: every victim restarted exactly once.
    pub mass_death_restarted_once: Option<bool>,
    pub probe_requests_per_workspace_day_max: Option<f64>,
    pub availability_min: Option<f64>,
}

/// One expectation's verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome {
    pub key: &'static str,
    /// The bound, as written.
    pub limit: String,
    /// What the run measured (`none` when it could not).
    pub measured: String,
    pub pass: bool,
}

impl Expect {
    pub(super) fn validate(&self) -> Result<(), ScenarioError> {
        let floats = [
            ("expect.median_detection_s_max", self.median_detection_s_max),
            ("expect.p90_detection_s_max", self.p90_detection_s_max),
            ("expect.restarts_per_death_max", self.restarts_per_death_max),
            ("expect.mass_death_restarted_within_s_max", self.mass_death_restarted_within_s_max),
            ("expect.probe_requests_per_workspace_day_max", self.probe_requests_per_workspace_day_max),
            ("expect.availability_min", self.availability_min),
        ];
        for (key, v) in floats {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(ScenarioError::Invalid {
                    key: key.into(), msg: format!("must be a number ≥ 0, got {v}")
                });
            }
        }
        if self.availability_min.is_some_and(|a| a > 1.0) {
            return Err(ScenarioError::Invalid {
                key: "expect.availability_min".into(),
                msg: "is a share (0..=1)".into(),
            });
        }
        Ok(())
    }

    /// Checks every bound that is set, in the order of the fields.
    pub fn check(&self, m: &Metrics) -> Vec<Outcome> {
        let mut out = Vec::new();
        let count = |key, limit: Option<u64>, measured: usize, out: &mut Vec<Outcome>| {
            if let Some(limit) = limit {
                out.push(Outcome {
                    key,
                    limit: format!("≤ {limit}"),
                    measured: measured.to_string(),
                    pass: measured as u64 <= limit,
                });
            }
        };
        count("false_restarts_max", self.false_restarts_max, m.restarts.false_restarts, &mut out);
        count("restarts_max", self.restarts_max, m.restarts.total, &mut out);
        count("undetected_max", self.undetected_max, m.detection.undetected, &mut out);
        let at_most = |key, limit: Option<f64>, measured: Option<f64>, out: &mut Vec<Outcome>| {
            if let Some(limit) = limit {
                out.push(Outcome {
                    key,
                    limit: format!("≤ {limit}"),
                    measured: measured.map_or_else(|| "none".to_string(), |v| format!("{v}")),
                    pass: measured.is_some_and(|v| v <= limit),
                });
            }
        };
        at_most("median_detection_s_max", self.median_detection_s_max, m.detection.median_s, &mut out);
        at_most("p90_detection_s_max", self.p90_detection_s_max, m.detection.p90_s, &mut out);
        at_most("restarts_per_death_max", self.restarts_per_death_max, m.restarts.per_death, &mut out);
        // The slowest mass death counts; one with a victim never restarted has no time at all.
        let slowest = (!m.mass_deaths.is_empty())
            .then(|| m.mass_deaths.iter().map(|d| d.all_restarted_after_s).collect::<Option<Vec<f64>>>())
            .flatten()
            .map(|v| v.into_iter().fold(0.0, f64::max));
        at_most("mass_death_restarted_within_s_max", self.mass_death_restarted_within_s_max, slowest, &mut out);
        if let Some(want) = self.mass_death_restarted_once {
            let (once, victims) = m.mass_deaths.iter().fold((0, 0), |(o, v), d| (o + d.restarted_once, v + d.victims));
            let all_once = !m.mass_deaths.is_empty() && once == victims;
            out.push(Outcome {
                key: "mass_death_restarted_once",
                limit: want.to_string(),
                measured: format!("{once} of {victims} victims restarted exactly once"),
                pass: all_once == want,
            });
        }
        at_most(
            "probe_requests_per_workspace_day_max",
            self.probe_requests_per_workspace_day_max,
            Some(m.probe_requests.per_workspace_day),
            &mut out,
        );
        if let Some(limit) = self.availability_min {
            out.push(Outcome {
                key: "availability_min",
                limit: format!("≥ {limit}"),
                measured: format!("{}", m.mistakes.availability),
                pass: m.mistakes.availability >= limit,
            });
        }
        out
    }
}

/// The outcomes, one line each: `pass` or `FAIL`, the key, the bound and the measurement.
pub fn render(outcomes: &[Outcome]) -> String {
    let width = outcomes.iter().map(|o| o.key.len()).max().unwrap_or(0);
    outcomes
        .iter()
        .map(|o| {
            let verdict = if o.pass { "pass" } else { "FAIL" };
            format!("{verdict}  {:<width$}  {} (measured {})\n", o.key, o.limit, o.measured)
        })
        .collect()
}
