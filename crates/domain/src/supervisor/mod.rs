//! The supervisor core, sans I/O: inputs and the time go in, the new state and
//! the effects to carry out come out.
//!
//! It owns queueing (an overall limit, limits per group, priority then FIFO),
//! dependencies, delays, graceful stop with KILL escalation, timeouts, restart
//! policies with backoff, readiness timeouts, parent/child hierarchies with
//! cascade stop, and retention. A driver (bpm's engine) feeds it inputs and
//! carries out its [`Effect`]s through the ports; nothing here waits or reads a clock.
//!
//! The core supervises the records of its own node only. Every record carries
//! its node, and records of other nodes are never started or signalled here;
//! those its records name (dependencies, parents) it follows as views
//! (`foreign.rs`).

mod end;
mod foreign;
mod handover;
mod limits;
mod messages;
mod names;
mod order;
mod owners;
mod ports;
mod queue;
mod reconcile;
mod restore;
mod rolls;
mod schedule;
mod stand_down;
mod start;
mod timers;
mod watch;

pub use limits::{Limits, LimitsError, MIN_RETENTION};
pub use messages::{CoreError, Effect, Input, Timer, TimerKind};

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use crate::cluster::placement::Room;
use crate::{
    Applied, Event, EventKind, GroupName, NodeId, ProcessId, ProcessRecord, Signal, SpecError,
    StateName, StopCause, Timestamp, Transition, TransitionKind,
};
use queue::ReadyQueue;

/// What the core knows of one record beyond the record itself.
#[derive(Debug)]
struct Entry {
    record: ProcessRecord,
    /// The version the store holds (None until created).
    persisted: Option<u64>,
    /// Whether the version the store holds is in an active state.
    persisted_active: bool,
    /// Submission order, for FIFO among equal priorities.
    seq: u64,
    depth: usize,
    /// Unfinished records this one waits for: dependencies (must complete) and,
    /// after a manual restart, the record it replaces (must end). `None`
    /// when it waits for none, as almost every record does.
    blockers: Option<Box<Blockers>>,
}

#[derive(Debug, Default, Clone)]
struct Blockers {
    must_complete: BTreeSet<ProcessId>,
    must_end: BTreeSet<ProcessId>,
}

impl Blockers {
    /// What an entry keeps: nothing when it waits for no record.
    fn kept(self) -> Option<Box<Blockers>> {
        (!self.must_complete.is_empty() || !self.must_end.is_empty()).then(|| Box::new(self))
    }
}

impl Entry {
    /// Whether it still waits for another record.
    const fn is_blocked(&self) -> bool {
        self.blockers.is_some()
    }

    /// `ended` no longer blocks it; true if `ended` was a dependency.
    fn unblock(&mut self, ended: ProcessId) -> bool {
        let Some(blockers) = self.blockers.as_deref_mut() else {
            return false;
        };
        blockers.must_end.remove(&ended);
        let was_dependency = blockers.must_complete.remove(&ended);
        if blockers.must_complete.is_empty() && blockers.must_end.is_empty() {
            self.blockers = None;
        }
        was_dependency
    }
}

/// The sans-I/O supervisor for one node.
#[derive(Debug)]
pub struct Supervisor {
    node: NodeId,
    limits: Limits,
    /// Boxed: a table of 10,000 records is mostly empty slots, and a slot
    /// holds a pointer, not a whole entry.
    entries: HashMap<ProcessId, Box<Entry>>,
    ready: ReadyQueue,
    /// record → records waiting for it to end.
    waiters: HashMap<ProcessId, BTreeSet<ProcessId>>,
    children: HashMap<ProcessId, BTreeSet<ProcessId>>,
    active_total: usize,
    active_by_group: HashMap<GroupName, usize>,
    live_per_level: HashMap<usize, usize>,
    next_seq: u64,
    /// Records handed to the spawner to start on exits ([`Supervisor::hand_over`]), in order.
    handed: VecDeque<ProcessId>,
    /// Notices in any order: see `order.rs`.
    order: order::Order,
    /// Records changed by the current step, with the version to expect.
    dirty: BTreeMap<ProcessId, Option<u64>>,
    out: Vec<Effect>,
    /// The environment of the last submission: an equal one is shared with
    /// it instead of kept again (processes from one shell carry the same).
    last_env: Option<Arc<crate::Environment>>,
    /// Other nodes' records that records here name: see `foreign.rs`.
    foreign: HashMap<ProcessId, foreign::Foreign>,
    /// Records that asked the store for a cluster-wide slot of their group
    /// and wait for its answer: they hold a slot here meanwhile.
    asking: BTreeMap<ProcessId, GroupName>,
    /// Groups the store refused a cluster-wide slot, with when they may ask
    /// again: their records are not asked for meanwhile. The mark lapses by
    /// time, not by its record: the record refused may have ended, been
    /// replaced or forgotten before its `ClusterSlot` timer fires, and the
    /// group must not wait on it (the timer only wakes the core).
    cluster_full: BTreeMap<GroupName, Timestamp>,
    /// Whether this node lost its lease: see `stand_down.rs`.
    standing_down: bool,
    /// Failover records ready to start, held back while the node stands down.
    held_back: BTreeSet<ProcessId>,
    /// The newest record of this node given each name: the live one, if
    /// any (see `names.rs`).
    names: HashMap<crate::ProcessName, ProcessId>,
    /// Records' owners and sessions' holders: see `owners.rs`.
    owners: owners::Owners,
    /// Watched records, with the ids of a restart a change asked for: see `watch.rs`.
    watched: HashMap<ProcessId, Vec<ProcessId>>,
    /// Records rolling over a live one of their name, with that one: see
    /// `rolls.rs`.
    rolls: HashMap<ProcessId, ProcessId>,
}

