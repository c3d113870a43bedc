//! One given/when/then story per rule of SPEC §3.4 (restart admission: debounce, backoff, the
//! breaker, the concurrency cap), then ids, which events register a workspace, and the engine's
//! clock (§1 `resume`, idempotency). The state machine's own rules are in `rules.rs`.
//!
//! Default policy throughout unless a test says otherwise: a 30 s cadence, so `recent` is 60 s and
//! `ttl` is 180 s. Outputs read `<workspace> <what> <reason>`; `@N` marks an output a timer caused
//! at N seconds, before the input that let the clock reach it.

mod support;

use std::time::Duration;

use support::scenario::{Scenario, fleet};
use vigil::core::Policy;
use vigil::core::event::{
    Heartbeat, Input, InputKind, LifecyclePhase::*, Origin::*, ProbeResult::*, ProgressPhase::*, StateName, WorkspaceId,
};

// ---- §3.4 restart admission -------------------------------------------------------------------

#[test]
fn system_restarts_within_60_s_of_the_last_command_are_dropped() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat_inc("ws-a", "c1");
    s.at(10.0).restart("ws-a", Mutation);
    s.at(40.0).heartbeat_inc("ws-a", "c2");
    assert_eq!(s.at(50.0).restart("ws-a", System), ["ws-a suppressed restart_debounced"]);
    assert_eq!(s.at(69.0).restart("ws-a", System), ["ws-a suppressed restart_debounced"]);
    assert_eq!(s.at(70.0).restart("ws-a", System)[1], "ws-a RESTART ws-a:2 system restart_requested #1");
    // user and mutation restarts are never debounced.
    s.at(100.0).heartbeat_inc("ws-a", "c3");
    assert!(s.at(101.0).restart("ws-a", Mutation).iter().any(|o| o.contains("RESTART ws-a:3")));
    assert!(s.at(102.0).restart("ws-a", User).iter().any(|o| o.contains("RESTART ws-a:4")));
}

/// Drives one crash-loop iteration: the restart in flight fails 70 s after its command, and the
/// next automatic restart is awaited. Returns the backoff the workspace announced, in seconds.
fn fail_and_wait(s: &mut Scenario, t: &mut f64, n: u32) -> u32 {
    let out = s.at(*t + 70.0).progress("ws-a", &format!("ws-a:{n}"), Failed);
    let backoff = s.all.iter().rev().find_map(|o| match &o.body {
        vigil::core::OutputBody::Suppressed { retry_after_s: Some(r), .. } => Some(*r),
        _ => None,
    });
    assert_eq!(out[0], "ws-a restarting->dead restart_failed");
    *t += 70.0 + 400.0;
    s.at(*t).tick();
    backoff.unwrap_or(0)
}

#[test]
fn crash_loop_backoff_doubles_to_a_cap_then_gives_up_until_a_user_restart() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    s.at(70.0).probe("ws-a", NotFound);
    let mut t = 70.0;
    let mut waits = Vec::new();
    for n in 1..=9 {
        waits.push(fail_and_wait(&mut s, &mut t, n));
    }
    // 10 s × 2^(n−1), capped at 5 min, plus up to 10 % jitter.
    for (w, base) in waits.iter().zip([10, 20, 40, 80, 160, 300, 300, 300, 300]) {
        assert!(*w >= base && *w <= base + base / 10 + 1, "waits {waits:?}");
    }
    assert_eq!(s.restarts().len(), 10);
    // The 10th consecutive failure: vigil stops restarting on its own.
    let out = s.at(t + 70.0).progress("ws-a", "ws-a:10", Failed);
    assert_eq!(out, ["ws-a restarting->dead restart_failed", "ws-a ALERT restart_gave_up"]);
    assert!(s.at(t + 5000.0).tick().is_empty());
    assert_eq!(s.at(t + 5001.0).restart("ws-a", System), ["ws-a suppressed restart_pending"]);
    // A person's restart starts afresh.
    assert_eq!(
        s.at(t + 5002.0).restart("ws-a", User),
        ["ws-a dead->restarting restart_issued", "ws-a RESTART ws-a:11 user restart_requested #1"]
    );
}

