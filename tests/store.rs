//! The store on a real sled database in a temporary directory: what is committed survives, the
//! recovered engine is exactly the fold of the log, and bad disks and bad data are clear errors.

mod support;

use std::path::Path;

use proptest::prelude::*;
use support::streams::{Mix, stream};
use vigil::core::event::{Input, Output};
use vigil::core::{Engine, Policy};
use vigil::store::{LogReader, OpenMode, Store, StoreConfig, StoreError};

fn open(dir: &Path, checkpoint_every: u64) -> (Store, vigil::store::Recovery) {
    let config = StoreConfig { checkpoint_every, ..StoreConfig::default() };
    Store::open(dir, Policy::default(), config, OpenMode::CreateIfMissing).expect("open store")
}

/// Opens the directory with sled directly, to damage it the way a bad disk or another program
/// would. (sled lets go of a dropped database's lock from a background thread, hence the wait.)
fn raw_sled(dir: &Path) -> sled::Db {
    for _ in 0..200 {
        if let Ok(db) = sled::open(dir) {
            return db;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("cannot open {} with sled", dir.display())
}

fn fold(inputs: &[Input]) -> (Engine, Vec<Output>) {
    let mut engine = Engine::new(Policy::default());
    let mut out = Vec::new();
    for i in inputs {
        engine.apply(i, &mut out);
    }
    (engine, out)
}

fn sample(len: usize, seed: u64) -> Vec<Input> {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngSeed, TestRunner};
    let config = Config { rng_seed: RngSeed::Fixed(seed), ..Config::default() };
    let mut runner = TestRunner::new(config);
    let mix = Mix { definitive: true, requests: true, lifecycle: true };
    stream(mix, 30_000, len).new_tree(&mut runner).unwrap().current()
}

#[test]
fn committed_groups_survive_a_reopen_and_fold_to_the_same_engine() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = sample(400, 1);
    let (mut store, recovery) = open(dir.path(), 0);
    assert!(recovery.created);
    let mut handed_out = Vec::new();
    for group in inputs.chunks(37) {
        let committed = store.commit(group, None).unwrap();
        handed_out.extend(committed.outputs.into_iter().map(|p| p.output));
    }
    drop(store); // no checkpoint, no close: everything comes back from the log
    let (store, recovery) = open(dir.path(), 0);
    let (engine, outputs) = fold(&inputs);
    assert_eq!(recovery.replayed, inputs.len() as u64);
    assert_eq!(store.engine().digest(), engine.digest());
    assert_eq!(handed_out, outputs, "the outputs handed out are the fold's");
    let pending: Vec<Output> = recovery.pending.into_iter().map(|p| p.output).collect();
    assert_eq!(pending, outputs, "nothing was acknowledged, so everything is still in the outbox");
}

#[test]
fn pipelined_groups_are_reported_durable_in_order_and_fold_to_the_same_engine() {
    // Given groups submitted without waiting (each applied while the one before it is flushed),
    let dir = tempfile::tempdir().unwrap();
    let inputs = sample(600, 11);
    let (mut store, _) = open(dir.path(), 250);
    let mut tickets = Vec::new();
    let mut reported = Vec::new();
    for (i, group) in inputs.chunks(23).enumerate() {
        tickets.push(store.submit(group, Some(1000 + i as u64)).unwrap());
        assert!(store.in_flight() <= 1, "the engine is never more than one group ahead of the disk");
        reported.extend(store.poll_durable().unwrap());
        // the bus confirms what it published, while later groups are still in flight
        let keys: Vec<_> = reported.iter().flat_map(|c| c.outputs.iter().map(|p| p.key)).collect();
        store.ack(&keys).unwrap();
    }
    // when the last ones are waited for,
    let last = store.wait_durable().unwrap();
    let unconfirmed: Vec<_> = last.iter().flat_map(|c| c.outputs.clone()).collect();
    reported.extend(last);
    assert_eq!(store.in_flight(), 0);
    // then every group was reported once, in order, with the positions it carried,
    let order: Vec<u64> = reported.iter().map(|c| c.ticket).collect();
    assert_eq!(order, tickets);
    assert!(reported.windows(2).all(|w| w[1].first_seq == w[0].last_seq + 1), "groups follow each other");
    let last_stream = 1000 + inputs.chunks(23).count() as u64 - 1;
    assert_eq!((store.stream_seq(), store.durable_stream_seq()), (last_stream, last_stream));
    // and the outputs handed out are the fold's, and a reopened store is the same engine with an
    // outbox holding only what was not confirmed.
    let handed_out: Vec<Output> = reported.iter().flat_map(|c| c.outputs.iter().map(|p| p.output.clone())).collect();
    let (engine, outputs) = fold(&inputs);
    assert_eq!(handed_out, outputs);
    drop(store);
    let (store, recovery) = open(dir.path(), 250);
    assert_eq!(store.engine().digest(), engine.digest());
    assert_eq!(store.stream_seq(), last_stream);
    assert_eq!(recovery.pending, unconfirmed, "only the groups still in flight at the end were never confirmed");
}

