//! Durability: the engine wrapped in a sled database.
//!
//! vigil's promise is that nothing it has acknowledged is ever lost, and that its state is exactly
//! the fold of its log. The store keeps that promise: inputs are applied and committed in groups,
//! each group written as one atomic batch (its log segment, its outputs in the outbox, the applied
//! and stream positions) and flushed before the caller learns it is durable — only then may the bus
//! acknowledge it. Machine states are written at checkpoints, atomically with the log position they
//! cover; on open, the store restores the last checkpoint and re-applies the log after it, which
//! gives back exactly the engine that was running (a property test holds it to that).
//!
//! Only this module knows sled. See [`keys`] for the layout.

mod files;
pub mod keys;
mod open;
mod segment;
mod tombstones;
mod writer;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use crate::core::event::{Input, Output, WorkspaceId};
use crate::core::snapshot::{FleetRecord, RestoreError, WorkspaceRecord};
use crate::core::time::At;
use crate::core::wire;
use crate::core::{Engine, Policy};

use open::{keep_unflushed, open_db};

pub use keys::OutboxKey;
pub use segment::SegmentError;
pub use writer::Wake;

/// The on-disk format this build reads and writes. 2: log segments may hold `resume` records with
/// an id key (an older build cannot read them, so it is told the directory is newer). Format 1
/// directories are read as they are and marked 2 when a service opens them.
pub const FORMAT: u32 = 2;

/// Workspaces per checkpoint chunk: large enough that a million workspaces are a few hundred sled
/// values (iterating a million small values costs sled tens of seconds), small enough that a
/// checkpoint under light load rewrites little.
pub const CHUNK_SIZE: usize = 4096;

/// How the store behaves.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Write a checkpoint after this many inputs (0: only when [`Store::checkpoint`] is called).
    pub checkpoint_every: u64,
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { checkpoint_every: 1_000_000, cache_bytes: 128 << 20 }
    }
}

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

fn io(doing: &'static str) -> impl Fn(sled::Error) -> StoreError {
    move |e| StoreError::Io { doing, detail: describe(&e) }
}

fn describe(e: &sled::Error) -> String {
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

/// An output waiting in the outbox for the bus to confirm it.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    pub key: OutboxKey,
    pub output: Output,
}

/// What a group commit made durable.
#[derive(Debug)]
pub struct Committed {
    /// The number [`Store::submit`] gave the group (they count up from 1 per open store).
    pub ticket: u64,
    /// Log sequences of the group's first and last input (`first > last` for an empty group).
    pub first_seq: u64,
    pub last_seq: u64,
    /// The input stream sequence of the group's last message, if it came from a stream.
    pub stream_seq: Option<u64>,
    /// The outputs the group caused, now in the outbox.
    pub outputs: Vec<Pending>,
}

/// What opening the store found.
#[derive(Debug)]
pub struct Recovery {
    /// The log position the restored checkpoint covered.
    pub checkpoint_seq: u64,
    /// Inputs re-applied from the log after it.
    pub replayed: u64,
    /// Outputs never confirmed by the bus: publish them again (their ids de-duplicate).
    pub pending: Vec<Pending>,
    /// The directory was new.
    pub created: bool,
    /// The policy asked for differs from the one the directory ran under: the log was recovered
    /// under the old one, sealed with a checkpoint, and the new one applies from this sequence on.
    pub policy_changed_at: Option<u64>,
    /// What opening had to mend in sled's files (an incomplete or unreadable snapshot), in words.
    pub repairs: Vec<String>,
}

/// Group commits the writer thread may hold at once. One: the next group is applied while this one
/// is written, and handed over only once it is durable. Inputs that arrive meanwhile make the
/// group after it bigger rather than queueing small groups behind it (each flush has a fixed cost:
/// a deeper queue flushed more, smaller groups and measured slower through NATS).
const WRITE_DEPTH: usize = 1;

/// Whether `open` may create a new data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    CreateIfMissing,
    MustExist,
    /// Must exist, and opening writes nothing of its own (for `vigil inspect`): a directory that
    /// does not record its policy yet is left so, rather than recording the one given.
    Inspect,
}

