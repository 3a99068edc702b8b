//! Ends: exits (under the restart policy), stops with their cascade and
//! escalation, what waited for an end, and forgetting a record.

use std::collections::BTreeSet;

use super::{CoreError, Effect, Supervisor, TimerKind};
use crate::{
    Applied, ExitStatus, Lifecycle, ProcessId, RestartMode, Signal, Span, StateName, StopCause,
    Timestamp, Transition,
};

impl Supervisor {
    pub(super) fn exited(
        &mut self,
        id: ProcessId,
        status: ExitStatus,
        limit: Option<crate::LimitHit>,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        let Some(record) = self.get(id).filter(|r| !r.is_terminal()) else {
            // Unknown here, or ended already (lost, say): nothing to record,
            // but the spawner may forget the process.
            self.out.push(Effect::ExitRecorded { id });
            return Ok(());
        };
        let state = record.state();
        if matches!(
            record.lifecycle(),
            Lifecycle::Stopping {
                cause: StopCause::StoodDown,
                ..
            }
        ) {
            // Stood down: queued again here, held back until
            // the node holds its lease again.
            let requeue = Transition::Requeue {
                status,
                not_before: now,
            };
            self.transition(id, requeue, now)?;
            self.cancel_timer(id, TimerKind::Grace);
            self.place(id, now);
            self.out.push(Effect::ExitRecorded { id });
            return Ok(());
        }
        let unhealthy = matches!(
            record.lifecycle(),
            Lifecycle::Stopping {
                cause: StopCause::Unhealthy { .. },
                ..
            }
        );
        if matches!(state, StateName::Running | StateName::Paused) || unhealthy {
            let policy = record.spec().restart;
            // Stopped as unhealthy: a failure, however it exited.
            let wants = match policy.mode {
                RestartMode::Never => false,
                RestartMode::OnFailure => unhealthy || !record.spec().succeeded(status),
                RestartMode::Always => true,
            };
            let budget = policy.max_restarts.is_none_or(|m| record.restarts() < m);
            if wants && budget {
                let delay = policy.backoff.delay(record.restarts());
                let not_before = now.saturating_add(delay);
                self.cancel_timer(id, TimerKind::Timeout);
                self.cancel_timer(id, TimerKind::Readiness);
                self.cancel_timer(id, TimerKind::Grace);
                self.transition(id, Transition::Requeue { status, not_before }, now)?;
                self.place(id, now);
                self.out.push(Effect::ExitRecorded { id });
                return Ok(());
            }
        }
        self.transition(id, Transition::Exited { status, limit }, now)?;
        self.out.push(Effect::ExitRecorded { id });
        Ok(())
    }

    /// Stops `id` and its unfinished descendants (children first).
    pub(super) fn stop(
        &mut self,
        id: ProcessId,
        cause: StopCause,
        force: bool,
        grace: Option<Span>,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        let record = &self.entries.get(&id).ok_or(CoreError::NotFound(id))?.record;
        if record.is_terminal() {
            return Ok(());
        }
        let already_stopping = record.state() == StateName::Stopping;
        self.cascade(id, force, grace, now)?;
        let record = &self.entries[&id].record;
        let was_paused = record.state() == StateName::Paused;
        let policy = record.spec().stop;
        if already_stopping {
            // Stop is idempotent; a forced stop still escalates.
            if force {
                self.escalate(id, now)?;
            }
            return Ok(());
        }
        let pending = record.state() == StateName::Pending;
        self.transition(id, Transition::Stop { cause }, now)?;
        if pending {
            return Ok(());
        }
        let Some(pid) = self.entries[&id].record.pid() else {
            if self.entries[&id].record.state() == StateName::Stopping {
                // Spawn under way: the signal goes out when it reports its pid.
                if force {
                    self.transition(id, Transition::Escalate, now)?;
                }
            }
            return Ok(());
        };
        if force {
            self.escalate(id, now)?;
        } else {
            let asked = self.entries[&id]
                .record
                .spec()
                .stop_command
                .as_deref()
                .cloned();
            let mut grace = grace.unwrap_or(policy.grace).as_duration();
            if let Some(asked) = asked {
                if was_paused {
                    // A stopped process cannot act on its stop command either.
                    self.signal(id, pid, Signal::Cont);
                }
                // The command first, then the signal; KILL a grace after
                // the command's time is up.
                self.out.push(Effect::StopByCommand {
                    id,
                    pid,
                    command: asked.command,
                    within: asked.timeout,
                    signal: policy.signal,
                });
                grace = grace.saturating_add(asked.timeout.as_duration());
            } else {
                self.signal(id, pid, policy.signal);
                if was_paused {
                    // A stopped process cannot act on TERM until it is continued.
                    self.signal(id, pid, Signal::Cont);
                }
            }
            self.arm(id, TimerKind::Grace, now.saturating_add(grace));
        }
        Ok(())
    }

