//! vigil over NATS (`make bench`): sustained durable ingest and heartbeat-to-output latency, next to
//! the raw JetStream ceiling measured in the same run with the same payloads.
//!
//! 1. **Ceiling**: the same MessagePack heartbeats published to a plain file-backed stream and
//!    consumed by a durable pull consumer that acknowledges each batch — publish, consume, ack, no
//!    processing. Events/s from the first publish to the last acknowledgement.
//! 2. **vigil**: the same payloads published to `vigil.in.heartbeat.<ws>` while `vigil serve` (the
//!    release binary) consumes them: decode, engine, sled group commit (flushed behind), ack. The
//!    fleet is created first (one heartbeat each), so the figure is sustained heartbeat ingest.
//!    Events/s from the first publish until vigil has acknowledged the last one.
//!    Targets: ≥ 0.7 of the ceiling and ≥ 100 000 events/s.
//! 3. **Latency**: heartbeats of new workspaces at 10 000 events/s for 5 s; each causes a
//!    `state_changed` output; the time from publishing the heartbeat to receiving its output, p50
//!    and p99. Target: p99 < 10 ms.
//!
//! 4. **Ingest on a 3-node cluster with R3 streams** (`VIGIL_BENCH_ONLY=r3` runs only this): the
//!    ceiling and vigil as in 1 and 2, each on a fresh 3-node nats-server cluster on this machine
//!    with every stream kept on all three nodes, the heartbeats published with acknowledgements a
//!    window at a time on both sides (plain publishes overrun a replicated stream). Target: ≥ 0.7.
//!
//! 5. **The same, over three partitions** (`VIGIL_BENCH_ONLY=r3` too): three vigils on the R3
//!    cluster with `--partitions 3`, each owning the partition rendezvous hashing gives it and
//!    following one other (`standbys = 1`, the default); events/s until every partition's
//!    consumer has acknowledged everything, next to the single vigil and the ceiling of the same
//!    run — and three vigils on one partition (an owner and two following, `--standbys 2`), to
//!    tell what partitions cost from what following costs.
//!
//! Both servers run on this machine, sharing its 2 cores with the publisher and the consumer.

#[path = "../tests/support/cluster.rs"]
#[allow(dead_code)]
mod cluster;
#[path = "support/machine.rs"]
mod machine;
#[path = "../tests/support/nats.rs"]
#[allow(dead_code)]
mod nats;
#[path = "support/publish.rs"]
mod publish;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use nats::{NatsServer, Vigil};
use vigil::core::event::{Heartbeat, Input, InputKind, WorkspaceId};
use vigil::core::wire;

const EVENTS: usize = 300_000;
/// Heartbeats of the R3 ingest run (after the fleet's 100 000).
const R3_EVENTS: usize = 200_000;
const WORKSPACES: usize = 100_000;
/// How long a measurement may see no progress before it fails instead of hanging.
const STALL: Duration = Duration::from_secs(60);

fn heartbeat(n: usize) -> Vec<u8> {
    wire::encode_msgpack(&Input {
        at: vigil::client::wall_clock(),
        sent_at: None,
        id: None,
        stream_seq: None,
        kind: InputKind::Heartbeat(Heartbeat {
            workspace: WorkspaceId::parse(&format!("ws-{:07}", n % WORKSPACES)).unwrap(),
            interval_s: Some(30),
            incarnation: Some(format!("c-{}", n % WORKSPACES).into()),
            active_tasks: Some(1),
        }),
    })
}

/// Publishes every payload as a plain NATS publish — what a heartbeating agent does; the stream
/// captures it — then flushes.
async fn publish_all(client: &async_nats::Client, subjects: &[String], payloads: &[Vec<u8>]) {
    for (subject, payload) in subjects.iter().zip(payloads) {
        client.publish(subject.clone(), payload.clone().into()).await.expect("publish");
    }
    client.flush().await.expect("flush");
}

