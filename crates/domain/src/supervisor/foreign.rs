//! Records of other nodes that this node's records name: a dependency, or
//! a parent. The core changes only its own records, so it keeps a view of
//! each such record (as the shared store held it, kept current by its
//! events) and acts on its own side of the link: a dependency that ends
//! releases or fails the records waiting for it, and a parent that is
//! stopped stops its children here (the cascade crosses nodes this way).
//!
//! A view is kept while it can still matter: until its record ends and no
//! record here refers to it. Views a record stops referring to (its
//! waiters ended, its children were forgotten) are dropped on the next
//! [`Input::Foreign`](crate::Input::Foreign).

use std::collections::HashSet;

use super::Supervisor;
use crate::{ProcessId, ProcessRecord, StateName, Timestamp};

/// What the core keeps of another node's record.
#[derive(Debug)]
pub(super) struct Foreign {
    pub(super) record: ProcessRecord,
    /// Its depth in its hierarchy (roots are 0), as the records known when
    /// it was first seen made it; `None` while that is being worked out.
    pub(super) depth: Option<usize>,
}

/// Whether a parent in `state` has its children stopped: it is being
/// stopped, or it ended by a stop (the rule the local cascade follows).
const fn stops_children(state: StateName) -> bool {
    matches!(
        state,
        StateName::Stopping | StateName::Cancelled | StateName::TimedOut
    )
}

impl Supervisor {
    /// The ids `records` name (dependencies and parents of the unfinished
    /// ones) that are not among them: after a restart, the records of other
    /// nodes the core must see ([`Supervisor::restore`]) to wait for, or
    /// stop with, them.
    pub fn named_elsewhere(records: &[ProcessRecord]) -> Vec<ProcessId> {
        let ids: HashSet<ProcessId> = records.iter().map(ProcessRecord::id).collect();
        let mut named: Vec<ProcessId> = records
            .iter()
            .filter(|r| !r.is_terminal())
            .flat_map(|r| r.spec().dependencies.iter().copied().chain(r.parent()))
            .filter(|id| !ids.contains(id))
            .collect();
        named.sort_unstable();
        named.dedup();
        named
    }

    /// Whether the core keeps a view of `id`, another node's record, older
    /// than `version` and not yet ended: an event of that version is worth
    /// reading the record for ([`Input::Foreign`](crate::Input::Foreign)).
    pub fn watches(&self, id: ProcessId, version: u64) -> bool {
        self.foreign
            .get(&id)
            .is_some_and(|f| f.record.version() < version && !f.record.is_terminal())
    }

    /// The other nodes' records the core keeps a view of that have not
    /// ended: what to read again when their events may have been missed.
    pub fn watched(&self) -> Vec<ProcessId> {
        let mut ids: Vec<_> = self
            .foreign
            .iter()
            .filter(|(_, f)| !f.record.is_terminal())
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// A record, this node's or a view of another node's.
    pub(super) fn known(&self, id: ProcessId) -> Option<&ProcessRecord> {
        self.entries
            .get(&id)
            .map(|e| &e.record)
            .or_else(|| self.foreign.get(&id).map(|f| &f.record))
    }

    /// Takes the store's versions of other nodes' records (this node's are
    /// ignored): new views are kept, newer versions replace older ones, and
    /// what changed is acted on.
    pub(super) fn foreign(
        &mut self,
        records: Vec<ProcessRecord>,
        gone: &[ProcessId],
        now: Timestamp,
    ) {
        self.drop_unneeded_views();
        for (id, before, after) in self.see(records) {
            self.foreign_changed(id, before, after, now);
        }
        for &id in gone {
            if self.entries.contains_key(&id) {
                continue;
            }
            // Ended and removed unseen: whether it completed is not known,
            // so what depends on it fails rather than starts on a guess.
            self.foreign.remove(&id);
            let failure = format!(
                "dependency {id} is gone from the store (it ended and was removed), so whether it completed is not known"
            );
            self.unblock_waiters(id, Some(&failure), now);
        }
    }

    /// Keeps views of `records` (newer versions only); returns each change
    /// as the record's id, its state before (`None`: unseen) and after.
    pub(super) fn see(
        &mut self,
        records: Vec<ProcessRecord>,
    ) -> Vec<(ProcessId, Option<StateName>, StateName)> {
        let mut changes = Vec::new();
        let mut fresh = Vec::new();
        for record in records {
            let id = record.id();
            if record.node() == &self.node || self.entries.contains_key(&id) {
                continue;
            }
            let (before, depth) = match self.foreign.get(&id) {
                Some(view) if view.record.version() >= record.version() => continue,
                Some(view) => (Some(view.record.state()), view.depth),
                None => {
                    fresh.push(id);
                    (None, None)
                }
            };
            changes.push((id, before, record.state()));
            self.foreign.insert(id, Foreign { record, depth });
        }
        // Depths once the whole batch is known (a record may come before
        // its parent).
        let depths: Vec<_> = fresh
            .iter()
            .map(|id| self.depth_of(self.foreign[id].record.parent()))
            .collect();
        for (id, depth) in fresh.into_iter().zip(depths) {
            if let Some(view) = self.foreign.get_mut(&id) {
                view.depth = Some(depth);
            }
        }
        changes
    }

    /// Another node's record went from `before` (unseen: `None`) to `after`.
    pub(super) fn foreign_changed(
        &mut self,
        id: ProcessId,
        before: Option<StateName>,
        after: StateName,
        now: Timestamp,
    ) {
        if stops_children(after) && !before.is_some_and(stops_children) {
            let _ = self.cascade(id, false, None, now);
        }
        if after.is_terminal() && !before.is_some_and(StateName::is_terminal) {
            self.release_waiters(id, after, now);
        }
    }

    /// After a restart: stops the children of views whose records were
    /// stopped while this node was down.
    pub(super) fn cascade_restored(&mut self, now: Timestamp) {
        let mut stopped: Vec<_> = self
            .foreign
            .iter()
            .filter(|(_, v)| stops_children(v.record.state()))
            .map(|(id, _)| *id)
            .collect();
        stopped.sort_unstable();
        for parent in stopped {
            let _ = self.cascade(parent, false, None, now);
        }
    }

    /// Drops the views of ended records no record here refers to any more.
    fn drop_unneeded_views(&mut self) {
        let children = &self.children;
        let waiters = &self.waiters;
        self.foreign.retain(|id, view| {
            !view.record.is_terminal()
                || waiters.get(id).is_some_and(|w| !w.is_empty())
                || children.get(id).is_some_and(|c| !c.is_empty())
        });
    }
}
