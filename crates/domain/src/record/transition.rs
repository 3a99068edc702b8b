//! What may happen to a record: its transitions, the refusal of one, and
//! a version written without its spec.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A version of a record without its spec, which never changes after the
/// record is created: what a store that keeps each record's spec once
/// writes for its later versions. It serializes as the record does, less
/// the `spec` field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordUpdate {
    pub(super) id: ProcessId,
    pub(super) node: NodeId,
    #[serde(flatten)]
    pub(super) lifecycle: Lifecycle,
    pub(super) created_at: Timestamp,
    pub(super) updated_at: Timestamp,
    pub(super) progress: Option<Progress>,
    pub(super) result: Option<serde_json::Value>,
    pub(super) restarts: u32,
    pub(super) attempts: Vec<Attempt>,
    pub(super) restarted_from: Option<ProcessId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) leader_exit: Option<LeaderExit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) health: Option<Health>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) watch_error: Option<Box<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) scheduled_from: Option<ProcessId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) schedule: Option<ScheduleState>,
    pub(super) version: u64,
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

/// What a legal transition did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The record changed (its version went up).
    Changed,
    /// Nothing changed, harmlessly: completing, failing or stopping a finished
    /// record, stopping a record that is already stopping, marking a ready record ready.
    NoOp,
}
