//! Dependencies and parents on other nodes' records: the core of node `a`
//! keeps views of node `b`'s records that its own records name, waits for
//! them, fails what depended on one that did not complete, and stops its
//! children of a parent stopped on `b`.

mod common;

use common::{id, node, spawned, submit, t};

use bpm_domain::{
    CoreError, Effect, ExitStatus, Input, Limits, ProcessId, ProcessRecord, ProcessSpec, Signal,
    StateName, StopCause, Supervisor, Transition,
};
use proptest::prelude::*;

/// Record `n` of node `b` (parent `parent`), taken through `steps`.
fn on_b(n: u128, parent: Option<u128>, steps: &[Transition]) -> ProcessRecord {
    let mut spec = ProcessSpec::argv(["work"]);
    spec.parent = parent.map(id);
    let mut r = ProcessRecord::new(id(n), node("b"), spec, t(0));
    for (i, s) in steps.iter().enumerate() {
        r.apply(s.clone(), t(10 + i as u64)).expect("a step");
    }
    r
}

fn running() -> Vec<Transition> {
    vec![Transition::Start, Transition::Spawned { pid: 77 }]
}

fn exited(code: i32) -> Vec<Transition> {
    let mut steps = running();
    steps.push(Transition::Exited {
        status: ExitStatus::Code(code),
        limit: None,
    });
    steps
}

fn stopping() -> Vec<Transition> {
    let mut steps = running();
    steps.push(Transition::Stop {
        cause: StopCause::Requested,
    });
    steps
}

fn core_a() -> Supervisor {
    Supervisor::new(node("a"), Limits::default())
}

fn after(deps: &[u128]) -> ProcessSpec {
    let mut spec = ProcessSpec::argv(["next"]);
    spec.dependencies = deps.iter().copied().map(id).collect();
    spec
}

fn child_of(parent: u128) -> ProcessSpec {
    let mut spec = ProcessSpec::argv(["child"]);
    spec.parent = Some(id(parent));
    spec
}

fn spawns(effects: &[Effect], who: ProcessId) -> bool {
    effects
        .iter()
        .any(|e| matches!(e, Effect::Spawn { record } if record.id() == who))
}

fn state(core: &Supervisor, n: u128) -> StateName {
    core.get(id(n)).expect("known").state()
}

fn seen(core: &mut Supervisor, records: Vec<ProcessRecord>, at: u64) -> Vec<Effect> {
    core.handle(
        Input::Foreign {
            records,
            gone: Vec::new(),
        },
        t(at),
    )
    .expect("views are always taken")
}

#[test]
fn a_record_waits_for_another_nodes_dependency_and_starts_once_it_completed() {
    let mut core = core_a();
    let refused = submit(&mut core, 10, after(&[1]), 100);
    assert_eq!(refused, Err(CoreError::UnknownDependency(id(1))));

    seen(&mut core, vec![on_b(1, None, &running())], 100);
    let effects =
        submit(&mut core, 10, after(&[1]), 101).expect("accepted once the dependency is seen");
    assert!(!spawns(&effects, id(10)));
    assert_eq!(state(&core, 10), StateName::Pending);
    assert!(core.watches(id(1), 99) && !core.watches(id(1), 2));

    let effects = seen(&mut core, vec![on_b(1, None, &exited(0))], 200);
    assert!(spawns(&effects, id(10)), "{effects:?}");
    assert_eq!(state(&core, 10), StateName::Starting);
    core.check_invariants().expect("consistent");
}

#[test]
fn a_dependency_on_another_node_that_fails_fails_what_waits_for_it() {
    let mut core = core_a();
    seen(&mut core, vec![on_b(1, None, &running())], 100);
    submit(&mut core, 10, after(&[1]), 101).expect("accepted");
    let effects = seen(&mut core, vec![on_b(1, None, &exited(3))], 200);
    assert!(!spawns(&effects, id(10)));
    let record = core.get(id(10)).expect("known");
    assert_eq!(record.state(), StateName::Failed);
    let error = record.lifecycle().error().expect("a reason");
    assert!(
        error.contains(&id(1).to_string()) && error.contains("failed"),
        "{error}"
    );
}

