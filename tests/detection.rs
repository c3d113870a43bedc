//! Stories for SPEC §3.2–3.3's adaptive suspicion: a heartbeat is *overdue* once it is later than
//! the workspace's own learned cadence makes probable (phi accrual), vigil asks at once, and a
//! heartbeat on schedule outweighs any probe.
//!
//! Default policy (φ threshold 8, σ at least 500 ms, no acceptable pause, 4 samples of history).
//! A workspace that heartbeats exactly every 30 s for ten minutes has learned σ down to the floor,
//! so its next heartbeat is overdue 30 s + 5.226 × 0.5 s = 32.613 s after the last one.

mod support;

use support::scenario::Scenario;
use vigil::core::Policy;
use vigil::core::event::{Origin::*, ProbeResult::*, ProgressPhase::*};

/// Given `id` heartbeating every 30 s from `from` for ten minutes (21 beats); returns the time of
/// the last one.
fn steady(s: &mut Scenario, id: &str, from: f64) -> f64 {
    for i in 0..=20 {
        s.at(from + 30.0 * f64::from(i)).heartbeat(id);
    }
    from + 600.0
}

fn today() -> Policy {
    Policy { phi_threshold: 0.0, ..Policy::default() }
}

#[test]
fn a_regular_heartbeater_that_falls_silent_is_asked_about_long_before_the_ttl() {
    let mut s = Scenario::new();
    let last = steady(&mut s, "ws-a", 0.0);
    // When the heartbeat due at 630 s does not come, vigil asks 2.6 s later — not at 780 s (ttl).
    assert!(s.at(last + 32.0).tick().is_empty());
    assert_eq!(
        s.at(last + 33.0).tick(),
        ["@632.613 ws-a alive->suspect heartbeat_overdue", "@632.613 ws-a probe? heartbeat_overdue"]
    );
    // Then silence and a definitive probe agree: no confirm wait.
    assert_eq!(
        s.at(last + 34.0).probe("ws-a", NotRunning),
        [
            "ws-a suspect->dead not_running_overdue",
            "ws-a dead->restarting restart_issued",
            "ws-a RESTART ws-a:1 system not_running_overdue #1"
        ]
    );
}

#[test]
fn lying_probes_never_convict_a_workspace_whose_heartbeats_arrive_on_schedule() {
    // The fleet check: for 90 s every probe says not_found, one every 10 s, while the
    // workspace heartbeats every 30 s. Today's rules convict on the second (10 s later, within the
    // confirm window) although a heartbeat came 15 s before and comes again 15 s later.
    let mut s = Scenario::new();
    let last = steady(&mut s, "ws-a", 0.0);
    let first = s.at(last + 15.0).probe("ws-a", NotFound);
    assert_eq!(first, ["ws-a alive->suspect not_running_recent_heartbeat", "ws-a suppressed heartbeat_on_schedule"]);
    let mut next_beat = last + 30.0;
    for k in 1..9 {
        let t = last + 15.0 + 10.0 * f64::from(k);
        if next_beat < t {
            // The heartbeat on schedule refutes the suspicion...
            assert_eq!(s.at(next_beat).heartbeat("ws-a").last().unwrap(), "ws-a suspect->alive refuted");
            next_beat += 30.0;
        }
        // ...and no number of not-founds convicts: each is suppressed, saying why.
        let out = s.at(t).probe("ws-a", NotFound);
        assert!(out.last().unwrap().ends_with("suppressed heartbeat_on_schedule"), "{t}: {out:?}");
        assert!(!out.iter().any(|o| o.contains("RESTART") || o.contains("dead")), "{t}: {out:?}");
    }
    assert!(s.restarts().is_empty());

    // Given today's policy (the rule off), the second not-found within 30 s restarts it.
    let mut old = Scenario::with_policy(today());
    steady(&mut old, "ws-a", 0.0);
    old.at(last + 15.0).probe("ws-a", NotFound);
    let out = old.at(last + 25.0).probe("ws-a", NotFound);
    assert!(out.contains(&"ws-a suspect->dead confirmed_not_running".to_string()), "{out:?}");
}

#[test]
fn a_paused_agent_is_asked_about_and_a_running_probe_ends_it() {
    // A 30 s GC pause: overdue, asked, the provisioner says running, and the late heartbeat is
    // learned only as late as the overdue time it came after.
    let mut s = Scenario::new();
    let last = steady(&mut s, "ws-a", 0.0);
    s.at(last + 33.0).tick();
    assert_eq!(s.at(last + 34.0).probe("ws-a", Running), ["ws-a suspect->alive refuted"]);
    // Silence counts again from the running probe: the next overdue is 32.6 s after it.
    assert!(s.at(last + 59.0).tick().is_empty());
    assert_eq!(s.at(last + 60.0).heartbeat("ws-a"), Vec::<String>::new());
    assert!(s.restarts().is_empty());
    // One long pause moved the cadence little: the next missed heartbeat is asked about within
    // a few seconds of 30 s again.
    let out = s.at(last + 60.0 + 40.0).tick();
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out[0].ends_with("ws-a alive->suspect heartbeat_overdue"), "{out:?}");
}

