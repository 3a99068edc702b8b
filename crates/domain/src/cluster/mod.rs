//! The rules of nodes that share one store: how long a node's lease lasts
//! and how often it is renewed, what state a node is in from its lease's
//! age, who may claim a node's name, which writes are fenced, and when a
//! daemon must stop writing.
//!
//! The store (Redis) holds the leases and the epochs and applies these
//! rules atomically; this module says what the numbers mean, so that they
//! can be property-tested and simulated. Every time here is the store's
//! clock, except [`ClusterTiming::may_write`], which a daemon asks of its
//! own clock, measured from when it *sent* its last renewal that succeeded:
//! a renewal's answer may come late, but never before it was sent.

pub mod member;
pub mod placement;
pub mod slots;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Event, EventKind, NodeId, ProcessRecord, Span, StateName, Timestamp, Transition};

/// The shortest lease a node may hold.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
/// A node's lease unless configured (`lease_ttl`).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
/// How long a lost node's records wait for it unless configured (`lost_after`).
pub const DEFAULT_LOST_AFTER: Duration = Duration::from_mins(5);
/// The most a surviving node may take, past a lease's expiry, to notice it.
pub const NOTICE_WITHIN: Duration = Duration::from_secs(1);
/// What the cluster waits for, past a lost node's lease and a failover
/// record's stop grace, before it runs the record elsewhere: the time the
/// fenced node may take to carry out its KILL, and the drift between its
/// clock and the store's over one lease ([`ClusterTiming::failover_due`]).
pub const FAILOVER_MARGIN: Duration = Duration::from_secs(2);
/// How long after its daemon would fence the keeper fences by itself, when
/// no renewal was passed on to it (the daemon died or stalled): late enough
/// that a live daemon stops its processes first (no second TERM), early
/// enough that the keeper's KILL still comes before the failover (it is
/// well inside [`FAILOVER_MARGIN`]).
pub const KEEPER_FENCE_LAG: Duration = Duration::from_millis(500);

/// How long a keeper told now is to hold the processes of a lease that
/// lapses in `until_lapse`: until the lapse, and [`KEEPER_FENCE_LAG`] more.
pub fn keeper_hold(until_lapse: Duration) -> Duration {
    until_lapse + KEEPER_FENCE_LAG
}

/// How long a lease a keeper was told holds may go without news before
/// the keeper stops its failover processes with SIGSTOP, until the next
/// renewal continues them: half of it. Renewals come every third of a
/// lease, so this is a renewal well overdue, and still long before the
/// lease lapses; a process stopped this way cannot run on through a pause
/// that would make it stale.
pub fn late_after(hold: Duration) -> Duration {
    hold / 2
}

/// How far past a lease's lapse a keeper may find itself when it looks
/// before it takes the lapse for a pause of the whole machine (it slept
/// through it): then another node may already run the record, and its
/// processes are killed at once, with no grace.
pub const OVERSLEPT: Duration = Duration::from_millis(100);

/// The cluster's timing: the lease's length and how long a lost node's
/// records wait for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterTiming {
    lease_ttl: Span,
    lost_after: Span,
}

/// A timing the cluster cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    /// The lease is shorter than [`MIN_LEASE_TTL`].
    #[error("lease_ttl {0} is too short: it must be at least 2s")]
    LeaseTooShort(Span),
    /// `lost_after` is shorter than the lease.
    #[error(
        "lost_after {lost_after} is shorter than lease_ttl {lease_ttl}: a node must be given at least one lease to come back"
    )]
    LostTooSoon {
        /// The lease.
        lease_ttl: Span,
        /// The wait.
        lost_after: Span,
    },
}

impl Default for ClusterTiming {
    fn default() -> Self {
        ClusterTiming {
            lease_ttl: Span::new(DEFAULT_LEASE_TTL).expect("in range"),
            lost_after: Span::new(DEFAULT_LOST_AFTER).expect("in range"),
        }
    }
}

impl ClusterTiming {
    /// A timing with this lease and wait.
    ///
    /// # Errors
    /// [`TimingError::LeaseTooShort`] under [`MIN_LEASE_TTL`];
    /// [`TimingError::LostTooSoon`] if `lost_after` is shorter than the lease.
    pub fn new(lease_ttl: Span, lost_after: Span) -> Result<Self, TimingError> {
        if lease_ttl.as_duration() < MIN_LEASE_TTL {
            return Err(TimingError::LeaseTooShort(lease_ttl));
        }
        if lost_after.as_duration() < lease_ttl.as_duration() {
            return Err(TimingError::LostTooSoon {
                lease_ttl,
                lost_after,
            });
        }
        Ok(ClusterTiming {
            lease_ttl,
            lost_after,
        })
    }