#[test]
fn a_new_policy_does_not_reinterpret_what_was_already_received() {
    use vigil::core::At;
    use vigil::core::event::{Heartbeat, InputKind, OutputBody, StateName, WorkspaceId};
    let heartbeat = |at: i64| Input {
        at: At(at),
        sent_at: None,
        id: None,
        stream_seq: None,
        kind: InputKind::Heartbeat(Heartbeat {
            workspace: WorkspaceId::parse("ws-a").unwrap(),
            interval_s: Some(30),
            incarnation: None,
            active_tasks: None,
        }),
    };
    let tick = |at: i64| Input { at: At(at), sent_at: None, id: None, stream_seq: None, kind: InputKind::Tick };
    let went_suspect = |outputs: &[vigil::store::Pending]| {
        outputs.iter().any(|p| matches!(p.output.body, OutputBody::StateChanged { to: Some(StateName::Suspect), .. }))
    };
    let patient = Policy { ttl_min: std::time::Duration::from_secs(600), ttl_factor: 1, ..Policy::default() };
    let strict = Policy { ttl_min: std::time::Duration::from_secs(10), ttl_factor: 3, ..Policy::default() };
    let t0 = 1_781_517_600_000;
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { checkpoint_every: 0, ..StoreConfig::default() };

    // Given a heartbeat and two quiet minutes received under a patient policy (silence allowed for
    // ten minutes): the workspace stayed Alive, and nothing was sent out,
    let (mut store, _) = Store::open(dir.path(), patient.clone(), config.clone(), OpenMode::CreateIfMissing).unwrap();
    store.commit(&[heartbeat(t0)], None).unwrap();
    let quiet = store.commit(&[tick(t0 + 120_000)], None).unwrap();
    assert!(!went_suspect(&quiet.outputs));
    drop(store); // a crash: both are only in the log tail

    // when vigil comes back under a strict policy (silence allowed for 90 s),
    let (mut store, recovery) = Store::open(dir.path(), strict.clone(), config.clone(), OpenMode::MustExist).unwrap();
    // then the tail is recovered under the policy it was received under — the workspace is Alive,
    // as it was, not silently Suspect without the state change ever having been sent —
    assert_eq!(recovery.policy_changed_at, Some(3), "the new policy applies from the next input on");
    assert_eq!(store.engine().view("ws-a").unwrap().state, StateName::Alive);
    // and from the next input on the strict policy applies, to that workspace too, in the open.
    let next = store.commit(&[tick(t0 + 121_000)], None).unwrap();
    assert!(went_suspect(&next.outputs), "121 s of silence exceed the strict policy's 90 s");
    let reader_policy = |dir: &Path| LogReader::open(dir).unwrap().policy().unwrap();
    let digest = store.engine().digest();
    drop(store);

    assert_eq!(reader_policy(dir.path()), Some((strict.clone(), 3)));
    let (store, recovery) = Store::open(dir.path(), strict, config, OpenMode::MustExist).unwrap();
    assert_eq!(recovery.policy_changed_at, None, "the same policy again changes nothing");
    assert_eq!(recovery.checkpoint_seq, 2, "the change sealed the old policy's inputs with a checkpoint");
    assert_eq!(store.engine().digest(), digest, "and the recovered engine is the one that ran");
}

#[test]
fn inspecting_a_directory_writes_nothing_even_when_it_does_not_record_its_policy() {
    // Given a directory from before vigil stored its policy,
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), 0);
    store.commit(&sample(50, 12), None).unwrap();
    drop(store);
    let db = raw_sled(dir.path());
    db.remove(b"mpolicy").unwrap();
    db.remove(b"mpolicysince").unwrap();
    db.flush().unwrap();
    drop(db);
    // when it is opened for inspection under some policy,
    let other = Policy { debounce: std::time::Duration::from_secs(7), ..Policy::default() };
    let config = StoreConfig { checkpoint_every: 0, ..StoreConfig::default() };
    let (store, recovery) = Store::open(dir.path(), other, config, OpenMode::Inspect).unwrap();
    assert_eq!(recovery.policy_changed_at, None);
    drop(store);
    // then it still records no policy: the service that really ran it decides that.
    assert_eq!(LogReader::open(dir.path()).unwrap().policy().unwrap(), None);
}

