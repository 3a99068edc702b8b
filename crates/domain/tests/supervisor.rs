//! The supervisor core, input by input: restore after a restart, losses,
//! idleness, removal, readiness, and the effects each produces.

use bpm_domain::{
    CoreError, Effect, EventKind, ExitStatus, Input, Limits, ListFilter, NodeId, ProcessId,
    ProcessName, ProcessRecord, ProcessSpec, ReadinessCheck, Span, SpecError, StateName, StopCause,
    Supervisor, Timer, TimerKind, Timestamp, Transition,
};

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
fn records_handed_over_start_on_exits_in_order_and_first() {
    let mut core = core(Limits {
        max_running: 2,
        hand_over_ahead: 2,
        ..Limits::default()
    });
    for n in 1..=5 {
        let spec = ProcessSpec::argv(["work"]);
        core.handle(
            Input::Submit { id: id(n), spec },
            t(u64::try_from(n).expect("small")),
        )
        .expect("submit");
    }
    for n in 1..=2 {
        let pid = 100 + u32::try_from(n).expect("small");
        core.handle(Input::Spawned { id: id(n), pid }, t(10))
            .expect("spawned");
    }
    // Nothing is handed over while a slot is free, and at most `max`.
    assert_eq!(core.hand_over(), vec![id(3), id(4)]);
    assert_eq!(core.hand_over(), Vec::<ProcessId>::new());
    // An exit with a start in its place: the next record takes the slot at
    // once, with its pid, and nothing else is spawned.
    let effects = core
        .handle(
            Input::HandedOver {
                id: id(1),
                status: ExitStatus::Code(0),
                next: id(3),
                started: Ok(203),
            },
            t(20),
        )
        .expect("handed over");
    assert!(spawns(&effects).is_empty());
    assert_eq!(
        core.get(id(1)).map(ProcessRecord::state),
        Some(StateName::Completed)
    );
    let third = core.get(id(3)).expect("known");
    assert_eq!(
        (third.state(), third.pid()),
        (StateName::Running, Some(203))
    );
    assert_eq!(core.handed_over().collect::<Vec<_>>(), vec![id(4)]);
    // A record submitted later with a higher priority goes after those handed over.
    let mut urgent = ProcessSpec::argv(["urgent"]);
    urgent.priority = 9;
    core.handle(
        Input::Submit {
            id: id(6),
            spec: urgent,
        },
        t(30),
    )
    .expect("submit");
    assert_eq!(core.hand_over(), vec![id(6)]);
    // An exit the spawner did not hand over (its process was not started to):
    // the core starts the first record handed over itself.
    let effects = core
        .handle(
            Input::Exited {
                id: id(2),
                status: ExitStatus::Code(0),
                limit: None,
            },
            t(40),
        )
        .expect("exit");
    assert_eq!(spawns(&effects), vec![id(4)]);
    // Withdrawn records go back to the queue's own order.
    core.withdraw(&[id(6)]);
    assert_eq!(core.handed_over().count(), 0);
    // A start that failed fails its record, and frees the slot for the best one.
    let effects = core
        .handle(
            Input::HandedOver {
                id: id(3),
                status: ExitStatus::Code(0),
                next: id(5),
                started: Err("exec failed".into()),
            },
            t(50),
        )
        .expect("handed over");
    assert_eq!(
        core.get(id(5)).map(ProcessRecord::state),
        Some(StateName::Failed)
    );
    assert_eq!(spawns(&effects), vec![id(6)]);
    // A report that overtakes the answer to 6's own spawn waits for it.
    let effects = core
        .handle(
            Input::HandedOver {
                id: id(6),
                status: ExitStatus::Code(0),
                next: id(5),
                started: Ok(205),
            },
            t(60),
        )
        .expect("handed over");
    assert!(effects.is_empty(), "{effects:?}");
    assert_eq!(
        core.get(id(6)).map(ProcessRecord::state),
        Some(StateName::Starting)
    );
    // Then 6 runs and ends as it happened, and a start reported for a
    // record that has ended is killed.
    let effects = core
        .handle(
            Input::Spawned {
                id: id(6),
                pid: 206,
            },
            t(61),
        )
        .expect("spawned");
    assert_eq!(
        core.get(id(6)).map(ProcessRecord::state),
        Some(StateName::Completed)
    );
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::Signal { id: i, pid: 205, signal: bpm_domain::Signal::Kill } if *i == id(5)
    )));
    assert!(effects.contains(&Effect::ExitRecorded { id: id(6) }));
}

#[test]
fn only_roots_whose_group_has_room_are_handed_over() {
    let mut limits = Limits {
        max_running: 2,
        hand_over_ahead: 4,
        ..Limits::default()
    };
    let g = bpm_domain::GroupName::new("g").expect("valid");
    limits.group_limits.insert(g.clone(), 2);
    let mut core = core(limits);
    let grouped = || {
        let mut s = ProcessSpec::argv(["work"]);
        s.group = Some(g.clone());
        s
    };
    core.handle(
        Input::Submit {
            id: id(1),
            spec: grouped(),
        },
        t(1),
    )
    .expect("submit");
    core.handle(
        Input::Submit {
            id: id(2),
            spec: ProcessSpec::argv(["x"]),
        },
        t(2),
    )
    .expect("submit");
    // Ready behind them: two of group g (room for one more), then a child.
    core.handle(
        Input::Submit {
            id: id(3),
            spec: grouped(),
        },
        t(3),
    )
    .expect("submit");
    core.handle(
        Input::Submit {
            id: id(4),
            spec: grouped(),
        },
        t(4),
    )
    .expect("submit");
    assert_eq!(core.hand_over(), vec![id(3)]);
    let mut core2 = self::core(Limits {
        max_running: 1,
        hand_over_ahead: 4,
        ..Limits::default()
    });
    core2
        .handle(
            Input::Submit {
                id: id(1),
                spec: ProcessSpec::argv(["p"]),
            },
            t(1),
        )
        .expect("submit");
    let mut child = ProcessSpec::argv(["c"]);
    child.parent = Some(id(1));
    core2
        .handle(
            Input::Submit {
                id: id(2),
                spec: child,
            },
            t(2),
        )
        .expect("submit");
    assert!(core2.hand_over().is_empty(), "a child is never handed over");
}

