//! `vigil simulate`: try a liveness policy on a simulated fleet before deploying it.
//!
//! Replays answer "what would vigil have done in that incident"; a simulation answers "what will
//! this policy do to a fleet like ours". A world of workspaces and a provisioner runs in virtual
//! time ([`world`]), every fact it produces is fed to the real [`Engine`] as an input, and the
//! engine's probe requests and restarts act back on the world — a closed loop, so a false restart
//! really reboots a healthy agent and a slow detection really leaves a dead one dead. The figures
//! that matter (how fast a death is caught, how often a live workspace is suspected or restarted,
//! how many probes that costs) are computed afterwards ([`metrics`]).
//!
//! Everything is seeded: the same scenario, policy and seed give the same inputs, outputs and
//! metrics, byte for byte. The inputs fed are a log `vigil replay` reproduces the run's outputs
//! from, so a surprising figure can be examined decision by decision.
//!
//! # Layout
//!
//! - [`scenario`]: the TOML scenario, validated; [`expect`]: its `[expect]` targets.
//! - [`world`]: workspaces, provisioner and their history; [`faults`]: the fault schedule;
//!   [`queue`]: the agenda; [`trace`]: heartbeat timing from recorded send times.
//! - [`metrics`]: what a run measured, as a table or JSON.

pub mod expect;
pub mod faults;
pub mod metrics;
pub mod queue;
pub mod scenario;
pub mod trace;
pub mod world;

use crate::core::event::{Input, Output};
use crate::core::{Engine, Policy, wire};

pub use expect::{Expect, Outcome};
pub use metrics::Metrics;
pub use scenario::{Scenario, ScenarioError};
pub use trace::{Trace, TraceError};
pub use world::History;

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// The scenario's heartbeat trace (the error names the file).
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("the run fed more than {0} inputs; shorten `duration` or shrink `workspaces`")]
    TooLarge(u64),
}

/// What a run produced.
#[derive(Debug)]
pub struct Simulation {
    /// Every input fed to the engine, in order: the run's log.
    pub inputs: Vec<Input>,
    /// Every output, in order.
    pub outputs: Vec<Output>,
    /// The world's truth over the run.
    pub history: History,
    pub metrics: Metrics,
}

/// Runs `scenario` under `policy` with `seed`: the world and a fresh engine in a closed loop
/// until the scenario's `duration` of virtual time has passed.
pub fn run(scenario: &Scenario, policy: Policy, seed: u64) -> Result<Simulation, SimulateError> {
    let trace = match &scenario.heartbeat_trace {
        Some(spec) => Some(Trace::load(&spec.file, spec.scale)?),
        None => None,
    };
    let mut world = world::World::new(scenario, trace, seed);
    let mut engine = Engine::new(policy);
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    // Twice the estimate leaves room for what vigil itself causes (probe answers, restarts).
    let limit = scenario.estimated_inputs().saturating_mul(2).max(scenario::MAX_INPUTS);
    while let Some(input) = world.next_input() {
        let start = outputs.len();
        engine.apply(&input, &mut outputs);
        inputs.push(input);
        if inputs.len() as u64 > limit {
            return Err(SimulateError::TooLarge(limit));
        }
        world.react(&outputs[start..]);
    }
    let history = world.into_history();
    let metrics = Metrics::compute(seed, &history, inputs.len(), &outputs);
    Ok(Simulation { inputs, outputs, history, metrics })
}

/// The inputs as JSONL, one per line: the log `vigil replay` reads.
pub fn log_jsonl(inputs: &[Input]) -> String {
    let mut s = String::new();
    for input in inputs {
        s.push_str(&wire::encode_json(input));
        s.push('\n');
    }
    s
}
