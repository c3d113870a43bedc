//! A hand-rolled reader for the plain shape of an input map, in front of the serde decoder.
//!
//! Producers send a flat MessagePack map: string keys, string, unsigned-integer or nil values.
//! rmp-serde reads such a map in ~0.4 µs — it goes through serde's visitor machinery field by
//! field — which was the largest single cost of a durable group commit. This reader fills the same
//! [`RawInput`] in a single pass over the bytes, and does nothing clever: whenever it meets
//! anything outside that plain shape (a non-string key, a nested value, a negative or float number
//! where a count is expected, invalid UTF-8, a repeated field, bytes after the map) it gives up
//! with `None` and the serde decoder decides, errors and all. So it can only ever be faster, never
//! different; a property test holds it to that on random maps.

use std::borrow::Cow;

use crate::wire::RawInput;

/// Reads a plain input map; `None` means "not the plain shape, ask serde".
pub fn read(bytes: &[u8]) -> Option<RawInput<'_>> {
    let mut r = Reader::new(bytes);
    let len = r.map_len()?;
    let mut raw = RawInput::default();
    let mut seen = 0u32;
    for _ in 0..len {
        let key = r.str()?;
        let Some(field) = field_index(key) else {
            std::str::from_utf8(key).ok()?;
            r.skip_scalar()?;
            continue;
        };
        let bit = 1u32 << field;
        if seen & bit != 0 {
            return None; // serde rejects a repeated field; let it say so
        }
        seen |= bit;
        r.field(&mut raw, field)?;
    }
    r.at_end().then_some(raw)
}

/// Where the first MessagePack value in `bytes` ends, or `None` if it is malformed or cut short.
/// Reads no value and allocates nothing, whatever lengths the bytes declare: every value it steps
/// over takes at least one byte, so it is done after at most `bytes.len()` steps.
pub fn value_end(bytes: &[u8]) -> Option<usize> {
    let mut r = Reader::new(bytes);
    let mut pending: u64 = 1;
    while pending > 0 {
        pending -= 1;
        pending = pending.checked_add(r.skip_one()?)?;
        if pending > (bytes.len() - r.pos) as u64 {
            return None; // more values declared than bytes left to hold them
        }
    }
    Some(r.pos)
}

/// Which field of [`RawInput`] a key names, as [`Reader::field`] numbers them (a `match` on byte
/// strings compiles to a switch on the length).
fn field_index(key: &[u8]) -> Option<usize> {
    Some(match key {
        b"v" => 0,
        b"type" => 1,
        b"workspace" => 2,
        b"at" => 3,
        b"sent_at" => 4,
        b"id" => 5,
        b"interval_s" => 6,
        b"incarnation" => 7,
        b"active_tasks" => 8,
        b"result" => 9,
        b"error" => 10,
        b"backend" => 11,
        b"probe_id" => 12,
        b"status" => 13,
        b"origin" => 14,
        b"reason" => 15,
        b"request_id" => 16,
        b"restart_id" => 17,
        b"phase" => 18,
        b"id_key" => 19,
        b"unwatched_after_ms" => 20,
        b"partition" => 21,
        b"partitions" => 22,
        b"monitored" => 23,
        b"awaits" => 24,
        b"stream_seq" => 25,
        _ => return None,
    })
}

