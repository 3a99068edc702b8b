//! A node's loss, as the domain decides it: its records marked unreachable
//! by a surviving node, given up after `lost_after`, brought back when the
//! node restarts, and reconciled when it takes its name again.

mod common;

use common::{id, node, spawned, submit, t};

use bpm_domain::TransitionKind as K;
use bpm_domain::cluster::{Sweep, sweep};
use bpm_domain::{
    ClusterTiming, Effect, EventKind, Input, Lease, Lifecycle, Limits, ProcessId, ProcessRecord,
    ProcessSpec, Signal, Span, StateName, StopCause, Supervisor, Transition,
};
use proptest::prelude::*;

fn lease(renewed_at: u64) -> Lease {
    common::lease_of_b(renewed_at)
}

fn timing() -> ClusterTiming {
    ClusterTiming::new(Span::from_secs(2), Span::from_secs(6)).expect("timing")
}

/// A record of node `b` brought to `state` (one of the states under way).
fn on_b(n: u128, state: StateName) -> ProcessRecord {
    let mut r = ProcessRecord::new(id(n), node("b"), ProcessSpec::argv(["work"]), t(0));
    let steps: &[Transition] = match state {
        StateName::Pending => &[],
        StateName::Starting => &[Transition::Start],
        StateName::Running => &[Transition::Start, Transition::Spawned { pid: 77 }],
        StateName::Paused => &[
            Transition::Start,
            Transition::Spawned { pid: 77 },
            Transition::Pause,
        ],
        StateName::Stopping => &[
            Transition::Start,
            Transition::Spawned { pid: 77 },
            Transition::Stop {
                cause: StopCause::Requested,
            },
        ],
        other => panic!("not a state under way: {other}"),
    };
    for (i, s) in steps.iter().enumerate() {
        r.apply(s.clone(), t(10 + i as u64)).expect("a step");
    }
    r
}

#[test]
fn a_running_record_of_a_lost_node_is_unreachable_then_back_or_lost() {
    let by = node("a");
    let lapsed = lease(5_000);
    let mut r = on_b(1, StateName::Running);
    let before = r.lifecycle().clone();
    let mark = sweep(Sweep::Unreach, &lapsed, &by, &timing(), r.state()).expect("marked");
    r.apply(mark, t(7_100)).expect("unreachable");
    assert_eq!(r.state(), StateName::Unreachable);
    assert!(!r.state().is_terminal() && !r.state().is_active());
    assert!(StateName::LIVE.contains(&StateName::Unreachable));
    assert_eq!(
        (r.pid(), r.lifecycle().started_at()),
        (Some(77), Some(t(11)))
    );
    let reason = r.lifecycle().error().expect("a reason");
    assert!(
        reason.contains("node b")
            && reason.contains("by node a")
            && reason.contains("last renewed"),
        "{reason}"
    );
    // Marked twice (two sweeps racing): the second changes nothing.
    let version = r.version();
    r.apply(
        sweep(
            Sweep::Unreach,
            &lapsed,
            &node("c"),
            &timing(),
            StateName::Running,
        )
        .expect("x"),
        t(7_200),
    )
    .expect("no-op");
    assert_eq!(r.version(), version);
    // Nothing but its node's return or its loss moves it.
    let e = r
        .apply(
            Transition::Stop {
                cause: StopCause::Requested,
            },
            t(7_300),
        )
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("cannot stop an unreachable process") && text.contains("its node is lost"),
        "{text}"
    );
    // It survives the store's JSON.
    let json = serde_json::to_string(&r).expect("json");
    let back: ProcessRecord = serde_json::from_str(&json).expect("read back");
    assert_eq!(back.lifecycle(), r.lifecycle());
    // Its node is back: the state it was in.
    let mut returned = r.clone();
    returned.apply(Transition::Reach, t(8_000)).expect("back");
    assert_eq!(returned.lifecycle(), &before);
    // Or it is given up, keeping when it started.
    let give_up = sweep(Sweep::GiveUp, &lapsed, &by, &timing(), r.state()).expect("given up");
    r.apply(give_up, t(20_000)).expect("lost");
    assert_eq!(r.state(), StateName::Lost);
    assert_eq!(r.lifecycle().started_at(), Some(t(11)));
    let reason = r.lifecycle().error().expect("a reason");
    assert!(reason.contains("lost_after 6s"), "{reason}");
}

