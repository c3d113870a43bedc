//! The fast MessagePack reader never changes what an input decodes to.
//!
//! `wire::decode_msgpack` tries a hand-rolled reader first and falls back to serde for anything
//! outside the plain shape. These tests hold it to "only ever faster, never different": on random
//! maps — valid events, wrong types, nested values, repeated fields, invalid UTF-8, odd integer
//! encodings, truncated or trailing bytes — the result (event or error) is the serde decoder's.
//! And they check the fast path is really taken for what producers send, so the property above is
//! not vacuously true.

use proptest::prelude::*;
use vigil::core::At;
use vigil::core::fast_map;
use vigil::core::wire::{self, RawInput, Stamping};

const KNOWN: [&str; 19] = [
    "v",
    "type",
    "workspace",
    "at",
    "sent_at",
    "id",
    "interval_s",
    "incarnation",
    "active_tasks",
    "result",
    "error",
    "backend",
    "probe_id",
    "status",
    "origin",
    "reason",
    "request_id",
    "restart_id",
    "phase",
];

/// Strings that make some maps valid events.
const WORDS: [&str; 16] = [
    "heartbeat",
    "probe",
    "upstream_error",
    "restart_requested",
    "restart_progress",
    "lifecycle",
    "ws-1",
    "bad id!",
    "2026-06-15T10:00:00Z",
    "2026-06-15T10:00:00.250+02:00",
    "running",
    "not_found",
    "user",
    "started",
    "",
    "tick",
];

fn str_header(out: &mut Vec<u8>, len: usize, wide: u8) {
    match (len, wide) {
        (0..=31, 0) => out.push(0xa0 | len as u8),
        (0..=255, 0 | 1) => out.extend([0xd9, len as u8]),
        (0..=65535, 0..=2) => out.extend([0xda, (len >> 8) as u8, len as u8]),
        _ => out.extend([0xdb, (len >> 24) as u8, (len >> 16) as u8, (len >> 8) as u8, len as u8]),
    }
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => (0..KNOWN.len(), 0u8..3).prop_map(|(i, w)| { let mut o = Vec::new(); str_header(&mut o, KNOWN[i].len(), w); o.extend(KNOWN[i].as_bytes()); o }),
        1 => "[a-z_]{1,12}".prop_map(|k| { let mut o = Vec::new(); str_header(&mut o, k.len(), 0); o.extend(k.as_bytes()); o }),
        1 => (0u8..19).prop_map(|i| vec![i]),                    // an integer key
        1 => Just(vec![0xa2, 0xff, 0xfe]),                      // a key that is not UTF-8
        1 => Just(vec![0xc4, 0x01, b'v']),                      // a binary key
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => (0..WORDS.len(), 0u8..3).prop_map(|(i, w)| { let mut o = Vec::new(); str_header(&mut o, WORDS[i].len(), w); o.extend(WORDS[i].as_bytes()); o }),
        4 => (any::<u64>(), 0u8..5, prop_oneof![Just(1u64), Just(30), Just(600), Just(502), Just(70_000), Just(u64::MAX)])
            .prop_map(|(r, enc, pick)| {
                let n = if r % 2 == 0 { pick } else { r % 300 };
                match enc {
                    0 if n < 128 => vec![n as u8],
                    0 | 1 if n < 256 => vec![0xcc, n as u8],
                    0..=2 if n < 65536 => vec![0xcd, (n >> 8) as u8, n as u8],
                    0..=3 if n < 1 << 32 => { let mut o = vec![0xce]; o.extend((n as u32).to_be_bytes()); o }
                    _ => { let mut o = vec![0xcf]; o.extend(n.to_be_bytes()); o }
                }
            }),
        1 => Just(vec![0xc0]),                                   // nil
        1 => prop_oneof![Just(vec![0xc2]), Just(vec![0xc3])],    // booleans
        1 => prop_oneof![Just(vec![0xff]), Just(vec![0xd0, 0x05]), Just(vec![0xd1, 0xff, 0x00])], // signed
        1 => Just(vec![0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]),      // 1.0
        1 => Just(vec![0xa3, b'a', 0xc3, 0x28]),                 // a string that is not UTF-8
        1 => Just(vec![0xc4, 0x02, b'o', b'k']),                 // binary
        1 => Just(vec![0x92, 0x01, 0xa1, b'x']),                 // an array
        1 => Just(vec![0x81, 0xa1, b'k', 0x01]),                 // a nested map
        1 => Just(vec![0xc1]),                                   // never used
    ]
}