impl Supervisor {
    /// An empty supervisor for `node`.
    pub fn new(node: NodeId, limits: Limits) -> Self {
        Supervisor {
            node,
            limits,
            entries: HashMap::new(),
            ready: ReadyQueue::default(),
            waiters: HashMap::new(),
            children: HashMap::new(),
            active_total: 0,
            active_by_group: HashMap::new(),
            live_per_level: HashMap::new(),
            next_seq: 0,
            handed: VecDeque::new(),
            order: order::Order::default(),
            last_env: None,
            foreign: HashMap::new(),
            asking: BTreeMap::new(),
            cluster_full: BTreeMap::new(),
            standing_down: false,
            held_back: BTreeSet::new(),
            names: HashMap::new(),
            owners: owners::Owners::default(),
            watched: HashMap::new(),
            rolls: HashMap::new(),
            dirty: BTreeMap::new(),
            out: Vec::new(),
        }
    }

    /// The node this core supervises.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A record the core knows.
    pub fn get(&self, id: ProcessId) -> Option<&ProcessRecord> {
        self.entries.get(&id).map(|e| &e.record)
    }

    /// Every record the core knows, in no particular order.
    pub fn records(&self) -> impl Iterator<Item = &ProcessRecord> {
        self.entries.values().map(|e| &e.record)
    }

    /// How many records hold a slot.
    pub fn active(&self) -> usize {
        self.active_total
    }

    /// How many pending records could start as soon as a slot frees.
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// What this node can take from the cluster's queue now: the slots
    /// neither held nor waited for by a ready record, and the groups whose
    /// limit is reached counting those that wait ready
    /// ([`crate::cluster::placement::takes`]).
    pub fn room(&self) -> Room {
        let limits = &self.limits;
        let used = self.active_total + self.asking.len() + self.ready.len();
        let mut full_groups: BTreeSet<GroupName> = self.cluster_full.keys().cloned().collect();
        let groups = limits
            .group_limits
            .keys()
            .chain(self.active_by_group.keys())
            .chain(self.ready.groups());
        for g in groups {
            if let Some(limit) = limits.group_limit(Some(g)) {
                let count = self.active_by_group.get(g).copied().unwrap_or(0)
                    + self.asking_in(g)
                    + self.ready.len_of(Some(g));
                if count >= limit {
                    full_groups.insert(g.clone());
                }
            }
        }
        Room {
            free: limits.max_running.saturating_sub(used),
            full_groups,
            others_full: limits.default_group_limit == Some(0),
            limited_groups: limits.group_limits.keys().cloned().collect(),
        }
    }

    /// A record's depth in its hierarchy (roots are 0).
    pub fn depth(&self, id: ProcessId) -> Option<usize> {
        self.entries.get(&id).map(|e| e.depth)
    }

    /// Handles one input at `now`.
    ///
    /// # Errors
    /// [`CoreError`] when the input is refused; then nothing changed and no effect is due.
    pub fn handle(&mut self, input: Input, now: Timestamp) -> Result<Vec<Effect>, CoreError> {
        let result = self.dispatch(input, now);
        match result {
            Ok(()) => {
                self.schedule(now);
                Ok(self.finish_step())
            }
            Err(e) => {
                debug_assert!(
                    self.dirty.is_empty() && self.out.is_empty(),
                    "a refused input changed state"
                );
                self.dirty.clear();
                self.out.clear();
                Err(e)
            }
        }
    }

