//! Handing the next records to the spawner, which starts one on each exit
//! of a process it started, and taking its reports of those starts.

use std::collections::HashMap;

use super::Supervisor;
use crate::{GroupName, ProcessId, Signal, StateName, Timestamp, Transition};

impl Supervisor {
    /// Hands the spawner the records to start next, best first, up to
    /// [`Limits::hand_over_ahead`](crate::Limits::hand_over_ahead) outstanding, and returns the ones added: the spawner starts them by
    /// itself, in this order, one on each exit of a process it started with
    /// `hands_over` (whose exit frees its slot), and reports
    /// [`Input::HandedOver`](crate::Input::HandedOver). That takes the daemon out of the path from one
    /// process's end to the next one's start.
    ///
    /// Records are handed over only while every slot is taken; the list
    /// stops at the first record that is not a root (a parent's stop may
    /// cancel its children at any time) or whose group would have no room.
    /// While any are outstanding, the core itself starts only the first of
    /// them when a slot frees, so the spawner and the core agree on the
    /// order; a record that becomes ready meanwhile (even with a higher
    /// priority) waits until they are taken.
    ///
    /// The driver must take outstanding records back ([`withdraw`](Self::withdraw))
    /// before it feeds an input that [`Input::may_cancel`](crate::Input::may_cancel) names, and must
    /// feed the spawner's reports of those it started first.
    pub fn hand_over(&mut self) -> Vec<ProcessId> {
        let max = self.limits.hand_over_ahead;
        let mut added = Vec::new();
        if self.active_total != self.limits.max_running || self.handed.len() >= max {
            return added;
        }
        let mut taken: HashMap<&GroupName, usize> = HashMap::new();
        for id in &self.handed {
            if let Some(g) = self.entries.get(id).and_then(|e| e.record.group()) {
                *taken.entry(g).or_default() += 1;
            }
        }
        let outstanding = self.handed.len();
        let candidates = self.ready.ordered(max + outstanding);
        let fresh = candidates
            .into_iter()
            .filter(|id| !self.handed.contains(id))
            .take(max - outstanding);
        for id in fresh {
            let record = &self.entries[&id].record;
            // A record of a group with a cluster-wide limit must ask the
            // store for a slot first, and a failover record must not start
            // while the node stands down: the spawner cannot know either.
            let capped = record
                .group()
                .is_some_and(|g| self.limits.cluster_groups.contains_key(g));
            let fails_over = record.spec().failover;
            if record.parent().is_some() || record.is_tracked() || capped || fails_over {
                break;
            }
            if let Some(g) = record.group()
                && let Some(limit) = self.limits.group_limit(Some(g))
            {
                let n = taken.entry(g).or_default();
                if self.active_by_group.get(g).copied().unwrap_or(0) + *n >= limit {
                    break;
                }
                *n += 1;
            }
            added.push(id);
        }
        self.handed.extend(added.iter().copied());
        added
    }

    /// The records handed over and not yet reported started, in order.
    pub fn handed_over(&self) -> impl Iterator<Item = ProcessId> + '_ {
        self.handed.iter().copied()
    }

    /// The spawner gave back these handed-over records (it will not start them).
    pub fn withdraw(&mut self, ids: &[ProcessId]) {
        self.handed.retain(|id| !ids.contains(id));
    }

    /// `id` was started by the spawner in the slot of a process that ended.
    pub(super) fn take_over(
        &mut self,
        id: ProcessId,
        started: Result<u32, String>,
        now: Timestamp,
    ) {
        let Some(entry) = self.entries.get(&id) else {
            // Unknown here: a process must not run that no record stands for.
            if let Ok(pid) = started {
                self.signal(id, pid, Signal::Kill);
            }
            return;
        };
        match (entry.record.state(), started) {
            (StateName::Pending, started) => {
                if self.transition(id, Transition::Start, now).is_err() {
                    return;
                }
                let _ = match started {
                    Ok(pid) => self.spawned(id, pid, now),
                    Err(error) => self
                        .transition(id, Transition::SpawnFailed { error }, now)
                        .map(|_| ()),
                };
            }
            // Ended before the start was heard of (the driver withdraws the
            // spawner's starts before a stop, so this is a lost race): end it.
            (state, Ok(pid)) if state.is_terminal() => self.signal(id, pid, Signal::Kill),
            // Started by the core too (the spawner answers that spawn with
            // this process): the spawn's own result counts.
            _ => {}
        }
    }
}
