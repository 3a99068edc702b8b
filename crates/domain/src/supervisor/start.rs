//! Accepting records, and starting them: queueing under the limits, the
//! spawns, and what a started process gets (timeout, readiness).

use std::sync::Arc;

use super::names::Named;
use super::{Blockers, CoreError, Effect, Entry, Supervisor, TimerKind};
use crate::{
    EventKind, GroupName, Lifecycle, Placement, ProcessId, ProcessRecord, ProcessSpec,
    ReadinessCheck, Signal, StateName, StopCause, Timestamp, Transition,
};

/// How long a group refused a cluster-wide slot waits before it asks
/// again, unless an end anywhere says a slot may have freed first.
const CLUSTER_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

impl Supervisor {
    pub(super) fn submit(
        &mut self,
        id: ProcessId,
        mut spec: ProcessSpec,
        replaces: Option<ProcessId>,
        free_ports: Option<&[u16]>,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        spec.validate()?;
        match spec.placement() {
            Placement::On(placed) if *placed != self.node => {
                return Err(CoreError::OtherNode {
                    placed: placed.clone(),
                    here: self.node.clone(),
                });
            }
            // Queued for the cluster, not submitted to a core; a restart of
            // a record a node claimed stays on that node.
            Placement::Any if replaces.is_none() => return Err(CoreError::PlacedOnAny),
            _ => {}
        }
        match &self.last_env {
            // Arc's equality checks the pointer first, then the maps.
            Some(last) if *last == spec.env => spec.env = Arc::clone(last),
            _ => self.last_env = Some(Arc::clone(&spec.env)),
        }
        if self.entries.contains_key(&id) {
            return Err(CoreError::AlreadyExists(id));
        }
        let (named, rolls) = match self.name_rule(&spec, replaces)? {
            Named::Free => (None, None),
            Named::Replaces(live) => (Some(live), None),
            Named::Rolls(live) => (None, Some(live)),
        };
        // A restart keeps its record's port; a copy that rolls over the
        // live one gets a port of its own.
        let port = match (spec.port, replaces) {
            (Some(ask), None) => Some(self.hand_out_port(ask, free_ports, named)?),
            _ => None,
        };
        let record = if let Some(old) = replaces {
            ProcessRecord::restart_with(&self.entries[&old].record, id, spec, now)
        } else {
            let record = ProcessRecord::new(id, self.node.clone(), spec, now);
            match port {
                Some(port) => record.with_port(port),
                None => record,
            }
        };
        // A record replacing a live one of its name starts once that one
        // has ended.
        self.admit(record, None, replaces.or(named), now)?;
        self.publish(id, EventKind::Submitted, now);
        self.fail_on_ended_dependencies(id, now);
        if let Some(old) = named {
            self.stop(old, StopCause::Replaced { by: id }, false, None, now)?;
        }
        if let Some(old) = rolls {
            self.rolls.insert(id, old);
        }
        Ok(())
    }

    /// Checks `record` is one this node claimed and placed on itself:
    /// pending, of this node, not known yet.
    fn check_claimed(&self, record: &ProcessRecord) -> Result<(), CoreError> {
        let id = record.id();
        if self.entries.contains_key(&id) {
            return Err(CoreError::AlreadyExists(id));
        }
        if record.node() != &self.node || record.state() != StateName::Pending {
            return Err(CoreError::NotClaimedHere(id));
        }
        Ok(())
    }

    /// Takes `record`, which this node claimed from the cluster's queue and
    /// placed on itself in the store: it becomes this node's, as if
    /// submitted here.
    pub(super) fn claimed(
        &mut self,
        record: &ProcessRecord,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        self.check_claimed(record)?;
        self.admit(record.clone(), Some(record.version()), None, now)?;
        self.fail_on_ended_dependencies(record.id(), now);
        Ok(())
    }

    /// A record just admitted fails at once when a dependency ended short
    /// of what it waits for.
    fn fail_on_ended_dependencies(&mut self, id: ProcessId, now: Timestamp) {
        let ended: Vec<ProcessId> = self.entries[&id]
            .blockers
            .as_deref()
            .map(|b| {
                b.must_complete
                    .iter()
                    .copied()
                    .filter(|d| self.known(*d).is_some_and(ProcessRecord::is_terminal))
                    .collect()
            })
            .unwrap_or_default();
        for dep in ended {
            self.wake_waiters(dep, now);
        }
    }

    /// Takes `record`, which this node claimed and placed on itself, and
    /// ends it at once with `end` (never started): failed, when it cannot
    /// run here (its parent ended, a dependency is gone), or cancelled,
    /// when a stop came while it waited for a node.
    pub(super) fn adopt_ended(
        &mut self,
        record: &ProcessRecord,
        end: Transition,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        self.check_claimed(record)?;
        let id = record.id();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(
            id,
            Box::new(Entry {
                record: record.clone(),
                persisted: Some(record.version()),
                persisted_active: false,
                seq,
                depth: 0,
                blockers: None,
            }),
        );
        self.transition(id, end, now)?;
        Ok(())
    }

