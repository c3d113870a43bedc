//! Engine throughput: folding a heartbeat-dominated stream over 100 000 workspaces on one core.
//!
//! The stream is what a fleet of 100 000 healthy agents looks like: every workspace heartbeats
//! every 30 s (`interval_s = 30`, a fixed incarnation), in an order reshuffled each round so the
//! slab is hit at random; about 1 % of events are probes (half `running`, half transient `error`s
//! such as "context deadline exceeded") and about 1 % upstream errors (half status 502, half a
//! transport error). Timestamps only move forward, so the engine's lazy TTL timers fire and re-arm
//! as they would in production (each workspace's stale timer fires about once per 180 s TTL); no
//! workspace ever goes silent long enough to become Suspect.
//!
//! Decoding is not measured: the inputs are built up front. The engine is pre-warmed with all
//! 100 000 workspaces and several minutes of simulated traffic, so the timed loop is steady state.
//! Each iteration folds the whole pre-built stream once and hands the outputs to the caller (the
//! `Vec` is cleared after every input, as a shell that publishes them would). Between iterations,
//! outside the timed section, every timestamp is shifted forward by the stream's span, so time keeps
//! advancing across iterations.
//!
//! Run with `make bench` (or `cargo bench --bench engine`). Target: ≥ 2 000 000 events/s.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use vigil::core::event::{Heartbeat, Probe, ProbeResult, UpstreamError};
use vigil::core::{At, Engine, Input, InputKind, Output, Policy, WorkspaceId};

/// Workspaces in the fleet.
const WORKSPACES: usize = 100_000;
/// Heartbeat cadence (ms).
const INTERVAL_MS: i64 = 30_000;
/// Heartbeat rounds in the measured stream (each round: every workspace once, reshuffled).
const ROUNDS: usize = 4;
/// Rounds folded before measuring (past the 180 s TTL, so every lazy timer has fired once).
const WARM_ROUNDS: usize = 8;
/// 2026-06-01T00:00:00Z.
const START: i64 = 1_780_272_000_000;

const PROBE_ERRORS: &[&str] = &[
    "context deadline exceeded",
    "dial unix /var/run/docker.sock: connect: connection refused",
    "read unix @->/var/run/docker.sock: i/o timeout",
];

#[path = "../tests/support/rng.rs"]
mod rng;
use rng::Rng;

fn ws_id(n: usize) -> WorkspaceId {
    WorkspaceId::parse(&format!("ws-{n:07}")).expect("valid workspace id")
}

fn input(at: i64, kind: InputKind) -> Input {
    Input { at: At(at), sent_at: None, id: None, stream_seq: None, kind }
}

fn heartbeat(ids: &[WorkspaceId], n: usize, at: i64) -> Input {
    input(
        at,
        InputKind::Heartbeat(Heartbeat {
            workspace: ids[n].clone(),
            interval_s: Some(30),
            incarnation: Some(format!("c-{n}").into()),
            active_tasks: Some((n % 4) as u32),
        }),
    )
}

fn probe(ids: &[WorkspaceId], rng: &mut Rng, at: i64) -> Input {
    let n = rng.below(ids.len());
    let (result, error) = if rng.below(2) == 0 {
        (ProbeResult::Running, None)
    } else {
        (ProbeResult::Error, Some(PROBE_ERRORS[rng.below(PROBE_ERRORS.len())].to_string()))
    };
    let kind = InputKind::Probe(Probe {
        workspace: ids[n].clone(),
        result,
        error,
        backend: Some("docker".into()),
        probe_id: None,
    });
    input(at, kind)
}

fn upstream(ids: &[WorkspaceId], rng: &mut Rng, at: i64) -> Input {
    let n = rng.below(ids.len());
    let (status, error) = if rng.below(2) == 0 {
        (Some(502), None)
    } else {
        (None, Some("dial tcp 10.0.3.7:8080: connect: connection refused".to_string()))
    };
    input(at, InputKind::UpstreamError(UpstreamError { workspace: ids[n].clone(), status, error }))
}

