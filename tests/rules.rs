//! One given/when/then story per rule of SPEC §3.1–3.3, run against the engine: creation, probe
//! classification, and each state's rules. Restart admission (§3.4), ids, registration and the
//! engine's clock are in `admission.rs`.
//!
//! Default policy throughout unless a test says otherwise: a 30 s cadence, so `recent` is 60 s and
//! `ttl` is 180 s. Outputs read `<workspace> <what> <reason>`; `@N` marks an output a timer caused
//! at N seconds, before the input that let the clock reach it.

mod support;

use support::scenario::{Scenario, fleet};
use vigil::core::Policy;
use vigil::core::event::{LifecyclePhase::*, Origin::*, ProbeResult::*, ProgressPhase::*, StateName};

// ---- §3.3 creation ----------------------------------------------------------------------------

#[test]
fn a_heartbeat_from_an_unknown_workspace_creates_it_alive() {
    let mut s = Scenario::new();
    assert_eq!(s.at(0.0).heartbeat("ws-a"), ["ws-a none->alive first_seen"]);
}

#[test]
fn lifecycle_created_gives_a_fresh_ttl() {
    let mut s = Scenario::new();
    assert_eq!(s.at(0.0).lifecycle("ws-a", Created), ["ws-a none->alive created"]);
    // Given no heartbeat ever, silence still only counts from creation: 180 s.
    assert!(s.at(179.0).tick().is_empty());
    assert_eq!(
        s.at(181.0).tick(),
        ["@180 ws-a alive->suspect heartbeat_timeout", "@180 ws-a probe? heartbeat_timeout"]
    );
}

#[test]
fn a_probe_or_upstream_error_alone_creates_the_workspace_then_is_handled() {
    let mut s = Scenario::new();
    assert_eq!(
        s.at(0.0).probe_error("ws-a", "context deadline exceeded"),
        ["ws-a none->alive first_seen", "ws-a suppressed probe_error_transient"]
    );
    assert_eq!(s.at(0.0).upstream("ws-b", 502), ["ws-b none->alive first_seen", "ws-b probe? upstream_dead_origin"]);
    // A definitive not-running with no heartbeat ever is dead at once (the dead-VM path).
    assert_eq!(
        s.at(0.0).probe("ws-c", NotFound),
        [
            "ws-c none->alive first_seen",
            "ws-c alive->dead not_running_no_heartbeat",
            "ws-c dead->restarting restart_issued",
            "ws-c RESTART ws-c:1 system not_running_no_heartbeat #1"
        ]
    );
}

// ---- §3.1 probe classification, §3.3 Alive ---------------------------------------------------

#[test]
fn transient_probe_errors_are_suppressed_never_acted_on() {
    // The 2026-04-16 09:10 cascade: every one of these was once read as "container dead".
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    for text in [
        "context deadline exceeded",
        r#"Get "http://%2Fvar%2Frun%2Fdocker.sock/...": EOF"#,
        "dial unix /var/run/docker.sock: connect: connection refused",
        "read unix @->/var/run/docker.sock: i/o timeout",
        "cp status 503",
        "",
    ] {
        assert_eq!(s.at(100.0).probe_error("ws-a", text), ["ws-a suppressed probe_error_transient"], "{text:?}");
    }
    // Long after the heartbeat stopped being recent, they are still not evidence.
    assert_eq!(s.at(170.0).probe_error("ws-a", "EOF"), ["ws-a suppressed probe_error_transient"]);
    assert_eq!(s.state("ws-a"), Some(StateName::Alive));
    // Only "No such container" / "not found" in the text is definitive.
    assert_eq!(
        s.at(170.0).probe_error("ws-a", "Error response from daemon: No such container: ws-a")[0],
        "ws-a alive->dead not_running_no_heartbeat"
    );
}

#[test]
fn a_pending_probe_is_booting_not_death() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    assert_eq!(s.at(100.0).probe("ws-a", Pending), ["ws-a suppressed probe_pending"]);
    assert_eq!(s.state("ws-a"), Some(StateName::Alive));
}

#[test]
fn a_running_probe_or_a_heartbeat_in_alive_changes_nothing_and_says_nothing() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    assert!(s.at(10.0).probe("ws-a", Running).is_empty());
    assert!(s.at(20.0).heartbeat("ws-a").is_empty());
}

#[test]
fn heartbeats_push_the_ttl_out() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    s.at(100.0).heartbeat("ws-a");
    assert!(s.at(279.0).tick().is_empty());
    assert_eq!(
        s.at(281.0).tick(),
        ["@280 ws-a alive->suspect heartbeat_timeout", "@280 ws-a probe? heartbeat_timeout"]
    );
}

