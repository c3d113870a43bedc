//! Stories of the fleet's breaker across partitions (SPEC §3.4, §4 "Partitions"), on engines: each
//! partition folds its own log, and the `declaration` records that every partition reads, in one
//! order, make their breakers one.
//!
//! The "stream" here is the test: it takes each partition's declarations as the owner would
//! append them and applies every record, in one order, to every partition — as each partition's
//! consumer reads them from the input stream.

mod support;

use support::scenario::Scenario;
use vigil::core::event::{Declaration, InputKind, LifecyclePhase, ProbeResult::*, StateName};
use vigil::core::{At, Engine, Policy};

const PARTITIONS: u32 = 4;

/// Four partitions of five workspaces each (`p<K>-<i>`), all heartbeating at 0 s: 20 monitored,
/// so the breaker opens past max(3, 10 % of 20) = 3 declarations within 30 s — fleet-wide.
fn four_partitions() -> Vec<Scenario> {
    (0..PARTITIONS)
        .map(|k| {
            let mut s = Scenario::new();
            s.at(0.0).resume_partition(k, PARTITIONS);
            for i in 0..5 {
                s.heartbeat(&format!("p{k}-{i}"));
            }
            s
        })
        .collect()
}

/// The same fleet, each partition with a breaker of its own (no partition said in its resume).
fn four_separate_breakers() -> Vec<Scenario> {
    (0..PARTITIONS)
        .map(|k| {
            let mut s = Scenario::new();
            for i in 0..5 {
                s.at(0.0).heartbeat(&format!("p{k}-{i}"));
            }
            s
        })
        .collect()
}

/// Appends every partition's outstanding declarations, partition by partition, at `secs`, and
/// applies each record to every partition in that order. Returns every partition's outputs.
fn stream_declarations(parts: &mut [Scenario], secs: f64) -> Vec<String> {
    let mut records = Vec::new();
    for (k, s) in parts.iter().enumerate() {
        for o in s.engine.declarations() {
            records.push(Declaration {
                partition: k as u32,
                workspace: o.workspace.clone(),
                reason: o.reason,
                monitored: o.monitored,
                awaits: o.awaits,
            });
        }
    }
    let mut said = Vec::new();
    for record in records {
        for (k, s) in parts.iter_mut().enumerate() {
            for line in s.at(secs).apply(InputKind::Declaration(record.clone())) {
                said.push(format!("p{k}: {line}"));
            }
        }
    }
    said
}

/// A definitive "not found" for `p<K>-<i>`, long after its last heartbeat: dead at once.
fn not_found(parts: &mut [Scenario], k: usize, i: usize, secs: f64) -> Vec<String> {
    parts[k].at(secs).probe(&format!("p{k}-{i}"), NotFound)
}

fn restarts(parts: &[Scenario]) -> usize {
    parts.iter().map(|s| s.restarts().len()).sum()
}

#[test]
fn six_deaths_in_four_partitions_open_one_breaker_for_the_fleet_after_the_third() {
    // Given four partitions whose workspaces last heartbeated at 0 s.
    let mut parts = four_partitions();
    // When six of them, in every partition, are found "not found" at 100 s (the cascade: one sick
    // observer), each partition declares its own: Suspect, waiting for the fleet's verdict.
    let mut declared = Vec::new();
    for (k, i) in [(0, 0), (1, 0), (2, 0), (3, 0), (0, 1), (1, 1)] {
        declared.extend(not_found(&mut parts, k, i, 100.0));
    }
    assert_eq!(declared.iter().filter(|l| l.contains("alive->suspect not_running_no_heartbeat")).count(), 6);
    assert_eq!(restarts(&parts), 0, "nothing is restarted before the fleet has counted: {declared:?}");
    assert!(parts.iter().all(|s| s.engine.declarations().len() == s.engine.fleet_view().suspect as usize));
    // Then, once the six records are in the stream: the first three are admitted, the fourth opens
    // the breaker of every partition, and one alert says so, for the fleet.
    let said = stream_declarations(&mut parts, 100.1);
    assert_eq!(restarts(&parts), 3, "{said:#?}");
    // (The records went in partition order: p0-0, p0-1, p1-0, then p1-1, p2-0, p3-0.)
    for (k, ws) in [(0, "p0-0"), (0, "p0-1"), (1, "p1-0")] {
        assert_eq!(parts[k].state(ws), Some(StateName::Restarting), "{ws} admitted");
    }
    for (k, ws) in [(1, "p1-1"), (2, "p2-0"), (3, "p3-0")] {
        assert_eq!(parts[k].state(ws), Some(StateName::Suspect), "{ws} held");
    }
    let alerts: Vec<&String> = said.iter().filter(|l| l.contains("ALERT")).collect();
    assert_eq!(alerts, ["p0: fleet ALERT breaker_open"], "{said:#?}");
    assert_eq!(said.iter().filter(|l| l.contains("suppressed breaker_open")).count(), 3, "{said:#?}");
    // Every partition's breaker is open, and closes at the same instant.
    let close_at: Vec<Option<At>> = parts.iter().map(|s| s.engine.fleet_view().breaker_close_at).collect();
    assert!(parts.iter().all(|s| s.engine.fleet_view().breaker_open));
    assert!(close_at.iter().all(|c| c.is_some() && *c == close_at[0]), "{close_at:?}");
    assert!(parts.iter().all(|s| s.engine.declarations().is_empty()), "every record came back");

    // And when the breaker closes, one alert for the fleet, and the held are asked again.
    let later = (close_at[0].unwrap().millis() - parts[0].t(0.0).millis()) as f64 / 1000.0 + 1.0;
    let mut closed = Vec::new();
    for (k, s) in parts.iter_mut().enumerate() {
        closed.extend(s.at(later).tick().into_iter().map(|l| format!("p{k}: {l}")));
    }
    assert_eq!(closed.iter().filter(|l| l.contains("ALERT")).collect::<Vec<_>>().len(), 1, "{closed:#?}");
    assert!(closed[0].starts_with("p0:") && closed.iter().any(|l| l.contains("ALERT breaker_closed")));
    assert_eq!(closed.iter().filter(|l| l.contains("probe? breaker_calm")).count(), 3, "{closed:#?}");
    assert!(parts.iter().all(|s| !s.engine.fleet_view().breaker_open));
}

