//! `vigil replay`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use vigil::replay;

use crate::policy_file::load_policy;

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// JSONL logs to replay, in order (`-` reads standard input).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print the output events as JSONL instead of a transcript.
    #[arg(long)]
    json: bool,
    /// A TOML policy file (windows and thresholds); SPEC defaults otherwise.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Stop at the first malformed line instead of skipping it.
    #[arg(long)]
    strict: bool,
}

pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let policy = load_policy(args.policy.as_ref())?;
    let mut texts = Vec::with_capacity(args.files.len());
    for path in &args.files {
        let name = path.display().to_string();
        let text = if name == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("reading standard input")?;
            s
        } else {
            std::fs::read_to_string(path).with_context(|| format!("reading {name}"))?
        };
        texts.push((name, text));
    }
    let lines = texts.iter().flat_map(|(name, text)| replay::parse_jsonl(name, text));
    let result = replay::run(policy, lines, args.strict);

    let rendered = if args.json { replay::to_jsonl(&result.outputs) } else { replay::to_transcript(&result.outputs) };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(rendered.as_bytes()).context("writing output")?;
    stdout.flush().context("writing output")?;
    for m in &result.malformed {
        eprintln!("vigil replay: skipped {m}");
    }
    eprintln!("vigil replay: {}", replay::summary(&result));
    Ok(if result.malformed.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