    /// Stops the unfinished children of `id` (and theirs) because `id` is being stopped.
    pub(super) fn cascade(
        &mut self,
        id: ProcessId,
        force: bool,
        grace: Option<Span>,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        let children: Vec<_> = self
            .children
            .get(&id)
            .map(|c| c.iter().copied().collect())
            .unwrap_or_default();
        for child in children {
            self.stop(child, StopCause::Cascade { parent: id }, force, grace, now)?;
        }
        Ok(())
    }

    pub(super) fn escalate(&mut self, id: ProcessId, now: Timestamp) -> Result<(), CoreError> {
        if self.transition(id, Transition::Escalate, now)? == Applied::Changed {
            if let Some(pid) = self.entries[&id].record.pid() {
                self.signal(id, pid, Signal::Kill);
            }
            self.cancel_timer(id, TimerKind::Grace);
        }
        Ok(())
    }

    /// A record ended: unblock (or fail) the records waiting for it.
    pub(super) fn release_waiters(&mut self, id: ProcessId, _end: StateName, now: Timestamp) {
        self.wake_waiters(id, now);
    }

    /// `id` moved on (it started, became ready, or ended): the records
    /// waiting for it whose condition it now meets are unblocked, and
    /// those whose condition it can no longer meet (it ended short of it)
    /// fail, naming it ([`crate::Until`]). A record waiting for it to end
    /// (a restart's replacement) is unblocked once it has ended.
    pub(super) fn wake_waiters(&mut self, id: ProcessId, now: Timestamp) {
        let Some(dep) = self.known(id).cloned() else {
            return;
        };
        let Some(waiting) = self.waiters.get(&id).cloned() else {
            return;
        };
        for w in waiting {
            let Some(entry) = self.entries.get_mut(&w) else {
                continue;
            };
            let is_dependency = entry
                .blockers
                .as_deref()
                .is_some_and(|b| b.must_complete.contains(&id));
            let until = entry.record.spec().until_of(id);
            let verdict = if is_dependency {
                dep.meets(until)
            } else {
                dep.is_terminal().then_some(true)
            };
            let Some(met) = verdict else {
                continue;
            };
            entry.unblock(id);
            if let Some(set) = self.waiters.get_mut(&id) {
                set.remove(&w);
            }
            if met {
                self.place(w, now);
            } else {
                let error = until.missed(id, dep.state());
                let _ = self.transition(w, Transition::Fail { error }, now);
            }
        }
        if self.waiters.get(&id).is_some_and(BTreeSet::is_empty) {
            self.waiters.remove(&id);
        }
    }

    /// Unblocks the records waiting for `id`; those that depend on it fail
    /// with `failure`, when it did not complete.
    pub(super) fn unblock_waiters(&mut self, id: ProcessId, failure: Option<&str>, now: Timestamp) {
        let Some(waiting) = self.waiters.remove(&id) else {
            return;
        };
        for w in waiting {
            let Some(entry) = self.entries.get_mut(&w) else {
                continue;
            };
            let was_dependency = entry.unblock(id);
            if let Some(error) = failure.filter(|_| was_dependency).map(str::to_owned) {
                let _ = self.transition(w, Transition::Fail { error }, now);
                continue;
            }
            self.place(w, now);
        }
    }

    pub(super) fn forget(&mut self, id: ProcessId) {
        if let Some(entry) = self.entries.remove(&id) {
            if let Some(p) = entry.record.parent()
                && let Some(c) = self.children.get_mut(&p)
            {
                c.remove(&id);
            }
            self.children.remove(&id);
            self.forget_name(entry.record.spec().name.as_ref(), id);
            self.forget_owners(id, &entry.record.spec().owners);
            self.dirty.remove(&id);
            self.cancel_timer(id, TimerKind::Retention);
            self.out.push(Effect::Delete { id });
        }
    }
}