#[test]
fn dead_origin_upstream_errors_ask_for_one_probe_at_a_time() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    assert_eq!(s.at(10.0).upstream("ws-a", 502), ["ws-a probe? upstream_dead_origin"]);
    // Given that request unanswered, a repeat within 5 s is suppressed.
    assert_eq!(s.at(12.0).upstream("ws-a", 503), ["ws-a suppressed probe_outstanding"]);
    // When it is answered, the next failure asks again.
    assert!(s.at(13.0).probe("ws-a", Running).is_empty());
    assert_eq!(s.at(14.0).upstream_transport("ws-a", "connection reset by peer"), ["ws-a probe? upstream_dead_origin"]);
    // And an unanswered request stops blocking after 5 s.
    assert_eq!(s.at(19.5).upstream("ws-a", 524), ["ws-a probe? upstream_dead_origin"]);
}

#[test]
fn other_upstream_errors_are_not_evidence() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    for status in [500, 404, 429, 520] {
        assert_eq!(s.at(10.0).upstream("ws-a", status), ["ws-a suppressed not_dead_origin"], "{status}");
    }
}

#[test]
fn not_running_with_a_recent_heartbeat_is_only_suspect() {
    // With a 30 s cadence `recent` is 60 s: the seed's fixed 15 s window would have killed this one.
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    assert_eq!(s.at(50.0).probe("ws-a", NotFound), ["ws-a alive->suspect not_running_recent_heartbeat"]);
}

#[test]
fn not_running_right_after_a_restart_is_only_suspect() {
    // A 5 s cadence makes `recent` 15 s, so only the settle window protects the workspace here.
    let mut s = Scenario::new();
    s.at(0.0).heartbeat_every("ws-a", 5);
    s.at(10.0).restart("ws-a", User);
    assert_eq!(s.at(20.0).heartbeat_every("ws-a", 5), ["ws-a restarting->alive restart_completed"]);
    assert_eq!(s.at(40.0).probe("ws-a", NotRunning), ["ws-a alive->suspect not_running_settling"]);
}

#[test]
fn not_running_with_no_recent_heartbeat_is_dead_at_once_and_restarted() {
    // The 2026-04-30 dead VM: the first failed request must lead to recovery.
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    assert_eq!(
        s.at(70.0).probe("ws-a", NotRunning),
        [
            "ws-a alive->dead not_running_no_heartbeat",
            "ws-a dead->restarting restart_issued",
            "ws-a RESTART ws-a:1 system not_running_no_heartbeat #1"
        ]
    );
}

#[test]
fn a_short_cadence_shortens_recent() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat_every("ws-a", 5);
    assert_eq!(s.at(20.0).probe("ws-a", NotFound)[0], "ws-a alive->dead not_running_no_heartbeat");
}

#[test]
fn a_long_cadence_lengthens_the_ttl() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat_every("ws-a", 60);
    assert!(s.at(299.0).tick().is_empty(), "ttl is 5 × 60 s");
    assert_eq!(s.at(301.0).tick()[0], "@300 ws-a alive->suspect heartbeat_timeout");
}

// ---- §3.3 Suspect -----------------------------------------------------------------------------

#[test]
fn a_heartbeat_refutes_suspicion() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    s.at(10.0).probe("ws-a", NotFound);
    assert_eq!(s.at(19.0).heartbeat("ws-a"), ["ws-a suspect->alive refuted"]);
}

#[test]
fn a_running_probe_refutes_suspicion() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    s.at(10.0).probe("ws-a", NotFound);
    assert_eq!(s.at(15.0).probe("ws-a", Running), ["ws-a suspect->alive refuted"]);
}

#[test]
fn a_running_probe_after_a_heartbeat_timeout_restarts_the_silence_clock() {
    // An agent whose heartbeat loop is starved but whose container runs is not dead, and it gets
    // a full ttl again rather than falling straight back into Suspect.
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    s.at(181.0).tick();
    assert_eq!(s.at(181.5).probe("ws-a", Running), ["ws-a suspect->alive refuted"]);
    assert!(s.at(361.0).tick().is_empty());
    assert_eq!(s.at(362.0).tick()[0], "@361.5 ws-a alive->suspect heartbeat_timeout");
}

