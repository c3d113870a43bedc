//! A disk that fills up, for real: a child `vigil debug-ingest` commits a log under a file-size
//! limit (`RLIMIT_FSIZE`, with `SIGXFSZ` ignored), so at some group commit the kernel refuses
//! sled's write — the same failed `write(2)` a full disk gives, only with `EFBIG` for `ENOSPC`, and
//! without needing root to mount a small filesystem. Checked: vigil says which operation failed and
//! why, exits non-zero without a panic, and the directory then recovers to exactly the inputs it
//! had reported durable, and goes on from there once there is room.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use vigil::core::event::{Heartbeat, Input, InputKind};
use vigil::core::{At, WorkspaceId, wire};

/// Heartbeats from 2 000 workspaces, 10 ms apart.
fn write_input(path: &Path, count: usize) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..count {
        let input = Input {
            at: At(1_780_272_000_000 + 10 * i as i64),
            sent_at: None,
            id: None,
            kind: InputKind::Heartbeat(Heartbeat {
                workspace: WorkspaceId::parse(&format!("ws-{:05}", i % 2_000)).unwrap(),
                interval_s: Some(30),
                incarnation: Some(format!("c-{}", i % 2_000).into()),
                active_tasks: None,
            }),
        };
        writeln!(file, "{}", wire::encode_json(&input)).unwrap();
    }
}

/// Runs `vigil debug-ingest`, with at most `limit` bytes per file if given.
fn ingest(data: &Path, input: &Path, limit: Option<u64>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vigil"));
    command.args(["debug-ingest", "--group", "50", "--data-dir"]).arg(data).arg("--input").arg(input);
    if let Some(limit) = limit {
        // SAFETY: between fork and exec only async-signal-safe calls (signal, setrlimit).
        unsafe {
            command.pre_exec(move || {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let rlimit = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &rlimit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    command.output().expect("run vigil")
}

/// The last `durable N` the child reported.
fn last_durable(output: &Output) -> u64 {
    BufReader::new(&output.stdout[..])
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| l.strip_prefix("durable ").map(|n| n.parse::<u64>().unwrap()))
        .last()
        .unwrap_or(0)
}

fn exported_inputs(data: &Path) -> usize {
    let out = Command::new(env!("CARGO_BIN_EXE_vigil")).args(["export", "--data-dir"]).arg(data).output().unwrap();
    assert!(out.status.success(), "export failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout.lines().count()
}

#[test]
fn a_full_disk_stops_vigil_with_a_clear_error_and_loses_nothing_it_reported_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (data, input) = (dir.path().join("data"), dir.path().join("input.jsonl"));
    let total = 100_000;
    write_input(&input, total);

    // Given a disk with room for about 2 MB, when vigil commits 100 000 heartbeats to it,
    let full = ingest(&data, &input, Some(2_000_000));
    let stderr = String::from_utf8_lossy(&full.stderr);

    // then it stops with a non-zero exit and says what it was doing and why, without a panic,
    assert!(!full.status.success(), "vigil went on writing past a full disk\n{stderr}");
    assert_eq!(full.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("disk error while writing"), "{stderr}");
    assert!(stderr.contains("File too large (os error 27)"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let durable = last_durable(&full);
    assert!(durable > 0 && (durable as usize) < total, "the limit should land mid-stream: {durable}");

    // and the directory holds exactly what it reported durable (a group in flight may be lost,
    // but nothing acknowledged is),
    let kept = exported_inputs(&data);
    assert!(kept as u64 >= durable, "reported {durable} durable, the log holds {kept}");
    assert!(kept as u64 <= durable + 50, "the log holds {kept}, more than one group past {durable}");

    // and once there is room again, vigil recovers and finishes the log, each input once.
    let resumed = ingest(&data, &input, None);
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert_eq!(exported_inputs(&data), total);
}
