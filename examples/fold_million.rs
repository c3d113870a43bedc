//! The engine folding at a million workspaces, the recovery benchmark's scale: three rounds of
//! 3 000 000 inputs through `Engine::apply_batch` in groups of 10 000, in a scattered workspace
//! order, after one heartbeat per workspace. Prints nanoseconds per input for each round.
//!
//! An A/B harness rather than part of `make bench`: run it at two commits, back to back, on a
//! quiet machine (`cargo run --release --example fold_million`; `FLEET=n` changes the fleet).

use std::time::Instant;

use vigil::core::engine::Engine;
use vigil::core::{Input, Policy};

#[path = "../tests/support/rng.rs"]
mod rng;
use rng::Rng;

#[path = "../benches/support/workload.rs"]
mod workload;

const ROUND: usize = 3_000_000;

/// The i-th input, for workspaces in a scattered order.
fn event(i: usize, fleet: usize, rng: &mut Rng) -> Input {
    workload::input(i, fleet, i.wrapping_mul(7_919) % fleet, rng)
}

fn main() {
    let fleet: usize = std::env::var("FLEET").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let mut rng = Rng(3);
    let inputs: Vec<Input> = (0..fleet + 3 * ROUND).map(|i| event(i, fleet, &mut rng)).collect();
    let mut engine = Engine::new(Policy::default());
    let mut out = Vec::new();
    for group in inputs[..fleet].chunks(10_000) {
        engine.apply_batch(group, &mut out);
        out.clear();
    }
    for round in 0..3 {
        let part = &inputs[fleet + round * ROUND..fleet + (round + 1) * ROUND];
        let started = Instant::now();
        for group in part.chunks(10_000) {
            engine.apply_batch(group, &mut out);
            out.clear();
        }
        let ns = started.elapsed().as_secs_f64() * 1e9 / ROUND as f64;
        println!("round {round}: {ns:.0} ns per input ({fleet} workspaces)");
    }
}