    fn dispatch(&mut self, input: Input, now: Timestamp) -> Result<(), CoreError> {
        // A notice about a record whose start is not known yet waits for it.
        let Some(input) = self.hold_early(input) else {
            return Ok(());
        };
        if input.is_call() {
            self.on_call(input, now)
        } else {
            self.on_notice(input, now)
        }
    }

    /// A caller's call: a submit, a stop, a pause, a report of progress...
    fn on_call(&mut self, input: Input, now: Timestamp) -> Result<(), CoreError> {
        match input {
            Input::Submit { id, spec } => self.submit(id, spec, None, None, now),
            Input::SubmitOnPorts { id, spec, free } => {
                self.submit(id, spec, None, Some(&free), now)
            }
            Input::Track { id, spec } => {
                if spec.command.is_some() {
                    return Err(SpecError::TrackedWithCommand.into());
                }
                self.submit(id, spec, None, None, now)
            }
            Input::Restart { id, new_id } => self.restart(id, new_id, now),
            Input::Stop { id, force, grace } => {
                self.own(id)?;
                self.stop(id, StopCause::Requested, force, grace, now)
            }
            Input::StopLevel {
                level,
                force,
                grace,
            } => {
                let mut at_level: Vec<_> = self
                    .entries
                    .values()
                    .filter(|e| e.depth == level && !e.record.is_terminal())
                    .map(|e| e.record.id())
                    .collect();
                at_level.sort_unstable();
                for id in at_level {
                    self.stop(id, StopCause::Requested, force, grace, now)?;
                }
                Ok(())
            }
            Input::Pause { id } => {
                let pid = self.own(id)?.pid();
                self.transition(id, Transition::Pause, now)?;
                if let Some(pid) = pid {
                    self.signal(id, pid, Signal::Stop);
                }
                Ok(())
            }
            Input::Resume { id } => {
                let pid = self.own(id)?.pid();
                self.transition(id, Transition::Resume, now)?;
                if let Some(pid) = pid {
                    self.signal(id, pid, Signal::Cont);
                }
                if self.entries[&id].record.spec().schedule.is_some() {
                    self.schedule_back(id, now, true);
                }
                Ok(())
            }
            Input::Progress {
                id,
                percent,
                message,
            } => {
                self.own(id)?;
                self.transition(id, Transition::Progress { percent, message }, now)?;
                Ok(())
            }
            Input::Complete { id, result } => {
                self.own(id)?;
                self.transition(id, Transition::Complete { result }, now)?;
                Ok(())
            }
            Input::Fail { id, error } => {
                self.own(id)?;
                self.transition(id, Transition::Fail { error }, now)?;
                Ok(())
            }
            Input::Remove { id } => {
                let record = self.own(id)?;
                if !record.is_terminal() {
                    return Err(CoreError::NotFinished {
                        id,
                        state: record.state(),
                    });
                }
                self.forget(id);
                Ok(())
            }

            notice => self.on_notice(notice, now),
        }
    }

