//! Stories for SPEC §3.4 step 3, the fleet's disruption modes: how many automatic restarts go
//! when many workspaces look bad at once (the Kubernetes node-lifecycle model).
//!
//! Default policy: partial disruption past max(3, 10 %) of the active fleet Suspect or Dead, full
//! past 55 %; restarts paced at 0.2/s with a burst of 3; in partial disruption nothing goes for
//! the first 60 s, then held workspaces get their turns oldest first, each on a fresh probe.
//! Every workspace here heartbeated at 0 s and is silent since, so one definitive not-running
//! convicts it (`not_running_no_heartbeat`) — the question is only whether its restart goes.

mod support;

use support::scenario::{Scenario, fleet};
use vigil::core::Policy;
use vigil::core::disruption::Mode;
use vigil::core::event::{AlertKind, Origin::*, OutputBody, ProbeResult::*, Reason};

/// The reasons of the fleet's `breaker_open` / `breaker_closed` alerts so far, in order.
fn mode_alerts(s: &Scenario) -> Vec<(AlertKind, Reason)> {
    s.all
        .iter()
        .filter_map(|o| match &o.body {
            OutputBody::Alert { kind: kind @ (AlertKind::BreakerOpen | AlertKind::BreakerClosed), reason, .. } => {
                Some((*kind, *reason))
            }
            _ => None,
        })
        .collect()
}

/// Given forty workspaces that each heartbeated once, at 0 s, under the default policy.
fn forty_heard_from_at_0() -> (Scenario, Vec<String>) {
    let mut s = Scenario::new();
    let ids = fleet(40);
    s.at(0.0).fleet_heartbeat(&ids);
    (s, ids)
}

#[test]
fn healthy_a_burst_of_deaths_goes_at_once_and_the_next_waits_for_its_token_and_a_fresh_probe() {
    let (mut s, ids) = forty_heard_from_at_0();
    // Given three real deaths: restarted at once (the burst).
    for id in &ids[..3] {
        assert!(s.at(70.0).probe(id, NotFound).iter().any(|o| o.contains("RESTART")));
    }
    // When a fourth comes in the same second, it waits Suspect (no dead state for a proxy to act
    // on), for the next token, 5 s later.
    assert_eq!(
        s.at(70.0).probe("ws-03", NotFound),
        ["ws-03 alive->suspect not_running_no_heartbeat", "ws-03 suppressed restart_rate_limited"]
    );
    assert!(s.at(74.0).tick().is_empty());
    // Then its turn comes: asked afresh, and the answer decides.
    assert_eq!(s.at(76.0).tick(), ["@75 ws-03 probe? restart_turn"]);
    assert_eq!(
        s.at(76.0).probe("ws-03", NotFound),
        [
            "ws-03 suspect->dead not_running_no_heartbeat",
            "ws-03 dead->restarting restart_issued",
            "ws-03 RESTART ws-03:1 system not_running_no_heartbeat #1"
        ]
    );
    assert!(mode_alerts(&s).is_empty(), "one held workspace of forty is no disruption");
}