/// A record handed over that a dead spawner started, and the next one
/// found running, is adopted: it runs with its pid in a slot of its own,
/// is no longer handed over, and is never spawned again.
#[test]
fn a_handed_record_a_dead_spawner_started_is_adopted_not_started_again() {
    let mut core = core(Limits {
        max_running: 1,
        hand_over_ahead: 2,
        ..Limits::default()
    });
    for n in 1..=3 {
        let spec = ProcessSpec::argv(["work"]);
        core.handle(
            Input::Submit { id: id(n), spec },
            t(u64::try_from(n).expect("small")),
        )
        .expect("submit");
    }
    core.handle(
        Input::Spawned {
            id: id(1),
            pid: 101,
        },
        t(10),
    )
    .expect("spawned");
    assert_eq!(core.hand_over(), vec![id(2), id(3)]);
    // The spawner died: the one that took over gives back id(3), which
    // never started, and found id(2) running.
    core.withdraw(&[id(3)]);
    let effects = core
        .handle(
            Input::Adopted {
                id: id(2),
                pid: 202,
            },
            t(20),
        )
        .expect("adopted");
    assert!(
        spawns(&effects).is_empty(),
        "nothing is spawned: {effects:?}"
    );
    assert!(
        events(&effects).contains(&(id(2), EventKind::Started)),
        "{effects:?}"
    );
    let second = core.get(id(2)).expect("known");
    assert_eq!(
        (second.state(), second.pid()),
        (StateName::Running, Some(202))
    );
    assert_eq!(core.handed_over().count(), 0);
    // When the first ends, the slot goes to id(3), never to id(2) again.
    let effects = core
        .handle(
            Input::Exited {
                id: id(1),
                status: ExitStatus::Code(0),
                limit: None,
            },
            t(30),
        )
        .expect("exited");
    assert!(spawns(&effects).iter().all(|s| *s != id(2)), "{effects:?}");
}

#[test]
fn live_states_and_ending_events_agree_with_the_lifecycle() {
    for state in StateName::ALL {
        assert_eq!(
            StateName::LIVE.contains(&state),
            !state.is_terminal(),
            "{state}"
        );
        if let Some(kind) = EventKind::for_terminal(state) {
            assert!(kind.ends_record(), "{kind:?}");
        }
    }
    assert_eq!(
        ListFilter::live().states.len() + ListFilter::finished().states.len(),
        StateName::ALL.len()
    );
    let holding = ListFilter::holding_slots().states;
    assert!(
        holding
            .iter()
            .all(|s| s.is_active() && StateName::LIVE.contains(s))
    );
    assert!(!holding.contains(&StateName::Pending));
}

#[test]
fn stop_level_arms_the_kill_after_the_grace_it_is_given() {
    let mut core = core(Limits::default());
    core.handle(
        Input::Submit {
            id: id(1),
            spec: ProcessSpec::argv(["work"]),
        },
        t(0),
    )
    .expect("submit");
    core.handle(
        Input::Spawned {
            id: id(1),
            pid: 101,
        },
        t(1),
    )
    .expect("spawned");
    let effects = core
        .handle(
            Input::StopLevel {
                level: 0,
                force: false,
                grace: Some(Span::from_secs(2)),
            },
            t(10),
        )
        .expect("stop level");
    let armed: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::ArmTimer { at, .. } => Some(*at),
            _ => None,
        })
        .collect();
    assert_eq!(armed, [t(2_010)]);
}

#[test]
fn a_tracked_operation_is_refused_a_command() {
    let mut core = core(Limits::default());
    let err = core
        .handle(
            Input::Track {
                id: id(1),
                spec: ProcessSpec::argv(["work"]),
            },
            t(0),
        )
        .expect_err("refused");
    assert_eq!(err, CoreError::InvalidSpec(SpecError::TrackedWithCommand));
    assert!(core.get(id(1)).is_none(), "nothing half-created");
}

#[test]
fn a_restore_reattaches_live_processes_and_asks_again_for_spawns_under_way() {
    let mut first = core(Limits::default());
    let mut records = std::collections::HashMap::new();
    let mut keep = |effects: Vec<Effect>| {
        for e in effects {
            if let Effect::Persist { record, .. } = e {
                records.insert(record.id(), record);
            }
        }
    };
    for n in 1..=2 {
        keep(
            first
                .handle(
                    Input::Submit {
                        id: id(n),
                        spec: ProcessSpec::argv(["work"]),
                    },
                    t(0),
                )
                .expect("submit"),
        );
    }
    keep(
        first
            .handle(
                Input::Spawned {
                    id: id(1),
                    pid: 101,
                },
                t(1),
            )
            .expect("spawned"),
    );
    // id(2)'s spawn was under way when the manager died.
    let mut second = core(Limits::default());
    let effects = second.restore(records.into_values().collect(), t(10));
    assert!(effects.contains(&Effect::Reattach {
        id: id(1),
        pid: 101
    }));
    let respawned: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Spawn { record } => Some(record.id()),
            _ => None,
        })
        .collect();
    assert_eq!(respawned, [id(2)], "asked again, not lost");
    assert_eq!(
        second.get(id(2)).expect("known").state(),
        StateName::Starting
    );
    // A process that cannot be taken over again is lost, and says why.
    second
        .handle(
            Input::ReattachFailed {
                id: id(1),
                pid: 101,
                machine_restarted: false,
                again: id(50),
            },
            t(11),
        )
        .expect("failed");
    let lost = second.get(id(1)).expect("known");
    assert_eq!(lost.state(), StateName::Lost);
    assert!(
        lost.lifecycle()
            .error()
            .is_some_and(|e| e.contains("could not re-attach to pid 101"))
    );
    assert!(
        second.get(id(50)).is_none(),
        "nothing else starts by itself"
    );
}