#[test]
fn the_failure_count_resets_after_10_minutes_alive() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    s.at(70.0).probe("ws-a", NotFound);
    s.at(140.0).progress("ws-a", "ws-a:1", Failed);
    s.at(300.0).tick();
    // The second restart works: Alive again, but the crash-loop count is still 1...
    s.at(310.0).heartbeat("ws-a");
    assert_eq!(s.engine.view("ws-a").unwrap().restart_attempt, 2);
    for t in (340..=940).step_by(30) {
        s.at(f64::from(t)).heartbeat("ws-a");
    }
    // ...until it has been Alive for 10 minutes (and silent past its cadence: overdue).
    let out = s.at(1100.0).probe("ws-a", NotFound);
    assert_eq!(out.last().unwrap(), "ws-a RESTART ws-a:3 system not_running_overdue #1");
}

/// The breaker that counts death declarations: several partitions use it, and a policy with
/// `restart_rate = 0` (one partition's disruption modes are in `tests/disruption.rs`).
fn declaration_breaker() -> Scenario {
    Scenario::with_policy(Policy::default().before_modes())
}

#[test]
fn the_breaker_holds_mass_death_as_suspect_and_after_a_calm_minute_convicts_only_on_a_fresh_silence() {
    // The 2026-04-16 cascade, had the probes lied: six at once is one sick observer.
    let mut s = declaration_breaker();
    let ids = fleet(6);
    s.at(0.0).fleet_heartbeat(&ids);
    for (i, id) in ids.iter().take(3).enumerate() {
        let out = s.at(70.0 + i as f64).probe(id, NotFound);
        assert_eq!(out[0], format!("{id} alive->dead not_running_no_heartbeat"));
    }
    // The 4th automatic declaration within 30 s exceeds max(3, 10 % of 6).
    assert_eq!(
        s.at(73.0).probe("ws-03", NotFound),
        ["fleet ALERT breaker_open", "ws-03 alive->suspect not_running_no_heartbeat", "ws-03 suppressed breaker_open"]
    );
    assert_eq!(
        s.at(74.0).probe("ws-04", NotFound),
        ["ws-04 alive->suspect not_running_no_heartbeat", "ws-04 suppressed breaker_open"]
    );
    // Held: no dead state for a proxy to act on, no restart, not even after ttl.
    assert_eq!(s.at(75.0).probe("ws-04", NotFound), ["ws-04 suppressed breaker_open"]);
    // user and mutation restarts are never held.
    assert!(s.at(76.0).restart("ws-05", User).iter().any(|o| o.contains("RESTART ws-05:1 user")));
    // A held workspace that heartbeats is simply alive again.
    assert_eq!(s.at(80.0).heartbeat("ws-04"), ["ws-04 suspect->alive refuted"]);
    // Declarations at 70–75 s; the window falls to 3 just after 102 s; 60 s of calm later it closes,
    // and the held workspace gets full grace and a fresh probe.
    assert!(s.at(161.0).tick().is_empty());
    assert_eq!(s.at(163.0).tick(), ["@162.001 fleet ALERT breaker_closed", "@162.001 ws-03 probe? breaker_calm"]);
    // Old evidence is forgotten, and the fleet's evidence was just found unreliable: neither the
    // confirm window nor the overdue rule speaks for it now...
    assert_eq!(s.at(170.0).probe("ws-03", NotFound), ["ws-03 suppressed breaker_recently_open"]);
    assert_eq!(
        s.at(175.0).probe("ws-03", NotFound),
        ["@172.001 ws-03 probe? not_running_no_heartbeat", "ws-03 suppressed breaker_recently_open"]
    );
    // ...only silence for a whole ttl since the close, then a definitive probe.
    let quiet = s.at(341.0).tick();
    assert!(quiet.iter().all(|o| !o.contains("ws-03 probe? heartbeat_timeout")), "{quiet:?}");
    assert_eq!(s.at(343.0).tick(), ["@342.001 ws-03 probe? heartbeat_timeout"]);
    let out = s.at(344.0).probe("ws-03", NotFound);
    assert_eq!(out[..2], ["ws-03 suspect->dead not_running_no_heartbeat", "ws-03 dead->restarting restart_issued"]);
    assert!(s.all.iter().all(|o| !s.summary(o, o.at).contains("ws-03 alive->dead")));
}

