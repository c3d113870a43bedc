//! Properties of the engine over random event streams (proptest).
//!
//! The rule tests show each rule on a chosen story; these check what must hold for *every* story:
//! (a) replay is deterministic, also through the JSONL encoding; (b) transient probe errors alone
//! never restart anything; (c) no workspace ever has two automatic restarts in flight, and the fleet
//! never exceeds its cap; (d) no stream — valid or garbage — panics the engine; (e)–(g) restored,
//! checkpointed and tombstones-on-disk engines decide like the original. Every stream is also
//! checked for the outputs' own consistency (state changes chain, time never runs backwards, ids are
//! unique). Debug assertions are on in tests, so an engine invariant that breaks panics here too.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use support::streams::{Mix, T0, stream, with_regular_heartbeats};
use vigil::core::event::*;
use vigil::core::wire::{self, Stamping};
use vigil::core::{At, Engine, Policy};

fn fold(policy: &Policy, inputs: &[Input]) -> Vec<Output> {
    let mut engine = Engine::new(policy.clone());
    let mut out = Vec::new();
    for input in inputs {
        engine.apply(input, &mut out);
    }
    out
}

/// Consistency every output stream must have, whatever the inputs.
fn check_outputs(outputs: &[Output]) -> Result<(), TestCaseError> {
    let mut state: BTreeMap<String, Option<StateName>> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    let mut last_at = At(i64::MIN);
    for o in outputs {
        prop_assert!(o.at >= last_at, "time ran backwards at {}", o.id);
        last_at = o.at;
        prop_assert!(ids.insert(o.id.clone()), "duplicate output id {}", o.id);
        if let (OutputBody::StateChanged { from, to, .. }, Some(ws)) = (&o.body, &o.workspace) {
            let current = state.get(ws.as_str()).copied().flatten();
            prop_assert_eq!(*from, current, "state change out of chain for {}", ws);
            prop_assert_ne!(from, to, "a state change that changes nothing");
            state.insert(ws.to_string(), *to);
        }
    }
    Ok(())
}

const WORKSPACE_COUNT: usize = 3;

/// Every probe a provisioner, sick or lying, can send.
const PROBE_KINDS: &[(ProbeResult, Option<&str>)] = &[
    (ProbeResult::NotFound, None),
    (ProbeResult::NotRunning, None),
    (ProbeResult::Running, None),
    (ProbeResult::Pending, None),
    (ProbeResult::Error, Some("Error: No such container: ws")),
    (ProbeResult::Error, Some("Cannot connect to the Docker daemon at unix:///var/run/docker.sock")),
];

/// `WORKSPACE_COUNT` workspaces heartbeating every 30 s (each beat `jitter[i]` ms off its slot):
/// ten minutes of history, then twenty more minutes during which `probes` (at ms after the
/// history, for a workspace, of a kind) arrive as well. Everything in time order.
fn on_schedule_with_probes(jitter: &[i64], probes: &[(i64, usize, usize)]) -> Vec<Input> {
    let input = |at: i64, kind: InputKind| Input { at: At(at), sent_at: None, id: None, stream_seq: None, kind };
    let ws = |i: usize| WorkspaceId::parse(&format!("ws-{i}")).unwrap();
    let mut timed: Vec<(i64, usize, Input)> = Vec::new();
    for w in 0..WORKSPACE_COUNT {
        for (k, j) in jitter.iter().enumerate() {
            let at = T0 + 30_000 * k as i64 + 1_000 + j + w as i64 * 7_000;
            let hb = Heartbeat { workspace: ws(w), interval_s: None, incarnation: None, active_tasks: None };
            timed.push((at, timed.len(), input(at, InputKind::Heartbeat(hb))));
        }
    }
    for (offset, w, kind) in probes {
        let at = T0 + 600_000 + offset;
        let (result, error) = PROBE_KINDS[*kind];
        let probe =
            Probe { workspace: ws(*w), result, error: error.map(str::to_string), backend: None, probe_id: None };
        timed.push((at, timed.len(), input(at, InputKind::Probe(probe))));
    }
    timed.sort_by_key(|(at, n, _)| (*at, *n));
    timed.into_iter().map(|(_, _, i)| i).collect()
}

