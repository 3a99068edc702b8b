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

mod cluster;
mod restarts;

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

fn fresh(n: u128) -> ProcessId {
    ProcessId::from_uuid(uuid::Uuid::from_u128(n))
}