#[test]
fn a_dependency_that_ended_before_the_submit_is_judged_at_once() {
    let mut core = core_a();
    seen(
        &mut core,
        vec![on_b(1, None, &exited(0)), on_b(2, None, &exited(1))],
        100,
    );
    let ok = submit(&mut core, 10, after(&[1]), 101).expect("accepted");
    assert!(spawns(&ok, id(10)));
    submit(&mut core, 11, after(&[2]), 102).expect("accepted");
    assert_eq!(state(&core, 11), StateName::Failed);
}

#[test]
fn an_older_version_of_a_view_changes_nothing() {
    let mut core = core_a();
    seen(&mut core, vec![on_b(1, None, &running())], 100);
    submit(&mut core, 10, after(&[1]), 101).expect("accepted");
    // The event of the exit, then a late read of the start.
    seen(&mut core, vec![on_b(1, None, &exited(2))], 200);
    let late = seen(&mut core, vec![on_b(1, None, &running())], 300);
    assert!(late.is_empty(), "{late:?}");
    assert_eq!(state(&core, 10), StateName::Failed);
}

#[test]
fn a_child_of_another_nodes_parent_is_stopped_when_the_parent_is() {
    let mut core = core_a();
    // The parent's own parent is on b too, and comes after it.
    seen(
        &mut core,
        vec![on_b(2, Some(1), &running()), on_b(1, None, &running())],
        100,
    );
    submit(&mut core, 10, child_of(2), 101).expect("accepted");
    assert_eq!(core.depth(id(10)), Some(2));
    let pid = 900;
    spawned(&mut core, 10, pid, 102);
    assert_eq!(state(&core, 10), StateName::Running);

    let effects = seen(&mut core, vec![on_b(2, Some(1), &stopping())], 200);
    assert!(effects.contains(&Effect::Signal {
        id: id(10),
        pid,
        signal: Signal::Term
    }));
    let record = core.get(id(10)).expect("known");
    assert_eq!(record.state(), StateName::Stopping);
    core.check_invariants().expect("consistent");

    // Its end repeats nothing.
    let mut ended = stopping();
    ended.push(Transition::Exited {
        status: ExitStatus::Signal(15),
        limit: None,
    });
    let again = seen(&mut core, vec![on_b(2, Some(1), &ended)], 300);
    assert!(
        !again.iter().any(|e| matches!(e, Effect::Signal { .. })),
        "{again:?}"
    );
}

#[test]
fn a_parent_on_another_node_that_is_stopping_takes_no_children() {
    let mut core = core_a();
    seen(&mut core, vec![on_b(1, None, &stopping())], 100);
    assert_eq!(
        submit(&mut core, 10, child_of(1), 101),
        Err(CoreError::ParentNotLive {
            parent: id(1),
            state: StateName::Stopping
        })
    );
}

#[test]
fn records_of_this_node_are_not_views() {
    let mut core = core_a();
    let mut own = ProcessRecord::new(id(1), node("a"), ProcessSpec::argv(["x"]), t(0));
    own.apply(Transition::Start, t(1)).expect("start");
    seen(&mut core, vec![own], 100);
    assert!(core.watched().is_empty());
    assert_eq!(
        submit(&mut core, 10, after(&[1]), 101),
        Err(CoreError::UnknownDependency(id(1)))
    );
}

#[test]
fn a_view_is_dropped_once_its_record_ended_and_nothing_here_names_it() {
    let mut core = core_a();
    seen(&mut core, vec![on_b(1, None, &running())], 100);
    submit(&mut core, 10, after(&[1]), 101).expect("accepted");
    assert_eq!(core.watched(), vec![id(1)]);
    seen(&mut core, vec![on_b(1, None, &exited(0))], 200);
    assert!(core.watched().is_empty(), "an ended record is not watched");
    // The next views drop it: a new submit naming it needs it read again.
    seen(&mut core, vec![on_b(5, None, &running())], 300);
    assert_eq!(
        submit(&mut core, 11, after(&[1]), 301),
        Err(CoreError::UnknownDependency(id(1)))
    );
}

