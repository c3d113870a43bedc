//! The events vigil folds (inputs) and the events it emits (outputs), as typed values.
//!
//! These types are the contract of SPEC §1–2 after validation: a value of `Input` is always a
//! well-formed event (valid workspace id, known type, fields in range). How they look on the wire
//! (MessagePack maps or JSONL, field by field) lives in [`crate::wire`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::At;

/// Longest accepted workspace id (one NATS subject token).
pub const WORKSPACE_MAX_LEN: usize = 128;

/// A workspace id: 1–128 characters of `[A-Za-z0-9_-]`, so it is always a single NATS subject token.
///
/// Ids of up to 24 bytes are stored inline (no heap allocation, no pointer to chase on lookup).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct WorkspaceId(compact_str::CompactString);

/// Why a workspace id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadWorkspace {
    #[error("is empty")]
    Empty,
    #[error("is {0} characters long; at most 128 are allowed")]
    TooLong(usize),
    #[error("contains {0:?}; only A-Z, a-z, 0-9, '_' and '-' are allowed")]
    BadChar(char),
}

impl WorkspaceId {
    /// Validates `s` as a workspace id.
    pub fn parse(s: &str) -> Result<WorkspaceId, BadWorkspace> {
        if s.is_empty() {
            return Err(BadWorkspace::Empty);
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
            return Err(BadWorkspace::BadChar(c));
        }
        if s.len() > WORKSPACE_MAX_LEN {
            return Err(BadWorkspace::TooLong(s.len()));
        }
        Ok(WorkspaceId(compact_str::CompactString::new(s)))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for WorkspaceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        WorkspaceId::parse(&s).map_err(|e| serde::de::Error::custom(format!("workspace {e}")))
    }
}

/// Declares a string-valued enum with its wire names, kept in one place.
macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name used on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses a wire name.
            pub fn parse(s: &str) -> Option<$name> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum! {
    /// A provisioner's answer to "is it running?" (SPEC §1, classified by §3.1).
    ProbeResult {
        Running = "running",
        NotRunning = "not_running",
        NotFound = "not_found",
        /// Booting (e.g. a VM in state `pending`): never evidence of death.
        Pending = "pending",
        /// The probe itself failed; the `error` text decides what it means.
        Error = "error",
    }
}

wire_enum! {
    /// Who asked for a restart, which decides how it is admitted (SPEC §3.3, §3.4).
    Origin {
        /// A person clicked restart: never dropped, never held, supersedes one in flight.
        User = "user",
        /// Config, secrets, plugins or files changed: never dropped, coalesced while restarting.
        Mutation = "mutation",
        /// A monitor, reconciler or probe path (and vigil itself): debounced, backed off, held.
        System = "system",
    }
}

wire_enum! {
    /// Provisioner feedback on a restart command.
    ProgressPhase { Accepted = "accepted", Stopped = "stopped", Started = "started", Failed = "failed" }
}

wire_enum! {
    /// Workspace lifecycle as the control plane sees it.
    LifecyclePhase {
        Created = "created",
        Paused = "paused",
        Hibernated = "hibernated",
        Resumed = "resumed",
        Removed = "removed",
    }
}

wire_enum! {
    /// An input's `type` (SPEC §1), in SPEC order.
    InputType {
        Heartbeat = "heartbeat",
        Probe = "probe",
        UpstreamError = "upstream_error",
        RestartRequested = "restart_requested",
        RestartProgress = "restart_progress",
        Lifecycle = "lifecycle",
        /// A deadline reached with no input (logs only).
        Tick = "tick",
        /// vigil started on an existing directory (logs only).
        Resume = "resume",
        /// A partition's automatic death declaration, counted by every partition (logs only).
        Declaration = "declaration",
    }
}

wire_enum! {
    /// A workspace's liveness state, as it appears on the wire.
    StateName { Alive = "alive", Suspect = "suspect", Restarting = "restarting", Dead = "dead", Parked = "parked" }
}

wire_enum! {
    /// What an `alert` is about.
    AlertKind {
        BreakerOpen = "breaker_open",
        BreakerClosed = "breaker_closed",
        RestartGaveUp = "restart_gave_up",
        Unprobeable = "unprobeable",
        Unwatched = "unwatched",
    }
}

