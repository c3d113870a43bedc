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

mod checkpoint;
mod commit;
mod error;
mod files;
mod heartbeat_record;
pub mod keys;
mod log_reader;
mod open;
mod outbox;
mod recover;
mod segment;
mod snapshot_record;
mod tombstones;
mod writer;

use std::collections::VecDeque;
use std::path::Path;

use crate::core::event::Output;
use crate::core::time::At;
use crate::core::{Engine, Policy};

use open::{keep_unflushed, open_db};

use crate::report::Chain;
use error::io;
use outbox::{decode_outputs, encode_outputs, read_outbox};
use recover::{decode_segment, read_meta, read_policy, read_states, replay_tail, segment_start};

pub use error::{Corruption, DiskError, StoreError};
pub use keys::OutboxKey;
pub use log_reader::LogReader;
pub use segment::SegmentError;
pub use snapshot_record::{Snapshot, SnapshotError};
pub use writer::Wake;

/// The on-disk format this build reads and writes. 2: log segments may hold `resume` records with
/// an id key; 3: `resume` records that declare `unwatched_after_ms`, and checkpoints that carry it
/// (an older build cannot read them, or would decide differently from them, so it is told the
/// directory is newer); 4: log records carry the input stream position of each input (output ids
/// derive from it); 5: workspace records carry their learned heartbeat cadence, suspicions an
/// `overdue` mark, and the policy the overdue rule's keys (an older build would misread or
/// refuse them; a format-4 policy or snapshot is read with the rule off, as it was folded); 6:
/// the policy carries the disruption modes' keys, suspicions a `turn` mark, checkpoints the mode
/// and the token bucket (a format-5 policy or snapshot is read with the modes off, as it was
/// folded). Older directories are read as they are and marked 6 when a service opens them.
pub const FORMAT: u32 = 6;

/// Workspaces per checkpoint chunk: large enough that a million workspaces are a few hundred sled
/// values (iterating a million small values costs sled tens of seconds), small enough that a
/// checkpoint under light load rewrites little.
pub const CHUNK_SIZE: usize = 4096;

