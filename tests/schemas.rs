//! The JSON Schemas in `schemas/` are the event contract (SPEC §1–2) for producers and consumers
//! that do not link vigil. They are worth something only while they say what the code does, so this
//! test holds them to it:
//!
//! 1. every schema compiles, one per event type, each naming its type;
//! 2. every line of every replay fits its schema;
//! 3. enums, version, workspace pattern and text limits are the code's own, and every field of the
//!    wire record is described;
//! 4. events encoded by vigil's codec fit: a minimal one carries exactly the `required` fields, a
//!    full one exactly the listed `properties`, and MessagePack and JSON give the same map;
//! 5. lines the decoder refuses, the schemas refuse too — and outputs allow nothing extra.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use jsonschema::Validator;
use serde_json::{Value, json};
use vigil::core::event::*;
use vigil::core::time::At;
use vigil::core::wire::{self, RawInput, SCHEMA_VERSION, Stamping, TEXT_MAX_LEN};

const DRAFT: &str = "https://json-schema.org/draft/2020-12/schema";
const T0: &str = "2026-04-16T09:10:26.100Z";
const T_SENT: &str = "2026-04-16T09:10:25.900Z";

// ---- the schemas ------------------------------------------------------------------------------

/// Inputs (`schemas/in`) or outputs (`schemas/out`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Side {
    In,
    Out,
}

impl Side {
    fn dir(self) -> &'static str {
        match self {
            Side::In => "in",
            Side::Out => "out",
        }
    }
}

/// One schema file: its JSON and its compiled validator.
struct Schema {
    json: Value,
    validator: Validator,
}

impl Schema {
    fn errors(&self, event: &Value) -> Vec<String> {
        self.validator.iter_errors(event).map(|e| format!("at `{}`: {e}", e.instance_path())).collect()
    }

    fn property_names(&self) -> BTreeSet<String> {
        keys(&self.json["properties"])
    }

    fn required(&self) -> BTreeSet<String> {
        self.json["required"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect()
    }

    /// The string members of a property's `enum`, in order (a `null` member is skipped).
    fn enum_of(&self, field: &str) -> Vec<&str> {
        let members = self.json["properties"][field]["enum"].as_array();
        members.unwrap_or_else(|| panic!("`{field}` has no enum")).iter().filter_map(Value::as_str).collect()
    }
}

/// Every schema file, compiled, by side and type.
struct Schemas {
    input: BTreeMap<String, Schema>,
    output: BTreeMap<String, Schema>,
}

impl Schemas {
    fn load() -> Schemas {
        Schemas { input: load_dir(Side::In), output: load_dir(Side::Out) }
    }

    fn side(&self, side: Side) -> &BTreeMap<String, Schema> {
        match side {
            Side::In => &self.input,
            Side::Out => &self.output,
        }
    }

    fn all(&self) -> impl Iterator<Item = (Side, &String, &Schema)> {
        let input = self.input.iter().map(|(t, s)| (Side::In, t, s));
        input.chain(self.output.iter().map(|(t, s)| (Side::Out, t, s)))
    }

    fn get(&self, side: Side, ty: &str) -> &Schema {
        self.side(side).get(ty).unwrap_or_else(|| {
            let kind = if side == Side::In { "input" } else { "output" };
            panic!("unknown {kind} type {ty:?}: there is no schemas/{}/{ty}.json", side.dir())
        })
    }

    /// The schema `event` names by its `type`; an event without one, or of an unknown type, fails.
    fn schema_for(&self, side: Side, event: &Value) -> &Schema {
        let ty = event["type"].as_str().unwrap_or_else(|| panic!("no string `type` in {event}"));
        self.get(side, ty)
    }

    fn check(&self, side: Side, event: &Value, origin: &str) {
        let errors = self.schema_for(side, event).errors(event);
        assert!(errors.is_empty(), "{origin}: {event}\n  does not fit its schema:\n  {}", errors.join("\n  "));
    }