    /// How long a lease lasts without renewal.
    pub const fn lease_ttl(&self) -> Duration {
        self.lease_ttl.as_duration()
    }

    /// How long a lost node's records wait for it before they are `lost`.
    pub const fn lost_after(&self) -> Duration {
        self.lost_after.as_duration()
    }

    /// How often a daemon renews its lease: three times a lease.
    pub fn renew_every(&self) -> Duration {
        self.lease_ttl() / 3
    }

    /// How often the other nodes look at the leases, so that an expiry is
    /// noticed within [`NOTICE_WITHIN`] of it.
    pub fn check_every(&self) -> Duration {
        NOTICE_WITHIN.min(self.renew_every())
    }

    /// Whether a daemon may still write at `now`, its own clock, when the
    /// last renewal that succeeded was sent at `sent`: not once a whole
    /// lease has passed, since by then another daemon may have taken the
    /// node with a newer epoch. Together with [`claim`], no two epochs of
    /// one node write at once (given clocks that run at the same rate).
    pub fn may_write(&self, sent: Timestamp, now: Timestamp) -> bool {
        now.saturating_since(sent) < self.lease_ttl()
    }

    /// Whether a lost node's records are given up at `now`: they become
    /// `lost` once its lease has been expired for `lost_after`.
    pub fn gives_up(&self, lease: &Lease, now: Timestamp) -> bool {
        !lease.left
            && now.saturating_since(lease.renewed_at) > lease.ttl.as_duration() + self.lost_after()
    }

    /// Whether a daemon must fence itself at `now`, its own clock, when
    /// the last renewal that succeeded was sent at `sent`: once it may no
    /// longer write, it stops its failover records (TERM, then KILL after
    /// their grace) and starts none until it holds its node again.
    pub fn must_fence(&self, sent: Timestamp, now: Timestamp) -> bool {
        !self.may_write(sent, now)
    }