#[test]
fn a_second_not_running_within_the_confirm_window_is_death() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    s.at(10.0).probe("ws-a", NotFound);
    assert_eq!(
        s.at(35.0).probe("ws-a", NotFound),
        [
            "@20 ws-a probe? not_running_recent_heartbeat",
            "@30 ws-a probe? not_running_recent_heartbeat",
            "ws-a suspect->dead confirmed_not_running",
            "ws-a dead->restarting restart_issued",
            "ws-a RESTART ws-a:1 system confirmed_not_running #1"
        ]
    );
}

#[test]
fn a_second_not_running_after_the_window_restarts_the_count() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    s.at(30.0).heartbeat("ws-a");
    assert_eq!(s.at(40.0).probe("ws-a", NotFound), ["ws-a alive->suspect not_running_recent_heartbeat"]);
    // 35 s after the first: not a confirmation, the count starts again at 1.
    assert_eq!(
        s.at(75.0).probe("ws-a", NotFound),
        [
            "@50 ws-a probe? not_running_recent_heartbeat",
            "@60 ws-a probe? not_running_recent_heartbeat",
            "@70 ws-a probe? not_running_recent_heartbeat",
            "ws-a suppressed awaiting_confirmation"
        ]
    );
    assert_eq!(s.state("ws-a"), Some(StateName::Suspect));
    // 10 s after the new first: confirmed.
    assert_eq!(s.at(85.0).probe("ws-a", NotFound)[0], "ws-a suspect->dead confirmed_not_running");
}

#[test]
fn a_suspect_with_a_stale_heartbeat_still_needs_two_not_runnings_within_the_window() {
    // Suspect on a recent heartbeat; the heartbeat goes stale, but the workspace was never silent
    // for a ttl: a second not-running 40 s after the first starts the count again (SPEC §3.3).
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    s.at(50.0).probe("ws-a", NotFound);
    let out = s.at(90.0).probe("ws-a", NotFound);
    assert_eq!(out.last().unwrap(), "ws-a suppressed awaiting_confirmation");
    assert_eq!(s.at(95.0).probe("ws-a", NotFound)[0], "ws-a suspect->dead confirmed_not_running");
}

#[test]
fn after_a_heartbeat_timeout_one_not_running_is_death() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    s.at(181.0).tick();
    assert_eq!(
        s.at(185.0).probe("ws-a", NotFound),
        [
            "ws-a suspect->dead not_running_no_heartbeat",
            "ws-a dead->restarting restart_issued",
            "ws-a RESTART ws-a:1 system not_running_no_heartbeat #1"
        ]
    );
}

#[test]
fn suspect_re_asks_every_10_s_at_most_3_times() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    assert_eq!(
        s.at(250.0).tick(),
        [
            "@180 ws-a alive->suspect heartbeat_timeout",
            "@180 ws-a probe? heartbeat_timeout",
            "@190 ws-a probe? heartbeat_timeout",
            "@200 ws-a probe? heartbeat_timeout",
            "@210 ws-a probe? heartbeat_timeout"
        ]
    );
    assert!(s.at(600.0).tick().is_empty());
}

#[test]
fn silent_and_unprobeable_for_10_minutes_is_dead_with_an_alert() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    assert_eq!(s.at(215.0).tick().len(), 5, "suspect, and 1 + 3 probe requests");
    for t in [220.0, 400.0, 700.0] {
        assert_eq!(s.at(t).probe_error("ws-a", "context deadline exceeded"), ["ws-a suppressed probe_error_transient"]);
    }
    assert!(s.at(779.0).tick().is_empty());
    assert_eq!(
        s.at(781.0).tick(),
        [
            "@780 ws-a ALERT unprobeable",
            "@780 ws-a suspect->dead unprobeable",
            "@780 ws-a dead->restarting restart_issued",
            "@780 ws-a RESTART ws-a:1 system unprobeable #1"
        ]
    );
}

// ---- §3.3 Dead --------------------------------------------------------------------------------

#[test]
fn a_heartbeat_recovers_a_dead_workspace() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    s.at(70.0).probe("ws-a", NotFound);
    let failed = s.at(80.0).progress("ws-a", "ws-a:1", Failed);
    assert_eq!(failed[0], "ws-a restarting->dead restart_failed");
    assert_eq!(failed[1], "ws-a suppressed restart_debounced", "the next automatic restart waits");
    assert_eq!(s.at(85.0).heartbeat("ws-a"), ["ws-a dead->alive recovered"]);
}

// ---- §3.3 Restarting --------------------------------------------------------------------------