#[test]
fn partial_restarts_wait_a_settle_then_go_one_token_at_a_time_oldest_first_each_on_fresh_evidence() {
    // A host with a quarter of the fleet on it dies: every witness agrees, so every victim must
    // be restarted — but at a pace that cannot make an outage worse.
    let (mut s, ids) = forty_heard_from_at_0();
    for id in &ids[..7] {
        s.at(70.0).probe(id, NotFound);
    }
    // Three restarted, four held (rate); the fifth held is more than max(3, 10 % of 40).
    let out = s.at(70.0).probe("ws-07", NotFound);
    assert_eq!(
        out,
        [
            "ws-07 alive->suspect not_running_no_heartbeat",
            "ws-07 suppressed restart_rate_limited",
            "fleet ALERT breaker_open"
        ]
    );
    assert_eq!(mode_alerts(&s), [(AlertKind::BreakerOpen, Reason::DisruptionPartial)]);
    assert_eq!(s.engine.disruption(), (Mode::Partial, 40, 5));
    for id in &ids[8..10] {
        assert_eq!(s.at(71.0).probe(id, NotFound)[1], format!("{id} suppressed disruption_partial"));
    }
    // Nothing goes for 60 s: time for the rest of the fleet to show whether the observer is sick.
    assert!(s.at(129.0).tick().is_empty());
    // Then the bucket (full again) gives the three oldest their turn, and one more every 5 s.
    assert_eq!(
        s.at(131.0).tick(),
        ["@130 ws-03 probe? restart_turn", "@130 ws-04 probe? restart_turn", "@130 ws-05 probe? restart_turn"]
    );
    assert_eq!(s.at(136.0).tick(), ["@135 ws-06 probe? restart_turn"]);
    // A fresh not-running restarts it; a heartbeat instead shows it alive (its token is spent).
    assert!(s.at(137.0).probe("ws-03", NotFound).iter().any(|o| o.contains("RESTART ws-03:1")));
    assert_eq!(s.at(137.0).heartbeat("ws-04"), ["ws-04 suspect->alive refuted"]);
    for (t, id) in [(138.0, "ws-05"), (138.0, "ws-06")] {
        assert!(s.at(t).probe(id, NotFound).iter().any(|o| o.contains("RESTART")), "{id}");
    }
    assert_eq!(s.at(141.0).tick(), ["@140 ws-07 probe? restart_turn"]);
    s.at(141.0).probe("ws-07", NotFound);
    assert_eq!(s.at(151.0).tick(), ["@145 ws-08 probe? restart_turn", "@150 ws-09 probe? restart_turn"]);
    for id in ["ws-08", "ws-09"] {
        s.at(152.0).probe(id, NotFound);
    }
    // Every victim restarted, each once; the one that heartbeated not at all.
    let mut restarted = s.restarts();
    restarted.sort();
    let expected: Vec<String> =
        ["00", "01", "02", "03", "05", "06", "07", "08", "09"].iter().map(|n| format!("ws-{n}:1 system")).collect();
    assert_eq!(restarted, expected);
}

#[test]
fn a_turn_given_while_healthy_is_held_again_if_the_fleet_is_disrupted_before_the_answer() {
    // The first seconds of a sick observer look like a few deaths: the burst goes, the next one
    // gets its token — and by the time its fresh probe answers, the fleet is partially disrupted.
    let (mut s, ids) = forty_heard_from_at_0();
    for id in &ids[..4] {
        s.at(70.0).probe(id, NotFound);
    }
    assert_eq!(s.at(76.0).tick(), ["@75 ws-03 probe? restart_turn"]);
    for id in &ids[4..8] {
        s.at(76.0).probe(id, NotFound);
    }
    assert_eq!(s.engine.disruption().0, Mode::Partial);
    // Then the lie that would have restarted it holds it again, first in line.
    assert_eq!(s.at(77.0).probe("ws-03", NotFound), ["ws-03 suppressed disruption_partial"]);
    assert_eq!(s.restarts().len(), 3);
    // After the settle, it is the first to get a turn again.
    assert_eq!(s.at(137.0).tick()[0], "@136 ws-03 probe? restart_turn");
}

#[test]
fn full_no_automatic_restart_while_most_of_the_fleet_looks_dead_and_none_after_it_comes_back() {
    // vigil is cut off from the whole fleet: heartbeats lost on their way, every probe says
    // not_found. Every witness is wrong at once; the only defence is that the whole fleet cannot
    // plausibly die in the same minute.
    let (mut s, ids) = forty_heard_from_at_0();
    for id in &ids {
        s.at(70.0).probe(id, NotFound);
    }
    assert_eq!(s.restarts().len(), 3, "the burst went before anything looked wrong");
    assert_eq!(
        mode_alerts(&s),
        [(AlertKind::BreakerOpen, Reason::DisruptionPartial), (AlertKind::BreakerOpen, Reason::DisruptionFull)]
    );
    // Past 55 % (the 23rd held of 40 active), every further death is held with the mode as reason.
    let held_full = s
        .all
        .iter()
        .filter(|o| matches!(o.body, OutputBody::Suppressed { reason: Reason::DisruptionFull, .. }))
        .count();
    assert_eq!(held_full, 40 - 3 - 23);
    assert_eq!(s.engine.disruption(), (Mode::Full, 40, 37));
    // No turn, however long it lasts; a system request is held too; a person's restart goes.
    assert!(s.at(200.0).tick().is_empty());
    assert_eq!(s.at(201.0).restart("ws-10", System), ["ws-10 suppressed disruption_full"]);
    assert!(s.at(202.0).restart("ws-11", User).iter().any(|o| o.contains("RESTART ws-11:1 user")));
    // When the fleet comes back, every held workspace is simply alive again...
    for id in ids[3..].iter().filter(|id| *id != "ws-11") {
        assert_eq!(s.at(250.0).heartbeat(id), [format!("{id} suspect->alive refuted")]);
    }
    // ...and after a calm minute the fleet is healthy, with nothing restarted on the way.
    assert!(s.at(309.0).tick().is_empty());
    assert_eq!(s.at(311.0).tick(), ["@310 fleet ALERT breaker_closed"]);
    assert_eq!(mode_alerts(&s).last(), Some(&(AlertKind::BreakerClosed, Reason::BreakerCalm)));
    assert_eq!(s.restarts().len(), 4, "the burst and the person's restart");
}