/// `rounds` rounds of traffic starting at `start`: every workspace heartbeats once per round, in a
/// fresh random order, evenly spread over the 30 s; after each heartbeat a probe follows with
/// probability 1/98 and an upstream error with probability 1/98 (so each is ~1 % of all events).
fn stream(ids: &[WorkspaceId], rng: &mut Rng, start: i64, rounds: usize) -> Vec<Input> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    let mut events = Vec::with_capacity(rounds * ids.len() * 102 / 100);
    for round in 0..rounds {
        rng.shuffle(&mut order);
        let round_start = start + round as i64 * INTERVAL_MS;
        for (k, &n) in order.iter().enumerate() {
            let at = round_start + k as i64 * INTERVAL_MS / ids.len() as i64;
            events.push(heartbeat(ids, n, at));
            if rng.below(98) == 0 {
                events.push(probe(ids, rng, at));
            }
            if rng.below(98) == 0 {
                events.push(upstream(ids, rng, at));
            }
        }
    }
    events
}

fn fold(engine: &mut Engine, events: &[Input], out: &mut Vec<Output>) -> usize {
    let mut outputs = 0;
    for e in events {
        engine.apply(e, out);
        outputs += out.len();
        out.clear();
    }
    outputs
}

/// The same fold the way the store drives the engine: a group of inputs at a time through
/// `apply_batch`, which prefetches ahead.
fn fold_batched(engine: &mut Engine, events: &[Input], out: &mut Vec<Output>) -> usize {
    let mut outputs = 0;
    for group in events.chunks(1_000) {
        engine.apply_batch(group, out);
        outputs += out.len();
        out.clear();
    }
    outputs
}

fn shift(events: &mut [Input], by: i64) {
    for e in events {
        e.at = At(e.at.0 + by);
    }
}

fn engine_throughput(c: &mut Criterion) {
    let ids: Vec<WorkspaceId> = (0..WORKSPACES).map(ws_id).collect();
    let mut rng = Rng(0x5EED);
    let mut engine = Engine::new(Policy::default());
    let mut out = Vec::new();

    // Pre-warm: create every workspace, then fold several minutes of traffic so every workspace's
    // lazy TTL timer has fired and re-armed at least once.
    let warm = stream(&ids, &mut rng, START, WARM_ROUNDS);
    fold(&mut engine, &warm, &mut out);
    drop(warm);
    assert_eq!(engine.len(), WORKSPACES);

    let span = ROUNDS as i64 * INTERVAL_MS;
    let mut events = stream(&ids, &mut rng, START + WARM_ROUNDS as i64 * INTERVAL_MS, ROUNDS);
    let (probes, upstreams) = events.iter().fold((0, 0), |(p, u), e| match e.kind {
        InputKind::Probe(_) => (p + 1, u),
        InputKind::UpstreamError(_) => (p, u + 1),
        _ => (p, u),
    });
    let outputs = fold(&mut engine, &events, &mut out);
    shift(&mut events, span);
    let fleet = engine.fleet_view();
    assert_eq!(fleet.alive as usize, WORKSPACES, "the whole fleet stays alive: {fleet:?}");
    eprintln!(
        "stream: {} events per iteration over {} s simulated ({} heartbeats, {} probes = {:.2} %, {} upstream \
         errors = {:.2} %), {} outputs",
        events.len(),
        span / 1000,
        events.len() - probes - upstreams,
        probes,
        100.0 * probes as f64 / events.len() as f64,
        upstreams,
        100.0 * upstreams as f64 / events.len() as f64,
        outputs,
    );

    let mut group = c.benchmark_group("engine");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(events.len() as u64));
    type Fold = fn(&mut Engine, &[Input], &mut Vec<Output>) -> usize;
    for (name, f) in [("fold_100k_workspaces", fold as Fold), ("fold_100k_workspaces_prefetched", fold_batched as Fold)]
    {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    black_box(f(&mut engine, black_box(&events), &mut out));
                    total += started.elapsed();
                    shift(&mut events, span);
                }
                total
            })
        });
    }
    group.finish();

    let fleet = engine.fleet_view();
    assert_eq!(fleet.alive as usize, WORKSPACES, "the whole fleet stays alive: {fleet:?}");
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(3))
        .measurement_time(Duration::from_secs(10))
        .without_plots()
}

criterion_group! {
    name = benches;
    config = config();
    targets = engine_throughput
}
criterion_main!(benches);
