//! Policies side by side: every scenario in `simulations/` run under two policies, and the
//! figures that matter printed as one markdown table (scenario, metric, before, after).
//!
//! "before" is `simulations/policies/before.toml` (the policy as it was before the latest rules,
//! kept as the keys that turn them off), "after" the defaults. Each scenario runs with its own
//! seed, so both policies face exactly the same world: the same deaths, pauses and outages at the
//! same instants. A scenario whose heartbeat trace is not on this machine is skipped with a note.
//!
//! Run with `make bench` or `cargo bench --bench simulate` (a release build; a few seconds in
//! all). `cargo bench --bench simulate -- fleet` runs only the scenarios whose file name contains
//! `fleet`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use vigil::core::Policy;
use vigil::simulate::{self, Scenario};

/// The rows compared (the table's names); the rest (sizes, totals, suppressions) stay in
/// `vigil simulate`'s own report.
const COMPARED: &[&str] = &[
    "true deaths",
    "T_D detected / undetected",
    "T_D median",
    "T_D p90",
    "restarts",
    "false restarts",
    "restarts per death",
    "mistakes",
    "λ_M (per workspace-hour)",
    "T_M mean / max",
    "P_A",
    "probe requests per workspace-day",
    "alerts",
];

fn scenarios(dir: &Path, filter: Option<&str>) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter(|p| filter.is_none_or(|f| p.file_name().is_some_and(|n| n.to_string_lossy().contains(f))))
        .collect();
    files.sort();
    files
}

/// The compared rows of one run, in `COMPARED` order; mass-death rows follow their name.
fn compared(rows: Vec<(String, String)>) -> Vec<(String, String)> {
    let keep = |name: &str| COMPARED.contains(&name) || name.starts_with("mass death at");
    rows.into_iter().filter(|(name, _)| keep(name)).collect()
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters the scenarios.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("simulations");
    let before_file = dir.join("policies/before.toml");
    let text =
        std::fs::read_to_string(&before_file).unwrap_or_else(|e| panic!("reading {}: {e}", before_file.display()));
    let before = Policy::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", before_file.display()));
    let after = Policy::default();

    let started = Instant::now();
    let mut table = String::from("| scenario | metric | before | after |\n|---|---|---|---|\n");
    let mut notes = Vec::new();
    for path in scenarios(&dir, filter.as_deref()) {
        let name = path.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        let traces = std::env::var_os("VIGIL_TRACES").map(std::path::PathBuf::from);
        let scenario =
            Scenario::load_with_traces(&path, traces.as_deref()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Some(trace) = &scenario.heartbeat_trace
            && !trace.file.exists()
        {
            notes.push(format!("{name}: skipped, its heartbeat trace {} is not here", trace.file.display()));
            continue;
        }
        let seed = scenario.seed.unwrap_or(1);
        let t = Instant::now();
        let run = |policy: &Policy| {
            simulate::run(&scenario, policy.clone(), seed).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let (b, a) = (run(&before), run(&after));
        notes.push(format!("{name}: {} + {} inputs in {:.2?}", b.inputs.len(), a.inputs.len(), t.elapsed()));
        let after_rows = compared(a.metrics.rows());
        for (i, (metric, before_value)) in compared(b.metrics.rows()).into_iter().enumerate() {
            let after_value =
                after_rows.iter().find(|(m, _)| *m == metric).map_or_else(|| "—".to_string(), |(_, v)| v.clone());
            let label = if i == 0 { name.as_str() } else { "" };
            table.push_str(&format!("| {label} | {metric} | {before_value} | {after_value} |\n"));
        }
    }
    println!("{table}");
    for note in notes {
        println!("{note}");
    }
    println!("all scenarios, both policies: {:.2?}", started.elapsed());
}