    /// How long past its node's last renewal a failover record whose stop
    /// grace is `grace` is run elsewhere: a whole lease, the grace and
    /// [`FAILOVER_MARGIN`].
    ///
    /// Why this is safe: the node stopped renewing at `renewed_at` on the
    /// store's clock; it sent that renewal at `sent` <= `renewed_at`, and
    /// fences itself a lease later on its own clock (`must_fence`), so its
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
/// lapsed lease (node and epoch) is claimed in the store by exactly one
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
    /// The name of the sweep, as its claim in the store spells it.
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

/// Whether `record` is run elsewhere when its node is lost: it asked for
/// failover, has restarts left, and was not being stopped on request (a
/// stop asked for is honoured: it is given up as any record; a stop by
/// its node's own fence is not a request). The sweeps never give
/// it up; the failover ends it.
pub fn fails_over(record: &ProcessRecord) -> bool {
    let spec = record.spec();
    // A stop someone asked for is honoured; the node's own fence is the
    // very start of a failover, whether or not the store heard of it.
    let asked_to_stop = |l: &crate::Lifecycle| matches!(l, crate::Lifecycle::Stopping { cause, .. } if *cause != crate::StopCause::Fenced);
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

/// A claim that takes a node over from a holder whose daemon is known to
/// be gone: it names the holder's epoch and the machine's boot it ran on
/// (see [`see_holder`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakeOver<'a> {
    /// The holder's epoch, as the refusal named it.
    pub epoch: u64,
    /// The claimant's boot id: the holder's must be the same.
    pub boot: &'a str,
}

/// Decides a daemon's claim of `node` at `now`, when the store holds `held`
/// (its lease, if any) and `epoch` (the node's newest epoch): the epoch the
/// claimant writes with from now on, or who holds the node. A claim that
/// takes over (`over`) wins against a live lease only while that lease is
/// still the epoch it names and was taken on the same boot of the same
/// machine: the claimant looked, and that daemon is gone.
///
/// # Errors
/// [`ClaimRefused`] while the holder's lease is alive or suspect.
pub fn claim(
    node: &NodeId,
    held: Option<&Lease>,
    epoch: u64,
    now: Timestamp,
    over: Option<TakeOver<'_>>,
) -> Result<u64, ClaimRefused> {
    match held {
        Some(lease)
            if matches!(lease.state_at(now), NodeState::Alive | NodeState::Suspect)
                && !over.is_some_and(|o| {
                    o.epoch == lease.epoch && !o.boot.is_empty() && o.boot == lease.boot
                }) =>
        {
            Err(ClaimRefused {
                node: node.clone(),
                host: lease.host.clone(),
                pid: lease.pid,
                since: lease.since,
                renewed_ms_ago: u64::try_from(now.saturating_since(lease.renewed_at).as_millis())
                    .unwrap_or(u64::MAX),
                epoch: lease.epoch,
                boot: lease.boot.clone(),
                ttl: lease.ttl,
                holder: Holder::Unchecked,
            })
        }
        _ => Ok(epoch.saturating_add(1)),
    }
}

/// What a daemon on the boot `boot_here` of its machine makes of the
/// holder `refused` names, when a bpm program runs as the holder's pid
/// here (`pid_runs_bpm`) or not: a holder that took the node on this same
/// boot (the same machine, not restarted since) can be seen, and is
/// [`Holder::Gone`] (the claimant takes the node over at once) or
/// [`Holder::RunsHere`]; from another machine or boot nothing can be
/// seen ([`Holder::Elsewhere`]), and the lease must lapse.
pub fn see_holder(refused: &ClaimRefused, boot_here: &str, pid_runs_bpm: bool) -> Holder {
    match (
        !boot_here.is_empty() && refused.boot == boot_here,
        pid_runs_bpm,
    ) {
        (false, _) => Holder::Elsewhere,
        (true, true) => Holder::RunsHere,
        (true, false) => Holder::Gone,
    }
}

/// Whether the store takes a write that `writer` (an epoch of a node) makes
/// to that node's records, when the node's newest epoch is `current`: a
/// fenced daemon's writes are refused.
pub const fn accepts_write(current: u64, writer: u64) -> bool {
    writer >= current
}

/// A node's lease, as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The node.
    pub node: NodeId,
    /// The epoch its holder writes with.
    pub epoch: u64,
    /// The holder's machine.
    pub host: String,
    /// The holder's daemon.
    pub pid: u32,
    /// The holder's bpm version.
    pub version: String,
    /// When the holder took the node.
    pub since: Timestamp,
    /// When the lease was last renewed.
    pub renewed_at: Timestamp,
    /// How long it lasts from a renewal: its holder's `lease_ttl`, by which
    /// every node judges it.
    pub ttl: Span,
    /// How many processes its node runs at once (its `max_running`).
    #[serde(default)]
    pub slots: u32,
    /// Whether the holder left the cluster on purpose.
    pub left: bool,
    /// The labels its node carries (`[node] labels`), which records placed
    /// on any node may require.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: crate::cluster::placement::NodeLabels,
    /// The kernel's boot id of the holder's machine when it took the node
    /// (empty if unknown): a claimant on the same boot can see whether the
    /// holder's daemon still runs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub boot: String,
}

impl Lease {
    /// What state it says its node is in at `now` (the store's clock):
    /// suspect once two of its holder's renewals are late, lost once it
    /// expired.
    pub fn state_at(&self, now: Timestamp) -> NodeState {
        if self.left {
            return NodeState::Left;
        }
        let age = now.saturating_since(self.renewed_at);
        let ttl = self.ttl.as_duration();
        if age > ttl {
            NodeState::Lost
        } else if age > 2 * (ttl / 3) {
            NodeState::Suspect
        } else {
            NodeState::Alive
        }
    }
}

/// A node's state, from its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Renewed on time.
    Alive,
    /// Two renewals late, its lease not yet expired.
    Suspect,
    /// Its lease expired.
    Lost,
    /// Its daemon stopped and left the cluster.
    Left,
}

impl NodeState {
    /// The state's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            NodeState::Alive => "alive",
            NodeState::Suspect => "suspect",
            NodeState::Lost => "lost",
            NodeState::Left => "left",
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the refused claimant could see of the holder's daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Holder {
    /// Not looked at.
    #[default]
    Unchecked,
    /// It took the node on another machine (or another boot of this one):
    /// whether it still runs cannot be seen from here.
    Elsewhere,
    /// It runs on this machine, as a daemon.
    RunsHere,
    /// It took the node on this machine's boot and no daemon runs as its
    /// pid any more: the node is taken over at once.
    Gone,
}

/// A claim of a node name another daemon holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct ClaimRefused {
    /// The node.
    pub node: NodeId,
    /// The holder's machine.
    pub host: String,
    /// The holder's daemon.
    pub pid: u32,
    /// When the holder took the node.
    pub since: Timestamp,
    /// How long ago the holder last renewed.
    pub renewed_ms_ago: u64,
    /// The holder's epoch.
    #[serde(default)]
    pub epoch: u64,
    /// The holder's boot id (see [`Lease::boot`]).
    #[serde(default)]
    pub boot: String,
    /// The holder's lease.
    #[serde(default)]
    pub ttl: Span,
    /// What the claimant saw of the holder.
    #[serde(default)]
    pub holder: Holder,
}

