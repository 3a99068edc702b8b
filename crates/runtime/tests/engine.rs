//! The engine through the `ProcessManager` API, scenario by scenario, on the
//! in-memory adapters, the scripted spawner and a manual clock.

// Scenario tests name their processes a, b, c...
#![allow(clippy::many_single_char_names)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bpm_adapters::clock::ManualClock;
use bpm_adapters::fake::ScriptedSpawner;
use bpm_adapters::ids::UuidV7Ids;
use bpm_adapters::memory::{BroadcastBus, InMemoryOutput, InMemoryStore};
use bpm_domain::{
    CoreError, EventKind, ExitStatus, GroupName, Limits, ListFilter, LogPattern, Percent,
    ProcessId, ProcessName, ProcessRecord, ProcessSpec, ReadinessCheck, RestartMode, Signal, Span,
    StateName, StdinMode, Timestamp,
};
use bpm_ports::{
    ManagerError, OutputQuery, ProcessManager, ProcessNotice, ProcessSpawner, ProcessStore,
    SpawnError, SpawnRequest, StopOptions, StoreError, StoreWrite,
};
use bpm_runtime::{Engine, EngineConfig, Ports};

struct Harness {
    engine: Engine,
    clock: Arc<ManualClock>,
    spawner: Arc<ScriptedSpawner>,
    ports: Ports,
}

fn ports_with(
    clock: &Arc<ManualClock>,
    store: Arc<InMemoryStore>,
) -> (Ports, Arc<ScriptedSpawner>) {
    let output = Arc::new(InMemoryOutput::default());
    let spawner = Arc::new(ScriptedSpawner::new(clock.clone(), output.clone()));
    let ports = Ports {
        store,
        output,
        events: Arc::new(BroadcastBus::default()),
        spawner: spawner.clone(),
        clock: clock.clone(),
        ids: Arc::new(UuidV7Ids::new()),
        usage: Arc::new(bpm_adapters::os::ProcSampler::new()),
        host: Arc::new(bpm_adapters::os::OsHost::new()),
    };
    (ports, spawner)
}

async fn harness(limits: Limits) -> Harness {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000)));
    let (ports, spawner) = ports_with(&clock, Arc::new(InMemoryStore::new()));
    let engine = Engine::launch(
        ports.clone(),
        EngineConfig {
            node: None,
            limits,
            ..EngineConfig::default()
        },
    )
    .await
    .expect("engine starts");
    Harness {
        engine,
        clock,
        spawner,
        ports,
    }
}

fn fake(args: &[&str]) -> ProcessSpec {
    ProcessSpec::argv(std::iter::once("fake").chain(args.iter().copied()))
}

/// Polls `check` until it holds (real time, up to 5 s): the engine's loop runs on other tasks.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

impl Harness {
    async fn state(&self, id: ProcessId) -> StateName {
        self.engine.get(id).await.expect("record").state()
    }

    async fn until_state(&self, id: ProcessId, state: StateName) -> ProcessRecord {
        eventually(&format!("{id} reaches {state}"), || async {
            self.state(id).await == state
        })
        .await;
        self.engine.get(id).await.expect("record")
    }

    async fn advance(&self, d: Duration) {
        self.clock.advance(d);
        // Let timers and the loop see the new time.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    async fn count(&self, state: StateName) -> usize {
        self.engine
            .list(bpm_domain::ListFilter {
                states: vec![state],
                ..Default::default()
            })
            .await
            .expect("list")
            .len()
    }
}

