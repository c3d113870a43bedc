//! vigil on replicated streams (`stream_replicas = 3`) over a real 3-node nats-server cluster on
//! loopback: the NATS node that holds vigil's log is no longer a single point of failure. Each
//! story fails a node the way a machine fails (SIGKILL), with heartbeats flowing, and checks that
//! nothing stored is lost, vigil goes on deciding, and no healthy workspace is accused because of
//! it.
//!
//! The last story runs three vigils over three partitions and kills the owner of each partition
//! in turn (SIGKILL, leases of 4 s): every input is applied once by each partition's last owner.
//!
//! The TTL is 8 s here (`ttl_min = "8s"`), heartbeats come every second.

mod support;

use std::path::Path;
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

/// Waits until every partition is level, owned by one of `names` with one other as its standby
/// (`standbys = 1`, the default: the third waits without following).
async fn all_up(client: &async_nats::Client, names: &[&str]) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let answer = support::bus::wait_partitions_level(client, 3, names).await;
        let one_standby = |p: &serde_json::Value| {
            p["standbys"]
                .as_array()
                .is_some_and(|s| s.len() == 1 && s[0] != p["owner"] && names.iter().any(|n| s[0] == *n))
        };
        if answer["partitions"].as_array().unwrap().iter().all(one_standby) {
            return answer;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "not every vigil is up: {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Heartbeats each of `ids` once a second until `stop` is told; returns how many the stream
/// confirmed.
fn heartbeats_until(
    client: async_nats::Client,
    ids: Vec<String>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<usize> {
    let producer = Client::with(client, "vigil");
    tokio::spawn(async move {
        let mut stored = 0;
        loop {
            for id in &ids {
                stored += usize::from(producer.publish(&beat(id)).await.is_ok());
            }
            tokio::select! {
                _ = &mut stop => return stored,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_owner_of_every_partition_in_turn_applies_every_input_once_and_accuses_nobody() {
    let cluster = NatsCluster::start(3);
    let client = cluster.client().await;
    let js = jetstream::new(client.clone());
    cluster.wait_ready(&js).await;
    let data = tempfile::tempdir().unwrap();
    let policy = data.path().join("policy.toml");
    std::fs::write(&policy, "ttl_min = \"8s\"\nttl_factor = 1\nbreaker_min = 10000\nrestart_rate = 1000\nrestart_burst = 100000\nmax_restarts_in_flight = 1000\n")
        .unwrap();
    let names = ["a", "b", "c"];
    let spawn = |name: &str| {
        let args = ["--stream-replicas", "3", "--partitions", "3", "--lease", "4s", "--instance", name];
        let args = [&args[..], &["--policy", policy.to_str().unwrap()]].concat();
        Vigil::spawn(&cluster.urls(), &data.path().join(name), &args, &[])
    };
    // Given three vigils over three partitions on R3 streams, heartbeats flowing,
    let mut vigils: Vec<Option<Vigil>> = names.iter().map(|n| Some(spawn(n))).collect();
    support::bus::wait_partitions_level(&client, 3, &names).await;
    let producer = Client::with(client.clone(), "vigil");
    let (stop_beating, stop) = tokio::sync::oneshot::channel();
    let beating = heartbeats_until(client.clone(), WORKSPACES.map(String::from).to_vec(), stop);
    // when the owner of each partition in turn is killed (SIGKILL) while workspaces die, and
    // comes back,
    let mut logs = String::new();
    all_up(&client, &names).await;
    let kills_from = support::bus::last_in_stream(&js, "vigil").await;
    for partition in 0..3 {
        // (all three up: each partition's owner has one standby)
        let answer = all_up(&client, &names).await;
        let owner = answer["partitions"][partition]["owner"].as_str().unwrap().to_string();
        let i = names.iter().position(|n| *n == owner).unwrap();
        let victim = vigils[i].take().unwrap();
        logs += &format!("--- log of {owner}, killed as the owner of partition {partition}:\n{}", victim.log());
        victim.kill();
        support::bus::kill_workspaces(&producer, partition * 5, 5).await;
        let survivors: Vec<&str> = names.iter().copied().filter(|n| *n != owner).collect();
        support::bus::wait_partitions_level(&client, 3, &survivors).await;
        vigils[i] = Some(spawn(&owner));
    }
    let answer = support::bus::wait_partitions_level(&client, 3, &names).await;
    // (every restart decided is published, before anything stops),
    let started = std::time::Instant::now();
    while support::bus::restarts(&outputs(&js, "vigil").await).len() < 15 && started.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_beating.send(()).unwrap();
    assert!(beating.await.unwrap() > 0);
    for (i, vigil) in vigils.into_iter().enumerate() {
        logs += &format!("--- log of {}:\n{}", names[i], vigil.unwrap().stop());
    }

    // then every death was restarted exactly once, nothing said twice,
    support::bus::each_restarted_once(&js, 0..15, &logs).await;
    // no heartbeating workspace was accused,
    let published = outputs(&js, "vigil").await;
    let beating: Vec<Output> = published
        .into_iter()
        .filter(|o| o.workspace.as_ref().is_some_and(|w| WORKSPACES.contains(&w.as_str())))
        .collect();
    let accused = accusations(&beating);
    assert!(accused.is_empty(), "healthy workspaces accused across the takeovers: {accused:#?}\n{logs}");
    // and each partition's last owner applied every input of its partition exactly once — all of
    // them, or (a directory that joined restored from a snapshot record) all after the snapshot,
    // which was taken before the first kill.
    each_input_applied_once(&js, data.path(), &answer, kills_from, &logs).await;
}

/// Each partition's owner in `answer` applied every input the stream holds of its partition
/// exactly once, in order: all of them, or all from a snapshot taken before position `from`.
async fn each_input_applied_once(
    js: &jetstream::Context,
    data: &Path,
    answer: &serde_json::Value,
    from: u64,
    logs: &str,
) {
    let stored = support::bus::read_stream(js, "VIGIL_IN").await;
    for k in 0..3u64 {
        let owner = answer["partitions"][k as usize]["owner"].as_str().unwrap();
        let in_stream: Vec<u64> =
            stored.iter().filter(|m| m.subject.starts_with(&format!("vigil.in.{k}."))).map(|m| m.sequence).collect();
        let applied: Vec<u64> = export(&data.join(owner).join(format!("p{k}")))
            .lines()
            .map(|l| wire::decode_json(l, Stamping::Logged).unwrap())
            .filter(|i| i.kind.workspace().is_some())
            .filter_map(|i| i.stream_seq)
            .collect();
        let first_during = in_stream.iter().copied().find(|seq| *seq > from);
        let first_during = first_during.unwrap_or_else(|| panic!("partition {k} got no inputs during the story"));
        let start = applied.first().copied().unwrap_or(u64::MAX);
        assert!(start <= first_during, "partition {k}: {owner}'s log starts at {start}, after {first_during}\n{logs}");
        let expected: Vec<u64> = in_stream.into_iter().filter(|seq| *seq >= start).collect();
        assert_eq!(applied, expected, "partition {k}, last owned by {owner}\n{logs}");
    }
}

/// Three instance names rendezvous hashing gives one of three partitions each.
fn one_each() -> [&'static str; 3] {
    const NAMES: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let mut triples = Vec::new();
    for (i, x) in NAMES.iter().enumerate() {
        for (j, y) in NAMES.iter().enumerate().skip(i + 1) {
            triples.extend(NAMES.iter().skip(j + 1).map(|z| [*x, *y, *z]));
        }
    }
    let each_one = |t: &[&str; 3]| {
        (0..3).map(|k| support::bus::placed(t, k)).collect::<std::collections::BTreeSet<_>>().len() == 3
    };
    triples.into_iter().find(each_one).expect("three names placed one partition each")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_vigil_with_heartbeats_flowing_loses_nothing_says_nothing_twice_and_accuses_nobody()
{
    let cluster = NatsCluster::start(3);
    let client = cluster.client().await;
    let js = jetstream::new(client.clone());
    cluster.wait_ready(&js).await;
    let data = tempfile::tempdir().unwrap();
    let policy = data.path().join("policy.toml");
    std::fs::write(&policy, "ttl_min = \"8s\"\nttl_factor = 1\nbreaker_min = 10000\nrestart_rate = 1000\nrestart_burst = 100000\nmax_restarts_in_flight = 1000\n")
        .unwrap();
    let names = one_each();
    let spawn = |name: &str| {
        let args = ["--stream-replicas", "3", "--partitions", "3", "--lease", "4s", "--instance", name];
        let args = [&args[..], &["--policy", policy.to_str().unwrap()]].concat();
        Vigil::spawn(&cluster.urls(), &data.path().join(name), &args, &[])
    };
    // Given three vigils over three partitions on R3 streams, one partition each, and forty
    // workspaces heartbeating every second,
    let mut vigils: Vec<Option<Vigil>> = names.iter().map(|n| Some(spawn(n))).collect();
    support::bus::wait_placed(&client, 3, &names).await;
    let beating_ids: Vec<String> = (0..40).map(|i| format!("ld-{i:02}")).collect();
    let (stop_beating, stop) = tokio::sync::oneshot::channel();
    let beating = heartbeats_until(client.clone(), beating_ids.clone(), stop);
    let producer = Client::with(client.clone(), "vigil");
    let from = support::bus::last_in_stream(&js, "vigil").await;
    // when each vigil in turn is stopped (SIGTERM: a planned handover), five workspaces die while
    // it is down, and it comes back and gets its partition back,
    let mut logs = String::new();
    for (i, name) in names.iter().enumerate() {
        let stopped = vigils[i].take().unwrap().stop();
        logs += &format!("--- log of {name}, stopped in turn:\n{stopped}");
        let survivors: Vec<&str> = names.iter().copied().filter(|n| n != name).collect();
        support::bus::wait_partitions_level(&client, 3, &survivors).await;
        support::bus::kill_workspaces(&producer, i * 5, 5).await;
        vigils[i] = Some(spawn(name));
        support::bus::wait_placed(&client, 3, &names).await;
    }
    // (every restart decided is published, before anything stops),
    let started = Instant::now();
    while support::bus::restarts(&outputs(&js, "vigil").await).len() < 15 && started.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_beating.send(()).unwrap();
    assert!(beating.await.unwrap() > 0);
    let answer = support::bus::wait_partitions_level(&client, 3, &names).await;
    for (i, vigil) in vigils.into_iter().enumerate() {
        logs += &format!("--- log of {}:\n{}", names[i], vigil.unwrap().stop());
    }

    // then every death was restarted exactly once, nothing said twice,
    support::bus::each_restarted_once(&js, 0..15, &logs).await;
    // no heartbeating workspace was accused,
    let published = outputs(&js, "vigil").await;
    let beating: Vec<Output> = published
        .into_iter()
        .filter(|o| o.workspace.as_ref().is_some_and(|w| beating_ids.contains(&w.as_str().to_string())))
        .collect();
    let accused = accusations(&beating);
    assert!(accused.is_empty(), "healthy workspaces accused across the rolling restart: {accused:#?}\n{logs}");
    // and each partition's owner at the end applied every input of its partition exactly once.
    each_input_applied_once(&js, data.path(), &answer, from, &logs).await;
}
