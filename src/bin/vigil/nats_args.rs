//! How the commands that talk to NATS (`serve`, `emit`, `watch`) reach it: flags and `VIGIL_*`
//! environment variables, layered over the configuration file for `serve`.

use std::path::PathBuf;

use vigil::bus;
use vigil::client::Client;
use vigil::config::ServeConfig;

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
    pub fn apply(&self, cfg: &mut ServeConfig) {
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

    pub async fn client(&self) -> anyhow::Result<Client> {
        let mut cfg = ServeConfig::default();
        self.apply(&mut cfg);
        cfg.validate()?;
        let nats = bus::connect::connect(&cfg, "vigil-cli").await?;
        Ok(Client::with(nats, &cfg.prefix))
    }
}
