//! Talking to a running vigil over a real nats-server, for the end-to-end tests: waiting until it
//! has committed what was published, reading its streams, exporting its log.

use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use vigil::core::event::{Input, InputKind, Output, ProbeResult, WorkspaceId};
use vigil::core::wire;

pub async fn nats(url: &str) -> async_nats::Client {
    async_nats::connect(url).await.expect("connect to the test nats-server")
}

/// Waits until vigil has committed everything in its input stream (it says how far it has read in
/// its fleet query).
pub async fn wait_processed(js: &jetstream::Context, prefix: &str) {
    let name = format!("{}_IN", prefix.to_uppercase());
    let started = Instant::now();
    loop {
        let last = js.get_stream(&name).await.unwrap().info().await.unwrap().state.last_sequence;
        // No answer, or an error answer (no owner yet, 503): vigil is starting or taking over.
        let read = match js.client().request(format!("{prefix}.query.fleet"), "".into()).await {
            Ok(reply) => serde_json::from_slice::<serde_json::Value>(&reply.payload)
                .ok()
                .and_then(|fleet| fleet["input_stream_seq"].as_u64())
                .unwrap_or(0),
            Err(_) => 0,
        };
        if read >= last {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "vigil committed {read} of {last} inputs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every message in a stream, in order: subject, headers, payload.
pub async fn read_stream(js: &jetstream::Context, name: &str) -> Vec<jetstream::message::StreamMessage> {
    let mut stream = js.get_stream(name).await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let mut all = Vec::new();
    for seq in state.first_sequence..=state.last_sequence {
        if let Ok(m) = stream.get_raw_message(seq).await {
            all.push(m);
        }
    }
    all
}

/// How many producers' inputs (`<prefix>.in.>`) the input stream holds: the rest of it is vigil's
/// own records (`<prefix>.log.>`).
pub async fn producer_inputs(js: &jetstream::Context, prefix: &str) -> usize {
    let name = format!("{}_IN", prefix.to_uppercase());
    let inputs = format!("{prefix}.in.");
    read_stream(js, &name).await.iter().filter(|m| m.subject.starts_with(&inputs)).count()
}

/// The input stream's last sequence: with vigil stopped, everything it must have acknowledged.
pub async fn last_in_stream(js: &jetstream::Context, prefix: &str) -> u64 {
    let name = format!("{}_IN", prefix.to_uppercase());
    js.get_stream(&name).await.unwrap().info().await.unwrap().state.last_sequence
}

/// Waits until a stream holds at least `n` messages, and returns them.
pub async fn wait_stream(js: &jetstream::Context, name: &str, n: usize) -> Vec<jetstream::message::StreamMessage> {
    let started = Instant::now();
    loop {
        let all = read_stream(js, name).await;
        if all.len() >= n {
            return all;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{name} holds {} messages, not {n}", all.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every output on the output stream, decoded.
pub async fn outputs(js: &jetstream::Context, prefix: &str) -> Vec<Output> {
    read_stream(js, &format!("{}_OUT", prefix.to_uppercase()))
        .await
        .iter()
        .map(|m| wire::decode_output_msgpack(&m.payload).expect("outputs decode"))
        .collect()
}

/// `vigil export` of a stopped vigil's data directory.
pub fn export(data: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["export", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A state query's answer, `None` if vigil does not know the workspace.
pub async fn state_of(client: &async_nats::Client, prefix: &str, ws: &str) -> Option<String> {
    let reply = client.request(format!("{prefix}.query.state.{ws}"), "".into()).await.unwrap();
    let value: serde_json::Value = serde_json::from_slice(&reply.payload).ok()?;
    value["state"].as_str().map(str::to_string)
}

pub fn input(kind: InputKind) -> Input {
    Input { at: vigil::client::wall_clock(), sent_at: None, id: None, stream_seq: None, kind }
}

pub fn ws(id: &str) -> WorkspaceId {
    WorkspaceId::parse(id).unwrap()
}

pub fn heartbeat(id: &str) -> Input {
    input(InputKind::Heartbeat(vigil::core::event::Heartbeat {
        workspace: ws(id),
        interval_s: Some(30),
        incarnation: None,
        active_tasks: None,
    }))
}

pub fn not_found(id: &str) -> Input {
    input(InputKind::Probe(vigil::core::event::Probe {
        workspace: ws(id),
        result: ProbeResult::NotFound,
        error: None,
        backend: Some("docker".into()),
        probe_id: None,
    }))
}

/// A restart id without its tag (`ws-a:1:<16 hex digits>` → `ws-a:1`), checking the tag is there:
/// a service's ids are tagged with its data directory's key (`vigil::core::ids`).
pub fn untagged(id: &str) -> &str {
    let (plain, tag) = id.rsplit_once(':').unwrap_or_else(|| panic!("{id} has no tag"));
    assert!(tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_hexdigit()), "{id} has no tag");
    plain
}

/// A heartbeat declaring a 1-second cadence, from a running agent (`boot-1`).
pub fn beat(id: &str) -> Input {
    input(InputKind::Heartbeat(vigil::core::event::Heartbeat {
        workspace: ws(id),
        interval_s: Some(1),
        incarnation: Some("boot-1".into()),
        active_tasks: None,
    }))
}

/// Every output that would have cost a healthy workspace something: a suspicion, a probe request,
/// a restart, a death.
pub fn accusations(outputs: &[Output]) -> Vec<String> {
    use vigil::core::event::{OutputBody, StateName};
    outputs
        .iter()
        .filter(|o| match &o.body {
            OutputBody::StateChanged { to, .. } => !matches!(to, Some(StateName::Alive)),
            OutputBody::ProbeRequest { .. } | OutputBody::Restart { .. } => true,
            _ => false,
        })
        .map(|o| format!("{} {:?} {:?}", o.at, o.workspace, o.body))
        .collect()
}

/// A nats-server, a client of it, a producer on the `vigil` prefix, and a directory for data
/// directories and a vigil configuration file (`config`, not written yet).
pub struct World {
    pub server: super::nats::NatsServer,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub producer: vigil::client::Client,
    pub dir: tempfile::TempDir,
    pub config: std::path::PathBuf,
}

impl World {
    pub async fn new() -> World {
        let server = super::nats::NatsServer::start();
        let client = nats(&server.url()).await;
        let js = jetstream::new(client.clone());
        let producer = vigil::client::Client::with(client.clone(), "vigil");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("vigil.toml");
        World { server, client, js, producer, dir, config }
    }
}

/// Each of the workspaces `deaths` got exactly one restart command, and nothing was said twice.
pub async fn each_restarted_once(js: &jetstream::Context, deaths: std::ops::Range<usize>, logs: &str) {
    let published = outputs(js, "vigil").await;
    let expected: std::collections::BTreeMap<String, usize> = deaths.map(|i| (format!("ws-{i:02}:1"), 1)).collect();
    assert_eq!(restarts(&published), expected, "{logs}");
    let twice = said_twice(&published);
    assert!(twice.is_empty(), "said twice: {twice:#?}\n{logs}");
}

/// Kills `n` workspaces from `first` on: a definitive not-found probe of each.
pub async fn kill_workspaces(producer: &vigil::client::Client, first: usize, n: usize) {
    for i in first..first + n {
        producer.publish(&not_found(&format!("ws-{i:02}"))).await.unwrap();
    }
}

/// How many restart commands each workspace got.
pub fn restarts(outputs: &[Output]) -> std::collections::BTreeMap<String, usize> {
    let mut seen = std::collections::BTreeMap::new();
    for o in outputs {
        if let vigil::core::event::OutputBody::Restart { restart_id, .. } = &o.body {
            *seen.entry(untagged(restart_id).to_string()).or_default() += 1;
        }
    }
    seen
}

/// Outputs that say the same thing twice under different ids (two deciders would).
pub fn said_twice(outputs: &[Output]) -> Vec<String> {
    let mut seen = std::collections::BTreeMap::new();
    for o in outputs {
        let mut body = format!("{:?} {:?}", o.workspace, o.body);
        if let vigil::core::event::OutputBody::Restart { .. } = o.body {
            body = format!("{:?} restart", o.workspace);
        }
        *seen.entry(body).or_insert(0) += 1;
    }
    seen.into_iter().filter(|(_, n)| *n > 1).map(|(b, n)| format!("{n}x {b}")).collect()
}

/// Waits until each of the `partitions` partitions has an owner named in `owners`, and that owner
/// has applied everything in its partition's log (its lag is 0); returns the partitions query's
/// answer.
pub async fn wait_partitions_level(
    client: &async_nats::Client,
    partitions: usize,
    owners: &[&str],
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let answer = match client.request("vigil.query.partitions", "".into()).await {
            Ok(reply) => serde_json::from_slice::<serde_json::Value>(&reply.payload).unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        let list = answer["partitions"].as_array().cloned().unwrap_or_default();
        let level = list.len() == partitions
            && list
                .iter()
                .all(|p| p["owner"].as_str().is_some_and(|o| owners.contains(&o)) && p["lag"].as_u64() == Some(0));
        if level {
            return answer;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "partitions not level with {owners:?}: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The instance rendezvous hashing over `instances` makes partition `k`'s owner.
pub fn placed(instances: &[&str], k: u32) -> String {
    vigil::bus::placement::rendezvous(instances.iter().copied(), k).unwrap().to_string()
}

/// Waits until each of the `partitions` partitions is owned as rendezvous hashing over
/// `instances` places it, and level with its log.
pub async fn wait_placed(client: &async_nats::Client, partitions: u32, instances: &[&str]) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let answer = wait_partitions_level(client, partitions as usize, instances).await;
        let owners: Vec<String> = answer["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["owner"].as_str().unwrap_or_default().to_string())
            .collect();
        let expected: Vec<String> = (0..partitions).map(|k| placed(instances, k)).collect();
        if owners == expected {
            return answer;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "owners {owners:?}, placed {expected:?}: {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
