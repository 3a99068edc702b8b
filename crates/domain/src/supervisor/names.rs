//! One live record per name on a node: what a submission does when a live
//! record carries its name already ([`crate::NameTaken`]).

use super::{CoreError, Supervisor};
use crate::cluster::placement::NameAnswer;
use crate::{NameTaken, ProcessId, ProcessName, ProcessSpec};

impl Supervisor {
    /// Notes that `id` is the newest record of this node named `name`.
    pub(super) fn note_name(&mut self, name: Option<&ProcessName>, id: ProcessId) {
        if let Some(name) = name {
            self.names.insert(name.clone(), id);
        }
    }

    /// Forgets `name` if `id`, a record being forgotten, is the newest
    /// that carried it: the index holds no more names than records.
    pub(super) fn forget_name(&mut self, name: Option<&ProcessName>, id: ProcessId) {
        if let Some(name) = name
            && self.names.get(name) == Some(&id)
        {
            self.names.remove(name);
        }
    }

    /// The live record of this node named `name`, if any.
    fn live_named(&self, name: &ProcessName) -> Option<ProcessId> {
        let id = *self.names.get(name)?;
        let entry = self.entries.get(&id)?;
        let r = &entry.record;
        (r.node() == &self.node && !r.is_terminal() && r.spec().name.as_ref() == Some(name))
            .then_some(id)
    }

    /// What `spec`'s name allows: `Ok(None)` when no other live record of
    /// this node carries it (`restarting`, which a restart replaces, does
    /// not count); `Ok(Some(live))` when it asked to replace the live one;
    /// otherwise why not ([`CoreError::NameTaken`], which
    /// [`CoreError::reused`] reads for a spec that asked to ensure it).
    pub(super) fn name_rule(
        &self,
        spec: &ProcessSpec,
        restarting: Option<ProcessId>,
    ) -> Result<Option<ProcessId>, CoreError> {
        let Some(name) = &spec.name else {
            return Ok(None);
        };
        let Some(live) = self.live_named(name).filter(|l| Some(*l) != restarting) else {
            return Ok(None);
        };
        match crate::cluster::placement::name_taken(spec, &self.entries[&live].record) {
            NameAnswer::Replace => Ok(Some(live)),
            // Reused: the caller reads the refusal ([`CoreError::reused`]).
            NameAnswer::Reuse => Err(CoreError::NameTaken {
                name: name.clone(),
                id: live,
                state: self.entries[&live].record.state(),
                asked: NameTaken::Ensure,
                differences: Vec::new(),
            }),
            NameAnswer::Refuse(e) => Err(e),
        }
    }
}
