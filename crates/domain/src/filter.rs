//! Which records a listing wants.

use serde::{Deserialize, Serialize};

use crate::{
    GroupName, LabelKey, LabelValue, NodeId, ProcessId, ProcessKind, ProcessRecord, SessionId,
    StateName,
};

/// A filter over records. Every set field must match; an empty filter matches all.
/// Listings are ordered by id, which (for v7 ids) is creation order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ListFilter {
    /// Only these states (any of them).
    pub states: Vec<StateName>,
    /// Only this session.
    pub session: Option<SessionId>,
    /// Only children of this parent.
    pub parent: Option<ProcessId>,
    /// Only this node.
    pub node: Option<NodeId>,
    /// Only this group.
    pub group: Option<GroupName>,
    /// Only this kind.
    pub kind: Option<ProcessKind>,
    /// Only records carrying every one of these labels.
    pub labels: Vec<(LabelKey, LabelValue)>,
    /// Only records submitted by this client request ([`crate::RequestRef`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<uuid::Uuid>,
    /// Only the records this text, as a person types it, could mean: those
    /// whose id it fits ([`ProcessId::fits`]) and those of this name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refers_to: Option<Box<str>>,
    /// Only records with an id greater than this (for paging).
    pub after: Option<ProcessId>,
    /// At most this many records.
    pub limit: Option<usize>,
}

impl ListFilter {
    /// The records that hold a slot: starting, running, paused or stopping.
    pub fn holding_slots() -> Self {
        ListFilter {
            states: StateName::ALL
                .into_iter()
                .filter(|s| s.is_active())
                .collect(),
            ..ListFilter::default()
        }
    }

    /// The records not yet finished (pending or holding a slot).
    pub fn live() -> Self {
        ListFilter {
            states: StateName::LIVE.to_vec(),
            ..ListFilter::default()
        }
    }

    /// The finished records.
    pub fn finished() -> Self {
        ListFilter {
            states: StateName::ALL
                .into_iter()
                .filter(|s| s.is_terminal())
                .collect(),
            ..ListFilter::default()
        }
    }

    /// Whether `record` passes every condition but `after` and `limit`.
    pub fn matches(&self, record: &ProcessRecord) -> bool {
        (self.states.is_empty() || self.states.contains(&record.state()))
            && self
                .session
                .as_ref()
                .is_none_or(|s| record.session() == Some(s))
            && self.parent.is_none_or(|p| record.parent() == Some(p))
            && self.node.as_ref().is_none_or(|n| record.node() == n)
            && self
                .group
                .as_ref()
                .is_none_or(|g| record.group() == Some(g))
            && self.kind.is_none_or(|k| record.spec().kind == k)
            && self
                .labels
                .iter()
                .all(|(k, v)| record.spec().labels.get(k) == Some(v))
            && self
                .request
                .is_none_or(|r| record.spec().request.is_some_and(|q| q.id == r))
            && self
                .refers_to
                .as_deref()
                .is_none_or(|t| record.id().fits(t) || record.is_named(t))
            && self.after.is_none_or(|a| record.id() > a)
    }
}
