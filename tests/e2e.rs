//! vigil end to end: a real `nats-server` with JetStream (started here, on a free loopback port,
//! storing in a temp dir), `vigil serve` as a child process on a real sled directory, and producers
//! and consumers talking plain NATS. Each test tells one story:
//!
//! - every incident in `replays/`, published over NATS, yields outputs whose export replays to the
//!   same bytes;
//! - a restart command reaches a consumer exactly once, however vigil is killed around it;
//! - a NATS server restart in the middle of a stream loses nothing;
//! - a mass death goes through the disruption modes: the burst at once, the rest held, then each
//!   restarted on its turn's fresh probe;
//! - bad inputs land in the DLQ with their reasons, and the service goes on; queries answer;
//! - with user/password auth, vigil works with the credentials and refuses to start without.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;
use support::bus::{
    each_restarted_once, export, heartbeat, kill_workspaces, last_in_stream, nats, not_found, outputs, restarts,
    state_of, untagged, wait_processed, wait_stream,
};
use support::nats::{NatsServer, Vigil};
use vigil::client::Client;
use vigil::core::event::{Input, InputKind, Output, OutputBody};
use vigil::core::wire::{self, Stamping};
use vigil::core::{At, Policy};
use vigil::replay;

fn replay_export(export: &str) -> String {
    let result = replay::run(Policy::default(), replay::parse_jsonl("export", export), true);
    assert!(result.malformed.is_empty(), "{:?}", result.malformed);
    replay::to_jsonl(&result.outputs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replay_published_over_nats_exports_to_the_same_outputs() {
    let server = NatsServer::start();
    let client = nats(&server.url()).await;
    let js = jetstream::new(client.clone());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("replays");
    let mut dirs: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    dirs.sort();
    for (n, dir) in dirs.iter().enumerate() {
        let prefix = format!("r{n}");
        let data = tempfile::tempdir().unwrap();
        let vigil = Vigil::start(&server.url(), data.path(), &["--prefix", &prefix], &[]);
        let producer = Client::with(client.clone(), &prefix);
        let text = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
        let mut published = 0;
        for line in text.lines() {
            let event = wire::decode_json(line, Stamping::Logged).unwrap();
            if event.kind.workspace().is_some() {
                producer.publish(&event).await.unwrap();
                published += 1;
            }
        }
        wait_processed(&js, &prefix).await;
        vigil.stop();
        let exported = export(data.path());
        let applied =
            exported.lines().filter(|l| !l.contains("\"type\":\"resume\"") && !l.contains("\"type\":\"tick\"")).count();
        assert_eq!(applied, published, "{}: every published event is in the log once", dir.display());
        let published_outputs: String =
            outputs(&js, &prefix).await.iter().map(|o| wire::encode_output_json(o) + "\n").collect();
        assert!(!published_outputs.is_empty(), "{}", dir.display());
        assert_eq!(
            replay_export(&exported),
            published_outputs,
            "{}: the export replays to the published outputs",
            dir.display()
        );
    }
}

/// Publishes one probe that kills a workspace, with vigil set to crash at `crash`, then starts it
/// again; returns the restart commands on the output stream.
async fn restart_across_a_crash(crash: (&str, &str)) -> Vec<Output> {
    let server = NatsServer::start();
    let client = nats(&server.url()).await;
    let js = jetstream::new(client.clone());
    let data = tempfile::tempdir().unwrap();
    let mut crashing = Vigil::start(&server.url(), data.path(), &[], &[crash]);
    Client::with(client.clone(), "vigil").publish(&not_found("ws-dead")).await.unwrap();
    let status = crashing.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "vigil was meant to crash; log:\n{}", crashing.log());
    let vigil = Vigil::start(&server.url(), data.path(), &[], &[]);
    wait_processed(&js, "vigil").await;
    // A clean stop waits for the publisher to drain the outbox.
    vigil.stop();
    outputs(&js, "vigil").await.into_iter().filter(|o| matches!(o.body, OutputBody::Restart { .. })).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_committed_but_never_published_is_published_once_after_a_crash() {
    // Commit 1 is vigil's own `resume`; commit 2 holds the probe and its restart command.
    let restarts = restart_across_a_crash(("VIGIL_TEST_ABORT_AFTER_COMMITS", "2")).await;
    let ids: Vec<_> = restarts.iter().map(|o| untagged(&o.id)).collect();
    assert_eq!(ids, ["ws-dead:1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_published_but_not_cleared_is_not_delivered_twice_after_a_crash() {
    // The first confirmed batch is the restart's: vigil dies before clearing it from the outbox,
    // publishes it again on restart, and the stream drops the duplicate by its Nats-Msg-Id.
    let restarts = restart_across_a_crash(("VIGIL_TEST_ABORT_AFTER_PUBLISHES", "1")).await;
    let ids: Vec<_> = restarts.iter().map(|o| untagged(&o.id)).collect();
    assert_eq!(ids, ["ws-dead:1"]);
}

/// async-nats lets one JetStream context wait for at most 5 000 publish acknowledgements at once.
/// The publisher used to send a whole batch before awaiting any acknowledgement, so a burst of
/// more outputs than that (a fleet registering at once, a large outbox after an outage) left it
/// waiting for a permit only its own unawaited acknowledgements held: no output published again,
/// and no tick appended (they shared the context), so no deadline fired either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_outputs_larger_than_the_clients_ack_window_is_all_published() {
    let server = NatsServer::start();
    let client = nats(&server.url()).await;
    let js = jetstream::new(client.clone());
    let data = tempfile::tempdir().unwrap();
    // Given 40 000 new workspaces heartbeating while vigil is down (each one's first heartbeat is
    // a `state_changed`),
    let vigil = Vigil::start(&server.url(), data.path(), &[], &[]);
    vigil.stop();
    let n = 40_000;
    for i in 0..n {
        let beat = wire::encode_msgpack(&heartbeat(&format!("ws-{i:05}")));
        client.publish(format!("vigil.in.heartbeat.ws-{i:05}"), beat.into()).await.unwrap();
    }
    client.flush().await.unwrap();
    // when vigil starts and applies them in a few large groups,
    let vigil = Vigil::start(&server.url(), data.path(), &[], &[]);
    wait_processed(&js, "vigil").await;
    // then every one of those outputs reaches the output stream.
    let started = std::time::Instant::now();
    let mut out = js.get_stream("VIGIL_OUT").await.unwrap();
    while out.info().await.unwrap().state.messages < n {
        let held = out.info().await.unwrap().state.messages;
        assert!(started.elapsed() < Duration::from_secs(30), "{held} of {n} outputs published; log:\n{}", vigil.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    vigil.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_commands_are_delivered_exactly_once_across_sigkills_mid_stream() {
    let server = NatsServer::start();
    let client = nats(&server.url()).await;
    let js = jetstream::new(client.clone());
    let data = tempfile::tempdir().unwrap();
    // Sixty deaths in a few seconds would (rightly) be a disruption, paced by the restart rate,
    // and fill the restart cap after sixteen; this story is about delivery, so all of that is set
    // out of the way.
    let policy = data.path().join("policy.toml");
    std::fs::write(
        &policy,
        "breaker_min = 10000\nrestart_rate = 1000\nrestart_burst = 100000\nmax_restarts_in_flight = 1000\n",
    )
    .unwrap();
    let args = ["--policy", policy.to_str().unwrap()];
    let store = data.path().join("store");
    let producer = Client::with(client.clone(), "vigil");
    let mut vigil = Vigil::start(&server.url(), &store, &args, &[]);
    let publishing = tokio::spawn(async move {
        for i in 0..60 {
            producer.publish(&not_found(&format!("ws-{i:02}"))).await.unwrap();
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    });
    for delay in [150, 220, 310] {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        vigil.kill();
        vigil = Vigil::start(&server.url(), &store, &args, &[]);
    }
    publishing.await.unwrap();
    wait_processed(&js, "vigil").await;
    vigil.stop();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for o in outputs(&js, "vigil").await {
        if let OutputBody::Restart { restart_id, .. } = &o.body {
            *seen.entry(untagged(restart_id).to_string()).or_default() += 1;
        }
    }
    let expected: BTreeMap<String, usize> = (0..60).map(|i| (format!("ws-{i:02}:1"), 1)).collect();
    assert_eq!(seen, expected, "every restart command exactly once");
    // And every probe is in the log exactly once: none lost with a killed instance, none twice.
    let mut probed: Vec<String> = export(&store)
        .lines()
        .map(|l| wire::decode_json(l, Stamping::Logged).unwrap())
        .filter_map(|i| match i.kind {
            InputKind::Probe(p) => Some(p.workspace.to_string()),
            _ => None,
        })
        .collect();
    probed.sort();
    assert_eq!(probed, (0..60).map(|i| format!("ws-{i:02}")).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_restart_mid_stream_loses_nothing() {
    let mut server = NatsServer::start();
    let url = server.url();
    let data = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&url, data.path(), &[], &[]);
    let client = async_nats::ConnectOptions::new().retry_on_initial_connect().connect(&url).await.unwrap();
    let producer = Client::with(client.clone(), "vigil");
    let total = 300;
    let publishing = tokio::spawn(async move {
        for i in 0..total {
            let mut beat = heartbeat(&format!("ws-{:02}", i % 20));
            beat.id = Some(format!("beat-{i}"));
            // A producer retries until the stream has it; the id makes a retry harmless.
            while producer.publish(&beat).await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.restart(Duration::from_millis(800));
    publishing.await.unwrap();
    let js = jetstream::new(client.clone());
    wait_processed(&js, "vigil").await;
    vigil.stop();
    let exported = export(data.path());
    let mut ids: Vec<String> =
        exported.lines().map(|l| wire::decode_json(l, Stamping::Logged).unwrap()).filter_map(|i| i.id).collect();
    ids.sort();
    let mut expected: Vec<String> = (0..total).map(|i| format!("beat-{i}")).collect();
    expected.sort();
    assert_eq!(ids, expected, "every heartbeat applied exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_positions_only_count_in_the_stream_they_came_from() {
    let data = tempfile::tempdir().unwrap();
    let first = NatsServer::start();
    let client = nats(&first.url()).await;
    let vigil = Vigil::start(&first.url(), data.path(), &[], &[]);
    Client::with(client.clone(), "vigil").publish(&heartbeat("ws-a")).await.unwrap();
    wait_processed(&jetstream::new(client.clone()), "vigil").await;
    vigil.stop();

    // A fresh data directory on the same stream is rebuilt from it, each record applied once.
    let fresh = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&first.url(), fresh.path(), &[], &[]);
    assert_eq!(state_of(&client, "vigil", "ws-a").await.as_deref(), Some("alive"), "rebuilt from the stream");
    vigil.stop();
    let heartbeats = export(fresh.path()).lines().filter(|l| l.contains(r#""type":"heartbeat""#)).count();
    assert_eq!(heartbeats, 1);

    // The same data directory on a new stream (the NATS state was lost): sequence 1 there is new.
    let second = NatsServer::start();
    let client = nats(&second.url()).await;
    let vigil = Vigil::start(&second.url(), data.path(), &[], &[]);
    Client::with(client.clone(), "vigil").publish(&heartbeat("ws-b")).await.unwrap();
    wait_processed(&jetstream::new(client.clone()), "vigil").await;
    assert_eq!(state_of(&client, "vigil", "ws-b").await.as_deref(), Some("alive"), "not mistaken for a redelivery");
    assert_eq!(state_of(&client, "vigil", "ws-a").await.as_deref(), Some("alive"), "and the old state is still there");
    vigil.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_go_to_the_dlq_with_reasons_and_the_service_goes_on() {
    let server = NatsServer::start();
    let client = nats(&server.url()).await;
    let js = jetstream::new(client.clone());
    let data = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&server.url(), data.path(), &[], &[]);
    let heartbeat = |ws: &str| wire::encode_msgpack(&heartbeat(ws));
    let tick =
        wire::encode_msgpack(&Input { at: At(0), sent_at: None, id: None, stream_seq: None, kind: InputKind::Tick });
    let unknown = rmp_serde::to_vec_named(&serde_json::json!({"v": 1, "type": "reboot", "workspace": "ws-a"})).unwrap();
    let bad_ws =
        rmp_serde::to_vec_named(&serde_json::json!({"v": 1, "type": "heartbeat", "workspace": "ws.a"})).unwrap();
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        ("vigil.in.heartbeat.ws-a", b"not msgpack at all".to_vec(), "syntax"),
        ("vigil.in.reboot.ws-a", unknown, "unknown_type"),
        ("vigil.in.heartbeat.ws-a", bad_ws, "bad_field"),
        ("vigil.in.heartbeat.ws-a", heartbeat("ws-b"), "subject_mismatch"),
        ("vigil.in.probe.ws-a", heartbeat("ws-a"), "subject_mismatch"),
        ("vigil.in.heartbeat.ws-a", vec![0x90; 70 * 1024], "too_large"),
        ("vigil.in.tick.ws-a", tick, "internal_type"),
        ("vigil.in.heartbeat.ws-a", [heartbeat("ws-a"), vec![0xc0]].concat(), "trailing_bytes"),
        ("vigil.in.heartbeat.wé", heartbeat("ws-a"), "subject_mismatch"),
    ];
    for (subject, payload, _) in &bad {
        // A plain publish: the stream captures it; producers need no JetStream.
        client.publish(subject.to_string(), payload.clone().into()).await.unwrap();
    }
    client.publish("vigil.in.heartbeat.ws-ok", heartbeat("ws-ok").into()).await.unwrap();
    client.flush().await.unwrap();
    wait_processed(&js, "vigil").await;

    // Dead-lettering runs beside the loop: wait for the DLQ to hold them all.
    let dlq = wait_stream(&js, "VIGIL_DLQ", bad.len()).await;
    let reasons: Vec<String> = dlq.iter().map(|m| m.headers.get("Vigil-Reason").unwrap().to_string()).collect();
    assert_eq!(reasons, bad.iter().map(|b| b.2).collect::<Vec<_>>());
    assert!(dlq.iter().all(|m| m.headers.get("Vigil-Error").is_some() && m.headers.get("Vigil-Subject").is_some()));
    // A subject token that is not ASCII is escaped in the header, not copied.
    let subjects: Vec<&str> = dlq.iter().map(|m| m.headers.get("Vigil-Subject").unwrap().as_str()).collect();
    assert_eq!(subjects.last(), Some(&r"vigil.in.heartbeat.w\u{e9}"));

    // The valid heartbeat after them was applied; the queries say so.
    let reply = client.request("vigil.query.state.ws-ok", "".into()).await.unwrap();
    let state: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(state["state"], "alive");
    assert_eq!(state["interval_s"], 30);
    let reply = client.request("vigil.query.fleet", "".into()).await.unwrap();
    let fleet: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(fleet["alive"], 1);
    assert_eq!(fleet["breaker_open"], false);
    let missing = client.request("vigil.query.state.ws-nobody", "".into()).await.unwrap();
    assert_eq!(
        missing.headers.as_ref().and_then(|h| h.get("Nats-Service-Error-Code")).map(|v| v.to_string()),
        Some("404".into())
    );
    let invalid = client.request("vigil.query.state.ws!bad", "".into()).await.unwrap();
    assert_eq!(
        invalid.headers.as_ref().and_then(|h| h.get("Nats-Service-Error-Code")).map(|v| v.to_string()),
        Some("400".into()),
        "a token that is not a workspace id"
    );
    let ping = client.request("$SRV.PING.vigil", "".into()).await.unwrap();
    let ping: serde_json::Value = serde_json::from_slice(&ping.payload).unwrap();
    assert_eq!(ping["name"], "vigil");
    vigil.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_user_and_password_vigil_works_with_credentials_and_refuses_without() {
    let server = NatsServer::start_with(&["--user", "vigil", "--pass", "s3cret"]);
    let data = tempfile::tempdir().unwrap();
    let mut refused = Vigil::spawn(&server.url(), data.path(), &[], &[]);
    let status = refused.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    assert!(refused.log().to_lowercase().contains("authorization"), "{}", refused.log());

    let vigil = Vigil::start(&server.url(), data.path(), &["--user", "vigil", "--password", "s3cret"], &[]);
    let client = async_nats::ConnectOptions::with_user_and_password("vigil".into(), "s3cret".into())
        .connect(server.url())
        .await
        .unwrap();
    Client::with(client.clone(), "vigil").publish(&not_found("ws-auth")).await.unwrap();
    wait_processed(&jetstream::new(client.clone()), "vigil").await;
    vigil.stop();
    let restarts: Vec<_> = outputs(&jetstream::new(client), "vigil")
        .await
        .into_iter()
        .filter(|o| matches!(o.body, OutputBody::Restart { .. }))
        .map(|o| untagged(&o.id).to_string())
        .collect();
    assert_eq!(restarts, ["ws-auth:1"]);
}

/// A vigil that crashed after committing a group but before acknowledging it leaves the consumer
/// behind its data directory. The next start used to read what the consumer had delivered by
/// sequence and never acknowledge it, so the consumer's ack floor stayed behind (and a new data
/// directory, which then started after the ack floor, applied those inputs a second time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_the_consumer_is_brought_level_with_the_data_directory() {
    let server = NatsServer::start();
    let client = nats(&server.url()).await;
    let js = jetstream::new(client.clone());
    let data = tempfile::tempdir().unwrap();
    // Given a vigil that dies right after its second commit (its first is its own resume): the
    // heartbeats are durable in its directory, never acknowledged,
    let mut crashing = Vigil::start(&server.url(), data.path(), &[], &[("VIGIL_TEST_ABORT_AFTER_COMMITS", "2")]);
    let producer = Client::with(client.clone(), "vigil");
    for ws in ["ws-a", "ws-b", "ws-c"] {
        producer.publish(&heartbeat(ws)).await.unwrap();
    }
    assert!(!crashing.wait_exit(Duration::from_secs(30)).success());
    // when it starts again on that directory and stops,
    let vigil = Vigil::start(&server.url(), data.path(), &[], &[]);
    wait_processed(&js, "vigil").await;
    vigil.stop();
    let committed = export(data.path()).lines().filter(|l| l.contains(r#""type":"heartbeat""#)).count();
    assert_eq!(committed, 3, "each heartbeat applied once");
    // then the consumer has acknowledged everything the directory committed,
    let mut consumer: jetstream::consumer::PullConsumer =
        js.get_stream("VIGIL_IN").await.unwrap().get_consumer("vigil").await.unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(info.ack_floor.stream_sequence, last_in_stream(&js, "vigil").await, "{info:?}");
    assert_eq!(info.num_ack_pending, 0);
    // and a new data directory, rebuilt from the stream, applies each of them once too.
    let fresh = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&server.url(), fresh.path(), &[], &[]);
    assert_eq!(state_of(&client, "vigil", "ws-a").await.as_deref(), Some("alive"));
    vigil.stop();
    let rebuilt = export(fresh.path()).lines().filter(|l| l.contains(r#""type":"heartbeat""#)).count();
    assert_eq!(rebuilt, 3, "each heartbeat applied once");
}

/// A shutdown that never ends (it waits for a disk or a server that does not answer; a test hook
/// stands in for them) still ends: a second SIGTERM stops vigil at once, and without one the
/// watchdog does. Before, SIGTERM and SIGINT were swallowed once the shutdown had begun.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_shutdown_ends_on_a_second_signal_or_by_the_watchdog() {
    let server = NatsServer::start();
    let term = |vigil: &Vigil| {
        let status = std::process::Command::new("kill").args(["-TERM", &vigil.pid().to_string()]).status().unwrap();
        assert!(status.success());
    };
    let stall = [("VIGIL_TEST_STALL_SHUTDOWN", "1")];

    // Given a shutdown that hangs, a second signal stops the process at once, with status 2,
    let data = tempfile::tempdir().unwrap();
    let mut vigil = Vigil::start(&server.url(), data.path(), &[], &stall);
    term(&vigil);
    vigil.wait_for("shutting down", Duration::from_secs(10));
    term(&vigil);
    assert_eq!(vigil.wait_exit(Duration::from_secs(5)).code(), Some(2), "{}", vigil.log());

    // and with no second signal, the watchdog does once its limit has passed.
    let data = tempfile::tempdir().unwrap();
    let mut vigil = Vigil::start(&server.url(), data.path(), &[], &[stall[0], ("VIGIL_TEST_SHUTDOWN_LIMIT_MS", "500")]);
    term(&vigil);
    assert_eq!(vigil.wait_exit(Duration::from_secs(10)).code(), Some(2), "{}", vigil.log());
    assert!(vigil.log().contains("did not finish within"), "{}", vigil.log());
}

/// After an outage longer than the input stream's max age, what expired is skipped in one step:
/// the loop used to ask for each missing sequence in turn, a round trip and a warning apiece,
/// without answering queries, ticks or SIGTERM meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_that_expired_while_vigil_was_away_are_skipped_in_one_step() {
    let server = NatsServer::start();
    let client = nats(&server.url()).await;
    let js = jetstream::new(client.clone());
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("vigil.toml");
    std::fs::write(&config, "input_max_age = \"2s\"\ninput_duplicate_window = \"1s\"\nsnapshot_every = \"1s\"\n")
        .unwrap();
    let store = data.path().join("store");
    let args = ["--config", config.to_str().unwrap()];
    let vigil = Vigil::start(&server.url(), &store, &args, &[]);
    let producer = Client::with(client.clone(), "vigil");
    producer.publish(&heartbeat("ws-a")).await.unwrap();
    wait_processed(&js, "vigil").await;
    vigil.stop();

    // Given 500 inputs published while vigil is down, which expire before it is back,
    for _ in 0..500 {
        client.publish("vigil.in.heartbeat.ws-b", wire::encode_msgpack(&heartbeat("ws-b")).into()).await.unwrap();
    }
    client.flush().await.unwrap();
    let mut input_stream = js.get_stream("VIGIL_IN").await.unwrap();
    let started = std::time::Instant::now();
    while input_stream.info().await.unwrap().state.messages > 0 {
        assert!(started.elapsed() < Duration::from_secs(20), "the inputs never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    producer.publish(&heartbeat("ws-c")).await.unwrap();
    // when it starts again, then the next input is applied and the expired ones are counted once.
    let vigil = Vigil::start(&server.url(), &store, &args, &[]);
    wait_processed(&js, "vigil").await;
    assert_eq!(state_of(&client, "vigil", "ws-c").await.as_deref(), Some("alive"));
    assert_eq!(state_of(&client, "vigil", "ws-b").await, None);
    let log = vigil.stop();
    let expired = log.lines().find(|l| l.contains("inputs expired before vigil read them"));
    assert!(expired.is_some_and(|l| l.contains("500")), "{log}");
    assert!(!log.contains("an input expired or was deleted"), "asked one by one:\n{log}");
}

/// The probe requests vigil has published so far for held workspaces' turns.
async fn turn_probes(js: &jetstream::Context) -> Vec<String> {
    outputs(js, "vigil")
        .await
        .into_iter()
        .filter_map(|o| match o.body {
            OutputBody::ProbeRequest { reason: vigil::core::Reason::RestartTurn, .. } => {
                o.workspace.map(|w| w.to_string())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_death_is_restarted_through_the_disruption_modes_on_fresh_probes() {
    // Given the service with one partition, a short settle and a fast restart rate (the policy is
    // what a test can wait for; the rules are the real ones),
    let server = NatsServer::start();
    let client = nats(&server.url()).await;
    let js = jetstream::new(client.clone());
    let data = tempfile::tempdir().unwrap();
    let policy = data.path().join("policy.toml");
    std::fs::write(&policy, "recent_min = \"1s\"\ndisruption_settle = \"2s\"\nrestart_rate = 2.0\n").unwrap();
    let vigil = Vigil::start(&server.url(), &data.path().join("store"), &["--policy", policy.to_str().unwrap()], &[]);
    let producer = Client::with(client.clone(), "vigil");
    // and twenty agents heard from once (a 1 s cadence, so 2 s of silence is not recent),
    for i in 0..20 {
        let mut beat = heartbeat(&format!("ws-{i:02}"));
        if let InputKind::Heartbeat(hb) = &mut beat.kind {
            hb.interval_s = Some(1);
        }
        producer.publish(&beat).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // when ten of them are really gone (every probe says so),
    kill_workspaces(&producer, 0, 10).await;
    // then the burst goes at once and the rest are held: a partial disruption. After the settle
    // each held one gets its turn, one token at a time, and is asked afresh...
    let started = std::time::Instant::now();
    let mut turns = turn_probes(&js).await;
    while turns.len() < 7 {
        assert!(started.elapsed() < Duration::from_secs(30), "turns so far: {turns:?}\n{}", vigil.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
        turns = turn_probes(&js).await;
    }
    // ...and restarted on the answer.
    for ws in &turns {
        producer.publish(&not_found(ws)).await.unwrap();
    }
    let started = std::time::Instant::now();
    loop {
        let published = outputs(&js, "vigil").await;
        if restarts(&published).len() == 10 {
            // Each once, and nothing said twice.
            each_restarted_once(&js, 0..10, &vigil.log()).await;
            let partial = published
                .iter()
                .any(|o| matches!(o.body, OutputBody::Alert { reason: vigil::core::Reason::DisruptionPartial, .. }));
            assert!(partial, "the partial disruption was announced");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{:?}\n{}", restarts(&published), vigil.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    vigil.stop();
}