    /// What the engine heard: a spawn, an exit, a timer, a lease, a claim...
    fn on_notice(&mut self, input: Input, now: Timestamp) -> Result<(), CoreError> {
        match input {
            Input::OwnerGone { process } => {
                self.owner_gone(process, now);
                Ok(())
            }
            Input::HoldSession { session, holder } => {
                self.hold_session(session, holder, now);
                Ok(())
            }
            Input::ReleaseSession { session, holder } => {
                self.release_session(&session, holder, now);
                Ok(())
            }
            Input::FilesChanged { id, new_ids } => {
                self.files_changed(id, new_ids, now);
                Ok(())
            }
            Input::Claimed { record } => self.claimed(&record, now),
            Input::ClusterSlot { id, granted } => {
                self.cluster_slot(id, granted, now);
                Ok(())
            }
            Input::ClusterSlotsFreed => {
                self.cluster_full.clear();
                Ok(())
            }
            Input::NameHeld { record, reason } => {
                let error = format!("node {} took it but cannot run it: {reason}", self.node);
                self.adopt_ended(&record, Transition::Fail { error }, now)
            }
            Input::ClaimedToStop { record } => {
                let stop = Transition::Stop {
                    cause: StopCause::Requested,
                };
                self.adopt_ended(&record, stop, now)
            }
            Input::Spawned { .. } | Input::SpawnFailed { .. } | Input::SpawnLost { .. } => {
                self.spawn_result(input, now)
            }
            Input::Exited { id, status, limit } => self.exited(id, status, limit, now),
            Input::HandedOver {
                id,
                status,
                next,
                started,
            } => self.on_handed_over(id, status, next, started, now),
            Input::Adopted { id, pid } => {
                self.own(id)?;
                self.take_over(id, Ok(pid), now);
                Ok(())
            }
            Input::Ready { id } => {
                self.own(id)?;
                if self.transition(id, Transition::Ready, now)? == Applied::Changed {
                    self.cancel_timer(id, TimerKind::Readiness);
                }
                Ok(())
            }
            Input::Idle { id } => {
                let record = self.own(id)?;
                if !record.is_terminal() {
                    let event = Event::new(EventKind::Idle, record, now);
                    self.out.push(Effect::Publish(Box::new(event)));
                }
                Ok(())
            }
            Input::WatchFailed { id, reason } => {
                self.own(id)?;
                self.transition(id, Transition::WatchFailed { reason }, now)?;
                Ok(())
            }
            Input::Health {
                id,
                healthy,
                detail,
            } => self.health(id, healthy, detail, now),
            Input::LeaderExited {
                id,
                status,
                running,
            } => {
                self.own(id)?;
                let exit = crate::LeaderExit::new(status, now, running);
                self.transition(id, Transition::LeaderExited { exit }, now)?;
                Ok(())
            }
            Input::TimerFired(timer) => {
                self.timer_fired(timer, now);
                Ok(())
            }
            Input::Lost { id, reason } => {
                self.own(id)?;
                self.transition(id, Transition::Lose { reason }, now)?;
                Ok(())
            }
            Input::ReattachFailed {
                id,
                pid,
                machine_restarted,
                again,
            } => self.reattach_failed(id, pid, machine_restarted, again, now),
            Input::Lease { held } => {
                self.lease(held, now);
                Ok(())
            }
            Input::NodeLost { node } => self.node_lost(&node, now),
            Input::StoreConflict { id, stored } => self.store_conflict(id, stored),
            Input::Rejoined { stored } => {
                self.rejoined(&stored, now);
                Ok(())
            }
            Input::Unstored { id } => self.unstored(id, now),
            Input::Foreign { records, gone } => {
                self.foreign(records, &gone, now);
                Ok(())
            }
            call => self.on_call(call, now),
        }
    }

    /// The keeper started `next` on its own when `id` exited.
    fn on_handed_over(
        &mut self,
        id: ProcessId,
        status: crate::ExitStatus,
        next: ProcessId,
        started: Result<u32, String>,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        self.start_heard(next);
        let exit = self.exited(id, status, None, now);
        self.take_over(next, started, now);
        self.release(next, now);
        match exit {
            Err(e) if self.dirty.is_empty() && self.out.is_empty() => Err(e),
            _ => Ok(()),
        }
    }

    /// Node `node` was lost: each of its live records is lost with it.
    fn node_lost(&mut self, node: &NodeId, now: Timestamp) -> Result<(), CoreError> {
        let mut lost: Vec<_> = self
            .entries
            .values()
            .filter(|e| e.record.node() == node && !e.record.is_terminal())
            .map(|e| e.record.id())
            .collect();
        lost.sort_unstable();
        for id in lost {
            self.transition(
                id,
                Transition::Lose {
                    reason: format!("node {node} was lost"),
                },
                now,
            )?;
        }
        Ok(())
    }

    /// A health check's result; the first failure that makes it unhealthy
    /// stops it, for its restart policy to start it again.
    fn health(
        &mut self,
        id: ProcessId,
        healthy: bool,
        detail: Option<String>,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        self.own(id)?;
        let why = detail.clone().unwrap_or_else(|| "the check failed".into());
        if self.transition(id, Transition::Health { healthy, detail }, now)? == Applied::Changed
            && !healthy
        {
            self.stop(id, StopCause::Unhealthy { detail: why }, false, None, now)?;
        }
        Ok(())
    }

    /// The record (the core holds only its own node's records).
    fn own(&self, id: ProcessId) -> Result<&ProcessRecord, CoreError> {
        self.entries
            .get(&id)
            .map(|e| &e.record)
            .ok_or(CoreError::NotFound(id))
    }

