//! A model of vigil over its streams — start, apply, flush, publish, confirm — driven through
//! random schedules of delivery (repeats, reordering, loss), crashes at any step, lost data
//! directories, snapshot records and purges of the stream's early records, deciding with the very
//! rules the serve loop performs ([`super::delivery`], [`super::start`], [`super::sort_rebuilt`]).
//!
//! The fold is a toy with the real fold's id rules: an output's id derives from its record's stream
//! position, a restart's from a count the state carries (so a rebuild that lost the count would
//! repeat ids). The promises checked: whatever the schedule, once vigil has caught up its state is
//! the fold of every record once; the output stream holds every output decided, under its one id;
//! and a rebuild never publishes an output the output stream already holds.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use proptest::prelude::*;

use super::start::{self, Directory, Held, Opening, RebuildFrom};
use super::{Delivery, Published, delivery, sort_rebuilt};
use crate::core::At;
use crate::core::event::{Output, OutputBody, Reason, WorkspaceId};
use crate::store::{OutboxKey, Pending};

const STREAM: &str = "in@1";

#[derive(Clone, Debug, Default, PartialEq)]
struct State {
    inputs: u64,
    restarts: u64,
}

/// The toy fold: applies the input at stream position `seq`; the ids of what it decides.
fn fold(state: &mut State, seq: u64) -> Vec<String> {
    state.inputs += 1;
    let mut ids = Vec::new();
    if seq.is_multiple_of(3) {
        ids.push(format!("{seq}.0"));
    }
    if seq.is_multiple_of(5) {
        state.restarts += 1;
        ids.push(format!("ws-a:{}", state.restarts));
    }
    ids
}

/// Outbox groups (keyed by the position of the record that decided them) and their unconfirmed ids.
type Outbox = BTreeMap<u64, Vec<String>>;

#[derive(Clone, Debug)]
enum Record {
    Input,
    /// Covers the records through `covers`, with the state and unconfirmed outbox after them.
    Snapshot {
        covers: u64,
        state: State,
        outbox: Outbox,
    },
}

/// What a data directory holds (on disk, or in the running vigil's memory before a flush).
#[derive(Clone, Debug, Default)]
struct Dir {
    stream_id: Option<&'static str>,
    applied: u64,
    state: State,
    outbox: Outbox,
    rebuild_through: u64,
}

/// A running vigil: its directory as applied (flushed or not) and the publisher's queues.
#[derive(Debug)]
struct Running {
    mem: Dir,
    /// What the output stream held when the rebuild under way started.
    published: Option<Published>,
    released: VecDeque<(u64, String, bool)>,
    sent: VecDeque<(u64, String)>,
}

#[derive(Debug, Default)]
struct World {
    stream: BTreeMap<u64, Record>,
    last: u64,
    /// The positions of every input ever appended (purged or not).
    inputs: BTreeSet<u64>,
    dir: Option<Dir>,
    vigil: Option<Running>,
    consumer_acked: u64,
    /// The output stream: every id it holds, and how often each was published.
    outputs: HashMap<String, u32>,
    /// Ids a rebuild published although the output stream held them.
    republished_by_rebuild: Vec<String>,
}

#[derive(Clone, Debug)]
enum Step {
    Produce(u8),
    /// A delivery near the applied position: `0..=3` a redelivery, above a record further on.
    Deliver(u8),
    Flush,
    Publish,
    Confirm,
    Snapshot,
    Purge,
    Crash,
    LoseDirectory,
    Start,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1u8..4).prop_map(Step::Produce),
        8 => (0u8..8).prop_map(Step::Deliver),
        2 => Just(Step::Flush),
        4 => Just(Step::Publish),
        3 => Just(Step::Confirm),
        2 => Just(Step::Snapshot),
        2 => Just(Step::Purge),
        2 => Just(Step::Crash),
        1 => Just(Step::LoseDirectory),
        2 => Just(Step::Start),
    ]
}

fn pending(group: u64, id: &str) -> Pending {
    let body = OutputBody::ProbeRequest { probe_id: format!("{id}:p"), reason: Reason::HeartbeatTimeout };
    let output = Output { id: id.to_string(), workspace: Some(WorkspaceId::parse("ws-a").unwrap()), at: At(1), body };
    Pending { key: OutboxKey { seq: group }, output }
}

impl World {
    fn first(&self) -> u64 {
        self.stream.keys().next().copied().unwrap_or(self.last + 1)
    }

