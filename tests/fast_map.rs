//! The fast MessagePack reader never changes what an input decodes to.
//!
//! `wire::decode_msgpack` tries a hand-rolled reader first and falls back to serde for anything
//! outside the plain shape. These tests hold it to "only ever faster, never different": on random
//! maps — valid events, wrong types, nested values, repeated fields, invalid UTF-8, odd integer
//! encodings, truncated or trailing bytes — the result (event or error) is the serde decoder's.
//! And they check the fast path is really taken for what producers send, so the property above is
//! not vacuously true.

mod support;

use proptest::prelude::*;
use support::msgpack::map;
use vigil::core::At;
use vigil::core::fast_map;
use vigil::core::wire::{self, RawInput, Stamping};

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
