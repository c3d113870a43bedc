//! A given/when/then harness over the engine: inputs at times relative to T0, outputs summarised
//! as short strings so a test reads as the story it checks.
//!
//! Each summary is `<workspace> <what> <reason>`; outputs caused by a timer that fired before the
//! input carry `@<seconds>` (their own time relative to T0).

use vigil::core::event::*;
use vigil::core::{At, Engine, Policy};

pub const T0: &str = "2026-04-16T09:00:00.000Z";

pub struct Scenario {
    pub engine: Engine,
    t0: At,
    now: At,
    /// Every output so far, in order.
    pub all: Vec<Output>,
    /// Every input so far, in order.
    pub inputs: Vec<Input>,
}

fn ws(id: &str) -> WorkspaceId {
    WorkspaceId::parse(id).expect("test workspace ids are valid")
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario::new()
    }
}

impl Scenario {
    pub fn new() -> Scenario {
        Scenario::with_policy(Policy::default())
    }

    pub fn with_policy(policy: Policy) -> Scenario {
        let t0 = At::parse(T0).unwrap();
        Scenario { engine: Engine::new(policy), t0, now: t0, all: Vec::new(), inputs: Vec::new() }
    }

    /// Sets the clock for the next input, in seconds after T0.
    pub fn at(&mut self, secs: f64) -> &mut Self {
        self.now = At(self.t0.millis() + (secs * 1000.0).round() as i64);
        self
    }

    /// The instant `secs` after T0.
    pub fn t(&self, secs: f64) -> At {
        At(self.t0.millis() + (secs * 1000.0).round() as i64)
    }

    pub fn apply(&mut self, kind: InputKind) -> Vec<String> {
        self.apply_input(Input { at: self.now, sent_at: None, id: None, stream_seq: None, kind })
    }

    pub fn apply_input(&mut self, input: Input) -> Vec<String> {
        let start = self.all.len();
        self.engine.apply(&input, &mut self.all);
        self.inputs.push(input.clone());
        self.all[start..].iter().map(|o| self.summary(o, input.at)).collect()
    }

    pub fn summary(&self, o: &Output, input_at: At) -> String {
        let mut s = String::new();
        if o.at != input_at {
            let secs = (o.at.millis() - self.t0.millis()) as f64 / 1000.0;
            s.push_str(&format!("@{secs} "));
        }
        s.push_str(o.workspace.as_ref().map_or("fleet", |w| w.as_str()));
        s.push(' ');
        s.push_str(&match &o.body {
            OutputBody::StateChanged { from, to, reason, .. } => {
                let n = |x: &Option<StateName>| x.map_or("none", |s| s.as_str());
                format!("{}->{} {reason}", n(from), n(to))
            }
            OutputBody::Restart { restart_id, origin, reason, attempt, .. } => {
                format!("RESTART {restart_id} {origin} {reason} #{attempt}")
            }
            OutputBody::ProbeRequest { reason, .. } => format!("probe? {reason}"),
            OutputBody::Suppressed { reason, .. } => format!("suppressed {reason}"),
            OutputBody::Alert { kind, .. } => format!("ALERT {kind}"),
        });
        s
    }

    // ---- inputs -------------------------------------------------------------------------------

    pub fn heartbeat(&mut self, id: &str) -> Vec<String> {
        self.apply(InputKind::Heartbeat(Heartbeat {
            workspace: ws(id),
            interval_s: None,
            incarnation: None,
            active_tasks: None,
        }))
    }

    pub fn heartbeat_every(&mut self, id: &str, interval_s: u16) -> Vec<String> {
        self.apply(InputKind::Heartbeat(Heartbeat {
            workspace: ws(id),
            interval_s: Some(interval_s),
            incarnation: None,
            active_tasks: None,
        }))
    }

    pub fn heartbeat_inc(&mut self, id: &str, incarnation: &str) -> Vec<String> {
        self.apply(InputKind::Heartbeat(Heartbeat {
            workspace: ws(id),
            interval_s: Some(30),
            incarnation: Some(incarnation.into()),
            active_tasks: None,
        }))
    }

