//! Events: what happened to a record, for subscribers (waiters, the CLI, MCP clients).

use serde::{Deserialize, Serialize};

use crate::{
    ExitStatus, NodeId, ProcessId, ProcessName, ProcessRecord, Progress, SessionId, StateName,
    Timestamp,
};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A record was accepted (queued, or running for a tracked operation).
    Submitted,
    /// Its OS process started.
    Started,
    /// Its readiness check passed.
    Ready,
    /// It reported progress.
    Progress,
    /// It was paused.
    Paused,
    /// It was resumed.
    Resumed,
    /// It wrote no output for its idle period.
    Idle,
    /// Its health check passes (again).
    Healthy,
    /// Its health check failed its `failures` times in a row: it is
    /// stopped, and started again under its restart policy.
    Unhealthy,
    /// Its leader exited while other processes of its tree run on: it
    /// stays live until they end (sent again when what runs on changes).
    LeaderExited,
    /// Its OS process exited (followed by the final state's event, or `restarted`).
    Exited,
    /// It completed.
    Completed,
    /// It failed.
    Failed,
    /// It timed out.
    TimedOut,
    /// It was cancelled.
    Cancelled,
    /// bpm lost track of it.
    Lost,
    /// It was queued again: by its restart policy, or replaced by a manual restart (see `related`).
    Restarted,
    /// It is being stopped.
    Stopping,
    /// Its node stopped renewing its lease; it may still run there.
    Unreachable,
    /// Its node is back, and so is its state.
    Reachable,
}

impl EventKind {
    /// Whether the event says its record ended (reached a final state).
    pub const fn ends_record(self) -> bool {
        matches!(
            self,
            EventKind::Completed
                | EventKind::Failed
                | EventKind::TimedOut
                | EventKind::Cancelled
                | EventKind::Lost
        )
    }

    /// Whether the event says its record left a slot for good or for now
    /// (it ended, its node was lost, or it was queued again): a
    /// cluster-wide slot of its group may be free.
    pub const fn frees_slot(self) -> bool {
        self.ends_record() || matches!(self, EventKind::Unreachable | EventKind::Restarted)
    }

    /// The event announcing a final state.
    pub const fn for_terminal(state: StateName) -> Option<EventKind> {
        match state {
            StateName::Completed => Some(EventKind::Completed),
            StateName::Failed => Some(EventKind::Failed),
            StateName::TimedOut => Some(EventKind::TimedOut),
            StateName::Cancelled => Some(EventKind::Cancelled),
            StateName::Lost => Some(EventKind::Lost),
            _ => None,
        }
    }
}

/// One event about one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The record.
    pub id: ProcessId,
    /// What happened.
    pub kind: EventKind,
    /// The record's state after it.
    pub state: StateName,
    /// When.
    pub at: Timestamp,
    /// The record's name.
    pub name: Option<ProcessName>,
    /// The record's session.
    pub session: Option<SessionId>,
    /// The record's node.
    pub node: NodeId,
    /// The record's version after it.
    pub version: u64,
    /// When the (current) attempt started.
    pub started_at: Option<Timestamp>,
    /// When the record ended, for final states.
    pub ended_at: Option<Timestamp>,
    /// How long it ran, in milliseconds.
    pub duration_ms: Option<u64>,
    /// The exit status, for exits and final states.
    pub exit: Option<ExitStatus>,
    /// The error or reason, for failures, cancellations and losses.
    pub error: Option<String>,
    /// The progress, for progress events.
    pub progress: Option<Progress>,
    /// A related record: the new record of a manual restart.
    pub related: Option<ProcessId>,
    /// The last lines of output (at most 20, and at most their newest 16 KiB),
    /// for exits; filled by the engine when it has them.
    pub output_tail: Option<String>,
}

impl Event {
    /// The event `kind` about `record` as it is now.
    pub fn new(kind: EventKind, record: &ProcessRecord, at: Timestamp) -> Self {
        let lifecycle = record.lifecycle();
        let duration_ms = record
            .runtime(at)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Event {
            id: record.id(),
            kind,
            state: record.state(),
            at,
            name: record.spec().name.clone(),
            session: record.session().cloned(),
            node: record.node().clone(),
            version: record.version(),
            started_at: lifecycle.started_at(),
            ended_at: lifecycle.ended_at(),
            duration_ms,
            exit: lifecycle.exit(),
            error: lifecycle.error(),
            progress: if kind == EventKind::Progress {
                record.progress().cloned()
            } else {
                None
            },
            related: None,
            output_tail: None,
        }
    }
}
