//! The world's agenda: what happens next, in virtual time.
//!
//! Events are ordered by (time in ms, insertion sequence): two events due at the same millisecond
//! come out in the order they were scheduled, never in an order a heap's internals or a hash
//! happen to give, so a seed always replays the same world.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// A min-queue of events by (time, insertion order).
pub struct Queue<E> {
    heap: BinaryHeap<Reverse<Entry<E>>>,
    seq: u64,
}

struct Entry<E> {
    t: i64,
    seq: u64,
    ev: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.t, self.seq) == (other.t, other.seq)
    }
}

impl<E> Eq for Entry<E> {}

impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.t, self.seq).cmp(&(other.t, other.seq))
    }
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Queue { heap: BinaryHeap::new(), seq: 0 }
    }
}

impl<E> Queue<E> {
    /// Schedules `ev` at `t` (ms), after everything already scheduled at `t`.
    pub fn push(&mut self, t: i64, ev: E) {
        self.seq += 1;
        self.heap.push(Reverse(Entry { t, seq: self.seq, ev }));
    }

    /// The earliest event, if it is due no later than `until`.
    pub fn pop_until(&mut self, until: i64) -> Option<(i64, E)> {
        if self.heap.peek().is_none_or(|Reverse(e)| e.t > until) {
            return None;
        }
        self.heap.pop().map(|Reverse(e)| (e.t, e.ev))
    }
}

#[cfg(test)]
mod tests {
    use super::Queue;

    #[test]
    fn ties_come_out_in_insertion_order_and_late_events_wait() {
        let mut q = Queue::default();
        q.push(5, "b");
        q.push(3, "a");
        q.push(5, "c");
        q.push(9, "late");
        let order: Vec<_> = std::iter::from_fn(|| q.pop_until(8)).collect();
        assert_eq!(order, [(3, "a"), (5, "b"), (5, "c")]);
        assert_eq!(q.pop_until(9), Some((9, "late")));
    }
}
