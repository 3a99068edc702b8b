//! Notices in any order.
//!
//! The spawner's notices about a process (its exit, its readiness, its
//! idleness, its loss, a start made on its exit) can overtake the report of
//! its own start, which travels another way (the spawn's answer). The core
//! takes them in whatever order they come: a notice about a record whose
//! start is not known yet is held, and handled as soon as the start is.
//! A start is not known yet while the record's spawn is under way
//! ([`Effect::Spawn`](super::Effect::Spawn) not yet answered), or while the
//! notice that reports it (an [`Input::HandedOver`] naming it `next`) is
//! itself held.

use std::collections::{HashMap, HashSet};

use super::{CoreError, Input, Supervisor, Transition};
use crate::{ProcessId, Timestamp};

/// What the core holds back until a start is known.
#[derive(Debug, Default)]
pub(super) struct Order {
    /// Records whose spawn is under way.
    spawning: HashSet<ProcessId>,
    /// Records whose start a held notice reports.
    reported: HashSet<ProcessId>,
    /// The notices held, per record, in the order they came.
    held: HashMap<ProcessId, Vec<Input>>,
}

impl Order {
    /// The core asked for `id`'s spawn.
    pub(super) fn spawn_asked(&mut self, id: ProcessId) {
        self.spawning.insert(id);
    }

    /// The core will not hear of `id`'s spawn: it was never made.
    pub(super) fn spawn_dropped(&mut self, id: ProcessId) {
        self.spawning.remove(&id);
    }

    fn waits_for_start(&self, id: ProcessId) -> bool {
        self.spawning.contains(&id) || self.reported.contains(&id)
    }
}

/// The record a notice is about, for the notices that can come early.
fn noticed(input: &Input) -> Option<ProcessId> {
    match input {
        Input::Exited { id, .. }
        | Input::HandedOver { id, .. }
        | Input::Ready { id }
        | Input::Idle { id }
        | Input::Health { id, .. }
        | Input::LeaderExited { id, .. }
        | Input::Lost { id, .. } => Some(*id),
        _ => None,
    }
}

impl Supervisor {
    /// Whether the spawn of `id` is under way: asked for
    /// ([`Effect::Spawn`](super::Effect::Spawn)) and not yet answered.
    pub fn spawn_under_way(&self, id: ProcessId) -> bool {
        self.order.spawning.contains(&id)
    }

    /// How many spawns are under way.
    pub fn spawns_under_way(&self) -> usize {
        self.order.spawning.len()
    }

    /// `input`, or `None` if it is a notice that must wait for its record's
    /// start (it is then held).
    pub(super) fn hold_early(&mut self, input: Input) -> Option<Input> {
        let Some(id) = noticed(&input) else {
            return Some(input);
        };
        if !self.order.waits_for_start(id) {
            return Some(input);
        }
        if let Input::HandedOver { next, .. } = &input {
            // Its own notices wait behind this one.
            self.order.reported.insert(*next);
        }
        self.order.held.entry(id).or_default().push(input);
        None
    }

    /// The answer to a spawn: `Spawned`, `SpawnFailed` or `SpawnLost`. The
    /// notices held for the record follow it.
    pub(super) fn spawn_result(&mut self, input: Input, now: Timestamp) -> Result<(), CoreError> {
        let (id, result) = match input {
            Input::Spawned { id, pid } => {
                self.order.spawning.remove(&id);
                (id, self.spawned(id, pid, now))
            }
            Input::SpawnFailed { id, error } => {
                self.order.spawning.remove(&id);
                (
                    id,
                    self.end_spawn(id, Transition::SpawnFailed { error }, now),
                )
            }
            Input::SpawnLost { id, reason } => {
                self.order.spawning.remove(&id);
                (id, self.end_spawn(id, Transition::Lose { reason }, now))
            }
            _ => return Ok(()),
        };
        // Even after a refused answer: a held start on an exit must be known.
        self.release(id, now);
        match result {
            Err(e) if self.dirty.is_empty() && self.out.is_empty() => Err(e),
            _ => Ok(()),
        }
    }

    /// A spawn that made no process (or none bpm can know of) ends `id` with `t`.
    fn end_spawn(&mut self, id: ProcessId, t: Transition, now: Timestamp) -> Result<(), CoreError> {
        self.own(id)?;
        self.transition(id, t, now)?;
        Ok(())
    }

    /// A notice reporting the start of `id` is being handled.
    pub(super) fn start_heard(&mut self, id: ProcessId) {
        self.order.reported.remove(&id);
    }

    /// Handles the notices held for `id`, once its start is known.
    pub(super) fn release(&mut self, id: ProcessId, now: Timestamp) {
        if self.order.waits_for_start(id) {
            return;
        }
        let Some(held) = self.order.held.remove(&id) else {
            return;
        };
        for notice in held {
            // A notice that no longer applies changes nothing, as it would
            // have had it come in its turn.
            let _ = self.dispatch(notice, now);
        }
    }
}
