//! The serve loop's sequencing decisions as a pure unit: which delivered record to apply, skip or
//! read the gap before, when a tick may be appended, when the loop must wake up, and which outputs a
//! rebuild may publish — decided from what it is told (stream records with their positions, stored
//! times and what the consumer still holds, tick append outcomes, readings of a monotonic clock,
//! what the output stream holds), never from a clock or a socket of its own. The loop performs what it says; the property tests below hold it to its promises
//! over random schedules of redelivery, loss, pauses and failed appends.
//!
//! Monotonic time is a [`Duration`] since an origin the caller picks (the serve loop: when it
//! started), so a test can drive it as it likes.

#[cfg(test)]
mod model;
pub mod start;

use std::collections::HashSet;
use std::time::Duration;

use crate::bus::headers::HeaderText;
use crate::core::At;
use crate::store::{OutboxKey, Pending};

/// Deadlines within this many milliseconds of each other fire in one tick.
pub const TICK_GRANULARITY_MS: i64 = 10;

/// A tick not read back within this long is taken as lost, and another may be appended.
pub const TICK_LOST_AFTER: Duration = Duration::from_secs(5);

/// What the loop does with a delivered record, given the last stream position applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// At or below the last applied position: a redelivery, already applied.
    Redelivered,
    /// The next position: apply it.
    Next,
    /// Past the next one: read the positions in between from the stream first, then apply it.
    AfterGap { from: u64, to: u64 },
}

/// Classifies a record at stream position `seq` delivered when `applied` is the last position
/// applied.
pub fn delivery(seq: u64, applied: u64) -> Delivery {
    if seq <= applied {
        Delivery::Redelivered
    } else if seq == applied + 1 {
        Delivery::Next
    } else {
        Delivery::AfterGap { from: applied + 1, to: seq - 1 }
    }
}

/// Which of vigil's own record kinds a record is, as far as timing goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// vigil's own tick: the one in flight came back.
    Tick,
    /// A snapshot record: skipped by the fold, so no sign that the stream is watched.
    Snapshot,
    /// Anything else.
    Other,
}

/// When ticks are appended.
#[derive(Clone, Debug)]
pub struct Ticks {
    tick_every: Duration,
    /// The stored time of the latest record read, and when it was read: the stream's clock.
    stream_clock: Option<(At, Duration)>,
    /// The latest record read left nothing pending: vigil has read all the stream holds.
    level: bool,
    /// When the tick in flight was appended, if one is.
    in_flight: Option<Duration>,
    /// When the latest record (other than a snapshot's) was read.
    last_record: Duration,
    /// No tick before this: the last append failed, and the loop must not spin on it.
    blocked_until: Duration,
}

impl Ticks {
    /// Nothing read yet, at monotonic time `now`.
    pub fn new(tick_every: Duration, now: Duration) -> Ticks {
        Ticks { tick_every, stream_clock: None, level: false, in_flight: None, last_record: now, blocked_until: now }
    }

    /// Now by the stream's clock: the latest stored time plus the time since it was read. `None`
    /// before the first record.
    pub fn stream_now(&self, now: Duration) -> Option<At> {
        self.stream_clock.map(|(stored, read)| stored.plus(now.saturating_sub(read)))
    }

    /// A record was read at `now`: stored at `stored`, with `pending` more in the stream after it.
    pub fn note_record(&mut self, kind: Kind, stored: At, pending: u64, now: Duration) {
        self.stream_clock = Some((stored, now));
        if kind != Kind::Snapshot {
            self.last_record = now;
        }
        self.level = pending == 0;
        if kind == Kind::Tick {
            self.in_flight = None;
        }
    }

    /// Whether a tick is to be appended at `now`, the engine's next deadline being `deadline`: only
    /// once vigil has read all the stream holds, a deadline is due or nothing came for
    /// `tick_every`, no tick is in flight (or it is lost), and no failure blocks it.
    pub fn tick_due(&self, deadline: Option<At>, now: Duration) -> bool {
        let due = match (deadline, self.stream_now(now)) {
            (Some(d), Some(stream_now)) => d <= stream_now,
            _ => false,
        };
        let quiet = now.saturating_sub(self.last_record) >= self.tick_every;
        let free = self.in_flight.is_none_or(|sent| now.saturating_sub(sent) >= TICK_LOST_AFTER);
        self.level && (due || quiet) && free && now >= self.blocked_until
    }

    /// A tick was appended at `now`; it is in flight until it is read back, or lost.
    pub fn tick_sent(&mut self, now: Duration) {
        self.in_flight = Some(now);
    }

    /// The append of the tick in flight failed at `now` (NATS is down): no tick for `tick_every`.
    pub fn tick_failed(&mut self, now: Duration) {
        self.in_flight = None;
        self.blocked_until = now + self.tick_every;
    }

