//! Timers: arming, cancelling, and what each does when it fires.

use super::{Effect, Supervisor, Timer, TimerKind};
use crate::{ProcessId, StateName, StopCause, Timestamp, Transition};

impl Supervisor {
    pub(super) fn timer_fired(&mut self, timer: Timer, now: Timestamp) {
        // An owner's grace outlives the record's restarts.
        if timer.kind == TimerKind::OwnerGrace {
            self.owner_grace_over(timer.id, now);
            return;
        }
        // A change settles whatever attempt the record is at.
        if timer.kind == TimerKind::FilesSettled {
            self.files_settled(timer.id, now);
            return;
        }
        let Some(entry) = self.entries.get(&timer.id) else {
            return;
        };
        let record = &entry.record;
        if timer.attempt != record.restarts() {
            return;
        }
        let id = timer.id;
        let state = record.state();
        let tracked = record.is_tracked();
        let awaiting_ready = matches!(state, StateName::Running | StateName::Paused)
            && record.lifecycle().ready_at().is_none();
        let readiness_timeout = record.spec().readiness.timeout.unwrap_or_default();
        let retention_due = record
            .lifecycle()
            .ended_at()
            .zip(self.limits.retention)
            .is_some_and(|(end, keep)| now >= end.saturating_add(keep.as_duration()));
        // Each timer is checked against the record's state: one that lost a race
        // with an exit or a stop is ignored, never an error.
        let _ = match timer.kind {
            TimerKind::NotBefore if state == StateName::Pending => {
                self.place(id, now);
                Ok(())
            }
            TimerKind::Timeout if !state.is_terminal() && state != StateName::Stopping => {
                if tracked {
                    self.cascade(id, false, None, now)
                        .and_then(|()| self.transition(id, Transition::TimeOut, now).map(|_| ()))
                } else {
                    self.stop(id, StopCause::Timeout, false, None, now)
                }
            }
            TimerKind::Grace if state == StateName::Stopping => self.escalate(id, now),
            TimerKind::Readiness if awaiting_ready => self.stop(
                id,
                StopCause::NotReady {
                    after: readiness_timeout,
                },
                false,
                None,
                now,
            ),
            TimerKind::Due => {
                self.due(id, now);
                Ok(())
            }
            TimerKind::Retention if state.is_terminal() && retention_due => {
                self.forget(id);
                Ok(())
            }
            _ => Ok(()),
        };
    }

    pub(super) fn timer(&self, id: ProcessId, kind: TimerKind) -> Timer {
        Timer {
            id,
            kind,
            attempt: self.entries.get(&id).map_or(0, |e| e.record.restarts()),
        }
    }

    pub(super) fn arm(&mut self, id: ProcessId, kind: TimerKind, at: Timestamp) {
        let timer = self.timer(id, kind);
        self.out.push(Effect::ArmTimer { timer, at });
    }

    pub(super) fn cancel_timer(&mut self, id: ProcessId, kind: TimerKind) {
        let timer = self.timer(id, kind);
        self.out.push(Effect::CancelTimer { timer });
    }
}
