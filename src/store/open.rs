//! Opening a data directory: what must be true before sled is given it, and sled's open itself.
//!
//! A directory is a vigil one (or empty, or missing where a new one may be created), its disk has
//! room for what opening writes, and what an earlier full disk or bad disk left in sled's files is
//! mended first ([`super::files`]). A sled database that failed a write is never dropped normally
//! ([`keep_unflushed`]).

use std::path::Path;

use super::{FORMAT, OpenMode, StoreConfig, StoreError, files, io, keys};

/// Opens sled on `path`: checks what is there first (a vigil directory, or an empty or missing
/// one where `mode` allows creating it), that the disk has room for what opening writes, and
/// mends what an earlier full disk can leave behind (see [`files`]). Returns the database,
/// whether it is new, and what was mended.
pub(super) fn open_db(
    path: &Path,
    config: &StoreConfig,
    mode: OpenMode,
) -> Result<(sled::Db, bool, Vec<String>), StoreError> {
    let existed = path.exists();
    if existed && !path.is_dir() {
        return Err(StoreError::NotADirectory(path.to_path_buf()));
    }
    if !existed && mode != OpenMode::CreateIfMissing {
        return Err(StoreError::Missing(path.to_path_buf()));
    }
    let mut repairs = Vec::new();
    if existed {
        let entries: Vec<String> = std::fs::read_dir(path)
            .map_err(|e| StoreError::Open { path: path.to_path_buf(), source: e.into() })?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        let sleds = entries.iter().any(|n| files::SLED_FILES.iter().any(|s| n == s || n.starts_with("snap.")));
        if !entries.is_empty() && !sleds {
            if files::is_marked(path) {
                return Err(damaged(path, "sled's files are gone"));
            }
            return Err(StoreError::Foreign(path.to_path_buf()));
        }
        if entries.is_empty() && mode != OpenMode::CreateIfMissing {
            return Err(StoreError::Missing(path.to_path_buf()));
        }
        let incomplete = files::remove_incomplete_snapshots(path)
            .map_err(|e| StoreError::Open { path: path.to_path_buf(), source: e.into() })?;
        for name in incomplete {
            repairs.push(format!("removed {name}, a snapshot sled began and never finished (a full disk?)"));
        }
    }
    check_room(path)?;
    let db = open_sled(path, config, &mut repairs)?;
    // Only a service (or the test tool that ingests like one) writes to a directory on open.
    let writes = mode == OpenMode::CreateIfMissing;
    let created = match db.get(keys::META_FORMAT).map_err(io("reading the store format"))? {
        Some(v) => {
            let found = v
                .strip_prefix(keys::MAGIC)
                .and_then(|rest| rest.try_into().ok())
                .map(u32::from_be_bytes)
                .ok_or_else(|| StoreError::Foreign(path.to_path_buf()))?;
            if found > FORMAT {
                return Err(StoreError::NewerFormat { path: path.to_path_buf(), found });
            }
            if writes && found < FORMAT {
                // What this build writes from now on an older one cannot read: let it say so.
                write_format(&db)?;
            }
            if writes && !files::is_marked(path) {
                files::mark(path).map_err(|e| StoreError::Open { path: path.to_path_buf(), source: e.into() })?;
            }
            false
        }
        None if files::is_marked(path) || !files::set_aside_snapshots(path).is_empty() => {
            let kept = files::set_aside_snapshots(path).iter().map(|p| p.display().to_string()).collect::<Vec<_>>();
            let mut err = damaged(path, "sled's database holds no vigil data: its files were lost or damaged");
            if let StoreError::Damaged { snapshot, .. } = &mut err
                && !kept.is_empty()
            {
                *snapshot = format!("; the unreadable snapshot is kept as {}", kept.join(", "));
            }
            return Err(err);
        }
        None if !db.is_empty() => return Err(StoreError::Foreign(path.to_path_buf())),
        None if !writes => return Err(StoreError::Missing(path.to_path_buf())),
        None => {
            write_format(&db)?;
            files::mark(path).map_err(|e| StoreError::Open { path: path.to_path_buf(), source: e.into() })?;
            true
        }
    };
    Ok((db, created, repairs))
}