/// The engine and its durable log.
pub struct Store {
    db: sled::Db,
    engine: Engine,
    config: StoreConfig,
    since_checkpoint: u64,
    checkpoint_seq: u64,
    /// The input stream position of the last group handed to the writer (what must not be applied
    /// again), and of the last one durable (what the store would recover to).
    stream_seq: u64,
    durable_stream_seq: u64,
    stream_id: Option<String>,
    writer: writer::Writer,
    /// Groups handed to the writer, oldest first, and groups it reported durable, not yet taken.
    in_flight: VecDeque<Committed>,
    durable: VecDeque<Committed>,
    tickets: u64,
    /// Outbox groups the bus confirmed, to be removed with the next write.
    removals: Vec<OutboxKey>,
    first_seq: u64,
    /// State chunks on disk (chunks numbered from the slab's current count on are obsolete).
    stored_chunks: u32,
    /// The slab was packed by `restore`, so chunk numbers changed: rewrite every chunk next time.
    full_checkpoint_due: bool,
    poisoned: Option<String>,
    /// A write failed (even one that is retried, like an outbox removal): sled must not be
    /// dropped normally (see [`keep_unflushed`]).
    write_failed: bool,
}

impl Store {
    /// Opens (or creates) the data directory and recovers the engine from it, to run under
    /// `policy` from now on.
    ///
    /// The log is always recovered under the policy it was applied under (stored with it), so the
    /// recovered engine is exactly the one that was running. If `policy` is another one, the
    /// recovered state is sealed with a checkpoint and `policy` applies from the next input on.
    pub fn open(
        path: &Path,
        policy: Policy,
        config: StoreConfig,
        mode: OpenMode,
    ) -> Result<(Store, Recovery), StoreError> {
        let (db, created, repairs) = open_db(path, &config, mode)?;
        let meta = read_meta(&db)?;
        // A directory from before policies were stored ran under whatever it is given.
        let stored = read_policy(&db)?;
        let recover_under = stored.clone().unwrap_or_else(|| policy.clone());
        let workspaces = read_states(&db)?;
        let mut engine = Engine::restore(recover_under, meta.checkpoint.clone(), workspaces)?;
        engine.tombstones_mut().keep_on_disk();
        let replayed = replay_tail(&db, &mut engine, meta.checkpoint.seq, meta.applied)?;
        let pending = read_outbox(&db)?;
        let mut recovery = Recovery {
            checkpoint_seq: meta.checkpoint.seq,
            replayed,
            pending,
            created,
            policy_changed_at: None,
            repairs,
        };
        let writer = writer::Writer::start(db.clone(), WRITE_DEPTH, None);
        let mut store = Store {
            db,
            engine,
            config,
            since_checkpoint: replayed,
            checkpoint_seq: meta.checkpoint.seq,
            stream_seq: meta.stream,
            durable_stream_seq: meta.stream,
            stream_id: meta.stream_id,
            writer,
            in_flight: VecDeque::new(),
            durable: VecDeque::new(),
            tickets: 0,
            removals: Vec::new(),
            first_seq: meta.first,
            stored_chunks: meta.chunks,
            full_checkpoint_due: true,
            poisoned: None,
            write_failed: false,
        };
        let sealed = match stored {
            Some(stored) if stored == policy => Ok(()),
            _ if mode == OpenMode::Inspect => Ok(()),
            Some(_) => store.change_policy(policy).map(|seq| recovery.policy_changed_at = Some(seq)),
            None => store.record_policy(&policy),
        };
        store.poison_on(sealed)?;
        Ok((store, recovery))
    }

    /// Seals what was applied under the old policy with a checkpoint, then rebuilds the engine
    /// from it under `policy`. Returns the first sequence the new policy applies to.
    fn change_policy(&mut self, policy: Policy) -> Result<u64, StoreError> {
        self.checkpoint()?;
        let meta = read_meta(&self.db)?;
        let workspaces = read_states(&self.db)?;
        self.engine = Engine::restore(policy.clone(), meta.checkpoint, workspaces)?;
        self.engine.tombstones_mut().keep_on_disk();
        self.full_checkpoint_due = true;
        self.record_policy(&policy)?;
        Ok(self.engine.seq() + 1)
    }

