//! The nodes that share one store: each daemon holds a lease on its node's
//! name and writes with that lease's fencing epoch (see
//! [`bpm_domain::cluster`] for what the numbers mean).

use async_trait::async_trait;
use std::time::Duration;

use bpm_domain::{Lease, NameHeld, NodeId, NodeState, Span, Sweep};
use serde::{Deserialize, Serialize};

/// Who takes a node's name: what the lease records of its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// The node.
    pub node: NodeId,
    /// The taking daemon's machine.
    pub host: String,
    /// The taking daemon.
    pub pid: u32,
    /// Its bpm version.
    pub version: String,
    /// Its lease's length (`lease_ttl`).
    pub ttl: Span,
    /// How many processes the node runs at once (`max_running`).
    pub slots: u32,
    /// The labels the node carries (`[node] labels`).
    #[serde(default)]
    pub labels: bpm_domain::cluster::placement::NodeLabels,
    /// The kernel's boot id of the taking daemon's machine (empty if
    /// unknown), kept in the lease ([`bpm_domain::Lease::boot`]).
    #[serde(default)]
    pub boot: String,
    /// The epoch of a holder this daemon saw is gone (same boot, its pid
    /// no longer a daemon: [`bpm_domain::Holder::Gone`]): the take takes
    /// the node over from that epoch at once.
    #[serde(default)]
    pub replaces: Option<u64>,
}

/// A node as the store sees it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// Its lease.
    pub lease: Lease,
    /// Its state at the store's time.
    pub state: NodeState,
    /// How long ago, by the store's clock, the lease was renewed.
    pub lease_age_ms: u64,
}

/// Why a membership call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// Another daemon holds the node.
    #[error(transparent)]
    Held(#[from] NameHeld),
    /// A newer epoch took the node (or its lease was left).
    #[error(
        "node {node} was taken over by a newer daemon (epoch {current}; this one holds {epoch})"
    )]
    Fenced {
        /// The node.
        node: NodeId,
        /// The epoch the caller holds.
        epoch: u64,
        /// The node's newest epoch (0 if it has no lease at all).
        current: u64,
    },
    /// The lease expired before it was renewed: another daemon may take the
    /// node at any moment; the holder joins again for a new epoch.
    #[error(
        "the lease of node {node} (epoch {epoch}) expired before it was renewed: another daemon may take the node"
    )]
    Expired {
        /// The node.
        node: NodeId,
        /// The epoch whose lease expired.
        epoch: u64,
    },
    /// The store did not answer.
    #[error("membership store unavailable: {0}")]
    Unavailable(String),
}

/// Leases on node names, in the store every node shares.
#[async_trait]
pub trait Membership: Send + Sync {
    /// Takes `candidate.node`'s name for this daemon: the new fencing epoch it
    /// writes with. A node whose holder left, or whose lease expired, is
    /// taken over with a newer epoch.
    ///
    /// A take that `replaces` the holder's epoch takes the node over while
    /// that lease is alive too, when it is still that epoch's and was taken
    /// with the candidate's `boot` ([`bpm_domain::cluster::take_name`]).
    ///
    /// # Errors
    /// MUST return [`MembershipError::Held`] while another lease on the node
    /// is alive or suspect (and not taken over as above), naming its holder,
    /// its epoch and its boot;
    /// [`MembershipError::Unavailable`] if the store does not answer.
    async fn join(&self, candidate: &Candidate) -> Result<u64, MembershipError>;

    /// Renews the lease `epoch` holds on `node`.
    ///
    /// # Errors
    /// MUST return [`MembershipError::Fenced`] if `epoch` is not the node's
    /// newest, or its lease was left; [`MembershipError::Expired`] if the
    /// lease expired (the node's state is `lost`), even if no one took it;
    /// [`MembershipError::Unavailable`] if the store does not answer.
    async fn renew(&self, node: &NodeId, epoch: u64) -> Result<(), MembershipError>;

    /// Leaves the cluster: the node is `left`, with no loss to notice.
    ///
    /// # Errors
    /// MUST return [`MembershipError::Fenced`] if `epoch` is not the node's
    /// newest; [`MembershipError::Unavailable`] if the store does not answer.
    async fn leave(&self, node: &NodeId, epoch: u64) -> Result<(), MembershipError>;

    /// Every node that ever joined, by name, with its state now.
    ///
    /// # Errors
    /// MUST return [`MembershipError::Unavailable`] if the store does not answer.
    async fn nodes(&self) -> Result<Vec<NodeView>, MembershipError>;

    /// Bids for `sweep` of `node`'s lapsed lease `epoch` for the node `by`, and says whether it won:
    /// `true` for exactly one candidate, which then applies the sweep to the
    /// node's records ([`bpm_domain::cluster::sweep`]) and finishes it.
    /// It is won only while `epoch` is still the node's newest, its
    /// lease not left, and the sweep due by the store's clock
    /// ([`ClusterTiming::sweep_due`](bpm_domain::ClusterTiming::sweep_due),
    /// with `lost_after`). A sweep won and not finished within `hold` (its
    /// winner died) may be won again.
    ///
    /// # Errors
    /// MUST return [`MembershipError::Unavailable`] if the store does not answer.
    async fn bid_for_sweep(
        &self,
        node: &NodeId,
        epoch: u64,
        sweep: Sweep,
        by: &NodeId,
        lost_after: Duration,
        hold: Duration,
    ) -> Result<bool, MembershipError>;

    /// Marks `sweep` of `node`'s lease `epoch` done: no one bids for it again.
    ///
    /// # Errors
    /// MUST return [`MembershipError::Unavailable`] if the store does not answer.
    async fn finish_sweep(
        &self,
        node: &NodeId,
        epoch: u64,
        sweep: Sweep,
    ) -> Result<(), MembershipError>;
}

/// The store's write fence: the epoch a daemon's writes carry, and how long
/// they may be sent at all. A daemon's lease moves it as it is renewed or
/// taken again; the store asks it before every write, so that nothing is
/// written once a whole lease has passed since the last renewal that
/// succeeded was sent ([`bpm_domain::ClusterTiming::may_write`]).
pub trait WriteFence: Send + Sync {
    /// Writes carry `epoch` from now on, until a lease after `sent` (when
    /// the renewal or take that holds it was sent) unless it is moved
    /// again. A `sent` older than one already given does not move it back.
    fn write_with(&self, epoch: u64, sent: std::time::Instant);
}
