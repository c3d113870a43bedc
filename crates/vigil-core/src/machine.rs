//! One workspace's liveness state machine: the transition table of SPEC §3.3, built with statig.
//!
//! Read the `#[state_machine]` impl top to bottom: one handler per state (Alive, Suspect,
//! Restarting, Dead, Parked) and a superstate (`tracked`) with the rules every state shares. Each
//! rule names, in a short comment, the seed incident it exists for:
//!
//! - **cascade** — 2026-04-16 09:10: transient Docker errors read as "dead", six healthy restarts.
//! - **ttl** — 2026-04-16 06:40: a 60 s TTL under a starved 30 s heartbeat restarted busy agents.
//! - **dead-vm** — 2026-04-30: a dead VM behind a 502 was never probed nor restarted.
//! - **self-fire** — 2026-05-19: a restart's own boot window looked like death; 4× reprovision.
//! - **burst** — 2026-05-20: a burst of file writes chained restarts mid-boot.
//! - **flake** — 2026-06-15 (#2929): one flaky probe right after a restart killed a healthy agent.
//!
//! # Every state, every event
//!
//! Where a workspace can be after each event, by the state it was in (A alive, S suspect,
//! R restarting, D dead, P parked, × removed). `tests/matrix.rs` drives every state with every
//! event, over the facts and fleet conditions that change the answer, and checks this table both
//! ways: each listed state is reached and no other.
//!
//! | event                                                  | A     | S     | R   | D   | P |
//! |--------------------------------------------------------|-------|-------|-----|-----|---|
//! | heartbeat                                              | A     | A     | A R | A   | P |
//! | probe running                                          | A     | A     | R   | D   | P |
//! | probe not_running, not_found, "No such container"      | S R D | S R D | R   | D   | P |
//! | probe pending, or another error                        | A     | S     | R   | D   | P |
//! | upstream_error                                         | A     | S     | R   | D   | P |
//! | restart_requested user                                 | R     | R     | R   | R   | R |
//! | restart_requested mutation                             | R     | R     | R   | R   | R |
//! | restart_requested system                               | A R   | S R   | R   | D   | P |
//! | restart_progress accepted, stopped, started            | A     | S     | R   | D   | P |
//! | restart_progress failed                                | A     | S     | R D | D   | P |
//! | lifecycle paused, hibernated                           | P     | P     | P   | P   | P |
//! | lifecycle resumed                                      | A     | S     | R   | D   | A |
//! | lifecycle created                                      | A     | S     | R   | D   | P |
//! | lifecycle removed                                      | ×     | ×     | ×   | ×   | × |
//! | timer (a deadline is due)                              | A S   | S R D | R D | R D | P |
//! | resume (vigil restarted)                               | A     | S     | R   | D   | P |
//! | unwatched (nothing reached the log for a while)        | A     | S     | R   | D   | P |
//! | breaker closed                                         | A     | S     | R   | R D | P |
//! | turn (disruption modes: a held workspace's turn came)  | A     | S     | R   | R D | P |
//! | slot free                                              | A     | S     | R   | R D | P |
//! | fleet verdict (P > 1: its declaration came back)       | A     | S R D | R   | D   | P |
//!
//! The machine is pure. Time is `ctx.now` (from event timestamps), outputs are pushed to `ctx.out`,
//! and fleet-wide admission (breaker, cap) is consulted through `ctx.fleet`. Handlers never emit
//! from entry actions (there are none): restoring a snapshot must not repeat side effects. A
//! handler reaches another state only through `ctx.to(target, reason, ..)`, which announces the
//! target (`state_changed`) as it returns the transition; the outputs it emits after that call
//! follow the announcement.

use serde::{Deserialize, Serialize};
use statig::prelude::*;

use crate::cadence::{Cadence, Overdue, overdue_at};
use crate::classify::{Evidence, classify_probe, is_dead_origin};
use crate::event::*;
use crate::fleet::{Declaration, Fleet, Handle, Pass};
use crate::ids::{self, IdKey};
use crate::policy::Policy;
use crate::time::{At, Stamp};

/// What every state knows about its workspace (statig's shared storage).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Workspace {
    /// Declared heartbeat cadence in seconds; 0 until a heartbeat declares one.
    pub interval_s: u16,
    /// Consecutive restarts that did not end in a fresh heartbeat (crash-loop count).
    pub failures: u8,
    /// Restart commands issued over the workspace's life (the `n` of `restart_id`).
    pub restarts: u32,
    /// Probe requests issued over the workspace's life (the `n` of `probe_id`).
    pub probes: u32,
    /// When the current state was entered.
    pub since: At,
    /// The latest heartbeat that counted.
    pub last_heartbeat: Stamp,
    /// Silence is measured from here: the latest heartbeat, or a moment of full grace
    /// (creation, resume, vigil's own restart, the breaker closing).
    pub watch_from: At,
    /// An unanswered probe request, if any.
    pub probe_asked: Stamp,
    /// The latest restart command (debounce; freshness of heartbeats).
    pub last_restart: Stamp,
    /// When the workspace last left Restarting (settle window).
    pub left_restarting: Stamp,
    /// The incarnation of the latest heartbeat that counted (inline up to 24 bytes).
    pub incarnation: Option<compact_str::CompactString>,
    /// [`incarnation_hash`] of it (0 for none): compared on every heartbeat without touching the
    /// string, which lives elsewhere on the heap.
    pub incarnation_hash: u64,
    /// The heartbeat cadence learned so far (when a heartbeat is overdue). Last, and defaulted,
    /// so records from before it read as they were written (with nothing learned yet).
    #[serde(default)]
    pub cadence: Cadence,
}

/// Suspect's own data: the evidence gathered so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Suspicion {
    /// Why the workspace became Suspect.
    pub cause: Reason,
    /// The first definitive not-running of the current confirm window.
    pub first_not_running: Stamp,
    /// When the silence (no heartbeat for `ttl`) began, if it has.
    pub silent_since: Stamp,
    /// When vigil asks for a probe again, if it will.
    pub next_reprobe: Stamp,
    /// Re-asks left.
    pub reprobes_left: u8,
    /// Held by the open breaker: a death declaration waits for fresh evidence after it closes.
    pub held: bool,
    /// With several partitions: a death declaration waits for its `declaration` record to come
    /// back with the fleet breaker's verdict (`Event::FleetVerdict`). Defaulted, so records from
    /// before it (one element shorter) read as they were written; always written, because the
    /// store's records are positional and a field after it must not slide into its place.
    #[serde(default)]
    pub pending: bool,
    /// The heartbeat became overdue while Suspect, and vigil asked about it.
    #[serde(default)]
    pub overdue: bool,
    /// Held by the declaration breaker, which has closed since: the fleet's evidence was just
    /// found unreliable, so only silence for a whole `ttl` since the close, and a definitive
    /// probe, convict it (`breaker_recently_open`), until a heartbeat or a `running` probe ends it.
    /// Defaulted (records from before it are shorter) and always written, like `pending`.
    #[serde(default)]
    pub calmed: bool,
    /// Held by the disruption modes, and its turn came: its token is spent, a fresh probe was
    /// asked, and one definitive not-running restarts it. Last: left out when false, defaulted
    /// when absent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub turn: bool,
}