wire_enum! {
    /// Every reason code vigil emits. Each output carries exactly one.
    Reason {
        // -- why a state changed --
        /// A workspace was seen for the first time (by a heartbeat, probe, upstream error or request).
        FirstSeen = "first_seen",
        /// `lifecycle created`.
        Created = "created",
        /// No heartbeat for `ttl`.
        HeartbeatTimeout = "heartbeat_timeout",
        /// The heartbeat is later than the workspace's own learned cadence makes probable
        /// (φ reached `phi_threshold`): a probe is asked at once.
        HeartbeatOverdue = "heartbeat_overdue",
        /// Definitively not running, but a heartbeat came within `recent`.
        NotRunningRecentHeartbeat = "not_running_recent_heartbeat",
        /// Definitively not running, but the workspace left Restarting less than `settle` ago.
        NotRunningSettling = "not_running_settling",
        /// Definitively not running and no recent heartbeat: dead at once.
        NotRunningNoHeartbeat = "not_running_no_heartbeat",
        /// Definitively not running while the heartbeat is overdue: silence and probe agree.
        NotRunningOverdue = "not_running_overdue",
        /// A second definitive not-running within `confirm_window` of the first.
        ConfirmedNotRunning = "confirmed_not_running",
        /// Silent for `ttl`, then only transient probe errors for `unprobeable_after`.
        Unprobeable = "unprobeable",
        /// A heartbeat or a `running` probe refuted the suspicion.
        Refuted = "refuted",
        /// A heartbeat from a dead workspace.
        Recovered = "recovered",
        /// vigil issued a restart command.
        RestartIssued = "restart_issued",
        /// A fresh heartbeat ended a restart.
        RestartCompleted = "restart_completed",
        /// The provisioner reported the restart failed.
        RestartFailed = "restart_failed",
        /// No fresh heartbeat within `restart_timeout` of the command.
        RestartTimeout = "restart_timeout",
        /// `lifecycle paused`.
        Paused = "paused",
        /// `lifecycle hibernated`.
        Hibernated = "hibernated",
        /// `lifecycle resumed`.
        Resumed = "resumed",
        /// `lifecycle removed` (the state is deleted; later events are suppressed).
        Removed = "removed",
        // -- why a restart was issued (besides the death reasons above) --
        /// A `restart_requested` event.
        RestartRequested = "restart_requested",
        /// The one follow-up owed to mutation requests coalesced during a restart.
        MutationFollowup = "mutation_followup",
        // -- why a probe was asked for (besides heartbeat_timeout and the suspicion causes) --
        /// A proxy saw a dead-origin status or a transport error.
        UpstreamDeadOrigin = "upstream_dead_origin",
        // -- why something was not acted on (`suppressed`) --
        /// A probe error that is not "not found": the observer is sick, not the workspace.
        ProbeErrorTransient = "probe_error_transient",
        /// A `pending` probe outside a restart: booting is not death.
        ProbePending = "probe_pending",
        /// A probe was asked for less than `probe_repeat` ago and has not been answered.
        ProbeOutstanding = "probe_outstanding",
        /// A probe or upstream error while a restart is in flight.
        Restarting = "restarting",
        /// A `system` restart request while one is in flight.
        RestartInFlight = "restart_in_flight",
        /// A `mutation` restart request while one is in flight: one follow-up is owed.
        RestartCoalesced = "restart_coalesced",
        /// A `system` restart within `debounce` of the last restart command.
        RestartDebounced = "restart_debounced",
        /// Crash-loop backoff: the next automatic restart must wait.
        RestartBackoff = "restart_backoff",
        /// Too many consecutive failed restarts: only a `user` restart goes now.
        RestartGaveUp = "restart_gave_up",
        /// A restart is already scheduled for this dead workspace.
        RestartPending = "restart_pending",
        /// The fleet breaker holds automatic death declarations and restarts.
        BreakerOpen = "breaker_open",
        /// More than max(`breaker_min`, `breaker_pct`%) of the active fleet is Suspect or Dead:
        /// automatic restarts wait `disruption_settle`, then go at `restart_rate`, oldest first,
        /// each on a fresh probe (also the reason of the `breaker_open` alert announcing it).
        DisruptionPartial = "disruption_partial",
        /// More than `disruption_full_pct` of the active fleet is Suspect or Dead: no automatic
        /// restart at all until it is back under (also the reason of the alert announcing it).
        DisruptionFull = "disruption_full",
        /// Automatic restarts go at most `restart_rate` per second (`restart_burst` at once), and
        /// older ones wait ahead: this one waits its turn.
        RestartRateLimited = "restart_rate_limited",
        /// A held workspace's turn came: the fresh probe it is asked for decides.
        RestartTurn = "restart_turn",
        /// `max_restarts_in_flight` automatic restarts are running; this one waits its turn.
        RestartQueueFull = "restart_queue_full",
        /// The workspace is parked (paused or hibernated).
        Parked = "parked",
        /// The workspace is already dead; a restart is owed or held.
        AlreadyDead = "already_dead",
        /// The same idempotency key (`id` or `request_id`) was seen within `dedup_window`.
        Duplicate = "duplicate",
        /// A heartbeat that may come from the incarnation being restarted.
        StaleHeartbeat = "stale_heartbeat",
        /// Progress for a restart that is not the one in flight.
        StaleRestart = "stale_restart",
        /// An upstream error that is not dead-origin (e.g. a 500): not evidence of death.
        NotDeadOrigin = "not_dead_origin",
        /// One definitive not-running; a second within `confirm_window` is needed.
        AwaitingConfirmation = "awaiting_confirmation",
        /// A definitive not-running while the workspace's heartbeats arrive on schedule (not
        /// overdue): the heartbeats outweigh any probe.
        HeartbeatOnSchedule = "heartbeat_on_schedule",
        /// The breaker held this workspace and has closed since: only silence for a whole `ttl`
        /// since the close, and a definitive probe, convict it.
        BreakerRecentlyOpen = "breaker_recently_open",
        /// With several partitions: the workspace's death declaration is with the fleet breaker,
        /// whose verdict comes back through the stream.
        DeclarationPending = "declaration_pending",
        /// `resumed` for a workspace that is not parked, or `created` for one already known.
        LifecycleNoop = "lifecycle_noop",
        /// An event (other than those that create a workspace) for a workspace vigil does not know.
        UnknownWorkspace = "unknown_workspace",
        // -- alerts --
        /// Automatic death declarations exceeded the breaker threshold.
        BreakerThresholdExceeded = "breaker_threshold_exceeded",
        /// Declarations, or with the disruption modes the fleet's Suspect and Dead, stayed below
        /// the threshold for `breaker_cooldown`.
        BreakerCalm = "breaker_calm",
        /// `give_up_after` consecutive restarts did not end in a fresh heartbeat.
        CrashLoop = "crash_loop",
        /// Nothing reached the log for longer than `unwatched_after_ms` (NATS down, or vigil
        /// down with nobody publishing): every deadline was extended by that time.
        Unwatched = "unwatched",
    }
}

