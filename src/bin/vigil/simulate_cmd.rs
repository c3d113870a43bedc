//! `vigil simulate`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;
use vigil::simulate::{self, Metrics, Outcome, Scenario, expect};

use crate::policy_file::load_policy;

#[derive(clap::Args)]
pub struct SimulateArgs {
    /// The scenario (TOML; see simulations/README.md).
    scenario: PathBuf,
    /// A TOML policy file, as for `vigil replay --policy`; SPEC defaults otherwise.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// The seed (overrides the scenario's `seed`; 1 if neither sets one).
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Write the inputs fed to the engine here, as JSONL: `vigil replay --json FILE` reproduces
    /// the run's outputs from it.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Print one JSON object (the metrics and the expectations) instead of a table.
    #[arg(long)]
    json: bool,
    /// Where a scenario's heartbeat trace files are (a relative `heartbeat_trace.file` is taken
    /// from here); the scenario file's own directory otherwise.
    #[arg(long, value_name = "DIR", env = "VIGIL_TRACES")]
    traces: Option<PathBuf>,
}

/// What `--json` prints: the metrics' keys, then the expectations' verdicts.
#[derive(Serialize)]
struct Report<'a> {
    scenario: String,
    #[serde(flatten)]
    metrics: &'a Metrics,
    expectations: &'a [Outcome],
}

pub fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let scenario = Scenario::load_with_traces(&args.scenario, args.traces.as_deref())
        .with_context(|| format!("scenario {}", args.scenario.display()))?;
    let policy = load_policy(args.policy.as_ref())?;
    let seed = args.seed.or(scenario.seed).unwrap_or(1);
    let sim =
        simulate::run(&scenario, policy, seed).with_context(|| format!("simulating {}", args.scenario.display()))?;
    if let Some(path) = &args.log {
        std::fs::write(path, simulate::log_jsonl(&sim.inputs))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let outcomes = scenario.expect.check(&sim.metrics);
    let rendered = if args.json {
        let report =
            Report { scenario: args.scenario.display().to_string(), metrics: &sim.metrics, expectations: &outcomes };
        serde_json::to_string(&report).context("rendering the report")? + "\n"
    } else {
        let mut s = format!("{} (seed {seed})\n\n{}", args.scenario.display(), sim.metrics.table());
        if !outcomes.is_empty() {
            s.push('\n');
            s.push_str(&expect::render(&outcomes));
        }
        s
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(rendered.as_bytes()).context("writing output")?;
    stdout.flush().context("writing output")?;
    Ok(if outcomes.iter().all(|o| o.pass) { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