    /// When the loop must wake up on its own to look at ticks again (it also wakes for anything
    /// that arrives): the next deadline by the stream's clock or `tick_every` after the latest
    /// record, whichever is first — but not before a tick in flight is back or lost, a failure's
    /// block is over, or, behind the stream, `tick_every` from now (the records on their way move
    /// time on; looking sooner would only spin).
    pub fn wake(&self, deadline: Option<At>, now: Duration) -> Duration {
        let quiet = self.last_record + self.tick_every;
        let due = match (deadline, self.stream_now(now)) {
            (Some(d), Some(stream_now)) => {
                let wait = d.millis().saturating_sub(stream_now.millis()).max(TICK_GRANULARITY_MS) as u64;
                Some(now + Duration::from_millis(wait))
            }
            _ => None,
        };
        let mut blocked = self.blocked_until;
        if let Some(sent) = self.in_flight {
            blocked = blocked.max(sent + TICK_LOST_AFTER);
        }
        if !self.level {
            blocked = blocked.max(now + self.tick_every);
        }
        due.map_or(quiet, |d| d.min(quiet)).max(blocked)
    }
}

/// What a rebuild knows of the output stream: the `Nats-Msg-Id` of every output it holds, and the
/// time before which it keeps none (its oldest message's).
#[derive(Debug, Default)]
pub struct Published {
    pub ids: HashSet<String>,
    pub kept_since: At,
}

/// Outputs a rebuild decided again, sorted: those to publish now, and the outbox groups left with
/// nothing to wait for (to clear at once).
#[derive(Debug, Default, PartialEq)]
pub struct Sorted {
    pub publish: Vec<Pending>,
    pub settled: Vec<OutboxKey>,
    /// How many were in the output stream already, and how many are older than it keeps.
    pub already: u64,
    pub expired: u64,
}

