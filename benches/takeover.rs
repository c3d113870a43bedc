//! Takeover and handover (`make bench`, SPEC §4 "ownership"), on a 3-node nats-server cluster on
//! this machine with every stream kept on all three nodes: a fleet of 100 000 workspaces in the
//! log, one vigil owning it and two standbys. Ten times, the owner is killed with SIGKILL, and the
//! time from the kill to the first output a successor publishes is measured (a producer sends a
//! definitive probe of a new workspace every 100 ms, so every moment of unavailability shows); the
//! killed one comes back as a standby. Then five planned handovers (SIGTERM: the owner gives its
//! lease up), timed the same way. The lease is the default, 15 s.

#[path = "../tests/support/cluster.rs"]
#[allow(dead_code)]
mod cluster;
#[path = "../tests/support/nats.rs"]
#[allow(dead_code)]
mod nats;
#[path = "support/publish.rs"]
mod publish;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use cluster::NatsCluster;
use futures::StreamExt;
use nats::Vigil;
use vigil::core::event::{Heartbeat, Input, InputKind, Probe, ProbeResult, WorkspaceId};
use vigil::core::wire;

const WORKSPACES: usize = 100_000;
const KILLS: usize = 10;
const HANDOVERS: usize = 5;
const LEASE_S: u64 = 15;

fn input(kind: InputKind) -> Vec<u8> {
    wire::encode_msgpack(&Input { at: vigil::client::wall_clock(), sent_at: None, id: None, stream_seq: None, kind })
}

fn heartbeat(n: usize) -> (String, Vec<u8>) {
    let ws = format!("ws-{n:07}");
    let payload = input(InputKind::Heartbeat(Heartbeat {
        workspace: WorkspaceId::parse(&ws).unwrap(),
        interval_s: Some(30),
        incarnation: Some(format!("c-{n}").into()),
        active_tasks: Some(1),
    }));
    (format!("vigil.in.heartbeat.{ws}"), payload)
}

fn not_found(ws: &str) -> Vec<u8> {
    input(InputKind::Probe(Probe {
        workspace: WorkspaceId::parse(ws).unwrap(),
        result: ProbeResult::NotFound,
        error: None,
        backend: None,
        probe_id: None,
    }))
}

/// The fleet, each heartbeat confirmed by the stream.
async fn publish_fleet(js: &jetstream::Context) {
    publish::publish_acked(js, (0..WORKSPACES).map(heartbeat)).await;
}

/// When the first output about a workspace of `round` reached the output stream's subscribers.
type Seen = Arc<Mutex<Vec<(String, Instant)>>>;

fn start(urls: &str, dir: &std::path::Path, name: &str, config: &std::path::Path) -> Vigil {
    let args = ["--instance", name, "--stream-replicas", "3", "--config", config.to_str().unwrap()];
    Vigil::spawn(urls, &dir.join(name), &args, &[])
}

