//! Where a start takes up the log: from what the data directory says it applied and what the
//! input stream holds, decide whether vigil resumes after its own position, rebuilds the directory
//! from the stream (from a snapshot record or from the first record) or, on a stream that was
//! deleted and declared again, starts after the consumer's acknowledged position — and whether the
//! directory's id key may be kept. Decided here so that the crash model in `model.rs` can drive
//! the very rules the serve loop performs.

/// What the data directory says at start.
#[derive(Clone, Copy, Debug)]
pub struct Directory<'a> {
    /// The input stream the directory counted in (`None`: a new directory).
    pub stream_id: Option<&'a str>,
    /// The last stream position it applied (0: none).
    pub applied: u64,
}

/// What the input stream holds at start.
#[derive(Clone, Copy, Debug)]
pub struct Held<'a> {
    /// The stream's identity (its creation time and name).
    pub stream_id: &'a str,
    /// Its first and last positions (`last < first` when it is empty).
    pub first: u64,
    pub last: u64,
}

/// How a start takes up the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// The directory counts in this stream: go on after its own last applied position — not after
    /// the consumer's acknowledgement, which may be ahead of what the directory kept through a
    /// crash (records are acknowledged once applied, before the directory's flush).
    Resume { after: u64 },
    /// A new directory on an empty stream: nothing to rebuild; count from before its first
    /// position.
    Empty { after: u64 },
    /// A new directory on a stream that holds history: rebuild it from the stream, through `last`
    /// (see [`rebuild_from`] for where the rebuild starts).
    Rebuild { first: u64, last: u64 },
    /// The directory counted in another stream (this one was deleted and declared again): keep its
    /// state and start after what the consumer acknowledged in this one.
    Foreign,
}

/// Decides how a start takes up the log.
pub fn opening(directory: Directory<'_>, held: Held<'_>) -> Opening {
    let first = held.first.max(1);
    match directory.stream_id {
        Some(id) if id == held.stream_id => Opening::Resume { after: directory.applied },
        Some(_) => Opening::Foreign,
        None if directory.applied > 0 => Opening::Foreign,
        None if held.last < first => Opening::Empty { after: first - 1 },
        None => Opening::Rebuild { first, last: held.last },
    }
}

/// Whether a directory that counts in the stream and applied it through `applied` is stale: the
/// records after it are gone (the stream starts at `first`) and its partition's newest snapshot
/// record covers further (`newest_covers`), so somebody folded what it missed. Resuming would skip
/// that; it is rebuilt from the snapshot instead. With no snapshot past it, nobody folded the
/// gap, and resuming after it loses nothing anybody decided on.
pub fn is_stale(applied: u64, first: u64, newest_covers: Option<u64>) -> bool {
    first > applied + 1 && newest_covers.is_some_and(|covers| covers > applied)
}

/// Where a rebuild starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebuildFrom<S> {
    /// From the latest snapshot record, which covers the records through `covers`.
    Snapshot { covers: u64, snapshot: S },
    /// From the stream's first record (after position `after`).
    First { after: u64 },
}

/// A rebuild's starting point, and whether it goes without part of the history (records that
/// expired with no snapshot covering them: restart counts may come out lower than they were).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RebuildPlan<S> {
    pub from: RebuildFrom<S>,
    pub history_lost: bool,
}

/// Decides where a rebuild of a stream whose first position is `first` starts, given the latest
/// usable snapshot record, if there is one, and the position it covers.
pub fn rebuild_from<S>(first: u64, latest: Option<(u64, S)>) -> RebuildPlan<S> {
    match latest {
        Some((covers, snapshot)) => {
            RebuildPlan { from: RebuildFrom::Snapshot { covers, snapshot }, history_lost: covers + 1 < first }
        }
        None => RebuildPlan { from: RebuildFrom::First { after: first - 1 }, history_lost: first > 1 },
    }
}