/// Sorts the outputs a rebuild decided again: one the output stream holds was published before;
/// one older than anything it keeps was published and has expired, or is too old to act on now;
/// the rest go out, in order.
pub fn sort_rebuilt(published: &Published, outputs: Vec<Pending>) -> Sorted {
    let mut sorted = Sorted::default();
    let mut groups: Vec<OutboxKey> = outputs.iter().map(|p| p.key).collect();
    for p in outputs {
        if published.ids.contains(HeaderText::escape(&p.output.id).as_str()) {
            sorted.already += 1;
        } else if p.output.at < published.kept_since {
            sorted.expired += 1;
        } else {
            sorted.publish.push(p);
        }
    }
    let waiting: HashSet<OutboxKey> = sorted.publish.iter().map(|p| p.key).collect();
    groups.sort_unstable();
    groups.dedup();
    groups.retain(|k| !waiting.contains(k));
    sorted.settled = groups;
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Given deliveries in any order, with any repeats and any losses, when the loop applies what
    /// `delivery` says (reading a gap from the stream, in order, before the record after it),
    /// then every position up to the highest delivered is applied exactly once, in order.
    fn apply_schedule(deliveries: &[u64]) -> Vec<u64> {
        let mut applied = Vec::new();
        let mut last = 0;
        for &seq in deliveries {
            match delivery(seq, last) {
                Delivery::Redelivered => {}
                Delivery::Next => applied.push(seq),
                Delivery::AfterGap { from, to } => {
                    assert!(from <= to && from == last + 1 && to + 1 == seq);
                    applied.extend(from..=to);
                    applied.push(seq);
                }
            }
            last = last.max(seq);
        }
        applied
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn every_position_is_applied_once_and_in_order_whatever_the_delivery(
            deliveries in proptest::collection::vec(1u64..60, 0..120)
        ) {
            let applied = apply_schedule(&deliveries);
            let highest = deliveries.iter().copied().max().unwrap_or(0);
            prop_assert_eq!(applied, (1..=highest).collect::<Vec<_>>());
        }
    }

    /// One step of a schedule the tick rules are driven through.
    #[derive(Clone, Debug)]
    enum Step {
        /// Monotonic time moves on (a pause of vigil is a long one).
        Wait(u64),
        /// A record arrives, with this many still pending after it.
        Record { pending: u64, stored_advance: u64 },
        /// The tick in flight comes back.
        TickBack,
        /// The tick in flight's append fails.
        TickFails,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1u64..3_000).prop_map(Step::Wait),
            (0u64..3, 0u64..2_000).prop_map(|(pending, stored_advance)| Step::Record { pending, stored_advance }),
            Just(Step::TickBack),
            Just(Step::TickFails),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1_000))]

        /// Given any schedule of records, pauses and append outcomes, when the loop appends a tick
        /// whenever `tick_due` says so, then no tick is appended while vigil is behind the stream,
        /// none while another is in flight and not yet lost, none within `tick_every` of a failed
        /// append; once level, free, unblocked and quiet for `tick_every`, a tick is due; and when
        /// none is, the loop's wake-up is in the future (it never spins) and no later than the
        /// quiet time when nothing else holds the tick back.
        #[test]
        fn ticks_only_when_level_one_at_a_time_and_never_spinning(
            steps in proptest::collection::vec(step(), 1..80),
            deadline_in in proptest::option::of(0i64..20_000),
        ) {
            let tick_every = Duration::from_secs(1);
            let mut now = Duration::from_secs(100);
            let mut t = Ticks::new(tick_every, now);
            let mut stored = At(1_776_330_000_000);
            let deadline = deadline_in.map(|d| At(stored.millis() + d));
            let (mut in_flight, mut failed_at): (Option<Duration>, Option<Duration>) = (None, None);
            let (mut level, mut last_record) = (false, now);
            for s in steps {
                match s {
                    Step::Wait(ms) => now += Duration::from_millis(ms),
                    Step::Record { pending, stored_advance } => {
                        stored = At(stored.millis() + stored_advance as i64);
                        t.note_record(Kind::Other, stored, pending, now);
                        (level, last_record) = (pending == 0, now);
                    }
                    Step::TickBack => if in_flight.take().is_some() {
                        stored = At(stored.millis() + 1);
                        t.note_record(Kind::Tick, stored, 0, now);
                        (level, last_record) = (true, now);
                    },
                    Step::TickFails => if in_flight.take().is_some() {
                        t.tick_failed(now);
                        failed_at = Some(now);
                    },
                }
                let free = in_flight.is_none_or(|sent| now - sent >= TICK_LOST_AFTER);
                let unblocked = failed_at.is_none_or(|f| now - f >= tick_every);
                let quiet = now - last_record >= tick_every;
                let due = t.tick_due(deadline, now);
                if level && free && unblocked && quiet {
                    prop_assert!(due, "level, free and quiet, yet no tick");
                }
                if due {
                    prop_assert!(level, "a tick while behind the stream");
                    prop_assert!(free, "two ticks in flight");
                    prop_assert!(unblocked, "a tick right after a failure");
                    t.tick_sent(now);
                    in_flight = Some(now);
                } else {
                    let wake = t.wake(deadline, now);
                    prop_assert!(wake > now, "a wake-up that is already past spins the loop");
                    if level && free && unblocked {
                        prop_assert!(wake <= last_record + tick_every, "woken later than the quiet time");
                    }
                }
            }
        }
    }

    fn output(id: String, at: i64) -> crate::core::event::Output {
        use crate::core::event::{OutputBody, Reason, WorkspaceId};
        let body = OutputBody::ProbeRequest { probe_id: format!("{id}:p"), reason: Reason::HeartbeatTimeout };
        crate::core::event::Output { id, workspace: Some(WorkspaceId::parse("ws-a").unwrap()), at: At(at), body }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1_000))]

        /// Given a rebuild's outputs in outbox groups, some in the output stream and some older
        /// than it keeps, then exactly those neither published nor expired go out, in order; a
        /// group is cleared at once exactly when none of its outputs goes out; and every output is
        /// counted once.
        #[test]
        fn a_rebuild_publishes_what_the_output_stream_lacks_and_clears_only_settled_groups(
            outputs in proptest::collection::vec((0u64..6, any::<bool>(), any::<bool>()), 0..40),
        ) {
            let kept_since = 1_000;
            let mut published = Published { kept_since: At(kept_since), ..Published::default() };
            let pending: Vec<Pending> = outputs
                .iter()
                .enumerate()
                .map(|(n, &(group, held, old))| {
                    let id = format!("{group}.{n}");
                    if held {
                        published.ids.insert(id.clone());
                    }
                    Pending { key: OutboxKey { seq: group }, output: output(id, if old { kept_since - 1 } else { kept_since }) }
                })
                .collect();
            let sorted = sort_rebuilt(&published, pending.clone());
            let expected: Vec<&Pending> =
                pending.iter().filter(|p| !published.ids.contains(&p.output.id) && p.output.at.millis() >= kept_since).collect();
            prop_assert_eq!(sorted.publish.iter().collect::<Vec<_>>(), expected);
            prop_assert_eq!(sorted.already + sorted.expired + sorted.publish.len() as u64, pending.len() as u64);
            for group in pending.iter().map(|p| p.key).collect::<std::collections::BTreeSet<_>>() {
                let goes_out = sorted.publish.iter().any(|p| p.key == group);
                prop_assert_eq!(sorted.settled.contains(&group), !goes_out, "group {:?}", group);
            }
        }
    }

    #[test]
    fn a_quiet_level_stream_ticks_after_tick_every_and_not_before() {
        let every = Duration::from_secs(1);
        let start = Duration::from_secs(10);
        let mut t = Ticks::new(every, start);
        t.note_record(Kind::Other, At(1_000), 0, start);
        assert!(!t.tick_due(None, start + every / 2));
        assert_eq!(t.wake(None, start + every / 2), start + every);
        assert!(t.tick_due(None, start + every));
        // A snapshot record read meanwhile is not a sign of life.
        t.note_record(Kind::Snapshot, At(1_500), 0, start + every / 2);
        assert!(t.tick_due(None, start + every));
        // A deadline due by the stream's clock ticks at once, quiet or not.
        t.note_record(Kind::Other, At(2_000), 0, start + every);
        assert!(t.tick_due(Some(At(2_000)), start + every));
        assert!(!t.tick_due(Some(At(2_500)), start + every));
        assert!(t.tick_due(Some(At(2_500)), start + every + Duration::from_millis(500)));
    }
}
