//! vigil against a hostile producer, over a real nats-server: whatever bytes, sizes and names a
//! producer sends end in the DLQ with a reason — never in a panic, a crash loop or a stalled loop —
//! and the service goes on deciding for everyone else.

mod support;

use std::time::Duration;

use async_nats::jetstream;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use support::bus::{
    export, heartbeat, input, last_in_stream, nats, producer_inputs, read_stream, state_of, wait_processed, wait_stream,
};
use support::msgpack::map;
use support::nats::{NatsServer, Vigil};
use vigil::bus::Subjects;
use vigil::bus::dlq::DeadLetter;
use vigil::bus::headers::HEADER_TEXT_MAX;
use vigil::bus::intake::Intake;
use vigil::core::event::InputKind;
use vigil::core::{At, wire};

/// The poison of the hardening issue: a heartbeat map whose unknown key holds a newline and whose
/// value is a truncated 4 KB string. Its decode error names the key, which went verbatim into the
/// DLQ's `Vigil-Error` header and panicked async-nats, before the message was acknowledged.
fn poison() -> Vec<u8> {
    let mut bytes = vec![0x84, 0xa1, b'v', 0x01, 0xa4];
    bytes.extend_from_slice(b"type");
    bytes.push(0xa9);
    bytes.extend_from_slice(b"heartbeat");
    bytes.push(0xa9);
    bytes.extend_from_slice(b"workspace");
    bytes.push(0xa6);
    bytes.extend_from_slice(b"poison");
    bytes.push(0xa8);
    bytes.extend_from_slice(b"evil\nkey");
    bytes.extend_from_slice(&[0xdb, 0x00, 0x00, 0x10, 0x00]);
    bytes.extend_from_slice(b"abc");
    bytes
}

fn header<'a>(m: &'a jetstream::message::StreamMessage, name: &str) -> &'a str {
    m.headers.get(name).unwrap_or_else(|| panic!("no {name} header")).as_str()
}

