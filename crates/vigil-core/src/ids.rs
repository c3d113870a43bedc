//! Output ids: the same on every replay of a log, unique, and not guessable by a third party.
//!
//! Every output's id is its `Nats-Msg-Id` on the output stream, which drops a second message with
//! an id it has seen. A predictable id (`ws-a:3`, the third restart of `ws-a`) lets anyone who can
//! publish on the output stream's subjects go first: a forged restart command is stored, and
//! vigil's real one is dropped as its duplicate. So once a data directory has an id key — 128
//! random bits, drawn by the service when the directory is new and carried into the log by every
//! `resume` record — each id ends in a tag: SipHash-2-4 under that key of what the id names. The
//! tag is a pure function of the log (a replay of an export reproduces every id), but without the
//! key nobody can compute the next one. A log without a key (every replay in `replays/`, logs
//! from before keys) gives the plain ids, unchanged.

use std::fmt;
use std::hash::Hasher;

use serde::{Deserialize, Serialize};

use crate::event::WorkspaceId;

/// A data directory's id key.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdKey(pub [u64; 2]);

impl IdKey {
    /// The key from 16 random bytes (the shell draws them; the core draws nothing).
    pub fn from_bytes(bytes: [u8; 16]) -> IdKey {
        let (a, b) = bytes.split_at(8);
        IdKey([u64::from_le_bytes(a.try_into().expect("8 bytes")), u64::from_le_bytes(b.try_into().expect("8 bytes"))])
    }

    /// As 32 hex digits (the form `resume` records carry).
    pub fn to_hex(self) -> String {
        format!("{:016x}{:016x}", self.0[0], self.0[1])
    }

    /// From 32 hex digits.
    pub fn parse_hex(s: &str) -> Option<IdKey> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(IdKey([u64::from_str_radix(&s[..16], 16).ok()?, u64::from_str_radix(&s[16..], 16).ok()?]))
    }

    /// The tag of `parts`, as 16 hex digits.
    fn tag(&self, parts: &[&[u8]]) -> String {
        let mut h = siphasher::sip::SipHasher24::new_with_keys(self.0[0], self.0[1]);
        for p in parts {
            h.write_usize(p.len());
            h.write(p);
        }
        format!("{:016x}", h.finish())
    }
}

impl fmt::Debug for IdKey {
    /// Never printed: the key is what makes the ids unguessable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdKey(..)")
    }
}

/// The id of restart command `n` of `ws` (also its `restart_id`): `<ws>:<n>`, then `:<tag>` with a
/// key.
pub fn restart_id(key: Option<&IdKey>, ws: &WorkspaceId, n: u32) -> String {
    match key {
        None => format!("{ws}:{n}"),
        Some(k) => format!("{ws}:{n}:{}", k.tag(&[b"restart", ws.as_str().as_bytes(), &n.to_le_bytes()])),
    }
}

/// Where the record that caused an output stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Its position in the input stream: what every service gives it, and an export keeps; and
    /// the stream's epoch (how many times positions started again at 1 in this log).
    Stream { epoch: u32, seq: u64 },
    /// Its position in a log without stream positions (a replay file written by hand, a log from
    /// before positions were kept): counted from its first record.
    Log(u64),
}

/// The id of the `n`-th output caused by the record at `cause`: `<seq>.<n>`, then `.<tag>` with a
/// key. The tag also says which kind of position `seq` is, so a log that switches from counting
/// to stream positions (a directory from before them) never gives one id twice.
pub fn output_id(key: Option<&IdKey>, cause: Cause, n: usize) -> String {
    let (domain, epoch, seq): (&[u8], u32, u64) = match cause {
        Cause::Stream { epoch, seq } => (b"stream-output", epoch, seq),
        Cause::Log(seq) => (b"output", 0, seq),
    };
    let (seq_bytes, n_bytes, epoch_bytes) = (seq.to_le_bytes(), (n as u64).to_le_bytes(), epoch.to_le_bytes());
    // The first epoch's tags leave the epoch out, so they stay what they were before epochs.
    let parts: &[&[u8]] =
        if epoch == 0 { &[domain, &seq_bytes, &n_bytes] } else { &[domain, &seq_bytes, &n_bytes, &epoch_bytes] };
    match key {
        None => format!("{seq}.{n}"),
        Some(k) => format!("{seq}.{n}.{}", k.tag(parts)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(s: &str) -> WorkspaceId {
        WorkspaceId::parse(s).unwrap()
    }

    #[test]
    fn without_a_key_ids_are_the_plain_ones() {
        assert_eq!(restart_id(None, &ws("ws-a"), 3), "ws-a:3");
        assert_eq!(output_id(None, Cause::Log(57), 0), "57.0");
        assert_eq!(output_id(None, Cause::Stream { epoch: 0, seq: 57 }, 0), "57.0");
    }

    #[test]
    fn with_a_key_ids_are_stable_distinct_and_depend_on_the_key() {
        let k = IdKey::from_bytes(*b"0123456789abcdef");
        let other = IdKey::from_bytes(*b"fedcba9876543210");
        let id = restart_id(Some(&k), &ws("ws-a"), 3);
        assert!(id.starts_with("ws-a:3:") && id.len() == "ws-a:3:".len() + 16, "{id}");
        assert_eq!(id, restart_id(Some(&k), &ws("ws-a"), 3), "a pure function of key and name");
        assert_ne!(id, restart_id(Some(&k), &ws("ws-a"), 4));
        assert_ne!(id, restart_id(Some(&k), &ws("ws-b"), 3));
        assert_ne!(id, restart_id(Some(&other), &ws("ws-a"), 3));
        assert_ne!(output_id(Some(&k), Cause::Log(57), 0), output_id(Some(&k), Cause::Log(57), 1));
        assert_ne!(
            output_id(Some(&k), Cause::Log(57), 0),
            output_id(Some(&k), Cause::Stream { epoch: 0, seq: 57 }, 0),
            "a counted position and a stream position never share an id"
        );
        assert_ne!(
            output_id(Some(&k), Cause::Stream { epoch: 0, seq: 57 }, 0),
            output_id(Some(&k), Cause::Stream { epoch: 1, seq: 57 }, 0),
            "a recreated stream's positions never share an id with the earlier stream's"
        );
        assert_eq!(IdKey::parse_hex(&k.to_hex()), Some(k));
        assert_eq!(IdKey::parse_hex("not hex"), None);
        assert_eq!(format!("{k:?}"), "IdKey(..)");
    }
}
