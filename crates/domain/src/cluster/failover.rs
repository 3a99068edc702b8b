//! Failover: which records run elsewhere when their node is lost, when,
//! and the pair of records that does it.

use std::time::Duration;

use crate::{NodeId, ProcessRecord, Span, Timestamp, Transition};

use super::lease::{ClusterTiming, FAILOVER_MARGIN, Lease};

impl ClusterTiming {
    /// How long past its node's last renewal a failover record whose stop
    /// grace is `grace` is run elsewhere: a whole lease, the grace and
    /// [`FAILOVER_MARGIN`].
    ///
    /// Why this is safe: the node stopped renewing at `renewed_at` on the
    /// store's clock; it sent that renewal at `sent` <= `renewed_at`, and
    /// stands down a lease later on its own clock (`must_stand_down`), so its
    /// copy gets TERM by `sent + ttl` and KILL by `sent + ttl + grace`,
    /// which is before `renewed_at + ttl + grace + margin` as long as the
    /// two clocks drift apart by less than the margin over that time.
    pub fn failover_after(lease: &Lease, grace: Span) -> Duration {
        Self::earliest_failover(lease) + grace.as_duration()
    }

    /// How long past its node's last renewal the first of its failover
    /// records may be run elsewhere (one with no grace): before that, no
    /// record of the node need be looked at.
    pub fn earliest_failover(lease: &Lease) -> Duration {
        lease.ttl.as_duration() + FAILOVER_MARGIN
    }

    /// Whether `record`, of `lease`'s node, is run elsewhere at `now` (the
    /// store's clock): it asked for failover, has restarts left, has not
    /// ended, and its node has been lost for longer than
    /// [`ClusterTiming::failover_after`]. A node that left on purpose is
    /// not lost.
    pub fn failover_due(lease: &Lease, record: &ProcessRecord, now: Timestamp) -> bool {
        fails_over(record)
            && !lease.left
            && record.node() == &lease.node
            && !record.is_terminal()
            && now.saturating_since(lease.renewed_at)
                > Self::failover_after(lease, record.spec().stop.grace)
    }
}

/// Whether `record` is run elsewhere when its node is lost: it asked for
/// failover, has restarts left, and was not being stopped on request (a
/// stop asked for is honoured: it is given up as any record; a stop by
/// its node standing down is not a request). The sweeps never give
/// it up; the failover ends it.
pub fn fails_over(record: &ProcessRecord) -> bool {
    let spec = record.spec();
    // A stop someone asked for is honoured; the node standing down is the
    // very start of a failover, whether or not the store heard of it.
    let asked_to_stop = |l: &crate::Lifecycle| matches!(l, crate::Lifecycle::Stopping { cause, .. } if *cause != crate::StopCause::StoodDown);
    let stopping = match record.lifecycle() {
        crate::Lifecycle::Unreachable { was, .. } => asked_to_stop(was),
        other => asked_to_stop(other),
    };
    spec.failover
        && !stopping
        && spec
            .restart
            .max_restarts
            .is_none_or(|max| record.restarts() < max)
}

/// Fails `record` over at `now`, for node `by`, if it is due
/// ([`ClusterTiming::failover_due`]): the record given up as `lost`,
/// naming `new_id`, and its replacement `new_id`, unplaced
/// ([`ProcessRecord::failover_of`]). The store writes both at once, and
/// only while `lease`'s node is still lost at the same epoch.
pub fn failover(
    lease: &Lease,
    by: &NodeId,
    record: &ProcessRecord,
    new_id: crate::ProcessId,
    now: Timestamp,
) -> Option<(ProcessRecord, ProcessRecord)> {
    if !ClusterTiming::failover_due(lease, record, now) {
        return None;
    }
    let mut old = record.clone();
    let reason = format!(
        "node {} stopped renewing its lease (last renewed at {}, lease {}); failed over to {new_id} by node {by}",
        lease.node, lease.renewed_at, lease.ttl
    );
    old.apply(Transition::Lose { reason }, now).ok()?;
    Some((old, ProcessRecord::failover_of(record, new_id, now)))
}