/// Every header value is one line of printable ASCII.
fn assert_header_safe(m: &jetstream::message::StreamMessage) {
    for (name, values) in m.headers.iter() {
        for v in values {
            let v = v.as_str();
            assert!(v.bytes().all(|b| (0x20..0x7f).contains(&b)), "{name}: {v:?} is not printable ASCII");
            assert!(v.len() <= 1024, "{name} is {} bytes long", v.len());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_goes_to_the_dlq_and_never_crashes_vigil() {
    let server = NatsServer::start();
    let client = nats(&server.url()).await;
    let js = jetstream::new(client.clone());
    let data = tempfile::tempdir().unwrap();
    let mut vigil = Vigil::start(&server.url(), data.path(), &[], &[]);

    // Given the poison, followed by a valid heartbeat,
    client.publish("vigil.in.heartbeat.poison", poison().into()).await.unwrap();
    client.publish("vigil.in.heartbeat.ws-after", wire::encode_msgpack(&heartbeat("ws-after")).into()).await.unwrap();
    client.flush().await.unwrap();

    // then the poison lands in the DLQ with header-safe headers that still say what was wrong,
    let dlq = wait_stream(&js, "VIGIL_DLQ", 1).await;
    assert_header_safe(&dlq[0]);
    assert_eq!(header(&dlq[0], "Vigil-Reason"), "bad_field");
    assert!(header(&dlq[0], "Vigil-Error").contains(r"evil\nkey"), "{}", header(&dlq[0], "Vigil-Error"));
    assert_eq!(dlq[0].payload.as_ref(), poison().as_slice(), "the copy is the producer's bytes");

    // and vigil goes on: the heartbeat after it is applied, the process is still up,
    wait_processed(&js, "vigil").await;
    assert_eq!(state_of(&client, "vigil", "ws-after").await.as_deref(), Some("alive"));
    assert!(vigil.is_running(), "vigil died:\n{}", vigil.log());
    assert!(!vigil.log().contains("panicked"), "{}", vigil.log());
    vigil.stop();

    // and a restart does not meet the poison again: it was acknowledged like any input (the
    // DLQ's own de-duplication would hide a second dead-lettering, so the log is what tells).
    let mut consumer: jetstream::consumer::PullConsumer =
        js.get_stream("VIGIL_IN").await.unwrap().get_consumer("vigil").await.unwrap();
    let acked = consumer.info().await.unwrap().ack_floor.stream_sequence;
    assert_eq!(acked, last_in_stream(&js, "vigil").await, "the poison and the heartbeat are acknowledged");
    let vigil = Vigil::start(&server.url(), data.path(), &[], &[]);
    wait_processed(&js, "vigil").await;
    let log = vigil.stop();
    assert!(!log.contains("dead-lettered an input"), "the poison was read again:\n{log}");
    assert_eq!(read_stream(&js, "VIGIL_DLQ").await.len(), 1);
    // The DLQ stream is bounded too: a flood of rejections cannot fill the server's disk.
    let dlq_config = js.get_stream("VIGIL_DLQ").await.unwrap().info().await.unwrap().config.clone();
    assert_eq!(dlq_config.max_bytes, 1 << 30);
}

// ---- any subject, any bytes -------------------------------------------------------------------

/// A token of anything: the real input types and workspace ids, or arbitrary characters.
fn token(publishable: bool) -> impl Strategy<Value = String> {
    let any_text = prop::collection::vec(any::<char>(), 1..10).prop_map(move |cs| {
        let t: String = cs
            .into_iter()
            .filter(|c| !publishable || !(c.is_whitespace() || c.is_control() || ".*>".contains(*c)))
            .collect();
        if t.is_empty() { "x".to_string() } else { t }
    });
    prop_oneof![
        2 => prop::sample::select(vec!["heartbeat", "probe", "upstream_error", "restart_requested", "lifecycle", "tick"])
            .prop_map(str::to_string),
        2 => prop::sample::select(vec!["ws-1", "ws-a", "poison"]).prop_map(str::to_string),
        3 => any_text,
    ]
}

/// `vigil.in.<type>.<workspace>` with any tokens in it, sometimes with a token too many or few.
fn subject(publishable: bool) -> impl Strategy<Value = String> {
    (token(publishable), token(publishable), 0u8..10).prop_map(|(kind, ws, shape)| match shape {
        0 => format!("vigil.in.{kind}"),
        1 => format!("vigil.in.{kind}.{ws}.more"),
        _ => format!("vigil.in.{kind}.{ws}"),
    })
}

/// Any subject under `vigil.in`, or under `vigil.log` (vigil's own records, which a deployment
/// without permissions lets anyone publish on).
fn any_subject() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => subject(false),
        1 => token(false).prop_map(|kind| format!("vigil.log.{kind}")),
        1 => (token(false), token(false)).prop_map(|(kind, more)| format!("vigil.log.{kind}.{more}")),
    ]
}

/// Maps shaped like inputs, raw bytes, and now and then something far too large.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => map(),
        3 => prop::collection::vec(any::<u8>(), 0..300),
        1 => (1usize..3).prop_map(|k| vec![0x90; k * 50_000]),
    ]
}

