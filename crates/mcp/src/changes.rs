//! `what_changed`: for one client, the processes that ended, became ready,
//! unhealthy or healthy again, left their node's reach, or whose leader
//! exited with work running on,
//! since its last call, so that an agent asks one question instead of
//! polling each process.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use bpm_domain::{Event, EventKind, ProcessId, SessionId};

/// How many processes' changes are kept between two calls; beyond it the
/// oldest are dropped, and counted.
pub(super) const KEPT: usize = 1000;

/// Whether an event of `kind` is a change an agent wants told.
pub(super) const fn told(kind: EventKind) -> bool {
    kind.ends_record()
        || matches!(
            kind,
            EventKind::Ready
                | EventKind::Unreachable
                | EventKind::LeaderExited
                | EventKind::Unhealthy
                | EventKind::Healthy
        )
}

/// The changes since the client's last call: the latest of each process,
/// in the order they came.
#[derive(Default)]
pub(super) struct Changes(Mutex<Pending>);

#[derive(Default)]
struct Pending {
    order: VecDeque<ProcessId>,
    latest: HashMap<ProcessId, Event>,
    /// Changes dropped since the last call, the buffer being full.
    overflowed: usize,
}

/// What one call takes.
pub(super) struct Taken {
    /// The changes, oldest first.
    pub(super) changes: Vec<Event>,
    /// Changes that match but were left for the next call (over the limit).
    pub(super) left_out: usize,
    /// Changes dropped since the last call (more than [`KEPT`] processes changed).
    pub(super) overflowed: usize,
}

impl Changes {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes `event` if it is a change to tell.
    pub(super) fn note(&self, event: Event) {
        if !told(event.kind) {
            return;
        }
        let mut p = self.pending();
        let id = event.id;
        if p.latest.insert(id, event).is_none() {
            p.order.push_back(id);
        } else {
            // Moved to its newest place.
            p.order.retain(|o| *o != id);
            p.order.push_back(id);
        }
        while p.order.len() > KEPT {
            if let Some(oldest) = p.order.pop_front() {
                p.latest.remove(&oldest);
                p.overflowed += 1;
            }
        }
    }

    /// Takes up to `limit` changes (of `session` only, if given), oldest
    /// first; the others stay for the next call.
    pub(super) fn take(&self, limit: usize, session: Option<&SessionId>) -> Taken {
        let mut p = self.pending();
        let matching: Vec<ProcessId> = p
            .order
            .iter()
            .filter(|id| session.is_none_or(|s| p.latest[*id].session.as_ref() == Some(s)))
            .copied()
            .collect();
        let left_out = matching.len().saturating_sub(limit);
        let mut changes = Vec::new();
        for id in matching.into_iter().take(limit) {
            if let Some(e) = p.latest.remove(&id) {
                changes.push(e);
            }
        }
        let latest = std::mem::take(&mut p.latest);
        p.order.retain(|id| latest.contains_key(id));
        p.latest = latest;
        Taken {
            changes,
            left_out,
            overflowed: std::mem::take(&mut p.overflowed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpm_domain::{NodeId, ProcessRecord, ProcessSpec, Timestamp};

    fn event(n: u128, kind: EventKind, session: Option<&str>) -> Event {
        let mut spec = ProcessSpec::argv(["true"]);
        spec.session = session.map(|s| s.parse().expect("session"));
        let r = ProcessRecord::new(
            ProcessId::from_uuid(uuid::Uuid::from_u128(n)),
            NodeId::local(),
            spec,
            Timestamp::from_millis(1),
        );
        Event::new(kind, &r, Timestamp::from_millis(2))
    }

    #[test]
    fn the_latest_change_of_each_process_is_told_once_in_order() {
        let c = Changes::default();
        c.note(event(1, EventKind::Started, None));
        c.note(event(1, EventKind::Ready, None));
        c.note(event(2, EventKind::Failed, Some("a")));
        c.note(event(1, EventKind::Completed, None));
        let t = c.take(1, Some(&"a".parse().expect("session")));
        let got: Vec<_> = t
            .changes
            .iter()
            .map(|e| (e.id.to_string(), e.kind))
            .collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, EventKind::Failed);
        assert_eq!(t.left_out, 0);
        let t = c.take(10, None);
        let kinds: Vec<_> = t.changes.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            vec![EventKind::Completed],
            "process 1 once, its latest"
        );
        assert!(c.take(10, None).changes.is_empty(), "told once");
        for n in 0..(KEPT as u128 + 5) {
            c.note(event(100 + n, EventKind::Completed, None));
        }
        let t = c.take(3, None);
        assert_eq!(
            (t.changes.len(), t.left_out, t.overflowed),
            (3, KEPT - 3, 5)
        );
    }
}
