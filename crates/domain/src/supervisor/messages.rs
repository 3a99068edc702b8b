//! What goes into the core and what comes out: inputs, effects, timers,
//! and the errors of a refused input.

use serde::{Deserialize, Serialize};

use crate::{
    Event, ExitStatus, InvalidTransition, NodeId, Percent, ProcessId, ProcessRecord, ProcessSpec,
    Signal, Span, SpecError, StateName, Timestamp,
};

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
    /// A group refused a cluster-wide slot (on this record's ask) may ask
    /// again, whatever became of the record meanwhile.
    ClusterSlot,
    /// The grace after the record's last owner went ends: it is stopped
    /// unless an owner came back ([`crate::Owner`]).
    OwnerGrace,
    /// A watched file changed and no change came since, for the watch's
    /// debounce: the process is restarted ([`crate::FileWatch`]).
    FilesSettled,
    /// A schedule's next run is due ([`crate::Schedule`]).
    Due,
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
    /// Report [`Input::OwnerGone`] for `process` once it is gone: at once
    /// if no process runs with its pid and start time any more.
    WatchOwner {
        /// The owner, or a session's holder.
        process: crate::ProcessRef,
    },
    /// Report [`Input::FilesChanged`] for `id` at each change under
    /// `watch`'s paths, until [`Effect::UnwatchFiles`] (a second one for
    /// the same record replaces the first).
    WatchFiles {
        /// The record.
        id: ProcessId,
        /// What to watch.
        watch: crate::FileWatch,
    },
    /// Stop watching files for `id`: it ended.
    UnwatchFiles {
        /// The record.
        id: ProcessId,
    },
    /// Write the record: create it when `expected_version` is `None`, else
    /// compare-and-set against that version.
    Persist {
        /// The record as it is now.
        record: ProcessRecord,
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
        record: ProcessRecord,
    },
    /// After a restart, take over the record's process again; if the
    /// spawner cannot, report [`Input::ReattachFailed`](crate::Input::ReattachFailed).
    Reattach {
        /// The record.
        id: ProcessId,
        /// Its process.
        pid: u32,
    },
    /// Run the record's stop command ([`crate::StopCommand`]) for its
    /// process `pid`, cut at `within`; then send `signal` to its whole
    /// tree (KILL is the core's, at the end of the grace it arms).
    StopByCommand {
        /// The record.
        id: ProcessId,
        /// Its process group leader.
        pid: u32,
        /// The command.
        command: String,
        /// How long it may take.
        within: crate::Span,
        /// The signal after it.
        signal: Signal,
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
    /// Ask the store for one of `group`'s cluster-wide slots for `id`,
    /// which waits for it; report [`Input::ClusterSlot`]. The store counts
    /// the group's records that hold a slot on any node (starting,
    /// running, paused, stopping) and the slots granted whose records are
    /// still pending, and grants one while they are fewer than `limit`. A
    /// record's slot is free again once the store holds it in another
    /// state: ended, unreachable, or queued again. Report the store's
    /// answer only: an ask it did not answer may have been granted, so it
    /// is asked again until it is answered.
    TakeClusterSlot {
        /// The record.
        id: ProcessId,
        /// Its group.
        group: crate::GroupName,
        /// The group's limit across the cluster.
        limit: usize,
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
    /// Accept a new record whose spec asks for a port
    /// ([`ProcessSpec::port`]), with the ports the kernel showed free just
    /// before, in the order to try. (A plain [`Input::Submit`] of such a
    /// spec takes the port asked for, or its range, as free in the
    /// kernel's view; `auto` then finds none.)
    SubmitOnPorts {
        /// Its id (from the id port).
        id: ProcessId,
        /// What to run.
        spec: ProcessSpec,
        /// Ports nothing listened on, in the order to try.
        free: Vec<u16>,
    },
    /// A process that owns records ([`crate::Owner`]), or holds a
    /// session, is gone.
    OwnerGone {
        /// The process.
        process: crate::ProcessRef,
    },
    /// `holder` holds `session` from now on, until it is gone: the records
    /// the session owns live while it does.
    HoldSession {
        /// The session.
        session: crate::SessionId,
        /// The process that holds it.
        holder: crate::ProcessRef,
    },
    /// `holder` no longer holds `session`, though it lives on (a server of
    /// many sessions whose client went): when no other process holds it,
    /// the session's records start their grace.
    ReleaseSession {
        /// The session.
        session: crate::SessionId,
        /// The process that held it.
        holder: crate::ProcessRef,
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
    /// This node claimed `record` from the cluster's queue
    /// ([`crate::cluster::placement`]), and the store holds it placed on this node
    /// ([`ProcessRecord::placed_on`], written before anything is done with
    /// it): it becomes this node's, as if submitted here.
    Claimed {
        /// The record as the store holds it (this node's, pending).
        record: ProcessRecord,
    },
    /// This node claimed and placed `record` to stop it (a stop came while
    /// it waited for a node): it becomes this node's, cancelled, never
    /// started.
    ClaimedToStop {
        /// The record as the store holds it (this node's, pending).
        record: ProcessRecord,
    },
    /// This node claimed and placed `record`, but cannot take it (the core
    /// refused [`Input::Claimed`] with `reason`): it becomes this node's,
    /// failed with the reason, rather than wait for ever.
    NameHeld {
        /// The record as the store holds it (this node's, pending).
        record: ProcessRecord,
        /// Why it cannot run here.
        reason: String,
    },
    /// The store's answer to [`Effect::TakeClusterSlot`]: whether `id`
    /// has one of its group's cluster-wide slots. Refused, its group waits
    /// until a slot may have freed ([`Input::ClusterSlotsFreed`], or a
    /// second later).
    ClusterSlot {
        /// The record.
        id: ProcessId,
        /// Whether it was granted.
        granted: bool,
    },
    /// A record ended somewhere in the cluster: groups refused a
    /// cluster-wide slot ask again.
    ClusterSlotsFreed,
    /// A file under `id`'s watch ([`crate::FileWatch`]) changed. Once its
    /// debounce passes with no further change, `id` is restarted as
    /// [`Input::Restart`] does, with the ids the latest change brought
    /// (those of earlier changes are never used): the first for `id`'s
    /// new record, the next for its dependents' when the watch restarts
    /// them too. The driver brings as many as
    /// [`Supervisor::ids_for_change`](crate::Supervisor::ids_for_change) says.
    FilesChanged {
        /// The watched record.
        id: ProcessId,
        /// Fresh ids for the new records.
        new_ids: Vec<ProcessId>,
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
    /// spawn's result, as [`Input::Lost`](crate::Input::Lost) is a notice's.
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
        /// The resource limit that ended it, if the spawner saw one do so.
        limit: Option<crate::LimitHit>,
    },
    /// The OS process of `id` exited, and the spawner at once started `next`
    /// in its place, as [`Supervisor::hand_over`](crate::Supervisor::hand_over) allowed. `next` takes the
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
    /// A record handed over ([`Supervisor::hand_over`](crate::Supervisor::hand_over)) was started by a
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
    /// Its health check passed after failing (or for the first time), or
    /// failed its `failures` times in a row ([`crate::HealthCheck`]): an
    /// unhealthy process is stopped and started again under its restart
    /// policy.
    Health {
        /// The record.
        id: ProcessId,
        /// Whether it is healthy.
        healthy: bool,
        /// The last failure's output.
        detail: Option<String>,
    },
    /// A record's file watch could not be set up: the record notes why
    /// ([`crate::ProcessRecord::watch_error`]), and runs on unwatched.
    WatchFailed {
        /// The record.
        id: ProcessId,
        /// Why, as the system said.
        reason: String,
    },
    /// The process's leader exited while other processes of its tree run
    /// on: the record stays live until they end ([`crate::LeaderExit`]).
    LeaderExited {
        /// The record.
        id: ProcessId,
        /// How the leader ended.
        status: ExitStatus,
        /// What runs on.
        running: Vec<crate::RunningOn>,
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
    /// The record is lost, with the reason; one that would run again (a
    /// restart policy, or a project's service) starts again as `again`,
    /// `restarted_from` it.
    ReattachFailed {
        /// The record.
        id: ProcessId,
        /// The process that was not found.
        pid: u32,
        /// The machine restarted since the record's process was started
        /// (its boot id changed): the reason says so.
        machine_restarted: bool,
        /// A fresh id, for the record that runs it again.
        again: ProcessId,
    },
    /// Whether this node holds its lease ([`crate::cluster`]). When it no
    /// longer does (`held: false`, a whole lease after its last renewal
    /// that succeeded was sent), it stands down: its failover records
    /// are stopped (TERM, then KILL after their grace; each exit queues it
    /// again here) and none starts until it holds its lease again (`held:
    /// true`), since another node may run them after
    /// [`crate::cluster::ClusterTiming::failover_after`]. Other records
    /// run on.
    Lease {
        /// Whether the lease is held.
        held: bool,
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
    /// ([`Supervisor`](crate::Supervisor)'s rule in `reconcile.rs`); a conflict is never dropped.
    StoreConflict {
        /// The record.
        id: ProcessId,
        /// The version the store holds, if any.
        stored: Option<u64>,
    },
    /// This node took its name again after its lease lapsed (a
    /// partition, a stall): `stored` is what the shared store holds of its
    /// records now, as id, version and state. Another node may have marked
    /// them `unreachable`, or given them up as `lost`; the core reconciles
    /// ([`Supervisor`](crate::Supervisor)'s rule in `reconcile.rs`).
    Rejoined {
        /// The store's version and state of each of this node's records.
        stored: Vec<(ProcessId, u64, StateName)>,
    },
    /// Other nodes' records, as the shared store holds them: dependencies
    /// or parents that records here name (read before a submit that names
    /// them, and again when their events say they changed). The core keeps
    /// a view of each, and acts on its side of the link: a dependency that
    /// ends releases or fails what waits for it here, and a parent that is
    /// stopped stops its children here. Records of this node are ignored.
    Foreign {
        /// The records, any order (a parent may come after its child).
        records: Vec<ProcessRecord>,
        /// Records named here that the store no longer holds: they ended
        /// and were removed unseen, so what depends on them fails (whether
        /// they completed is not known).
        gone: Vec<ProcessId>,
    },
    /// The store did not take the creation of `id` (it stopped answering
    /// after the check before new work): the record is forgotten as if it
    /// had never been submitted, so nothing is acknowledged, or started,
    /// from memory alone. A record that already left `starting` is kept.
    Unstored {
        /// The record.
        id: ProcessId,
    },
}

impl Input {
    /// Whether a caller asked for it (a submit, a stop, a pause, a report),
    /// rather than the engine having heard it (a spawn, an exit, a timer).
    pub fn is_call(&self) -> bool {
        matches!(
            self,
            Input::Submit { .. }
                | Input::SubmitOnPorts { .. }
                | Input::Track { .. }
                | Input::Restart { .. }
                | Input::Stop { .. }
                | Input::StopLevel { .. }
                | Input::Pause { .. }
                | Input::Resume { .. }
                | Input::Progress { .. }
                | Input::Complete { .. }
                | Input::Fail { .. }
                | Input::Remove { .. }
        )
    }
}

impl Input {
    /// Whether this input may name a record the core does not know yet:
    /// another node's, as a dependency or a parent.
    pub fn may_name_unknown(&self) -> bool {
        match self {
            Input::Submit { spec, .. }
            | Input::SubmitOnPorts { spec, .. }
            | Input::Track { spec, .. } => spec.parent.is_some() || !spec.dependencies.is_empty(),
            Input::Restart { .. } => true,
            Input::Claimed { record } => {
                record.parent().is_some() || !record.spec().dependencies.is_empty()
            }
            _ => false,
        }
    }

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
                | Input::Rejoined { .. }
        )
    }
}

/// Why a name is taken, and what the caller can do.
fn name_taken(
    name: &crate::ProcessName,
    id: ProcessId,
    state: StateName,
    asked: crate::NameTaken,
    differences: &[String],
) -> String {
    match asked {
        crate::NameTaken::Ensure if !differences.is_empty() => format!(
            "the live process named {name} ({id}, {state}) runs something else (it differs in {}); replace it (--replace) to stop it and start this one",
            differences.join(", ")
        ),
        crate::NameTaken::Ensure => format!("the live process named {name} is {id}: reused"),
        _ => format!(
            "a live process is named {name} already: {id} ({state}); ensure it (--ensure) to reuse it, or replace it (--replace) to stop it and start this one"
        ),
    }
}

impl CoreError {
    /// The live record a submission is answered with instead of a new one:
    /// it asked to ensure its name, and the record carrying it runs what
    /// it asked for.
    pub fn reused(&self) -> Option<ProcessId> {
        match self {
            CoreError::NameTaken {
                id,
                asked: crate::NameTaken::Ensure,
                differences,
                ..
            } if differences.is_empty() => Some(*id),
            _ => None,
        }
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
    /// The spec is placed on another node; only that node's core takes it.
    #[error("the process is placed on node {placed}, and this is node {here}: send it to {placed}")]
    OtherNode {
        /// The node the spec names.
        placed: NodeId,
        /// This core's node.
        here: NodeId,
    },
    /// A spec placed on any node is queued for the cluster, never
    /// submitted to one node's core.
    #[error("a process placed on any node is queued for the cluster, not submitted to one node")]
    PlacedOnAny,
    /// A claimed record is not pending and placed on this node.
    #[error("process {0} is not a pending record placed on this node")]
    NotClaimedHere(ProcessId),
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
    /// A live record of the node carries the name already
    /// ([`crate::ProcessSpec::if_name_taken`]).
    #[error("{}", name_taken(name, *id, *state, *asked, differences))]
    NameTaken {
        /// The name.
        name: crate::ProcessName,
        /// The live record.
        id: ProcessId,
        /// Its state.
        state: StateName,
        /// What the submission asked for when the name is taken.
        asked: crate::NameTaken,
        /// With [`crate::NameTaken::Ensure`]: where the live record's spec
        /// differs from the one submitted (none: it is reused).
        differences: Vec<String>,
    },
    /// No port could be handed out ([`crate::ProcessSpec::port`]).
    #[error(transparent)]
    Port(#[from] crate::PortRefused),
}