/// Records this build's store format, flushed.
fn write_format(db: &sled::Db) -> Result<(), StoreError> {
    let mut format = keys::MAGIC.to_vec();
    format.extend_from_slice(&FORMAT.to_be_bytes());
    let written = db.insert(keys::META_FORMAT, format).and_then(|_| db.flush());
    if let Err(e) = written {
        keep_unflushed(db);
        return Err(io("initialising the store")(e));
    }
    Ok(())
}

fn damaged(path: &Path, why: &'static str) -> StoreError {
    StoreError::Damaged { path: path.to_path_buf(), why, snapshot: String::new(), source: None }
}

/// Refuses to open a directory on a disk without room for what opening writes, before anything
/// is written (the directory, or the nearest existing parent of a new one).
fn check_room(path: &Path) -> Result<(), StoreError> {
    let Some(existing) = path.ancestors().find(|p| p.exists()) else { return Ok(()) };
    let needed = if existing == path { files::room_needed(path) } else { files::MIN_FREE_BYTES };
    match files::free_bytes(existing) {
        Some(free) if free < needed => Err(StoreError::DiskFull { path: path.to_path_buf(), free, needed }),
        // A filesystem that cannot say is given the benefit of the doubt.
        _ => Ok(()),
    }
}

/// sled's `Drop` flushes what it holds, and after a write has failed (a full disk) that flush
/// waits forever for I/O buffers that will never be written. A database that failed a write is
/// therefore never dropped: one handle is leaked, so its last `Drop` never runs. Nothing is lost —
/// what vigil reported durable was flushed — and the process is about to stop.
pub(super) fn keep_unflushed(db: &sled::Db) {
    std::mem::forget(db.clone());
}

/// How long to wait for another holder of the directory's lock to let go (sled releases it from a
/// background thread shortly after a database is dropped).
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

fn lock_held(e: &sled::Error) -> bool {
    // sled reports a held lock as an `Other` I/O error; its text is all there is to go by.
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// Opens sled; if it finds its newest snapshot unreadable, sets the snapshot aside and lets sled
/// rebuild it from its log.
fn open_sled(path: &Path, config: &StoreConfig, repairs: &mut Vec<String>) -> Result<sled::Db, StoreError> {
    let failed = |e: sled::Error| match e {
        e if lock_held(&e) => StoreError::InUse { path: path.to_path_buf() },
        e => StoreError::Open { path: path.to_path_buf(), source: e.into() },
    };
    let corruption = match sled_open(path, config) {
        Err(e @ sled::Error::Corruption { .. }) => e,
        other => return other.map_err(failed),
    };
    let detail = corruption.to_string();
    let damaged = |e: sled::Error, snapshot: String| StoreError::Damaged {
        path: path.to_path_buf(),
        why: "sled cannot read its files",
        snapshot,
        source: Some(e.into()),
    };
    let Some(snapshot) = files::snapshots(path).pop() else {
        return Err(damaged(corruption, String::new()));
    };
    let aside = files::set_aside_name(&snapshot);
    std::fs::rename(&snapshot, &aside).map_err(|source| StoreError::SetAside { snapshot: snapshot.clone(), source })?;
    match sled_open(path, config) {
        Ok(db) => {
            repairs.push(format!(
                "sled's snapshot {} was unreadable ({detail}); rebuilt it from sled's log, the unreadable copy is \
                 kept as {}",
                snapshot.display(),
                aside.display()
            ));
            Ok(db)
        }
        Err(e) => {
            // Leave the directory as it was found.
            let _ = std::fs::rename(&aside, &snapshot);
            let what = format!(
                "; its snapshot {} is unreadable, and rebuilding without it failed as well",
                snapshot.display()
            );
            Err(damaged(e, what))
        }
    }
}

/// sled's own open, waiting up to [`LOCK_PATIENCE`] for a lock another process is releasing.
fn sled_open(path: &Path, config: &StoreConfig) -> Result<sled::Db, sled::Error> {
    let started = std::time::Instant::now();
    loop {
        match sled::Config::new().path(path).cache_capacity(config.cache_bytes).open() {
            Err(e) if lock_held(&e) && started.elapsed() < LOCK_PATIENCE => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}
