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
//! its node, and records of other nodes are never started or signalled here.

mod order;
mod queue;
mod reconcile;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{
    Applied, Event, EventKind, ExitStatus, GroupName, InvalidTransition, Lifecycle, NodeId,
    Percent, ProcessId, ProcessRecord, ProcessSpec, ReadinessCheck, RestartMode, Signal, Span,
    SpecError, StateName, StopCause, Timestamp, Transition, TransitionKind,
};
use queue::ReadyQueue;

/// Limits the core enforces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// How many records may hold a slot (starting, running, paused, stopping) at once. Default 10.
    pub max_running: usize,
    /// Slots per named group.
    pub group_limits: BTreeMap<GroupName, usize>,
    /// Slots for a named group with no entry in `group_limits`; `None` for no group limit.
    pub default_group_limit: Option<usize>,
    /// How deep a hierarchy may be (a root is at depth 0). Default 10.
    pub max_depth: usize,
    /// How many unfinished records one hierarchy level below the roots may hold. Default 20.
    pub max_per_level: usize,
    /// How long finished records are kept; `None` keeps them until removed.
    pub retention: Option<Span>,
    /// How many queued records, at most, the spawner holds to start the
    /// moment a process ends ([`Supervisor::hand_over`]). Default 8.
    pub hand_over_ahead: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_running: 10,
            group_limits: BTreeMap::new(),
            default_group_limit: None,
            max_depth: 10,
            max_per_level: 20,
            retention: None,
            hand_over_ahead: 8,
        }
    }
}

impl Limits {
    fn group_limit(&self, group: Option<&GroupName>) -> Option<usize> {
        let g = group?;
        self.group_limits
            .get(g)
            .copied()
            .or(self.default_group_limit)
    }
}

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// A delayed start or a restart backoff ends.
    NotBefore,
    /// The process's timeout runs out.
    Timeout,
    /// The grace period after the stop signal ends: KILL.
    Grace,
    /// The readiness timeout runs out.
    Readiness,
    /// A finished record's retention ends.
    Retention,
}

/// A timer the driver arms. Arming the same timer again replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timer {
    /// The record.
    pub id: ProcessId,
    /// What for.
    pub kind: TimerKind,
    /// The record's attempt (its restart count) when armed: a timer of an earlier attempt is stale.
    pub attempt: u32,
}

/// Something the driver must carry out, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Write the record: create it when `expected_version` is `None`, else
    /// compare-and-set against that version.
    Persist {
        /// The record as it is now.
        record: Box<ProcessRecord>,
        /// The version the store holds, if any.
        expected_version: Option<u64>,
        /// Whether the write must reach the disk before anything after it
        /// is announced (an event) or answered. A spawn or a signal may go
        /// ahead while the disk flushes: the store already holds the write,
        /// a crash of bpm keeps it, and a crash of the machine ends the
        /// process too. Only a change between active states of a spawned process (a pid,
        /// a pause, a progress report, a stop under way) may stay in the
        /// OS's cache: a crash of bpm keeps it, and a crash of the machine
        /// ends the process too, so the record ends `lost` whichever of its
        /// active versions survives. Creations, leaving `pending` (a record
        /// is never started twice), ends and tracked operations are durable.
        durable: bool,
    },
    /// Delete a finished record (and its output).
    Delete {
        /// The record.
        id: ProcessId,
    },
    /// Start the record's OS process, then report `Spawned` or `SpawnFailed`.
    /// After a restart, a record whose spawn was under way is spawned again:
    /// the spawner answers with the process it started for it, if it did.
    Spawn {
        /// The record (in `starting`, or `stopping` when a stop came first).
        record: Box<ProcessRecord>,
    },
    /// After a restart, take over the record's process again; if the
    /// spawner cannot, report [`Input::ReattachFailed`].
    Reattach {
        /// The record.
        id: ProcessId,
        /// Its process.
        pid: u32,
    },
    /// Send a signal to the record's whole process tree.
    Signal {
        /// The record.
        id: ProcessId,
        /// Its process group leader.
        pid: u32,
        /// The signal.
        signal: Signal,
    },
    /// Report `TimerFired` at `at`.
    ArmTimer {
        /// Which.
        timer: Timer,
        /// When.
        at: Timestamp,
    },
    /// Forget a timer; a stale one that fires anyway is ignored.
    CancelTimer {
        /// Which.
        timer: Timer,
    },
    /// Tell subscribers.
    Publish(Box<Event>),
    /// The exit of `id`'s process is recorded by this step's writes: once
    /// they are durable, tell the spawner, which may then forget the process
    /// (until then it answers a second spawn of `id` with it).
    ExitRecorded {
        /// The record.
        id: ProcessId,
    },
}

