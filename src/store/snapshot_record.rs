//! The engine's whole state as one byte string, for snapshot records in the input stream (SPEC
//! §4): what a new data directory is rebuilt from instead of the stream's first record, so the
//! stream's retention can be bounded.
//!
//! A snapshot is taken right after a checkpoint, when the engine has applied exactly the records
//! up to a stream position and every tombstone is on disk. It holds the policy the records were
//! folded under, the fleet record, every workspace's record and every tombstone — what a
//! checkpoint holds, in one place — and the outputs still waiting in the outbox, so that a
//! restart decided before the snapshot and not yet published is not lost with the directory. The head is a MessagePack map with named fields (as the
//! checkpoint's fleet record is); the workspace records and tombstones follow positionally, as in
//! checkpoint chunks, so their layout is the store format's ([`super::FORMAT`]) and a snapshot
//! says which format wrote it; the outputs last, as the outbox holds them (one MessagePack binary).

use serde::{Deserialize, Serialize};

use crate::core::Tombstone;
use crate::core::event::{Output, WorkspaceId};
use crate::core::snapshot::{FleetRecord, WorkspaceRecord};

use super::*;

/// How deep a snapshot's values may nest: its records nest a dozen levels; a forged one nesting
/// deeper is refused before it can exhaust a stack.
pub const MAX_DEPTH: usize = 64;

/// What a snapshot is, in full.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub policy: Policy,
    pub fleet: FleetRecord,
    pub workspaces: Vec<(WorkspaceId, WorkspaceRecord)>,
    pub tombstones: Vec<(WorkspaceId, Tombstone)>,
    /// Outputs decided and not yet confirmed by the output stream when the snapshot was taken.
    pub pending: Vec<Output>,
}

#[derive(Serialize, Deserialize)]
struct Head {
    format: u32,
    policy: Policy,
    fleet: FleetRecord,
}

/// Why snapshot bytes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("the snapshot was written by store format {0}; this build reads format {FORMAT}")]
    Format(u32),
    #[error("the snapshot does not decode")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("{0} bytes follow the snapshot")]
    Trailing(usize),
    #[error("the snapshot's pending outputs do not decode")]
    Pending(#[source] Corruption),
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        let head = Head { format: FORMAT, policy: self.policy.clone(), fleet: self.fleet.clone() };
        rmp_serde::encode::write_named(&mut bytes, &head).expect("a snapshot head always encodes");
        rmp_serde::encode::write(&mut bytes, &(&self.workspaces, &self.tombstones))
            .expect("snapshot records always encode");
        let pending = encode_outputs(&self.pending);
        rmp::encode::write_bin(&mut bytes, &pending).expect("writing to a Vec cannot fail");
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        // A reader over a slice advances it: what is left after both values must be nothing.
        let mut rest = bytes;
        let mut de = rmp_serde::Deserializer::new(&mut rest);
        de.set_max_depth(MAX_DEPTH);
        let head = Head::deserialize(&mut de)?;
        if head.format > FORMAT {
            return Err(SnapshotError::Format(head.format));
        }
        let (workspaces, tombstones) = <(Vec<_>, Vec<_>)>::deserialize(&mut de)?;
        drop(de);
        let len = rmp::decode::read_bin_len(&mut rest).map_err(|e| SnapshotError::Decode(e.into()))? as usize;
        let outbox = rest.get(..len).ok_or(SnapshotError::Pending(Corruption::Malformed("truncated")))?;
        let pending = decode_outputs(outbox).map_err(SnapshotError::Pending)?;
        let rest = &rest[len..];
        if !rest.is_empty() {
            return Err(SnapshotError::Trailing(rest.len()));
        }
        // A snapshot from before the overdue rule (format 4 and older) was folded with it off, and
        // one from before the disruption modes (format 5 and older) with the declaration breaker.
        let policy = if head.format < 5 { head.policy.before_overdue() } else { head.policy };
        let policy = if head.format < 6 { policy.before_modes() } else { policy };
        Ok(Snapshot { policy, fleet: head.fleet, workspaces, tombstones, pending })
    }
}