    fn depth_of(&self, parent: Option<ProcessId>) -> usize {
        let mut depth = 0;
        let mut cursor = parent;
        while let Some(p) = cursor {
            depth += 1;
            // A cycle cannot be built through submit; bound the walk anyway.
            if depth > self.limits.max_depth + 1 {
                break;
            }
            cursor = match (self.entries.get(&p), self.foreign.get(&p)) {
                (Some(e), _) => e.record.parent(),
                // Another node's record: its depth as first seen, or,
                // while that is worked out, its own parent.
                (None, Some(view)) => match view.depth {
                    Some(d) => return depth + d,
                    None => view.record.parent(),
                },
                (None, None) => None,
            };
        }
        depth
    }

    /// Applies a transition to a record and keeps every index in step: slots,
    /// levels, waiters, timers, events, and the record's persistence.
    fn transition(
        &mut self,
        id: ProcessId,
        t: Transition,
        now: Timestamp,
    ) -> Result<Applied, CoreError> {
        let kind = t.kind();
        let entry = self.entries.get_mut(&id).ok_or(CoreError::NotFound(id))?;
        let before = entry.record.state();
        let applied = entry.record.apply(t, now)?;
        if applied == Applied::NoOp {
            return Ok(applied);
        }
        let after = entry.record.state();
        let depth = entry.depth;
        // Tracked operations are the caller's own work, and an agent's MCP
        // server must not wait behind other work: they hold no slot.
        let slotted = entry.record.takes_a_slot();
        self.dirty.entry(id).or_insert(entry.persisted);
        if before == StateName::Pending && after != StateName::Pending {
            self.ready.remove(id);
            self.handed.retain(|h| *h != id);
        }
        if slotted && !before.is_active() && after.is_active() {
            self.add_active(id);
        } else if slotted && before.is_active() && !after.is_active() {
            self.remove_active(id);
            // Its cluster-wide slot frees as the store takes this version.
            if let Some(g) = self.entries[&id].record.group() {
                self.cluster_full.remove(g);
            }
        }
        let mut events = Vec::with_capacity(2);
        match kind {
            TransitionKind::Spawned if after == StateName::Running => {
                events.push(EventKind::Started);
                self.watch_files(id);
            }
            TransitionKind::Exited | TransitionKind::Requeue => events.push(EventKind::Exited),
            TransitionKind::Pause => events.push(EventKind::Paused),
            TransitionKind::Resume => events.push(EventKind::Resumed),
            TransitionKind::Ready => events.push(EventKind::Ready),
            TransitionKind::Progress => events.push(EventKind::Progress),
            TransitionKind::Unreach => events.push(EventKind::Unreachable),
            TransitionKind::Reach => events.push(EventKind::Reachable),
            TransitionKind::LeaderExited => events.push(EventKind::LeaderExited),
            TransitionKind::Health => {
                let healthy = self.entries[&id].record.health().is_some_and(|h| h.healthy);
                events.push(if healthy {
                    EventKind::Healthy
                } else {
                    EventKind::Unhealthy
                });
            }
            _ => {}
        }
        if kind == TransitionKind::Requeue {
            events.push(EventKind::Restarted);
        }
        if after == StateName::Stopping && before != StateName::Stopping {
            events.push(EventKind::Stopping);
        }
        if after.is_terminal() {
            events.extend(EventKind::for_terminal(after));
        }
        for e in events {
            self.publish(id, e, now);
        }
        // Records waiting for it to start or be ready may go.
        if matches!(kind, TransitionKind::Spawned | TransitionKind::Ready)
            && !after.is_terminal()
            && self.waiters.contains_key(&id)
        {
            self.wake_waiters(id, now);
        }
        if after.is_terminal() && !before.is_terminal() {
            if depth > 0
                && let Some(n) = self.live_per_level.get_mut(&depth)
            {
                *n = n.saturating_sub(1);
            }
            for kind in [
                TimerKind::Timeout,
                TimerKind::Grace,
                TimerKind::Readiness,
                TimerKind::NotBefore,
                TimerKind::Due,
            ] {
                self.cancel_timer(id, kind);
            }
            self.arm_retention(id);
            self.release_waiters(id, after, now);
            self.unwatch_files(id);
            self.roll_ended(id);
        }
        if kind == TransitionKind::Ready {
            self.roll_over(id, now)?;
        }
        Ok(applied)
    }

    fn add_active(&mut self, id: ProcessId) {
        self.active_total += 1;
        if let Some(g) = self.entries[&id].record.group() {
            *self.active_by_group.entry(g.clone()).or_default() += 1;
        }
    }