    /// Takes a new record of this node (`persisted`: the version the store
    /// holds of it, if any): checks what it names, indexes it, and places it.
    fn admit(
        &mut self,
        record: ProcessRecord,
        persisted: Option<u64>,
        replaces: Option<ProcessId>,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        let id = record.id();
        let spec = record.spec();
        let mut blockers = Blockers::default();
        for dep in &spec.dependencies {
            if *dep == id {
                return Err(CoreError::SelfDependency(id));
            }
            let dep_record = self.known(*dep).ok_or(CoreError::UnknownDependency(*dep))?;
            // One that got as far as asked does not block; one that ended
            // short of it fails the record once it is admitted.
            if dep_record.meets(spec.until_of(*dep)) != Some(true) {
                blockers.must_complete.insert(*dep);
            }
        }
        let depth = match spec.parent {
            None => 0,
            Some(parent) => {
                let p = self
                    .known(parent)
                    .ok_or(CoreError::ParentNotFound(parent))?;
                if p.is_terminal() || p.state() == StateName::Stopping {
                    return Err(CoreError::ParentNotLive {
                        parent,
                        state: p.state(),
                    });
                }
                let depth = self.depth_of(Some(parent));
                if depth > self.limits.max_depth {
                    return Err(CoreError::DepthLimit {
                        depth,
                        max: self.limits.max_depth,
                    });
                }
                if self.live_per_level.get(&depth).copied().unwrap_or(0)
                    >= self.limits.max_per_level
                {
                    return Err(CoreError::LevelFull {
                        level: depth,
                        max: self.limits.max_per_level,
                    });
                }
                depth
            }
        };
        if let Some(old) = replaces
            && !self.entries[&old].record.is_terminal()
        {
            blockers.must_end.insert(old);
            // The one replaced may itself still wait for one it replaces
            // (two replaces of a name in a row): wait for that one too, so
            // that at no instant do two copies of the name run.
            if let Some(b) = &self.entries[&old].blockers {
                blockers.must_end.extend(
                    b.must_end
                        .iter()
                        .copied()
                        .filter(|d| self.known(*d).is_some_and(|r| !r.is_terminal())),
                );
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(parent) = record.parent() {
            self.children.entry(parent).or_default().insert(id);
        }
        if depth > 0 {
            *self.live_per_level.entry(depth).or_default() += 1;
        }
        let tracked = record.is_tracked();
        let scheduled = record.spec().schedule.is_some();
        let timeout = record.spec().timeout;
        self.note_name(record.spec().name.as_ref(), id);
        self.entries.insert(
            id,
            Box::new(Entry {
                record,
                persisted,
                persisted_active: false,
                seq,
                depth,
                blockers: blockers.clone().kept(),
            }),
        );
        for waited in blockers.must_complete.iter().chain(&blockers.must_end) {
            self.waiters.entry(*waited).or_default().insert(id);
        }
        self.note_owners(id, now);
        // A new record is written; a claimed one is stored as it is.
        if persisted.is_none() {
            self.dirty.insert(id, None);
        }
        if tracked {
            if self.entries[&id].record.state() == StateName::Pending {
                // A schedule claimed from the cluster's queue.
                self.transition(id, Transition::Start, now)?;
            }
            // A schedule's timeout is its runs'.
            if let Some(t) = timeout.filter(|_| !scheduled) {
                self.arm(id, TimerKind::Timeout, now.saturating_add(t.as_duration()));
            }
            self.schedule_started(id, now);
        } else {
            self.place(id, now);
        }
        Ok(())
    }

    pub(super) fn restart(
        &mut self,
        id: ProcessId,
        new_id: ProcessId,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        self.replace_on_change(id, new_id, &std::collections::HashMap::new(), now)
    }

    pub(super) fn spawned(
        &mut self,
        id: ProcessId,
        pid: u32,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        let was = self.own(id)?.state();
        self.transition(id, Transition::Spawned { pid }, now)?;
        let record = &self.entries[&id].record;
        if was == StateName::Stopping {
            // Stopped while the spawn was under way: stop it now that it exists.
            if let Lifecycle::Stopping { killed, .. } = record.lifecycle() {
                let signal = if *killed {
                    Signal::Kill
                } else {
                    record.spec().stop.signal
                };
                let grace = record.spec().stop.grace;
                let killed = *killed;
                self.signal(id, pid, signal);
                if !killed {
                    self.arm(
                        id,
                        TimerKind::Grace,
                        now.saturating_add(grace.as_duration()),
                    );
                }
            }
            return Ok(());
        }
        let record = &self.entries[&id].record;
        let spec = record.spec();
        let timeout = spec.timeout;
        let readiness =
            (record.readiness_check() != ReadinessCheck::None).then_some(spec.readiness.timeout);
        if let Some(t) = timeout {
            self.arm(id, TimerKind::Timeout, now.saturating_add(t.as_duration()));
        }
        match readiness {
            None => {
                self.transition(id, Transition::Ready, now)?;
            }
            Some(Some(t)) => self.arm(
                id,
                TimerKind::Readiness,
                now.saturating_add(t.as_duration()),
            ),
            Some(None) => {}
        }
        Ok(())
    }

    /// Puts a pending record where it belongs: failed (a dependency ended
    /// short of its condition), waiting (dependencies or predecessor unfinished), delayed, or ready.
    pub(super) fn place(&mut self, id: ProcessId, now: Timestamp) {
        let entry = &self.entries[&id];
        if entry.record.state() != StateName::Pending {
            return;
        }
        let spec = entry.record.spec();
        for dep in &spec.dependencies {
            let until = spec.until_of(*dep);
            if let Some(d) = self.known(*dep)
                && d.meets(until) == Some(false)
            {
                let error = until.missed(*dep, d.state());
                let _ = self.transition(id, Transition::Fail { error }, now);
                return;
            }
        }
        if entry.is_blocked() {
            return;
        }
        if self.holds_back(id) {
            return;
        }
        let entry = &self.entries[&id];
        if let Lifecycle::Pending {
            not_before: Some(at),
            ..
        } = entry.record.lifecycle()
            && *at > now
        {
            let at = *at;
            self.arm(id, TimerKind::NotBefore, at);
            return;
        }
        // What takes no slot (an agent's MCP server) starts at once.
        if !entry.record.takes_a_slot() {
            self.start(id, now);
            return;
        }
        let (group, priority, seq) = (
            entry.record.group().cloned(),
            entry.record.spec().priority,
            entry.seq,
        );
        self.ready.push(id, group, priority, seq);
    }

    /// How many records of `group` wait for the store's answer to a
    /// cluster-wide slot.
    pub(super) fn asking_in(&self, group: &GroupName) -> usize {
        self.asking.values().filter(|g| *g == group).count()
    }

    /// `id`'s group and its cluster-wide limit, if it has one.
    fn cluster_cap(&self, id: ProcessId) -> Option<(GroupName, usize)> {
        let group = self.entries.get(&id)?.record.group()?;
        let limit = self.limits.cluster_groups.get(group)?;
        Some((group.clone(), *limit))
    }

    /// The store's answer to `id`'s ask for a cluster-wide slot: granted,
    /// it starts (if still pending); refused, it waits in the queue again
    /// and its group asks no more until a slot may have freed.
    pub(super) fn cluster_slot(&mut self, id: ProcessId, granted: bool, now: Timestamp) {
        let Some(group) = self.asking.remove(&id) else {
            return;
        };
        // Stopped meanwhile: a slot granted to it is free again, as the
        // store counts only records pending with a grant or holding a slot.
        if self.entries.get(&id).map(|e| e.record.state()) != Some(StateName::Pending) {
            return;
        }
        if granted {
            self.start(id, now);
        } else {
            self.cluster_full
                .insert(group, now.saturating_add(CLUSTER_RETRY));
            self.place(id, now);
            // Only a wake-up: the mark lapses at that time whatever became
            // of `id` (see `schedule`).
            self.arm(
                id,
                TimerKind::ClusterSlot,
                now.saturating_add(CLUSTER_RETRY),
            );
        }
    }

    fn start(&mut self, id: ProcessId, now: Timestamp) {
        if self.holds_back(id) {
            return;
        }
        if self.transition(id, Transition::Start, now).is_ok() {
            let record = self.entries[&id].record.clone();
            self.out.push(Effect::Spawn { record });
            self.order.spawn_asked(id);
        }
    }

    /// Starts ready records while there are slots; a record of a group
    /// with a cluster-wide limit first asks the store for a slot.
    pub(super) fn schedule(&mut self, now: Timestamp) {
        // Groups refused a cluster-wide slot ask again once their wait is over.
        self.cluster_full.retain(|_, until| now < *until);
        while self.active_total + self.asking.len() < self.limits.max_running {
            let limits = &self.limits;
            let active = &self.active_by_group;
            let (asking, full) = (&self.asking, &self.cluster_full);
            // Records handed to the spawner go first, in their order.
            let next = match self.handed.front() {
                Some(&id) => Some(id),
                None => self.ready.best(|g| {
                    let Some(g) = g else { return true };
                    if full.contains_key(g) {
                        return false;
                    }
                    limits.group_limit(Some(g)).is_none_or(|limit| {
                        let asked = asking.values().filter(|a| *a == g).count();
                        active.get(g).copied().unwrap_or(0) + asked < limit
                    })
                }),
            };
            let Some(id) = next else {
                break;
            };
            self.ready.remove(id);
            self.handed.retain(|h| *h != id);
            if let Some((group, limit)) = self.cluster_cap(id) {
                self.asking.insert(id, group.clone());
                self.out.push(Effect::TakeClusterSlot { id, group, limit });
                continue;
            }
            self.start(id, now);
        }
    }
}