impl Store {
    /// The engine's whole state, as of the last record applied: checkpoints first (every group
    /// durable, every tombstone on disk), then reads the tombstones back. The snapshot stands at
    /// [`Store::stream_seq`].
    pub fn snapshot(&mut self) -> Result<Snapshot, StoreError> {
        self.checkpoint()?;
        let policy = read_policy(&self.db)?.unwrap_or_else(|| self.engine.policy().clone());
        let mut tombstones = Vec::new();
        for item in self.db.scan_prefix([keys::TOMB]) {
            let (key, value) = item.map_err(io("reading tombstones"))?;
            let name = String::from_utf8_lossy(&key[1..]).into_owned();
            let ws = WorkspaceId::parse(&name).map_err(|_| StoreError::CorruptRecord {
                what: "tombstone",
                key: name.clone(),
                source: Corruption::Malformed("not a workspace id"),
            })?;
            let t = rmp_serde::from_slice(&value).map_err(|e| StoreError::CorruptRecord {
                what: "tombstone",
                key: name,
                source: e.into(),
            })?;
            tombstones.push((ws, t));
        }
        let pending = read_outbox(&self.db)?.into_iter().map(|p| p.output).collect();
        Ok(Snapshot {
            policy,
            fleet: self.engine.fleet_record(),
            workspaces: self.engine.records(),
            tombstones,
            pending,
        })
    }

    /// Makes a new data directory the copy of `snapshot`, taken at position `covers` of input
    /// stream `stream_id`, to be rebuilt from the stream up to `rebuild_through`: the engine is
    /// restored from it under the policy it was folded under, and written as this directory's
    /// checkpoint (its local log starts after it); the snapshot's pending outputs go into its outbox
    /// and are returned, to be published (a rebuild publishes only those the output stream does
    /// not hold). Only for a directory that has applied nothing.
    pub fn restore_snapshot(
        &mut self,
        snapshot: Snapshot,
        stream_id: &str,
        covers: u64,
        rebuild_through: u64,
    ) -> Result<Vec<Pending>, StoreError> {
        if self.engine.seq() != 0 || self.stream_id.is_some() {
            return Err(StoreError::Inconsistent("a snapshot is restored only into a new data directory".into()));
        }
        self.wait_all()?;
        let seq = snapshot.fleet.seq;
        let mut engine = Engine::restore(snapshot.policy.clone(), snapshot.fleet, snapshot.workspaces)?;
        engine.tombstones_mut().keep_on_disk();
        let mut batch = sled::Batch::default();
        for (ws, t) in &snapshot.tombstones {
            batch.insert(&keys::tomb(ws.as_str())[..], rmp_serde::to_vec_named(t).expect("tombstones encode"));
        }
        batch.insert(keys::META_POLICY, rmp_serde::to_vec_named(&snapshot.policy).expect("a policy always encodes"));
        batch.insert(keys::META_POLICY_SINCE, &keys::u64_value(seq + 1)[..]);
        batch.insert(keys::META_APPLIED, &keys::u64_value(seq)[..]);
        batch.insert(keys::META_FIRST, &keys::u64_value(seq + 1)[..]);
        batch.insert(keys::META_STREAM_ID, stream_id.as_bytes());
        batch.insert(keys::META_STREAM, &keys::u64_value(covers)[..]);
        batch.insert(keys::META_REBUILD, &keys::u64_value(rebuild_through)[..]);
        // Under the snapshot's own log position: the first group after it is keyed one higher.
        let key = OutboxKey { seq };
        if !snapshot.pending.is_empty() {
            batch.insert(&key.bytes()[..], encode_outputs(&snapshot.pending));
        }
        self.engine = engine;
        self.first_seq = seq + 1;
        self.stream_id = Some(stream_id.to_string());
        self.stream_seq = covers;
        self.durable_stream_seq = covers;
        self.rebuild_through = rebuild_through;
        self.full_checkpoint_due = true;
        // The checkpoint makes the restored state this directory's own, in the same atomic batch as
        // the positions and tombstones above: a crash leaves the directory new, or restored.
        self.checkpoint_with(batch)?;
        Ok(snapshot.pending.into_iter().map(|output| Pending { key, output }).collect())
    }

