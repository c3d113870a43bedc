//! Random event streams for property tests: a fleet of six workspaces, inputs of every kind in
//! chosen proportions, timestamps that only move forward.

use proptest::prelude::*;
use vigil::core::At;
use vigil::core::event::*;

pub const T0: i64 = 1_776_330_000_000; // 2026-04-16T09:00:00Z
pub const WORKSPACES: &[&str] = &["ws-a", "ws-b", "ws-c", "ws-d", "ws-e", "ws-f"];
const TRANSIENT: &[&str] = &[
    "context deadline exceeded",
    "EOF",
    "dial unix /var/run/docker.sock: connect: connection refused",
    "i/o timeout",
    "cp 503",
    "",
];

pub fn ws(i: usize) -> WorkspaceId {
    WorkspaceId::parse(WORKSPACES[i % WORKSPACES.len()]).unwrap()
}

/// The kinds of input a random stream is made of.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    pub definitive: bool,
    pub requests: bool,
    pub lifecycle: bool,
}

fn kind(mix: Mix) -> impl Strategy<Value = InputKind> {
    let w = 0..WORKSPACES.len();
    let heartbeat = (w.clone(), prop::option::of(prop::sample::select(vec![5u16, 30, 60])), prop::option::of(0u8..3))
        .prop_map(|(i, interval_s, inc)| {
            InputKind::Heartbeat(Heartbeat {
                workspace: ws(i),
                interval_s,
                incarnation: inc.map(|n| format!("inc-{n}").into()),
                active_tasks: None,
            })
        });
    let transient = (w.clone(), prop::sample::select(TRANSIENT)).prop_map(|(i, e)| {
        InputKind::Probe(Probe {
            workspace: ws(i),
            result: ProbeResult::Error,
            error: Some(e.into()),
            backend: None,
            probe_id: None,
        })
    });
    let benign =
        (w.clone(), prop::sample::select(vec![ProbeResult::Running, ProbeResult::Pending])).prop_map(|(i, r)| {
            InputKind::Probe(Probe { workspace: ws(i), result: r, error: None, backend: None, probe_id: None })
        });
    let upstream = (w.clone(), prop::option::of(prop::sample::select(vec![200u16, 404, 500, 502, 503, 504, 520, 524])))
        .prop_map(|(i, status)| {
            let error = status.is_none().then(|| "connection reset by peer".to_string());
            InputKind::UpstreamError(UpstreamError { workspace: ws(i), status, error })
        });
    let definitive =
        (w.clone(), prop::sample::select(vec![ProbeResult::NotRunning, ProbeResult::NotFound]), any::<bool>())
            .prop_map(|(i, r, as_text)| {
                let (result, error) =
                    if as_text { (ProbeResult::Error, Some("No such container: x".into())) } else { (r, None) };
                InputKind::Probe(Probe { workspace: ws(i), result, error, backend: None, probe_id: None })
            });
    let request = (w.clone(), prop::sample::select(Origin::ALL.to_vec()), prop::option::of(0u8..4)).prop_map(
        |(i, origin, rid)| {
            InputKind::RestartRequested(RestartRequested {
                workspace: ws(i),
                origin,
                reason: "random".into(),
                request_id: rid.map(|n| format!("r{n}")),
            })
        },
    );
    let progress = (w.clone(), 1u32..6, prop::sample::select(ProgressPhase::ALL.to_vec())).prop_map(|(i, n, phase)| {
        let workspace = ws(i);
        InputKind::RestartProgress(RestartProgress {
            restart_id: format!("{workspace}:{n}"),
            workspace,
            phase,
            error: None,
        })
    });
    let lifecycle = (w, prop::sample::select(LifecyclePhase::ALL.to_vec()))
        .prop_map(|(i, phase)| InputKind::Lifecycle(Lifecycle { workspace: ws(i), phase }));
    let clock = prop_oneof![5 => Just(InputKind::Tick), 1 => Just(InputKind::Resume(Resume::default()))];

    let mut arms: Vec<(u32, BoxedStrategy<InputKind>)> = vec![
        (40, heartbeat.boxed()),
        (10, transient.boxed()),
        (6, benign.boxed()),
        (8, upstream.boxed()),
        (6, clock.boxed()),
    ];
    if mix.definitive {
        arms.push((8, definitive.boxed()));
    }
    if mix.requests {
        arms.push((6, request.boxed()));
        arms.push((8, progress.boxed()));
    }
    if mix.lifecycle {
        arms.push((2, lifecycle.boxed()));
    }
    prop::strategy::Union::new_weighted(arms)
}

/// A stream of inputs with gaps of 0–`max_gap_ms` between them.
pub fn stream(
    mix: Mix,
    max_gap_ms: i64,
    len: impl Into<prop::collection::SizeRange>,
) -> impl Strategy<Value = Vec<Input>> {
    prop::collection::vec((0..=max_gap_ms, kind(mix), prop::option::of(0u8..3)), len).prop_map(|steps| {
        let mut t = T0;
        steps
            .into_iter()
            .map(|(gap, kind, id)| {
                t += gap;
                Input { at: At(t), sent_at: None, id: id.map(|n| format!("id-{n}")), stream_seq: None, kind }
            })
            .collect()
    })
}

/// The stream, with every workspace heartbeating at its start and at least every `every_ms`.
pub fn with_regular_heartbeats(inputs: &[Input], every_ms: i64) -> Vec<Input> {
    let beat = |at: i64| {
        (0..WORKSPACES.len()).map(move |i| Input {
            at: At(at),
            sent_at: None,
            id: None,
            stream_seq: None,
            kind: InputKind::Heartbeat(Heartbeat {
                workspace: ws(i),
                interval_s: None,
                incarnation: None,
                active_tasks: None,
            }),
        })
    };
    let mut out: Vec<Input> = beat(T0).collect();
    let mut last = T0;
    for input in inputs {
        while input.at.millis() - last >= every_ms {
            last += every_ms;
            out.extend(beat(last));
        }
        out.push(input.clone());
    }
    out
}
