//! The engine's index from workspace id to slab slot: a small open-addressing hash table whose
//! home positions can be prefetched.
//!
//! Why not `hashbrown`? At a million workspaces the index itself no longer fits in cache, and an
//! input's cost is mostly waiting for memory: first the index, then the slot it points to. To
//! overlap those misses across inputs, the engine must ask the CPU for an input's index line
//! *before* it looks the input up, which needs the address of the id's home position — something a
//! general-purpose table does not expose. This one is deliberately plain: linear probing over a
//! power-of-two array of slot numbers, with a parallel array of one-byte hash tags so that a probe
//! rarely has to look at a slot to reject it, at most three quarters full, and backward-shift
//! deletion (no tombstones, so lookups never slow down after removals). Five bytes per bucket, like
//! hashbrown; at most ¾ full rather than ⅞, so for fleet sizes between ¾ and ⅞ of a power of two it
//! holds twice hashbrown's buckets (at 100 000 workspaces ~13 B each instead of ~6.6 B; at
//! 1 000 000 the same ~10 B).
//!
//! The table stores only slot numbers; the engine owns the keys. Operations that must rehash
//! (growth, deletion) take a function from slot number to that slot's hash.

/// Marks an empty bucket.
const EMPTY: u32 = u32::MAX;
/// The smallest table allocated.
const MIN_BUCKETS: usize = 16;

/// Slot numbers by hash.
#[derive(Debug, Default)]
pub struct Index {
    /// One byte of each occupied bucket's hash (other bits than the home position's).
    tags: Vec<u8>,
    /// Slot numbers, or `EMPTY`.
    values: Vec<u32>,
    len: usize,
}

/// Which bits of a hash choose the bucket: the top ones, after a multiplicative mix, so that a
/// weak low-bit hash still spreads.
#[inline]
fn mix(hash: u64) -> u64 {
    hash.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[inline]
fn tag(hash: u64) -> u8 {
    // The top byte under another multiplier: all of the hash's bits reach it, and it is not the
    // bits that chose the bucket (equal tags within a cluster would make every probe a slot read).
    (hash.wrapping_mul(0xD6E8_FEB8_6659_FD93) >> 56) as u8
}

impl Index {
    pub fn new() -> Self {
        Index::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Buckets allocated (each costs five bytes).
    pub fn capacity(&self) -> usize {
        self.values.len()
    }

    fn mask(&self) -> usize {
        self.values.len().wrapping_sub(1)
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        let buckets = self.values.len();
        debug_assert!(buckets.is_power_of_two());
        (mix(hash) >> (64 - buckets.trailing_zeros())) as usize
    }

    /// Asks the CPU to start loading the lines a lookup of `hash` reads first (a hint).
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        if self.values.is_empty() {
            return;
        }
        let home = self.home(hash);
        prefetch_line(self.tags.as_ptr().wrapping_add(home) as *const i8);
        prefetch_line(self.values.as_ptr().wrapping_add(home) as *const i8);
    }

    /// The first slot whose tag matches `hash`: where a lookup would most likely end (a hint for
    /// prefetching, never an answer).
    #[inline]
    pub fn candidate(&self, hash: u64) -> Option<u32> {
        self.find(hash, |_| true)
    }

    /// The slot holding the key whose hash is `hash`, where `eq` says which slot holds that key.
    #[inline]
    pub fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.values.is_empty() {
            return None;
        }
        let (mask, tag) = (self.mask(), tag(hash));
        let mut pos = self.home(hash);
        loop {
            let value = self.values[pos];
            if value == EMPTY {
                return None;
            }
            if self.tags[pos] == tag && eq(value) {
                return Some(value);
            }
            pos = (pos + 1) & mask;
        }
    }

    /// Adds `value` under `hash`; the caller guarantees its key is not in the table yet.
    pub fn insert_unique(&mut self, hash: u64, value: u32, hash_of: impl Fn(u32) -> u64) {
        assert_ne!(value, EMPTY, "slot number out of range");
        self.reserve(1, hash_of);
        self.place(hash, value);
        self.len += 1;
    }

    fn place(&mut self, hash: u64, value: u32) {
        let mask = self.mask();
        let mut pos = self.home(hash);
        while self.values[pos] != EMPTY {
            pos = (pos + 1) & mask;
        }
        self.values[pos] = value;
        self.tags[pos] = tag(hash);
    }

    /// Makes room for `additional` more entries without growing again.
    pub fn reserve(&mut self, additional: usize, hash_of: impl Fn(u32) -> u64) {
        let needed = self.len.saturating_add(additional);
        // At most three quarters full.
        if needed.saturating_mul(4) <= self.values.len().saturating_mul(3) {
            return;
        }
        let buckets = needed
            .checked_mul(4)
            .and_then(|n| n.div_ceil(3).max(MIN_BUCKETS).checked_next_power_of_two())
            .expect("index capacity overflows usize");
        let old = std::mem::take(&mut self.values);
        self.values = vec![EMPTY; buckets];
        self.tags = vec![0; buckets];
        for value in old.into_iter().filter(|&v| v != EMPTY) {
            self.place(hash_of(value), value);
        }
    }

    /// Removes `value`, stored under `hash`. Returns whether it was there.
    pub fn remove(&mut self, hash: u64, value: u32, hash_of: impl Fn(u32) -> u64) -> bool {
        if self.values.is_empty() {
            return false;
        }
        let mask = self.mask();
        let mut hole = self.home(hash);
        loop {
            match self.values[hole] {
                EMPTY => return false,
                v if v == value => break,
                _ => hole = (hole + 1) & mask,
            }
        }
        // Backward shift: pull later members of the cluster into the hole when their home allows,
        // so that no lookup ever meets a gap before its key.
        let mut pos = (hole + 1) & mask;
        while self.values[pos] != EMPTY {
            let home = self.home(hash_of(self.values[pos]));
            if pos.wrapping_sub(home) & mask >= pos.wrapping_sub(hole) & mask {
                self.values[hole] = self.values[pos];
                self.tags[hole] = self.tags[pos];
                hole = pos;
            }
            pos = (pos + 1) & mask;
        }
        self.values[hole] = EMPTY;
        self.len -= 1;
        true
    }

    /// Every stored slot number, in bucket order.
    #[cfg(test)]
    pub fn values(&self) -> impl Iterator<Item = u32> + '_ {
        self.values.iter().copied().filter(|&v| v != EMPTY)
    }
}

