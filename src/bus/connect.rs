//! Connecting to NATS with the configured credentials and TLS, and declaring vigil's streams and
//! consumer (idempotently: every start creates or updates them).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use crate::bus::BusError;
use crate::bus::subjects::Subjects;
use crate::config::ServeConfig;

/// Connects with the configured auth. Reconnection after a lost connection is automatic and
/// unlimited; the first connection must succeed, so a wrong URL or credentials fail fast.
pub async fn connect(cfg: &ServeConfig, name: &str) -> Result<async_nats::Client, BusError> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None::<usize>)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("connected to NATS"),
                async_nats::Event::Disconnected => tracing::warn!("lost the NATS connection; reconnecting"),
                async_nats::Event::SlowConsumer(sid) => tracing::warn!(sid, "slow consumer: messages dropped"),
                other => tracing::info!(event = %other, "NATS event"),
            }
        });
    if let Some(path) = &cfg.creds_file {
        opts =
            opts.credentials_file(path).await.map_err(|source| BusError::Credentials { path: path.clone(), source })?;
    }
    if let Some(token) = &cfg.token {
        opts = opts.token(token.clone());
    }
    if let (Some(user), Some(password)) = (&cfg.user, &cfg.password) {
        opts = opts.user_and_password(user.clone(), password.clone());
    }
    if let Some(prefix) = &cfg.inbox_prefix {
        opts = opts.custom_inbox_prefix(prefix);
    }
    if cfg.tls_required {
        opts = opts.require_tls(true);
    }
    if let Some(ca) = &cfg.tls_ca {
        opts = opts.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    // Each URL of a cluster parsed on its own: async-nats takes a list, not a comma-separated one.
    let mut urls = Vec::new();
    for url in cfg.nats_url.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let addr = url
            .parse::<async_nats::ServerAddr>()
            .map_err(|source| BusError::Connect { url: url.to_string(), source: source.into() })?;
        urls.push(addr);
    }
    opts.connect(urls).await.map_err(|source| BusError::Connect { url: cfg.nats_url.clone(), source })
}

/// Creates or updates the input, output and DLQ streams, and the durable input consumer.
pub async fn declare(
    js: &jetstream::Context,
    subjects: &Subjects,
    cfg: &ServeConfig,
) -> Result<consumer::PullConsumer, BusError> {
    let dlq_max_bytes = i64::try_from(cfg.dlq_max_bytes).unwrap_or(i64::MAX);
    let streams = [
        // The input stream is the log: producers' inputs and vigil's own records, in one order.
        (
            subjects.input_stream(),
            vec![subjects.inputs(), subjects.log()],
            cfg.input_max_age,
            cfg.input_duplicate_window,
            -1,
        ),
        (subjects.output_stream(), vec![subjects.outputs()], cfg.output_max_age, cfg.output_duplicate_window, -1),
        (subjects.dlq_stream(), vec![subjects.dlq()], cfg.input_max_age, cfg.input_duplicate_window, dlq_max_bytes),
    ];
    for (name, subjects, max_age, duplicate_window, max_bytes) in streams {
        let config = stream::Config {
            name: name.clone(),
            subjects,
            storage: stream::StorageType::File,
            max_age,
            duplicate_window,
            max_bytes,
            discard: stream::DiscardPolicy::Old,
            num_replicas: cfg.stream_replicas,
            ..Default::default()
        };
        js.create_or_update_stream(config)
            .await
            .map_err(|e| BusError::Declare { what: format!("stream {name}"), source: e.into() })?;
    }
    let stream = js
        .get_stream(subjects.input_stream())
        .await
        .map_err(|e| BusError::Declare { what: format!("stream {}", subjects.input_stream()), source: e.into() })?;
    stream
        .get_or_create_consumer(
            &cfg.consumer,
            consumer::pull::Config {
                durable_name: Some(cfg.consumer.clone()),
                description: Some("vigil's input consumer: applied, made durable, then acknowledged".into()),
                // One ack per group commit covers every message up to it.
                ack_policy: consumer::AckPolicy::All,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 20_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| BusError::Declare { what: format!("consumer {}", cfg.consumer), source: e.into() })
}
