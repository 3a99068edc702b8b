//! Records placed on any node: what a core says it can take
//! (`Supervisor::room`), and how it adopts a record it claimed
//! (`Input::Claimed`) or one it claimed but cannot run (`Input::NameHeld`).

mod common;

use common::{id, node, spawned, submit, t};

use bpm_domain::cluster::placement::{Room, unplaced};
use bpm_domain::{
    CoreError, Effect, GroupName, Input, Limits, NodeId, ProcessRecord, ProcessSpec, StateName,
    Supervisor,
};

fn any(n: u128, shape: impl FnOnce(&mut ProcessSpec)) -> ProcessRecord {
    let mut spec = ProcessSpec::argv(["work"]);
    spec.node = Some(NodeId::any());
    shape(&mut spec);
    unplaced(id(n), spec, t(1)).expect("a valid spec")
}

/// Record `n` placed on any node, then placed on node `a` by its claim.
fn claimed(n: u128, shape: impl FnOnce(&mut ProcessSpec)) -> ProcessRecord {
    any(n, shape).placed_on(&node("a"), t(2)).expect("unplaced")
}

fn group(name: &str) -> GroupName {
    GroupName::new(name).expect("a group")
}

fn core(limits: Limits) -> Supervisor {
    Supervisor::new(node("a"), limits)
}

#[test]
fn room_counts_slots_held_and_waited_for_and_full_groups() {
    let mut limits = Limits {
        max_running: 3,
        ..Limits::default()
    };
    limits.group_limits.insert(group("tests"), 1);
    let mut a = core(limits);
    assert_eq!(
        a.room(),
        Room {
            free: 3,
            limited_groups: [group("tests")].into(),
            ..Room::default()
        }
    );
    let mut tests = ProcessSpec::argv(["t"]);
    tests.group = Some(group("tests"));
    submit(&mut a, 1, tests.clone(), 2).expect("submit");
    submit(&mut a, 2, tests, 3).expect("submit");
    // One holds a slot; the other waits for the group: the group is full,
    // and the one waiting is counted against the free slots.
    let room = a.room();
    assert_eq!(room.free, 1, "{room:?}");
    assert!(room.full_groups.contains(&group("tests")));
    assert!(!room.admits(Some(&group("tests"))));
    assert!(room.admits(Some(&group("other"))));
    submit(&mut a, 3, ProcessSpec::argv(["x"]), 4).expect("submit");
    assert_eq!(a.room().free, 0);
    let zero = core(Limits {
        default_group_limit: Some(0),
        ..Limits::default()
    });
    assert!(zero.room().others_full);
}

#[test]
fn a_claimed_record_becomes_this_nodes_and_starts() {
    let mut a = core(Limits::default());
    let queued = claimed(1, |s| s.priority = 3);
    let effects = a
        .handle(
            Input::Claimed {
                record: queued.clone(),
            },
            t(5),
        )
        .expect("claimed");
    let persisted = effects
        .iter()
        .find_map(|e| match e {
            Effect::Persist {
                record,
                expected_version,
                durable,
            } if record.id() == id(1) => Some((record.clone(), *expected_version, *durable)),
            _ => None,
        })
        .expect("the record is written");
    assert_eq!(persisted.0.node(), &node("a"), "placed here");
    assert_eq!(
        persisted.1,
        Some(queued.version()),
        "over the queued version"
    );
    assert!(persisted.2, "durably: a start must never be repeated");
    assert_eq!(
        persisted.0.state(),
        StateName::Starting,
        "a free slot starts it"
    );
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Spawn { record } if record.id() == id(1)))
    );
    assert!(
        !effects.iter().any(
            |e| matches!(e, Effect::Publish(ev) if ev.kind == bpm_domain::EventKind::Submitted)
        ),
        "it was announced when queued"
    );
    // A second claim of it, one placed elsewhere, or one not placed yet, is refused.
    assert_eq!(
        a.handle(Input::Claimed { record: queued }, t(6)),
        Err(CoreError::AlreadyExists(id(1)))
    );
    let elsewhere = any(2, |_| {})
        .placed_on(&node("b"), t(2))
        .expect("unplaced");
    assert_eq!(
        a.handle(Input::Claimed { record: elsewhere }, t(6)),
        Err(CoreError::NotClaimedHere(id(2)))
    );
    assert_eq!(
        a.handle(
            Input::Claimed {
                record: any(3, |_| {})
            },
            t(6)
        ),
        Err(CoreError::NotClaimedHere(id(3))),
        "placed on this node first"
    );
    a.check_invariants().expect("consistent");
}

