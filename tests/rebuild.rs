//! The stream is the log; a data directory is vigil's copy of it (SPEC §4), end to end with a real
//! nats-server and `vigil serve` as a child process:
//!
//! - a data directory lost with a decided restart not yet published: a new directory on the same
//!   streams is rebuilt from the input stream — the same states, the restart published once with
//!   the id it was decided with, nothing published before published again, and the next restart
//!   numbered after it;
//! - the rebuilt directory's export replays to exactly what the output stream holds;
//! - a rebuild cut short by a crash is taken up where it stopped, with the same checks;
//! - with the stream's early records gone (retention), a new directory is rebuilt from the latest
//!   snapshot record: the states and the restart counts are still there;
//! - with them gone and no snapshot, the rebuilt directory's ids are new (a new id key): its next
//!   restart is not dropped as a duplicate of an old one;
//! - a directory that was away while another instance folded records that have expired since is
//!   set aside and rebuilt from that instance's snapshot, not resumed past what it missed.
//!
//! The output stream's de-duplication window is 1 s here, so that an output published a second time
//! would show as a second message rather than be dropped by the stream.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use support::bus::{World, export, heartbeat, input, nats, not_found, outputs, state_of, untagged, wait_processed, ws};
use support::nats::{NatsServer, Vigil};
use vigil::client::Client;
use vigil::core::Policy;
use vigil::core::event::{AlertKind, InputKind, Origin, Output, OutputBody, RestartRequested};
use vigil::core::wire;
use vigil::replay;

/// `vigil serve` on `dir`, with the output stream's de-duplication window at 1 s and a snapshot
/// record every second.
fn start(url: &str, dir: &std::path::Path, config: &std::path::Path, env: &[(&str, &str)]) -> Vigil {
    std::fs::write(config, "output_duplicate_window = \"1s\"\nsnapshot_every = \"1s\"\n").unwrap();
    Vigil::start(url, dir, &["--config", config.to_str().unwrap()], env)
}

fn user_restart(id: &str) -> vigil::core::event::Input {
    input(InputKind::RestartRequested(RestartRequested {
        workspace: ws(id),
        origin: Origin::User,
        reason: "clicked restart".into(),
        request_id: None,
    }))
}

/// The output ids the output stream holds more than once.
fn repeated(outputs: &[Output]) -> Vec<(String, usize)> {
    let mut n = BTreeMap::new();
    for o in outputs {
        *n.entry(o.id.clone()).or_insert(0) += 1;
    }
    n.into_iter().filter(|(_, n)| *n > 1).collect()
}

