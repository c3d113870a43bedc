//! Crash points for the end-to-end tests, so that they can kill vigil exactly where a crash is
//! dangerous rather than hoping a random SIGKILL lands there:
//!
//! - `VIGIL_TEST_ABORT_AFTER_COMMITS=n`: abort right after the n-th group is applied and handed to
//!   the store's writer, before its outputs reach the publisher (on disk or not: they must come
//!   back, from the outbox or from the stream);
//! - `VIGIL_TEST_ABORT_ON_RESTART=1`: the same, at the first group that decided a restart;
//! - `VIGIL_TEST_ABORT_ON_DECLARATION=1`: the same, at the first group that made a death
//!   declaration with several partitions, before its `declaration` record is appended;
//! - `VIGIL_TEST_ABORT_AFTER_PUBLISHES=n`: abort after the n-th batch of outputs is confirmed by the
//!   server, before the outbox is cleared (the re-publish must be de-duplicated);
//! - `VIGIL_TEST_STALL_SHUTDOWN=1`: the shutdown waits forever, as one waiting for a disk or a
//!   server that never answers would (a second signal, or the watchdog, must end it);
//!   `VIGIL_TEST_SHUTDOWN_LIMIT_MS` sets the watchdog's limit;
//! - `VIGIL_TEST_CLOCK_STEP_MS=d` with `VIGIL_TEST_CLOCK_STEP_AFTER_MS=t`: the host's wall clock,
//!   as the service reads it ([`wall_clock`]), jumps `d` ms ahead `t` ms after the process starts,
//!   as an NTP step or a VM restored from a snapshot would make it.
//!
//! Unset, they cost one relaxed atomic load. `abort()` is as abrupt as SIGKILL: no destructors,
//! no flush.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Point {
    limit: Option<u64>,
    count: AtomicU64,
}

fn point(cell: &'static OnceLock<Point>, var: &str) -> &'static Point {
    cell.get_or_init(|| Point { limit: std::env::var(var).ok().and_then(|v| v.parse().ok()), count: AtomicU64::new(0) })
}

fn reached(p: &Point) {
    if let Some(limit) = p.limit
        && p.count.fetch_add(1, Ordering::Relaxed) + 1 >= limit
    {
        eprintln!("vigil: test crash point reached; aborting");
        std::process::abort();
    }
}

/// Called after each group is applied, before its outputs reach the publisher.
pub fn after_commit() {
    static P: OnceLock<Point> = OnceLock::new();
    reached(point(&P, "VIGIL_TEST_ABORT_AFTER_COMMITS"));
}

/// Called after each group that decided a restart command, as [`after_commit`].
pub fn after_deciding_a_restart() {
    static P: OnceLock<Point> = OnceLock::new();
    reached(point(&P, "VIGIL_TEST_ABORT_ON_RESTART"));
}

/// Called before an owner appends the death declarations of a group, as [`after_commit`].
pub fn before_declaring() {
    static P: OnceLock<Point> = OnceLock::new();
    reached(point(&P, "VIGIL_TEST_ABORT_ON_DECLARATION"));
}

/// Called after each batch of outputs is confirmed, before the outbox learns of it.
pub fn after_publish() {
    static P: OnceLock<Point> = OnceLock::new();
    reached(point(&P, "VIGIL_TEST_ABORT_AFTER_PUBLISHES"));
}

/// Called at the start of a shutdown: never returns with `VIGIL_TEST_STALL_SHUTDOWN` set.
pub async fn stall_shutdown() {
    if std::env::var_os("VIGIL_TEST_STALL_SHUTDOWN").is_some() {
        std::future::pending::<()>().await;
    }
}

/// The shutdown watchdog's limit: `default`, unless a test sets `VIGIL_TEST_SHUTDOWN_LIMIT_MS`.
pub fn shutdown_limit(default: std::time::Duration) -> std::time::Duration {
    std::env::var("VIGIL_TEST_SHUTDOWN_LIMIT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(default, std::time::Duration::from_millis)
}

/// The host's wall clock as the service reads it: the real one, unless a test steps it.
pub fn wall_clock() -> crate::core::At {
    static STEP: OnceLock<Option<(std::time::Instant, i64)>> = OnceLock::new();
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<i64>().ok());
    let step = STEP.get_or_init(|| {
        let by = var("VIGIL_TEST_CLOCK_STEP_MS")?;
        let after = u64::try_from(var("VIGIL_TEST_CLOCK_STEP_AFTER_MS").unwrap_or(0)).unwrap_or(0);
        Some((std::time::Instant::now() + std::time::Duration::from_millis(after), by))
    });
    let now = vigil_client::wall_clock();
    match step {
        Some((from, by)) if std::time::Instant::now() >= *from => crate::core::At(now.millis().saturating_add(*by)),
        _ => now,
    }
}
