//! The limits the core enforces.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{GroupName, Span};

/// Limits the core enforces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// How many records may hold a slot (starting, running, paused, stopping) at once. Default 10.
    pub max_running: usize,
    /// Slots per named group.
    pub group_limits: BTreeMap<GroupName, usize>,
    /// Slots for a named group with no entry in `group_limits`; `None` for no group limit.
    pub default_group_limit: Option<usize>,
    /// How deep a hierarchy may be (a root is at depth 0). Default 10.
    pub max_depth: usize,
    /// How many unfinished records one hierarchy level below the roots may hold. Default 20.
    pub max_per_level: usize,
    /// How long finished records are kept; `None` keeps them until removed.
    pub retention: Option<Span>,
    /// How many queued records, at most, the spawner holds to start the
    /// moment a process ends ([`Supervisor::hand_over`](crate::Supervisor::hand_over)). Default 8.
    pub hand_over_ahead: usize,
    /// Slots per named group across every node that shares the store
    /// (`[limits.cluster_groups]`): a record of such a group starts only
    /// once the store grants it a slot ([`Effect::TakeClusterSlot`](crate::Effect::TakeClusterSlot)).
    /// Every node should name the same limits. Per-node limits apply too.
    pub cluster_groups: BTreeMap<GroupName, usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_running: 10,
            group_limits: BTreeMap::new(),
            default_group_limit: None,
            max_depth: 10,
            max_per_level: 20,
            retention: None,
            hand_over_ahead: 8,
            cluster_groups: BTreeMap::new(),
        }
    }
}

impl Limits {
    /// How many of `group` this node runs at once: its own limit, and never
    /// more than the group's cluster-wide limit (the cluster's count is never
    /// below this node's, so a node of its own keeps it alone).
    pub(super) fn group_limit(&self, group: Option<&GroupName>) -> Option<usize> {
        let g = group?;
        let here = self
            .group_limits
            .get(g)
            .copied()
            .or(self.default_group_limit);
        match (here, self.cluster_groups.get(g).copied()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