/// After a reboot, a process not found again is lost with the reason
/// `machine restarted`; one with a restart policy, or a project's
/// service, starts again as a new record `restarted_from` it, once.
#[test]
fn after_a_reboot_what_would_run_again_comes_back_as_new_records() {
    let mut always = ProcessSpec::argv(["serve"]);
    always.restart.mode = bpm_domain::RestartMode::Always;
    let mut service = ProcessSpec::argv(["web"]);
    service.labels.insert(
        bpm_domain::project::PROJECT_LABEL.parse().expect("key"),
        "shop".parse().expect("value"),
    );
    let records = vec![
        running(1, always, 0),
        running(2, service, 0),
        running(3, ProcessSpec::argv(["once"]), 0),
    ];
    let mut core = core(Limits::default());
    core.restore(records, t(10));
    for n in 1..=3 {
        core.handle(
            Input::ReattachFailed {
                id: id(n),
                pid: 4000 + u32::try_from(n).expect("small"),
                machine_restarted: true,
                again: id(10 + n),
            },
            t(11),
        )
        .expect("handled");
        let lost = core.get(id(n)).expect("known");
        assert_eq!(lost.state(), StateName::Lost);
        assert!(
            lost.lifecycle()
                .error()
                .is_some_and(|e| e.starts_with("machine restarted")),
            "{:?}",
            lost.lifecycle().error()
        );
    }
    for n in [11, 12] {
        let again = core.get(id(n)).expect("came back");
        assert_eq!(again.restarted_from(), Some(id(n - 10)));
        assert!(!again.is_terminal());
    }
    assert!(
        core.get(id(13)).is_none(),
        "a plain process does not come back"
    );
    core.check_invariants().expect("consistent");
}

/// Issue 60, item 2: after a restart of bpm alone (not of the machine), a
/// process not found again may have run to its end unseen: only one that
/// restarts `always` runs again; a project's one-shot (a migration) or an
/// `on-failure` process does not run twice by itself.
#[test]
fn after_bpm_alone_restarted_only_what_restarts_always_comes_back() {
    let mut always = ProcessSpec::argv(["serve"]);
    always.restart.mode = bpm_domain::RestartMode::Always;
    let mut migrate = ProcessSpec::argv(["migrate"]);
    migrate.labels.insert(
        bpm_domain::project::PROJECT_LABEL.parse().expect("key"),
        "shop".parse().expect("value"),
    );
    let mut on_failure = ProcessSpec::argv(["job"]);
    on_failure.restart.mode = bpm_domain::RestartMode::OnFailure;
    let records = vec![
        running(1, always, 0),
        running(2, migrate, 0),
        running(3, on_failure, 0),
    ];
    let mut core = core(Limits::default());
    core.restore(records, t(10));
    for n in 1..=3 {
        core.handle(
            Input::ReattachFailed {
                id: id(n),
                pid: 4000 + u32::try_from(n).expect("small"),
                machine_restarted: false,
                again: id(10 + n),
            },
            t(11),
        )
        .expect("handled");
        assert_eq!(
            core.get(id(n)).map(ProcessRecord::state),
            Some(StateName::Lost)
        );
    }
    assert!(
        core.get(id(11)).is_some_and(|r| !r.is_terminal()),
        "always comes back"
    );
    assert!(
        core.get(id(12)).is_none(),
        "the project's one-shot does not run twice"
    );
    assert!(core.get(id(13)).is_none(), "on-failure: its end is unknown");
    core.check_invariants().expect("consistent");
}

#[test]
fn a_request_finds_its_records_and_a_restart_belongs_to_none() {
    let request = uuid::Uuid::from_u128(9);
    let mut core = core(Limits::default());
    for n in 1..=2 {
        let mut spec = ProcessSpec::argv(["work"]);
        spec.request = Some(bpm_domain::RequestRef {
            id: request,
            index: u32::try_from(n).expect("small"),
        });
        core.handle(Input::Submit { id: id(n), spec }, t(0))
            .expect("submit");
    }
    core.handle(
        Input::Submit {
            id: id(3),
            spec: ProcessSpec::argv(["other"]),
        },
        t(0),
    )
    .expect("submit");
    core.handle(
        Input::Restart {
            id: id(1),
            new_id: id(4),
        },
        t(1),
    )
    .expect("restart");
    let filter = ListFilter {
        request: Some(request),
        ..ListFilter::default()
    };
    let found: Vec<_> = (1..=4)
        .filter(|n| core.get(id(*n)).is_some_and(|r| filter.matches(r)))
        .collect();
    assert_eq!(found, [1, 2]);
}

#[test]
fn an_exit_that_overtakes_its_spawns_answer_is_handled_after_it() {
    let mut core = core(Limits::default());
    let mut spec = ProcessSpec::argv(["flaky"]);
    spec.restart.mode = bpm_domain::RestartMode::Always;
    spec.restart.max_restarts = Some(1);
    let effects = core
        .handle(Input::Submit { id: id(1), spec }, t(0))
        .expect("submit");
    assert_eq!(spawns(&effects), vec![id(1)]);
    assert!(core.spawn_under_way(id(1)));
    // The process ran and exited before the spawn's answer came: the exit,
    // and a readiness report, wait for it.
    for notice in [
        Input::Ready { id: id(1) },
        Input::Exited {
            id: id(1),
            status: ExitStatus::Code(1),
            limit: None,
        },
    ] {
        let effects = core.handle(notice, t(5)).expect("held");
        assert!(effects.is_empty(), "{effects:?}");
    }
    assert_eq!(
        core.get(id(1)).map(ProcessRecord::state),
        Some(StateName::Starting)
    );
    // The answer comes: the start, then the exit, under the restart policy.
    let effects = core
        .handle(Input::Spawned { id: id(1), pid: 11 }, t(6))
        .expect("spawned");
    assert!(!core.spawn_under_way(id(1)));
    assert_eq!(core.spawns_under_way(), 0);
    let kinds: Vec<EventKind> = events(&effects).into_iter().map(|(_, k)| k).collect();
    assert_eq!(kinds.first(), Some(&EventKind::Started), "{kinds:?}");
    assert!(kinds.contains(&EventKind::Exited), "{kinds:?}");
    let r = core.get(id(1)).expect("known");
    assert_eq!((r.state(), r.restarts()), (StateName::Pending, 1));
    assert!(effects.contains(&Effect::ExitRecorded { id: id(1) }));
    // A notice about a record whose start is known is handled at once.
    let effects = core
        .handle(
            Input::Exited {
                id: id(9),
                status: ExitStatus::Code(0),
                limit: None,
            },
            t(7),
        )
        .expect("an unknown record's exit changes nothing");
    assert_eq!(effects, vec![Effect::ExitRecorded { id: id(9) }]);
}

