//! A node's lease: its timing, who may take the node's name, the epoch
//! that fences an earlier holder's writes, and how a holder is seen.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{LabelKey, LabelValue, NodeId, Span, Timestamp};

/// The labels a node carries (in its lease), or a spec requires of its node.
pub type NodeLabels = BTreeMap<LabelKey, LabelValue>;

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
/// node standing down may take to carry out its KILL, and the drift between its
/// clock and the store's over one lease ([`ClusterTiming::failover_due`]).
pub const FAILOVER_MARGIN: Duration = Duration::from_secs(2);
/// How long after its daemon would stand down the keeper stands down by itself, when
/// no renewal was passed on to it (the daemon died or stalled): late enough
/// that a live daemon stops its processes first (no second TERM), early
/// enough that the keeper's KILL still comes before the failover (it is
/// well inside [`FAILOVER_MARGIN`]).
pub const KEEPER_STAND_DOWN_LAG: Duration = Duration::from_millis(500);

/// How long a keeper told now is to hold the processes of a lease that
/// lapses in `until_lapse`: until the lapse, and [`KEEPER_STAND_DOWN_LAG`] more.
pub fn keeper_hold(until_lapse: Duration) -> Duration {
    until_lapse + KEEPER_STAND_DOWN_LAG
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
#[non_exhaustive]
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
    /// node with a newer epoch. Together with [`take_name`], no two epochs of
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

    /// Whether a daemon must stand down at `now`, its own clock, when
    /// the last renewal that succeeded was sent at `sent`: once it may no
    /// longer write, it stops its failover records (TERM, then KILL after
    /// their grace) and starts none until it holds its node again.
    pub fn must_stand_down(&self, sent: Timestamp, now: Timestamp) -> bool {
        !self.may_write(sent, now)
    }
}

/// A take of a node name that takes it over from a holder whose daemon is known to
/// be gone: it names the holder's epoch and the machine's boot it ran on
/// (see [`see_holder`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakeOver<'a> {
    /// The holder's epoch, as the refusal named it.
    pub epoch: u64,
    /// The candidate's boot id: the holder's must be the same.
    pub boot: &'a str,
}

/// Decides whether a daemon takes the name of `node` at `now`, when the store holds `held`
/// (its lease, if any) and `epoch` (the node's newest epoch): the epoch the
/// candidate writes with from now on, or who holds the node. A take that
/// takes over (`over`) wins against a live lease only while that lease is
/// still the epoch it names and was taken on the same boot of the same
/// machine: the candidate looked, and that daemon is gone.
///
/// # Errors
/// [`NameHeld`] while the holder's lease is alive or suspect.
pub fn take_name(
    node: &NodeId,
    held: Option<&Lease>,
    epoch: u64,
    now: Timestamp,
    over: Option<TakeOver<'_>>,
) -> Result<u64, NameHeld> {
    match held {
        Some(lease)
            if matches!(lease.state_at(now), NodeState::Alive | NodeState::Suspect)
                && !over.is_some_and(|o| {
                    o.epoch == lease.epoch && !o.boot.is_empty() && o.boot == lease.boot
                }) =>
        {
            Err(NameHeld {
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
/// [`Holder::Gone`] (the candidate takes the node over at once) or
/// [`Holder::RunsHere`]; from another machine or boot nothing can be
/// seen ([`Holder::Elsewhere`]), and the lease must lapse.
pub fn see_holder(refused: &NameHeld, boot_here: &str, pid_runs_bpm: bool) -> Holder {
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
    pub labels: NodeLabels,
    /// The kernel's boot id of the holder's machine when it took the node
    /// (empty if unknown): a candidate on the same boot can see whether the
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

/// What the refused candidate could see of the holder's daemon.
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

/// A take of a node name another daemon holds, refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct NameHeld {
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
    /// What the candidate saw of the holder.
    #[serde(default)]
    pub holder: Holder,
}

impl fmt::Display for NameHeld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let NameHeld {
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
