//! Store conflicts: a write the store refused because it holds another
//! version of the record, or none.
//!
//! The rule: a node's core owns its records, so its view wins. A record the
//! store holds in another version is written again over that version (the
//! record takes a version above it); one the store no longer holds is
//! created again, so a process that runs, or an outcome that was answered,
//! is never lost. Only the owner writes a record (other nodes send it
//! commands), so a conflict means a write whose answer was lost (a timeout
//! after Redis took it), or a writer that should not be there.
//!
//! The one exception is a node's loss. While a node's lease is lapsed,
//! another node marks its records `unreachable`, and after `lost_after`
//! gives them up as `lost`. When the node takes its name again
//! ([`Input::Rejoined`](crate::Input::Rejoined)), its view wins over
//! `unreachable`: every record the store holds otherwise is written again.
//! An end the store holds is final for everyone who saw it, so the node
//! ends the record too: its process tree is killed, and the store keeps
//! the end it holds (`lost`, or `failed` if it was still waiting), even
//! when the record ran or ended here meanwhile: another node's dependent
//! may have failed on it, and a caller's wait may have returned it.

use std::collections::HashMap;

use super::{CoreError, Effect, Supervisor};
use crate::{ProcessId, Signal, StateName, Timestamp, Transition};

/// Why a record the store never took is forgotten (seen only by the rules
/// that follow its end within the step, such as a dependent's failure).
const UNSTORED: &str = "the store did not take the record when it was created: nothing was started";

impl Supervisor {
    pub(super) fn store_conflict(
        &mut self,
        id: ProcessId,
        stored: Option<u64>,
    ) -> Result<(), CoreError> {
        let entry = self.entries.get_mut(&id).ok_or(CoreError::NotFound(id))?;
        match stored {
            None => {
                entry.persisted = None;
                entry.persisted_active = false;
                self.dirty.insert(id, None);
            }
            Some(version) => {
                entry.record.rebase(version);
                entry.persisted = Some(version);
                entry.persisted_active = false;
                self.dirty.insert(id, Some(version));
            }
        }
        Ok(())
    }

    pub(super) fn rejoined(&mut self, stored: &[(ProcessId, u64, StateName)], now: Timestamp) {
        let stored: HashMap<_, _> = stored.iter().map(|(id, v, s)| (*id, (*v, *s))).collect();
        let ids: Vec<ProcessId> = self.entries.keys().copied().collect();
        for id in ids {
            let entry = &self.entries[&id];
            let ours = (entry.persisted, entry.record.state());
            let theirs = stored.get(&id).copied();
            if let Some((version, end)) = theirs.filter(|(_, s)| s.is_terminal()) {
                // Ended in the store (given up while this node was away, or
                // ended here before the cut): every node that saw the end
                // may have acted on it (a dependent failed, a wait
                // answered), so it stands. The node ends the record too,
                // killing what still runs of it, and writes nothing.
                if !ours.1.is_terminal() {
                    self.give_up(id, end, now);
                }
                self.dirty.remove(&id);
                self.out
                    .retain(|e| !matches!(e, Effect::Publish(event) if event.id == id));
                if let Some(entry) = self.entries.get_mut(&id) {
                    entry.persisted = Some(version);
                    entry.persisted_active = false;
                }
                continue;
            }
            if theirs != ours.0.map(|v| (v, ours.1)) {
                // Rebased above the stored version and written again.
                let _ = self.store_conflict(id, theirs.map(|(v, _)| v));
            }
        }
    }

    /// Forgets a record whose creation the store never took, unless it
    /// started already: no event, no write, its slot and place in the
    /// queue given back.
    pub(super) fn unstored(&mut self, id: ProcessId, now: Timestamp) -> Result<(), CoreError> {
        let state = self.own(id)?.state();
        let t = match state {
            StateName::Pending => Transition::Fail {
                error: UNSTORED.into(),
            },
            StateName::Starting => Transition::SpawnFailed {
                error: UNSTORED.into(),
            },
            _ => return Ok(()),
        };
        self.order.spawn_dropped(id);
        self.transition(id, t, now)?;
        self.out.retain(|e| match e {
            Effect::Publish(event) => event.id != id,
            Effect::ArmTimer { timer, .. } => timer.id != id,
            _ => true,
        });
        self.forget(id);
        Ok(())
    }

    /// Ends a record the cluster gave up while its node was away.
    fn give_up(&mut self, id: ProcessId, end: StateName, now: Timestamp) {
        if let Some(pid) = self.entries[&id].record.pid() {
            self.out.push(Effect::Signal {
                id,
                pid,
                signal: Signal::Kill,
            });
        }
        let reason = format!(
            "given up by the cluster while node {} was away; its process was killed when the node came back",
            self.node
        );
        // A record failed before it started there fails here too, if it
        // still waits; one that started meanwhile ran, and is lost.
        let waiting = self.entries[&id].record.state() == StateName::Pending;
        let t = if end == StateName::Failed && waiting {
            Transition::Fail { error: reason }
        } else {
            Transition::Lose { reason }
        };
        let _ = self.transition(id, t, now);
    }
}