#[test]
fn a_checkpoint_plus_the_log_tail_is_the_same_engine() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = sample(500, 2);
    let (mut store, _) = open(dir.path(), 0);
    store.commit(&inputs[..300], None).unwrap();
    store.checkpoint().unwrap();
    store.commit(&inputs[300..], None).unwrap();
    drop(store);
    let (store, recovery) = open(dir.path(), 0);
    assert_eq!(recovery.checkpoint_seq, 300);
    assert_eq!(recovery.replayed, 200);
    assert_eq!(store.engine().digest(), fold(&inputs).0.digest());
}

#[test]
fn acknowledged_outputs_leave_the_outbox_and_the_stream_position_persists() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = sample(200, 3);
    let (mut store, _) = open(dir.path(), 0);
    let first = store.commit(&inputs[..100], Some(4100)).unwrap();
    let second = store.commit(&inputs[100..], Some(4242)).unwrap();
    assert!(!first.outputs.is_empty() && !second.outputs.is_empty(), "the sample causes outputs in both groups");
    // The bus confirmed everything the first group caused (the outbox clears whole groups).
    store.ack(&first.outputs.iter().map(|p| p.key).collect::<Vec<_>>()).unwrap();
    store.close().unwrap();
    let (store, recovery) = open(dir.path(), 0);
    assert_eq!(recovery.pending, second.outputs);
    assert_eq!(store.stream_seq(), 4242);
}

#[test]
fn automatic_checkpoints_keep_the_tail_short() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = sample(450, 4);
    let (mut store, _) = open(dir.path(), 100);
    for group in inputs.chunks(50) {
        store.commit(group, None).unwrap();
    }
    drop(store);
    let (store, recovery) = open(dir.path(), 100);
    assert_eq!(recovery.checkpoint_seq, 400);
    assert_eq!(recovery.replayed, 50);
    assert_eq!(store.engine().digest(), fold(&inputs).0.digest());
}

#[test]
fn compaction_drops_old_segments_without_changing_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = sample(300, 5);
    let (mut store, _) = open(dir.path(), 0);
    for group in inputs.chunks(100) {
        store.commit(group, None).unwrap();
    }
    store.checkpoint().unwrap();
    let cutoff = inputs[150].at;
    let dropped = store.compact(cutoff).unwrap();
    assert_eq!(dropped, 100, "only the segment entirely before the cutoff goes");
    assert_eq!(store.first_seq(), 101);
    drop(store);
    let (store, _) = open(dir.path(), 0);
    assert_eq!(store.engine().digest(), fold(&inputs).0.digest());
    drop(store);
    let reader = LogReader::open(dir.path()).unwrap();
    assert_eq!(reader.first_seq(), 101);
    let exported: Vec<Input> = reader.records(1).map(|r| r.unwrap().1).collect();
    assert_eq!(exported, inputs[100..]);
}

#[test]
fn the_log_reads_back_exactly_what_was_committed() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = sample(250, 6);
    let (mut store, _) = open(dir.path(), 0);
    for group in inputs.chunks(33) {
        store.commit(group, None).unwrap();
    }
    drop(store);
    let reader = LogReader::open(dir.path()).unwrap();
    let all: Vec<(u64, Input)> = reader.records(1).map(Result::unwrap).collect();
    assert_eq!(all.iter().map(|(s, _)| *s).collect::<Vec<_>>(), (1..=250).collect::<Vec<_>>());
    assert_eq!(all.into_iter().map(|(_, i)| i).collect::<Vec<_>>(), inputs);
    let from_100: Vec<u64> = reader.records(100).map(|r| r.unwrap().0).collect();
    assert_eq!(from_100.first(), Some(&100));
}

// ---- bad disks and bad data --------------------------------------------------------------------

#[test]
fn a_directory_of_someone_elses_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a database").unwrap();
    let err =
        Store::open(dir.path(), Policy::default(), StoreConfig::default(), OpenMode::CreateIfMissing).err().unwrap();
    assert!(matches!(err, StoreError::Foreign(_)), "{err}");
    assert!(dir.path().join("notes.txt").exists(), "and left untouched");
}