/// An input to the core.
// A submit carries a whole spec; inputs are moved once into `handle`, so boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Accept a new record.
    Submit {
        /// Its id (from the id port).
        id: ProcessId,
        /// What to run (a tracked operation when it has no command).
        spec: ProcessSpec,
    },
    /// Accept a new tracked operation: a record with no command, which the
    /// caller drives with progress, completion and failure. A spec with a
    /// command is refused ([`SpecError::TrackedWithCommand`]).
    Track {
        /// Its id (from the id port).
        id: ProcessId,
        /// What it is; no command.
        spec: ProcessSpec,
    },
    /// Make a new record with `id`'s spec; stop `id` first if it is still live.
    Restart {
        /// The record to repeat.
        id: ProcessId,
        /// The new record's id.
        new_id: ProcessId,
    },
    /// The OS process of `id` exists.
    Spawned {
        /// The record.
        id: ProcessId,
        /// Its pid.
        pid: u32,
    },
    /// The OS process of `id` could not be created.
    SpawnFailed {
        /// The record.
        id: ProcessId,
        /// Why, as the OS said.
        error: String,
    },
    /// Whether the OS process of `id` was created cannot be known (whoever
    /// started it died during the start, and none of it runs now): the
    /// spawn's result, as [`Input::Lost`] is a notice's.
    SpawnLost {
        /// The record.
        id: ProcessId,
        /// Why.
        reason: String,
    },
    /// The OS process of `id` exited.
    Exited {
        /// The record.
        id: ProcessId,
        /// How.
        status: ExitStatus,
    },
    /// The OS process of `id` exited, and the spawner at once started `next`
    /// in its place, as [`Supervisor::hand_over`] allowed. `next` takes the
    /// slot `id` frees. The start is taken even when the exit is refused: a
    /// process that runs must be known.
    HandedOver {
        /// The record whose process exited.
        id: ProcessId,
        /// How it exited.
        status: ExitStatus,
        /// The record the spawner started next.
        next: ProcessId,
        /// Its pid, or why it could not be started.
        started: Result<u32, String>,
    },
    /// A record handed over ([`Supervisor::hand_over`]) was started by a
    /// spawner that died before it could say so; the one that took over
    /// found its process. It runs with `pid` and takes a slot of its own.
    Adopted {
        /// The record.
        id: ProcessId,
        /// Its pid.
        pid: u32,
    },
    /// Stop `id` and, first, all its descendants.
    Stop {
        /// The record.
        id: ProcessId,
        /// KILL at once instead of the policy's signal and grace.
        force: bool,
        /// Override the policy's grace period.
        grace: Option<Span>,
    },
    /// Stop every unfinished record at hierarchy depth `level` (roots are 0), with their descendants.
    StopLevel {
        /// The depth.
        level: usize,
        /// KILL at once.
        force: bool,
        /// Override each record's grace period.
        grace: Option<Span>,
    },
    /// Pause `id` (SIGSTOP to its tree).
    Pause {
        /// The record.
        id: ProcessId,
    },
    /// Resume `id` (SIGCONT to its tree).
    Resume {
        /// The record.
        id: ProcessId,
    },
    /// Progress reported for `id`.
    Progress {
        /// The record.
        id: ProcessId,
        /// How far.
        percent: Percent,
        /// What it is doing.
        message: Option<String>,
    },
    /// A tracked operation finished.
    Complete {
        /// The record.
        id: ProcessId,
        /// Its result.
        result: Option<serde_json::Value>,
    },
    /// A tracked operation failed.
    Fail {
        /// The record.
        id: ProcessId,
        /// Why.
        error: String,
    },
    /// A readiness check passed.
    Ready {
        /// The record.
        id: ProcessId,
    },
    /// The process wrote nothing for its idle period.
    Idle {
        /// The record.
        id: ProcessId,
    },
    /// A timer fired.
    TimerFired(Timer),
    /// bpm cannot know what became of `id` (for example it could not be re-attached).
    Lost {
        /// The record.
        id: ProcessId,
        /// Why.
        reason: String,
    },
    /// After a restart, the process of `id` could not be taken over again
    /// ([`Effect::Reattach`]): it is gone, or is no longer the record's.
    ReattachFailed {
        /// The record.
        id: ProcessId,
        /// The process that was not found.
        pid: u32,
    },
    /// Every unfinished record of `node` is lost.
    NodeLost {
        /// The node.
        node: NodeId,
    },
    /// Delete a finished record.
    Remove {
        /// The record.
        id: ProcessId,
    },
    /// The store refused a write of `id` because it holds another version
    /// (`stored`), or none (`None`). The core reconciles
    /// ([`Supervisor`]'s rule in `reconcile.rs`); a conflict is never dropped.
    StoreConflict {
        /// The record.
        id: ProcessId,
        /// The version the store holds, if any.
        stored: Option<u64>,
    },
}

