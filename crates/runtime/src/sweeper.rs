//! The sweep of lost nodes, carried out. Every daemon on a shared store
//! looks at the leases about once a second (when its
//! [`Member`](bpm_domain::cluster::member::Member) says); what a look does
//! is decided by the domain's [`Look`], whose effects the daemon's
//! [`Member`](bpm_domain::cluster::member::Member) passes on and this module
//! carries out, one at a time: read the leases, fail over a lost node's due records, bid for
//! a due sweep ([`Membership::bid_for_sweep`] lets exactly one node win it)
//! and, when won, apply [`cluster::sweep_record`] to each of the node's
//! records. Writes are compare-and-set: a record that changed meanwhile is
//! read again and the rule applied again.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use bpm_domain::cluster::look::Swept;
use bpm_domain::cluster::look::{LookEffect, LookInput, SeenLease};
use bpm_domain::cluster::{self, Lease};
use bpm_domain::{
    ClusterTiming, Event, EventKind, ListFilter, NodeId, StateName, Sweep, Timestamp,
};
use bpm_ports::{
    Clock, EventBus, FailedOver, Failover, IdGenerator, Membership, MembershipError, ProcessStore,
    StoreError,
};

/// How often a record that changed under a sweep is read again.
const ATTEMPTS: usize = 3;

/// Why a look at the leases stopped short.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SweepError {
    /// The leases could not be read, or a sweep bid for.
    Membership(MembershipError),
    /// The records could not be read or written.
    Store(StoreError),
}

impl fmt::Display for SweepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SweepError::Membership(e) => write!(f, "{e}"),
            SweepError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SweepError {}

impl From<MembershipError> for SweepError {
    fn from(e: MembershipError) -> Self {
        SweepError::Membership(e)
    }
}

impl From<StoreError> for SweepError {
    fn from(e: StoreError) -> Self {
        SweepError::Store(e)
    }
}

/// Says in the log what a look did to nodes that stopped renewing their
/// leases.
pub(crate) fn log_swept(swept: &[Swept]) {
    for s in swept {
        if let Some(sweep) = s.sweep {
            tracing::warn!(
                node = %s.node, epoch = s.epoch, sweep = sweep.as_str(), records = s.records,
                "swept a node that stopped renewing its lease"
            );
        } else {
            tracing::warn!(
                node = %s.node, epoch = s.epoch, records = s.records,
                "failed over records of a node that stopped renewing its lease"
            );
        }
    }
}

/// Carries out the looks at the nodes that stopped renewing their leases.
pub struct Sweeper {
    membership: Arc<dyn Membership>,
    store: Arc<dyn ProcessStore>,
    events: Arc<dyn EventBus>,
    clock: Arc<dyn Clock>,
    node: NodeId,
    timing: ClusterTiming,
    /// The queue of records placed on any node: a lost node's claims go back.
    claims: Option<Arc<dyn bpm_ports::ClaimQueue>>,
    /// The failover of lost nodes' records, and the ids of their replacements.
    failover: Option<(Arc<dyn Failover>, Arc<dyn IdGenerator>)>,
}

impl Sweeper {
    /// A lost node's failover records are run elsewhere through `failover`,
    /// their replacements named by `ids`.
    #[must_use]
    pub fn with_failover(mut self, failover: Arc<dyn Failover>, ids: Arc<dyn IdGenerator>) -> Self {
        self.failover = Some((failover, ids));
        self
    }

    /// A lost node's claims of records placed on any node that it never
    /// wrote go back to `claims`' queue when its records are swept.
    #[must_use]
    pub fn with_claims(mut self, claims: Option<Arc<dyn bpm_ports::ClaimQueue>>) -> Self {
        self.claims = claims;
        self
    }

    /// A sweeper for node `node` (this daemon's), under `timing`; what it
    /// changes is announced on `events`.
    pub fn new(
        membership: Arc<dyn Membership>,
        store: Arc<dyn ProcessStore>,
        events: Arc<dyn EventBus>,
        clock: Arc<dyn Clock>,
        node: NodeId,
        timing: ClusterTiming,
    ) -> Self {
        Sweeper {
            membership,
            store,
            events,
            clock,
            node,
            timing,
            claims: None,
            failover: None,
        }
    }