/// How many messages stream `name` holds once its count stops growing (at most `sent`); says how
/// many of `sent` the server dropped, if any.
async fn stored_after(js: &jetstream::Context, name: &str, sent: usize) -> usize {
    let mut stream = js.get_stream(name).await.unwrap();
    let (mut last, mut still) = (0, 0);
    loop {
        let now = stream.info().await.unwrap().state.messages as usize;
        if now >= sent {
            return now;
        }
        still = if now == last { still + 1 } else { 0 };
        if still >= 40 {
            eprintln!("  ({name}: the server stored {now} of {sent} plain publishes; the rate is of those)");
            return now;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The ceiling's stream (`replicas` copies) and a task that consumes `n` messages from it with a
/// durable pull consumer, acknowledging each batch; the task ends once all `n` are in.
async fn bench_consumer(js: &jetstream::Context, replicas: usize, n: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
    let stream = js
        .create_stream(stream::Config {
            name: "BENCH_IN".into(),
            subjects: vec!["bench.in.>".into()],
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .unwrap();
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: consumer::AckPolicy::All,
            max_ack_pending: 20_000,
            ..Default::default()
        })
        .await
        .unwrap();
    tokio::spawn(async move {
        let mut messages = consumer.stream().max_messages_per_batch(1000).messages().await.unwrap().ready_chunks(1000);
        let mut seen = 0;
        while seen < n.load(Ordering::Acquire) {
            // Bounded: a consumer that stops receiving fails the run instead of hanging it.
            let Ok(Some(batch)) = tokio::time::timeout(STALL, messages.next()).await else {
                panic!("the ceiling's consumer received nothing for {STALL:?} after {seen} of {n:?} messages");
            };
            seen += batch.len();
            batch.last().unwrap().as_ref().unwrap().ack().await.unwrap();
        }
    })
}

async fn ceiling(payloads: &[Vec<u8>]) -> f64 {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let subjects: Vec<String> =
        (0..payloads.len()).map(|n| format!("bench.in.heartbeat.ws-{:07}", n % WORKSPACES)).collect();
    let target = Arc::new(AtomicUsize::new(usize::MAX));
    let consume = bench_consumer(&js, 1, target.clone()).await;
    let started = Instant::now();
    publish_all(&client, &subjects, payloads).await;
    // What the stream stored: a burst of plain publishes that outruns it loses some on a slow
    // machine, and the rate is of what got in (the loss is said).
    let stored = stored_after(&js, "BENCH_IN", payloads.len()).await;
    target.store(stored, Ordering::Release);
    consume.await.unwrap();
    stored as f64 / started.elapsed().as_secs_f64()
}

async fn acked(js: &jetstream::Context) -> u64 {
    let stream = js.get_stream("VIGIL_IN").await.unwrap();
    let mut consumer = stream.get_consumer::<consumer::pull::Config>("vigil").await.unwrap();
    consumer.info().await.unwrap().ack_floor.stream_sequence
}

/// Waits until vigil has acknowledged everything in its input stream; fails the run, with vigil's
/// log, if its acknowledgements stop moving for [`STALL`].
async fn wait_acked(js: &jetstream::Context, vigil: &Vigil) {
    let last = js.get_stream("VIGIL_IN").await.unwrap().info().await.unwrap().state.last_sequence;
    let (mut floor, mut moved) = (0, Instant::now());
    while floor < last {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = acked(js).await;
        if now > floor {
            (floor, moved) = (now, Instant::now());
        }
        assert!(
            moved.elapsed() < STALL,
            "vigil acknowledged nothing for {STALL:?} at {floor} of {last}; log:\n{}",
            vigil.log()
        );
    }
}

async fn through_vigil(payloads: &[Vec<u8>]) -> f64 {
    through_vigil_over(payloads, 1).await
}

/// Waits until every partition's consumer has acknowledged what it was given (one: `vigil`).
async fn wait_all_acked(js: &jetstream::Context, vigil: &Vigil, partitions: u32) {
    if partitions == 1 { wait_acked(js, vigil).await } else { wait_partitions_acked(js, partitions).await }
}

/// One vigil on one node over `partitions` partitions: the fleet first, then the payloads.
async fn through_vigil_over(payloads: &[Vec<u8>], partitions: u32) -> f64 {
    let server = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let p = partitions.to_string();
    let args = ["--partitions", &p];
    let vigil = Vigil::start(&server.url(), data.path(), &args, &[]);
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let subjects: Vec<String> =
        (0..payloads.len()).map(|n| format!("vigil.in.heartbeat.ws-{:07}", n % WORKSPACES)).collect();
    // The fleet first (each workspace's first heartbeat creates it, and its `state_changed` is
    // published), then the sustained stream.
    publish_all(&client, &subjects[..WORKSPACES], &payloads[..WORKSPACES]).await;
    wait_all_acked(&js, &vigil, partitions).await;
    let (mut out, mut moved, mut held) = (js.get_stream("VIGIL_OUT").await.unwrap(), Instant::now(), 0);
    while held < WORKSPACES as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = out.info().await.unwrap().state.messages;
        if now > held {
            (held, moved) = (now, Instant::now());
        }
        assert!(
            moved.elapsed() < STALL,
            "vigil published {held} of the fleet's {WORKSPACES} outputs; log:\n{}",
            vigil.log()
        );
    }
    let before = js.get_stream("VIGIL_IN").await.unwrap().info().await.unwrap().state.messages as usize;
    let started = Instant::now();
    publish_all(&client, &subjects, payloads).await;
    let stored = stored_after(&js, "VIGIL_IN", before + payloads.len()).await - before;
    wait_all_acked(&js, &vigil, partitions).await;
    let rate = stored as f64 / started.elapsed().as_secs_f64();
    vigil.stop();
    rate
}

/// vigil's own share of the latency, from its metrics: the `vigil_batch_seconds` histogram (a
/// batch's arrival at vigil until its acknowledgement, once applied), as the bucket bounds its
/// 0.5 and 0.99 quantiles fall under.
fn batch_quantiles(addr: &str) -> String {
    let input = histogram_quantiles(addr, "vigil_batch_seconds", "batches");
    let output = histogram_quantiles(addr, "vigil_publish_seconds", "groups");
    format!("{input}\n  and from applied to the output stream's confirmation: {output}")
}

/// p50 and p99 bounds of one of vigil's histograms, read from its metrics endpoint.
fn histogram_quantiles(addr: &str, metric: &str, what: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(addr) else { return "no metrics".into() };
    let _ = write!(conn, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut body = String::new();
    let _ = conn.read_to_string(&mut body);
    // `vigil_batch_seconds_bucket{le="0.005"} 1234`, cumulative, in increasing order.
    let buckets: Vec<(String, f64)> = body
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}_bucket{{")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?.to_string();
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    let Some((_, total)) = buckets.last().cloned() else { return format!("no {what} recorded") };
    let under = |q: f64| {
        buckets.iter().find(|(_, n)| *n >= q * total).map_or("?".into(), |(le, _)| match le.parse::<f64>() {
            Ok(s) => format!("≤ {} ms", s * 1000.0),
            Err(_) => format!("> the largest bucket ({le})"),
        })
    };
    format!("p50 {}, p99 {} ({total} {what})", under(0.5), under(0.99))
}

/// One raw JetStream hop at the same rate: plain publish → file-backed stream → durable pull
/// consumer, publish to receipt, p50 and p99. vigil's path holds two such hops (the input stream
/// in, the output stream out) around its own work.
async fn raw_hop_latency() -> (Duration, Duration) {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let stream = js
        .create_stream(stream::Config {
            name: "HOP".into(),
            subjects: vec!["hop.>".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap();
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("hop".into()),
            ack_policy: consumer::AckPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let total = 50_000usize;
    let sent = std::sync::Arc::new(std::sync::Mutex::new(vec![None::<Instant>; total]));
    let sent_by_publisher = sent.clone();
    let payload = heartbeat(0);
    let publisher = tokio::spawn(async move {
        let started = Instant::now();
        for n in 0..total {
            tokio::time::sleep_until((started + Duration::from_micros(n as u64 * 100)).into()).await;
            sent_by_publisher.lock().unwrap()[n] = Some(Instant::now());
            client.publish(format!("hop.{n}"), payload.clone().into()).await.unwrap();
        }
        client.flush().await.unwrap();
    });
    let mut messages = consumer.stream().max_messages_per_batch(1000).messages().await.unwrap().ready_chunks(1000);
    let mut latencies = Vec::with_capacity(total);
    while latencies.len() < total {
        let Ok(Some(batch)) = tokio::time::timeout(Duration::from_secs(5), messages.next()).await else { break };
        let received = Instant::now();
        for m in batch.iter().flatten() {
            let n: usize = m.subject.rsplit('.').next().unwrap().parse().unwrap();
            if let Some(at) = sent.lock().unwrap()[n] {
                latencies.push(received - at);
            }
        }
        if let Some(Ok(last)) = batch.last() {
            last.ack().await.unwrap();
        }
    }
    publisher.await.unwrap();
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    (pick(0.50), pick(0.99))
}

async fn latency() -> (Duration, Duration, usize, String) {
    let server = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", nats::free_port());
    let vigil = Vigil::start(&server.url(), data.path(), &["--metrics-addr", &metrics], &[]);
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let mut outputs = client.subscribe("vigil.out.state_changed.>").await.unwrap();
    let rate = 10_000u64;
    let total = 50_000usize;
    let sent = std::sync::Arc::new(std::sync::Mutex::new(HashMap::with_capacity(total)));
    let sent_by_publisher = sent.clone();
    let publisher = tokio::spawn(async move {
        let started = Instant::now();
        for n in 0..total {
            let due = started + Duration::from_micros(n as u64 * 1_000_000 / rate);
            tokio::time::sleep_until(due.into()).await;
            let ws = format!("lat-{n:07}");
            let payload = wire::encode_msgpack(&Input {
                at: vigil::client::wall_clock(),
                sent_at: None,
                id: None,
                stream_seq: None,
                kind: InputKind::Heartbeat(Heartbeat {
                    workspace: WorkspaceId::parse(&ws).unwrap(),
                    interval_s: Some(30),
                    incarnation: None,
                    active_tasks: None,
                }),
            });
            sent_by_publisher.lock().unwrap().insert(ws.clone(), Instant::now());
            // A plain publish, as a heartbeating agent would; the stream captures it.
            client.publish(format!("vigil.in.heartbeat.{ws}"), payload.into()).await.unwrap();
        }
        client.flush().await.unwrap();
    });
    let mut latencies = Vec::with_capacity(total);
    let deadline = Instant::now() + Duration::from_secs(60);
    while latencies.len() < total && Instant::now() < deadline {
        let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(5), outputs.next()).await else { break };
        let received = Instant::now();
        let ws = message.subject.rsplit('.').next().unwrap().to_string();
        if let Some(at) = sent.lock().unwrap().get(&ws) {
            latencies.push(received - *at);
        }
    }
    publisher.await.unwrap();
    drop(js);
    let inside = batch_quantiles(&metrics);
    vigil.stop();
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    (pick(0.50), pick(0.99), latencies.len(), inside)
}

/// The raw R3 ceiling: the payloads published (acknowledged, a window at a time) to a replicated
/// stream, consumed and acknowledged by a durable pull consumer.
async fn ceiling_r3(payloads: &[Vec<u8>]) -> f64 {
    let cluster = cluster::NatsCluster::start(3);
    let client = cluster.client().await;
    let js = jetstream::new(client.clone());
    cluster.wait_ready(&js).await;
    let consume = bench_consumer(&js, 3, Arc::new(AtomicUsize::new(payloads.len()))).await;
    let started = Instant::now();
    let messages =
        payloads.iter().enumerate().map(|(i, p)| (format!("bench.in.heartbeat.ws-{:07}", i % WORKSPACES), p.clone()));
    publish::publish_acked(&js, messages).await;
    consume.await.unwrap();
    payloads.len() as f64 / started.elapsed().as_secs_f64()
}

/// The payloads in `range`, each on its workspace's heartbeat subject.
fn heartbeats_on(payloads: &[Vec<u8>], range: std::ops::Range<usize>) -> Vec<(String, Vec<u8>)> {
    payloads[range.clone()]
        .iter()
        .zip(range)
        .map(|(p, i)| (format!("vigil.in.heartbeat.ws-{:07}", i % WORKSPACES), p.clone()))
        .collect()
}

/// vigil on R3 streams: the fleet first, then the payloads, published the same way as the ceiling's.
async fn through_vigil_r3(payloads: &[Vec<u8>]) -> f64 {
    let cluster = cluster::NatsCluster::start(3);
    let client = cluster.client().await;
    let js = jetstream::new(client.clone());
    cluster.wait_ready(&js).await;
    let data = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&cluster.urls(), data.path(), &["--stream-replicas", "3"], &[]);
    let messages = |range: std::ops::Range<usize>| heartbeats_on(payloads, range);
    publish::publish_acked(&js, messages(0..WORKSPACES)).await;
    wait_acked(&js, &vigil).await;
    let started = Instant::now();
    publish::publish_acked(&js, messages(0..payloads.len())).await;
    wait_acked(&js, &vigil).await;
    let rate = payloads.len() as f64 / started.elapsed().as_secs_f64();
    vigil.stop();
    rate
}

/// Waits until each of `partitions` partition consumers has acknowledged everything it was given.
async fn wait_partitions_acked(js: &jetstream::Context, partitions: u32) {
    let stream = js.get_stream("VIGIL_IN").await.unwrap();
    let (mut left, mut moved) = (u64::MAX, Instant::now());
    loop {
        let mut now = 0;
        for k in 0..partitions {
            let name = if partitions == 1 { "vigil".to_string() } else { format!("vigil-p{k}") };
            let mut consumer = stream.get_consumer::<consumer::pull::Config>(&name).await.unwrap();
            let info = consumer.info().await.unwrap();
            now += info.num_pending + info.num_ack_pending as u64;
        }
        if now == 0 {
            return;
        }
        if now < left {
            (left, moved) = (now, Instant::now());
        }
        assert!(moved.elapsed() < STALL, "the partitions' consumers have {left} records unacknowledged for {STALL:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Three vigils over `partitions` partitions on R3 streams: the fleet first, then the payloads.
async fn through_partitions_r3(payloads: &[Vec<u8>], partitions: u32) -> f64 {
    let cluster = cluster::NatsCluster::start(3);
    let client = cluster.client().await;
    let js = jetstream::new(client.clone());
    cluster.wait_ready(&js).await;
    let data = tempfile::tempdir().unwrap();
    let vigils: Vec<Vigil> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            let p = partitions.to_string();
            // One partition: both others follow it, to measure what following costs.
            let standbys = if partitions == 1 { "2" } else { "1" };
            let args = [
                "--stream-replicas",
                "3",
                "--partitions",
                &p,
                "--standbys",
                standbys,
                "--instance",
                name,
                "--metrics-addr",
                "off",
            ];
            Vigil::spawn(&cluster.urls(), &data.path().join(name), &args, &[])
        })
        .collect();
    // Spread: every partition owned as rendezvous hashing places it (a lease of hysteresis).
    let started = Instant::now();
    loop {
        let placed = async {
            let reply = client.request("vigil.query.partitions", "".into()).await.ok()?;
            let answer: serde_json::Value = serde_json::from_slice(&reply.payload).ok()?;
            let owners: Vec<String> = answer["partitions"]
                .as_array()?
                .iter()
                .filter_map(|p| p["owner"].as_str().map(str::to_string))
                .collect();
            // (One partition is not spread: whoever took it first keeps it.)
            let expected: Vec<String> = (0..partitions)
                .map(|k| vigil::bus::placement::rendezvous(["a", "b", "c"], k).unwrap().to_string())
                .collect();
            Some(if partitions == 1 { owners.len() == 1 } else { owners == expected })
        };
        if placed.await == Some(true) {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let logs: Vec<String> = vigils.iter().map(Vigil::log).collect();
            panic!("the partitions never spread; logs:\n{}", logs.join("\n---\n"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let messages = |range: std::ops::Range<usize>| heartbeats_on(payloads, range);
    publish::publish_acked(&js, messages(0..WORKSPACES)).await;
    wait_partitions_acked(&js, partitions).await;
    let started = Instant::now();
    publish::publish_acked(&js, messages(0..payloads.len())).await;
    wait_partitions_acked(&js, partitions).await;
    let rate = payloads.len() as f64 / started.elapsed().as_secs_f64();
    for vigil in vigils {
        vigil.stop();
    }
    rate
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        // `VIGIL_BENCH_ONLY=ingest` or `=latency` runs one half.
        let only = std::env::var("VIGIL_BENCH_ONLY").unwrap_or_default();
        if only == "single-partitions" {
            // One vigil on one node, one partition and sixteen, in turn, three times.
            let payloads: Vec<Vec<u8>> = (0..EVENTS).map(heartbeat).collect();
            for round in 1..=3 {
                let one = through_vigil_over(&payloads, 1).await;
                let sixteen = through_vigil_over(&payloads, 16).await;
                println!(
                    "round {round}: one partition {one:.0} events/s, 16 partitions {sixteen:.0} events/s, ratio {:.2}",
                    sixteen / one
                );
            }
            return;
        }
        if only == "r3-followed" {
            let payloads: Vec<Vec<u8>> = (0..R3_EVENTS).map(heartbeat).collect();
            println!("one partition, three vigils: {:.0} events/s", through_partitions_r3(&payloads, 1).await);
            return;
        }
        if only.is_empty() || only == "r3" {
            let payloads: Vec<Vec<u8>> = (0..R3_EVENTS).map(heartbeat).collect();
            let raw = ceiling_r3(&payloads).await;
            let vigil = through_vigil_r3(&payloads).await;
            println!(
                "durable ingest on a 3-node cluster, R3 streams, {R3_EVENTS} heartbeats over {WORKSPACES} workspaces: \
                 {vigil:.0} events/s through vigil; raw R3 JetStream ceiling {raw:.0} events/s; ratio {:.2} (target ≥ 0.7)",
                vigil / raw
            );
            let spread = through_partitions_r3(&payloads, 3).await;
            println!(
                "  over three partitions and three vigils: {spread:.0} events/s; ratio {:.2} to the ceiling, {:.2} to one vigil",
                spread / raw,
                spread / vigil
            );
            let followed = through_partitions_r3(&payloads, 1).await;
            println!(
                "  one partition, three vigils (one owner, two following): {followed:.0} events/s; ratio {:.2} to the \
                 ceiling, {:.2} to one vigil",
                followed / raw,
                followed / vigil
            );
        }
        if only == "r3" {
            return;
        }
        if only != "latency" {
            let payloads: Vec<Vec<u8>> = (0..EVENTS).map(heartbeat).collect();
            let raw = ceiling(&payloads).await;
            let vigil = through_vigil(&payloads).await;
            println!(
                "durable ingest, {EVENTS} heartbeats over {WORKSPACES} workspaces: {vigil:.0} events/s through vigil; raw \
                 JetStream ceiling {raw:.0} events/s; ratio {:.2} (targets ≥ 100 000 events/s and ≥ 0.7)",
                vigil / raw
            );
            let sixteen = through_vigil_over(&payloads, 16).await;
            println!(
                "  the same vigil over 16 partitions: {sixteen:.0} events/s; ratio {:.2} to the ceiling, {:.2} to one \
                 partition",
                sixteen / raw,
                sixteen / vigil
            );
        }
        if only == "ingest" {
            return;
        }
        let cpu = machine::cpu_times();
        let (p50, p99, n, inside) = latency().await;
        let steal = machine::steal_share(cpu, machine::cpu_times());
        let (sync50, sync99) = machine::fsync_cost();
        println!("latency at 10 000 events/s, heartbeat to output, {n} samples: p50 {p50:?}, p99 {p99:?} (target p99 < 10 ms)");
        println!("  of which inside vigil (a batch's arrival to its acknowledgement, once applied): {inside}");
        let (hop50, hop99) = raw_hop_latency().await;
        println!("  for reference, one raw JetStream hop at the same rate: p50 {hop50:?}, p99 {hop99:?}");
        println!(
            "the machine meanwhile: {:.0} % of CPU time stolen by the hypervisor; a 4 KiB write + fsync takes p50 \
             {sync50:?}, p99 {sync99:?}",
            steal * 100.0
        );
    });
}