#[test]
fn workspaces_never_heard_from_do_not_dilute_the_active_fleet() {
    // Anyone can name workspaces: a hundred ids that only ever appeared in proxy errors must not
    // make eight dead agents of ten look like a small share of the fleet.
    let mut s = Scenario::new();
    let ids = fleet(10);
    s.at(0.0).fleet_heartbeat(&ids);
    for i in 0..100 {
        s.at(1.0).upstream(&format!("ws-invented-{i}"), 500);
    }
    for id in &ids[..8] {
        s.at(70.0).probe(id, NotFound);
    }
    let (mode, active, unhealthy) = s.engine.disruption();
    assert_eq!((active, unhealthy), (10, 5), "three restarted; five held, of the ten heard from");
    assert_eq!(mode, Mode::Partial);
    assert_eq!(mode_alerts(&s), [(AlertKind::BreakerOpen, Reason::DisruptionPartial)]);
}

#[test]
fn a_full_disruption_holds_however_long_it_lasts() {
    // Given the whole fleet looking dead, and the observer staying blind for an hour,
    let (mut s, ids) = forty_heard_from_at_0();
    for id in &ids {
        s.at(70.0).probe(id, NotFound);
    }
    // when time passes (the burst's restarts time out and fail meanwhile),
    for t in (130..=3670).step_by(60) {
        s.at(f64::from(t)).tick();
    }
    // then nothing more was restarted, nobody got a turn, and the fleet is still fully disrupted.
    assert_eq!(s.restarts().len(), 3);
    assert!(s.all.iter().all(|o| !matches!(o.body, OutputBody::ProbeRequest { reason: Reason::RestartTurn, .. })));
    assert_eq!(s.engine.disruption(), (Mode::Full, 40, 40));
}

#[test]
fn parked_workspaces_and_those_given_up_on_leave_the_active_fleet() {
    let mut s = Scenario::with_policy(Policy { give_up_after: 1, ..Policy::default() });
    let ids = fleet(10);
    s.at(0.0).fleet_heartbeat(&ids);
    s.at(1.0).lifecycle("ws-00", vigil::core::event::LifecyclePhase::Paused);
    s.at(70.0).probe("ws-01", NotFound);
    // Dead, its restart failed: counted unhealthy while vigil still means to restart it...
    let out = s.at(80.0).progress("ws-01", "ws-01:1", vigil::core::event::ProgressPhase::Failed);
    assert!(out.contains(&"ws-01 ALERT restart_gave_up".to_string()), "{out:?}");
    // ...but given up on, it waits for a person and no longer counts.
    let view = s.engine.fleet_view();
    assert_eq!((view.disruption, view.active, view.unhealthy), (Some(Mode::Healthy), 8, 0));
    s.at(90.0).restart("ws-01", User);
    assert_eq!(s.engine.disruption(), (Mode::Healthy, 9, 0), "a person's restart brings it back");
}

#[test]
fn a_restart_admitted_while_every_slot_is_taken_keeps_its_place_when_one_frees() {
    // Its token was spent when it was admitted: a freed slot is its, not a second trip through
    // the bucket behind whoever was held since.
    let mut s = Scenario::with_policy(Policy { max_restarts_in_flight: 1, ..Policy::default() });
    let ids = fleet(40);
    s.at(0.0).fleet_heartbeat(&ids);
    for id in &ids[..3] {
        s.at(70.0).probe(id, NotFound);
    }
    assert_eq!(s.at(70.0).probe("ws-03", NotFound)[1], "ws-03 suppressed restart_rate_limited");
    let out = s.at(80.0).heartbeat("ws-00");
    assert_eq!(
        out,
        [
            "@75 ws-03 probe? restart_turn",
            "ws-00 restarting->alive restart_completed",
            "ws-01 dead->restarting restart_issued",
            "ws-01 RESTART ws-01:1 system not_running_no_heartbeat #1"
        ]
    );
}

