//! `vigil serve`, `vigil emit` and `vigil watch`: the service and its two small companions.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use futures::StreamExt;
use vigil::client::Client;
use vigil::config::{LogFormat, ServeConfig};
use vigil::core::event::WorkspaceId;
use vigil::core::wire::{self, Stamping};
use vigil::{bus, replay, telemetry};

use crate::replay_cmd::load_policy;

/// How to reach NATS (shared by serve, emit and watch). Each flag can also be set in the
/// environment (`VIGIL_*`) and, for `serve`, in the configuration file; flags win, then the
/// environment, then the file.
#[derive(clap::Args, Clone)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated [default: nats://127.0.0.1:4222]
    #[arg(long, env = "VIGIL_NATS_URL")]
    nats_url: Option<String>,
    /// NATS credentials (.creds) file.
    #[arg(long, env = "VIGIL_NATS_CREDS", value_name = "FILE")]
    creds: Option<PathBuf>,
    /// NATS token.
    #[arg(long, env = "VIGIL_NATS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// NATS user (with --password).
    #[arg(long, env = "VIGIL_NATS_USER")]
    user: Option<String>,
    /// NATS password (with --user).
    #[arg(long, env = "VIGIL_NATS_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// The subject prefix of this connection's reply inboxes [default: _INBOX]; with
    /// deploy/nats/vigil.conf, `_INBOX_<user>`.
    #[arg(long, env = "VIGIL_NATS_INBOX_PREFIX", value_name = "PREFIX")]
    inbox_prefix: Option<String>,
    /// Require TLS.
    #[arg(long, env = "VIGIL_TLS_REQUIRED")]
    tls_required: bool,
    /// A root CA certificate (PEM) to trust.
    #[arg(long, env = "VIGIL_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// A client certificate (PEM), with --tls-key.
    #[arg(long, env = "VIGIL_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, env = "VIGIL_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Subject prefix [default: vigil]
    #[arg(long, env = "VIGIL_PREFIX")]
    prefix: Option<String>,
}

impl NatsArgs {
    fn apply(&self, cfg: &mut ServeConfig) {
        fn set<T: Clone>(slot: &mut Option<T>, v: &Option<T>) {
            if v.is_some() {
                slot.clone_from(v);
            }
        }
        if let Some(url) = &self.nats_url {
            cfg.nats_url.clone_from(url);
        }
        set(&mut cfg.creds_file, &self.creds);
        set(&mut cfg.token, &self.token);
        set(&mut cfg.user, &self.user);
        set(&mut cfg.password, &self.password);
        set(&mut cfg.inbox_prefix, &self.inbox_prefix);
        cfg.tls_required |= self.tls_required;
        set(&mut cfg.tls_ca, &self.tls_ca);
        set(&mut cfg.tls_cert, &self.tls_cert);
        set(&mut cfg.tls_key, &self.tls_key);
        if let Some(prefix) = &self.prefix {
            cfg.prefix.clone_from(prefix);
        }
    }

    async fn client(&self) -> anyhow::Result<Client> {
        let mut cfg = ServeConfig::default();
        self.apply(&mut cfg);
        cfg.validate()?;
        let nats = bus::connect::connect(&cfg, "vigil-cli").await?;
        Ok(Client::with(nats, &cfg.prefix))
    }
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// A TOML configuration file (see README); every key is optional.
    #[arg(long, env = "VIGIL_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    nats: NatsArgs,
    /// The data directory [default: .data/vigil]
    #[arg(long, env = "VIGIL_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A TOML policy file (windows and thresholds); SPEC defaults otherwise.
    #[arg(long, env = "VIGIL_POLICY", value_name = "FILE")]
    policy: Option<PathBuf>,
    /// At most this many inputs per group commit [default: 1000]
    #[arg(long, env = "VIGIL_BATCH_MAX")]
    batch_max: Option<usize>,
    /// Larger inputs go to the DLQ, in bytes [default: 65536]
    #[arg(long, env = "VIGIL_MAX_PAYLOAD")]
    max_payload: Option<usize>,
    /// At most this many workspaces are tracked; inputs that would add more go to the DLQ
    /// (`quota_exceeded`) [default: 1000000]
    #[arg(long, env = "VIGIL_MAX_WORKSPACES")]
    max_workspaces: Option<usize>,
    /// Serve Prometheus metrics here, or `off` [default: 127.0.0.1:9464]
    #[arg(long, env = "VIGIL_METRICS_ADDR", value_name = "ADDR|off")]
    metrics_addr: Option<String>,
    /// Log format; the level comes from RUST_LOG (default info) [default: human]
    #[arg(long, env = "VIGIL_LOG_FORMAT")]
    log_format: Option<LogFormat>,
}