impl fmt::Display for ClaimRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ClaimRefused {
            node,
            host,
            pid,
            since,
            renewed_ms_ago,
            ..
        } = self;
        let other_name = "give this one another node name (config `node`, or BPM_NODE)";
        match self.holder {
            Holder::Unchecked => write!(
                f,
                "node {node} is held by a daemon on {host} (pid {pid}) since {since}, its lease renewed {renewed_ms_ago} ms ago: stop that daemon, or {other_name}"
            ),
            Holder::RunsHere => write!(
                f,
                "node {node} is held by a daemon that still runs on this machine ({host}, pid {pid}) since {since}: stop that daemon, or {other_name}"
            ),
            Holder::Gone => write!(
                f,
                "node {node} was held by a daemon of this machine that is gone ({host}, pid {pid}); it changed hands before it could be taken over: try again"
            ),
            Holder::Elsewhere => {
                let left = self
                    .ttl
                    .as_duration()
                    .saturating_sub(Duration::from_millis(*renewed_ms_ago));
                write!(
                    f,
                    "node {node} is held by a daemon on another machine or an earlier boot ({host}, pid {pid}) since {since}, its lease renewed {renewed_ms_ago} ms ago: whether it still runs cannot be seen from here, so the node is free once its lease lapses (in {} ms, unless it renews); stop that daemon, or {other_name}",
                    left.as_millis()
                )
            }
        }
    }
}