#[test]
fn a_claimed_record_waits_for_its_dependencies_here() {
    let mut a = core(Limits::default());
    submit(&mut a, 1, ProcessSpec::argv(["first"]), 1).expect("submit");
    let waits = claimed(2, |s| s.dependencies = vec![id(1)]);
    a.handle(Input::Claimed { record: waits }, t(2))
        .expect("claimed");
    assert_eq!(
        a.get(id(2)).map(ProcessRecord::state),
        Some(StateName::Pending)
    );
    // A dependency the core does not know is refused, for the engine to read it.
    let unknown = claimed(3, |s| s.dependencies = vec![id(9)]);
    assert_eq!(
        a.handle(
            Input::Claimed {
                record: unknown.clone()
            },
            t(3)
        ),
        Err(CoreError::UnknownDependency(id(9)))
    );
    // Claimed but not runnable: this node's, failed with why.
    let effects = a
        .handle(
            Input::NameHeld {
                record: unknown,
                reason: "unknown dependency".into(),
            },
            t(4),
        )
        .expect("refused claim");
    let failed = a.get(id(3)).expect("this node's now");
    assert_eq!(failed.state(), StateName::Failed);
    assert_eq!(failed.node(), &node("a"));
    assert!(
        failed
            .lifecycle()
            .error()
            .is_some_and(|e| e.contains("node a took it but cannot run it: unknown dependency")),
        "{failed:?}"
    );
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::Persist {
            expected_version: Some(2),
            ..
        }
    )));
    a.check_invariants().expect("consistent");
}

#[test]
fn a_core_takes_no_spec_placed_on_any_node_but_restarts_a_claimed_one_here() {
    let mut a = core(Limits::default());
    let mut spec = ProcessSpec::argv(["x"]);
    spec.node = Some(NodeId::any());
    assert_eq!(submit(&mut a, 1, spec, 1), Err(CoreError::PlacedOnAny));
    a.handle(
        Input::Claimed {
            record: claimed(2, |_| {}),
        },
        t(2),
    )
    .expect("claimed");
    spawned(&mut a, 2, 77, 3);
    a.handle(
        Input::Restart {
            id: id(2),
            new_id: id(3),
        },
        t(3),
    )
    .expect("a restart stays here");
    assert_eq!(a.get(id(3)).map(|r| r.node().clone()), Some(node("a")));
}

fn agents_capped(cap: usize) -> Supervisor {
    let mut limits = Limits::default();
    limits.cluster_groups.insert(group("agents"), cap);
    core(limits)
}

fn agent_spec() -> ProcessSpec {
    let mut spec = ProcessSpec::argv(["agent"]);
    spec.group = Some(group("agents"));
    spec
}

fn asks(effects: &[Effect]) -> Vec<bpm_domain::ProcessId> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::TakeClusterSlot { id, limit, .. } => {
                assert_eq!(*limit, 2);
                Some(*id)
            }
            _ => None,
        })
        .collect()
}

/// The store's answer to record `n`'s ask for a cluster-wide slot, at `at` ms.
fn slot(core: &mut Supervisor, n: u128, granted: bool, at: u64) -> Vec<Effect> {
    core.handle(Input::ClusterSlot { id: id(n), granted }, t(at))
        .expect("an answer")
}

/// The timer a refused group's retry is armed with, and when it fires.
fn retry(effects: &[Effect]) -> Option<(bpm_domain::Timer, bpm_domain::Timestamp)> {
    effects.iter().find_map(|e| match e {
        Effect::ArmTimer { timer, at } if timer.kind == bpm_domain::TimerKind::ClusterSlot => {
            Some((*timer, *at))
        }
        _ => None,
    })
}