    /// Carries out one of a look's effects (its end excepted); its answer.
    ///
    /// # Errors
    /// The store does not answer; sweeps carried out before stay done, and
    /// one cut short is won again once its hold is over.
    ///
    /// # Panics
    /// Given [`LookEffect::Done`], which wants no answer.
    pub async fn carry_out(&self, effect: LookEffect) -> Result<LookInput, SweepError> {
        Ok(match effect {
            LookEffect::ReadLeases => LookInput::Leases(
                self.membership
                    .nodes()
                    .await?
                    .into_iter()
                    .map(|view| SeenLease {
                        now: view
                            .lease
                            .renewed_at
                            .saturating_add(Duration::from_millis(view.lease_age_ms)),
                        lease: view.lease,
                    })
                    .collect(),
            ),
            LookEffect::FailOver { lease, now } => LookInput::FailedOver {
                records: self.fail_over(&lease, now).await?,
            },
            LookEffect::BidForSweep { lease, sweep } => LookInput::Bid {
                won: self
                    .membership
                    .bid_for_sweep(
                        &lease.node,
                        lease.epoch,
                        sweep,
                        &self.node,
                        self.timing.lost_after(),
                        self.timing.lease_ttl(),
                    )
                    .await?,
            },
            LookEffect::Sweep { lease, sweep } => {
                if let Some(claims) = &self.claims {
                    let back = claims.give_back(&lease.node).await?;
                    if back > 0 {
                        tracing::warn!(node = %lease.node, records = back, "records a lost node took but never placed are queued again");
                    }
                }
                LookInput::Swept {
                    records: self.apply(sweep, &lease).await?,
                }
            }
            LookEffect::FinishSweep { lease, sweep } => {
                self.membership
                    .finish_sweep(&lease.node, lease.epoch, sweep)
                    .await?;
                LookInput::Finished
            }
            LookEffect::Done(_) => unreachable!("a look's end is not carried out"),
        })
    }

    /// Runs elsewhere each failover record of `lease`'s lost node that is
    /// due at `now` (the store's clock): the record is given up and its
    /// replacement queued for any node, in one write of the store's, only
    /// while the node is still lost. How many were replaced.
    async fn fail_over(&self, lease: &Lease, now: Timestamp) -> Result<usize, SweepError> {
        let Some((failover, ids)) = &self.failover else {
            return Ok(0);
        };
        let filter = ListFilter {
            node: Some(lease.node.clone()),
            states: StateName::LIVE.to_vec(),
            ..ListFilter::default()
        };
        let mut replaced = 0;
        for record in self.store.list(&filter).await? {
            let mut current = record;
            for _ in 0..ATTEMPTS {
                let new_id = ids.next_id();
                let Some((old, new)) = cluster::failover(lease, &self.node, &current, new_id, now)
                else {
                    break;
                };
                match failover
                    .fail_over(lease, &old, current.version(), &new)
                    .await?
                {
                    FailedOver::Replaced => {
                        replaced += 1;
                        let at = self.clock.now();
                        let mut moved = Event::new(EventKind::Lost, &old, at);
                        moved.related = Some(new_id);
                        for event in [moved, Event::new(EventKind::Submitted, &new, at)] {
                            if let Err(e) = self.events.publish(event).await {
                                tracing::debug!(error = %e, "could not announce a failover");
                            }
                        }
                        break;
                    }
                    FailedOver::Changed => match self.store.get(current.id()).await {
                        Ok(again) => current = again,
                        Err(StoreError::NotFound(_)) => break,
                        Err(e) => return Err(e.into()),
                    },
                    FailedOver::NotLost => return Ok(replaced),
                }
            }
        }
        Ok(replaced)
    }

    /// Applies `sweep` to every record of `lease`'s node still under way
    /// ([`cluster::sweep_record`]);
    /// returns how many it changed.
    async fn apply(&self, sweep: Sweep, lease: &Lease) -> Result<usize, SweepError> {
        let filter = ListFilter {
            node: Some(lease.node.clone()),
            states: StateName::LIVE.to_vec(),
            ..ListFilter::default()
        };
        let mut changed = 0;
        for record in self.store.list(&filter).await? {
            let mut current = record;
            for _ in 0..ATTEMPTS {
                let mut next = current.clone();
                let Some(event) = cluster::sweep_record(
                    sweep,
                    lease,
                    &self.node,
                    &self.timing,
                    &mut next,
                    self.clock.now(),
                ) else {
                    break;
                };
                match self.store.update(&next, current.version()).await {
                    Ok(()) => {
                        changed += 1;
                        if let Err(e) = self.events.publish(event).await {
                            tracing::debug!(error = %e, "could not announce a sweep");
                        }
                        break;
                    }
                    Err(StoreError::Conflict { .. }) => {
                        current = self.store.get(current.id()).await?;
                    }
                    Err(StoreError::NotFound(_)) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(changed)
    }
}