/// Whether `dir` holds one data directory of vigil's (its marker at the top), as opposed to one
/// split into partitions (`p0`, `p1`, … inside) or nothing yet.
pub fn is_data_dir(dir: &std::path::Path) -> bool {
    files::is_marked(dir)
}

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
    /// The input stream position a rebuild from the stream must reach (see [`Store::rebuild_through`]).
    rebuild_through: u64,
    /// See [`Store::history_lost`].
    history_lost: bool,
    /// See [`Store::epoch`].
    epoch: u64,
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
            rebuild_through: meta.rebuild,
            history_lost: meta.history_lost,
            epoch: meta.epoch,
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
            // A rebuild from a snapshot record folds the records after it under the snapshot's
            // policy, as whoever folded them first did; the policy given applies once it is over
            // (`adopt_policy`).
            Some(_) if meta.rebuild > 0 => Ok(()),
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
    /// sees), positioned after `seq`: messages at or below it are taken as already handled. With
    /// `rebuild_through` past `seq`, the directory is to be rebuilt from the stream up to there
    /// ([`Store::rebuild_through`]); that is recorded in the same write, so a rebuild cut short
    /// by a crash is known as one when the directory is opened again.
    pub fn adopt_stream(&mut self, id: &str, seq: u64, rebuild_through: u64) -> Result<(), StoreError> {
        self.wait_all()?;
        let mut batch = sled::Batch::default();
        batch.insert(keys::META_STREAM_ID, id.as_bytes());
        batch.insert(keys::META_STREAM, &keys::u64_value(seq)[..]);
        batch.insert(keys::META_REBUILD, &keys::u64_value(rebuild_through)[..]);
        let written =
            self.db.apply_batch(batch).and_then(|_| self.db.flush()).map_err(io("recording the input stream"));
        self.poison_on(written)?;
        self.stream_id = Some(id.to_string());
        self.stream_seq = seq;
        self.durable_stream_seq = seq;
        self.rebuild_through = rebuild_through;
        Ok(())
    }

    /// The input stream position up to which this directory is being rebuilt from the stream, if
    /// that rebuild is not over ([`Store::finish_rebuild`]): the directory was new, or lost, and
    /// the stream held history, and a crash may have cut the rebuild short. Outputs of records up to there were decided before,
    /// by whoever folded them first: only those the output stream does not hold may be published.
    pub fn rebuild_through(&self) -> Option<u64> {
        (self.rebuild_through > 0).then_some(self.rebuild_through)
    }

    /// Whether this directory was rebuilt without part of the history (records expired that no
    /// snapshot covered) and has not yet put a new id key into the stream: its restart counts may
    /// be lower than they were, so ids under the old key could repeat.
    pub fn history_lost(&self) -> bool {
        self.history_lost
    }

    /// Records [`Store::history_lost`], durably (it must survive a rebuild cut short).
    pub fn set_history_lost(&mut self, lost: bool) -> Result<(), StoreError> {
        let written = self
            .db
            .insert(keys::META_HISTORY_LOST, &keys::u64_value(u64::from(lost))[..])
            .and_then(|_| self.db.flush())
            .map_err(io("recording that history was lost"));
        self.poison_on(written.map(|_| ()))?;
        self.history_lost = lost;
        Ok(())
    }

    /// This directory's token, drawn (from the operating system's random source) and stored the
    /// first time it is asked for: the lease of the instance serving from it names it.
    pub fn owner_token(&mut self) -> Result<String, StoreError> {
        if let Some(v) = self.db.get(keys::META_TOKEN).map_err(io("reading the directory's token"))? {
            return Ok(String::from_utf8_lossy(&v).into_owned());
        }
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(StoreError::Random)?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let written = self
            .db
            .insert(keys::META_TOKEN, token.as_bytes())
            .and_then(|_| self.db.flush())
            .map_err(io("recording the directory's token"));
        self.poison_on(written.map(|_| ()))?;
        Ok(token)
    }

    /// The stream position of the epoch record this directory's instance last owned the log
    /// under (0: never): records after the directory's position were applied by nobody else if
    /// that epoch is still the last one before this instance's new one.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Records that this directory's instance owns the log from epoch record `epoch` on, and —
    /// when others owned it meanwhile (`others_through`: the last position they may have acted
    /// on) — that the records up to there are to be caught up like a rebuild: their outputs were
    /// decided by whoever owned them, so only those the output stream lacks go out. One durable
    /// write.
    pub fn take_over(&mut self, epoch: u64, others_through: Option<u64>) -> Result<(), StoreError> {
        self.wait_all()?;
        // Set even when this directory has applied every record up to there already (it followed
        // the log): its outbox then holds what others decided, to be checked against the output
        // stream before anything else goes out — and a crash before that check is over must not
        // leave those outputs looking like this instance's own.
        let through = others_through.map_or(self.rebuild_through, |t| t.max(self.rebuild_through));
        let mut batch = sled::Batch::default();
        batch.insert(keys::META_EPOCH, &keys::u64_value(epoch)[..]);
        batch.insert(keys::META_REBUILD, &keys::u64_value(through)[..]);
        let written = self.db.apply_batch(batch).and_then(|_| self.db.flush()).map_err(io("recording the epoch"));
        self.poison_on(written)?;
        self.epoch = epoch;
        self.rebuild_through = through;
        Ok(())
    }

    /// Records that the rebuild is over: every group it applied is durable, and the outbox holds
    /// only outputs that must go out (those the output stream held were cleared first).
    pub fn finish_rebuild(&mut self) -> Result<(), StoreError> {
        self.wait_all()?;
        let mut batch = sled::Batch::default();
        self.take_removals(&mut batch);
        batch.insert(keys::META_REBUILD, &keys::u64_value(0)[..]);
        let written =
            self.db.apply_batch(batch).and_then(|_| self.db.flush()).map_err(io("recording the rebuild's end"));
        self.poison_on(written)?;
        self.rebuild_through = 0;
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
