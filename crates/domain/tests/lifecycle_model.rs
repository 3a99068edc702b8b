//! A reference model of the lifecycle, written as a plain table apart from the
//! domain's code, against `ProcessRecord::apply`: every input is generated in
//! every state, illegal ones included, and the domain must accept, ignore or
//! refuse exactly what the model does.

// The model is a table, one row per (state, input): rows with equal outcomes stay apart on purpose.
#![allow(clippy::match_same_arms, clippy::struct_excessive_bools)]

use bpm_domain::{
    Applied, ExitStatus, NodeId, Percent, ProcessId, ProcessName, ProcessRecord, ProcessSpec, Span,
    StateName, StopCause, Timestamp, Transition,
};
use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Requested,
    Timeout,
    NotReady,
    OwnerGone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Changed,
    NoOp,
    Refused,
}

#[derive(Debug, Clone, PartialEq)]
struct Model {
    tracked: bool,
    state: StateName,
    has_pid: bool,
    ready: bool,
    killed: bool,
    cause: Option<Cause>,
    exit: Option<ExitStatus>,
    restarts: u32,
    last: Option<Expect>,
    version: u64,
    /// While unreachable: the state it was in.
    away: Option<StateName>,
}

#[derive(Debug, Clone)]
enum Op {
    Start,
    Spawned,
    SpawnFailed,
    Exited(ExitStatus),
    Requeue(ExitStatus),
    Stop(Cause),
    Escalate,
    Pause,
    Resume,
    TimeOut,
    Ready,
    Progress(u8),
    Complete,
    Fail,
    Lose,
    Unreach,
    Reach,
}

impl Op {
    fn to_transition(&self) -> Transition {
        match self {
            Op::Start => Transition::Start,
            Op::Spawned => Transition::Spawned { pid: 4242 },
            Op::SpawnFailed => Transition::SpawnFailed {
                error: "no such file".into(),
            },
            Op::Exited(status) => Transition::Exited {
                status: *status,
                limit: None,
            },
            Op::Requeue(status) => Transition::Requeue {
                status: *status,
                not_before: Timestamp::from_millis(u64::MAX / 2),
            },
            Op::Stop(c) => Transition::Stop {
                cause: match c {
                    Cause::Requested => StopCause::Requested,
                    Cause::Timeout => StopCause::Timeout,
                    Cause::NotReady => StopCause::NotReady {
                        after: Span::from_secs(1),
                    },
                    Cause::OwnerGone => StopCause::OwnerGone,
                },
            },
            Op::Escalate => Transition::Escalate,
            Op::Pause => Transition::Pause,
            Op::Resume => Transition::Resume,
            Op::TimeOut => Transition::TimeOut,
            Op::Ready => Transition::Ready,
            Op::Progress(p) => Transition::Progress {
                percent: Percent::new(*p).expect("0..=100"),
                message: None,
            },
            Op::Complete => Transition::Complete {
                result: Some(serde_json::json!(1)),
            },
            Op::Fail => Transition::Fail {
                error: "boom".into(),
            },
            Op::Lose => Transition::Lose {
                reason: "node gone".into(),
            },
            Op::Unreach => Transition::Unreach {
                reason: "node b stopped renewing its lease".into(),
            },
            Op::Reach => Transition::Reach,
        }
    }
}

fn exit_state(status: ExitStatus) -> StateName {
    if status == ExitStatus::Code(0) {
        StateName::Completed
    } else {
        StateName::Failed
    }
}

/// The model's rules: from (state, input) to (expectation, next model).
fn step(m: &Model, op: &Op) -> (Expect, Model) {
    use StateName::*;
    let mut n = m.clone();
    if m.state.is_terminal() {
        let e = match op {
            Op::Complete
            | Op::Fail
            | Op::Stop(_)
            | Op::Lose
            | Op::Exited(_)
            | Op::Unreach
            | Op::Reach => Expect::NoOp,
            _ => Expect::Refused,
        };
        return (e, n);
    }
    let expect = away_or_lost(m, op, &mut n).unwrap_or_else(|| match m.state {
        Pending => from_pending(m, op, &mut n),
        Starting => from_starting(op, &mut n),
        Running | Paused => from_running(m, op, &mut n),
        Stopping => from_stopping(m, op, &mut n),
        _ => Expect::Refused,
    });
    if expect == Expect::Changed {
        n.version += 1;
    } else {
        n = Model {
            last: None,
            ..m.clone()
        };
    }
    (expect, n)
}

/// The model ended in `s`: its process gone.
fn end(n: &mut Model, s: StateName) {
    n.state = s;
    n.has_pid = false;
}

/// Stopping for `cause`, not killed yet.
fn stopping(n: &mut Model, cause: Cause) -> Expect {
    n.state = StateName::Stopping;
    n.cause = Some(cause);
    n.killed = false;
    Expect::Changed
}