#[test]
fn a_childs_progress_before_its_spawns_answer_is_kept() {
    let mut core = core(Limits::default());
    let effects = core
        .handle(
            Input::Submit {
                id: id(1),
                spec: ProcessSpec::argv(["job"]),
            },
            t(0),
        )
        .expect("submit");
    assert_eq!(spawns(&effects), vec![id(1)]);
    // The child's first command reports about itself through
    // BPM_PROCESS_ID before the daemon has heard that it was spawned.
    let effects = core
        .handle(
            Input::Progress {
                id: id(1),
                percent: bpm_domain::Percent::new(70).expect("percent"),
                message: Some("halfway".into()),
            },
            t(2),
        )
        .expect("progress while starting is taken");
    assert!(
        events(&effects).contains(&(id(1), EventKind::Progress)),
        "{effects:?}"
    );
    core.handle(Input::Spawned { id: id(1), pid: 11 }, t(3))
        .expect("spawned");
    let r = core.get(id(1)).expect("known");
    assert_eq!(r.state(), StateName::Running);
    let p = r.progress().expect("kept through the spawn's answer");
    assert_eq!(
        (p.percent.get(), p.message.as_deref()),
        (70, Some("halfway"))
    );
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

fn named(name: &str, argv: &[&str], if_taken: bpm_domain::NameTaken) -> ProcessSpec {
    let mut spec = ProcessSpec::argv(argv.iter().copied());
    spec.name = Some(ProcessName::new(name).expect("a name"));
    spec.if_name_taken = if_taken;
    spec
}

/// Issue 60, item 4: replaces of one name in a row, each before the
/// last one's predecessor ended, never let two copies run: each waits for
/// every record of the name still alive, not only the newest.
#[test]
fn replaces_in_a_row_start_one_copy_at_a_time() {
    use bpm_domain::NameTaken::Replace;
    let mut core = core(Limits::default());
    let submit = |core: &mut Supervisor, n: u128| {
        core.handle(
            Input::Submit {
                id: id(n),
                spec: named("x", &["serve"], Replace),
            },
            t(0),
        )
    };
    submit(&mut core, 1).expect("first");
    core.handle(Input::Spawned { id: id(1), pid: 11 }, t(1))
        .expect("spawned");
    // Ten replaces while the first is still stopping.
    for n in 2..=11 {
        let effects = submit(&mut core, n).expect("replace");
        assert!(
            spawns(&effects).is_empty(),
            "replace {n} spawned at once: {effects:?}"
        );
    }
    assert_eq!(
        core.get(id(1)).map(ProcessRecord::state),
        Some(StateName::Stopping)
    );
    for n in 2..=10 {
        assert_eq!(
            core.get(id(n)).map(ProcessRecord::state),
            Some(StateName::Cancelled),
            "replace {n} was itself replaced before it started"
        );
    }
    let effects = core
        .handle(
            Input::Exited {
                id: id(1),
                status: ExitStatus::Signal(15),
                limit: None,
            },
            t(2),
        )
        .expect("exit");
    assert_eq!(
        spawns(&effects),
        vec![id(11)],
        "only the last starts, once the first ended"
    );
}

/// One live record per name on a node: refused, reused when ensured and
/// alike, refused naming what differs, or replaced (the new one waits for
/// the old to end); a restart keeps its name; an ended record frees it.
#[test]
fn a_name_belongs_to_one_live_record() {
    use bpm_domain::NameTaken::{Ensure, Refuse, Replace};
    let mut core = core(Limits::default());
    let submit = |core: &mut Supervisor, n: u128, spec: ProcessSpec| {
        core.handle(Input::Submit { id: id(n), spec }, t(0))
    };
    submit(&mut core, 1, named("web", &["serve"], Refuse)).expect("first");
    core.handle(Input::Spawned { id: id(1), pid: 11 }, t(1))
        .expect("spawned");
    let e = submit(&mut core, 2, named("web", &["serve"], Refuse)).expect_err("taken");
    assert!(
        matches!(e, CoreError::NameTaken { id: live, .. } if live == id(1)),
        "{e}"
    );
    assert_eq!(e.reused(), None);
    let e = submit(&mut core, 3, named("web", &["serve"], Ensure)).expect_err("reused");
    assert_eq!(e.reused(), Some(id(1)));
    let e = submit(
        &mut core,
        4,
        named("web", &["serve", "--port", "1"], Ensure),
    )
    .expect_err("differs");
    assert_eq!(e.reused(), None);
    assert!(e.to_string().contains("differs in command"), "{e}");
    assert!(core.get(id(2)).is_none() && core.get(id(3)).is_none());
    // A restart replaces its record under the same name.
    core.handle(
        Input::Restart {
            id: id(1),
            new_id: id(5),
        },
        t(2),
    )
    .expect("a restart keeps the name");
    core.handle(
        Input::Exited {
            id: id(1),
            status: ExitStatus::Signal(15),
            limit: None,
        },
        t(3),
    )
    .expect("exit");
    core.handle(Input::Spawned { id: id(5), pid: 15 }, t(4))
        .expect("spawned");
    // Replace: the old one stops; the new one starts only once it ended.
    let effects = submit(&mut core, 6, named("web", &["serve", "-v"], Replace)).expect("replaces");
    assert!(spawns(&effects).is_empty(), "{effects:?}");
    assert_eq!(
        core.get(id(5)).map(ProcessRecord::state),
        Some(StateName::Stopping)
    );
    assert_eq!(
        core.get(id(6)).map(ProcessRecord::state),
        Some(StateName::Pending)
    );
    let effects = core
        .handle(
            Input::Exited {
                id: id(5),
                status: ExitStatus::Signal(15),
                limit: None,
            },
            t(5),
        )
        .expect("exit");
    assert_eq!(spawns(&effects), vec![id(6)]);
    assert_eq!(
        core.get(id(5)).map(ProcessRecord::state),
        Some(StateName::Cancelled)
    );
    // The name now belongs to the new one; once it ended, to nobody.
    let e = submit(&mut core, 7, named("web", &["serve"], Refuse)).expect_err("taken");
    assert!(
        matches!(e, CoreError::NameTaken { id: live, .. } if live == id(6)),
        "{e}"
    );
    core.handle(Input::Spawned { id: id(6), pid: 16 }, t(6))
        .expect("spawned");
    core.handle(
        Input::Exited {
            id: id(6),
            status: ExitStatus::Code(0),
            limit: None,
        },
        t(7),
    )
    .expect("exit");
    submit(&mut core, 8, named("web", &["serve"], Refuse)).expect("free again");
    let mut nameless = ProcessSpec::argv(["serve"]);
    nameless.if_name_taken = Ensure;
    assert_eq!(
        submit(&mut core, 9, nameless),
        Err(CoreError::InvalidSpec(SpecError::NameTakenWithoutName))
    );
}

/// A port goes to one live record at a time: the first free one the
/// kernel showed that no live record holds; a fixed one held is refused
/// naming its holder; a restart keeps it; an ended record frees it.
#[test]
fn a_port_is_held_by_one_live_record() {
    use bpm_domain::{PortAsk, PortRefused};
    let mut core = core(Limits::default());
    let on_ports = |core: &mut Supervisor, n: u128, ask: PortAsk, free: &[u16]| {
        let mut spec = ProcessSpec::argv(["serve"]);
        spec.port = Some(ask);
        core.handle(
            Input::SubmitOnPorts {
                id: id(n),
                spec,
                free: free.to_vec(),
            },
            t(0),
        )
    };
    on_ports(&mut core, 1, PortAsk::Auto, &[4000, 4001]).expect("first");
    assert_eq!(core.get(id(1)).and_then(ProcessRecord::port), Some(4000));
    on_ports(&mut core, 2, PortAsk::Auto, &[4000, 4001]).expect("second");
    assert_eq!(core.get(id(2)).and_then(ProcessRecord::port), Some(4001));
    let e = on_ports(&mut core, 3, PortAsk::Fixed(4000), &[4000]).expect_err("held");
    assert!(
        matches!(&e, CoreError::Port(PortRefused::Held { port: 4000, holder }) if holder.contains(&id(1).to_string())),
        "{e}"
    );
    assert_eq!(
        on_ports(&mut core, 3, PortAsk::Fixed(4002), &[]),
        Err(CoreError::Port(PortRefused::InUse(4002)))
    );
    // Readiness defaults to the port.
    let effects = core
        .handle(Input::Spawned { id: id(1), pid: 11 }, t(1))
        .expect("spawned");
    assert!(
        core.get(id(1))
            .is_some_and(|r| r.lifecycle().ready_at().is_none()),
        "{effects:?}"
    );
    core.handle(
        Input::Restart {
            id: id(1),
            new_id: id(4),
        },
        t(2),
    )
    .expect("restart");
    assert_eq!(core.get(id(4)).and_then(ProcessRecord::port), Some(4000));
    core.handle(
        Input::Exited {
            id: id(1),
            status: ExitStatus::Signal(15),
            limit: None,
        },
        t(3),
    )
    .expect("exit");
    core.handle(Input::Spawned { id: id(4), pid: 14 }, t(4))
        .expect("spawned");
    core.handle(
        Input::Exited {
            id: id(4),
            status: ExitStatus::Code(0),
            limit: None,
        },
        t(5),
    )
    .expect("exit");
    assert!(core.get(id(4)).is_some_and(ProcessRecord::is_terminal));
    on_ports(&mut core, 5, PortAsk::Fixed(4000), &[4000]).expect("free again");
}

/// A record with owners lives while one does: the core watches each
/// owning process once, starts the grace when the last is gone, and stops
/// the record (`owner gone`) when the grace ran out, unless a holder took
/// its session back meanwhile.
#[test]
fn a_record_outlives_its_last_owner_by_its_grace() {
    use bpm_domain::{Owner, ProcessRef, SessionId, Span, TimerKind};
    let mut core = core(Limits::default());
    let shell = ProcessRef { pid: 7, start: 70 };
    let session: SessionId = "agent".parse().expect("session");
    let owned = |owners: Vec<Owner>| {
        let mut spec = ProcessSpec::argv(["serve"]);
        spec.owners = owners;
        spec.owner_grace = Some(Span::from_secs(2));
        spec
    };
    let watches = |effects: &[Effect]| {
        effects
            .iter()
            .filter(|e| matches!(e, Effect::WatchOwner { .. }))
            .count()
    };
    let e = submit_at(&mut core, 1, owned(vec![Owner::Process(shell)]), 0);
    assert_eq!(watches(&e), 1);
    let e = submit_at(&mut core, 2, owned(vec![Owner::Process(shell)]), 0);
    assert_eq!(watches(&e), 0, "one watch per owner");
    let e = submit_at(
        &mut core,
        3,
        owned(vec![Owner::Session(session.clone())]),
        0,
    );
    let grace_of_3 = e.iter().find_map(|e| match e {
        Effect::ArmTimer { timer, at } if timer.kind == TimerKind::OwnerGrace => {
            Some((*timer, *at))
        }
        _ => None,
    });
    let (timer3, at3) = grace_of_3.expect("a session nobody holds starts its grace");
    assert_eq!(at3, t(2_000));
    core.handle(
        Input::HoldSession {
            session,
            holder: ProcessRef { pid: 8, start: 80 },
        },
        t(1_000),
    )
    .expect("held");
    core.handle(Input::TimerFired(timer3), t(2_000))
        .expect("fired");
    assert!(
        core.get(id(3)).is_some_and(|r| !r.is_terminal()),
        "held again in time"
    );
    let e = core
        .handle(Input::OwnerGone { process: shell }, t(5_000))
        .expect("gone");
    let timers: Vec<_> = e
        .iter()
        .filter_map(|e| match e {
            Effect::ArmTimer { timer, at } if timer.kind == TimerKind::OwnerGrace => {
                Some((*timer, *at))
            }
            _ => None,
        })
        .collect();
    assert_eq!(timers.len(), 2, "{e:?}");
    for (timer, at) in timers {
        assert_eq!(at, t(7_000));
        core.handle(Input::TimerFired(timer), at).expect("fired");
    }
    // Their spawns were under way: each stops as soon as it is known.
    for n in [1, 2] {
        assert_eq!(
            core.get(id(n)).map(ProcessRecord::state),
            Some(StateName::Stopping)
        );
        core.handle(
            Input::Spawned {
                id: id(n),
                pid: 100,
            },
            t(7_001),
        )
        .expect("spawned");
        core.handle(
            Input::Exited {
                id: id(n),
                status: ExitStatus::Signal(15),
                limit: None,
            },
            t(7_002),
        )
        .expect("exit");
        let r = core.get(id(n)).expect("known");
        assert_eq!(r.state(), StateName::Cancelled);
        assert_eq!(r.lifecycle().error(), Some("owner gone".to_owned()));
    }
    // The holder goes too: the session's record follows after its grace.
    core.handle(
        Input::OwnerGone {
            process: ProcessRef { pid: 8, start: 80 },
        },
        t(8_000),
    )
    .expect("gone");
    core.handle(Input::TimerFired(timer3), t(10_000))
        .expect("fired");
    assert_eq!(
        core.get(id(3)).map(ProcessRecord::state),
        Some(StateName::Stopping)
    );
}

fn submit_at(core: &mut Supervisor, n: u128, spec: ProcessSpec, at: u64) -> Vec<Effect> {
    core.handle(Input::Submit { id: id(n), spec }, t(at))
        .expect("accepted")
}

/// A dependent starts once each dependency got as far as its condition
/// asks (`started`, `ready`, `completed`, `ended`), and fails, naming it,
/// when one ended short of it; a dependency that already got there does
/// not block, and one that already ended short fails the dependent at once.
#[test]
fn dependencies_wait_for_their_condition() {
    use bpm_domain::{LogPattern, ReadinessCheck, Until};
    let mut core = core(Limits::default());
    let after = |deps: &[(u128, Until)]| {
        let mut spec = ProcessSpec::argv(["serve"]);
        for (d, until) in deps {
            spec.dependencies.push(id(*d));
            spec.until.insert(id(*d), *until);
        }
        spec
    };
    let mut db = ProcessSpec::argv(["db"]);
    db.readiness.check = ReadinessCheck::LogPattern {
        pattern: LogPattern::new("ready").expect("pattern"),
    };
    submit_at(&mut core, 1, db, 0);
    submit_at(&mut core, 2, after(&[(1, Until::Started)]), 0);
    submit_at(&mut core, 3, after(&[(1, Until::Ready)]), 0);
    submit_at(&mut core, 4, after(&[(1, Until::Ended)]), 0);
    submit_at(&mut core, 5, after(&[(1, Until::Completed)]), 0);
    let state = |core: &Supervisor, n| core.get(id(n)).map(ProcessRecord::state);
    let effects = core
        .handle(Input::Spawned { id: id(1), pid: 11 }, t(1))
        .expect("spawned");
    assert_eq!(spawns(&effects), vec![id(2)], "started: only 2 goes");
    let effects = core
        .handle(Input::Ready { id: id(1) }, t(2))
        .expect("ready");
    assert_eq!(spawns(&effects), vec![id(3)], "ready: 3 goes");
    // Already ready: a new dependent is not blocked.
    let effects = submit_at(&mut core, 6, after(&[(1, Until::Ready)]), 3);
    assert_eq!(spawns(&effects), vec![id(6)]);
    core.handle(
        Input::Exited {
            id: id(1),
            status: ExitStatus::Code(1),
            limit: None,
        },
        t(4),
    )
    .expect("exit");
    assert_eq!(
        state(&core, 4),
        Some(StateName::Starting),
        "ended: 4 goes: {:?}",
        core.get(id(4))
    );
    let failed = core.get(id(5)).expect("known");
    assert_eq!(failed.state(), StateName::Failed);
    assert!(
        failed
            .lifecycle()
            .error()
            .is_some_and(|e| e.contains(&id(1).to_string()) && e.contains("instead of completing")),
        "{failed:?}"
    );
    // Ended short of ready: a dependent submitted now fails at once.
    submit_at(&mut core, 7, ProcessSpec::argv(["db"]), 5);
    core.handle(
        Input::SpawnFailed {
            id: id(7),
            error: "no".into(),
        },
        t(6),
    )
    .expect("failed");
    submit_at(&mut core, 8, after(&[(7, Until::Ready)]), 7);
    let e = core.get(id(8)).and_then(|r| r.lifecycle().error());
    assert!(
        e.as_deref()
            .is_some_and(|e| e.contains("before it was ready")),
        "{e:?}"
    );
    let mut bad = ProcessSpec::argv(["x"]);
    bad.until.insert(id(1), Until::Ready);
    assert_eq!(
        core.handle(
            Input::Submit {
                id: id(9),
                spec: bad
            },
            t(8)
        ),
        Err(CoreError::InvalidSpec(
            SpecError::ConditionWithoutDependency(id(1))
        ))
    );
}

/// A watched record is watched from its start to its end; changes re-arm
/// the debounce, and only the quiet after the last restarts it, once, as
/// a new record with the id the last change brought.
#[test]
fn a_burst_of_changes_is_one_restart_after_the_quiet() {
    use bpm_domain::FileWatch;
    let mut core = core(Limits::default());
    let mut spec = ProcessSpec::argv(["serve"]);
    spec.watch = Some(Box::new(FileWatch {
        paths: vec!["/src".into()],
        ignore: Vec::new(),
        debounce: Span::from_millis(300),
        restart_dependents: false,
    }));
    submit_at(&mut core, 1, spec, 0);
    let e = core
        .handle(Input::Spawned { id: id(1), pid: 10 }, t(1))
        .expect("spawned");
    let watching: Vec<_> = e
        .iter()
        .filter(|e| matches!(e, Effect::WatchFiles { id: w, .. } if *w == id(1)))
        .collect();
    assert_eq!(watching.len(), 1, "{e:?}");
    let mut last = None;
    for (n, at) in (100..120).zip((10..).step_by(5)) {
        let e = core
            .handle(
                Input::FilesChanged {
                    id: id(1),
                    new_ids: vec![id(n)],
                },
                t(at),
            )
            .expect("changed");
        let settle = armed(&e);
        assert_eq!(settle.len(), 1, "{e:?}");
        assert_eq!(settle[0].0.kind, TimerKind::FilesSettled);
        assert_eq!(settle[0].1, t(at + 300));
        last = Some(settle[0]);
    }
    let (timer, at) = last.expect("armed");
    core.handle(Input::TimerFired(timer), at).expect("fired");
    assert_eq!(
        core.get(id(1)).map(ProcessRecord::state),
        Some(StateName::Stopping)
    );
    let new = core
        .get(id(119))
        .expect("the last change's id is the new record");
    assert_eq!(new.restarted_from(), Some(id(1)));
    assert!(core.get(id(118)).is_none(), "one restart");
    // The old one ends: its watch ends; a late timer does nothing.
    let e = core
        .handle(
            Input::Exited {
                id: id(1),
                status: ExitStatus::Signal(15),
                limit: None,
            },
            at,
        )
        .expect("exit");
    assert!(
        e.iter()
            .any(|e| matches!(e, Effect::UnwatchFiles { id: w } if *w == id(1))),
        "{e:?}"
    );
    core.handle(Input::TimerFired(timer), at)
        .expect("fired again");
    core.handle(
        Input::FilesChanged {
            id: id(1),
            new_ids: vec![id(200)],
        },
        at,
    )
    .expect("a change after the end");
    assert!(core.get(id(200)).is_none());
    core.check_invariants().expect("consistent");
}

/// A watch that restarts dependents restarts the live records that depend
/// on the watched one, and theirs, each on the new records; others are
/// left alone.
#[test]
fn a_change_restarts_dependents_on_the_new_records() {
    use bpm_domain::FileWatch;
    let mut core = core(Limits::default());
    let mut api = ProcessSpec::argv(["api"]);
    api.watch = Some(Box::new(FileWatch {
        paths: vec!["/src".into()],
        ignore: Vec::new(),
        debounce: Span::from_millis(100),
        restart_dependents: true,
    }));
    submit_at(&mut core, 1, api, 0);
    core.handle(Input::Spawned { id: id(1), pid: 10 }, t(1))
        .expect("spawned");
    let on = |deps: &[u128]| {
        let mut spec = ProcessSpec::argv(["w"]);
        spec.dependencies = deps.iter().map(|d| id(*d)).collect();
        spec
    };
    submit_at(&mut core, 2, on(&[1]), 2);
    submit_at(&mut core, 3, on(&[2]), 3);
    submit_at(&mut core, 4, ProcessSpec::argv(["other"]), 4);
    assert_eq!(core.ids_for_change(id(1)), 3);
    let e = core
        .handle(
            Input::FilesChanged {
                id: id(1),
                new_ids: vec![id(11), id(12), id(13)],
            },
            t(10),
        )
        .expect("changed");
    let (timer, at) = armed(&e)[0];
    core.handle(Input::TimerFired(timer), at).expect("fired");
    let dep = |n: u128| core.get(id(n)).expect("known").spec().dependencies.clone();
    assert_eq!(
        core.get(id(11)).and_then(ProcessRecord::restarted_from),
        Some(id(1))
    );
    assert_eq!(dep(12), vec![id(11)]);
    assert_eq!(dep(13), vec![id(12)]);
    for old in [1, 2, 3] {
        let state = core.get(id(old)).map(ProcessRecord::state);
        assert!(
            matches!(state, Some(StateName::Stopping | StateName::Cancelled)),
            "{old}: {state:?}"
        );
    }
    assert!(
        core.get(id(4)).is_some_and(|r| !r.is_terminal()),
        "others are left alone"
    );
    core.check_invariants().expect("consistent");
}

fn every_second(overlap: bpm_domain::Overlap) -> ProcessSpec {
    let mut spec = ProcessSpec::argv(["backup"]);
    spec.timeout = Some(Span::from_millis(500));
    spec.schedule = Some(Box::new(bpm_domain::Schedule {
        every: Some(Span::from_secs(1)),
        cron: None,
        tz: None,
        overlap,
        jitter: None,
        run_now: false,
        catch_up: false,
    }));
    spec
}

/// Fires the schedule's due timer at `at`; the ids of the runs it started.
fn fire_due(core: &mut Supervisor, schedule: ProcessId, at: u64) -> Vec<ProcessId> {
    let timer = Timer {
        id: schedule,
        kind: TimerKind::Due,
        attempt: 0,
    };
    let effects = core.handle(Input::TimerFired(timer), t(at)).expect("fired");
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Persist { record, .. } if record.scheduled_from() == Some(schedule) => {
                Some(record.id())
            }
            _ => None,
        })
        .collect()
}

