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

use super::{CoreError, Supervisor};
use crate::ProcessId;

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
}
