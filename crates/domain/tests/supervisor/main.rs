//! The supervisor core, input by input: restore after a restart, losses,
//! idleness, removal, readiness, and the effects each produces.

use bpm_domain::{
    CoreError, Effect, EventKind, ExitStatus, Input, Limits, ListFilter, NodeId, ProcessId,
    ProcessName, ProcessRecord, ProcessSpec, ReadinessCheck, Span, SpecError, StateName, StopCause,
    Supervisor, Timer, TimerKind, Timestamp, Transition,
};

mod handover;
mod rules;

fn id(n: u128) -> ProcessId {
    ProcessId::from_uuid(uuid::Uuid::from_u128(n))
}

fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn armed(effects: &[Effect]) -> Vec<(Timer, Timestamp)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ArmTimer { timer, at } => Some((*timer, *at)),
            _ => None,
        })
        .collect()
}

fn events(effects: &[Effect]) -> Vec<(ProcessId, EventKind)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Publish(ev) => Some((ev.id, ev.kind)),
            _ => None,
        })
        .collect()
}

fn running(n: u128, spec: ProcessSpec, started: u64) -> ProcessRecord {
    let mut r = ProcessRecord::new(id(n), NodeId::local(), spec, t(started));
    r.apply(Transition::Start, t(started)).expect("start");
    r.apply(
        Transition::Spawned {
            pid: 4000 + u32::try_from(n).expect("small"),
        },
        t(started),
    )
    .expect("spawned");
    r
}

fn core(limits: Limits) -> Supervisor {
    Supervisor::new(NodeId::local(), limits)
}

fn spawns(effects: &[Effect]) -> Vec<ProcessId> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Spawn { record } => Some(record.id()),
            _ => None,
        })
        .collect()
}

#[test]
fn restore_takes_back_records_rearms_timers_and_resumes_the_queue() {
    let mut timed = ProcessSpec::argv(["serve"]);
    timed.timeout = Some(Span::from_secs(100));
    let live = running(1, timed, 1_000);
    let mut stopping = running(2, ProcessSpec::argv(["x"]), 1_000);
    stopping
        .apply(
            Transition::Stop {
                cause: StopCause::Requested,
            },
            t(2_000),
        )
        .expect("stop");
    let mut done = running(3, ProcessSpec::argv(["x"]), 1_000);
    done.apply(
        Transition::Exited {
            status: ExitStatus::Code(0),
            limit: None,
        },
        t(3_000),
    )
    .expect("exit");
    let mut child_spec = ProcessSpec::argv(["child"]);
    child_spec.parent = Some(id(1));
    let child = ProcessRecord::new(id(4), NodeId::local(), child_spec, t(1_500));
    let mut waits = ProcessSpec::argv(["after"]);
    waits.dependencies = vec![id(1)];
    let waiting = ProcessRecord::new(id(5), NodeId::local(), waits, t(1_600));
    let foreign = ProcessRecord::new(
        id(6),
        NodeId::new("other").expect("node"),
        ProcessSpec::argv(["x"]),
        t(1),
    );

    let limits = Limits {
        max_running: 3,
        retention: Some(Span::from_secs(60)),
        ..Limits::default()
    };
    let mut c = core(limits);
    let effects = c.restore(
        vec![waiting, child, done, stopping, live, foreign],
        t(10_000),
    );
    assert!(
        c.get(id(6)).is_none(),
        "another node's record is not ours to supervise"
    );
    assert_eq!(c.depth(id(4)), Some(1));
    assert_eq!(c.node(), &NodeId::local());
    assert_eq!(c.limits().max_running, 3);
    let timers = armed(&effects);
    let timer = |n, kind| Timer {
        id: id(n),
        kind,
        attempt: 0,
    };
    assert!(
        timers.contains(&(timer(1, TimerKind::Timeout), t(101_000))),
        "timeout counts from the start: {timers:?}"
    );
    assert!(
        timers.contains(&(timer(2, TimerKind::Grace), t(15_000))),
        "a stop in progress gets a new grace period"
    );
    assert!(timers.contains(&(timer(3, TimerKind::Retention), t(63_000))));
    // Two slots were held (running, stopping); the child starts in the third; the dependant waits.
    let spawned: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Spawn { record } => Some(record.id()),
            _ => None,
        })
        .collect();
    assert_eq!(spawned, [id(4)]);
    assert_eq!(c.active(), 3);
    assert_eq!(
        c.get(id(5)).map(ProcessRecord::state),
        Some(StateName::Pending)
    );
    c.check_invariants().expect("consistent");
    // The dependency completes: the dependant becomes ready (no slot yet).
    c.handle(
        Input::Exited {
            id: id(1),
            status: ExitStatus::Code(0),
            limit: None,
        },
        t(11_000),
    )
    .expect("exit");
    assert_eq!(
        c.get(id(5)).map(ProcessRecord::state),
        Some(StateName::Starting)
    );
}