#[test]
fn another_programs_sled_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = raw_sled(dir.path());
        db.insert(b"user:1", b"alice").unwrap();
        db.flush().unwrap();
    }
    let err =
        Store::open(dir.path(), Policy::default(), StoreConfig::default(), OpenMode::CreateIfMissing).err().unwrap();
    assert!(matches!(err, StoreError::Foreign(_)), "{err}");
}

#[test]
fn a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path(), 0).0.close().unwrap();
    {
        let db = raw_sled(dir.path());
        let mut v = b"vigil-store".to_vec();
        v.extend_from_slice(&99u32.to_be_bytes());
        db.insert(b"mformat", v).unwrap();
        db.flush().unwrap();
    }
    let err =
        Store::open(dir.path(), Policy::default(), StoreConfig::default(), OpenMode::CreateIfMissing).err().unwrap();
    assert!(matches!(err, StoreError::NewerFormat { found: 99, .. }), "{err}");
}

#[test]
fn a_corrupted_log_record_is_reported_with_its_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = sample(30, 7);
    let (mut store, _) = open(dir.path(), 0);
    store.commit(&inputs[..10], None).unwrap();
    store.commit(&inputs[10..], None).unwrap();
    drop(store);
    {
        let db = raw_sled(dir.path());
        let key = [&[b'l'][..], &11u64.to_be_bytes()].concat();
        let mut segment = db.get(&key).unwrap().unwrap().to_vec();
        // The first record starts after the 12-byte header and its 4-byte length.
        segment[16] = 0xc1;
        db.insert(&key, segment).unwrap();
        db.flush().unwrap();
    }
    let err =
        Store::open(dir.path(), Policy::default(), StoreConfig::default(), OpenMode::CreateIfMissing).err().unwrap();
    assert!(matches!(err, StoreError::CorruptLog { seq: 11, .. }), "{err}");
    let reader = LogReader::open(dir.path()).unwrap();
    let first_error = reader.records(1).find_map(Result::err).unwrap();
    assert!(matches!(first_error, StoreError::CorruptLog { seq: 11, .. }), "{first_error}");
}

#[test]
fn a_missing_or_unusable_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let err = Store::open(&missing, Policy::default(), StoreConfig::default(), OpenMode::MustExist).err().unwrap();
    assert!(matches!(err, StoreError::Missing(_)), "{err}");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let err = Store::open(&file, Policy::default(), StoreConfig::default(), OpenMode::CreateIfMissing).err().unwrap();
    assert!(matches!(err, StoreError::NotADirectory(_)), "{err}");
    // /proc refuses new directories even to root: the store cannot be created there.
    let err = Store::open(
        Path::new("/proc/vigil-data"),
        Policy::default(),
        StoreConfig::default(),
        OpenMode::CreateIfMissing,
    )
    .err()
    .unwrap();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
}

#[test]
fn a_directory_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, _) = open(dir.path(), 0);
    let err =
        Store::open(dir.path(), Policy::default(), StoreConfig::default(), OpenMode::CreateIfMissing).err().unwrap();
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever the stream, the group sizes, the checkpoints and the point where the process
    /// stops without closing the store, reopening gives the engine a full replay of the committed
    /// log gives.
    #[test]
    fn recovery_equals_a_full_replay(
        inputs in stream(Mix { definitive: true, requests: true, lifecycle: true }, 60_000, 1..200),
        groups in prop::collection::vec(1usize..40, 1..20),
        checkpoints in prop::collection::vec(any::<bool>(), 20),
        stop in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path(), 0);
        let stop = stop.index(inputs.len() + 1);
        let mut done = 0;
        for (g, size) in groups.iter().cycle().enumerate() {
            if done >= stop {
                break;
            }
            let end = (done + size).min(stop);
            store.commit(&inputs[done..end], None).unwrap();
            done = end;
            if checkpoints[g % checkpoints.len()] {
                store.checkpoint().unwrap();
            }
        }
        drop(store);
        let (store, _) = open(dir.path(), 0);
        prop_assert_eq!(store.engine().digest(), fold(&inputs[..stop]).0.digest());
        prop_assert_eq!(store.engine().seq(), stop as u64);
    }
}

/// Commits a sample, closes, and waits for sled to let go of the directory; returns the engine's
/// digest, what a reopen must give back.
fn committed_and_closed(dir: &Path) -> Vec<u8> {
    let (mut store, _) = open(dir, 0);
    for group in sample(300, 5).chunks(50) {
        store.commit(group, None).unwrap();
    }
    let digest = store.engine().digest();
    store.close().unwrap();
    drop(raw_sled(dir)); // sled has let go of its lock
    digest
}