#[test]
fn restarts_failing_across_the_fleet_trip_the_breaker_and_wait_for_it() {
    // A sick control plane fails every restart at once: the retries must not stampede it.
    let mut s = declaration_breaker();
    let ids = fleet(6);
    s.at(0.0).fleet_heartbeat(&ids);
    for id in &ids {
        s.at(1.0).restart(id, Mutation);
    }
    for id in &ids[..3] {
        assert_eq!(
            s.at(80.0).progress(id, &format!("{id}:1"), Failed)[0],
            format!("{id} restarting->dead restart_failed")
        );
    }
    let out = s.at(80.0).progress("ws-03", "ws-03:1", Failed);
    assert_eq!(
        out[..3],
        ["fleet ALERT breaker_open", "ws-03 restarting->dead restart_failed", "ws-03 suppressed restart_backoff"]
    );
    // Each waits out its backoff, then the breaker: nothing restarts while it is open.
    let out = s.at(150.0).tick();
    assert!(out.iter().all(|o| !o.contains("RESTART")), "{out:?}");
    assert_eq!(out.iter().filter(|o| o.ends_with("suppressed breaker_open")).count(), 4, "{out:?}");
    assert_eq!(s.engine.fleet_view().held, 4);
}

#[test]
fn at_most_max_restarts_in_flight_automatic_restarts_the_rest_queue_in_order() {
    // (The restart rate, step 3, is out of the way: this is step 4.)
    let mut s = Scenario::with_policy(Policy { max_restarts_in_flight: 2, restart_burst: 1000, ..Policy::default() });
    let ids = fleet(40);
    s.at(0.0).fleet_heartbeat(&ids);
    s.at(70.0).probe("ws-00", NotFound);
    s.at(71.0).probe("ws-01", NotFound);
    assert_eq!(
        s.at(72.0).probe("ws-02", NotFound),
        ["ws-02 alive->dead not_running_no_heartbeat", "ws-02 suppressed restart_queue_full"]
    );
    assert_eq!(s.at(73.0).probe("ws-03", NotFound)[1], "ws-03 suppressed restart_queue_full");
    // A user restart does not count against the cap and does not wait.
    assert!(s.at(74.0).restart("ws-10", User).iter().any(|o| o.contains("RESTART")));
    // When the first completes, the oldest queued declaration goes.
    assert_eq!(
        s.at(100.0).heartbeat("ws-00"),
        [
            "ws-00 restarting->alive restart_completed",
            "ws-02 dead->restarting restart_issued",
            "ws-02 RESTART ws-02:1 system not_running_no_heartbeat #1"
        ]
    );
    assert_eq!(s.engine.fleet_view().restart_queue, 1);
}

#[test]
fn restarts_of_workspaces_never_seen_alive_queue_behind_those_that_were() {
    // A flood of invented ids (a probe or a proxy error is enough to be tracked) must not stand in
    // front of a real agent that really died.
    let mut s = Scenario::with_policy(Policy {
        max_restarts_in_flight: 1,
        breaker_min: 1000,
        restart_burst: 1000,
        ..Policy::default()
    });
    s.at(0.0).heartbeat("ws-real");
    s.at(70.0).probe("ws-first", NotFound); // takes the one slot
    for i in 0..5 {
        let out = s.at(71.0).probe(&format!("ws-invented-{i}"), NotFound);
        assert_eq!(out.last().unwrap(), &format!("ws-invented-{i} suppressed restart_queue_full"));
    }
    // Given the real one dies after the five invented ones were queued,
    assert_eq!(s.at(80.0).probe("ws-real", NotFound)[1], "ws-real suppressed restart_queue_full");
    assert_eq!(s.engine.fleet_view().restart_queue, 6);
    // when the slot frees, then the real one goes first, and the invented ones after, in order.
    let out = s.at(100.0).heartbeat("ws-first");
    assert!(out.contains(&"ws-real RESTART ws-real:1 system not_running_no_heartbeat #1".to_string()), "{out:?}");
    let out = s.at(110.0).heartbeat("ws-real");
    assert!(out.iter().any(|o| o.starts_with("ws-invented-0 RESTART")), "{out:?}");
}

