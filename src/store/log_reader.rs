//! A read-only view of a data directory's log, for `vigil export`.

use std::path::Path;

use crate::core::event::Input;

use super::*;

/// A read-only view of a data directory's log, for `vigil export`.
pub struct LogReader {
    db: sled::Db,
    first_seq: u64,
    applied: u64,
    repairs: Vec<String>,
}

impl LogReader {
    /// Opens an existing data directory without recovering the engine.
    pub fn open(path: &Path) -> Result<LogReader, StoreError> {
        let (db, _, repairs) = open_db(path, &StoreConfig::default(), OpenMode::MustExist)?;
        let meta = read_meta(&db)?;
        Ok(LogReader { db, first_seq: meta.first, applied: meta.applied, repairs })
    }

    /// What opening had to mend in sled's files, in words (see [`Recovery::repairs`]).
    pub fn repairs(&self) -> &[String] {
        &self.repairs
    }

    /// The first sequence still stored (later than 1 when older entries were compacted).
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// The last sequence committed.
    pub fn last_seq(&self) -> u64 {
        self.applied
    }

    /// The policy the log is applied under, and the first sequence applied under it (earlier
    /// ones ran under a policy since replaced); `None` for a directory from before policies were
    /// stored.
    pub fn policy(&self) -> Result<Option<(Policy, u64)>, StoreError> {
        let Some(policy) = read_policy(&self.db)? else { return Ok(None) };
        let since = match self.db.get(keys::META_POLICY_SINCE).map_err(io("reading meta"))? {
            Some(v) => keys::read_u64(&v).ok_or_else(|| StoreError::CorruptRecord {
                what: "meta",
                key: "policysince".into(),
                source: Corruption::Length { found: v.len(), expected: 8 },
            })?,
            None => 1,
        };
        Ok(Some((policy, since)))
    }

    /// Every stored input from sequence `from` on, in order, with its sequence.
    pub fn records(&self, from: u64) -> impl Iterator<Item = Result<(u64, Input), StoreError>> + '_ {
        let start = segment_start(&self.db, from).unwrap_or(from);
        self.db
            .range(keys::log(start)..=keys::log(u64::MAX))
            .map(|item| {
                let (key, value) = item.map_err(io("reading the log"))?;
                let seq = keys::log_seq(&key)
                    .ok_or_else(|| StoreError::Inconsistent("a log key without a sequence".into()))?;
                decode_segment(seq, &value).map(|inputs| (seq, inputs))
            })
            .flat_map(move |segment| -> Box<dyn Iterator<Item = Result<(u64, Input), StoreError>>> {
                match segment {
                    Ok((first, inputs)) => Box::new(
                        inputs
                            .into_iter()
                            .enumerate()
                            .map(move |(i, input)| (first + i as u64, input))
                            .filter(move |(s, _)| *s >= from)
                            .map(Ok),
                    ),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                }
            })
    }
}
