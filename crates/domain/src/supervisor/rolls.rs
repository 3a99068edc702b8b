//! Rolling replaces ([`crate::NameTaken::Roll`]): a new record of a name
//! starts beside the live one and, once it is ready, the live one stops
//! (`replaced`); if the new one ends before it is ready, the live one
//! runs on and keeps the name.

use super::{CoreError, Supervisor};
use crate::{NameTaken, ProcessId, StopCause, Timestamp};

impl Supervisor {
    /// `id` became ready: the record it rolls over, if it still runs,
    /// stops as replaced by it.
    pub(super) fn roll_over(&mut self, id: ProcessId, now: Timestamp) -> Result<(), CoreError> {
        let Some(old) = self.rolls.remove(&id) else {
            return Ok(());
        };
        if self
            .entries
            .get(&old)
            .is_some_and(|e| !e.record.is_terminal())
        {
            self.stop(old, StopCause::Replaced { by: id }, false, None, now)?;
        }
        Ok(())
    }

    /// `id` ended: if it was rolling over a live record, that roll failed,
    /// and the live record keeps the name.
    pub(super) fn roll_ended(&mut self, id: ProcessId) {
        // Every end comes here: with no roll under way, nothing to do.
        if self.rolls.is_empty() {
            return;
        }
        if let Some(old) = self.rolls.remove(&id)
            && let Some(entry) = self.entries.get(&old)
            && !entry.record.is_terminal()
        {
            let name = entry.record.spec().name.clone();
            self.note_name(name.as_ref(), old);
        }
        // A record being rolled over that ends first leaves nothing to stop.
        self.rolls.retain(|_, rolled| *rolled != id);
    }

    /// The rolls under way in records just taken back (a daemon that
    /// restarted): each live record that asked to roll and is not ready
    /// yet rolls over the live record of its name that is older.
    pub(super) fn find_rolls(&mut self) {
        let rolling: Vec<(ProcessId, crate::ProcessName)> = self
            .entries
            .values()
            .map(|e| &e.record)
            .filter(|r| {
                r.spec().if_name_taken == NameTaken::Roll
                    && !r.is_terminal()
                    && r.lifecycle().ready_at().is_none()
            })
            .filter_map(|r| r.spec().name.clone().map(|n| (r.id(), n)))
            .collect();
        for (id, name) in rolling {
            let old = self
                .entries
                .values()
                .map(|e| &e.record)
                .filter(|r| {
                    r.id() != id && !r.is_terminal() && r.spec().name.as_ref() == Some(&name)
                })
                .filter(|r| r.id() < id)
                .max_by_key(|r| r.id())
                .map(crate::ProcessRecord::id);
            if let Some(old) = old {
                self.rolls.insert(id, old);
            }
        }
    }
}