/// Waits (at most 20 s) for `vigil` to append a snapshot record after stream position `seq`, and
/// returns its description.
async fn snapshot_after(
    stream: &jetstream::stream::Stream,
    seq: u64,
    vigil: &Vigil,
) -> jetstream::message::StreamMessage {
    let started = std::time::Instant::now();
    loop {
        if let Ok(m) = stream.get_last_raw_message_by_subject("vigil.log.snapshot").await
            && m.sequence > seq
        {
            return m;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no snapshot record; log:\n{}", vigil.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The restart commands among `outputs`, their ids without the tag, sorted.
fn restart_ids(outputs: &[Output]) -> Vec<&str> {
    let mut ids: Vec<&str> =
        outputs.iter().filter(|o| matches!(o.body, OutputBody::Restart { .. })).map(|o| untagged(&o.id)).collect();
    ids.sort();
    ids
}

/// Three workspaces alive and a fourth found dead, decided by a vigil on `dir/a` that dies the
/// moment it has decided the restart, before publishing it; `dir/a` is then lost. Returns what the
/// output stream holds.
async fn decided_then_lost(server: &NatsServer, dir: &std::path::Path, config: &std::path::Path) -> Vec<Output> {
    let client = nats(&server.url()).await;
    let js = jetstream::new(client.clone());
    let producer = Client::with(client.clone(), "vigil");
    let mut first = start(&server.url(), &dir.join("a"), config, &[("VIGIL_TEST_ABORT_ON_RESTART", "1")]);
    for id in ["ws-a", "ws-b", "ws-c"] {
        producer.publish(&heartbeat(id)).await.unwrap();
    }
    for id in ["ws-a", "ws-b", "ws-c"] {
        let started = std::time::Instant::now();
        while state_of(&client, "vigil", id).await.as_deref() != Some("alive") {
            assert!(started.elapsed() < Duration::from_secs(30), "{id} never alive; log:\n{}", first.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    producer.publish(&not_found("ws-d")).await.unwrap();
    assert!(!first.wait_exit(Duration::from_secs(30)).success(), "meant to crash; log:\n{}", first.log());
    let before = outputs(&js, "vigil").await;
    assert!(!before.iter().any(|o| matches!(o.body, OutputBody::Restart { .. })), "the restart was never published");
    std::fs::remove_dir_all(dir.join("a")).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await; // past the output stream's de-duplication window
    before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_data_directory_is_rebuilt_from_the_stream_and_no_output_is_lost_or_repeated() {
    let World { server, client, js, producer, dir, config } = World::new().await;

    // Given a vigil that died the moment it had decided a restart, before publishing it, and
    // whose data directory is then lost,
    let before = decided_then_lost(&server, dir.path(), &config).await;

    // when a vigil starts on a new directory on the same streams,
    let second = start(&server.url(), &dir.path().join("b"), &config, &[]);

    // then the state is rebuilt from the stream,
    for id in ["ws-a", "ws-b", "ws-c"] {
        assert_eq!(state_of(&client, "vigil", id).await.as_deref(), Some("alive"), "{id}; log:\n{}", second.log());
    }
    assert_eq!(state_of(&client, "vigil", "ws-d").await.as_deref(), Some("restarting"));
    // the next restart is numbered after the one the lost directory decided,
    producer.publish(&user_restart("ws-a")).await.unwrap();
    producer.publish(&user_restart("ws-d")).await.unwrap();
    wait_processed(&js, "vigil").await;
    let log = second.stop();
    let after = outputs(&js, "vigil").await;
    let restarts = restart_ids(&after);
    assert_eq!(restarts, ["ws-a:1", "ws-d:1", "ws-d:2"], "log:\n{log}");
    // nothing the lost directory published is published again, nothing it decided is lost,
    let twice = repeated(&after);
    assert!(twice.is_empty(), "published twice: {twice:?}\nlog:\n{log}");
    for o in &before {
        assert!(after.iter().any(|a| a.id == o.id), "{} lost", o.id);
    }

    // and the new directory's export replays to exactly what the output stream holds.
    let exported = export(&dir.path().join("b"));
    let replayed = replay::run(Policy::default(), replay::parse_jsonl("export", &exported), true);
    assert!(replayed.malformed.is_empty(), "{:?}", replayed.malformed);
    let as_lines = |outputs: &[Output]| -> Vec<String> {
        let mut lines: Vec<String> = outputs.iter().map(wire::encode_output_json).collect();
        lines.sort();
        lines
    };
    assert_eq!(as_lines(&replayed.outputs), as_lines(&after));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_cut_short_by_a_crash_is_taken_up_and_still_repeats_nothing() {
    let World { server, client, js, dir, config, .. } = World::new().await;
    let before = decided_then_lost(&server, dir.path(), &config).await;

    // Given a rebuild that dies as soon as its first group is durable, before publishing anything,
    let args = ["--config", config.to_str().unwrap()];
    let mut cut = Vigil::spawn(&server.url(), &dir.path().join("b"), &args, &[("VIGIL_TEST_ABORT_AFTER_COMMITS", "1")]);
    assert!(!cut.wait_exit(Duration::from_secs(30)).success(), "meant to crash; log:\n{}", cut.log());
    assert!(cut.log().contains("rebuilding"), "{}", cut.log());
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // when vigil starts again on that directory,
    let vigil = start(&server.url(), &dir.path().join("b"), &config, &[]);
    assert_eq!(state_of(&client, "vigil", "ws-d").await.as_deref(), Some("restarting"));
    wait_processed(&js, "vigil").await;
    let log = format!("{}\nthe rebuild cut short:\n{}", vigil.stop(), cut.log());

    // then the restart goes out once, and nothing published before goes out again.
    let after = outputs(&js, "vigil").await;
    let restarts = restart_ids(&after);
    assert_eq!(restarts, ["ws-d:1"], "log:\n{log}");
    let twice = repeated(&after);
    assert!(twice.is_empty(), "published twice: {twice:?}\nlog:\n{log}");
    // (The crashed instance's lease had to lapse before this one could own the log: that time
    // nobody watched is said in a fleet alert, which is new and right.)
    let unwatched = |o: &Output| matches!(o.body, OutputBody::Alert { kind: AlertKind::Unwatched, .. });
    let new: Vec<&Output> = after.iter().filter(|o| !before.iter().any(|b| b.id == o.id) && !unwatched(o)).collect();
    assert!(new.iter().all(|o| o.workspace.as_ref().is_some_and(|w| w.as_str() == "ws-d")), "{new:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_streams_early_records_gone_a_new_directory_is_rebuilt_from_the_latest_snapshot() {
    let World { server, client, js, producer, dir, config } = World::new().await;

    // Given a vigil that has seen three workspaces and restarted one of them,
    let first = start(&server.url(), &dir.path().join("a"), &config, &[]);
    for id in ["ws-a", "ws-b", "ws-c"] {
        producer.publish(&heartbeat(id)).await.unwrap();
    }
    producer.publish(&user_restart("ws-a")).await.unwrap();
    wait_processed(&js, "vigil").await;
    // and has appended a snapshot record since,
    let stream = js.get_stream("VIGIL_IN").await.unwrap();
    let last_input = stream.get_last_raw_message_by_subject("vigil.in.restart_requested.ws-a").await.unwrap().sequence;
    let snapshot = snapshot_after(&stream, last_input, &first).await;
    let log = first.stop();
    // when every record before that snapshot is gone from the stream (as retention drops them) and
    // the data directory is lost,
    let described: serde_json::Value = rmp_serde::from_slice(&snapshot.payload).unwrap();
    let first_part = described["parts"][0].as_u64().unwrap();
    stream.purge().sequence(first_part).await.unwrap();
    std::fs::remove_dir_all(dir.path().join("a")).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = outputs(&js, "vigil").await;

    // then a new directory is rebuilt from the snapshot: the workspaces are there,
    let second = start(&server.url(), &dir.path().join("b"), &config, &[]);
    assert!(second.log().contains("latest snapshot"), "{}\nfirst:\n{log}", second.log());
    assert_eq!(state_of(&client, "vigil", "ws-b").await.as_deref(), Some("alive"), "{}", second.log());
    assert_eq!(state_of(&client, "vigil", "ws-a").await.as_deref(), Some("restarting"));
    // the next restart of ws-a is its second,
    producer.publish(&user_restart("ws-a")).await.unwrap();
    wait_processed(&js, "vigil").await;
    let log = second.stop();
    let after = outputs(&js, "vigil").await;
    let restarts = restart_ids(&after);
    assert_eq!(restarts, ["ws-a:1", "ws-a:2"], "log:\n{log}");
    // and nothing is published twice.
    let twice = repeated(&after);
    assert!(twice.is_empty(), "published twice: {twice:?}\nlog:\n{log}");
    assert!(after.len() > before.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilt_without_part_of_the_history_the_next_restart_is_not_taken_for_an_old_one() {
    let World { server, js, producer, dir, config, .. } = World::new().await;
    // No snapshot records here (the first would come in an hour).
    std::fs::write(&config, "snapshot_every = \"1h\"\n").unwrap();
    let args = ["--config", config.to_str().unwrap()];

    // Given a vigil that restarted ws-a once,
    let first = Vigil::start(&server.url(), &dir.path().join("a"), &args, &[]);
    producer.publish(&heartbeat("ws-a")).await.unwrap();
    producer.publish(&user_restart("ws-a")).await.unwrap();
    wait_processed(&js, "vigil").await;
    first.stop();
    // and was started once more (its `resume` carries the directory's id key),
    Vigil::start(&server.url(), &dir.path().join("a"), &args, &[]).stop();
    // when every record before that `resume` is gone from the stream and the directory is lost,
    let stream = js.get_stream("VIGIL_IN").await.unwrap();
    let kept = stream.get_last_raw_message_by_subject("vigil.log.resume").await.unwrap().sequence;
    stream.purge().sequence(kept).await.unwrap();
    std::fs::remove_dir_all(dir.path().join("a")).unwrap();

    // then a new directory rebuilt from what is left says so, and its next restart of ws-a (its
    // first, as far as the records left can tell) is published, not dropped as the old one's
    // duplicate.
    let second = Vigil::start(&server.url(), &dir.path().join("b"), &args, &[]);
    assert!(second.log().contains("new id key"), "{}", second.log());
    producer.publish(&user_restart("ws-a")).await.unwrap();
    wait_processed(&js, "vigil").await;
    let log = second.stop();
    let restarts: Vec<String> = outputs(&js, "vigil")
        .await
        .into_iter()
        .filter(|o| matches!(o.body, OutputBody::Restart { .. }))
        .map(|o| o.id)
        .collect();
    assert_eq!(restarts.len(), 2, "{restarts:?}\nlog:\n{log}");
    assert_ne!(restarts[0], restarts[1]);
}

/// A MessagePack map whose one unknown field nests `depth` arrays deep.
fn deeply_nested(depth: usize) -> Vec<u8> {
    let mut bytes = vec![0x81, 0xa1, b'x'];
    bytes.extend(std::iter::repeat_n(0x91, depth));
    bytes.push(0xc0);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_snapshot_records_are_passed_over_not_obeyed_or_crashed_on() {
    let World { server, client, js, producer, dir, config } = World::new().await;
    std::fs::write(&config, "snapshot_every = \"1h\"\n").unwrap();
    let args = ["--config", config.to_str().unwrap()];
    // Given a stream with a real heartbeat in it (vigil declared the streams),
    Vigil::start(&server.url(), &dir.path().join("a"), &args, &[]).stop();
    producer.publish(&heartbeat("ws-a")).await.unwrap();
    // and, where permissions are lax, a forged snapshot whose part nests 100 000 arrays deep (with
    // a description that checks out), then a forged description that nests as deep itself,
    let part = deeply_nested(100_000);
    let part_seq = js.publish("vigil.log.snap", part.clone().into()).await.unwrap().await.unwrap().sequence;
    let described = serde_json::json!({
        "v": 1, "covers": part_seq, "parts": [part_seq], "bytes": part.len(), "fnv": vigil::core::hash::fnv1a64(&part),
    });
    let described = rmp_serde::to_vec_named(&described).unwrap();
    js.publish("vigil.log.snapshot", described.into()).await.unwrap().await.unwrap();
    js.publish("vigil.log.snapshot", deeply_nested(100_000).into()).await.unwrap().await.unwrap();

    // when a vigil starts on a new directory, then it passes over both, says so, rebuilds from the
    // stream's first record and serves.
    let vigil = Vigil::start(&server.url(), &dir.path().join("b"), &args, &[]);
    let log = vigil.log();
    assert_eq!(log.matches("is unusable").count(), 2, "{log}");
    assert_eq!(state_of(&client, "vigil", "ws-a").await.as_deref(), Some("alive"), "{log}");
    vigil.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_missed_what_another_folded_and_retention_dropped_is_rebuilt_not_resumed() {
    let World { server, client, js, producer, dir, config } = World::new().await;
    // Given a vigil that saw two workspaces and stopped,
    let a = start(&server.url(), &dir.path().join("a"), &config, &[]);
    for id in ["ws-a", "ws-b"] {
        producer.publish(&heartbeat(id)).await.unwrap();
    }
    wait_processed(&js, "vigil").await;
    drop(a.stop());
    // and another that took over the log meanwhile, applied ws-a's removal and snapshotted since,
    let b = start(&server.url(), &dir.path().join("b"), &config, &[]);
    let removed = input(InputKind::Lifecycle(vigil::core::event::Lifecycle {
        workspace: ws("ws-a"),
        phase: vigil::core::event::LifecyclePhase::Removed,
    }));
    producer.publish(&removed).await.unwrap();
    wait_processed(&js, "vigil").await;
    let stream = js.get_stream("VIGIL_IN").await.unwrap();
    let removal = stream.get_last_raw_message_by_subject("vigil.in.lifecycle.ws-a").await.unwrap().sequence;
    let snapshot = snapshot_after(&stream, removal, &b).await;
    drop(b.stop());
    // when everything before that snapshot is gone from the stream (retention) — the removal
    // among it — and the first vigil starts again on its old directory,
    let described: serde_json::Value = rmp_serde::from_slice(&snapshot.payload).unwrap();
    stream.purge().sequence(described["parts"][0].as_u64().unwrap()).await.unwrap();
    let again = start(&server.url(), &dir.path().join("a"), &config, &[]);
    // then it does not resume past what it missed: its directory is set aside and rebuilt from
    // the other's snapshot, so ws-a is gone and ws-b still there.
    let log = again.log();
    assert_eq!(state_of(&client, "vigil", "ws-a").await, None, "{log}");
    assert_eq!(state_of(&client, "vigil", "ws-b").await.as_deref(), Some("alive"), "{log}");
    assert!(log.contains("the data directory is stale"), "{log}");
    drop(again.stop());
    let aside: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("a.stale-"))
        .collect();
    assert_eq!(aside.len(), 1, "the stale directory is kept beside the new one: {aside:?}");
}
