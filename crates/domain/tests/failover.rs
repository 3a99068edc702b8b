//! Failover, as the domain decides it: a node that loses its lease stops its
//! failover records and starts none until it holds the lease again
//! (`Input::Lease`), and the cluster runs such a record again elsewhere
//! only a lease, its grace and a margin after the node's last renewal
//! (`cluster::failover`), as a new unplaced record.

mod common;

use common::{id, node, spawned, submit, t};

use bpm_domain::cluster::{FAILOVER_MARGIN, KEEPER_STAND_DOWN_LAG, Sweep, failover, sweep_record};
use bpm_domain::{
    ClusterTiming, Effect, ExitStatus, Input, Lease, Limits, NodeId, ProcessRecord, ProcessSpec,
    RestartMode, Signal, Span, SpecError, StateName, StopCause, Supervisor, Transition,
};
use proptest::prelude::*;

fn failover_spec() -> ProcessSpec {
    let mut spec = ProcessSpec::argv(["server"]);
    spec.restart.mode = RestartMode::OnFailure;
    spec.failover = true;
    spec.stop.grace = Span::from_secs(3);
    spec
}

fn signals(effects: &[Effect]) -> Vec<(u32, Signal)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Signal { pid, signal, .. } => Some((*pid, *signal)),
            _ => None,
        })
        .collect()
}

fn spawns(effects: &[Effect]) -> usize {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::Spawn { .. }))
        .count()
}

#[test]
fn failover_needs_a_restart_policy_that_runs_it_again() {
    let mut spec = ProcessSpec::argv(["server"]);
    spec.failover = true;
    assert_eq!(spec.validate(), Err(SpecError::FailoverWithoutRestart));
    assert!(
        SpecError::FailoverWithoutRestart
            .to_string()
            .contains("on-failure or always")
    );
    spec.restart.mode = RestartMode::Always;
    assert_eq!(spec.validate(), Ok(()));
}

#[test]
fn a_node_without_its_lease_stands_down_its_failover_records_and_starts_them_again_when_it_holds_it()
 {
    let mut a = Supervisor::new(node("a"), Limits::default());
    submit(&mut a, 1, failover_spec(), 10).expect("submit");
    submit(&mut a, 2, ProcessSpec::argv(["plain"]), 10).expect("submit");
    spawned(&mut a, 1, 101, 11);
    spawned(&mut a, 2, 102, 11);

    // The lease lapsed: the failover record gets TERM, the other nothing.
    let fx = a
        .handle(Input::Lease { held: false }, t(1_000))
        .expect("fence");
    assert_eq!(signals(&fx), vec![(101, Signal::Term)]);
    assert!(a.stands_down());
    assert_eq!(
        a.get(id(2)).map(ProcessRecord::state),
        Some(StateName::Running)
    );
    // Its grace runs out: KILL.
    let fx = a
        .handle(
            Input::TimerFired(bpm_domain::Timer {
                id: id(1),
                kind: bpm_domain::TimerKind::Grace,
                attempt: 0,
            }),
            t(4_000),
        )
        .expect("grace");
    assert_eq!(signals(&fx), vec![(101, Signal::Kill)]);
    // It exits: queued again here, not started while standing down, whatever its
    // restart policy would do.
    let fx = a
        .handle(
            Input::Exited {
                id: id(1),
                status: ExitStatus::Signal(9),
                limit: None,
            },
            t(4_010),
        )
        .expect("exit");
    assert_eq!(spawns(&fx), 0);
    let r = a.get(id(1)).expect("record");
    assert_eq!(r.state(), StateName::Pending);
    assert_eq!(r.restarts(), 1);
    // A new failover record waits too; a plain one starts.
    let fx = submit(&mut a, 3, failover_spec(), 4_100).expect("submit");
    assert_eq!(spawns(&fx), 0);
    let fx = submit(&mut a, 4, ProcessSpec::argv(["plain"]), 4_100).expect("submit");
    assert_eq!(spawns(&fx), 1);
    // Held back, they hold no slot meanwhile.
    assert_eq!(a.room().free, Limits::default().max_running - 2);
    // Held again: both failover records start.
    let fx = a
        .handle(Input::Lease { held: true }, t(5_000))
        .expect("held");
    assert_eq!(spawns(&fx), 2);
    assert!(!a.stands_down());
    // Saying it twice changes nothing.
    let fx = a
        .handle(Input::Lease { held: true }, t(5_001))
        .expect("held");
    assert!(fx.is_empty(), "{fx:?}");
}

