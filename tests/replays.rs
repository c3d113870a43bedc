//! Every incident in `replays/` is replayed and must produce its golden output byte for byte.
//!
//! A golden file alone would only prove that vigil still does what it once did. So each incident
//! also states its claim — what must be true for the incident to be impossible — and the claim is
//! checked against the outputs independently of the golden file. Re-blessing a golden file
//! (`make bless`) can therefore never silently bless a regression of the claim.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vigil::core::Policy;
use vigil::core::event::{AlertKind, Origin, Output, OutputBody, Reason, StateName};
use vigil::replay;

fn replay_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("replays"))
        .expect("replays/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("events.jsonl").exists())
        .collect();
    dirs.sort();
    dirs
}

fn run(dir: &Path) -> replay::Replay {
    let text = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    let name = dir.display().to_string();
    let result = replay::run(Policy::default(), replay::parse_jsonl(&name, &text), true);
    assert!(result.malformed.is_empty(), "{name}: malformed lines {:?}", result.malformed);
    result
}

#[test]
fn every_replay_matches_its_golden_output_byte_for_byte() {
    let dirs = replay_dirs();
    assert!(dirs.len() >= 7, "the seed incidents are all here: {dirs:?}");
    for dir in &dirs {
        let expected = std::fs::read_to_string(dir.join("expected.jsonl"))
            .unwrap_or_else(|_| panic!("{} has no expected.jsonl (run `make bless`)", dir.display()));
        let got = replay::to_jsonl(&run(dir).outputs);
        if got != expected {
            let first = got.lines().zip(expected.lines()).position(|(a, b)| a != b);
            panic!(
                "{}: output differs from expected.jsonl (first differing line: {:?}; {} vs {} lines).\n\
                 If the change is intended, re-bless with `make bless` and review the diff.",
                dir.display(),
                first.map(|i| i + 1),
                got.lines().count(),
                expected.lines().count()
            );
        }
    }
}

#[test]
fn replaying_twice_gives_identical_bytes() {
    for dir in replay_dirs() {
        assert_eq!(replay::to_jsonl(&run(&dir).outputs), replay::to_jsonl(&run(&dir).outputs), "{}", dir.display());
    }
}

#[test]
fn every_replay_folder_tells_its_story() {
    for dir in replay_dirs() {
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap_or_default();
        for section in ["## What happened", "## What the old code did", "## What vigil does"] {
            assert!(readme.contains(section), "{}/README.md lacks {section:?}", dir.display());
        }
    }
}

// ---- the claims -------------------------------------------------------------------------------

/// Outputs of one replay, with helpers to state claims about them.
struct Story(Vec<Output>);

impl Story {
    fn of(name: &str) -> Story {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("replays").join(name);
        Story(run(&dir).outputs)
    }

    fn restarts(&self) -> Vec<(String, Origin)> {
        self.0
            .iter()
            .filter_map(|o| match &o.body {
                OutputBody::Restart { origin, .. } => Some((o.workspace.as_ref().unwrap().to_string(), *origin)),
                _ => None,
            })
            .collect()
    }

    fn restarts_of(&self, ws: &str) -> usize {
        self.restarts().iter().filter(|(w, _)| w == ws).count()
    }

    fn entered(&self, state: StateName) -> usize {
        self.0.iter().filter(|o| matches!(o.body, OutputBody::StateChanged { to: Some(s), .. } if s == state)).count()
    }

    fn suppressed(&self, reason: Reason) -> usize {
        self.0.iter().filter(|o| matches!(o.body, OutputBody::Suppressed { reason: r, .. } if r == reason)).count()
    }

    /// The reasons of the alerts of `kind`, in order.
    fn alert_reasons(&self, kind: AlertKind) -> Vec<Reason> {
        self.0
            .iter()
            .filter_map(|o| match o.body {
                OutputBody::Alert { kind: k, reason, .. } if k == kind => Some(reason),
                _ => None,
            })
            .collect()
    }

    /// No restart command is issued for a workspace whose previous restart has not ended
    /// (user restarts may supersede; this story has none unless it says so).
    fn never_restarts_while_restarting(&self) {
        let mut restarting: BTreeMap<String, bool> = BTreeMap::new();
        for o in &self.0 {
            let ws = o.workspace.as_ref().map(|w| w.to_string()).unwrap_or_default();
            match &o.body {
                OutputBody::StateChanged { from: Some(StateName::Restarting), to, .. }
                    if *to != Some(StateName::Restarting) =>
                {
                    restarting.insert(ws, false);
                }
                OutputBody::Restart { restart_id, .. } => {
                    assert!(
                        !restarting.get(&ws).copied().unwrap_or(false),
                        "{restart_id} issued while {ws} was restarting"
                    );
                    restarting.insert(ws, true);
                }
                _ => {}
            }
        }
    }
}

