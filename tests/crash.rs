//! Crash recovery, for real: a child `vigil` process commits a log to a data directory and is
//! killed with SIGKILL at random (seeded) moments, then restarted on the same directory until it
//! finishes. Checked after every restart and at the end:
//!
//! - every input the child reported durable is in the log (it recovers at least that far), and the
//!   log ends up exactly the input, in order, each input once;
//! - the recovered engine equals a fresh replay of the log prefix it holds;
//! - no output id is ever handed out twice with different content.
//!
//! `VIGIL_CRASH_KILLS` sets how many kills (default 24); `make soak` runs many more.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngSeed, TestRunner};
use support::rng::Rng;
use support::streams::{Mix, stream};
use vigil::core::event::Input;
use vigil::core::wire;
use vigil::core::{Engine, Policy};

const SEED: u64 = 0x5EED_C4A5;

fn inputs(len: usize) -> Vec<Input> {
    let mut runner = TestRunner::new(Config { rng_seed: RngSeed::Fixed(SEED), ..Config::default() });
    stream(Mix { definitive: true, requests: true, lifecycle: true }, 20_000, len)
        .new_tree(&mut runner)
        .unwrap()
        .current()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest_of(inputs: &[Input]) -> String {
    let mut engine = Engine::new(Policy::default());
    let mut out = Vec::new();
    for i in inputs {
        engine.apply(i, &mut out);
    }
    hex(&engine.digest())
}

/// What one run of the child printed.
#[derive(Default)]
struct Run {
    recovered: Option<(usize, String)>,
    durable: Vec<u64>,
    outputs: Vec<(String, String)>,
    digest: Option<String>,
}

/// When to kill the child: a delay counted from its start (possibly during recovery), or from the
/// moment it reports having recovered (so the kill lands among group commits).
#[derive(Clone, Copy)]
enum Kill {
    FromStart(Duration),
    AfterRecovery(Duration),
}

fn run_child(data: &Path, input: &Path, kill: Option<Kill>) -> (Run, bool) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["debug-ingest", "--group", "5", "--checkpoint-every", "400", "--data-dir"])
        .arg(data)
        .arg("--input")
        .arg(input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vigil");
    let stdout = child.stdout.take().unwrap();
    let (recovered_tx, recovered_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut run = Run::default();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut parts = line.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("recovered"), Some(n), Some(d)) => {
                    run.recovered = Some((n.parse().unwrap(), d.to_string()));
                    recovered_tx.send(()).ok();
                }
                (Some("durable"), Some(n), None) => run.durable.push(n.parse().unwrap()),
                (Some("out"), Some(id), Some(json)) => run.outputs.push((id.to_string(), json.to_string())),
                (Some("digest"), Some(d), None) => run.digest = Some(d.to_string()),
                _ => panic!("unexpected line from the child: {line}"),
            }
        }
        run
    });
    let killed = match kill {
        Some(kill) => {
            match kill {
                Kill::FromStart(delay) => std::thread::sleep(delay),
                Kill::AfterRecovery(delay) => {
                    recovered_rx.recv_timeout(Duration::from_secs(60)).ok();
                    std::thread::sleep(delay);
                }
            }
            // SIGKILL: no destructor, no flush, no goodbye.
            let alive = child.try_wait().unwrap().is_none();
            if alive {
                child.kill().unwrap();
            }
            alive
        }
        None => false,
    };
    let status = wait_bounded(&mut child, Duration::from_secs(120));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(killed || status.success(), "the child failed: {status:?}\n{stderr}");
    (reader.join().unwrap(), killed)
}

fn wait_bounded(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            child.kill().ok();
            panic!("the child did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn sigkill_at_random_points_loses_nothing_durable_and_recovers_the_exact_state() {
    let kills: usize = std::env::var("VIGIL_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(24);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let input_path = dir.path().join("input.jsonl");
    let inputs = inputs(3000);
    let mut file = std::fs::File::create(&input_path).unwrap();
    for i in &inputs {
        writeln!(file, "{}", wire::encode_json(i)).unwrap();
    }
    drop(file);

    let mut rng = Rng(SEED);
    let mut durable_so_far = 0u64;
    let mut handed_out: BTreeMap<String, String> = BTreeMap::new();
    let (mut killed, mut attempts) = (0, 0);
    let mut check = |run: &Run, durable_so_far: &mut u64| {
        if let Some((applied, digest)) = &run.recovered {
            assert!(
                *applied as u64 >= *durable_so_far,
                "reported durable up to {durable_so_far}, recovered only {applied}"
            );
            assert_eq!(
                digest,
                &digest_of(&inputs[..*applied]),
                "recovered state at {applied} is not the replay of the log"
            );
        }
        for (id, json) in &run.outputs {
            if let Some(before) = handed_out.insert(id.clone(), json.clone()) {
                assert_eq!(&before, json, "output {id} handed out twice with different content");
            }
        }
        *durable_so_far = (*durable_so_far).max(run.durable.iter().copied().max().unwrap_or(0));
    };
    while killed < kills {
        attempts += 1;
        assert!(attempts < kills * 4, "only {killed} of {attempts} runs were still running when killed");
        // One kill in four may land while the child recovers; the rest land among group commits.
        let delay = Duration::from_millis(rng.next() % 120);
        let kill = if rng.next().is_multiple_of(4) { Kill::FromStart(delay) } else { Kill::AfterRecovery(delay) };
        let (run, was_killed) = run_child(&data, &input_path, Some(kill));
        check(&run, &mut durable_so_far);
        if was_killed {
            killed += 1;
        } else {
            // It finished before the kill: start over on a fresh directory to keep killing mid-stream.
            assert_eq!(run.digest.as_deref(), Some(digest_of(&inputs).as_str()));
            std::fs::remove_dir_all(&data).unwrap();
            durable_so_far = 0;
        }
    }
    let (run, _) = run_child(&data, &input_path, None);
    check(&run, &mut durable_so_far);
    assert_eq!(
        run.digest.as_deref(),
        Some(digest_of(&inputs).as_str()),
        "the final state is the replay of the whole log"
    );

    let export = Command::new(env!("CARGO_BIN_EXE_vigil")).args(["export", "--data-dir"]).arg(&data).output().unwrap();
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    assert_eq!(
        String::from_utf8(export.stdout).unwrap(),
        std::fs::read_to_string(&input_path).unwrap(),
        "the log is the input, once"
    );
    eprintln!("{killed} kills in {attempts} runs; {} distinct outputs handed out", handed_out.len());
}