/// The first output for a probe of round `round` published at or after `from`.
async fn first_output(seen: &Seen, round: &str, from: Instant) -> Duration {
    let started = Instant::now();
    loop {
        if let Some((_, at)) = seen.lock().unwrap().iter().find(|(ws, at)| ws.starts_with(round) && *at >= from) {
            return *at - from;
        }
        assert!(started.elapsed() < Duration::from_secs(180), "no successor published anything for {round}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// When a standby (any but `owner`) took the lease, and when it then served, after `from`.
async fn successor_phases(vigils: &[Option<Vigil>], owner: usize, from: Instant) -> (Duration, Duration) {
    let count = |i: usize, what: &str| vigils[i].as_ref().map_or(0, |v| v.log().matches(what).count());
    let before: Vec<(usize, usize)> =
        (0..vigils.len()).map(|i| (count(i, "took the lease"), count(i, "serving"))).collect();
    let mut lease = None;
    loop {
        for i in (0..vigils.len()).filter(|&i| i != owner) {
            if lease.is_none() && count(i, "took the lease") > before[i].0 {
                lease = Some((i, from.elapsed()));
            }
            if let Some((j, at)) = lease
                && j == i
                && count(i, "serving") > before[i].1
            {
                return (at, from.elapsed());
            }
        }
        assert!(from.elapsed() < Duration::from_secs(180), "no standby took over");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn summary(what: &str, mut took: Vec<Duration>) {
    took.sort();
    let secs: Vec<String> = took.iter().map(|d| format!("{:.2}", d.as_secs_f64())).collect();
    println!(
        "{what}: p50 {:.2} s, max {:.2} s over {} ({} s)",
        took[took.len() / 2].as_secs_f64(),
        took.last().unwrap().as_secs_f64(),
        took.len(),
        secs.join(" ")
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let cluster = NatsCluster::start(3);
        let urls = cluster.urls();
        let client = cluster.client().await;
        let js = jetstream::new(client.clone());
        cluster.wait_ready(&js).await;
        let work = tempfile::tempdir().unwrap();
        let config = work.path().join("vigil.toml");
        // Snapshots often, so a successor restores the fleet from one; restarts out of the breaker's
        // way (each probe here is a death, and this measures availability, not the breaker).
        std::fs::write(work.path().join("policy.toml"), "breaker_min = 1000000\nmax_restarts_in_flight = 1000000\n")
            .unwrap();
        std::fs::write(
            &config,
            format!("snapshot_every = \"5s\"\npolicy_file = \"{}\"\n", work.path().join("policy.toml").display()),
        )
        .unwrap();

        let names = ["a", "b", "c"];
        let mut vigils: Vec<Option<Vigil>> =
            names.iter().map(|n| Some(start(&urls, work.path(), n, &config))).collect();
        let started = Instant::now();
        let owner = loop {
            if let Some(i) = vigils.iter().position(|v| v.as_ref().unwrap().log().contains("serving")) {
                break i;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "nobody took the lease");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let t = Instant::now();
        publish_fleet(&js).await;
        println!("the fleet: {WORKSPACES} workspaces published in {:.1} s", t.elapsed().as_secs_f64());
        // Let the owner apply it and snapshot it.
        tokio::time::sleep(Duration::from_secs(15)).await;

        let seen: Seen = Arc::new(Mutex::new(Vec::new()));
        let mut outputs = client.subscribe("vigil.out.>").await.unwrap();
        let sink = seen.clone();
        tokio::spawn(async move {
            while let Some(m) = outputs.next().await {
                if let Some(ws) = m.subject.as_str().rsplit('.').next() {
                    sink.lock().unwrap().push((ws.to_string(), Instant::now()));
                }
            }
        });

        let mut owner = owner;
        let mut round = 0usize;
        let probe = |js: jetstream::Context, round: usize| {
            tokio::spawn(async move {
                for n in 0.. {
                    let ws = format!("r{round:02}-{n:04}");
                    let payload = not_found(&ws);
                    let _ = js.publish(format!("vigil.in.probe.{ws}"), payload.into()).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let mut kills = Vec::new();
        let mut handovers = Vec::new();
        for k in 0..KILLS + HANDOVERS {
            round += 1;
            let tag = format!("r{round:02}-");
            let producing = probe(js.clone(), round);
            tokio::time::sleep(Duration::from_secs(2)).await;
            let victim = vigils[owner].take().unwrap();
            let planned = k >= KILLS;
            let from = Instant::now();
            let victim = if planned {
                let pid = victim.pid().to_string();
                Command::new("kill").args(["-TERM", &pid]).status().unwrap();
                Some(victim)
            } else {
                victim.kill();
                None
            };
            let (lease_at, serving_at) = successor_phases(&vigils, owner, from).await;
            let took = first_output(&seen, &tag, from).await;
            producing.abort();
            if planned {
                handovers.push(took);
            } else {
                kills.push(took);
            }
            println!(
                "{} {}: {:.2} s (lease taken after {:.2} s, serving after {:.2} s)",
                if planned { "handover" } else { "kill -9" },
                k + 1,
                took.as_secs_f64(),
                lease_at.as_secs_f64(),
                serving_at.as_secs_f64()
            );
            // The new owner; the old one back as a standby.
            let next = (0..3)
                .find(|&i| {
                    i != owner && vigils[i].as_ref().unwrap().log().matches("took the lease").count() > 0 && {
                        let log = vigils[i].as_ref().unwrap().log();
                        log.rfind("took the lease") > log.rfind("standby")
                    }
                })
                .expect("a successor owns the log");
            // A slow round says why: the successor's log since it took the lease.
            if took > Duration::from_secs(LEASE_S + 2) {
                let log = vigils[next].as_ref().unwrap().log();
                let since = log.rfind("took the lease").map_or(0, |i| log[..i].rfind('\n').map_or(0, |n| n + 1));
                eprintln!("the successor's log since it took the lease:\n{}", &log[since..]);
            }
            drop(victim);
            vigils[owner] = Some(start(&urls, work.path(), names[owner], &config));
            owner = next;
            // Let the new owner settle and snapshot before the next round.
            tokio::time::sleep(Duration::from_secs(6)).await;
        }
        summary(&format!("takeover after kill -9 of the owner, kill to first output (lease {LEASE_S} s)"), kills);
        summary("planned handover (SIGTERM), unavailability", handovers);
        for v in vigils.into_iter().flatten() {
            v.kill();
        }
    });
}
