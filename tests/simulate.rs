//! `vigil simulate` as stories: given a small world and a fault, when it runs in a closed loop with
//! the engine, then the world behaves as the scenario says and the metrics say what happened.
//!
//! The stories assert what the *world* guarantees (a death is a death, a lying observer lies,
//! a run is reproducible and its log replays) and the outcomes SPEC promises for each fault (a GC
//! pause, a daemon hiccup or a heartbeat blackout restarts nobody; a death is restarted once).
//! Fleets are small (10 workspaces, 10 minutes of virtual time), so the file runs in seconds.

use std::path::Path;
use std::process::Command;

use vigil::core::event::{InputKind, ProbeResult, Reason};
use vigil::core::{Input, Policy, WorkspaceId};
use vigil::report::Chain;
use vigil::simulate::{self, Scenario, Simulation, world::EPOCH_MS};

fn scenario(toml: &str) -> Scenario {
    Scenario::from_toml(toml, Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap_or_else(|e| panic!("{}\n{toml}", Chain(&e)))
}

fn run(toml: &str, seed: u64) -> Simulation {
    simulate::run(&scenario(toml), Policy::default(), seed).expect("the simulation runs")
}

fn error(toml: &str) -> String {
    match Scenario::from_toml(toml, Path::new(".")) {
        Ok(_) => panic!("accepted:\n{toml}"),
        Err(e) => Chain(&e).to_string(),
    }
}

/// Seconds since the start of the run, of an input.
fn secs(input: &Input) -> f64 {
    (input.at.millis() - EPOCH_MS) as f64 / 1000.0
}

const SMALL: &str = "workspaces = 10\nduration = \"10m\"\n";

/// Every fault at once on a small fleet with traffic and a sweep: the determinism fixture.
const BUSY: &str = r#"
workspaces = 20
duration = "30m"
requests_per_min = 2.0
probe_sweep = "20s"
[[fault]]
kind = "gc_pause"
per_workspace_hour = 2.0
min = "5s"
max = "40s"
[[fault]]
kind = "death"
per_workspace_day = 12.0
[[fault]]
kind = "mass_death"
at = "20m"
count = 3
[[fault]]
kind = "daemon_hiccup"
at = "5m"
for = "1m"
fraction = 0.5
[[fault]]
kind = "lying_observer"
at = "8m"
for = "30s"
fraction = 0.2
[[fault]]
kind = "heartbeat_blackout"
at = "12m"
for = "1m"
count = 4
"#;

// ---- reproducible, and replayable ------------------------------------------------------------

#[test]
fn the_same_seed_gives_the_same_run_byte_for_byte_and_another_seed_another() {
    // Given a busy world, when it runs twice with one seed,
    let (a, b) = (run(BUSY, 7), run(BUSY, 7));
    // then the metrics and the log are the same bytes,
    assert_eq!(a.metrics.to_json(), b.metrics.to_json());
    assert_eq!(simulate::log_jsonl(&a.inputs), simulate::log_jsonl(&b.inputs));
    assert!(a.metrics.deaths > 3, "the fixture has deaths to compare: {}", a.metrics.deaths);
    // and with another seed the world is another.
    assert_ne!(simulate::log_jsonl(&a.inputs), simulate::log_jsonl(&run(BUSY, 8).inputs));
}

#[test]
fn the_log_replays_to_exactly_the_outputs_of_the_run() {
    // Given a run's log,
    let sim = run(BUSY, 3);
    let log = simulate::log_jsonl(&sim.inputs);
    // when it is replayed with the same policy, then vigil decides exactly what it decided live.
    let replayed = vigil::replay::run(Policy::default(), vigil::replay::parse_jsonl("log", &log), true);
    assert!(replayed.malformed.is_empty(), "{:?}", replayed.malformed.first());
    assert_eq!(vigil::replay::to_jsonl(&replayed.outputs), vigil::replay::to_jsonl(&sim.outputs));
}

#[test]
fn the_command_writes_a_log_that_vigil_replay_turns_into_the_same_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("busy.toml");
    std::fs::write(&file, BUSY).unwrap();
    let log = dir.path().join("log.jsonl");
    let vigil = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_vigil")).args(args).output().unwrap();
    // When the command simulates with a seed and a log,
    let out = vigil(&["simulate", file.to_str().unwrap(), "--seed", "3", "--json", "--log", log.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // then it prints one JSON object whose metrics are the library's,
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let sim = run(BUSY, 3);
    assert_eq!(report["deaths"], sim.metrics.deaths);
    assert_eq!(report["restarts"]["total"], sim.metrics.restarts.total);
    // and `vigil replay --json` of its log gives the run's outputs.
    assert_eq!(std::fs::read_to_string(&log).unwrap(), simulate::log_jsonl(&sim.inputs));
    let replay = vigil(&["replay", "--json", log.to_str().unwrap()]);
    assert!(replay.status.success());
    assert_eq!(String::from_utf8(replay.stdout).unwrap(), vigil::replay::to_jsonl(&sim.outputs));

    // An expectation that fails makes the exit status 1, and says which.
    std::fs::write(&file, format!("{SMALL}[expect]\nmedian_detection_s_max = 10.0\n")).unwrap();
    let failed = vigil(&["simulate", file.to_str().unwrap()]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stdout).contains("FAIL  median_detection_s_max"));
    // A scenario that is wrong is an error (2), named.
    std::fs::write(&file, "workspaces = 0\n").unwrap();
    let bad = vigil(&["simulate", file.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("`workspaces`"));
}

// ---- one story per fault ---------------------------------------------------------------------

#[test]
fn a_single_true_death_is_restarted_exactly_once_and_its_detection_time_measured() {
    // Given 10 workspaces with traffic, one of which dies at 3 min,
    let sim = run(&format!("{SMALL}requests_per_min = 4.0\n[[fault]]\nkind = \"death\"\nat = \"3m\"\n"), 1);
    let m = &sim.metrics;
    assert_eq!(m.deaths, 1);
    let death = &sim.history.deaths[0];
    assert_eq!(death.at, 180_000);
    // then its requests fail with 502 from then on, and only its,
    let errors: Vec<&Input> = sim.inputs.iter().filter(|i| matches!(i.kind, InputKind::UpstreamError(_))).collect();
    assert!(!errors.is_empty(), "a dead workspace with traffic answers 502");
    let victim = &sim.history.ids[death.ws as usize];
    assert!(errors.iter().all(|i| i.kind.workspace() == Some(victim) && secs(i) >= 180.0));
    // and vigil restarts it once, the world boots it, and it heartbeats again.
    assert_eq!((m.restarts.total, m.restarts.false_restarts, m.detection.count), (1, 0, 1));
    assert_eq!(m.restarts.per_death, Some(1.0));
    let td = m.detection.median_s.expect("a detection time");
    println!("T_D of a single death with traffic: {td} s");
    assert!(td > 0.0 && td < 300.0, "{td}");
    let fresh = sim.inputs.iter().any(|i| {
        matches!(&i.kind, InputKind::Heartbeat(h) if &h.workspace == victim && h.incarnation.as_deref() == Some("boot-2"))
    });
    assert!(fresh, "the restarted workspace heartbeats with a new incarnation");
}

/// When `ws`'s heartbeats reached vigil, in seconds of the run.
fn heartbeat_times(sim: &Simulation, ws: &WorkspaceId) -> Vec<f64> {
    sim.inputs.iter().filter(|i| matches!(&i.kind, InputKind::Heartbeat(h) if &h.workspace == ws)).map(secs).collect()
}

#[test]
fn a_gc_pause_of_a_minute_restarts_nobody() {
    // Given one agent that stops for 60 s at 3 min (alive: probes say running),
    let sim = run(&format!("{SMALL}[[fault]]\nkind = \"gc_pause\"\nat = \"3m\"\nfor = \"60s\"\ncount = 1\n"), 2);
    // then its heartbeats pause for a minute and the one due is sent when the pause ends,
    let gap = sim
        .history
        .ids
        .iter()
        .map(|ws| heartbeat_times(&sim, ws).windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max))
        .fold(0.0, f64::max);
    assert!((60.0..=92.0).contains(&gap), "the longest heartbeat gap is the pause: {gap} s");
    assert!(sim.inputs.iter().any(|i| secs(i) == 240.0 && matches!(i.kind, InputKind::Heartbeat(_))));
    // and nobody is restarted.
    assert_eq!(sim.metrics.restarts.total, 0);
    assert_eq!(sim.metrics.deaths, 0);
}

#[test]
fn daemon_hiccups_restart_nobody_and_are_suppressed_as_transient() {
    // Given the provisioner sweeping every 10 s, and its daemon unreachable for 3 minutes,
    let sim = run(
        &format!("{SMALL}probe_sweep = \"10s\"\n[[fault]]\nkind = \"daemon_hiccup\"\nat = \"2m\"\nfor = \"3m\"\n"),
        3,
    );
    // then the probes in that window fail with the daemon's error,
    let errors = sim
        .inputs
        .iter()
        .filter(|i| matches!(&i.kind, InputKind::Probe(p) if p.result == ProbeResult::Error))
        .inspect(|i| assert!((120.0..300.0).contains(&secs(i)), "only within the window"))
        .count();
    assert!(errors >= 150, "10 workspaces × 18 sweeps: {errors}");
    // which vigil suppresses as transient, and restarts nobody.
    assert!(sim.metrics.suppressed.get(Reason::ProbeErrorTransient.as_str()).is_some_and(|&n| n >= 150));
    assert_eq!(sim.metrics.restarts.total, 0);
}

#[test]
fn a_heartbeat_blackout_of_two_minutes_restarts_nobody() {
    // Given heartbeats of the whole fleet lost for 2 minutes while probes tell the truth,
    let sim = run(&format!("{SMALL}[[fault]]\nkind = \"heartbeat_blackout\"\nat = \"3m\"\nfor = \"2m\"\n"), 4);
    // then vigil hears no heartbeat in the window,
    let lost =
        sim.inputs.iter().filter(|i| matches!(i.kind, InputKind::Heartbeat(_)) && (180.0..300.0).contains(&secs(i)));
    assert_eq!(lost.count(), 0);
    // and whatever it suspects, a running probe or the next heartbeat refutes: no restart.
    assert_eq!(sim.metrics.restarts.total, 0);
}

#[test]
fn a_lying_observer_says_not_found_and_a_total_disruption_also_silences_heartbeats() {
    let sim = run(
        &format!(
            "{SMALL}probe_sweep = \"10s\"\n[[fault]]\nkind = \"lying_observer\"\nat = \"2m\"\nfor = \"30s\"\n\
             [[fault]]\nkind = \"total_disruption\"\nat = \"6m\"\nfor = \"30s\"\n"
        ),
        5,
    );
    for i in &sim.inputs {
        let t = secs(i);
        let in_window = (120.0..150.0).contains(&t) || (360.0..390.0).contains(&t);
        match &i.kind {
            InputKind::Probe(p) if in_window => assert_eq!(p.result, ProbeResult::NotFound, "at {t} s"),
            InputKind::Heartbeat(_) => assert!(!(360.0..390.0).contains(&t), "a heartbeat got through at {t} s"),
            _ => {}
        }
    }
    assert_eq!(sim.metrics.deaths, 0, "nobody really died: whatever vigil restarted was alive");
    assert_eq!(sim.metrics.restarts.false_restarts, sim.metrics.restarts.total);
}

#[test]
fn a_mass_death_is_counted_with_its_victims() {
    let sim = run(&format!("{SMALL}[[fault]]\nkind = \"mass_death\"\nat = \"4m\"\nfraction = 0.3\n"), 6);
    let m = &sim.metrics;
    assert_eq!(m.deaths, 3);
    assert_eq!(m.mass_deaths.len(), 1);
    assert_eq!((m.mass_deaths[0].at_s, m.mass_deaths[0].victims), (240.0, 3));
    // Three declarations do not exceed the breaker's minimum (more than 3): each is restarted once.
    assert_eq!((m.mass_deaths[0].restarted, m.mass_deaths[0].restarted_once), (3, 3));
    assert!(m.mass_deaths[0].all_restarted_after_s.is_some());
}

/// A trace in the benchmark's format (`numseq,timestamp_start_send,timestamp_end_send`, ns): the
/// real one when `VIGIL_TRACES` names its directory, else a small one written here with the same
/// shape (sends every ~100 ms, one ~1 s stall).
fn trace_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    if let Some(real) = std::env::var_os("VIGIL_TRACES").map(|d| Path::new(&d).join("node0-sentinterval.csv"))
        && real.exists()
    {
        return real;
    }
    let mut csv = String::from("numseq,timestamp_start_send,timestamp_end_send\n");
    let mut t: u64 = 2_439_202_316_247_486;
    for n in 0..2_000u64 {
        t += if n == 700 { 1_000_000_000 } else { 100_000_000 + (n * 7_919 % 900_000) };
        csv.push_str(&format!("{n},{t},{}\n", t + 120_000));
    }
    let path = dir.path().join("node0-sentinterval.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

#[test]
fn heartbeats_can_follow_a_real_trace() {
    let dir = tempfile::tempdir().unwrap();
    let file = trace_file(&dir);
    // Given heartbeats timed by a sender's real sends (~100 ms apart), × 300 (about every 30 s),
    let sim =
        run(&format!("{SMALL}heartbeat_trace = {{ file = {:?}, scale = 300.0 }}\n", file.display().to_string()), 7);
    // then each workspace heartbeats about every 30 s, with the trace's irregularity.
    let beats = heartbeat_times(&sim, &sim.history.ids[0]);
    let mut gaps: Vec<f64> = beats.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_by(f64::total_cmp);
    assert!(gaps.len() >= 15, "{} heartbeats", beats.len());
    let median = gaps[gaps.len() / 2];
    assert!((29.0..31.0).contains(&median), "median gap {median} s");
    assert_eq!(sim.metrics.deaths, 0);
}

// ---- the metrics' definitions ----------------------------------------------------------------

#[test]
fn a_world_without_faults_has_no_mistakes_and_every_metric_is_defined() {
    let sim = run(SMALL, 8);
    let m = &sim.metrics;
    assert_eq!((m.deaths, m.restarts.total, m.mistakes.count), (0, 0, 0));
    assert_eq!(m.mistakes.availability, 1.0);
    assert_eq!((m.detection.median_s, m.restarts.per_death), (None, None));
    let table = m.table();
    assert!(table.contains("T_D median") && table.contains("P_A"), "{table}");
    // The JSON keys come in a fixed order, the struct's.
    let json = m.to_json();
    let order = ["\"seed\"", "\"detection\"", "\"mistakes\"", "\"restarts\"", "\"probe_requests\"", "\"suppressed\""];
    let at: Vec<usize> = order.iter().map(|k| json.find(k).unwrap_or_else(|| panic!("{k} in {json}"))).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{json}");
}

// ---- bad scenarios ---------------------------------------------------------------------------

#[test]
fn a_bad_scenario_is_refused_with_the_key_or_file_named() {
    assert!(error("workspaces = 10\nworkspace_count = 3\n").contains("workspace_count"));
    assert!(error("duration = \"ten minutes\"\n").contains("duration"));
    let negative = error("[[fault]]\nkind = \"daemon_hiccup\"\nat = \"1m\"\nfor = \"1m\"\nfraction = -0.1\n");
    assert!(negative.contains("`fault[0].fraction`") && negative.contains("-0.1"), "{negative}");
    assert!(error("[[fault]]\nkind = \"volcano\"\nat = \"1m\"\n").contains("volcano"));
    assert!(error("[[fault]]\nkind = \"gc_pause\"\nat = \"1m\"\n").contains("`fault[0].for`"));
    assert!(error("[[fault]]\nkind = \"death\"\nat = \"1m\"\nfor = \"1m\"\n").contains("`fault[0].for`"));
    assert!(error("[[fault]]\nkind = \"mass_death\"\nat = \"1m\"\n").contains("`fault[0].fraction`"));
    assert!(error("[[fault]]\nkind = \"total_disruption\"\nat = \"1m\"\nfor = \"1m\"\ncount = 2\n").contains("count"));
    assert!(error("workspaces = 5\n[[fault]]\nkind = \"mass_death\"\nat = \"1m\"\ncount = 6\n").contains("count"));
    assert!(error("duration = \"1h\"\n[[fault]]\nkind = \"death\"\nat = \"2h\"\n").contains("`fault[0].at`"));
    assert!(error("jitter = \"40s\"\n").contains("`jitter`"));
    assert!(error("[expect]\nfalse_restart_max = 0\n").contains("false_restart_max"));
    assert!(error("workspaces = 100000\nduration = \"30d\"\n").contains("inputs"));

    // A trace that is not there is named when the run needs it.
    let missing = scenario("heartbeat_trace = { file = \"no/such/trace.csv\" }\n");
    let err = simulate::run(&missing, Policy::default(), 1).expect_err("no trace, no run");
    assert!(Chain(&err).to_string().contains("no/such/trace.csv"), "{}", Chain(&err));
    // And one that is not a trace says which line is wrong.
    let bad = simulate::Trace::parse(
        Path::new("t.csv"),
        "numseq,timestamp_start_send,timestamp_end_send\n0,5,6\n1,x,7\n",
        1.0,
    );
    assert!(bad.expect_err("not a number").to_string().contains("t.csv:3"));
}

#[test]
fn every_shipped_scenario_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("simulations");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {}", path.display(), Chain(&e)));
            assert!(s.expect != Default::default(), "{} states what a good policy achieves", path.display());
            n += 1;
        }
    }
    assert!(n >= 6, "{n} scenarios");
    let before = std::fs::read_to_string(dir.join("policies/before.toml")).unwrap();
    Policy::from_toml(&before).expect("the bench's before policy loads");
}
