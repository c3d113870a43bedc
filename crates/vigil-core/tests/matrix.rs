//! The state × event matrix at the top of `machine.rs` is the transition table at a glance; this
//! test makes it a claim the code has to keep.
//!
//! Given a workspace in each state — over the facts that change an answer (a recent heartbeat or a
//! long silence, a restart just issued, a crash loop) and the fleet conditions (calm, breaker open,
//! every restart slot taken) — when each event arrives, then the state it ends in is one the matrix
//! lists, and every state the matrix lists is reached by some case. On the way every dispatch is
//! checked for an honest announcement: its `state_changed` outputs chain from the state it was in
//! to the state it ends in.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use statig::blocking::IntoStateMachineExt;
use vigil_core::cadence::Cadence;
use vigil_core::disruption::{Disruption, Mode};
use vigil_core::event::*;
use vigil_core::fleet::{Fleet, Handle};
use vigil_core::machine::{Ctx, Emitted, Event, InFlight, State, Suspicion, Wait, Waiting, Workspace};
use vigil_core::policy::Policy;
use vigil_core::time::{At, Stamp};

const MACHINE: &str = include_str!("../src/machine.rs");

/// The event rows of the matrix, each with the events it stands for.
fn rows(ws: &WorkspaceId, in_flight: u32) -> Vec<(&'static str, Vec<Payload>)> {
    let probe = |result, error: Option<&str>| {
        Payload::Probe(Probe {
            workspace: ws.clone(),
            result,
            error: error.map(str::to_string),
            backend: Some("docker".into()),
            probe_id: None,
        })
    };
    let heartbeat = |incarnation: Option<&str>| {
        Payload::Heartbeat(Heartbeat {
            workspace: ws.clone(),
            interval_s: Some(30),
            incarnation: incarnation.map(Into::into),
            active_tasks: None,
        })
    };
    let upstream = |status, error: Option<&str>| {
        Payload::Upstream(UpstreamError { workspace: ws.clone(), status, error: error.map(str::to_string) })
    };
    let request = |origin| {
        Payload::Requested(RestartRequested { workspace: ws.clone(), origin, reason: "asked".into(), request_id: None })
    };
    let progress = |phase, restart_id: String| {
        Payload::Progress(RestartProgress { workspace: ws.clone(), restart_id, phase, error: None })
    };
    let ids = [vigil_core::ids::restart_id(None, ws, in_flight), format!("{ws}:999")];
    let phases = |phases: &[ProgressPhase]| {
        phases.iter().flat_map(|p| ids.iter().map(|id| progress(*p, id.clone()))).collect::<Vec<_>>()
    };
    use LifecyclePhase as L;
    use ProbeResult as P;
    vec![
        ("heartbeat", vec![heartbeat(Some("c-1")), heartbeat(Some("c-2")), heartbeat(None)]),
        ("probe running", vec![probe(P::Running, None)]),
        (
            "probe not_running, not_found, \"No such container\"",
            vec![
                probe(P::NotRunning, None),
                probe(P::NotFound, None),
                probe(P::Error, Some("Error: No such container: c-1")),
            ],
        ),
        (
            "probe pending, or another error",
            vec![probe(P::Pending, None), probe(P::Error, Some("context deadline exceeded")), probe(P::Error, None)],
        ),
        (
            "upstream_error",
            vec![upstream(Some(502), None), upstream(None, Some("connection reset")), upstream(Some(404), None)],
        ),
        ("restart_requested user", vec![request(Origin::User)]),
        ("restart_requested mutation", vec![request(Origin::Mutation)]),
        ("restart_requested system", vec![request(Origin::System)]),
        (
            "restart_progress accepted, stopped, started",
            phases(&[ProgressPhase::Accepted, ProgressPhase::Stopped, ProgressPhase::Started]),
        ),
        ("restart_progress failed", phases(&[ProgressPhase::Failed])),
        ("lifecycle paused, hibernated", vec![Payload::Lifecycle(L::Paused), Payload::Lifecycle(L::Hibernated)]),
        ("lifecycle resumed", vec![Payload::Lifecycle(L::Resumed)]),
        ("lifecycle created", vec![Payload::Lifecycle(L::Created)]),
        ("lifecycle removed", vec![Payload::Lifecycle(L::Removed)]),
        ("timer (a deadline is due)", vec![Payload::Timer]),
        ("resume (vigil restarted)", vec![Payload::Resume]),
        ("unwatched (nothing reached the log for a while)", vec![Payload::Unwatched]),
        ("breaker closed", vec![Payload::BreakerClosed]),
        ("turn (disruption modes: a held workspace's turn came)", vec![Payload::Turn]),
        ("slot free", vec![Payload::SlotFree]),
        (
            "fleet verdict (P > 1: its declaration came back)",
            vec![Payload::FleetVerdict(true), Payload::FleetVerdict(false)],
        ),
    ]
}