#[test]
fn losses_name_their_reason_and_free_slots() {
    let mut c = core(Limits {
        max_running: 1,
        ..Limits::default()
    });
    c.handle(
        Input::Submit {
            id: id(1),
            spec: ProcessSpec::argv(["a"]),
        },
        t(1),
    )
    .expect("submit");
    c.handle(Input::Spawned { id: id(1), pid: 10 }, t(2))
        .expect("spawned");
    c.handle(
        Input::Submit {
            id: id(2),
            spec: ProcessSpec::argv(["b"]),
        },
        t(3),
    )
    .expect("submit");
    let effects = c
        .handle(
            Input::Lost {
                id: id(1),
                reason: "pid 10 vanished".into(),
            },
            t(4),
        )
        .expect("lost");
    assert_eq!(
        c.get(id(1)).and_then(|r| r.lifecycle().error()).as_deref(),
        Some("pid 10 vanished")
    );
    assert!(events(&effects).contains(&(id(1), EventKind::Lost)));
    assert_eq!(
        c.get(id(2)).map(ProcessRecord::state),
        Some(StateName::Starting),
        "the slot went on"
    );
    c.handle(
        Input::NodeLost {
            node: NodeId::local(),
        },
        t(5),
    )
    .expect("node lost");
    let r = c.get(id(2)).expect("record");
    assert_eq!(r.state(), StateName::Lost);
    assert_eq!(
        r.lifecycle().error().as_deref(),
        Some("node local was lost")
    );
    assert_eq!(c.active(), 0);
    c.check_invariants().expect("consistent");
}

#[test]
fn idleness_is_an_event_without_a_change() {
    let mut c = core(Limits::default());
    c.handle(
        Input::Submit {
            id: id(1),
            spec: ProcessSpec::argv(["agent"]),
        },
        t(1),
    )
    .expect("submit");
    c.handle(Input::Spawned { id: id(1), pid: 10 }, t(2))
        .expect("spawned");
    let version = c.get(id(1)).expect("record").version();
    let effects = c.handle(Input::Idle { id: id(1) }, t(3)).expect("idle");
    assert_eq!(events(&effects), [(id(1), EventKind::Idle)]);
    assert!(!effects.iter().any(|e| matches!(e, Effect::Persist { .. })));
    assert_eq!(c.get(id(1)).expect("record").version(), version);
    assert_eq!(
        c.handle(Input::Idle { id: id(9) }, t(3)),
        Err(CoreError::NotFound(id(9)))
    );
}