#[test]
fn a_restart_waits_for_and_stops_with_other_nodes_records() {
    let waiting = ProcessRecord::new(id(10), node("a"), after(&[1]), t(0));
    let mut child = ProcessRecord::new(id(11), node("a"), child_of(2), t(0));
    child.apply(Transition::Start, t(1)).expect("start");
    child
        .apply(Transition::Spawned { pid: 901 }, t(2))
        .expect("spawned");
    let released = ProcessRecord::new(id(12), node("a"), after(&[3]), t(0));
    let records = vec![waiting, child, released];
    assert_eq!(
        Supervisor::named_elsewhere(&records),
        vec![id(1), id(2), id(3)]
    );
    let mut with_views = records;
    with_views.extend([
        on_b(1, None, &running()),
        on_b(2, None, &stopping()),
        on_b(3, None, &exited(0)),
    ]);
    let mut core = core_a();
    let effects = core.restore(with_views, t(500));
    assert_eq!(state(&core, 10), StateName::Pending);
    assert!(!spawns(&effects, id(10)));
    assert!(spawns(&effects, id(12)));
    assert!(effects.contains(&Effect::Signal {
        id: id(11),
        pid: 901,
        signal: Signal::Term
    }));
    assert_eq!(state(&core, 11), StateName::Stopping);
    core.check_invariants().expect("consistent");

    seen(&mut core, vec![on_b(1, None, &exited(0))], 600);
    assert_eq!(state(&core, 10), StateName::Starting);
}

/// The states a dependency on `b` goes through, each a newer version.
fn history(code: i32) -> Vec<ProcessRecord> {
    let steps = exited(code);
    (0..=steps.len())
        .map(|n| on_b(1, None, &steps[..n]))
        .collect()
}

proptest! {
    /// Whatever order the versions of a dependency arrive in (events and
    /// reads race), what waits for it starts only when its newest version
    /// seen completed, and fails only when it ended otherwise.
    #[test]
    fn a_waiter_follows_the_newest_version_of_its_dependency(
        code in prop_oneof![Just(0), Just(1)],
        order in Just(()).prop_perturb(|(), mut rng| {
            let mut v: Vec<usize> = (0..5).collect();
            for i in (1..v.len()).rev() {
                v.swap(i, rng.random_range(0..=i));
            }
            v
        }),
    ) {
        let versions = history(code);
        let mut core = core_a();
        seen(&mut core, vec![versions[0].clone()], 100);
        core.handle(Input::Submit { id: id(10), spec: after(&[1]) }, t(101)).expect("accepted");
        let mut newest = 0;
        for (k, i) in order.into_iter().filter(|i| *i < versions.len()).enumerate() {
            seen(&mut core, vec![versions[i].clone()], 200 + k as u64);
            newest = newest.max(i);
            let dep = &versions[newest];
            let waiter = state(&core, 10);
            match (dep.is_terminal(), dep.state()) {
                (false, _) => prop_assert_eq!(waiter, StateName::Pending),
                (true, StateName::Completed) => prop_assert_eq!(waiter, StateName::Starting),
                (true, _) => prop_assert_eq!(waiter, StateName::Failed),
            }
            core.check_invariants().map_err(TestCaseError::fail)?;
        }
    }
}

#[test]
fn a_dependency_gone_from_the_store_fails_what_waits_for_it() {
    // At a restart: a record waits for one the store no longer holds.
    let waiting = ProcessRecord::new(id(10), node("a"), after(&[1]), t(0));
    let mut core = core_a();
    let effects = core.restore(vec![waiting], t(500));
    assert!(!spawns(&effects, id(10)), "it waits until the driver says");
    assert_eq!(state(&core, 10), StateName::Pending);
    core.handle(
        Input::Foreign {
            records: Vec::new(),
            gone: vec![id(1)],
        },
        t(501),
    )
    .expect("taken");
    let record = core.get(id(10)).expect("known");
    assert_eq!(record.state(), StateName::Failed);
    let error = record.lifecycle().error().expect("a reason");
    assert!(error.contains("gone from the store"), "{error}");

    // While it runs: a watched dependency removed unseen.
    seen(&mut core, vec![on_b(2, None, &running())], 600);
    submit(&mut core, 11, after(&[2]), 601).expect("accepted");
    core.handle(
        Input::Foreign {
            records: Vec::new(),
            gone: vec![id(2)],
        },
        t(700),
    )
    .expect("taken");
    assert_eq!(state(&core, 11), StateName::Failed);
    assert!(core.watched().is_empty());
    core.check_invariants().expect("consistent");
}