fn sled_snapshots(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut snaps: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("snap."))
        .collect();
    snaps.sort();
    snaps
}

#[test]
fn a_snapshot_sled_never_finished_does_not_make_the_directory_unopenable() {
    // Given a directory where sled, on a full disk, began a snapshot it never finished (an empty
    // `.generating` file, which sled 0.34 then reads as its newest snapshot and calls corrupt),
    let dir = tempfile::tempdir().unwrap();
    let digest = committed_and_closed(dir.path());
    let newest = sled_snapshots(dir.path()).pop().expect("sled keeps a snapshot");
    let name = newest.file_name().unwrap().to_string_lossy().into_owned();
    let incomplete = dir.path().join(format!("{name}F.generating"));
    std::fs::write(&incomplete, b"").unwrap();
    // when it is opened, then the leftover is removed, the store is what it was, and it says so.
    let (store, recovery) = open(dir.path(), 0);
    assert_eq!(store.engine().digest(), digest);
    assert!(!incomplete.exists());
    assert!(recovery.repairs.iter().any(|r| r.contains("never finished")), "{:?}", recovery.repairs);
}

#[test]
fn an_unreadable_sled_snapshot_is_set_aside_and_rebuilt_from_sleds_log() {
    // Given one flipped byte in sled's snapshot,
    let dir = tempfile::tempdir().unwrap();
    let digest = committed_and_closed(dir.path());
    let snapshot = sled_snapshots(dir.path()).pop().expect("sled keeps a snapshot");
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&snapshot, &bytes).unwrap();
    // when the directory is opened, then sled rebuilds from its log, the store is what it was,
    // the unreadable copy is kept for whoever looks, and the repair is reported with the file.
    let (store, recovery) = open(dir.path(), 0);
    assert_eq!(store.engine().digest(), digest);
    let kept = snapshot.with_file_name(format!("unreadable-{}", snapshot.file_name().unwrap().to_string_lossy()));
    assert!(kept.exists());
    let said = recovery.repairs.join("\n");
    assert!(said.contains(&snapshot.display().to_string()) && said.contains("rebuilt"), "{said}");
}

#[test]
fn a_directory_sled_cannot_rebuild_says_which_file_and_how_to_recover() {
    // Given a flipped snapshot and a log whose first segment is overwritten,
    let dir = tempfile::tempdir().unwrap();
    committed_and_closed(dir.path());
    let snapshot = sled_snapshots(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&snapshot, &bytes).unwrap();
    let db = dir.path().join("db");
    let mut log = std::fs::read(&db).unwrap();
    for b in log.iter_mut().take(4096) {
        *b = 0xa5;
    }
    std::fs::write(&db, &log).unwrap();
    // when it is opened, then the error names the snapshot and says how to recover,
    let refused = |mode| {
        Store::open(dir.path(), Policy::default(), StoreConfig::default(), mode)
            .err()
            .expect("a directory sled cannot read is refused")
    };
    let err = refused(OpenMode::MustExist);
    let text = err.to_string();
    assert!(matches!(err, StoreError::Damaged { .. }), "{text}");
    let name = snapshot.file_name().unwrap().to_string_lossy().into_owned();
    assert!(text.contains(&name) && text.contains("rebuilt from the input stream"), "{text}");
    // and a service restarted on it does not take what sled salvaged for a new directory.
    assert!(matches!(refused(OpenMode::CreateIfMissing), StoreError::Damaged { .. }));
}

#[test]
fn a_vigil_directory_whose_database_is_lost_is_damaged_never_new() {
    // sled opens what is left of a lost or emptied log as an empty database; without the marker
    // vigil wrote beside it, that looked like a new directory, and every state was lost silently.
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 3] = [
        ("the log emptied", |dir| std::fs::write(dir.join("db"), b"").unwrap()),
        ("the log deleted", |dir| std::fs::remove_file(dir.join("db")).unwrap()),
        ("every sled file deleted", |dir| {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.file_name().unwrap() != "vigil-data-dir" {
                    if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) }.unwrap();
                }
            }
        }),
    ];
    for (what, damage) in damages {
        // Given a directory a service wrote to, with fewer writes than sled needs for a snapshot,
        let dir = tempfile::tempdir().unwrap();
        // (sled's own open would write a snapshot, so the directory is not reopened before),
        let (mut store, _) = open(dir.path(), 0);
        store.commit(&sample(5, 9), None).unwrap();
        drop(store);
        assert!(sled_snapshots(dir.path()).is_empty(), "the story needs a directory without a sled snapshot");
        // when its database is lost, then opening it says it is damaged, even for a service.
        damage(dir.path());
        for mode in [OpenMode::MustExist, OpenMode::CreateIfMissing] {
            let err = Store::open(dir.path(), Policy::default(), StoreConfig::default(), mode).err();
            assert!(matches!(err, Some(StoreError::Damaged { .. })), "{what}, {mode:?}: {err:?}");
        }
    }
}