/// What its node's loss and return do, in any state but a final one;
/// `None` for any other step.
fn away_or_lost(m: &Model, op: &Op, n: &mut Model) -> Option<Expect> {
    use StateName::*;
    Some(match (m.state, op) {
        // Its node lost: nothing but the node's return or the loss moves it.
        (Unreachable, Op::Reach) => {
            n.state = m.away.expect("unreachable remembers its state");
            n.away = None;
            Expect::Changed
        }
        (Unreachable, Op::Lose) => {
            end(n, Lost);
            n.away = None;
            Expect::Changed
        }
        (Unreachable | Pending, Op::Unreach) | (_, Op::Reach) => Expect::NoOp,
        (Unreachable, _) => Expect::Refused,
        (_, Op::Unreach) => {
            n.away = Some(m.state);
            n.state = Unreachable;
            Expect::Changed
        }
        // Asked to stop and gone: stopped, with its exit code unknown.
        (Stopping, Op::Lose) if matches!(m.cause, Some(Cause::Requested | Cause::OwnerGone)) => {
            end(n, Cancelled);
            Expect::Changed
        }
        (_, Op::Lose) => {
            end(n, Lost);
            Expect::Changed
        }
        _ => return None,
    })
}

fn from_pending(m: &Model, op: &Op, n: &mut Model) -> Expect {
    match op {
        Op::Start if !m.tracked => {
            n.state = StateName::Starting;
            Expect::Changed
        }
        Op::Stop(_) => {
            end(n, StateName::Cancelled);
            Expect::Changed
        }
        Op::Fail => {
            end(n, StateName::Failed);
            Expect::Changed
        }
        _ => Expect::Refused,
    }
}

fn from_starting(op: &Op, n: &mut Model) -> Expect {
    match op {
        Op::Spawned => {
            n.state = StateName::Running;
            n.has_pid = true;
            n.ready = false;
            Expect::Changed
        }
        Op::SpawnFailed => {
            end(n, StateName::Failed);
            Expect::Changed
        }
        Op::Exited(s) => {
            end(n, exit_state(*s));
            n.exit = Some(*s);
            Expect::Changed
        }
        Op::Stop(c) => stopping(n, *c),
        // The child reports before its spawn's answer is handled.
        Op::Progress(_) => Expect::Changed,
        Op::TimeOut => stopping(n, Cause::Timeout),
        _ => Expect::Refused,
    }
}

/// Running or paused: a tracked operation takes only its caller's
/// reports and stops.
fn from_running(m: &Model, op: &Op, n: &mut Model) -> Expect {
    use StateName::*;
    match (m.state, op, m.tracked) {
        (Running, Op::Stop(_), true) => {
            end(n, Cancelled);
            Expect::Changed
        }
        (Running, Op::TimeOut, true) => {
            end(n, TimedOut);
            Expect::Changed
        }
        (Running, Op::Complete, true) => {
            end(n, Completed);
            Expect::Changed
        }
        (Running, Op::Fail, true) => {
            end(n, Failed);
            Expect::Changed
        }
        (Running, Op::Ready, true) => Expect::NoOp,
        (Running, Op::Progress(_), true) => Expect::Changed,
        (Running, _, true) => Expect::Refused,
        (_, Op::Exited(s), false) => {
            end(n, exit_state(*s));
            n.exit = Some(*s);
            Expect::Changed
        }
        (_, Op::Requeue(_), false) => {
            end(n, Pending);
            n.restarts += 1;
            Expect::Changed
        }
        (Running, Op::Pause, false) => {
            n.state = Paused;
            Expect::Changed
        }
        (Paused, Op::Resume, false) => {
            n.state = Running;
            Expect::Changed
        }
        (_, Op::Stop(c), false) => stopping(n, *c),
        (_, Op::TimeOut, false) => stopping(n, Cause::Timeout),
        (_, Op::Ready, false) if m.ready => Expect::NoOp,
        (_, Op::Ready, false) => {
            n.ready = true;
            Expect::Changed
        }
        (_, Op::Progress(_), _) => Expect::Changed,
        _ => Expect::Refused,
    }
}

fn from_stopping(m: &Model, op: &Op, n: &mut Model) -> Expect {
    match op {
        Op::Progress(_) => Expect::Changed,
        Op::Stop(_) | Op::TimeOut => Expect::NoOp,
        Op::Spawned if !m.has_pid => {
            n.has_pid = true;
            Expect::Changed
        }
        Op::SpawnFailed if !m.has_pid => {
            end(n, StateName::Cancelled);
            Expect::Changed
        }
        Op::Escalate if m.killed => Expect::NoOp,
        Op::Escalate => {
            n.killed = true;
            Expect::Changed
        }
        Op::Exited(s) => {
            let to = match m.cause.expect("stopping has a cause") {
                Cause::Requested | Cause::OwnerGone => StateName::Cancelled,
                Cause::Timeout => StateName::TimedOut,
                Cause::NotReady => StateName::Failed,
            };
            end(n, to);
            n.exit = Some(*s);
            Expect::Changed
        }
        _ => Expect::Refused,
    }
}

struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        any::<bool>()
            .prop_map(|tracked| Model {
                tracked,
                state: if tracked {
                    StateName::Running
                } else {
                    StateName::Pending
                },
                has_pid: false,
                ready: tracked,
                killed: false,
                cause: None,
                exit: None,
                restarts: 0,
                last: None,
                version: 1,
                away: None,
            })
            .boxed()
    }

    fn transitions(_: &Model) -> BoxedStrategy<Op> {
        let status = prop_oneof![
            (0i32..3).prop_map(ExitStatus::Code),
            prop_oneof![Just(9), Just(15)].prop_map(ExitStatus::Signal)
        ];
        let cause = prop_oneof![
            Just(Cause::Requested),
            Just(Cause::Timeout),
            Just(Cause::NotReady),
            Just(Cause::OwnerGone)
        ];
        prop_oneof![
            3 => Just(Op::Start),
            3 => Just(Op::Spawned),
            1 => Just(Op::SpawnFailed),
            3 => status.clone().prop_map(Op::Exited),
            1 => status.prop_map(Op::Requeue),
            2 => cause.prop_map(Op::Stop),
            1 => Just(Op::Escalate),
            2 => Just(Op::Pause),
            2 => Just(Op::Resume),
            1 => Just(Op::TimeOut),
            1 => Just(Op::Ready),
            1 => (0u8..=100).prop_map(Op::Progress),
            1 => Just(Op::Complete),
            1 => Just(Op::Fail),
            1 => Just(Op::Lose),
            1 => Just(Op::Unreach),
            1 => Just(Op::Reach),
        ]
        .boxed()
    }

    fn apply(state: Model, op: &Op) -> Model {
        let (expect, mut next) = step(&state, op);
        next.last = Some(expect);
        next
    }
}

struct Domain;

impl StateMachineTest for Domain {
    type SystemUnderTest = (ProcessRecord, u64);
    type Reference = Reference;

    fn init_test(model: &Model) -> Self::SystemUnderTest {
        let spec = if model.tracked {
            ProcessSpec::tracked(ProcessName::new("op").expect("name"))
        } else {
            ProcessSpec::argv(["true"])
        };
        let id = ProcessId::from_uuid(uuid::Uuid::from_u128(1));
        (
            ProcessRecord::new(id, NodeId::local(), spec, Timestamp::from_millis(1)),
            1,
        )
    }

    fn apply(
        (mut record, t): Self::SystemUnderTest,
        model: &Model,
        op: Op,
    ) -> Self::SystemUnderTest {
        let before = record.clone();
        let kind = op.to_transition().kind();
        let got = record.apply(op.to_transition(), Timestamp::from_millis(t + 1));
        let expected = model.last.expect("the model recorded its expectation");
        match (expected, &got) {
            (Expect::Changed, Ok(Applied::Changed)) => {
                assert_eq!(
                    record.version(),
                    before.version() + 1,
                    "a change bumps the version"
                );
            }
            (Expect::NoOp, Ok(Applied::NoOp)) => {
                assert_eq!(record, before, "a no-op changes nothing");
            }
            (Expect::Refused, Err(e)) => {
                assert_eq!(e.from, before.state(), "the error names the current state");
                assert_eq!(e.attempted, kind, "the error names the attempt");
                assert_eq!(record, before, "a refusal changes nothing");
                assert!(e.to_string().contains(before.state().as_str()), "{e}");
            }
            _ => panic!(
                "{op:?} from {}: model expects {expected:?}, domain gave {got:?}",
                before.state()
            ),
        }
        (record, t + 1)
    }

    fn check_invariants((record, _): &Self::SystemUnderTest, model: &Model) {
        assert_eq!(record.state(), model.state);
        assert_eq!(record.version(), model.version);
        assert_eq!(record.restarts(), model.restarts);
        assert_eq!(
            record.pid().is_some(),
            model.has_pid && !record.is_terminal(),
            "pid while live"
        );
        let l = record.lifecycle();
        if record.is_terminal() {
            assert!(l.ended_at().is_some(), "a finished record has an end time");
            assert!(
                record.state() == StateName::Completed || l.error().is_some(),
                "a record that did not complete says why"
            );
            if let Some(exit) = model.exit {
                assert_eq!(l.exit(), Some(exit), "the exit status is kept");
            }
        }
        if matches!(record.state(), StateName::Running | StateName::Paused) {
            assert_eq!(l.ready_at().is_some(), model.ready);
        }
        if let bpm_domain::Lifecycle::Stopping { killed, .. } = l {
            assert_eq!(*killed, model.killed);
        }
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]
    #[test]
    fn the_domain_refuses_exactly_what_the_model_refuses(sequential 1..40 => Domain);
}