/// An owned event, so a row can hold its cases.
enum Payload {
    Heartbeat(Heartbeat),
    Probe(Probe),
    Upstream(UpstreamError),
    Requested(RestartRequested),
    Progress(RestartProgress),
    Lifecycle(LifecyclePhase),
    Timer,
    Resume,
    Unwatched,
    BreakerClosed,
    Turn,
    SlotFree,
    /// Admitted, or held.
    FleetVerdict(bool),
}

impl Payload {
    fn event(&self) -> Event<'_> {
        match self {
            Payload::Heartbeat(e) => Event::Heartbeat(e),
            Payload::Probe(e) => Event::Probe(e),
            Payload::Upstream(e) => Event::Upstream(e),
            Payload::Requested(e) => Event::RestartRequested(e),
            Payload::Progress(e) => Event::Progress(e),
            Payload::Lifecycle(p) => Event::Lifecycle(*p),
            Payload::Timer => Event::Timer,
            Payload::Resume => Event::Resume,
            Payload::Unwatched => Event::Unwatched(std::time::Duration::from_secs(100)),
            Payload::BreakerClosed => Event::BreakerClosed,
            Payload::Turn => Event::Turn,
            Payload::SlotFree => Event::SlotFree,
            Payload::FleetVerdict(admitted) => {
                Event::FleetVerdict { admitted: *admitted, reason: Reason::ConfirmedNotRunning }
            }
        }
    }

    fn input(&self) -> Option<InputType> {
        match self {
            Payload::Heartbeat(_) => Some(InputType::Heartbeat),
            Payload::Probe(_) => Some(InputType::Probe),
            Payload::Upstream(_) => Some(InputType::UpstreamError),
            Payload::Requested(_) => Some(InputType::RestartRequested),
            Payload::Progress(_) => Some(InputType::RestartProgress),
            Payload::Lifecycle(_) => Some(InputType::Lifecycle),
            Payload::Resume => Some(InputType::Resume),
            Payload::Timer
            | Payload::Unwatched
            | Payload::BreakerClosed
            | Payload::Turn
            | Payload::SlotFree
            | Payload::FleetVerdict(_) => None,
        }
    }
}

/// Two hours after the earliest moment any case mentions.
const NOW_S: u64 = 7200;

fn now() -> At {
    ago(0)
}

fn ago(secs: u64) -> At {
    At::parse("2026-04-16T08:00:00.000Z").unwrap().plus(Duration::from_secs(NOW_S - secs))
}

fn ahead(secs: u64) -> At {
    now().plus(Duration::from_secs(secs))
}

/// The workspace's own facts, in the variants that change an answer.
fn facts(policy: &Policy) -> Vec<Workspace> {
    let base = Workspace {
        interval_s: 30,
        failures: 0,
        restarts: 3,
        probes: 7,
        since: ago(3600),
        last_heartbeat: Stamp::at(ago(10)),
        watch_from: ago(10),
        probe_asked: Stamp::NEVER,
        last_restart: Stamp::at(ago(3600)),
        left_restarting: Stamp::NEVER,
        incarnation: Some("c-1".into()),
        incarnation_hash: vigil_core::machine::incarnation_hash("c-1"),
        cadence: Cadence::default(),
    };
    // A learned 30 s cadence: heartbeats on schedule (10 s ago), or overdue (60 s ago, well
    // before the ttl).
    let learned = Cadence { mean_ms: 30_000, dev_ms: 400, samples: 20, broken: false };
    let on_schedule = Workspace { cadence: learned, ..base.clone() };
    let overdue = Workspace { last_heartbeat: Stamp::at(ago(60)), watch_from: ago(60), ..on_schedule.clone() };
    let silent = Workspace { last_heartbeat: Stamp::at(ago(3600)), watch_from: ago(3600), ..base.clone() };
    let settling = Workspace { left_restarting: Stamp::at(ago(5)), ..silent.clone() };
    let just_restarted = Workspace { last_restart: Stamp::at(ago(20)), failures: 2, ..silent.clone() };
    let crash_loop = Workspace { failures: policy.give_up_after, since: ago(30), ..silent.clone() };
    let probing = Workspace { probe_asked: Stamp::at(ago(1)), ..silent.clone() };
    vec![base, silent, settling, just_restarted, crash_loop, probing, on_schedule, overdue]
}

