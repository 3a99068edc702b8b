//! Placement on any node (`--node any`): the rules of the cluster-wide
//! queue.
//!
//! A record placed on any node is created *unplaced*: its node is
//! [`NodeId::any`], it is pending, and no core holds it. The store keeps it
//! in a queue of its class ([`Queued`]: its group and the node labels it
//! needs), in priority then submission order. A node with room
//! ([`Room`], from its core) takes the first record it [`takes`] among the
//! classes' heads, in one atomic step of the store, and its core adopts the
//! record ([`crate::Input::Claimed`]), which sets the record's node once
//! ([`ProcessRecord::placed_on`]). A claim whose record was never written
//! (its node died in between) goes back to the queue.
//!
//! The store (Redis) applies [`takes`] and [`Queued`]'s order inside a
//! script; this module says what they mean, so that every implementation
//! and the simulation agree.

use std::collections::BTreeSet;

use crate::{
    CoreError, GroupName, NodeId, NodeState, ProcessId, ProcessRecord, ProcessSpec, SpecError,
    StateName, Timestamp,
};

/// What a submission does when `live`, a live record of its scope (its
/// node, or the whole cluster for one placed on any node), carries its
/// name ([`crate::ProcessSpec::if_name_taken`]).
#[derive(Debug, Clone, PartialEq)]
pub enum NameAnswer {
    /// Answer with `live`: it runs what was asked for.
    Reuse,
    /// Stop `live`, and start the new one once it has ended.
    Replace,
    /// Start the new one beside `live`, and stop `live` once the new one
    /// is ready ([`crate::NameTaken::Roll`]).
    Roll,
    /// Refuse it ([`CoreError::NameTaken`]).
    Refuse(CoreError),
}

/// The one rule for a name taken, on a node and across the cluster.
pub fn name_taken(spec: &ProcessSpec, live: &ProcessRecord) -> NameAnswer {
    let Some(name) = &spec.name else {
        return NameAnswer::Refuse(SpecError::NameTakenWithoutName.into());
    };
    let differences: Vec<String> = match spec.if_name_taken {
        crate::NameTaken::Replace => return NameAnswer::Replace,
        crate::NameTaken::Roll => return NameAnswer::Roll,
        crate::NameTaken::Ensure => live
            .spec()
            .differences(spec)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        crate::NameTaken::Refuse => Vec::new(),
    };
    if spec.if_name_taken == crate::NameTaken::Ensure && differences.is_empty() {
        return NameAnswer::Reuse;
    }
    NameAnswer::Refuse(CoreError::NameTaken {
        name: name.clone(),
        id: live.id(),
        state: live.state(),
        asked: spec.if_name_taken,
        differences,
    })
}

pub use super::lease::NodeLabels;

/// What a node can take now, as its core says ([`crate::Supervisor::room`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Room {
    /// Free slots: the overall limit less what holds a slot or waits, ready, for one.
    pub free: usize,
    /// Groups whose limit here is reached.
    pub full_groups: BTreeSet<GroupName>,
    /// Whether a group not named in `full_groups` and without a limit of
    /// its own is full too (a default group limit of 0).
    pub others_full: bool,
    /// Groups with a limit of their own (the rest take the default).
    pub limited_groups: BTreeSet<GroupName>,
}

impl Room {
    /// Whether a record of `group` has room here, slots aside.
    pub fn admits(&self, group: Option<&GroupName>) -> bool {
        match group {
            None => true,
            Some(g) if self.full_groups.contains(g) => false,
            Some(g) => !self.others_full || self.limited_groups.contains(g),
        }
    }
}

/// Whether a node carrying `labels` may run a record that requires `required`.
pub fn carries(labels: &NodeLabels, required: &NodeLabels) -> bool {
    required.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Whether a node carrying `labels` with `room` takes `record` now: it is
/// unplaced and pending, the node has a free slot and room in its group,
/// and carries every label it requires.
pub fn takes(room: &Room, labels: &NodeLabels, record: &ProcessRecord) -> bool {
    record.node().is_any()
        && record.state() == StateName::Pending
        && room.free > 0
        && room.admits(record.group())
        && carries(labels, &record.spec().node_labels)
}

/// A new unplaced record for `spec`, placed on any node.
///
/// # Errors
/// The spec's [`SpecError`]; [`SpecError::NotForTracked`] for a tracked
/// operation with no command (its work is its caller's, where it runs);
/// [`SpecError::NodeLabelsWithoutAny`] unless the spec is placed on any node.
pub fn unplaced(
    id: ProcessId,
    spec: ProcessSpec,
    now: Timestamp,
) -> Result<ProcessRecord, SpecError> {
    spec.validate()?;
    // A schedule is queued as any record is: the node that claims it
    // holds it, and runs its runs.
    if spec.command.is_none() {
        return Err(SpecError::NotForTracked("the placement any".into()));
    }
    if !spec.node.as_ref().is_some_and(NodeId::is_any) {
        return Err(SpecError::NodeLabelsWithoutAny);
    }
    Ok(ProcessRecord::new(id, NodeId::any(), spec, now))
}

/// Why a spec placed on any node cannot be queued, from the states of the
/// records it names as the store holds them (`None`: not there): a
/// dependency or parent that does not exist, or a parent that ended or is
/// being stopped, as a node's core would refuse it.
///
/// # Errors
/// [`CoreError::UnknownDependency`], [`CoreError::ParentNotFound`] or
/// [`CoreError::ParentNotLive`].
pub fn check_named(
    spec: &ProcessSpec,
    state_of: impl Fn(ProcessId) -> Option<StateName>,
) -> Result<(), CoreError> {
    for dep in &spec.dependencies {
        state_of(*dep).ok_or(CoreError::UnknownDependency(*dep))?;
    }
    if let Some(parent) = spec.parent {
        let state = state_of(parent).ok_or(CoreError::ParentNotFound(parent))?;
        if state.is_terminal() || state == StateName::Stopping {
            return Err(CoreError::ParentNotLive { parent, state });
        }
    }
    Ok(())
}

/// Where an unplaced record waits in the store's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Its class: `@` and its group (or `@` alone) on the first line, then
    /// each node label it requires as `key=value`, one a line, in key order. Records
    /// of one class are taken in order; a node looks at each class's first.
    pub class: String,
    /// Its place within the class, lowest first: the negated priority.
    /// Ties go by id, which grows with submission time.
    pub score: i64,
}

