//! What a probe result or an upstream error is evidence of (SPEC §3.1, §1 `upstream_error`).
//!
//! The 2026-04-16 09:10 cascade happened because every Docker inspect error was read as "container
//! dead". Here only an explicit not-running, or an error whose text says the container is gone, is
//! definitive; every other error means the *observer* is in trouble and is never acted on.

use crate::event::{Probe, ProbeResult, UpstreamError};

/// What a probe tells vigil about the workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// The workspace is running.
    Running,
    /// Definitively not running: the only evidence that may lead to a restart.
    NotRunning,
    /// Booting: never evidence of death.
    Booting,
    /// The probe failed for a reason that says nothing about the workspace.
    Transient,
}

/// Classifies a probe result. `error` results count as not-running only when their text contains
/// `No such container` or `not found` (case-sensitive, as docker does); any other text — deadline
/// exceeded, EOF, connection refused, i/o timeout, control-plane 5xx, empty — is transient.
pub fn classify_probe(probe: &Probe) -> Evidence {
    match probe.result {
        ProbeResult::Running => Evidence::Running,
        ProbeResult::NotRunning | ProbeResult::NotFound => Evidence::NotRunning,
        ProbeResult::Pending => Evidence::Booting,
        ProbeResult::Error => match probe.error.as_deref() {
            Some(text) if error_means_not_found(text) => Evidence::NotRunning,
            _ => Evidence::Transient,
        },
    }
}

/// True when a probe's error text says the container does not exist.
pub fn error_means_not_found(text: &str) -> bool {
    text.contains("No such container") || text.contains("not found")
}

/// HTTP statuses that mean "the origin behind the proxy is gone" (Cloudflare's 52x included).
pub const DEAD_ORIGIN_STATUSES: &[u16] = &[502, 503, 504, 521, 522, 523, 524];

/// True when a failed request is a reason to ask the provisioner whether the workspace runs:
/// a dead-origin status or a transport error. Nothing else is evidence of death.
pub fn is_dead_origin(e: &UpstreamError) -> bool {
    match e.status {
        Some(status) => DEAD_ORIGIN_STATUSES.contains(&status),
        None => e.error.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::WorkspaceId;

    fn probe_error(text: Option<&str>) -> Probe {
        Probe {
            workspace: WorkspaceId::parse("ws-abc123").unwrap(),
            result: ProbeResult::Error,
            error: text.map(str::to_string),
            backend: Some("docker".into()),
            probe_id: None,
        }
    }

    /// The seed's truth table (`isrunning_test.go`, 2026-04-16 cascade fix), case by case.
    #[test]
    fn probe_error_truth_table_from_the_cascade_fix() {
        let cases = [
            (None, Evidence::Transient),
            (Some("Error response from daemon: No such container: ws-abc123"), Evidence::NotRunning),
            (Some("container not found"), Evidence::NotRunning),
            (Some("context deadline exceeded"), Evidence::Transient),
            (Some(r#"Get "http://%2Fvar%2Frun%2Fdocker.sock/...": EOF"#), Evidence::Transient),
            (Some("dial unix /var/run/docker.sock: connect: connection refused"), Evidence::Transient),
            (Some("read unix @->/var/run/docker.sock: i/o timeout"), Evidence::Transient),
            (Some(""), Evidence::Transient),
            (Some("cp status: 503 Service Unavailable"), Evidence::Transient),
            (Some("Container Not Found"), Evidence::Transient),
        ];
        for (text, want) in cases {
            assert_eq!(classify_probe(&probe_error(text)), want, "error text {text:?}");
        }
    }

    #[test]
    fn explicit_results() {
        let mut p = probe_error(None);
        for (result, want) in [
            (ProbeResult::Running, Evidence::Running),
            (ProbeResult::NotRunning, Evidence::NotRunning),
            (ProbeResult::NotFound, Evidence::NotRunning),
            (ProbeResult::Pending, Evidence::Booting),
        ] {
            p.result = result;
            assert_eq!(classify_probe(&p), want);
        }
    }

    #[test]
    fn only_dead_origin_statuses_and_transport_errors_ask_for_a_probe() {
        let ws = WorkspaceId::parse("ws-a").unwrap();
        let up = |status: Option<u16>, error: Option<&str>| UpstreamError {
            workspace: ws.clone(),
            status,
            error: error.map(Into::into),
        };
        for s in [502, 503, 504, 521, 522, 523, 524] {
            assert!(is_dead_origin(&up(Some(s), None)), "{s}");
        }
        for s in [200, 400, 401, 404, 408, 429, 500, 501, 505, 520, 525] {
            assert!(!is_dead_origin(&up(Some(s), None)), "{s}");
        }
        assert!(is_dead_origin(&up(None, Some("connection reset by peer"))));
        assert!(!is_dead_origin(&up(None, None)));
    }
}
