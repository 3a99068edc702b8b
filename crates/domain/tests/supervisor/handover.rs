//! Hand-overs to the keeper, restores after a restart of bpm or of the machine, and notices that come out of order.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A core with two slots that hands over two records ahead: five
/// records submitted, the first two running.
fn five_submitted_two_running() -> Supervisor {
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
    core
}

#[test]
fn records_handed_over_start_on_exits_in_order_and_first() {
    let mut core = five_submitted_two_running();
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
