//! Commands for the node that owns a record. A daemon changes only its own
//! node's records; a call about another node's record (stop, pause, resume,
//! restart, input, progress, complete, fail, remove), and a start placed on
//! another node, is sent to the owner as a [`Call`] through a
//! [`CommandBus`] (a call so sent is a *command*), applied there as a local
//! call, and its [`Reply`] comes back with the meaning of a local call: a
//! `stop` answers once the whole tree is gone.

use std::time::Duration;

use async_trait::async_trait;
use bpm_domain::{NodeId, NodeState, Span};

use crate::{Call, ManagerError, Reply};

/// A command taken from this node's queue, to carry out and answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The command's own id, chosen by its sender: a command delivered
    /// again (its first carrier died before it answered) has the same.
    pub id: String,
    /// The call to carry out.
    pub call: Call,
}

/// Carries commands to the node that owns their record, and their answers
/// back. Delivery is at least once; each command is carried out once
/// (commands carry ids, and an answered command delivered again is
/// answered again, not carried out again).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait CommandBus: Send + Sync + 'static {
    /// Sends `call` to `node` and waits for its answer, at most `within`.
    ///
    /// # Errors
    /// MUST return [`ManagerError::NodeNotAnswering`] when `node` is not
    /// alive (unknown, lost or left: at once, without waiting) or gave no
    /// answer within `within`; the error names the node and its lease's
    /// age. MUST return the owner's own error when it answered with one,
    /// and [`ManagerError::Connection`] when the bus cannot be reached.
    async fn send(
        &self,
        node: &NodeId,
        call: Call,
        within: Duration,
    ) -> Result<Reply, ManagerError>;

    /// The next command for this node, waiting at most about a second:
    /// `None` when none came. Commands a former daemon of this node took
    /// but never answered come first.
    ///
    /// # Errors
    /// MUST return [`ManagerError::Connection`] when the bus cannot be
    /// reached.
    async fn receive(&self) -> Result<Option<Delivery>, ManagerError>;

    /// Answers `delivery` and takes it off this node's queue; an answer
    /// sent again for the same command changes nothing.
    ///
    /// # Errors
    /// MUST return [`ManagerError::Connection`] when the bus cannot be
    /// reached (the command stays queued, and is delivered again).
    async fn answer(
        &self,
        delivery: &Delivery,
        answer: &Result<Reply, ManagerError>,
    ) -> Result<(), ManagerError>;
}

/// Where a command stands on a bus: what a daemon that reads it finds, and
/// what its sender finds when it stops waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandMark {
    /// No daemon took it (a sender that stops waiting withdraws it).
    New,
    /// A daemon took it and has not answered.
    Taken,
    /// A daemon answered it (its answer is kept for a delivery again).
    Answered,
    /// Its sender withdrew it.
    Withdrawn,
}

/// What a daemon of `node` answers, without carrying it out, for a command
/// it read whose mark was `mark`: `None` for a new one, which it carries
/// out; the kept answer (from `kept`) for one answered before; an error for
/// one withdrawn or taken by a daemon of the node that stopped meanwhile,
/// which is never carried out twice.
pub fn answer_without_carrying_out(
    mark: CommandMark,
    node: &NodeId,
    call: &Call,
    kept: impl FnOnce() -> Result<Reply, ManagerError>,
) -> Option<Result<Reply, ManagerError>> {
    match mark {
        CommandMark::New => None,
        CommandMark::Answered => Some(kept()),
        CommandMark::Withdrawn => Some(Err(ManagerError::Connection(
            "the command was withdrawn by its sender".into(),
        ))),
        CommandMark::Taken => Some(Err(ManagerError::Connection(format!(
            "node {node}'s daemon stopped while it carried out this {}; it is not carried out again: look at the record",
            call.name()
        )))),
    }
}

/// Why a command went unanswered, by its mark when its sender stopped
/// waiting (an answered one's answer is read instead, where it can be).
pub fn unanswered(mark: CommandMark) -> &'static str {
    match mark {
        CommandMark::New | CommandMark::Withdrawn => {
            "no daemon took the command; it was withdrawn and nothing was done"
        }
        CommandMark::Answered => {
            "it answered as the wait ended, and the answer was lost; look at the record"
        }
        CommandMark::Taken => {
            "its daemon took the command and may still carry it out; look at the record"
        }
    }
}

/// The error for `call` to `node`, which gave no answer after `waited`:
/// it names the node and, as `membership` has it, the age of its lease.
pub async fn not_answering(
    membership: &dyn crate::Membership,
    node: &NodeId,
    call: &Call,
    waited: Duration,
    detail: String,
) -> ManagerError {
    let age = membership.nodes().await.ok().and_then(|nodes| {
        nodes
            .into_iter()
            .find(|v| &v.lease.node == node)
            .map(|v| v.lease_age_ms)
    });
    ManagerError::NodeNotAnswering {
        node: node.clone(),
        command: call.name().into(),
        waited_ms: waited.as_millis().try_into().unwrap_or(u64::MAX),
        lease_age_ms: age,
        detail,
    }
}

/// Refuses `call` for `node` at once unless `membership` has the node
/// alive (or suspect): nothing is sent to a node that is unknown, lost or
/// left (what [`CommandBus::send`] MUST do).
///
/// # Errors
/// [`ManagerError::NodeNotAnswering`] saying why nothing was sent;
/// [`ManagerError::Connection`] when the leases cannot be read.
pub async fn only_if_alive(
    membership: &dyn crate::Membership,
    node: &NodeId,
    call: &Call,
) -> Result<(), ManagerError> {
    let nodes = membership
        .nodes()
        .await
        .map_err(|e| ManagerError::Connection(e.to_string()))?;
    let detail = match nodes.iter().find(|v| &v.lease.node == node) {
        Some(v) if matches!(v.state, NodeState::Alive | NodeState::Suspect) => return Ok(()),
        Some(v) => format!("node {node} is {}: nothing was sent", v.state),
        None => format!("no node is named {node}: nothing was sent"),
    };
    Err(not_answering(membership, node, call, Duration::ZERO, detail).await)
}

/// How long a sender waits for `call`'s answer: a stop's grace and
/// the time its tree may take to end, half a minute for a batch, a wait
/// for output's own time and a few seconds, or a few seconds for the rest.
pub fn answer_within(call: &Call, grace: Duration) -> Duration {
    match call {
        Call::Stop { force: true, .. } => Duration::from_secs(40),
        Call::Stop { grace: g, .. } => g.map_or(grace, Span::as_duration) + Duration::from_secs(40),
        Call::StartMany { .. } => Duration::from_secs(30),
        Call::WaitOutput { within_ms, .. } => {
            Duration::from_millis(*within_ms).saturating_add(Duration::from_secs(10))
        }
        _ => Duration::from_secs(10),
    }
}