#[test]
fn suspect_on_a_probe_then_overdue_asks_again_and_the_answer_convicts() {
    // A death between two heartbeats, noticed by a proxy (502) and a probe while the heartbeats
    // are still on schedule: vigil waits for the heartbeat that does not come, then asks once more.
    let mut s = Scenario::new();
    let last = steady(&mut s, "ws-a", 0.0);
    assert_eq!(s.at(last + 12.0).upstream("ws-a", 502), ["ws-a probe? upstream_dead_origin"]);
    s.at(last + 13.0).probe("ws-a", NotRunning);
    let out = s.at(last + 33.0).tick();
    assert!(out.contains(&"@632.613 ws-a probe? heartbeat_overdue".to_string()), "{out:?}");
    assert_eq!(s.at(last + 34.0).probe("ws-a", NotRunning)[0], "ws-a suspect->dead not_running_overdue");
}

#[test]
fn without_enough_history_todays_rules_apply() {
    // Three heartbeats are two inter-arrivals: not enough to know the cadence (4 needed).
    let mut s = Scenario::new();
    for t in [0.0, 30.0, 60.0] {
        s.at(t).heartbeat("ws-a");
    }
    assert!(s.at(120.0).tick().is_empty(), "no overdue without history");
    assert_eq!(s.at(70.0 + 50.0).probe("ws-a", NotFound)[0], "ws-a alive->suspect not_running_recent_heartbeat");
    let out = s.at(130.0).probe("ws-a", NotFound);
    assert!(out.contains(&"ws-a suspect->dead confirmed_not_running".to_string()), "{out:?}");
}

#[test]
fn time_nobody_watched_is_not_learned_and_not_overdue() {
    // vigil was down for 15 minutes: when it comes back the silence is measured from its resume,
    // and the 15-minute inter-arrival is not a sample.
    let mut s = Scenario::new();
    let last = steady(&mut s, "ws-a", 0.0);
    let back = last + 900.0;
    assert!(s.at(back).resume().iter().all(|o| !o.contains("suspect")));
    assert!(s.at(back + 30.0).tick().is_empty(), "overdue is measured from the resume");
    assert_eq!(
        s.at(back + 33.0).tick(),
        ["@1532.613 ws-a alive->suspect heartbeat_overdue", "@1532.613 ws-a probe? heartbeat_overdue"]
    );
    s.at(back + 34.0).heartbeat("ws-a");
    assert_eq!(s.at(back + 34.0 + 33.0).tick().len(), 2, "the cadence is still ~30 s: the gap was not learned");
}

#[test]
fn a_restart_does_not_teach_its_boot_time() {
    let mut s = Scenario::new();
    let last = steady(&mut s, "ws-a", 0.0);
    s.at(last + 5.0).restart("ws-a", User);
    s.at(last + 6.0).progress("ws-a", "ws-a:1", Started);
    // The new incarnation heartbeats 2 minutes after the last heartbeat of the old one.
    assert_eq!(s.at(last + 120.0).heartbeat_inc("ws-a", "boot-2"), ["ws-a restarting->alive restart_completed"]);
    s.at(last + 150.0).heartbeat_inc("ws-a", "boot-2");
    // Overdue 32.6 s after that, as before: the boot's 2 minutes were not learned.
    assert!(s.at(last + 182.0).tick().is_empty());
    assert_eq!(s.at(last + 183.0).tick().len(), 2);
}

#[test]
fn a_flaky_probe_right_after_a_restart_is_outweighed_by_the_fresh_heartbeats() {
    // The 2026-06-15 flake, with history: the restarted agent heartbeats; one not-running probe
    // and then another 10 s later would have confirmed death under today's rules.
    let mut s = Scenario::new();
    let last = steady(&mut s, "ws-a", 0.0);
    s.at(last + 5.0).restart("ws-a", User);
    s.at(last + 25.0).heartbeat_inc("ws-a", "boot-2");
    let out = s.at(last + 30.0).probe("ws-a", NotRunning);
    assert_eq!(out, ["ws-a alive->suspect not_running_recent_heartbeat", "ws-a suppressed heartbeat_on_schedule"]);
    // Nothing is re-asked while the heartbeats are on schedule: no answer could convict.
    assert_eq!(s.at(last + 40.0).probe("ws-a", NotRunning), ["ws-a suppressed heartbeat_on_schedule"]);
    assert_eq!(s.at(last + 55.0).heartbeat_inc("ws-a", "boot-2").last().unwrap(), "ws-a suspect->alive refuted");
}

#[test]
fn a_new_promised_cadence_is_learned_afresh() {
    // The agent now promises 60 s: what it learned at 30 s no longer says when it is late.
    let mut s = Scenario::new();
    let last = steady(&mut s, "ws-a", 0.0);
    s.at(last + 30.0).heartbeat_every("ws-a", 30);
    s.at(last + 60.0).heartbeat_every("ws-a", 60);
    assert!(s.at(last + 60.0 + 50.0).tick().is_empty(), "not overdue at 30 s-cadence times any more");
}

#[test]
fn the_ttl_stays_the_hard_bound() {
    // An agent that heartbeats every 4 minutes under the default 30 s cadence (ttl 180 s): what
    // it taught vigil would be overdue only after 240 s, but the ttl still counts silence first.
    let mut s = Scenario::new();
    for i in 0..8 {
        s.at(240.0 * f64::from(i)).heartbeat("ws-a");
    }
    let out = s.at(1680.0 + 181.0).tick();
    assert_eq!(out[0], "@1860 ws-a alive->suspect heartbeat_timeout", "{out:?}");
}