#[test]
fn readiness_cancels_its_timer_and_is_announced_once() {
    let mut spec = ProcessSpec::argv(["serve"]);
    spec.readiness.check = ReadinessCheck::Port { port: 8080 };
    spec.readiness.timeout = Some(Span::from_secs(5));
    let mut c = core(Limits::default());
    c.handle(Input::Submit { id: id(1), spec }, t(1))
        .expect("submit");
    let effects = c
        .handle(Input::Spawned { id: id(1), pid: 10 }, t(2))
        .expect("spawned");
    assert!(
        armed(&effects)
            .iter()
            .any(|(tm, at)| tm.kind == TimerKind::Readiness && *at == t(5_002))
    );
    let effects = c.handle(Input::Ready { id: id(1) }, t(3)).expect("ready");
    assert_eq!(events(&effects), [(id(1), EventKind::Ready)]);
    assert!(
        effects.iter().any(
            |e| matches!(e, Effect::CancelTimer { timer } if timer.kind == TimerKind::Readiness)
        )
    );
    let again = c
        .handle(Input::Ready { id: id(1) }, t(4))
        .expect("ready again");
    assert!(
        again.is_empty(),
        "a second readiness changes nothing: {again:?}"
    );
    // A stale readiness timer is ignored.
    let stale = c.handle(
        Input::TimerFired(Timer {
            id: id(1),
            kind: TimerKind::Readiness,
            attempt: 0,
        }),
        t(6_000),
    );
    assert_eq!(stale.expect("ignored"), []);
    assert_eq!(c.get(id(1)).expect("record").state(), StateName::Running);
}

#[test]
fn remove_deletes_only_finished_records() {
    let mut c = core(Limits::default());
    c.handle(
        Input::Submit {
            id: id(1),
            spec: ProcessSpec::argv(["a"]),
        },
        t(1),
    )
    .expect("submit");
    assert_eq!(
        c.handle(Input::Remove { id: id(1) }, t(2)),
        Err(CoreError::NotFinished {
            id: id(1),
            state: StateName::Starting
        })
    );
    c.handle(
        Input::SpawnFailed {
            id: id(1),
            error: "no such file".into(),
        },
        t(3),
    )
    .expect("failed");
    let effects = c.handle(Input::Remove { id: id(1) }, t(4)).expect("remove");
    assert!(effects.contains(&Effect::Delete { id: id(1) }));
    assert!(c.get(id(1)).is_none());
    assert_eq!(
        c.handle(Input::Remove { id: id(1) }, t(5)),
        Err(CoreError::NotFound(id(1)))
    );
}

#[test]
fn a_refused_input_produces_no_effect() {
    let mut c = core(Limits::default());
    let op = ProcessSpec::tracked(ProcessName::new("op").expect("name"));
    c.handle(
        Input::Submit {
            id: id(1),
            spec: op.clone(),
        },
        t(1),
    )
    .expect("submit");
    assert_eq!(
        c.handle(
            Input::Submit {
                id: id(1),
                spec: op
            },
            t(1)
        ),
        Err(CoreError::AlreadyExists(id(1)))
    );
    let err = c
        .handle(Input::Pause { id: id(1) }, t(2))
        .expect_err("no process");
    assert!(err.to_string().ends_with("it has no OS process"), "{err}");
    let mut selfish = ProcessSpec::argv(["a"]);
    selfish.dependencies = vec![id(2)];
    assert_eq!(
        c.handle(
            Input::Submit {
                id: id(2),
                spec: selfish
            },
            t(1)
        ),
        Err(CoreError::SelfDependency(id(2)))
    );
    // A spec placed on another node is that node's core's to take.
    let mut placed = ProcessSpec::argv(["a"]);
    placed.node = Some(NodeId::new("beta").expect("name"));
    let refused = c
        .handle(
            Input::Submit {
                id: id(3),
                spec: placed.clone(),
            },
            t(1),
        )
        .expect_err("another node's");
    assert_eq!(
        refused,
        CoreError::OtherNode {
            placed: NodeId::new("beta").expect("name"),
            here: NodeId::local()
        }
    );
    assert!(refused.to_string().contains("send it to beta"), "{refused}");
    assert_eq!(c.records().count(), 1);
    c.check_invariants().expect("consistent");
    placed.node = Some(NodeId::local());
    c.handle(
        Input::Submit {
            id: id(3),
            spec: placed,
        },
        t(1),
    )
    .expect("placed here");
}