#[test]
fn a_record_starting_when_the_node_stands_down_is_stopped_once_it_has_a_pid() {
    let mut a = Supervisor::new(node("a"), Limits::default());
    submit(&mut a, 1, failover_spec(), 10).expect("submit");
    a.handle(Input::Lease { held: false }, t(20))
        .expect("fence");
    assert_eq!(
        a.get(id(1)).map(ProcessRecord::state),
        Some(StateName::Stopping)
    );
    let fx = a
        .handle(Input::Spawned { id: id(1), pid: 7 }, t(30))
        .expect("spawned");
    assert_eq!(signals(&fx), vec![(7, Signal::Term)]);
}

fn lease(renewed_at: u64) -> Lease {
    common::lease_of_b(renewed_at)
}

/// Record `n` of node `b`, running.
fn running_on_b(n: u128, spec: ProcessSpec) -> ProcessRecord {
    let mut r = ProcessRecord::new(id(n), node("b"), spec, t(0));
    r.apply(Transition::Start, t(1)).expect("start");
    r.apply(Transition::Spawned { pid: 9 }, t(2))
        .expect("spawned");
    r
}

#[test]
fn a_failover_record_is_run_elsewhere_a_lease_its_grace_and_the_margin_after_the_last_renewal() {
    let l = lease(10_000);
    let r = running_on_b(1, failover_spec());
    // 2 s lease + 3 s grace + the margin.
    let due = 10_000 + 2_000 + 3_000 + u64::try_from(FAILOVER_MARGIN.as_millis()).expect("ms");
    assert!(failover(&l, &node("c"), &r, id(2), t(due)).is_none());
    let (old, new) = failover(&l, &node("c"), &r, id(2), t(due + 1)).expect("due");
    assert_eq!(old.state(), StateName::Lost);
    assert_eq!(old.version(), r.version() + 1);
    let reason = format!("{:?}", old.lifecycle());
    assert!(
        reason.contains("failed over to") && reason.contains("node c"),
        "{reason}"
    );
    assert_eq!(new.id(), id(2));
    assert!(new.node().is_any());
    assert_eq!(new.spec().node, Some(NodeId::any()));
    assert_eq!(new.restarted_from(), Some(id(1)));
    assert_eq!(new.restarts(), 1);
    assert_eq!(new.state(), StateName::Pending);
    assert_eq!(new.version(), 1);
    assert!(bpm_domain::cluster::placement::Queued::of(&new).is_some());
}

#[test]
fn nothing_fails_over_without_failover_restarts_left_or_from_a_node_that_left() {
    let late = t(1_000_000);
    let l = lease(10_000);
    let plain = running_on_b(1, {
        let mut s = ProcessSpec::argv(["x"]);
        s.restart.mode = RestartMode::Always;
        s
    });
    assert!(failover(&l, &node("c"), &plain, id(9), late).is_none());
    let mut spent = failover_spec();
    spent.restart.max_restarts = Some(0);
    assert!(failover(&l, &node("c"), &running_on_b(2, spent), id(9), late).is_none());
    let left = Lease {
        left: true,
        ..l.clone()
    };
    assert!(
        failover(
            &left,
            &node("c"),
            &running_on_b(3, failover_spec()),
            id(9),
            late
        )
        .is_none()
    );
    let mut other = running_on_b(4, failover_spec());
    other = ProcessRecord::from_update(std::sync::Arc::new(other.spec().clone()), {
        let mut r = ProcessRecord::new(id(4), node("z"), failover_spec(), t(0));
        r.apply(Transition::Start, t(1)).expect("start");
        r.update()
    });
    assert!(failover(&l, &node("c"), &other, id(9), late).is_none());
}

#[test]
fn a_record_being_stopped_is_not_failed_over_but_given_up() {
    let l = lease(10_000);
    let timing = ClusterTiming::new(Span::from_secs(2), Span::from_secs(2)).expect("timing");
    let mut r = running_on_b(1, failover_spec());
    r.apply(
        Transition::Stop {
            cause: StopCause::Requested,
        },
        t(3),
    )
    .expect("stop");
    let late = t(1_000_000);
    assert!(sweep_record(Sweep::Unreach, &l, &node("c"), &timing, &mut r, late).is_some());
    assert!(failover(&l, &node("c"), &r, id(2), late).is_none());
    assert!(sweep_record(Sweep::GiveUp, &l, &node("c"), &timing, &mut r, late).is_some());
    assert!(r.is_terminal(), "{r:?}");
}