fn restarting(s: &mut Scenario) {
    s.at(0.0).heartbeat_inc("ws-a", "c1");
    s.at(10.0).restart("ws-a", Mutation);
    assert_eq!(s.state("ws-a"), Some(StateName::Restarting));
}

#[test]
fn probes_and_upstream_errors_are_ignored_while_restarting() {
    // 2026-05-19: the restart's own boot window looked exactly like death.
    let mut s = Scenario::new();
    restarting(&mut s);
    for r in [NotFound, NotRunning, Pending] {
        assert_eq!(s.at(15.0).probe("ws-a", r), ["ws-a suppressed restarting"]);
    }
    assert_eq!(s.at(16.0).upstream("ws-a", 502), ["ws-a suppressed restarting"]);
}

#[test]
fn four_system_requests_during_a_restart_add_no_restart() {
    let mut s = Scenario::new();
    restarting(&mut s);
    for t in [15.0, 20.0, 25.0, 30.0] {
        assert_eq!(s.at(t).restart("ws-a", System), ["ws-a suppressed restart_in_flight"]);
    }
    s.at(40.0).heartbeat_inc("ws-a", "c2");
    assert_eq!(s.restarts(), ["ws-a:1 mutation"]);
}

#[test]
fn n_mutation_requests_during_a_restart_owe_exactly_one_follow_up() {
    // 2026-05-20: a burst of file writes; a second secret written mid-restart must still land.
    let mut s = Scenario::new();
    restarting(&mut s);
    for i in 0..7 {
        assert_eq!(s.at(12.0 + f64::from(i)).restart("ws-a", Mutation), ["ws-a suppressed restart_coalesced"]);
    }
    assert_eq!(
        s.at(40.0).heartbeat_inc("ws-a", "c2"),
        [
            "ws-a restarting->alive restart_completed",
            "ws-a alive->restarting restart_issued",
            "ws-a RESTART ws-a:2 mutation mutation_followup #1"
        ]
    );
    assert_eq!(s.at(70.0).heartbeat_inc("ws-a", "c3"), ["ws-a restarting->alive restart_completed"]);
    assert_eq!(s.restarts(), ["ws-a:1 mutation", "ws-a:2 mutation"]);
}

#[test]
fn a_user_restart_supersedes_the_one_in_flight() {
    let mut s = Scenario::new();
    restarting(&mut s);
    assert_eq!(s.at(20.0).restart("ws-a", User), ["ws-a RESTART ws-a:2 user restart_requested #1"]);
    assert_eq!(s.at(21.0).progress("ws-a", "ws-a:1", Started), ["ws-a suppressed stale_restart"]);
    assert!(s.at(22.0).progress("ws-a", "ws-a:2", Started).is_empty());
}

#[test]
fn user_restarts_are_never_dropped() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    for (i, t) in [1.0, 2.0, 3.0].into_iter().enumerate() {
        let out = s.at(t).restart("ws-a", User);
        assert!(out.iter().any(|o| o.contains("RESTART")), "user restart {i}: {out:?}");
    }
    assert_eq!(s.restarts().len(), 3);
}

#[test]
fn only_a_new_incarnation_ends_the_restart() {
    let mut s = Scenario::new();
    restarting(&mut s);
    assert_eq!(s.at(20.0).heartbeat_inc("ws-a", "c1"), ["ws-a suppressed stale_heartbeat"]);
    assert_eq!(s.at(30.0).heartbeat_inc("ws-a", "c2"), ["ws-a restarting->alive restart_completed"]);
}

#[test]
fn without_incarnations_progress_started_marks_fresh_heartbeats() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    s.at(10.0).restart("ws-a", User);
    assert!(s.at(12.0).progress("ws-a", "ws-a:1", Accepted).is_empty());
    assert_eq!(s.at(30.0).heartbeat("ws-a"), ["ws-a suppressed stale_heartbeat"], "accepted is not started");
    assert!(s.at(40.0).progress("ws-a", "ws-a:1", Started).is_empty());
    assert_eq!(s.at(41.0).heartbeat("ws-a"), ["ws-a restarting->alive restart_completed"]);
}

#[test]
fn without_incarnations_or_progress_a_heartbeat_5_s_after_the_command_is_fresh() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    s.at(10.0).restart("ws-a", User);
    assert_eq!(s.at(15.0).heartbeat("ws-a"), ["ws-a suppressed stale_heartbeat"]);
    assert_eq!(s.at(15.5).heartbeat("ws-a"), ["ws-a restarting->alive restart_completed"]);
}