#[test]
fn a_directory_of_the_previous_format_is_read_and_marked_when_a_service_opens_it() {
    let dir = tempfile::tempdir().unwrap();
    let digest = committed_and_closed(dir.path());
    // Given a format 1 directory, written before directories were marked,
    {
        let db = raw_sled(dir.path());
        let mut v = b"vigil-store".to_vec();
        v.extend_from_slice(&1u32.to_be_bytes());
        db.insert(b"mformat", v).unwrap();
        db.flush().unwrap();
    }
    std::fs::remove_file(dir.path().join("vigil-data-dir")).unwrap();
    // inspecting it changes nothing,
    let (store, _) = Store::open(dir.path(), Policy::default(), StoreConfig::default(), OpenMode::Inspect).unwrap();
    assert_eq!(store.engine().digest(), digest);
    drop(store);
    assert!(!dir.path().join("vigil-data-dir").exists());
    drop(raw_sled(dir.path()));
    // and a service reads it as it is, then marks it and records this build's format.
    let (store, _) = open(dir.path(), 0);
    assert_eq!(store.engine().digest(), digest);
    drop(store);
    assert!(dir.path().join("vigil-data-dir").exists());
    let db = raw_sled(dir.path());
    let format = db.get(b"mformat").unwrap().unwrap();
    assert_eq!(&format[format.len() - 4..], &vigil::store::FORMAT.to_be_bytes());
}

fn event(at: i64, kind: vigil::core::event::InputKind) -> Input {
    Input { at: vigil::core::At(1_780_000_000_000 + at), sent_at: None, id: None, stream_seq: None, kind }
}

fn lifecycle(at: i64, ws: &str, phase: vigil::core::event::LifecyclePhase) -> Input {
    let workspace = vigil::core::WorkspaceId::parse(ws).unwrap();
    event(at, vigil::core::event::InputKind::Lifecycle(vigil::core::event::Lifecycle { workspace, phase }))
}

fn beat(at: i64, ws: &str) -> Input {
    let workspace = vigil::core::WorkspaceId::parse(ws).unwrap();
    event(
        at,
        vigil::core::event::InputKind::Heartbeat(vigil::core::event::Heartbeat {
            workspace,
            interval_s: None,
            incarnation: None,
            active_tasks: None,
        }),
    )
}

#[test]
fn a_tombstone_on_disk_is_read_before_the_input_that_needs_it_and_a_bad_one_stops_the_group() {
    use vigil::core::event::{LifecyclePhase::*, OutputBody, Reason};
    // Given a workspace removed and checkpointed (its tombstone is on disk, not in memory),
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), 0);
    store.commit(&[lifecycle(0, "ws-gone", Created), lifecycle(1, "ws-gone", Removed)], None).unwrap();
    store.checkpoint().unwrap();
    drop(store);
    // when a zombie's heartbeat arrives after a restart, then it is turned away for the tombstone,
    let (mut store, _) = open(dir.path(), 0);
    let committed = store.commit(&[beat(2, "ws-live"), beat(3, "ws-gone"), beat(4, "ws-live")], None).unwrap();
    let reasons: Vec<_> = committed.outputs.iter().map(|p| p.output.body.reason()).collect();
    assert_eq!(reasons, [Reason::FirstSeen, Reason::Removed], "{:?}", committed.outputs);
    assert!(matches!(committed.outputs[1].output.body, OutputBody::Suppressed { .. }));
    store.checkpoint().unwrap();
    drop(store);
    // and a tombstone that cannot be read stops the group with an error naming it, not a guess.
    {
        let db = raw_sled(dir.path());
        db.insert(b"tws-gone", b"\xc1garbage".to_vec()).unwrap();
        db.flush().unwrap();
    }
    let (mut store, _) = open(dir.path(), 0);
    let err = store.commit(&[beat(5, "ws-gone")], None).unwrap_err();
    assert!(matches!(&err, StoreError::CorruptRecord { what: "tombstone", key, .. } if key == "ws-gone"), "{err}");
}
