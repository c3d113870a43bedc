//! Partitions (SPEC §4 "Partitions"), with real parts.
//!
//! - The partition of a workspace, as vigil and producers compute it (`Subjects::partition`), is
//!   the one a real nats-server's subject transform `{{partition(P,2)}}` stores its inputs under:
//!   for 10 000 workspace ids of every shape the contract allows (1–128 of `[A-Za-z0-9_-]`), and
//!   for a partition count that is not a power of two as well as 16.
//! - Two vigils over four partitions: the partitions spread over them by rendezvous hashing,
//!   each is owned once and folded on its own, and taken over when its owner is killed; a vigil
//!   that joins gets its share by planned handover and gives it back when it leaves; every death
//!   is restarted once.
//! - The number of partitions is fixed for a deployment: another is refused, by name. Two
//!   processes under one instance name are told so.
//! - The breaker is the fleet's, whichever partitions the deaths fall in: a cascade spread over
//!   four partitions owned by two vigils opens it after the third restart, with one alert.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use support::bus::{World, each_restarted_once, kill_workspaces, nats, placed, read_stream, wait_partitions_level};
use support::nats::{NatsServer, Vigil};
use support::rng::Rng;
use vigil::client::Subjects;
use vigil::core::event::{AlertKind, Input, InputKind, Output, OutputBody, Reason, WorkspaceId};

const IDS: usize = 10_000;
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

/// 10 000 distinct workspace ids: short and long, every character the contract allows.
fn ids() -> Vec<String> {
    let mut rng = Rng(12);
    let mut ids = std::collections::BTreeSet::new();
    while ids.len() < IDS {
        let len = 1 + rng.below(if ids.len() % 10 == 0 { 128 } else { 24 });
        let id: String = (0..len).map(|_| ALPHABET[rng.below(ALPHABET.len())] as char).collect();
        ids.insert(id);
    }
    ids.into_iter().collect()
}