// ---- ids --------------------------------------------------------------------------------------

#[test]
fn with_an_id_key_restart_ids_are_tagged_and_progress_must_name_the_tagged_one() {
    let key = vigil::core::ids::IdKey::from_bytes(*b"0123456789abcdef");
    let mut s = Scenario::new();
    s.at(0.0).resume_keyed(key);
    s.at(1.0).heartbeat_inc("ws-a", "c1");
    let out = s.at(10.0).restart("ws-a", User);
    let id = s.engine.view("ws-a").unwrap().restart_in_flight.unwrap();
    assert!(id.starts_with("ws-a:1:") && id.len() == "ws-a:1:".len() + 16, "{id}");
    assert_eq!(out[1], format!("ws-a RESTART {id} user restart_requested #1"));
    // A guess at the plain id is not the restart in flight.
    assert_eq!(s.at(11.0).progress("ws-a", "ws-a:1", Failed), ["ws-a suppressed stale_restart"]);
    assert_eq!(s.at(12.0).progress("ws-a", &id, Failed)[0], "ws-a restarting->dead restart_failed");
}

#[test]
fn a_restart_in_flight_when_the_first_id_key_comes_keeps_its_plain_id() {
    // A data directory from before id keys, upgraded while a restart is in flight.
    let mut s = Scenario::new();
    s.at(0.0).heartbeat_inc("ws-a", "c1");
    s.at(10.0).restart("ws-a", User);
    assert_eq!(s.restarts(), ["ws-a:1 user"]);
    // Given the first key arrives now, the restart in flight keeps the id it was issued with,
    s.at(20.0).resume_keyed(vigil::core::ids::IdKey::from_bytes(*b"0123456789abcdef"));
    assert_eq!(s.engine.view("ws-a").unwrap().restart_in_flight.as_deref(), Some("ws-a:1"));
    // so the provisioner's progress for it still counts,
    assert_eq!(s.at(30.0).progress("ws-a", "ws-a:1", Failed)[0], "ws-a restarting->dead restart_failed");
    // and every later restart's id is tagged (here the automatic retry after the backoff is #2,
    // the user's restart that supersedes it #3).
    s.at(100.0).restart("ws-a", User);
    let later: Vec<String> = s.restarts().into_iter().skip(1).collect();
    assert_eq!(later.len(), 2, "{later:?}");
    for (n, r) in later.iter().enumerate() {
        let prefix = format!("ws-a:{}:", n + 2);
        assert!(r.starts_with(&prefix) && r.split(' ').next().unwrap().len() == prefix.len() + 16, "{r}");
    }
}

/// A heartbeat for `ws` stored at stream position `seq`, `secs` after T0.
fn stored_heartbeat(s: &Scenario, secs: f64, ws: &str, seq: u64) -> Input {
    let workspace = WorkspaceId::parse(ws).unwrap();
    let kind = InputKind::Heartbeat(Heartbeat { workspace, interval_s: None, incarnation: None, active_tasks: None });
    Input { at: s.t(secs), sent_at: None, id: None, stream_seq: Some(seq), kind }
}

fn ids_of(s: &Scenario) -> Vec<String> {
    s.all.iter().map(|o| o.id.clone()).collect()
}