    pub fn probe(&mut self, id: &str, result: ProbeResult) -> Vec<String> {
        self.apply(InputKind::Probe(Probe { workspace: ws(id), result, error: None, backend: None, probe_id: None }))
    }

    pub fn probe_error(&mut self, id: &str, text: &str) -> Vec<String> {
        self.apply(InputKind::Probe(Probe {
            workspace: ws(id),
            result: ProbeResult::Error,
            error: Some(text.into()),
            backend: Some("docker".into()),
            probe_id: None,
        }))
    }

    pub fn upstream(&mut self, id: &str, status: u16) -> Vec<String> {
        self.apply(InputKind::UpstreamError(UpstreamError { workspace: ws(id), status: Some(status), error: None }))
    }

    pub fn upstream_transport(&mut self, id: &str, text: &str) -> Vec<String> {
        self.apply(InputKind::UpstreamError(UpstreamError {
            workspace: ws(id),
            status: None,
            error: Some(text.into()),
        }))
    }

    pub fn restart(&mut self, id: &str, origin: Origin) -> Vec<String> {
        self.apply(InputKind::RestartRequested(RestartRequested {
            workspace: ws(id),
            origin,
            reason: format!("{origin} restart in a test"),
            request_id: None,
        }))
    }

    pub fn progress(&mut self, id: &str, restart_id: &str, phase: ProgressPhase) -> Vec<String> {
        self.apply(InputKind::RestartProgress(RestartProgress {
            workspace: ws(id),
            restart_id: restart_id.into(),
            phase,
            error: None,
        }))
    }

    pub fn lifecycle(&mut self, id: &str, phase: LifecyclePhase) -> Vec<String> {
        self.apply(InputKind::Lifecycle(Lifecycle { workspace: ws(id), phase }))
    }

    pub fn tick(&mut self) -> Vec<String> {
        self.apply(InputKind::Tick)
    }

    pub fn resume(&mut self) -> Vec<String> {
        self.apply(InputKind::Resume(Resume::default()))
    }

    /// A resume carrying a data directory's id key, as the service writes it.
    pub fn resume_keyed(&mut self, key: vigil::core::ids::IdKey) -> Vec<String> {
        self.apply(InputKind::Resume(Resume { id_key: Some(key), ..Resume::default() }))
    }

    /// A resume as a service that ticks at least every second writes it: from here on, a stretch
    /// of the log longer than `ms` with no record is time nobody watched.
    pub fn resume_watched(&mut self, ms: u32) -> Vec<String> {
        self.apply(InputKind::Resume(Resume { unwatched_after_ms: Some(ms), ..Resume::default() }))
    }

    /// A resume of partition `index` of `of`, as the owner of one partition of several writes it:
    /// from here on its death declarations go through `declaration` records (`core::fleet`).
    pub fn resume_partition(&mut self, index: u32, of: u32) -> Vec<String> {
        self.apply(InputKind::Resume(Resume { partition: Some(Partition { index, of }), ..Resume::default() }))
    }

    // ---- observations -------------------------------------------------------------------------

    /// The last input applied.
    pub fn last_input(&self) -> Input {
        self.inputs.last().cloned().expect("an input was applied")
    }

    pub fn state(&self, id: &str) -> Option<StateName> {
        self.engine.view(id).map(|v| v.state)
    }

    /// Every restart command so far, as `restart_id origin`.
    pub fn restarts(&self) -> Vec<String> {
        self.all
            .iter()
            .filter_map(|o| match &o.body {
                OutputBody::Restart { restart_id, origin, .. } => Some(format!("{restart_id} {origin}")),
                _ => None,
            })
            .collect()
    }

    /// Gives each of `ids` a heartbeat now (a quick way to set up a fleet).
    pub fn fleet_heartbeat(&mut self, ids: &[String]) {
        for id in ids {
            self.heartbeat(id);
        }
    }
}

/// `n` workspace ids `ws-00`, `ws-01`, ...
pub fn fleet(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("ws-{i:02}")).collect()
}