    /// Runs the engine under `policy` from now on, if it is not the one in force (as opening a
    /// directory with another policy does: the state so far is sealed with a checkpoint).
    pub fn adopt_policy(&mut self, policy: Policy) -> Result<Option<u64>, StoreError> {
        if read_policy(&self.db)?.as_ref() == Some(&policy) {
            return Ok(None);
        }
        let changed = self.change_policy(policy);
        self.poison_on(changed).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::{Heartbeat, Input, InputKind, Lifecycle, LifecyclePhase};
    use crate::core::time::At;

    fn ws(s: &str) -> WorkspaceId {
        WorkspaceId::parse(s).unwrap()
    }

    fn input(at: i64, seq: u64, kind: InputKind) -> Input {
        Input { at: At(1_776_330_000_000 + at), sent_at: None, id: None, stream_seq: Some(seq), kind }
    }

    fn beat(at: i64, seq: u64, id: &str) -> Input {
        let heartbeat = Heartbeat { workspace: ws(id), interval_s: None, incarnation: None, active_tasks: None };
        input(at, seq, InputKind::Heartbeat(heartbeat))
    }

    /// Given a directory that applied some records (one workspace removed, so it has a tombstone),
    /// when its snapshot is restored into a new directory, then the new one decides exactly as the
    /// old one does from there on, and survives being reopened.
    #[test]
    fn a_snapshot_restored_into_a_new_directory_goes_on_exactly_as_the_original() {
        let (old_dir, new_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let open = |p: &Path| Store::open(p, Policy::default(), StoreConfig::default(), OpenMode::CreateIfMissing);
        let (mut old, _) = open(old_dir.path()).unwrap();
        let removed = InputKind::Lifecycle(Lifecycle { workspace: ws("ws-gone"), phase: LifecyclePhase::Removed });
        let history = [beat(0, 3, "ws-a"), beat(1_000, 5, "ws-b"), beat(1_500, 6, "ws-gone"), input(2_000, 9, removed)];
        let outputs = |c: &[Pending]| c.iter().map(|p| p.output.clone()).collect::<Vec<_>>();
        // (Nobody confirmed its outputs: they are still pending, and the snapshot carries them.)
        let unconfirmed = outputs(&old.commit(&history, Some(9)).unwrap().outputs);
        let snapshot = old.snapshot().unwrap();
        assert_eq!(snapshot.tombstones.len(), 1);
        assert!(!unconfirmed.is_empty());
        assert_eq!(snapshot.pending, unconfirmed);
        let decoded = Snapshot::decode(&snapshot.encode()).unwrap();
        assert_eq!(decoded, snapshot);

        let (mut new, _) = open(new_dir.path()).unwrap();
        let restored = new.restore_snapshot(decoded, "VIGIL_IN@1", 9, 12).unwrap();
        assert_eq!(outputs(&restored), unconfirmed);
        assert_eq!(new.engine().digest(), old.engine().digest());
        assert_eq!((new.stream_seq(), new.rebuild_through()), (9, Some(12)));
        // The same records from here on: the same outputs, ids and all (the re-created workspace
        // finds its tombstone on disk).
        let tail = [beat(400_000, 10, "ws-gone"), beat(400_500, 11, "ws-a"), beat(401_000, 12, "ws-c")];
        let from_old = old.commit(&tail, Some(12)).unwrap().outputs;
        let from_new = new.commit(&tail, Some(12)).unwrap().outputs;
        assert!(!from_old.is_empty());
        assert_eq!(outputs(&from_new), outputs(&from_old));
        let digest = new.engine().digest();
        drop(new);
        let (reopened, recovery) = open(new_dir.path()).unwrap();
        assert_eq!(reopened.engine().digest(), digest);
        // and the outputs it was given stay in its outbox until confirmed, with the tail's.
        assert_eq!(outputs(&recovery.pending), [unconfirmed, outputs(&from_new)].concat());
    }

    /// Given a snapshot a format-5 vigil wrote (its head says 5; its policy has no disruption
    /// keys, so they read as their defaults), when it is decoded, then its policy is the one it was
    /// folded under: the declaration breaker, not the disruption modes.
    #[test]
    fn a_snapshot_from_before_the_disruption_modes_reads_back_with_them_off() {
        let snapshot = Snapshot {
            policy: Policy::default(),
            fleet: FleetRecord::default(),
            workspaces: Vec::new(),
            tombstones: Vec::new(),
            pending: Vec::new(),
        };
        let mut bytes = Vec::new();
        let head = Head { format: 5, policy: Policy::default(), fleet: FleetRecord::default() };
        rmp_serde::encode::write_named(&mut bytes, &head).unwrap();
        let current = snapshot.encode();
        let mut rest = &current[..];
        Head::deserialize(&mut rmp_serde::Deserializer::new(&mut rest)).unwrap();
        bytes.extend_from_slice(rest);
        let old = Snapshot::decode(&bytes).unwrap();
        assert!(!old.policy.disruption_modes(), "format 5 folded with the declaration breaker");
        assert_eq!(old.policy.phi_threshold, 8.0, "and with the overdue rule, which it had");
        assert!(Snapshot::decode(&current).unwrap().policy.disruption_modes());
    }

    #[test]
    fn damaged_snapshot_bytes_are_an_error_not_a_wrong_state() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) =
            Store::open(dir.path(), Policy::default(), StoreConfig::default(), OpenMode::CreateIfMissing).unwrap();
        store.commit(&[beat(0, 1, "ws-a")], Some(1)).unwrap();
        let bytes = store.snapshot().unwrap().encode();
        assert!(Snapshot::decode(&bytes[..bytes.len() - 3]).is_err());
        assert!(matches!(Snapshot::decode(&[bytes.clone(), vec![0xc0]].concat()), Err(SnapshotError::Trailing(1))));
        assert!(Snapshot::decode(b"not a snapshot").is_err());
    }
}