#[test]
fn output_ids_come_from_the_stream_position_of_the_record_that_caused_them() {
    let key = vigil::core::ids::IdKey::from_bytes(*b"0123456789abcdef");
    // Given a keyed log whose records carry their stream positions (gaps are dead-lettered
    // records and records of other kinds),
    let fold = |records: &[(f64, &str, u64)]| {
        let mut s = Scenario::new();
        s.at(0.0).resume_keyed(key);
        for &(secs, ws, seq) in records {
            let input = stored_heartbeat(&s, secs, ws, seq);
            s.apply_input(input);
        }
        s
    };
    let s = fold(&[(1.0, "ws-a", 40), (2.0, "ws-b", 57)]);
    // then each output's id names the position of its cause, not how many records came before,
    let ids = ids_of(&s);
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids[0].starts_with("40.0.") && ids[1].starts_with("57.0."), "{ids:?}");
    // so whoever folds the same records from the same key gives the same ids,
    assert_eq!(ids_of(&fold(&[(1.0, "ws-a", 40), (2.0, "ws-b", 57)])), ids);
    // and a log that counted from 1 (the directory was new) does not repeat them.
    let mut counted = Scenario::new();
    counted.at(0.0).resume_keyed(key);
    counted.at(1.0).heartbeat("ws-a");
    counted.at(2.0).heartbeat("ws-b");
    let counted = ids_of(&counted);
    assert!(counted.iter().all(|id| !ids.contains(id)), "{counted:?} vs {ids:?}");
}

#[test]
fn a_stream_that_starts_again_at_1_never_repeats_an_id_of_the_earlier_one() {
    let key = vigil::core::ids::IdKey::from_bytes(*b"0123456789abcdef");
    let mut s = Scenario::new();
    s.at(0.0).resume_keyed(key);
    // Given a record at position 5 of the input stream,
    let first = stored_heartbeat(&s, 1.0, "ws-a", 5);
    s.apply_input(first);
    // when the stream is deleted and declared again, and positions count from 1 once more,
    for (n, seq) in (1..=5).enumerate() {
        let again = stored_heartbeat(&s, 2.0 + n as f64, &format!("ws-{n}"), seq);
        s.apply_input(again);
    }
    // then position 5 of the new stream gives its output another id than position 5 of the old.
    let ids = ids_of(&s);
    let at_5: Vec<&String> = ids.iter().filter(|id| id.starts_with("5.0.")).collect();
    assert_eq!(at_5.len(), 2, "{ids:?}");
    assert_ne!(at_5[0], at_5[1]);
}

// ---- admission: which events register a workspace --------------------------------------------

#[test]
fn with_lifecycle_registration_only_lifecycle_created_adds_a_workspace() {
    let policy = Policy { registration: vigil::core::policy::Registration::Lifecycle, ..Policy::default() };
    let mut s = Scenario::with_policy(policy);
    // Given events about a workspace the provisioner never created, none of them tracks it:
    assert_eq!(s.at(0.0).heartbeat("ws-invented"), ["ws-invented suppressed unknown_workspace"]);
    assert_eq!(s.at(1.0).probe("ws-invented", NotFound), ["ws-invented suppressed unknown_workspace"]);
    assert_eq!(s.at(2.0).upstream("ws-invented", 502), ["ws-invented suppressed unknown_workspace"]);
    assert_eq!(s.at(3.0).restart("ws-invented", User), ["ws-invented suppressed unknown_workspace"]);
    assert_eq!(s.at(4.0).lifecycle("ws-invented", Paused), ["ws-invented suppressed unknown_workspace"]);
    assert_eq!(s.engine.len(), 0);
    // nor is its idempotency key remembered (a flood of them would be memory a stranger controls).
    let mut beat = s.inputs[0].clone();
    (beat.at, beat.id) = (s.t(5.0), Some("hb-1".into()));
    assert_eq!(s.apply_input(beat), ["ws-invented suppressed unknown_workspace"]);
    assert!(s.engine.fleet_record().dedup.is_empty());
    // when the provisioner creates it, then it is tracked and handled like any other.
    assert_eq!(s.at(10.0).lifecycle("ws-invented", Created), ["ws-invented none->alive created"]);
    assert!(s.at(11.0).heartbeat("ws-invented").is_empty());
    assert_eq!(s.state("ws-invented"), Some(StateName::Alive));
}

