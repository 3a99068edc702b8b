//! Taking back the store's records after a restart, with their timers.

use std::collections::BTreeSet;

use super::{Blockers, Effect, Entry, Supervisor, TimerKind};
use crate::{
    EventKind, Lifecycle, ProcessId, ProcessRecord, Signal, StateName, Timestamp, Transition,
};

impl Supervisor {
    /// Takes back records from the store after a restart of the manager.
    ///
    /// Records of other nodes are kept as views of what records here name
    /// ([`Supervisor::named_elsewhere`]): a dependency is waited for, and a
    /// parent stopped meanwhile stops its children here. A dependency found
    /// nowhere is waited for until the driver reports it gone
    /// ([`Input::Foreign`](crate::Input::Foreign)). Pending records are queued again,
    /// finished ones kept (with retention), and live ones counted against the
    /// limits with their timers re-armed. A live record's process is taken
    /// over again ([`Effect::Reattach`]; [`Input::ReattachFailed`](crate::Input::ReattachFailed) makes it
    /// lost); one whose spawn was under way is spawned again
    /// ([`Effect::Spawn`]), which a spawner that started it answers with
    /// that process.
    pub fn restore(&mut self, records: Vec<ProcessRecord>, now: Timestamp) -> Vec<Effect> {
        let (mut records, others): (Vec<_>, Vec<_>) =
            records.into_iter().partition(|r| r.node() == &self.node);
        records.sort_by_key(|r| (r.created_at(), r.id()));
        let mut back = Vec::new();
        for mut record in records {
            let id = record.id();
            let persisted = Some(record.version());
            // Marked unreachable while this node was away: it is back, and
            // the record is in the state it was in, to be checked below.
            if record.state() == StateName::Unreachable
                && record.apply(Transition::Reach, now).is_ok()
            {
                back.push((id, persisted));
            }
            let persisted_active = record.state().is_active();
            if !record.is_terminal() {
                self.note_name(record.spec().name.as_ref(), id);
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            self.entries.insert(
                id,
                Box::new(Entry {
                    record,
                    persisted,
                    persisted_active,
                    seq,
                    depth: 0,
                    blockers: None,
                }),
            );
        }
        self.see(others);
        let with_owners: Vec<ProcessId> = self
            .entries
            .values()
            .filter(|e| !e.record.spec().owners.is_empty() && !e.record.is_terminal())
            .map(|e| e.record.id())
            .collect();
        for id in with_owners {
            self.note_owners(id, now);
        }
        for (id, persisted) in back {
            self.dirty.insert(id, persisted);
            self.publish(id, EventKind::Reachable, now);
        }
        let ids: Vec<_> = self.entries.keys().copied().collect();
        for &id in &ids {
            // Given up by the cluster while this node was away: a process
            // of it that this node still runs is killed, so the record
            // never runs in two places (one no longer running is left be).
            if let Some(pid) = self.entries[&id].record.lifecycle().given_up_pid() {
                self.out.push(Effect::Signal {
                    id,
                    pid,
                    signal: Signal::Kill,
                });
            }
            let depth = self.depth_of(self.entries[&id].record.parent());
            let entry = self.entries.get_mut(&id).expect("just inserted");
            entry.depth = depth;
            if let Some(p) = entry.record.parent() {
                self.children.entry(p).or_default().insert(id);
            }
        }
        self.find_rolls();
        for &id in &ids {
            self.take_back(id, now);
        }
        for &id in &ids {
            if self.entries[&id].record.state() == StateName::Pending {
                self.wait_again(id, now);
            }
        }
        self.cascade_restored(now);
        self.schedule(now);
        self.finish_step()
    }

    /// A pending record restored: it waits again for the dependencies
    /// that have not finished, then is placed.
    fn wait_again(&mut self, id: ProcessId, now: Timestamp) {
        let unfinished: BTreeSet<_> = self.entries[&id]
            .record
            .spec()
            .dependencies
            .iter()
            .copied()
            // Not known: another node's record the store no longer
            // holds, which the driver reports (`Input::Foreign`'s
            // `gone`); it waits until then.
            .filter(|d| {
                let until = self.entries[&id].record.spec().until_of(*d);
                self.known(*d).is_none_or(|r| r.meets(until) != Some(true))
            })
            .collect();
        for d in &unfinished {
            self.waiters.entry(*d).or_default().insert(id);
        }
        self.entries.get_mut(&id).expect("known").blockers = Blockers {
            must_complete: unfinished,
            must_end: BTreeSet::new(),
        }
        .kept();
        self.place(id, now);
    }

    /// A restored record counted again: its slot, its process taken over
    /// (or spawned again), its schedule and timers armed again.
    fn take_back(&mut self, id: ProcessId, now: Timestamp) {
        let (state, live_depth, tracked, slotted) = {
            let e = &self.entries[&id];
            (
                e.record.state(),
                e.depth,
                e.record.is_tracked(),
                e.record.takes_a_slot(),
            )
        };
        if !state.is_terminal() && live_depth > 0 {
            *self.live_per_level.entry(live_depth).or_default() += 1;
        }
        if state.is_active() && slotted {
            self.add_active(id);
        }
        if state.is_active() && !tracked {
            // Its process is taken over again, or, if its spawn was under
            // way, spawned again: a spawner that started it answers with
            // that process, so it is never started twice.
            let record = &self.entries[&id].record;
            if let Some(pid) = record.pid() {
                self.out.push(Effect::Reattach { id, pid });
                self.watch_files(id);
            } else {
                let record = record.clone();
                self.out.push(Effect::Spawn { record });
                self.order.spawn_asked(id);
            }
        }
        if state == StateName::Running && self.entries[&id].record.spec().schedule.is_some() {
            self.schedule_back(id, now, false);
        }
        if state.is_active() {
            self.rearm_live_timers(id, now);
        } else if state.is_terminal() {
            self.arm_retention(id);
        }
    }

    pub(super) fn rearm_live_timers(&mut self, id: ProcessId, now: Timestamp) {
        let record = &self.entries[&id].record;
        let spec = record.spec();
        match record.lifecycle() {
            Lifecycle::Running { started_at, .. } | Lifecycle::Paused { started_at, .. } => {
                // A schedule's timeout is its runs'.
                if let Some(t) = spec.timeout.filter(|_| spec.schedule.is_none()) {
                    let at = started_at.saturating_add(t.as_duration());
                    self.arm(id, TimerKind::Timeout, at);
                }
            }
            Lifecycle::Stopping { killed: false, .. } => {
                let at = now.saturating_add(spec.stop.grace.as_duration());
                self.arm(id, TimerKind::Grace, at);
            }
            _ => {}
        }
    }

    pub(super) fn arm_retention(&mut self, id: ProcessId) {
        if let (Some(keep), Some(end)) = (
            self.limits.retention,
            self.entries[&id].record.lifecycle().ended_at(),
        ) {
            self.arm(
                id,
                TimerKind::Retention,
                end.saturating_add(keep.as_duration()),
            );
        }
    }

    /// `id`'s process was not found after a restart (of bpm, or of the
    /// machine): it is lost with the reason, and started again as `again`
    /// when it would run again by itself. After a reboot, that is a
    /// restart policy that restarts it, or a project's service (a project
    /// that was up comes back up): the reboot ended it. After a restart of
    /// bpm alone, the process may have run to its end while no bpm saw it
    /// (a migration that succeeded), so only a policy that restarts it
    /// `always` runs it again: anything else whose end is unknown is not
    /// run twice by itself. Nothing else starts by itself.
    pub(super) fn reattach_failed(
        &mut self,
        id: ProcessId,
        pid: u32,
        machine_restarted: bool,
        again: ProcessId,
        now: Timestamp,
    ) -> Result<(), crate::CoreError> {
        let record = self.own(id)?;
        let mode = record.spec().restart.mode;
        let comes_back = if machine_restarted {
            mode != crate::RestartMode::Never
                || record
                    .spec()
                    .labels
                    .keys()
                    .any(|k| k.as_str() == crate::project::PROJECT_LABEL)
        } else {
            mode == crate::RestartMode::Always
        };
        let reason = if machine_restarted {
            format!("machine restarted: pid {pid} ran before the reboot")
        } else {
            format!(
                "bpm restarted and could not re-attach to pid {pid}: it ended while no bpm watched, its exit code unknown{}",
                if comes_back {
                    ""
                } else {
                    "; not run again by itself (bpm up --rerun-unknown or bpm restart does)"
                }
            )
        };
        self.transition(id, Transition::Lose { reason }, now)?;
        if comes_back && !self.entries.contains_key(&again) {
            self.restart(id, again, now)?;
        }
        Ok(())
    }
}