    /// Stores the policy the log is applied under from the next sequence on.
    fn record_policy(&mut self, policy: &Policy) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.insert(keys::META_POLICY, rmp_serde::to_vec_named(policy).expect("a policy always encodes"));
        batch.insert(keys::META_POLICY_SINCE, &keys::u64_value(self.engine.seq() + 1)[..]);
        let written = self.db.apply_batch(batch).and_then(|_| self.db.flush()).map_err(io("recording the policy"));
        self.poison_on(written)?;
        Ok(())
    }

    /// The engine, for queries.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The input stream sequence of the last submitted message (0 if none): messages at or below
    /// it were already applied and must not be applied again.
    pub fn stream_seq(&self) -> u64 {
        self.stream_seq
    }

    /// The input stream sequence of the last durable message: what a restart would recover to.
    pub fn durable_stream_seq(&self) -> u64 {
        self.durable_stream_seq
    }

    /// Has `wake` called on the writer thread each time a group becomes durable (a service loop
    /// uses it to collect [`Store::poll_durable`] without polling). Waits for groups in flight.
    pub fn set_wake(&mut self, wake: Wake) -> Result<(), StoreError> {
        self.wait_all()?;
        self.writer = writer::Writer::start(self.db.clone(), WRITE_DEPTH, Some(wake));
        Ok(())
    }

    /// Which input stream [`Store::stream_seq`] counts in, if any was adopted.
    pub fn stream_id(&self) -> Option<&str> {
        self.stream_id.as_deref()
    }

    /// Starts counting in another input stream (a recreated one, or the first one this directory
    /// sees), positioned after `seq`: messages at or below it are taken as already handled.
    pub fn adopt_stream(&mut self, id: &str, seq: u64) -> Result<(), StoreError> {
        self.wait_all()?;
        let mut batch = sled::Batch::default();
        batch.insert(keys::META_STREAM_ID, id.as_bytes());
        batch.insert(keys::META_STREAM, &keys::u64_value(seq)[..]);
        let written =
            self.db.apply_batch(batch).and_then(|_| self.db.flush()).map_err(io("recording the input stream"));
        self.poison_on(written)?;
        self.stream_id = Some(id.to_string());
        self.stream_seq = seq;
        self.durable_stream_seq = seq;
        Ok(())
    }

    /// The earliest deadline that is really due (stale timer entries settled first); what the
    /// service waits for before it commits a tick.
    pub fn next_deadline(&mut self) -> Option<At> {
        self.engine.settle_next_deadline()
    }

    /// The first log sequence still stored (1 unless compacted).
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Applies a group of inputs and makes them durable: one atomic batch (log segment, outbox,
    /// positions) and one flush. `stream_seq` is the input stream sequence of the group's last
    /// message, if the inputs came from one. Groups submitted earlier and not yet taken stay for
    /// [`Store::poll_durable`]; this returns only its own.
    ///
    /// On error the store is poisoned: its engine may be ahead of the disk, so it refuses further
    /// writes; reopen it to recover from what is durable.
    pub fn commit(&mut self, inputs: &[Input], stream_seq: Option<u64>) -> Result<Committed, StoreError> {
        let ticket = self.submit(inputs, stream_seq)?;
        self.wait_all()?;
        let own = self.durable.iter().position(|c| c.ticket == ticket);
        let own = own.and_then(|i| self.durable.remove(i));
        own.ok_or_else(|| StoreError::Inconsistent(format!("group {ticket} was not reported durable")))
    }

    /// Applies a group of inputs to the engine and hands its batch to the writer thread, which
    /// writes and flushes it while the caller goes on. Applying overlaps the previous group's
    /// flush; handing over waits for it. Returns the group's ticket; [`Store::poll_durable`] reports it once it is on disk,
    /// and only then may its inputs be acknowledged or its outputs published.
    ///
    /// On error the store is poisoned, as for [`Store::commit`].
    pub fn submit(&mut self, inputs: &[Input], stream_seq: Option<u64>) -> Result<u64, StoreError> {
        self.check_poison()?;
        let result = self.submit_inner(inputs, stream_seq);
        self.poison_on(result)
    }

    /// The groups that became durable since the last call, in order, without waiting.
    pub fn poll_durable(&mut self) -> Result<Vec<Committed>, StoreError> {
        while !self.in_flight.is_empty() {
            match self.writer.try_next() {
                None => break,
                Some(result) => self.settle(result)?,
            }
        }
        self.write_removals_when_idle();
        Ok(self.durable.drain(..).collect())
    }

    /// Waits until every submitted group is durable, then returns those not yet taken, in order.
    pub fn wait_durable(&mut self) -> Result<Vec<Committed>, StoreError> {
        self.wait_all()?;
        Ok(self.durable.drain(..).collect())
    }

    /// Whether groups are submitted and not yet reported durable.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    fn submit_inner(&mut self, inputs: &[Input], stream_seq: Option<u64>) -> Result<u64, StoreError> {
        let first_seq = self.engine.seq() + 1;
        let mut segment = segment::SegmentWriter::with_capacity(inputs.len());
        let mut outputs = Vec::new();
        tombstones::apply_loading(&self.db, &mut self.engine, inputs, &mut outputs)?;
        for input in inputs {
            segment.push(input);
        }
        let last_seq = self.engine.seq();
        let mut batch = sled::Batch::default();
        if !inputs.is_empty() {
            batch.insert(&keys::log(first_seq)[..], segment.finish());
            batch.insert(keys::META_APPLIED, &keys::u64_value(last_seq)[..]);
        }
        let key = OutboxKey { seq: first_seq };
        if !outputs.is_empty() {
            batch.insert(&key.bytes()[..], encode_outputs(&outputs));
        }
        while self.in_flight.len() >= WRITE_DEPTH {
            let result = self.writer.wait();
            self.settle(result)?;
        }
        self.take_removals(&mut batch);
        if let Some(s) = stream_seq {
            batch.insert(keys::META_STREAM, &keys::u64_value(s)[..]);
            self.stream_seq = s;
        }
        self.writer.send(batch).map_err(|detail| StoreError::Io { doing: "writing a group commit", detail })?;
        self.tickets += 1;
        let outputs = outputs.into_iter().map(|output| Pending { key, output }).collect();
        self.in_flight.push_back(Committed { ticket: self.tickets, first_seq, last_seq, stream_seq, outputs });
        self.since_checkpoint += inputs.len() as u64;
        if self.config.checkpoint_every > 0 && self.since_checkpoint >= self.config.checkpoint_every {
            self.checkpoint()?;
        }
        Ok(self.tickets)
    }

    /// Takes the writer's report on the oldest group in flight.
    fn settle(&mut self, result: Result<(), String>) -> Result<(), StoreError> {
        if let Err(detail) = result {
            let e = StoreError::Io { doing: "writing a group commit", detail };
            if self.poisoned.is_none() {
                self.poisoned = Some(e.to_string()); // the first failure is the one worth telling
            }
            return Err(e);
        }
        let group = self
            .in_flight
            .pop_front()
            .ok_or_else(|| StoreError::Inconsistent("the writer reported a group that was never submitted".into()))?;
        if let Some(s) = group.stream_seq {
            self.durable_stream_seq = s;
        }
        self.durable.push_back(group);
        Ok(())
    }

    /// Waits for every group in flight (their reports are kept for [`Store::poll_durable`]).
    fn wait_all(&mut self) -> Result<(), StoreError> {
        while !self.in_flight.is_empty() {
            let result = self.writer.wait();
            self.settle(result)?;
        }
        self.write_removals_when_idle();
        Ok(())
    }

    fn check_poison(&self) -> Result<(), StoreError> {
        match &self.poisoned {
            Some(why) => Err(StoreError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    fn poison_on<T>(&mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &result
            && self.poisoned.is_none()
        {
            self.poisoned = Some(e.to_string());
        }
        result
    }

    /// Writes the machines changed since the last checkpoint (whole slab chunks of
    /// [`CHUNK_SIZE`] workspaces), the tombstones and the fleet record, tagged with the log position
    /// they cover, as one atomic batch.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.check_poison()?;
        let drained = self.wait_all();
        self.poison_on(drained)?;
        let chunks = self.engine.take_dirty_chunks(CHUNK_SIZE, self.full_checkpoint_due);
        let fleet = self.engine.fleet_record();
        let mut batch = sled::Batch::default();
        for (k, records) in &chunks.chunks {
            batch.insert(&keys::state(*k)[..], rmp_serde::to_vec(records).expect("records always encode"));
        }
        for k in chunks.count..self.stored_chunks.max(chunks.count) {
            batch.remove(&keys::state(k)[..]);
        }
        batch.insert(keys::META_CHUNKS, &keys::u64_value(u64::from(chunks.count))[..]);
        tombstones::write_changed(&mut self.engine, &mut batch);
        batch.insert(keys::META_CHECKPOINT, rmp_serde::to_vec_named(&fleet).expect("records always encode"));
        let result = self.db.apply_batch(batch).and_then(|_| self.db.flush()).map_err(io("writing a checkpoint"));
        if let Err(e) = &result {
            self.poisoned = Some(e.to_string());
        }
        result?;
        self.checkpoint_seq = fleet.seq;
        self.stored_chunks = chunks.count;
        self.full_checkpoint_due = false;
        self.since_checkpoint = 0;
        Ok(())
    }

    /// Removes groups whose outputs the bus has all confirmed from the outbox (a key may appear
    /// once per output). While groups are in flight the removals ride in the next group's batch
    /// (a sled write of its own costs as much as a group's); otherwise they are written now. Not
    /// flushed on their own: if vigil crashes first, the outputs are published again and
    /// de-duplicated by their ids.
    pub fn ack(&mut self, delivered: &[OutboxKey]) -> Result<(), StoreError> {
        self.removals.extend_from_slice(delivered);
        if self.in_flight.is_empty() { self.write_removals() } else { Ok(()) }
    }

    /// Moves the outbox removals waiting for a batch into `batch`.
    fn take_removals(&mut self, batch: &mut sled::Batch) {
        self.removals.sort_unstable();
        self.removals.dedup();
        for key in self.removals.drain(..) {
            batch.remove(&key.bytes()[..]);
        }
    }

    fn write_removals(&mut self) -> Result<(), StoreError> {
        if self.removals.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        let keys = self.removals.clone();
        self.take_removals(&mut batch);
        let written = self.db.apply_batch(batch).map_err(io("clearing the outbox"));
        if written.is_err() {
            self.removals = keys; // tried again with the next write
            self.write_failed = true;
        }
        written
    }

    /// Clears confirmed outputs once nothing is in flight. A failure here is not a failure of
    /// the groups just reported durable: the removals stay for the next write, and at worst the
    /// outputs are published again after a crash and de-duplicated by their ids.
    fn write_removals_when_idle(&mut self) {
        if self.in_flight.is_empty() {
            let _ = self.write_removals();
        }
    }

    /// Drops log segments that are entirely older than `before` and covered by the last checkpoint
    /// (the snapshot carries their effect). Returns how many inputs were dropped.
    pub fn compact(&mut self, before: At) -> Result<u64, StoreError> {
        self.check_poison()?;
        let mut dropped = 0;
        let mut batch = sled::Batch::default();
        let mut first = self.first_seq;
        for item in self.db.range(keys::log(0)..=keys::log(u64::MAX)) {
            let (key, value) = item.map_err(io("reading the log"))?;
            let seq =
                keys::log_seq(&key).ok_or_else(|| StoreError::Inconsistent("a log key without a sequence".into()))?;
            let (count, last_at) =
                segment::header(&value).ok_or(StoreError::CorruptLog { seq, detail: "segment header".into() })?;
            let last = seq + u64::from(count).saturating_sub(1);
            if last_at >= before || last > self.checkpoint_seq {
                break;
            }
            batch.remove(key);
            dropped += u64::from(count);
            first = last + 1;
        }
        batch.insert(keys::META_FIRST, &keys::u64_value(first)[..]);
        let written = self.db.apply_batch(batch).and_then(|_| self.db.flush()).map_err(io("compacting the log"));
        self.poison_on(written)?;
        self.first_seq = first;
        Ok(dropped)
    }

    /// Writes a final checkpoint and flushes.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.checkpoint()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if self.poisoned.is_some() || self.write_failed {
            keep_unflushed(&self.db);
        }
    }
}

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
                detail: format!("{} bytes where 8 were expected", v.len()),
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

