//! `vigil export`, `vigil inspect` and the hidden `vigil debug-ingest`: the store from the command line.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use vigil::core::event::WorkspaceId;
use vigil::core::time::At;
use vigil::core::wire::{self, Stamping};
use vigil::store::{Committed, LogReader, OpenMode, Store, StoreConfig};

use crate::policy_file::load_policy;

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The data directory of a (stopped) vigil.
    #[arg(long, value_name = "DIR", env = "VIGIL_DATA_DIR")]
    data_dir: PathBuf,
    /// Start at this log sequence number, or at this RFC 3339 time.
    #[arg(long, value_name = "SEQ|TIME")]
    since: Option<String>,
    /// Only this workspace's events (and the clock events every workspace shares).
    #[arg(long, value_name = "ID")]
    workspace: Option<String>,
    /// Only this partition's log, of a data directory split into partitions (`<DIR>/p<K>`);
    /// without it, every partition's, merged in the input stream's order.
    #[arg(long, value_name = "K")]
    partition: Option<u32>,
}

/// Where an export starts.
enum Since {
    Seq(u64),
    Time(At),
}

fn parse_since(s: &str) -> anyhow::Result<Since> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Since::Seq(n.max(1)));
    }
    At::parse(s).map(Since::Time).with_context(|| format!("--since {s:?} is neither a sequence number nor a time"))
}

pub fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let workspace = args.workspace.as_deref().map(WorkspaceId::parse).transpose().context("--workspace")?;
    let dirs = partition_dirs(&args.data_dir, args.partition)?;
    let merged = dirs.len() > 1;
    let mut records = Vec::new();
    let mut held = Vec::new();
    for (partition, dir) in &dirs {
        let name = partition.map_or_else(String::new, |k| format!(" (partition {k})"));
        let reader = LogReader::open(dir)?;
        for repair in reader.repairs() {
            eprintln!("vigil export{name}: {repair}");
        }
        let from = match since {
            Some(Since::Seq(n)) if !merged => n,
            _ => 1,
        };
        if let Some((_, since)) = reader.policy()?
            && from < since
        {
            eprintln!(
                "vigil export{name}: warning: the log before sequence {since} was applied under an earlier policy; a \
                 replay of this export with the current one (`vigil inspect --show-policy`) reproduces the recorded \
                 outputs only from there on"
            );
        }
        if from < reader.first_seq() {
            eprintln!(
                "vigil export{name}: warning: the log before sequence {} was compacted away; a replay of this export \
                 starts without the history those entries carried",
                reader.first_seq()
            );
        }
        for record in reader.records(from) {
            let (_, input) = record?;
            if let Some(Since::Time(t)) = since
                && input.at < t
            {
                continue;
            }
            if let Some(ws) = &workspace
                && input.kind.workspace().is_some_and(|w| w != ws)
            {
                continue;
            }
            records.push(input);
        }
        held.push(format!(
            "{}{}..={}",
            partition.map_or_else(String::new, |k| format!("p{k} ")),
            reader.first_seq(),
            reader.last_seq()
        ));
    }
    if merged {
        if matches!(since, Some(Since::Seq(_))) {
            bail!("--since SEQ names a position in one partition's log: give --partition too, or a time");
        }
        // Each partition's log in the input stream's order; together, the stream's. A
        // `declaration` is in every partition's log: once here, like the stream holds it.
        records.sort_by_key(|input| (input.stream_seq, input.at));
        records.dedup_by(|b, a| a.stream_seq.is_some() && a.stream_seq == b.stream_seq && a == b);
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for input in &records {
        writeln!(out, "{}", wire::encode_json(input)).context("writing the export")?;
    }
    out.flush().context("writing the export")?;
    eprintln!("vigil export: {} events (log holds {})", records.len(), held.join(", "));
    Ok(ExitCode::SUCCESS)
}

/// The data directories an export or an inspection reads: `dir` itself; of a directory split into
/// partitions (`<dir>/p0`, `<dir>/p1`, …), partition `partition`'s or every one.
fn partition_dirs(dir: &std::path::Path, partition: Option<u32>) -> anyhow::Result<Vec<(Option<u32>, PathBuf)>> {
    let mut parts = Vec::new();
    while dir.join(format!("p{}", parts.len())).is_dir() {
        parts.push((Some(parts.len() as u32), dir.join(format!("p{}", parts.len()))));
    }
    match partition {
        None if parts.is_empty() => Ok(vec![(None, dir.to_path_buf())]),
        None => Ok(parts),
        Some(k) => match parts.into_iter().find(|(p, _)| *p == Some(k)) {
            Some(part) => Ok(vec![part]),
            None => {
                bail!("{} holds no partition {k} (no directory {})", dir.display(), dir.join(format!("p{k}")).display())
            }
        },
    }
}

