//! The lifecycle of a record: its states, each carrying the data that state needs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{ProcessId, Span, Timestamp};

/// How a process ended: an exit code, or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    /// The process called exit with this code.
    Code(i32),
    /// The process was killed by this signal number.
    Signal(i32),
}

impl ExitStatus {
    /// Whether this counts as success (exit code 0).
    pub const fn success(self) -> bool {
        matches!(self, ExitStatus::Code(0))
    }

    /// The code a shell would show: the code itself, or 128 + the signal. For display only.
    pub const fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }

    /// The exit code, if the process exited normally.
    pub const fn code(self) -> Option<i32> {
        match self {
            ExitStatus::Code(c) => Some(c),
            ExitStatus::Signal(_) => None,
        }
    }

    /// The signal, if a signal killed the process.
    pub const fn signal(self) -> Option<i32> {
        match self {
            ExitStatus::Signal(s) => Some(s),
            ExitStatus::Code(_) => None,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// Why a process is being stopped; decides its final state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "cause")]
pub enum StopCause {
    /// Someone asked. Ends `cancelled`.
    Requested,
    /// Its timeout ran out. Ends `timed_out`.
    Timeout,
    /// Its parent was stopped. Ends `cancelled`.
    Cascade {
        /// The parent.
        parent: ProcessId,
    },
    /// It was not ready in time. Ends `failed`.
    NotReady {
        /// The readiness timeout.
        after: Span,
    },
    /// A manual restart replaces it. Ends `cancelled`.
    Replaced {
        /// The new record.
        by: ProcessId,
    },
    /// Its node lost its lease, and it fails over: the node stops its
    /// copy before another node may start one. Its exit queues it again
    /// here, to start once the node holds its lease again (if the cluster
    /// did not run it elsewhere meanwhile). Records written before the
    /// name changed spell it `fenced`.
    #[serde(alias = "fenced")]
    StoodDown,
    /// Its last owner was gone for its grace ([`crate::Owner`]). Ends
    /// `cancelled`, with the reason `owner gone`.
    OwnerGone,
    /// Its health check failed too many times in a row
    /// ([`crate::HealthCheck`]): started again under its restart policy,
    /// or `failed`.
    Unhealthy {
        /// The last failure.
        detail: String,
    },
}

impl fmt::Display for StopCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopCause::Requested => f.write_str("stopped on request"),
            StopCause::Timeout => f.write_str("timed out"),
            StopCause::Cascade { parent } => write!(f, "parent {parent} was stopped"),
            StopCause::NotReady { after } => write!(f, "not ready within {after}"),
            StopCause::Replaced { by } => write!(f, "replaced by restart {by}"),
            StopCause::StoodDown => {
                f.write_str("stopped because its node lost its lease (failover)")
            }
            StopCause::OwnerGone => f.write_str("owner gone"),
            StopCause::Unhealthy { detail } => write!(f, "unhealthy: {detail}"),
        }
    }
}