#[test]
fn sweeps_are_due_after_the_lease_and_after_lost_after() {
    let l = lease(5_000);
    let tm = timing();
    assert_eq!(tm.sweep_due(&l, t(6_000)), None, "alive");
    assert_eq!(tm.sweep_due(&l, t(7_000)), None, "suspect");
    assert_eq!(tm.sweep_due(&l, t(7_001)), Some(Sweep::Unreach));
    assert_eq!(tm.sweep_due(&l, t(13_000)), Some(Sweep::Unreach));
    assert_eq!(tm.sweep_due(&l, t(13_001)), Some(Sweep::GiveUp));
    let left = Lease { left: true, ..l };
    assert_eq!(tm.sweep_due(&left, t(99_000)), None, "left is no loss");
    assert_eq!(Sweep::GiveUp.as_str(), "give_up");
}

#[test]
fn what_each_sweep_does_to_each_state() {
    let (l, by, tm) = (lease(5_000), node("a"), timing());
    let kinds = |s: Sweep, state| sweep(s, &l, &by, &tm, state).map(|t| t.kind());
    for active in [
        StateName::Starting,
        StateName::Running,
        StateName::Paused,
        StateName::Stopping,
    ] {
        assert_eq!(kinds(Sweep::Unreach, active), Some(K::Unreach));
        assert_eq!(kinds(Sweep::GiveUp, active), Some(K::Lose));
    }
    assert_eq!(kinds(Sweep::Unreach, StateName::Pending), None);
    let Some(Transition::Fail { error }) = sweep(Sweep::GiveUp, &l, &by, &tm, StateName::Pending)
    else {
        panic!("a pending record placed on a lost node fails");
    };
    assert!(error.contains("where it was to run"), "{error}");
    assert_eq!(kinds(Sweep::GiveUp, StateName::Unreachable), Some(K::Lose));
    for end in StateName::ALL.into_iter().filter(|s| s.is_terminal()) {
        assert_eq!(kinds(Sweep::Unreach, end), None);
        assert_eq!(kinds(Sweep::GiveUp, end), None);
    }
}

#[test]
fn a_restarted_node_takes_its_unreachable_records_back_and_reattaches_them() {
    let mut r = on_b(1, StateName::Running);
    r.apply(
        sweep(
            Sweep::Unreach,
            &lease(5_000),
            &node("a"),
            &timing(),
            r.state(),
        )
        .expect("x"),
        t(7_100),
    )
    .expect("unreachable");
    let stored = r.version();
    let mut core = Supervisor::new(node("b"), Limits::default());
    let effects = core.restore(vec![r], t(9_000));
    assert!(effects.contains(&Effect::Reattach { id: id(1), pid: 77 }));
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::Persist { record, expected_version: Some(v), .. }
            if *v == stored && record.state() == StateName::Running
    )));
    assert!(effects.iter().any(
        |e| matches!(e, Effect::Publish(ev) if ev.kind == EventKind::Reachable && ev.id == id(1))
    ));
}

fn persisted(effects: &[Effect]) -> Vec<(ProcessId, Option<u64>, StateName)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Persist {
                record,
                expected_version,
                ..
            } => Some((record.id(), *expected_version, record.state())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_node_that_claims_its_name_again_writes_its_view_and_ends_what_was_given_up() {
    let mut core = Supervisor::new(node("b"), Limits::default());
    for n in 1..=3 {
        submit(&mut core, n, ProcessSpec::argv(["work"]), 0).expect("submit");
        spawned(&mut core, n, 100 + u32::try_from(n).expect("small"), 1);
    }
    let v = |n| core.get(id(n)).expect("known").version();
    let (v1, v2, v3) = (v(1), v(2), v(3));
    // While it was away: 1 marked unreachable, 2 given up, 3 untouched.
    let effects = core
        .handle(
            Input::Rejoined {
                stored: vec![
                    (id(1), v1 + 1, StateName::Unreachable),
                    (id(2), v2 + 2, StateName::Lost),
                    (id(3), v3, StateName::Running),
                ],
            },
            t(20_000),
        )
        .expect("rejoined");
    let written = persisted(&effects);
    assert!(
        written.contains(&(id(1), Some(v1 + 1), StateName::Running)),
        "{written:?}"
    );
    // The store's end stands: nothing of 2 is written or announced again.
    assert!(!written.iter().any(|w| w.0 == id(2)), "{written:?}");
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::Publish(ev) if ev.id == id(2))),
        "{effects:?}"
    );
    assert!(!written.iter().any(|w| w.0 == id(3)), "{written:?}");
    assert!(effects.contains(&Effect::Signal {
        id: id(2),
        pid: 102,
        signal: Signal::Kill
    }));
    let given_up = core.get(id(2)).expect("known");
    assert!(
        given_up
            .lifecycle()
            .error()
            .is_some_and(|e| e.contains("given up by the cluster")),
        "{:?}",
        given_up.lifecycle()
    );
    // Its slot is free again.
    assert_eq!(core.active(), 2);
    core.check_invariants().expect("consistent");
}

fn under_way() -> impl Strategy<Value = StateName> {
    prop_oneof![
        Just(StateName::Starting),
        Just(StateName::Running),
        Just(StateName::Paused),
        Just(StateName::Stopping),
    ]
}