#[test]
fn stop_of_a_starting_process_signals_once_its_pid_is_known() {
    let mut c = core(Limits::default());
    c.handle(
        Input::Submit {
            id: id(1),
            spec: ProcessSpec::argv(["a"]),
        },
        t(1),
    )
    .expect("submit");
    let effects = c
        .handle(
            Input::Stop {
                id: id(1),
                force: false,
                grace: Some(Span::from_secs(2)),
            },
            t(2),
        )
        .expect("stop");
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Signal { .. })),
        "no pid yet"
    );
    let effects = c
        .handle(Input::Spawned { id: id(1), pid: 77 }, t(3))
        .expect("spawned");
    assert!(effects.contains(&Effect::Signal {
        id: id(1),
        pid: 77,
        signal: bpm_domain::Signal::Term
    }));
    let effects = c
        .handle(
            Input::Exited {
                id: id(1),
                status: ExitStatus::Signal(15),
                limit: None,
            },
            t(4),
        )
        .expect("exit");
    assert!(events(&effects).contains(&(id(1), EventKind::Cancelled)));
    // A forced stop while starting sends KILL when the pid arrives.
    c.handle(
        Input::Submit {
            id: id(2),
            spec: ProcessSpec::argv(["b"]),
        },
        t(5),
    )
    .expect("submit");
    c.handle(
        Input::Stop {
            id: id(2),
            force: true,
            grace: None,
        },
        t(6),
    )
    .expect("stop");
    let effects = c
        .handle(Input::Spawned { id: id(2), pid: 78 }, t(7))
        .expect("spawned");
    assert!(effects.contains(&Effect::Signal {
        id: id(2),
        pid: 78,
        signal: bpm_domain::Signal::Kill
    }));
    // A failed spawn of a stopping record ends it cancelled.
    c.handle(
        Input::Submit {
            id: id(3),
            spec: ProcessSpec::argv(["c"]),
        },
        t(8),
    )
    .expect("submit");
    c.handle(
        Input::Stop {
            id: id(3),
            force: false,
            grace: None,
        },
        t(9),
    )
    .expect("stop");
    c.handle(
        Input::SpawnFailed {
            id: id(3),
            error: "gone".into(),
        },
        t(10),
    )
    .expect("failed spawn");
    assert_eq!(c.get(id(3)).expect("record").state(), StateName::Cancelled);
}

#[test]
fn list_filters_match_every_field() {
    let mut spec = ProcessSpec::argv(["a"]);
    spec.session = Some("s1".parse().expect("session"));
    spec.group = Some("g".parse().expect("group"));
    spec.kind = bpm_domain::ProcessKind::Build;
    spec.parent = Some(id(9));
    spec.labels
        .insert("team".parse().expect("key"), "core".parse().expect("value"));
    let r = ProcessRecord::new(id(5), NodeId::local(), spec, t(1));
    assert!(ListFilter::default().matches(&r));
    let f = |f: ListFilter| f.matches(&r);
    assert!(f(ListFilter {
        states: vec![StateName::Pending],
        ..Default::default()
    }));
    assert!(!f(ListFilter {
        states: vec![StateName::Running],
        ..Default::default()
    }));
    assert!(f(ListFilter {
        session: Some("s1".parse().expect("s")),
        ..Default::default()
    }));
    assert!(!f(ListFilter {
        session: Some("s2".parse().expect("s")),
        ..Default::default()
    }));
    assert!(f(ListFilter {
        parent: Some(id(9)),
        ..Default::default()
    }));
    assert!(!f(ListFilter {
        parent: Some(id(8)),
        ..Default::default()
    }));
    assert!(f(ListFilter {
        node: Some(NodeId::local()),
        ..Default::default()
    }));
    assert!(!f(ListFilter {
        node: Some("n2".parse().expect("n")),
        ..Default::default()
    }));
    assert!(f(ListFilter {
        group: Some("g".parse().expect("g")),
        ..Default::default()
    }));
    assert!(f(ListFilter {
        kind: Some(bpm_domain::ProcessKind::Build),
        ..Default::default()
    }));
    assert!(!f(ListFilter {
        kind: Some(bpm_domain::ProcessKind::Server),
        ..Default::default()
    }));
    let label = ("team".parse().expect("k"), "core".parse().expect("v"));
    assert!(f(ListFilter {
        labels: vec![label],
        ..Default::default()
    }));
    let wrong = ("team".parse().expect("k"), "ops".parse().expect("v"));
    assert!(!f(ListFilter {
        labels: vec![wrong],
        ..Default::default()
    }));
    assert!(f(ListFilter {
        after: Some(id(4)),
        ..Default::default()
    }));
    assert!(!f(ListFilter {
        after: Some(id(5)),
        ..Default::default()
    }));
}