/// The lifecycle state of a record, with the data each state carries: a finished
/// record cannot lack its end time or outcome.
///
/// ```text
/// pending ──start──▶ starting ──spawned──▶ running ◀──resume/pause──▶ paused
///    │                  │                    │                          │
///    │ stop/fail        │ spawn failed       │ exit / complete / fail   │ exit
///    ▼                  ▼                    ▼                          ▼
/// cancelled/failed    failed        completed | failed            completed | failed
///                       running, paused, starting ──stop/timeout──▶ stopping ──exit──▶
///                                              cancelled | timed_out | failed
/// any live state ──node lost──▶ lost;  running/paused ──exit + restart policy──▶ pending
/// starting, running, paused, stopping ──its node's lease expired──▶ unreachable
/// unreachable ──its node is back──▶ the state it was in;  ──lost_after──▶ lost
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Lifecycle {
    /// Queued: waiting for a slot, its dependencies, its delay or a restart backoff.
    Pending {
        /// When it (last) entered the queue.
        queued_at: Timestamp,
        /// Not to start before this instant (delay or backoff).
        not_before: Option<Timestamp>,
    },
    /// Chosen to run; the spawn is under way.
    Starting {
        /// When it entered the queue.
        queued_at: Timestamp,
        /// When the spawn was asked for.
        starting_at: Timestamp,
    },
    /// Running. A tracked operation has no pid.
    Running {
        /// When it started.
        started_at: Timestamp,
        /// The OS process id (leader of its process group).
        pid: Option<u32>,
        /// When it became ready.
        ready_at: Option<Timestamp>,
    },
    /// Suspended with SIGSTOP. Its timeout keeps counting.
    Paused {
        /// When it started.
        started_at: Timestamp,
        /// The OS process id.
        pid: Option<u32>,
        /// When it became ready.
        ready_at: Option<Timestamp>,
        /// When it was paused.
        paused_at: Timestamp,
    },
    /// Signalled to stop; waiting for it to exit.
    Stopping {
        /// When it started (none if stopped before its spawn finished).
        started_at: Option<Timestamp>,
        /// The OS process id, once known.
        pid: Option<u32>,
        /// When the stop was asked for.
        requested_at: Timestamp,
        /// Why it is stopping.
        #[serde(flatten)]
        cause: StopCause,
        /// Whether KILL has been sent.
        killed: bool,
    },
    /// Finished successfully.
    Completed {
        /// When it started.
        started_at: Timestamp,
        /// When it ended.
        ended_at: Timestamp,
        /// Its exit status (none for a tracked operation).
        exit: Option<ExitStatus>,
    },
    /// Finished unsuccessfully.
    Failed {
        /// When it started, if it did.
        started_at: Option<Timestamp>,
        /// When it ended.
        ended_at: Timestamp,
        /// Its exit status, if it ran.
        exit: Option<ExitStatus>,
        /// What went wrong.
        error: String,
    },
    /// Stopped because its timeout ran out.
    TimedOut {
        /// When it started.
        started_at: Option<Timestamp>,
        /// When it ended.
        ended_at: Timestamp,
        /// Its exit status, if it ran.
        exit: Option<ExitStatus>,
    },
    /// Stopped on request, by a parent's stop, or replaced by a restart.
    Cancelled {
        /// When it started, if it did.
        started_at: Option<Timestamp>,
        /// When it ended.
        ended_at: Timestamp,
        /// Its exit status, if it ran.
        exit: Option<ExitStatus>,
        /// Why.
        reason: String,
    },
    /// Its node stopped renewing its lease: another node marked it so.
    /// Not final: when its node comes back it returns to the state it was
    /// in (or to how it ended meanwhile); after `lost_after` it is `lost`.
    Unreachable {
        /// The state it was in when its node was lost.
        was: Box<Lifecycle>,
        /// When it was marked.
        since: Timestamp,
        /// Which node was lost, and when it last renewed its lease.
        reason: String,
    },
    /// bpm lost track of it (its node died, or it could not be re-attached).
    Lost {
        /// When it started, if it did.
        started_at: Option<Timestamp>,
        /// When bpm gave up on it.
        ended_at: Timestamp,
        /// Why.
        reason: String,
        /// The process it had when its node was given up by the cluster,
        /// which that node kills when it comes back; none otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        given_up_pid: Option<u32>,
    },
}

/// The name of a lifecycle state, without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateName {
    /// See [`Lifecycle::Pending`].
    Pending,
    /// See [`Lifecycle::Starting`].
    Starting,
    /// See [`Lifecycle::Running`].
    Running,
    /// See [`Lifecycle::Paused`].
    Paused,
    /// See [`Lifecycle::Stopping`].
    Stopping,
    /// See [`Lifecycle::Unreachable`].
    Unreachable,
    /// See [`Lifecycle::Completed`].
    Completed,
    /// See [`Lifecycle::Failed`].
    Failed,
    /// See [`Lifecycle::TimedOut`].
    TimedOut,
    /// See [`Lifecycle::Cancelled`].
    Cancelled,
    /// See [`Lifecycle::Lost`].
    Lost,
}

