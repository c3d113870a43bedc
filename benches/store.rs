//! Durable throughput and recovery time of the store (`make bench`).
//!
//! 1. **Durable ingest**: a heartbeat-dominated stream over 100 000 workspaces (1 % probes, 1 %
//!    upstream errors), arriving as MessagePack payloads the way the bus hands them over, goes
//!    through the whole store path — decode, engine, log segment, outbox, one atomic batch and one
//!    flush per group — in groups of `GROUP`. Next to it, measured in the same run on a fresh
//!    directory, the raw ceiling: the same encoded bytes written as one sled value per group with
//!    one flush per group, nothing else. Targets: ≥ 0.5 of the ceiling and ≥ 500 000 events/s.
//! 2. **Recovery**: a data directory holding 1 000 000 workspaces in a checkpoint plus a
//!    10 000 000-event log tail is opened; the time until the engine is back is reported.
//!    Target: < 5 s. (`VIGIL_BENCH_TAIL` scales the tail down for a quick run; 0 skips it.)
//!
//! A plain binary rather than criterion: each figure is one long, steady run.

use std::time::Instant;

use vigil::core::wire::{self, Stamping};
use vigil::core::{At, Input, Policy};
use vigil::store::{OpenMode, Store, StoreConfig};

const WORKSPACES: usize = 100_000;
const GROUP: usize = 1_000;
const INGEST_EVENTS: usize = 2_000_000;

#[path = "../tests/support/rng.rs"]
mod rng;
use rng::Rng;

#[path = "support/workload.rs"]
mod workload;
use workload::START;

/// The i-th event of a heartbeat-dominated stream over `fleet` workspaces, in workspace order.
fn event(i: usize, fleet: usize, rng: &mut Rng) -> Input {
    workload::input(i, fleet, i % fleet, rng)
}

fn payloads(count: usize, fleet: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng(7);
    (0..count).map(|i| wire::encode_msgpack(&event(i, fleet, &mut rng))).collect()
}

fn durable_ingest() -> (f64, f64) {
    let warm = payloads(WORKSPACES, WORKSPACES);
    let stream = payloads(INGEST_EVENTS, WORKSPACES);

    // The store: decode, engine, segment, outbox, batch, flush.
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { checkpoint_every: 0, ..StoreConfig::default() };
    let (mut store, _) = Store::open(dir.path(), Policy::default(), config, OpenMode::CreateIfMissing).unwrap();
    let decode = |p: &Vec<u8>, i: usize| wire::decode_msgpack(p, Stamping::ReceivedAt(At(START + i as i64))).unwrap();
    let warm: Vec<Input> = warm.iter().enumerate().map(|(i, p)| decode(p, i)).collect();
    for group in warm.chunks(GROUP) {
        store.commit(group, None).unwrap();
    }
    let started = Instant::now();
    let mut group = Vec::with_capacity(GROUP);
    for (i, chunk) in stream.chunks(GROUP).enumerate() {
        group.clear();
        group.extend(chunk.iter().enumerate().map(|(k, p)| {
            let n = i * GROUP + k;
            wire::decode_msgpack(p, Stamping::ReceivedAt(At(START + (n as i64) * 30_000 / WORKSPACES as i64))).unwrap()
        }));
        // Pipelined as `vigil serve` drives it: this group is applied while the last one flushes.
        store.submit(&group, Some(((i + 1) * GROUP) as u64)).unwrap();
        for committed in store.poll_durable().unwrap() {
            store.ack(&committed.outputs.iter().map(|p| p.key).collect::<Vec<_>>()).unwrap();
        }
    }
    for committed in store.wait_durable().unwrap() {
        store.ack(&committed.outputs.iter().map(|p| p.key).collect::<Vec<_>>()).unwrap();
    }
    let store_rate = INGEST_EVENTS as f64 / started.elapsed().as_secs_f64();
    drop(store);

    // The ceiling: the same bytes, one value per group, one flush per group.
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).cache_capacity(128 << 20).open().unwrap();
    let started = Instant::now();
    for (i, chunk) in stream.chunks(GROUP).enumerate() {
        let value: Vec<u8> = chunk.concat();
        db.insert((i as u64).to_be_bytes(), value).unwrap();
        db.flush().unwrap();
    }
    let raw_rate = INGEST_EVENTS as f64 / started.elapsed().as_secs_f64();
    (store_rate, raw_rate)
}

fn recovery(tail: usize) -> (f64, u64) {
    const FLEET: usize = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { checkpoint_every: 0, ..StoreConfig::default() };
    {
        let (mut store, _) =
            Store::open(dir.path(), Policy::default(), config.clone(), OpenMode::CreateIfMissing).unwrap();
        let mut rng = Rng(11);
        let mut group = Vec::with_capacity(10_000);
        let commit = |store: &mut Store, group: &mut Vec<Input>| {
            let c = store.commit(group, None).unwrap();
            store.ack(&c.outputs.iter().map(|p| p.key).collect::<Vec<_>>()).unwrap();
            group.clear();
        };
        for i in 0..FLEET {
            group.push(event(i, FLEET, &mut rng));
            if group.len() == group.capacity() {
                commit(&mut store, &mut group);
            }
        }
        commit(&mut store, &mut group);
        store.checkpoint().unwrap();
        for i in FLEET..FLEET + tail {
            group.push(event(i, FLEET, &mut rng));
            if group.len() == group.capacity() {
                commit(&mut store, &mut group);
            }
        }
        commit(&mut store, &mut group);
        // No closing checkpoint: the tail must be replayed.
    }
    let started = Instant::now();
    let (store, recovery) = Store::open(dir.path(), Policy::default(), config, OpenMode::MustExist).unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(store.engine().len(), FLEET);
    (secs, recovery.replayed)
}

fn ingest_figures() {
    let (store_rate, raw_rate) = durable_ingest();
    println!(
        "durable ingest, 100 000 workspaces, groups of {GROUP}: {:.0} events/s through the store; raw sled ceiling {:.0} \
         events/s; ratio {:.2} (targets ≥ 500 000 events/s and ≥ 0.5)",
        store_rate,
        raw_rate,
        store_rate / raw_rate
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks; there is nothing to list.
    }
    println!("store benchmarks (release build; {} cores)", std::thread::available_parallelism().map_or(1, |n| n.get()));
    // `VIGIL_BENCH_ONLY=ingest` or `=recovery` runs one half.
    let only = std::env::var("VIGIL_BENCH_ONLY").unwrap_or_default();
    if only != "recovery" {
        ingest_figures();
    }
    if only == "ingest" {
        return;
    }
    let tail: usize = std::env::var("VIGIL_BENCH_TAIL").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    if tail == 0 {
        return;
    }
    let (secs, replayed) = recovery(tail);
    println!("recovery, 1 000 000 workspaces + {replayed}-event log tail: {secs:.2} s (target < 5 s)");
}