/// Publishes `p.in.heartbeat.<id>` for every id to a stream that maps it to
/// `p.in.<partition>.heartbeat.<id>`; returns the partition the server stored each id under.
async fn stored_partitions(js: &jetstream::Context, partitions: u32, ids: &[String]) -> BTreeMap<String, u32> {
    let name = format!("P{partitions}");
    let config = stream::Config {
        name: name.clone(),
        subjects: vec![format!("p{partitions}.in.*.*")],
        subject_transform: Some(stream::SubjectTransform {
            source: format!("p{partitions}.in.*.*"),
            destination: format!(
                "p{partitions}.in.{{{{partition({partitions},2)}}}}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}"
            ),
        }),
        ..Default::default()
    };
    let stream = js.create_stream(config).await.unwrap();
    for window in ids.chunks(1000) {
        let mut acks = Vec::new();
        for id in window {
            acks.push(js.publish(format!("p{partitions}.in.heartbeat.{id}"), "x".into()).await.unwrap());
        }
        for ack in acks {
            ack.await.unwrap();
        }
    }
    let consumer = stream.create_consumer(jetstream::consumer::pull::OrderedConfig::default()).await.unwrap();
    let mut messages = consumer.messages().await.unwrap().take(ids.len());
    let mut stored = BTreeMap::new();
    while let Some(m) = messages.next().await {
        let m = m.unwrap();
        let tokens: Vec<&str> = m.subject.as_str().split('.').collect();
        assert_eq!(tokens.len(), 5, "{}", m.subject);
        stored.insert(tokens[4].to_string(), tokens[2].parse::<u32>().unwrap());
    }
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vigils_partition_of_a_workspace_is_the_servers_for_ten_thousand_ids() {
    let server = NatsServer::start();
    let js = jetstream::new(nats(&server.url()).await);
    let ids = ids();
    for partitions in [16, 7] {
        // Given the server's partitions of 10 000 ids,
        let stored = stored_partitions(&js, partitions, &ids).await;
        assert_eq!(stored.len(), IDS);
        // then vigil computes every one of them alike.
        let differ: Vec<String> = ids
            .iter()
            .filter(|id| Subjects::partition(&WorkspaceId::parse(id).unwrap(), partitions) != stored[*id])
            .map(|id| {
                format!(
                    "{id}: vigil {}, server {}",
                    Subjects::partition(&WorkspaceId::parse(id).unwrap(), partitions),
                    stored[id]
                )
            })
            .collect();
        assert!(
            differ.is_empty(),
            "{} of {IDS} differ with {partitions} partitions: {:?}",
            differ.len(),
            &differ[..differ.len().min(5)]
        );
        // (and the ids spread over every partition.)
        let used: std::collections::BTreeSet<u32> = stored.values().copied().collect();
        assert_eq!(used.len(), partitions as usize);
    }
}

/// Restarts out of the way of the breaker and the cap: these stories are about who decides.
const POLICY: &str =
    "breaker_min = 10000\nrestart_rate = 1000\nrestart_burst = 100000\nmax_restarts_in_flight = 1000\n";

fn start(url: &str, dir: &std::path::Path, name: &str, partitions: u32) -> Vigil {
    start_with(url, dir, name, partitions, POLICY)
}

fn start_with(url: &str, dir: &std::path::Path, name: &str, partitions: u32, policy: &str) -> Vigil {
    let file = dir.join(format!("policy-{name}.toml"));
    std::fs::write(&file, policy).unwrap();
    let policy = file;
    let partitions = partitions.to_string();
    let args = ["--policy", policy.to_str().unwrap(), "--instance", name, "--lease", "4s", "--partitions", &partitions];
    Vigil::spawn(url, &dir.join(name), &args, &[])
}

/// Two instance names that rendezvous hashing gives two of four partitions each.
fn even_pair() -> (&'static str, &'static str) {
    let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let pairs = names.iter().flat_map(|x| names.iter().filter(move |y| *x < **y).map(move |y| (*x, *y)));
    let even = |&(x, y): &(&str, &str)| (0..4).filter(|k| placed(&[x, y], *k) == x).count() == 2;
    pairs.into_iter().find(even).expect("an evenly placed pair of names")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_partitions_spread_over_two_vigils_and_are_taken_over_when_their_owner_dies() {
    let World { server, client, js, producer, dir, .. } = World::new().await;
    let (x, y) = even_pair();

    // Given two vigils over four partitions, each owning the partitions rendezvous hashing gives it
    // (the other following them),
    let a = start(&server.url(), dir.path(), x, 4);
    let b = start(&server.url(), dir.path(), y, 4);
    let started = std::time::Instant::now();
    let answer = loop {
        // (each owner sees the other up within a quarter of the lease)
        let answer = support::bus::wait_placed(&client, 4, &[x, y]).await;
        let listed = |p: &serde_json::Value| p["standbys"].as_array().is_some_and(|s| s.len() == 1);
        if answer["partitions"].as_array().unwrap().iter().all(listed) || started.elapsed() > Duration::from_secs(10) {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (k, p) in answer["partitions"].as_array().unwrap().iter().enumerate() {
        let other = if p["owner"] == x { y } else { x };
        assert_eq!(p["partition"].as_u64(), Some(k as u64), "{answer}");
        assert_eq!(p["standbys"], serde_json::json!([other]), "{answer}");
    }
    // when twenty workspaces die, one of the vigils is killed, and twenty more die,
    kill_workspaces(&producer, 0, 20).await;
    wait_partitions_level(&client, 4, &[x, y]).await;
    a.kill();
    // (while the killed vigil's partitions have no owner, their state queries are answered by the
    // standby, which says so),
    let orphan = (0..20)
        .map(|i| format!("ws-{i:02}"))
        .find(|ws| placed(&[x, y], Subjects::partition(&WorkspaceId::parse(ws).unwrap(), 4)) == x)
        .expect("a dead workspace in the killed vigil's partitions");
    let started = std::time::Instant::now();
    let view = loop {
        // A request the server hands to the killed vigil's subscription before it has noticed
        // the connection is gone gets no answer: that one is asked again, briefly bounded.
        let request = client.request(format!("vigil.query.state.{orphan}"), "".into());
        let view: serde_json::Value = match tokio::time::timeout(Duration::from_millis(500), request).await {
            Ok(Ok(reply)) => serde_json::from_slice(&reply.payload).unwrap_or_default(),
            _ => serde_json::Value::Null,
        };
        if view["served_by"]["role"] == "standby" || started.elapsed() > Duration::from_secs(3) {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(view["served_by"]["role"], "standby", "{view}");
    assert_eq!(view["served_by"]["instance"], y, "{view}");
    assert!(view["served_by"]["behind"].is_u64() && view["workspace"] == orphan.as_str(), "{view}");
    kill_workspaces(&producer, 20, 20).await;
    let answer = wait_partitions_level(&client, 4, &[y]).await;
    // (and once the standby owns them, it answers as their owner),
    let reply = client.request(format!("vigil.query.state.{orphan}"), "".into()).await.unwrap();
    let view: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!((view["served_by"]["role"].as_str(), view["served_by"]["instance"].as_str()), (Some("owner"), Some(y)));
    // (and nothing of another shape is stored where no partition would read it: a heartbeat
    // published straight onto a partition's subject, past the transform, and subjects the
    // transform does not map are refused by the server, not kept unread),
    let beat = vigil::core::wire::encode_msgpack(&support::bus::heartbeat("ws-00"));
    let input_stream = js.get_stream("VIGIL_IN").await.unwrap();
    for subject in
        ["vigil.in.1.heartbeat.ws-00", "vigil.in.heartbeat", "vigil.in.a.b.c", "vigil.log.x.tick", "vigil.log.4.tick"]
    {
        let refused = match js.publish(subject, beat.clone().into()).await {
            Ok(ack) => ack.await.is_err(),
            Err(_) => true,
        };
        assert!(refused, "{subject} was accepted");
        assert!(input_stream.get_last_raw_message_by_subject(subject).await.is_err(), "{subject} was stored");
    }
    // (the fleet is the sum of the partitions),
    let fleet: serde_json::Value =
        serde_json::from_slice(&client.request("vigil.query.fleet", "".into()).await.unwrap().payload).unwrap();
    assert_eq!(fleet["partitions"].as_array().map(Vec::len), Some(4), "{fleet}");
    assert_eq!(fleet["workspaces"], 40, "{fleet}");
    let log = b.stop();

    // then the survivor took over the killed one's two partitions,
    assert_eq!(log.matches("taking over from another instance").count(), 2, "{answer}\n{log}");
    // each input was stored under its workspace's partition, and folded in that partition's own
    // data directory,
    let stored = read_stream(&js, "VIGIL_IN").await;
    let mut inputs = 0;
    for m in stored.iter().filter(|m| m.subject.starts_with("vigil.in.")) {
        let tokens: Vec<&str> = m.subject.split('.').collect();
        let ws = WorkspaceId::parse(tokens[4]).unwrap();
        let stored_under = tokens[2].parse::<u32>().unwrap();
        assert_eq!(stored_under, Subjects::partition(&ws, 4), "{}", m.subject);
        inputs += 1;
    }
    assert_eq!(inputs, 40);
    for k in 0..4 {
        assert!(dir.path().join(y).join(format!("p{k}")).is_dir(), "{y}'s partition {k}");
    }
    // and each workspace was restarted exactly once, nothing said twice.
    each_restarted_once(&js, 0..40, &format!("log of {y}:\n{log}")).await;

    // `vigil export` reads one partition's log, or all of them merged in the stream's order;
    // (`vigil <command> --data-dir <y's directory> <extra>`: whether it succeeded, stdout, stderr)
    let run = |command: &str, extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args([command, "--data-dir"])
            .arg(dir.path().join(y))
            .args(extra)
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let export = |extra: &[&str]| run("export", extra);
    let seqs = |jsonl: &str| -> Vec<u64> {
        jsonl
            .lines()
            .filter_map(|l| vigil::core::wire::decode_json(l, vigil::core::wire::Stamping::Logged).unwrap().stream_seq)
            .collect()
    };
    let (ok, all, _) = export(&[]);
    assert!(ok);
    let all = seqs(&all);
    assert!(all.windows(2).all(|w| w[0] < w[1]), "merged in stream order, each record once: {all:?}");
    let mut parts = Vec::new();
    for k in 0..4 {
        let (ok, one, _) = export(&["--partition", &k.to_string()]);
        assert!(ok);
        parts.extend(seqs(&one));
    }
    parts.sort_unstable();
    // (every partition's log holds every partition's death declarations: once in the merge)
    parts.dedup();
    assert_eq!(parts, all, "the partitions' logs are the merged export");
    // a partition it does not hold is named.
    let (ok, _, stderr) = export(&["--partition", "9"]);
    assert!(!ok && stderr.contains("holds no partition 9"), "{stderr}");
    // `vigil inspect` shows every partition in one JSON document, and finds a workspace in its own.
    let inspect = |extra: &[&str]| {
        let (ok, stdout, stderr) = run("inspect", extra);
        assert!(ok, "{stderr}");
        stdout
    };
    let all: serde_json::Value = serde_json::from_str(&inspect(&["--json"])).unwrap();
    let parts = all["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 4);
    let tracked: u64 = parts.iter().map(|p| p["fleet"]["workspaces"].as_u64().unwrap()).sum();
    assert_eq!(tracked, 40, "{all}");
    assert!(inspect(&["ws-00"]).contains("workspace        ws-00"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_spread_to_a_vigil_that_joins_and_come_back_when_it_leaves() {
    let World { server, client, js, producer, dir, .. } = World::new().await;
    let (x, y) = even_pair();
    // Given one vigil owning all four partitions,
    let a = start(&server.url(), dir.path(), x, 4);
    support::bus::wait_placed(&client, 4, &[x]).await;
    kill_workspaces(&producer, 0, 10).await;
    // when a second one joins, the partitions rendezvous hashing gives it are handed over to it
    // (after a lease of it being up: hysteresis),
    let joined = std::time::Instant::now();
    let b = start(&server.url(), dir.path(), y, 4);
    kill_workspaces(&producer, 10, 10).await;
    support::bus::wait_placed(&client, 4, &[x, y]).await;
    let spread_in = joined.elapsed();
    kill_workspaces(&producer, 20, 10).await;
    wait_partitions_level(&client, 4, &[x, y]).await;
    // and when it leaves (SIGTERM), they come back by planned handover,
    let left = std::time::Instant::now();
    let log_b = b.stop();
    support::bus::wait_placed(&client, 4, &[x]).await;
    let back_in = left.elapsed();
    kill_workspaces(&producer, 30, 10).await;
    wait_partitions_level(&client, 4, &[x]).await;
    let log_a = a.stop();

    // then each move was a planned handover, level with the log,
    let logs = format!("log of {x}:\n{log_a}\nlog of {y}:\n{log_b}");
    assert_eq!(log_a.matches("handed the partition over").count(), 2, "{logs}");
    assert_eq!(log_b.matches("taking over from another instance").count(), 2, "{logs}");
    assert_eq!(log_a.matches("taking over from another instance").count(), 2, "{logs}");
    assert!(spread_in < Duration::from_secs(20), "spread after {spread_in:?}");
    assert!(back_in < Duration::from_secs(5), "back after {back_in:?}\n{logs}");
    // and every death was restarted exactly once, nothing said twice.
    each_restarted_once(&js, 0..40, &logs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_number_of_partitions_on_an_existing_deployment_is_refused() {
    let World { server, client, dir, .. } = World::new().await;
    // Given a deployment of four partitions,
    let a = start(&server.url(), dir.path(), "a", 4);
    wait_partitions_level(&client, 4, &["a"]).await;
    drop(a.stop());
    // when a vigil is started on it with two,
    let mut b = start(&server.url(), dir.path(), "b", 2);
    let status = b.wait_exit(Duration::from_secs(30));
    // then it refuses to start, and says why and what to do.
    assert!(!status.success());
    let log = b.log();
    assert!(log.contains("is split into 4 partitions, but `partitions` is 2"), "{log}");
    assert!(log.contains("fixed for a deployment"), "{log}");
    // So does one configured with a single partition,
    let mut c = Vigil::spawn(&server.url(), &dir.path().join("c"), &["--partitions", "1"], &[]);
    assert!(!c.wait_exit(Duration::from_secs(30)).success());
    assert!(c.log().contains("is split into 4 partitions, but `partitions` is 1"), "{}", c.log());
    // while one that configures none takes the deployment's four.
    let d = Vigil::spawn_unpartitioned(&server.url(), &dir.path().join("d"), &["--instance", "d"], &[]);
    wait_partitions_level(&client, 4, &["d"]).await;
    let log = d.stop();
    assert!(log.contains("partitions not configured: the deployment's") && log.contains("partitions=4"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_deployment_has_sixteen_partitions_and_an_old_one_keeps_its_one() {
    // Given no partition count configured anywhere,
    let World { server, client, js, dir, .. } = World::new().await;
    let unset = |name: &str| {
        Vigil::spawn_unpartitioned(&server.url(), &dir.path().join(name), &["--instance", name, "--lease", "4s"], &[])
    };
    // when vigil starts a new deployment, it is split into sixteen partitions (every one owned),
    let a = unset("a");
    wait_partitions_level(&client, 16, &["a"]).await;
    let log = a.stop();
    assert!(log.contains("a new deployment's default") && log.contains("partitions=16"), "{log}");
    let stream = js.get_stream("VIGIL_IN").await.unwrap().info().await.unwrap().config.clone();
    assert_eq!(stream.metadata.get("vigil_partitions").map(String::as_str), Some("16"));
    // and a deployment of one partition (started when that was the default) keeps its one.
    let old = World::new().await;
    let one = Vigil::spawn(&old.server.url(), &old.dir.path().join("old"), &["--instance", "old"], &[]);
    wait_partitions_level(&old.client, 1, &["old"]).await;
    drop(one.stop());
    let again = Vigil::spawn_unpartitioned(&old.server.url(), &old.dir.path().join("old"), &["--instance", "old"], &[]);
    wait_partitions_level(&old.client, 1, &["old"]).await;
    let log = again.stop();
    assert!(log.contains("the deployment's") && log.contains("partitions=1"), "{log}");
    assert!(!old.dir.path().join("old").join("p0").exists(), "its data directory is not split");
    // But should its stream be lost and a new instance start a deployment of sixteen first, the
    // old directory is refused, not silently split and its state left behind.
    old.js.delete_stream("VIGIL_IN").await.unwrap();
    let fresh =
        Vigil::spawn_unpartitioned(&old.server.url(), &old.dir.path().join("fresh"), &["--instance", "fresh"], &[]);
    wait_partitions_level(&old.client, 16, &["fresh"]).await;
    let mut refused =
        Vigil::spawn_unpartitioned(&old.server.url(), &old.dir.path().join("old"), &["--instance", "old"], &[]);
    assert!(!refused.wait_exit(Duration::from_secs(30)).success());
    assert!(refused.log().contains("holds a one-partition deployment's state"), "{}", refused.log());
    assert!(!old.dir.path().join("old").join("p0").exists(), "nothing was started inside it");
    drop(fresh.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_vigils_started_by_mistake_under_one_name_share_the_partitions_without_a_word_said_twice() {
    let World { server, client, js, producer, dir, .. } = World::new().await;
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let twin = |dir: &std::path::Path| {
        let args = ["--policy", policy.to_str().unwrap(), "--instance", "twin", "--lease", "4s", "--partitions", "4"];
        Vigil::spawn(&server.url(), dir, &args, &[])
    };
    // Given two vigils started by mistake under one name (two on one host, both named after it),
    // each with its own data directory, over four partitions,
    let first = twin(&dir.path().join("first"));
    let second = twin(&dir.path().join("second"));
    wait_partitions_level(&client, 4, &["twin"]).await;
    // (each is told, within a few renewals of the members entry, that the other shares its name),
    for twin in [&first, &second] {
        twin.wait_for("another process is up under this instance's name", Duration::from_secs(10));
    }
    // when twenty workspaces die, the one that took more of the leases is killed (SIGKILL), and
    // twenty more die,
    kill_workspaces(&producer, 0, 20).await;
    wait_partitions_level(&client, 4, &["twin"]).await;
    let took = |log: &str| log.matches("took the lease").count();
    let (victim, survivor) = if took(&first.log()) >= took(&second.log()) { (first, second) } else { (second, first) };
    let victim_log = victim.log();
    victim.kill();
    kill_workspaces(&producer, 20, 20).await;
    wait_partitions_level(&client, 4, &["twin"]).await;
    let started = std::time::Instant::now();
    while support::bus::restarts(&support::bus::outputs(&js, "vigil").await).len() < 40
        && started.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let survivor_log = survivor.stop();
    let logs = format!("log of the killed one:\n{victim_log}\nlog of the survivor:\n{survivor_log}");

    // then each partition had one owner at a time: the four leases were taken once each at the
    // start, and the killed one's (at least two of them) taken over by the other,
    let (killed_held, taken_over) =
        (took(&victim_log), survivor_log.matches("taking over from another instance").count());
    assert!(killed_held >= 2, "{logs}");
    assert_eq!((killed_held + took(&survivor_log) - taken_over, taken_over), (4, killed_held), "{logs}");
    assert!(!logs.contains("stepped down"), "{logs}");
    // and every death was restarted exactly once, nothing said twice.
    each_restarted_once(&js, 0..40, &logs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vigil_that_waits_without_following_takes_over_when_the_owner_and_its_standby_die_together() {
    let World { server, client, js, producer, dir, .. } = World::new().await;
    // Given three vigils over one partition with one standby (the default): the preferred owner
    // owns it, the next in rendezvous order follows it, and the third waits without following,
    let order = vigil::bus::placement::ranked(["a", "b", "c"], 0);
    let (owner, standby, waiting) = (order[0], order[1], order[2]);
    let o = start(&server.url(), dir.path(), owner, 1);
    support::bus::wait_placed(&client, 1, &[owner]).await;
    let s = start(&server.url(), dir.path(), standby, 1);
    let w = start(&server.url(), dir.path(), waiting, 1);
    let started = std::time::Instant::now();
    let answer = loop {
        let answer = wait_partitions_level(&client, 1, &[owner]).await;
        if answer["partitions"][0]["standbys"] == serde_json::json!([standby]) && w.log().contains("without following")
            || started.elapsed() > Duration::from_secs(20)
        {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(answer["partitions"][0]["standbys"], serde_json::json!([standby]), "{answer}");
    // when twenty workspaces die, the owner and its standby are killed together (SIGKILL), and
    // twenty more die,
    kill_workspaces(&producer, 0, 20).await;
    wait_partitions_level(&client, 1, &[owner]).await;
    let logs = format!("log of {owner}:\n{}\nlog of {standby}:\n{}", o.log(), s.log());
    // (the third not following at that moment)
    let before = w.log();
    let not_following = before.rfind("waiting without following") > before.rfind("standby: following the log");
    assert!(not_following, "{logs}\nlog of {waiting}:\n{before}");
    o.kill();
    s.kill();
    kill_workspaces(&producer, 20, 20).await;
    wait_partitions_level(&client, 1, &[waiting]).await;
    let started = std::time::Instant::now();
    while support::bus::restarts(&support::bus::outputs(&js, "vigil").await).len() < 40
        && started.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = w.stop();
    let logs = format!("{logs}\nlog of {waiting}:\n{log}");

    // then the third took over, once it had caught up on what the owner had applied,
    assert!(log.contains("taking over from another instance"), "{logs}");
    // and every death was restarted exactly once — none of the owner's restarts again — and
    // nothing said twice.
    each_restarted_once(&js, 0..40, &logs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cascade_over_four_partitions_and_two_vigils_opens_one_breaker_for_the_fleet() {
    let World { server, client, js, producer, dir, .. } = World::new().await;
    let (x, y) = even_pair();
    // Given two vigils over four partitions with the default breaker — max(3, 10 %) declarations
    // within 30 s — and twenty workspaces heartbeating,
    let a = start_with(&server.url(), dir.path(), x, 4, "");
    let b = start_with(&server.url(), dir.path(), y, 4, "");
    support::bus::wait_placed(&client, 4, &[x, y]).await;
    let healthy: Vec<String> = (10..30).map(|i| format!("ws-{i:02}")).collect();
    for ws in &healthy {
        producer.publish(&support::bus::heartbeat(ws)).await.unwrap();
    }
    // when six workspaces in every partition are found "not found" at once (one sick observer:
    // each partition alone sees at most two, below any threshold of its own),
    let dying: Vec<u32> =
        (0..6).map(|i| Subjects::partition(&WorkspaceId::parse(&format!("ws-{i:02}")).unwrap(), 4)).collect();
    assert!((0..4).all(|k| dying.contains(&k)), "the six fall in every partition: {dying:?}");
    kill_workspaces(&producer, 0, 6).await;
    wait_partitions_level(&client, 4, &[x, y]).await;
    // then the first three declarations in the stream are restarted and the other three held,
    let started = std::time::Instant::now();
    loop {
        let published = support::bus::outputs(&js, "vigil").await;
        let held = published
            .iter()
            .filter(|o| matches!(o.body, OutputBody::Suppressed { reason: Reason::BreakerOpen, .. }))
            .count();
        if held >= 3 || started.elapsed() > Duration::from_secs(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (la, lb) = (a.stop(), b.stop());
    let logs = format!("{x}:\n{la}\n{y}:\n{lb}");
    // (everything published, up to the vigils' stop)
    let published = support::bus::outputs(&js, "vigil").await;
    let restarted = support::bus::restarts(&published);
    assert_eq!(restarted.len(), 3, "{restarted:?}\n{logs}");
    assert!(restarted.values().all(|n| *n == 1), "{restarted:?}");
    let held: Vec<&Output> = published
        .iter()
        .filter(|o| matches!(o.body, OutputBody::Suppressed { reason: Reason::BreakerOpen, .. }))
        .collect();
    assert_eq!(held.len(), 3, "{published:#?}");
    // in the order the stream holds their declarations,
    let stored = read_stream(&js, "VIGIL_IN").await;
    let declared: Vec<String> = stored
        .iter()
        .filter(|m| m.subject.starts_with("vigil.log.fleet."))
        .map(|m| match vigil::core::wire::decode_msgpack(&m.payload, vigil::core::wire::Stamping::Logged) {
            Ok(Input { kind: InputKind::Declaration(d), .. }) => d.workspace.to_string(),
            other => panic!("{}: {other:?}", m.subject),
        })
        .collect();
    assert_eq!(declared.len(), 6, "each declaration appended once: {declared:?}");
    let first_three: std::collections::BTreeSet<String> = declared[..3].iter().map(|w| format!("{w}:1")).collect();
    assert_eq!(restarted.keys().cloned().collect::<std::collections::BTreeSet<_>>(), first_three);
    // with one alert for the fleet, from partition 0's owner,
    let alerts: Vec<&Output> =
        published.iter().filter(|o| matches!(o.body, OutputBody::Alert { kind: AlertKind::BreakerOpen, .. })).collect();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    // and each partition's export, replayed on its own, decides exactly what was published —
    // the declarations of the others included, the fleet's breaker is in every partition's log;
    let mut replayed = std::collections::BTreeSet::new();
    for k in 0..4 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["export", "--partition", &k.to_string(), "--data-dir"])
            .arg(dir.path().join(y))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut engine = vigil::core::Engine::new(vigil::core::Policy::default());
        let mut decided = Vec::new();
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            engine.apply(
                &vigil::core::wire::decode_json(line, vigil::core::wire::Stamping::Logged).unwrap(),
                &mut decided,
            );
        }
        replayed.extend(decided.iter().map(|o| format!("{} {:?} {:?}", o.id, o.workspace, o.body)));
    }
    let said: std::collections::BTreeSet<String> =
        published.iter().map(|o| format!("{} {:?} {:?}", o.id, o.workspace, o.body)).collect();
    assert_eq!(replayed, said, "the partitions' replays are what was published");
    // and nothing said twice; no heartbeating workspace was touched.
    let twice = support::bus::said_twice(&published);
    assert!(twice.is_empty(), "{twice:#?}");
    assert!(
        published.iter().all(|o| o.workspace.as_ref().is_none_or(|w| !healthy.contains(&w.to_string()))
            || matches!(o.body, OutputBody::StateChanged { reason: Reason::FirstSeen, .. })),
        "a healthy workspace was touched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_that_dies_with_a_declaration_unappended_leaves_it_to_its_successor() {
    let World { server, client, js, producer, dir, .. } = World::new().await;
    // Given two vigils over two partitions, `x` preferred for both and `y` following both, and
    // `x` set to abort the moment it has made a death declaration, before appending it,
    let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let (x, y) = names
        .iter()
        .flat_map(|x| names.iter().map(move |y| (*x, *y)))
        .find(|(x, y)| x != y && (0..2).all(|k| placed(&[x, y], k) == *x))
        .expect("a pair of names whose first is preferred for both partitions");
    let policy = dir.path().join("policy-x.toml");
    std::fs::write(&policy, "").unwrap();
    let args = ["--policy", policy.to_str().unwrap(), "--instance", x, "--lease", "4s", "--partitions", "2"];
    let mut a = Vigil::spawn(&server.url(), &dir.path().join(x), &args, &[("VIGIL_TEST_ABORT_ON_DECLARATION", "1")]);
    let b = start_with(&server.url(), dir.path(), y, 2, "");
    let started = std::time::Instant::now();
    loop {
        let answer = support::bus::wait_placed(&client, 2, &[x, y]).await;
        let followed = |p: &serde_json::Value| p["standbys"] == serde_json::json!([y]);
        if answer["partitions"].as_array().unwrap().iter().all(followed) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{y} does not follow both partitions: {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // when a workspace dies and its partition's owner declares it, then dies itself,
    kill_workspaces(&producer, 0, 1).await;
    let exit = a.wait_exit(Duration::from_secs(30));
    assert!(!exit.success(), "{x} was to abort at its declaration");
    wait_partitions_level(&client, 2, &[y]).await;
    let started = std::time::Instant::now();
    while support::bus::restarts(&support::bus::outputs(&js, "vigil").await).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(20), "no restart after the takeover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = b.stop();
    // then the successor, which had folded the same declaration, appended it — once, as its own
    // record — and the restart went out once under the id the owner would have given it.
    let declarations: Vec<_> =
        read_stream(&js, "VIGIL_IN").await.into_iter().filter(|m| m.subject.starts_with("vigil.log.fleet.")).collect();
    assert_eq!(declarations.len(), 1, "{log}");
    assert!(log.contains("taking over from another instance"), "{log}");
    let k = declarations[0].subject.rsplit('.').next().unwrap();
    let epoch = js
        .get_stream("VIGIL_IN")
        .await
        .unwrap()
        .get_last_raw_message_by_subject(&format!("vigil.log.{k}.epoch"))
        .await
        .unwrap();
    assert!(declarations[0].sequence > epoch.sequence, "appended under {y}'s epoch, after its takeover");
    each_restarted_once(&js, 0..1, &format!("log of {y}:\n{log}")).await;
}