    fn run(&mut self, step: &Step) {
        match *step {
            Step::Produce(n) => {
                for _ in 0..n {
                    self.last += 1;
                    self.stream.insert(self.last, Record::Input);
                    self.inputs.insert(self.last);
                }
            }
            Step::Deliver(offset) => self.deliver(offset),
            Step::Flush => {
                if let Some(v) = &self.vigil {
                    self.dir = Some(v.mem.clone());
                }
            }
            Step::Publish => {
                if let Some(v) = self.vigil.as_mut()
                    && let Some((group, id, by_rebuild)) = v.released.pop_front()
                {
                    let times = self.outputs.entry(id.clone()).or_default();
                    if by_rebuild && *times > 0 {
                        self.republished_by_rebuild.push(id.clone());
                    }
                    *times += 1;
                    v.sent.push_back((group, id));
                }
            }
            Step::Confirm => {
                if let Some(v) = self.vigil.as_mut()
                    && let Some((group, id)) = v.sent.pop_front()
                    && let Some(ids) = v.mem.outbox.get_mut(&group)
                {
                    ids.retain(|i| *i != id);
                    if ids.is_empty() {
                        v.mem.outbox.remove(&group);
                    }
                }
            }
            Step::Snapshot => {
                if let Some(v) = self.vigil.as_ref().filter(|v| v.mem.rebuild_through == 0) {
                    let record = Record::Snapshot {
                        covers: v.mem.applied,
                        state: v.mem.state.clone(),
                        outbox: v.mem.outbox.clone(),
                    };
                    self.last += 1;
                    self.stream.insert(self.last, record);
                }
            }
            Step::Purge => {
                // Retention removes records a snapshot covers — never any the directory still
                // needs to read (records that expire unread are lost inputs, not sequencing).
                let covered = self.stream.values().filter_map(|r| match r {
                    Record::Snapshot { covers, .. } => Some(*covers),
                    Record::Input => None,
                });
                let mut upto = covered.max().unwrap_or(0);
                if let Some(dir) = &self.dir {
                    upto = upto.min(dir.applied);
                }
                if let Some(v) = &self.vigil {
                    upto = upto.min(v.mem.applied);
                }
                self.stream.retain(|&seq, _| seq > upto);
            }
            Step::Crash => self.vigil = None,
            Step::LoseDirectory => {
                self.vigil = None;
                self.dir = None;
            }
            Step::Start => self.start(),
        }
    }

    /// vigil starts (if it is not running): takes up the log where [`start::opening`] says.
    fn start(&mut self) {
        if self.vigil.is_some() {
            return;
        }
        let dir = self.dir.clone().unwrap_or_default();
        let held = Held { stream_id: STREAM, first: self.first(), last: self.last };
        let mut mem = match start::opening(Directory { stream_id: dir.stream_id, applied: dir.applied }, held) {
            Opening::Resume { after } => Dir { applied: after, ..dir },
            Opening::Empty { after } => Dir { stream_id: Some(STREAM), applied: after, ..Dir::default() },
            Opening::Rebuild { first, last } => {
                let found = self
                    .stream
                    .iter()
                    .filter_map(|(&seq, r)| match r {
                        Record::Snapshot { covers, state, outbox } => {
                            Some((*covers, seq, (state.clone(), outbox.clone())))
                        }
                        Record::Input => None,
                    })
                    .collect();
                let latest =
                    start::preferred_snapshots(first, found).into_iter().next().map(|(covers, _, s)| (covers, s));
                let plan = start::rebuild_from(first, latest);
                assert!(!plan.history_lost, "the model purges only what a snapshot covers");
                let mut mem = Dir { stream_id: Some(STREAM), rebuild_through: last, ..Dir::default() };
                match plan.from {
                    RebuildFrom::Snapshot { covers, snapshot: (state, outbox) } => {
                        (mem.applied, mem.state, mem.outbox) = (covers, state, outbox);
                    }
                    RebuildFrom::First { after } => mem.applied = after,
                }
                mem
            }
            Opening::Foreign => unreachable!("the model's stream is never declared again"),
        };
        let published = (mem.rebuild_through > 0)
            .then(|| Published { ids: self.outputs.keys().cloned().collect(), kept_since: At(0) });
        let held: Vec<Pending> =
            mem.outbox.iter().flat_map(|(&group, ids)| ids.iter().map(move |id| pending(group, id))).collect();
        let mut vigil = Running { mem: Dir::default(), published, released: VecDeque::new(), sent: VecDeque::new() };
        vigil.release(&mut mem, None, held);
        vigil.mem = mem;
        self.vigil = Some(vigil);
    }