fn spawns(effects: &[Effect]) -> Vec<bpm_domain::ProcessId> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Spawn { record } => Some(record.id()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_group_with_a_cluster_limit_starts_only_with_a_slot_granted() {
    let mut a = agents_capped(2);
    let effects = submit(&mut a, 1, agent_spec(), 1).expect("submit");
    assert_eq!(asks(&effects), [id(1)], "it asks instead of starting");
    assert!(spawns(&effects).is_empty());
    assert_eq!(
        a.get(id(1)).map(ProcessRecord::state),
        Some(StateName::Pending)
    );
    assert_eq!(a.room().free, 9, "an ask holds a slot here");
    let asked = submit(&mut a, 2, agent_spec(), 2).expect("submit");
    assert_eq!(asks(&asked), [id(2)], "asks go out together");
    // Granted: it starts. Refused: it waits, its group asks no more.
    let granted = slot(&mut a, 1, true, 3);
    assert_eq!(spawns(&granted), [id(1)]);
    let refused = slot(&mut a, 2, false, 4);
    assert!(spawns(&refused).is_empty() && asks(&refused).is_empty());
    assert!(retry(&refused).is_some(), "it asks again later");
    assert!(
        a.room().full_groups.contains(&group("agents")),
        "a node claims no agent meanwhile"
    );
    let more = submit(&mut a, 3, agent_spec(), 5).expect("submit");
    assert!(asks(&more).is_empty(), "the group waits");
    let other = submit(&mut a, 4, ProcessSpec::argv(["x"]), 6).expect("submit");
    assert_eq!(spawns(&other), [id(4)], "other groups go on");
    // An end elsewhere: ask again, in queue order, and no more than the
    // limit less what this node runs of the group already (one of two).
    let again = a.handle(Input::ClusterSlotsFreed, t(7)).expect("freed");
    assert_eq!(asks(&again), [id(2)]);
    a.check_invariants().expect("consistent");
}

#[test]
fn a_refused_group_asks_again_after_a_second_or_an_end_here() {
    let mut a = agents_capped(2);
    submit(&mut a, 1, agent_spec(), 1).expect("submit");
    submit(&mut a, 2, agent_spec(), 1).expect("submit");
    slot(&mut a, 1, true, 2);
    spawned(&mut a, 1, 50, 3);
    let refused = slot(&mut a, 2, false, 4);
    let timer = retry(&refused).expect("a retry");
    assert_eq!(timer.1, t(1_004));
    let retried = a
        .handle(Input::TimerFired(timer.0), t(1_004))
        .expect("fired");
    assert_eq!(asks(&retried), [id(2)]);
    slot(&mut a, 2, false, 1_005);
    // The agent here ends: its slot frees as the store takes its end.
    let ended = a
        .handle(
            Input::Exited {
                id: id(1),
                status: bpm_domain::ExitStatus::Code(0),
                limit: None,
            },
            t(1_100),
        )
        .expect("exited");
    assert_eq!(asks(&ended), [id(2)]);
}

/// Found by the simulation: the record refused was cancelled before its
/// retry, and its group's mark outlived it, so the next record of the
/// group waited for ever.
#[test]
fn a_refused_group_asks_again_even_when_the_record_refused_has_ended() {
    let mut a = agents_capped(2);
    submit(&mut a, 1, agent_spec(), 1).expect("submit");
    let refused = slot(&mut a, 1, false, 2);
    let (timer, at) = retry(&refused).expect("a retry");
    a.handle(
        Input::Stop {
            id: id(1),
            force: false,
            grace: None,
        },
        t(3),
    )
    .expect("stopped");
    a.handle(Input::Remove { id: id(1) }, t(4))
        .expect("removed");
    let next = submit(&mut a, 2, agent_spec(), 5).expect("submit");
    assert!(asks(&next).is_empty(), "the group still waits");
    let retried = a.handle(Input::TimerFired(timer), at).expect("fired");
    assert_eq!(asks(&retried), [id(2)], "the wait is over");
    a.check_invariants().expect("consistent");
}

#[test]
fn a_record_stopped_while_it_asks_does_not_start_and_none_is_handed_over() {
    let mut limits = Limits {
        max_running: 1,
        ..Limits::default()
    };
    limits.cluster_groups.insert(group("agents"), 2);
    let mut a = core(limits);
    submit(&mut a, 1, agent_spec(), 1).expect("submit");
    a.handle(
        Input::Stop {
            id: id(1),
            force: false,
            grace: None,
        },
        t(2),
    )
    .expect("stopped");
    assert_eq!(
        a.get(id(1)).map(ProcessRecord::state),
        Some(StateName::Cancelled)
    );
    let late = slot(&mut a, 1, true, 3);
    assert!(spawns(&late).is_empty());
    // A capped record is never handed to the spawner to start on an exit.
    submit(&mut a, 2, ProcessSpec::argv(["x"]), 4).expect("submit");
    submit(&mut a, 3, agent_spec(), 5).expect("submit");
    assert!(a.hand_over().is_empty());
    a.check_invariants().expect("consistent");
}

#[test]
fn a_record_claimed_to_be_stopped_is_cancelled_and_never_starts() {
    let mut a = core(Limits::default());
    let effects = a
        .handle(
            Input::ClaimedToStop {
                record: claimed(1, |_| {}),
            },
            t(3),
        )
        .expect("taken to stop");
    assert!(spawns(&effects).is_empty(), "never started");
    let r = a.get(id(1)).expect("this node's");
    assert_eq!((r.state(), r.node()), (StateName::Cancelled, &node("a")));
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::Persist {
            expected_version: Some(2),
            ..
        }
    )));
    a.check_invariants().expect("consistent");
}

