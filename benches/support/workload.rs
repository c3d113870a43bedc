//! The heartbeat-dominated stream the store benchmark and `examples/fold_million.rs` fold
//! (included by `#[path]`; the including crate declares `mod rng`).

use vigil::core::event::{Heartbeat, Probe, ProbeResult, UpstreamError};
use vigil::core::{At, Input, InputKind, WorkspaceId};

use crate::rng::Rng;

/// 2026-06-01T00:00:00Z.
pub const START: i64 = 1_780_272_000_000;

/// The i-th input over `fleet` workspaces (30 s cadence) for workspace `ws-<n>`: ~1 % probes (half
/// `running`, half a transient error), ~1 % upstream 502s, the rest heartbeats.
pub fn input(i: usize, fleet: usize, n: usize, rng: &mut Rng) -> Input {
    let at = At(START + (i as i64) * 30_000 / fleet as i64);
    let workspace = WorkspaceId::parse(&format!("ws-{n:07}")).unwrap();
    let kind = match rng.below(100) {
        0 => InputKind::Probe(Probe {
            workspace,
            result: if rng.below(2) == 0 { ProbeResult::Running } else { ProbeResult::Error },
            error: Some("context deadline exceeded".into()),
            backend: Some("docker".into()),
            probe_id: None,
        }),
        1 => InputKind::UpstreamError(UpstreamError { workspace, status: Some(502), error: None }),
        _ => InputKind::Heartbeat(Heartbeat {
            workspace,
            interval_s: Some(30),
            incarnation: Some(format!("c-{n}").into()),
            active_tasks: Some(1),
        }),
    };
    Input { at, sent_at: None, id: None, stream_seq: None, kind }
}