/// An exit event carries the last lines, at most 16 KiB of them: a process
/// that writes one endless line must not make each exit read all it kept.
#[tokio::test]
async fn an_exit_events_tail_is_at_most_16_kib() {
    let h = harness(Limits::default()).await;
    let mut events = h.engine.subscribe();
    let line: String = (0..40_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let r = h
        .engine
        .start(fake(&["after=1s", &format!("stdout={line}")]))
        .await
        .expect("start");
    h.advance(Duration::from_secs(1)).await;
    h.engine.wait(r.id(), None).await.expect("wait");
    let mut tail = None;
    while let Ok(e) = events.try_recv() {
        if e.kind == EventKind::Exited {
            tail = e.output_tail;
        }
    }
    let tail = tail.expect("the exit event carries a tail");
    assert_eq!(tail.len(), 16 * 1024);
    assert_eq!(
        tail,
        format!("{line}\n")[40_001 - 16 * 1024..],
        "the newest bytes"
    );
}

#[tokio::test]
async fn a_process_runs_and_completes_with_its_events() {
    let h = harness(Limits::default()).await;
    let mut events = h.engine.subscribe();
    let r = h
        .engine
        .start(fake(&["after=1s", "stdout=done"]))
        .await
        .expect("start");
    assert_eq!(
        r.state(),
        StateName::Running,
        "a free slot starts it at once"
    );
    assert_eq!(r.pid(), Some(1000));
    h.advance(Duration::from_secs(1)).await;
    let end = h.engine.wait(r.id(), None).await.expect("wait");
    assert_eq!(end.state(), StateName::Completed);
    assert_eq!(end.lifecycle().exit(), Some(ExitStatus::Code(0)));
    assert_eq!(end.runtime(h.clock_now()), Some(Duration::from_secs(1)));
    let mut kinds = Vec::new();
    while let Ok(e) = events.try_recv() {
        assert_eq!(e.id, r.id());
        if e.kind == EventKind::Exited {
            assert_eq!(e.output_tail.as_deref(), Some("done\n"));
            assert_eq!(e.duration_ms, Some(1000));
        }
        kinds.push(e.kind);
    }
    assert_eq!(
        kinds,
        [
            EventKind::Submitted,
            EventKind::Started,
            EventKind::Ready,
            EventKind::Exited,
            EventKind::Completed
        ]
    );
}

impl Harness {
    fn clock_now(&self) -> Timestamp {
        bpm_ports::Clock::now(self.clock.as_ref())
    }
}

#[tokio::test]
async fn a_failing_process_keeps_its_own_exit_code() {
    let h = harness(Limits::default()).await;
    let r = h.engine.start(fake(&["exit=3"])).await.expect("start");
    let end = h.engine.wait(r.id(), None).await.expect("wait");
    assert_eq!(end.state(), StateName::Failed);
    assert_eq!(end.lifecycle().exit(), Some(ExitStatus::Code(3)));
    assert_eq!(end.lifecycle().error().as_deref(), Some("exit code 3"));
}

#[tokio::test]
async fn a_spawn_failure_fails_the_record_and_says_why() {
    let h = harness(Limits::default()).await;
    let r = h
        .engine
        .start(ProcessSpec::argv(["no-such-program-xyz"]))
        .await
        .expect("start");
    assert_eq!(r.state(), StateName::Failed);
    let err = r.lifecycle().error().expect("error");
    assert!(
        err.contains("program not found") && err.contains("no-such-program-xyz"),
        "{err}"
    );
}

#[tokio::test]
async fn queueing_respects_overall_and_group_limits_then_priority_and_fifo() {
    let mut limits = Limits {
        max_running: 3,
        ..Limits::default()
    };
    let group = GroupName::new("builds").expect("valid");
    limits.group_limits.insert(group.clone(), 2);
    let h = harness(limits).await;
    let in_group = |priority: i32| {
        let mut s = fake(&["forever"]);
        s.group = Some(group.clone());
        s.priority = priority;
        s
    };
    let a = h.engine.start(in_group(0)).await.expect("start");
    let b = h.engine.start(in_group(0)).await.expect("start");
    let c = h.engine.start(in_group(0)).await.expect("start");
    let d = h.engine.start(in_group(5)).await.expect("start");
    let e = h.engine.start(in_group(0)).await.expect("start");
    let free = h.engine.start(fake(&["forever"])).await.expect("start");
    let queued = h.engine.start(fake(&["forever"])).await.expect("start");
    assert_eq!(h.state(a.id()).await, StateName::Running);
    assert_eq!(h.state(b.id()).await, StateName::Running);
    assert_eq!(h.state(c.id()).await, StateName::Pending, "group limit 2");
    assert_eq!(
        h.state(free.id()).await,
        StateName::Running,
        "no group, overall room"
    );
    assert_eq!(
        h.state(queued.id()).await,
        StateName::Pending,
        "overall limit 3"
    );
    // One of the group ends: the higher priority d goes before the earlier c.
    h.spawner.exit(a.id(), ExitStatus::Code(0));
    h.until_state(d.id(), StateName::Running).await;
    assert_eq!(h.state(c.id()).await, StateName::Pending);
    assert_eq!(
        h.state(queued.id()).await,
        StateName::Pending,
        "the freed group slot went to the group"
    );
    h.spawner.exit(b.id(), ExitStatus::Code(0));
    h.until_state(c.id(), StateName::Running).await;
    assert_eq!(h.state(e.id()).await, StateName::Pending);
    h.spawner.exit(free.id(), ExitStatus::Code(0));
    h.until_state(queued.id(), StateName::Running).await;
    assert_eq!(h.count(StateName::Running).await, 3);
}

#[tokio::test]
async fn dependencies_start_after_completion_and_fail_when_one_does_not_complete() {
    let h = harness(Limits::default()).await;
    let a = h.engine.start(fake(&["after=2s"])).await.expect("start");
    let mut after_a = fake(&["forever"]);
    after_a.dependencies = vec![a.id()];
    let b = h.engine.start(after_a).await.expect("start");
    assert_eq!(b.state(), StateName::Pending);
    let bad = h
        .engine
        .start(fake(&["after=1s", "exit=2"]))
        .await
        .expect("start");
    let mut after_bad = fake(&["forever"]);
    after_bad.dependencies = vec![bad.id(), a.id()];
    let c = h.engine.start(after_bad).await.expect("start");
    h.advance(Duration::from_secs(1)).await;
    let c = h.until_state(c.id(), StateName::Failed).await;
    let err = c.lifecycle().error().expect("error");
    assert!(
        err.contains(&bad.id().to_string()) && err.contains("failed instead of completing"),
        "{err}"
    );
    assert_eq!(h.state(b.id()).await, StateName::Pending);
    h.advance(Duration::from_secs(1)).await;
    h.until_state(b.id(), StateName::Running).await;
    // A dependency that already failed fails the new record at once.
    let mut late = fake(&[]);
    late.dependencies = vec![bad.id()];
    let late = h.engine.start(late).await.expect("start");
    assert_eq!(late.state(), StateName::Failed);
}

#[tokio::test]
async fn a_delayed_start_waits_for_its_delay() {
    let h = harness(Limits::default()).await;
    let mut spec = fake(&["forever"]);
    spec.delay = Some(Span::from_secs(10));
    let r = h.engine.start(spec).await.expect("start");
    assert_eq!(r.state(), StateName::Pending);
    h.advance(Duration::from_secs(9)).await;
    assert_eq!(h.state(r.id()).await, StateName::Pending);
    h.advance(Duration::from_secs(1)).await;
    h.until_state(r.id(), StateName::Running).await;
}

#[tokio::test]
async fn a_timeout_stops_the_process_and_records_timed_out() {
    let h = harness(Limits::default()).await;
    let mut spec = fake(&["forever"]);
    spec.timeout = Some(Span::from_secs(5));
    let r = h.engine.start(spec).await.expect("start");
    h.advance(Duration::from_secs(5)).await;
    let end = h.until_state(r.id(), StateName::TimedOut).await;
    assert_eq!(end.lifecycle().exit(), Some(ExitStatus::Signal(15)));
    assert_eq!(h.spawner.signals(r.id()), [Signal::Term]);
}

#[tokio::test]
async fn a_graceful_stop_escalates_to_kill_after_the_grace_period() {
    let h = harness(Limits::default()).await;
    let r = h
        .engine
        .start(fake(&["forever", "ignore-term"]))
        .await
        .expect("start");
    let engine = h.engine.clone();
    let id = r.id();
    let stopping = tokio::spawn(async move { engine.stop(id, StopOptions::default()).await });
    h.until_state(id, StateName::Stopping).await;
    assert_eq!(h.spawner.signals(id), [Signal::Term]);
    h.advance(Duration::from_secs(4)).await;
    assert_eq!(
        h.state(id).await,
        StateName::Stopping,
        "TERM ignored, still in its grace period"
    );
    h.advance(Duration::from_secs(1)).await;
    let end = stopping.await.expect("joined").expect("stop");
    assert_eq!(end.state(), StateName::Cancelled);
    assert_eq!(end.lifecycle().exit(), Some(ExitStatus::Signal(9)));
    assert_eq!(h.spawner.signals(id), [Signal::Term, Signal::Kill]);
    // Stop is idempotent.
    let again = h
        .engine
        .stop(id, StopOptions::default())
        .await
        .expect("stop again");
    assert_eq!(again, end);
}

#[tokio::test]
async fn a_forced_stop_kills_at_once() {
    let h = harness(Limits::default()).await;
    let r = h
        .engine
        .start(fake(&["forever", "ignore-term"]))
        .await
        .expect("start");
    let end = h
        .engine
        .stop(r.id(), StopOptions::force())
        .await
        .expect("stop");
    assert_eq!(end.state(), StateName::Cancelled);
    assert_eq!(h.spawner.signals(r.id()), [Signal::Kill]);
}

#[tokio::test]
async fn stopping_a_parent_cascades_to_every_descendant() {
    let h = harness(Limits::default()).await;
    let parent = h.engine.start(fake(&["forever"])).await.expect("start");
    let child = |p: ProcessId| {
        let mut s = fake(&["forever"]);
        s.parent = Some(p);
        s
    };
    let c1 = h.engine.start(child(parent.id())).await.expect("start");
    let c2 = h.engine.start(child(parent.id())).await.expect("start");
    let grandchild = h.engine.start(child(c1.id())).await.expect("start");
    let mut queued = child(c2.id());
    queued.delay = Some(Span::from_secs(60));
    let queued = h.engine.start(queued).await.expect("start");
    let end = h
        .engine
        .stop(parent.id(), StopOptions::default())
        .await
        .expect("stop");
    assert_eq!(end.state(), StateName::Cancelled);
    for id in [c1.id(), c2.id(), grandchild.id(), queued.id()] {
        let r = h.engine.get(id).await.expect("record");
        assert_eq!(r.state(), StateName::Cancelled, "{id}");
        assert!(!h.spawner.is_running(id));
    }
    let reason = h
        .engine
        .get(c1.id())
        .await
        .expect("record")
        .lifecycle()
        .error()
        .expect("reason");
    assert_eq!(reason, format!("parent {} was stopped", parent.id()));
    // A stopped parent takes no new children.
    let err = h
        .engine
        .start(child(parent.id()))
        .await
        .expect_err("refused");
    assert!(
        matches!(err, ManagerError::Refused(CoreError::ParentNotLive { .. })),
        "{err}"
    );
}

#[tokio::test]
async fn stop_level_stops_a_whole_level_and_below() {
    let h = harness(Limits::default()).await;
    let root = h.engine.start(fake(&["forever"])).await.expect("start");
    let mut kids = Vec::new();
    for _ in 0..3 {
        let mut s = fake(&["forever"]);
        s.parent = Some(root.id());
        kids.push(h.engine.start(s).await.expect("start"));
    }
    let mut gs = fake(&["forever"]);
    gs.parent = Some(kids[0].id());
    let grandchild = h.engine.start(gs).await.expect("start");
    let stopped = h
        .engine
        .stop_level(1, StopOptions::default())
        .await
        .expect("stop level");
    assert_eq!(stopped.len(), 4);
    assert!(stopped.iter().all(|r| r.state() == StateName::Cancelled));
    assert_eq!(h.state(grandchild.id()).await, StateName::Cancelled);
    assert_eq!(
        h.state(root.id()).await,
        StateName::Running,
        "level 0 untouched"
    );
}

#[tokio::test]
async fn stop_level_applies_the_grace_it_is_given() {
    let h = harness(Limits::default()).await;
    let root = h.engine.start(fake(&["forever"])).await.expect("start");
    let mut s = fake(&["forever", "ignore-term"]);
    s.parent = Some(root.id());
    let kid = h.engine.start(s).await.expect("start");
    let engine = h.engine.clone();
    let stopping = tokio::spawn(async move {
        engine
            .stop_level(
                1,
                StopOptions {
                    force: false,
                    grace: Some(Span::from_secs(1)),
                },
            )
            .await
    });
    h.until_state(kid.id(), StateName::Stopping).await;
    assert_eq!(h.spawner.signals(kid.id()), [Signal::Term]);
    // The policy's grace is 5 s; the one given, 1 s, is the one that counts.
    h.advance(Duration::from_millis(999)).await;
    assert_eq!(h.state(kid.id()).await, StateName::Stopping);
    h.advance(Duration::from_millis(1)).await;
    let stopped = stopping.await.expect("joined").expect("stop level");
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0].state(), StateName::Cancelled);
    assert_eq!(h.spawner.signals(kid.id()), [Signal::Term, Signal::Kill]);
}

#[tokio::test]
async fn a_tracked_operation_with_a_command_is_refused_by_the_core() {
    let h = harness(Limits::default()).await;
    let err = h
        .engine
        .track(fake(&["forever"]))
        .await
        .expect_err("refused");
    assert!(
        matches!(
            err,
            ManagerError::InvalidSpec(bpm_domain::SpecError::TrackedWithCommand)
        ),
        "{err}"
    );
    assert!(
        h.engine
            .list(ListFilter::default())
            .await
            .expect("list")
            .is_empty()
    );
    let mut spec = fake(&["x"]);
    spec.command = None;
    let op = h.engine.track(spec).await.expect("tracked");
    assert!(op.is_tracked());
}

#[tokio::test]
async fn on_failure_restarts_with_backoff_until_the_budget_is_spent() {
    let h = harness(Limits::default()).await;
    let mut spec = fake(&["exit=1"]);
    spec.restart.mode = RestartMode::OnFailure;
    spec.restart.max_restarts = Some(2);
    let r = h.engine.start(spec).await.expect("start");
    let mut events = h.engine.subscribe();
    let first = h.until_state(r.id(), StateName::Pending).await;
    assert_eq!(first.restarts(), 1);
    // Backoff: 500 ms, then 1 s.
    h.advance(Duration::from_millis(499)).await;
    assert_eq!(h.state(r.id()).await, StateName::Pending);
    h.advance(Duration::from_millis(1)).await;
    eventually("second restart", || async {
        h.engine.get(r.id()).await.expect("r").restarts() == 2
    })
    .await;
    h.advance(Duration::from_secs(1)).await;
    let end = h.until_state(r.id(), StateName::Failed).await;
    assert_eq!(end.restarts(), 2);
    assert_eq!(end.attempts().len(), 2);
    assert!(end.attempts().iter().all(|a| a.exit == ExitStatus::Code(1)));
    assert_eq!(end.lifecycle().exit(), Some(ExitStatus::Code(1)));
    let mut restarted = 0;
    while let Ok(e) = events.try_recv() {
        restarted += usize::from(e.kind == EventKind::Restarted);
    }
    assert!(restarted >= 1);
}

#[tokio::test]
async fn always_restarts_even_after_success_and_a_stop_ends_it() {
    let h = harness(Limits::default()).await;
    let mut spec = fake(&["after=1s"]);
    spec.restart.mode = RestartMode::Always;
    let r = h.engine.start(spec).await.expect("start");
    for round in 1..=3 {
        h.advance(Duration::from_secs(1)).await;
        eventually("requeued", || async {
            h.engine.get(r.id()).await.expect("r").restarts() == round
        })
        .await;
        h.advance(Duration::from_mins(1)).await;
        h.until_state(r.id(), StateName::Running).await;
    }
    let end = h
        .engine
        .stop(r.id(), StopOptions::default())
        .await
        .expect("stop");
    assert_eq!(end.state(), StateName::Cancelled);
    assert_eq!(end.restarts(), 3);
}

