//! The `vigil` command: a thin shell over the library. Parses arguments, wires the pieces, and
//! turns errors into messages and exit codes.

#![forbid(unsafe_code)]

mod client_cmds;
mod nats_args;
mod policy_file;
mod replay_cmd;
mod serve_cmd;
mod simulate_cmd;
mod store_cmds;

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
    /// Run the service: consume events from NATS JetStream, decide, publish outputs.
    ///
    /// Inputs are read from the stream over `<prefix>.in.>` (created if missing) with a durable
    /// consumer, committed to the data directory, then acknowledged. Outputs are published on
    /// `<prefix>.out.<type>.<workspace>`; invalid inputs go to `<prefix>.dlq`. State queries:
    /// `<prefix>.query.state.<workspace>` and `<prefix>.query.fleet`. SIGTERM or Ctrl-C stops it
    /// cleanly.
    #[command(args_override_self = true)] // a flag given twice: the last one counts
    Serve(serve_cmd::ServeArgs),
    /// Publish one event, e.g. `vigil emit heartbeat ws-a --interval_s 30`.
    Emit(client_cmds::EmitArgs),
    /// Print vigil's outputs as they are published.
    Watch(client_cmds::WatchArgs),
    /// Replay JSONL event logs through the engine (no NATS, no disk) and print what vigil decides.
    ///
    /// Each FILE holds one input event per line (the format of `vigil export` and of replays/*/
    /// events.jsonl); several files are read in order as one log. The output is a transcript for
    /// people, or with --json the output events as JSONL, identical on every run. A line that is
    /// not a valid event is reported on stderr with its line number and skipped (--strict stops
    /// there instead); the exit status is 1 if any line was skipped.
    Replay(replay_cmd::ReplayArgs),
    /// Try a policy on a simulated fleet in virtual time, and print how it did.
    ///
    /// SCENARIO (TOML; simulations/ has several, simulations/README.md lists every key) describes
    /// a fleet, its heartbeats and traffic, the provisioner, and the faults that strike it. The
    /// world is fed to the real engine in a closed loop — vigil's probe requests are answered, its
    /// restarts reboot workspaces — and the run reports detection times of true deaths, wrong
    /// suspicions of live workspaces, false restarts, probe load, alerts and suppressions. Seeded:
    /// the same scenario, policy and seed give the same figures and the same --log, which `vigil
    /// replay --json` turns back into exactly the run's outputs. Exit status 1 if an expectation
    /// of the scenario's [expect] section fails, 2 on errors.
    Simulate(simulate_cmd::SimulateArgs),
    /// Print a data directory's log as JSONL, the format `vigil replay` reads.
    ///
    /// Replaying a full export reproduces, byte for byte, the outputs vigil produced. Entries removed
    /// by retention are reported with a warning. The directory must not be in use by `vigil serve`.
    Export(store_cmds::ExportArgs),
    /// Show the workspaces' states recovered from a data directory.
    ///
    /// Without WORKSPACE: fleet counts and one line per workspace. With it: state, since, last
    /// heartbeat, incarnation, restart attempt, pending coalesced restart, next timer.
    Inspect(store_cmds::InspectArgs),
    /// (testing) Commit a JSONL log to a data directory, reporting what becomes durable.
    #[command(hide = true)]
    DebugIngest(store_cmds::IngestArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve_cmd::serve(args),
        Command::Emit(args) => client_cmds::emit(args),
        Command::Watch(args) => client_cmds::watch(args),
        Command::Replay(args) => replay_cmd::run(args),
        Command::Simulate(args) => simulate_cmd::run(args),
        Command::Export(args) => store_cmds::export(args),
        Command::Inspect(args) => store_cmds::inspect(args),
        Command::DebugIngest(args) => store_cmds::ingest(args),
    };
    match result {
        Ok(code) => code,
        // The reader went away (`vigil export | head`): not an error worth a message.
        Err(err)
            if err.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("vigil: {}", vigil::report::Chain(err.as_ref()));
            ExitCode::from(2)
        }
    }
}
