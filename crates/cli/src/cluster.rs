//! A daemon's membership of a cluster, wired: with a Redis store it claims
//! its node's name before it touches the node's records, hands the lease to
//! the cluster driver (`bpm_runtime::cluster`, which runs the domain's
//! `Member`), and leaves when it stops.

use std::sync::Arc;

use anyhow::{Result, anyhow};
use bpm_domain::{ClusterTiming, NodeId, Span};
use bpm_ports::{Candidate, Failover, Membership, ProcessSpawner};
use bpm_redis::{Fence, RedisMembership, RedisStore};
use bpm_runtime::Engine;
use bpm_runtime::cluster::{LeaseStatus, MemberDriver, MemberPorts, take_name};

use crate::wiring::StoreChoice;

/// This daemon's lease on its node, kept by the cluster driver.
pub struct NodeLease {
    membership: Arc<dyn Membership>,
    fence: Fence,
    timing: ClusterTiming,
    driver: MemberDriver,
    /// Where lost nodes' failover records are run elsewhere: the store,
    /// writing with this daemon's epoch.
    failover: Arc<dyn Failover>,
}

/// The candidate this daemon is for `node`, which runs `slots` processes at once.
fn candidate(
    node: &NodeId,
    timing: &ClusterTiming,
    slots: usize,
    labels: &bpm_domain::cluster::placement::NodeLabels,
) -> Candidate {
    Candidate {
        node: node.clone(),
        host: crate::config::hostname(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        ttl: Span::new(timing.lease_ttl()).expect("a lease is in range"),
        slots: u32::try_from(slots).unwrap_or(u32::MAX),
        labels: labels.clone(),
        boot: bpm_adapters::os::boot_id(),
        replaces: None,
    }
}

/// Claims `node` in the cluster when `choice` is a shared store (Redis),
/// and keeps the lease renewed; `None` for a store of this node's own.
///
/// # Errors
/// Another daemon holds the node (naming its host, pid and since when), or
/// Redis does not answer.
pub async fn join(
    choice: &StoreChoice,
    prefix: &str,
    node: &NodeId,
    timing: ClusterTiming,
    slots: usize,
    labels: &bpm_domain::cluster::placement::NodeLabels,
    status: LeaseStatus,
) -> Result<Option<NodeLease>> {
    let StoreChoice::Redis(url) = choice else {
        return Ok(None);
    };
    let who = candidate(node, &timing, slots, labels);
    let membership: Arc<dyn Membership> = Arc::new(
        RedisMembership::connect(url, prefix)
            .await
            .map_err(|e| anyhow!("cannot join the cluster: {e}"))?,
    );
    let (epoch, sent) = take_name(membership.as_ref(), &who, bpm_adapters::os::runs_bpm)
        .await
        .map_err(|e| anyhow!("cannot join the cluster: {e}"))?;
    tracing::info!(%node, epoch, lease_ttl = ?timing.lease_ttl(), "joined the cluster");
    let fence = Fence::with_lease(node.clone(), epoch, timing, sent);
    let failover: Arc<dyn Failover> = Arc::new(
        RedisStore::connect(url, prefix)
            .await
            .map_err(|e| anyhow!("cannot join the cluster: {e}"))?
            .fenced(fence.clone()),
    );
    let driver = MemberDriver::start(
        node.clone(),
        timing,
        epoch,
        sent,
        MemberPorts {
            membership: Arc::clone(&membership),
            who,
            runs_bpm: bpm_adapters::os::runs_bpm,
            fence: Arc::new(fence.clone()),
            status,
        },
    );
    Ok(Some(NodeLease {
        membership,
        fence,
        timing,
        driver,
        failover,
    }))
}

impl NodeLease {
    /// The epoch this daemon's writes carry, for its store.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Tells `keeper` the lease holds, before any process starts, and of
    /// every renewal from now on: a keeper that is not told in time stops
    /// the failover records' processes by itself
    /// (`ProcessSpawner::hold_lease`).
    ///
    /// # Errors
    /// The keeper cannot be reached.
    pub async fn pass_renewals_to(&self, keeper: Arc<dyn ProcessSpawner>) -> Result<()> {
        self.driver
            .attach_keeper(keeper, self.fence.lapses_at())
            .await
            .map_err(|e| anyhow!("cannot tell bpm's keeper the lease holds: {e}"))
    }

    /// Hands the lease the running engine: it is told whether the lease
    /// holds, a node claimed again reconciles its records through it, and
    /// this daemon now sweeps the nodes that stop renewing their leases.
    pub fn attach(&mut self, engine: &Engine) {
        let sweeper = engine.sweeper(
            Arc::clone(&self.membership),
            self.timing,
            Arc::clone(&self.failover),
        );
        self.driver.attach_engine(engine.clone(), sweeper);
    }

    /// Stops renewing and leaves the cluster: the node is `left`, and no
    /// other node takes it for lost.
    pub async fn leave(self) {
        self.driver.stop();
        let (node, epoch) = (self.fence.node(), self.fence.epoch());
        match self.membership.leave(node, epoch).await {
            Ok(()) => tracing::info!(%node, epoch, "left the cluster"),
            Err(e) => tracing::warn!(%node, error = %e, "could not leave the cluster"),
        }
    }
}