/// A schedule has no process: it runs a record of its own at each due
/// time, one per due time, skips a due time while its run is live, and
/// after a restart neither runs a due time twice nor the missed ones late.
#[test]
fn a_schedule_starts_one_run_per_due_time_and_skips_while_one_runs() {
    let mut core = core(Limits::default());
    let effects = core
        .handle(
            Input::Submit {
                id: id(1),
                spec: every_second(bpm_domain::Overlap::Skip),
            },
            t(0),
        )
        .expect("submit");
    let schedule = core.get(id(1)).expect("known");
    assert_eq!(schedule.state(), StateName::Running);
    assert_eq!(schedule.pid(), None);
    assert_eq!(schedule.schedule().expect("state").next_due, t(1000));
    assert!(
        armed(&effects)
            .iter()
            .any(|(timer, at)| timer.kind == TimerKind::Due && *at == t(1000))
    );
    assert_eq!(core.active(), 0, "a schedule holds no slot");

    assert!(
        !armed(&effects)
            .iter()
            .any(|(timer, _)| timer.kind == TimerKind::Timeout),
        "a schedule's timeout is its runs'"
    );
    let first = fire_due(&mut core, id(1), 1000);
    assert_eq!(first, [bpm_domain::run_id(id(1), t(1000))]);
    assert_eq!(
        core.get(first[0]).expect("run").state(),
        StateName::Starting
    );
    // Its run is still live at the next due time: skipped, and counted.
    assert!(fire_due(&mut core, id(1), 2000).is_empty());
    let state = core
        .get(id(1))
        .expect("known")
        .schedule()
        .cloned()
        .expect("state");
    assert_eq!((state.runs, state.skipped, state.next_due), (1, 1, t(3000)));
    core.handle(
        Input::Spawned {
            id: first[0],
            pid: 7,
        },
        t(2100),
    )
    .expect("spawned");
    core.handle(
        Input::Exited {
            id: first[0],
            status: ExitStatus::Code(0),
            limit: None,
        },
        t(2200),
    )
    .expect("exited");
    let second = fire_due(&mut core, id(1), 3000);
    assert_eq!(second.len(), 1);

    // The daemon dies and comes back 10 s later: the due times it missed
    // are counted, not run late, and the next one is armed.
    let records: Vec<ProcessRecord> = core.records().cloned().collect();
    let mut again = Supervisor::new(NodeId::local(), Limits::default());
    let effects = again.restore(records, t(13_500));
    let state = again
        .get(id(1))
        .expect("known")
        .schedule()
        .cloned()
        .expect("state");
    assert_eq!(state.missed, 10);
    assert_eq!(state.next_due, t(14_000));
    assert!(
        armed(&effects)
            .iter()
            .any(|(timer, at)| timer.kind == TimerKind::Due && *at == t(14_000))
    );

    // Paused, it starts nothing; stopped, it ends and its run goes on.
    again
        .handle(Input::Pause { id: id(1) }, t(13_600))
        .expect("pause");
    assert!(fire_due(&mut again, id(1), 14_000).is_empty());
    again
        .handle(
            Input::Stop {
                id: id(1),
                force: false,
                grace: None,
            },
            t(14_100),
        )
        .expect("stop");
    assert_eq!(
        again.get(id(1)).expect("known").state(),
        StateName::Cancelled
    );
    assert!(!again.get(second[0]).expect("run").is_terminal());
    again.check_invariants().expect("consistent");
}