    fn remove_active(&mut self, id: ProcessId) {
        self.active_total = self.active_total.saturating_sub(1);
        if let Some(g) = self.entries[&id].record.group()
            && let Some(n) = self.active_by_group.get_mut(g)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.active_by_group.remove(g);
            }
        }
    }

    fn signal(&mut self, id: ProcessId, pid: u32, signal: Signal) {
        self.out.push(Effect::Signal { id, pid, signal });
    }

    fn publish(&mut self, id: ProcessId, kind: EventKind, now: Timestamp) {
        let event = Event::new(kind, &self.entries[&id].record, now);
        self.out.push(Effect::Publish(Box::new(event)));
    }

    /// Orders the step's effects: writes first (so nothing is spawned, signalled
    /// or announced that the store does not know), then the rest as decided.
    fn finish_step(&mut self) -> Vec<Effect> {
        let mut effects = Vec::with_capacity(self.dirty.len() + self.out.len());
        for (id, expected) in std::mem::take(&mut self.dirty) {
            if let Some(entry) = self.entries.get_mut(&id) {
                let active = entry.record.state().is_active();
                let durable = !(expected.is_some()
                    && entry.persisted_active
                    && active
                    && !entry.record.is_tracked());
                entry.persisted = Some(entry.record.version());
                entry.persisted_active = active;
                effects.push(Effect::Persist {
                    record: entry.record.clone(),
                    expected_version: expected,
                    durable,
                });
            }
        }
        let rest = std::mem::take(&mut self.out);
        let (deletes, rest): (Vec<_>, Vec<_>) = rest
            .into_iter()
            .partition(|e| matches!(e, Effect::Delete { .. }));
        effects.extend(deletes);
        effects.extend(rest);
        effects
    }

    /// Checks the core's own bookkeeping; for tests and debug assertions.
    ///
    /// # Errors
    /// A description of the first inconsistency found.
    pub fn check_invariants(&self) -> Result<(), String> {
        let active: Vec<_> = self
            .entries
            .values()
            .filter(|e| e.record.state().is_active() && e.record.takes_a_slot())
            .collect();
        if active.len() != self.active_total {
            return Err(format!(
                "active count {} but {} active records",
                self.active_total,
                active.len()
            ));
        }
        if self.active_total > self.limits.max_running {
            return Err(format!(
                "{} active over the limit {}",
                self.active_total, self.limits.max_running
            ));
        }
        let mut per_group: HashMap<&GroupName, usize> = HashMap::new();
        for e in &active {
            if let Some(g) = e.record.group() {
                *per_group.entry(g).or_default() += 1;
            }
        }
        for (g, n) in &per_group {
            if let Some(limit) = self.limits.group_limit(Some(g))
                && *n > limit
            {
                return Err(format!("group {g} has {n} active, over its limit {limit}"));
            }
            if self.active_by_group.get(*g).copied().unwrap_or(0) != *n {
                return Err(format!("group {g} count disagrees"));
            }
        }
        for (i, id) in self.handed.iter().enumerate() {
            let Some(e) = self.entries.get(id) else {
                return Err(format!("{id} is handed over but unknown"));
            };
            if e.record.state() != StateName::Pending || !self.ready.contains(*id) {
                return Err(format!("{id} is handed over but {}", e.record.state()));
            }
            if e.record.parent().is_some() || self.handed.iter().skip(i + 1).any(|h| h == id) {
                return Err(format!("{id} is handed over twice or is not a root"));
            }
        }
        for e in self.entries.values() {
            let r = &e.record;
            if self.ready.contains(r.id()) && r.state() != StateName::Pending {
                return Err(format!("{} is queued but {}", r.id(), r.state()));
            }
            if r.is_terminal() && r.lifecycle().ended_at().is_none() {
                return Err(format!("{} is {} without an end time", r.id(), r.state()));
            }
            if let Some(p) = r.parent().and_then(|p| self.known(p)) {
                let parent_stopped = matches!(
                    p.state(),
                    StateName::Cancelled | StateName::TimedOut | StateName::Stopping
                );
                let child_live = !r.is_terminal() && r.state() != StateName::Stopping;
                if parent_stopped && child_live {
                    return Err(format!(
                        "child {} is {} while its parent {} is {}",
                        r.id(),
                        r.state(),
                        p.id(),
                        p.state()
                    ));
                }
            }
        }
        Ok(())
    }
}