#[test]
fn with_a_breaker_per_partition_the_same_six_deaths_would_all_be_restarted() {
    // Given the same fleet, but each partition counting only its own declarations (what P > 1 did
    // before the fleet's breaker): no partition sees more than two.
    let mut parts = four_separate_breakers();
    for (k, i) in [(0, 0), (1, 0), (2, 0), (3, 0), (0, 1), (1, 1)] {
        not_found(&mut parts, k, i, 100.0);
    }
    // Then all six are restarted: the cascade the breaker exists for.
    assert_eq!(restarts(&parts), 6);
    assert!(parts.iter().all(|s| !s.engine.fleet_view().breaker_open));
}

#[test]
fn a_heartbeat_before_the_verdict_refutes_the_suspicion_and_the_declaration_still_counts() {
    let mut parts = four_partitions();
    // Given p2-0 declared dead and waiting for the fleet.
    not_found(&mut parts, 2, 0, 100.0);
    // When it heartbeats before its record comes back.
    assert_eq!(parts[2].at(100.05).heartbeat("p2-0"), ["p2-0 suspect->alive refuted"]);
    // Then the verdict changes nothing for it, but every breaker counted the declaration.
    let said = stream_declarations(&mut parts, 100.1);
    assert!(said.is_empty(), "{said:?}");
    assert_eq!(parts[2].state("p2-0"), Some(StateName::Alive));
    assert_eq!(restarts(&parts), 0);
    // Three more declarations elsewhere now open the breaker on the fourth in all (1 + 3 > 3).
    for k in [0, 1, 3] {
        not_found(&mut parts, k, 0, 101.0);
    }
    let said = stream_declarations(&mut parts, 101.1);
    assert_eq!(restarts(&parts), 2, "{said:#?}");
    assert!(parts.iter().all(|s| s.engine.fleet_view().breaker_open));
}

#[test]
fn more_evidence_while_the_verdict_is_on_its_way_is_said_and_not_declared_twice() {
    let mut parts = four_partitions();
    not_found(&mut parts, 1, 3, 100.0);
    assert_eq!(not_found(&mut parts, 1, 3, 100.02), ["p1-3 suppressed declaration_pending"]);
    assert_eq!(parts[1].engine.declarations().len(), 1);
    stream_declarations(&mut parts, 100.1);
    assert_eq!(parts[1].state("p1-3"), Some(StateName::Restarting));
}

#[test]
fn the_restart_cap_is_split_between_partitions() {
    // Given max_restarts_in_flight = 4 over four partitions: one slot each.
    let policy = Policy { max_restarts_in_flight: 4, breaker_min: 100, ..Policy::default() };
    let mut s = Scenario::with_policy(policy);
    s.at(0.0).resume_partition(1, PARTITIONS);
    for i in 0..3 {
        s.heartbeat(&format!("p1-{i}"));
    }
    // When two of its workspaces are declared dead and admitted.
    for i in 0..2 {
        s.at(100.0).probe(&format!("p1-{i}"), NotFound);
    }
    let records: Vec<Declaration> = s
        .engine
        .declarations()
        .iter()
        .map(|o| Declaration {
            partition: 1,
            workspace: o.workspace.clone(),
            reason: o.reason,
            monitored: o.monitored,
            awaits: o.awaits,
        })
        .collect();
    let mut said = Vec::new();
    for r in records {
        said.extend(s.at(100.1).apply(InputKind::Declaration(r)));
    }
    // Then the first takes the partition's one slot and the second waits for it.
    assert_eq!(s.restarts().len(), 1, "{said:#?}");
    assert!(said.iter().any(|l| l == "p1-1 suppressed restart_queue_full"), "{said:#?}");
    // And it goes once the first is done (removed, here).
    let freed = s.at(110.0).lifecycle("p1-0", LifecyclePhase::Removed);
    assert!(freed.iter().any(|l| l.starts_with("p1-1 RESTART")), "{freed:#?}");
}

#[test]
fn a_successor_restored_from_a_checkpoint_still_knows_what_waits_for_the_fleet() {
    let mut parts = four_partitions();
    not_found(&mut parts, 3, 4, 100.0);
    // Given the owner of partition 3 checkpointed with the declaration not yet appended.
    let engine = &parts[3].engine;
    let restored = Engine::restore(Policy::default(), engine.fleet_record(), engine.records()).unwrap();
    // Then its successor appends it (it is listed), and the workspace still waits, nothing armed.
    assert_eq!(restored.declarations(), engine.declarations());
    assert_eq!(restored.digest(), engine.digest());
    assert_eq!(restored.view("p3-4").map(|v| v.state), Some(StateName::Suspect));
}
