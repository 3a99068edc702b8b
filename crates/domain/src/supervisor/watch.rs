//! Restart on change ([`crate::FileWatch`]): a record is watched while its
//! process runs; each change re-arms the watch's debounce, and once it
//! passes with no further change the record is restarted as
//! [`Input::Restart`](crate::Input::Restart) does, with the ids the last
//! change brought. A burst of saves is one restart. A watch that restarts
//! dependents restarts the live records of this node that depend on the
//! record (and theirs, in order), each depending on the new records.

use std::collections::{BTreeSet, HashMap, VecDeque};

use super::{Effect, Supervisor, TimerKind};
use crate::{Event, EventKind, ProcessId, StateName, StopCause, Timestamp};

impl Supervisor {
    /// `id`'s process runs: its files are watched, if its spec asks, once.
    pub(super) fn watch_files(&mut self, id: ProcessId) {
        let Some(watch) = self
            .entries
            .get(&id)
            .and_then(|e| e.record.spec().watch.clone())
        else {
            return;
        };
        if self.watched.contains_key(&id) {
            return;
        }
        self.watched.insert(id, Vec::new());
        self.out.push(Effect::WatchFiles { id, watch: *watch });
    }

    /// `id` ended: its watch ends, and a change waiting to settle is dropped.
    pub(super) fn unwatch_files(&mut self, id: ProcessId) {
        if self.watched.remove(&id).is_some() {
            self.cancel_timer(id, TimerKind::FilesSettled);
            self.out.push(Effect::UnwatchFiles { id });
        }
    }

    /// How many fresh ids a change of `id`'s files needs
    /// ([`Input::FilesChanged`](crate::Input::FilesChanged)): one, and one
    /// per live dependent its watch restarts too.
    pub fn ids_for_change(&self, id: ProcessId) -> usize {
        self.restarted_on_change(id).len().max(1)
    }

    /// The records a change of `id`'s files restarts, `id` first, each
    /// after what it depends on.
    fn restarted_on_change(&self, id: ProcessId) -> Vec<ProcessId> {
        let cascade = self
            .entries
            .get(&id)
            .and_then(|e| e.record.spec().watch.as_ref())
            .is_some_and(|w| w.restart_dependents);
        let mut chain = vec![id];
        if !cascade {
            return chain;
        }
        let mut seen: BTreeSet<ProcessId> = [id].into();
        let mut next = VecDeque::from([id]);
        while let Some(of) = next.pop_front() {
            let mut dependents: Vec<ProcessId> = self
                .entries
                .values()
                .map(|e| &e.record)
                .filter(|r| {
                    r.node() == &self.node
                        && !r.is_terminal()
                        && r.state() != StateName::Stopping
                        && r.spec().dependencies.contains(&of)
                })
                .map(crate::ProcessRecord::id)
                .filter(|d| !seen.contains(d))
                .collect();
            dependents.sort_unstable();
            for d in dependents {
                seen.insert(d);
                chain.push(d);
                next.push_back(d);
            }
        }
        chain
    }

    /// A change under `id`'s watch: the restart waits for the debounce.
    pub(super) fn files_changed(&mut self, id: ProcessId, new_ids: Vec<ProcessId>, now: Timestamp) {
        let Some(debounce) = self
            .entries
            .get(&id)
            .and_then(|e| e.record.spec().watch.as_ref())
            .map(|w| w.debounce)
        else {
            return;
        };
        let Some(pending) = self.watched.get_mut(&id) else {
            return;
        };
        *pending = new_ids;
        self.arm(
            id,
            TimerKind::FilesSettled,
            now.saturating_add(debounce.as_duration()),
        );
    }

    /// No change came for the debounce: `id` (and the dependents its watch
    /// restarts) are restarted, unless it is stopping or ended meanwhile.
    pub(super) fn files_settled(&mut self, id: ProcessId, now: Timestamp) {
        let Some(new_ids) = self.watched.get_mut(&id).map(std::mem::take) else {
            return;
        };
        let live = self
            .entries
            .get(&id)
            .is_some_and(|e| !e.record.is_terminal() && e.record.state() != StateName::Stopping);
        if !live || new_ids.iter().any(|n| self.entries.contains_key(n)) {
            return;
        }
        let mut chain = self.restarted_on_change(id);
        // Dependents that came since the change are left as they are.
        chain.truncate(new_ids.len());
        let renamed: HashMap<ProcessId, ProcessId> =
            chain.iter().copied().zip(new_ids.iter().copied()).collect();
        for &old in &chain {
            let _ = self.renew(old, renamed[&old], &renamed, now);
        }
        // The last dependents first: each old record ends cancelled, not
        // failed for a dependency stopped before it.
        for &old in chain.iter().rev() {
            let _ = self.stop_replaced(old, renamed[&old], now);
        }
    }

    /// `old` again as `new` ([`Input::Restart`](crate::Input::Restart)),
    /// its dependencies on records restarted with it (`renamed`) moved to
    /// their new records.
    pub(super) fn replace_on_change(
        &mut self,
        old: ProcessId,
        new: ProcessId,
        renamed: &HashMap<ProcessId, ProcessId>,
        now: Timestamp,
    ) -> Result<(), crate::CoreError> {
        self.renew(old, new, renamed, now)?;
        self.stop_replaced(old, new, now)
    }

    /// The record `new` repeating `old`, dependencies moved by `renamed`.
    fn renew(
        &mut self,
        old: ProcessId,
        new: ProcessId,
        renamed: &HashMap<ProcessId, ProcessId>,
        now: Timestamp,
    ) -> Result<(), crate::CoreError> {
        let mut spec = self.own(old)?.spec().clone();
        for d in &mut spec.dependencies {
            if let Some(n) = renamed.get(d) {
                *d = *n;
            }
        }
        spec.until = spec
            .until
            .into_iter()
            .map(|(d, u)| (renamed.get(&d).copied().unwrap_or(d), u))
            .collect();
        self.submit(new, spec, Some(old), None, now)?;
        let mut event = Event::new(EventKind::Restarted, &self.entries[&old].record, now);
        event.related = Some(new);
        self.out.push(Effect::Publish(Box::new(event)));
        Ok(())
    }

    /// Stops `old`, replaced by `new`, unless it ended.
    fn stop_replaced(
        &mut self,
        old: ProcessId,
        new: ProcessId,
        now: Timestamp,
    ) -> Result<(), crate::CoreError> {
        if self
            .entries
            .get(&old)
            .is_some_and(|e| !e.record.is_terminal())
        {
            self.stop(old, StopCause::Replaced { by: new }, false, None, now)?;
        }
        Ok(())
    }
}
