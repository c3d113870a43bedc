//! The scenario file: the world a policy is tried against, as TOML.
//!
//! A scenario says how big the fleet is, how its agents heartbeat, how much traffic it gets, how
//! the provisioner behaves, which faults strike it, and (optionally) what a good policy should
//! achieve in it. Every key has a default (listed in `simulations/README.md`), unknown keys are
//! refused, durations are humantime strings (`"30s"`, `"6h"`), and a value out of range is an
//! error that names its key — so a typo cannot silently simulate another world than intended.
//!
//! The file is read into `*File` structs exactly as written, then validated into [`Scenario`],
//! whose values are always in range: the world never has to second-guess them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use super::expect::Expect;

/// At most this many workspaces: the simulator keeps every input in memory.
pub const MAX_WORKSPACES: u32 = 100_000;
/// At most this much virtual time.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 86_400);
/// At most this many fault windows drawn at a rate, per `[[fault]]`.
pub const MAX_WINDOWS: u32 = 1000;
/// A scenario expected to feed more inputs than this is refused up front.
pub const MAX_INPUTS: u64 = 20_000_000;

/// Why a scenario was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("reading scenario {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("scenario is not valid TOML or has an unknown or mistyped key")]
    Toml(#[from] toml::de::Error),
    /// A value out of range or a combination that makes no sense, named by its key.
    #[error("`{key}` {msg}")]
    Invalid { key: String, msg: String },
}

fn invalid(key: impl Into<String>, msg: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid { key: key.into(), msg: msg.into() }
}

/// A validated scenario. Times are offsets from the start of the run.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub workspaces: u32,
    pub duration: Duration,
    /// The scenario's own seed, if it has one (the command line's wins).
    pub seed: Option<u64>,
    /// The cadence heartbeats declare (`interval_s`) and, without a trace, keep.
    pub interval: Duration,
    /// Each inter-send interval is `interval` ± up to this (uniform).
    pub jitter: Duration,
    /// Heartbeat timing from a recorded trace instead of `interval` ± `jitter`.
    pub heartbeat_trace: Option<TraceSpec>,
    /// Requests per minute to each workspace with traffic (Poisson).
    pub requests_per_min: f64,
    /// The share of the fleet that gets traffic.
    pub traffic_fraction: f64,
    pub provisioner: Provisioner,
    pub faults: Vec<Fault>,
    pub expect: Expect,
}

/// Where recorded heartbeat send times come from.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceSpec {
    /// Resolved against the scenario file's directory.
    pub file: PathBuf,
    /// Each recorded interval is multiplied by this.
    pub scale: f64,
}

/// How the provisioner answers probes and carries out restarts.
#[derive(Clone, Debug, PartialEq)]
pub struct Provisioner {
    pub probe_latency: Duration,
    pub probe_jitter: Duration,
    /// The provisioner's own health sweep: every workspace probed at this period, unasked.
    pub probe_sweep: Option<Duration>,
    pub restart_latency: Duration,
    pub boot_time: Duration,
    pub boot_jitter: Duration,
}

/// One `[[fault]]`, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub when: When,
    pub who: Who,
}

/// What goes wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The agent is alive but silent for the pause; probes say `running`.
    GcPause,
    /// True deaths, one workspace at a time.
    Death,
    /// A share of the fleet dies at one instant.
    MassDeath,
    /// Probes fail with a transient Docker-daemon error.
    DaemonHiccup,
    /// Probes say `not_found` whatever the truth.
    LyingObserver,
    /// Heartbeats are lost on the way; agents alive, probes truthful.
    HeartbeatBlackout,
    /// Every heartbeat lost and every probe `not_found`, fleet-wide.
    TotalDisruption,
}

impl FaultKind {
    /// The name used in scenario files.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::GcPause => "gc_pause",
            FaultKind::Death => "death",
            FaultKind::MassDeath => "mass_death",
            FaultKind::DaemonHiccup => "daemon_hiccup",
            FaultKind::LyingObserver => "lying_observer",
            FaultKind::HeartbeatBlackout => "heartbeat_blackout",
            FaultKind::TotalDisruption => "total_disruption",
        }
    }

    /// Faults that last a while (a window), as opposed to deaths, which are instants.
    fn lasts(self) -> bool {
        !matches!(self, FaultKind::Death | FaultKind::MassDeath)
    }
}