#[test]
fn equal_environments_are_kept_once() {
    let mut c = core(Limits::default());
    let env: bpm_domain::Environment = [("PATH".into(), "/bin".into())].into();

    let persisted = |effects: Vec<Effect>| -> ProcessRecord {
        effects
            .into_iter()
            .find_map(|e| match e {
                Effect::Persist { record, .. } => Some(record),
                _ => None,
            })
            .expect("a write")
    };
    let mut records = Vec::new();
    for (n, value) in [(1, "/bin"), (2, "/bin"), (3, "/usr/bin")] {
        let mut spec = ProcessSpec::argv(["x"]);
        let mut e = env.clone();
        e.insert("PATH".into(), value.into());
        spec.env = std::sync::Arc::new(e);
        let effects = c
            .handle(Input::Submit { id: id(n), spec }, t(1_000))
            .expect("submit");
        records.push(persisted(effects));
    }
    let envs: Vec<_> = records.iter().map(|r| r.spec().env.clone()).collect();
    assert!(
        std::sync::Arc::ptr_eq(&envs[0], &envs[1]),
        "equal: one copy"
    );
    assert!(
        !std::sync::Arc::ptr_eq(&envs[1], &envs[2]),
        "different: its own"
    );
    assert_eq!(envs[2][&bpm_domain::OsText::from("PATH")], "/usr/bin");
}

#[test]
fn only_changes_between_active_states_may_skip_the_flush() {
    let mut c = core(Limits {
        max_running: 1,
        ..Limits::default()
    });
    let writes = |effects: &[Effect]| -> Vec<(ProcessId, StateName, bool)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Persist {
                    record, durable, ..
                } => Some((record.id(), record.state(), *durable)),
                _ => None,
            })
            .collect()
    };
    let submit = |c: &mut Supervisor, n: u128| {
        c.handle(
            Input::Submit {
                id: id(n),
                spec: ProcessSpec::argv(["x"]),
            },
            t(1_000),
        )
        .expect("submit")
    };
    // Created in `starting`: durable. The second waits in `pending`: durable.
    assert_eq!(
        writes(&submit(&mut c, 1)),
        [(id(1), StateName::Starting, true)]
    );
    assert_eq!(
        writes(&submit(&mut c, 2)),
        [(id(2), StateName::Pending, true)]
    );
    // The pid: starting -> running may stay in the OS's cache.
    let spawned = c
        .handle(Input::Spawned { id: id(1), pid: 41 }, t(1_001))
        .expect("spawned");
    assert_eq!(writes(&spawned), [(id(1), StateName::Running, false)]);
    let paused = c
        .handle(Input::Pause { id: id(1) }, t(1_002))
        .expect("pause");
    assert_eq!(writes(&paused), [(id(1), StateName::Paused, false)]);
    // The end is durable, and so is the next record leaving `pending`.
    let ended = c
        .handle(
            Input::Exited {
                id: id(1),
                status: ExitStatus::Code(0),
                limit: None,
            },
            t(1_003),
        )
        .expect("exit");
    let mut w = writes(&ended);
    w.sort();
    assert_eq!(
        w,
        [
            (id(1), StateName::Completed, true),
            (id(2), StateName::Starting, true)
        ]
    );
    // A tracked operation's reports are always durable.
    c.handle(
        Input::Submit {
            id: id(3),
            spec: ProcessSpec::tracked(ProcessName::new("op").expect("name")),
        },
        t(1_004),
    )
    .expect("track");
    let progress = c
        .handle(
            Input::Progress {
                id: id(3),
                percent: bpm_domain::Percent::new(50).expect("valid"),
                message: None,
            },
            t(1_005),
        )
        .expect("progress");
    assert!(writes(&progress).iter().all(|w| w.2));
}