    fn rejects(&self, side: Side, event: &Value) -> bool {
        !self.schema_for(side, event).validator.is_valid(event)
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse(origin: &str, text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{origin}: not JSON: {e}"))
}

/// Compiles every `*.json` in `schemas/<side>` (formats asserted), failing with every error at once.
fn load_dir(side: Side) -> BTreeMap<String, Schema> {
    let dir = root().join("schemas").join(side.dir());
    let mut schemas = BTreeMap::new();
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let json = parse(&path.display().to_string(), &read(&path));
        match jsonschema::options().should_validate_formats(true).build(&json) {
            Ok(validator) => {
                schemas.insert(path.file_stem().unwrap().to_string_lossy().into_owned(), Schema { json, validator });
            }
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
    }
    assert!(failures.is_empty(), "schemas that do not compile:\n{}", failures.join("\n"));
    schemas
}

// ---- small helpers ----------------------------------------------------------------------------

fn keys(map: &Value) -> BTreeSet<String> {
    map.as_object().unwrap_or_else(|| panic!("not a map: {map}")).keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn names<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|t| name(*t)).collect()
}

fn with(event: &Value, field: &str, value: Value) -> Value {
    let mut event = event.clone();
    event[field] = value;
    event
}

fn without(event: &Value, field: &str) -> Value {
    let mut event = event.clone();
    event.as_object_mut().unwrap().remove(field);
    event
}

fn at(s: &str) -> At {
    At::parse(s).unwrap()
}

fn ws(s: &str) -> WorkspaceId {
    WorkspaceId::parse(s).unwrap()
}

// ---- 1. one schema per event type ------------------------------------------------------------

#[test]
fn every_schema_compiles_and_there_is_one_per_event_type() {
    let schemas = Schemas::load();
    let types = |side| schemas.side(side).keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(types(Side::In), set(&names(InputType::ALL, InputType::as_str)));
    assert_eq!(types(Side::Out), set(OUTPUT_TYPES));
}

#[test]
fn each_schema_names_its_draft_id_and_type_and_says_whether_it_is_open() {
    for (side, ty, schema) in Schemas::load().all() {
        let (s, file) = (&schema.json, format!("schemas/{}/{ty}.json", side.dir()));
        assert_eq!(s["$schema"], DRAFT, "{file}");
        assert_eq!(s["$id"], format!("https://vigil.dev/{file}"), "{file}");
        assert_eq!(s["type"], "object", "{file}");
        assert_eq!(s["properties"]["type"]["const"], ty.as_str(), "{file}");
        // Inputs ignore unknown fields by design; outputs are written by vigil, so they are exact.
        assert_eq!(s["additionalProperties"], side == Side::In, "{file}");
        assert!(s["title"].is_string() && s["description"].as_str().is_some_and(|d| d.contains("to_vec_named")));
        assert!(schema.required().is_subset(&schema.property_names()), "{file}: a required field is not described");
    }
}

// ---- 2. replays ------------------------------------------------------------------------------

/// Every non-blank line of every `replays/*/<file>`, with `path:line` to point at it.
fn replay_lines(file: &str) -> Vec<(String, String)> {
    let Ok(dirs) = std::fs::read_dir(root().join("replays")) else { return Vec::new() };
    let mut paths: Vec<PathBuf> = dirs.map(|d| d.unwrap().path().join(file)).filter(|p| p.is_file()).collect();
    paths.sort();
    let mut lines = Vec::new();
    for path in paths {
        let name = path.strip_prefix(root()).unwrap_or(&path).display().to_string();
        for (i, line) in read(&path).lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            lines.push((format!("{name}:{}", i + 1), line.to_string()));
        }
    }
    lines
}

#[test]
fn every_replay_input_fits_its_schema_and_the_decoder_agrees() {
    let schemas = Schemas::load();
    for (origin, line) in replay_lines("events.jsonl") {
        schemas.check(Side::In, &parse(&origin, &line), &origin);
        if let Err(e) = wire::decode_json(&line, Stamping::Logged) {
            panic!("{origin}: fits its schema but the decoder refuses it: {e}");
        }
    }
}

#[test]
fn every_replay_output_fits_its_schema_and_the_decoder_agrees() {
    let schemas = Schemas::load();
    for (origin, line) in replay_lines("expected.jsonl") {
        schemas.check(Side::Out, &parse(&origin, &line), &origin);
        if let Err(e) = wire::decode_output_json(&line) {
            panic!("{origin}: fits its schema but the decoder refuses it: {e}");
        }
    }
}

#[test]
#[should_panic(expected = "unknown input type \"reboot\"")]
fn a_line_of_an_unknown_type_fails_loudly() {
    let line = json!({"v": 1, "type": "reboot", "workspace": "ws-a", "at": T0});
    Schemas::load().check(Side::In, &line, "example");
}

// ---- 3. the schemas say what the code says ---------------------------------------------------

#[test]
fn enums_list_exactly_the_wire_names_of_the_code() {
    let schemas = Schemas::load();
    let states = names(StateName::ALL, StateName::as_str);
    let origins = names(Origin::ALL, Origin::as_str);
    let mut cases = vec![
        (Side::In, "probe", "result", names(ProbeResult::ALL, ProbeResult::as_str)),
        (Side::In, "restart_requested", "origin", origins.clone()),
        (Side::In, "restart_progress", "phase", names(ProgressPhase::ALL, ProgressPhase::as_str)),
        (Side::In, "lifecycle", "phase", names(LifecyclePhase::ALL, LifecyclePhase::as_str)),
        (Side::Out, "state_changed", "from", states.clone()),
        (Side::Out, "state_changed", "to", states),
        (Side::Out, "restart", "origin", origins),
        (Side::Out, "alert", "kind", names(AlertKind::ALL, AlertKind::as_str)),
        (Side::Out, "suppressed", "input", names(InputType::ALL, InputType::as_str)),
        (Side::In, "declaration", "reason", names(Reason::ALL, Reason::as_str)),
    ];
    // Every output carries a reason, and any reason may appear on any of them.
    cases.extend(OUTPUT_TYPES.iter().map(|t| (Side::Out, *t, "reason", names(Reason::ALL, Reason::as_str))));
    for (side, ty, field, expected) in cases {
        assert_eq!(schemas.get(side, ty).enum_of(field), expected, "schemas/{}/{ty}.json `{field}`", side.dir());
    }
}

#[test]
fn version_workspace_pattern_and_text_limits_are_the_codes() {
    let workspace = format!("^[A-Za-z0-9_-]{{1,{WORKSPACE_MAX_LEN}}}$");
    for (side, ty, schema) in Schemas::load().all() {
        let file = format!("schemas/{}/{ty}.json", side.dir());
        let props = schema.json["properties"].as_object().unwrap();
        assert_eq!(props["v"]["const"], SCHEMA_VERSION, "{file}");
        if let Some(w) = props.get("workspace") {
            assert_eq!(w["pattern"], workspace.as_str(), "{file}");
        }
        for (field, p) in props.iter().filter(|(_, p)| side == Side::In && p["type"] == "string") {
            let Some(limit) = wire::field_limit(field) else { continue };
            assert_eq!(p["maxLength"], limit, "{file} `{field}`");
        }
    }
}

/// The wire record with every field set, as JSON. The struct literal is exhaustive on purpose: a
/// field added to `RawInput` does not compile here until it is listed, and then needs a schema.
fn every_input_field() -> BTreeSet<String> {
    let s = || Some(Cow::Borrowed("x"));
    let raw = RawInput {
        v: Some(1),
        kind: s(),
        workspace: s(),
        at: s(),
        sent_at: s(),
        id: s(),
        interval_s: Some(1),
        incarnation: s(),
        active_tasks: Some(1),
        result: s(),
        error: s(),
        backend: s(),
        probe_id: s(),
        status: Some(1),
        origin: s(),
        reason: s(),
        request_id: s(),
        restart_id: s(),
        phase: s(),
        id_key: s(),
        unwatched_after_ms: Some(5000),
        partition: Some(1),
        partitions: Some(4),
        monitored: Some(40),
        awaits: Some(true),
        stream_seq: Some(7),
    };
    keys(&serde_json::to_value(&raw).unwrap())
}

#[test]
fn every_field_of_the_wire_record_is_described_by_some_input_schema() {
    let described: BTreeSet<String> = Schemas::load().input.values().flat_map(Schema::property_names).collect();
    assert_eq!(described, every_input_field());
    // and the decoder's own list of them (`vigil emit`'s, the property tests') is the same.
    assert_eq!(set(vigil::core::wire::INPUT_FIELDS), every_input_field());
}

// ---- 4. what vigil encodes fits, exactly -----------------------------------------------------

fn logged(kind: InputKind) -> Input {
    Input { at: at(T0), sent_at: None, id: None, stream_seq: None, kind }
}

fn logged_with_everything(kind: InputKind) -> Input {
    Input { at: at(T0), sent_at: Some(at(T_SENT)), id: Some("evt-1".into()), stream_seq: Some(57), kind }
}

/// Each input type twice: with only what `validate` requires, and with every optional field set.
fn input_examples() -> Vec<(Input, Input)> {
    let (w, s) = (|| ws("ws-a"), |t: &str| Some(t.to_string()));
    let pair = |minimal, full| (logged(minimal), logged_with_everything(full));
    vec![
        pair(
            InputKind::Heartbeat(Heartbeat { workspace: w(), interval_s: None, incarnation: None, active_tasks: None }),
            InputKind::Heartbeat(Heartbeat {
                workspace: w(),
                interval_s: Some(3600),
                incarnation: Some("ctr-1".into()),
                active_tasks: Some(u32::MAX),
            }),
        ),
        pair(
            InputKind::Probe(Probe {
                workspace: w(),
                result: ProbeResult::Running,
                error: None,
                backend: None,
                probe_id: None,
            }),
            InputKind::Probe(Probe {
                workspace: w(),
                result: ProbeResult::Error,
                error: s("context deadline exceeded"),
                backend: s("docker"),
                probe_id: s("ws-a:p1"),
            }),
        ),
        pair(
            InputKind::UpstreamError(UpstreamError { workspace: w(), status: None, error: None }),
            InputKind::UpstreamError(UpstreamError { workspace: w(), status: Some(502), error: s("connection reset") }),
        ),
        pair(
            InputKind::RestartRequested(RestartRequested {
                workspace: w(),
                origin: Origin::System,
                reason: String::new(),
                request_id: None,
            }),
            InputKind::RestartRequested(RestartRequested {
                workspace: w(),
                origin: Origin::User,
                reason: "clicked restart".into(),
                request_id: s("req-1"),
            }),
        ),
        pair(
            InputKind::RestartProgress(RestartProgress {
                workspace: w(),
                restart_id: "ws-a:1".into(),
                phase: ProgressPhase::Started,
                error: None,
            }),
            InputKind::RestartProgress(RestartProgress {
                workspace: w(),
                restart_id: "ws-a:1".into(),
                phase: ProgressPhase::Failed,
                error: s("image pull failed"),
            }),
        ),
        pair(
            InputKind::Lifecycle(Lifecycle { workspace: w(), phase: LifecyclePhase::Created }),
            InputKind::Lifecycle(Lifecycle { workspace: w(), phase: LifecyclePhase::Removed }),
        ),
        pair(InputKind::Tick, InputKind::Tick),
        pair(
            InputKind::Resume(Resume::default()),
            InputKind::Resume(Resume {
                id_key: Some(vigil::core::ids::IdKey([1, 2])),
                unwatched_after_ms: Some(5000),
                partition: Some(Partition { index: 3, of: 16 }),
            }),
        ),
        pair(
            InputKind::Declaration(Declaration {
                partition: 0,
                workspace: w(),
                reason: Reason::RestartFailed,
                monitored: 0,
                awaits: false,
            }),
            InputKind::Declaration(Declaration {
                partition: 15,
                workspace: w(),
                reason: Reason::ConfirmedNotRunning,
                monitored: 1600,
                awaits: true,
            }),
        ),
    ]
}

fn output(workspace: Option<&str>, body: OutputBody) -> Output {
    let id = match &body {
        OutputBody::Restart { restart_id, .. } => restart_id.clone(),
        _ => "7.0".to_string(),
    };
    Output { id, workspace: workspace.map(ws), at: at(T0), body }
}

/// Each output type twice: with no optional field, and with every optional field set.
fn output_examples() -> Vec<(Output, Output)> {
    let s = |t: &str| Some(t.to_string());
    let pair = |workspace, minimal, full| (output(workspace, minimal), output(Some("ws-a"), full));
    vec![
        pair(
            Some("ws-a"),
            OutputBody::StateChanged { from: None, to: None, reason: Reason::Removed, retry_after_s: None },
            OutputBody::StateChanged {
                from: Some(StateName::Suspect),
                to: Some(StateName::Dead),
                reason: Reason::ConfirmedNotRunning,
                retry_after_s: Some(30),
            },
        ),
        pair(
            Some("ws-a"),
            OutputBody::Restart {
                restart_id: "ws-a:1".into(),
                origin: Origin::System,
                reason: Reason::NotRunningNoHeartbeat,
                attempt: 1,
                detail: None,
            },
            OutputBody::Restart {
                restart_id: "ws-a:2".into(),
                origin: Origin::User,
                reason: Reason::RestartRequested,
                attempt: 3,
                detail: s("clicked restart"),
            },
        ),
        pair(
            Some("ws-a"),
            OutputBody::ProbeRequest { probe_id: "ws-a:p1".into(), reason: Reason::HeartbeatTimeout },
            OutputBody::ProbeRequest { probe_id: "ws-a:p2".into(), reason: Reason::UpstreamDeadOrigin },
        ),
        pair(
            Some("ws-a"),
            OutputBody::Suppressed { reason: Reason::RestartPending, input: None, detail: None, retry_after_s: None },
            OutputBody::Suppressed {
                reason: Reason::RestartBackoff,
                input: Some(InputType::RestartRequested),
                detail: s("attempt 3 waits"),
                retry_after_s: Some(20),
            },
        ),
        // A fleet-level alert has no workspace.
        pair(
            None,
            OutputBody::Alert { kind: AlertKind::BreakerOpen, reason: Reason::BreakerThresholdExceeded, detail: None },
            OutputBody::Alert { kind: AlertKind::RestartGaveUp, reason: Reason::CrashLoop, detail: s("10 failures") },
        ),
    ]
}

/// An input as vigil writes it, after checking that its MessagePack map and its JSONL line agree.
fn wire_form_of_input(input: &Input) -> Value {
    let json = parse("encode_json", &wire::encode_json(input));
    let msgpack: Value = rmp_serde::from_slice(&wire::encode_msgpack(input)).unwrap();
    assert_eq!(msgpack, json, "MessagePack and JSON disagree");
    json
}

/// An output as vigil writes it, after checking that its MessagePack map and its JSONL line agree.
fn wire_form_of_output(output: &Output) -> Value {
    let json = parse("encode_output_json", &wire::encode_output_json(output));
    let msgpack: Value = rmp_serde::from_slice(&wire::encode_output_msgpack(output)).unwrap();
    assert_eq!(msgpack, json, "MessagePack and JSON disagree");
    json
}

/// Both forms fit; the minimal one carries exactly the required fields, the full one every property.
fn assert_fits_exactly(schemas: &Schemas, side: Side, minimal: &Value, full: &Value) {
    schemas.check(side, minimal, "minimal");
    schemas.check(side, full, "full");
    let schema = schemas.schema_for(side, minimal);
    // vigil's codec always writes `at` (a log record has it); a producer's event need not.
    let mut required = schema.required();
    required.insert("at".to_string());
    assert_eq!(keys(minimal), required, "a minimal {minimal} carries exactly the required fields and `at`");
    assert_eq!(keys(full), schema.property_names(), "a full {full} carries every listed property");
}

#[test]
fn inputs_encoded_by_vigil_fit_their_schemas_exactly() {
    let schemas = Schemas::load();
    let examples = input_examples();
    assert_eq!(
        set(&examples.iter().map(|(i, _)| i.kind.type_name()).collect::<Vec<_>>()),
        set(&names(InputType::ALL, InputType::as_str))
    );
    for (minimal, full) in &examples {
        assert_fits_exactly(&schemas, Side::In, &wire_form_of_input(minimal), &wire_form_of_input(full));
    }
}

#[test]
fn outputs_encoded_by_vigil_fit_their_schemas_exactly() {
    let schemas = Schemas::load();
    let examples = output_examples();
    assert_eq!(set(&examples.iter().map(|(o, _)| o.body.type_name()).collect::<Vec<_>>()), set(OUTPUT_TYPES));
    for (minimal, full) in &examples {
        assert_fits_exactly(&schemas, Side::Out, &wire_form_of_output(minimal), &wire_form_of_output(full));
    }
}

// ---- 5. what the decoder refuses, the schemas refuse -----------------------------------------

fn heartbeat() -> Value {
    json!({"v": 1, "type": "heartbeat", "workspace": "ws-a", "at": T0})
}

#[test]
fn input_lines_the_decoder_refuses_the_schemas_refuse_too() {
    let schemas = Schemas::load();
    let hb = heartbeat();
    let probe = json!({"v": 1, "type": "probe", "workspace": "ws-a", "at": T0, "result": "running"});
    let upstream = json!({"v": 1, "type": "upstream_error", "workspace": "ws-a", "at": T0});
    let cases = [
        ("a workspace id with a dot", with(&hb, "workspace", json!("ws.a"))),
        ("an empty workspace id", with(&hb, "workspace", json!(""))),
        ("a 129-character workspace id", with(&hb, "workspace", json!("a".repeat(129)))),
        ("a heartbeat without a workspace", without(&hb, "workspace")),
        ("interval_s 0", with(&hb, "interval_s", json!(0))),
        ("interval_s 3601", with(&hb, "interval_s", json!(3601))),
        ("interval_s as text", with(&hb, "interval_s", json!("thirty"))),
        ("a negative active_tasks", with(&hb, "active_tasks", json!(-1))),
        ("an unknown probe result", with(&probe, "result", json!("dead"))),
        ("a probe without a result", without(&probe, "result")),
        ("an HTTP status of 7000", with(&upstream, "status", json!(7000))),
        ("an error text over 1024 bytes", with(&upstream, "error", json!("e".repeat(TEXT_MAX_LEN + 1)))),
        ("an id over 128 bytes", with(&hb, "id", json!("i".repeat(wire::ID_MAX_LEN + 1)))),
        ("an incarnation over 128 bytes", with(&hb, "incarnation", json!("c".repeat(wire::INCARNATION_MAX_LEN + 1)))),
        ("a timestamp that is not RFC 3339", with(&hb, "at", json!("noon"))),
        ("a date that does not exist", with(&hb, "at", json!("2026-02-30T09:10:26.100Z"))),
        ("schema version 2", with(&hb, "v", json!(2))),
        ("no schema version", without(&hb, "v")),
    ];
    for (what, line) in cases {
        assert!(wire::decode_json(&line.to_string(), Stamping::Logged).is_err(), "the decoder accepts {what}: {line}");
        assert!(schemas.rejects(Side::In, &line), "the schema accepts {what}: {line}");
    }
}

#[test]
fn input_lines_the_decoder_accepts_the_schemas_accept_too() {
    let schemas = Schemas::load();
    let hb = heartbeat();
    let cases = [
        ("any RFC 3339 offset and precision", with(&hb, "at", json!("2026-04-16T11:10:26.1234567+02:00"))),
        ("a field vigil does not know", with(&hb, "future_field", json!([1, {"x": null}]))),
        ("a 128-character workspace id", with(&hb, "workspace", json!("a".repeat(128)))),
        ("a tick carrying a workspace (ignored)", json!({"v": 1, "type": "tick", "at": T0, "workspace": "ws-a"})),
    ];
    // A producer's event without `at`: the schema and the service's decoder take it (vigil
    // stamps the receive time); only a log record must carry it.
    let produced = without(&hb, "at");
    schemas.check(Side::In, &produced, "a producer's event without `at`");
    let now = At::parse(T0).unwrap();
    assert!(wire::decode_json(&produced.to_string(), Stamping::ReceivedAt(now)).is_ok());
    assert!(wire::decode_json(&produced.to_string(), Stamping::Logged).is_err(), "a log record needs `at`");
    for (what, line) in cases {
        assert!(wire::decode_json(&line.to_string(), Stamping::Logged).is_ok(), "the decoder refuses {what}: {line}");
        schemas.check(Side::In, &line, what);
    }
}

/// The minimal output of type `ty`, as vigil writes it.
fn minimal_output(ty: &str) -> Value {
    let examples = output_examples();
    let (minimal, _) = examples.iter().find(|(o, _)| o.body.type_name() == ty).unwrap();
    wire_form_of_output(minimal)
}

#[test]
fn output_schemas_allow_nothing_vigil_does_not_write() {
    let schemas = Schemas::load();
    let changed = minimal_output("state_changed");
    let cases = [
        ("a field vigil does not write", with(&changed, "note", json!("hi"))),
        ("a timestamp without milliseconds", with(&changed, "at", json!("2026-04-16T09:10:26Z"))),
        ("a timestamp not in UTC", with(&changed, "at", json!("2026-04-16T11:10:26.100+02:00"))),
        ("an unknown reason", with(&changed, "reason", json!("bored"))),
        ("an unknown state", with(&changed, "to", json!("zombie"))),
        ("a state in capitals", with(&changed, "to", json!("Alive"))),
        ("a state change without `to`", without(&changed, "to")),
        ("a state change without a workspace", without(&changed, "workspace")),
        ("a negative retry_after_s", with(&changed, "retry_after_s", json!(-1))),
        ("an unknown input type", with(&minimal_output("suppressed"), "input", json!("reboot"))),
        ("an unknown alert kind", with(&minimal_output("alert"), "kind", json!("panic"))),
        ("attempt 0", with(&minimal_output("restart"), "attempt", json!(0))),
    ];
    for (what, line) in cases {
        assert!(schemas.rejects(Side::Out, &line), "the schema accepts {what}: {line}");
    }
}
