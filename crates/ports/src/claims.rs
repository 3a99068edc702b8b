//! The cluster's queue of records placed on any node (`--node any`).
//!
//! A record placed on any node is created in the store unplaced (its node
//! is `any`); the store keeps it queued ([`bpm_domain::cluster::placement::Queued`])
//! until a node claims it. A claim is atomic: of any number of nodes
//! claiming at once, one gets each record. The claimer's core then writes
//! the record with its own node ([`bpm_domain::Input::Claimed`]), which
//! ends the claim; a claim whose write never came (the claimer died) is
//! given back to the queue by [`ClaimQueue::give_back`].

use async_trait::async_trait;
use bpm_domain::cluster::placement::{NodeLabels, Room};
use bpm_domain::{NodeId, ProcessId, ProcessRecord};

use crate::StoreError;

/// What [`ClaimQueue::claim_one`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimedOne {
    /// It waited unplaced, and is now this node's claim: the record as
    /// the store holds it.
    Taken(ProcessRecord),
    /// Another node claimed it and has not written it yet.
    ClaimedBy(NodeId),
    /// It does not wait in the queue: it is placed, or gone.
    NotWaiting,
}

/// The queue of unplaced records, for one node (the claimer).
#[async_trait]
pub trait ClaimQueue: Send + Sync {
    /// The node that claims through this queue.
    fn node(&self) -> &NodeId;

    /// Claims for this node the first unplaced record it takes
    /// ([`bpm_domain::cluster::placement::takes`] with `room` and `labels`), in
    /// priority then submission order: the record as the store holds it,
    /// or `None` when no record fits.
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] when the store does not
    /// answer (nothing is claimed), and [`StoreError::Fenced`] when a newer
    /// daemon holds this node (nothing is claimed).
    async fn claim(
        &self,
        room: &Room,
        labels: &NodeLabels,
    ) -> Result<Option<ProcessRecord>, StoreError>;

    /// Claims `id` for this node whatever fits (to stop or remove it
    /// here), if it still waits unplaced.
    ///
    /// # Errors
    /// As [`ClaimQueue::claim`].
    async fn claim_one(&self, id: ProcessId) -> Result<ClaimedOne, StoreError>;

    /// Gives back to the queue the claims `node` made whose records it
    /// never wrote (still unplaced), and forgets its other claims: after
    /// its daemon restarted, or once it is lost. How many went back.
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] when the store does not answer.
    async fn give_back(&self, node: &NodeId) -> Result<usize, StoreError>;
}

/// Cluster-wide limits per group (`[limits.cluster_groups]`), counted in
/// the shared store.
#[async_trait]
pub trait ClusterSlots: Send + Sync {
    /// Grants `id` one of `group`'s slots across the cluster if fewer than
    /// `limit` are taken. Taken are: the group's records the store holds
    /// in a state that holds a slot ([`bpm_domain::StateName::is_active`]),
    /// on any node, but for tracked operations (the caller's own work,
    /// which holds no slot), and the records granted a slot that are still
    /// pending at the version they had when granted (about to start). A
    /// record granted before and still so is granted again. A grant needs
    /// no release: it lapses once the store holds its record in another
    /// version (started, the record is counted by its state; ended,
    /// unreachable, or queued again after a run, it holds no slot and asks
    /// anew), and, on a store that fences daemons by epoch, once the daemon
    /// that asked has restarted (its answer was lost with it).
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] when the store does not
    /// answer (nothing is granted).
    async fn take(
        &self,
        id: ProcessId,
        group: &bpm_domain::GroupName,
        limit: usize,
    ) -> Result<bool, StoreError>;
}

/// What [`Failover::fail_over`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedOver {
    /// The record is given up and its replacement queued.
    Replaced,
    /// The store holds another version of the record, or none: nothing
    /// was written (read it again, and decide again).
    Changed,
    /// Its node is not lost at the lease's epoch any more (it renewed,
    /// was claimed again, or left), or the failover is not due yet on the
    /// store's clock: nothing was written.
    NotLost,
}

/// Failover of a lost node's records ([`bpm_domain::cluster::failover`]):
/// the record given up and its replacement written at once, and only while
/// its node is still lost. A node that takes its name again takes a new
/// epoch before it reads its records, so either it reads the record given
/// up, or the failover finds its node back and writes nothing: never both
/// copies live.
#[async_trait]
pub trait Failover: Send + Sync {
    /// Writes `old` (given up, over the version `expected`) and creates
    /// `replacement`, both or neither: only if `lease`'s node is still
    /// lost at `lease.epoch` (not renewed since, not claimed again, not
    /// left), and [`bpm_domain::ClusterTiming::failover_after`] `old`'s
    /// grace has passed since its last renewal, by the store's clock.
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] when the store does not
    /// answer, and [`StoreError::AlreadyExists`] when `replacement` exists
    /// already; in both cases nothing is written.
    async fn fail_over(
        &self,
        lease: &bpm_domain::Lease,
        old: &ProcessRecord,
        expected: u64,
        replacement: &ProcessRecord,
    ) -> Result<FailedOver, StoreError>;
}
