//! The layout of vigil's sled database: five keyspaces in one tree, told apart by a one-byte
//! prefix. One tree, because a sled `Batch` is atomic only within a tree — this way every group
//! commit and every checkpoint is a single atomic batch, without transactions.
//!
//! | prefix | key                      | value                                               |
//! |--------|--------------------------|-----------------------------------------------------|
//! | `l`    | first seq (u64, BE)      | a log segment: the inputs of one group commit        |
//! | `s`    | chunk (u32, BE)          | the machines of one slab chunk, as of the checkpoint |
//! | `t`    | workspace id             | a removed workspace's tombstone                      |
//! | `o`    | first seq (u64 BE)       | a group's outputs not yet confirmed by the bus       |
//! | `m`    | name                     | meta: format, applied seq, stream seq, checkpoint    |
//!
//! Numbers are big-endian so that keys sort in numeric order.

pub const LOG: u8 = b'l';
pub const STATE: u8 = b's';
pub const TOMB: u8 = b't';
pub const OUTBOX: u8 = b'o';
pub const META: u8 = b'm';

/// Meta: the store format (`MAGIC` followed by the version, u32 BE).
pub const META_FORMAT: &[u8] = b"mformat";
/// Meta: the log sequence of the last input committed (u64 BE).
pub const META_APPLIED: &[u8] = b"mapplied";
/// Meta: the input stream sequence of the last message committed, for redelivery (u64 BE).
pub const META_STREAM: &[u8] = b"mstream";
/// Meta: which input stream `META_STREAM` counts in (its name and creation time).
pub const META_STREAM_ID: &[u8] = b"mstreamid";
/// Meta: the input stream position a rebuild of this directory from the stream must reach (u64
/// BE; absent or at most `META_STREAM` once it has): until then its outputs are checked against
/// the output stream before any is published.
pub const META_REBUILD: &[u8] = b"mrebuild";
/// Meta: set (u64 BE, 1) while a directory rebuilt without part of the history has not yet put a
/// new id key into the stream.
pub const META_HISTORY_LOST: &[u8] = b"mhistorylost";
/// Meta: the stream position of the epoch record this directory's instance last owned the log
/// under (u64 BE; absent: never).
pub const META_EPOCH: &[u8] = b"mepoch";
/// Meta: this directory's token (16 hex digits), drawn once: the lease it holds names it.
pub const META_TOKEN: &[u8] = b"mtoken";
/// Meta: the fleet record of the last checkpoint (MessagePack; its `seq` is the position it covers).
pub const META_CHECKPOINT: &[u8] = b"mcheckpoint";
/// Meta: the first log sequence still stored, after compaction (u64 BE).
pub const META_FIRST: &[u8] = b"mfirst";
/// Meta: how many state chunks the last checkpoint spans (u64 BE).
pub const META_CHUNKS: &[u8] = b"mchunks";
/// Meta: the policy the log is applied under (MessagePack, named fields).
pub const META_POLICY: &[u8] = b"mpolicy";
/// Meta: the first log sequence applied under `META_POLICY` (u64 BE); earlier ones were applied
/// under a policy since replaced.
pub const META_POLICY_SINCE: &[u8] = b"mpolicysince";

/// What a vigil database says first.
pub const MAGIC: &[u8] = b"vigil-store";

pub fn log(seq: u64) -> [u8; 9] {
    let mut k = [LOG; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub fn log_seq(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(1..9)?.try_into().ok()?))
}

pub fn state(chunk: u32) -> [u8; 5] {
    let mut k = [STATE; 5];
    k[1..].copy_from_slice(&chunk.to_be_bytes());
    k
}

pub fn tomb(ws: &str) -> Vec<u8> {
    prefixed(TOMB, ws.as_bytes())
}

/// The outbox entry of one group commit: the log sequence of the group's first input. All the
/// outputs a group caused are one value, written with the group and removed when all of them are
/// confirmed (one sled insert and one remove per group, however many outputs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutboxKey {
    pub seq: u64,
}

impl OutboxKey {
    pub fn bytes(self) -> [u8; 9] {
        let mut k = [OUTBOX; 9];
        k[1..].copy_from_slice(&self.seq.to_be_bytes());
        k
    }

    pub fn parse(key: &[u8]) -> Option<OutboxKey> {
        Some(OutboxKey { seq: u64::from_be_bytes(key.get(1..9)?.try_into().ok()?) })
    }
}

fn prefixed(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

pub fn u64_value(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

pub fn read_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}
