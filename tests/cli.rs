//! The `vigil` command as a user meets it: replay's output and exit codes, export's filters and
//! warnings, inspect's answers, and clear errors instead of panics.

use std::path::Path;
use std::process::{Command, Output};

fn vigil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil")).args(args).output().expect("run vigil")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn replay_dir(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("replays").join(name).join("events.jsonl").display().to_string()
}

/// A data directory holding the dead-VM incident's log.
fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = vigil(&[
        "debug-ingest",
        "--data-dir",
        data.to_str().unwrap(),
        "--input",
        &replay_dir("2026-04-30-dead-vm-502"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    dir
}

#[test]
fn replay_prints_a_transcript_or_jsonl_and_says_what_it_skipped() {
    let path = replay_dir("2026-04-30-dead-vm-502");
    let transcript = vigil(&["replay", &path]);
    assert!(transcript.status.success());
    assert!(stdout(&transcript).contains("RESTART   ws-hongming:1"), "{}", stdout(&transcript));
    assert!(stderr(&transcript).contains("1 restarts"));
    let json = vigil(&["replay", "--json", &path]);
    let expected = std::fs::read_to_string(Path::new(&path).with_file_name("expected.jsonl")).unwrap();
    assert_eq!(stdout(&json), expected);

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    let good = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = good.lines().collect();
    lines.insert(3, r#"{"v":1,"type":"heartbeat","workspace":"ws.a","at":"2026-04-30T00:05:01.000Z"}"#);
    lines.insert(5, "garbage");
    std::fs::write(&bad, lines.join("\n")).unwrap();
    let skipped = vigil(&["replay", "--json", bad.to_str().unwrap()]);
    assert_eq!(skipped.status.code(), Some(1), "skipped lines make the exit status 1");
    assert_eq!(stdout(&skipped), expected, "the rest is replayed as if the bad lines were not there");
    assert!(stderr(&skipped).contains("bad.jsonl:4: field `workspace`"), "{}", stderr(&skipped));
    assert!(stderr(&skipped).contains("bad.jsonl:6:"), "{}", stderr(&skipped));
    assert!(stderr(&skipped).contains("2 malformed lines"));
    let strict = vigil(&["replay", "--strict", "--json", bad.to_str().unwrap()]);
    assert_eq!(strict.status.code(), Some(1));
    assert!(stdout(&strict).lines().count() < expected.lines().count(), "--strict stops at the first bad line");
}

#[test]
fn replay_refuses_missing_files_and_bad_policies_clearly() {
    let out = vigil(&["replay", "/nonexistent/log.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("reading /nonexistent/log.jsonl"), "{}", stderr(&out));
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "tll_min = \"5m\"\n").unwrap();
    let out = vigil(&["replay", "--policy", policy.to_str().unwrap(), &replay_dir("2026-04-30-dead-vm-502")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("tll_min"), "{}", stderr(&out));
}

#[test]
fn export_filters_by_sequence_time_and_workspace() {
    let dir = data_dir();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let all = stdout(&vigil(&["export", "--data-dir", d]));
    assert_eq!(all, std::fs::read_to_string(replay_dir("2026-04-30-dead-vm-502")).unwrap());
    let since = stdout(&vigil(&["export", "--data-dir", d, "--since", "40"]));
    assert_eq!(since.lines().collect::<Vec<_>>(), all.lines().skip(39).collect::<Vec<_>>());
    let by_time = stdout(&vigil(&["export", "--data-dir", d, "--since", "2026-04-30T00:11:30.000Z"]));
    assert!(by_time.lines().all(|l| l.contains("\"at\":\"2026-04-30T00:1")));
    assert!(by_time.lines().next().unwrap().contains("00:11:30"));
    let one = stdout(&vigil(&["export", "--data-dir", d, "--workspace", "ws-neighbour"]));
    assert!(one.lines().all(|l| l.contains("ws-neighbour") || l.contains("\"type\":\"tick\"")), "{one}");
    let bad = vigil(&["export", "--data-dir", d, "--since", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("neither a sequence number nor a time"));
}

#[test]
fn inspect_shows_the_fleet_and_one_workspace() {
    let dir = data_dir();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let fleet = stdout(&vigil(&["inspect", "--data-dir", d]));
    assert!(fleet.starts_with("2 workspaces: 2 alive"), "{fleet}");
    assert!(fleet.contains("; healthy (0 of 2 active suspect or dead);"), "the disruption mode: {fleet}");
    let one = vigil(&["inspect", "--data-dir", d, "--json", "ws-hongming"]);
    let view: serde_json::Value = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!(view["state"], "alive");
    assert_eq!(view["incarnation"], "i-0c3d9a22");
    assert_eq!(view["restarts"], 1);
    let missing = vigil(&["inspect", "--data-dir", d, "ws-nobody"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("no workspace \"ws-nobody\""));
    let nothing = vigil(&["inspect", "--data-dir", "/nonexistent/vigil"]);
    assert_eq!(nothing.status.code(), Some(2));
    assert!(stderr(&nothing).contains("no vigil data directory"), "{}", stderr(&nothing));
}

#[test]
fn serve_refuses_a_bad_configuration_before_touching_anything() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigil.toml");
    std::fs::write(&config, "prefix = \"vigil.>\"\n").unwrap();
    let out = vigil(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("prefix"), "{}", stderr(&out));
    std::fs::write(&config, "nats_urll = \"x\"\n").unwrap();
    let out = vigil(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nats_urll"), "{}", stderr(&out));
    let out = vigil(&["serve", "--user", "u", "--nats-url", "nats://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("user and password go together"), "{}", stderr(&out));
}

#[test]
fn emit_checks_the_event_before_connecting() {
    let out = vigil(&["emit", "probe", "ws-a", "--result", "dead"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("field `result`"), "{}", stderr(&out));
    let out = vigil(&["emit", "heartbeat", "ws-a", "--interval_s", "30", "--nats-url", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("connection flags go before the event type"), "{}", stderr(&out));
}

#[test]
fn inspect_shows_the_stored_policy_and_refuses_to_show_the_state_under_another() {
    // Given a data directory written under the default policy,
    let dir = data_dir();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    // when its policy is asked for, then it comes as TOML that reads back as that policy;
    let shown = vigil(&["inspect", "--data-dir", data, "--show-policy"]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let policy = vigil::core::Policy::from_toml(&stdout(&shown)).expect("the shown policy is valid TOML");
    assert_eq!(policy, vigil::core::Policy::default());
    // and showing the state under another policy is refused rather than silently changing it.
    let other = dir.path().join("other.toml");
    std::fs::write(&other, "ttl_min = \"5s\"\n").unwrap();
    let refused = vigil(&["inspect", "--data-dir", data, "--policy", other.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("omit --policy"), "{}", stderr(&refused));
    let same = vigil(&["inspect", "--data-dir", data]);
    assert!(same.status.success(), "{}", stderr(&same));
    assert_eq!(stdout(&vigil(&["inspect", "--data-dir", data, "--show-policy"])), stdout(&shown), "nothing changed");
}
