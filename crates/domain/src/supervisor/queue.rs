//! The ready queue: pending records whose dependencies and delays are satisfied,
//! ordered by priority then submission, partitioned by concurrency group.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use crate::{GroupName, ProcessId};

/// Order within a group: higher priority first, then first submitted.
type QueueKey = (Reverse<i32>, u64, ProcessId);

/// Ready records per group. Picking the next one costs O(groups), independent
/// of how many records wait: each group's best is the first of its ordered set.
#[derive(Debug, Default)]
pub(crate) struct ReadyQueue {
    groups: HashMap<Option<GroupName>, BTreeSet<QueueKey>>,
    keys: HashMap<ProcessId, (Option<GroupName>, QueueKey)>,
}

impl ReadyQueue {
    pub(crate) fn push(
        &mut self,
        id: ProcessId,
        group: Option<GroupName>,
        priority: i32,
        seq: u64,
    ) {
        let key = (Reverse(priority), seq, id);
        self.groups.entry(group.clone()).or_default().insert(key);
        self.keys.insert(id, (group, key));
    }

    pub(crate) fn remove(&mut self, id: ProcessId) -> bool {
        let Some((group, key)) = self.keys.remove(&id) else {
            return false;
        };
        if let Some(set) = self.groups.get_mut(&group) {
            set.remove(&key);
            if set.is_empty() {
                self.groups.remove(&group);
            }
        }
        true
    }

    pub(crate) fn contains(&self, id: ProcessId) -> bool {
        self.keys.contains_key(&id)
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// How many wait in `group`.
    pub(crate) fn len_of(&self, group: Option<&GroupName>) -> usize {
        self.groups.get(&group.cloned()).map_or(0, BTreeSet::len)
    }

    /// The named groups with records waiting.
    pub(crate) fn groups(&self) -> impl Iterator<Item = &GroupName> {
        self.groups.keys().flatten()
    }

    /// The first `n` records in the order `best` would pick them if every
    /// group had room.
    pub(crate) fn ordered(&self, n: usize) -> Vec<ProcessId> {
        let mut keys: Vec<&QueueKey> = self
            .groups
            .values()
            .flat_map(|set| set.iter().take(n))
            .collect();
        keys.sort_unstable();
        keys.into_iter().take(n).map(|(_, _, id)| *id).collect()
    }

    /// The best record among groups that `has_room` admits.
    pub(crate) fn best(
        &self,
        mut has_room: impl FnMut(Option<&GroupName>) -> bool,
    ) -> Option<ProcessId> {
        self.groups
            .iter()
            .filter(|(g, _)| has_room(g.as_ref()))
            .filter_map(|(_, set)| set.first())
            .min()
            .map(|(_, _, id)| *id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> ProcessId {
        ProcessId::from_uuid(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn priority_then_fifo_across_groups() {
        let mut q = ReadyQueue::default();
        let g = |s: &str| Some(GroupName::new(s).unwrap());
        q.push(id(1), g("a"), 0, 1);
        q.push(id(2), g("b"), 5, 2);
        q.push(id(3), None, 5, 3);
        q.push(id(4), g("a"), 5, 0);
        assert_eq!(q.best(|_| true), Some(id(4)));
        assert_eq!(q.ordered(3), vec![id(4), id(2), id(3)]);
        assert_eq!(q.ordered(9), vec![id(4), id(2), id(3), id(1)]);
        let a = g("a");
        assert_eq!(q.best(|x| x != a.as_ref()), Some(id(2)));
        assert!(q.remove(id(4)));
        assert!(!q.remove(id(4)));
        assert_eq!(q.best(|_| true), Some(id(2)));
        assert_eq!(q.best(|_| false), None);
        assert_eq!(q.len(), 3);
        assert!(q.contains(id(1)));
    }
}