#[tokio::test]
async fn a_manual_restart_makes_a_new_record_after_the_old_one_ends() {
    let h = harness(Limits::default()).await;
    let old = h.engine.start(fake(&["forever"])).await.expect("start");
    let new = h.engine.restart(old.id()).await.expect("restart");
    assert_ne!(new.id(), old.id());
    assert_eq!(new.restarted_from(), Some(old.id()));
    let old_end = h.until_state(old.id(), StateName::Cancelled).await;
    assert_eq!(
        old_end.lifecycle().error(),
        Some(format!("replaced by restart {}", new.id()))
    );
    h.until_state(new.id(), StateName::Running).await;
    // A finished record can be restarted too; it never runs again itself.
    let done = h.engine.start(fake(&[])).await.expect("start");
    h.until_state(done.id(), StateName::Completed).await;
    let again = h.engine.restart(done.id()).await.expect("restart");
    assert_eq!(h.state(done.id()).await, StateName::Completed);
    h.until_state(again.id(), StateName::Completed).await;
}

#[tokio::test]
async fn tracked_operations_report_progress_and_complete_once() {
    let h = harness(Limits::default()).await;
    let op = h
        .engine
        .track(ProcessSpec::tracked(
            ProcessName::new("migrate db").expect("name"),
        ))
        .await
        .expect("track");
    assert_eq!(op.state(), StateName::Running);
    assert_eq!(op.pid(), None);
    h.advance(Duration::from_secs(10)).await;
    let p = h
        .engine
        .progress(
            op.id(),
            Percent::new(25).expect("pct"),
            Some("table 1/4".into()),
        )
        .await
        .expect("progress");
    let progress = p.progress().expect("progress");
    assert_eq!(progress.message.as_deref(), Some("table 1/4"));
    assert_eq!(
        progress.eta,
        Some(h.clock_now().saturating_add(Duration::from_secs(30)))
    );
    let done = h
        .engine
        .complete(op.id(), Some(serde_json::json!({"tables": 4})))
        .await
        .expect("complete");
    assert!(!done.no_op);
    assert_eq!(done.record.state(), StateName::Completed);
    let twice = h
        .engine
        .complete(op.id(), None)
        .await
        .expect("complete again");
    assert!(twice.no_op);
    assert_eq!(
        twice.record.result(),
        Some(&serde_json::json!({"tables": 4}))
    );
    let fail = h
        .engine
        .fail(op.id(), "late".into())
        .await
        .expect("fail after complete");
    assert!(fail.no_op);
    assert_eq!(fail.record.state(), StateName::Completed);
    let err = h
        .engine
        .track(fake(&[]))
        .await
        .expect_err("a command is not tracked");
    assert!(
        err.to_string().contains("tracked operation has no command"),
        "{err}"
    );
    let err = h
        .engine
        .progress(op.id(), Percent::new(50).expect("pct"), None)
        .await
        .expect_err("finished");
    assert!(matches!(err, ManagerError::InvalidTransition(_)), "{err}");
}

#[tokio::test]
async fn a_tracked_operation_can_fail_and_time_out() {
    let h = harness(Limits::default()).await;
    let op = h
        .engine
        .track(ProcessSpec::tracked(ProcessName::new("a").expect("name")))
        .await
        .expect("track");
    let failed = h
        .engine
        .fail(op.id(), "disk full".into())
        .await
        .expect("fail");
    assert_eq!(
        failed.record.lifecycle().error().as_deref(),
        Some("disk full")
    );
    let mut spec = ProcessSpec::tracked(ProcessName::new("b").expect("name"));
    spec.timeout = Some(Span::from_secs(30));
    let slow = h.engine.track(spec).await.expect("track");
    h.advance(Duration::from_secs(30)).await;
    h.until_state(slow.id(), StateName::TimedOut).await;
}

#[tokio::test]
async fn pause_and_resume_signal_the_tree_and_refuse_illegal_moves() {
    let h = harness(Limits::default()).await;
    let r = h.engine.start(fake(&["forever"])).await.expect("start");
    let paused = h.engine.pause(r.id()).await.expect("pause");
    assert_eq!(paused.state(), StateName::Paused);
    assert!(!h.spawner.is_running(r.id()));
    let err = h.engine.pause(r.id()).await.expect_err("already paused");
    assert!(
        err.to_string().contains("cannot pause a paused process"),
        "{err}"
    );
    let resumed = h.engine.resume(r.id()).await.expect("resume");
    assert_eq!(resumed.state(), StateName::Running);
    assert!(h.spawner.is_running(r.id()));
    assert_eq!(h.spawner.signals(r.id()), [Signal::Stop, Signal::Cont]);
    // Stopping a paused process continues it so it can act on TERM.
    h.engine.pause(r.id()).await.expect("pause");
    let end = h
        .engine
        .stop(r.id(), StopOptions::default())
        .await
        .expect("stop");
    assert_eq!(end.state(), StateName::Cancelled);
    assert_eq!(
        h.spawner.signals(r.id())[2..],
        [Signal::Stop, Signal::Term, Signal::Cont]
    );
}

#[tokio::test]
async fn readiness_is_recorded_or_times_out() {
    let h = harness(Limits::default()).await;
    let ready_spec = |after: &str, timeout: u64| {
        let mut s = fake(&["forever", &format!("ready-after={after}")]);
        s.readiness.check = ReadinessCheck::LogPattern {
            pattern: LogPattern::new("listening").expect("regex"),
        };
        s.readiness.timeout = Some(Span::from_secs(timeout));
        s
    };
    let quick = h.engine.start(ready_spec("1s", 5)).await.expect("start");
    let slow = h.engine.start(ready_spec("10s", 2)).await.expect("start");
    assert_eq!(quick.lifecycle().ready_at(), None);
    h.advance(Duration::from_secs(1)).await;
    eventually("ready", || async {
        h.engine
            .get(quick.id())
            .await
            .expect("r")
            .lifecycle()
            .ready_at()
            .is_some()
    })
    .await;
    h.advance(Duration::from_secs(1)).await;
    let failed = h.until_state(slow.id(), StateName::Failed).await;
    assert_eq!(
        failed.lifecycle().error().as_deref(),
        Some("not ready within 2s")
    );
    assert_eq!(h.state(quick.id()).await, StateName::Running);
}

#[tokio::test]
async fn retention_forgets_finished_records() {
    let h = harness(Limits {
        retention: Some(Span::from_secs(60)),
        ..Limits::default()
    })
    .await;
    let r = h.engine.start(fake(&["stdout=bye"])).await.expect("start");
    h.until_state(r.id(), StateName::Completed).await;
    h.advance(Duration::from_secs(59)).await;
    assert!(h.engine.get(r.id()).await.is_ok());
    h.advance(Duration::from_secs(1)).await;
    eventually("retention", || async {
        matches!(h.engine.get(r.id()).await, Err(ManagerError::NotFound(_)))
    })
    .await;
    let out = h
        .ports
        .output
        .read(r.id(), &OutputQuery::default())
        .await
        .expect("read");
    assert!(out.pieces.is_empty(), "its output went with it");
}