/// When a fault strikes.
#[derive(Clone, Debug, PartialEq)]
pub enum When {
    /// Once, at `at`, for `length` (zero for deaths).
    Once { at: Duration, length: Duration },
    /// Independently on each affected workspace, at `per_hour` (Poisson), each lasting between
    /// `min` and `max` (zero for deaths).
    PerWorkspace { per_hour: f64, min: Duration, max: Duration },
    /// Fleet-wide windows at `per_hour` (Poisson), each over its own draw of victims.
    Windows { per_hour: f64, min: Duration, max: Duration },
}

/// Which workspaces a fault affects (drawn by the seeded RNG).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Who {
    All,
    Fraction(f64),
    Count(u32),
}

impl Who {
    /// How many of `n` workspaces.
    pub fn of(self, n: u32) -> u32 {
        match self {
            Who::All => n,
            // Rounded to the nearest workspace, so 0.3 of 100 is exactly 30.
            Who::Fraction(f) => ((f * f64::from(n)).round() as u32).min(n),
            Who::Count(c) => c.min(n),
        }
    }
}

// ---- the file as written ---------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    workspaces: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    duration: Option<Duration>,
    seed: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    jitter: Option<Duration>,
    heartbeat_trace: Option<TraceFile>,
    requests_per_min: Option<f64>,
    traffic_fraction: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    probe_latency: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    probe_jitter: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    probe_sweep: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    restart_latency: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    boot_time: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    boot_jitter: Option<Duration>,
    #[serde(default)]
    fault: Vec<FaultFile>,
    #[serde(default)]
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceFile {
    file: PathBuf,
    scale: Option<f64>,
}

/// Every key any fault kind takes; which ones a kind accepts is checked in [`FaultFile::validate`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultFile {
    kind: FaultKind,
    #[serde(default, with = "humantime_serde")]
    at: Option<Duration>,
    #[serde(default, rename = "for", with = "humantime_serde")]
    length: Option<Duration>,
    per_workspace_hour: Option<f64>,
    per_workspace_day: Option<f64>,
    per_hour: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    min: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    max: Option<Duration>,
    fraction: Option<f64>,
    count: Option<u32>,
}

// ---- validation ------------------------------------------------------------------------------

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A rate or share: finite and within `lo..=hi`.
fn within(key: &str, v: f64, lo: f64, hi: f64) -> Result<f64, ScenarioError> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(invalid(key, format!("must be within {lo}..={hi}, got {v}")))
    }
}

fn at_most(key: &str, d: Duration, max: Duration) -> Result<Duration, ScenarioError> {
    if d <= max {
        Ok(d)
    } else {
        Err(invalid(key, format!("must be at most {}", humantime_serde::re::humantime::format_duration(max))))
    }
}

impl Scenario {
    /// Reads and validates a scenario file; a trace's path is taken relative to the file's directory.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        Scenario::load_with_traces(path, None)
    }

    /// Like [`Scenario::load`], but a trace's relative path is taken from `traces` when given (real
    /// traces are data, kept outside the repository: `vigil simulate --traces DIR`).
    pub fn load_with_traces(path: &Path, traces: Option<&Path>) -> Result<Scenario, ScenarioError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ScenarioError::Read { path: path.to_path_buf(), source })?;
        Scenario::from_toml(&text, traces.unwrap_or(path.parent().unwrap_or(Path::new("."))))
    }

    /// Parses and validates a scenario; relative paths are resolved against `base_dir`.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Scenario, ScenarioError> {
        let file: ScenarioFile = toml::from_str(text)?;
        file.validate(base_dir)
    }
}