impl Input {
    /// Whether this input may take a record out of `pending` other than by
    /// starting it (a stop, a restart, a completion or a failure): records
    /// handed to the spawner must be taken back first.
    pub fn may_cancel(&self) -> bool {
        matches!(
            self,
            Input::Stop { .. }
                | Input::StopLevel { .. }
                | Input::Restart { .. }
                | Input::Complete { .. }
                | Input::Fail { .. }
        )
    }
}

/// The core refused an input; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CoreError {
    /// No record has this id.
    #[error("no process with id {0}")]
    NotFound(ProcessId),
    /// A record with this id exists already.
    #[error("a process with id {0} exists already")]
    AlreadyExists(ProcessId),
    /// The spec is invalid.
    #[error(transparent)]
    InvalidSpec(#[from] SpecError),
    /// The lifecycle does not allow it.
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    /// A dependency names no known record.
    #[error("unknown dependency {0}: no such process")]
    UnknownDependency(ProcessId),
    /// A record cannot depend on itself.
    #[error("process {0} cannot depend on itself")]
    SelfDependency(ProcessId),
    /// The parent names no known record.
    #[error("unknown parent {0}: no such process")]
    ParentNotFound(ProcessId),
    /// The parent is stopping or finished, so it cannot take children.
    #[error("parent {parent} is {state}, so it cannot take new children")]
    ParentNotLive {
        /// The parent.
        parent: ProcessId,
        /// Its state.
        state: StateName,
    },
    /// The hierarchy would be too deep.
    #[error("hierarchy too deep: depth {depth} exceeds the limit of {max}")]
    DepthLimit {
        /// The depth the record would have.
        depth: usize,
        /// The limit.
        max: usize,
    },
    /// The hierarchy level is full.
    #[error("hierarchy level {level} is full: it holds {max} unfinished processes, the limit")]
    LevelFull {
        /// The level.
        level: usize,
        /// The limit.
        max: usize,
    },
    /// Only finished records can be removed.
    #[error("process {id} is {state}: only finished processes can be removed (stop it first)")]
    NotFinished {
        /// The record.
        id: ProcessId,
        /// Its state.
        state: StateName,
    },
}

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
    /// after a manual restart, the record it replaces (must end).
    blockers: Blockers,
}

#[derive(Debug, Default, Clone)]
struct Blockers {
    must_complete: BTreeSet<ProcessId>,
    must_end: BTreeSet<ProcessId>,
}

/// The sans-I/O supervisor for one node.
#[derive(Debug)]
pub struct Supervisor {
    node: NodeId,
    limits: Limits,
    entries: HashMap<ProcessId, Entry>,
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

    /// Hands the spawner the records to start next, best first, up to
    /// [`Limits::hand_over_ahead`] outstanding, and returns the ones added: the spawner starts them by
    /// itself, in this order, one on each exit of a process it started with
    /// `hands_over` (whose exit frees its slot), and reports
    /// [`Input::HandedOver`]. That takes the daemon out of the path from one
    /// process's end to the next one's start.
    ///
    /// Records are handed over only while every slot is taken; the list
    /// stops at the first record that is not a root (a parent's stop may
    /// cancel its children at any time) or whose group would have no room.
    /// While any are outstanding, the core itself starts only the first of
    /// them when a slot frees, so the spawner and the core agree on the
    /// order; a record that becomes ready meanwhile (even with a higher
    /// priority) waits until they are taken.
    ///
    /// The driver must take outstanding records back ([`withdraw`](Self::withdraw))
    /// before it feeds an input that [`Input::may_cancel`] names, and must
    /// feed the spawner's reports of those it started first.
    pub fn hand_over(&mut self) -> Vec<ProcessId> {
        let max = self.limits.hand_over_ahead;
        let mut added = Vec::new();
        if self.active_total != self.limits.max_running || self.handed.len() >= max {
            return added;
        }
        let mut taken: HashMap<&GroupName, usize> = HashMap::new();
        for id in &self.handed {
            if let Some(g) = self.entries.get(id).and_then(|e| e.record.group()) {
                *taken.entry(g).or_default() += 1;
            }
        }
        let outstanding = self.handed.len();
        let candidates = self.ready.ordered(max + outstanding);
        let fresh = candidates
            .into_iter()
            .filter(|id| !self.handed.contains(id))
            .take(max - outstanding);
        for id in fresh {
            let record = &self.entries[&id].record;
            if record.parent().is_some() || record.is_tracked() {
                break;
            }
            if let Some(g) = record.group()
                && let Some(limit) = self.limits.group_limit(Some(g))
            {
                let n = taken.entry(g).or_default();
                if self.active_by_group.get(g).copied().unwrap_or(0) + *n >= limit {
                    break;
                }
                *n += 1;
            }
            added.push(id);
        }
        self.handed.extend(added.iter().copied());
        added
    }