impl Suspicion {
    /// ttl: silent for a whole `ttl`; a probe is asked at once and re-asked.
    fn silent(ctx: &Ctx<'_>) -> Suspicion {
        Suspicion {
            cause: Reason::HeartbeatTimeout,
            first_not_running: Stamp::NEVER,
            silent_since: Stamp::at(ctx.now),
            next_reprobe: Stamp::at(ctx.now.plus(ctx.policy.reprobe_every)),
            reprobes_left: ctx.policy.reprobe_max,
            held: false,
            pending: false,
            overdue: false,
            calmed: false,
            turn: false,
        }
    }

    /// Overdue: the heartbeat is later than this workspace's own cadence makes probable; a probe
    /// is asked at once and re-asked.
    fn overdue(ctx: &Ctx<'_>) -> Suspicion {
        Suspicion {
            cause: Reason::HeartbeatOverdue,
            silent_since: Stamp::NEVER,
            overdue: true,
            ..Suspicion::silent(ctx)
        }
    }

    /// flake: one definitive not-running that needs a second opinion within the confirm window.
    fn not_running(cause: Reason, ctx: &Ctx<'_>) -> Suspicion {
        Suspicion {
            cause,
            first_not_running: Stamp::at(ctx.now),
            silent_since: Stamp::NEVER,
            next_reprobe: Stamp::at(ctx.now.plus(ctx.policy.reprobe_every)),
            reprobes_left: ctx.policy.reprobe_max,
            held: false,
            pending: false,
            overdue: false,
            calmed: false,
            turn: false,
        }
    }

    /// cascade: a death declaration the open breaker holds; nothing fires until it closes.
    fn held(cause: Reason, ctx: &Ctx<'_>) -> Suspicion {
        Suspicion {
            cause,
            first_not_running: Stamp::at(ctx.now),
            silent_since: Stamp::NEVER,
            next_reprobe: Stamp::NEVER,
            reprobes_left: 0,
            held: true,
            pending: false,
            overdue: false,
            calmed: false,
            turn: false,
        }
    }
}

/// Restarting's own data: the restart in flight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    pub origin: Origin,
    /// No fresh heartbeat by then: the restart failed.
    pub deadline: At,
    /// Some progress event for this restart arrived.
    pub progress_seen: bool,
    /// `restart_progress started` arrived.
    pub started: bool,
    /// Mutation requests arrived meanwhile: one follow-up restart is owed.
    pub followup: bool,
}

/// Dead's own data: why, and what the next automatic restart waits for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Waiting {
    pub cause: Reason,
    pub on: Wait,
    /// With `Wait::Time`: when the restart is reconsidered.
    pub until: Stamp,
}

/// What a dead workspace's automatic restart is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Wait {
    /// Debounce or crash-loop backoff: a time.
    Time,
    /// The fleet breaker to close.
    Breaker,
    /// A restart slot (`max_restarts_in_flight`).
    Queue,
    /// A person: too many consecutive failures.
    GaveUp,
}

