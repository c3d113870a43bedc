//! MessagePack shaped like an input map, for property tests: known and unknown keys (some with
//! newlines and other control characters in them), values of every type and encoding, odd map
//! headers, trailing and missing bytes.

use proptest::prelude::*;

/// The keys an input map may have (the decoder's list).
pub const KNOWN: &[&str] = vigil::core::wire::INPUT_FIELDS;

/// Strings that make some maps valid events.
pub const WORDS: [&str; 16] = [
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

pub fn str_header(out: &mut Vec<u8>, len: usize, wide: u8) {
    match (len, wide) {
        (0..=31, 0) => out.push(0xa0 | len as u8),
        (0..=255, 0 | 1) => out.extend([0xd9, len as u8]),
        (0..=65535, 0..=2) => out.extend([0xda, (len >> 8) as u8, len as u8]),
        _ => out.extend([0xdb, (len >> 24) as u8, (len >> 16) as u8, (len >> 8) as u8, len as u8]),
    }
}

pub fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => (0..KNOWN.len(), 0u8..3).prop_map(|(i, w)| { let mut o = Vec::new(); str_header(&mut o, KNOWN[i].len(), w); o.extend(KNOWN[i].as_bytes()); o }),
        1 => "[a-z_]{1,12}".prop_map(|k| { let mut o = Vec::new(); str_header(&mut o, k.len(), 0); o.extend(k.as_bytes()); o }),
        // A key with anything in it: newlines, control characters, non-ASCII (it ends up quoted
        // in error texts, which end up in headers).
        1 => prop::collection::vec(any::<char>(), 0..12).prop_map(|cs| { let k: String = cs.into_iter().collect(); let mut o = Vec::new(); str_header(&mut o, k.len(), 0); o.extend(k.as_bytes()); o }),
        1 => (0u8..19).prop_map(|i| vec![i]),                    // an integer key
        1 => Just(vec![0xa2, 0xff, 0xfe]),                      // a key that is not UTF-8
        1 => Just(vec![0xc4, 0x01, b'v']),                      // a binary key
    ]
}

pub fn value() -> impl Strategy<Value = Vec<u8>> {
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

pub fn map() -> impl Strategy<Value = Vec<u8>> {
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
