//! `vigil emit` and `vigil watch`: publish one event, and print outputs as they are published.

use std::process::ExitCode;

use anyhow::{Context, bail};
use futures::StreamExt;
use vigil::core::event::WorkspaceId;
use vigil::core::wire::{self, Stamping};
use vigil::replay;

use crate::nats_args::NatsArgs;

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

pub fn emit(args: EmitArgs) -> anyhow::Result<ExitCode> {
    let mut event = serde_json::json!({ "v": 1, "type": args.kind, "workspace": args.workspace });
    let mut fields = args.fields.iter();
    while let Some(name) = fields.next() {
        let Some(name) = name.strip_prefix("--") else { bail!("expected --FIELD VALUE pairs, found {name:?}") };
        if !wire::EVENT_FIELDS.contains(&name) {
            bail!(
                "--{name} is not an event field ({}); connection flags go before the event type",
                wire::EVENT_FIELDS.join(", ")
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
