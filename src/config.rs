//! How `vigil serve` is configured: one struct with sane defaults, read from a TOML file, then
//! overridden by environment variables and flags (the binary does the overriding; see `vigil serve
//! --help`). The liveness policy is separate (`core::Policy`, its own TOML file), because it is part
//! of what a replay must reproduce, while everything here is how the service is run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything `vigil serve` needs besides the policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// NATS server URL(s), comma-separated.
    pub nats_url: String,
    /// A NATS credentials (.creds) file.
    pub creds_file: Option<PathBuf>,
    /// A NATS token.
    pub token: Option<String>,
    /// NATS user (with `password`).
    pub user: Option<String>,
    pub password: Option<String>,
    /// The subject prefix of this connection's reply inboxes (default `_INBOX`). Give each NATS
    /// user its own (`deploy/nats/vigil.conf` expects `_INBOX_vigil` for vigil), so that no other
    /// user may subscribe to the replies vigil receives: its pulled inputs among them.
    pub inbox_prefix: Option<String>,
    /// Require TLS; `tls_ca` adds a root certificate, `tls_cert` + `tls_key` a client certificate.
    pub tls_required: bool,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The first token of every subject: `<prefix>.in.>`, `<prefix>.out.>`, `<prefix>.dlq`,
    /// `<prefix>.query.>`.
    pub prefix: String,
    /// The sled data directory.
    pub data_dir: PathBuf,
    /// A TOML policy file (windows and thresholds); SPEC defaults otherwise.
    pub policy_file: Option<PathBuf>,
    /// The durable consumer's name.
    pub consumer: String,
    /// At most this many messages per group commit...
    pub batch_max: usize,
    /// ...gathered for at most this long after the first (fewer flushes under load).
    #[serde(with = "humantime_serde")]
    pub batch_wait: Duration,
    /// Inputs larger than this go to the DLQ.
    pub max_payload: usize,
    /// At most this many workspaces are tracked: an input that would add one more goes to the DLQ
    /// (`quota_exceeded`). Set it near the size of the fleet, so that invented workspace ids cannot
    /// grow vigil's memory without bound.
    pub max_workspaces: usize,
    /// Checkpoint after this many inputs...
    pub checkpoint_every: u64,
    /// ...or this long after the last checkpoint, whichever comes first.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// Log entries older than this (and covered by a checkpoint) are dropped; the checkpoint
    /// carries their effect. `vigil export` warns when asked for a range that is gone.
    #[serde(with = "humantime_serde")]
    pub log_retention: Duration,
    /// How long the input stream keeps messages, and its de-duplication window for producers'
    /// `Nats-Msg-Id`.
    #[serde(with = "humantime_serde")]
    pub input_max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub input_duplicate_window: Duration,
    /// How long the output stream keeps messages, and its de-duplication window: a restart command
    /// re-published after a crash is dropped as a duplicate if vigil is back within this window.
    #[serde(with = "humantime_serde")]
    pub output_max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub output_duplicate_window: Duration,
    /// The DLQ stream keeps at most this many bytes, the oldest going first: a flood of refused
    /// inputs must not fill the NATS server's disk (the input stream's own bound is the account's
    /// JetStream limits).
    pub dlq_max_bytes: u64,
    /// vigil appends a `tick` to its input stream when nothing else has reached it for this long
    /// (and whenever a deadline is due), so that the stream shows it was watched (SPEC §1 "time").
    #[serde(with = "humantime_serde")]
    pub tick_every: Duration,
    /// A stretch of the input stream this long with no record at all is time nobody watched:
    /// every deadline is extended by it. Written into each `resume`; well above `tick_every`.
    #[serde(with = "humantime_serde")]
    pub unwatched_after: Duration,
    /// How often vigil appends a snapshot of its whole state to the input stream: a new data
    /// directory is rebuilt from the latest one and the records after it. `input_max_age` must be
    /// at least twice this, so that the stream always holds a complete snapshot.
    #[serde(with = "humantime_serde")]
    pub snapshot_every: Duration,
    /// How many NATS servers hold a copy of each of vigil's streams (JetStream replicas: 1, 3 or
    /// 5). With 3 on a 3-node cluster, losing any one server loses nothing and stops nothing.
    pub stream_replicas: usize,
    /// How many partitions the fleet's workspaces are split into (a workspace's is the FNV-1a of
    /// its id modulo this; SPEC §4 "Partitions"). Each is a log of its own, folded, owned and taken
    /// over on its own, so several instances share the work. Fixed for a deployment: a different
    /// value on an existing input stream is refused. Unset: the deployment's — its input stream's
    /// count, or one for a one-partition data directory whose stream is gone — and
    /// [`DEFAULT_PARTITIONS`] for a new deployment (see [`ServeConfig::partitions`]).
    pub partitions: Option<u32>,
    /// How many instances besides a partition's preferred owner follow its log as standbys (SPEC
    /// §4 "Partitions"): they fold every record as it comes, so a takeover needs no replay. Every
    /// other instance waits without following; should the lease come to it, it catches up from
    /// the stream first, like a rebuild.
    pub standbys: u32,
    /// This instance's name, for people: in the lease it holds, the epoch records it appends and
    /// its logs. Several instances on one stream take turns: one owns the log, the others wait as
    /// standbys.
    pub instance: String,
    /// How long the lease of the instance owning the log lasts without a renewal: a standby takes
    /// over this long after the owner stopped renewing it (a crash, a pause, a lost network).
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Where Prometheus metrics are served (`/metrics`); `None` to serve none.
    pub metrics_addr: Option<SocketAddr>,
    /// `human` or `json`.
    pub log_format: LogFormat,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            nats_url: "nats://127.0.0.1:4222".into(),
            creds_file: None,
            token: None,
            user: None,
            password: None,
            inbox_prefix: None,
            tls_required: false,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            prefix: "vigil".into(),
            data_dir: PathBuf::from(".data/vigil"),
            policy_file: None,
            consumer: "vigil".into(),
            batch_max: 1000,
            batch_wait: Duration::from_millis(0),
            max_payload: 64 * 1024,
            max_workspaces: 1_000_000,
            checkpoint_every: 1_000_000,
            checkpoint_interval: Duration::from_secs(30),
            log_retention: Duration::from_secs(7 * 24 * 3600),
            input_max_age: Duration::from_secs(7 * 24 * 3600),
            input_duplicate_window: Duration::from_secs(120),
            output_max_age: Duration::from_secs(7 * 24 * 3600),
            output_duplicate_window: Duration::from_secs(3600),
            dlq_max_bytes: 1 << 30,
            tick_every: Duration::from_secs(1),
            unwatched_after: Duration::from_secs(5),
            snapshot_every: Duration::from_secs(600),
            stream_replicas: 1,
            partitions: None,
            standbys: 1,
            instance: default_instance(),
            lease: Duration::from_secs(15),
            metrics_addr: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            log_format: LogFormat::Human,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid configuration")]
    Toml { path: PathBuf, source: toml::de::Error },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl ServeConfig {
    /// Reads a TOML file; keys left out keep their defaults, unknown keys are an error.
    pub fn from_file(path: &std::path::Path) -> Result<ServeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Toml { path: path.into(), source })
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.prefix.is_empty() || self.prefix.split('.').any(|t| t.is_empty() || t.contains(['*', '>', ' '])) {
            return bad("prefix must be one or more dot-separated subject tokens without wildcards");
        }
        if self.batch_max == 0 {
            return bad("batch_max must be at least 1");
        }
        if self.max_workspaces == 0 {
            return bad("max_workspaces must be at least 1");
        }
        if self
            .inbox_prefix
            .as_deref()
            .is_some_and(|p| p.is_empty() || p.split('.').any(|t| t.is_empty() || t.contains(['*', '>', ' '])))
        {
            return bad("inbox_prefix must be one or more dot-separated subject tokens without wildcards");
        }
        if self.user.is_some() != self.password.is_some() {
            return bad("user and password go together");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("tls_cert and tls_key go together");
        }
        if self.input_duplicate_window > self.input_max_age || self.output_duplicate_window > self.output_max_age {
            return bad("a stream's duplicate window cannot be longer than its max age");
        }
        if self.tick_every < Duration::from_millis(100) || self.tick_every > Duration::from_secs(2) {
            return bad("tick_every must be between 100ms and 2s");
        }
        if self.unwatched_after < self.tick_every * 3
            || self.unwatched_after < Duration::from_secs(1)
            || self.unwatched_after > Duration::from_secs(3600)
        {
            return bad(
                "unwatched_after must be at least three times tick_every and at least 1s, at most 1h (a shorter silence \
                 is the ordinary gap between ticks, not an outage)",
            );
        }
        if self.snapshot_every < Duration::from_secs(1) || self.snapshot_every * 2 > self.input_max_age {
            return bad(
                "snapshot_every must be at least 1s and at most half of input_max_age (the input stream must always \
                 hold a complete snapshot to rebuild a data directory from)",
            );
        }
        if self.instance.is_empty() || self.instance.len() > 128 || self.instance.chars().any(char::is_control) {
            return bad("instance must be a name of 1 to 128 printable characters");
        }
        if self.lease < Duration::from_secs(2)
            || self.lease > Duration::from_secs(600)
            || self.lease < self.tick_every * 4
        {
            return bad("lease must be between 2s and 10m, and at least four times tick_every");
        }
        if self.standbys > MAX_STANDBYS {
            return bad(&format!("standbys must be between 0 and {MAX_STANDBYS}"));
        }
        if self.partitions.is_some_and(|n| !(1..=MAX_PARTITIONS).contains(&n)) {
            return bad(&format!("partitions must be between 1 and {MAX_PARTITIONS}"));
        }
        if ![1, 3, 5].contains(&self.stream_replicas) {
            return bad(
                "stream_replicas must be 1, 3 or 5 (a JetStream stream keeps an odd number of copies, at most 5)",
            );
        }
        Ok(())
    }
}

