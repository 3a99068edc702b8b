//! Schedules ([`crate::Schedule`]): a schedule record has no process; at
//! each due time it submits a run, a record of its own with
//! `scheduled_from`, whose id follows from the schedule and the due time
//! ([`crate::run_id`]), so a due time never makes two runs, however often
//! it is reached (a restart of the daemon, another node). Where it stands
//! (next due time, runs, skips) is kept on its record.

use super::{Supervisor, TimerKind};
use crate::{Overlap, ProcessId, ScheduleState, StateName, Timestamp, Transition, Until, run_id};

/// How late a due time may be reached (the daemon was restarting) and
/// still run; later than this, it was missed.
const LATE_AT_MOST: std::time::Duration = std::time::Duration::from_secs(1);

impl Supervisor {
    /// A schedule just admitted: its first due time is set and armed.
    pub(super) fn schedule_started(&mut self, id: ProcessId, now: Timestamp) {
        let Some(record) = self.entries.get(&id).map(|e| &e.record) else {
            return;
        };
        let Some(schedule) = record.spec().schedule.as_ref() else {
            return;
        };
        let next_due = if schedule.run_now {
            Some(now)
        } else {
            schedule.next_due(record.created_at(), now)
        };
        let Some(next_due) = next_due else {
            self.schedule_over(id, now);
            return;
        };
        let state = ScheduleState {
            next_due,
            runs: 0,
            skipped: 0,
            missed: 0,
            last_run: None,
        };
        let _ = self.transition(id, Transition::Scheduled { state }, now);
        self.arm_due(id);
    }

    /// A schedule found running after a restart, or resumed: due times
    /// passed meanwhile are missed (and counted), the last of them run late
    /// when the schedule catches up, and the next one is armed.
    pub(super) fn schedule_back(&mut self, id: ProcessId, now: Timestamp, resumed: bool) {
        let Some(record) = self.entries.get(&id).map(|e| &e.record) else {
            return;
        };
        let (Some(schedule), Some(state)) = (record.spec().schedule.clone(), record.schedule())
        else {
            // Made by a step that never finished: it starts now.
            self.schedule_started(id, now);
            return;
        };
        let mut state = state.clone();
        let anchor = record.created_at();
        let start = schedule.start_of(id, state.next_due);
        if start.saturating_add(LATE_AT_MOST) < now
            && let Some((last, passed)) = schedule.last_due(anchor, state.next_due, now)
        {
            let late = schedule.catch_up && !resumed;
            let run_late = late.then_some(last);
            let counted = passed - u64::from(late);
            if resumed {
                state.skipped += counted;
            } else {
                state.missed += counted;
            }
            if let Some(due) = run_late {
                self.start_run(id, due, &mut state, now);
            }
            let Some(next) = schedule.next_due(anchor, now) else {
                let _ = self.transition(id, Transition::Scheduled { state }, now);
                self.schedule_over(id, now);
                return;
            };
            state.next_due = next;
            let _ = self.transition(id, Transition::Scheduled { state }, now);
        }
        self.arm_due(id);
    }

    /// Arms the schedule's next start.
    fn arm_due(&mut self, id: ProcessId) {
        let record = &self.entries[&id].record;
        let (Some(schedule), Some(state)) = (record.spec().schedule.as_ref(), record.schedule())
        else {
            return;
        };
        let at = schedule.start_of(id, state.next_due);
        self.arm(id, TimerKind::Due, at);
    }

    /// The schedule's due time came: a run starts, unless the previous
    /// one is live and the overlap rule skips it; the next due time is set.
    pub(super) fn due(&mut self, id: ProcessId, now: Timestamp) {
        let Some(record) = self.entries.get(&id).map(|e| &e.record) else {
            return;
        };
        if record.state() != StateName::Running {
            return;
        }
        let (Some(schedule), Some(state)) = (record.spec().schedule.clone(), record.schedule())
        else {
            return;
        };
        let mut state = state.clone();
        let anchor = record.created_at();
        if now < schedule.start_of(id, state.next_due) {
            self.arm_due(id);
            return;
        }
        let due = state.next_due;
        self.start_run(id, due, &mut state, now);
        let next = schedule.next_due(anchor, due.max(now));
        if let Some(next) = next {
            // Due times passed while this one ran late are skipped.
            if let Some((_, passed)) = schedule.last_due(anchor, due, now) {
                state.skipped += passed - 1;
            }
            state.next_due = next;
        }
        let _ = self.transition(id, Transition::Scheduled { state }, now);
        match next {
            Some(_) => self.arm_due(id),
            None => self.schedule_over(id, now),
        }
    }

    /// Starts the run of `id` due at `due`, or counts it skipped.
    fn start_run(
        &mut self,
        id: ProcessId,
        due: Timestamp,
        state: &mut ScheduleState,
        now: Timestamp,
    ) {
        let run = run_id(id, due);
        if self.entries.contains_key(&run) {
            // Started by a step before a restart.
            return;
        }
        let record = &self.entries[&id].record;
        let overlap = record
            .spec()
            .schedule
            .as_ref()
            .map_or(Overlap::Skip, |s| s.overlap);
        let live = state.last_run.filter(|last| {
            self.entries
                .get(last)
                .is_some_and(|e| !e.record.is_terminal())
        });
        let mut spec = record.spec().run_of_schedule();
        // A schedule placed on any node runs where the claim put it.
        spec.node = Some(self.node.clone());
        spec.node_labels.clear();
        match (live, overlap) {
            (Some(_), Overlap::Skip) => {
                state.skipped += 1;
                return;
            }
            (Some(last), Overlap::Queue) => {
                spec.dependencies.push(last);
                spec.until.insert(last, Until::Ended);
            }
            _ => {}
        }
        if self.submit(run, spec, None, None, now).is_err() {
            state.skipped += 1;
            return;
        }
        if let Some(entry) = self.entries.get_mut(&run) {
            entry.record = entry.record.clone().run_of(id);
        }
        state.runs += 1;
        state.last_run = Some(run);
    }

    /// A schedule with no due time left: it completes.
    fn schedule_over(&mut self, id: ProcessId, now: Timestamp) {
        let _ = self.transition(id, Transition::Complete { result: None }, now);
    }
}
