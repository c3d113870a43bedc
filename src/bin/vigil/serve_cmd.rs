//! `vigil serve`: the service, its configuration layered from file, environment and flags, and its
//! signals.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use vigil::config::{LogFormat, ServeConfig};
use vigil::{bus, telemetry};

use crate::nats_args::NatsArgs;
use crate::policy_file::load_policy;

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
    /// This instance's name (in its lease, epoch records and logs) [default: the host name]
    #[arg(long, env = "VIGIL_INSTANCE")]
    instance: Option<String>,
    /// How long the owning instance's lease lasts unrenewed, e.g. `15s` [default: 15s]
    #[arg(long, env = "VIGIL_LEASE", value_parser = humantime_serde::re::humantime::parse_duration)]
    lease: Option<std::time::Duration>,
    /// How many NATS servers keep a copy of each of vigil's streams: 1, 3 or 5 [default: 1]
    #[arg(long, env = "VIGIL_STREAM_REPLICAS")]
    stream_replicas: Option<usize>,
    /// How many partitions the workspaces are split into; fixed for a deployment [default: the
    /// deployment's; 16 for a new one]
    #[arg(long, env = "VIGIL_PARTITIONS")]
    partitions: Option<u32>,
    /// How many instances besides a partition's preferred owner follow its log [default: 1]
    #[arg(long, env = "VIGIL_STANDBYS")]
    standbys: Option<u32>,
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
    if let Some(name) = &args.instance {
        cfg.instance.clone_from(name);
    }
    if let Some(lease) = args.lease {
        cfg.lease = lease;
    }
    if let Some(n) = args.stream_replicas {
        cfg.stream_replicas = n;
    }
    if let Some(n) = args.partitions {
        cfg.partitions = Some(n);
    }
    if let Some(n) = args.standbys {
        cfg.standbys = n;
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
/// status 2: vigil acknowledges nothing before it is durable in the input stream and applied, so
/// all a stop at any moment costs is the final checkpoint (and a re-read of the copy's tail).
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
