//! vigil on replicated streams (`stream_replicas = 3`) over a real 3-node nats-server cluster on
//! loopback: the NATS node that holds vigil's log is no longer a single point of failure. Each
//! story fails a node the way a machine fails (SIGKILL), with heartbeats flowing, and checks that
//! nothing stored is lost, vigil goes on deciding, and no healthy workspace is accused because of
//! it.
//!
//! The TTL is 8 s here (`ttl_min = "8s"`), heartbeats come every second.

mod support;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use support::bus::{accusations, beat, export, outputs, state_of, wait_processed};
use support::cluster::NatsCluster;
use support::nats::Vigil;
use vigil::client::Client;
use vigil::core::event::{InputKind, Output, OutputBody};
use vigil::core::wire::{self, Stamping};

const WORKSPACES: [&str; 4] = ["ws-a", "ws-b", "ws-c", "ws-d"];

/// Heartbeats every workspace once a second for `secs` seconds; returns when the stream confirmed
/// each (one it did not is lost, as an agent's would be).
fn heartbeats(client: async_nats::Client, secs: u64) -> tokio::task::JoinHandle<Vec<Instant>> {
    let producer = Client::with(client, "vigil");
    tokio::spawn(async move {
        let mut stored = Vec::new();
        for _ in 0..secs {
            for id in WORKSPACES {
                if producer.publish(&beat(id)).await.is_ok() {
                    stored.push(Instant::now());
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        stored
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_node_that_leads_the_log_loses_nothing_and_accuses_nobody() {
    let mut cluster = NatsCluster::start(3);
    let client = cluster.client().await;
    let js = jetstream::new(client.clone());
    cluster.wait_ready(&js).await;
    let data = tempfile::tempdir().unwrap();
    let policy = data.path().join("policy.toml");
    std::fs::write(&policy, "ttl_min = \"8s\"\nttl_factor = 1\n").unwrap();
    let store = data.path().join("store");
    let vigil =
        Vigil::start(&cluster.urls(), &store, &["--stream-replicas", "3", "--policy", policy.to_str().unwrap()], &[]);
    let info = js.get_stream("VIGIL_IN").await.unwrap().info().await.unwrap().config.num_replicas;
    assert_eq!(info, 3, "the log is kept on three nodes");

    // Given heartbeats flowing and every workspace alive, but one that heartbeats once and stops,
    let producer = Client::with(client.clone(), "vigil");
    producer.publish(&beat("ws-quiet")).await.unwrap();
    let beating = heartbeats(client.clone(), 30);
    let started = std::time::Instant::now();
    for id in WORKSPACES.iter().chain(&["ws-quiet"]) {
        while state_of(&client, "vigil", id).await.as_deref() != Some("alive") {
            assert!(started.elapsed() < Duration::from_secs(30), "{id} never alive");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // when the node leading the input stream is killed (and comes back 15 s later),
    let leader = cluster.leader_of(&js, "VIGIL_IN").await;
    cluster.kill(leader);
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let back = Instant::now();
    cluster.start_again(leader);
    let confirmed = beating.await.unwrap();
    let stored = confirmed.len();
    wait_processed(&js, "vigil").await;
    let log = vigil.stop();

    // then every heartbeat the stream confirmed is in vigil's log, once,
    let applied = export(&store)
        .lines()
        .filter(|l| matches!(wire::decode_json(l, Stamping::Logged).unwrap().kind, InputKind::Heartbeat(_)))
        .count();
    // (The other two nodes elected a leader and went on storing while the dead one was down.)
    let while_down = confirmed.iter().filter(|t| **t > killed && **t < back).count();
    assert!(while_down > 0, "nothing was stored while a node was down: the log was not replicated");
    // vigil kept the log all along: losing a NATS node is no reason to give it up.
    assert!(!log.contains("stepped down"), "vigil stepped down because a NATS node went away:\n{log}");
    assert!(applied >= stored, "{applied} heartbeats applied of {stored} stored\nlog:\n{log}");
    let in_stream = support::bus::producer_inputs(&js, "vigil").await;
    assert_eq!(applied, in_stream, "every input in the stream applied once\nlog:\n{log}");
    // and nobody was accused because a NATS node went away — while the silent one was.
    let published = outputs(&js, "vigil").await;
    let (quiet, others): (Vec<Output>, Vec<Output>) =
        published.into_iter().partition(|o| o.workspace.as_ref().is_some_and(|w| w.as_str() == "ws-quiet"));
    let accused = accusations(&others);
    assert!(accused.is_empty(), "healthy workspaces accused after losing a NATS node: {accused:#?}\nlog:\n{log}");
    assert!(
        quiet.iter().any(|o| matches!(o.body, OutputBody::ProbeRequest { .. })),
        "the silent workspace was never suspected: vigil stopped deciding\nlog:\n{log}"
    );
}