#[derive(clap::Args)]
pub struct InspectArgs {
    /// The data directory of a (stopped) vigil.
    #[arg(long, value_name = "DIR", env = "VIGIL_DATA_DIR")]
    data_dir: PathBuf,
    /// Show this workspace in detail (otherwise: every workspace, one line each).
    workspace: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// The TOML policy to show the state under, for a directory from before vigil stored its
    /// policy (otherwise the stored one is used, and a different one is refused).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Print the policy the data directory runs under, as TOML (what `vigil replay --policy`
    /// needs to reproduce an export), and nothing else.
    #[arg(long, conflicts_with_all = ["workspace", "json", "policy"])]
    show_policy: bool,
    /// Only this partition, of a data directory split into partitions (`<DIR>/p<K>`); without it,
    /// every partition in turn (with --json, one document: `{"partitions": [...]}`), or the one
    /// holding WORKSPACE.
    #[arg(long, value_name = "K")]
    partition: Option<u32>,
}

pub fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let dirs = partition_dirs(&args.data_dir, args.partition)?;
    let mut stdout = std::io::stdout().lock();
    if dirs.len() == 1 {
        return inspect_dir(&dirs[0].1, &args, &mut stdout);
    }
    // Several partitions: each in turn; a workspace in the one that holds it.
    if let Some(ws) = &args.workspace {
        for (_, dir) in &dirs {
            if holds(dir, ws, &args)? {
                return inspect_dir(dir, &args, &mut stdout);
            }
        }
        bail!("no workspace {ws:?} in any partition of {}", args.data_dir.display());
    }
    if args.json && !args.show_policy {
        // One document: each partition's fleet and workspaces under its number.
        let mut parts = Vec::new();
        for (k, dir) in &dirs {
            let mut one = Vec::new();
            inspect_dir(dir, &args, &mut one)?;
            let mut part: serde_json::Value =
                serde_json::from_slice(&one).context("reading back a partition's JSON")?;
            part["partition"] = k.unwrap_or(0).into();
            parts.push(part);
        }
        writeln!(stdout, "{}", serde_json::to_string_pretty(&serde_json::json!({ "partitions": parts }))?)?;
        return Ok(ExitCode::SUCCESS);
    }
    for (k, dir) in &dirs {
        writeln!(stdout, "partition {}:", k.unwrap_or(0))?;
        inspect_dir(dir, &args, &mut stdout)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether the partition directory `dir` holds workspace `ws`.
fn holds(dir: &std::path::Path, ws: &str, args: &InspectArgs) -> anyhow::Result<bool> {
    let policy = match LogReader::open(dir)?.policy()? {
        Some((stored, _)) => stored,
        None => load_policy(args.policy.as_ref())?,
    };
    let (store, _) = Store::open(dir, policy, StoreConfig::default(), OpenMode::Inspect)?;
    Ok(store.engine().view(ws).is_some())
}

fn inspect_dir(data_dir: &std::path::Path, args: &InspectArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    // Read first, without recovering: opening the store under another policy would change it.
    let stored = {
        let reader = LogReader::open(data_dir)?;
        for repair in reader.repairs() {
            eprintln!("vigil inspect: {repair}");
        }
        reader.policy()?
    };
    if args.show_policy {
        let Some((policy, since)) = stored else {
            bail!("{} does not record its policy (written by an earlier vigil)", data_dir.display())
        };
        writeln!(out, "# the policy of {}, applied from log sequence {since} on", data_dir.display())?;
        write!(out, "{}", toml::to_string(&policy).context("writing the policy as TOML")?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let policy = match (stored, args.policy.as_ref()) {
        (Some((stored, _)), Some(path)) => {
            if load_policy(Some(path))? != stored {
                bail!(
                    "{} runs under its stored policy, not {}; omit --policy (see it with --show-policy)",
                    data_dir.display(),
                    path.display()
                );
            }
            stored
        }
        (Some((stored, _)), None) => stored,
        (None, path) => load_policy(path)?,
    };
    let (store, recovery) = Store::open(data_dir, policy, StoreConfig::default(), OpenMode::Inspect)?;
    let engine = store.engine();
    match &args.workspace {
        Some(ws) => {
            let Some(view) = engine.view(ws) else { bail!("no workspace {ws:?} in {}", data_dir.display()) };
            if args.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&view)?)?;
            } else {
                let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                writeln!(out, "workspace        {}", view.workspace)?;
                writeln!(out, "state            {} since {}", view.state, view.since)?;
                writeln!(out, "last heartbeat   {}", opt(view.last_heartbeat.map(|t| t.to_string())))?;
                writeln!(out, "interval         {} s", view.interval_s)?;
                writeln!(out, "incarnation      {}", opt(view.incarnation.clone()))?;
                writeln!(out, "restarts         {} issued; next attempt #{}", view.restarts, view.restart_attempt)?;
                writeln!(
                    out,
                    "follow-up owed   {}",
                    if view.followup_pending { "yes (a mutation restart)" } else { "no" }
                )?;
                writeln!(out, "held by breaker  {}", if view.held { "yes" } else { "no" })?;
                writeln!(out, "waiting on       {}", opt(view.waiting_on.map(str::to_string)))?;
                writeln!(out, "next timer       {}", opt(view.next_deadline.map(|t| t.to_string())))?;
                writeln!(out, "retry after      {}", opt(view.retry_after_s.map(|s| format!("{s} s"))))?;
            }
        }
        None => {
            let fleet = engine.fleet_view();
            if args.json {
                let all: Vec<_> = engine.workspace_ids().iter().filter_map(|w| engine.view(w.as_str())).collect();
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "fleet": fleet, "workspaces": all }))?
                )?;
            } else {
                writeln!(
                    out,
                    "{} workspaces: {} alive, {} suspect, {} restarting, {} dead, {} parked; {}; log at {} \
                     (checkpoint {}, {} replayed); {} outputs unconfirmed",
                    fleet.workspaces,
                    fleet.alive,
                    fleet.suspect,
                    fleet.restarting,
                    fleet.dead,
                    fleet.parked,
                    match fleet.disruption {
                        Some(mode) =>
                            format!("{mode} ({} of {} active suspect or dead)", fleet.unhealthy, fleet.active),
                        None if fleet.breaker_open => "breaker OPEN".to_string(),
                        None => "breaker closed".to_string(),
                    },
                    engine.seq(),
                    recovery.checkpoint_seq,
                    recovery.replayed,
                    recovery.pending.len(),
                )?;
                for id in engine.workspace_ids() {
                    let v = engine.view(id.as_str()).expect("listed workspaces exist");
                    let hb = v.last_heartbeat.map_or_else(|| "-".to_string(), |t| t.to_string());
                    writeln!(
                        out,
                        "{:<32} {:<10} since {}  last heartbeat {hb}  restarts {}",
                        v.workspace.as_str(),
                        v.state.as_str(),
                        v.since,
                        v.restarts
                    )?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// For tests: commits JSONL inputs to a data directory and reports what became durable.
#[derive(clap::Args)]
pub struct IngestArgs {
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// The JSONL inputs; after recovery, the first `applied` of them are skipped.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Inputs per group commit.
    #[arg(long, default_value_t = 10)]
    group: usize,
    /// Checkpoint every N inputs (0: never on its own).
    #[arg(long, default_value_t = 0)]
    checkpoint_every: u64,
}

/// Prints, line by line: `recovered <applied> <digest>`, then for every output handed out
/// `out <id> <json>` and after every flush `durable <seq>`, and finally `digest <hex>`.
pub fn ingest(args: IngestArgs) -> anyhow::Result<ExitCode> {
    let config = StoreConfig { checkpoint_every: args.checkpoint_every, ..StoreConfig::default() };
    // The directory's own policy if it has one: this tool must not change it.
    let policy = match args.data_dir.exists() {
        true => LogReader::open(&args.data_dir).ok().and_then(|r| r.policy().ok().flatten()).map(|(p, _)| p),
        false => None,
    };
    let (mut store, recovery) =
        Store::open(&args.data_dir, policy.unwrap_or_default(), config, OpenMode::CreateIfMissing)?;
    for repair in &recovery.repairs {
        eprintln!("vigil debug-ingest: {repair}");
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "recovered {} {}", store.engine().seq(), hex(&store.engine().digest()))?;
    for p in &recovery.pending {
        writeln!(out, "out {} {}", p.output.id, wire::encode_output_json(&p.output))?;
    }
    out.flush()?;
    let file = std::fs::File::open(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
    let mut inputs = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        inputs.push(wire::decode_json(&line?, Stamping::Logged)?);
    }
    let skip = store.engine().seq() as usize;
    // Pipelined, as `vigil serve` drives the store: a group is applied while the last one flushes,
    // and only what the store reports durable is reported.
    let mut report = |store: &mut Store, durable: Vec<Committed>| -> anyhow::Result<()> {
        for committed in durable {
            for p in &committed.outputs {
                writeln!(out, "out {} {}", p.output.id, wire::encode_output_json(&p.output))?;
            }
            writeln!(out, "durable {}", committed.last_seq)?;
            out.flush()?;
            store.ack(&committed.outputs.iter().map(|p| p.key).collect::<Vec<_>>())?;
        }
        Ok(())
    };
    for group in inputs.get(skip..).unwrap_or_default().chunks(args.group.max(1)) {
        store.submit(group, None)?;
        let durable = store.poll_durable()?;
        report(&mut store, durable)?;
    }
    let durable = store.wait_durable()?;
    report(&mut store, durable)?;
    writeln!(out, "digest {}", hex(&store.engine().digest()))?;
    out.flush()?;
    store.close()?;
    Ok(ExitCode::SUCCESS)
}

/// The engine's digest in hex, compared by tests against a fresh replay of the same log.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