/// The node that must carry out a call about `record` made on node `here`:
/// its owner, when that is another node (a node changes only its own
/// records; the others' calls are sent to it), or `None`.
pub fn owner_elsewhere<'a>(record: &'a ProcessRecord, here: &NodeId) -> Option<&'a NodeId> {
    (record.node() != here).then(|| record.node())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lease(renewed_at: u64, ttl_ms: u64) -> Lease {
        Lease {
            node: NodeId::new("b").expect("node"),
            epoch: 3,
            host: "machine-b".into(),
            pid: 42,
            version: "0.1.0".into(),
            since: Timestamp::from_millis(1_000),
            renewed_at: Timestamp::from_millis(renewed_at),
            ttl: Span::from_millis(ttl_ms),
            slots: 4,
            left: false,
            labels: BTreeMap::default(),
            boot: "boot-1".into(),
        }
    }

    fn timing(ttl_ms: u64) -> ClusterTiming {
        ClusterTiming::new(Span::from_millis(ttl_ms), Span::from_millis(ttl_ms * 3))
            .expect("timing")
    }

    #[test]
    fn a_lease_is_alive_then_suspect_then_lost_and_left_is_left() {
        let l = lease(10_000, 9_000);
        let at = |ms| l.state_at(Timestamp::from_millis(ms));
        assert_eq!(at(10_000), NodeState::Alive);
        assert_eq!(at(16_000), NodeState::Alive);
        assert_eq!(at(16_001), NodeState::Suspect);
        assert_eq!(at(19_000), NodeState::Suspect);
        assert_eq!(at(19_001), NodeState::Lost);
        let gone = Lease { left: true, ..l };
        assert_eq!(
            gone.state_at(Timestamp::from_millis(10_000)),
            NodeState::Left
        );
        assert_eq!(NodeState::Suspect.to_string(), "suspect");
    }

    #[test]
    fn the_timing_is_refused_by_name_when_too_short() {
        let e = ClusterTiming::new(Span::from_millis(1_500), Span::from_secs(60)).unwrap_err();
        assert!(e.to_string().contains("lease_ttl 1500ms"), "{e}");
        let e = ClusterTiming::new(Span::from_secs(10), Span::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains("lost_after 5s"), "{e}");
        let d = ClusterTiming::default();
        assert_eq!(d.lease_ttl(), DEFAULT_LEASE_TTL);
        assert_eq!(d.lost_after(), DEFAULT_LOST_AFTER);
        assert_eq!(d.check_every(), NOTICE_WITHIN);
        assert_eq!(timing(2_000).check_every(), Duration::from_secs(2) / 3);
    }

    #[test]
    fn a_claim_of_a_held_node_names_the_holder() {
        let node = NodeId::new("b").expect("node");
        let held = lease(10_000, 9_000);
        let e = claim(&node, Some(&held), 3, Timestamp::from_millis(12_000), None).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("machine-b") && text.contains("pid 42") && text.contains("2000 ms ago"),
            "{text}"
        );
        assert_eq!(claim(&node, None, 0, Timestamp::EPOCH, None), Ok(1));
        assert_eq!(
            claim(&node, Some(&held), 3, Timestamp::from_millis(30_000), None),
            Ok(4)
        );
    }

    #[test]
    fn a_live_lease_is_taken_over_only_from_a_gone_daemon_of_the_same_boot_and_epoch() {
        let node = NodeId::new("b").expect("node");
        let held = lease(10_000, 9_000);
        let now = Timestamp::from_millis(12_000);
        let refused = claim(&node, Some(&held), 3, now, None).unwrap_err();
        assert_eq!((refused.epoch, refused.boot.as_str()), (3, "boot-1"));
        assert_eq!(see_holder(&refused, "boot-1", false), Holder::Gone);
        assert_eq!(
            see_holder(&refused, "boot-1", true),
            Holder::RunsHere,
            "its daemon runs"
        );
        assert_eq!(
            see_holder(&refused, "boot-2", false),
            Holder::Elsewhere,
            "another boot"
        );
        assert_eq!(
            see_holder(&refused, "", false),
            Holder::Elsewhere,
            "a boot unknown"
        );
        let over = |epoch, boot| Some(TakeOver { epoch, boot });
        assert_eq!(claim(&node, Some(&held), 3, now, over(3, "boot-1")), Ok(4));
        assert!(
            claim(&node, Some(&held), 3, now, over(2, "boot-1")).is_err(),
            "the lease changed hands since it was looked at"
        );
        assert!(claim(&node, Some(&held), 3, now, over(3, "boot-2")).is_err());
        let unknown = Lease {
            boot: String::new(),
            ..held
        };
        assert!(claim(&node, Some(&unknown), 3, now, over(3, "")).is_err());
        for (holder, says) in [
            (Holder::Elsewhere, "cannot be seen from here"),
            (Holder::RunsHere, "still runs on this machine"),
        ] {
            let text = ClaimRefused {
                holder,
                ..refused.clone()
            }
            .to_string();
            assert!(text.contains(says) && text.contains("pid 42"), "{text}");
        }
    }

    #[test]
    fn records_are_given_up_a_wait_after_the_expiry() {
        let t = timing(9_000);
        let l = lease(10_000, 9_000);
        assert!(!t.gives_up(&l, Timestamp::from_millis(10_000 + 9_000 + 27_000)));
        assert!(t.gives_up(&l, Timestamp::from_millis(10_000 + 9_000 + 27_001)));
        let gone = Lease { left: true, ..l };
        assert!(!t.gives_up(&gone, Timestamp::from_millis(u64::MAX / 2)));
        assert!(accepts_write(3, 3) && accepts_write(3, 4) && !accepts_write(4, 3));
    }

    proptest! {
        /// A node's state only moves forward with time: alive, suspect, lost.
        #[test]
        fn states_move_forward(ttl in 2_000u64..60_000, renewed in 0u64..1_000_000, a in 0u64..200_000, b in 0u64..200_000) {
            let l = lease(renewed, ttl);
            let (early, late) = (renewed + a.min(b), renewed + a.max(b));
            let rank = |s: NodeState| s as u8;
            prop_assert!(rank(l.state_at(Timestamp::from_millis(early))) <= rank(l.state_at(Timestamp::from_millis(late))));
        }

        /// While a daemon may write, no one may claim its node: the claim
        /// needs its lease lost, which takes longer than the writing lasts.
        /// The renewal was sent at or before the store stamped it.
        #[test]
        fn no_two_epochs_write_at_once(ttl in 2_000u64..60_000, sent in 0u64..1_000_000, stamped_after in 0u64..5_000, now_after in 0u64..200_000) {
            let t = timing(ttl);
            let l = lease(sent + stamped_after, ttl);
            let now = Timestamp::from_millis(sent + now_after);
            if t.may_write(Timestamp::from_millis(sent), now) {
                prop_assert!(claim(&l.node, Some(&l), l.epoch, now, None).is_err());
            }
        }

        /// A claim that is granted fences every older epoch.
        #[test]
        fn a_granted_claim_fences_the_old_epoch(epoch in 0u64..1_000, ttl in 2_000u64..60_000, renewed in 0u64..100_000, now in 0u64..400_000) {
            let l = Lease { epoch, ..lease(renewed, ttl) };
            if let Ok(new) = claim(&l.node, Some(&l), epoch, Timestamp::from_millis(now), None) {
                prop_assert!(new > epoch && accepts_write(new, new) && !accepts_write(new, epoch));
            }
        }
    }
}
