//! Proptest strategies for bpm's types (the `proptest` feature), so that a
//! property test of code built on bpm takes a few lines:
//!
//! ```
//! use bpm_domain::{ProcessRecord, strategies};
//! use proptest::prelude::*;
//!
//! // Whatever state a record reached, its JSON reads back the same. (In a
//! // test file, the `proptest!` block of `#[test]` functions does the same.)
//! proptest!(|(record in strategies::record())| {
//!     let text = serde_json::to_string(&record).unwrap();
//!     let back: ProcessRecord = serde_json::from_str(&text).unwrap();
//!     prop_assert_eq!(back, record);
//! });
//! ```
//!
//! Every value comes from the domain's own rules: specs pass
//! [`ProcessSpec::validate`], records reach their state through
//! [`ProcessRecord::apply`], and events are those a [`Supervisor`]
//! publishes for the inputs generated.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::{
    Effect, Event, ExitStatus, GroupName, Input, LabelKey, LabelValue, Limits, NodeId, Percent,
    ProcessId, ProcessName, ProcessRecord, ProcessSpec, RestartMode, SessionId, Span, StopCause,
    Supervisor, Timestamp, Transition,
};

/// Ids whose 128 bits are a small number (`1..=ids`), so that generated
/// inputs name the same records often.
pub fn process_id(ids: u128) -> impl Strategy<Value = ProcessId> {
    (1..=ids.max(1)).prop_map(|n| ProcessId::from_uuid(uuid::Uuid::from_u128(n)))
}

/// A spec that [`ProcessSpec::validate`] accepts: a command of one to four
/// words, perhaps a name, a session, a group and labels, a priority, a
/// restart policy, a start delay and a timeout.
pub fn spec() -> impl Strategy<Value = ProcessSpec> {
    let command = prop::collection::vec("[a-z][a-z0-9._/-]{0,11}", 1..=4);
    let name = prop::option::of("[a-z][a-z0-9-]{0,15}");
    let session = prop::option::of("s[0-9]");
    let group = prop::option::of("g[0-3]");
    let labels = prop::collection::btree_map("[a-z]{1,6}", "[a-z0-9]{1,6}", 0..3);
    let restart = (
        prop_oneof![
            Just(RestartMode::Never),
            Just(RestartMode::OnFailure),
            Just(RestartMode::Always),
        ],
        prop::option::of(0u32..5),
    );
    let times = (
        prop::option::of(0u64..5_000),
        prop::option::of(1u64..60_000),
    );
    (
        command,
        name,
        session,
        group,
        labels,
        -5i32..=5,
        restart,
        times,
    )
        .prop_map(
            |(command, name, session, group, labels, priority, restart, times)| {
                let mut spec = ProcessSpec::argv(command);
                spec.name = name.map(|n| ProcessName::new(n).expect("a valid name"));
                spec.session = session.map(|s| SessionId::new(s).expect("a valid session"));
                spec.group = group.map(|g| GroupName::new(g).expect("a valid group"));
                spec.labels = labels
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            LabelKey::new(k).expect("a valid key"),
                            LabelValue::new(v).expect("a valid value"),
                        )
                    })
                    .collect::<BTreeMap<_, _>>();
                spec.priority = priority;
                (spec.restart.mode, spec.restart.max_restarts) = restart;
                spec.delay = times.0.map(Span::from_millis);
                spec.timeout = times.1.map(Span::from_millis);
                spec
            },
        )
}

/// How a process ended: an exit code or a signal.
pub fn exit_status() -> impl Strategy<Value = ExitStatus> {
    prop_oneof![
        (0i32..4).prop_map(ExitStatus::Code),
        prop_oneof![Just(9i32), Just(15)].prop_map(ExitStatus::Signal),
    ]
}

/// Any input to a record's lifecycle, legal in its state or not.
pub fn transition() -> impl Strategy<Value = Transition> {
    prop_oneof![
        Just(Transition::Start),
        (1u32..100_000).prop_map(|pid| Transition::Spawned { pid }),
        Just(Transition::SpawnFailed {
            error: "no such file".into()
        }),
        exit_status().prop_map(|status| Transition::Exited {
            status,
            limit: None
        }),
        prop_oneof![
            Just(StopCause::Requested),
            Just(StopCause::Timeout),
            Just(StopCause::NotReady {
                after: Span::from_millis(500)
            }),
        ]
        .prop_map(|cause| Transition::Stop { cause }),
        Just(Transition::Escalate),
        Just(Transition::Pause),
        Just(Transition::Resume),
        Just(Transition::TimeOut),
        Just(Transition::Ready),
        (0u8..=100).prop_map(|p| Transition::Progress {
            percent: Percent::new(p).expect("0 to 100"),
            message: None,
        }),
        Just(Transition::Complete { result: None }),
        Just(Transition::Fail {
            error: "it failed".into()
        }),
        Just(Transition::Lose {
            reason: "gone".into()
        }),
        Just(Transition::Unreach {
            reason: "its node is silent".into()
        }),
        Just(Transition::Reach),
    ]
}

/// A record in whatever state up to a dozen transitions took it to (those
/// its state refused are left out), each a millisecond after the last.
pub fn record() -> impl Strategy<Value = ProcessRecord> {
    (
        process_id(u128::from(u32::MAX)),
        spec(),
        prop::collection::vec(transition(), 0..12),
    )
        .prop_map(|(id, spec, transitions)| {
            let mut record =
                ProcessRecord::new(id, NodeId::local(), spec, Timestamp::from_millis(1));
            for (n, t) in (2u64..).zip(transitions) {
                let _ = record.apply(t, Timestamp::from_millis(n));
            }
            record
        })
}

/// An input to a [`Supervisor`] about one of records `1..=ids` (see
/// [`process_id`]): a submit, what its process did, or what a caller asked.
pub fn input(ids: u128) -> impl Strategy<Value = Input> {
    let id = || process_id(ids);
    prop_oneof![
        (id(), spec()).prop_map(|(id, spec)| Input::Submit { id, spec }),
        (id(), 1u32..100_000).prop_map(|(id, pid)| Input::Spawned { id, pid }),
        (id(), exit_status()).prop_map(|(id, status)| Input::Exited {
            id,
            status,
            limit: None
        }),
        (id(), any::<bool>()).prop_map(|(id, force)| Input::Stop {
            id,
            force,
            grace: None
        }),
        id().prop_map(|id| Input::Pause { id }),
        id().prop_map(|id| Input::Resume { id }),
    ]
}

/// The events a [`Supervisor`] with default limits publishes for up to
/// `len` inputs about records `1..=ids`, handled 10 ms apart (refused
/// inputs publish nothing).
pub fn events(ids: u128, len: usize) -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec(input(ids), 0..=len).prop_map(|inputs| {
        let mut core = Supervisor::new(NodeId::local(), Limits::default());
        let mut events = Vec::new();
        for (n, input) in (1u64..).zip(inputs) {
            let Ok(effects) = core.handle(input, Timestamp::from_millis(n * 10)) else {
                continue;
            };
            events.extend(effects.into_iter().filter_map(|e| match e {
                Effect::Publish(event) => Some(*event),
                _ => None,
            }));
        }
        events
    })
}
