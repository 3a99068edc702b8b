//! A process record and the transitions that move it through its lifecycle.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{
    ExitStatus, GroupName, Lifecycle, NodeId, ProcessId, ProcessSpec, ReadinessCheck,
    ScheduleState, SessionId, StateName, StopCause, Timestamp, Until,
};

/// A percentage from 0 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Percent(u8);

/// A progress value outside 0..=100.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid progress {0}: it must be a whole number from 0 to 100")]
pub struct PercentError(pub String);

impl Percent {
    /// Validates `value`.
    ///
    /// # Errors
    /// [`PercentError`] if `value` exceeds 100.
    pub fn new(value: u8) -> Result<Self, PercentError> {
        if value > 100 {
            return Err(PercentError(value.to_string()));
        }
        Ok(Percent(value))
    }

    /// Validates any number, as it may come from JSON or a command line.
    ///
    /// # Errors
    /// [`PercentError`] unless `value` is a whole number from 0 to 100.
    pub fn from_f64(value: f64) -> Result<Self, PercentError> {
        if value.fract() != 0.0 || !(0.0..=100.0).contains(&value) {
            return Err(PercentError(value.to_string()));
        }
        // In range and whole: the cast is exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(Percent(value as u8))
    }

    /// The value.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Percent::from_f64(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Reported progress, with an estimate of when the work ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// How far along, 0 to 100.
    pub percent: Percent,
    /// What it is doing.
    pub message: Option<String>,
    /// When this was reported.
    pub updated_at: Timestamp,
    /// The expected end, extrapolated from progress so far.
    pub eta: Option<Timestamp>,
}

/// The longest progress message kept; longer ones are cut.
pub const MAX_PROGRESS_MESSAGE: usize = 1024;

/// Derives the expected end from the progress made since `started_at`:
/// if `percent` took `elapsed`, the rest takes `elapsed * (100 - percent) / percent`.
pub fn estimate_eta(started_at: Timestamp, percent: Percent, now: Timestamp) -> Option<Timestamp> {
    let p = u64::from(percent.get());
    if p == 0 {
        return None;
    }
    if p == 100 {
        return Some(now);
    }
    let elapsed = now.as_millis().saturating_sub(started_at.as_millis());
    let remaining = elapsed.saturating_mul(100 - p) / p;
    Some(Timestamp::from_millis(
        now.as_millis().saturating_add(remaining),
    ))
}

/// One finished attempt of a record that was restarted automatically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When the attempt started.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub ended_at: Timestamp,
    /// How it ended.
    pub exit: ExitStatus,
}

/// A record's leader exited while other processes of its tree ran on:
/// the record stays live until the last of them ends (unless its spec is
/// `leader_only`), and this says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderExit {
    /// How the leader ended: the record's exit when the rest ends, unless
    /// one of them failed (its exit then).
    pub status: ExitStatus,
    /// When.
    pub at: Timestamp,
    /// The processes of its tree that ran on, as seen then (a bounded
    /// list: [`MAX_RUNNING_ON`]).
    pub running: Vec<RunningOn>,
    /// How many ran on, listed or not.
    pub count: usize,
}

/// What a record's health check says ([`ProcessSpec::health`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Whether it passed last (`false` once it failed `failures` times in
    /// a row).
    pub healthy: bool,
    /// Since when it says so.
    pub since: Timestamp,
    /// The last failure's output (the HTTP status, the command's output),
    /// cut to 1 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

