//! The rules for agents and for time: one live record per name, ports, owners, dependencies, file watches and schedules.

#[allow(clippy::wildcard_imports)]
use super::*;

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

/// A session held by two processes lives while either holds it: one that
/// lets go (a server of many sessions whose client went) leaves it to the
/// other; when the last lets go, its records start their grace, and a
/// holder that comes back in time keeps them.
#[test]
fn a_session_let_go_by_its_last_holder_starts_its_records_grace() {
    use bpm_domain::{Owner, ProcessRef, SessionId, Span, TimerKind};
    let mut core = core(Limits::default());
    let session: SessionId = "http-1".parse().expect("session");
    let (server, other) = (
        ProcessRef { pid: 7, start: 70 },
        ProcessRef { pid: 8, start: 80 },
    );
    for holder in [server, other] {
        core.handle(
            Input::HoldSession {
                session: session.clone(),
                holder,
            },
            t(0),
        )
        .expect("held");
    }
    let mut spec = ProcessSpec::argv(["serve"]);
    spec.owners = vec![Owner::Session(session.clone())];
    spec.owner_grace = Some(Span::from_secs(2));
    submit_at(&mut core, 1, spec, 0);
    let grace = |e: &[Effect]| {
        e.iter().find_map(|e| match e {
            Effect::ArmTimer { timer, at } if timer.kind == TimerKind::OwnerGrace => {
                Some((*timer, *at))
            }
            _ => None,
        })
    };
    let release = |core: &mut Supervisor, holder, at| {
        core.handle(
            Input::ReleaseSession {
                session: session.clone(),
                holder,
            },
            t(at),
        )
        .expect("released")
    };
    assert_eq!(grace(&release(&mut core, other, 100)), None, "still held");
    let (timer, at) = grace(&release(&mut core, server, 200)).expect("its grace starts");
    assert_eq!(at, t(2_200));
    // Letting go again, or of a session nobody holds, changes nothing.
    assert_eq!(grace(&release(&mut core, server, 300)), None);
    core.handle(Input::TimerFired(timer), at).expect("fired");
    assert_eq!(
        core.get(id(1)).map(ProcessRecord::state),
        Some(StateName::Stopping),
        "no holder came back: stopped"
    );
}

/// A rolling replace starts beside the live record and stops it only once
/// it is ready; one that ends before it is ready leaves the live one
/// running, with its name.
#[test]
fn a_roll_stops_the_live_copy_only_once_the_new_one_is_ready() {
    use bpm_domain::NameTaken::{Refuse, Roll};
    let mut c = Supervisor::new(NodeId::local(), Limits::default());
    let ready_by = |mut spec: ProcessSpec| {
        spec.readiness.check = ReadinessCheck::Exec {
            command: "true".into(),
        };
        spec
    };
    let t = Timestamp::from_millis;
    let signals = |effects: &[Effect]| -> Vec<(ProcessId, u32)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Signal { id, pid, .. } => Some((*id, *pid)),
                _ => None,
            })
            .collect()
    };
    let (old, new, failed) = (id(1), id(2), id(3));
    c.handle(
        Input::Submit {
            id: old,
            spec: ready_by(named("web", &["v1"], Refuse)),
        },
        t(1),
    )
    .expect("old");
    c.handle(Input::Spawned { id: old, pid: 10 }, t(2))
        .expect("spawned");
    c.handle(Input::Ready { id: old }, t(3)).expect("ready");

    let effects = c
        .handle(
            Input::Submit {
                id: new,
                spec: ready_by(named("web", &["v2"], Roll)),
            },
            t(4),
        )
        .expect("a roll is taken beside the live copy");
    assert!(signals(&effects).is_empty(), "{effects:?}");
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Spawn { record } if record.id() == new))
    );
    let effects = c
        .handle(Input::Spawned { id: new, pid: 11 }, t(5))
        .expect("spawned");
    assert!(
        signals(&effects).is_empty(),
        "started, not ready: {effects:?}"
    );
    assert_eq!(
        c.get(old).map(ProcessRecord::state),
        Some(StateName::Running)
    );
    let effects = c.handle(Input::Ready { id: new }, t(6)).expect("ready");
    assert_eq!(signals(&effects), [(old, 10)], "{effects:?}");
    let effects = c
        .handle(
            Input::Exited {
                id: old,
                status: ExitStatus::Signal(15),
                limit: None,
            },
            t(7),
        )
        .expect("exit");
    assert!(events(&effects).contains(&(old, EventKind::Cancelled)));

    // A roll whose copy ends before it is ready: the live one runs on and
    // keeps the name.
    c.handle(
        Input::Submit {
            id: failed,
            spec: ready_by(named("web", &["v3"], Roll)),
        },
        t(8),
    )
    .expect("a second roll");
    c.handle(
        Input::Spawned {
            id: failed,
            pid: 12,
        },
        t(9),
    )
    .expect("spawned");
    let effects = c
        .handle(
            Input::Exited {
                id: failed,
                status: ExitStatus::Code(1),
                limit: None,
            },
            t(10),
        )
        .expect("exit");
    assert!(signals(&effects).is_empty(), "{effects:?}");
    assert_eq!(
        c.get(new).map(ProcessRecord::state),
        Some(StateName::Running)
    );
    let refused = c.handle(
        Input::Submit {
            id: id(4),
            spec: named("web", &["v4"], Refuse),
        },
        t(11),
    );
    assert!(
        matches!(refused, Err(CoreError::NameTaken { id, .. }) if id == new),
        "the live copy keeps the name: {refused:?}"
    );
}

/// A roll without a readiness check is refused, saying why.
#[test]
fn a_roll_without_a_readiness_check_is_refused() {
    let mut c = Supervisor::new(NodeId::local(), Limits::default());
    let refused = c.handle(
        Input::Submit {
            id: id(5),
            spec: named("web", &["v5"], bpm_domain::NameTaken::Roll),
        },
        Timestamp::from_millis(1),
    );
    assert!(
        matches!(&refused, Err(CoreError::InvalidSpec(SpecError::InvalidRoll(why))) if why.contains("needs a readiness check")),
        "{refused:?}"
    );
}
