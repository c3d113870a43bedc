//! The simulated world: a fleet of agents, the provisioner that runs them, and the faults that
//! strike them, in virtual time.
//!
//! The world knows the truth at every instant — each workspace is alive (GC-paused included),
//! dead, or booting — and says only what a real deployment would say: heartbeats, the
//! provisioner's probe answers and restart progress, proxies' 502s. Those facts become the inputs
//! vigil's engine folds; the engine's `probe_request` and `restart` outputs come back through
//! [`World::react`] and change the world (a probe gets answered, a restart reboots the workspace
//! whether or not it was dead). What the truth was, and when, is kept in a [`History`] so the
//! metrics can judge vigil's verdicts afterwards.
//!
//! Every random draw comes from `ChaCha8Rng::seed_from_u64(seed)`, on a stream per purpose (the
//! fault schedule, heartbeat timing, traffic, provisioner latencies): a change in how often vigil
//! probes moves no heartbeat and no death.

use std::collections::VecDeque;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::faults::{self, DAEMON_ERROR, Lie, Strike, Victims, Windows};
use super::scenario::{Scenario, Who};
use super::trace::Trace;
use crate::core::event::*;
use crate::core::time::At;

/// The world's time zero: 2026-01-01T00:00:00Z, in ms since the Unix epoch.
pub const EPOCH_MS: i64 = 1_767_225_600_000;
/// vigil's own tick: the service appends a record at least this often (ms).
pub const TICK_MS: i64 = 1000;
/// A booted agent's first heartbeat comes this long after the provisioner says `started` (ms).
pub const FIRST_HEARTBEAT_MS: i64 = 1000;

/// What a workspace really is at an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Truth {
    /// Running (a GC-paused agent is alive: it is only slow).
    Alive,
    /// Died and not yet restarted.
    Dead,
    /// Stopped by a restart and not yet heartbeating again.
    Booting,
}

/// A true death.
#[derive(Clone, Debug, PartialEq)]
pub struct DeathRecord {
    pub ws: u32,
    /// ms since the start.
    pub at: i64,
    /// Which mass death it belongs to (an index into [`History::mass_deaths`]).
    pub mass: Option<usize>,
}

/// What the world was, and when (ms since the start of the run).
#[derive(Clone, Debug)]
pub struct History {
    pub epoch_ms: i64,
    pub end_ms: i64,
    /// The workspaces' ids, in index order (zero-padded, so also sorted).
    pub ids: Vec<WorkspaceId>,
    /// Per workspace, every change of its truth (alive at 0 unless told otherwise).
    pub truth: Vec<Vec<(i64, Truth)>>,
    pub deaths: Vec<DeathRecord>,
    /// When each mass death struck.
    pub mass_deaths: Vec<i64>,
}

impl History {
    /// The index of a workspace of this world.
    pub fn index_of(&self, ws: &WorkspaceId) -> Option<usize> {
        self.ids.binary_search(ws).ok()
    }
}

