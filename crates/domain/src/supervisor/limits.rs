//! The limits the core enforces.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{GroupName, ProcessRecord, Span, StateName, Timestamp};

/// The shortest `retention` that lets a caller read how a record ended: a
/// waiter learns of the end from its event, then reads the record.
pub const MIN_RETENTION: std::time::Duration = std::time::Duration::from_secs(1);

/// A limit no node can work with, by its key in `config.toml`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitsError {
    /// A slot limit of 0: what it governs would wait for ever.
    #[error(
        "{key} = 0 would leave every process it governs queued for ever, never started: it must be at least 1"
    )]
    NoSlots {
        /// The key (`limits.max_running`, `limits.group_limits.NAME`, ...).
        key: String,
    },
    /// A retention too short for anyone to read how a record ended.
    #[error(
        "limits.retention = \"{0}\" forgets a record the moment it ends, before `wait` or `run --wait` can read its exit code: it must be at least 1s (or left out, to keep records until removed)"
    )]
    RetentionTooShort(Span),
}

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
    /// Refuses limits no node can work with.
    ///
    /// # Errors
    /// The first such key, with what it would do ([`LimitsError`]).
    pub fn check(&self) -> Result<(), LimitsError> {
        let none = |key: String| Err(LimitsError::NoSlots { key });
        if self.max_running == 0 {
            return none("limits.max_running".into());
        }
        if self.default_group_limit == Some(0) {
            return none("limits.default_group_limit".into());
        }
        for (table, limits) in [
            ("group_limits", &self.group_limits),
            ("cluster_groups", &self.cluster_groups),
        ] {
            if let Some((group, _)) = limits.iter().find(|(_, n)| **n == 0) {
                return none(format!("limits.{table}.{group}"));
            }
        }
        match self.retention {
            Some(r) if r.as_duration() < MIN_RETENTION => Err(LimitsError::RetentionTooShort(r)),
            _ => Ok(()),
        }
    }

    /// Why `record`, pending on its node, has not started at `now`, given
    /// `others`, the node's other records (`None` when it is not pending,
    /// or nothing but its turn holds it: it starts shortly).
    pub fn why_pending(
        &self,
        record: &ProcessRecord,
        others: &[ProcessRecord],
        now: Timestamp,
    ) -> Option<String> {
        let crate::Lifecycle::Pending { not_before, .. } = record.lifecycle() else {
            return None;
        };
        let find = |id| others.iter().find(|o| o.id() == id);
        let unmet: Vec<String> = record
            .spec()
            .dependencies
            .iter()
            .filter(|d| find(**d).is_none_or(|o| o.state() != StateName::Completed))
            .map(|d| match find(*d) {
                Some(o) => format!("{d} ({})", o.state()),
                None => d.to_string(),
            })
            .collect();
        if !unmet.is_empty() {
            return Some(format!(
                "its dependencies to complete: {}",
                unmet.join(", ")
            ));
        }
        if let Some(at) = not_before.filter(|at| *at > now) {
            let why = if record.restarts() > 0 {
                "a restart's backoff"
            } else {
                "its delay"
            };
            return Some(format!("{why}: it starts at {at}"));
        }
        let slot_holders = |same_group: bool| {
            others
                .iter()
                .filter(|o| o.id() != record.id() && o.node() == record.node())
                .filter(|o| o.state().is_active() && !o.is_tracked())
                .filter(|o| !same_group || o.group() == record.group())
                .count()
        };
        let taken = slot_holders(false);
        if taken >= self.max_running {
            return Some(format!(
                "a slot: {taken} of limits.max_running = {} are taken on node {}",
                self.max_running,
                record.node()
            ));
        }
        let group = record.group()?;
        let limit = self.group_limit(Some(group))?;
        let in_group = slot_holders(true);
        if in_group >= limit {
            return Some(format!(
                "a slot of group {group}: {in_group} of its limit {limit} are taken on node {}",
                record.node()
            ));
        }
        self.cluster_groups.get(group).map(|n| {
            format!("a cluster-wide slot of group {group} (limits.cluster_groups.{group} = {n}), which the other nodes may hold")
        })
    }

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
