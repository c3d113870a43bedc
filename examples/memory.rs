//! Resident memory per idle workspace at 1 000 000 workspaces (target: ≤ 256 B with short ids, ≤ 288 B
//! with 36-character UUIDs, which do not fit inline and cost a heap block).
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
//! The scenarios vary what the engine keeps per workspace besides its fixed-size slot: the id
//! (`ws-0000042`, 10 characters, or a 36-character UUID) and the incarnation (`c-<n>`, or none).
//! A counting allocator splits the figure into what the engine asked the allocator for (bytes and
//! blocks) and what that cost in resident memory (malloc's per-block header and rounding).

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};

use vigil::core::event::Heartbeat;
use vigil::core::{At, Engine, Input, InputKind, Policy, StateName, WorkspaceId};

const WORKSPACES: usize = 1_000_000;
const ROUNDS: usize = 8;
const INTERVAL_MS: i64 = 30_000;
/// 2026-06-01T00:00:00Z.
const START: i64 = 1_780_272_000_000;
const TARGET: f64 = 256.0;
/// With ids that do not fit inline (issue 13 allows the heap block).
const TARGET_UUID: f64 = 288.0;

/// (argument, ids, incarnations)
const SCENARIOS: &[(&str, &str, bool)] = &[
    ("short-inc", "`ws-0000042` (10 chars)", true),
    ("uuid-inc", "UUID (36 chars)", true),
    ("short-none", "`ws-0000042` (10 chars)", false),
    ("uuid-none", "UUID (36 chars)", false),
];

/// The system allocator, counting live heap blocks and the bytes requested for them.
struct Counting;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_BLOCKS: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

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
    let per = |bytes: i64| bytes as f64 / WORKSPACES as f64;
    println!(
        "Resident memory per idle Alive workspace at {WORKSPACES} workspaces (target ≤ {TARGET} B, ≤ {TARGET_UUID} B with UUIDs)"
    );
    println!();
    println!(
        "| ids | incarnation | RSS growth | RSS / workspace | requested / workspace | blocks / workspace | slab+index+timers / workspace |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for &(arg, ids, incarnation) in SCENARIOS {
        let output = Command::new(&exe).arg(arg).output().expect("run scenario");
        assert!(output.status.success(), "{arg}: {}", String::from_utf8_lossy(&output.stderr));
        let text = String::from_utf8(output.stdout).expect("utf-8");
        let fields: Vec<i64> = text.split_whitespace().map(|f| f.parse().expect("number")).collect();
        let [rss, bytes, blocks, reserved] = fields[..] else { panic!("{arg}: unexpected output {text:?}") };
        let target = if arg.starts_with("uuid") { TARGET_UUID } else { TARGET };
        let verdict = if per(rss) <= target { "" } else { " (over)" };
        println!(
            "| {ids} | {} | {:.1} MiB | **{:.1} B**{verdict} | {:.1} B | {:.2} | {:.1} B |",
            if incarnation { "`c-<n>`" } else { "none" },
            rss as f64 / (1024.0 * 1024.0),
            per(rss),
            per(bytes),
            per(blocks),
            per(reserved),
        );
    }
    println!();
    println!("RSS = growth of VmRSS; requested = live heap bytes the process asked for (counting allocator);");
    println!(
        "blocks = live heap allocations; slab+index+timers = Engine::reserved_bytes() (capacity, touched or not)."
    );
    println!("RSS above `requested` is malloc's 8-byte header and 16-byte rounding per block (a 10-byte id");
    println!("occupies a 32-byte chunk) less the reserved-but-untouched tail of the big vectors.");
}

/// Builds one scenario's fleet and prints `<rss growth> <requested bytes> <blocks> <engine reserved bytes>`.
fn child(uuid: bool, incarnation: bool) {
    let mut engine = Engine::new(Policy::default());
    let mut out = Vec::new();
    let (rss_before, bytes_before, blocks_before) = (rss_bytes(), live_bytes(), live_blocks());
    for round in 0..ROUNDS {
        let round_start = START + round as i64 * INTERVAL_MS;
        for n in 0..WORKSPACES {
            let at = round_start + n as i64 * INTERVAL_MS / WORKSPACES as i64;
            let id = if uuid { uuid_like(n) } else { format!("ws-{n:07}") };
            let input = Input {
                at: At(at),
                sent_at: None,
                id: None,
                stream_seq: None,
                kind: InputKind::Heartbeat(Heartbeat {
                    workspace: WorkspaceId::parse(&id).expect("valid id"),
                    interval_s: Some(30),
                    incarnation: incarnation.then(|| format!("c-{n}").into()),
                    active_tasks: None,
                }),
            };
            engine.apply(&input, &mut out);
            out.clear();
        }
    }
    let tick = Input {
        at: At(START + ROUNDS as i64 * INTERVAL_MS),
        sent_at: None,
        id: None,
        stream_seq: None,
        kind: InputKind::Tick,
    };
    engine.apply(&tick, &mut out);
    drop(out);
    let (rss, bytes, blocks) = (rss_bytes() - rss_before, live_bytes() - bytes_before, live_blocks() - blocks_before);

    assert_eq!(engine.len(), WORKSPACES);
    let fleet = engine.fleet_view();
    assert_eq!(fleet.alive as usize, WORKSPACES, "every workspace is idle Alive: {fleet:?}");
    let one = engine.view(&if uuid { uuid_like(42) } else { "ws-0000042".to_string() }).expect("known");
    assert_eq!(one.state, StateName::Alive);
    println!("{rss} {bytes} {blocks} {}", engine.reserved_bytes());
}

fn live_bytes() -> i64 {
    LIVE_BYTES.load(Ordering::Relaxed)
}

fn live_blocks() -> i64 {
    LIVE_BLOCKS.load(Ordering::Relaxed)
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
fn rss_bytes() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status (Linux only)");
    let kb: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}