    /// The records handed over and not yet reported started, in order.
    pub fn handed_over(&self) -> impl Iterator<Item = ProcessId> + '_ {
        self.handed.iter().copied()
    }

    /// The spawner gave back these handed-over records (it will not start them).
    pub fn withdraw(&mut self, ids: &[ProcessId]) {
        self.handed.retain(|id| !ids.contains(id));
    }

    /// A record's depth in its hierarchy (roots are 0).
    pub fn depth(&self, id: ProcessId) -> Option<usize> {
        self.entries.get(&id).map(|e| e.depth)
    }

    /// Takes back records from the store after a restart of the manager.
    ///
    /// Records of other nodes are ignored. Pending records are queued again,
    /// finished ones kept (with retention), and live ones counted against the
    /// limits with their timers re-armed. A live record's process is taken
    /// over again ([`Effect::Reattach`]; [`Input::ReattachFailed`] makes it
    /// lost); one whose spawn was under way is spawned again
    /// ([`Effect::Spawn`]), which a spawner that started it answers with
    /// that process.
    pub fn restore(&mut self, records: Vec<ProcessRecord>, now: Timestamp) -> Vec<Effect> {
        let mut records: Vec<_> = records
            .into_iter()
            .filter(|r| r.node() == &self.node)
            .collect();
        records.sort_by_key(|r| (r.created_at(), r.id()));
        for record in records {
            let id = record.id();
            let persisted = Some(record.version());
            let persisted_active = record.state().is_active();
            let seq = self.next_seq;
            self.next_seq += 1;
            self.entries.insert(
                id,
                Entry {
                    record,
                    persisted,
                    persisted_active,
                    seq,
                    depth: 0,
                    blockers: Blockers::default(),
                },
            );
        }
        let ids: Vec<_> = self.entries.keys().copied().collect();
        for &id in &ids {
            let depth = self.depth_of(self.entries[&id].record.parent());
            let entry = self.entries.get_mut(&id).expect("just inserted");
            entry.depth = depth;
            if let Some(p) = entry.record.parent() {
                self.children.entry(p).or_default().insert(id);
            }
        }
        for &id in &ids {
            let (state, live_depth, tracked) = {
                let e = &self.entries[&id];
                (e.record.state(), e.depth, e.record.is_tracked())
            };
            if !state.is_terminal() && live_depth > 0 {
                *self.live_per_level.entry(live_depth).or_default() += 1;
            }
            if state.is_active() && !tracked {
                self.add_active(id);
            }
            if state.is_active() && !tracked {
                // Its process is taken over again, or, if its spawn was under
                // way, spawned again: a spawner that started it answers with
                // that process, so it is never started twice.
                let record = &self.entries[&id].record;
                if let Some(pid) = record.pid() {
                    self.out.push(Effect::Reattach { id, pid });
                } else {
                    let record = Box::new(record.clone());
                    self.out.push(Effect::Spawn { record });
                    self.order.spawn_asked(id);
                }
            }
            if state.is_active() {
                self.rearm_live_timers(id, now);
            } else if state.is_terminal() {
                self.arm_retention(id);
            }
        }
        for &id in &ids {
            if self.entries[&id].record.state() == StateName::Pending {
                let unfinished: BTreeSet<_> = self.entries[&id]
                    .record
                    .spec()
                    .dependencies
                    .iter()
                    .copied()
                    .filter(|d| self.entries.get(d).is_some_and(|e| !e.record.is_terminal()))
                    .collect();
                for d in &unfinished {
                    self.waiters.entry(*d).or_default().insert(id);
                }
                self.entries
                    .get_mut(&id)
                    .expect("known")
                    .blockers
                    .must_complete = unfinished;
                self.place(id, now);
            }
        }
        self.schedule(now);
        self.finish_step()
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
        match input {
            Input::Submit { id, spec } => self.submit(id, spec, None, now),
            Input::Track { id, spec } => {
                if spec.command.is_some() {
                    return Err(SpecError::TrackedWithCommand.into());
                }
                self.submit(id, spec, None, now)
            }
            Input::Restart { id, new_id } => self.restart(id, new_id, now),
            Input::Spawned { .. } | Input::SpawnFailed { .. } | Input::SpawnLost { .. } => {
                self.spawn_result(input, now)
            }
            Input::Exited { id, status } => self.exited(id, status, now),
            Input::HandedOver {
                id,
                status,
                next,
                started,
            } => {
                self.start_heard(next);
                let exit = self.exited(id, status, now);
                self.take_over(next, started, now);
                self.release(next, now);
                match exit {
                    Err(e) if self.dirty.is_empty() && self.out.is_empty() => Err(e),
                    _ => Ok(()),
                }
            }
            Input::Adopted { id, pid } => {
                self.own(id)?;
                self.take_over(id, Ok(pid), now);
                Ok(())
            }
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
            Input::TimerFired(timer) => {
                self.timer_fired(timer, now);
                Ok(())
            }
            Input::Lost { id, reason } => {
                self.own(id)?;
                self.transition(id, Transition::Lose { reason }, now)?;
                Ok(())
            }
            Input::ReattachFailed { id, pid } => {
                self.own(id)?;
                let reason = format!("bpm restarted and could not re-attach to pid {pid}");
                self.transition(id, Transition::Lose { reason }, now)?;
                Ok(())
            }
            Input::NodeLost { node } => {
                let mut lost: Vec<_> = self
                    .entries
                    .values()
                    .filter(|e| e.record.node() == &node && !e.record.is_terminal())
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
            Input::StoreConflict { id, stored } => self.store_conflict(id, stored),
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
        }
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
            cursor = self.entries.get(&p).and_then(|e| e.record.parent());
        }
        depth
    }

    fn submit(
        &mut self,
        id: ProcessId,
        mut spec: ProcessSpec,
        replaces: Option<ProcessId>,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        spec.validate()?;
        match &self.last_env {
            // Arc's equality checks the pointer first, then the maps.
            Some(last) if *last == spec.env => spec.env = Arc::clone(last),
            _ => self.last_env = Some(Arc::clone(&spec.env)),
        }
        if self.entries.contains_key(&id) {
            return Err(CoreError::AlreadyExists(id));
        }
        let mut blockers = Blockers::default();
        for dep in &spec.dependencies {
            if *dep == id {
                return Err(CoreError::SelfDependency(id));
            }
            let dep_record = &self
                .entries
                .get(dep)
                .ok_or(CoreError::UnknownDependency(*dep))?
                .record;
            if !dep_record.is_terminal() {
                blockers.must_complete.insert(*dep);
            }
        }
        let depth = match spec.parent {
            None => 0,
            Some(parent) => {
                let p = &self
                    .entries
                    .get(&parent)
                    .ok_or(CoreError::ParentNotFound(parent))?
                    .record;
                if p.is_terminal() || p.state() == StateName::Stopping {
                    return Err(CoreError::ParentNotLive {
                        parent,
                        state: p.state(),
                    });
                }
                let depth = self.depth_of(Some(parent));
                if depth > self.limits.max_depth {
                    return Err(CoreError::DepthLimit {
                        depth,
                        max: self.limits.max_depth,
                    });
                }
                if self.live_per_level.get(&depth).copied().unwrap_or(0)
                    >= self.limits.max_per_level
                {
                    return Err(CoreError::LevelFull {
                        level: depth,
                        max: self.limits.max_per_level,
                    });
                }
                depth
            }
        };
        let record = match replaces {
            Some(old) => ProcessRecord::restart_of(&self.entries[&old].record, id, now),
            None => ProcessRecord::new(id, self.node.clone(), spec, now),
        };
        if let Some(old) = replaces
            && !self.entries[&old].record.is_terminal()
        {
            blockers.must_end.insert(old);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(parent) = record.parent() {
            self.children.entry(parent).or_default().insert(id);
        }
        if depth > 0 {
            *self.live_per_level.entry(depth).or_default() += 1;
        }
        let tracked = record.is_tracked();
        let timeout = record.spec().timeout;
        self.entries.insert(
            id,
            Entry {
                record,
                persisted: None,
                persisted_active: false,
                seq,
                depth,
                blockers: blockers.clone(),
            },
        );
        for waited in blockers.must_complete.iter().chain(&blockers.must_end) {
            self.waiters.entry(*waited).or_default().insert(id);
        }
        self.dirty.insert(id, None);
        self.publish(id, EventKind::Submitted, now);
        if tracked {
            if let Some(t) = timeout {
                self.arm(id, TimerKind::Timeout, now.saturating_add(t.as_duration()));
            }
        } else {
            self.place(id, now);
        }
        Ok(())
    }

    fn restart(
        &mut self,
        id: ProcessId,
        new_id: ProcessId,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        let old = self.own(id)?;
        let spec = old.spec().clone();
        self.submit(new_id, spec, Some(id), now)?;
        let mut event = Event::new(EventKind::Restarted, &self.entries[&id].record, now);
        event.related = Some(new_id);
        self.out.push(Effect::Publish(Box::new(event)));
        if !self.entries[&id].record.is_terminal() {
            self.stop(id, StopCause::Replaced { by: new_id }, false, None, now)?;
        }
        Ok(())
    }

    fn spawned(&mut self, id: ProcessId, pid: u32, now: Timestamp) -> Result<(), CoreError> {
        let was = self.own(id)?.state();
        self.transition(id, Transition::Spawned { pid }, now)?;
        let record = &self.entries[&id].record;
        if was == StateName::Stopping {
            // Stopped while the spawn was under way: stop it now that it exists.
            if let Lifecycle::Stopping { killed, .. } = record.lifecycle() {
                let signal = if *killed {
                    Signal::Kill
                } else {
                    record.spec().stop.signal
                };
                let grace = record.spec().stop.grace;
                let killed = *killed;
                self.signal(id, pid, signal);
                if !killed {
                    self.arm(
                        id,
                        TimerKind::Grace,
                        now.saturating_add(grace.as_duration()),
                    );
                }
            }
            return Ok(());
        }
        let spec = self.entries[&id].record.spec();
        let timeout = spec.timeout;
        let readiness =
            (spec.readiness.check != ReadinessCheck::None).then_some(spec.readiness.timeout);
        if let Some(t) = timeout {
            self.arm(id, TimerKind::Timeout, now.saturating_add(t.as_duration()));
        }
        match readiness {
            None => {
                self.transition(id, Transition::Ready, now)?;
            }
            Some(Some(t)) => self.arm(
                id,
                TimerKind::Readiness,
                now.saturating_add(t.as_duration()),
            ),
            Some(None) => {}
        }
        Ok(())
    }

    fn exited(
        &mut self,
        id: ProcessId,
        status: ExitStatus,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        let Some(record) = self.get(id).filter(|r| !r.is_terminal()) else {
            // Unknown here, or ended already (lost, say): nothing to record,
            // but the spawner may forget the process.
            self.out.push(Effect::ExitRecorded { id });
            return Ok(());
        };
        let state = record.state();
        if matches!(state, StateName::Running | StateName::Paused) {
            let policy = record.spec().restart;
            let wants = match policy.mode {
                RestartMode::Never => false,
                RestartMode::OnFailure => !status.success(),
                RestartMode::Always => true,
            };
            let budget = policy.max_restarts.is_none_or(|m| record.restarts() < m);
            if wants && budget {
                let delay = policy.backoff.delay(record.restarts());
                let not_before = now.saturating_add(delay);
                self.cancel_timer(id, TimerKind::Timeout);
                self.cancel_timer(id, TimerKind::Readiness);
                self.transition(id, Transition::Requeue { status, not_before }, now)?;
                self.place(id, now);
                self.out.push(Effect::ExitRecorded { id });
                return Ok(());
            }
        }
        self.transition(id, Transition::Exited { status }, now)?;
        self.out.push(Effect::ExitRecorded { id });
        Ok(())
    }

    /// `id` was started by the spawner in the slot of a process that ended.
    fn take_over(&mut self, id: ProcessId, started: Result<u32, String>, now: Timestamp) {
        let Some(entry) = self.entries.get(&id) else {
            // Unknown here: a process must not run that no record stands for.
            if let Ok(pid) = started {
                self.signal(id, pid, Signal::Kill);
            }
            return;
        };
        match (entry.record.state(), started) {
            (StateName::Pending, started) => {
                if self.transition(id, Transition::Start, now).is_err() {
                    return;
                }
                let _ = match started {
                    Ok(pid) => self.spawned(id, pid, now),
                    Err(error) => self
                        .transition(id, Transition::SpawnFailed { error }, now)
                        .map(|_| ()),
                };
            }
            // Ended before the start was heard of (the driver withdraws the
            // spawner's starts before a stop, so this is a lost race): end it.
            (state, Ok(pid)) if state.is_terminal() => self.signal(id, pid, Signal::Kill),
            // Started by the core too (the spawner answers that spawn with
            // this process): the spawn's own result counts.
            _ => {}
        }
    }

    /// Stops `id` and its unfinished descendants (children first).
    fn stop(
        &mut self,
        id: ProcessId,
        cause: StopCause,
        force: bool,
        grace: Option<Span>,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        let record = &self.entries.get(&id).ok_or(CoreError::NotFound(id))?.record;
        if record.is_terminal() {
            return Ok(());
        }
        let already_stopping = record.state() == StateName::Stopping;
        self.cascade(id, force, grace, now)?;
        let record = &self.entries[&id].record;
        let was_paused = record.state() == StateName::Paused;
        let policy = record.spec().stop;
        if already_stopping {
            // Stop is idempotent; a forced stop still escalates.
            if force {
                self.escalate(id, now)?;
            }
            return Ok(());
        }
        let pending = record.state() == StateName::Pending;
        self.transition(id, Transition::Stop { cause }, now)?;
        if pending {
            return Ok(());
        }
        let Some(pid) = self.entries[&id].record.pid() else {
            if self.entries[&id].record.state() == StateName::Stopping {
                // Spawn under way: the signal goes out when it reports its pid.
                if force {
                    self.transition(id, Transition::Escalate, now)?;
                }
            }
            return Ok(());
        };
        if force {
            self.escalate(id, now)?;
        } else {
            self.signal(id, pid, policy.signal);
            if was_paused {
                // A stopped process cannot act on TERM until it is continued.
                self.signal(id, pid, Signal::Cont);
            }
            let grace = grace.unwrap_or(policy.grace);
            self.arm(
                id,
                TimerKind::Grace,
                now.saturating_add(grace.as_duration()),
            );
        }
        Ok(())
    }

    /// Stops the unfinished children of `id` (and theirs) because `id` is being stopped.
    fn cascade(
        &mut self,
        id: ProcessId,
        force: bool,
        grace: Option<Span>,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        let children: Vec<_> = self
            .children
            .get(&id)
            .map(|c| c.iter().copied().collect())
            .unwrap_or_default();
        for child in children {
            self.stop(child, StopCause::Cascade { parent: id }, force, grace, now)?;
        }
        Ok(())
    }

    fn escalate(&mut self, id: ProcessId, now: Timestamp) -> Result<(), CoreError> {
        if self.transition(id, Transition::Escalate, now)? == Applied::Changed {
            if let Some(pid) = self.entries[&id].record.pid() {
                self.signal(id, pid, Signal::Kill);
            }
            self.cancel_timer(id, TimerKind::Grace);
        }
        Ok(())
    }

    fn timer_fired(&mut self, timer: Timer, now: Timestamp) {
        let Some(entry) = self.entries.get(&timer.id) else {
            return;
        };
        let record = &entry.record;
        if timer.attempt != record.restarts() {
            return;
        }
        let id = timer.id;
        let state = record.state();
        let tracked = record.is_tracked();
        let awaiting_ready = matches!(state, StateName::Running | StateName::Paused)
            && record.lifecycle().ready_at().is_none();
        let readiness_timeout = record.spec().readiness.timeout.unwrap_or_default();
        let retention_due = record
            .lifecycle()
            .ended_at()
            .zip(self.limits.retention)
            .is_some_and(|(end, keep)| now >= end.saturating_add(keep.as_duration()));
        // Each timer is checked against the record's state: one that lost a race
        // with an exit or a stop is ignored, never an error.
        let _ = match timer.kind {
            TimerKind::NotBefore if state == StateName::Pending => {
                self.place(id, now);
                Ok(())
            }
            TimerKind::Timeout if !state.is_terminal() && state != StateName::Stopping => {
                if tracked {
                    self.cascade(id, false, None, now)
                        .and_then(|()| self.transition(id, Transition::TimeOut, now).map(|_| ()))
                } else {
                    self.stop(id, StopCause::Timeout, false, None, now)
                }
            }
            TimerKind::Grace if state == StateName::Stopping => self.escalate(id, now),
            TimerKind::Readiness if awaiting_ready => self.stop(
                id,
                StopCause::NotReady {
                    after: readiness_timeout,
                },
                false,
                None,
                now,
            ),
            TimerKind::Retention if state.is_terminal() && retention_due => {
                self.forget(id);
                Ok(())
            }
            _ => Ok(()),
        };
    }

    /// Puts a pending record where it belongs: failed (a dependency did not
    /// complete), waiting (dependencies or predecessor unfinished), delayed, or ready.
    fn place(&mut self, id: ProcessId, now: Timestamp) {
        let entry = &self.entries[&id];
        if entry.record.state() != StateName::Pending {
            return;
        }
        for dep in &entry.record.spec().dependencies {
            if let Some(d) = self.entries.get(dep).map(|e| &e.record)
                && d.is_terminal()
                && d.state() != StateName::Completed
            {
                let error = format!("dependency {dep} ended {} instead of completing", d.state());
                let _ = self.transition(id, Transition::Fail { error }, now);
                return;
            }
        }
        if !entry.blockers.must_complete.is_empty() || !entry.blockers.must_end.is_empty() {
            return;
        }
        if let Lifecycle::Pending {
            not_before: Some(at),
            ..
        } = entry.record.lifecycle()
            && *at > now
        {
            let at = *at;
            self.arm(id, TimerKind::NotBefore, at);
            return;
        }
        let (group, priority, seq) = (
            entry.record.group().cloned(),
            entry.record.spec().priority,
            entry.seq,
        );
        self.ready.push(id, group, priority, seq);
    }

    /// Starts ready records while there are slots.
    fn schedule(&mut self, now: Timestamp) {
        while self.active_total < self.limits.max_running {
            let limits = &self.limits;
            let active = &self.active_by_group;
            // Records handed to the spawner go first, in their order.
            let next = match self.handed.front() {
                Some(&id) => Some(id),
                None => self.ready.best(|g| match limits.group_limit(g) {
                    None => true,
                    Some(limit) => g.and_then(|g| active.get(g)).copied().unwrap_or(0) < limit,
                }),
            };
            let Some(id) = next else {
                break;
            };
            self.ready.remove(id);
            self.handed.retain(|h| *h != id);
            if self.transition(id, Transition::Start, now).is_ok() {
                let record = Box::new(self.entries[&id].record.clone());
                self.out.push(Effect::Spawn { record });
                self.order.spawn_asked(id);
            }
        }
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
        // Tracked operations are the caller's own work: they hold no slot.
        let slotted = !entry.record.is_tracked();
        self.dirty.entry(id).or_insert(entry.persisted);
        if before == StateName::Pending && after != StateName::Pending {
            self.ready.remove(id);
            self.handed.retain(|h| *h != id);
        }
        if slotted && !before.is_active() && after.is_active() {
            self.add_active(id);
        } else if slotted && before.is_active() && !after.is_active() {
            self.remove_active(id);
        }
        let mut events = Vec::with_capacity(2);
        match kind {
            TransitionKind::Spawned if after == StateName::Running => {
                events.push(EventKind::Started);
            }
            TransitionKind::Exited | TransitionKind::Requeue => events.push(EventKind::Exited),
            TransitionKind::Pause => events.push(EventKind::Paused),
            TransitionKind::Resume => events.push(EventKind::Resumed),
            TransitionKind::Ready => events.push(EventKind::Ready),
            TransitionKind::Progress => events.push(EventKind::Progress),
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
            ] {
                self.cancel_timer(id, kind);
            }
            self.arm_retention(id);
            self.release_waiters(id, after, now);
        }
        Ok(applied)
    }

    /// A record ended: unblock (or fail) the records waiting for it.
    fn release_waiters(&mut self, id: ProcessId, end: StateName, now: Timestamp) {
        let Some(waiting) = self.waiters.remove(&id) else {
            return;
        };
        for w in waiting {
            let Some(entry) = self.entries.get_mut(&w) else {
                continue;
            };
            entry.blockers.must_end.remove(&id);
            let was_dependency = entry.blockers.must_complete.remove(&id);
            if was_dependency && end != StateName::Completed {
                let error = format!("dependency {id} ended {end} instead of completing");
                let _ = self.transition(w, Transition::Fail { error }, now);
                continue;
            }
            self.place(w, now);
        }
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

    fn rearm_live_timers(&mut self, id: ProcessId, now: Timestamp) {
        let record = &self.entries[&id].record;
        let spec = record.spec();
        match record.lifecycle() {
            Lifecycle::Running { started_at, .. } | Lifecycle::Paused { started_at, .. } => {
                if let Some(t) = spec.timeout {
                    let at = started_at.saturating_add(t.as_duration());
                    self.arm(id, TimerKind::Timeout, at);
                }
            }
            Lifecycle::Stopping { killed: false, .. } => {
                let at = now.saturating_add(spec.stop.grace.as_duration());
                self.arm(id, TimerKind::Grace, at);
            }
            _ => {}
        }
    }

    fn arm_retention(&mut self, id: ProcessId) {
        if let (Some(keep), Some(end)) = (
            self.limits.retention,
            self.entries[&id].record.lifecycle().ended_at(),
        ) {
            self.arm(
                id,
                TimerKind::Retention,
                end.saturating_add(keep.as_duration()),
            );
        }
    }

    fn forget(&mut self, id: ProcessId) {
        if let Some(entry) = self.entries.remove(&id) {
            if let Some(p) = entry.record.parent()
                && let Some(c) = self.children.get_mut(&p)
            {
                c.remove(&id);
            }
            self.children.remove(&id);
            self.dirty.remove(&id);
            self.cancel_timer(id, TimerKind::Retention);
            self.out.push(Effect::Delete { id });
        }
    }

    fn timer(&self, id: ProcessId, kind: TimerKind) -> Timer {
        Timer {
            id,
            kind,
            attempt: self.entries.get(&id).map_or(0, |e| e.record.restarts()),
        }
    }

    fn arm(&mut self, id: ProcessId, kind: TimerKind, at: Timestamp) {
        let timer = self.timer(id, kind);
        self.out.push(Effect::ArmTimer { timer, at });
    }

    fn cancel_timer(&mut self, id: ProcessId, kind: TimerKind) {
        let timer = self.timer(id, kind);
        self.out.push(Effect::CancelTimer { timer });
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
                    record: Box::new(entry.record.clone()),
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
            .filter(|e| e.record.state().is_active() && !e.record.is_tracked())
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
            if let Some(p) = r.parent().and_then(|p| self.entries.get(&p)) {
                let parent_stopped = matches!(
                    p.record.state(),
                    StateName::Cancelled | StateName::TimedOut | StateName::Stopping
                );
                let child_live = !r.is_terminal() && r.state() != StateName::Stopping;
                if parent_stopped && child_live {
                    return Err(format!(
                        "child {} is {} while its parent {} is {}",
                        r.id(),
                        r.state(),
                        p.record.id(),
                        p.record.state()
                    ));
                }
            }
        }
        Ok(())
    }
}
