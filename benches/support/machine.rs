//! What the machine does while a benchmark runs (included by `#[path]`): CPU time the hypervisor
//! steals, and what the disk takes to make a write durable — on a shared VM the figures mean little
//! without them.

use std::time::{Duration, Instant};

/// The machine's CPU time counters (`/proc/stat`): (steal, total), in ticks; zeros if unreadable.
pub fn cpu_times() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    (fields.get(7).copied().unwrap_or(0), fields.iter().take(8).sum())
}

/// The share of CPU time the hypervisor took between two readings: on a shared VM, the latency
/// figures mean little when it is high.
pub fn steal_share(before: (u64, u64), after: (u64, u64)) -> f64 {
    let total = after.1.saturating_sub(before.1).max(1);
    after.0.saturating_sub(before.0) as f64 / total as f64
}

/// How long this machine's disk takes to make a small write durable, measured right after the
/// latency run: the latency is bound by it, and on a shared virtual disk it changes by the hour.
pub fn fsync_cost() -> (Duration, Duration) {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut file = std::fs::File::create(dir.path().join("probe")).unwrap();
    let mut samples: Vec<Duration> = (0..200)
        .map(|_| {
            let started = Instant::now();
            file.write_all(&[0u8; 4096]).unwrap();
            file.sync_data().unwrap();
            started.elapsed()
        })
        .collect();
    samples.sort();
    (samples[100], samples[198])
}