/// With overlap `queue`, a due time's run waits for the live one to end.
#[test]
fn a_queued_run_waits_for_the_live_one() {
    let mut core = core(Limits::default());
    core.handle(
        Input::Submit {
            id: id(1),
            spec: every_second(bpm_domain::Overlap::Queue),
        },
        t(0),
    )
    .expect("submit");
    let first = fire_due(&mut core, id(1), 1000)[0];
    core.handle(Input::Spawned { id: first, pid: 7 }, t(1001))
        .expect("spawned");
    let second = fire_due(&mut core, id(1), 2000)[0];
    assert_eq!(core.get(second).expect("run").state(), StateName::Pending);
    core.handle(
        Input::Exited {
            id: first,
            status: ExitStatus::Code(3),
            limit: None,
        },
        t(2500),
    )
    .expect("exited");
    assert_eq!(core.get(second).expect("run").state(), StateName::Starting);
}

/// With `catch_up`, a restart after missed due times runs the last of
/// them, once, late; the others are counted missed.
#[test]
fn a_schedule_that_catches_up_runs_the_last_missed_due_time_once() {
    let mut spec = every_second(bpm_domain::Overlap::Skip);
    if let Some(s) = spec.schedule.as_deref_mut() {
        s.catch_up = true;
    }
    let mut first = core(Limits::default());
    first
        .handle(Input::Submit { id: id(1), spec }, t(0))
        .expect("submit");
    let records: Vec<ProcessRecord> = first.records().cloned().collect();
    let mut again = core(Limits::default());
    let effects = again.restore(records.clone(), t(5_500));
    let late: Vec<ProcessId> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Persist { record, .. } if record.scheduled_from() == Some(id(1)) => {
                Some(record.id())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        late,
        [bpm_domain::run_id(id(1), t(5_000))],
        "the last one missed"
    );
    let state = again
        .get(id(1))
        .expect("known")
        .schedule()
        .cloned()
        .expect("state");
    assert_eq!((state.runs, state.missed, state.next_due), (1, 4, t(6_000)));
    // The same restart again finds that run and starts nothing more.
    let mut third = core(Limits::default());
    let mut all: Vec<ProcessRecord> = again.records().cloned().collect();
    all.retain(|r| r.id() != id(1));
    all.extend(records);
    let effects = third.restore(all, t(5_600));
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Persist { record, .. } if record.scheduled_from() == Some(id(1)) && record.version() == 1)),
        "no second run of that due time"
    );
}