#[tokio::test]
async fn wait_times_out_on_the_clock() {
    let h = harness(Limits::default()).await;
    let r = h.engine.start(fake(&["forever"])).await.expect("start");
    let engine = h.engine.clone();
    let id = r.id();
    let waiting = tokio::spawn(async move { engine.wait(id, Some(Duration::from_secs(3))).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    h.advance(Duration::from_secs(3)).await;
    let err = waiting.await.expect("joined").expect_err("timeout");
    assert!(
        matches!(
            err,
            ManagerError::WaitTimeout {
                state: StateName::Running,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn waiting_for_many_ends_when_the_last_ends_or_on_the_clock() {
    let h = harness(Limits::default()).await;
    let quick = h.engine.start(fake(&["exit=3"])).await.expect("start");
    let later = h.engine.start(fake(&["after=1s"])).await.expect("start");
    let stuck = h.engine.start(fake(&["forever"])).await.expect("start");
    let unknown = ProcessId::from_uuid(uuid::Uuid::from_u128(42));
    let err = h
        .engine
        .wait_many(&[quick.id(), unknown], None)
        .await
        .expect_err("unknown");
    assert!(
        matches!(err, ManagerError::NotFound(id) if id == unknown),
        "{err}"
    );

    let engine = h.engine.clone();
    let ids = [quick.id(), later.id()];
    let waiting = tokio::spawn(async move { engine.wait_many(&ids, None).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiting.is_finished(), "one of them still runs");
    h.advance(Duration::from_secs(1)).await;
    waiting.await.expect("joined").expect("both ended");
    let ended = h.engine.get(later.id()).await.expect("get");
    assert_eq!(ended.state(), StateName::Completed);

    // The timeout bounds the whole wait, and names the record still running.
    let engine = h.engine.clone();
    let ids = [quick.id(), stuck.id()];
    let waiting =
        tokio::spawn(async move { engine.wait_many(&ids, Some(Duration::from_secs(2))).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    h.advance(Duration::from_secs(2)).await;
    let err = waiting.await.expect("joined").expect_err("timeout");
    assert!(
        matches!(err, ManagerError::WaitTimeout { id, state: StateName::Running } if id == stuck.id()),
        "{err}"
    );
}

#[tokio::test]
async fn output_is_readable_and_input_reaches_the_process() {
    let h = harness(Limits::default()).await;
    let mut spec = fake(&["forever", "echo-input", "stdout=hello"]);
    spec.stdin = StdinMode::Pipe;
    let r = h.engine.start(spec).await.expect("start");
    let first = h
        .engine
        .read_output(r.id(), OutputQuery::default())
        .await
        .expect("read");
    assert_eq!(first.text(), "hello\n");
    h.engine
        .send_input(r.id(), b"ping\n".to_vec())
        .await
        .expect("input");
    let q = OutputQuery {
        cursor: Some(first.next),
        ..OutputQuery::default()
    };
    assert_eq!(
        h.engine.read_output(r.id(), q).await.expect("read").text(),
        "ping\n"
    );
    let closed = h.engine.start(fake(&["forever"])).await.expect("start");
    let err = h
        .engine
        .send_input(closed.id(), b"x".to_vec())
        .await
        .expect_err("stdin closed");
    assert!(err.to_string().contains("stdin closed"), "{err}");
}

#[tokio::test]
async fn bad_input_gets_errors_that_name_what_was_wrong() {
    let h = harness(Limits {
        max_depth: 2,
        max_per_level: 2,
        ..Limits::default()
    })
    .await;
    let ghost = ProcessId::from_uuid(uuid_from(99));
    assert!(matches!(h.engine.get(ghost).await, Err(ManagerError::NotFound(id)) if id == ghost));
    assert!(matches!(
        h.engine.stop(ghost, StopOptions::default()).await,
        Err(ManagerError::NotFound(_))
    ));
    assert!(matches!(
        h.engine.read_output(ghost, OutputQuery::default()).await,
        Err(ManagerError::NotFound(_))
    ));
    let err = h
        .engine
        .start(ProcessSpec::argv(Vec::<String>::new()))
        .await
        .expect_err("empty");
    assert_eq!(
        err.to_string(),
        "missing command: the argument vector is empty"
    );
    let mut s = fake(&[]);
    s.dependencies = vec![ghost];
    let err = h.engine.start(s).await.expect_err("unknown dependency");
    assert_eq!(
        err.to_string(),
        format!("unknown dependency {ghost}: no such process")
    );
    let mut s = fake(&[]);
    s.parent = Some(ghost);
    assert!(
        h.engine
            .start(s)
            .await
            .expect_err("unknown parent")
            .to_string()
            .contains("unknown parent")
    );
    // Depth and level limits.
    let root = h.engine.start(fake(&["forever"])).await.expect("start");
    let under = |p: ProcessId| {
        let mut s = fake(&["forever"]);
        s.parent = Some(p);
        s
    };
    let l1 = h.engine.start(under(root.id())).await.expect("level 1");
    h.engine
        .start(under(root.id()))
        .await
        .expect("level 1 again");
    let err = h
        .engine
        .start(under(root.id()))
        .await
        .expect_err("level full");
    assert_eq!(
        err.to_string(),
        "hierarchy level 1 is full: it holds 2 unfinished processes, the limit"
    );
    let l2 = h.engine.start(under(l1.id())).await.expect("level 2");
    let err = h.engine.start(under(l2.id())).await.expect_err("too deep");
    assert_eq!(
        err.to_string(),
        "hierarchy too deep: depth 3 exceeds the limit of 2"
    );
    let err = h.engine.remove(root.id()).await.expect_err("live");
    assert!(
        err.to_string()
            .contains("only finished processes can be removed"),
        "{err}"
    );
}

fn uuid_from(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(n)
}

#[tokio::test]
async fn remove_deletes_a_finished_record_and_its_output() {
    let h = harness(Limits::default()).await;
    let r = h.engine.start(fake(&["stdout=x"])).await.expect("start");
    h.until_state(r.id(), StateName::Completed).await;
    h.engine.remove(r.id()).await.expect("remove");
    assert!(matches!(
        h.engine.get(r.id()).await,
        Err(ManagerError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_new_engine_takes_back_the_store_and_marks_what_it_cannot_reattach_lost() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000)));
    let store = Arc::new(InMemoryStore::new());
    let (ports, _spawner) = ports_with(&clock, store.clone());
    let limits = Limits {
        max_running: 1,
        ..Limits::default()
    };
    let first = Engine::launch(
        ports,
        EngineConfig {
            node: None,
            limits: limits.clone(),
            ..EngineConfig::default()
        },
    )
    .await
    .expect("engine");
    let running = first.start(fake(&["forever"])).await.expect("start");
    let queued = first.start(fake(&["forever"])).await.expect("start");
    let op = first
        .track(ProcessSpec::tracked(ProcessName::new("op").expect("name")))
        .await
        .expect("track");
    first.shutdown().await;
    // A new engine with a new spawner: the old fake processes cannot be re-attached.
    let (ports, _spawner) = ports_with(&clock, store.clone());
    let second = Engine::launch(
        ports,
        EngineConfig {
            node: None,
            limits,
            ..EngineConfig::default()
        },
    )
    .await
    .expect("engine");
    let lost = second.get(running.id()).await.expect("record");
    assert_eq!(lost.state(), StateName::Lost);
    assert!(
        lost.lifecycle()
            .error()
            .expect("reason")
            .contains("could not re-attach to pid")
    );
    assert_eq!(
        second.get(queued.id()).await.expect("record").state(),
        StateName::Running,
        "the queue goes on"
    );
    assert_eq!(
        second.get(op.id()).await.expect("record").state(),
        StateName::Running,
        "tracked work survives"
    );
}

/// A record the store holds as `starting`, as a daemon killed during its
/// spawn leaves it, and that record's spawn request.
async fn starting_in(store: &InMemoryStore, spec: ProcessSpec) -> (ProcessRecord, SpawnRequest) {
    let mut core = bpm_domain::Supervisor::new(bpm_domain::NodeId::local(), Limits::default());
    let id = ProcessId::from_uuid(uuid_from(7));
    let effects = core
        .handle(
            bpm_domain::Input::Submit { id, spec },
            Timestamp::from_millis(1),
        )
        .expect("submit");
    let record = effects
        .into_iter()
        .find_map(|e| match e {
            bpm_domain::Effect::Persist { record, .. } => Some(record),
            _ => None,
        })
        .expect("written");
    assert_eq!(record.state(), StateName::Starting);
    let written = store
        .write_batch(&[StoreWrite {
            record: record.clone(),
            expected_version: None,
            durable: true,
        }])
        .await;
    assert!(written.iter().all(Result::is_ok));
    let request = SpawnRequest::for_record(&record).expect("a command");
    (record, request)
}

#[tokio::test]
async fn a_spawn_cut_short_by_a_restart_is_asked_again_and_answered_with_its_process() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000)));
    let store = Arc::new(InMemoryStore::new());
    let (record, request) = starting_in(&store, fake(&["forever"])).await;
    let (ports, spawner) = ports_with(&clock, store.clone());
    // The spawner started it; the manager died before it heard.
    let pid = spawner.spawn(request).await.expect("started").pid;
    let engine = Engine::launch(ports, EngineConfig::default())
        .await
        .expect("engine");
    let r = engine.get(record.id()).await.expect("record");
    assert_eq!(r.state(), StateName::Running, "not lost: its process runs");
    assert_eq!(r.pid(), Some(pid), "the process it had, not a second one");
    spawner.exit(record.id(), ExitStatus::Code(4));
    let done = engine.wait(record.id(), None).await.expect("wait");
    assert_eq!(done.lifecycle().exit(), Some(ExitStatus::Code(4)));
}

#[tokio::test]
async fn a_spawn_cut_short_before_it_reached_the_spawner_runs_once() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000)));
    let store = Arc::new(InMemoryStore::new());
    let (record, _) = starting_in(&store, fake(&["exit=2"])).await;
    let (ports, _spawner) = ports_with(&clock, store.clone());
    let engine = Engine::launch(ports, EngineConfig::default())
        .await
        .expect("engine");
    let done = engine.wait(record.id(), None).await.expect("wait");
    assert_eq!(done.state(), StateName::Failed);
    assert_eq!(done.lifecycle().exit(), Some(ExitStatus::Code(2)));
}

#[tokio::test]
async fn a_store_that_refuses_writes_delays_persistence_without_stopping_supervision() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1)));
    let (mut ports, spawner) = ports_with(&clock, Arc::new(InMemoryStore::new()));
    let real = Arc::new(InMemoryStore::new());
    let mut store = bpm_ports::MockProcessStore::new();
    let failures = Arc::new(AtomicUsize::new(0));
    let (r1, r2, r3, r4) = (real.clone(), real.clone(), real.clone(), failures.clone());
    store.expect_list().returning(|_| Ok(Vec::new()));
    store.expect_room().returning(|_| Ok(()));
    store.expect_reachable().returning(|| Ok(()));
    // The store is down for the first three updates, after it took the
    // creation (a creation it does not take is refused: see
    // a_record_the_store_did_not_take_is_never_started_nor_acknowledged).
    store.expect_sync().returning(|| Ok(()));
    store
        .expect_write_batch_unsynced()
        .returning(move |writes| {
            writes
                .iter()
                .map(|w| match w.expected_version {
                    None => futures_lite(r1.create(&w.record)),
                    Some(_) if r4.fetch_add(1, Ordering::SeqCst) < 3 => {
                        Err(StoreError::Unavailable("injected".into()))
                    }
                    Some(v) => futures_lite(r2.update(&w.record, v)),
                })
                .collect()
        });
    store
        .expect_get()
        .returning(move |id| futures_lite(r3.get(id)));
    ports.store = Arc::new(store);
    let engine = Engine::launch(ports, EngineConfig::default())
        .await
        .expect("engine");
    let r = engine
        .start(fake(&["forever"]))
        .await
        .expect("supervision goes on while the store is down");
    assert_eq!(r.state(), StateName::Running);
    assert!(spawner.is_running(r.id()));
    eventually("the newest version reaches the store", || async {
        real.get(r.id()).await.is_ok_and(|s| s == r)
    })
    .await;
    assert!(
        failures.load(Ordering::SeqCst) >= 3,
        "the refused writes were written again"
    );
    spawner.exit(r.id(), ExitStatus::Code(0));
    eventually("later writes go through", || async {
        real.get(r.id())
            .await
            .is_ok_and(|s| s.state() == StateName::Completed)
    })
    .await;
}

/// Runs a future that completes at once (the in-memory store never waits) to its result.
fn futures_lite<T>(f: impl Future<Output = T>) -> T {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("the in-memory store does not wait"),
    }
}