/// One process of a record's tree that runs on after its leader exited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningOn {
    /// Its pid.
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`).
    pub name: String,
}

/// How many processes running on a [`LeaderExit`] lists.
pub const MAX_RUNNING_ON: usize = 16;

impl LeaderExit {
    /// The leader's exit, and what ran on (only the first
    /// [`MAX_RUNNING_ON`] are kept; `count` keeps how many).
    pub fn new(status: ExitStatus, at: Timestamp, mut running: Vec<RunningOn>) -> Self {
        let count = running.len();
        running.sort_by_key(|r| r.pid);
        running.truncate(MAX_RUNNING_ON);
        LeaderExit {
            status,
            at,
            running,
            count,
        }
    }
}

impl fmt::Display for LeaderExit {
    /// `leader exited 0; 2 processes run on: 4242 node, 4250 esbuild`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.status {
            ExitStatus::Code(c) => c.to_string(),
            ExitStatus::Signal(s) => format!("by signal {s}"),
        };
        let noun = if self.count == 1 {
            "process runs"
        } else {
            "processes run"
        };
        write!(f, "leader exited {how}; {} {noun} on", self.count)?;
        for (i, r) in self.running.iter().enumerate() {
            let sep = if i == 0 { ": " } else { ", " };
            write!(f, "{sep}{} {}", r.pid, r.name)?;
        }
        if self.count > self.running.len() {
            write!(f, ", ...")?;
        }
        Ok(())
    }
}

/// How many past attempts a record keeps; older ones are dropped (the count stays in `restarts`).
pub const MAX_ATTEMPTS_KEPT: usize = 32;

/// One piece of bpm's bookkeeping: a spec, where it runs, and where it is in its lifecycle.
///
/// Fields are private so that only transitions change a record: session
/// and parent never change after creation, nor does node, but once: a
/// record placed on any node is created with the node `any`, and the node
/// that claims it sets its own ([`ProcessRecord::placed_on`]). Every change
/// bumps `version`.
///
/// A record is a shared handle: a clone (the store's cache, an event, an
/// answer) costs a pointer, and a change copies the fields only while
/// another clone still holds them. A daemon keeps one copy of each
/// finished record, wherever it is held.
#[derive(Clone, PartialEq)]
pub struct ProcessRecord(Arc<Record>);

/// A record's fields, behind its handle; it serializes as the record does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    id: ProcessId,
    node: NodeId,
    /// Shared by the record's versions: it never changes after creation.
    spec: Arc<ProcessSpec>,
    #[serde(flatten)]
    lifecycle: Lifecycle,
    created_at: Timestamp,
    updated_at: Timestamp,
    /// Boxed, as is `result`: most records never have one.
    progress: Option<Box<Progress>>,
    result: Option<Box<serde_json::Value>>,
    restarts: u32,
    attempts: Vec<Attempt>,
    restarted_from: Option<ProcessId>,
    /// Its leader exited while the rest of its tree runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    leader_exit: Option<Box<LeaderExit>>,
    /// The TCP port handed to it ([`ProcessSpec::port`]), held until it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    /// What its health check says ([`ProcessSpec::health`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    health: Option<Box<Health>>,
    /// Why its file watch could not be set up ([`ProcessSpec::watch`]),
    /// when it runs without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    watch_error: Option<Box<str>>,
    /// The schedule that started it, for a schedule's run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scheduled_from: Option<ProcessId>,
    /// Where a schedule stands ([`ProcessSpec::schedule`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schedule: Option<Box<ScheduleState>>,
    version: u64,
}

impl fmt::Debug for ProcessRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Serialize for ProcessRecord {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ProcessRecord {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Record::deserialize(deserializer).map(|fields| ProcessRecord(Arc::new(fields)))
    }
}

/// A version of a record without its spec, which never changes after the
/// record is created: what a store that keeps each record's spec once
/// writes for its later versions. It serializes as the record does, less
/// the `spec` field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordUpdate {
    id: ProcessId,
    node: NodeId,
    #[serde(flatten)]
    lifecycle: Lifecycle,
    created_at: Timestamp,
    updated_at: Timestamp,
    progress: Option<Progress>,
    result: Option<serde_json::Value>,
    restarts: u32,
    attempts: Vec<Attempt>,
    restarted_from: Option<ProcessId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    leader_exit: Option<LeaderExit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    health: Option<Health>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    watch_error: Option<Box<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scheduled_from: Option<ProcessId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schedule: Option<ScheduleState>,
    version: u64,
}

impl RecordUpdate {
    /// The record's id.
    pub const fn id(&self) -> ProcessId {
        self.id
    }
}

/// An input to a record's lifecycle.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// pending → starting: a slot was given to it.
    Start,
    /// starting → running (or stopping learns its pid): the OS process exists.
    Spawned {
        /// Its process id.
        pid: u32,
    },
    /// starting → failed: the OS process could not be created.
    SpawnFailed {
        /// Why.
        error: String,
    },
    /// The OS process exited; the final state follows from how and why.
    Exited {
        /// How it ended.
        status: ExitStatus,
        /// The resource limit that ended it, if the spawner saw one do so.
        limit: Option<crate::LimitHit>,
    },
    /// running/paused → pending: it exited and its restart policy starts it again later.
    Requeue {
        /// How this attempt ended.
        status: ExitStatus,
        /// When the next attempt may start.
        not_before: Timestamp,
    },
    /// Begin stopping (a pending or tracked record ends at once).
    Stop {
        /// Why.
        cause: StopCause,
    },
    /// stopping → stopping with KILL sent: the grace period ran out.
    Escalate,
    /// running → paused.
    Pause,
    /// paused → running.
    Resume,
    /// The timeout ran out: stop it, to end `timed_out`.
    TimeOut,
    /// Its readiness check passed.
    Ready,
    /// New progress.
    Progress {
        /// How far along.
        percent: Percent,
        /// What it is doing.
        message: Option<String>,
    },
    /// A tracked operation finished successfully.
    Complete {
        /// What it produced.
        result: Option<serde_json::Value>,
    },
    /// A tracked operation or a queued record failed.
    Fail {
        /// Why.
        error: String,
    },
    /// bpm lost track of it.
    Lose {
        /// Why.
        reason: String,
    },
    /// starting/running/paused/stopping → unreachable: its node's lease
    /// expired (see [`crate::cluster::sweep`]).
    Unreach {
        /// Which node, and when it last renewed.
        reason: String,
    },
    /// unreachable → the state it was in: its node is back.
    Reach,
    /// Its leader exited while other processes of its tree run on: the
    /// record stays as it is and notes it ([`ProcessRecord::leader_exit`]).
    LeaderExited {
        /// The leader's exit and what runs on.
        exit: LeaderExit,
    },
    /// Its health check passed, or failed `failures` times in a row: the
    /// record notes it while it runs ([`ProcessRecord::health`]).
    Health {
        /// Whether it is healthy.
        healthy: bool,
        /// The last failure's output.
        detail: Option<String>,
    },
    /// Its file watch could not be set up (or cover a tree that grew):
    /// the record notes why while it is live
    /// ([`ProcessRecord::watch_error`]).
    WatchFailed {
        /// Why, as the system said.
        reason: String,
    },
    /// A schedule moved on (a run started, a due time was skipped or
    /// missed, its next due time changed): the record notes where it
    /// stands while it is live ([`ProcessRecord::schedule`]).
    Scheduled {
        /// Where it stands now.
        state: ScheduleState,
    },
}

/// The kind of a [`Transition`], for error messages and tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum TransitionKind {
    Start,
    Spawned,
    SpawnFailed,
    Exited,
    Requeue,
    Stop,
    Escalate,
    Pause,
    Resume,
    TimeOut,
    Ready,
    Progress,
    Complete,
    Fail,
    Lose,
    Unreach,
    Reach,
    LeaderExited,
    Health,
    WatchFailed,
    Scheduled,
}

impl TransitionKind {
    /// A verb phrase for messages: "cannot {verb} a completed process".
    pub const fn verb(self) -> &'static str {
        match self {
            TransitionKind::Start => "start",
            TransitionKind::Spawned => "record a spawn for",
            TransitionKind::SpawnFailed => "record a failed spawn for",
            TransitionKind::Exited => "record an exit for",
            TransitionKind::Requeue => "requeue",
            TransitionKind::Stop => "stop",
            TransitionKind::Escalate => "kill",
            TransitionKind::Pause => "pause",
            TransitionKind::Resume => "resume",
            TransitionKind::TimeOut => "time out",
            TransitionKind::Ready => "mark ready",
            TransitionKind::Progress => "report progress on",
            TransitionKind::Complete => "complete",
            TransitionKind::Fail => "fail",
            TransitionKind::Lose => "mark lost",
            TransitionKind::Unreach => "mark unreachable",
            TransitionKind::Reach => "bring back",
            TransitionKind::LeaderExited => "record a leader's exit for",
            TransitionKind::Health => "record the health of",
            TransitionKind::WatchFailed => "record a failed watch for",
            TransitionKind::Scheduled => "move on the schedule of",
        }
    }
}

impl Transition {
    /// The kind.
    pub const fn kind(&self) -> TransitionKind {
        match self {
            Transition::Start => TransitionKind::Start,
            Transition::Spawned { .. } => TransitionKind::Spawned,
            Transition::SpawnFailed { .. } => TransitionKind::SpawnFailed,
            Transition::Exited { .. } => TransitionKind::Exited,
            Transition::Requeue { .. } => TransitionKind::Requeue,
            Transition::Stop { .. } => TransitionKind::Stop,
            Transition::Escalate => TransitionKind::Escalate,
            Transition::Pause => TransitionKind::Pause,
            Transition::Resume => TransitionKind::Resume,
            Transition::TimeOut => TransitionKind::TimeOut,
            Transition::Ready => TransitionKind::Ready,
            Transition::Progress { .. } => TransitionKind::Progress,
            Transition::Complete { .. } => TransitionKind::Complete,
            Transition::Fail { .. } => TransitionKind::Fail,
            Transition::Lose { .. } => TransitionKind::Lose,
            Transition::Unreach { .. } => TransitionKind::Unreach,
            Transition::Reach => TransitionKind::Reach,
            Transition::LeaderExited { .. } => TransitionKind::LeaderExited,
            Transition::Health { .. } => TransitionKind::Health,
            Transition::WatchFailed { .. } => TransitionKind::WatchFailed,
            Transition::Scheduled { .. } => TransitionKind::Scheduled,
        }
    }
}

/// A transition that is not allowed from the record's current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub struct InvalidTransition {
    /// The state the record is in.
    pub from: StateName,
    /// What was attempted.
    pub attempted: TransitionKind,
    /// Whether the record is a tracked operation (no OS process).
    pub tracked: bool,
}

impl fmt::Display for InvalidTransition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.tracked {
            "tracked operation"
        } else {
            "process"
        };
        let article = if self.from == StateName::Unreachable {
            "an"
        } else {
            "a"
        };
        write!(
            f,
            "invalid transition: cannot {} {article} {} {what} (attempted {:?} from state {})",
            self.attempted.verb(),
            self.from,
            self.attempted,
            self.from,
        )?;
        if self.tracked
            && matches!(
                self.attempted,
                TransitionKind::Pause | TransitionKind::Resume | TransitionKind::Spawned
            )
        {
            f.write_str(": it has no OS process")?;
        }
        if !self.tracked
            && matches!(
                self.attempted,
                TransitionKind::Complete | TransitionKind::Fail
            )
            && !self.from.is_terminal()
        {
            f.write_str(": a process's outcome is its exit status")?;
        }
        if self.from == StateName::Unreachable {
            f.write_str(": its node is lost, and it stays as it is until the node comes back or it is given up as lost")?;
        }
        Ok(())
    }
}

/// Where a transition leads, before it is applied.
enum Next {
    To(Lifecycle),
    NoOp,
    Invalid,
}

/// A stopping record's state, taken out of its lifecycle.
struct Stop {
    started_at: Option<Timestamp>,
    pid: Option<u32>,
    requested_at: Timestamp,
    cause: StopCause,
    killed: bool,
}

/// What a legal transition did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The record changed (its version went up).
    Changed,
    /// Nothing changed, harmlessly: completing, failing or stopping a finished
    /// record, stopping a record that is already stopping, marking a ready record ready.
    NoOp,
}

impl ProcessRecord {
    /// Takes the place of version `stored`, which the store holds though
    /// this record did not come from it (another writer, or an earlier
    /// write that went through though its answer was lost): the version
    /// becomes greater than `stored`, so the next write replaces it.
    pub fn rebase(&mut self, stored: u64) {
        let version = self.0.version.max(stored.saturating_add(1));
        if version != self.0.version {
            Arc::make_mut(&mut self.0).version = version;
        }
    }

    /// Takes `node`'s text for its node name when the two are equal (and
    /// changes nothing else): a store that reads many records back calls it
    /// so that they hold their node's name once.
    pub fn share_node(&mut self, node: &NodeId) {
        if self.0.node == *node && !self.0.node.shares_text(node) {
            Arc::make_mut(&mut self.0).node = node.clone();
        }
    }

    /// A new record for `spec` on `node`: pending, or running at once for a
    /// tracked operation. The spec must have been validated.
    pub fn new(id: ProcessId, node: NodeId, spec: ProcessSpec, now: Timestamp) -> Self {
        // A schedule placed on any node waits in the cluster's queue, as
        // a process does, until a node claims it.
        let queued = node.is_any() && spec.schedule.is_some();
        let lifecycle = if spec.is_tracked() && !queued {
            Lifecycle::Running {
                started_at: now,
                pid: None,
                ready_at: Some(now),
            }
        } else {
            Lifecycle::Pending {
                queued_at: now,
                not_before: spec.delay.map(|d| now.saturating_add(d.as_duration())),
            }
        };
        ProcessRecord(Arc::new(Record {
            id,
            node,
            spec: Arc::new(spec),
            lifecycle,
            created_at: now,
            updated_at: now,
            progress: None,
            result: None,
            restarts: 0,
            attempts: Vec::new(),
            restarted_from: None,
            leader_exit: None,
            port: None,
            health: None,
            watch_error: None,
            scheduled_from: None,
            schedule: None,
            version: 1,
        }))
    }

    /// This record, unplaced (its node is [`NodeId::any`]) and still
    /// pending, placed on `node`, which claimed it: the one change of a
    /// record's node. `None` if it is placed already, or no longer pending.
    pub fn placed_on(&self, node: &NodeId, now: Timestamp) -> Option<ProcessRecord> {
        if !self.0.node.is_any() || node.is_any() || self.state() != StateName::Pending {
            return None;
        }
        let mut placed = self.clone();
        let fields = Arc::make_mut(&mut placed.0);
        fields.node = node.clone();
        fields.updated_at = now;
        fields.version += 1;
        Some(placed)
    }

    /// A new record that repeats `previous`'s spec: a manual restart.
    pub fn restart_of(previous: &ProcessRecord, id: ProcessId, now: Timestamp) -> Self {
        Self::restart_with(previous, id, ProcessSpec::clone(&previous.0.spec), now)
    }

    /// A new record that repeats `previous` with `spec` (its own, with
    /// dependencies moved to records restarted with it, say).
    pub fn restart_with(
        previous: &ProcessRecord,
        id: ProcessId,
        mut spec: ProcessSpec,
        now: Timestamp,
    ) -> Self {
        // The new record must not wait for its own predecessor's dependencies twice,
        // nor for the delay again: it is started on purpose.
        spec.delay = None;
        // It answers no client's request.
        spec.request = None;
        let mut record = ProcessRecord::new(id, previous.0.node.clone(), spec, now);
        let fields = Arc::make_mut(&mut record.0);
        fields.restarted_from = Some(previous.0.id);
        // A restart keeps its port.
        fields.port = previous.0.port;
        record
    }

    /// A new record that runs `previous` again on another node after
    /// `previous`'s node was lost (failover): unplaced (any node carrying
    /// its `node_labels` takes it), `restarted_from` `previous`, counting
    /// one restart more, and not before the backoff of that restart.
    pub fn failover_of(previous: &ProcessRecord, id: ProcessId, now: Timestamp) -> Self {
        let mut spec = ProcessSpec::clone(&previous.0.spec);
        spec.node = Some(NodeId::any());
        spec.delay = None;
        spec.request = None;
        let not_before = now.saturating_add(spec.restart.backoff.delay(previous.0.restarts));
        let mut record = ProcessRecord::new(id, NodeId::any(), spec, now);
        let fields = Arc::make_mut(&mut record.0);
        fields.restarted_from = Some(previous.0.id);
        fields.restarts = previous.0.restarts.saturating_add(1);
        fields.lifecycle = Lifecycle::Pending {
            queued_at: now,
            not_before: Some(not_before),
        };
        record
    }

    /// This version without its spec.
    pub fn update(&self) -> RecordUpdate {
        RecordUpdate {
            id: self.0.id,
            node: self.0.node.clone(),
            lifecycle: self.0.lifecycle.clone(),
            created_at: self.0.created_at,
            updated_at: self.0.updated_at,
            progress: self.0.progress.as_deref().cloned(),
            result: self.0.result.as_deref().cloned(),
            restarts: self.0.restarts,
            attempts: self.0.attempts.clone(),
            restarted_from: self.0.restarted_from,
            leader_exit: self.0.leader_exit.as_deref().cloned(),
            port: self.0.port,
            health: self.0.health.as_deref().cloned(),
            watch_error: self.0.watch_error.clone(),
            scheduled_from: self.0.scheduled_from,
            schedule: self.0.schedule.as_deref().cloned(),
            version: self.0.version,
        }
    }

    /// The version `update` describes, with `spec` (what a store that keeps
    /// the spec apart reads back).
    pub fn from_update(spec: Arc<ProcessSpec>, update: RecordUpdate) -> ProcessRecord {
        ProcessRecord(Arc::new(Record {
            id: update.id,
            node: update.node,
            spec,
            lifecycle: update.lifecycle,
            created_at: update.created_at,
            updated_at: update.updated_at,
            progress: update.progress.map(Box::new),
            result: update.result.map(Box::new),
            restarts: update.restarts,
            attempts: update.attempts,
            restarted_from: update.restarted_from,
            leader_exit: update.leader_exit.map(Box::new),
            port: update.port,
            health: update.health.map(Box::new),
            watch_error: update.watch_error,
            scheduled_from: update.scheduled_from,
            schedule: update.schedule.map(Box::new),
            version: update.version,
        }))
    }

    /// The version `update` describes, with this record's spec; `None` if
    /// `update` is another record's.
    pub fn updated(&self, update: RecordUpdate) -> Option<ProcessRecord> {
        (update.id == self.0.id).then(|| ProcessRecord::from_update(self.0.spec.clone(), update))
    }

    /// Its leader's exit, while processes of its tree run on after it (and,
    /// once it ended, how its last attempt's leader exited before them).
    pub fn leader_exit(&self) -> Option<&LeaderExit> {
        self.0.leader_exit.as_deref()
    }

    /// What its health check says, while it runs.
    pub fn health(&self) -> Option<&Health> {
        self.0.health.as_deref()
    }

    /// Why its file watch could not be set up, if it could not: the
    /// process runs on unwatched.
    pub fn watch_error(&self) -> Option<&str> {
        self.0.watch_error.as_deref()
    }

    /// The schedule that started it, for a schedule's run.
    pub fn scheduled_from(&self) -> Option<ProcessId> {
        self.0.scheduled_from
    }

    /// Where a schedule stands: its next due time, its runs.
    pub fn schedule(&self) -> Option<&ScheduleState> {
        self.0.schedule.as_deref()
    }

    /// When a schedule starts its next run: only while it is running
    /// (not paused, not ended).
    pub fn next_due(&self) -> Option<Timestamp> {
        self.0
            .schedule
            .as_ref()
            .filter(|_| self.state() == StateName::Running)
            .map(|s| s.next_due)
    }

    /// This new record (version 1), a run of `schedule`.
    #[must_use]
    pub fn run_of(mut self, schedule: ProcessId) -> ProcessRecord {
        Arc::make_mut(&mut self.0).scheduled_from = Some(schedule);
        self
    }

    /// The TCP port handed to it, held while it is live.
    pub fn port(&self) -> Option<u16> {
        self.0.port
    }

    /// This new record (version 1), given `port`.
    #[must_use]
    pub fn with_port(mut self, port: u16) -> ProcessRecord {
        Arc::make_mut(&mut self.0).port = Some(port);
        self
    }

    /// The readiness check in force: the spec's, or, when it has none and
    /// a port was handed to the record, that port accepting connections.
    pub fn readiness_check(&self) -> ReadinessCheck {
        match (&self.0.spec.readiness.check, self.0.port) {
            (ReadinessCheck::None, Some(port)) => ReadinessCheck::Port { port },
            (ReadinessCheck::Running, _) => ReadinessCheck::None,
            (check, _) => check.clone(),
        }
    }

    /// The id.
    pub fn id(&self) -> ProcessId {
        self.0.id
    }
    /// The node it runs on.
    pub fn node(&self) -> &NodeId {
        &self.0.node
    }
    /// The spec.
    pub fn spec(&self) -> &ProcessSpec {
        &self.0.spec
    }
    /// Whether its name is `text`.
    pub fn is_named(&self, text: &str) -> bool {
        self.0
            .spec
            .name
            .as_ref()
            .is_some_and(|n| n.as_str() == text)
    }
    /// The session.
    pub fn session(&self) -> Option<&SessionId> {
        self.0.spec.session.as_ref()
    }
    /// The parent.
    pub fn parent(&self) -> Option<ProcessId> {
        self.0.spec.parent
    }
    /// The concurrency group.
    pub fn group(&self) -> Option<&GroupName> {
        self.0.spec.group.as_ref()
    }
    /// The lifecycle state with its data.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.0.lifecycle
    }
    /// The state's name.
    pub fn state(&self) -> StateName {
        self.0.lifecycle.name()
    }
    /// Whether the record is final.
    pub fn is_terminal(&self) -> bool {
        self.0.lifecycle.is_terminal()
    }
    /// Whether this is a tracked operation.
    pub fn is_tracked(&self) -> bool {
        self.0.spec.is_tracked()
    }
    /// The OS process id, while there is a process.
    pub fn pid(&self) -> Option<u32> {
        self.0.lifecycle.pid()
    }
    /// When it was created.
    pub fn created_at(&self) -> Timestamp {
        self.0.created_at
    }
    /// When it last changed.
    pub fn updated_at(&self) -> Timestamp {
        self.0.updated_at
    }
    /// Its progress, if reported.
    pub fn progress(&self) -> Option<&Progress> {
        self.0.progress.as_deref()
    }
    /// The result a tracked operation completed with.
    pub fn result(&self) -> Option<&serde_json::Value> {
        self.0.result.as_deref()
    }
    /// How many automatic restarts it has had.
    pub fn restarts(&self) -> u32 {
        self.0.restarts
    }

    /// The fencing token of its current attempt (of its next, while it
    /// waits): one more than its restarts. It grows with each attempt, and
    /// a record failed over starts above every attempt of the record it
    /// replaces ([`ProcessRecord::failover_of`] counts one restart more),
    /// so a writer that keeps the greatest token it has seen refuses every
    /// older attempt. Its process finds it in `BPM_FENCE`.
    pub fn fence_token(&self) -> u64 {
        u64::from(self.0.restarts) + 1
    }

    /// Whether no attempt of this record holds a token now: it ended, is
    /// cut off with its node, or is being stopped by its node's fence.
    fn holds_no_token(&self) -> bool {
        match &self.0.lifecycle {
            l if l.name().is_terminal() => true,
            Lifecycle::Unreachable { .. }
            | Lifecycle::Stopping {
                cause: StopCause::Fenced,
                ..
            } => true,
            _ => false,
        }
    }

    /// The token its current attempt holds, if one does (see
    /// [`check_token`](Self::check_token)).
    pub fn current_token(&self) -> Option<u64> {
        (!self.holds_no_token()).then(|| self.fence_token())
    }

    /// Whether `token` is still the token of this record's current
    /// attempt: the record has not ended, is not cut off with its node,
    /// is not being stopped by its node's fence, and has had no attempt
    /// since.
    ///
    /// # Errors
    /// Why the token is stale, for whoever guarded a write with it.
    pub fn check_token(&self, token: u64) -> Result<(), String> {
        let id = self.0.id;
        if self.holds_no_token() {
            return Err(match &self.0.lifecycle {
                Lifecycle::Unreachable { reason, .. } => {
                    format!("record {id} is cut off with its node ({reason})")
                }
                Lifecycle::Stopping { cause, .. } => {
                    format!("record {id} is being stopped: {cause}")
                }
                l => format!(
                    "record {id} has ended ({}): no attempt of it holds a token any more",
                    l.name()
                ),
            });
        }
        let current = self.fence_token();
        if token == current {
            Ok(())
        } else {
            Err(format!(
                "token {token} is stale: record {id} is at attempt {current}"
            ))
        }
    }

    /// Past attempts (the newest [`MAX_ATTEMPTS_KEPT`]).
    pub fn attempts(&self) -> &[Attempt] {
        &self.0.attempts
    }
    /// The record this one is a manual restart of.
    pub fn restarted_from(&self) -> Option<ProcessId> {
        self.0.restarted_from
    }
    /// The optimistic-concurrency version: 1 at creation, +1 on every change.
    pub fn version(&self) -> u64 {
        self.0.version
    }
    /// How long it has run (to `now`, or to its end).
    pub fn runtime(&self, now: Timestamp) -> Option<std::time::Duration> {
        let start = self.0.lifecycle.started_at()?;
        Some(
            self.0
                .lifecycle
                .ended_at()
                .unwrap_or(now)
                .saturating_since(start),
        )
    }

    /// Applies `transition` at `now`.
    ///
    /// On success the record is changed in place (and its version bumped) or
    /// left alone for a harmless no-op; on error it is untouched.
    ///
    /// # Errors
    /// [`InvalidTransition`] naming the current state and the attempted
    /// transition when the lifecycle does not allow it.
    pub fn apply(
        &mut self,
        transition: Transition,
        now: Timestamp,
    ) -> Result<Applied, InvalidTransition> {
        Arc::make_mut(&mut self.0).apply(transition, now)
    }
}

impl Record {
    fn is_tracked(&self) -> bool {
        self.spec.is_tracked()
    }

    const fn state(&self) -> StateName {
        self.lifecycle.name()
    }

    fn apply(
        &mut self,
        transition: Transition,
        now: Timestamp,
    ) -> Result<Applied, InvalidTransition> {
        let invalid = InvalidTransition {
            from: self.state(),
            attempted: transition.kind(),
            tracked: self.is_tracked(),
        };
        if let Transition::LeaderExited { exit } = transition {
            return Ok(self.leader_exited(exit, now));
        }
        if let Transition::Health { healthy, detail } = transition {
            return Ok(self.health_changed(healthy, detail, now));
        }
        if let Transition::WatchFailed { reason } = transition {
            if self.lifecycle.is_terminal() || self.watch_error.as_deref() == Some(reason.as_str())
            {
                return Ok(Applied::NoOp);
            }
            self.watch_error = Some(reason.chars().take(1024).collect::<String>().into());
            self.updated_at = now;
            self.version += 1;
            return Ok(Applied::Changed);
        }
        if let Transition::Scheduled { state } = transition {
            if self.spec.schedule.is_none() || self.lifecycle.is_terminal() {
                return Err(invalid);
            }
            if self.schedule.as_deref() == Some(&state) {
                return Ok(Applied::NoOp);
            }
            self.schedule = Some(Box::new(state));
            self.updated_at = now;
            self.version += 1;
            return Ok(Applied::Changed);
        }
        let next = match (&self.lifecycle, transition) {
            (Lifecycle::Unreachable { was, .. }, t) => Self::leave_unreachable(was, t, now),
            (l, Transition::Unreach { reason }) => Self::unreach(l, reason, now),
            (_, Transition::Reach) => Next::NoOp,
            (_, transition) => self.next(transition, now),
        };
        let next = match next {
            Next::To(next) => next,
            Next::NoOp => return Ok(Applied::NoOp),
            Next::Invalid => return Err(invalid),
        };
        self.lifecycle = next;
        self.updated_at = now;
        self.version += 1;
        if self.state() == StateName::Starting {
            // A new attempt: its leader has not exited, nor its health
            // been checked.
            self.leader_exit = None;
            self.health = None;
        }
        if self.lifecycle.is_terminal()
            && let Some(p) = &mut self.progress
        {
            p.eta = None;
        }
        Ok(Applied::Changed)
    }

    /// Notes that the leader exited while the rest of the tree runs on: only
    /// while the record has a process (a record that ended, or waits to
    /// start again, has nothing running on).
    fn leader_exited(&mut self, mut exit: LeaderExit, now: Timestamp) -> Applied {
        let has_process = matches!(
            self.state(),
            StateName::Running | StateName::Paused | StateName::Stopping
        );
        if let Some(noted) = &self.leader_exit {
            // What runs on changed: the leader exited when first said.
            exit.at = noted.at;
        }
        if !has_process || self.leader_exit.as_deref() == Some(&exit) {
            return Applied::NoOp;
        }
        self.leader_exit = Some(Box::new(exit));
        self.updated_at = now;
        self.version += 1;
        Applied::Changed
    }

    /// Notes what the health check says, while the record has a process;
    /// the same again changes nothing.
    fn health_changed(&mut self, healthy: bool, detail: Option<String>, now: Timestamp) -> Applied {
        let has_process = matches!(self.state(), StateName::Running | StateName::Paused);
        if !has_process || self.health.as_ref().is_some_and(|h| h.healthy == healthy) {
            return Applied::NoOp;
        }
        let last_failure = detail
            .map(|d| d.chars().take(1024).collect())
            .or_else(|| self.health.as_ref().and_then(|h| h.last_failure.clone()));
        self.health = Some(Box::new(Health {
            healthy,
            since: now,
            last_failure,
        }));
        self.updated_at = now;
        self.version += 1;
        Applied::Changed
    }

    /// Where a record on an unreachable node goes: back to the state it
    /// was in when its node returns, `lost` when it is given up. Nothing
    /// else reaches it until then.
    fn leave_unreachable(was: &Lifecycle, t: Transition, now: Timestamp) -> Next {
        match t {
            Transition::Reach => Next::To(was.clone()),
            Transition::Unreach { .. } => Next::NoOp,
            Transition::Lose { reason } => Next::To(Lifecycle::Lost {
                started_at: was.started_at(),
                ended_at: now,
                reason,
                given_up_pid: was.pid(),
            }),
            _ => Next::Invalid,
        }
    }

    /// A record whose node was lost: unreachable if it was under way (a
    /// final or pending record stays as it is).
    fn unreach(l: &Lifecycle, reason: String, now: Timestamp) -> Next {
        if l.is_terminal() || l.name() == StateName::Pending {
            return Next::NoOp;
        }
        Next::To(Lifecycle::Unreachable {
            was: Box::new(l.clone()),
            since: now,
            reason,
        })
    }

    fn next(&mut self, transition: Transition, now: Timestamp) -> Next {
        match &self.lifecycle {
            l if l.is_terminal() => Self::after_the_end(&transition),
            Lifecycle::Pending { queued_at, .. } => {
                let queued_at = *queued_at;
                self.leave_pending(queued_at, transition, now)
            }
            Lifecycle::Starting { starting_at, .. } => {
                let starting_at = *starting_at;
                self.leave_starting(starting_at, transition, now)
            }
            Lifecycle::Running {
                started_at,
                pid,
                ready_at,
            } => {
                let (started_at, pid, ready_at) = (*started_at, *pid, *ready_at);
                self.leave_running(started_at, pid, ready_at, transition, now)
            }
            Lifecycle::Paused {
                started_at,
                pid,
                ready_at,
                ..
            } => {
                let (started_at, pid, ready_at) = (*started_at, *pid, *ready_at);
                self.leave_paused(started_at, pid, ready_at, transition, now)
            }
            Lifecycle::Stopping {
                started_at,
                pid,
                requested_at,
                cause,
                killed,
            } => {
                let stop = Stop {
                    started_at: *started_at,
                    pid: *pid,
                    requested_at: *requested_at,
                    cause: cause.clone(),
                    killed: *killed,
                };
                self.leave_stopping(stop, transition, now)
            }
            // The end states, which the first arm takes, and unreachable,
            // which `apply` takes.
            _ => Next::Invalid,
        }
    }

    /// A finished record: repeating an end is harmless, anything else is refused.
    fn after_the_end(t: &Transition) -> Next {
        match t {
            Transition::Complete { .. }
            | Transition::Fail { .. }
            | Transition::Stop { .. }
            | Transition::Lose { .. }
            | Transition::Exited { .. } => Next::NoOp,
            _ => Next::Invalid,
        }
    }

    fn leave_pending(&self, queued_at: Timestamp, t: Transition, now: Timestamp) -> Next {
        Next::To(match t {
            Transition::Start if !self.is_tracked() => Lifecycle::Starting {
                queued_at,
                starting_at: now,
            },
            // A schedule a node claimed: it runs there, with no process.
            Transition::Start if self.spec.schedule.is_some() => Lifecycle::Running {
                started_at: now,
                pid: None,
                ready_at: Some(now),
            },
            Transition::Stop { cause } => Lifecycle::Cancelled {
                started_at: None,
                ended_at: now,
                exit: None,
                reason: cause.to_string(),
            },
            Transition::Fail { error } => Lifecycle::Failed {
                started_at: None,
                ended_at: now,
                exit: None,
                error,
            },
            Transition::Lose { reason } => Lifecycle::Lost {
                started_at: None,
                ended_at: now,
                reason,
                given_up_pid: None,
            },
            _ => return Next::Invalid,
        })
    }

    fn leave_starting(&mut self, starting_at: Timestamp, t: Transition, now: Timestamp) -> Next {
        Next::To(match t {
            // The child can report before its spawn's answer is handled
            // (`bpm progress "$BPM_PROCESS_ID"` as its first command).
            Transition::Progress { percent, message } => {
                self.set_progress(starting_at, percent, message, now);
                self.lifecycle.clone()
            }
            Transition::SpawnFailed { error } => Lifecycle::Failed {
                started_at: None,
                ended_at: now,
                exit: None,
                error,
            },
            Transition::Spawned { pid } => Lifecycle::Running {
                started_at: now,
                pid: Some(pid),
                ready_at: None,
            },
            Transition::Exited { status, limit } => Self::exit_state(Some(now), status, limit, now),
            Transition::Stop { cause } => Self::begin_stop(None, None, cause, now),
            Transition::TimeOut => Self::begin_stop(None, None, StopCause::Timeout, now),
            Transition::Lose { reason } => Lifecycle::Lost {
                started_at: None,
                ended_at: now,
                reason,
                given_up_pid: None,
            },
            _ => return Next::Invalid,
        })
    }

    fn leave_running(
        &mut self,
        started_at: Timestamp,
        pid: Option<u32>,
        ready_at: Option<Timestamp>,
        t: Transition,
        now: Timestamp,
    ) -> Next {
        let tracked = self.is_tracked();
        Next::To(match t {
            Transition::Exited { status, limit } if !tracked => {
                Self::exit_state(Some(started_at), status, limit, now)
            }
            Transition::Requeue { status, not_before } if !tracked => {
                self.push_attempt(Some(started_at), status, now);
                Lifecycle::Pending {
                    queued_at: now,
                    not_before: Some(not_before),
                }
            }
            Transition::Pause if !tracked || self.spec.schedule.is_some() => Lifecycle::Paused {
                started_at,
                pid,
                ready_at,
                paused_at: now,
            },
            Transition::Stop { cause } if tracked => Lifecycle::Cancelled {
                started_at: Some(started_at),
                ended_at: now,
                exit: None,
                reason: cause.to_string(),
            },
            Transition::TimeOut if tracked => Lifecycle::TimedOut {
                started_at: Some(started_at),
                ended_at: now,
                exit: None,
            },
            Transition::Stop { cause } => Self::begin_stop(Some(started_at), pid, cause, now),
            Transition::TimeOut => Self::begin_stop(Some(started_at), pid, StopCause::Timeout, now),
            Transition::Ready if ready_at.is_some() => return Next::NoOp,
            Transition::Ready if !tracked => Lifecycle::Running {
                started_at,
                pid,
                ready_at: Some(now),
            },
            Transition::Progress { percent, message } => {
                self.set_progress(started_at, percent, message, now);
                self.lifecycle.clone()
            }
            Transition::Complete { result } if tracked => {
                self.result = result.map(Box::new);
                Lifecycle::Completed {
                    started_at,
                    ended_at: now,
                    exit: None,
                }
            }
            Transition::Fail { error } if tracked => Lifecycle::Failed {
                started_at: Some(started_at),
                ended_at: now,
                exit: None,
                error,
            },
            Transition::Lose { reason } => Lifecycle::Lost {
                started_at: Some(started_at),
                ended_at: now,
                reason,
                given_up_pid: None,
            },
            _ => return Next::Invalid,
        })
    }

    fn leave_paused(
        &mut self,
        started_at: Timestamp,
        pid: Option<u32>,
        ready_at: Option<Timestamp>,
        t: Transition,
        now: Timestamp,
    ) -> Next {
        Next::To(match t {
            Transition::Resume => Lifecycle::Running {
                started_at,
                pid,
                ready_at,
            },
            // A paused schedule has no process to stop.
            Transition::Stop { cause } if self.spec.schedule.is_some() => Lifecycle::Cancelled {
                started_at: Some(started_at),
                ended_at: now,
                exit: None,
                reason: cause.to_string(),
            },
            Transition::Exited { status, limit } => {
                Self::exit_state(Some(started_at), status, limit, now)
            }
            Transition::Requeue { status, not_before } => {
                self.push_attempt(Some(started_at), status, now);
                Lifecycle::Pending {
                    queued_at: now,
                    not_before: Some(not_before),
                }
            }
            Transition::Stop { cause } => Self::begin_stop(Some(started_at), pid, cause, now),
            Transition::TimeOut => Self::begin_stop(Some(started_at), pid, StopCause::Timeout, now),
            Transition::Ready if ready_at.is_some() => return Next::NoOp,
            Transition::Ready => Lifecycle::Paused {
                started_at,
                pid,
                ready_at: Some(now),
                paused_at: now,
            },
            Transition::Progress { percent, message } => {
                self.set_progress(started_at, percent, message, now);
                self.lifecycle.clone()
            }
            Transition::Lose { reason } => Lifecycle::Lost {
                started_at: Some(started_at),
                ended_at: now,
                reason,
                given_up_pid: None,
            },
            _ => return Next::Invalid,
        })
    }

    fn leave_stopping(&mut self, stop: Stop, t: Transition, now: Timestamp) -> Next {
        let Stop {
            started_at,
            pid,
            requested_at,
            cause,
            killed,
        } = stop;
        Next::To(match t {
            Transition::Stop { .. } | Transition::TimeOut => return Next::NoOp,
            Transition::Spawned { pid: new_pid } if pid.is_none() => Lifecycle::Stopping {
                started_at: Some(now),
                pid: Some(new_pid),
                requested_at,
                cause,
                killed,
            },
            Transition::SpawnFailed { .. } if pid.is_none() => Lifecycle::Cancelled {
                started_at: None,
                ended_at: now,
                exit: None,
                reason: cause.to_string(),
            },
            Transition::Escalate if killed => return Next::NoOp,
            Transition::Escalate => Lifecycle::Stopping {
                started_at,
                pid,
                requested_at,
                cause,
                killed: true,
            },
            Transition::Requeue { status, not_before }
                if matches!(cause, StopCause::Fenced | StopCause::Unhealthy { .. }) =>
            {
                self.push_attempt(started_at, status, now);
                Lifecycle::Pending {
                    queued_at: now,
                    not_before: Some(not_before),
                }
            }
            Transition::Exited { status, .. } => {
                Self::stopped(started_at.or(Some(now)), Some(status), &cause, now)
            }
            Transition::Progress { percent, message } => {
                // Stopped while starting, it has no start yet: its progress
                // is kept all the same.
                self.set_progress(started_at.unwrap_or(requested_at), percent, message, now);
                self.lifecycle.clone()
            }
            // Asked to stop (by a caller, a cascade, a replacement or its
            // owner's end), and gone: stopped, though how it ended (its
            // exit code) is unknown. A fenced stop is no one's request:
            // its record is given up as lost, as it would be had the
            // fence's write not reached the store.
            Transition::Lose { reason }
                if matches!(
                    cause,
                    StopCause::Requested
                        | StopCause::Cascade { .. }
                        | StopCause::Replaced { .. }
                        | StopCause::OwnerGone
                ) =>
            {
                Lifecycle::Cancelled {
                    started_at,
                    ended_at: now,
                    exit: None,
                    reason: format!("{cause}; {reason}"),
                }
            }
            Transition::Lose { reason } => Lifecycle::Lost {
                started_at,
                ended_at: now,
                reason,
                given_up_pid: None,
            },
            _ => return Next::Invalid,
        })
    }

    /// How a stopped process ended, by the cause of its stop.
    fn stopped(
        started_at: Option<Timestamp>,
        exit: Option<ExitStatus>,
        cause: &StopCause,
        now: Timestamp,
    ) -> Lifecycle {
        match cause {
            StopCause::Timeout => Lifecycle::TimedOut {
                started_at,
                ended_at: now,
                exit,
            },
            StopCause::NotReady { .. } | StopCause::Unhealthy { .. } => Lifecycle::Failed {
                started_at,
                ended_at: now,
                exit,
                error: cause.to_string(),
            },
            StopCause::Requested
            | StopCause::Cascade { .. }
            | StopCause::Replaced { .. }
            | StopCause::Fenced
            | StopCause::OwnerGone => Lifecycle::Cancelled {
                started_at,
                ended_at: now,
                exit,
                reason: cause.to_string(),
            },
        }
    }

    fn exit_state(
        started_at: Option<Timestamp>,
        status: ExitStatus,
        limit: Option<crate::LimitHit>,
        now: Timestamp,
    ) -> Lifecycle {
        if status.success()
            && let Some(limit) = limit
        {
            // The leader ended well, but a limit killed a process of its
            // tree (a shell's child): work was lost, and the record says so.
            return Lifecycle::Failed {
                started_at,
                ended_at: now,
                exit: Some(status),
                error: format!("{limit} killed a process of its tree (its leader exited 0)"),
            };
        }
        if status.success() {
            Lifecycle::Completed {
                started_at: started_at.unwrap_or(now),
                ended_at: now,
                exit: Some(status),
            }
        } else {
            Lifecycle::Failed {
                started_at,
                ended_at: now,
                exit: Some(status),
                // A limit that ended it says more than the signal it sent.
                error: limit.map_or_else(|| status.to_string(), |l| l.to_string()),
            }
        }
    }

    fn begin_stop(
        started_at: Option<Timestamp>,
        pid: Option<u32>,
        cause: StopCause,
        now: Timestamp,
    ) -> Lifecycle {
        Lifecycle::Stopping {
            started_at,
            pid,
            requested_at: now,
            cause,
            killed: false,
        }
    }

    fn push_attempt(&mut self, started_at: Option<Timestamp>, exit: ExitStatus, now: Timestamp) {
        self.restarts = self.restarts.saturating_add(1);
        if self.attempts.len() == MAX_ATTEMPTS_KEPT {
            self.attempts.remove(0);
        }
        self.attempts.push(Attempt {
            started_at,
            ended_at: now,
            exit,
        });
    }

    fn set_progress(
        &mut self,
        started_at: Timestamp,
        percent: Percent,
        message: Option<String>,
        now: Timestamp,
    ) {
        let message = message.map(|mut m| {
            if m.len() > MAX_PROGRESS_MESSAGE {
                let mut cut = MAX_PROGRESS_MESSAGE;
                while !m.is_char_boundary(cut) {
                    cut -= 1;
                }
                m.truncate(cut);
            }
            m
        });
        self.progress = Some(Box::new(Progress {
            percent,
            message,
            updated_at: now,
            eta: estimate_eta(started_at, percent, now),
        }));
    }
}

impl ProcessRecord {
    /// Whether this record, as a dependency as it is now, got as far as
    /// `until`: `Some(true)` it did, `Some(false)` it ended short of it
    /// (and never will), `None` not yet.
    pub fn meets(&self, until: Until) -> Option<bool> {
        let l = self.lifecycle();
        let ended = self.is_terminal();
        let met = match until {
            Until::Started => l.started_at().is_some(),
            Until::Ready => l.ready_at().is_some(),
            Until::Completed => self.state() == StateName::Completed,
            Until::Ended => ended,
        };
        if met {
            Some(true)
        } else if ended {
            Some(false)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_copy_is_the_same_record_until_one_changes() {
        let first = record(ProcessSpec::argv(["true"]));
        let mut second = first.clone();
        assert_eq!(format!("{first:?}"), format!("{second:?}"));
        second
            .apply(Transition::Start, t(1001))
            .expect("a pending record starts");
        assert_eq!(first.state(), StateName::Pending);
        assert_eq!(second.state(), StateName::Starting);
        assert_eq!((first.version(), second.version()), (1, 2));
        assert_eq!(second.updated_at(), t(1001));
        let again = ProcessRecord::restart_of(
            &second,
            ProcessId::from_uuid(uuid::Uuid::from_u128(2)),
            t(1002),
        );
        assert_eq!(again.restarted_from(), Some(second.id()));
        assert_eq!(again.state(), StateName::Pending);
    }

    #[test]
    fn a_record_takes_its_node_name_from_another_only_when_equal() {
        let mut r = record(ProcessSpec::argv(["true"]));
        let same = NodeId::local();
        assert!(!r.node().shares_text(&same));
        r.share_node(&same);
        assert!(r.node().shares_text(&same));
        let other = NodeId::new("elsewhere").expect("a node name");
        r.share_node(&other);
        assert_eq!(r.node(), &same);
        assert_eq!(r.version(), 1, "sharing a name is no change");
    }

    #[test]
    fn progress_read_back_must_be_a_whole_percent() {
        assert_eq!(
            serde_json::from_str::<Percent>("40").expect("whole").get(),
            40
        );
        for bad in ["40.5", "101", "-1"] {
            let e = serde_json::from_str::<Percent>(bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains(bad.trim_start_matches('-')), "{bad}: {e}");
        }
    }

    use super::*;
    use crate::{ProcessName, ProcessSpec};

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn record(spec: ProcessSpec) -> ProcessRecord {
        ProcessRecord::new(
            ProcessId::from_uuid(uuid::Uuid::from_u128(1)),
            NodeId::local(),
            spec,
            t(1000),
        )
    }

    fn leader_exit(code: i32, pids: &[u32], at: u64) -> Transition {
        let running = pids
            .iter()
            .map(|&pid| RunningOn {
                pid,
                name: "sleep".into(),
            })
            .collect();
        Transition::LeaderExited {
            exit: LeaderExit::new(ExitStatus::Code(code), t(at), running),
        }
    }

    /// A leader's exit is noted only while the record has a process; it
    /// travels in updates, is kept once the record ends, and a new attempt
    /// starts without it.
    #[test]
    fn a_leader_exit_is_noted_while_the_tree_runs_on() {
        let mut r = record(ProcessSpec::argv(["sh", "-c", "sleep 300 &"]));
        assert_eq!(
            r.apply(leader_exit(0, &[5], 1001), t(1001)),
            Ok(Applied::NoOp)
        );
        r.apply(Transition::Start, t(1002)).unwrap();
        r.apply(Transition::Spawned { pid: 4 }, t(1003)).unwrap();
        assert_eq!(
            r.apply(leader_exit(3, &[6, 5], 1004), t(1004)),
            Ok(Applied::Changed)
        );
        let noted = r.leader_exit().expect("noted").clone();
        assert_eq!(r.state(), StateName::Running);
        assert_eq!(
            noted.to_string(),
            "leader exited 3; 2 processes run on: 5 sleep, 6 sleep"
        );
        assert_eq!(
            r.apply(leader_exit(3, &[5, 6], 1004), t(1005)),
            Ok(Applied::NoOp),
            "the same news twice"
        );
        let back =
            r.updated(serde_json::from_value(serde_json::to_value(r.update()).unwrap()).unwrap());
        assert_eq!(back.as_ref().and_then(|b| b.leader_exit()), Some(&noted));
        r.apply(
            Transition::Requeue {
                status: ExitStatus::Code(3),
                not_before: t(1010),
            },
            t(1006),
        )
        .unwrap();
        assert!(r.leader_exit().is_some(), "kept until the next attempt");
        r.apply(Transition::Start, t(1011)).unwrap();
        assert_eq!(r.leader_exit(), None);
        r.apply(Transition::Spawned { pid: 7 }, t(1012)).unwrap();
        r.apply(
            Transition::Exited {
                status: ExitStatus::Code(0),
                limit: None,
            },
            t(1013),
        )
        .unwrap();
        assert_eq!(
            r.apply(leader_exit(0, &[8], 1014), t(1014)),
            Ok(Applied::NoOp),
            "ended"
        );
        let many: Vec<u32> = (100..140).collect();
        let Transition::LeaderExited { exit } = leader_exit(0, &many, 1) else {
            unreachable!()
        };
        assert_eq!((exit.count, exit.running.len()), (40, MAX_RUNNING_ON));
        assert!(exit.to_string().ends_with(", ..."), "{exit}");
    }

    #[test]
    fn an_update_restores_the_version_it_was_taken_from() {
        let mut spec = ProcessSpec::argv(["sleep", "1"]);
        spec.name = Some(ProcessName::new("sleeper").unwrap());
        let first = record(spec);
        let mut later = first.clone();
        later.apply(Transition::Start, t(1001)).unwrap();
        later
            .apply(Transition::Spawned { pid: 9 }, t(1002))
            .unwrap();
        let json = serde_json::to_value(later.update()).unwrap();
        assert!(
            json.get("spec").is_none(),
            "an update must not carry the spec"
        );
        assert_eq!(
            json["state"],
            serde_json::to_value(&later).unwrap()["state"]
        );
        let update: RecordUpdate = serde_json::from_value(json).unwrap();
        assert_eq!(update.id(), later.id());
        assert_eq!(first.updated(update.clone()), Some(later));
        let other = ProcessRecord::new(
            ProcessId::from_uuid(uuid::Uuid::from_u128(2)),
            NodeId::local(),
            ProcessSpec::argv(["true"]),
            t(1000),
        );
        assert_eq!(
            other.updated(update),
            None,
            "an update applies to its own record only"
        );
    }

    #[test]
    fn a_process_runs_and_completes() {
        let mut r = record(ProcessSpec::argv(["true"]));
        assert_eq!(r.state(), StateName::Pending);
        assert_eq!(r.apply(Transition::Start, t(1001)), Ok(Applied::Changed));
        assert_eq!(
            r.apply(Transition::Spawned { pid: 7 }, t(1002)),
            Ok(Applied::Changed)
        );
        assert_eq!(r.pid(), Some(7));
        r.apply(
            Transition::Exited {
                status: ExitStatus::Code(0),
                limit: None,
            },
            t(1500),
        )
        .unwrap();
        assert_eq!(r.state(), StateName::Completed);
        assert_eq!(r.lifecycle().ended_at(), Some(t(1500)));
        assert_eq!(r.lifecycle().exit(), Some(ExitStatus::Code(0)));
        assert_eq!(r.version(), 4);
        assert_eq!(
            r.runtime(t(9999)),
            Some(std::time::Duration::from_millis(498))
        );
    }

    #[test]
    fn a_process_its_memory_limit_killed_fails_with_the_limit_as_error() {
        let mut r = record(ProcessSpec::argv(["hog"]));
        r.apply(Transition::Start, t(1)).unwrap();
        r.apply(Transition::Spawned { pid: 7 }, t(2)).unwrap();
        r.apply(
            Transition::Exited {
                status: ExitStatus::Signal(9),
                limit: Some(crate::LimitHit::Memory { max: 64 << 20 }),
            },
            t(3),
        )
        .unwrap();
        assert_eq!(r.state(), StateName::Failed);
        assert_eq!(r.lifecycle().exit(), Some(ExitStatus::Signal(9)));
        assert_eq!(
            r.lifecycle().error().as_deref(),
            Some("memory limit (64 MiB)")
        );
    }

    #[test]
    fn a_nonzero_exit_fails_with_the_status_as_error() {
        let mut r = record(ProcessSpec::argv(["false"]));
        r.apply(Transition::Start, t(1)).unwrap();
        r.apply(Transition::Spawned { pid: 7 }, t(2)).unwrap();
        r.apply(
            Transition::Exited {
                status: ExitStatus::Signal(9),
                limit: None,
            },
            t(3),
        )
        .unwrap();
        assert_eq!(r.state(), StateName::Failed);
        assert_eq!(r.lifecycle().error().as_deref(), Some("killed by signal 9"));
    }

    #[test]
    fn illegal_transitions_name_state_and_attempt() {
        let mut r = record(ProcessSpec::argv(["true"]));
        let err = r.apply(Transition::Pause, t(2)).unwrap_err();
        assert_eq!(err.from, StateName::Pending);
        assert_eq!(err.attempted, TransitionKind::Pause);
        assert!(
            err.to_string().contains("cannot pause a pending process"),
            "{err}"
        );
        assert_eq!(
            r.version(),
            1,
            "a refused transition leaves the record alone"
        );
    }

    #[test]
    fn finishing_twice_is_a_no_op() {
        let mut r = record(ProcessSpec::tracked(ProcessName::new("migrate").unwrap()));
        assert_eq!(r.state(), StateName::Running);
        r.apply(
            Transition::Complete {
                result: Some(serde_json::json!({"rows": 3})),
            },
            t(5),
        )
        .unwrap();
        let before = r.clone();
        assert_eq!(
            r.apply(Transition::Complete { result: None }, t(6)),
            Ok(Applied::NoOp)
        );
        assert_eq!(
            r.apply(Transition::Fail { error: "x".into() }, t(7)),
            Ok(Applied::NoOp)
        );
        assert_eq!(r, before);
        assert_eq!(r.result(), Some(&serde_json::json!({"rows": 3})));
        let err = r.apply(Transition::Pause, t(8)).unwrap_err();
        assert!(err.to_string().contains("completed"), "{err}");
    }

    #[test]
    fn tracked_operations_cannot_be_paused_and_processes_cannot_be_completed() {
        let mut op = record(ProcessSpec::tracked(ProcessName::new("m").unwrap()));
        let err = op.apply(Transition::Pause, t(2)).unwrap_err();
        assert!(err.to_string().ends_with("it has no OS process"), "{err}");
        let mut p = record(ProcessSpec::argv(["sleep", "1"]));
        p.apply(Transition::Start, t(1)).unwrap();
        p.apply(Transition::Spawned { pid: 3 }, t(2)).unwrap();
        let err = p
            .apply(Transition::Complete { result: None }, t(3))
            .unwrap_err();
        assert!(
            err.to_string().contains("outcome is its exit status"),
            "{err}"
        );
    }

    #[test]
    fn stop_cause_decides_the_end() {
        for (cause, end) in [
            (StopCause::Requested, StateName::Cancelled),
            (StopCause::Timeout, StateName::TimedOut),
            (
                StopCause::NotReady {
                    after: crate::Span::from_secs(3),
                },
                StateName::Failed,
            ),
        ] {
            let mut r = record(ProcessSpec::argv(["sleep", "1"]));
            r.apply(Transition::Start, t(1)).unwrap();
            r.apply(Transition::Spawned { pid: 3 }, t(2)).unwrap();
            r.apply(Transition::Stop { cause }, t(3)).unwrap();
            assert_eq!(
                r.apply(
                    Transition::Stop {
                        cause: StopCause::Requested
                    },
                    t(4)
                ),
                Ok(Applied::NoOp)
            );
            r.apply(Transition::Escalate, t(5)).unwrap();
            assert_eq!(r.apply(Transition::Escalate, t(6)), Ok(Applied::NoOp));
            r.apply(
                Transition::Exited {
                    status: ExitStatus::Signal(9),
                    limit: None,
                },
                t(7),
            )
            .unwrap();
            assert_eq!(r.state(), end);
            assert_eq!(r.lifecycle().exit(), Some(ExitStatus::Signal(9)));
        }
    }

    #[test]
    fn progress_derives_an_eta() {
        let mut r = record(ProcessSpec::tracked(ProcessName::new("m").unwrap()));
        let p = Percent::new(25).unwrap();
        r.apply(
            Transition::Progress {
                percent: p,
                message: Some("a".repeat(5000)),
            },
            t(2000),
        )
        .unwrap();
        let progress = r.progress().unwrap();
        // 25% took 1 s, so 75% more takes 3 s.
        assert_eq!(progress.eta, Some(t(5000)));
        assert_eq!(
            progress.message.as_ref().unwrap().len(),
            MAX_PROGRESS_MESSAGE
        );
        assert!(Percent::new(101).is_err());
        assert!(Percent::from_f64(50.5).is_err());
        assert_eq!(estimate_eta(t(0), Percent::new(0).unwrap(), t(10)), None);
    }

    #[test]
    fn requeue_keeps_each_attempt() {
        let mut r = record(ProcessSpec::argv(["false"]));
        for i in 0..40u64 {
            r.apply(Transition::Start, t(10 * i)).unwrap();
            r.apply(Transition::Spawned { pid: 3 }, t(10 * i + 1))
                .unwrap();
            r.apply(
                Transition::Requeue {
                    status: ExitStatus::Code(1),
                    not_before: t(10 * i + 5),
                },
                t(10 * i + 2),
            )
            .unwrap();
        }
        assert_eq!(r.restarts(), 40);
        assert_eq!(r.attempts().len(), MAX_ATTEMPTS_KEPT);
        assert_eq!(r.state(), StateName::Pending);
    }

    #[test]
    fn record_round_trips_through_json() {
        let mut r = record(ProcessSpec::argv(["sleep", "1"]));
        r.apply(Transition::Start, t(1)).unwrap();
        r.apply(Transition::Spawned { pid: 3 }, t(2)).unwrap();
        r.apply(
            Transition::Stop {
                cause: StopCause::Cascade { parent: r.id() },
            },
            t(3),
        )
        .unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["state"], "stopping");
        assert_eq!(v["pid"], 3);
        let back: ProcessRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}
