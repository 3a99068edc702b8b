//! Cluster-wide slots: how many records of a group may run at once across
//! every node that shares a store (`limits.cluster_groups`), and when the
//! store grants one to a record that asks before it starts.
//!
//! A record holds a slot while it is active (starting, running, paused or
//! stopping) unless it is a tracked operation, whose process bpm does not
//! run. A record that is still pending holds one only through a grant: the
//! store's yes to its ask, which stands while the record is pending at the
//! version it had when granted (and, in a cluster, while the daemon that
//! asked is still at the epoch it asked in: its answer died with it). Once
//! the record is written again (started, stopped, queued again after a run)
//! the grant lapses: started, it holds a slot by its state; queued again,
//! it asks anew.
//!
//! This is the one statement of the rule. The in-memory twin of the claim
//! queue and the simulations call it; the Redis claim script applies the
//! same rule atomically, in Lua, inside the store.

use std::collections::HashMap;

use crate::{GroupName, ProcessId, ProcessRecord, StateName};

/// Whether `record` holds one of `group`'s slots by its state.
#[must_use]
pub fn holds_slot(record: &ProcessRecord, group: &GroupName) -> bool {
    record.state().is_active() && record.takes_a_slot() && record.group() == Some(group)
}

/// Whether a grant made at `granted_at` (the record's version then; `None`
/// if the store did not hold the record) still stands, given the record the
/// store holds now: it is still pending, at that version.
#[must_use]
pub fn grant_stands(now: Option<&ProcessRecord>, granted_at: Option<u64>) -> bool {
    match (now, granted_at) {
        (Some(r), Some(at)) => r.state() == StateName::Pending && r.version() == at,
        _ => false,
    }
}

/// One grant: the record's version when granted, and who asked (`K`: the
/// asking daemon and its epoch where that matters, `()` where it does not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant<K> {
    /// The record's version when granted; `None` if the store did not hold
    /// it (such a grant holds no slot).
    pub at: Option<u64>,
    /// Who asked.
    pub by: K,
}

/// The grants of one group's slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants<K> {
    held: HashMap<ProcessId, Grant<K>>,
}

impl<K> Default for Grants<K> {
    fn default() -> Self {
        Grants {
            held: HashMap::new(),
        }
    }
}

impl<K> Grants<K> {
    /// The grants held, by record.
    pub fn iter(&self) -> impl Iterator<Item = (&ProcessId, &Grant<K>)> {
        self.held.iter()
    }

    /// How many grants are held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether none is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Answers record `id`'s ask for one of the group's `limit` slots.
    ///
    /// First the grants that no longer stand are dropped (`stands` tells of
    /// each, by [`grant_stands`] and whatever the caller knows of who
    /// asked). Then `id` is granted a slot if its own grant still stands,
    /// or if the records holding a slot by their state (`holding`) and the
    /// grants standing are fewer than `limit`; a new grant is noted at
    /// `version`, the record's version now (`None` if the store does not
    /// hold it).
    pub fn ask(
        &mut self,
        id: ProcessId,
        limit: usize,
        holding: usize,
        version: Option<u64>,
        by: K,
        mut stands: impl FnMut(&ProcessId, &Grant<K>) -> bool,
    ) -> bool {
        self.held.retain(|held, grant| stands(held, grant));
        if self.held.contains_key(&id) {
            return true;
        }
        let granted = holding + self.held.len() < limit;
        if granted {
            self.held.insert(id, Grant { at: version, by });
        }
        granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NodeId, ProcessSpec, Timestamp, Transition};

    fn record(n: u128) -> ProcessRecord {
        let mut spec = ProcessSpec::argv(["sleep", "1"]);
        spec.group = Some(GroupName::new("agents").expect("group"));
        ProcessRecord::new(
            ProcessId::from_uuid(uuid::Uuid::from_u128(n)),
            NodeId::local(),
            spec,
            Timestamp::from_millis(1),
        )
    }

    #[test]
    fn a_grant_stands_while_its_record_waits_unchanged() {
        let mut r = record(1);
        assert!(grant_stands(Some(&r), Some(r.version())));
        assert!(!grant_stands(Some(&r), Some(r.version() + 1)));
        assert!(!grant_stands(Some(&r), None));
        assert!(!grant_stands(None, Some(1)));
        r.apply(Transition::Start, Timestamp::from_millis(2))
            .expect("start");
        assert!(!grant_stands(Some(&r), Some(r.version())), "started");
        let group = GroupName::new("agents").expect("group");
        assert!(holds_slot(&r, &group), "a started record holds one itself");
        assert!(!holds_slot(&r, &GroupName::new("other").expect("group")));
    }

    #[test]
    fn grants_and_holders_together_stay_within_the_limit() {
        let mut grants: Grants<()> = Grants::default();
        let (a, b, c) = (record(1), record(2), record(3));
        let all = |_: &ProcessId, _: &Grant<()>| true;
        assert!(grants.ask(a.id(), 2, 0, Some(1), (), all));
        assert!(
            grants.ask(a.id(), 2, 1, Some(1), (), all),
            "its own grant stands"
        );
        assert!(
            !grants.ask(b.id(), 2, 1, Some(1), (), all),
            "one holds, one granted"
        );
        assert!(grants.ask(c.id(), 2, 0, Some(1), (), all));
        assert_eq!(grants.len(), 2);
        // a's grant lapses (it started, and holds a slot by its state).
        let not_a = |id: &ProcessId, _: &Grant<()>| *id != a.id();
        assert!(!grants.ask(b.id(), 2, 1, Some(1), (), not_a));
        assert_eq!(grants.len(), 1);
        assert!(grants.ask(b.id(), 3, 1, Some(1), (), not_a));
        assert!(!grants.is_empty());
        assert_eq!(grants.iter().count(), 2);
    }
}
