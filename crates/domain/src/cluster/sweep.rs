//! The sweeps of a lost node's records: which is due, and what each does
//! to a record.

use serde::{Deserialize, Serialize};

use crate::{Event, EventKind, NodeId, ProcessRecord, Span, StateName, Timestamp, Transition};

use super::failover::fails_over;
use super::lease::{ClusterTiming, Lease, NodeState};

impl ClusterTiming {
    /// Which sweep of `lease`'s node is due at `now` (the store's clock):
    /// none while the node is alive, suspect or left; then its records are
    /// marked unreachable; once it has been lost for `lost_after`, they are
    /// given up.
    pub fn sweep_due(&self, lease: &Lease, now: Timestamp) -> Option<Sweep> {
        if self.gives_up(lease, now) {
            Some(Sweep::GiveUp)
        } else if lease.state_at(now) == NodeState::Lost {
            Some(Sweep::Unreach)
        } else {
            None
        }
    }
}

/// What a surviving node does to a lost node's records. Each sweep of one
/// lapsed lease (node and epoch) is won in the store by exactly one
/// node, which applies [`sweep`] to each record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sweep {
    /// Its records under way become `unreachable`.
    Unreach,
    /// Its records under way or unreachable become `lost`, and those
    /// waiting to start there fail.
    GiveUp,
}

impl Sweep {
    /// The name of the sweep, as its bid in the store spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Sweep::Unreach => "unreach",
            Sweep::GiveUp => "give_up",
        }
    }
}

/// The transition `sweep` makes of a record of `lease`'s node in `state`,
/// made by node `by` under `timing`; `None` if it leaves the record alone.
pub fn sweep(
    sweep: Sweep,
    lease: &Lease,
    by: &NodeId,
    timing: &ClusterTiming,
    state: StateName,
) -> Option<Transition> {
    let gone = format!(
        "node {} stopped renewing its lease (last renewed at {}, lease {})",
        lease.node, lease.renewed_at, lease.ttl
    );
    let wait = Span::new(timing.lost_after()).expect("a wait is in range");
    match (sweep, state) {
        (_, s) if s.is_terminal() => None,
        (Sweep::Unreach, s) if s.is_active() => Some(Transition::Unreach {
            reason: format!("{gone}; marked unreachable by node {by}"),
        }),
        (Sweep::GiveUp, StateName::Pending) => Some(Transition::Fail {
            error: format!(
                "{gone}, where it was to run, and did not come back within lost_after {wait}; failed by node {by}"
            ),
        }),
        (Sweep::GiveUp, _) => Some(Transition::Lose {
            reason: format!(
                "{gone} and did not come back within lost_after {wait}; given up by node {by}"
            ),
        }),
        _ => None,
    }
}

/// Applies `sweep` of `lease`'s node to `record` at `now`, for node `by`:
/// the event to announce if it changed (`unreachable`, or the final state
/// it was given up to), `None` if the sweep leaves it alone.
pub fn sweep_record(
    sweep_of: Sweep,
    lease: &Lease,
    by: &NodeId,
    timing: &ClusterTiming,
    record: &mut ProcessRecord,
    now: Timestamp,
) -> Option<Event> {
    if record.node() != &lease.node || (sweep_of == Sweep::GiveUp && fails_over(record)) {
        return None;
    }
    let transition = sweep(sweep_of, lease, by, timing, record.state())?;
    match record.apply(transition, now) {
        Ok(crate::Applied::Changed) => {
            let kind = EventKind::for_terminal(record.state()).unwrap_or(EventKind::Unreachable);
            Some(Event::new(kind, record, now))
        }
        _ => None,
    }
}
