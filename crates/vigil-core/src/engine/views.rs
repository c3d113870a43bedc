//! Read-only views of a workspace and of the fleet, for queries, metrics and `vigil inspect`.

use super::*;
use crate::disruption::Mode;

/// A read-only view of one workspace, for queries and `vigil inspect`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkspaceView {
    pub workspace: WorkspaceId,
    pub state: StateName,
    pub since: At,
    pub last_heartbeat: Option<At>,
    pub interval_s: u16,
    pub incarnation: Option<String>,
    /// Restart commands issued over the workspace's life.
    pub restarts: u32,
    /// While Restarting: the id of the restart command in flight. A consumer can check a restart
    /// command against it before acting, so a forged command is recognised as one.
    pub restart_in_flight: Option<String>,
    /// The attempt number the next restart would carry (1 + consecutive failures).
    pub restart_attempt: u32,
    /// A mutation follow-up restart is owed when the current restart completes.
    pub followup_pending: bool,
    /// Held by the fleet breaker.
    pub held: bool,
    /// What a dead workspace's restart waits for (`time`, `breaker`, `queue`, `gave_up`).
    pub waiting_on: Option<&'static str>,
    pub next_deadline: Option<At>,
    pub retry_after_s: Option<u32>,
}

/// Fleet-wide figures, for queries and metrics.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FleetView {
    pub workspaces: usize,
    pub alive: u32,
    pub suspect: u32,
    pub restarting: u32,
    pub dead: u32,
    pub parked: u32,
    /// With the disruption modes: the fleet is not healthy. Else: the declaration breaker is open.
    pub breaker_open: bool,
    /// When it is due to close (the disruption mode to step down), if it is calm enough to.
    pub breaker_close_at: Option<At>,
    /// The disruption mode (none when the modes are off: several partitions, `restart_rate = 0`).
    pub disruption: Option<Mode>,
    /// The active fleet (heard from, neither parked nor given up on), and how many of it are
    /// Suspect or Dead (`core::disruption::Census`; 0 when the modes are off).
    pub active: u32,
    pub unhealthy: u32,
    pub restarts_in_flight: u32,
    pub restart_queue: usize,
    pub held: usize,
}

impl Engine {
    /// One workspace's state, as queries and `vigil inspect` show it.
    pub fn view(&self, ws: &str) -> Option<WorkspaceView> {
        let idx = self.lookup(ws)?;
        let slot = &self.slots[idx as usize];
        let machine = slot.machine.as_ref()?;
        let (state, shared) = (machine.state(), machine.inner());
        let now = self.clock().unwrap_or(shared.since);
        Some(WorkspaceView {
            workspace: slot.name.clone(),
            state: state.name(),
            since: shared.since,
            last_heartbeat: shared.last_heartbeat.get(),
            interval_s: if shared.interval_s == 0 { self.policy.default_interval_s } else { shared.interval_s },
            incarnation: shared.incarnation.as_deref().map(str::to_string),
            restarts: shared.restarts,
            restart_in_flight: matches!(state, State::Restarting { .. }).then(|| {
                let plain = self.plain_restarts.get(&slot.name) == Some(&shared.restarts);
                ids::restart_id(self.id_key.as_ref().filter(|_| !plain), &slot.name, shared.restarts)
            }),
            restart_attempt: u32::from(shared.failures) + 1,
            followup_pending: matches!(state, State::Restarting { r } if r.followup),
            held: fleet_list(state) == FleetList::Held,
            waiting_on: match state {
                State::Dead { w } => Some(match w.on {
                    Wait::Time => "time",
                    Wait::Breaker => "breaker",
                    Wait::Queue => "queue",
                    Wait::GaveUp => "gave_up",
                }),
                _ => None,
            },
            next_deadline: state.next_deadline(shared, &self.policy, &self.overdue),
            retry_after_s: state.retry_after_s(now, &self.policy),
        })
    }

    /// Every workspace id, sorted.
    pub fn workspace_ids(&self) -> Vec<WorkspaceId> {
        let mut ids: Vec<_> = self.slots.iter().filter(|s| s.machine.is_some()).map(|s| s.name.clone()).collect();
        ids.sort();
        ids
    }

    /// Counts per state and the fleet's admission status.
    pub fn fleet_view(&self) -> FleetView {
        let c = &self.counts;
        let modes = self.modes();
        let (disruption, active, unhealthy) = match self.disruption() {
            (mode, active, unhealthy) if modes => (mode, active, unhealthy),
            (mode, ..) => (mode, 0, 0),
        };
        FleetView {
            workspaces: self.index.len(),
            alive: c[0],
            suspect: c[1],
            restarting: c[2],
            dead: c[3],
            parked: c[4],
            breaker_open: if modes { disruption != Mode::Healthy } else { self.fleet.breaker.is_open() },
            breaker_close_at: if modes {
                self.fleet.disruption.calm_since.map(|t| t.plus(self.policy.breaker_cooldown))
            } else {
                self.fleet.breaker.close_at()
            },
            disruption: modes.then_some(disruption),
            active,
            unhealthy,
            restarts_in_flight: self.fleet.in_flight,
            restart_queue: self.fleet.queued(),
            held: self.fleet.held.len(),
        }
    }

    /// Bytes the engine has reserved for its own structures (slab, index, timers), excluding
    /// heap allocations owned by individual workspaces (ids, incarnations).
    pub fn reserved_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.index.capacity() * (std::mem::size_of::<u32>() + 1)
            + self.timers.capacity_bytes()
    }
}
