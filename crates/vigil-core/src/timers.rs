//! Deadlines of all workspaces, in firing order, without scanning the fleet.
//!
//! A binary heap with lazy deletion: each workspace slot remembers the deadline of its live entry
//! (`armed`). When a deadline moves later (every heartbeat moves the TTL), nothing is pushed; the old
//! entry fires early, finds the workspace's real deadline later, and re-arms itself. When a deadline
//! moves earlier, a new entry is pushed and the old one becomes stale. So a heartbeat costs no heap
//! operation, and each workspace holds about one entry.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::time::At;

/// One armed deadline: 12 bytes (packed), since there is one per workspace.
///
/// It carries no slot generation: an entry left behind by a removed workspace can only ever make
/// the engine look at the slot's current occupant, which fires only if its own deadline is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(C, packed(4))]
pub struct Entry {
    pub deadline: At,
    pub idx: u32,
}

/// Min-heap of deadlines.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
}

impl Timers {
    /// Arms `deadline` for a slot.
    pub fn push(&mut self, deadline: At, idx: u32) {
        self.heap.push(Reverse(Entry { deadline, idx }));
    }

    /// The earliest armed deadline (possibly stale).
    pub fn peek(&self) -> Option<At> {
        self.heap.peek().map(|Reverse(e)| e.deadline)
    }

    /// Removes every entry due exactly at `deadline` and returns their slots.
    pub fn pop_at(&mut self, deadline: At, into: &mut Vec<u32>) {
        while let Some(&Reverse(e)) = self.heap.peek() {
            if { e.deadline } != deadline {
                break;
            }
            into.push(e.idx);
            self.heap.pop();
        }
    }

    /// Bytes reserved by the heap (for memory accounting).
    pub fn capacity_bytes(&self) -> usize {
        self.heap.capacity() * std::mem::size_of::<Reverse<Entry>>()
    }
}