    /// A record delivered: applied as [`delivery`] says (a rebuild reads the stream in order).
    fn deliver(&mut self, offset: u8) {
        let Some(v) = self.vigil.as_mut() else { return };
        let applied = v.mem.applied;
        let seq = if v.mem.rebuild_through > 0 { applied + 1 } else { (applied + u64::from(offset)).saturating_sub(3) };
        if seq == 0 || seq > self.last || !self.stream.contains_key(&seq) {
            return;
        }
        match delivery(seq, applied) {
            Delivery::Redelivered => {}
            Delivery::Next => v.apply(&self.stream, seq),
            Delivery::AfterGap { from, to } => {
                for s in from..=to {
                    v.apply(&self.stream, s);
                }
                v.apply(&self.stream, seq);
            }
        }
        if v.mem.rebuild_through == 0 {
            self.consumer_acked = self.consumer_acked.max(v.mem.applied);
        }
    }

    /// Starts vigil if it is down, reads every record and publishes and confirms everything.
    fn catch_up(&mut self) {
        self.start();
        while self.vigil.as_ref().is_some_and(|v| v.mem.applied < self.last) {
            self.deliver(4);
        }
        while self.vigil.as_ref().is_some_and(|v| !v.released.is_empty() || !v.sent.is_empty()) {
            self.run(&Step::Publish);
            self.run(&Step::Confirm);
        }
    }
}

impl Running {
    fn apply(&mut self, stream: &BTreeMap<u64, Record>, seq: u64) {
        let mut mem = std::mem::take(&mut self.mem);
        assert_eq!(seq, mem.applied + 1, "applied out of order");
        mem.applied = seq;
        if let Some(Record::Input) = stream.get(&seq) {
            let decided: Vec<Pending> = fold(&mut mem.state, seq).iter().map(|id| pending(seq, id)).collect();
            mem.outbox.insert(seq, decided.iter().map(|p| p.output.id.clone()).collect());
            self.release(&mut mem, Some(seq), decided);
        }
        if mem.rebuild_through > 0 && mem.applied >= mem.rebuild_through {
            mem.rebuild_through = 0;
            self.published = None;
        }
        self.mem = mem;
    }

    /// What the serve loop's `publishable` does: a rebuild's outputs sorted by [`sort_rebuilt`].
    fn release(&mut self, mem: &mut Dir, seq: Option<u64>, outputs: Vec<Pending>) {
        let rebuild = self.published.as_ref().filter(|_| seq.is_none_or(|s| s <= mem.rebuild_through));
        let outputs = match rebuild {
            Some(published) => {
                let sorted = sort_rebuilt(published, outputs);
                for key in sorted.settled {
                    mem.outbox.remove(&key.seq);
                }
                sorted.publish
            }
            None => outputs,
        };
        let by_rebuild = rebuild.is_some();
        self.released.extend(outputs.into_iter().map(|p| (p.key.seq, p.output.id, by_rebuild)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Given any schedule of records, deliveries, flushes, publishes, confirmations, snapshots,
    /// purges, crashes and lost directories, when vigil is finally left to catch up, then its state
    /// is the fold of every record once, the output stream holds exactly the outputs that fold
    /// decides, and no rebuild published one the output stream held already.
    #[test]
    fn whatever_crashes_and_deliveries_every_decision_is_published_under_its_one_id(
        steps in proptest::collection::vec(step(), 1..120),
    ) {
        let mut world = World::default();
        world.start();
        for s in &steps {
            world.run(s);
        }
        world.catch_up();

        let mut expected_state = State::default();
        let mut expected_ids = BTreeSet::new();
        for &seq in &world.inputs {
            expected_ids.extend(fold(&mut expected_state, seq));
        }
        let vigil = world.vigil.as_ref().expect("caught up");
        prop_assert_eq!(&vigil.mem.state, &expected_state);
        let held: BTreeSet<String> = world.outputs.keys().cloned().collect();
        prop_assert_eq!(held, expected_ids);
        prop_assert!(world.republished_by_rebuild.is_empty(), "a rebuild published again: {:?}", world.republished_by_rebuild);
    }
}