/// One thing on the world's agenda.
enum Ev {
    Tick,
    Heartbeat { ws: u32, beat: u32 },
    Strike(Strike),
    PauseEnd { ws: u32, beat: u32 },
    Request { ws: u32 },
    Sweep { ws: u32 },
    ProbeAnswer { ws: u32, probe_id: String },
    Accepted { ws: u32, boot: u32, restart_id: String },
    Started { ws: u32, boot: u32, restart_id: String },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Life {
    Alive,
    Dead,
    /// Restart number `boot` stopped it; `started` once the provisioner says so.
    Booting {
        boot: u32,
        started: bool,
    },
}

struct Agent {
    life: Life,
    /// Bumped whenever the agent stops (death, restart): heartbeats and pause ends scheduled
    /// for the old life find a newer `beat` and do nothing.
    beat: u32,
    /// Restart commands received (the latest one is the one carried out).
    boots: u32,
    /// Which boot this is (the heartbeat's `incarnation`).
    incarnation: u32,
    paused_until: Option<i64>,
    /// A heartbeat fell due during the pause: it goes when the pause ends.
    owed: bool,
    /// Where this agent is in the heartbeat trace.
    trace_pos: usize,
}

/// Random streams, one per purpose and per workspace: what one workspace draws (its heartbeat
/// jitter, its probes' latency, its boot time) never depends on how often *other* workspaces drew,
/// so two policies run on one seed see the same world except where their own decisions differ.
struct Streams {
    beats: Vec<ChaCha8Rng>,
    traffic: ChaCha8Rng,
    provisioner: Vec<ChaCha8Rng>,
}

impl Streams {
    fn new(seed: u64, workspaces: u32) -> Streams {
        let per = |base: u64| (0..u64::from(workspaces)).map(|ws| stream(seed, base + 2 * ws)).collect();
        Streams { beats: per(16), traffic: stream(seed, 2), provisioner: per(17) }
    }
}

fn stream(seed: u64, n: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(n);
    rng
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `base` ± up to `jitter`, uniform, never negative (ms).
fn around(rng: &mut ChaCha8Rng, base: i64, jitter: i64) -> i64 {
    if jitter <= 0 { base.max(0) } else { (base + rng.random_range(-jitter..=jitter)).max(0) }
}

/// The fleet, the provisioner and the faults.
pub struct World<'a> {
    scenario: &'a Scenario,
    trace: Option<Trace>,
    agents: Vec<Agent>,
    agenda: super::queue::Queue<Ev>,
    windows: Windows,
    rng: Streams,
    /// Requests per ms to each workspace with traffic.
    request_rate: f64,
    /// The cadence heartbeats declare.
    interval_s: u16,
    now: i64,
    history: History,
    /// Inputs an event produced, fed before the next event happens.
    ready: VecDeque<Input>,
}

impl<'a> World<'a> {
    /// The world at time zero: every workspace created, its heartbeats, traffic and sweeps under way,
    /// every fault drawn.
    pub fn new(scenario: &'a Scenario, trace: Option<Trace>, seed: u64) -> World<'a> {
        let n = scenario.workspaces;
        let width = n.to_string().len().max(4);
        let ids: Vec<WorkspaceId> = (1..=n)
            .map(|i| WorkspaceId::parse(&format!("ws-{i:0width$}")).expect("ws-<digits> is a valid workspace id"))
            .collect();
        let mut setup = stream(seed, 0);
        let plan = faults::plan(scenario, &mut setup);
        let with_traffic = faults::pick(&mut setup, n, Who::Fraction(scenario.traffic_fraction));
        let trace_len = trace.as_ref().map_or(1, Trace::len);
        let agents = (0..n)
            .map(|_| Agent {
                life: Life::Alive,
                beat: 0,
                boots: 0,
                incarnation: 1,
                paused_until: None,
                owed: false,
                trace_pos: setup.random_range(0..trace_len),
            })
            .collect();
        let mut world = World {
            scenario,
            trace,
            agents,
            agenda: Default::default(),
            windows: Windows::new(plan.windows),
            rng: Streams::new(seed, n),
            request_rate: scenario.requests_per_min / 60_000.0,
            interval_s: scenario.interval.as_secs().clamp(1, 3600) as u16,
            now: 0,
            history: History {
                epoch_ms: EPOCH_MS,
                end_ms: ms(scenario.duration),
                truth: (0..n).map(|_| vec![(0, Truth::Alive)]).collect(),
                ids,
                deaths: Vec::new(),
                mass_deaths: Vec::new(),
            },
            ready: VecDeque::new(),
        };
        world.start(plan.strikes, &with_traffic);
        world
    }

    /// Time zero: the provisioner creates every workspace (`lifecycle created`, in id order), then
    /// each agent heartbeats from a random phase within its first interval.
    fn start(&mut self, strikes: Vec<(i64, Strike)>, with_traffic: &Victims) {
        for ws in 0..self.scenario.workspaces {
            let created = Lifecycle { workspace: self.id(ws), phase: LifecyclePhase::Created };
            self.feed(InputKind::Lifecycle(created));
        }
        self.agenda.push(TICK_MS, Ev::Tick);
        for ws in 0..self.scenario.workspaces {
            let first = self.gap(ws);
            let phase = self.rng.beats[ws as usize].random_range(0..first.max(1));
            self.agenda.push(phase, Ev::Heartbeat { ws, beat: 0 });
            if with_traffic.contains(ws) {
                self.schedule_request(ws);
            }
            if let Some(period) = self.scenario.provisioner.probe_sweep {
                let phase = self.rng.provisioner[ws as usize].random_range(0..ms(period));
                self.agenda.push(phase, Ev::Sweep { ws });
            }
        }
        for (at, strike) in strikes {
            self.agenda.push(at, Ev::Strike(strike));
        }
    }

    /// The next input for vigil, advancing the world to it; `None` once the run's time is up.
    pub fn next_input(&mut self) -> Option<Input> {
        loop {
            if let Some(input) = self.ready.pop_front() {
                return Some(input);
            }
            let (t, ev) = self.agenda.pop_until(self.history.end_ms)?;
            self.now = t;
            self.happen(ev);
        }
    }

    /// What the world does about vigil's outputs: the provisioner answers each `probe_request`
    /// after its latency and carries out each `restart`.
    pub fn react(&mut self, outputs: &[Output]) {
        for o in outputs {
            let Some(ws) = o.workspace.as_ref().and_then(|w| self.history.index_of(w)) else { continue };
            let ws = ws as u32;
            let p = &self.scenario.provisioner;
            match &o.body {
                OutputBody::ProbeRequest { probe_id, .. } => {
                    let rng = &mut self.rng.provisioner[ws as usize];
                    let delay = around(rng, ms(p.probe_latency), ms(p.probe_jitter));
                    self.agenda.push(self.now + delay, Ev::ProbeAnswer { ws, probe_id: probe_id.clone() });
                }
                OutputBody::Restart { restart_id, .. } => {
                    let agent = &mut self.agents[ws as usize];
                    agent.boots += 1;
                    let ev = Ev::Accepted { ws, boot: agent.boots, restart_id: restart_id.clone() };
                    self.agenda.push(self.now + ms(p.restart_latency), ev);
                }
                _ => {}
            }
        }
    }

    /// The world's history so far.
    pub fn into_history(self) -> History {
        self.history
    }

    fn happen(&mut self, ev: Ev) {
        match ev {
            Ev::Tick => {
                self.feed(InputKind::Tick);
                self.agenda.push(self.now + TICK_MS, Ev::Tick);
            }
            Ev::Heartbeat { ws, beat } => self.heartbeat_due(ws, beat),
            Ev::Strike(Strike::Pause { ws, len }) => self.pause(ws, len),
            Ev::Strike(Strike::Death { ws }) => self.die(ws, None),
            Ev::Strike(Strike::MassDeath { victims }) => {
                let index = self.history.mass_deaths.len();
                self.history.mass_deaths.push(self.now);
                for ws in victims {
                    self.die(ws, Some(index));
                }
            }
            Ev::PauseEnd { ws, beat } => self.pause_end(ws, beat),
            Ev::Request { ws } => {
                // A proxy in front of a dead or booting workspace answers 502.
                if self.agents[ws as usize].life != Life::Alive {
                    let error = UpstreamError { workspace: self.id(ws), status: Some(502), error: None };
                    self.feed(InputKind::UpstreamError(error));
                }
                self.schedule_request(ws);
            }
            Ev::Sweep { ws } => {
                self.probe(ws, None);
                let period = self.scenario.provisioner.probe_sweep.map_or(i64::MAX, ms);
                self.agenda.push(self.now.saturating_add(period), Ev::Sweep { ws });
            }
            Ev::ProbeAnswer { ws, probe_id } => self.probe(ws, Some(probe_id)),
            Ev::Accepted { ws, boot, restart_id } => self.accepted(ws, boot, restart_id),
            Ev::Started { ws, boot, restart_id } => self.started(ws, boot, restart_id),
        }
    }

    // ---- agents ------------------------------------------------------------------------------

    fn heartbeat_due(&mut self, ws: u32, beat: u32) {
        let agent = &mut self.agents[ws as usize];
        if agent.beat != beat {
            return; // scheduled for a life that ended
        }
        match agent.life {
            Life::Dead | Life::Booting { started: false, .. } => return,
            Life::Booting { started: true, .. } => {
                // The booted agent's first heartbeat: from here on it is up.
                agent.life = Life::Alive;
                self.record(ws, Truth::Alive);
            }
            Life::Alive => {}
        }
        let agent = &mut self.agents[ws as usize];
        if agent.paused_until.is_some_and(|until| until > self.now) {
            agent.owed = true; // sent when the pause ends
            return;
        }
        self.send_heartbeat(ws);
    }

    fn send_heartbeat(&mut self, ws: u32) {
        if !self.windows.heartbeat_lost(ws, self.now) {
            let agent = &self.agents[ws as usize];
            let heartbeat = Heartbeat {
                workspace: self.id(ws),
                interval_s: Some(self.interval_s),
                incarnation: Some(format!("boot-{}", agent.incarnation).into()),
                active_tasks: None,
            };
            self.feed(InputKind::Heartbeat(heartbeat));
        }
        let next = self.now + self.gap(ws);
        let beat = self.agents[ws as usize].beat;
        self.agenda.push(next, Ev::Heartbeat { ws, beat });
    }

    /// The time to an agent's next heartbeat (ms): the trace's next interval, or `interval` ±
    /// `jitter`.
    fn gap(&mut self, ws: u32) -> i64 {
        match &self.trace {
            Some(trace) => {
                let agent = &mut self.agents[ws as usize];
                agent.trace_pos = (agent.trace_pos + 1) % trace.len();
                trace.interval_ms(agent.trace_pos)
            }
            None => {
                around(&mut self.rng.beats[ws as usize], ms(self.scenario.interval), ms(self.scenario.jitter)).max(1)
            }
        }
    }

    fn pause(&mut self, ws: u32, len: i64) {
        let agent = &mut self.agents[ws as usize];
        if agent.life != Life::Alive {
            return;
        }
        let until = agent.paused_until.map_or(self.now + len, |u| u.max(self.now + len));
        agent.paused_until = Some(until);
        let beat = agent.beat;
        self.agenda.push(until, Ev::PauseEnd { ws, beat });
    }

    fn pause_end(&mut self, ws: u32, beat: u32) {
        let agent = &mut self.agents[ws as usize];
        // Another pause may have extended this one; only the end of the latest counts.
        if agent.beat != beat || agent.paused_until != Some(self.now) {
            return;
        }
        agent.paused_until = None;
        if std::mem::take(&mut agent.owed) {
            self.send_heartbeat(ws);
        }
    }

    fn die(&mut self, ws: u32, mass: Option<usize>) {
        let agent = &mut self.agents[ws as usize];
        if agent.life != Life::Alive {
            return; // only the living die; a booting workspace is already being restarted
        }
        agent.life = Life::Dead;
        agent.beat += 1;
        agent.paused_until = None;
        agent.owed = false;
        self.record(ws, Truth::Dead);
        self.history.deaths.push(DeathRecord { ws, at: self.now, mass });
    }

    fn schedule_request(&mut self, ws: u32) {
        if self.request_rate <= 0.0 {
            return;
        }
        let u: f64 = self.rng.traffic.random();
        let gap = (-libm::log(1.0 - u) / self.request_rate).min(1e15) as i64;
        self.agenda.push(self.now.saturating_add(gap.max(1)), Ev::Request { ws });
    }

    // ---- the provisioner ---------------------------------------------------------------------

    /// A probe's answer: the truth, unless a fault makes the provisioner say otherwise.
    fn probe(&mut self, ws: u32, probe_id: Option<String>) {
        let (result, error) = match self.windows.probe_lie(ws, self.now) {
            Some(Lie::NotFound) => (ProbeResult::NotFound, None),
            Some(Lie::DaemonError) => (ProbeResult::Error, Some(DAEMON_ERROR.to_string())),
            None => match self.agents[ws as usize].life {
                Life::Alive | Life::Booting { started: true, .. } => (ProbeResult::Running, None),
                Life::Dead => (ProbeResult::NotRunning, None),
                Life::Booting { started: false, .. } => (ProbeResult::Pending, None),
            },
        };
        let probe = Probe { workspace: self.id(ws), result, error, backend: Some("docker".into()), probe_id };
        self.feed(InputKind::Probe(probe));
    }

    /// The provisioner takes a restart: it accepts it and, unless a later restart of the same
    /// workspace superseded it, stops the workspace at once and boots it.
    fn accepted(&mut self, ws: u32, boot: u32, restart_id: String) {
        self.progress(ws, &restart_id, ProgressPhase::Accepted);
        let agent = &mut self.agents[ws as usize];
        if agent.boots != boot {
            return;
        }
        agent.life = Life::Booting { boot, started: false };
        agent.beat += 1;
        agent.paused_until = None;
        agent.owed = false;
        self.record(ws, Truth::Booting);
        self.progress(ws, &restart_id, ProgressPhase::Stopped);
        let p = &self.scenario.provisioner;
        let boot_ms = around(&mut self.rng.provisioner[ws as usize], ms(p.boot_time), ms(p.boot_jitter));
        self.agenda.push(self.now + boot_ms, Ev::Started { ws, boot, restart_id });
    }

    /// The new instance runs: a new incarnation, whose first heartbeat follows shortly.
    fn started(&mut self, ws: u32, boot: u32, restart_id: String) {
        let agent = &mut self.agents[ws as usize];
        if agent.life != (Life::Booting { boot, started: false }) {
            return; // superseded by a later restart
        }
        agent.life = Life::Booting { boot, started: true };
        agent.incarnation += 1;
        let beat = agent.beat;
        self.progress(ws, &restart_id, ProgressPhase::Started);
        self.agenda.push(self.now + FIRST_HEARTBEAT_MS, Ev::Heartbeat { ws, beat });
    }

    fn progress(&mut self, ws: u32, restart_id: &str, phase: ProgressPhase) {
        let progress =
            RestartProgress { workspace: self.id(ws), restart_id: restart_id.to_string(), phase, error: None };
        self.feed(InputKind::RestartProgress(progress));
    }

    // ---- plumbing ----------------------------------------------------------------------------

    fn id(&self, ws: u32) -> WorkspaceId {
        self.history.ids[ws as usize].clone()
    }

    fn record(&mut self, ws: u32, truth: Truth) {
        let timeline = &mut self.history.truth[ws as usize];
        if timeline.last().is_none_or(|(_, t)| *t != truth) {
            timeline.push((self.now, truth));
        }
    }

    fn feed(&mut self, kind: InputKind) {
        let at = At(EPOCH_MS + self.now);
        self.ready.push_back(Input { at, sent_at: None, id: None, stream_seq: None, kind });
    }
}