#[test]
fn a_failed_restart_is_dead_with_the_attempt_counted() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    s.at(10.0).restart("ws-a", Mutation);
    let out = s.at(90.0).progress("ws-a", "ws-a:1", Failed);
    assert_eq!(out[0], "ws-a restarting->dead restart_failed");
    assert_eq!(out[1], "ws-a suppressed restart_backoff");
    // The next automatic restart waits 10 s plus a jitter derived from hash(workspace, attempt):
    // 0.468 s here, the same on every run.
    assert_eq!(
        s.at(200.0).tick(),
        ["@100.468 ws-a dead->restarting restart_issued", "@100.468 ws-a RESTART ws-a:2 system restart_failed #2"]
    );
}

#[test]
fn no_fresh_heartbeat_within_12_minutes_fails_the_restart() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    s.at(10.0).restart("ws-a", User);
    assert!(s.at(729.0).tick().is_empty());
    let out = s.at(731.0).tick();
    assert_eq!(out[0], "@730 ws-a restarting->dead restart_timeout");
}

// ---- §3.3 Parked and removal ------------------------------------------------------------------

#[test]
fn pause_from_any_state_parks_and_parked_absorbs_everything_automatic() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-alive");
    s.at(0.0).heartbeat("ws-suspect");
    s.at(10.0).probe("ws-suspect", NotFound);
    s.at(0.0).heartbeat("ws-restarting");
    s.at(10.0).restart("ws-restarting", User);
    for ws in ["ws-alive", "ws-suspect", "ws-restarting"] {
        let from = s.state(ws).unwrap();
        assert_eq!(s.at(15.0).lifecycle(ws, Hibernated), [format!("{ws} {from}->parked hibernated")]);
    }
    assert_eq!(s.at(30.0).heartbeat("ws-alive"), ["ws-alive suppressed parked"]);
    assert_eq!(s.at(30.0).probe("ws-alive", NotFound), ["ws-alive suppressed parked"]);
    assert_eq!(s.at(30.0).upstream("ws-alive", 502), ["ws-alive suppressed parked"]);
    assert_eq!(s.at(30.0).restart("ws-alive", System), ["ws-alive suppressed parked"]);
    // Parked for an hour: no timer fires.
    assert!(s.at(3600.0).tick().is_empty());
    // Resumed: Alive, with a full ttl from now.
    assert_eq!(s.at(3600.0).lifecycle("ws-alive", Resumed), ["ws-alive parked->alive resumed"]);
    assert!(s.at(3779.0).tick().iter().all(|o| !o.starts_with("@3") || !o.contains("ws-alive")));
    assert_eq!(s.engine.view("ws-alive").unwrap().next_deadline, Some(s.t(3780.0)));
}

#[test]
fn a_removed_workspace_stays_removed_until_created_again() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    s.at(70.0).probe("ws-a", NotFound);
    assert_eq!(s.at(80.0).lifecycle("ws-a", Removed), ["ws-a restarting->none removed"]);
    assert_eq!(s.state("ws-a"), None);
    // A zombie agent's heartbeat cannot bring it back to be restarted.
    assert_eq!(s.at(90.0).heartbeat("ws-a"), ["ws-a suppressed removed"]);
    assert_eq!(s.at(91.0).probe("ws-a", NotFound), ["ws-a suppressed removed"]);
    assert_eq!(s.at(92.0).restart("ws-a", User), ["ws-a suppressed removed"]);
    assert_eq!(s.at(100.0).lifecycle("ws-a", Created), ["ws-a none->alive created"]);
    // Its restart ids continue, so a new restart is never de-duplicated as an old one.
    let out = s.at(200.0).probe("ws-a", NotFound);
    assert_eq!(out.last().unwrap(), "ws-a RESTART ws-a:2 system not_running_no_heartbeat #1");
}

#[test]
fn removing_a_workspace_frees_its_restart_slot() {
    let mut s = Scenario::with_policy(Policy { max_restarts_in_flight: 1, ..Policy::default() });
    let ids = fleet(40);
    s.at(0.0).fleet_heartbeat(&ids);
    s.at(70.0).probe("ws-00", NotFound);
    assert_eq!(s.at(71.0).probe("ws-01", NotFound)[1], "ws-01 suppressed restart_queue_full");
    let out = s.at(72.0).lifecycle("ws-00", Removed);
    assert_eq!(
        out,
        [
            "ws-00 restarting->none removed",
            "ws-01 dead->restarting restart_issued",
            "ws-01 RESTART ws-01:1 system not_running_no_heartbeat #1"
        ]
    );
}