/// A validated input event: when vigil received it, and what it says.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    /// When vigil received it; authoritative for every timer.
    pub at: At,
    /// The producer's own timestamp, if it sent one.
    pub sent_at: Option<At>,
    /// The producer's idempotency key.
    pub id: Option<String>,
    /// The record's position in the input stream (its stream sequence), when it came from one:
    /// the ids of the outputs it causes derive from it (SPEC §2.1), so whoever folds the same
    /// records gives them the same ids, and a new data directory never repeats an old one's.
    pub stream_seq: Option<u64>,
    /// The event itself.
    pub kind: InputKind,
}

/// The input event types of SPEC §1.
#[derive(Clone, Debug, PartialEq)]
pub enum InputKind {
    Heartbeat(Heartbeat),
    Probe(Probe),
    UpstreamError(UpstreamError),
    RestartRequested(RestartRequested),
    RestartProgress(RestartProgress),
    Lifecycle(Lifecycle),
    /// Only advances the clock so that due timers fire.
    Tick,
    /// vigil (re)started: every heartbeat deadline is re-armed with full grace.
    Resume(Resume),
    /// One partition's automatic death declaration, in the fleet's one order (SPEC §3.4): every
    /// partition counts it in its breaker, and the declaring one learns from it whether its
    /// workspace is admitted or held.
    Declaration(Declaration),
}