impl ScenarioFile {
    fn validate(self, base_dir: &Path) -> Result<Scenario, ScenarioError> {
        let workspaces = self.workspaces.unwrap_or(100);
        if !(1..=MAX_WORKSPACES).contains(&workspaces) {
            return Err(invalid("workspaces", format!("must be within 1..={MAX_WORKSPACES}, got {workspaces}")));
        }
        let duration = at_most("duration", self.duration.unwrap_or(secs(3600)), MAX_DURATION)?;
        if duration < secs(1) {
            return Err(invalid("duration", "must be at least 1s"));
        }
        let heartbeat_trace = match self.heartbeat_trace {
            None => None,
            Some(t) => {
                let scale = t.scale.unwrap_or(1.0);
                if !(scale.is_finite() && scale > 0.0 && scale <= 1e6) {
                    return Err(invalid("heartbeat_trace.scale", format!("must be within (0, 1e6], got {scale}")));
                }
                Some(TraceSpec { file: base_dir.join(t.file), scale })
            }
        };
        let interval = self.interval.unwrap_or(secs(30));
        if !(secs(1)..=secs(3600)).contains(&interval) {
            return Err(invalid("interval", "must be within 1s..=1h (a heartbeat's interval_s is 1..=3600)"));
        }
        let jitter = self.jitter.unwrap_or(secs(1));
        if jitter >= interval {
            return Err(invalid("jitter", "must be shorter than `interval`"));
        }
        let requests_per_min = within("requests_per_min", self.requests_per_min.unwrap_or(0.0), 0.0, 600.0)?;
        let traffic_fraction = within("traffic_fraction", self.traffic_fraction.unwrap_or(1.0), 0.0, 1.0)?;
        let provisioner = Provisioner {
            probe_latency: at_most("probe_latency", self.probe_latency.unwrap_or(secs(1)), secs(3600))?,
            probe_jitter: at_most("probe_jitter", self.probe_jitter.unwrap_or(Duration::from_millis(500)), secs(3600))?,
            probe_sweep: self.probe_sweep,
            restart_latency: at_most("restart_latency", self.restart_latency.unwrap_or(secs(1)), secs(3600))?,
            boot_time: at_most("boot_time", self.boot_time.unwrap_or(secs(20)), secs(3600))?,
            boot_jitter: at_most("boot_jitter", self.boot_jitter.unwrap_or(secs(5)), secs(3600))?,
        };
        if let Some(sweep) = provisioner.probe_sweep
            && !(secs(1)..=secs(86_400)).contains(&sweep)
        {
            return Err(invalid("probe_sweep", "must be within 1s..=1d"));
        }
        let faults = self
            .fault
            .into_iter()
            .enumerate()
            .map(|(i, f)| f.validate(&format!("fault[{i}]"), workspaces, duration))
            .collect::<Result<Vec<_>, _>>()?;
        self.expect.validate()?;
        let scenario = Scenario {
            workspaces,
            duration,
            seed: self.seed,
            interval,
            jitter,
            heartbeat_trace,
            requests_per_min,
            traffic_fraction,
            provisioner,
            faults,
            expect: self.expect,
        };
        scenario.check_size()?;
        Ok(scenario)
    }
}

impl Scenario {
    /// About how many inputs the run feeds: heartbeats, requests, sweeps and ticks.
    pub fn estimated_inputs(&self) -> u64 {
        let secs = self.duration.as_secs_f64();
        let per_ws = secs / self.interval.as_secs_f64()
            + self.requests_per_min * self.traffic_fraction * secs / 60.0
            + self.provisioner.probe_sweep.map_or(0.0, |p| secs / p.as_secs_f64());
        // Each drawn fault is an event of the world's too, and takes memory before the run.
        let hours = secs / 3600.0;
        let faults: f64 = self
            .faults
            .iter()
            .map(|f| match f.when {
                When::Once { .. } => 1.0,
                When::PerWorkspace { per_hour, .. } => per_hour * hours * f64::from(f.who.of(self.workspaces)),
                When::Windows { per_hour, .. } => per_hour * hours,
            })
            .sum();
        (per_ws * f64::from(self.workspaces) + secs + faults) as u64
    }

    fn check_size(&self) -> Result<(), ScenarioError> {
        let n = self.estimated_inputs();
        if n > MAX_INPUTS {
            return Err(invalid(
                "workspaces",
                format!("× `duration` would feed about {n} inputs; at most {MAX_INPUTS} fit a run in memory"),
            ));
        }
        Ok(())
    }
}