fn assert_headers_safe(headers: &async_nats::HeaderMap) -> Result<(), TestCaseError> {
    for (name, values) in headers.iter() {
        for v in values {
            let v = v.as_str();
            prop_assert!(v.bytes().all(|b| (0x20..0x7f).contains(&b)), "{}: {:?}", name, v);
            prop_assert!(v.len() <= HEADER_TEXT_MAX, "{} is {} bytes", name, v.len());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Given any subject under `vigil.in` and any bytes, when intake decodes them and a rejection
    /// becomes its DLQ message — the code the service runs — then nothing panics, every header is
    /// one line of printable ASCII, and the message fits the server's limit.
    #[test]
    fn any_subject_and_any_bytes_become_an_input_or_a_publishable_dlq_message(
        subject in any_subject(),
        payload in payload(),
        limit in prop::sample::select(vec![1usize << 20, 8 << 10, 200]),
    ) {
        let intake = Intake::new(Subjects::new("vigil"), 64 << 10);
        match intake.decode(&subject, &payload, At(1_780_272_000_000)) {
            // Under `vigil.log` only vigil's own kinds pass, and under `vigil.in` only the others.
            Ok(input) => match input.kind {
                InputKind::Tick | InputKind::Resume(_) => prop_assert!(subject.starts_with("vigil.log.")),
                _ => prop_assert!(subject.starts_with("vigil.in.") && input.kind.workspace().is_some()),
            },
            Err(rejection) => {
                let letter = DeadLetter::new(&subject, &payload.into(), 7, rejection, intake.max_payload());
                let message = letter.message("VIGIL_IN@1", limit);
                assert_headers_safe(&message.headers)?;
                if limit > 2048 {
                    prop_assert!(message.wire_len() <= limit, "{} bytes over a limit of {}", message.wire_len(), limit);
                }
            }
        }
    }
}

/// vigil's own subjects, written to by someone else (a deployment without the permissions of
/// deploy/nats/vigil.conf): whatever is not a tick or a resume of the right shape is dead-lettered
/// with a reason and safe headers, nothing crashes, and a forged promise too short to mean
/// anything is refused rather than obeyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_records_on_vigils_own_subjects_are_dead_lettered_and_vigil_goes_on() {
    let server = NatsServer::start();
    let client = nats(&server.url()).await;
    let js = jetstream::new(client.clone());
    let data = tempfile::tempdir().unwrap();
    let mut vigil = Vigil::start(&server.url(), data.path(), &[], &[]);
    let msgpack = |v: serde_json::Value| rmp_serde::to_vec_named(&v).unwrap();
    let short_promise = msgpack(serde_json::json!({"v": 1, "type": "resume", "unwatched_after_ms": 1}));
    // A heartbeat whose producer uses the names of vigil's own record fields for values of its own,
    // nested twelve deep: a heartbeat all the same. And one whose `partitions` claims an array of
    // 2^32 - 1 elements and ends there: dead-lettered, with nothing allocated for the claim.
    let mut odd =
        serde_json::json!({"v": 1, "type": "heartbeat", "workspace": "ws-odd", "monitored": -1, "awaits": "no"});
    let mut deep = serde_json::json!("bottom");
    for _ in 0..12 {
        deep = serde_json::json!([deep]);
    }
    odd["partition"] = deep;
    let odd = msgpack(odd);
    let mut huge = odd.clone();
    huge[0] += 1;
    huge.push(0xaa);
    huge.extend_from_slice(b"partitions");
    huge.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
    let hostile: Vec<(&str, Vec<u8>, &str)> = vec![
        ("vigil.in.heartbeat.ws-odd", huge, "bad_field"),
        ("vigil.log.tick", wire::encode_msgpack(&heartbeat("ws-a")), "subject_mismatch"),
        ("vigil.log.resume", b"\xc1 not msgpack\n".to_vec(), "syntax"),
        ("vigil.log.resume", short_promise, "bad_field"),
        ("vigil.log.tick", poison(), "bad_field"),
        ("vigil.log.tick.more", msgpack(serde_json::json!({"v": 1, "type": "tick"})), "bad_subject"),
        // A death declaration is vigil's own record, with one partition there is none at all.
        ("vigil.in.declaration.ws-a", declaration(0, "ws-a"), "internal_type"),
        ("vigil.log.fleet.0", declaration(0, "ws-a"), "bad_subject"),
    ];

    for (subject, payload, _) in &hostile {
        client.publish(subject.to_string(), payload.clone().into()).await.unwrap();
    }
    client.publish("vigil.in.heartbeat.ws-odd", odd.into()).await.unwrap();
    client.publish("vigil.in.heartbeat.ws-last", wire::encode_msgpack(&heartbeat("ws-last")).into()).await.unwrap();
    client.flush().await.unwrap();

    let dlq = wait_stream(&js, "VIGIL_DLQ", hostile.len()).await;
    let reasons: Vec<&str> = dlq.iter().map(|m| header(m, "Vigil-Reason")).collect();
    let expected: Vec<&str> = hostile.iter().map(|(_, _, reason)| *reason).collect();
    assert_eq!(reasons, expected);
    for m in &dlq {
        assert_header_safe(m);
    }
    wait_processed(&js, "vigil").await;
    assert_eq!(state_of(&client, "vigil", "ws-last").await.as_deref(), Some("alive"));
    assert_eq!(state_of(&client, "vigil", "ws-odd").await.as_deref(), Some("alive"));
    assert!(vigil.is_running(), "vigil died:\n{}", vigil.log());
    let log = vigil.stop();
    assert!(!log.contains("panicked"), "{log}");
}

/// A `declaration` record, as vigil's owner of partition `partition` would append it.
fn declaration(partition: u32, ws: &str) -> Vec<u8> {
    wire::encode_msgpack(&input(InputKind::Declaration(vigil::core::event::Declaration {
        partition,
        workspace: support::bus::ws(ws),
        reason: vigil::core::event::Reason::ConfirmedNotRunning,
        monitored: 10,
        awaits: true,
    })))
}

/// With several partitions, where permissions are lax (`vigil.log.>` is vigil's alone in
/// `deploy/nats/vigil.conf`): garbage and a declaration on another partition's declaration
/// subject reach every partition's consumer and are dead-lettered once each, and nothing stalls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_declarations_on_the_fleets_subjects_are_dead_lettered_and_vigil_goes_on() {
    let server = NatsServer::start();
    let client = nats(&server.url()).await;
    let js = jetstream::new(client.clone());
    let data = tempfile::tempdir().unwrap();
    let mut vigil = Vigil::start(&server.url(), data.path(), &["--partitions", "2"], &[]);
    let hostile: Vec<(&str, Vec<u8>, &str)> = vec![
        ("vigil.log.fleet.1", declaration(0, "ws-a"), "subject_mismatch"),
        ("vigil.log.fleet.0", b"\xc1 not msgpack\n".to_vec(), "syntax"),
        ("vigil.log.fleet.0", wire::encode_msgpack(&heartbeat("ws-a")), "subject_mismatch"),
        ("vigil.log.fleet.0", poison(), "bad_field"),
    ];
    for (subject, payload, _) in &hostile {
        js.publish(subject.to_string(), payload.clone().into()).await.unwrap().await.unwrap();
    }
    client.publish("vigil.in.heartbeat.ws-last", wire::encode_msgpack(&heartbeat("ws-last")).into()).await.unwrap();
    client.flush().await.unwrap();
    let dlq = wait_stream(&js, "VIGIL_DLQ", hostile.len()).await;
    let reasons: Vec<&str> = dlq.iter().map(|m| header(m, "Vigil-Reason")).collect();
    let expected: Vec<&str> = hostile.iter().map(|(_, _, reason)| *reason).collect();
    assert_eq!(reasons, expected, "each once, in order");
    for m in &dlq {
        assert_header_safe(m);
    }
    let started = std::time::Instant::now();
    while state_of(&client, "vigil", "ws-last").await.as_deref() != Some("alive") {
        assert!(started.elapsed() < Duration::from_secs(10), "the loop stalled:\n{}", vigil.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(vigil.is_running(), "vigil died:\n{}", vigil.log());
    let log = vigil.stop();
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(read_stream(&js, "VIGIL_DLQ").await.len(), hostile.len(), "nothing dead-lettered twice");
}

/// Forged epoch records (where permissions are lax: `vigil.log.>` is vigil's alone in
/// `deploy/nats/vigil.conf`): garbage, a near-maximum payload and a well-formed record naming
/// another instance. The fence moves, so vigil's next append is refused and it steps down — then,
/// its lease given up and nobody else there, it takes the log back under a new epoch and goes on
/// deciding. Nothing of the forged bytes is parsed beyond a bounded JSON read, and nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_epoch_records_cost_a_step_down_and_vigil_takes_the_log_back() {
    let server = NatsServer::start();
    let client = nats(&server.url()).await;
    let js = jetstream::new(client.clone());
    let data = tempfile::tempdir().unwrap();
    let mut vigil = Vigil::start(&server.url(), data.path(), &["--lease", "4s"], &[]);
    let forged: Vec<Vec<u8>> = vec![
        b"\xc1 not json\n".to_vec(),
        vec![b'['; 60 * 1024],
        br#"{"v":1,"instance":"mallory","token":"0000000000000000"}"#.to_vec(),
    ];
    for payload in &forged {
        client.publish("vigil.log.epoch", payload.clone().into()).await.unwrap();
    }
    client.flush().await.unwrap();

    // vigil notices on its next tick, steps down and serves again,
    let started = std::time::Instant::now();
    while vigil.log().matches("serving").count() < 2 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "vigil never took the log back:\n{}",
            vigil.log()
        );
        assert!(vigil.is_running(), "vigil died:\n{}", vigil.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(vigil.log().contains("stepped down"), "{}", vigil.log());
    // and decides as before.
    client.publish("vigil.in.heartbeat.ws-last", wire::encode_msgpack(&heartbeat("ws-last")).into()).await.unwrap();
    client.flush().await.unwrap();
    wait_processed(&js, "vigil").await;
    assert_eq!(state_of(&client, "vigil", "ws-last").await.as_deref(), Some("alive"));
    let log = vigil.stop();
    assert!(!log.contains("panicked"), "{log}");
}

/// The same over a real nats-server: a few hundred hostile messages on hostile subjects, then a
/// valid heartbeat. Every one is applied or dead-lettered (with safe headers), and vigil is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_over_nats_each_end_applied_or_dead_lettered() {
    let server = NatsServer::start();
    let client = nats(&server.url()).await;
    let js = jetstream::new(client.clone());
    let data = tempfile::tempdir().unwrap();
    let mut vigil = Vigil::start(&server.url(), data.path(), &[], &[]);

    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let sample = (subject(true), payload());
    let total = 300;
    for _ in 0..total {
        let (subject, payload) = sample.new_tree(&mut runner).unwrap().current();
        client.publish(subject, payload.into()).await.unwrap();
    }
    client.publish("vigil.in.heartbeat.ws-last", wire::encode_msgpack(&heartbeat("ws-last")).into()).await.unwrap();
    client.flush().await.unwrap();
    wait_processed(&js, "vigil").await;
    assert_eq!(state_of(&client, "vigil", "ws-last").await.as_deref(), Some("alive"));
    assert!(vigil.is_running(), "vigil died:\n{}", vigil.log());
    vigil.stop();

    let captured = producer_inputs(&js, "vigil").await;
    let dlq = read_stream(&js, "VIGIL_DLQ").await;
    let own = |l: &&str| l.contains(r#""type":"resume""#) || l.contains(r#""type":"tick""#);
    let applied = export(data.path()).lines().filter(|l| !own(l)).count();
    assert_eq!(dlq.len() + applied, captured, "each input is applied or dead-lettered, once");
    assert!(dlq.len() > total / 2, "most of them are rejected: {}", dlq.len());
    for m in &dlq {
        assert_header_safe(m);
    }
}

// ---- sizes ------------------------------------------------------------------------------------

/// An input of about a megabyte: over vigil's limit, so it is refused as `too_large` — and its DLQ
/// copy with headers would exceed the server's maximum payload. The publish used to be retried
/// ten times inside the serve loop (102 s without inputs, queries or ticks) and never landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_input_is_dead_lettered_cut_to_fit_and_never_stalls_the_loop() {
    let server = NatsServer::start();
    let client = nats(&server.url()).await;
    let js = jetstream::new(client.clone());
    let data = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&server.url(), data.path(), &[], &[]);

    let big = vec![0x90; client.server_info().max_payload - 100];
    client.publish("vigil.in.heartbeat.ws-big", big.clone().into()).await.unwrap();
    client.publish("vigil.in.heartbeat.ws-after", wire::encode_msgpack(&heartbeat("ws-after")).into()).await.unwrap();
    client.flush().await.unwrap();

    // The heartbeat behind it is applied at once, not after a minute and a half of retries,
    let started = std::time::Instant::now();
    while state_of(&client, "vigil", "ws-after").await.is_none() {
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "the loop stalled:\n{}", vigil.log());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // and the DLQ holds the rejection, its copy cut to vigil's own input limit, saying so.
    let dlq = wait_stream(&js, "VIGIL_DLQ", 1).await;
    assert_eq!(header(&dlq[0], "Vigil-Reason"), "too_large");
    assert_eq!(header(&dlq[0], "Vigil-Truncated"), big.len().to_string());
    assert_eq!(dlq[0].payload.len(), 64 * 1024);
    assert_eq!(dlq[0].payload.as_ref(), &big[..64 * 1024]);
    vigil.stop();
}

