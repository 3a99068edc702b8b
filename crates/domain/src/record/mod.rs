//! A process record and the transitions that move it through its lifecycle.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{
    ExitStatus, GroupName, Lifecycle, NodeId, ProcessId, ProcessSpec, ReadinessCheck,
    ScheduleState, SessionId, StateName, StopCause, Timestamp, Until,
};

mod apply;
mod progress;
mod transition;

pub use progress::{MAX_PROGRESS_MESSAGE, Percent, PercentError, Progress, estimate_eta};
pub use transition::{Applied, InvalidTransition, RecordUpdate, Transition, TransitionKind};

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
    /// Whether it holds a slot while it runs ([`ProcessSpec::takes_a_slot`]).
    pub fn takes_a_slot(&self) -> bool {
        self.0.spec.takes_a_slot()
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
    /// cut off with its node, or is being stood down by its node.
    fn holds_no_token(&self) -> bool {
        match &self.0.lifecycle {
            l if l.name().is_terminal() => true,
            Lifecycle::Unreachable { .. }
            | Lifecycle::Stopping {
                cause: StopCause::StoodDown,
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
    /// is not being stood down by its node, and has had no attempt
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
