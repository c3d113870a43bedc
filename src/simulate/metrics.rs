//! What a run measured: the Chen–Toueg–Aguilera quality-of-service metrics of a failure detector,
//! plus what a restart policy costs, computed after the run from two timelines per workspace —
//! the world's truth (alive, dead, booting) and vigil's verdict (its `state_changed` outputs) —
//! and from vigil's `restart` and `probe_request` outputs.
//!
//! Computing them afterwards, from the record alone, keeps the run loop free of bookkeeping and
//! makes every figure reproducible from the log and the world's history. The definitions are in
//! `simulations/README.md`; the code below follows them line by line.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::world::{History, Truth};
use crate::core::event::{Output, OutputBody, StateName};

/// Everything a run measured. Field order is the JSON key order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metrics {
    pub seed: u64,
    pub workspaces: u32,
    pub duration_s: f64,
    pub inputs: usize,
    pub outputs: usize,
    /// True deaths the world caused (single and mass).
    pub deaths: usize,
    /// `T_D`: from a death to vigil's first restart of that workspace.
    pub detection: Detection,
    /// Intervals of wrong suspicion of a live workspace.
    pub mistakes: Mistakes,
    pub restarts: Restarts,
    pub mass_deaths: Vec<MassDeath>,
    pub probe_requests: ProbeRequests,
    /// Alerts by kind.
    pub alerts: BTreeMap<String, u64>,
    /// `suppressed` outputs by reason.
    pub suppressed: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Detection {
    /// Deaths with a restart before the workspace ran again (or the run ended).
    pub count: usize,
    /// Deaths with none.
    pub undetected: usize,
    pub median_s: Option<f64>,
    pub p90_s: Option<f64>,
    pub max_s: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mistakes {
    pub count: usize,
    /// `λ_M`: mistakes per workspace-hour of alive time.
    pub per_workspace_hour: f64,
    /// `T_M`: mean and longest mistake.
    pub mean_s: Option<f64>,
    pub max_s: Option<f64>,
    /// `P_A`: the share of alive workspace-time during which vigil said alive.
    pub availability: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Restarts {
    pub total: usize,
    /// Restarts of a workspace that was alive in the world (GC-paused counts as alive).
    pub false_restarts: usize,
    /// Restarts issued during a death, averaged over the deaths that got at least one.
    pub per_death: Option<f64>,
    /// The first few false restarts, `<workspace>@<seconds>`, to look up in the log.
    pub false_examples: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MassDeath {
    pub at_s: f64,
    pub victims: usize,
    /// Victims restarted at least once before running again.
    pub restarted: usize,
    /// Victims restarted exactly once.
    pub restarted_once: usize,
    /// From the death to the last victim's first restart; `None` unless every victim was restarted.
    pub all_restarted_after_s: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProbeRequests {
    pub total: usize,
    pub per_workspace_day: f64,
}

/// How many false restarts are listed by name.
const FALSE_EXAMPLES: usize = 5;

/// Per workspace, what vigil did about it (times relative to the start of the run, in ms).
#[derive(Default)]
struct Verdicts {
    restarts: Vec<i64>,
    /// `None`: no verdict yet (before the first `state_changed`), or removed.
    states: Vec<(i64, Option<StateName>)>,
}

/// The nearest-rank percentile of sorted values: the smallest value with at least `p` % of the
/// values at or below it.
fn percentile(sorted: &[i64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(secs(sorted[rank.min(sorted.len()) - 1]))
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

/// Ratios rounded to six digits, so the JSON reads well and compares exactly.
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The world's truth for one workspace at `t` (the latest change at or before it).
fn truth_at(timeline: &[(i64, Truth)], t: i64) -> Truth {
    let i = timeline.partition_point(|(at, _)| *at <= t);
    if i == 0 { Truth::Alive } else { timeline[i - 1].1 }
}

/// When a workspace that died at `t` is alive again (its next change to alive), or `end`.
fn alive_again(timeline: &[(i64, Truth)], t: i64, end: i64) -> i64 {
    timeline.iter().find(|(at, truth)| *at > t && *truth == Truth::Alive).map_or(end, |(at, _)| *at)
}

impl Metrics {
    /// Computes every metric from the world's history and vigil's outputs.
    pub fn compute(seed: u64, history: &History, inputs: usize, outputs: &[Output]) -> Metrics {
        let n = history.truth.len();
        let mut verdicts: Vec<Verdicts> = (0..n).map(|_| Verdicts::default()).collect();
        let mut probe_requests = 0;
        let mut alerts = BTreeMap::new();
        let mut suppressed = BTreeMap::new();
        for o in outputs {
            let t = o.at.millis() - history.epoch_ms;
            let ws = o.workspace.as_ref().and_then(|w| history.index_of(w));
            match &o.body {
                OutputBody::StateChanged { to, .. } => {
                    if let Some(v) = ws.and_then(|i| verdicts.get_mut(i)) {
                        v.states.push((t, *to));
                    }
                }
                OutputBody::Restart { .. } => {
                    if let Some(v) = ws.and_then(|i| verdicts.get_mut(i)) {
                        v.restarts.push(t);
                    }
                }
                OutputBody::ProbeRequest { .. } => probe_requests += 1,
                OutputBody::Suppressed { reason, .. } => {
                    *suppressed.entry(reason.as_str().to_string()).or_insert(0) += 1
                }
                OutputBody::Alert { kind, .. } => *alerts.entry(kind.as_str().to_string()).or_insert(0) += 1,
            }
        }
        let end = history.end_ms;
        let workspace_days = n as f64 * secs(end) / 86_400.0;
        let (detection, per_death, mass_deaths) = detections(history, &verdicts);
        let mut false_at: Vec<(i64, usize)> = (0..n)
            .flat_map(|i| {
                let timeline = &history.truth[i];
                verdicts[i].restarts.iter().filter(|&&r| truth_at(timeline, r) == Truth::Alive).map(move |&r| (r, i))
            })
            .collect();
        false_at.sort_unstable();
        let false_examples =
            false_at.iter().take(FALSE_EXAMPLES).map(|&(r, i)| format!("{}@{:.1}s", history.ids[i], secs(r))).collect();
        Metrics {
            seed,
            workspaces: history.truth.len() as u32,
            duration_s: secs(end),
            inputs,
            outputs: outputs.len(),
            deaths: history.deaths.len(),
            detection,
            mistakes: mistakes(history, &verdicts),
            restarts: Restarts {
                total: verdicts.iter().map(|v| v.restarts.len()).sum(),
                false_restarts: false_at.len(),
                per_death,
                false_examples,
            },
            mass_deaths,
            probe_requests: ProbeRequests {
                total: probe_requests,
                per_workspace_day: round6(probe_requests as f64 / workspace_days),
            },
            alerts,
            suppressed,
        }
    }
}

/// `T_D` for every death, restarts per death, and each mass death's outcome.
fn detections(history: &History, verdicts: &[Verdicts]) -> (Detection, Option<f64>, Vec<MassDeath>) {
    let mut times = Vec::new();
    let mut undetected = 0;
    let mut restarts_during = Vec::new();
    // Per mass death: each victim's (first restart after the death, restarts during the death).
    let mut mass: Vec<Vec<(Option<i64>, usize)>> = vec![Vec::new(); history.mass_deaths.len()];
    for d in &history.deaths {
        let ws = d.ws as usize;
        let until = alive_again(&history.truth[ws], d.at, history.end_ms);
        let during: Vec<i64> = verdicts[ws].restarts.iter().copied().filter(|&r| r >= d.at && r < until).collect();
        let first = during.first().map(|&r| r - d.at);
        match first {
            Some(td) => {
                times.push(td);
                restarts_during.push(during.len());
            }
            None => undetected += 1,
        }
        if let Some(m) = d.mass.and_then(|m| mass.get_mut(m)) {
            m.push((first, during.len()));
        }
    }
    times.sort_unstable();
    let detection = Detection {
        count: times.len(),
        undetected,
        median_s: percentile(&times, 50.0),
        p90_s: percentile(&times, 90.0),
        max_s: times.last().map(|&t| secs(t)),
    };
    let per_death = (!restarts_during.is_empty())
        .then(|| round6(restarts_during.iter().sum::<usize>() as f64 / restarts_during.len() as f64));
    let mass_deaths = history
        .mass_deaths
        .iter()
        .zip(mass)
        .map(|(&at, victims)| {
            let restarted = victims.iter().filter(|(first, _)| first.is_some()).count();
            let all = victims.iter().map(|(first, _)| *first).collect::<Option<Vec<i64>>>();
            MassDeath {
                at_s: secs(at),
                victims: victims.len(),
                restarted,
                restarted_once: victims.iter().filter(|(_, n)| *n == 1).count(),
                all_restarted_after_s: all.and_then(|v| v.into_iter().max()).map(secs),
            }
        })
        .collect();
    (detection, per_death, mass_deaths)
}

/// Every maximal interval during which a workspace was alive in the world and vigil's verdict on
/// it was something other than alive, found by walking both timelines' change points in order.
fn mistakes(history: &History, verdicts: &[Verdicts]) -> Mistakes {
    let end = history.end_ms;
    let mut lengths = Vec::new();
    let mut alive_ms = 0i64;
    for (timeline, v) in history.truth.iter().zip(verdicts) {
        let mut points: Vec<i64> = timeline.iter().map(|(t, _)| *t).chain(v.states.iter().map(|(t, _)| *t)).collect();
        points.push(0);
        points.sort_unstable();
        points.dedup();
        let mut open: Option<i64> = None;
        let (mut ti, mut vi) = (0, 0);
        let (mut truth, mut said) = (Truth::Alive, None);
        for (k, &t) in points.iter().enumerate() {
            // Every change at `t` applies before the interval that starts at `t` is judged.
            while ti < timeline.len() && timeline[ti].0 <= t {
                truth = timeline[ti].1;
                ti += 1;
            }
            while vi < v.states.len() && v.states[vi].0 <= t {
                said = v.states[vi].1;
                vi += 1;
            }
            let next = points.get(k + 1).copied().unwrap_or(end).min(end);
            if t >= end {
                break;
            }
            if truth == Truth::Alive {
                alive_ms += next - t;
            }
            let wrong = truth == Truth::Alive && said.is_some_and(|s| s != StateName::Alive);
            match (wrong, open) {
                (true, None) => open = Some(t),
                (false, Some(start)) => {
                    lengths.push(t - start);
                    open = None;
                }
                _ => {}
            }
        }
        if let Some(start) = open {
            lengths.push(end - start);
        }
    }
    let wrong_ms: i64 = lengths.iter().sum();
    let alive_hours = secs(alive_ms) / 3600.0;
    Mistakes {
        count: lengths.len(),
        per_workspace_hour: if alive_hours > 0.0 { round6(lengths.len() as f64 / alive_hours) } else { 0.0 },
        mean_s: (!lengths.is_empty()).then(|| round6(secs(wrong_ms) / lengths.len() as f64)),
        max_s: lengths.iter().max().map(|&m| secs(m)),
        availability: if alive_ms > 0 { round6(1.0 - wrong_ms as f64 / alive_ms as f64) } else { 1.0 },
    }
}

// ---- rendering -------------------------------------------------------------------------------

fn opt_s(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_string(), |s| format!("{s:.1} s"))
}

/// The `n` largest counts, largest first (ties by name), as `name n, name n`.
fn top(counts: &BTreeMap<String, u64>, n: usize) -> String {
    let mut v: Vec<(&String, &u64)> = counts.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let shown: Vec<String> = v.iter().take(n).map(|(k, c)| format!("{k} {c}")).collect();
    if shown.is_empty() { "—".to_string() } else { shown.join(", ") }
}

impl Metrics {
    /// The metrics as (name, value) rows: the human table, and the bench's comparison.
    pub fn rows(&self) -> Vec<(String, String)> {
        let d = &self.detection;
        let m = &self.mistakes;
        let mut rows = vec![
            ("workspaces".to_string(), self.workspaces.to_string()),
            ("virtual time".to_string(), format!("{:.0} s", self.duration_s)),
            ("inputs fed / outputs".to_string(), format!("{} / {}", self.inputs, self.outputs)),
            ("true deaths".to_string(), self.deaths.to_string()),
            ("T_D detected / undetected".to_string(), format!("{} / {}", d.count, d.undetected)),
            ("T_D median".to_string(), opt_s(d.median_s)),
            ("T_D p90".to_string(), opt_s(d.p90_s)),
            ("T_D max".to_string(), opt_s(d.max_s)),
            ("restarts".to_string(), self.restarts.total.to_string()),
            ("false restarts".to_string(), self.restarts.false_restarts.to_string()),
            (
                "restarts per death".to_string(),
                self.restarts.per_death.map_or_else(|| "—".to_string(), |r| format!("{r:.2}")),
            ),
        ];
        if !self.restarts.false_examples.is_empty() {
            let more = if self.restarts.false_restarts > self.restarts.false_examples.len() { ", ..." } else { "" };
            rows.push((
                "false restarts, first".to_string(),
                format!("{}{more}", self.restarts.false_examples.join(", ")),
            ));
        }
        for md in &self.mass_deaths {
            rows.push((
                format!("mass death at {:.0} s", md.at_s),
                format!(
                    "{} victims, {} restarted, {} exactly once, all restarted after {}",
                    md.victims,
                    md.restarted,
                    md.restarted_once,
                    opt_s(md.all_restarted_after_s)
                ),
            ));
        }
        rows.extend([
            ("mistakes".to_string(), m.count.to_string()),
            ("λ_M (per workspace-hour)".to_string(), format!("{:.4}", m.per_workspace_hour)),
            ("T_M mean / max".to_string(), format!("{} / {}", opt_s(m.mean_s), opt_s(m.max_s))),
            ("P_A".to_string(), format!("{:.6}", m.availability)),
            ("probe requests".to_string(), self.probe_requests.total.to_string()),
            ("probe requests per workspace-day".to_string(), format!("{:.1}", self.probe_requests.per_workspace_day)),
            ("alerts".to_string(), top(&self.alerts, usize::MAX)),
            ("suppressed (top 5)".to_string(), top(&self.suppressed, 5)),
        ]);
        rows
    }

    /// The rows as an aligned two-column table.
    pub fn table(&self) -> String {
        align(&self.rows())
    }

    /// One JSON object, keys in the order of the struct's fields (written straight to a string:
    /// a `serde_json::Value` would sort them).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("metrics always serialise")
    }
}

/// Two columns, the first padded to its widest cell (counted in characters, not bytes).
pub fn align(rows: &[(String, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut s = String::new();
    for (k, v) in rows {
        let _ = writeln!(s, "{k}{}  {v}", " ".repeat(width - k.chars().count()));
    }
    s
}
