//! A node that lost its lease stands down: a failover record must
//! never run on two nodes at once, and another node may run it a lease, its
//! grace and a margin after this node's last renewal
//! ([`crate::cluster::ClusterTiming::failover_after`]). So once this node
//! can no longer be sure it holds its lease, it stops its failover records
//! (TERM, then KILL after their grace), and starts none until it holds the
//! lease again. A stopped one is queued again here (its exit is an
//! attempt); if the cluster ran it elsewhere meanwhile, the store holds it
//! `lost` and the node ends it when it rejoins (`reconcile.rs`). Records
//! without failover run on: nothing else runs them.

use super::Supervisor;
use crate::{ProcessId, StateName, StopCause, Timestamp};

impl Supervisor {
    /// Whether this node stands down: it does not hold its lease.
    pub fn stands_down(&self) -> bool {
        self.standing_down
    }

    /// Whether `id` must wait to start because the node stands down: it is
    /// held back until the lease is held again.
    pub(super) fn holds_back(&mut self, id: ProcessId) -> bool {
        // Every start asks: the record is looked up only while standing down.
        if !self.standing_down {
            return false;
        }
        let fails_over = self
            .entries
            .get(&id)
            .is_some_and(|e| e.record.spec().failover);
        if fails_over {
            self.ready.remove(id);
            self.held_back.insert(id);
            return true;
        }
        false
    }

    pub(super) fn lease(&mut self, held: bool, now: Timestamp) {
        if held != self.standing_down {
            return;
        }
        self.standing_down = !held;
        if held {
            for id in std::mem::take(&mut self.held_back) {
                if self.entries.contains_key(&id) {
                    self.place(id, now);
                }
            }
            return;
        }
        let mut stop: Vec<ProcessId> = self
            .entries
            .values()
            .filter(|e| e.record.spec().failover && !e.record.is_terminal())
            .map(|e| e.record.id())
            .collect();
        stop.sort_unstable();
        for id in stop {
            let state = self.entries[&id].record.state();
            if state == StateName::Pending {
                if self.ready.contains(id) {
                    self.holds_back(id);
                }
                continue;
            }
            if state != StateName::Stopping {
                let _ = self.stop(id, StopCause::StoodDown, false, None, now);
            }
        }
    }
}
