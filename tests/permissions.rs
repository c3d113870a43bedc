//! The least-privilege NATS configuration in `deploy/nats/vigil.conf`, for real: `nats-server -t`
//! accepts it, vigil does its whole job as its own restricted user (streams, consumer, outputs,
//! DLQ, queries, the services API), every role can do what it is for — and each publish a role
//! must not make (remove or restart any workspace, forge a restart command, heartbeat for another
//! workspace, purge a stream) is refused by the server and changes nothing.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use support::bus::{heartbeat, input, state_of, untagged, wait_processed, ws};
use support::nats::{NatsServer, Vigil, nats_server_bin};
use vigil::client::Client;
use vigil::core::event::*;
use vigil::core::wire;

/// Every user of the configuration, and the variable its password comes from.
const USERS: [(&str, &str); 7] = [
    ("vigil", "VIGIL_NATS_VIGIL_PASSWORD"),
    ("provisioner", "VIGIL_NATS_PROVISIONER_PASSWORD"),
    ("control", "VIGIL_NATS_CONTROL_PASSWORD"),
    ("agent", "VIGIL_NATS_AGENT_PASSWORD"),
    ("agent-ws-a", "VIGIL_NATS_AGENT_WS_A_PASSWORD"),
    ("proxy", "VIGIL_NATS_PROXY_PASSWORD"),
    ("operator", "VIGIL_NATS_OPERATOR_PASSWORD"),
];

fn config() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nats/vigil.conf")
}

fn passwords() -> Vec<(String, String)> {
    USERS.iter().map(|(user, var)| (var.to_string(), password(user))).collect()
}

fn password(user: &str) -> String {
    format!("pw-{user}")
}