/// The order in which to try the snapshot records found on a stream whose first position is
/// `first`, each as (position it covers, its own position, what it is). First those whose tail is
/// all in the stream (they cover everything up to `first`), newest first: the newest follows the
/// latest instance's own fold (a snapshot taken after a crash may cover less than one before it,
/// and that instance may have folded under a different policy). Then the others, covering the most
/// first: the least history lost.
pub fn preferred_snapshots<S>(first: u64, mut found: Vec<(u64, u64, S)>) -> Vec<(u64, u64, S)> {
    found.sort_by_key(|&(covers, seq, _)| {
        let complete = covers + 1 >= first;
        (std::cmp::Reverse(complete), std::cmp::Reverse(if complete { seq } else { covers }), std::cmp::Reverse(seq))
    });
    found
}

/// The directory's id key, if it is kept: only when nothing of the history was lost (ids under it
/// could otherwise repeat ones issued before). `None`: draw a new one.
pub fn kept_id_key<K>(key: Option<K>, history_lost: bool) -> Option<K> {
    key.filter(|_| !history_lost)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(first: u64, last: u64) -> Held<'static> {
        Held { stream_id: "in@1", first, last }
    }

    #[test]
    fn a_directory_that_counts_in_the_stream_resumes_after_its_own_position() {
        let dir = Directory { stream_id: Some("in@1"), applied: 40 };
        assert_eq!(opening(dir, held(1, 90)), Opening::Resume { after: 40 });
    }

    #[test]
    fn a_new_directory_is_rebuilt_from_a_stream_with_history_and_counts_from_an_empty_one() {
        let new = Directory { stream_id: None, applied: 0 };
        assert_eq!(opening(new, held(5, 90)), Opening::Rebuild { first: 5, last: 90 });
        assert_eq!(opening(new, held(0, 0)), Opening::Empty { after: 0 });
        // Every record expired: the stream's first position is past its last.
        assert_eq!(opening(new, held(91, 90)), Opening::Empty { after: 90 });
    }

    #[test]
    fn a_directory_whose_missed_records_expired_after_someone_folded_them_is_stale() {
        // Applied through 40; the stream starts at 100; another instance's snapshot covers 150.
        assert!(is_stale(40, 100, Some(150)));
        // Nothing expired after it: it catches up as usual.
        assert!(!is_stale(40, 41, Some(150)));
        assert!(!is_stale(40, 30, Some(150)));
        // Expired, but nobody folded them (no snapshot past it): resume after the gap.
        assert!(!is_stale(40, 100, None));
        assert!(!is_stale(40, 100, Some(40)));
    }

    #[test]
    fn a_directory_from_another_stream_keeps_its_state() {
        let other = Directory { stream_id: Some("in@0"), applied: 40 };
        assert_eq!(opening(other, held(1, 3)), Opening::Foreign);
        // A directory from before stream ids were kept.
        let old = Directory { stream_id: None, applied: 40 };
        assert_eq!(opening(old, held(1, 3)), Opening::Foreign);
    }

    #[test]
    fn the_newest_snapshot_with_its_whole_tail_in_the_stream_is_tried_first() {
        // (covers, position): the stream starts at 8, so 'a' and 'b' lack part of their tail.
        let found = vec![(3, 4, 'a'), (10, 11, 'c'), (8, 12, 'd'), (5, 9, 'b'), (12, 20, 'e')];
        let order: Vec<char> = preferred_snapshots(8, found).into_iter().map(|(_, _, s)| s).collect();
        assert_eq!(order, ['e', 'd', 'c', 'b', 'a']);
    }

    #[test]
    fn a_rebuild_without_a_covering_snapshot_says_the_history_is_lost() {
        let first = |after| RebuildFrom::<()>::First { after };
        assert_eq!(rebuild_from(1, None), RebuildPlan { from: first(0), history_lost: false });
        assert_eq!(rebuild_from(7, None), RebuildPlan { from: first(6), history_lost: true });
        let from_snapshot = RebuildFrom::Snapshot { covers: 6, snapshot: () };
        assert_eq!(rebuild_from(7, Some((6, ()))), RebuildPlan { from: from_snapshot, history_lost: false });
        assert_eq!(rebuild_from(9, Some((6, ()))), RebuildPlan { from: from_snapshot, history_lost: true });
        assert_eq!(kept_id_key(Some(3), false), Some(3));
        assert_eq!(kept_id_key(Some(3), true), None);
        assert_eq!(kept_id_key(None::<u8>, false), None);
    }
}