impl StateName {
    /// Every state, in lifecycle order.
    pub const ALL: [StateName; 11] = [
        StateName::Pending,
        StateName::Starting,
        StateName::Running,
        StateName::Paused,
        StateName::Stopping,
        StateName::Unreachable,
        StateName::Completed,
        StateName::Failed,
        StateName::TimedOut,
        StateName::Cancelled,
        StateName::Lost,
    ];

    /// Every state that is not final: the records still under way, which
    /// listings show by default.
    pub const LIVE: [StateName; 6] = [
        StateName::Pending,
        StateName::Starting,
        StateName::Running,
        StateName::Paused,
        StateName::Stopping,
        StateName::Unreachable,
    ];

    /// Whether the state is final.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            StateName::Completed
                | StateName::Failed
                | StateName::TimedOut
                | StateName::Cancelled
                | StateName::Lost
        )
    }

    /// Whether the record waits in its node's queue (`pending`): for a
    /// slot, its dependencies, its delay or a restart's backoff.
    pub const fn is_queued(self) -> bool {
        matches!(self, StateName::Pending)
    }

    /// Whether the record holds (or is about to hold) an execution slot.
    /// An `unreachable` record does not: its node is lost, and with it the
    /// node's slots.
    pub const fn is_active(self) -> bool {
        matches!(
            self,
            StateName::Starting | StateName::Running | StateName::Paused | StateName::Stopping
        )
    }

    /// The lower snake case spelling (`timed_out`).
    pub const fn as_str(self) -> &'static str {
        match self {
            StateName::Pending => "pending",
            StateName::Starting => "starting",
            StateName::Running => "running",
            StateName::Paused => "paused",
            StateName::Stopping => "stopping",
            StateName::Unreachable => "unreachable",
            StateName::Completed => "completed",
            StateName::Failed => "failed",
            StateName::TimedOut => "timed_out",
            StateName::Cancelled => "cancelled",
            StateName::Lost => "lost",
        }
    }
}

impl fmt::Display for StateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StateName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        StateName::ALL
            .into_iter()
            .find(|n| n.as_str() == wanted)
            .ok_or_else(|| {
                format!(
                    "invalid state {s:?}: expected one of pending, starting, running, paused, \
                     stopping, unreachable, completed, failed, timed_out, cancelled, lost"
                )
            })
    }
}

impl Lifecycle {
    /// The state's name.
    pub const fn name(&self) -> StateName {
        match self {
            Lifecycle::Pending { .. } => StateName::Pending,
            Lifecycle::Starting { .. } => StateName::Starting,
            Lifecycle::Running { .. } => StateName::Running,
            Lifecycle::Paused { .. } => StateName::Paused,
            Lifecycle::Stopping { .. } => StateName::Stopping,
            Lifecycle::Unreachable { .. } => StateName::Unreachable,
            Lifecycle::Completed { .. } => StateName::Completed,
            Lifecycle::Failed { .. } => StateName::Failed,
            Lifecycle::TimedOut { .. } => StateName::TimedOut,
            Lifecycle::Cancelled { .. } => StateName::Cancelled,
            Lifecycle::Lost { .. } => StateName::Lost,
        }
    }

    /// Whether the state is final.
    pub const fn is_terminal(&self) -> bool {
        self.name().is_terminal()
    }

    /// The OS process id, while there is a process (on an unreachable
    /// node: the one it had).
    pub fn pid(&self) -> Option<u32> {
        match self {
            Lifecycle::Running { pid, .. }
            | Lifecycle::Paused { pid, .. }
            | Lifecycle::Stopping { pid, .. } => *pid,
            Lifecycle::Unreachable { was, .. } => was.pid(),
            _ => None,
        }
    }

    /// The process a record given up by the cluster had, which its node
    /// kills when it comes back (see [`Lifecycle::Lost`]).
    pub fn given_up_pid(&self) -> Option<u32> {
        match self {
            Lifecycle::Lost { given_up_pid, .. } => *given_up_pid,
            _ => None,
        }
    }