/// `resume`: vigil (re)started.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resume {
    /// The data directory's id key, from which output ids take their tags (`core::ids`); absent
    /// in logs from before keys, whose ids stay plain.
    pub id_key: Option<crate::ids::IdKey>,
    /// The service that wrote it appends a record to the log at least every second while it runs
    /// (SPEC §1 "time"): from here on, a stretch of more than this many milliseconds with no
    /// record at all is time nobody watched, and every deadline is extended by it. Absent in logs
    /// from before; their `resume` re-arms every deadline with full grace instead.
    pub unwatched_after_ms: Option<u32>,
    /// With several partitions: which one this log is, of how many (absent with one). The breaker
    /// and the restart cap are then the fleet's, shared through `declaration` records.
    pub partition: Option<Partition>,
}

/// One partition of several.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    pub index: u32,
    pub of: u32,
}

/// `declaration`: partition `partition` declared `workspace` dead (automatically), or counted a
/// failed restart or a system restart request, as the breaker counts (SPEC §3.4).
#[derive(Clone, Debug, PartialEq)]
pub struct Declaration {
    /// The declaring partition.
    pub partition: u32,
    /// Its workspace (in its partition, not necessarily in the reader's).
    pub workspace: WorkspaceId,
    /// Why (the reason its state would change for).
    pub reason: Reason,
    /// The fleet's monitored workspaces as the declaring partition estimated them (its own times
    /// the number of partitions): every partition measures the threshold against this one number,
    /// so all of them agree on when the breaker opens.
    pub monitored: u32,
    /// The workspace waits, Suspect, for this record to say whether it is admitted (Dead, and a
    /// restart) or held by the breaker; false for a declaration that is only counted.
    pub awaits: bool,
}

/// `heartbeat`: the agent says it is alive.
#[derive(Clone, Debug, PartialEq)]
pub struct Heartbeat {
    pub workspace: WorkspaceId,
    /// The cadence the agent promises (1–3600 s).
    pub interval_s: Option<u16>,
    /// Identifies this boot of the workspace; changes on every restart.
    /// Inline up to 24 bytes (a boot id, a short container id): no allocation per heartbeat.
    pub incarnation: Option<compact_str::CompactString>,
    pub active_tasks: Option<u32>,
}

/// `probe`: the provisioner's answer to "is it running?".
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    pub workspace: WorkspaceId,
    pub result: ProbeResult,
    /// Raw error text, with `result = error`.
    pub error: Option<String>,
    pub backend: Option<String>,
    pub probe_id: Option<String>,
}

/// `upstream_error`: a proxy saw a request to the workspace fail.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamError {
    pub workspace: WorkspaceId,
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// `restart_requested`: someone wants the workspace restarted.
#[derive(Clone, Debug, PartialEq)]
pub struct RestartRequested {
    pub workspace: WorkspaceId,
    pub origin: Origin,
    /// Why, in the requester's words.
    pub reason: String,
    pub request_id: Option<String>,
}

/// `restart_progress`: the provisioner's feedback on a restart command.
#[derive(Clone, Debug, PartialEq)]
pub struct RestartProgress {
    pub workspace: WorkspaceId,
    pub restart_id: String,
    pub phase: ProgressPhase,
    pub error: Option<String>,
}

/// `lifecycle`: the control plane changed the workspace's lifecycle.
#[derive(Clone, Debug, PartialEq)]
pub struct Lifecycle {
    pub workspace: WorkspaceId,
    pub phase: LifecyclePhase,
}

impl InputKind {
    /// The input's type.
    pub fn input_type(&self) -> InputType {
        match self {
            InputKind::Heartbeat(_) => InputType::Heartbeat,
            InputKind::Probe(_) => InputType::Probe,
            InputKind::UpstreamError(_) => InputType::UpstreamError,
            InputKind::RestartRequested(_) => InputType::RestartRequested,
            InputKind::RestartProgress(_) => InputType::RestartProgress,
            InputKind::Lifecycle(_) => InputType::Lifecycle,
            InputKind::Tick => InputType::Tick,
            InputKind::Resume(_) => InputType::Resume,
            InputKind::Declaration(_) => InputType::Declaration,
        }
    }