#[test]
fn the_sweeps_never_give_up_a_record_that_fails_over() {
    let l = lease(10_000);
    let timing = ClusterTiming::new(Span::from_secs(2), Span::from_secs(2)).expect("timing");
    let mut r = running_on_b(1, failover_spec());
    let late = t(1_000_000);
    assert!(sweep_record(Sweep::Unreach, &l, &node("c"), &timing, &mut r, late).is_some());
    assert_eq!(r.state(), StateName::Unreachable);
    assert!(sweep_record(Sweep::GiveUp, &l, &node("c"), &timing, &mut r, late).is_none());
    // The failover takes the unreachable record.
    let (old, _) = failover(&l, &node("c"), &r, id(2), late).expect("due");
    assert_eq!(old.state(), StateName::Lost);
}

/// A failover record given up ends `lost` whether the store held it
/// running or already being stood down by its node.
#[test]
fn a_record_failed_over_ends_lost_whether_or_not_its_stand_down_was_written() {
    let l = lease(10_000);
    let running = running_on_b(1, failover_spec());
    let mut stood_down = running.clone();
    stood_down
        .apply(
            Transition::Stop {
                cause: StopCause::StoodDown,
            },
            t(10),
        )
        .expect("stood down");
    let late = t(1_000_000);
    for r in [running, stood_down] {
        let (old, _) = failover(&l, &node("c"), &r, id(2), late).expect("due");
        assert_eq!(old.state(), StateName::Lost, "{:?}", r.state());
    }
}

#[test]
fn a_stand_down_ends_cancelled_if_its_spawn_failed() {
    let mut r = ProcessRecord::new(id(1), node("a"), failover_spec(), t(0));
    r.apply(Transition::Start, t(1)).expect("start");
    r.apply(
        Transition::Stop {
            cause: StopCause::StoodDown,
        },
        t(2),
    )
    .expect("stop");
    r.apply(
        Transition::SpawnFailed {
            error: "no such file".into(),
        },
        t(3),
    )
    .expect("spawn failed");
    assert_eq!(r.state(), StateName::Cancelled);
    assert!(StopCause::StoodDown.to_string().contains("lost its lease"));
}

proptest! {
    /// The stood-down node's KILL is sent before any other node may start the
    /// record: the node stands down a lease after it *sent* its last renewal
    /// that succeeded (its own clock), the store stamped that renewal at
    /// or after it was sent, and the other nodes wait a lease, the grace
    /// and the margin after the stamp (the store's clock). This holds
    /// while the node's clock runs slow against the store's by less than
    /// the margin over that time (less the keeper's lag, for the keeper's
    /// own stand-down).
    #[test]
    fn the_stood_down_copy_is_killed_before_the_failover_is_due(
        ttl in 2_000u64..60_000,
        grace in 0u64..120_000,
        sent in 0u64..1_000_000,
        stamped_after in 0u64..5_000,
        slow_by in 0u64..1_999,
    ) {
        let timing = ClusterTiming::new(Span::from_millis(ttl), Span::from_millis(ttl)).expect("timing");
        let mut spec = failover_spec();
        spec.stop.grace = Span::from_millis(grace);
        let l = Lease { ttl: Span::from_millis(ttl), ..lease(sent + stamped_after) };
        let record = running_on_b(1, spec);
        // The first moment of the node's own clock at which it stands down,
        // and when its KILL goes out, seen on the store's clock.
        let stand_down_at = (sent..=sent + ttl).find(|ms| timing.must_stand_down(t(sent), t(*ms))).expect("stands down");
        let killed_at = stand_down_at + grace + slow_by;
        prop_assert!(failover(&l, &node("c"), &record, id(2), t(killed_at)).is_none());
        // The keeper's own KILL, when the daemon died, comes later but in
        // time too, with less of the margin left for a slow clock.
        let lag = u64::try_from(KEEPER_STAND_DOWN_LAG.as_millis()).expect("ms");
        let margin = u64::try_from(FAILOVER_MARGIN.as_millis()).expect("ms");
        if slow_by + lag < margin {
            prop_assert!(failover(&l, &node("c"), &record, id(2), t(killed_at + lag)).is_none());
        }
    }
}
