//! The faults of a scenario, drawn once, before the run: when each strikes and whom.
//!
//! Drawing the whole schedule up front, from a random stream of its own, means that a change in
//! how vigil reacts (more probes, another restart) never moves a fault: two policies tried on the
//! same seed face exactly the same deaths, pauses and outages, which is what makes their figures
//! comparable.
//!
//! Instant faults (a death, the start of a GC pause) become events on the world's agenda; faults
//! that last (an observer lying, heartbeats lost) become windows the world consults whenever a
//! probe is answered or a heartbeat sent.

use rand::Rng;
use rand::seq::index;
use rand_chacha::ChaCha8Rng;

use super::scenario::{Fault, FaultKind, Scenario, When, Who};

/// The text of a transient Docker-daemon error, as the daemon's client prints it.
pub const DAEMON_ERROR: &str =
    "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?";

/// Whom a window or an instant fault affects: sorted workspace indices, or everyone.
#[derive(Clone, Debug, PartialEq)]
pub enum Victims {
    All,
    Some(Vec<u32>),
}

impl Victims {
    pub fn contains(&self, ws: u32) -> bool {
        match self {
            Victims::All => true,
            Victims::Some(v) => v.binary_search(&ws).is_ok(),
        }
    }

    /// The indices, out of a fleet of `n`.
    pub fn list(&self, n: u32) -> Vec<u32> {
        match self {
            Victims::All => (0..n).collect(),
            Victims::Some(v) => v.clone(),
        }
    }
}

/// A fault that lasts: active from `start` (inclusive) to `end` (exclusive), in ms.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub kind: FaultKind,
    pub start: i64,
    pub end: i64,
    pub victims: Victims,
}

/// An instant fault, for the agenda.
#[derive(Clone, Debug, PartialEq)]
pub enum Strike {
    /// The workspace's agent stops for `len` ms (if it is alive then).
    Pause { ws: u32, len: i64 },
    /// The workspace dies (if it is alive then).
    Death { ws: u32 },
    /// These workspaces die at once (those alive then).
    MassDeath { victims: Vec<u32> },
}

/// What a probe answers instead of the truth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lie {
    NotFound,
    DaemonError,
}