    /// The `type` name on the wire.
    pub fn type_name(&self) -> &'static str {
        self.input_type().as_str()
    }

    /// The workspace the event is about (`None` for vigil's own records: `tick`, `resume`, and
    /// `declaration`, whose workspace is another partition's business).
    pub fn workspace(&self) -> Option<&WorkspaceId> {
        match self {
            InputKind::Heartbeat(e) => Some(&e.workspace),
            InputKind::Probe(e) => Some(&e.workspace),
            InputKind::UpstreamError(e) => Some(&e.workspace),
            InputKind::RestartRequested(e) => Some(&e.workspace),
            InputKind::RestartProgress(e) => Some(&e.workspace),
            InputKind::Lifecycle(e) => Some(&e.workspace),
            InputKind::Tick | InputKind::Resume(_) | InputKind::Declaration(_) => None,
        }
    }

    /// Whether this is one of vigil's own records (`tick`, `resume`, `declaration`), which no
    /// producer may send.
    pub fn is_own(&self) -> bool {
        matches!(self, InputKind::Tick | InputKind::Resume(_) | InputKind::Declaration(_))
    }
}

/// An output event: a decision vigil made, when, about which workspace, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// Unique and deterministic: the restart id for `restart`, else `<stream seq>.<n>` (SPEC §2.1). Also the
    /// `Nats-Msg-Id`, so a re-publish after a crash is de-duplicated.
    pub id: String,
    /// `None` only for fleet-level alerts.
    pub workspace: Option<WorkspaceId>,
    /// The `at` of the input or timer that caused it.
    pub at: At,
    pub body: OutputBody,
}

/// The output event types of SPEC §2.
#[derive(Clone, Debug, PartialEq)]
pub enum OutputBody {
    StateChanged {
        /// `None` when the workspace is first seen.
        from: Option<StateName>,
        /// `None` when the workspace is removed.
        to: Option<StateName>,
        reason: Reason,
        /// What a proxy should put in a 503's `Retry-After`, when `to` is restarting or dead.
        retry_after_s: Option<u32>,
    },
    Restart {
        restart_id: String,
        origin: Origin,
        reason: Reason,
        /// 1 + the consecutive restarts before this one that did not end in a fresh heartbeat.
        attempt: u32,
        /// The requester's own words, for requested restarts.
        detail: Option<String>,
    },
    ProbeRequest {
        probe_id: String,
        reason: Reason,
    },
    Suppressed {
        reason: Reason,
        /// The type of the input that was not acted on (`None` when a timer decided).
        input: Option<InputType>,
        detail: Option<String>,
        /// When the held action will be reconsidered, for backoff and debounce.
        retry_after_s: Option<u32>,
    },
    Alert {
        kind: AlertKind,
        reason: Reason,
        detail: Option<String>,
    },
}

impl OutputBody {
    /// The `type` name on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            OutputBody::StateChanged { .. } => "state_changed",
            OutputBody::Restart { .. } => "restart",
            OutputBody::ProbeRequest { .. } => "probe_request",
            OutputBody::Suppressed { .. } => "suppressed",
            OutputBody::Alert { .. } => "alert",
        }
    }

    /// The reason code every output carries.
    pub fn reason(&self) -> Reason {
        match self {
            OutputBody::StateChanged { reason, .. }
            | OutputBody::Restart { reason, .. }
            | OutputBody::ProbeRequest { reason, .. }
            | OutputBody::Suppressed { reason, .. }
            | OutputBody::Alert { reason, .. } => *reason,
        }
    }
}

/// The output type names.
pub const OUTPUT_TYPES: &[&str] = &["state_changed", "restart", "probe_request", "suppressed", "alert"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_ids_are_single_subject_tokens() {
        assert!(WorkspaceId::parse("ws-abc_123").is_ok());
        assert!(WorkspaceId::parse(&"a".repeat(128)).is_ok());
        assert_eq!(WorkspaceId::parse(""), Err(BadWorkspace::Empty));
        assert_eq!(WorkspaceId::parse(&"a".repeat(129)), Err(BadWorkspace::TooLong(129)));
        assert_eq!(WorkspaceId::parse("ws.a"), Err(BadWorkspace::BadChar('.')));
        assert_eq!(WorkspaceId::parse("ws*"), Err(BadWorkspace::BadChar('*')));
        assert_eq!(WorkspaceId::parse("wé"), Err(BadWorkspace::BadChar('é')));
    }

    #[test]
    fn wire_names_round_trip() {
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(*r));
        }
        assert_eq!(ProbeResult::parse("not_found"), Some(ProbeResult::NotFound));
        assert_eq!(ProbeResult::parse("Running"), None);
    }
}