/// Each state in the variants of its own data that change an answer.
fn states(policy: &Policy) -> Vec<State> {
    let suspicion = Suspicion {
        cause: Reason::NotRunningRecentHeartbeat,
        first_not_running: Stamp::at(ago(10)),
        silent_since: Stamp::NEVER,
        next_reprobe: Stamp::at(ahead(5)),
        reprobes_left: policy.reprobe_max,
        held: false,
        pending: false,
        overdue: false,
        calmed: false,
        turn: false,
    };
    let in_flight = InFlight {
        origin: Origin::System,
        deadline: ahead(600),
        progress_seen: false,
        started: false,
        followup: false,
    };
    let waiting = Waiting { cause: Reason::ConfirmedNotRunning, on: Wait::Time, until: Stamp::at(ago(1)) };
    let mut all = vec![State::Alive {}, State::Parked {}];
    all.extend(
        [
            suspicion.clone(),
            Suspicion { first_not_running: Stamp::at(ago(300)), ..suspicion.clone() },
            Suspicion {
                cause: Reason::HeartbeatTimeout,
                first_not_running: Stamp::NEVER,
                silent_since: Stamp::at(ago(20)),
                next_reprobe: Stamp::at(ago(1)),
                ..suspicion.clone()
            },
            Suspicion {
                cause: Reason::HeartbeatTimeout,
                silent_since: Stamp::at(ago(700)),
                first_not_running: Stamp::NEVER,
                ..suspicion.clone()
            },
            Suspicion { held: true, next_reprobe: Stamp::NEVER, reprobes_left: 0, ..suspicion.clone() },
            Suspicion { pending: true, next_reprobe: Stamp::NEVER, reprobes_left: 0, ..suspicion.clone() },
            Suspicion { calmed: true, ..suspicion.clone() },
            Suspicion { turn: true, ..suspicion.clone() },
            Suspicion {
                cause: Reason::HeartbeatOverdue,
                overdue: true,
                first_not_running: Stamp::NEVER,
                ..suspicion.clone()
            },
        ]
        .map(|s| State::Suspect { s }),
    );
    all.extend(
        [
            in_flight.clone(),
            InFlight { deadline: ago(1), ..in_flight.clone() },
            InFlight { followup: true, ..in_flight.clone() },
            InFlight { followup: true, deadline: ago(1), ..in_flight.clone() },
            InFlight { progress_seen: true, started: true, ..in_flight.clone() },
            InFlight { origin: Origin::User, ..in_flight.clone() },
        ]
        .map(|r| State::Restarting { r }),
    );
    all.extend(
        [
            waiting.clone(),
            Waiting { until: Stamp::at(ahead(60)), ..waiting.clone() },
            Waiting { on: Wait::Breaker, until: Stamp::NEVER, ..waiting.clone() },
            Waiting { on: Wait::Queue, until: Stamp::NEVER, ..waiting.clone() },
            Waiting { on: Wait::GaveUp, until: Stamp::NEVER, ..waiting.clone() },
        ]
        .map(|w| State::Dead { w }),
    );
    all
}