#[tokio::test]
async fn the_last_lines_can_be_read_within_a_byte_cap() {
    let h = harness(Limits::default()).await;
    let r = h
        .engine
        .start(fake(&["stdout=one", "stdout=two", "stderr=three"]))
        .await
        .expect("start");
    h.until_state(r.id(), StateName::Completed).await;
    let q = |lines, max_bytes| OutputQuery {
        tail_lines: Some(lines),
        max_bytes,
        ..OutputQuery::default()
    };
    let last2 = h
        .engine
        .read_output(r.id(), q(2, 1 << 20))
        .await
        .expect("tail");
    assert_eq!(last2.text(), "two\nthree\n");
    assert!(!last2.truncated);
    let capped = h.engine.read_output(r.id(), q(2, 7)).await.expect("tail");
    assert_eq!(capped.text(), "\nthree\n", "the newest bytes are kept");
    assert!(capped.truncated);
}

#[tokio::test]
async fn a_batch_writes_the_records_it_starts_first_and_the_waiting_ones_after() {
    use StateName::{Pending, Starting};
    let store = Arc::new(TestDisk::new(false));
    let (engine, _, _) = engine_on(&store, 2).await;
    store.batches.lock().expect("lock").clear();
    let results = engine
        .start_many((0..5).map(|_| fake(&["forever"])).collect())
        .await
        .expect("started");
    assert!(results.iter().all(Result::is_ok));
    let batches = store.batches.lock().expect("lock").clone();
    assert_eq!(
        batches[..2],
        [vec![Starting, Starting], vec![Pending, Pending, Pending]],
        "the two it starts, then the three left waiting"
    );
}

#[tokio::test]
async fn many_starts_are_one_step_with_one_result_each() {
    let h = harness(Limits {
        max_running: 1,
        ..Limits::default()
    })
    .await;
    let mut unknown_dependency = fake(&["forever"]);
    unknown_dependency.dependencies = vec![ProcessId::from_uuid(uuid::Uuid::from_u128(77))];
    let results = h
        .engine
        .start_many(vec![
            fake(&["forever"]),
            unknown_dependency,
            fake(&["forever"]),
            fake(&["forever"]),
        ])
        .await
        .expect("the engine answers");
    assert_eq!(results.len(), 4);
    assert!(
        matches!(&results[1], Err(e @ ManagerError::Refused(_)) if e.to_string().contains("dependency")),
        "{:?}",
        results[1]
    );
    let started: Vec<ProcessRecord> = results.into_iter().filter_map(Result::ok).collect();
    let states: Vec<StateName> = started.iter().map(ProcessRecord::state).collect();
    assert_eq!(
        states,
        [StateName::Running, StateName::Pending, StateName::Pending],
        "one slot: the first runs, the others queue in order"
    );
    for r in &started {
        assert_eq!(
            &h.ports.store.get(r.id()).await.expect("stored"),
            r,
            "each answer is what the store holds"
        );
    }
    // The queue moves on as usual.
    h.spawner.exit(started[0].id(), ExitStatus::Code(0));
    h.until_state(started[1].id(), StateName::Running).await;
    assert!(
        h.engine
            .start_many(Vec::new())
            .await
            .expect("empty")
            .is_empty()
    );
}

/// A spawner whose spawns of `stdout=gated` scripts answer only once the
/// process's exit has reached the engine and the test opens the gate: the
/// exit overtakes the spawn's own answer, as it can with a real keeper.
/// A `stdout=panic` script makes it panic.
struct GatedSpawner {
    inner: Arc<ScriptedSpawner>,
    gate: tokio::sync::Semaphore,
    exited: Arc<std::sync::Mutex<std::collections::HashSet<ProcessId>>>,
    forwarded: Arc<tokio::sync::Notify>,
    notices:
        std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<bpm_ports::ProcessNotice>>>,
}

impl GatedSpawner {
    fn new(inner: Arc<ScriptedSpawner>) -> Self {
        let mut from = inner.notices().expect("notices");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let exited = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
        let forwarded = Arc::new(tokio::sync::Notify::new());
        let (seen, told) = (exited.clone(), forwarded.clone());
        tokio::spawn(async move {
            while let Some(notice) = from.recv().await {
                let exit = match &notice {
                    bpm_ports::ProcessNotice::Exited { id, .. } => Some(*id),
                    _ => None,
                };
                let _ = tx.send(notice);
                if let Some(id) = exit {
                    seen.lock().expect("lock").insert(id);
                    told.notify_waiters();
                }
            }
        });
        GatedSpawner {
            inner,
            gate: tokio::sync::Semaphore::new(0),
            exited,
            forwarded,
            notices: std::sync::Mutex::new(Some(rx)),
        }
    }
}

#[async_trait::async_trait]
impl bpm_ports::ProcessSpawner for GatedSpawner {
    async fn spawn(
        &self,
        request: bpm_ports::SpawnRequest,
    ) -> Result<bpm_ports::Spawned, bpm_ports::SpawnError> {
        assert!(
            !request.argv.iter().any(|a| a == "stdout=panic"),
            "a spawner bug"
        );
        if request.argv.iter().any(|a| a == "stdout=unknown") {
            return Err(bpm_ports::SpawnError::Unknown(
                "the spawner died as it started this".into(),
            ));
        }
        let (id, gated) = (request.id, request.argv.iter().any(|a| a == "stdout=gated"));
        let spawned = self.inner.spawn(request).await?;
        if gated {
            loop {
                let told = self.forwarded.notified();
                if self.exited.lock().expect("lock").contains(&id) {
                    break;
                }
                told.await;
            }
            self.gate.acquire().await.expect("gate").forget();
        }
        Ok(spawned)
    }
    async fn signal(
        &self,
        id: ProcessId,
        pid: u32,
        s: Signal,
    ) -> Result<(), bpm_ports::SpawnError> {
        self.inner.signal(id, pid, s).await
    }
    async fn write_input(&self, id: ProcessId, data: Vec<u8>) -> Result<(), bpm_ports::SpawnError> {
        self.inner.write_input(id, data).await
    }
    async fn reattach(&self, id: ProcessId, pid: u32) -> Result<bool, bpm_ports::SpawnError> {
        self.inner.reattach(id, pid).await
    }
    fn notices(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<bpm_ports::ProcessNotice>> {
        self.notices.lock().expect("lock").take()
    }
}

/// An engine on the in-memory adapters whose spawner is a [`GatedSpawner`].
async fn gated_engine() -> (Engine, Arc<GatedSpawner>) {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000)));
    let (mut ports, scripted) = ports_with(&clock, Arc::new(InMemoryStore::new()));
    let gated = Arc::new(GatedSpawner::new(scripted));
    ports.spawner = gated.clone();
    let engine = Engine::launch(
        ports,
        EngineConfig {
            node: None,
            limits: Limits::default(),
            ..EngineConfig::default()
        },
    )
    .await
    .expect("engine");
    (engine, gated)
}

#[tokio::test]
async fn a_slow_spawn_holds_up_neither_other_processes_nor_its_own_exit() {
    let (engine, gated) = gated_engine().await;
    let slow = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.start(fake(&["stdout=gated", "exit=3"])).await })
    };
    // While that spawn waits, other processes start and end.
    let quick = engine.start(fake(&["exit=0"])).await.expect("start");
    let ended = engine
        .wait(quick.id(), Some(Duration::from_secs(5)))
        .await
        .expect("the quick one ends while the slow spawn is under way");
    assert_eq!(ended.state(), StateName::Completed);
    let starting = engine
        .list(bpm_domain::ListFilter {
            states: vec![StateName::Starting],
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(starting.len(), 1, "the slow one is still starting");
    assert!(
        !slow.is_finished(),
        "its caller still waits for the spawn's answer"
    );
    gated.gate.add_permits(1);
    let answered = slow.await.expect("task").expect("start");
    // The exit that overtook the spawn's answer was held, not lost, and
    // handled right after it: the caller learns the whole story at once.
    assert_eq!(answered.state(), StateName::Failed);
    assert_eq!(answered.lifecycle().exit(), Some(ExitStatus::Code(3)));
    assert!(answered.lifecycle().started_at().is_some());
    let done = engine
        .wait(answered.id(), Some(Duration::from_secs(5)))
        .await
        .expect("wait");
    assert_eq!(done, answered);
}

#[tokio::test]
async fn a_spawner_that_panics_fails_the_record_instead_of_leaving_it_starting() {
    let (engine, _gated) = gated_engine().await;
    let r = engine
        .start(fake(&["stdout=panic"]))
        .await
        .expect("the caller is answered");
    assert_eq!(r.state(), StateName::Failed);
    assert_eq!(
        r.lifecycle().error().as_deref(),
        Some("the spawner failed unexpectedly")
    );
    let next = engine.start(fake(&["exit=0"])).await.expect("start");
    assert_eq!(
        engine
            .wait(next.id(), Some(Duration::from_secs(5)))
            .await
            .expect("wait")
            .state(),
        StateName::Completed,
        "the engine goes on"
    );
}

#[tokio::test]
async fn a_start_the_spawner_cannot_vouch_for_is_lost_and_its_slot_freed() {
    let (engine, _gated) = gated_engine().await;
    let r = engine
        .start(fake(&["stdout=unknown"]))
        .await
        .expect("the caller is answered");
    assert_eq!(
        r.state(),
        StateName::Lost,
        "neither failed nor started again"
    );
    assert_eq!(
        r.lifecycle().error().as_deref(),
        Some("the spawner died as it started this")
    );
    assert_eq!(r.lifecycle().exit(), None);
    let next = engine.start(fake(&["exit=0"])).await.expect("start");
    assert_eq!(
        engine
            .wait(next.id(), Some(Duration::from_secs(5)))
            .await
            .expect("wait")
            .state(),
        StateName::Completed,
        "the engine goes on"
    );
}

/// An in-memory store that notes the states in each batch written and,
/// when `slow`, lets each flush through only when the test does (a slow disk).
struct TestDisk {
    inner: InMemoryStore,
    batches: std::sync::Mutex<Vec<Vec<StateName>>>,
    flushes: Option<tokio::sync::Semaphore>,
    /// While set, the store answers the check before new work but takes
    /// no creation: it stopped answering in between.
    refuse_creations: std::sync::atomic::AtomicBool,
}

impl TestDisk {
    fn new(slow: bool) -> Self {
        TestDisk {
            inner: InMemoryStore::new(),
            batches: std::sync::Mutex::default(),
            flushes: slow.then(|| tokio::sync::Semaphore::new(0)),
            refuse_creations: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn let_flush(&self, n: usize) {
        self.flushes.as_ref().expect("a slow disk").add_permits(n);
    }
}

/// An engine with `max_running` slots on `disk`, its spawner and its clock.
async fn engine_on(
    disk: &Arc<TestDisk>,
    max_running: usize,
) -> (Engine, Arc<ScriptedSpawner>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1)));
    let (mut ports, spawner) = ports_with(&clock, Arc::new(InMemoryStore::new()));
    ports.store = disk.clone();
    (engine_with_slots(ports, max_running).await, spawner, clock)
}

