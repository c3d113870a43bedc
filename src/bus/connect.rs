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

/// The input stream's metadata key that records its partition count (absent: one partition).
pub const PARTITIONS_KEY: &str = "vigil_partitions";

/// Creates or updates the input, output and DLQ streams, and the durable input consumer of the
/// partition `subjects` are scoped to (of the whole stream, unscoped).
pub async fn declare(
    js: &jetstream::Context,
    subjects: &Subjects,
    cfg: &ServeConfig,
) -> Result<consumer::PullConsumer, BusError> {
    declare_streams(js, subjects, cfg).await?;
    declare_consumer(js, subjects, cfg).await
}

/// Creates or updates the input, output and DLQ streams. An input stream partitioned otherwise
/// than `cfg.partitions` says is refused ([`BusError::PartitionsChanged`]), untouched.
pub async fn declare_streams(js: &jetstream::Context, subjects: &Subjects, cfg: &ServeConfig) -> Result<(), BusError> {
    check_partitions(js, subjects, cfg.partitions()).await?;
    let dlq_max_bytes = i64::try_from(cfg.dlq_max_bytes).unwrap_or(i64::MAX);
    let streams = [
        // The input stream is the log: producers' inputs and vigil's own records, in one order.
        (
            subjects.input_stream(),
            subjects.input_stream_subjects(cfg.partitions()),
            cfg.input_max_age,
            cfg.input_duplicate_window,
            -1,
        ),
        (subjects.output_stream(), vec![subjects.outputs()], cfg.output_max_age, cfg.output_duplicate_window, -1),
        (subjects.dlq_stream(), vec![subjects.dlq()], cfg.input_max_age, cfg.input_duplicate_window, dlq_max_bytes),
    ];
    for (name, stream_subjects, max_age, duplicate_window, max_bytes) in streams {
        let mut config = stream::Config {
            name: name.clone(),
            subjects: stream_subjects,
            storage: stream::StorageType::File,
            max_age,
            duplicate_window,
            max_bytes,
            discard: stream::DiscardPolicy::Old,
            num_replicas: cfg.stream_replicas,
            ..Default::default()
        };
        if name == subjects.input_stream() {
            // Each input stored under its partition's subject: `{{partition(P,2)}}` of the workspace.
            config.subject_transform = subjects
                .input_transform(cfg.partitions())
                .map(|(source, destination)| stream::SubjectTransform { source, destination });
            config.metadata.insert(PARTITIONS_KEY.into(), cfg.partitions().to_string());
        }
        js.create_or_update_stream(config)
            .await
            .map_err(|e| BusError::Declare { what: format!("stream {name}"), source: e.into() })?;
    }
    Ok(())
}

/// Refuses an existing input stream whose partition count differs from `configured`: its
/// records are stored under the other count's partitions, and every workspace's state is in the
/// logs of those.
async fn check_partitions(js: &jetstream::Context, subjects: &Subjects, configured: u32) -> Result<(), BusError> {
    let name = subjects.input_stream();
    let Ok(mut stream) = js.get_stream(&name).await else { return Ok(()) };
    let info = stream.info().await.map_err(|e| BusError::nats(format!("reading the stream {name}'s info"), e))?;
    let recorded = match info.config.metadata.get(PARTITIONS_KEY) {
        Some(text) => text.parse::<u32>().ok(),
        // A stream from before partitions existed, without a transform, is one partition.
        None if info.config.subject_transform.is_none() => Some(1),
        None => None,
    };
    match recorded {
        Some(n) if n == configured => Ok(()),
        _ => Err(BusError::PartitionsChanged {
            stream: name,
            configured,
            recorded: info.config.metadata.get(PARTITIONS_KEY).cloned().unwrap_or_else(|| "1".into()),
        }),
    }
}

/// The deployment's number of partitions, for a `vigil serve` that configures none: its input
/// stream's, if it exists (a stream from before partitions, without a transform, has one); one
/// if it does not but `data_dir` is a one-partition data directory (vigil's marker at its top:
/// its stream was deleted, and a new one must not split what it holds); else `None`, a new
/// deployment. A NATS failure is an error, never taken for a missing stream.
pub async fn deployed_partitions(
    js: &jetstream::Context,
    subjects: &Subjects,
    data_dir: &std::path::Path,
) -> Result<Option<u32>, BusError> {
    let name = subjects.input_stream();
    match js.get_stream(&name).await {
        Ok(mut stream) => {
            let info =
                stream.info().await.map_err(|e| BusError::nats(format!("reading the stream {name}'s info"), e))?;
            match info.config.metadata.get(PARTITIONS_KEY) {
                Some(text) => text.parse::<u32>().map(Some).map_err(|_| BusError::PartitionsChanged {
                    stream: name.clone(),
                    configured: 0,
                    recorded: text.clone(),
                }),
                None => Ok(Some(1)),
            }
        }
        Err(e)
            if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            Ok(crate::store::is_data_dir(data_dir).then_some(1))
        }
        Err(e) => Err(BusError::nats(format!("looking for the stream {name}"), e)),
    }
}

/// The durable consumer of the partition `subjects` are scoped to: `<consumer>` for the whole
/// stream (one partition), `<consumer>-p<K>` reading partition K's inputs and records.
pub async fn declare_consumer(
    js: &jetstream::Context,
    subjects: &Subjects,
    cfg: &ServeConfig,
) -> Result<consumer::PullConsumer, BusError> {
    let stream = js
        .get_stream(subjects.input_stream())
        .await
        .map_err(|e| BusError::Declare { what: format!("stream {}", subjects.input_stream()), source: e.into() })?;
    let (name, filter_subjects) = match subjects.part() {
        Some(part) => (format!("{}-p{}", cfg.consumer, part.index), subjects.partition_filters()),
        None => (cfg.consumer.clone(), Vec::new()),
    };
    let config = consumer::pull::Config {
        durable_name: Some(name.clone()),
        description: Some("vigil's input consumer: applied, made durable, then acknowledged".into()),
        filter_subjects,
        // One ack per group commit covers every message up to it.
        ack_policy: consumer::AckPolicy::All,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 20_000,
        ..Default::default()
    };
    let declare_error = |e: async_nats::Error| BusError::Declare { what: format!("consumer {name}"), source: e };
    let mut found = stream.get_or_create_consumer(&name, config.clone()).await.map_err(|e| declare_error(e.into()))?;
    // A partition's consumer declared by an earlier vigil may read less than this one must (the
    // fleet's declarations came later): its filters are brought up to date, where it stands.
    let wanted: std::collections::BTreeSet<&String> = config.filter_subjects.iter().collect();
    let has: std::collections::BTreeSet<&String> = found.cached_info().config.filter_subjects.iter().collect();
    if wanted != has {
        tracing::info!(consumer = name, filters = ?config.filter_subjects, "updating the consumer's filter subjects");
        found = stream.update_consumer(config).await.map_err(|e| declare_error(e.into()))?;
    }
    Ok(found)
}
