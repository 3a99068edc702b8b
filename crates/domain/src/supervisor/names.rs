//! One live record per name on a node: what a submission does when a live
//! record carries its name already ([`crate::NameTaken`]).

use super::{CoreError, Supervisor};
use crate::cluster::placement::NameAnswer;
use crate::{NameTaken, ProcessId, ProcessName, ProcessSpec};

/// What a submission's name asks of the live record of that name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Named {
    /// No live record carries it.
    Free,
    /// Stop it, and start once it has ended.
    Replaces(ProcessId),
    /// Start beside it, and stop it once ready ([`NameTaken::Roll`]).
    Rolls(ProcessId),
}

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

    /// What `spec`'s name allows: [`Named::Free`] when no other live
    /// record of this node carries it (`restarting`, which a restart
    /// replaces, does not count); [`Named::Replaces`] or [`Named::Rolls`]
    /// when it asked to replace or roll over the live one; otherwise why
    /// not ([`CoreError::NameTaken`], which [`CoreError::reused`] reads for
    /// a spec that asked to ensure it).
    pub(super) fn name_rule(
        &self,
        spec: &ProcessSpec,
        restarting: Option<ProcessId>,
    ) -> Result<Named, CoreError> {
        let Some(name) = &spec.name else {
            return Ok(Named::Free);
        };
        let Some(live) = self.live_named(name).filter(|l| Some(*l) != restarting) else {
            return Ok(Named::Free);
        };
        match crate::cluster::placement::name_taken(spec, &self.entries[&live].record) {
            NameAnswer::Replace => Ok(Named::Replaces(live)),
            NameAnswer::Roll => Ok(Named::Rolls(live)),
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