/// An engine on `ports` with `max_running` slots.
async fn engine_with_slots(ports: Ports, max_running: usize) -> Engine {
    let limits = Limits {
        max_running,
        ..Limits::default()
    };
    Engine::launch(
        ports,
        EngineConfig {
            node: None,
            limits,
            ..EngineConfig::default()
        },
    )
    .await
    .expect("engine starts")
}

#[async_trait::async_trait]
impl ProcessStore for TestDisk {
    fn room(&self, records: usize) -> Result<(), StoreError> {
        self.inner.room(records)
    }
    async fn reachable(&self) -> Result<(), StoreError> {
        self.inner.reachable().await
    }
    fn recovery_warnings(&self) -> Vec<String> {
        self.inner.recovery_warnings()
    }
    async fn create(&self, record: &ProcessRecord) -> Result<(), StoreError> {
        self.inner.create(record).await
    }
    async fn get(&self, id: ProcessId) -> Result<ProcessRecord, StoreError> {
        self.inner.get(id).await
    }
    async fn update(&self, record: &ProcessRecord, expected: u64) -> Result<(), StoreError> {
        self.inner.update(record, expected).await
    }
    async fn update_unflushed(
        &self,
        record: &ProcessRecord,
        expected: u64,
    ) -> Result<(), StoreError> {
        self.inner.update_unflushed(record, expected).await
    }
    async fn write_batch_unsynced(&self, writes: &[StoreWrite]) -> Vec<Result<(), StoreError>> {
        self.batches
            .lock()
            .expect("lock")
            .push(writes.iter().map(|w| w.record.state()).collect());
        if self
            .refuse_creations
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            let mut out = Vec::new();
            for w in writes {
                out.push(if w.expected_version.is_none() {
                    Err(StoreError::Unavailable("the test's store is gone".into()))
                } else {
                    self.inner
                        .write_batch_unsynced(std::slice::from_ref(w))
                        .await
                        .remove(0)
                });
            }
            return out;
        }
        self.inner.write_batch_unsynced(writes).await
    }
    async fn sync(&self) -> Result<(), StoreError> {
        if let Some(flushes) = &self.flushes {
            flushes.acquire().await.expect("open").forget();
        }
        Ok(())
    }
    async fn delete(&self, id: ProcessId) -> Result<(), StoreError> {
        self.inner.delete(id).await
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<ProcessRecord>, StoreError> {
        self.inner.list(filter).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_disk_holds_back_answers_and_events_but_not_the_next_start() {
    let disk = Arc::new(TestDisk::new(true));
    let (engine, spawner, clock) = engine_on(&disk, 1).await;
    let mut events = engine.subscribe();
    let records = || async {
        disk.inner
            .list(&bpm_domain::ListFilter::default())
            .await
            .expect("list")
    };
    let e1 = engine.clone();
    let first = tokio::spawn(async move { e1.start(fake(&["after=1s"])).await });
    eventually("the first is written", || async {
        records().await.len() == 1
    })
    .await;
    let e2 = engine.clone();
    let second = tokio::spawn(async move { e2.start(fake(&["forever"])).await });
    eventually("the second is written", || async {
        records().await.len() == 2
    })
    .await;
    let (a, b) = {
        let all = records().await;
        (all[0].id(), all[1].id())
    };
    assert_eq!(
        disk.inner.get(b).await.expect("b").state(),
        StateName::Pending
    );
    // The first starts while its creation is still being flushed.
    eventually("the first runs", || async { spawner.is_running(a) }).await;
    clock.advance(Duration::from_secs(1));
    // Its exit is recorded and the second started, still before any flush ended.
    eventually("the second runs", || async { spawner.is_running(b) }).await;
    assert_eq!(
        disk.inner.get(a).await.expect("a").state(),
        StateName::Completed
    );
    assert!(
        !first.is_finished() && !second.is_finished(),
        "no answer before the disk"
    );
    assert!(events.try_recv().is_err(), "no event before the disk");
    disk.let_flush(1_000);
    let a_answer = first.await.expect("task").expect("start");
    assert_eq!(a_answer.id(), a);
    assert_eq!(second.await.expect("task").expect("start").id(), b);
    let mut seen = Vec::new();
    while !seen.contains(&(b, EventKind::Started)) {
        let e = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("an event")
            .expect("event");
        seen.push((e.id, e.kind));
    }
    let of = |id| -> Vec<EventKind> {
        seen.iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, k)| *k)
            .collect()
    };
    assert_eq!(
        of(a),
        [
            EventKind::Submitted,
            EventKind::Started,
            EventKind::Ready,
            EventKind::Exited,
            EventKind::Completed
        ],
        "in order, once on disk"
    );
    assert_eq!(of(b), [EventKind::Submitted, EventKind::Started]);
}

/// An engine on real processes (the OS spawner), which hands records over.
async fn os_engine(max_running: usize) -> Engine {
    os_engine_with(max_running).await.0
}

/// The OS spawner, noting which records the engine hands over and takes back.
struct Watched {
    os: bpm_adapters::os::OsSpawner,
    handed: std::sync::Mutex<Vec<ProcessId>>,
    withdrawn: std::sync::Mutex<Vec<ProcessId>>,
}