/// The whole schedule.
#[derive(Debug, Default)]
pub struct Plan {
    /// In the order drawn; the agenda orders them by time.
    pub strikes: Vec<(i64, Strike)>,
    pub windows: Vec<Window>,
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// An exponential gap (ms) between Poisson arrivals at `per_hour`.
fn exp_gap(rng: &mut ChaCha8Rng, per_hour: f64) -> f64 {
    let u: f64 = rng.random();
    -libm::log(1.0 - u) / per_hour * 3_600_000.0
}

/// Arrival times in `[0, end)` of a Poisson process at `per_hour`.
fn arrivals(rng: &mut ChaCha8Rng, per_hour: f64, end: i64) -> Vec<i64> {
    let mut out = Vec::new();
    if per_hour <= 0.0 {
        return out;
    }
    let mut t = exp_gap(rng, per_hour);
    while t < end as f64 {
        out.push(t as i64);
        t += exp_gap(rng, per_hour);
    }
    out
}

/// A uniform length within `min..=max`, in ms.
fn length(rng: &mut ChaCha8Rng, min: i64, max: i64) -> i64 {
    if max <= min { min } else { rng.random_range(min..=max) }
}

/// Draws who is affected, out of `n` workspaces.
pub fn pick(rng: &mut ChaCha8Rng, n: u32, who: Who) -> Victims {
    if who == Who::All {
        return Victims::All;
    }
    let mut v: Vec<u32> = index::sample(rng, n as usize, who.of(n) as usize).into_iter().map(|i| i as u32).collect();
    v.sort_unstable();
    Victims::Some(v)
}

/// Draws every fault of the scenario, in the order they are listed.
pub fn plan(scenario: &Scenario, rng: &mut ChaCha8Rng) -> Plan {
    let mut plan = Plan::default();
    let n = scenario.workspaces;
    let end = ms(scenario.duration);
    for fault in &scenario.faults {
        draw(fault, n, end, rng, &mut plan);
    }
    plan
}

fn draw(fault: &Fault, n: u32, end: i64, rng: &mut ChaCha8Rng, plan: &mut Plan) {
    match fault.when {
        When::Once { at, length: len } => {
            let (at, len) = (ms(at), ms(len));
            let victims = pick(rng, n, fault.who);
            match fault.kind {
                FaultKind::GcPause => {
                    plan.strikes.extend(victims.list(n).into_iter().map(|ws| (at, Strike::Pause { ws, len })));
                }
                FaultKind::Death => {
                    plan.strikes.extend(victims.list(n).into_iter().map(|ws| (at, Strike::Death { ws })));
                }
                FaultKind::MassDeath => plan.strikes.push((at, Strike::MassDeath { victims: victims.list(n) })),
                kind => plan.windows.push(Window { kind, start: at, end: at.saturating_add(len), victims }),
            }
        }
        When::PerWorkspace { per_hour, min, max } => {
            let (min, max) = (ms(min), ms(max));
            for ws in pick(rng, n, fault.who).list(n) {
                for at in arrivals(rng, per_hour, end) {
                    let strike = match fault.kind {
                        FaultKind::GcPause => Strike::Pause { ws, len: length(rng, min, max) },
                        _ => Strike::Death { ws },
                    };
                    plan.strikes.push((at, strike));
                }
            }
        }
        When::Windows { per_hour, min, max } => {
            for start in arrivals(rng, per_hour, end) {
                let len = length(rng, ms(min), ms(max));
                let victims = pick(rng, n, fault.who);
                plan.windows.push(Window { kind: fault.kind, start, end: start.saturating_add(len), victims });
            }
        }
    }
}

/// The windows, consulted in time order: only those active at the time asked are looked at, so
/// a long run with many windows costs no more per heartbeat than a short one.
#[derive(Debug, Default)]
pub struct Windows {
    /// Sorted by start.
    all: Vec<Window>,
    /// The next window in `all` not yet started.
    next: usize,
    /// Indices into `all` of the windows started and not yet known to be over.
    active: Vec<usize>,
    /// The time of the latest query (queries never go back in time).
    now: i64,
}

impl Windows {
    pub fn new(mut all: Vec<Window>) -> Windows {
        // Stable: windows starting together stay in the order they were drawn.
        all.sort_by_key(|w| w.start);
        Windows { all, next: 0, active: Vec::new(), now: i64::MIN }
    }

    /// Every window, by start time.
    pub fn all(&self) -> &[Window] {
        &self.all
    }

    fn advance(&mut self, t: i64) {
        debug_assert!(t >= self.now, "window queries go forward in time");
        self.now = self.now.max(t);
        while self.next < self.all.len() && self.all[self.next].start <= self.now {
            self.active.push(self.next);
            self.next += 1;
        }
        let all = &self.all;
        let now = self.now;
        self.active.retain(|&i| all[i].end > now);
    }

    fn active(&mut self, ws: u32, t: i64) -> impl Iterator<Item = FaultKind> + '_ {
        self.advance(t);
        let all = &self.all;
        self.active.iter().map(move |&i| &all[i]).filter(move |w| w.victims.contains(ws)).map(|w| w.kind)
    }

    /// Whether a heartbeat sent by `ws` at `t` is lost on its way to vigil.
    pub fn heartbeat_lost(&mut self, ws: u32, t: i64) -> bool {
        self.active(ws, t).any(|k| matches!(k, FaultKind::HeartbeatBlackout | FaultKind::TotalDisruption))
    }

    /// What a probe of `ws` at `t` says instead of the truth, if anything: an observer that looks
    /// in the wrong place (`not_found`) outranks one that cannot look at all (a daemon error).
    pub fn probe_lie(&mut self, ws: u32, t: i64) -> Option<Lie> {
        let mut lie = None;
        for kind in self.active(ws, t) {
            match kind {
                FaultKind::LyingObserver | FaultKind::TotalDisruption => return Some(Lie::NotFound),
                FaultKind::DaemonHiccup => lie = Some(Lie::DaemonError),
                _ => {}
            }
        }
        lie
    }
}