// ---- ids --------------------------------------------------------------------------------------

/// The same idempotency key in two workspaces is two events: SPEC §1's de-duplication is per
/// workspace. The client used the bare `id` as the stream-wide `Nats-Msg-Id`, so the input stream
/// dropped the second workspace's heartbeat as a duplicate of the first's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_id_in_two_workspaces_is_two_events_and_an_over_long_id_is_refused() {
    let server = NatsServer::start();
    let client = nats(&server.url()).await;
    let js = jetstream::new(client.clone());
    let data = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&server.url(), data.path(), &[], &[]);
    let producer = vigil::client::Client::with(client.clone(), "vigil");

    for ws in ["idc-a", "idc-b"] {
        let mut beat = heartbeat(ws);
        beat.id = Some("hb-1".into());
        producer.publish(&beat).await.unwrap();
        // A re-publish of the same event is still dropped by the stream.
        producer.publish(&beat).await.unwrap();
    }
    wait_processed(&js, "vigil").await;
    assert_eq!(state_of(&client, "vigil", "idc-a").await.as_deref(), Some("alive"));
    assert_eq!(state_of(&client, "vigil", "idc-b").await.as_deref(), Some("alive"), "idc-b's event vanished");
    assert_eq!(producer_inputs(&js, "vigil").await, 2, "each workspace's heartbeat once");

    // An id over the limit: the client refuses it, and a raw publish of it is dead-lettered.
    let mut long = heartbeat("idc-c");
    long.id = Some("i".repeat(4096));
    let refused = producer.publish(&long).await.unwrap_err().to_string();
    assert!(refused.contains("field `id`: is 4096 bytes long; at most 128"), "{refused}");
    client.publish("vigil.in.heartbeat.idc-c", wire::encode_msgpack(&long).into()).await.unwrap();
    let dlq = wait_stream(&js, "VIGIL_DLQ", 1).await;
    assert_eq!(header(&dlq[0], "Vigil-Reason"), "bad_field");
    wait_processed(&js, "vigil").await;
    assert_eq!(state_of(&client, "vigil", "idc-c").await, None);
    vigil.stop();
}