/// The most standbys a partition may have: each reads its whole log.
pub const MAX_STANDBYS: u32 = 16;

/// The most partitions a deployment may have: each is a durable consumer, a lease and a data
/// directory on every instance that holds it.
pub const MAX_PARTITIONS: u32 = 256;

/// The partitions of a new deployment when none are configured: enough for sixteen instances to
/// share the work later, since the count cannot change once the stream exists.
pub const DEFAULT_PARTITIONS: u32 = 16;

impl ServeConfig {
    /// The number of partitions: as configured, or once `vigil serve` has resolved an unset one
    /// against the deployment (`bus::serve::run`), as resolved; an unset one that was never
    /// resolved reads as [`DEFAULT_PARTITIONS`], a new deployment's.
    pub fn partitions(&self) -> u32 {
        self.partitions.unwrap_or(DEFAULT_PARTITIONS)
    }
}

/// The host's name (`HOSTNAME`, else `/etc/hostname`), else `vigil`.
fn default_instance() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "vigil".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_overrides_defaults_and_typos_are_refused() {
        let cfg: ServeConfig = toml::from_str("nats_url = \"nats://a:4222\"\nbatch_wait = \"5ms\"\n").unwrap();
        assert_eq!(cfg.nats_url, "nats://a:4222");
        assert_eq!(cfg.batch_wait, Duration::from_millis(5));
        assert_eq!(cfg.prefix, "vigil");
        assert!(toml::from_str::<ServeConfig>("nats_urll = \"x\"").is_err());
        assert!(ServeConfig::default().validate().is_ok());
    }

    #[test]
    fn inconsistent_settings_are_refused() {
        let with = |f: fn(&mut ServeConfig)| {
            let mut c = ServeConfig::default();
            f(&mut c);
            c.validate()
        };
        assert!(with(|c| c.prefix = "vigil.*".into()).is_err());
        assert!(with(|c| c.prefix = "a..b".into()).is_err());
        assert!(with(|c| c.batch_max = 0).is_err());
        assert!(with(|c| c.user = Some("u".into())).is_err());
        assert!(with(|c| c.tls_key = Some("k.pem".into())).is_err());
        assert!(with(|c| c.output_duplicate_window = Duration::from_secs(30 * 24 * 3600)).is_err());
        assert!(with(|c| c.snapshot_every = Duration::from_millis(500)).is_err());
        assert!(
            with(|c| c.snapshot_every = Duration::from_secs(4 * 24 * 3600)).is_err(),
            "more than half of input_max_age"
        );
        // A silence shorter than three ticks is no outage: such a setting would extend every
        // deadline at ordinary gaps between ticks, and nothing would ever be suspected.
        assert!(with(|c| c.unwatched_after = Duration::from_secs(2)).is_err());
        assert!(with(|c| c.tick_every = Duration::from_secs(5)).is_err());
        assert!(with(|c| c.tick_every = Duration::from_millis(10)).is_err());
        assert!(with(|c| c.unwatched_after = Duration::from_secs(2 * 3600)).is_err());
        assert!(with(|c| c.stream_replicas = 2).is_err());
        assert!(with(|c| c.lease = Duration::from_secs(1)).is_err());
        assert!(with(|c| c.instance = String::new()).is_err());
        assert!(with(|c| c.stream_replicas = 0).is_err());
        assert!(with(|c| c.stream_replicas = 3).is_ok());
        assert!(with(|c| c.partitions = Some(0)).is_err());
        assert!(with(|c| c.partitions = Some(MAX_PARTITIONS + 1)).is_err());
        assert!(with(|c| c.partitions = Some(16)).is_ok());
        assert!(with(|c| c.partitions = None).is_ok());
        assert!(with(|c| c.standbys = 0).is_ok());
        assert!(with(|c| c.standbys = MAX_STANDBYS + 1).is_err());
        assert!(with(|c| c.prefix = "acme.vigil".into()).is_ok());
    }
}