/// The configuration: defaults, then the file, then environment and flags.
fn resolve(args: &ServeArgs) -> anyhow::Result<ServeConfig> {
    let mut cfg = match &args.config {
        Some(path) => ServeConfig::from_file(path)?,
        None => ServeConfig::default(),
    };
    args.nats.apply(&mut cfg);
    if let Some(d) = &args.data_dir {
        cfg.data_dir.clone_from(d);
    }
    if let Some(p) = &args.policy {
        cfg.policy_file = Some(p.clone());
    }
    if let Some(n) = args.batch_max {
        cfg.batch_max = n;
    }
    if let Some(n) = args.max_payload {
        cfg.max_payload = n;
    }
    if let Some(n) = args.max_workspaces {
        cfg.max_workspaces = n;
    }
    match args.metrics_addr.as_deref() {
        None => {}
        Some("off") => cfg.metrics_addr = None,
        Some(addr) => {
            cfg.metrics_addr = Some(addr.parse::<SocketAddr>().with_context(|| format!("--metrics-addr {addr:?}"))?)
        }
    }
    if let Some(f) = args.log_format {
        cfg.log_format = f;
    }
    cfg.validate()?;
    Ok(cfg)
}

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let cfg = resolve(&args)?;
    telemetry::init_logging(cfg.log_format);
    let policy = load_policy(cfg.policy_file.as_ref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        if let Some(addr) = cfg.metrics_addr {
            telemetry::init_metrics(addr).with_context(|| format!("serving metrics on {addr}"))?;
            tracing::info!(%addr, "metrics at http://{addr}/metrics");
        }
        bus::run(cfg, policy, shutdown_on_signal()).await.map_err(anyhow::Error::from)
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on the first SIGTERM or SIGINT (Ctrl-C), which starts a clean shutdown, bounded by a
/// watchdog from that moment. A signal that arrives once the service no longer listens for one —
/// a second signal, or one during the shutdown after an error — stops the process at once with
/// status 2: vigil acknowledges nothing before it is durable, so all a stop at any moment costs
/// is the final checkpoint.
fn shutdown_on_signal() -> impl std::future::Future<Output = ()> {
    let (first, listening) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut signals = Signals::new();
        let mut first = Some(first);
        loop {
            signals.next().await;
            let started = first.take().is_some_and(|tx| tx.send(()).is_ok());
            if started {
                // Bounded from the signal on, even if the loop is stuck before it can start the
                // shutdown (a disk whose writes hang rather than fail).
                bus::serve::watchdog(bus::serve::SHUTDOWN_LIMIT);
            } else {
                eprintln!("vigil: signal received while stopping; exiting now");
                std::process::exit(2);
            }
        }
    });
    async move {
        let _ = listening.await;
    }
}

/// SIGTERM and SIGINT, listened for from creation on (so none is missed between two waits).
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals { term: signal(SignalKind::terminate()).ok(), int: signal(SignalKind::interrupt()).ok() }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next SIGTERM or SIGINT.
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = recv(&mut self.term) => {}
                _ = recv(&mut self.int) => {}
            }
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c().await.unwrap_or(());
    }
}

#[derive(clap::Args)]
pub struct EmitArgs {
    /// The event type: heartbeat, probe, upstream_error, restart_requested, restart_progress, lifecycle.
    kind: String,
    /// The workspace id.
    workspace: String,
    /// The event's own fields as `--name value` pairs, e.g. `--interval_s 30 --incarnation c-1`
    /// or `--result not_found`; numbers are sent as numbers.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "--FIELD VALUE")]
    fields: Vec<String>,
    #[command(flatten)]
    nats: NatsArgs,
}

/// The fields an event may carry besides `v`, `type`, `workspace` and `at` (SPEC §1).
const EVENT_FIELDS: &[&str] = &[
    "id",
    "interval_s",
    "incarnation",
    "active_tasks",
    "result",
    "error",
    "backend",
    "probe_id",
    "status",
    "origin",
    "reason",
    "request_id",
    "restart_id",
    "phase",
];

pub fn emit(args: EmitArgs) -> anyhow::Result<ExitCode> {
    let mut event = serde_json::json!({ "v": 1, "type": args.kind, "workspace": args.workspace });
    let mut fields = args.fields.iter();
    while let Some(name) = fields.next() {
        let Some(name) = name.strip_prefix("--") else { bail!("expected --FIELD VALUE pairs, found {name:?}") };
        if !EVENT_FIELDS.contains(&name) {
            bail!(
                "--{name} is not an event field ({}); connection flags go before the event type",
                EVENT_FIELDS.join(", ")
            );
        }
        let Some(value) = fields.next() else { bail!("--{name} needs a value") };
        let value = value.parse::<u64>().map(serde_json::Value::from).unwrap_or_else(|_| value.as_str().into());
        event[name] = value;
    }
    let now = vigil::client::wall_clock();
    event["at"] = now.to_string().into();
    let input = wire::decode_json(&event.to_string(), Stamping::Logged).context("not a valid event")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = args.nats.client().await?;
        client.publish(&input).await?;
        anyhow::Ok(())
    })?;
    eprintln!("vigil emit: published {}", wire::encode_json(&input));
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct WatchArgs {
    /// Only this workspace's outputs.
    #[arg(long)]
    workspace: Option<String>,
    /// Print the outputs as JSONL instead of a transcript.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    nats: NatsArgs,
}

pub fn watch(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let workspace = args.workspace.as_deref().map(WorkspaceId::parse).transpose().context("--workspace")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = args.nats.client().await?;
        let mut outputs = Box::pin(client.watch(workspace.as_ref()).await?);
        eprintln!("vigil watch: waiting for outputs (Ctrl-C to stop)");
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return anyhow::Ok(()),
                next = outputs.next() => match next {
                    None => bail!("the subscription ended"),
                    Some(Err(e)) => eprintln!("vigil watch: an output that does not decode: {e}"),
                    Some(Ok(out)) if args.json => println!("{}", wire::encode_output_json(&out)),
                    Some(Ok(out)) => println!("{}", replay::transcript_line(&out)),
                },
            }
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