struct Meta {
    applied: u64,
    stream: u64,
    stream_id: Option<String>,
    first: u64,
    chunks: u32,
    checkpoint: FleetRecord,
}

fn read_meta(db: &sled::Db) -> Result<Meta, StoreError> {
    let number = |key: &[u8], default: u64| -> Result<u64, StoreError> {
        match db.get(key).map_err(io("reading meta"))? {
            None => Ok(default),
            Some(v) => keys::read_u64(&v).ok_or_else(|| StoreError::CorruptRecord {
                what: "meta",
                key: String::from_utf8_lossy(&key[1..]).into_owned(),
                detail: format!("{} bytes where 8 were expected", v.len()),
            }),
        }
    };
    let checkpoint = match db.get(keys::META_CHECKPOINT).map_err(io("reading the checkpoint"))? {
        None => FleetRecord::default(),
        Some(v) => rmp_serde::from_slice(&v).map_err(|e| StoreError::CorruptRecord {
            what: "meta",
            key: "checkpoint".into(),
            detail: e.to_string(),
        })?,
    };
    Ok(Meta {
        applied: number(keys::META_APPLIED, 0)?,
        stream: number(keys::META_STREAM, 0)?,
        stream_id: db
            .get(keys::META_STREAM_ID)
            .map_err(io("reading meta"))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()),
        first: number(keys::META_FIRST, 1)?,
        chunks: u32::try_from(number(keys::META_CHUNKS, 0)?).unwrap_or(u32::MAX),
        checkpoint,
    })
}

