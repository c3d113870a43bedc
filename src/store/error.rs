//! Why the store could not do what was asked: a typed error that names the file, the record or
//! the operation, and the OS error behind a failed write (a full disk is said so).

use std::path::PathBuf;

use crate::core::snapshot::RestoreError;

use super::FORMAT;

/// Why the store could not do what was asked. None of these is a panic, and none leaves a
/// silently empty state behind.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no vigil data directory at {0}")]
    Missing(PathBuf),
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("{0} holds data written by another program, not a vigil data directory")]
    Foreign(PathBuf),
    #[error("{path} is in use by another process (is `vigil serve` running on it?)")]
    InUse { path: PathBuf },
    #[error("{path} was written by a newer vigil (store format {found}; this build reads format {FORMAT})")]
    NewerFormat { path: PathBuf, found: u32 },
    #[error("cannot open {path}: {detail}")]
    Open { path: PathBuf, detail: String },
    #[error(
        "the disk holding {path} is full: {free} bytes free, {needed} needed to open it; nothing was written — \
         free some space and start again"
    )]
    DiskFull { path: PathBuf, free: u64, needed: u64 },
    #[error(
        "{path} is damaged: sled cannot read its files ({detail}){snapshot}. Restore the directory from a backup, \
         or move it away and start vigil on a new one: a new directory starts after the input consumer's \
         acknowledged position, and the workspace states this one held are lost"
    )]
    Damaged { path: PathBuf, detail: String, snapshot: String },
    #[error("disk error while {doing}: {detail}")]
    Io { doing: &'static str, detail: String },
    #[error("corrupted log record at sequence {seq}: {detail}")]
    CorruptLog { seq: u64, detail: String },
    #[error("corrupted {what} record {key:?}: {detail}")]
    CorruptRecord { what: &'static str, key: String, detail: String },
    #[error("the log is inconsistent: {0}")]
    Inconsistent(String),
    #[error("the checkpoint cannot be restored: {0}")]
    Restore(#[from] RestoreError),
    #[error("the store stopped accepting writes after an earlier failure: {0}")]
    Poisoned(String),
}

pub(crate) fn io(doing: &'static str) -> impl Fn(sled::Error) -> StoreError {
    move |e| StoreError::Io { doing, detail: describe(&e) }
}

pub(crate) fn describe(e: &sled::Error) -> String {
    let sled::Error::Io(io) = e else { return e.to_string() };
    match os_error_code(io) {
        Some(28) => format!("the disk is full ({})", std::io::Error::from_raw_os_error(28)),
        Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
        None => io.to_string(),
    }
}

/// The OS error behind an I/O error. sled hands errors from its I/O threads on as a new error
/// whose text is the original's `Debug` form (`Os { code: 28, kind: StorageFull, .. }`), so the
/// code is read back from that text when the error does not carry it.
fn os_error_code(io: &std::io::Error) -> Option<i32> {
    io.raw_os_error().or_else(|| {
        let text = io.to_string();
        let rest = text.split("Os { code: ").nth(1)?;
        rest.split(',').next()?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::describe;
    use std::io::Error;

    #[test]
    fn a_full_disk_is_named_whether_sled_passes_the_os_error_on_or_only_its_text() {
        let direct = sled::Error::Io(Error::from_raw_os_error(28));
        let relayed = sled::Error::Io(Error::other("Os { code: 28, kind: StorageFull, message: \"No space\" }"));
        for e in [direct, relayed] {
            assert_eq!(describe(&e), "the disk is full (No space left on device (os error 28))");
        }
        let too_large = sled::Error::Io(Error::other("Os { code: 27, kind: FileTooLarge, message: \"x\" }"));
        assert_eq!(describe(&too_large), "File too large (os error 27)");
        assert_eq!(describe(&sled::Error::Io(Error::other("odd"))), "odd");
    }
}
