//! Rebuilding a lost data directory from the input stream (`make bench`, SPEC §4): a fleet of
//! 100 000 workspaces in the stream's latest snapshot record, then a tail of 1 000 000 heartbeats
//! after it. A vigil on a new data directory is timed from its start until it serves; then the
//! same stream without its snapshot records, so the rebuild reads all 1 100 000 records from the
//! first. Both on one nats-server on this machine, sharing its 2 cores with vigil.

#[path = "../tests/support/nats.rs"]
#[allow(dead_code)]
mod nats;
#[path = "support/publish.rs"]
mod publish;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use nats::{NatsServer, Vigil};
use vigil::core::event::{Heartbeat, Input, InputKind, WorkspaceId};
use vigil::core::wire;

const WORKSPACES: usize = 100_000;
const TAIL: usize = 1_000_000;
/// How long a rebuild may take before the bench fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(900);

fn heartbeat(n: usize) -> (String, Vec<u8>) {
    let ws = format!("ws-{:07}", n % WORKSPACES);
    let payload = wire::encode_msgpack(&Input {
        at: vigil::client::wall_clock(),
        sent_at: None,
        id: None,
        stream_seq: None,
        kind: InputKind::Heartbeat(Heartbeat {
            workspace: WorkspaceId::parse(&ws).unwrap(),
            interval_s: Some(30),
            incarnation: Some(format!("c-{}", n % WORKSPACES).into()),
            active_tasks: Some(1),
        }),
    });
    (format!("vigil.in.heartbeat.{ws}"), payload)
}

/// Publishes heartbeats `range` to the input stream, each confirmed by the stream.
async fn publish(js: &jetstream::Context, range: std::ops::Range<usize>) {
    publish::publish_acked(js, range.map(heartbeat)).await;
}

/// The log without terminal colour codes.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

/// The number after `field=` in the log line containing `line`.
fn logged(log: &str, line: &str, field: &str) -> Option<u64> {
    let log = plain(log);
    let l = log.lines().rev().find(|l| l.contains(line))?;
    let rest = l.split(&format!("{field}=")).nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Starts vigil on a new data directory and times it until it serves.
fn rebuild(url: &str, config: &std::path::Path) -> (Duration, String) {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let vigil = Vigil::spawn(url, &dir.path().join("data"), &["--config", config.to_str().unwrap()], &[]);
    vigil.wait_for("serving", LIMIT);
    let took = started.elapsed();
    (took, vigil.stop())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let server = NatsServer::start();
        let client = async_nats::connect(server.url()).await.unwrap();
        let js = jetstream::new(client);
        let work = tempfile::tempdir().unwrap();
        let config = work.path().join("vigil.toml");

        // The fleet, applied by a vigil that appends a snapshot record every second...
        std::fs::write(&config, "snapshot_every = \"1s\"\n").unwrap();
        let first = Vigil::start(&server.url(), &work.path().join("a"), &["--config", config.to_str().unwrap()], &[]);
        publish(&js, 0..WORKSPACES).await;
        let mut stream = js.get_stream("VIGIL_IN").await.unwrap();
        let last_beat = stream.info().await.unwrap().state.last_sequence;
        let started = Instant::now();
        loop {
            if let Ok(m) = stream.get_last_raw_message_by_subject("vigil.log.snapshot").await {
                let described: serde_json::Value = rmp_serde::from_slice(&m.payload).unwrap();
                if described["covers"].as_u64().unwrap() >= last_beat {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no snapshot of the whole fleet; log:\n{}",
                first.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let log = first.stop();
        let snapshot_bytes = logged(&log, "snapshot appended", "bytes").unwrap_or(0);
        println!(
            "the fleet's snapshot: {snapshot_bytes} bytes ({:.0} per workspace)",
            snapshot_bytes as f64 / WORKSPACES as f64
        );
        // ...then the tail, published while no vigil runs; later snapshots are not taken.
        std::fs::write(&config, "snapshot_every = \"1h\"\n").unwrap();
        publish(&js, WORKSPACES..WORKSPACES + TAIL).await;

        let (from_snapshot, log) = rebuild(&server.url(), &config);
        let records = logged(&log, "data directory rebuilt", "records").unwrap_or(0);
        let workspaces = logged(&log, "data directory rebuilt", "workspaces").unwrap_or(0);
        println!(
            "rebuild of a lost data directory, {workspaces} workspaces: from the latest snapshot + a {records}-record \
             tail, {:.1} s to serving ({:.0} records/s)",
            from_snapshot.as_secs_f64(),
            records as f64 / from_snapshot.as_secs_f64()
        );
        let phase = |line: &str, field: &str| logged(&log, line, field).unwrap_or(0);
        println!(
            "  of which: snapshot read {} ms, restored {} ms; output stream's ids read {} ms; tail applied {} ms",
            phase("latest snapshot", "read_ms"),
            phase("latest snapshot", "restored_ms"),
            phase("rebuilding the data directory", "took_ms"),
            phase("data directory rebuilt", "took_ms"),
        );
        stream.purge().filter("vigil.log.snapshot").await.unwrap();
        let (from_first, log) = rebuild(&server.url(), &config);
        let records = logged(&log, "data directory rebuilt", "records").unwrap_or(0);
        let applied = logged(&log, "data directory rebuilt", "took_ms").unwrap_or(0);
        println!(
            "  the same stream without its snapshot records: {records} records from the first, {:.1} s (applied in \
             {applied} ms, {:.0} records/s overall); snapshot / first {:.2}",
            from_first.as_secs_f64(),
            records as f64 / from_first.as_secs_f64(),
            from_snapshot.as_secs_f64() / from_first.as_secs_f64()
        );
    });
}
