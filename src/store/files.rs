//! sled's own files in a data directory, looked at before sled opens it.
//!
//! sled 0.34 writes on open: it saves a fresh snapshot of its page table (`snap.<lsn>`), first as
//! `snap.<lsn>.generating`, renamed once complete. On a full disk that leaves an empty
//! `.generating` file — and sled then picks it as the newest snapshot on every later open and
//! fails with "Read corrupted data", even once there is room again. A snapshot damaged any other
//! way (a flipped byte) fails the same way, although sled can rebuild the snapshot from its log.
//! So before sled sees a directory:
//!
//! - a directory whose disk is (nearly) full is refused, naming the disk and what is free, and
//!   nothing is written to it;
//! - an incomplete `.generating` snapshot is removed: it is never valid, sled only writes it to
//!   rename it;
//! - a directory vigil marked ([`MARKER`]) whose database turns out empty is damaged, not new;
//! - if sled still reports corruption, its newest snapshot is set aside (kept, renamed) and sled
//!   rebuilds the page table from its log; if that fails too, the snapshot is put back and the
//!   error says which file and how to recover. sled rebuilds silently from whatever part of its
//!   log it can read, so a directory with a set-aside snapshot must still hold vigil's format
//!   record: an empty database there is damage, never a new directory to start afresh in.

use std::path::{Path, PathBuf};

/// sled's own files in a data directory.
pub const SLED_FILES: &[&str] = &["conf", "db", "blobs", "snap"];

/// A file vigil writes beside sled's once the directory holds vigil's format record. sled opens
/// whatever is left of a damaged database — an empty or missing log included — as an empty
/// database, which vigil would otherwise take for a new directory and start afresh in, losing
/// every state silently. With this file there, an empty database is damage.
pub const MARKER: &str = "vigil-data-dir";

/// Whether `dir` was marked as holding vigil data.
pub fn is_marked(dir: &Path) -> bool {
    dir.join(MARKER).exists()
}

/// Marks `dir` as holding vigil data, durably (the file and the directory entry are synced).
pub fn mark(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(dir.join(MARKER))?;
    file.write_all(b"vigil data directory: sled's files here hold vigil's log and states; do not delete\n")?;
    file.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

/// Free space below which a data directory is not opened: sled writes a snapshot on open, and
/// vigil its policy and a checkpoint.
pub const MIN_FREE_BYTES: u64 = 4 << 20;

/// What is free on the filesystem holding `dir`, in bytes (for an unprivileged writer); `None`
/// where the filesystem cannot say (it reports no size at all, as `/proc` does, or fails).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    (st.f_blocks > 0).then(|| st.f_bavail.saturating_mul(st.f_frsize))
}

/// The room opening `dir` needs: [`MIN_FREE_BYTES`], or twice sled's newest snapshot if that is
/// more (the snapshot written on open is about as large).
pub fn room_needed(dir: &Path) -> u64 {
    let newest = snapshots(dir).last().and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len());
    MIN_FREE_BYTES.max(newest.saturating_mul(2))
}

/// sled's complete snapshot files, oldest first (sled reads the last).
pub fn snapshots(dir: &Path) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = entries(dir)
        .into_iter()
        .filter(|name| name.starts_with("snap.") && !name.ends_with(".generating"))
        .map(|name| dir.join(name))
        .collect();
    all.sort();
    all
}

/// Removes snapshots sled began and never finished; returns their names.
pub fn remove_incomplete_snapshots(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in entries(dir).into_iter().filter(|n| n.starts_with("snap.") && n.ends_with(".generating")) {
        std::fs::remove_file(dir.join(&name))?;
        removed.push(name);
    }
    Ok(removed)
}

/// Where a snapshot that sled could not read is kept: outside sled's `snap.` names, so sled no
/// longer reads it, but still in the directory for whoever investigates.
pub fn set_aside_name(snapshot: &Path) -> PathBuf {
    let name = snapshot.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    snapshot.with_file_name(format!("unreadable-{name}"))
}

/// Snapshots set aside by an earlier open ([`set_aside_name`]): sled's page table was rebuilt
/// from its log here, so an empty database is damage, not a new directory.
pub fn set_aside_snapshots(dir: &Path) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> =
        entries(dir).into_iter().filter(|n| n.starts_with("unreadable-snap.")).map(|n| dir.join(n)).collect();
    all.sort();
    all
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_snapshots_go_complete_ones_stay_and_the_newest_is_last() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["snap.00000000000000A0", "snap.0000000000000100", "snap.0000000000000200.generating", "db"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        assert_eq!(remove_incomplete_snapshots(dir.path()).unwrap(), ["snap.0000000000000200.generating"]);
        let names: Vec<_> = snapshots(dir.path()).iter().map(|p| p.file_name().unwrap().to_owned()).collect();
        assert_eq!(names, ["snap.00000000000000A0", "snap.0000000000000100"]);
        let aside = set_aside_name(&dir.path().join("snap.0000000000000100"));
        assert_eq!(aside.file_name().unwrap(), "unreadable-snap.0000000000000100");
        assert!(free_bytes(dir.path()).unwrap() > 0);
        assert_eq!(free_bytes(Path::new("/proc")), None, "a filesystem without a size cannot say");
    }
}