// ---- admission --------------------------------------------------------------------------------

fn lifecycle(ws: &str, phase: vigil::core::event::LifecyclePhase) -> vigil::core::event::Input {
    support::bus::input(vigil::core::event::InputKind::Lifecycle(vigil::core::event::Lifecycle {
        workspace: support::bus::ws(ws),
        phase,
    }))
}

/// Anyone who can publish a heartbeat can invent a workspace; `max_workspaces` bounds how many
/// vigil tracks. Beyond it a new workspace's events go to the DLQ, counted; the known ones go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_workspaces_new_ones_are_dead_lettered_and_known_ones_carry_on() {
    use vigil::core::event::LifecyclePhase::Removed;
    let server = NatsServer::start();
    let client = nats(&server.url()).await;
    let js = jetstream::new(client.clone());
    let data = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&server.url(), data.path(), &["--max-workspaces", "3"], &[]);
    let producer = vigil::client::Client::with(client.clone(), "vigil");

    // Given six workspaces heartbeating, in one burst,
    for i in 0..6 {
        producer.publish(&heartbeat(&format!("ws-{i}"))).await.unwrap();
    }
    wait_processed(&js, "vigil").await;
    // then the first three are tracked and the other three dead-lettered as over quota,
    for i in 0..3 {
        assert_eq!(state_of(&client, "vigil", &format!("ws-{i}")).await.as_deref(), Some("alive"));
    }
    for i in 3..6 {
        assert_eq!(state_of(&client, "vigil", &format!("ws-{i}")).await, None);
    }
    let dlq = wait_stream(&js, "VIGIL_DLQ", 3).await;
    assert!(dlq.iter().all(|m| header(m, "Vigil-Reason") == "quota_exceeded"));
    assert!(header(&dlq[0], "Vigil-Error").contains("max_workspaces"), "{}", header(&dlq[0], "Vigil-Error"));

    // and a known workspace's heartbeat is still applied; once one is removed, there is room
    // (from the next group commit on: the cap counts what the engine holds when a group starts).
    producer.publish(&heartbeat("ws-0")).await.unwrap();
    producer.publish(&lifecycle("ws-1", Removed)).await.unwrap();
    wait_processed(&js, "vigil").await;
    producer.publish(&heartbeat("ws-4")).await.unwrap();
    wait_processed(&js, "vigil").await;
    assert_eq!(state_of(&client, "vigil", "ws-4").await.as_deref(), Some("alive"));
    assert_eq!(read_stream(&js, "VIGIL_DLQ").await.len(), 3, "nothing more refused");
    vigil.stop();
}