/// A role's connection, and the errors the server sent it.
struct Role {
    client: async_nats::Client,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Role {
    async fn connect(url: &str, user: &str) -> Role {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password(user))
            .custom_inbox_prefix(format!("_INBOX_{user}"))
            .event_callback(move |event| {
                let sink = sink.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        sink.lock().unwrap().push(e.to_string().to_lowercase());
                    }
                }
            })
            .connect(url)
            .await
            .unwrap_or_else(|e| panic!("{user} cannot connect: {e}"));
        Role { client, errors }
    }

    fn js(&self) -> jetstream::Context {
        jetstream::new(self.client.clone())
    }

    /// Publishes on `subject` and waits for the server to refuse it.
    async fn refused(&self, who: &str, subject: &str) {
        self.client.publish(subject.to_string(), "{}".into()).await.unwrap();
        self.client.flush().await.unwrap();
        self.wait_for_violation(who, "publish to", subject).await;
    }

    /// Subscribes to `subject` and waits for the server to refuse it.
    async fn refused_subscription(&self, who: &str, subject: &str) {
        let _subscription = self.client.subscribe(subject.to_string()).await.unwrap();
        self.client.flush().await.unwrap();
        self.wait_for_violation(who, "subscription to", subject).await;
    }

    async fn wait_for_violation(&self, who: &str, what: &str, subject: &str) {
        let expected = format!("permissions violation for {what} \"{}\"", subject.to_lowercase());
        let started = Instant::now();
        while !self.errors.lock().unwrap().iter().any(|e| e.contains(&expected)) {
            assert!(started.elapsed() < Duration::from_secs(5), "{who} may {what} {subject}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[test]
fn nats_server_accepts_the_configuration() {
    let text = std::fs::read_to_string(config()).unwrap();
    let users = text.lines().filter(|l| l.trim_start().starts_with("user: ")).count();
    assert_eq!(USERS.len(), users, "a user of the configuration is not in USERS");
    let out = std::process::Command::new(nats_server_bin())
        .args(["-t", "-c"])
        .arg(config())
        .envs(passwords())
        .output()
        .expect("run nats-server -t");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_can_do_its_job_and_nothing_else() {
    let env = passwords();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = NatsServer::start_with_env(&["-c", config().to_str().unwrap()], &env);
    let url = server.url();
    let data = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(
        &url,
        data.path(),
        &["--user", "vigil", "--password", "pw-vigil", "--inbox-prefix", "_INBOX_vigil"],
        &[],
    );

    let [provisioner, control, agent, agent_a, proxy, operator] = [
        Role::connect(&url, "provisioner").await,
        Role::connect(&url, "control").await,
        Role::connect(&url, "agent").await,
        Role::connect(&url, "agent-ws-a").await,
        Role::connect(&url, "proxy").await,
        Role::connect(&url, "operator").await,
    ];

    // The provisioner consumes restart commands exactly once, through its own durable consumer.
    let restarts = provisioner
        .js()
        .get_stream("VIGIL_OUT")
        .await
        .unwrap()
        .get_or_create_consumer(
            "provisioner",
            consumer::pull::Config {
                durable_name: Some("provisioner".into()),
                filter_subject: "vigil.out.restart.>".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    // Each role does its job:
    Client::with(agent_a.client.clone(), "vigil").publish(&heartbeat("ws-a")).await.unwrap();
    Client::with(agent.client.clone(), "vigil").publish(&heartbeat("ws-b")).await.unwrap();
    let created = input(InputKind::Lifecycle(Lifecycle { workspace: ws("ws-c"), phase: LifecyclePhase::Created }));
    Client::with(provisioner.client.clone(), "vigil").publish(&created).await.unwrap();
    let upstream =
        input(InputKind::UpstreamError(UpstreamError { workspace: ws("ws-a"), status: Some(502), error: None }));
    Client::with(proxy.client.clone(), "vigil").publish(&upstream).await.unwrap();
    let request = input(InputKind::RestartRequested(RestartRequested {
        workspace: ws("ws-b"),
        origin: Origin::User,
        reason: "clicked restart".into(),
        request_id: None,
    }));
    Client::with(control.client.clone(), "vigil").publish(&request).await.unwrap();
    // (an agent's garbage still reaches the DLQ: vigil may publish there)
    agent.client.publish("vigil.in.heartbeat.ws-b", "garbage".into()).await.unwrap();
    agent.client.flush().await.unwrap();

    let operator_js = operator.js();
    wait_processed(&operator_js, "vigil").await;
    assert_eq!(state_of(&proxy.client, "vigil", "ws-a").await.as_deref(), Some("alive"));
    assert_eq!(state_of(&control.client, "vigil", "ws-b").await.as_deref(), Some("restarting"));
    let ping = operator.client.request("$SRV.PING.vigil", "".into()).await.unwrap();
    assert!(String::from_utf8_lossy(&ping.payload).contains("vigil"));
    let mut batch = restarts.fetch().max_messages(10).expires(Duration::from_secs(2)).messages().await.unwrap();
    let command = batch.next().await.expect("the restart command").unwrap();
    let command = wire::decode_output_msgpack(&command.payload).unwrap();
    command_is(&command, "ws-b:1");

    // and every publish it must not make is refused by the server:
    for subject in [
        "vigil.in.lifecycle.ws-a",
        "vigil.in.restart_requested.ws-a",
        "vigil.out.restart.ws-a",
        "vigil.dlq",
        "vigil.log.tick",
        "vigil.log.resume",
    ] {
        agent.refused("agent", subject).await;
    }
    agent_a.refused("agent-ws-a", "vigil.in.heartbeat.ws-b").await;
    for subject in
        ["vigil.in.heartbeat.ws-a", "vigil.in.restart_requested.ws-a", "vigil.out.restart.ws-a", "vigil.log.tick"]
    {
        provisioner.refused("provisioner", subject).await;
    }
    for subject in
        ["vigil.in.lifecycle.ws-a", "vigil.in.probe.ws-a", "vigil.out.state_changed.ws-a", "vigil.log.resume"]
    {
        control.refused("control", subject).await;
    }
    for subject in ["vigil.in.probe.ws-a", "vigil.in.restart_requested.ws-a", "vigil.in.heartbeat.ws-a"] {
        proxy.refused("proxy", subject).await;
    }
    for subject in [
        "vigil.in.heartbeat.ws-a",
        "vigil.out.restart.ws-a",
        "vigil.log.tick",
        "$JS.API.STREAM.PURGE.VIGIL_IN",
        "$JS.API.STREAM.DELETE.VIGIL_OUT",
    ] {
        operator.refused("operator", subject).await;
    }

    // Nobody may read another's replies (vigil's pulled inputs come back on its inbox) or the
    // outputs unless it is meant to,
    for subject in ["_INBOX_vigil.>", "_INBOX.>", "vigil.out.>", "vigil.in.>"] {
        agent.refused_subscription("agent", subject).await;
    }
    operator.refused_subscription("operator", "_INBOX_provisioner.>").await;
    proxy.refused_subscription("proxy", "vigil.out.restart.>").await;
    // and a per-workspace agent's password does not open the shared agent account.
    let shared =
        async_nats::ConnectOptions::with_user_and_password("agent".into(), password("agent-ws-a")).connect(&url).await;
    assert!(shared.is_err(), "agent-ws-a's password logs in as agent");

    // So nothing forbidden reached a stream: the inputs are the six published above, everything
    // else in the input stream is vigil's own records, and the only restart command is vigil's.
    let all = support::bus::read_stream(&operator_js, "VIGIL_IN").await;
    let inputs = all.iter().filter(|m| m.subject.starts_with("vigil.in.")).count();
    assert_eq!(inputs, 6);
    let others: Vec<&str> = all.iter().map(|m| m.subject.as_str()).filter(|s| !s.starts_with("vigil.in.")).collect();
    assert!(others.iter().all(|s| ["vigil.log.tick", "vigil.log.resume", "vigil.log.epoch"].contains(s)), "{others:?}");
    let log = vigil.stop();
    assert!(!log.to_lowercase().contains("permissions violation"), "vigil lacks a permission:\n{log}");
    let outputs = support::bus::outputs(&operator_js, "vigil").await;
    let commands: Vec<_> = outputs.iter().filter(|o| matches!(o.body, OutputBody::Restart { .. })).collect();
    assert_eq!(commands.len(), 1, "{commands:?}");
    command_is(commands[0], "ws-b:1");
}

fn command_is(output: &Output, plain: &str) {
    match &output.body {
        OutputBody::Restart { restart_id, origin, .. } => {
            assert_eq!(untagged(restart_id), plain);
            assert_eq!(*origin, Origin::User);
        }
        other => panic!("not a restart command: {other:?}"),
    }
}