fn jsonl(outputs: &[Output]) -> String {
    vigil::replay::to_jsonl(outputs)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// (a) The same log always gives the same bytes, also after a trip through its JSONL form.
    #[test]
    fn replay_is_deterministic(inputs in stream(Mix { definitive: true, requests: true, lifecycle: true }, 40_000, 1..300)) {
        let policy = Policy::default();
        let first = fold(&policy, &inputs);
        check_outputs(&first)?;
        prop_assert_eq!(jsonl(&first), jsonl(&fold(&policy, &inputs)));
        // Settling stale timers between inputs (what the service does before it sleeps) changes
        // no decision.
        let mut settled = Engine::new(policy.clone());
        let mut out = Vec::new();
        for input in &inputs {
            settled.apply(input, &mut out);
            settled.settle_next_deadline();
        }
        prop_assert_eq!(jsonl(&first), jsonl(&out));
        let exported: Vec<Input> = inputs
            .iter()
            .map(|i| wire::decode_json(&wire::encode_json(i), Stamping::Logged).unwrap())
            .collect();
        prop_assert_eq!(jsonl(&first), jsonl(&fold(&policy, &exported)));
    }

    /// (b) With heartbeats arriving, no amount of transient probe errors, pending or running
    /// probes, upstream errors, ticks or restarts of vigil itself causes a restart or a suspicion
    /// — other than asking about a heartbeat later than its cadence made probable (the random
    /// heartbeats among the inputs teach an irregular one), which is not evidence of anything.
    #[test]
    fn transient_probe_errors_alone_never_restart(inputs in stream(Mix { definitive: false, requests: false, lifecycle: false }, 3_000, 1..400)) {
        let out = fold(&Policy::default(), &with_regular_heartbeats(&inputs, 60_000));
        check_outputs(&out)?;
        for o in &out {
            prop_assert!(!matches!(o.body, OutputBody::Restart { .. }), "restart: {:?}", o);
            prop_assert!(!matches!(o.body, OutputBody::StateChanged { to: Some(StateName::Dead), .. }), "{:?}", o);
            if let OutputBody::StateChanged { to: Some(StateName::Suspect), reason, .. } = o.body {
                prop_assert_eq!(reason, Reason::HeartbeatOverdue, "{:?}", o);
            }
        }
    }

    /// (b'') A heartbeat on schedule outweighs any probe: once a workspace's cadence is learned,
    /// no sequence of probe results — any result, any error text, at any times — convicts it while
    /// its heartbeats keep arriving on schedule (every 30 s, up to a second early or late).
    #[test]
    fn probes_alone_never_convict_a_workspace_heartbeating_on_schedule(
        jitter in prop::collection::vec(-1_000i64..=1_000, 60),
        probes in prop::collection::vec((0i64..1_200_000, 0usize..WORKSPACE_COUNT, 0usize..PROBE_KINDS.len()), 1..200),
    ) {
        let out = fold(&Policy::default(), &on_schedule_with_probes(&jitter, &probes));
        check_outputs(&out)?;
        for o in &out {
            prop_assert!(!matches!(o.body, OutputBody::Restart { .. }), "restart: {:?}", o);
            prop_assert!(!matches!(o.body, OutputBody::StateChanged { to: Some(StateName::Dead), .. }), "{:?}", o);
        }
    }

    /// (b') Even through long silences: without definitive evidence or a request, the only road to
    /// a restart is `unprobeable` — silent for ttl and then unprobeable for ten more minutes.
    #[test]
    fn without_definitive_evidence_only_unprobeable_restarts(inputs in stream(Mix { definitive: false, requests: false, lifecycle: false }, 400_000, 1..200)) {
        let out = fold(&Policy::default(), &inputs);
        check_outputs(&out)?;
        let mut unprobeable = BTreeSet::new();
        for o in &out {
            if let (OutputBody::Restart { reason, .. }, Some(ws)) = (&o.body, &o.workspace) {
                match reason {
                    Reason::Unprobeable => {
                        unprobeable.insert(ws.clone());
                    }
                    // A retry of a restart that did not come back is fine, if it began as unprobeable.
                    Reason::RestartTimeout | Reason::RestartFailed => prop_assert!(unprobeable.contains(ws), "{:?}", o),
                    other => prop_assert!(false, "restart for {}: {:?}", other, o),
                }
            }
        }
    }

    /// (c) No workspace ever has two automatic restarts in flight, and the fleet never has more
    /// than `max_restarts_in_flight` automatic restarts running.
    #[test]
    fn never_two_system_restarts_in_flight(inputs in stream(Mix { definitive: true, requests: true, lifecycle: true }, 60_000, 1..400)) {
        let policy = Policy { max_restarts_in_flight: 2, ..Policy::default() };
        let out = fold(&policy, &inputs);
        check_outputs(&out)?;
        // The origin of the restart each workspace is in, if it is restarting.
        let mut in_flight: BTreeMap<String, Origin> = BTreeMap::new();
        for o in &out {
            let ws = o.workspace.as_ref().map(|w| w.to_string()).unwrap_or_default();
            match &o.body {
                OutputBody::StateChanged { from: Some(StateName::Restarting), to, .. } if *to != Some(StateName::Restarting) => {
                    in_flight.remove(&ws);
                }
                OutputBody::Restart { origin, restart_id, .. } => {
                    if *origin == Origin::System {
                        prop_assert!(!in_flight.contains_key(&ws), "{} issued while {} was already restarting", restart_id, ws);
                    }
                    in_flight.insert(ws, *origin);
                    let automatic = in_flight.values().filter(|o| **o == Origin::System).count();
                    prop_assert!(automatic as u32 <= policy.max_restarts_in_flight, "{} automatic restarts in flight", automatic);
                }
                _ => {}
            }
        }
    }

    /// (e) An engine restored from a checkpoint taken at any point (its records through MessagePack,
    /// as the store writes them) goes on exactly as the original: same outputs, same final state.
    #[test]
    fn a_restored_engine_continues_exactly_like_the_original(
        inputs in stream(Mix { definitive: true, requests: true, lifecycle: true }, 60_000, 1..300),
        cut in any::<prop::sample::Index>(),
    ) {
        use vigil::core::snapshot::{FleetRecord, WorkspaceRecord};
        let policy = Policy { max_restarts_in_flight: 2, ..Policy::default() };
        let k = cut.index(inputs.len() + 1);
        let mut original = Engine::new(policy.clone());
        let mut head = Vec::new();
        for input in &inputs[..k] {
            original.apply(input, &mut head);
        }
        let fleet: FleetRecord = rmp_serde::from_slice(&rmp_serde::to_vec_named(&original.fleet_record()).unwrap()).unwrap();
        let records: Vec<(WorkspaceId, WorkspaceRecord)> =
            rmp_serde::from_slice(&rmp_serde::to_vec(&original.records()).unwrap()).unwrap();
        let mut restored = Engine::restore(policy, fleet, records).unwrap();
        *restored.tombstones_mut() = original.tombstones().clone();
        prop_assert_eq!(restored.digest(), original.digest());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for input in &inputs[k..] {
            original.apply(input, &mut a);
            restored.apply(input, &mut b);
        }
        prop_assert_eq!(jsonl(&a), jsonl(&b));
        prop_assert_eq!(original.digest(), restored.digest());
    }

    /// (f) Checkpoints written incrementally — only the slab chunks that changed since the last
    /// one — add up to the engine's full state, whatever the cut points and chunk size.
    #[test]
    fn incremental_checkpoints_add_up_to_the_full_state(
        inputs in stream(Mix { definitive: true, requests: true, lifecycle: true }, 60_000, 1..300),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
        size in 1usize..5,
    ) {
        let mut engine = Engine::new(Policy::default());
        let mut stored: BTreeMap<u32, Vec<_>> = BTreeMap::new();
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(inputs.len() + 1)).collect();
        points.push(inputs.len());
        points.sort();
        let (mut done, mut out) = (0, Vec::new());
        for point in points {
            for input in &inputs[done..point] {
                engine.apply(input, &mut out);
            }
            done = point;
            let chunks = engine.take_dirty_chunks(size, false);
            stored.extend(chunks.chunks);
            stored.retain(|k, _| *k < chunks.count);
        }
        let mut all: Vec<_> = stored.into_values().flatten().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        prop_assert_eq!(all, engine.records());
    }

    /// (g) An engine whose tombstones live "on disk" (here a map the test keeps, as the store keeps
    /// sled), driven group by group with `try_apply_batch` — stopping for each tombstone it has no
    /// word on and going on from there — decides exactly what an engine holding all of its
    /// tombstones decides, whatever the group sizes (across the prefetch chunks' edges).
    #[test]
    fn an_engine_with_tombstones_on_disk_decides_like_one_without(
        inputs in stream(Mix { definitive: true, requests: true, lifecycle: true }, 60_000, 1..300),
        sizes in prop::collection::vec(1usize..80, 1..12),
    ) {
        let policy = Policy::default();
        let expected = fold(&policy, &inputs);
        let mut engine = Engine::new(policy);
        engine.tombstones_mut().keep_on_disk();
        let mut disk = BTreeMap::new();
        let (mut out, mut done, mut stops) = (Vec::new(), 0, 0);
        for size in sizes.iter().cycle() {
            if done == inputs.len() {
                break;
            }
            let group = &inputs[done..(done + size).min(inputs.len())];
            let mut from = 0;
            while let Err(needs) = engine.try_apply_batch(group, from, &mut out) {
                prop_assert!(needs.applied >= from && needs.applied < group.len());
                let found = disk.get(&needs.workspace).cloned();
                engine.tombstones_mut().load(needs.workspace, found);
                from = needs.applied;
                stops += 1;
            }
            engine.tombstones_mut().forget_loaded();
            for (ws, t) in engine.tombstones_mut().take_changed() {
                match t {
                    Some(t) => disk.insert(ws, t),
                    None => disk.remove(&ws),
                };
            }
            done += group.len();
        }
        prop_assert!(stops > 0 || inputs.iter().all(|i| i.kind.workspace().is_none()));
        prop_assert_eq!(jsonl(&out), jsonl(&expected));
    }

    /// (d) Any bytes at all, decoded as JSONL or MessagePack and applied when valid, never panic.
    #[test]
    fn garbage_never_panics(lines in prop::collection::vec(garbage_line(), 1..200), blobs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..50)) {
        let mut engine = Engine::new(Policy::default());
        let mut out = Vec::new();
        for line in &lines {
            if let Ok(input) = wire::decode_json(line, Stamping::Logged) {
                engine.apply(&input, &mut out);
            }
        }
        for blob in &blobs {
            if let Ok(input) = wire::decode_msgpack(blob, Stamping::ReceivedAt(At(T0))) {
                engine.apply(&input, &mut out);
            }
            let _ = wire::decode_output_msgpack(blob);
        }
        check_outputs(&out)?;
    }
}

