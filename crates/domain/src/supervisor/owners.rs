//! Lifetime tied to owners ([`crate::Owner`]): a record with owners lives
//! while one of them does, and is stopped ([`StopCause::OwnerGone`]) when
//! the last has been gone for the record's grace.
//!
//! The core asks the driver to watch each owning process
//! ([`Effect::WatchOwner`]), once, and hears [`Input::OwnerGone`] when it
//! is gone; a session lives while a process holds it
//! ([`Input::HoldSession`]). A record found without a living owner is
//! noted with the time, and a timer ([`TimerKind::OwnerGrace`]) looks
//! again when its grace runs out: an owner that came back meanwhile (a
//! client holding its session again) keeps it.
//!
//! [`Input::OwnerGone`]: crate::Input::OwnerGone
//! [`Input::HoldSession`]: crate::Input::HoldSession

use std::collections::{BTreeSet, HashMap, HashSet};

use super::{Effect, Supervisor, TimerKind};
use crate::{Owner, ProcessId, ProcessRef, SessionId, StopCause, Timestamp};

/// What the core knows of owners.
#[derive(Debug, Default)]
pub(super) struct Owners {
    /// Owning (or holding) processes being watched, not known gone.
    watched: HashSet<ProcessRef>,
    /// Each session's holders, not known gone.
    holders: HashMap<SessionId, BTreeSet<ProcessRef>>,
    /// Each owner's records, not forgotten.
    owned: HashMap<Owner, BTreeSet<ProcessId>>,
    /// Live records with owners none of which lives, since when.
    orphaned: HashMap<ProcessId, Timestamp>,
}

impl Owners {
    fn alive(&self, owner: &Owner) -> bool {
        match owner {
            Owner::Process(p) => self.watched.contains(p),
            Owner::Session(s) => self.holders.get(s).is_some_and(|h| !h.is_empty()),
        }
    }
}

impl Supervisor {
    /// Watches `process` unless it is watched already.
    fn watch(&mut self, process: ProcessRef) {
        if self.owners.watched.insert(process) {
            self.out.push(Effect::WatchOwner { process });
        }
    }

    /// Indexes a record's owners (a new one, or one restored) and looks
    /// whether one lives.
    pub(super) fn note_owners(&mut self, id: ProcessId, now: Timestamp) {
        let owners = match self.entries.get(&id) {
            Some(e) if !e.record.spec().owners.is_empty() && !e.record.is_terminal() => {
                e.record.spec().owners.clone()
            }
            _ => return,
        };
        for owner in owners {
            if let Owner::Process(p) = &owner {
                self.watch(*p);
            }
            self.owners.owned.entry(owner).or_default().insert(id);
        }
        self.look_at_owners(id, now);
    }

    /// Forgets a record being forgotten.
    pub(super) fn forget_owners(&mut self, id: ProcessId, owners: &[Owner]) {
        for owner in owners {
            if let Some(ids) = self.owners.owned.get_mut(owner) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.owners.owned.remove(owner);
                }
            }
        }
        self.owners.orphaned.remove(&id);
    }

    /// Notes whether `id` has a living owner; one that has none starts
    /// its grace (once), and one that has again loses the mark.
    fn look_at_owners(&mut self, id: ProcessId, now: Timestamp) {
        let Some(entry) = self.entries.get(&id) else {
            return;
        };
        let record = &entry.record;
        let owners = &record.spec().owners;
        if owners.is_empty() || record.is_terminal() {
            return;
        }
        if owners.iter().any(|o| self.owners.alive(o)) {
            self.owners.orphaned.remove(&id);
            return;
        }
        if self.owners.orphaned.contains_key(&id) {
            return;
        }
        let grace = record.spec().grace_after_owners();
        self.owners.orphaned.insert(id, now);
        self.arm(id, TimerKind::OwnerGrace, now.saturating_add(grace));
    }

    /// `process` is gone: the records it owned, and those of the sessions
    /// it was the last holder of, start their grace.
    pub(super) fn owner_gone(&mut self, process: ProcessRef, now: Timestamp) {
        self.owners.watched.remove(&process);
        let mut touched: Vec<ProcessId> = Vec::new();
        if let Some(ids) = self.owners.owned.get(&Owner::Process(process)) {
            touched.extend(ids);
        }
        let mut emptied = Vec::new();
        for (session, holders) in &mut self.owners.holders {
            if holders.remove(&process) && holders.is_empty() {
                emptied.push(session.clone());
            }
        }
        for session in emptied {
            self.owners.holders.remove(&session);
            if let Some(ids) = self.owners.owned.get(&Owner::Session(session)) {
                touched.extend(ids);
            }
        }
        for id in touched {
            self.look_at_owners(id, now);
        }
    }

    /// `holder` holds `session`: its records have a living owner again.
    pub(super) fn hold_session(&mut self, session: SessionId, holder: ProcessRef, now: Timestamp) {
        self.watch(holder);
        self.owners
            .holders
            .entry(session.clone())
            .or_default()
            .insert(holder);
        let ids: Vec<ProcessId> = self
            .owners
            .owned
            .get(&Owner::Session(session))
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default();
        for id in ids {
            self.look_at_owners(id, now);
        }
    }

    /// `holder` lets go of `session`: when no other process holds it, its
    /// records start their grace. The holder is still watched: it may own
    /// records, or hold other sessions.
    pub(super) fn release_session(
        &mut self,
        session: &SessionId,
        holder: ProcessRef,
        now: Timestamp,
    ) {
        let Some(holders) = self.owners.holders.get_mut(session) else {
            return;
        };
        if !holders.remove(&holder) || !holders.is_empty() {
            return;
        }
        self.owners.holders.remove(session);
        let ids: Vec<ProcessId> = self
            .owners
            .owned
            .get(&Owner::Session(session.clone()))
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default();
        for id in ids {
            self.look_at_owners(id, now);
        }
    }

    /// The grace of `id` ran out: it is stopped if it still has no living
    /// owner and was orphaned that long ago.
    pub(super) fn owner_grace_over(&mut self, id: ProcessId, now: Timestamp) {
        let Some(since) = self.owners.orphaned.get(&id).copied() else {
            return;
        };
        let Some(record) = self.entries.get(&id).map(|e| &e.record) else {
            self.owners.orphaned.remove(&id);
            return;
        };
        let grace = record.spec().grace_after_owners();
        if now < since.saturating_add(grace) {
            return;
        }
        self.owners.orphaned.remove(&id);
        // One that ended meanwhile is left as it is.
        let _ = self.stop(id, StopCause::OwnerGone, false, None, now);
    }
}