/// The fleet conditions that change an answer: calm, the breaker open, every slot taken, and
/// one partition of several (declarations go through the stream); with the disruption modes,
/// partial and full disruption, no token left, and this workspace's turn.
fn fleets(policy: &Policy, me: Handle) -> Vec<Fleet> {
    let calm = Fleet { monitored: 100, ..Fleet::default() };
    let mut open = calm.clone();
    while !open.breaker.is_open() {
        open.breaker.declare(ago(1), open.monitored, policy);
    }
    open.held.push(me);
    let full = Fleet { in_flight: policy.max_restarts_in_flight, ..calm.clone() };
    let queued = Fleet { queue: [me].into(), granted: Some(me), ..calm.clone() };
    let shared = Fleet { shared: Some(Partition { index: 1, of: 4 }), ..calm.clone() };
    let shared_open = Fleet { shared: Some(Partition { index: 1, of: 4 }), ..open.clone() };
    let mut all = vec![calm.clone(), open, full, queued, shared, shared_open];
    if policy.disruption_modes() {
        let mode = |mode| Fleet {
            disruption: Disruption { mode, partial_since: Some(ago(1)), ..Disruption::default() },
            ..calm.clone()
        };
        let mut drained = calm.clone();
        while drained.disruption.has_token(now(), policy) {
            drained.disruption.spend(now(), policy);
        }
        let settled = Fleet {
            disruption: Disruption { mode: Mode::Partial, partial_since: Some(ago(3600)), ..Disruption::default() },
            ..calm.clone()
        };
        let turn = Fleet { turn: Some(me), ..settled.clone() };
        let waiting = Fleet { held: vec![Handle { idx: 9, generation: 0 }], ..calm.clone() };
        all.extend([mode(Mode::Partial), mode(Mode::Full), drained, settled, turn, waiting]);
    }
    all
}

/// Where the workspace is after an event: a state, or gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum After {
    In(StateName),
    Removed,
}

fn letter(a: After) -> char {
    match a {
        After::In(StateName::Alive) => 'A',
        After::In(StateName::Suspect) => 'S',
        After::In(StateName::Restarting) => 'R',
        After::In(StateName::Dead) => 'D',
        After::In(StateName::Parked) => 'P',
        After::Removed => '×',
    }
}

/// Drives one machine, from `state` with `facts`, with one event; checks the announcement chain.
fn drive(policy: &Policy, facts: &Workspace, state: &State, fleet: &Fleet, payload: &Payload) -> After {
    let ws = WorkspaceId::parse("ws-matrix").unwrap();
    let handle = Handle { idx: 0, generation: 0 };
    let mut fleet = fleet.clone();
    let mut out: Vec<Emitted> = Vec::new();
    let was = state.name();
    let mut ctx = Ctx {
        now: now(),
        policy,
        overdue: vigil_core::cadence::Overdue::of(policy),
        id_key: None,
        plain_restart: None,
        ws: &ws,
        handle,
        fleet: &mut fleet,
        out: &mut out,
        input: payload.input(),
        current: was,
        removed: false,
    };
    let mut sm = facts.clone().uninitialized_state_machine();
    *sm.state_mut() = state.clone();
    let mut machine = sm.init_with_context(&mut ctx);
    machine.handle_with_context(&payload.event(), &mut ctx);
    let removed = ctx.removed;
    let after = if removed { After::Removed } else { After::In(machine.state().name()) };

    // Then the announcements chain from where it was to where it is, and say nothing else.
    let changes: Vec<(Option<StateName>, Option<StateName>)> = out
        .iter()
        .filter_map(|e| match e.body {
            OutputBody::StateChanged { from, to, .. } => Some((from, to)),
            _ => None,
        })
        .collect();
    let mut at = Some(was);
    for (from, to) in &changes {
        assert_eq!(*from, at, "{was} + {:?}: a change from {from:?} while in {at:?}", payload.event());
        assert_ne!(from, to, "{was} + {:?}: a change to the same state", payload.event());
        at = *to;
    }
    let end = if removed { None } else { Some(machine.state().name()) };
    assert_eq!(at, end, "{was} + {:?}: announced {at:?}, is {end:?} ({changes:?})", payload.event());
    after
}

