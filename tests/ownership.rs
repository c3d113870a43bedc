//! One owner of the log at a time (SPEC §4 "ownership"), with real parts: a nats-server, vigil
//! children killed with SIGKILL or paused with SIGSTOP. Each story starts two vigils on one stream
//! — by mistake, or as owner and standby — and checks that exactly one decides: every restart
//! command goes out once, none is dropped when the owner dies, and an owner that wakes up after
//! another took over is refused by the server and waits as a standby.
//!
//! Leases last 4 s here (`--lease 4s`; 15 s by default).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use support::bus::{World, each_restarted_once, kill_workspaces, nats, wait_processed};
use support::nats::{NatsServer, Vigil};
use vigil::bus::ownership::{self, AppendError, Holder};
use vigil::client::Client;

/// Restarts out of the way of the breaker and the cap: these stories are about who decides.
const POLICY: &str =
    "breaker_min = 10000\nrestart_rate = 1000\nrestart_burst = 100000\nmax_restarts_in_flight = 1000\n";

fn start(url: &str, dir: &std::path::Path, name: &str) -> Vigil {
    start_with(url, dir, name, &[])
}

fn start_with(url: &str, dir: &std::path::Path, name: &str, env: &[(&str, &str)]) -> Vigil {
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let args = ["--policy", policy.to_str().unwrap(), "--instance", name, "--lease", "4s"];
    Vigil::spawn(url, &dir.join(name), &args, env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_vigils_on_one_stream_one_decides_and_the_other_takes_over_when_it_dies() {
    let World { server, client, js, producer, dir, .. } = World::new().await;

    // Given two vigils started on the same stream,
    let a = start(&server.url(), dir.path(), "a");
    a.wait_for("serving", Duration::from_secs(30));
    let b = start(&server.url(), dir.path(), "b");
    b.wait_for("standby: another instance owns the log", Duration::from_secs(30));
    // (the owner says so, with its standby),
    wait_processed(&js, "vigil").await;
    let started = Instant::now();
    let partitions = loop {
        let reply = client.request("vigil.query.partitions", "".into()).await.unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        if answer["partitions"][0]["standbys"] == serde_json::json!(["b"])
            || started.elapsed() > Duration::from_secs(10)
        {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let p = &partitions["partitions"][0];
    assert_eq!((p["partition"].as_u64(), p["owner"].as_str()), (Some(0), Some("a")), "{partitions}");
    assert_eq!(p["standbys"], serde_json::json!(["b"]), "{partitions}");
    assert!(p["epoch"].as_u64().unwrap() > 0 && p["log_seq"].as_u64().unwrap() > 0, "{partitions}");
    assert!(p["lag"].as_u64().unwrap() <= 2, "{partitions}");
    // when ten workspaces die, the owner dies, and ten more die,
    kill_workspaces(&producer, 0, 10).await;
    wait_processed(&js, "vigil").await;
    a.kill();
    kill_workspaces(&producer, 10, 10).await;
    b.wait_for("serving", Duration::from_secs(30));
    wait_processed(&js, "vigil").await;
    let log = b.stop();

    // then the standby took over, and each workspace was restarted exactly once,
    assert!(log.contains("taking over from another instance"), "{log}");
    // and nothing was said twice.
    each_restarted_once(&js, 0..20, &format!("log of b:\n{log}")).await;
}

fn signal(vigil: &Vigil, sig: &str) {
    assert!(Command::new("kill").args([sig, &vigil.pid().to_string()]).status().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_paused_past_its_lease_steps_down_and_waits_as_a_standby() {
    let World { server, js, producer, dir, .. } = World::new().await;
    // (A shutdown's watchdog of 2 s: stepping down is no shutdown, and must not arm it.)
    let mut a = start_with(&server.url(), dir.path(), "a", &[("VIGIL_TEST_SHUTDOWN_LIMIT_MS", "2000")]);
    a.wait_for("serving", Duration::from_secs(30));
    let b = start(&server.url(), dir.path(), "b");
    b.wait_for("standby", Duration::from_secs(30));
    kill_workspaces(&producer, 0, 5).await;
    wait_processed(&js, "vigil").await;

    // Given the owner paused for twice its lease, while workspaces die,
    signal(&a, "-STOP");
    let paused = Instant::now();
    kill_workspaces(&producer, 5, 5).await;
    b.wait_for("serving", Duration::from_secs(30));
    assert!(paused.elapsed() >= Duration::from_secs(3), "b took over before a's lease could lapse");
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(paused.elapsed())).await;
    // when it resumes, and more die,
    signal(&a, "-CONT");
    a.wait_for("stepped down", Duration::from_secs(10));
    kill_workspaces(&producer, 10, 5).await;
    wait_processed(&js, "vigil").await;
    // (a is a standby again: it says who owns the log.)
    let standby = Instant::now();
    while a.log().matches("standby: another instance owns the log").count() < 1 {
        assert!(standby.elapsed() < Duration::from_secs(10), "a never went back to waiting:\n{}", a.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(a.is_running(), "the standby exited after stepping down:\n{}", a.log());
    let log_b = b.stop();
    let log_a = a.stop();

    // then every death was restarted exactly once, and nothing said twice.
    each_restarted_once(&js, 0..15, &format!("log of a:\n{log_a}\nlog of b:\n{log_b}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_a_successors_epoch_is_in_the_stream_the_server_refuses_the_old_owners_appends() {
    let server = NatsServer::start();
    let js = jetstream::new(nats(&server.url()).await);
    let config = stream::Config { name: "T".into(), subjects: vec!["t.>".into()], ..Default::default() };
    let stream = js.create_stream(config).await.unwrap();
    let holder = |name: &str| Holder { instance: name.into(), token: format!("{name}-token") };

    // Given an owner's epoch, then a successor's,
    let old = ownership::take_epoch(&js, &stream, "t.epoch", &holder("a")).await.unwrap();
    let append = |fence: ownership::Fence| {
        let js = js.clone();
        async move {
            let ack = js.send_publish("t.tick", ownership::fenced("tick".into(), &fence)).await;
            match ack {
                Ok(ack) => ack.await.map(|_| ()).map_err(ownership::append_error),
                Err(e) => Err(ownership::append_error(e)),
            }
        }
    };
    append(old.fence.clone()).await.expect("the owner appends under its epoch");
    let new = ownership::take_epoch(&js, &stream, "t.epoch", &holder("b")).await.unwrap();
    assert_eq!(new.previous, old.fence.seq);

    // when each appends a record under its own epoch,
    let refused = append(old.fence.clone()).await;
    let accepted = append(new.fence.clone()).await;

    // then the old owner's is refused and the successor's stored.
    assert!(matches!(refused, Err(AppendError::Fenced)), "{refused:?}");
    assert!(accepted.is_ok(), "{accepted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_outliving_its_streams_max_age_keeps_its_epoch_and_the_log() {
    let server = NatsServer::start();
    let client = nats(&server.url()).await;
    let dir = tempfile::tempdir().unwrap();
    // Given an input stream that keeps records for 2 s only (so the owner's first epoch record
    // expires long before the owner stops),
    let config = dir.path().join("vigil.toml");
    std::fs::write(&config, "input_max_age = \"2s\"\ninput_duplicate_window = \"1s\"\nsnapshot_every = \"1s\"\n")
        .unwrap();
    let args = ["--config", config.to_str().unwrap(), "--instance", "a", "--lease", "4s"];
    let a = Vigil::start(&server.url(), &dir.path().join("a"), &args, &[]);
    // when it owns the log for three times that, appending its ticks and snapshots,
    let producer = Client::with(client.clone(), "vigil");
    producer.publish(&support::bus::heartbeat("ws-a")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let log = a.stop();

    // then it renewed its epoch in time: nothing of its own refused, never stepping down.
    assert!(log.contains("snapshot appended"), "{log}");
    assert!(!log.contains("stepped down"), "{log}");
    assert!(!log.contains("refused"), "{log}");
    assert!(!log.contains("epoch record is gone"), "the epoch was left to expire:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_follows_the_log_and_sends_the_restart_a_crashed_owner_decided_but_never_published() {
    let World { server, js, producer, dir, .. } = World::new().await;
    // Given an owner that dies the moment it decides a restart, before publishing it,
    let a = start_with(&server.url(), dir.path(), "a", &[("VIGIL_TEST_ABORT_ON_RESTART", "1")]);
    a.wait_for("serving", Duration::from_secs(30));
    // and a standby following the log,
    let b = start(&server.url(), dir.path(), "b");
    b.wait_for("standby: following the log", Duration::from_secs(30));
    // (which also follows past what a hostile producer sends: bytes that decode to nothing, a
    // name no workspace may have),
    let hostile = [("vigil.in.heartbeat.ws-x", vec![0xc1, 0xff, 0x00]), ("vigil.in.probe.%\u{7f}", vec![0x92; 4096])];
    for (subject, payload) in hostile {
        js.publish(subject, payload.into()).await.unwrap().await.unwrap();
    }
    wait_processed(&js, "vigil").await;
    // when a workspace dies (the owner decides its restart and dies with it),
    kill_workspaces(&producer, 0, 1).await;
    let mut a = a;
    let exit = a.wait_exit(Duration::from_secs(30));
    assert!(!exit.success(), "the owner was to abort:\n{}", a.log());
    b.wait_for("serving", Duration::from_secs(30));
    wait_processed(&js, "vigil").await;
    let log = b.stop();

    // then the standby had applied every record before it took over: no rebuild, nothing to catch up,
    assert!(log.contains("taking over from another instance"), "{log}");
    assert!(log.contains("to_catch_up=0"), "{log}");
    assert!(!log.contains("rebuilding the data directory"), "{log}");
    // and the restart the owner decided went out once, under the owner's id.
    each_restarted_once(&js, 0..1, &format!("log of b:\n{log}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_handover_goes_to_a_standby_that_is_level_with_the_log() {
    let World { server, js, producer, dir, .. } = World::new().await;
    // Given an owner that decided ten restarts, and a standby that followed them,
    let a = start(&server.url(), dir.path(), "a");
    a.wait_for("serving", Duration::from_secs(30));
    let b = start(&server.url(), dir.path(), "b");
    b.wait_for("standby: following the log", Duration::from_secs(30));
    kill_workspaces(&producer, 0, 10).await;
    wait_processed(&js, "vigil").await;
    // when the owner is stopped (SIGTERM) and comes back, and ten more workspaces die,
    let log_a = a.stop();
    b.wait_for("serving", Duration::from_secs(30));
    let a = start(&server.url(), dir.path(), "a");
    a.wait_for("standby: following the log", Duration::from_secs(30));
    kill_workspaces(&producer, 10, 10).await;
    wait_processed(&js, "vigil").await;
    let log_b = b.stop();
    a.wait_for("serving", Duration::from_secs(30));
    let log_a2 = a.stop();
    let logs = format!("log of a:\n{log_a}\nlog of b:\n{log_b}\nlog of a, again:\n{log_a2}");

    // then the standby took over with at most the owner's last records to apply, and no rebuild,
    assert!(!log_b.contains("rebuilding the data directory"), "{logs}");
    let caught_up = log_b.split("to_catch_up=").nth(1).and_then(|s| s.split_whitespace().next());
    assert!(caught_up.and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n <= 2), "{logs}");
    // and each workspace was restarted exactly once, nothing said twice, whoever owned the log.
    each_restarted_once(&js, 0..20, &logs).await;
}