#[test]
fn would_add_says_exactly_which_inputs_add_a_workspace() {
    use vigil::core::policy::Registration;
    // For every kind of input and both registrations, asking first agrees with applying.
    for registration in [Registration::Open, Registration::Lifecycle] {
        let kinds: Vec<fn(&mut Scenario) -> Vec<String>> = vec![
            |s| s.heartbeat("ws-x"),
            |s| s.probe("ws-x", NotFound),
            |s| s.probe("ws-x", Running),
            |s| s.upstream("ws-x", 502),
            |s| s.restart("ws-x", System),
            |s| s.progress("ws-x", "ws-x:1", Started),
            |s| s.lifecycle("ws-x", Created),
            |s| s.lifecycle("ws-x", Paused),
            |s| s.lifecycle("ws-x", Resumed),
            |s| s.lifecycle("ws-x", Removed),
        ];
        for (n, apply) in kinds.iter().enumerate() {
            let mut s = Scenario::with_policy(Policy { registration, ..Policy::default() });
            let mut probe = Scenario::with_policy(Policy { registration, ..Policy::default() });
            apply(&mut probe);
            let input = probe.last_input();
            let predicted = s.engine.would_add(&input);
            s.apply_input(input);
            assert_eq!(predicted, s.engine.len() == 1, "{registration:?}, input {n}");
        }
    }
}

// ---- §1 resume, idempotency, and the engine's clock -----------------------------------------

#[test]
fn silence_vigil_did_not_observe_is_not_evidence() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    // vigil was down; it comes back at 170 s and re-arms everything from there.
    assert!(s.at(170.0).resume().is_empty());
    assert!(s.at(340.0).tick().is_empty());
    assert_eq!(s.at(351.0).tick()[0], "@350 ws-a alive->suspect heartbeat_timeout");
}

#[test]
fn deadlines_that_passed_while_vigil_was_away_do_not_fire_on_resume() {
    // Down for 20 minutes: long enough for a TTL, ten minutes of unprobeable, a restart timeout.
    let mut s = Scenario::new();
    for ws in ["ws-a", "ws-b", "ws-c"] {
        s.at(0.0).heartbeat(ws);
    }
    s.at(10.0).restart("ws-c", User);
    assert!(s.at(1200.0).resume().is_empty(), "nothing expires at once when vigil comes back");
    assert_eq!(s.state("ws-a"), Some(StateName::Alive));
    assert_eq!(s.state("ws-c"), Some(StateName::Restarting));
    // Each gets a full ttl (or restart timeout) from the resume.
    assert!(s.at(1379.0).tick().is_empty());
    assert_eq!(s.at(1381.0).tick()[0], "@1380 ws-a alive->suspect heartbeat_timeout");
    assert_eq!(s.engine.view("ws-c").unwrap().next_deadline, Some(s.t(1200.0 + 720.0)));
}

/// A service's log: a tick every second from `from` to `to` (inclusive), deciding nothing.
fn watched(s: &mut Scenario, from: u32, to: u32) {
    for t in from..=to {
        assert_eq!(s.at(f64::from(t)).tick(), Vec::<String>::new(), "at {t}");
    }
}

#[test]
fn in_a_log_that_promises_a_record_every_second_a_silent_stretch_is_time_nobody_watched() {
    let mut s = Scenario::new();
    s.at(0.0).resume_watched(5000);
    s.at(0.0).heartbeat("ws-a");
    watched(&mut s, 1, 100);
    // NATS is down from 100 s to 200 s: nothing reaches the log. The first record after the
    // outage moves every deadline 100 s later, and says so.
    let after = s.at(200.0).tick();
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(after[0].contains("unwatched"), "{after:?}");
    // ws-a was silent for 100 watched seconds before and keeps counting after: 180 s of ttl end
    // at 280 s, not at 180 s (mid-outage) nor at 380 s (a full ttl from the outage's end).
    watched(&mut s, 201, 279);
    assert_eq!(s.at(281.0).tick()[0], "@280 ws-a alive->suspect heartbeat_timeout");
}