/// The matrix as `machine.rs` states it: row label → state → where it may be after.
fn documented() -> BTreeMap<String, BTreeMap<StateName, BTreeSet<char>>> {
    let table: Vec<&str> =
        MACHINE.lines().filter_map(|l| l.strip_prefix("//! |")).filter(|l| !l.starts_with('-')).collect();
    let header: Vec<&str> = table[0].split('|').map(str::trim).collect();
    assert_eq!(header[..6], ["event", "A", "S", "R", "D", "P"], "the matrix's header");
    let columns = [StateName::Alive, StateName::Suspect, StateName::Restarting, StateName::Dead, StateName::Parked];
    table[1..]
        .iter()
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let outcomes = columns
                .iter()
                .zip(&cells[1..6])
                .map(|(state, cell)| (*state, cell.split_whitespace().flat_map(str::chars).collect()))
                .collect();
            (cells[0].to_string(), outcomes)
        })
        .collect()
}

#[test]
fn every_state_meets_every_event_as_the_matrix_says() {
    for policy in [Policy::default(), Policy::default().before_modes()] {
        every_state_meets_every_event_under(&policy);
    }
}

fn every_state_meets_every_event_under(policy: &Policy) {
    let ws = WorkspaceId::parse("ws-matrix").unwrap();
    let me = Handle { idx: 0, generation: 0 };
    let documented = documented();
    let mut observed: BTreeMap<String, BTreeMap<StateName, BTreeSet<char>>> = BTreeMap::new();
    let mut cases = 0;
    for facts in facts(policy) {
        for (label, payloads) in rows(&ws, facts.restarts) {
            for state in states(policy) {
                for fleet in fleets(policy, me) {
                    for payload in &payloads {
                        let after = drive(policy, &facts, &state, &fleet, payload);
                        observed
                            .entry(label.to_string())
                            .or_default()
                            .entry(state.name())
                            .or_default()
                            .insert(letter(after));
                        cases += 1;
                    }
                }
            }
        }
    }
    assert!(cases > 5000, "only {cases} cases");
    let render = |m: &BTreeMap<String, BTreeMap<StateName, BTreeSet<char>>>| {
        m.iter()
            .map(|(label, by_state)| {
                let cells: Vec<String> = by_state
                    .iter()
                    .map(|(s, to)| format!("{s}: {}", "ASRDP×".chars().filter(|c| to.contains(c)).collect::<String>()))
                    .collect();
                format!("{label:55} {}", cells.join("  "))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        documented.keys().collect::<Vec<_>>().len(),
        rows(&ws, 0).len(),
        "the matrix has a row for each row the test drives"
    );
    assert!(
        documented == observed,
        "machine.rs's matrix does not say what the machine does.\ndocumented:\n{}\nobserved:\n{}",
        render(&documented),
        render(&observed)
    );
}

#[test]
fn the_only_way_to_a_transition_is_the_one_that_announces_it() {
    // Given machine.rs's code (comments aside), when its transitions are counted, then there is
    // one: in `Ctx::to`, which emits the `state_changed` for its target.
    let code: Vec<&str> = MACHINE.lines().filter(|l| !l.trim_start().starts_with("//")).collect();
    let transitions: Vec<&&str> = code.iter().filter(|l| l.contains("Transition(")).collect();
    assert_eq!(transitions.len(), 1, "{transitions:#?}");
    let to = code.iter().position(|l| l.contains("fn to(&mut self, target: State")).expect("Ctx::to");
    let at = code.iter().position(|l| l.contains("Transition(")).unwrap();
    assert!(at > to && at < to + 8, "the transition is in Ctx::to");
}

/// The store writes machines as positional MessagePack arrays (`rmp_serde::to_vec`): every state
/// in every variant, with every set of facts, must read back as it was — a field left out must
/// never let the next one slide into its place.
#[test]
fn every_state_round_trips_through_the_stores_encoding() {
    let policy = Policy::default();
    for state in states(&policy) {
        let back: State = rmp_serde::from_slice(&rmp_serde::to_vec(&state).unwrap()).unwrap();
        assert_eq!(back, state);
        let overdue = match &state {
            State::Suspect { s } => {
                State::Suspect { s: Suspicion { overdue: !s.overdue, calmed: !s.calmed, ..s.clone() } }
            }
            other => other.clone(),
        };
        let back: State = rmp_serde::from_slice(&rmp_serde::to_vec(&overdue).unwrap()).unwrap();
        assert_eq!(back, overdue);
    }
    for ws in facts(&policy) {
        let back: Workspace = rmp_serde::from_slice(&rmp_serde::to_vec(&ws).unwrap()).unwrap();
        assert_eq!(back, ws);
    }
}