#[test]
fn a_store_conflict_is_reconciled_with_the_owners_view() {
    let mut core = core(Limits::default());
    let op = ProcessSpec::tracked(ProcessName::new("op").expect("name"));
    core.handle(
        Input::Track {
            id: id(1),
            spec: op,
        },
        t(0),
    )
    .expect("track");
    let mine = core.get(id(1)).expect("known").clone();
    // Another writer stored version 7: the core writes its own view over
    // it, with a version above.
    let effects = core
        .handle(
            Input::StoreConflict {
                id: id(1),
                stored: Some(7),
            },
            t(1),
        )
        .expect("reconciled");
    let [
        Effect::Persist {
            record,
            expected_version,
            durable,
        },
    ] = effects.as_slice()
    else {
        panic!("one write: {effects:?}");
    };
    assert_eq!((*expected_version, *durable), (Some(7), true));
    assert_eq!(record.version(), 8);
    assert_eq!(record.state(), mine.state());
    // The next change builds on it.
    let effects = core
        .handle(
            Input::Complete {
                id: id(1),
                result: None,
            },
            t(2),
        )
        .expect("complete");
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::Persist { record, expected_version: Some(8), .. } if record.version() == 9
    )));
    // The store lost it: it is created again, finished as it is.
    let effects = core
        .handle(
            Input::StoreConflict {
                id: id(1),
                stored: None,
            },
            t(3),
        )
        .expect("reconciled");
    assert!(matches!(
        effects.as_slice(),
        [Effect::Persist { record, expected_version: None, durable: true }]
            if record.state() == StateName::Completed
    ));
    // A record the core does not hold is not its to reconcile.
    let refused = core.handle(
        Input::StoreConflict {
            id: id(2),
            stored: Some(1),
        },
        t(4),
    );
    assert!(
        matches!(refused, Err(CoreError::NotFound(_))),
        "{refused:?}"
    );
}

/// A record whose creation the store never took is forgotten: no write, no
/// event, its slot or its place in the queue given back, and a record that
/// runs already is kept.
#[test]
fn a_record_the_store_never_took_is_forgotten_unless_it_started() {
    let mut core = Supervisor::new(
        NodeId::local(),
        Limits {
            max_running: 1,
            ..Limits::default()
        },
    );
    let submit = |core: &mut Supervisor, n| {
        core.handle(
            Input::Submit {
                id: id(n),
                spec: ProcessSpec::argv(["work"]),
            },
            t(1),
        )
        .expect("submit")
    };
    let first = submit(&mut core, 1);
    assert!(first.iter().any(|e| matches!(e, Effect::Spawn { .. })));
    submit(&mut core, 2);
    assert_eq!((core.active(), core.ready_len()), (1, 1));

    // The queued one: its place is given back.
    let effects = core
        .handle(Input::Unstored { id: id(2) }, t(2))
        .expect("forgotten");
    assert!(effects.contains(&Effect::Delete { id: id(2) }));
    assert!(
        effects
            .iter()
            .all(|e| matches!(e, Effect::Delete { .. } | Effect::CancelTimer { .. })),
        "{effects:?}"
    );
    assert!(core.get(id(2)).is_none());
    assert_eq!(core.ready_len(), 0);

    // The one whose spawn was asked for: its slot is given back.
    let effects = core
        .handle(Input::Unstored { id: id(1) }, t(3))
        .expect("forgotten");
    assert!(events(&effects).is_empty(), "{effects:?}");
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::Persist { .. } | Effect::Spawn { .. })),
        "{effects:?}"
    );
    assert_eq!(core.active(), 0);
    core.check_invariants().expect("consistent");

    // A record that runs is kept.
    submit(&mut core, 3);
    core.handle(Input::Spawned { id: id(3), pid: 9 }, t(4))
        .expect("spawned");
    let effects = core
        .handle(Input::Unstored { id: id(3) }, t(5))
        .expect("kept");
    assert!(effects.is_empty());
    assert_eq!(
        core.get(id(3)).map(ProcessRecord::state),
        Some(StateName::Running)
    );
}