    /// When the current (or last) attempt started running.
    pub fn started_at(&self) -> Option<Timestamp> {
        match self {
            Lifecycle::Unreachable { was, .. } => was.started_at(),
            Lifecycle::Pending { .. } | Lifecycle::Starting { .. } => None,
            Lifecycle::Running { started_at, .. }
            | Lifecycle::Paused { started_at, .. }
            | Lifecycle::Completed { started_at, .. } => Some(*started_at),
            Lifecycle::Stopping { started_at, .. }
            | Lifecycle::Failed { started_at, .. }
            | Lifecycle::TimedOut { started_at, .. }
            | Lifecycle::Cancelled { started_at, .. }
            | Lifecycle::Lost { started_at, .. } => *started_at,
        }
    }

    /// When the record reached its final state.
    pub const fn ended_at(&self) -> Option<Timestamp> {
        match self {
            Lifecycle::Completed { ended_at, .. }
            | Lifecycle::Failed { ended_at, .. }
            | Lifecycle::TimedOut { ended_at, .. }
            | Lifecycle::Cancelled { ended_at, .. }
            | Lifecycle::Lost { ended_at, .. } => Some(*ended_at),
            _ => None,
        }
    }

    /// The final exit status, if the process ran and exited.
    pub const fn exit(&self) -> Option<ExitStatus> {
        match self {
            Lifecycle::Completed { exit, .. }
            | Lifecycle::Failed { exit, .. }
            | Lifecycle::TimedOut { exit, .. }
            | Lifecycle::Cancelled { exit, .. } => *exit,
            _ => None,
        }
    }

    /// The reason a record did not complete: its error, cancellation or loss reason.
    pub fn error(&self) -> Option<String> {
        match self {
            Lifecycle::Failed { error, .. } => Some(error.clone()),
            Lifecycle::Cancelled { reason, .. }
            | Lifecycle::Lost { reason, .. }
            | Lifecycle::Unreachable { reason, .. } => Some(reason.clone()),
            Lifecycle::TimedOut { .. } => Some("timed out".to_owned()),
            _ => None,
        }
    }

    /// When the record became ready, while it runs.
    pub fn ready_at(&self) -> Option<Timestamp> {
        match self {
            Lifecycle::Running { ready_at, .. } | Lifecycle::Paused { ready_at, .. } => *ready_at,
            Lifecycle::Unreachable { was, .. } => was.ready_at(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_spell_in_snake_case() {
        for s in StateName::ALL {
            assert_eq!(s.to_string().parse::<StateName>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!("timed-out".parse::<StateName>(), Ok(StateName::TimedOut));
        assert!(
            "done"
                .parse::<StateName>()
                .unwrap_err()
                .contains("\"done\"")
        );
    }

    #[test]
    fn exit_status_display_and_shell_code() {
        assert_eq!(ExitStatus::Signal(9).shell_code(), 137);
        assert_eq!(ExitStatus::Code(3).shell_code(), 3);
        assert_eq!(ExitStatus::Code(3).to_string(), "exit code 3");
        assert_eq!(ExitStatus::Signal(15).to_string(), "killed by signal 15");
        assert!(ExitStatus::Code(0).success());
        assert_eq!(ExitStatus::Signal(15).signal(), Some(15));
        assert_eq!(ExitStatus::Signal(15).code(), None);
    }

    #[test]
    fn lifecycle_serializes_with_a_state_tag() {
        let l = Lifecycle::Stopping {
            started_at: Some(Timestamp::from_millis(1)),
            pid: Some(42),
            requested_at: Timestamp::from_millis(2),
            cause: StopCause::Timeout,
            killed: false,
        };
        let v = serde_json::to_value(&l).unwrap();
        assert_eq!(v["state"], "stopping");
        assert_eq!(v["cause"], "timeout");
        let back: Lifecycle = serde_json::from_value(v).unwrap();
        assert_eq!(back, l);
    }

    #[test]
    fn a_stand_down_written_under_its_first_name_still_reads() {
        let old: StopCause = serde_json::from_str(r#"{"cause":"fenced"}"#).unwrap();
        assert_eq!(old, StopCause::StoodDown);
        assert_eq!(
            serde_json::to_value(StopCause::StoodDown).unwrap()["cause"],
            "stood_down"
        );
    }
}