/// With `registration = "lifecycle"` only the provisioner's `lifecycle created` adds a workspace:
/// an invented one's heartbeat is a visible decision not to track it, never a new workspace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_lifecycle_registration_an_invented_workspace_is_suppressed_not_tracked() {
    use vigil::core::event::{LifecyclePhase::Created, OutputBody, Reason};
    let server = NatsServer::start();
    let client = nats(&server.url()).await;
    let js = jetstream::new(client.clone());
    let data = tempfile::tempdir().unwrap();
    let policy = data.path().join("policy.toml");
    std::fs::write(&policy, "registration = \"lifecycle\"\n").unwrap();
    let store = data.path().join("store");
    let vigil = Vigil::start(&server.url(), &store, &["--policy", policy.to_str().unwrap()], &[]);
    let producer = vigil::client::Client::with(client.clone(), "vigil");

    producer.publish(&heartbeat("ws-invented")).await.unwrap();
    producer.publish(&lifecycle("ws-real", Created)).await.unwrap();
    producer.publish(&heartbeat("ws-real")).await.unwrap();
    wait_processed(&js, "vigil").await;
    assert_eq!(state_of(&client, "vigil", "ws-invented").await, None);
    assert_eq!(state_of(&client, "vigil", "ws-real").await.as_deref(), Some("alive"));
    vigil.stop();
    let outputs = support::bus::outputs(&js, "vigil").await;
    let invented: Vec<_> =
        outputs.iter().filter(|o| o.workspace.as_ref().is_some_and(|w| w.as_str() == "ws-invented")).collect();
    assert_eq!(invented.len(), 1, "{invented:?}");
    assert!(matches!(invented[0].body, OutputBody::Suppressed { reason: Reason::UnknownWorkspace, .. }));
}