proptest! {
    /// A record marked unreachable and brought back is exactly what it was,
    /// and one given up is final: never both running and lost.
    #[test]
    fn unreachable_is_a_detour_and_lost_is_final(state in under_way(), renewed in 0u64..100_000, after in 0u64..100_000) {
        let mut r = on_b(1, state);
        let before: Lifecycle = r.lifecycle().clone();
        let l = lease(renewed);
        let mark = sweep(Sweep::Unreach, &l, &node("a"), &timing(), r.state()).expect("marked");
        r.apply(mark, t(renewed + 2_001)).expect("unreachable");
        let mut back = r.clone();
        back.apply(Transition::Reach, t(renewed + 2_001 + after)).expect("back");
        prop_assert_eq!(back.lifecycle(), &before);
        let give_up = sweep(Sweep::GiveUp, &l, &node("c"), &timing(), r.state()).expect("x");
        r.apply(give_up, t(renewed + 9_000 + after)).expect("lost");
        prop_assert_eq!(r.state(), StateName::Lost);
        r.apply(Transition::Reach, t(renewed + 10_000 + after)).expect("no-op");
        prop_assert_eq!(r.state(), StateName::Lost);
    }
}

/// A record the cluster failed while it waited to start on a node that was
/// away (found by the cluster simulation): if it still waits, it fails
/// here too; if the node started it meanwhile, its process is killed and
/// the record ends lost. Either way it never becomes live in the store again.
#[test]
fn a_record_failed_while_its_node_was_away_is_never_live_again() {
    let mut core = Supervisor::new(
        node("b"),
        Limits {
            max_running: 1,
            ..Limits::default()
        },
    );
    for n in 1..=3 {
        submit(&mut core, n, ProcessSpec::argv(["work"]), 0).expect("submit");
    }
    spawned(&mut core, 1, 101, 1);
    // Away: 1 exits and 2 starts in its slot; 3 still waits.
    core.handle(
        Input::Exited {
            id: id(1),
            status: bpm_domain::ExitStatus::Code(0),
            limit: None,
        },
        t(2),
    )
    .expect("exit");
    spawned(&mut core, 2, 102, 3);
    let v = |core: &Supervisor, n| core.get(id(n)).expect("known").version();
    let (v2, v3) = (v(&core, 2), v(&core, 3));
    let effects = core
        .handle(
            Input::Rejoined {
                stored: vec![
                    (id(2), v2 + 5, StateName::Failed),
                    (id(3), v3 + 5, StateName::Failed),
                ],
            },
            t(20_000),
        )
        .expect("rejoined");
    assert!(effects.contains(&Effect::Signal {
        id: id(2),
        pid: 102,
        signal: Signal::Kill
    }));
    assert_eq!(core.get(id(2)).expect("known").state(), StateName::Lost);
    assert_eq!(core.get(id(3)).expect("known").state(), StateName::Failed);
    // The store holds both failed: that stands (a wait may have returned it).
    let written = persisted(&effects);
    assert!(
        !written.iter().any(|w| w.0 == id(2) || w.0 == id(3)),
        "{written:?}"
    );
}

/// A record given up while its node was away keeps the pid it had; a
/// daemon of that node that starts afresh kills that process (its keeper
/// may still run it), and leaves the record lost. A record lost another
/// way is not signalled.
#[test]
fn a_restart_kills_the_process_of_a_record_given_up_while_away() {
    let mut given_up = on_b(1, StateName::Running);
    given_up
        .apply(
            Transition::Unreach {
                reason: "b went away".into(),
            },
            t(10_000),
        )
        .expect("unreach");
    given_up
        .apply(
            Transition::Lose {
                reason: "given up".into(),
            },
            t(20_000),
        )
        .expect("lose");
    assert_eq!(given_up.lifecycle().given_up_pid(), Some(77));
    assert_eq!(given_up.pid(), None, "no process is shown for it");
    let mut lost_here = on_b(2, StateName::Running);
    lost_here
        .apply(
            Transition::Lose {
                reason: "could not re-attach".into(),
            },
            t(20_000),
        )
        .expect("lose");
    assert_eq!(lost_here.lifecycle().given_up_pid(), None);
    let mut core = Supervisor::new(node("b"), Limits::default());
    let effects = core.restore(vec![given_up, lost_here], t(30_000));
    let signals: Vec<_> = effects
        .iter()
        .filter(|e| matches!(e, Effect::Signal { .. }))
        .collect();
    assert_eq!(
        signals,
        [&Effect::Signal {
            id: id(1),
            pid: 77,
            signal: Signal::Kill
        }]
    );
    assert_eq!(core.get(id(1)).expect("kept").state(), StateName::Lost);
}