impl Queued {
    /// The queue place of `record`, if it waits unplaced.
    pub fn of(record: &ProcessRecord) -> Option<Queued> {
        if !record.node().is_any() || record.state() != StateName::Pending {
            return None;
        }
        let mut class = format!("@{}", record.group().map_or("", GroupName::as_str));
        for (k, v) in &record.spec().node_labels {
            class.push('\n');
            class.push_str(k.as_str());
            class.push('=');
            class.push_str(v.as_str());
        }
        Some(Queued {
            class,
            score: -i64::from(record.spec().priority),
        })
    }

    /// The order in which a node takes unplaced records: priority, then id.
    pub fn order(record: &ProcessRecord) -> (i64, ProcessId) {
        (-i64::from(record.spec().priority), record.id())
    }
}

/// A node as a record waiting for one sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The node.
    pub node: NodeId,
    /// Its state.
    pub state: NodeState,
    /// The labels it carries.
    pub labels: NodeLabels,
}

/// Why an unplaced record still waits, from the nodes there are; `None`
/// if it is placed or no longer pending.
pub fn why_waiting(record: &ProcessRecord, nodes: &[Offer]) -> Option<String> {
    if !record.node().is_any() || record.state() != StateName::Pending {
        return None;
    }
    let required = &record.spec().node_labels;
    let alive: Vec<&Offer> = nodes
        .iter()
        .filter(|n| matches!(n.state, NodeState::Alive | NodeState::Suspect))
        .collect();
    let wanted = || {
        required
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let names = |nodes: &[&Offer]| {
        nodes
            .iter()
            .map(|n| n.node.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if alive.is_empty() {
        return Some("no node is alive to take it".into());
    }
    let fitting: Vec<&Offer> = alive
        .iter()
        .copied()
        .filter(|n| carries(&n.labels, required))
        .collect();
    if fitting.is_empty() {
        return Some(format!(
            "no alive node carries the labels {} (alive: {})",
            wanted(),
            names(&alive)
        ));
    }
    let group = record
        .group()
        .map_or(String::new(), |g| format!(" in group {g}"));
    Some(format!(
        "waiting for a free slot{group} on {}",
        names(&fitting)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LabelKey, LabelValue};

    fn labels(pairs: &[(&str, &str)]) -> NodeLabels {
        pairs
            .iter()
            .map(|(k, v)| (LabelKey::new(*k).unwrap(), LabelValue::new(*v).unwrap()))
            .collect()
    }

    fn any_spec() -> ProcessSpec {
        let mut spec = ProcessSpec::argv(["true"]);
        spec.node = Some(NodeId::any());
        spec
    }

    fn id(n: u128) -> ProcessId {
        ProcessId::from_uuid(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn a_node_takes_what_fits_its_labels_slots_and_groups() {
        let mut spec = any_spec();
        spec.group = Some(GroupName::new("gpu-jobs").unwrap());
        spec.node_labels = labels(&[("gpu", "true")]);
        let r = unplaced(id(1), spec, Timestamp::from_millis(5)).unwrap();
        let room = Room {
            free: 1,
            ..Room::default()
        };
        assert!(takes(
            &room,
            &labels(&[("gpu", "true"), ("os", "linux")]),
            &r
        ));
        assert!(!takes(&room, &labels(&[("gpu", "false")]), &r));
        assert!(!takes(&room, &NodeLabels::new(), &r));
        let full = Room {
            free: 0,
            ..Room::default()
        };
        assert!(!takes(&full, &labels(&[("gpu", "true")]), &r));
        let group_full = Room {
            free: 3,
            full_groups: [GroupName::new("gpu-jobs").unwrap()].into(),
            ..Room::default()
        };
        assert!(!takes(&group_full, &labels(&[("gpu", "true")]), &r));
        let default_zero = Room {
            free: 3,
            others_full: true,
            ..Room::default()
        };
        assert!(!default_zero.admits(r.group()));
        assert!(default_zero.admits(None));
        let placed = r.placed_on(&NodeId::new("alpha").unwrap(), Timestamp::from_millis(9));
        let placed = placed.expect("an unplaced pending record is placed");
        assert_eq!(placed.node().as_str(), "alpha");
        assert_eq!(placed.version(), r.version() + 1);
        assert!(!takes(&room, &labels(&[("gpu", "true")]), &placed));
        assert!(
            placed
                .placed_on(&NodeId::new("beta").unwrap(), Timestamp::from_millis(10))
                .is_none()
        );
        assert!(
            r.placed_on(&NodeId::any(), Timestamp::from_millis(10))
                .is_none()
        );
    }

    #[test]
    fn queue_places_order_by_priority_then_submission() {
        let mut high = any_spec();
        high.priority = 5;
        high.node_labels = labels(&[("os", "linux"), ("gpu", "true")]);
        high.group = Some(GroupName::new("agents").unwrap());
        let high = unplaced(id(9), high, Timestamp::from_millis(1)).unwrap();
        let low = unplaced(id(1), any_spec(), Timestamp::from_millis(1)).unwrap();
        let q = Queued::of(&high).unwrap();
        assert_eq!(q.class, "@agents\ngpu=true\nos=linux");
        assert_eq!(q.score, -5);
        assert_eq!(Queued::of(&low).unwrap().class, "@");
        assert!(Queued::order(&high) < Queued::order(&low));
        let placed = low.placed_on(&NodeId::new("a").unwrap(), Timestamp::from_millis(2));
        assert_eq!(Queued::of(&placed.unwrap()), None);
    }

    #[test]
    fn only_specs_placed_on_any_are_queued() {
        let t = Timestamp::from_millis(1);
        let mut here = ProcessSpec::argv(["true"]);
        assert_eq!(
            unplaced(id(1), here.clone(), t),
            Err(SpecError::NodeLabelsWithoutAny)
        );
        here.node_labels = labels(&[("gpu", "true")]);
        assert_eq!(here.validate(), Err(SpecError::NodeLabelsWithoutAny));
        let tracked = ProcessSpec {
            node: Some(NodeId::any()),
            ..ProcessSpec::default()
        };
        assert!(matches!(
            unplaced(id(1), tracked, t),
            Err(SpecError::NotForTracked(_))
        ));
        assert_eq!(any_spec().placement(), crate::Placement::Any);
    }

    #[test]
    fn what_a_queued_spec_names_must_exist_and_a_parent_be_live() {
        let states = |id: ProcessId| match id.as_uuid().as_u128() {
            1 => Some(StateName::Completed),
            2 => Some(StateName::Running),
            3 => Some(StateName::Stopping),
            _ => None,
        };
        let mut spec = any_spec();
        spec.dependencies = vec![id(1), id(2)];
        spec.parent = Some(id(2));
        assert_eq!(check_named(&spec, states), Ok(()));
        spec.dependencies.push(id(9));
        assert_eq!(
            check_named(&spec, states),
            Err(CoreError::UnknownDependency(id(9)))
        );
        spec.dependencies.pop();
        spec.parent = Some(id(8));
        assert_eq!(
            check_named(&spec, states),
            Err(CoreError::ParentNotFound(id(8)))
        );
        spec.parent = Some(id(3));
        assert_eq!(
            check_named(&spec, states),
            Err(CoreError::ParentNotLive {
                parent: id(3),
                state: StateName::Stopping
            })
        );
    }

    #[test]
    fn a_wait_is_explained_from_the_nodes() {
        let mut spec = any_spec();
        spec.node_labels = labels(&[("gpu", "true")]);
        spec.group = Some(GroupName::new("train").unwrap());
        let r = unplaced(id(1), spec, Timestamp::from_millis(1)).unwrap();
        let offer = |n: &str, state, l: &[(&str, &str)]| Offer {
            node: NodeId::new(n).unwrap(),
            state,
            labels: labels(l),
        };
        assert_eq!(
            why_waiting(&r, &[]).as_deref(),
            Some("no node is alive to take it")
        );
        let nodes = [
            offer("alpha", NodeState::Alive, &[("os", "linux")]),
            offer("beta", NodeState::Lost, &[("gpu", "true")]),
        ];
        assert_eq!(
            why_waiting(&r, &nodes).as_deref(),
            Some("no alive node carries the labels gpu=true (alive: alpha)")
        );
        let nodes = [
            offer("alpha", NodeState::Alive, &[("os", "linux")]),
            offer("gamma", NodeState::Suspect, &[("gpu", "true")]),
        ];
        assert_eq!(
            why_waiting(&r, &nodes).as_deref(),
            Some("waiting for a free slot in group train on gamma")
        );
        let placed = r.placed_on(&NodeId::new("gamma").unwrap(), Timestamp::from_millis(2));
        assert_eq!(why_waiting(&placed.unwrap(), &nodes), None);
    }
}
