//! Accepting records, and starting them: queueing under the limits, the
//! spawns, and what a started process gets (timeout, readiness).

use std::sync::Arc;

use super::{Blockers, CoreError, Effect, Entry, Supervisor, TimerKind};
use crate::{
    Event, EventKind, Lifecycle, ProcessId, ProcessRecord, ProcessSpec, ReadinessCheck, Signal,
    StateName, StopCause, Timestamp, Transition,
};

impl Supervisor {
    pub(super) fn submit(
        &mut self,
        id: ProcessId,
        mut spec: ProcessSpec,
        replaces: Option<ProcessId>,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        spec.validate()?;
        if let Some(placed) = spec.node.as_ref().filter(|n| **n != self.node) {
            return Err(CoreError::OtherNode {
                placed: placed.clone(),
                here: self.node.clone(),
            });
        }
        match &self.last_env {
            // Arc's equality checks the pointer first, then the maps.
            Some(last) if *last == spec.env => spec.env = Arc::clone(last),
            _ => self.last_env = Some(Arc::clone(&spec.env)),
        }
        if self.entries.contains_key(&id) {
            return Err(CoreError::AlreadyExists(id));
        }
        let mut blockers = Blockers::default();
        for dep in &spec.dependencies {
            if *dep == id {
                return Err(CoreError::SelfDependency(id));
            }
            let dep_record = self.known(*dep).ok_or(CoreError::UnknownDependency(*dep))?;
            if !dep_record.is_terminal() {
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
        let record = match replaces {
            Some(old) => ProcessRecord::restart_of(&self.entries[&old].record, id, now),
            None => ProcessRecord::new(id, self.node.clone(), spec, now),
        };
        if let Some(old) = replaces
            && !self.entries[&old].record.is_terminal()
        {
            blockers.must_end.insert(old);
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
        let timeout = record.spec().timeout;
        self.entries.insert(
            id,
            Box::new(Entry {
                record,
                persisted: None,
                persisted_active: false,
                seq,
                depth,
                blockers: blockers.clone().kept(),
            }),
        );
        for waited in blockers.must_complete.iter().chain(&blockers.must_end) {
            self.waiters.entry(*waited).or_default().insert(id);
        }
        self.dirty.insert(id, None);
        self.publish(id, EventKind::Submitted, now);
        if tracked {
            if let Some(t) = timeout {
                self.arm(id, TimerKind::Timeout, now.saturating_add(t.as_duration()));
            }
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
        let old = self.own(id)?;
        let spec = old.spec().clone();
        self.submit(new_id, spec, Some(id), now)?;
        let mut event = Event::new(EventKind::Restarted, &self.entries[&id].record, now);
        event.related = Some(new_id);
        self.out.push(Effect::Publish(Box::new(event)));
        if !self.entries[&id].record.is_terminal() {
            self.stop(id, StopCause::Replaced { by: new_id }, false, None, now)?;
        }
        Ok(())
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
        let spec = self.entries[&id].record.spec();
        let timeout = spec.timeout;
        let readiness =
            (spec.readiness.check != ReadinessCheck::None).then_some(spec.readiness.timeout);
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

    /// Puts a pending record where it belongs: failed (a dependency did not
    /// complete), waiting (dependencies or predecessor unfinished), delayed, or ready.
    pub(super) fn place(&mut self, id: ProcessId, now: Timestamp) {
        let entry = &self.entries[&id];
        if entry.record.state() != StateName::Pending {
            return;
        }
        for dep in &entry.record.spec().dependencies {
            if let Some(d) = self.known(*dep)
                && d.is_terminal()
                && d.state() != StateName::Completed
            {
                let error = format!("dependency {dep} ended {} instead of completing", d.state());
                let _ = self.transition(id, Transition::Fail { error }, now);
                return;
            }
        }
        if entry.is_blocked() {
            return;
        }
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
        let (group, priority, seq) = (
            entry.record.group().cloned(),
            entry.record.spec().priority,
            entry.seq,
        );
        self.ready.push(id, group, priority, seq);
    }

    /// Starts ready records while there are slots.
    pub(super) fn schedule(&mut self, now: Timestamp) {
        while self.active_total < self.limits.max_running {
            let limits = &self.limits;
            let active = &self.active_by_group;
            // Records handed to the spawner go first, in their order.
            let next = match self.handed.front() {
                Some(&id) => Some(id),
                None => self.ready.best(|g| match limits.group_limit(g) {
                    None => true,
                    Some(limit) => g.and_then(|g| active.get(g)).copied().unwrap_or(0) < limit,
                }),
            };
            let Some(id) = next else {
                break;
            };
            self.ready.remove(id);
            self.handed.retain(|h| *h != id);
            if self.transition(id, Transition::Start, now).is_ok() {
                let record = self.entries[&id].record.clone();
                self.out.push(Effect::Spawn { record });
                self.order.spawn_asked(id);
            }
        }
    }
}
