//! Resident memory per idle workspace at 1 000 000 workspaces (target: ≤ 256 B).
//!
//! Run with `cargo run --release --example memory` (also part of `make bench`).
//!
//! Each scenario runs in a fresh child process, so one scenario's freed memory cannot hide in the
//! next one's figure. A child reads its resident set (`VmRSS` in /proc/self/status) with an empty
//! engine, creates 1 000 000 workspaces (one heartbeat each, `interval_s = 30`), keeps them
//! heartbeating for 8 rounds of 30 s (past the 180 s TTL, so every lazy timer has fired and re-armed
//! once: the steady state of an idle, Alive fleet), reads its resident set again and reports the
//! difference. Inputs are built one at a time and dropped, so they are not counted.
//!
//! The scenarios vary what the engine has to keep per workspace besides its fixed-size slot: the
//! id (`ws-0000042`, 10 characters, or a 36-character UUID) and the incarnation (`c-<n>`, or none).

use std::process::Command;

use vigil::core::event::Heartbeat;
use vigil::core::{At, Engine, Input, InputKind, Policy, StateName, WorkspaceId};

const WORKSPACES: usize = 1_000_000;
const ROUNDS: usize = 8;
const INTERVAL_MS: i64 = 30_000;
/// 2026-06-01T00:00:00Z.
const START: i64 = 1_780_272_000_000;
const TARGET: f64 = 256.0;

/// (argument, ids, incarnations)
const SCENARIOS: &[(&str, &str, bool)] = &[
    ("short-inc", "ws-0000042 (10 chars)", true),
    ("uuid-inc", "UUID (36 chars)", true),
    ("short-none", "ws-0000042 (10 chars)", false),
    ("uuid-none", "UUID (36 chars)", false),
];

fn main() {
    match std::env::args().nth(1) {
        Some(arg) => {
            let &(_, _, incarnation) =
                SCENARIOS.iter().find(|s| s.0 == arg).unwrap_or_else(|| panic!("unknown scenario {arg}"));
            child(arg.starts_with("uuid"), incarnation);
        }
        None => parent(),
    }
}

fn parent() {
    let exe = std::env::current_exe().expect("own path");
    println!("Resident memory per idle Alive workspace, {WORKSPACES} workspaces (target ≤ {TARGET} B)");
    println!();
    println!(
        "| ids                   | incarnation | RSS growth | per workspace | engine-reserved | rest (heap strings, slack) |"
    );
    println!(
        "|-----------------------|-------------|-----------:|--------------:|----------------:|---------------------------:|"
    );
    for &(arg, ids, incarnation) in SCENARIOS {
        let output = Command::new(&exe).arg(arg).output().expect("run scenario");
        assert!(output.status.success(), "{arg}: {}", String::from_utf8_lossy(&output.stderr));
        let text = String::from_utf8(output.stdout).expect("utf-8");
        let fields: Vec<u64> = text.split_whitespace().map(|f| f.parse().expect("number")).collect();
        let [total, reserved] = fields[..] else { panic!("{arg}: unexpected output {text:?}") };
        let per = total as f64 / WORKSPACES as f64;
        let flag = if per <= TARGET { "" } else { " (over target)" };
        println!(
            "| {ids:<21} | {:<11} | {:>7.1} MiB | {:>9.1} B{flag} | {:>11.1} B | {:>24.1} B |",
            if incarnation { "c-<n>" } else { "none" },
            total as f64 / (1024.0 * 1024.0),
            per,
            reserved as f64 / WORKSPACES as f64,
            per - reserved as f64 / WORKSPACES as f64,
        );
    }
    println!();
    println!("engine-reserved = Engine::reserved_bytes() (slab + index + timer heap capacity) per workspace;");
    println!(
        "rest = the remainder of the RSS growth: per-workspace heap allocations (id, incarnation) and allocator slack."
    );
}

/// Builds one scenario's fleet and prints `<rss growth bytes> <engine reserved bytes>`.
fn child(uuid: bool, incarnation: bool) {
    let mut engine = Engine::new(Policy::default());
    let mut out = Vec::new();
    let before = rss_bytes();
    for round in 0..ROUNDS {
        let round_start = START + round as i64 * INTERVAL_MS;
        for n in 0..WORKSPACES {
            let at = round_start + n as i64 * INTERVAL_MS / WORKSPACES as i64;
            let id = if uuid { uuid_like(n) } else { format!("ws-{n:07}") };
            let input = Input {
                at: At(at),
                sent_at: None,
                id: None,
                kind: InputKind::Heartbeat(Heartbeat {
                    workspace: WorkspaceId::parse(&id).expect("valid id"),
                    interval_s: Some(30),
                    incarnation: incarnation.then(|| format!("c-{n}")),
                    active_tasks: None,
                }),
            };
            engine.apply(&input, &mut out);
            out.clear();
        }
    }
    let tick = Input { at: At(START + ROUNDS as i64 * INTERVAL_MS), sent_at: None, id: None, kind: InputKind::Tick };
    engine.apply(&tick, &mut out);
    out.clear();
    out.shrink_to_fit();
    let after = rss_bytes();

    assert_eq!(engine.len(), WORKSPACES);
    let fleet = engine.fleet_view();
    assert_eq!(fleet.alive as usize, WORKSPACES, "every workspace is idle Alive: {fleet:?}");
    let probe = engine.view(&if uuid { uuid_like(42) } else { "ws-0000042".to_string() }).expect("known");
    assert_eq!(probe.state, StateName::Alive);
    println!("{} {}", after.saturating_sub(before), engine.reserved_bytes());
}

/// A deterministic, unique 36-character UUID-shaped id (`8-4-4-4-12` hex digits, `n` in the last 8).
fn uuid_like(n: usize) -> String {
    let mut x = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED_5EED;
    x ^= x >> 29;
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:04x}{:08x}",
        (x >> 32) as u32,
        (x >> 16) as u16,
        (x >> 4) & 0xfff,
        x.rotate_left(7) & 0xfff,
        x.rotate_left(23) & 0xffff,
        n as u32
    )
}

/// This process's resident set, from `VmRSS` in /proc/self/status.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status (Linux only)");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}