#[async_trait::async_trait]
impl ProcessSpawner for Watched {
    async fn spawn(&self, request: SpawnRequest) -> Result<bpm_ports::Spawned, SpawnError> {
        self.os.spawn(request).await
    }
    async fn signal(&self, id: ProcessId, pid: u32, signal: Signal) -> Result<(), SpawnError> {
        self.os.signal(id, pid, signal).await
    }
    async fn write_input(&self, id: ProcessId, data: Vec<u8>) -> Result<(), SpawnError> {
        self.os.write_input(id, data).await
    }
    async fn reattach(&self, id: ProcessId, pid: u32) -> Result<bool, SpawnError> {
        self.os.reattach(id, pid).await
    }
    fn notices(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<ProcessNotice>> {
        self.os.notices()
    }
    fn hands_over(&self) -> bool {
        self.os.hands_over()
    }
    async fn hand_over(&self, requests: Vec<SpawnRequest>) -> Result<(), SpawnError> {
        self.handed
            .lock()
            .expect("lock")
            .extend(requests.iter().map(|r| r.id));
        self.os.hand_over(requests).await
    }
    async fn withdraw(&self) -> Result<Vec<ProcessId>, SpawnError> {
        let ids = self.os.withdraw().await?;
        self.withdrawn.lock().expect("lock").extend(&ids);
        Ok(ids)
    }
}

/// [`os_engine`], with the spawner it runs on.
async fn os_engine_with(max_running: usize) -> (Engine, Arc<Watched>) {
    let clock = Arc::new(bpm_adapters::clock::SystemClock::new());
    let output = Arc::new(InMemoryOutput::default());
    let spawner = Arc::new(Watched {
        os: bpm_adapters::os::OsSpawner::new(
            output.clone(),
            bpm_adapters::os::OsSpawnerConfig::default(),
        ),
        handed: std::sync::Mutex::default(),
        withdrawn: std::sync::Mutex::default(),
    });
    let ports = Ports {
        store: Arc::new(InMemoryStore::new()),
        output,
        events: Arc::new(BroadcastBus::default()),
        spawner: spawner.clone(),
        clock,
        ids: Arc::new(UuidV7Ids::new()),
        usage: Arc::new(bpm_adapters::os::ProcSampler::new()),
        host: Arc::new(bpm_adapters::os::OsHost::new()),
    };
    (engine_with_slots(ports, max_running).await, spawner)
}

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec::argv(["sh", "-c", script])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_started_on_exits_keep_the_limit_their_order_and_their_exit_codes() {
    let dir = tempfile::tempdir().expect("dir");
    let (live, log) = (dir.path().join("live"), dir.path().join("log"));
    std::fs::create_dir(&live).expect("dir");
    let engine = os_engine(2).await;
    // Each process marks itself live, logs how many are, then unmarks itself
    // before it exits: the count can never pass the limit.
    let script = format!(
        "touch {live}/$BPM_PROCESS_ID; echo \"$1 $(ls {live} | wc -l)\" >> {log}; \
         rm {live}/$BPM_PROCESS_ID; exit $(($1 % 4))",
        live = live.display(),
        log = log.display()
    );
    let mut ids = Vec::new();
    for n in 0..40 {
        let spec = ProcessSpec::argv(["sh", "-c", &script, "sh", &n.to_string()]);
        ids.push(engine.start(spec).await.expect("start").id());
    }
    engine.wait_many(&ids, None).await.expect("wait");
    for (n, id) in ids.iter().enumerate() {
        let r = engine.get(*id).await.expect("record");
        let code = i32::try_from(n % 4).expect("small");
        assert_eq!(
            r.lifecycle().exit(),
            Some(ExitStatus::Code(code)),
            "record {n}: {r:?}"
        );
        let want = if code == 0 {
            StateName::Completed
        } else {
            StateName::Failed
        };
        assert_eq!(r.state(), want);
    }
    let lines = std::fs::read_to_string(&log).expect("log");
    let seen: Vec<(usize, usize)> = lines
        .lines()
        .map(|l| {
            let (n, live) = l.split_once(' ').expect("two fields");
            (n.parse().expect("n"), live.trim().parse().expect("count"))
        })
        .collect();
    assert_eq!(seen.len(), 40);
    assert!(
        seen.iter().all(|(_, live)| *live <= 2),
        "more than 2 ran at once: {seen:?}"
    );
    // Equal priorities start in submission order: none starts before one
    // submitted two places earlier (two lanes may swap neighbours). The
    // records' start times say it; the log's order is the processes' own
    // scheduling, which may put a later start's line first.
    let mut started = Vec::new();
    for id in &ids {
        let r = engine.get(*id).await.expect("record");
        started.push(r.lifecycle().started_at().expect("started"));
    }
    for (n, at) in started.iter().enumerate() {
        for (m, later) in started.iter().enumerate().skip(n + 3) {
            assert!(
                later >= at,
                "{m} started before {n}: {:?}",
                started.iter().enumerate().collect::<Vec<_>>()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_handed_over_and_then_stopped_never_runs() {
    let dir = tempfile::tempdir().expect("dir");
    let marker = dir.path().join("ran");
    let (engine, spawner) = os_engine_with(1).await;
    let first = engine.start(sh("sleep 0.5")).await.expect("start");
    let queued = engine
        .start(sh(&format!("touch {}", marker.display())))
        .await
        .expect("start");
    assert_eq!(queued.state(), StateName::Pending);
    eventually("the queued record is handed to the spawner", || async {
        spawner.handed.lock().expect("lock").contains(&queued.id())
    })
    .await;
    let stopped = engine
        .stop(queued.id(), StopOptions::default())
        .await
        .expect("stop");
    assert_eq!(stopped.state(), StateName::Cancelled);
    assert!(
        spawner
            .withdrawn
            .lock()
            .expect("lock")
            .contains(&queued.id()),
        "the stop took the record back from the spawner"
    );
    let first = engine.wait(first.id(), None).await.expect("wait");
    assert_eq!(first.state(), StateName::Completed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!marker.exists(), "a cancelled record ran");
    assert_eq!(
        engine.get(queued.id()).await.expect("record").state(),
        StateName::Cancelled
    );
    // The queue goes on: the next record starts when the slot frees.
    let next = engine.start(sh("exit 0")).await.expect("start");
    let next = engine.wait(next.id(), None).await.expect("wait");
    assert_eq!(next.state(), StateName::Completed);
}

#[tokio::test]
async fn a_store_conflict_is_reconciled_not_dropped() {
    let h = harness(Limits::default()).await;
    let store = h.ports.store.clone();
    let op = h
        .engine
        .track(ProcessSpec::tracked("migration".parse().expect("name")))
        .await
        .expect("track");
    let id = op.id();
    // Another writer changes the record behind the engine's back.
    let mut theirs = store.get(id).await.expect("stored");
    let before = theirs.version();
    theirs
        .apply(
            bpm_domain::Transition::Progress {
                percent: bpm_domain::Percent::new(10).expect("percent"),
                message: Some("someone else".into()),
            },
            h.clock_now(),
        )
        .expect("progress");
    store.update(&theirs, before).await.expect("their write");
    // The engine's next write meets their version: it writes its own view
    // over it instead of dropping it.
    h.engine
        .progress(id, bpm_domain::Percent::new(50).expect("percent"), None)
        .await
        .expect("progress");
    eventually("the engine's progress is stored over theirs", || async {
        store.get(id).await.is_ok_and(|r| {
            r.version() > theirs.version() && r.progress().map(|p| p.percent.get()) == Some(50)
        })
    })
    .await;
    // Someone deletes it from the store: the engine's next write creates it again.
    store.delete(id).await.expect("their delete");
    let done = h.engine.complete(id, None).await.expect("complete");
    assert_eq!(done.record.state(), StateName::Completed);
    eventually("the completed record is stored again", || async {
        store
            .get(id)
            .await
            .is_ok_and(|r| r.state() == StateName::Completed)
    })
    .await;
}

/// The store answers the check before new work, then does not take the
/// record: the caller is told nothing was started, nothing runs, no event
/// says otherwise, and the queue and slots are as before, alone or in a
/// batch, with a free slot or queued behind a busy one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_store_did_not_take_is_never_started_nor_acknowledged() {
    let disk = Arc::new(TestDisk::new(false));
    let (engine, spawner, _clock) = engine_on(&disk, 1).await;
    let refuse = |on: bool| {
        disk.refuse_creations
            .store(on, std::sync::atomic::Ordering::SeqCst);
    };
    let is_gone = |e: &ManagerError| matches!(e, ManagerError::Store(StoreError::Unavailable(m)) if m.contains("nothing was started"));
    let mut events = engine.subscribe();

    // A free slot: it would have been spawned at once.
    refuse(true);
    let e = engine.start(fake(&["forever"])).await.unwrap_err();
    assert!(is_gone(&e), "{e}");
    assert!(
        engine
            .list(ListFilter::default())
            .await
            .expect("list")
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = events.try_recv();
    assert!(seen.is_err(), "no event for it: {seen:?}");

    // Queued behind a busy slot, and in a batch.
    refuse(false);
    let busy = engine.start(fake(&["forever"])).await.expect("start");
    eventually("it runs", || async { spawner.is_running(busy.id()) }).await;
    refuse(true);
    let e = engine.start(fake(&["exit=0"])).await.unwrap_err();
    assert!(is_gone(&e), "{e}");
    let batch = engine
        .start_many(vec![fake(&["exit=0"]), fake(&["exit=0"])])
        .await
        .expect("answered");
    assert!(
        batch.iter().all(|r| r.as_ref().is_err_and(is_gone)),
        "{batch:?}"
    );
    refuse(false);
    let next = engine.start(fake(&["exit=0"])).await.expect("start");
    assert_eq!(next.state(), StateName::Pending);
    engine
        .stop(busy.id(), StopOptions::default())
        .await
        .expect("stop");
    let done = engine
        .wait(next.id(), Some(Duration::from_secs(5)))
        .await
        .expect("wait");
    assert_eq!(done.state(), StateName::Completed);
    let stored = disk.inner.list(&ListFilter::default()).await.expect("list");
    let mut ids: Vec<_> = stored.iter().map(ProcessRecord::id).collect();
    ids.sort();
    let mut expected = vec![busy.id(), next.id()];
    expected.sort();
    assert_eq!(ids, expected, "only what was acknowledged is stored");
}

/// At its start the engine reads the other nodes' records that its
/// records name: a record waiting for one that completed there starts, and
/// one waiting for a record the store no longer holds fails and says why.
#[tokio::test]
async fn a_restart_reads_the_other_nodes_records_its_records_wait_for() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000)));
    let store = Arc::new(InMemoryStore::new());
    let here = bpm_domain::NodeId::new("a").expect("node");
    let there = bpm_domain::NodeId::new("b").expect("node");
    let now = bpm_ports::Clock::now(&*clock);
    let mut done = ProcessRecord::new(fresh(1), there, fake(&["ok"]), now);
    for step in [
        bpm_domain::Transition::Start,
        bpm_domain::Transition::Spawned { pid: 4242 },
        bpm_domain::Transition::Exited {
            status: ExitStatus::Code(0),
            limit: None,
        },
    ] {
        done.apply(step, now).expect("a step");
    }
    let waits_for = |n: u128, dep: ProcessId| {
        let mut spec = fake(&["next"]);
        spec.dependencies = vec![dep];
        ProcessRecord::new(fresh(n), here.clone(), spec, now)
    };
    let released = waits_for(2, done.id());
    let orphaned = waits_for(3, fresh(4));
    let writes: Vec<StoreWrite> = [done, released.clone(), orphaned.clone()]
        .into_iter()
        .map(|record| StoreWrite {
            record,
            expected_version: None,
            durable: true,
        })
        .collect();
    assert!(store.write_batch(&writes).await.iter().all(Result::is_ok));
    let (ports, _spawner) = ports_with(&clock, store);
    let config = EngineConfig {
        node: Some(here),
        limits: Limits::default(),
        ..EngineConfig::default()
    };
    let engine = Engine::launch(ports, config).await.expect("engine starts");
    let failed = engine.get(orphaned.id()).await.expect("kept");
    assert_eq!(failed.state(), StateName::Failed);
    let error = failed.lifecycle().error().expect("a reason");
    assert!(error.contains("gone from the store"), "{error}");
    let started = engine.get(released.id()).await.expect("kept");
    assert_ne!(
        started.state(),
        StateName::Pending,
        "{:?}",
        started.lifecycle()
    );
}

fn fresh(n: u128) -> ProcessId {
    ProcessId::from_uuid(uuid::Uuid::from_u128(n))
}

/// A record placed on any node: queued unplaced, taken by this node's
/// claimer (woken by its event), placed here and started; one whose
/// labels no node carries waits and is cancelled where its stop came; one
/// naming a record that does not exist is refused at once.
#[tokio::test]
async fn a_record_placed_on_any_node_is_taken_here_or_waits_and_is_stopped() {
    let h = harness(Limits::default()).await;
    let node = bpm_domain::NodeId::local();
    let claims =
        bpm_adapters::memory::InMemoryClaims::new(Arc::clone(&h.ports.store), node.clone());
    h.engine.claim_through(
        Arc::new(claims),
        bpm_domain::cluster::placement::NodeLabels::new(),
    );
    let any = |shape: &dyn Fn(&mut ProcessSpec)| {
        let mut spec = fake(&["forever"]);
        spec.node = Some(bpm_domain::NodeId::any());
        shape(&mut spec);
        spec
    };

    let missing = ProcessId::from_uuid(uuid::Uuid::from_u128(9));
    let refused = h
        .engine
        .start(any(&|s| s.dependencies = vec![missing]))
        .await;
    assert!(
        matches!(refused, Err(ManagerError::Refused(CoreError::UnknownDependency(id))) if id == missing),
        "{refused:?}"
    );

    let queued = h.engine.start(any(&|_| {})).await.expect("queued");
    assert!(queued.node().is_any(), "unplaced when answered: {queued:?}");
    let mut taken = queued.clone();
    for _ in 0..200 {
        taken = h.engine.get(queued.id()).await.expect("stored");
        if taken.state() == StateName::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        (taken.node(), taken.state()),
        (&node, StateName::Running),
        "{taken:?}"
    );

    let gpu = h
        .engine
        .start(any(&|s| {
            s.node_labels.insert(
                bpm_domain::LabelKey::new("gpu").expect("key"),
                bpm_domain::LabelValue::new("true").expect("value"),
            );
        }))
        .await
        .expect("queued");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        h.engine
            .get(gpu.id())
            .await
            .expect("stored")
            .node()
            .is_any(),
        "no node carries gpu=true"
    );
    let stopped = h
        .engine
        .stop(gpu.id(), StopOptions::default())
        .await
        .expect("stopped");
    assert_eq!(
        (stopped.node(), stopped.state()),
        (&node, StateName::Cancelled)
    );
    assert!(
        stopped.lifecycle().started_at().is_none(),
        "it never ran: {stopped:?}"
    );
}