impl FaultFile {
    fn validate(self, key: &str, workspaces: u32, duration: Duration) -> Result<Fault, ScenarioError> {
        let k = |field: &str| format!("{key}.{field}");
        let kind = self.kind;
        let not_for = |field: &str, present: bool| -> Result<(), ScenarioError> {
            if present { Err(invalid(k(field), format!("does not apply to {}", kind.as_str()))) } else { Ok(()) }
        };
        // Which rate key a kind takes: deaths are counted per day, pauses per hour, windows per hour
        // of the fleet.
        let (rate_key, rate) = match kind {
            FaultKind::GcPause => ("per_workspace_hour", self.per_workspace_hour),
            FaultKind::Death => ("per_workspace_day", self.per_workspace_day.map(|d| d / 24.0)),
            FaultKind::MassDeath => ("", None),
            _ => ("per_hour", self.per_hour),
        };
        not_for("per_workspace_hour", self.per_workspace_hour.is_some() && rate_key != "per_workspace_hour")?;
        not_for("per_workspace_day", self.per_workspace_day.is_some() && rate_key != "per_workspace_day")?;
        not_for("per_hour", self.per_hour.is_some() && rate_key != "per_hour")?;
        not_for("for", self.length.is_some() && !kind.lasts())?;
        not_for("min", self.min.is_some() && !kind.lasts())?;
        not_for("max", self.max.is_some() && !kind.lasts())?;
        not_for("fraction", self.fraction.is_some() && kind == FaultKind::TotalDisruption)?;
        not_for("count", self.count.is_some() && kind == FaultKind::TotalDisruption)?;

        let when = match (self.at, rate) {
            (Some(_), Some(_)) => return Err(invalid(k("at"), format!("and `{rate_key}` exclude each other"))),
            (None, None) if rate_key.is_empty() => return Err(invalid(k("at"), "is required for mass_death")),
            (None, None) => return Err(invalid(k("at"), format!("or `{rate_key}` is required for {}", kind.as_str()))),
            (Some(at), None) => {
                if at >= duration {
                    return Err(invalid(k("at"), "is not within the scenario's `duration`"));
                }
                let length = match (kind.lasts(), self.length) {
                    (false, _) => Duration::ZERO,
                    (true, Some(l)) if !l.is_zero() => at_most(&k("for"), l, MAX_DURATION)?,
                    (true, _) => {
                        return Err(invalid(
                            k("for"),
                            format!("(a positive duration) is required with `at` for {}", kind.as_str()),
                        ));
                    }
                };
                not_for("min", self.min.is_some())?;
                not_for("max", self.max.is_some())?;
                When::Once { at, length }
            }
            (None, Some(per_hour)) => {
                let per_hour = within(&k(rate_key), per_hour, 0.0, 3600.0)?;
                not_for("for", self.length.is_some())?;
                let (min, max) = match (kind.lasts(), self.min, self.max) {
                    (false, _, _) => (Duration::ZERO, Duration::ZERO),
                    (true, Some(min), Some(max)) if min <= max && !max.is_zero() => {
                        (min, at_most(&k("max"), max, MAX_DURATION)?)
                    }
                    (true, Some(_), Some(_)) => {
                        return Err(invalid(k("min"), "must be no longer than `max`, and `max` positive"));
                    }
                    (true, _, _) => return Err(invalid(k("min"), format!("and `max` are required with `{rate_key}`"))),
                };
                if kind == FaultKind::GcPause || kind == FaultKind::Death {
                    When::PerWorkspace { per_hour, min, max }
                } else {
                    let expected = per_hour * duration.as_secs_f64() / 3600.0;
                    if expected > MAX_WINDOWS as f64 {
                        return Err(invalid(
                            k(rate_key),
                            format!("would draw about {expected:.0} windows in `duration`; at most {MAX_WINDOWS}"),
                        ));
                    }
                    When::Windows { per_hour, min, max }
                }
            }
        };
        let who = match (self.fraction, self.count) {
            (Some(_), Some(_)) => return Err(invalid(k("fraction"), "and `count` exclude each other")),
            (Some(f), None) => Who::Fraction(within(&k("fraction"), f, 0.0, 1.0)?),
            (None, Some(c)) if c > workspaces => {
                return Err(invalid(k("count"), format!("is {c}, more than the {workspaces} workspaces")));
            }
            (None, Some(c)) => Who::Count(c),
            (None, None) if kind == FaultKind::MassDeath => {
                return Err(invalid(k("fraction"), "or `count` is required for mass_death"));
            }
            // One death at `at` unless told more; every other fault reaches the whole fleet.
            (None, None) if kind == FaultKind::Death && matches!(when, When::Once { .. }) => Who::Count(1),
            (None, None) => Who::All,
        };
        Ok(Fault { kind, when, who })
    }
}