fn read_policy(db: &sled::Db) -> Result<Option<Policy>, StoreError> {
    match db.get(keys::META_POLICY).map_err(io("reading the policy"))? {
        None => Ok(None),
        Some(v) => rmp_serde::from_slice(&v).map(Some).map_err(|e| StoreError::CorruptRecord {
            what: "meta",
            key: "policy".into(),
            detail: e.to_string(),
        }),
    }
}

fn read_states(db: &sled::Db) -> Result<Vec<(WorkspaceId, WorkspaceRecord)>, StoreError> {
    let mut all = Vec::new();
    for item in db.scan_prefix([keys::STATE]) {
        let (key, value) = item.map_err(io("reading workspace states"))?;
        let chunk: Vec<(WorkspaceId, WorkspaceRecord)> = rmp_serde::from_slice(&value).map_err(|e| {
            StoreError::CorruptRecord { what: "state chunk", key: format!("{:?}", &key[1..]), detail: e.to_string() }
        })?;
        all.extend(chunk);
    }
    Ok(all)
}

fn read_outbox(db: &sled::Db) -> Result<Vec<Pending>, StoreError> {
    let mut pending = Vec::new();
    for item in db.scan_prefix([keys::OUTBOX]) {
        let (key, value) = item.map_err(io("reading the outbox"))?;
        let corrupt = |detail: String| StoreError::CorruptRecord { what: "outbox", key: format!("{key:?}"), detail };
        let key = OutboxKey::parse(&key).ok_or_else(|| corrupt("malformed key".into()))?;
        for output in decode_outputs(&value).map_err(corrupt)? {
            pending.push(Pending { key, output });
        }
    }
    Ok(pending)
}