#[test]
fn an_end_a_cut_or_a_requeue_frees_a_cluster_wide_slot() {
    use bpm_domain::EventKind;
    for kind in [
        EventKind::Completed,
        EventKind::Lost,
        EventKind::Unreachable,
        EventKind::Restarted,
    ] {
        assert!(kind.frees_slot(), "{kind:?}");
    }
    for kind in [
        EventKind::Started,
        EventKind::Reachable,
        EventKind::Stopping,
    ] {
        assert!(!kind.frees_slot(), "{kind:?}");
    }
}

/// A schedule placed on any node waits in the queue as a process does;
/// the node that claims it holds it (running, with no process), arms its
/// first due time, and places its runs on itself.
#[test]
fn a_claimed_schedule_runs_on_the_node_that_claimed_it() {
    let every = |s: &mut ProcessSpec| {
        s.schedule = Some(Box::new(
            bpm_domain::ScheduleAsked {
                every: Some("1s"),
                ..bpm_domain::ScheduleAsked::default()
            }
            .schedule(|| "UTC".into(), "")
            .expect("a schedule")
            .expect("some"),
        ));
    };
    assert_eq!(any(7, every).state(), StateName::Pending, "queued");
    let mut a = core(Limits::default());
    a.handle(
        Input::Claimed {
            record: claimed(7, every),
        },
        t(5),
    )
    .expect("claimed");
    let held = a.get(id(7)).expect("held").clone();
    assert_eq!(held.state(), StateName::Running, "{held:?}");
    let due = held.next_due().expect("a due time");
    let effects = a
        .handle(
            Input::TimerFired(bpm_domain::Timer {
                id: id(7),
                kind: bpm_domain::TimerKind::Due,
                attempt: 0,
            }),
            due,
        )
        .expect("due");
    let run = effects
        .iter()
        .find_map(|e| match e {
            Effect::Persist { record, .. } if record.scheduled_from() == Some(id(7)) => {
                Some(record.clone())
            }
            _ => None,
        })
        .expect("a run");
    assert_eq!(run.node(), &node("a"), "the run is placed here");
    assert_eq!(run.spec().node, Some(node("a")));
}