#[test]
fn workspaces_the_modes_held_are_let_go_when_the_modes_turn_off() {
    // A `resume` that declares a partition of several brings the declaration breaker in; it never
    // opened, so nothing would ever release what the modes held.
    let (mut s, ids) = forty_heard_from_at_0();
    for id in &ids[..4] {
        s.at(70.0).probe(id, NotFound);
    }
    assert_eq!(s.engine.fleet_view().held, 1);
    let resumed = s.at(71.0).resume_partition(0, 4);
    let ticked = s.at(72.0).tick();
    assert!(resumed.iter().chain(&ticked).any(|o| o.ends_with("ws-03 probe? breaker_calm")), "{resumed:?} {ticked:?}");
    assert_eq!(s.engine.fleet_view().held, 0);
}

#[test]
fn a_turn_that_cannot_restart_yet_gives_its_token_back() {
    // Its last restart was under a minute ago (debounce): the turn's token is not lost on it.
    let (mut s, ids) = forty_heard_from_at_0();
    s.at(20.0).restart("ws-03", Mutation);
    s.at(30.0).heartbeat_every("ws-03", 5);
    for id in &ids[..4] {
        s.at(70.0).probe(id, NotFound);
    }
    assert_eq!(s.at(76.0).tick(), ["@75 ws-03 probe? restart_turn"]);
    let out = s.at(76.0).probe("ws-03", NotFound);
    assert_eq!(out[..2], ["ws-03 suspect->dead not_running_no_heartbeat", "ws-03 suppressed restart_debounced"]);
    // The token it gave back is there for the next death, at once.
    assert!(s.at(77.0).probe("ws-04", NotFound).iter().any(|o| o.contains("RESTART ws-04:1")));
}

#[test]
fn turns_that_came_for_nothing_are_held_again_in_the_order_they_answered() {
    let (mut s, ids) = forty_heard_from_at_0();
    for id in &ids[..5] {
        s.at(70.0).probe(id, NotFound);
    }
    // ws-03 and ws-04 get their turns; then the fleet is disrupted before either answers.
    assert_eq!(s.at(81.0).tick(), ["@75 ws-03 probe? restart_turn", "@80 ws-04 probe? restart_turn"]);
    for id in &ids[5..9] {
        s.at(81.0).probe(id, NotFound);
    }
    assert_eq!(s.engine.disruption().0, Mode::Partial);
    s.at(82.0).probe("ws-03", NotFound);
    s.at(83.0).probe("ws-04", NotFound);
    // After the settle, they are the first to be asked again, oldest first.
    let turns = s.at(142.0).tick();
    assert_eq!(turns[..2], ["@141 ws-03 probe? restart_turn", "@141 ws-04 probe? restart_turn"]);
}

#[test]
fn an_outage_is_no_settle_the_turns_wait_for_watched_time() {
    // Silence nobody observed is not evidence, and neither is it a settle: while nothing reached
    // the log, the rest of the fleet could not show whether the observer is what is sick.
    let mut s = Scenario::new();
    s.at(0.0).resume_watched(5000);
    let ids = fleet(40);
    s.at(0.0).fleet_heartbeat(&ids);
    for t in 1..70 {
        s.at(f64::from(t)).tick();
    }
    for id in &ids[..10] {
        s.at(70.0).probe(id, NotFound);
    }
    assert_eq!(s.engine.disruption().0, Mode::Partial);
    for t in 71..=100 {
        s.at(f64::from(t)).tick();
    }
    // NATS is down from 100 s to 200 s: 30 watched seconds of settle before, 30 more after.
    let after = s.at(200.0).tick();
    assert!(after.iter().all(|o| !o.contains("restart_turn")), "{after:?}");
    for t in 201..230 {
        assert!(s.at(f64::from(t)).tick().iter().all(|o| !o.contains("restart_turn")), "at {t}");
    }
    assert_eq!(s.at(230.0).tick()[0], "ws-03 probe? restart_turn");
}

#[test]
fn in_a_log_from_before_unwatched_a_resume_starts_the_settle_again() {
    let (mut s, ids) = forty_heard_from_at_0();
    for id in &ids[..10] {
        s.at(70.0).probe(id, NotFound);
    }
    // vigil was away for an unknown time and is back at 100 s: the settle counts from there.
    s.at(100.0).resume();
    assert!(s.at(159.0).tick().iter().all(|o| !o.contains("restart_turn")));
    assert_eq!(s.at(161.0).tick()[0], "@160 ws-03 probe? restart_turn");
}
