//! Leases on node names within one process: the domain's rules
//! (`bpm_domain::cluster`) over a map, on the clock given.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bpm_domain::cluster::take_name;
use std::time::Duration;

use bpm_domain::{ClusterTiming, Lease, NodeId, NodeState, ProcessRecord, Sweep, Timestamp};
use bpm_ports::{
    Candidate, Clock, FailedOver, Failover, Membership, MembershipError, NodeView, ProcessStore,
    StoreError,
};

/// Leases within one process, for tests and for a single node.
pub struct InMemoryMembership {
    clock: Arc<dyn Clock>,
    /// Per node: its newest epoch, and its lease.
    nodes: Mutex<BTreeMap<NodeId, (u64, Lease)>>,
    /// Sweeps bid for: until when the winning bid holds (`None`: finished).
    sweeps: Mutex<BTreeMap<(NodeId, u64, Sweep), Option<Timestamp>>>,
}

impl InMemoryMembership {
    /// Leases judged by `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        InMemoryMembership {
            clock,
            nodes: Mutex::new(BTreeMap::new()),
            sweeps: Mutex::new(BTreeMap::new()),
        }
    }

    /// Runs `change` on `epoch`'s lease of `node`, if it is the node's
    /// newest and not left.
    fn with_lease(
        &self,
        node: &NodeId,
        epoch: u64,
        change: impl FnOnce(&mut Lease) -> Result<(), MembershipError>,
    ) -> Result<(), MembershipError> {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        match nodes.get_mut(node) {
            Some((newest, lease)) if *newest == epoch && !lease.left => change(lease),
            held => Err(MembershipError::Fenced {
                node: node.clone(),
                epoch,
                current: held.map_or(0, |(newest, _)| *newest),
            }),
        }
    }
}

#[async_trait]
impl Membership for InMemoryMembership {
    async fn join(&self, candidate: &Candidate) -> Result<u64, MembershipError> {
        let now = self.clock.now();
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        let held = nodes.get(&candidate.node);
        let epoch = take_name(
            &candidate.node,
            held.map(|(_, lease)| lease),
            held.map_or(0, |(newest, _)| *newest),
            now,
            candidate.replaces.map(|epoch| bpm_domain::TakeOver {
                epoch,
                boot: &candidate.boot,
            }),
        )?;
        let lease = Lease {
            node: candidate.node.clone(),
            epoch,
            host: candidate.host.clone(),
            pid: candidate.pid,
            version: candidate.version.clone(),
            since: now,
            renewed_at: now,
            ttl: candidate.ttl,
            slots: candidate.slots,
            left: false,
            labels: candidate.labels.clone(),
            boot: candidate.boot.clone(),
        };
        nodes.insert(candidate.node.clone(), (epoch, lease));
        Ok(epoch)
    }

    async fn renew(&self, node: &NodeId, epoch: u64) -> Result<(), MembershipError> {
        let now = self.clock.now();
        self.with_lease(node, epoch, |lease| {
            if lease.state_at(now) == NodeState::Lost {
                return Err(MembershipError::Expired {
                    node: node.clone(),
                    epoch,
                });
            }
            lease.renewed_at = now;
            Ok(())
        })
    }

    async fn leave(&self, node: &NodeId, epoch: u64) -> Result<(), MembershipError> {
        let now = self.clock.now();
        self.with_lease(node, epoch, |lease| {
            lease.left = true;
            lease.renewed_at = now;
            Ok(())
        })
    }

    async fn nodes(&self) -> Result<Vec<NodeView>, MembershipError> {
        let now = self.clock.now();
        let nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(nodes
            .values()
            .map(|(_, lease)| NodeView {
                state: lease.state_at(now),
                lease_age_ms: u64::try_from(now.saturating_since(lease.renewed_at).as_millis())
                    .unwrap_or(u64::MAX),
                lease: lease.clone(),
            })
            .collect())
    }

    async fn bid_for_sweep(
        &self,
        node: &NodeId,
        epoch: u64,
        sweep: Sweep,
        _by: &NodeId,
        lost_after: Duration,
        hold: Duration,
    ) -> Result<bool, MembershipError> {
        let now = self.clock.now();
        let nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        let Some((newest, lease)) = nodes.get(node) else {
            return Ok(false);
        };
        // Due as `ClusterTiming::sweep_due` says, with the candidate's wait.
        let expiry = lease.renewed_at.saturating_add(lease.ttl.as_duration());
        let due = match sweep {
            Sweep::Unreach => expiry,
            Sweep::GiveUp => expiry.saturating_add(lost_after),
        };
        if *newest != epoch || lease.epoch != epoch || lease.left || now <= due {
            return Ok(false);
        }
        let mut sweeps = self.sweeps.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (node.clone(), epoch, sweep);
        match sweeps.get(&key) {
            Some(None) => Ok(false),
            Some(Some(until)) if *until > now => Ok(false),
            _ => {
                sweeps.insert(key, Some(now.saturating_add(hold)));
                Ok(true)
            }
        }
    }

    async fn finish_sweep(
        &self,
        node: &NodeId,
        epoch: u64,
        sweep: Sweep,
    ) -> Result<(), MembershipError> {
        self.sweeps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((node.clone(), epoch, sweep), None);
        Ok(())
    }
}

impl InMemoryMembership {
    /// Whether `lease`'s node is still lost at its epoch (not renewed,
    /// taken again, or left) and has been for `after` past its last
    /// renewal, by this membership's clock.
    fn lost_for(&self, lease: &Lease, after: Duration) -> bool {
        let now = self.clock.now();
        let nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes.get(&lease.node).is_some_and(|(newest, held)| {
            *newest == lease.epoch
                && held.epoch == lease.epoch
                && !held.left
                && now.saturating_since(held.renewed_at) > after
        })
    }
}

/// Failover on the in-memory leases and a store shared within one process.
/// One failover runs at a time; the check that the node is still lost and
/// the two writes are not one step as in Redis, which suits tests and a
/// single node, where no node is lost and taken again meanwhile.
pub struct InMemoryFailover {
    membership: Arc<InMemoryMembership>,
    store: Arc<dyn ProcessStore>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl InMemoryFailover {
    /// Failover of `membership`'s lost nodes' records in `store`.
    pub fn new(membership: Arc<InMemoryMembership>, store: Arc<dyn ProcessStore>) -> Self {
        InMemoryFailover {
            membership,
            store,
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }
}

#[async_trait]
impl Failover for InMemoryFailover {
    async fn fail_over(
        &self,
        lease: &Lease,
        old: &ProcessRecord,
        expected: u64,
        replacement: &ProcessRecord,
    ) -> Result<FailedOver, StoreError> {
        let _one = self.one_at_a_time.lock().await;
        let after = ClusterTiming::failover_after(lease, old.spec().stop.grace);
        if !self.membership.lost_for(lease, after) {
            return Ok(FailedOver::NotLost);
        }
        match self.store.get(replacement.id()).await {
            Ok(_) => return Err(StoreError::AlreadyExists(replacement.id())),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        match self.store.update(old, expected).await {
            Ok(()) => {}
            Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => {
                return Ok(FailedOver::Changed);
            }
            Err(e) => return Err(e),
        }
        self.store.create(replacement).await?;
        Ok(FailedOver::Replaced)
    }
}