/// Lines that are JSON objects with plausible and implausible fields and values, or not JSON.
fn garbage_line() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "v",
        "type",
        "workspace",
        "at",
        "id",
        "interval_s",
        "incarnation",
        "result",
        "error",
        "status",
        "origin",
        "reason",
        "restart_id",
        "phase",
        "request_id",
        "sent_at",
        "x",
    ]);
    let value = prop_oneof![
        Just(serde_json::json!(1)),
        Just(serde_json::json!(-7)),
        Just(serde_json::json!(1e300)),
        Just(serde_json::json!(null)),
        Just(serde_json::json!([1, 2])),
        Just(serde_json::json!({"a": 1})),
        prop::sample::select(vec![
            "heartbeat",
            "probe",
            "upstream_error",
            "restart_requested",
            "restart_progress",
            "lifecycle",
            "tick",
            "resume",
            "ws-a",
            "ws.a",
            "",
            "2026-04-16T09:10:26.100Z",
            "2026-13-45T99:99:99Z",
            "not_found",
            "error",
            "user",
            "system",
            "mutation",
            "started",
            "failed",
            "removed",
            "created",
            "paused",
            "resumed",
            "ws-a:1",
            "No such container",
        ])
        .prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
        (0u64..5000).prop_map(serde_json::Value::from),
    ];
    prop_oneof![
        4 => prop::collection::btree_map(key, value, 0..8).prop_map(|m| {
            let mut obj: serde_json::Map<String, serde_json::Value> = m.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            if obj.contains_key("type") { obj.insert("v".into(), 1.into()); }
            serde_json::Value::Object(obj).to_string()
        }),
        1 => any::<String>(),
    ]
}