/// What a machine is told: an input, a timer, or a fleet-level happening.
#[derive(Debug)]
pub enum Event<'a> {
    Heartbeat(&'a Heartbeat),
    Probe(&'a Probe),
    Upstream(&'a UpstreamError),
    RestartRequested(&'a RestartRequested),
    Progress(&'a RestartProgress),
    Lifecycle(LifecyclePhase),
    /// One of the machine's deadlines is due (`ctx.now` is that deadline).
    Timer,
    /// vigil restarted: re-arm every deadline with full grace (logs from before `unwatched`).
    Resume,
    /// Nobody watched for this long (nothing reached the log): every deadline moves this much
    /// later, so only watched time counts towards it.
    Unwatched(std::time::Duration),
    /// The fleet breaker closed.
    BreakerClosed,
    /// The disruption modes gave this held workspace its turn (`Fleet::turn`; its token is spent).
    Turn,
    /// A restart slot freed up and this workspace is next in the queue.
    SlotFree,
    /// With several partitions: this workspace's death declaration came back through the stream,
    /// and the fleet breaker admitted it (`admitted`) or holds it.
    FleetVerdict {
        admitted: bool,
        reason: Reason,
    },
}

/// One output before the engine gives it an id and a timestamp.
#[derive(Clone, Debug, PartialEq)]
pub struct Emitted {
    /// Fleet-level (an alert with no workspace).
    pub fleet: bool,
    pub body: OutputBody,
}

/// What a handler works with: the clock, the policy, the fleet, and where outputs go.
pub struct Ctx<'a> {
    pub now: At,
    pub policy: &'a Policy,
    /// The policy's overdue rule (`core::cadence`), derived once by the engine.
    pub overdue: Overdue,
    /// The key output ids take their tags from (`core::ids`), if the log carried one.
    pub id_key: Option<&'a IdKey>,
    /// This workspace's restart in flight when the first key came, issued with a plain id.
    pub plain_restart: Option<u32>,
    pub ws: &'a WorkspaceId,
    pub handle: Handle,
    pub fleet: &'a mut Fleet,
    pub out: &'a mut Vec<Emitted>,
    /// The type of the input being handled (`None` for timers and fleet happenings).
    pub input: Option<InputType>,
    /// The state as announced so far in this dispatch (updated by `Ctx::to` and `Ctx::pass`).
    pub current: StateName,
    /// Set when `lifecycle removed` was handled: the engine deletes the workspace.
    pub removed: bool,
}

#[state_machine(
    initial = "State::alive()",
    state(derive(Clone, Debug, PartialEq, Serialize, Deserialize)),
    superstate(derive(Debug)),
    after_transition = "Self::after_transition",
    context_identifier = "ctx"
)]
impl Workspace {
    /// Rules every state shares, unless the state handles the event itself.
    #[superstate]
    fn tracked(&mut self, ctx: &mut Ctx<'_>, event: &Event<'_>) -> Outcome<State> {
        match event {
            // Dormant workspaces are inviolable: a health sweep must not clobber them.
            Event::Lifecycle(phase @ (LifecyclePhase::Paused | LifecyclePhase::Hibernated)) => {
                let reason = if *phase == LifecyclePhase::Paused { Reason::Paused } else { Reason::Hibernated };
                ctx.to(State::parked(), reason, None)
            }
            // Removal deletes the state; the engine leaves a tombstone on disk.
            Event::Lifecycle(LifecyclePhase::Removed) => {
                ctx.remove();
                Handled
            }
            Event::Lifecycle(LifecyclePhase::Created | LifecyclePhase::Resumed) => {
                ctx.suppress(Reason::LifecycleNoop, Some(format!("already {}", ctx.current)));
                Handled
            }
            // burst: user and mutation restarts are never dropped; system ones are admitted.
            Event::RestartRequested(req) => self.requested(ctx, req),
            Event::Progress(p) => {
                ctx.suppress(Reason::StaleRestart, Some(format!("{} is not in flight", p.restart_id)));
                Handled
            }
            Event::Resume => {
                self.resumed(ctx);
                Handled
            }
            // Silence nobody observed is not evidence: only watched time counts.
            Event::Unwatched(gap) => {
                self.unwatched(*gap);
                Handled
            }
            Event::Heartbeat(_)
            | Event::Probe(_)
            | Event::Upstream(_)
            | Event::Timer
            | Event::BreakerClosed
            | Event::Turn
            | Event::SlotFree
            | Event::FleetVerdict { .. } => Handled,
        }
    }

    /// Heartbeats arrive; nothing is wrong.
    #[state(superstate = "tracked")]
    fn alive(&mut self, ctx: &mut Ctx<'_>, event: &Event<'_>) -> Outcome<State> {
        self.forgive_failures(ctx);
        match event {
            Event::Heartbeat(hb) => {
                self.note_heartbeat(ctx, hb);
                Handled
            }
            Event::Probe(probe) => match self.probe_answer(ctx, probe) {
                // cascade: only definitive evidence reaches this arm.
                Some(Evidence::NotRunning) => self.not_running_while_alive(ctx),
                _ => Handled,
            },
            // dead-vm: a dead-origin 502/503/504/52x or transport error asks for a probe.
            Event::Upstream(up) => self.upstream(ctx, up),
            // ttl: silence only counts after max(180 s, 5 × interval), then a probe decides.
            Event::Timer if self.silence_due(ctx) => {
                let next = ctx.to(State::suspect(Suspicion::silent(ctx)), Reason::HeartbeatTimeout, None);
                self.ask_probe(ctx, Reason::HeartbeatTimeout);
                next
            }
            // detection: later than its own cadence makes probable: ask at once, long before the
            // TTL (asking is not destructive).
            Event::Timer if self.is_overdue(ctx) == Some(true) => {
                let next = ctx.to(State::suspect(Suspicion::overdue(ctx)), Reason::HeartbeatOverdue, None);
                self.ask_probe(ctx, Reason::HeartbeatOverdue);
                next
            }
            _ => Super,
        }
    }

    /// Some evidence says the workspace may be gone; more is needed before anything destructive.
    #[state(superstate = "tracked")]
    fn suspect(&mut self, s: &mut Suspicion, ctx: &mut Ctx<'_>, event: &Event<'_>) -> Outcome<State> {
        match event {
            // flake: a heartbeat after suspicion refutes it.
            Event::Heartbeat(hb) => {
                self.note_heartbeat(ctx, hb);
                ctx.to(State::alive(), Reason::Refuted, None)
            }
            Event::Probe(probe) => match self.probe_answer(ctx, probe) {
                // ttl: a running container refutes the silence too; count it again from now.
                Some(Evidence::Running) => {
                    self.watch_from = ctx.now;
                    ctx.to(State::alive(), Reason::Refuted, None)
                }
                Some(Evidence::NotRunning) => self.not_running_while_suspect(ctx, s),
                _ => Handled,
            },
            Event::Upstream(up) => self.upstream(ctx, up),
            Event::Timer => self.suspect_timer(ctx, s),
            // The breaker closed: full grace, a fresh probe, and death only on fresh evidence.
            Event::BreakerClosed if s.held => {
                s.held = false;
                s.calmed = true;
                s.first_not_running = Stamp::NEVER;
                s.silent_since = Stamp::NEVER;
                s.reprobes_left = ctx.policy.reprobe_max;
                s.next_reprobe = Stamp::at(ctx.now.plus(ctx.policy.reprobe_every));
                self.watch_from = ctx.now;
                self.ask_probe(ctx, Reason::BreakerCalm);
                Handled
            }
            // cascade: its turn came (oldest first, at `restart_rate`): a fresh probe decides.
            Event::Turn if s.held => {
                s.held = false;
                s.turn = true;
                s.first_not_running = Stamp::NEVER;
                s.reprobes_left = ctx.policy.reprobe_max;
                s.next_reprobe = Stamp::at(ctx.now.plus(ctx.policy.reprobe_every));
                self.probe_asked = Stamp::NEVER;
                self.ask_probe(ctx, Reason::RestartTurn);
                Handled
            }
            // cascade: the fleet counted this partition's declaration, with everyone else's.
            Event::FleetVerdict { admitted, reason } if s.pending => {
                s.pending = false;
                if *admitted {
                    return self.enter_dead(ctx, *reason, Stamp::NEVER, Pass::New);
                }
                self.hold(ctx, *reason, s, Reason::BreakerOpen)
            }
            // Silence vigil did not observe is not evidence.
            Event::Resume => {
                self.resumed(ctx);
                s.silent_since = Stamp::NEVER;
                s.overdue = false;
                Handled
            }
            Event::Unwatched(gap) => {
                self.unwatched(*gap);
                s.overdue = false;
                s.first_not_running = s.first_not_running.later(*gap);
                s.silent_since = s.silent_since.later(*gap);
                s.next_reprobe = s.next_reprobe.later(*gap);
                Handled
            }
            _ => Super,
        }
    }

    /// A restart command is out; the workspace is expected to look dead until it boots.
    #[state(superstate = "tracked")]
    fn restarting(&mut self, r: &mut InFlight, ctx: &mut Ctx<'_>, event: &Event<'_>) -> Outcome<State> {
        match event {
            // self-fire: only a heartbeat from the new incarnation ends the restart.
            Event::Heartbeat(hb) if self.is_fresh(ctx, r, hb) => {
                self.note_heartbeat(ctx, hb);
                if r.followup {
                    // burst: the one follow-up owed to mutations coalesced during the restart.
                    ctx.pass(StateName::Alive, Reason::RestartCompleted, None);
                    return self.issue_restart(ctx, Origin::Mutation, Reason::MutationFollowup, None);
                }
                ctx.to(State::alive(), Reason::RestartCompleted, None)
            }
            Event::Heartbeat(_) => {
                ctx.suppress(Reason::StaleHeartbeat, Some("heartbeat from the incarnation being restarted".into()));
                Handled
            }
            // self-fire: the boot window looks like death; probes and upstream errors are ignored.
            Event::Probe(_) => {
                self.probe_asked = Stamp::NEVER;
                ctx.suppress(Reason::Restarting, None);
                Handled
            }
            Event::Upstream(_) => {
                ctx.suppress(Reason::Restarting, None);
                Handled
            }
            Event::RestartRequested(req) => match req.origin {
                // self-fire: probe-driven restarts during a restart are dropped.
                Origin::System => {
                    ctx.suppress(Reason::RestartInFlight, Some(req.reason.clone()));
                    Handled
                }
                // burst: N mutations during a restart owe exactly one follow-up, never zero.
                Origin::Mutation => {
                    r.followup = true;
                    ctx.suppress(Reason::RestartCoalesced, Some(req.reason.clone()));
                    Handled
                }
                // A person's restart supersedes the one in flight, at once.
                Origin::User => {
                    self.failures = 0;
                    self.issue_restart(ctx, Origin::User, Reason::RestartRequested, Some(req.reason.clone()))
                }
            },
            Event::Progress(p) if p.restart_id != ctx.restart_id(self.restarts) => {
                ctx.suppress(Reason::StaleRestart, Some(format!("{} is not the restart in flight", p.restart_id)));
                Handled
            }
            Event::Progress(p) => match p.phase {
                ProgressPhase::Accepted | ProgressPhase::Stopped => {
                    r.progress_seen = true;
                    Handled
                }
                ProgressPhase::Started => {
                    r.progress_seen = true;
                    r.started = true;
                    Handled
                }
                ProgressPhase::Failed => self.restart_failed(ctx, r, Reason::RestartFailed),
            },
            Event::Timer if ctx.now >= r.deadline => self.restart_failed(ctx, r, Reason::RestartTimeout),
            Event::Resume => {
                self.resumed(ctx);
                r.deadline = ctx.now.plus(ctx.policy.restart_timeout);
                Handled
            }
            Event::Unwatched(gap) => {
                self.unwatched(*gap);
                r.deadline = r.deadline.plus(*gap);
                Handled
            }
            _ => Super,
        }
    }

    /// Declared dead on definitive evidence; an automatic restart is owed.
    #[state(superstate = "tracked")]
    fn dead(&mut self, w: &mut Waiting, ctx: &mut Ctx<'_>, event: &Event<'_>) -> Outcome<State> {
        match event {
            Event::Heartbeat(hb) => {
                self.note_heartbeat(ctx, hb);
                ctx.to(State::alive(), Reason::Recovered, None)
            }
            Event::Probe(_) | Event::Upstream(_) => {
                if matches!(event, Event::Probe(_)) {
                    self.probe_asked = Stamp::NEVER;
                }
                ctx.suppress(Reason::AlreadyDead, None);
                Handled
            }
            Event::Timer if w.on == Wait::Time && w.until.get().is_some_and(|t| ctx.now >= t) => {
                self.retry_restart(ctx, w)
            }
            Event::BreakerClosed | Event::Turn if w.on == Wait::Breaker => self.retry_restart(ctx, w),
            Event::SlotFree if w.on == Wait::Queue => self.retry_restart(ctx, w),
            Event::Unwatched(gap) => {
                self.unwatched(*gap);
                w.until = w.until.later(*gap);
                Handled
            }
            _ => Super,
        }
    }

    /// Paused or hibernated: dormant workspaces are left alone.
    #[state(superstate = "tracked")]
    fn parked(&mut self, ctx: &mut Ctx<'_>, event: &Event<'_>) -> Outcome<State> {
        match event {
            Event::Heartbeat(_) | Event::Upstream(_) => {
                ctx.suppress(Reason::Parked, None);
                Handled
            }
            Event::Probe(_) => {
                self.probe_asked = Stamp::NEVER;
                ctx.suppress(Reason::Parked, None);
                Handled
            }
            Event::RestartRequested(req) if req.origin == Origin::System => {
                ctx.suppress(Reason::Parked, Some(req.reason.clone()));
                Handled
            }
            Event::Lifecycle(LifecyclePhase::Paused | LifecyclePhase::Hibernated) => {
                ctx.suppress(Reason::LifecycleNoop, Some("already parked".into()));
                Handled
            }
            Event::Lifecycle(LifecyclePhase::Resumed) => {
                self.watch_from = ctx.now;
                self.cadence.break_run();
                ctx.to(State::alive(), Reason::Resumed, None)
            }
            _ => Super,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The rules' building blocks.
// ---------------------------------------------------------------------------------------------

impl Workspace {
    /// A new workspace, first seen at `now`, with full grace for its heartbeat deadline.
    pub fn new(now: At) -> Workspace {
        Workspace {
            interval_s: 0,
            failures: 0,
            restarts: 0,
            probes: 0,
            since: now,
            last_heartbeat: Stamp::NEVER,
            watch_from: now,
            probe_asked: Stamp::NEVER,
            last_restart: Stamp::NEVER,
            left_restarting: Stamp::NEVER,
            incarnation: None,
            incarnation_hash: 0,
            cadence: Cadence::default(),
        }
    }

    /// statig hook: bookkeeping every transition shares.
    fn after_transition(&mut self, source: &State, target: &State, context: &mut Ctx<'_>) {
        let (from, to) = (source.name(), target.name());
        if from != to {
            self.since = context.now;
        }
        if from == StateName::Restarting && to != StateName::Restarting {
            self.left_restarting = Stamp::at(context.now);
        }
        // `Ctx::to` is the only way to a transition, and it announces the target.
        debug_assert_eq!(context.current, to, "transition {from} -> {to} announced as {}", context.current);
    }

    /// The failure count resets after `failure_reset` Alive (SPEC §3.4 backoff).
    fn forgive_failures(&mut self, ctx: &Ctx<'_>) {
        if self.failures > 0 && ctx.now.since(self.since) >= ctx.policy.failure_reset {
            self.failures = 0;
        }
    }

    fn note_heartbeat(&mut self, ctx: &Ctx<'_>, hb: &Heartbeat) {
        // detection: learn the cadence from the time since the last heartbeat, unless the agent
        // now promises another one (then learn it afresh).
        match hb.interval_s {
            Some(i) if self.interval_s != 0 && i != self.interval_s => self.cadence.reset(),
            _ => {
                // An outlier counts as the overdue time it came after (never before the promise).
                let since = self.last_heartbeat.get().map(|t| ctx.now.since(t));
                let overdue = ctx.overdue.after(&self.cadence).map(|d| d.max(ctx.policy.interval(self.interval_s)));
                self.cadence.learn(since, overdue);
            }
        }
        self.last_heartbeat = Stamp::at(ctx.now);
        self.watch_from = ctx.now;
        if let Some(i) = hb.interval_s {
            self.interval_s = i;
        }
        if let Some(inc) = &hb.incarnation {
            let hash = incarnation_hash(inc);
            if hash != self.incarnation_hash {
                self.incarnation = Some(compact_str::CompactString::new(inc));
                self.incarnation_hash = hash;
            }
        }
    }

    /// The heartbeat deadline (`ttl` after the last heartbeat or full-grace moment) has passed.
    /// Nobody watched for `gap`: every instant a window is measured from moves `gap` later.
    fn unwatched(&mut self, gap: std::time::Duration) {
        self.cadence.break_run();
        self.watch_from = self.watch_from.plus(gap);
        self.last_heartbeat = self.last_heartbeat.later(gap);
        self.probe_asked = self.probe_asked.later(gap);
        self.last_restart = self.last_restart.later(gap);
        self.left_restarting = self.left_restarting.later(gap);
    }

    /// vigil (re)started: full grace, and the time since the last heartbeat is not a sample.
    fn resumed(&mut self, ctx: &Ctx<'_>) {
        self.watch_from = ctx.now;
        self.cadence.break_run();
    }

    /// When the heartbeat is overdue (measured, like silence, from `watch_from`), for a workspace
    /// with enough history; `None` when only the TTL applies. Never before the cadence in force
    /// (the one it promised, or the default): an agent that heartbeated faster for a while is not
    /// late until it breaks its promise.
    fn overdue_deadline(&self, policy: &Policy, rule: &Overdue) -> Option<At> {
        let promised = self.watch_from.plus(policy.interval(self.interval_s));
        overdue_at(rule, &self.cadence, self.watch_from).map(|t| t.max(promised))
    }

    /// `Some(true)` overdue, `Some(false)` on schedule, `None` no history (or the rule is off).
    fn is_overdue(&self, ctx: &Ctx<'_>) -> Option<bool> {
        self.overdue_deadline(ctx.policy, &ctx.overdue).map(|t| ctx.now >= t)
    }

    /// Overdue, and not just out of a restart: one definitive not-running convicts. (flake: a
    /// restarted agent's first heartbeats may come slowly; within `settle` a second opinion is
    /// still needed.)
    fn convicted_by_silence(&self, ctx: &Ctx<'_>) -> bool {
        self.is_overdue(ctx) == Some(true) && !self.settling(ctx)
    }

    fn silence_due(&self, ctx: &Ctx<'_>) -> bool {
        ctx.now >= self.silence_deadline(ctx.policy)
    }

    fn silence_deadline(&self, policy: &Policy) -> At {
        self.watch_from.plus(policy.ttl(self.interval_s))
    }

    fn heartbeat_recent(&self, ctx: &Ctx<'_>) -> bool {
        self.last_heartbeat.within(ctx.now, ctx.policy.recent(self.interval_s))
    }

    fn settling(&self, ctx: &Ctx<'_>) -> bool {
        self.left_restarting.within(ctx.now, ctx.policy.settle)
    }

    /// Records a probe answer and says what it is evidence of; suppresses the ones not acted on.
    fn probe_answer(&mut self, ctx: &mut Ctx<'_>, probe: &Probe) -> Option<Evidence> {
        self.probe_asked = Stamp::NEVER;
        let evidence = classify_probe(probe);
        match evidence {
            // cascade: a sick observer is visible, never destructive.
            Evidence::Transient => ctx.suppress(Reason::ProbeErrorTransient, probe.error.clone()),
            // self-fire: booting is not death.
            Evidence::Booting => ctx.suppress(Reason::ProbePending, probe.backend.clone()),
            Evidence::Running | Evidence::NotRunning => {}
        }
        Some(evidence)
    }

    /// Alive, and a probe says definitively not running.
    fn not_running_while_alive(&mut self, ctx: &mut Ctx<'_>) -> Outcome<State> {
        // detection: silence and the probe agree: no confirm wait.
        if self.convicted_by_silence(ctx) {
            return self.declare_dead(ctx, Reason::NotRunningOverdue, None);
        }
        // lying probes: a heartbeat on schedule outweighs any probe; nothing to re-ask until the
        // heartbeat is overdue (that deadline asks).
        if self.is_overdue(ctx) == Some(false) {
            let settling = !self.heartbeat_recent(ctx) && self.settling(ctx);
            let cause = if settling { Reason::NotRunningSettling } else { Reason::NotRunningRecentHeartbeat };
            let s = Suspicion { next_reprobe: Stamp::NEVER, reprobes_left: 0, ..Suspicion::not_running(cause, ctx) };
            let next = ctx.to(State::suspect(s), cause, None);
            self.on_schedule(ctx);
            return next;
        }
        // flake: a recent heartbeat, or a restart that just finished, needs a second opinion.
        let cause = if self.heartbeat_recent(ctx) {
            Reason::NotRunningRecentHeartbeat
        } else if self.settling(ctx) {
            Reason::NotRunningSettling
        } else {
            // dead-vm: no heartbeat and not running: dead at once, recovered on the first failure.
            return self.declare_dead(ctx, Reason::NotRunningNoHeartbeat, None);
        };
        ctx.to(State::suspect(Suspicion::not_running(cause, ctx)), cause, None)
    }

    /// Suspect, and a probe says definitively not running.
    fn not_running_while_suspect(&mut self, ctx: &mut Ctx<'_>, s: &mut Suspicion) -> Outcome<State> {
        // cascade: held by the open breaker, every new piece of evidence is a declaration that
        // the breaker holds again (and counts).
        if s.held {
            return self.declare_dead(ctx, s.cause, Some(s));
        }
        // cascade: its turn came and the fresh probe agrees with the evidence that convicted it.
        if s.turn {
            return self.declare_dead(ctx, s.cause, Some(s));
        }
        // cascade: the fleet is counting this workspace's declaration already.
        if s.pending {
            ctx.suppress(Reason::DeclarationPending, Some("the fleet breaker's verdict is on its way".into()));
            return Handled;
        }
        // ttl: silent for a whole ttl (entered by heartbeat_timeout, or the silence came while
        // suspect): one definitive not-running is enough.
        if s.silent_since.get().is_some() && !self.heartbeat_recent(ctx) {
            return self.declare_dead(ctx, Reason::NotRunningNoHeartbeat, Some(s));
        }
        // cascade: the breaker held this workspace and has closed since: the fleet's evidence was
        // just found unreliable, so only a whole ttl of silence since then convicts (above).
        if s.calmed {
            ctx.suppress(
                Reason::BreakerRecentlyOpen,
                Some(format!(
                    "silent for {}s since the breaker closed convicts",
                    ctx.policy.ttl(self.interval_s).as_secs()
                )),
            );
            return Handled;
        }
        // detection: overdue, and definitively not running: silence and the probe agree.
        if self.convicted_by_silence(ctx) {
            return self.declare_dead(ctx, Reason::NotRunningOverdue, Some(s));
        }
        // lying probes: no number of not-runnings convicts while heartbeats are on schedule.
        if self.is_overdue(ctx) == Some(false) {
            (s.next_reprobe, s.reprobes_left) = (Stamp::NEVER, 0);
            self.on_schedule(ctx);
            return Handled;
        }
        // flake: two definitive not-runnings within the confirm window, or the count restarts.
        if s.first_not_running.within(ctx.now, ctx.policy.confirm_window) {
            return self.declare_dead(ctx, Reason::ConfirmedNotRunning, Some(s));
        }
        s.first_not_running = Stamp::at(ctx.now);
        ctx.suppress(
            Reason::AwaitingConfirmation,
            Some(format!("a second not-running within {}s confirms", ctx.policy.confirm_window.as_secs())),
        );
        Handled
    }

    /// Suspect's deadlines, most serious first.
    fn suspect_timer(&mut self, ctx: &mut Ctx<'_>, s: &mut Suspicion) -> Outcome<State> {
        if let Some(silent) = s.silent_since.get()
            && ctx.now >= silent.plus(ctx.policy.unprobeable_after)
        {
            // cascade: a workspace nobody can probe for 10 minutes is escalated, not ignored.
            ctx.alert(
                AlertKind::Unprobeable,
                Reason::Unprobeable,
                Some(format!("silent since {silent}, no definitive probe")),
            );
            return self.declare_dead(ctx, Reason::Unprobeable, Some(s));
        }
        if s.silent_since.get().is_none() && self.silence_due(ctx) {
            s.silent_since = Stamp::at(ctx.now);
            s.reprobes_left = ctx.policy.reprobe_max;
            s.next_reprobe = Stamp::at(ctx.now.plus(ctx.policy.reprobe_every));
            self.ask_probe(ctx, Reason::HeartbeatTimeout);
            return Handled;
        }
        // detection: suspect already (a probe said not running), and now overdue too: ask again,
        // and the answer decides.
        if s.silent_since.get().is_none() && !s.overdue && !s.calmed && self.is_overdue(ctx) == Some(true) {
            s.overdue = true;
            s.reprobes_left = ctx.policy.reprobe_max;
            s.next_reprobe = Stamp::at(ctx.now.plus(ctx.policy.reprobe_every));
            self.ask_probe(ctx, Reason::HeartbeatOverdue);
            return Handled;
        }
        if s.next_reprobe.get().is_some_and(|t| ctx.now >= t) {
            s.reprobes_left = s.reprobes_left.saturating_sub(1);
            s.next_reprobe =
                if s.reprobes_left > 0 { Stamp::at(ctx.now.plus(ctx.policy.reprobe_every)) } else { Stamp::NEVER };
            self.ask_probe(ctx, s.cause);
        }
        Handled
    }

    /// dead-vm: a failed request is a reason to ask, never a verdict.
    fn upstream(&mut self, ctx: &mut Ctx<'_>, up: &UpstreamError) -> Outcome<State> {
        if !is_dead_origin(up) {
            let what = up.status.map(|s| format!("status {s}")).or_else(|| up.error.clone());
            ctx.suppress(Reason::NotDeadOrigin, what);
            return Handled;
        }
        self.ask_probe(ctx, Reason::UpstreamDeadOrigin);
        Handled
    }

    /// lying probes: says why a not-running probe did not convict: the heartbeats are on schedule.
    fn on_schedule(&self, ctx: &mut Ctx<'_>) {
        let due =
            self.overdue_deadline(ctx.policy, &ctx.overdue).map(|t| format!("the next heartbeat is overdue at {t}"));
        ctx.suppress(Reason::HeartbeatOnSchedule, due);
    }

    /// Emits a `probe_request`, unless one is still outstanding.
    fn ask_probe(&mut self, ctx: &mut Ctx<'_>, reason: Reason) {
        if self.probe_asked.within(ctx.now, ctx.policy.probe_repeat) {
            ctx.suppress(Reason::ProbeOutstanding, None);
            return;
        }
        self.probes += 1;
        self.probe_asked = Stamp::at(ctx.now);
        ctx.emit(OutputBody::ProbeRequest { probe_id: format!("{}:p{}", ctx.ws, self.probes), reason });
    }

    /// An automatic death declaration: through the fleet breaker, then Dead (and a restart).
    fn declare_dead(&mut self, ctx: &mut Ctx<'_>, cause: Reason, suspicion: Option<&mut Suspicion>) -> Outcome<State> {
        // cascade: with several partitions the fleet counts it, in the stream's one order; the
        // workspace waits Suspect, nothing armed, for the verdict (`Event::FleetVerdict`).
        if ctx.fleet.is_shared() {
            ctx.fleet.declare_shared(ctx.ws, cause, true);
            let mut s = suspicion.cloned().unwrap_or_else(|| Suspicion::held(cause, ctx));
            (s.held, s.pending) = (false, true);
            return ctx.to(State::suspect(s), cause, None);
        }
        // cascade: the disruption modes: restarted now, or held for its turn (Suspect, no dead
        // state published: a proxy keeps routing to it).
        if ctx.fleet.modes(ctx.policy) {
            let pass = if suspicion.as_ref().is_some_and(|s| s.turn) { Pass::Turn } else { Pass::New };
            let Some(why) = ctx.fleet.gate(ctx.now, ctx.policy, pass) else {
                return self.enter_dead(ctx, cause, Stamp::NEVER, pass);
            };
            let mut s = suspicion.cloned().unwrap_or_else(|| Suspicion::held(cause, ctx));
            if s.turn {
                // Its turn came and the fleet got worse before the answer: its token goes back,
                // and it is first in line again.
                ctx.fleet.refund(ctx.policy, pass);
                (s.turn, s.held) = (false, true);
                ctx.fleet.hold_again(ctx.handle);
            }
            return self.hold(ctx, cause, &mut s, why);
        }
        match ctx.fleet.breaker.declare(ctx.now, ctx.fleet.monitored, ctx.policy) {
            Declaration::Go => self.enter_dead(ctx, cause, Stamp::NEVER, Pass::New),
            // cascade: many "deaths" at once indict the observer; hold them all as Suspect.
            Declaration::Held { opened } => {
                if opened {
                    let detail = format!(
                        "{} automatic death declarations within {}s among {} monitored workspaces",
                        ctx.fleet.breaker.recent_count(),
                        ctx.policy.breaker_window.as_secs(),
                        ctx.fleet.monitored
                    );
                    ctx.alert(AlertKind::BreakerOpen, Reason::BreakerThresholdExceeded, Some(detail));
                }
                let mut s = suspicion.cloned().unwrap_or_else(|| Suspicion::held(cause, ctx));
                self.hold(ctx, cause, &mut s, Reason::BreakerOpen)
            }
        }
    }

    /// cascade: a death declaration the breaker or the disruption modes hold (`why`): Suspect, in
    /// the held list, nothing armed until the breaker closes or its turn comes.
    fn hold(&mut self, ctx: &mut Ctx<'_>, cause: Reason, s: &mut Suspicion, why: Reason) -> Outcome<State> {
        if !s.held || ctx.current != StateName::Suspect {
            ctx.fleet.held.push(ctx.handle);
        }
        s.held = true;
        let next = ctx.to(State::suspect(s.clone()), cause, None);
        ctx.suppress(why, Some(format!("would be dead: {cause}")));
        next
    }

    /// Enters Dead for `cause` and tries the automatic restart at once (`pass`: how it comes to
    /// the fleet's gate).
    fn enter_dead(&mut self, ctx: &mut Ctx<'_>, cause: Reason, backoff_until: Stamp, pass: Pass) -> Outcome<State> {
        let w = Waiting { cause, on: Wait::Time, until: backoff_until };
        let verdict = self.restart_verdict(ctx, &w, pass);
        let retry_after_s = Some(verdict.retry_after_s(ctx));
        verdict.settle_token(ctx, pass);
        let Some((on, until)) = verdict.wait() else {
            // Dead only for as long as it takes to issue the restart.
            ctx.pass(StateName::Dead, cause, retry_after_s);
            return self.issue_restart(ctx, Origin::System, cause, None);
        };
        let next = ctx.to(State::dead(Waiting { cause, on, until }), cause, retry_after_s);
        self.hold_restart(ctx, &w, verdict);
        next
    }

    /// A dead workspace's wait is over (time, breaker, turn or slot): try the restart again.
    fn retry_restart(&mut self, ctx: &mut Ctx<'_>, w: &mut Waiting) -> Outcome<State> {
        // Its turn came (the token is spent), or it was admitted and queued for a slot (spent then).
        let pass = if ctx.fleet.turn == Some(ctx.handle) {
            Pass::Turn
        } else if w.on == Wait::Queue {
            Pass::Queued
        } else {
            Pass::New
        };
        let verdict = self.restart_verdict(ctx, w, pass);
        verdict.settle_token(ctx, pass);
        let Some((on, until)) = verdict.wait() else {
            return self.issue_restart(ctx, Origin::System, w.cause, None);
        };
        self.hold_restart(ctx, w, verdict);
        (w.on, w.until) = (on, until);
        Handled
    }

    /// SPEC §3.4 for vigil's own automatic restart, in order: give-up, debounce and backoff,
    /// breaker, concurrency cap. Reads only; `enter_dead` and `retry_restart` do what it says.
    fn restart_verdict(&self, ctx: &Ctx<'_>, w: &Waiting, pass: Pass) -> Verdict {
        if self.failures >= ctx.policy.give_up_after {
            return Verdict::GiveUp;
        }
        let debounce_end = self.last_restart.get().map(|t| t.plus(ctx.policy.debounce));
        let waits = [(w.until.get(), Reason::RestartBackoff), (debounce_end, Reason::RestartDebounced)];
        let latest =
            waits.into_iter().filter_map(|(t, r)| t.filter(|t| *t > ctx.now).map(|t| (t, r))).max_by_key(|(t, _)| *t);
        if let Some((until, reason)) = latest {
            return Verdict::Wait(reason, until);
        }
        if let Some(why) = ctx.fleet.gate(ctx.now, ctx.policy, pass) {
            return Verdict::Breaker(why);
        }
        if !ctx.fleet.has_slot(ctx.policy, ctx.handle) {
            return Verdict::Queue;
        }
        Verdict::Go
    }

    /// Says why vigil's own restart waits (a `suppressed` or an alert), and puts the workspace in
    /// the breaker's or the queue's list the first time it waits for one. `w` is the wait so far.
    fn hold_restart(&self, ctx: &mut Ctx<'_>, w: &Waiting, verdict: Verdict) {
        match verdict {
            Verdict::Go => debug_assert!(false, "a restart that may go is issued, not held"),
            Verdict::GiveUp => {
                if w.on != Wait::GaveUp {
                    let detail = format!(
                        "{} consecutive restarts did not end in a fresh heartbeat; only a user restart goes now",
                        self.failures
                    );
                    ctx.alert(AlertKind::RestartGaveUp, Reason::CrashLoop, Some(detail));
                }
            }
            Verdict::Wait(reason, until) => {
                let after = ctx.now.secs_until_ceil(until);
                ctx.emit(OutputBody::Suppressed { reason, input: ctx.input, detail: None, retry_after_s: Some(after) });
            }
            Verdict::Breaker(why) => {
                if w.on != Wait::Breaker {
                    ctx.fleet.held.push(ctx.handle);
                }
                ctx.suppress(why, Some("automatic restart held".into()));
            }
            Verdict::Queue => {
                if w.on != Wait::Queue {
                    ctx.fleet.enqueue(ctx.handle, self.last_heartbeat.get().is_some());
                }
                let detail = format!("{} automatic restarts in flight", ctx.fleet.in_flight);
                ctx.suppress(Reason::RestartQueueFull, Some(detail));
            }
        }
    }

    /// A `restart_requested` outside Restarting and Parked.
    fn requested(&mut self, ctx: &mut Ctx<'_>, req: &RestartRequested) -> Outcome<State> {
        let detail = Some(req.reason.clone());
        match req.origin {
            Origin::User => {
                self.failures = 0;
                self.issue_restart(ctx, Origin::User, Reason::RestartRequested, detail)
            }
            Origin::Mutation => self.issue_restart(ctx, Origin::Mutation, Reason::RestartRequested, detail),
            Origin::System if ctx.current == StateName::Dead => {
                ctx.suppress(Reason::RestartPending, detail);
                Handled
            }
            Origin::System => self.system_request(ctx, detail),
        }
    }

    /// A `system` restart request for a live workspace passes the same admission as vigil's own.
    fn system_request(&mut self, ctx: &mut Ctx<'_>, detail: Option<String>) -> Outcome<State> {
        if self.failures >= ctx.policy.give_up_after {
            ctx.suppress(Reason::RestartGaveUp, detail);
            return Handled;
        }
        // self-fire: a system restart within `debounce` of the last command is dropped.
        if let Some(last) = self.last_restart.get() {
            let debounce_end = last.plus(ctx.policy.debounce);
            let attempt = u32::from(self.failures) + 1;
            let backoff_end = last.plus(ctx.policy.backoff(self.failures, ctx.ws.as_str(), attempt));
            for (end, reason) in [(debounce_end, Reason::RestartDebounced), (backoff_end, Reason::RestartBackoff)] {
                if ctx.now < end {
                    let after = ctx.now.secs_until_ceil(end);
                    ctx.emit(OutputBody::Suppressed { reason, input: ctx.input, detail, retry_after_s: Some(after) });
                    return Handled;
                }
            }
        }
        if ctx.fleet.modes(ctx.policy) {
            if let Some(why) = ctx.fleet.gate(ctx.now, ctx.policy, Pass::New) {
                ctx.suppress(why, detail);
                return Handled;
            }
            if !ctx.fleet.has_slot(ctx.policy, ctx.handle) {
                ctx.suppress(Reason::RestartQueueFull, detail);
                return Handled;
            }
            ctx.fleet.spend(ctx.now, ctx.policy, Pass::New);
            return self.issue_restart(ctx, Origin::System, Reason::RestartRequested, detail);
        }
        let declared = if ctx.fleet.is_shared() {
            // Counted by the fleet when its record comes back; admitted as the breaker stands now.
            ctx.fleet.declare_shared(ctx.ws, Reason::RestartRequested, false);
            if ctx.fleet.breaker.is_open() { Declaration::Held { opened: false } } else { Declaration::Go }
        } else {
            ctx.fleet.breaker.declare(ctx.now, ctx.fleet.monitored, ctx.policy)
        };
        if let Declaration::Held { opened } = declared {
            if opened {
                ctx.alert(
                    AlertKind::BreakerOpen,
                    Reason::BreakerThresholdExceeded,
                    Some("system restart requests over threshold".into()),
                );
            }
            ctx.suppress(Reason::BreakerOpen, detail);
            return Handled;
        }
        if !ctx.fleet.has_slot(ctx.policy, ctx.handle) {
            ctx.suppress(Reason::RestartQueueFull, detail);
            return Handled;
        }
        self.issue_restart(ctx, Origin::System, Reason::RestartRequested, detail)
    }

    /// Emits the restart command and enters Restarting.
    fn issue_restart(
        &mut self,
        ctx: &mut Ctx<'_>,
        origin: Origin,
        reason: Reason,
        detail: Option<String>,
    ) -> Outcome<State> {
        self.restarts += 1;
        self.last_restart = Stamp::at(ctx.now);
        self.probe_asked = Stamp::NEVER;
        self.cadence.break_run();
        let in_flight = InFlight {
            origin,
            deadline: ctx.now.plus(ctx.policy.restart_timeout),
            progress_seen: false,
            started: false,
            followup: false,
        };
        // A restart superseding the one in flight stays in Restarting: nothing new to announce.
        let retry_after_s = Some(ctx.policy.restart_retry_after_s);
        let next = ctx.to(State::restarting(in_flight), Reason::RestartIssued, retry_after_s);
        ctx.emit(OutputBody::Restart {
            restart_id: ctx.restart_id(self.restarts),
            origin,
            reason,
            attempt: u32::from(self.failures) + 1,
            detail,
        });
        next
    }

    /// The restart did not end in a fresh heartbeat: count it and go Dead with backoff.
    fn restart_failed(&mut self, ctx: &mut Ctx<'_>, r: &InFlight, cause: Reason) -> Outcome<State> {
        self.failures = self.failures.saturating_add(1);
        if r.followup {
            // burst: the owed mutation restart is never held, not even by a crash loop.
            ctx.pass(StateName::Dead, cause, Some(ctx.policy.restart_retry_after_s));
            return self.issue_restart(ctx, Origin::Mutation, Reason::MutationFollowup, None);
        }
        // cascade: restarts failing across the fleet at once indict the control plane, so they
        // count as automatic death declarations; while the breaker is open the next one waits.
        // (With several partitions the fleet counts it when its record comes back.)
        // (The disruption modes need no count: the failed workspace is Dead, and its retry waits
        // for a token like any automatic restart.)
        if ctx.fleet.is_shared() {
            ctx.fleet.declare_shared(ctx.ws, cause, false);
        } else if !ctx.fleet.modes(ctx.policy)
            && let Declaration::Held { opened: true } =
                ctx.fleet.breaker.declare(ctx.now, ctx.fleet.monitored, ctx.policy)
        {
            let detail = format!(
                "{} restarts failed or timed out within {}s",
                ctx.fleet.breaker.recent_count(),
                ctx.policy.breaker_window.as_secs()
            );
            ctx.alert(AlertKind::BreakerOpen, Reason::BreakerThresholdExceeded, Some(detail));
        }
        let attempt = u32::from(self.failures) + 1;
        let until = ctx.now.plus(ctx.policy.backoff(self.failures, ctx.ws.as_str(), attempt));
        self.enter_dead(ctx, cause, Stamp::at(until), Pass::New)
    }

    /// self-fire: is this heartbeat from the new incarnation?
    fn is_fresh(&self, ctx: &Ctx<'_>, r: &InFlight, hb: &Heartbeat) -> bool {
        match &hb.incarnation {
            Some(inc) => incarnation_hash(inc) != self.incarnation_hash,
            None if r.progress_seen => r.started,
            None => self.last_restart.get().is_some_and(|t| ctx.now.since(t) > ctx.policy.fresh_after),
        }
    }
}

/// FNV-1a of an incarnation, never 0. Stable across builds, so it may be persisted; two different
/// incarnations colliding (about 2⁻⁶⁴) would only make a fresh heartbeat look stale, and the
/// restart would time out and be retried.
pub fn incarnation_hash(incarnation: &str) -> u64 {
    crate::hash::fnv1a64(incarnation.as_bytes()).max(1)
}

/// What vigil's own automatic restart may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Go,
    Wait(Reason, At),
    /// Held by the breaker or the disruption modes, for this reason.
    Breaker(Reason),
    Queue,
    GiveUp,
}

impl Verdict {
    /// Whether the restart passed the fleet's gate (it goes now, or waits only for a slot): the
    /// moment its token is spent.
    fn admitted(self) -> bool {
        matches!(self, Verdict::Go | Verdict::Queue)
    }

    /// Keeps the token bucket exact: a restart admitted now takes its token (if it had none yet);
    /// one that had a token and does not go after all (debounce, backoff, give-up, held again)
    /// gives it back, and waits its turn again later.
    fn settle_token(self, ctx: &mut Ctx<'_>, pass: Pass) {
        if self.admitted() {
            ctx.fleet.spend(ctx.now, ctx.policy, pass);
        } else {
            ctx.fleet.refund(ctx.policy, pass);
        }
    }

    /// What a dead workspace waits for under this verdict; `None` when the restart goes now.
    fn wait(self) -> Option<(Wait, Stamp)> {
        match self {
            Verdict::Go => None,
            Verdict::Wait(_, until) => Some((Wait::Time, Stamp::at(until))),
            Verdict::Breaker(_) => Some((Wait::Breaker, Stamp::NEVER)),
            Verdict::Queue => Some((Wait::Queue, Stamp::NEVER)),
            Verdict::GiveUp => Some((Wait::GaveUp, Stamp::NEVER)),
        }
    }

    fn retry_after_s(self, ctx: &Ctx<'_>) -> u32 {
        match self {
            Verdict::Go => ctx.policy.restart_retry_after_s,
            Verdict::Wait(_, until) => ctx.now.secs_until_ceil(until) + ctx.policy.restart_retry_after_s,
            Verdict::Breaker(_) | Verdict::Queue | Verdict::GiveUp => ctx.policy.dead_retry_after_s,
        }
    }
}

impl Ctx<'_> {
    /// The id of this workspace's `n`-th restart command.
    pub fn restart_id(&self, n: u32) -> String {
        let key = self.id_key.filter(|_| self.plain_restart != Some(n));
        ids::restart_id(key, self.ws, n)
    }

    /// The only way to a transition: announces `target` with `reason` (a `state_changed`, unless
    /// the workspace is already there — a restart superseding the one in flight, a held suspect
    /// held again) and returns the transition. Outputs emitted after it follow the announcement.
    fn to(&mut self, target: State, reason: Reason, retry_after_s: Option<u32>) -> Outcome<State> {
        if self.current != target.name() {
            self.announce(Some(target.name()), reason, retry_after_s);
        }
        Transition(target)
    }

    /// Announces a state the workspace passes through without resting in it: Dead or Alive for
    /// the moment before a restart is issued. A transition (`to`) must follow.
    fn pass(&mut self, through: StateName, reason: Reason, retry_after_s: Option<u32>) {
        debug_assert_ne!(self.current, through, "passing through the state it is in");
        self.announce(Some(through), reason, retry_after_s);
    }

    /// `lifecycle removed`: announces the end (`to` null); the engine deletes the workspace.
    fn remove(&mut self) {
        self.announce(None, Reason::Removed, None);
        self.removed = true;
    }

    fn announce(&mut self, to: Option<StateName>, reason: Reason, retry_after_s: Option<u32>) {
        let from = Some(self.current);
        self.out.push(Emitted { fleet: false, body: OutputBody::StateChanged { from, to, reason, retry_after_s } });
        if let Some(to) = to {
            self.current = to;
        }
    }

    /// Emits an output about this workspace.
    pub fn emit(&mut self, body: OutputBody) {
        self.out.push(Emitted { fleet: false, body });
    }

    /// Emits a `suppressed` output for the input being handled.
    pub fn suppress(&mut self, reason: Reason, detail: Option<String>) {
        let input = self.input;
        self.emit(OutputBody::Suppressed { reason, input, detail, retry_after_s: None });
    }

    /// Emits an alert; breaker alerts are fleet-level, the others are about this workspace.
    pub fn alert(&mut self, kind: AlertKind, reason: Reason, detail: Option<String>) {
        let fleet = matches!(kind, AlertKind::BreakerOpen | AlertKind::BreakerClosed);
        self.out.push(Emitted { fleet, body: OutputBody::Alert { kind, reason, detail } });
    }
}

impl State {
    /// The state a workspace first seen as paused or hibernated starts in.
    pub fn initial_parked() -> State {
        State::parked()
    }

    /// The state's name on the wire.
    pub fn name(&self) -> StateName {
        match self {
            State::Alive {} => StateName::Alive,
            State::Suspect { .. } => StateName::Suspect,
            State::Restarting { .. } => StateName::Restarting,
            State::Dead { .. } => StateName::Dead,
            State::Parked {} => StateName::Parked,
        }
    }

    /// An automatic (`system`) restart in flight: it occupies one of the fleet's slots.
    pub fn holds_restart_slot(&self) -> bool {
        matches!(self, State::Restarting { r } if r.origin == Origin::System)
    }

    /// The earliest instant at which this state wants a `Timer` event.
    pub fn next_deadline(&self, ws: &Workspace, policy: &Policy, rule: &Overdue) -> Option<At> {
        let silence = ws.silence_deadline(policy);
        let overdue = ws.overdue_deadline(policy, rule).filter(|t| *t < silence);
        match self {
            State::Alive {} => Some(overdue.unwrap_or(silence)),
            // Held by the breaker: nothing fires until it closes and re-arms everything; waiting
            // for the fleet's verdict: nothing fires until it comes.
            State::Suspect { s } if s.held || s.pending => None,
            State::Suspect { s } => {
                let death_or_silence = match s.silent_since.get() {
                    Some(silent) => silent.plus(policy.unprobeable_after),
                    None if !s.overdue && !s.calmed => overdue.unwrap_or(silence),
                    None => silence,
                };
                Some(s.next_reprobe.get().map_or(death_or_silence, |t| t.min(death_or_silence)))
            }
            State::Restarting { r } => Some(r.deadline),
            State::Dead { w } if w.on == Wait::Time => w.until.get(),
            State::Dead { .. } | State::Parked {} => None,
        }
    }

    /// What a proxy should put in a 503's `Retry-After` for a workspace in this state.
    pub fn retry_after_s(&self, now: At, policy: &Policy) -> Option<u32> {
        match self {
            State::Restarting { .. } => Some(policy.restart_retry_after_s),
            State::Dead { w } => Some(match (w.on, w.until.get()) {
                (Wait::Time, Some(until)) => now.secs_until_ceil(until) + policy.restart_retry_after_s,
                _ => policy.dead_retry_after_s,
            }),
            _ => None,
        }
    }
}