/// Asks the CPU to start loading the cache line at `p` (a hint; never dereferenced). The crate's
/// one `unsafe` block (`#![deny(unsafe_code)]` everywhere else).
#[inline]
#[allow(unsafe_code)]
pub fn prefetch_line(p: *const i8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint and never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p, std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// A deliberately bad hash (many collisions) so clusters and wrap-around get exercised.
    fn weak(key: u32) -> u64 {
        u64::from(key % 37)
    }

    fn find(index: &Index, keys: &[u32], key: u32) -> Option<u32> {
        index.find(weak(key), |slot| keys[slot as usize] == key)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32),
        Remove(u32),
    }

    proptest! {
        /// Given any sequence of inserts and removals, the index answers every lookup exactly
        /// like a standard map.
        #[test]
        fn behaves_like_a_map(ops in prop::collection::vec(
            prop_oneof![(0u32..200).prop_map(Op::Insert), (0u32..200).prop_map(Op::Remove)], 0..600)
        ) {
            // Slot i holds key keys[i]; freed slots are reused last in, first out, like the engine's.
            let mut keys: Vec<u32> = Vec::new();
            let mut free: Vec<u32> = Vec::new();
            let mut index = Index::new();
            let mut model: HashMap<u32, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k) if !model.contains_key(&k) => {
                        let slot = match free.pop() {
                            Some(slot) => { keys[slot as usize] = k; slot }
                            None => { keys.push(k); keys.len() as u32 - 1 }
                        };
                        index.insert_unique(weak(k), slot, |s| weak(keys[s as usize]));
                        model.insert(k, slot);
                    }
                    Op::Insert(_) => {}
                    Op::Remove(k) => match model.remove(&k) {
                        Some(slot) => {
                            prop_assert!(index.remove(weak(k), slot, |s| weak(keys[s as usize])));
                            free.push(slot);
                        }
                        // A freed slot is in no bucket, whatever key it is asked under.
                        None => if let Some(&slot) = free.last() {
                            prop_assert!(!index.remove(weak(k), slot, |s| weak(keys[s as usize])));
                        },
                    },
                }
                prop_assert_eq!(index.len(), model.len());
                for k in 0..200 {
                    prop_assert_eq!(find(&index, &keys, k), model.get(&k).copied(), "key {}", k);
                }
            }
            let mut stored: Vec<u32> = index.values().collect();
            stored.sort_unstable();
            let mut expected: Vec<u32> = model.values().copied().collect();
            expected.sort_unstable();
            prop_assert_eq!(stored, expected);
        }
    }

    #[test]
    fn an_empty_index_finds_nothing_and_removes_nothing() {
        let mut index = Index::new();
        assert_eq!(index.find(7, |_| true), None);
        assert!(!index.remove(7, 0, |_| 7));
        index.prefetch(7);
        assert_eq!(index.capacity(), 0);
    }

    #[test]
    fn stays_at_most_three_quarters_full() {
        let mut index = Index::new();
        for i in 0..10_000u32 {
            index.insert_unique(u64::from(i).wrapping_mul(0x2545_F491_4F6C_DD1D), i, |s| {
                u64::from(s).wrapping_mul(0x2545_F491_4F6C_DD1D)
            });
            assert!(index.len() * 4 <= index.capacity() * 3);
        }
        assert_eq!(index.capacity(), 16_384);
    }
}