#[test]
fn in_such_a_log_a_restart_of_vigil_re_arms_nothing_the_silence_observed_counts() {
    let mut s = Scenario::new();
    s.at(0.0).resume_watched(5000);
    s.at(0.0).heartbeat("ws-a");
    watched(&mut s, 1, 90);
    // vigil restarts within a second: its resume grants no new ttl.
    assert!(s.at(91.0).resume_watched(5000).is_empty());
    watched(&mut s, 92, 179);
    assert_eq!(s.at(181.0).tick()[0], "@180 ws-a alive->suspect heartbeat_timeout");
}

#[test]
fn a_heartbeat_that_ends_an_outage_fires_no_deadline_that_passed_during_it() {
    let mut s = Scenario::new();
    s.at(0.0).resume_watched(5000);
    s.at(0.0).heartbeat("ws-a");
    s.at(0.0).heartbeat("ws-b");
    watched(&mut s, 1, 100);
    // The first record after the outage is ws-b's heartbeat, past ws-a's deadline of 180 s:
    // the gap is excluded before anything fires, so ws-a is not suspected for it.
    let out = s.at(250.0).heartbeat("ws-b");
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out[0].contains("unwatched"), "{out:?}");
    assert_eq!(s.state("ws-a"), Some(StateName::Alive));
}

#[test]
fn in_a_log_from_before_the_promise_a_silent_stretch_is_just_time() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    assert_eq!(s.at(181.0).tick()[0], "@180 ws-a alive->suspect heartbeat_timeout");
}

#[test]
fn a_repeated_id_within_the_dedup_window_is_applied_once() {
    use vigil::core::event::{Input, InputKind, RestartRequested, WorkspaceId};
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-a");
    let req = |t: f64, s: &Scenario| Input {
        at: s.t(t),
        sent_at: None,
        id: Some("req-1".into()),
        stream_seq: None,
        kind: InputKind::RestartRequested(RestartRequested {
            workspace: WorkspaceId::parse("ws-a").unwrap(),
            origin: User,
            reason: "clicked restart".into(),
            request_id: None,
        }),
    };
    let first = req(10.0, &s);
    assert!(s.apply_input(first).iter().any(|o| o.contains("RESTART ws-a:1")));
    let again = req(20.0, &s);
    assert_eq!(s.apply_input(again), ["ws-a suppressed duplicate"]);
    let later = req(10.0 + Duration::from_secs(121).as_secs_f64(), &s);
    assert!(s.apply_input(later).iter().any(|o| o.contains("RESTART ws-a:2")));
}

#[test]
fn timers_fire_in_deadline_order_before_a_later_event_ties_by_workspace_id() {
    let mut s = Scenario::new();
    s.at(0.0).heartbeat("ws-b");
    s.at(0.0).heartbeat("ws-a");
    s.at(1.0).heartbeat("ws-0");
    assert_eq!(
        s.at(182.0).heartbeat("ws-c"),
        [
            "@180 ws-a alive->suspect heartbeat_timeout",
            "@180 ws-a probe? heartbeat_timeout",
            "@180 ws-b alive->suspect heartbeat_timeout",
            "@180 ws-b probe? heartbeat_timeout",
            "@181 ws-0 alive->suspect heartbeat_timeout",
            "@181 ws-0 probe? heartbeat_timeout",
            "ws-c none->alive first_seen"
        ]
    );
}

#[test]
fn an_event_stamped_in_the_past_does_not_move_the_clock_back() {
    let mut s = Scenario::new();
    s.at(100.0).heartbeat("ws-a");
    // A late-stamped event is applied at the engine's clock, never before it.
    s.at(50.0).heartbeat("ws-b");
    assert_eq!(s.engine.view("ws-b").unwrap().since, s.t(100.0));
}
