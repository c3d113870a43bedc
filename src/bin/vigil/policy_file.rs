//! The policy file (`--policy`, `policy_file`): windows and thresholds as TOML, the defaults
//! without one. Shared by `serve`, `replay`, `inspect` and `debug-ingest`.

use std::path::PathBuf;

use anyhow::Context;
use vigil::core::Policy;

/// Loads a policy file, or the defaults.
pub fn load_policy(path: Option<&PathBuf>) -> anyhow::Result<Policy> {
    match path {
        None => Ok(Policy::default()),
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading policy {}", p.display()))?;
            Policy::from_toml(&text).with_context(|| format!("policy {}", p.display()))
        }
    }
}
