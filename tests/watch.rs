//! Silence nobody observed is not evidence (SPEC §1 "time", principle 5), end to end: a real
//! nats-server, `vigil serve` as a child process, producers heartbeating over plain NATS. Each
//! story takes vigil or NATS away in a way a production host does, and checks what vigil decided
//! about workspaces that never stopped heartbeating — or, for the last one, that a workspace that
//! did stop is still suspected on time:
//!
//! - vigil paused with SIGSTOP for longer than the TTL while heartbeats flow into the stream;
//! - the NATS server down for longer than the TTL (its producers' heartbeats are lost meanwhile);
//! - vigil's host clock stepped forward by 20 minutes;
//! - vigil restarted every TTL/2 while one workspace is silent: suspected one TTL after its last
//!   heartbeat, not never.
//!
//! The TTL is 8 s here (`ttl_min = "8s"`, one missed 1-second heartbeat cadence counts nothing).

mod support;

use std::process::Command;
use std::time::Duration;

use async_nats::jetstream;
use support::bus::{accusations, beat, nats, outputs, state_of, wait_processed};
use support::nats::{NatsServer, Vigil};
use vigil::client::Client;
use vigil::core::event::{OutputBody, StateName};

const TTL: Duration = Duration::from_secs(8);
const WORKSPACES: [&str; 3] = ["ws-a", "ws-b", "ws-c"];

/// `vigil serve` on `dir/store`, under the 8-second TTL, with `env`; returns once it is serving.
fn start(url: &str, dir: &std::path::Path, env: &[(&str, &str)]) -> Vigil {
    let file = dir.join("policy.toml");
    std::fs::write(&file, "ttl_min = \"8s\"\nttl_factor = 1\n").unwrap();
    Vigil::start(url, &dir.join("store"), &["--policy", file.to_str().unwrap()], env)
}

/// Heartbeats every workspace once a second for `secs` seconds, as agents do: a heartbeat that
/// cannot be published (NATS is down) is lost, not retried.
fn heartbeats(client: async_nats::Client, secs: u64) -> tokio::task::JoinHandle<()> {
    let producer = Client::with(client, "vigil");
    tokio::spawn(async move {
        for _ in 0..secs {
            for id in WORKSPACES {
                let _ = producer.publish(&beat(id)).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// Waits until vigil has applied a heartbeat of every workspace (bounded: 30 s).
async fn until_all_alive(client: &async_nats::Client) {
    let started = std::time::Instant::now();
    for id in WORKSPACES {
        while state_of(client, "vigil", id).await.as_deref() != Some("alive") {
            assert!(started.elapsed() < Duration::from_secs(30), "{id} never alive");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn signal(vigil: &Vigil, sig: &str) {
    assert!(Command::new("kill").args([sig, &vigil.pid().to_string()]).status().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vigil_paused_past_the_ttl_while_heartbeats_flow_suspects_nobody() {
    let server = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let vigil = start(&server.url(), data.path(), &[]);
    let client = nats(&server.url()).await;
    let beating = heartbeats(client.clone(), 12 + 2 * TTL.as_secs());
    until_all_alive(&client).await;

    // Given heartbeats flowing into the stream, when vigil is paused for 2.5 TTLs and resumes,
    signal(&vigil, "-STOP");
    tokio::time::sleep(TTL * 5 / 2).await;
    signal(&vigil, "-CONT");
    beating.await.unwrap();
    let js = jetstream::new(client);
    wait_processed(&js, "vigil").await;
    let log = vigil.stop();

    // then the heartbeats it finds waiting count with the time they arrived: nobody is suspected.
    let accused = accusations(&outputs(&js, "vigil").await);
    assert!(accused.is_empty(), "healthy workspaces accused after vigil's own pause: {accused:#?}\nlog:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_past_the_ttl_suspects_nobody() {
    let mut server = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let vigil = start(&server.url(), data.path(), &[]);
    let client = async_nats::ConnectOptions::new().retry_on_initial_connect().connect(server.url()).await.unwrap();
    let beating = heartbeats(client.clone(), 10 + 2 * TTL.as_secs() + TTL.as_secs());
    until_all_alive(&client).await;

    // Given heartbeats flowing, when the NATS server is down for two TTLs (heartbeats are lost),
    server.restart(TTL * 2);
    beating.await.unwrap();
    let js = jetstream::new(client);
    wait_processed(&js, "vigil").await;
    let log = vigil.stop();

    // then the outage is time nobody watched, not silence: nobody is suspected.
    let accused = accusations(&outputs(&js, "vigil").await);
    assert!(accused.is_empty(), "healthy workspaces accused after a NATS outage: {accused:#?}\nlog:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_step_on_vigils_host_suspects_nobody() {
    let server = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    // Given vigil's host clock jumping 20 minutes ahead 3 s after it starts,
    let env = [("VIGIL_TEST_CLOCK_STEP_AFTER_MS", "3000"), ("VIGIL_TEST_CLOCK_STEP_MS", "1200000")];
    let vigil = start(&server.url(), data.path(), &env);
    let client = nats(&server.url()).await;
    // when heartbeats flow on through the step,
    heartbeats(client.clone(), 3 + TTL.as_secs()).await.unwrap();
    let js = jetstream::new(client);
    wait_processed(&js, "vigil").await;
    let log = vigil.stop();

    // then the step changes nothing: the stream's clock is the time.
    let accused = accusations(&outputs(&js, "vigil").await);
    assert!(accused.is_empty(), "healthy workspaces accused after a clock step: {accused:#?}\nlog:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vigil_restarted_every_half_ttl_still_suspects_a_silent_workspace_on_time() {
    let server = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let mut vigil = start(&server.url(), data.path(), &[]);
    let client = nats(&server.url()).await;
    let producer = Client::with(client.clone(), "vigil");

    // Given one heartbeat of ws-silent and then silence,
    producer.publish(&beat("ws-silent")).await.unwrap();
    // when vigil is restarted every TTL/2 for 3 TTLs,
    for _ in 0..6 {
        tokio::time::sleep(TTL / 2).await;
        vigil.stop();
        vigil = start(&server.url(), data.path(), &[]);
    }
    let js = jetstream::new(client);
    wait_processed(&js, "vigil").await;
    let log = vigil.stop();

    // then ws-silent is suspected one TTL after its heartbeat (plus a tick's lateness), as if vigil
    // had never been away.
    let outputs = outputs(&js, "vigil").await;
    let first_seen = outputs
        .iter()
        .find(|o| o.workspace.as_ref().is_some_and(|w| w.as_str() == "ws-silent"))
        .expect("ws-silent seen")
        .at;
    let suspected = outputs
        .iter()
        .find(|o| matches!(o.body, OutputBody::StateChanged { to: Some(StateName::Suspect), .. }))
        .unwrap_or_else(|| panic!("ws-silent never suspected across vigil's restarts; log:\n{log}"))
        .at;
    let after = Duration::from_millis((suspected.millis() - first_seen.millis()) as u64);
    assert!(after >= TTL && after < TTL + Duration::from_secs(3), "suspected {after:?} after its last heartbeat");
}
