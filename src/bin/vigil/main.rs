//! The `vigil` command: a thin shell over the library. Parses arguments, wires the pieces, and
//! turns errors into messages and exit codes.

mod replay_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// vigil decides whether AI-agent workspaces are alive and whether they may be restarted.
#[derive(Parser)]
#[command(name = "vigil", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay JSONL event logs through the engine (no NATS, no disk) and print what vigil decides.
    ///
    /// Each FILE holds one input event per line (the format of `vigil export` and of replays/*/
    /// events.jsonl); several files are read in order as one log. The output is a transcript for
    /// people, or with --json the output events as JSONL, identical on every run. A line that is
    /// not a valid event is reported on stderr with its line number and skipped (--strict stops
    /// there instead); the exit status is 1 if any line was skipped.
    Replay(replay_cmd::ReplayArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay(args) => replay_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("vigil: {err:#}");
            ExitCode::from(2)
        }
    }
}