/// A forward-only reader of MessagePack scalars that gives up (`None`) on anything unexpected;
/// also used by the log's fast path (`store::segment`).
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    /// Whether every byte was read.
    pub fn at_end(&self) -> bool {
        self.pos == self.bytes.len()
    }

    pub fn array_len(&mut self) -> Option<usize> {
        match self.byte()? {
            b @ 0x90..=0x9f => Some(usize::from(b & 0x0f)),
            0xdc => self.be(2).map(|n| n as usize),
            0xdd => self.be(4).map(|n| n as usize),
            _ => None,
        }
    }

    /// A signed integer that fits an `i64`, or give up.
    pub fn int(&mut self) -> Option<i64> {
        Some(match self.byte()? {
            b @ 0x00..=0x7f => i64::from(b),
            b @ 0xe0..=0xff => i64::from(b as i8),
            0xcc => self.be(1)? as i64,
            0xcd => self.be(2)? as i64,
            0xce => self.be(4)? as i64,
            0xcf => i64::try_from(self.be(8)?).ok()?,
            0xd0 => i64::from(self.be(1)? as u8 as i8),
            0xd1 => i64::from(self.be(2)? as u16 as i16),
            0xd2 => i64::from(self.be(4)? as u32 as i32),
            0xd3 => self.be(8)? as i64,
            _ => return None,
        })
    }

    /// A signed integer, nil, or give up.
    pub fn opt_int(&mut self) -> Option<Option<i64>> {
        if self.bytes.get(self.pos) == Some(&0xc0) {
            self.pos += 1;
            return Some(None);
        }
        self.int().map(Some)
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let slice = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        Some(self.take(n)?.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    pub fn map_len(&mut self) -> Option<usize> {
        match self.byte()? {
            b @ 0x80..=0x8f => Some(usize::from(b & 0x0f)),
            0xde => self.be(2).map(|n| n as usize),
            0xdf => self.be(4).map(|n| n as usize),
            _ => None,
        }
    }

    /// The bytes of a string (not yet checked as UTF-8).
    pub fn str(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            b @ 0xa0..=0xbf => usize::from(b & 0x1f),
            0xd9 => self.be(1)? as usize,
            0xda => self.be(2)? as usize,
            0xdb => self.be(4)? as usize,
            _ => return None,
        };
        self.take(len)
    }

    /// A string value, nil, or give up.
    pub fn opt_str(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.bytes.get(self.pos) == Some(&0xc0) {
            self.pos += 1;
            return Some(None);
        }
        let s = std::str::from_utf8(self.str()?).ok()?;
        Some(Some(Cow::Borrowed(s)))
    }

    /// An unsigned integer value, nil, or give up.
    pub fn opt_uint(&mut self) -> Option<Option<u64>> {
        let n = match self.byte()? {
            0xc0 => return Some(None),
            b @ 0x00..=0x7f => u64::from(b),
            0xcc => self.be(1)?,
            0xcd => self.be(2)?,
            0xce => self.be(4)?,
            0xcf => self.be(8)?,
            _ => return None,
        };
        Some(Some(n))
    }

    /// Steps over one value's own bytes; returns how many values it contains (an array's elements,
    /// a map's keys and values), which the caller steps over next.
    fn skip_one(&mut self) -> Option<u64> {
        let (skip, children): (usize, u64) = match self.byte()? {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            b @ 0x80..=0x8f => (0, 2 * u64::from(b & 0x0f)),
            b @ 0x90..=0x9f => (0, u64::from(b & 0x0f)),
            b @ 0xa0..=0xbf => (usize::from(b & 0x1f), 0),
            0xc4 | 0xd9 => (self.be(1)? as usize, 0),
            0xc5 | 0xda => (self.be(2)? as usize, 0),
            0xc6 | 0xdb => (self.be(4)? as usize, 0),
            0xc7 => (self.be(1)? as usize + 1, 0),
            0xc8 => (self.be(2)? as usize + 1, 0),
            0xc9 => (self.be(4)? as usize + 1, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce | 0xd2 | 0xca => (4, 0),
            0xcf | 0xd3 | 0xcb => (8, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (0, self.be(2)?),
            0xdd => (0, self.be(4)?),
            0xde => (0, 2 * self.be(2)?),
            0xdf => (0, 2 * self.be(4)?),
            _ => return None, // 0xc1, never used
        };
        self.take(skip)?;
        Some(children)
    }

    /// Skips the value of an unknown field if it is a scalar (nil, bool, number, string).
    fn skip_scalar(&mut self) -> Option<()> {
        let skip = match self.byte()? {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 0,
            b @ 0xa0..=0xbf => usize::from(b & 0x1f),
            0xcc | 0xd0 => 1,
            0xcd | 0xd1 => 2,
            0xce | 0xd2 | 0xca => 4,
            0xcf | 0xd3 | 0xcb => 8,
            0xd9 => self.be(1)? as usize,
            0xda => self.be(2)? as usize,
            0xdb => self.be(4)? as usize,
            _ => return None,
        };
        self.take(skip).map(|_| ())
    }

    fn field(&mut self, raw: &mut RawInput<'a>, field: usize) -> Option<()> {
        match field {
            0 => raw.v = self.opt_uint()?,
            1 => raw.kind = self.opt_str()?,
            2 => raw.workspace = self.opt_str()?,
            3 => raw.at = self.opt_str()?,
            4 => raw.sent_at = self.opt_str()?,
            5 => raw.id = self.opt_str()?,
            6 => raw.interval_s = self.opt_uint()?,
            7 => raw.incarnation = self.opt_str()?,
            8 => raw.active_tasks = self.opt_uint()?,
            9 => raw.result = self.opt_str()?,
            10 => raw.error = self.opt_str()?,
            11 => raw.backend = self.opt_str()?,
            12 => raw.probe_id = self.opt_str()?,
            13 => raw.status = self.opt_uint()?,
            14 => raw.origin = self.opt_str()?,
            15 => raw.reason = self.opt_str()?,
            16 => raw.request_id = self.opt_str()?,
            17 => raw.restart_id = self.opt_str()?,
            18 => raw.phase = self.opt_str()?,
            19 => raw.id_key = self.opt_str()?,
            20 => raw.unwatched_after_ms = self.opt_uint()?,
            21 => raw.partition = self.opt_uint()?,
            22 => raw.partitions = self.opt_uint()?,
            23 => raw.monitored = self.opt_uint()?,
            // A boolean, which only vigil's own `declaration` records carry: serde reads those.
            24 => return None,
            25 => raw.stream_seq = self.opt_uint()?,
            _ => return None,
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    /// A field this reader does not know it skips as unknown, which serde would not: every input
    /// field must have its place here.
    #[test]
    fn every_input_field_has_an_index() {
        for (i, field) in crate::wire::INPUT_FIELDS.iter().enumerate() {
            assert_eq!(super::field_index(field.as_bytes()), Some(i), "{field}");
        }
    }
}