/// A group's outputs as one value: each a length-prefixed MessagePack map, as on the wire.
fn encode_outputs(outputs: &[Output]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(outputs.len() * 160);
    for o in outputs {
        let one = wire::encode_output_msgpack(o);
        bytes.extend_from_slice(&(one.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&one);
    }
    bytes
}

fn decode_outputs(mut bytes: &[u8]) -> Result<Vec<Output>, String> {
    let mut outputs = Vec::new();
    while !bytes.is_empty() {
        let len = bytes.get(..4).ok_or("truncated")?;
        let len = u32::from_le_bytes(len.try_into().expect("four bytes")) as usize;
        let one = bytes.get(4..4 + len).ok_or("truncated")?;
        outputs.push(wire::decode_output_msgpack(one).map_err(|e| e.to_string())?);
        bytes = &bytes[4 + len..];
    }
    Ok(outputs)
}

/// The key of the segment holding sequence `seq`, if any.
fn segment_start(db: &sled::Db, seq: u64) -> Option<u64> {
    let (key, _) = db.range(keys::log(0)..=keys::log(seq)).next_back()?.ok()?;
    keys::log_seq(&key)
}

fn decode_segment(first: u64, bytes: &[u8]) -> Result<Vec<Input>, StoreError> {
    segment::decode(bytes).map_err(|e| {
        let at = match &e {
            SegmentError::Truncated { index } | SegmentError::Record { index, .. } => first + u64::from(*index),
            SegmentError::Count { .. } => first,
        };
        StoreError::CorruptLog { seq: at, detail: e.to_string() }
    })
}

/// Re-applies the inputs after the checkpoint, checking that the log has no gap.
fn replay_tail(db: &sled::Db, engine: &mut Engine, checkpoint: u64, applied: u64) -> Result<u64, StoreError> {
    if applied < checkpoint {
        return Err(StoreError::Inconsistent(format!(
            "the checkpoint covers {checkpoint} but only {applied} were committed"
        )));
    }
    let Some(start) = segment_start(db, checkpoint + 1).or((applied == checkpoint).then_some(checkpoint + 1)) else {
        return Err(StoreError::Inconsistent(format!("no log segment holds sequence {}", checkpoint + 1)));
    };
    // Reading and decoding the log runs on its own thread, ahead of the engine: on two cores
    // that hides most of the decoding behind the applying.
    let mut replayed = 0;
    let mut sink = Vec::new();
    std::thread::scope(|scope| -> Result<(), StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(u64, Vec<Input>), StoreError>>(16);
        let reader = scope.spawn(move || {
            for item in db.range(keys::log(start)..=keys::log(u64::MAX)) {
                let segment = item.map_err(io("reading the log")).and_then(|(key, value)| {
                    let first = keys::log_seq(&key)
                        .ok_or_else(|| StoreError::Inconsistent("a log key without a sequence".into()))?;
                    Ok((first, decode_segment(first, &value)?))
                });
                let failed = segment.is_err();
                if tx.send(segment).is_err() || failed {
                    return;
                }
            }
        });
        for segment in rx {
            let (first, inputs) = segment?;
            let skip = usize::try_from(checkpoint.saturating_sub(first.saturating_sub(1)))
                .unwrap_or(usize::MAX)
                .min(inputs.len());
            let tail = &inputs[skip..];
            let seq = first + skip as u64;
            if !tail.is_empty() && (seq != engine.seq() + 1 || seq + tail.len() as u64 - 1 > applied) {
                return Err(StoreError::Inconsistent(format!("expected sequence {}, found {seq}", engine.seq() + 1)));
            }
            tombstones::apply_loading(db, engine, tail, &mut sink)?;
            sink.clear();
            replayed += tail.len() as u64;
        }
        reader.join().map_err(|_| StoreError::Inconsistent("the log reader thread panicked".into()))
    })?;
    if engine.seq() != applied {
        return Err(StoreError::Inconsistent(format!(
            "{applied} inputs were committed but the log ends at {}",
            engine.seq()
        )));
    }
    Ok(replayed)
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