#[test]
fn cascade_transient_daemon_errors_restart_nobody() {
    let s = Story::of("2026-04-16-cascade");
    assert_eq!(s.restarts().len(), 0);
    assert_eq!(s.entered(StateName::Suspect) + s.entered(StateName::Dead), 0);
    assert_eq!(s.suppressed(Reason::ProbeErrorTransient), 6, "every daemon error is visible");
}

#[test]
fn cascade_with_lying_probes_heartbeats_on_schedule_outweigh_them() {
    let s = Story::of("2026-04-16-cascade-lying-probes");
    // A heartbeat on schedule outweighs any probe: no death is declared. Four of sixteen Suspect
    // at once is a partial disruption, and the alert says so before anyone is convicted; a calm
    // minute later the fleet is healthy again.
    assert_eq!(s.restarts().len(), 0);
    assert_eq!(s.entered(StateName::Dead), 0);
    assert_eq!(s.alert_reasons(AlertKind::BreakerOpen), [Reason::DisruptionPartial]);
    assert_eq!(s.alert_reasons(AlertKind::BreakerClosed), [Reason::BreakerCalm]);
    assert_eq!(s.entered(StateName::Suspect), 6);
    assert_eq!(s.suppressed(Reason::HeartbeatOnSchedule), 12, "every lie says why it did not count");
    assert_eq!(s.entered(StateName::Alive), 16 + 6, "sixteen first seen; six refuted by their own heartbeat");
}

#[test]
fn ttl_starved_heartbeats_restart_nobody() {
    let s = Story::of("2026-04-16-ttl-starvation");
    assert_eq!(s.restarts().len(), 0);
    assert_eq!(s.entered(StateName::Dead), 0);
    // Each gap later than the agent's own cadence is asked about (overdue), never suspected on a
    // probe, and each ask is refuted.
    let suspects: Vec<_> =
        s.0.iter()
            .filter_map(|o| match o.body {
                OutputBody::StateChanged { to: Some(StateName::Suspect), reason, .. } => Some(reason),
                _ => None,
            })
            .collect();
    assert_eq!(suspects, [Reason::HeartbeatOverdue; 9]);
    assert_eq!(s.entered(StateName::Alive), 5 + 9, "five first seen; nine refuted");
}

#[test]
fn dead_vm_behind_a_502_is_restarted_once_and_its_neighbour_never() {
    let s = Story::of("2026-04-30-dead-vm-502");
    assert_eq!(s.restarts_of("ws-hongming"), 1);
    assert_eq!(s.restarts_of("ws-neighbour"), 0);
    let dead =
        s.0.iter().find(|o| matches!(o.body, OutputBody::StateChanged { to: Some(StateName::Dead), .. })).unwrap();
    assert!(matches!(dead.body, OutputBody::StateChanged { retry_after_s: Some(_), .. }), "a proxy gets a Retry-After");
}

#[test]
fn self_fire_one_secrets_put_is_one_restart_per_workspace() {
    let s = Story::of("2026-05-19-self-fire-thrash");
    assert_eq!(s.restarts_of("ws-prod-reviewer"), 1, "the incident had 4");
    assert_eq!(s.restarts_of("ws-prod-researcher"), 1, "the incident had 4");
    assert_eq!(s.suppressed(Reason::RestartInFlight), 8);
    assert_eq!(s.suppressed(Reason::RestartDebounced), 2);
    s.never_restarts_while_restarting();
}

#[test]
fn file_write_burst_every_write_lands_and_no_boot_is_interrupted() {
    let s = Story::of("2026-05-20-file-write-burst");
    // One restart for the first write, one follow-up for the eleven coalesced during it, one for
    // the write that arrived during the follow-up: never zero, never one per write.
    assert_eq!(s.restarts().iter().filter(|(_, o)| *o == Origin::Mutation).count(), 3);
    assert_eq!(s.suppressed(Reason::RestartCoalesced), 12);
    s.never_restarts_while_restarting();
}

#[test]
fn flake_after_restart_does_not_kill_the_fresh_agent() {
    let s = Story::of("2026-06-15-flake-after-restart");
    assert_eq!(s.restarts().len(), 1, "only the config PUT's own restart");
    assert_eq!(s.entered(StateName::Dead), 0);
}