fn map() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec((key(), value()), 0..12),
        0u8..3,
        any::<bool>(),
        prop_oneof![8 => Just(None), 1 => Just(Some(vec![0x01])), 1 => Just(Some(vec![0xc0, 0xa1, b'x']))],
        prop_oneof![9 => Just(0usize), 1 => 1usize..8],
    )
        .prop_map(|(entries, header, with_type, trailing, cut)| {
            let mut entries = entries;
            if with_type {
                // Mostly-valid heartbeats, so the validator's paths are reached too.
                let mut base = vec![
                    (vec![0xa1, b'v'], vec![0x01]),
                    (vec![0xa4, b't', b'y', b'p', b'e'], b"\xa9heartbeat".to_vec()),
                    (b"\xa9workspace".to_vec(), b"\xa4ws-1".to_vec()),
                ];
                base.append(&mut entries);
                entries = base;
            }
            let n = entries.len();
            let mut out = match header {
                0 if n < 16 => vec![0x80 | n as u8],
                0 | 1 => vec![0xde, (n >> 8) as u8, n as u8],
                _ => {
                    let mut o = vec![0xdf];
                    o.extend((n as u32).to_be_bytes());
                    o
                }
            };
            for (k, v) in entries {
                out.extend(k);
                out.extend(v);
            }
            if let Some(t) = trailing {
                out.extend(t);
            }
            out.truncate(out.len().saturating_sub(cut));
            out
        })
}

fn serde_raw(bytes: &[u8]) -> Option<RawInput<'_>> {
    rmp_serde::from_slice::<RawInput<'_>>(bytes).ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    /// Given any bytes shaped like a map, when both decoders read them, then they agree.
    #[test]
    fn the_fast_reader_agrees_with_serde(bytes in map()) {
        for stamping in [Stamping::Logged, Stamping::ReceivedAt(At(1_781_517_600_000))] {
            prop_assert_eq!(
                wire::decode_msgpack(&bytes, stamping),
                wire::decode_msgpack_with_serde(&bytes, stamping),
                "bytes {:02x?}", bytes
            );
        }
        if let Some(fast) = fast_map::read(&bytes) {
            prop_assert_eq!(Some(fast), serde_raw(&bytes), "bytes {:02x?}", bytes);
        }
    }
}

/// Given every input of every replay, encoded the way `vigil emit` and the client encode them,
/// when the fast reader reads them, then it takes every one and reads what serde reads.
#[test]
fn what_producers_send_takes_the_fast_path() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("replays");
    let mut read = 0;
    for dir in std::fs::read_dir(&root).unwrap() {
        let path = dir.unwrap().path().join("events.jsonl");
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let input = wire::decode_json(line, Stamping::Logged).unwrap();
            let bytes = wire::encode_msgpack(&input);
            let fast = fast_map::read(&bytes).unwrap_or_else(|| panic!("{}: not taken: {line}", path.display()));
            assert_eq!(Some(fast), serde_raw(&bytes));
            assert_eq!(wire::decode_msgpack(&bytes, Stamping::Logged), Ok(input));
            read += 1;
        }
    }
    assert!(read > 50, "only {read} replay inputs found");
}

/// Given a map with a repeated field, then the fast reader steps aside and serde's error stands.
#[test]
fn a_repeated_field_is_left_to_serde() {
    let bytes = [&[0x82u8, 0xa1, b'v', 0x01, 0xa1, b'v', 0x01][..]].concat();
    assert_eq!(fast_map::read(&bytes), None);
    assert!(wire::decode_msgpack(&bytes, Stamping::Logged).is_err());
}