/// The sweep of a lost node's failover record, on the in-memory adapters:
/// nothing moves before a lease, its grace and the margin have passed
/// since the node's last renewal; then the record is given up, its
/// replacement queued and announced, and this node's claimer takes it and
/// runs it (after the first restart's backoff). A second look replaces
/// nothing more.
#[tokio::test]
async fn a_lost_nodes_failover_record_runs_here_once() {
    use bpm_adapters::memory::{InMemoryClaims, InMemoryFailover, InMemoryMembership};
    use bpm_ports::{Claimant, Clock, Membership};
    let h = harness(Limits::default()).await;
    let here = bpm_domain::NodeId::local();
    let beta = bpm_domain::NodeId::new("beta").expect("a node");
    h.engine.claim_through(
        Arc::new(InMemoryClaims::new(
            Arc::clone(&h.ports.store),
            here.clone(),
        )),
        bpm_domain::cluster::placement::NodeLabels::new(),
    );
    let membership = Arc::new(InMemoryMembership::new(h.clock.clone()));
    let claimant = |node: &bpm_domain::NodeId| Claimant {
        node: node.clone(),
        host: "host".into(),
        pid: 1,
        version: "test".into(),
        ttl: Span::from_secs(2),
        slots: 4,
        labels: bpm_domain::cluster::placement::NodeLabels::new(),
        boot: String::new(),
        replaces: None,
    };
    membership.join(&claimant(&beta)).await.expect("beta joins");
    let mut spec = fake(&["forever"]);
    spec.restart.mode = RestartMode::Always;
    spec.failover = true;
    spec.stop.grace = Span::from_secs(1);
    let mut on_beta = ProcessRecord::new(
        ProcessId::from_uuid(uuid::Uuid::now_v7()),
        beta.clone(),
        spec,
        h.clock.now(),
    );
    h.ports.store.create(&on_beta).await.expect("create");
    let created = on_beta.version();
    on_beta
        .apply(bpm_domain::Transition::Start, h.clock.now())
        .expect("start");
    on_beta
        .apply(bpm_domain::Transition::Spawned { pid: 77 }, h.clock.now())
        .expect("spawned");
    h.ports
        .store
        .update(&on_beta, created)
        .await
        .expect("update");
    let timing =
        bpm_domain::ClusterTiming::new(Span::from_secs(2), Span::from_secs(60)).expect("timing");
    let failover = Arc::new(InMemoryFailover::new(
        Arc::clone(&membership),
        Arc::clone(&h.ports.store),
    ));
    let sweeper = h.engine.sweeper(membership.clone(), timing, failover);

    // Lost (2 s) but not due (2 s + 1 s grace + 2 s margin): only unreachable.
    h.advance(Duration::from_millis(4_900)).await;
    let swept = sweeper.look().await.expect("look");
    assert!(swept.iter().all(|s| s.sweep.is_some()), "{swept:?}");
    assert_eq!(h.state(on_beta.id()).await, StateName::Unreachable);

    h.advance(Duration::from_millis(200)).await;
    let swept = sweeper.look().await.expect("look");
    assert_eq!(
        swept.iter().find(|s| s.sweep.is_none()).map(|s| s.records),
        Some(1),
        "{swept:?}"
    );
    let given_up = h.engine.get(on_beta.id()).await.expect("stored");
    assert_eq!(given_up.state(), StateName::Lost);
    let replacement = h
        .engine
        .list(ListFilter::default())
        .await
        .expect("list")
        .into_iter()
        .find(|r| r.restarted_from() == Some(on_beta.id()))
        .expect("a replacement");
    assert_eq!(replacement.restarts(), 1);
    assert!(
        sweeper
            .look()
            .await
            .expect("look")
            .iter()
            .all(|s| s.sweep.is_some())
    );
    // Taken here, and started once its backoff (0.5 s) has passed.
    eventually("the replacement is placed here", || async {
        h.engine
            .get(replacement.id())
            .await
            .is_ok_and(|r| r.node() == &here)
    })
    .await;
    h.advance(Duration::from_secs(1)).await;
    let running = h.until_state(replacement.id(), StateName::Running).await;
    assert_eq!(running.node(), &here);
    let all = h.engine.list(ListFilter::default()).await.expect("list");
    assert_eq!(all.len(), 2, "one replacement: {all:?}");
}

/// A store that grants cluster-wide slots, but whose first answer is lost
/// on the way back (the grant is made all the same).
struct FirstAnswerLost {
    slots: bpm_adapters::memory::InMemoryClaims,
    lost: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl bpm_ports::ClusterSlots for FirstAnswerLost {
    async fn take(
        &self,
        id: ProcessId,
        group: &GroupName,
        limit: usize,
    ) -> Result<bool, StoreError> {
        let granted = self.slots.take(id, group, limit).await?;
        if self.lost.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the answer was lost".into()));
        }
        Ok(granted)
    }
}

/// An ask for a cluster-wide slot that got no answer is asked again, not
/// taken for a refusal: its grant, if made, holds while its record waits,
/// and a record of higher priority asking first would be refused for ever.
#[tokio::test]
async fn a_cluster_slot_ask_without_an_answer_is_asked_again() {
    let agents = GroupName::new("agents").expect("group");
    let mut limits = Limits {
        max_running: 4,
        ..Limits::default()
    };
    limits.cluster_groups.insert(agents.clone(), 1);
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000)));
    let store = Arc::new(InMemoryStore::new());
    let (ports, spawner) = ports_with(&clock, store.clone());
    let slots = FirstAnswerLost {
        slots: bpm_adapters::memory::InMemoryClaims::new(store, bpm_domain::NodeId::local()),
        lost: true.into(),
    };
    let engine = Engine::launch(
        ports.clone(),
        EngineConfig {
            node: None,
            limits,
            slots: Some(Arc::new(slots)),
            ..EngineConfig::default()
        },
    )
    .await
    .expect("engine starts");
    let h = Harness {
        engine,
        clock,
        spawner,
        ports,
    };
    let agent = |priority| {
        let mut spec = fake(&["forever"]);
        spec.group = Some(agents.clone());
        spec.priority = priority;
        spec
    };
    let first = h.engine.start(agent(0)).await.expect("queued");
    let urgent = h.engine.start(agent(5)).await.expect("queued");
    h.until_state(first.id(), StateName::Running).await;
    assert_eq!(
        h.state(urgent.id()).await,
        StateName::Pending,
        "one slot across the cluster"
    );
    h.spawner.exit(first.id(), ExitStatus::Code(0));
    h.until_state(urgent.id(), StateName::Running).await;
}

/// The machine's host, whose file watches cannot be set up (as when the
/// user's inotify watches are used up): failure injection for the record's
/// note of it.
struct WatchesRefused(bpm_adapters::os::OsHost);

#[async_trait::async_trait]
impl bpm_ports::Host for WatchesRefused {
    fn free_ports(&self, ask: bpm_domain::PortAsk) -> Vec<u16> {
        self.0.free_ports(ask)
    }

    fn start_of(&self, pid: u32) -> Option<u64> {
        self.0.start_of(pid)
    }

    async fn until_gone(&self, process: bpm_domain::ProcessRef) {
        self.0.until_gone(process).await;
    }

    fn watch_files(
        &self,
        watch: &bpm_domain::FileWatch,
    ) -> Result<tokio::sync::mpsc::Receiver<()>, bpm_ports::WatchError> {
        Err(bpm_ports::WatchError::Os {
            path: watch.paths[0].clone(),
            reason: "No space left on device (os error 28)".into(),
        })
    }
}

/// Issue 60, item 13: a watch the daemon cannot set up is said on the
/// record (`show` names it), and the process runs on unwatched.
#[tokio::test]
async fn a_watch_that_cannot_be_set_up_is_noted_on_its_record() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000)));
    let (mut ports, _spawner) = ports_with(&clock, Arc::new(InMemoryStore::new()));
    ports.host = Arc::new(WatchesRefused(bpm_adapters::os::OsHost::new()));
    let engine = Engine::launch(ports, EngineConfig::default())
        .await
        .expect("engine starts");
    let dir = std::env::temp_dir();
    let mut spec = fake(&["forever"]);
    spec.watch = Some(Box::new(bpm_domain::FileWatch::new(
        vec![dir.clone()],
        Vec::new(),
        None,
    )));
    let id = engine.start(spec).await.expect("start").id();
    eventually("the record notes its watch's failure", || async {
        engine
            .get(id)
            .await
            .is_ok_and(|r| r.watch_error().is_some_and(|e| e.contains("No space left")))
    })
    .await;
    assert!(
        !engine.get(id).await.expect("record").is_terminal(),
        "it runs on"
    );
}
