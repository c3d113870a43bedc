//! Why the store could not do what was asked: a typed error that names the file, the record or
//! the operation, and keeps the error behind it as its source — the OS error behind a failed
//! write (a full disk is said so), sled's own, or what a record failed to decode for.

use std::path::PathBuf;

use crate::core::snapshot::RestoreError;
use crate::core::wire::DecodeError;

use super::FORMAT;
use super::segment::SegmentError;

/// Why the store could not do what was asked. None of these is a panic, and none leaves a
/// silently empty state behind.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no vigil data directory at {0}")]
    Missing(PathBuf),
    #[error("no random source for the data directory's token")]
    Random(#[source] getrandom::Error),
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("{0} holds data written by another program, not a vigil data directory")]
    Foreign(PathBuf),
    #[error("{path} is in use by another process (is `vigil serve` running on it?)")]
    InUse { path: PathBuf },
    #[error("{path} was written by a newer vigil (store format {found}; this build reads format {FORMAT})")]
    NewerFormat { path: PathBuf, found: u32 },
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: DiskError,
    },
    #[error("sled's snapshot {snapshot} is unreadable and cannot be set aside")]
    SetAside {
        snapshot: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the disk holding {path} is full: {free} bytes free, {needed} needed to open it; nothing was written — \
         free some space and start again"
    )]
    DiskFull { path: PathBuf, free: u64, needed: u64 },
    #[error(
        "{path} is damaged: {why}{snapshot}. Move it away and start vigil on a new one: a new directory is \
         rebuilt from the input stream (from its latest snapshot record, or from its first record)"
    )]
    Damaged {
        path: PathBuf,
        why: &'static str,
        /// What became of sled's unreadable snapshot, if one was set aside.
        snapshot: String,
        /// What sled said, when it said something.
        #[source]
        source: Option<DiskError>,
    },
    #[error("disk error while {doing}")]
    Io {
        doing: &'static str,
        #[source]
        source: DiskError,
    },
    #[error("the store's writer thread {0}")]
    WriterGone(&'static str),
    #[error("corrupted log record at sequence {seq}")]
    CorruptLog {
        seq: u64,
        #[source]
        source: Corruption,
    },
    #[error("corrupted {what} record {key:?}")]
    CorruptRecord {
        what: &'static str,
        key: String,
        #[source]
        source: Corruption,
    },
    #[error("the log is inconsistent: {0}")]
    Inconsistent(String),
    #[error("the checkpoint cannot be restored")]
    Restore(#[from] RestoreError),
    /// Every call after a failed write: the text is that first failure's, which was returned (with
    /// its sources) by the call it happened in.
    #[error("the store stopped accepting writes after an earlier failure: {0}")]
    Poisoned(String),
}

/// An I/O failure of sled or of the filesystem, as an operator needs to read it.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// `ENOSPC`, said plainly; the OS error is the source.
    #[error("the disk is full")]
    Full(#[source] std::io::Error),
    #[error(transparent)]
    Io(std::io::Error),
    /// sled's own failure: corruption, an unsupported operation, a bug it reports.
    #[error(transparent)]
    Sled(sled::Error),
}

impl From<std::io::Error> for DiskError {
    fn from(io: std::io::Error) -> DiskError {
        match os_error_code(&io) {
            Some(28) => DiskError::Full(std::io::Error::from_raw_os_error(28)),
            // sled relays its I/O threads' errors as text; the OS error is rebuilt from its code.
            Some(code) if io.raw_os_error().is_none() => DiskError::Io(std::io::Error::from_raw_os_error(code)),
            _ => DiskError::Io(io),
        }
    }
}

impl From<sled::Error> for DiskError {
    fn from(e: sled::Error) -> DiskError {
        match e {
            sled::Error::Io(io) => io.into(),
            e => DiskError::Sled(e),
        }
    }
}

/// What is wrong with a record read back from the store.
#[derive(Debug, thiserror::Error)]
pub enum Corruption {
    #[error(transparent)]
    MessagePack(#[from] rmp_serde::decode::Error),
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error(transparent)]
    Output(#[from] DecodeError),
    #[error("{found} bytes where {expected} were expected")]
    Length { found: usize, expected: usize },
    #[error("{0}")]
    Malformed(&'static str),
}

/// Maps a sled error met while `doing` something to a [`StoreError::Io`].
pub(crate) fn io(doing: &'static str) -> impl Fn(sled::Error) -> StoreError {
    move |e| StoreError::Io { doing, source: e.into() }
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
    use super::DiskError;
    use crate::report::Chain;
    use std::io::Error;

    #[test]
    fn a_full_disk_is_named_whether_sled_passes_the_os_error_on_or_only_its_text() {
        let direct = sled::Error::Io(Error::from_raw_os_error(28));
        let relayed = sled::Error::Io(Error::other("Os { code: 28, kind: StorageFull, message: \"No space\" }"));
        for e in [direct, relayed] {
            let e = DiskError::from(e);
            assert!(matches!(e, DiskError::Full(_)), "{e:?}");
            assert_eq!(Chain(&e).to_string(), "the disk is full: No space left on device (os error 28)");
        }
        let too_large = sled::Error::Io(Error::other("Os { code: 27, kind: FileTooLarge, message: \"x\" }"));
        let too_large = DiskError::from(too_large);
        assert_eq!(Chain(&too_large).to_string(), "File too large (os error 27)");
        assert_eq!(too_large.to_string(), "File too large (os error 27)");
        assert_eq!(Chain(&DiskError::from(sled::Error::Io(Error::other("odd")))).to_string(), "odd");
    }
}