/// An agent's MCP server (kind `mcp`) never waits for a slot: the agent
/// waits on it to go on at all. It starts at once when every slot is
/// taken, and holds none while it runs.
#[test]
fn an_mcp_server_starts_at_once_and_holds_no_slot() {
    let mut c = core(Limits {
        max_running: 1,
        ..Limits::default()
    });
    c.handle(
        Input::Submit {
            id: id(1),
            spec: ProcessSpec::argv(["work"]),
        },
        t(1),
    )
    .expect("submit");
    c.handle(Input::Spawned { id: id(1), pid: 10 }, t(2))
        .expect("spawned");
    let mut server = ProcessSpec::argv(["mcp-server"]);
    server.kind = bpm_domain::ProcessKind::Mcp;
    let effects = c
        .handle(
            Input::Submit {
                id: id(2),
                spec: server,
            },
            t(3),
        )
        .expect("submit");
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Spawn { record } if record.id() == id(2))),
        "the MCP server waited for a slot: {effects:?}"
    );
    c.handle(Input::Spawned { id: id(2), pid: 11 }, t(4))
        .expect("spawned");
    assert_eq!(c.active(), 1, "only the work holds the slot");
    // Other work still waits for the one slot.
    c.handle(
        Input::Submit {
            id: id(3),
            spec: ProcessSpec::argv(["more"]),
        },
        t(5),
    )
    .expect("submit");
    assert_eq!(
        c.get(id(3)).map(ProcessRecord::state),
        Some(StateName::Pending)
    );
    c.check_invariants().expect("consistent");
}

/// A process with a stop command is stopped by the command first (the
/// signal follows it), and KILL waits the command's time and the grace;
/// a forced stop sends KILL at once, with no command.
#[test]
fn a_stop_command_comes_before_the_signal_and_widens_the_grace() {
    let mut c = core(Limits::default());
    let mut spec = ProcessSpec::argv(["a"]);
    spec.stop_command = Some(Box::new(bpm_domain::StopCommand {
        command: "kill -INT $PPID".into(),
        timeout: Span::from_secs(3),
    }));
    c.handle(
        Input::Submit {
            id: id(1),
            spec: spec.clone(),
        },
        t(1),
    )
    .expect("submit");
    c.handle(Input::Spawned { id: id(1), pid: 77 }, t(2))
        .expect("spawned");
    let effects = c
        .handle(
            Input::Stop {
                id: id(1),
                force: false,
                grace: Some(Span::from_secs(2)),
            },
            t(1_000),
        )
        .expect("stop");
    assert!(effects.contains(&Effect::StopByCommand {
        id: id(1),
        pid: 77,
        command: "kill -INT $PPID".into(),
        within: Span::from_secs(3),
        signal: bpm_domain::Signal::Term,
    }));
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Signal { .. })),
        "the signal is the command's to follow: {effects:?}"
    );
    let grace = armed(&effects)
        .into_iter()
        .find(|(timer, _)| timer.kind == TimerKind::Grace)
        .expect("a grace timer");
    assert_eq!(grace.1, t(6_000), "3 s of command, then 2 s of grace");

    c.handle(Input::Submit { id: id(2), spec }, t(7_000))
        .expect("submit");
    c.handle(Input::Spawned { id: id(2), pid: 78 }, t(7_001))
        .expect("spawned");
    let effects = c
        .handle(
            Input::Stop {
                id: id(2),
                force: true,
                grace: None,
            },
            t(7_002),
        )
        .expect("stop");
    assert!(effects.contains(&Effect::Signal {
        id: id(2),
        pid: 78,
        signal: bpm_domain::Signal::Kill
    }));
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::StopByCommand { .. })),
        "{effects:?}"
    );
}