// ---- forged outputs ---------------------------------------------------------------------------

/// With open permissions, anyone can publish on `vigil.out.restart.<ws>`. A forger who could guess
/// the next restart's id (`ws-victim:1`) and publish it first made the output stream drop vigil's
/// real command as a duplicate. Ids now carry a tag from the data directory's secret key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_restart_command_cannot_pre_empt_the_real_one() {
    use vigil::core::event::OutputBody;
    let server = NatsServer::start();
    let client = nats(&server.url()).await;
    let js = jetstream::new(client.clone());
    let data = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&server.url(), data.path(), &[], &[]);

    // Given a forger who publishes, first, a restart command with every id it could guess,
    for guess in ["ws-victim:1", "ws-victim:1:0000000000000000"] {
        let forged = vigil::core::event::Output {
            id: guess.into(),
            workspace: Some(support::bus::ws("ws-victim")),
            at: At(0),
            body: OutputBody::Restart {
                restart_id: guess.into(),
                origin: vigil::core::event::Origin::User,
                reason: vigil::core::event::Reason::RestartRequested,
                attempt: 1,
                detail: Some("forged".into()),
            },
        };
        let mut headers = async_nats::HeaderMap::new();
        vigil::bus::headers::insert(&mut headers, "Nats-Msg-Id", &vigil::bus::headers::HeaderText::escape(guess));
        js.publish_with_headers("vigil.out.restart.ws-victim", headers, wire::encode_output_msgpack(&forged).into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // when vigil really restarts that workspace,
    vigil::client::Client::with(client.clone(), "vigil").publish(&support::bus::not_found("ws-victim")).await.unwrap();
    wait_processed(&js, "vigil").await;
    let asked: serde_json::Value =
        serde_json::from_slice(&client.request("vigil.query.state.ws-victim", "".into()).await.unwrap().payload)
            .unwrap();
    vigil.stop();

    // then its command is on the stream beside the forgeries, under an id nobody could guess,
    let restarts: Vec<_> = support::bus::outputs(&js, "vigil")
        .await
        .into_iter()
        .filter_map(|o| match o.body {
            OutputBody::Restart { restart_id, detail, .. } => Some((restart_id, detail)),
            _ => None,
        })
        .collect();
    assert_eq!(restarts.len(), 3, "{restarts:?}");
    let real = &restarts[2];
    assert_eq!(real.1, None, "the last one is vigil's");
    assert_eq!(support::bus::untagged(&real.0), "ws-victim:1");
    assert!(restarts[..2].iter().all(|(id, _)| id != &real.0));
    // and a consumer can tell the real one from the forgeries by asking vigil.
    assert_eq!(asked["restart_in_flight"], real.0.as_str());
}
