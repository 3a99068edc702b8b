//! The manager contract: what every [`ProcessManager`] does, an embedded
//! engine and a client of a daemon alike, with real processes (`sh`,
//! `sleep`, `cat`). A front end written against the port works the same
//! against either, and gets the same error variants.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bpm_domain::{
    CoreError, EventKind, ExitStatus, ListFilter, Percent, ProcessId, ProcessName, ProcessRecord,
    ProcessSpec, RequestRef, SpecError, StateName, StdinMode,
};

use crate::{Cursor, ManagerError, OutputQuery, ProcessManager, SpawnError, StopOptions};

/// A manager under test, and what must live as long as it (a daemon, its
/// home directory). Each case gets a fresh one, holding no records.
pub struct Subject {
    /// The manager.
    pub manager: Arc<dyn ProcessManager>,
    _keep: Box<dyn Any + Send>,
}

impl Subject {
    /// `manager`, keeping `keep` alive as long as the case runs.
    pub fn new(manager: Arc<dyn ProcessManager>, keep: impl Any + Send) -> Self {
        Subject {
            manager,
            _keep: Box::new(keep),
        }
    }
}

const LONG: Duration = Duration::from_secs(20);

fn unknown() -> ProcessId {
    ProcessId::from_uuid(uuid::Uuid::now_v7())
}

fn sh(line: &str) -> ProcessSpec {
    ProcessSpec::shell(line)
}

async fn ended(m: &Arc<dyn ProcessManager>, id: ProcessId) -> ProcessRecord {
    m.wait(id, Some(LONG)).await.expect("the process ends")
}

async fn until_state(
    m: &Arc<dyn ProcessManager>,
    id: ProcessId,
    state: StateName,
) -> ProcessRecord {
    let deadline = Instant::now() + LONG;
    loop {
        let r = m.get(id).await.expect("get");
        if r.state() == state {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{id} is still {} after {LONG:?}, not {state}",
            r.state()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn running(m: &Arc<dyn ProcessManager>, spec: ProcessSpec) -> ProcessRecord {
    let r = m.start(spec).await.expect("start");
    until_state(m, r.id(), StateName::Running).await
}

fn exit_code(r: &ProcessRecord) -> Option<i32> {
    match r.lifecycle().exit() {
        Some(ExitStatus::Code(code)) => Some(code),
        _ => None,
    }
}

/// A started record reads back by id and in the list, and ends with its
/// command's own exit code.
pub async fn a_start_is_listed_and_ends_with_its_own_exit_code(subject: Subject) {
    let m = &subject.manager;
    let r = m.start(sh("exit 3")).await.expect("start");
    assert_eq!(m.get(r.id()).await.expect("get").id(), r.id());
    let listed = m.list(ListFilter::default()).await.expect("list");
    assert_eq!(
        listed.iter().map(ProcessRecord::id).collect::<Vec<_>>(),
        [r.id()]
    );
    let end = ended(m, r.id()).await;
    assert_eq!(end.state(), StateName::Failed);
    assert_eq!(exit_code(&end), Some(3));
    let ok = m.start(sh("true")).await.expect("start");
    let end = ended(m, ok.id()).await;
    assert_eq!(end.state(), StateName::Completed);
    assert_eq!(exit_code(&end), Some(0));
}

/// Every call on an id no record has is `NotFound`, naming the id.
pub async fn every_call_on_an_unknown_id_is_not_found(subject: Subject) {
    let m = &subject.manager;
    let id = unknown();
    let not_found = |what: &str, e: ManagerError| {
        assert!(
            matches!(e, ManagerError::NotFound(x) if x == id),
            "{what}: {e:?}"
        );
    };
    not_found("get", m.get(id).await.expect_err("get"));
    not_found(
        "stop",
        m.stop(id, StopOptions::default()).await.expect_err("stop"),
    );
    not_found("pause", m.pause(id).await.expect_err("pause"));
    not_found("resume", m.resume(id).await.expect_err("resume"));
    not_found("restart", m.restart(id).await.expect_err("restart"));
    not_found("remove", m.remove(id).await.expect_err("remove"));
    not_found(
        "wait",
        m.wait(id, Some(Duration::from_millis(10)))
            .await
            .expect_err("wait"),
    );
    not_found(
        "wait_many",
        m.wait_many(&[id], Some(Duration::from_millis(10)))
            .await
            .expect_err("wait_many"),
    );
    not_found(
        "read_output",
        m.read_output(id, OutputQuery::default())
            .await
            .expect_err("read"),
    );
    not_found(
        "wait_output",
        m.wait_output(id, Cursor(0), Duration::from_millis(10))
            .await
            .expect_err("wait_output"),
    );
    not_found(
        "send_input",
        m.send_input(id, b"x".to_vec()).await.expect_err("input"),
    );
    not_found(
        "progress",
        m.progress(id, Percent::new(5).expect("percent"), None)
            .await
            .expect_err("progress"),
    );
    not_found(
        "complete",
        m.complete(id, None).await.expect_err("complete"),
    );
    not_found("fail", m.fail(id, "x".into()).await.expect_err("fail"));
}

/// An invalid spec is `InvalidSpec`, says what is wrong, and creates nothing.
pub async fn an_invalid_spec_is_refused_by_name_and_creates_nothing(subject: Subject) {
    let m = &subject.manager;
    let e = m
        .start(ProcessSpec::argv(Vec::<String>::new()))
        .await
        .expect_err("empty argv");
    assert!(
        matches!(e, ManagerError::InvalidSpec(SpecError::EmptyArgv)),
        "{e:?}"
    );
    let mut zero = sh("true");
    zero.timeout = Some(bpm_domain::Span::from_millis(0));
    let e = m.start(zero).await.expect_err("zero timeout");
    assert!(
        matches!(e, ManagerError::InvalidSpec(SpecError::ZeroTimeout)),
        "{e:?}"
    );
    assert!(e.to_string().contains("timeout"), "{e}");
    let e = m
        .track(sh("true"))
        .await
        .expect_err("tracked with a command");
    assert!(
        matches!(e, ManagerError::InvalidSpec(SpecError::TrackedWithCommand)),
        "{e:?}"
    );
    assert!(
        m.list(ListFilter::default())
            .await
            .expect("list")
            .is_empty()
    );
}

/// An unknown dependency or parent is `Refused`, naming it, and creates nothing.
pub async fn an_unknown_dependency_or_parent_is_refused(subject: Subject) {
    let m = &subject.manager;
    let missing = unknown();
    let mut spec = sh("true");
    spec.dependencies = vec![missing];
    let e = m.start(spec).await.expect_err("unknown dependency");
    assert!(
        matches!(e, ManagerError::Refused(CoreError::UnknownDependency(x)) if x == missing),
        "{e:?}"
    );
    let mut spec = sh("true");
    spec.parent = Some(missing);
    let e = m.start(spec).await.expect_err("unknown parent");
    assert!(
        matches!(e, ManagerError::Refused(CoreError::ParentNotFound(x)) if x == missing),
        "{e:?}"
    );
    assert!(
        m.list(ListFilter::default())
            .await
            .expect("list")
            .is_empty()
    );
}

/// A batch answers one result per spec, in order; a refused spec does not
/// stop the others.
pub async fn a_batch_answers_each_spec_in_order(subject: Subject) {
    let m = &subject.manager;
    let specs = vec![
        sh("exit 0"),
        ProcessSpec::argv(Vec::<String>::new()),
        sh("exit 4"),
    ];
    let answers = m.start_many(specs.clone()).await.expect("batch");
    assert_eq!(answers.len(), 3);
    assert!(matches!(
        answers[1],
        Err(ManagerError::InvalidSpec(SpecError::EmptyArgv))
    ));
    let first = answers[0].as_ref().expect("first").id();
    let third = answers[2].as_ref().expect("third").id();
    assert_eq!(exit_code(&ended(m, first).await), Some(0));
    assert_eq!(exit_code(&ended(m, third).await), Some(4));
    let ids = m.start_many_ids(specs).await.expect("batch of ids");
    assert!(ids[0].is_ok() && ids[2].is_ok(), "{ids:?}");
    assert!(matches!(ids[1], Err(ManagerError::InvalidSpec(_))));
    assert_eq!(m.list(ListFilter::default()).await.expect("list").len(), 4);
}

/// The records a request made are found by its id, whichever way they came.
pub async fn a_requests_records_are_found_by_its_id(subject: Subject) {
    let m = &subject.manager;
    let request = uuid::Uuid::now_v7();
    let tagged = |line: &str, index| {
        let mut spec = sh(line);
        spec.request = Some(RequestRef { id: request, index });
        spec
    };
    let one = m.start(tagged("true", 0)).await.expect("start");
    let many = m
        .start_many_ids(vec![tagged("true", 1), tagged("true", 2)])
        .await
        .expect("batch");
    m.start(sh("true")).await.expect("another request");
    let filter = ListFilter {
        request: Some(request),
        ..ListFilter::default()
    };
    let found: Vec<ProcessId> = m
        .list(filter)
        .await
        .expect("list")
        .iter()
        .map(ProcessRecord::id)
        .collect();
    let mut made = vec![one.id()];
    made.extend(many.into_iter().map(|r| r.expect("started")));
    made.sort();
    assert_eq!(found, made);
}

/// `wait` gives up at its timeout with `WaitTimeout`, naming the live
/// record and its state; `wait_many` names one still unfinished.
pub async fn a_wait_that_runs_out_of_time_says_what_is_still_live(subject: Subject) {
    let m = &subject.manager;
    let r = running(m, sh("sleep 30")).await;
    let done = m.start(sh("true")).await.expect("start");
    ended(m, done.id()).await;
    let e = m
        .wait(r.id(), Some(Duration::from_millis(100)))
        .await
        .expect_err("still running");
    assert!(
        matches!(e, ManagerError::WaitTimeout { id, state: StateName::Running } if id == r.id()),
        "{e:?}"
    );
    let e = m
        .wait_many(&[done.id(), r.id()], Some(Duration::from_millis(100)))
        .await
        .expect_err("one still running");
    assert!(
        matches!(e, ManagerError::WaitTimeout { id, .. } if id == r.id()),
        "{e:?}"
    );
    m.stop(r.id(), StopOptions::force()).await.expect("stop");
    m.wait_many(&[done.id(), r.id()], Some(LONG))
        .await
        .expect("both ended");
}

/// `stop` returns once the whole tree is gone, with the final state; a
/// finished record is returned unchanged.
pub async fn a_stop_ends_the_whole_tree_before_it_returns(subject: Subject) {
    let m = &subject.manager;
    let mut spec = sh("trap '' TERM; sleep 30 & sleep 30 & wait");
    spec.stop.grace = bpm_domain::Span::from_millis(200);
    let r = running(m, spec).await;
    let pid = r.pid().expect("pid");
    let stopped = m.stop(r.id(), StopOptions::default()).await.expect("stop");
    assert_eq!(stopped.state(), StateName::Cancelled);
    // The process group is gone: no member of the tree is left to signal.
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the tree's leader {pid} outlived the stop"
    );
    let again = m.stop(r.id(), StopOptions::default()).await.expect("again");
    assert_eq!(again.state(), StateName::Cancelled);
    assert_eq!(again.version(), stopped.version());
}

/// `stop_level` stops every live record at a depth, with its descendants,
/// and answers them all, ended.
pub async fn stopping_a_level_stops_every_record_on_it(subject: Subject) {
    let m = &subject.manager;
    let a = running(m, sh("sleep 30")).await;
    let b = running(m, sh("sleep 30")).await;
    let mut child = sh("sleep 30");
    child.parent = Some(a.id());
    let c = running(m, child).await;
    let stopped = m
        .stop_level(0, StopOptions::force())
        .await
        .expect("stop level");
    let mut ids: Vec<_> = stopped.iter().map(ProcessRecord::id).collect();
    ids.sort();
    let mut all = vec![a.id(), b.id(), c.id()];
    all.sort();
    assert_eq!(ids, all);
    assert!(
        stopped.iter().all(ProcessRecord::is_terminal),
        "{stopped:?}"
    );
    for id in all {
        assert!(m.get(id).await.expect("get").is_terminal(), "{id}");
    }
}

/// Pause and resume move a running process and refuse the wrong moves as
/// `InvalidTransition`.
pub async fn pause_and_resume_refuse_the_wrong_moves(subject: Subject) {
    let m = &subject.manager;
    let r = running(m, sh("sleep 30")).await;
    let e = m.resume(r.id()).await.expect_err("resume a running one");
    assert!(
        matches!(&e, ManagerError::InvalidTransition(t) if t.from == StateName::Running),
        "{e:?}"
    );
    assert_eq!(
        m.pause(r.id()).await.expect("pause").state(),
        StateName::Paused
    );
    let e = m.pause(r.id()).await.expect_err("pause a paused one");
    assert!(matches!(e, ManagerError::InvalidTransition(_)), "{e:?}");
    assert_eq!(
        m.resume(r.id()).await.expect("resume").state(),
        StateName::Running
    );
    m.stop(r.id(), StopOptions::force()).await.expect("stop");
    let e = m.pause(r.id()).await.expect_err("pause a finished one");
    assert!(matches!(e, ManagerError::InvalidTransition(_)), "{e:?}");
}

/// Output is read from any cursor, and reading consumes nothing.
pub async fn output_reads_the_same_twice(subject: Subject) {
    let m = &subject.manager;
    let r = m
        .start(sh("printf 'one\\ntwo\\n'; printf 'err\\n' >&2"))
        .await
        .expect("start");
    ended(m, r.id()).await;
    let text = |chunk: crate::OutputChunk| {
        chunk
            .pieces
            .into_iter()
            .flat_map(|p| p.data)
            .collect::<Vec<u8>>()
    };
    let first = m
        .read_output(r.id(), OutputQuery::default())
        .await
        .expect("read");
    let next = first.next;
    let first = text(first);
    let again = text(
        m.read_output(r.id(), OutputQuery::default())
            .await
            .expect("again"),
    );
    assert_eq!(first, again);
    let mut sorted = String::from_utf8(first).expect("text");
    assert!(
        sorted.contains("one\ntwo\n") && sorted.contains("err\n"),
        "{sorted}"
    );
    sorted.clear();
    let after = m
        .read_output(
            r.id(),
            OutputQuery {
                cursor: Some(next),
                ..OutputQuery::default()
            },
        )
        .await
        .expect("from the end");
    assert!(after.pieces.is_empty(), "{after:?}");
}

/// A wait for output answers once the process writes past the cursor (the
/// output is there when it does), runs its time when nothing comes, and
/// ends with the process.
pub async fn a_wait_for_output_answers_when_the_process_writes(subject: Subject) {
    let m = &subject.manager;
    let r = running(m, sh("echo first; sleep 1; echo late; exec sleep 30")).await;
    let id = r.id();
    let read_from = async |cursor: Cursor| {
        let query = OutputQuery {
            cursor: Some(cursor),
            ..OutputQuery::default()
        };
        m.read_output(id, query).await.expect("read")
    };
    // Past the first line (it may not be kept yet).
    let mut cursor = Cursor(0);
    let mut seen = Vec::new();
    while !seen.ends_with(b"first\n") {
        m.wait_output(id, cursor, Duration::from_secs(5))
            .await
            .expect("wait");
        let chunk = read_from(cursor).await;
        seen.extend(chunk.pieces.iter().flat_map(|p| p.data.clone()));
        cursor = chunk.next;
        assert!(seen.len() < 64, "{seen:?}");
    }
    // "late" comes a second after: the wait answers with it there.
    let asked = std::time::Instant::now();
    m.wait_output(id, cursor, Duration::from_secs(20))
        .await
        .expect("wait for late");
    let waited = asked.elapsed();
    let chunk = read_from(cursor).await;
    let text: Vec<u8> = chunk.pieces.iter().flat_map(|p| p.data.clone()).collect();
    assert_eq!(text, b"late\n", "answered after {waited:?} with {chunk:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    // Nothing more comes: the wait runs its time.
    let cursor = chunk.next;
    let asked = std::time::Instant::now();
    m.wait_output(id, cursor, Duration::from_millis(400))
        .await
        .expect("quiet wait");
    let waited = asked.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(read_from(cursor).await.pieces.is_empty());
    // A wait under way ends with the process, not at its time.
    let waiting = async {
        let asked = std::time::Instant::now();
        m.wait_output(id, cursor, Duration::from_mins(1))
            .await
            .expect("wait through the stop");
        asked.elapsed()
    };
    let stopping = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        m.stop(id, StopOptions::default()).await.expect("stop")
    };
    let (waited, _) = tokio::join!(waiting, stopping);
    assert!(waited < Duration::from_secs(30), "{waited:?}");
    // An ended record's wait answers at once.
    let asked = std::time::Instant::now();
    m.wait_output(id, cursor, Duration::from_mins(1))
        .await
        .expect("wait on an ended record");
    assert!(asked.elapsed() < Duration::from_secs(5));
}

/// Input reaches a process started with a pipe; input to a finished one is
/// a `Spawner` error.
pub async fn input_reaches_a_process_with_a_pipe(subject: Subject) {
    let m = &subject.manager;
    let mut spec = sh("head -n 1");
    spec.stdin = StdinMode::Pipe;
    let r = running(m, spec).await;
    m.send_input(r.id(), b"hello\n".to_vec())
        .await
        .expect("input");
    let end = ended(m, r.id()).await;
    assert_eq!(exit_code(&end), Some(0));
    let out = m
        .read_output(r.id(), OutputQuery::default())
        .await
        .expect("read");
    let data: Vec<u8> = out.pieces.into_iter().flat_map(|p| p.data).collect();
    assert_eq!(data, b"hello\n");
    let e = m
        .send_input(r.id(), b"late\n".to_vec())
        .await
        .expect_err("finished");
    assert!(
        matches!(e, ManagerError::Spawner(SpawnError::NoSuchProcess(_))),
        "{e:?}"
    );
}

/// A tracked operation reports progress and ends once; a second end is a
/// no-op, and a process's outcome cannot be set by hand.
pub async fn a_tracked_operation_ends_once(subject: Subject) {
    let m = &subject.manager;
    let op = m
        .track(ProcessSpec::tracked(
            ProcessName::new("migration").expect("name"),
        ))
        .await
        .expect("track");
    assert_eq!(op.state(), StateName::Running);
    let r = m
        .progress(
            op.id(),
            Percent::new(40).expect("percent"),
            Some("half".into()),
        )
        .await
        .expect("progress");
    assert_eq!(r.progress().map(|p| p.percent.get()), Some(40));
    let done = m
        .complete(op.id(), Some(serde_json::json!({"rows": 7})))
        .await
        .expect("complete");
    assert!(!done.no_op);
    assert_eq!(done.record.state(), StateName::Completed);
    let again = m.complete(op.id(), None).await.expect("again");
    assert!(again.no_op);
    assert!(m.fail(op.id(), "late".into()).await.expect("fail").no_op);
    let e = m
        .progress(op.id(), Percent::new(50).expect("percent"), None)
        .await
        .expect_err("finished");
    assert!(matches!(e, ManagerError::InvalidTransition(_)), "{e:?}");
    let p = running(m, sh("sleep 30")).await;
    let e = m.complete(p.id(), None).await.expect_err("a process");
    assert!(matches!(e, ManagerError::InvalidTransition(_)), "{e:?}");
    m.stop(p.id(), StopOptions::force()).await.expect("stop");
}

/// `remove` refuses a live record and deletes a finished one.
pub async fn remove_refuses_a_live_record(subject: Subject) {
    let m = &subject.manager;
    let r = running(m, sh("sleep 30")).await;
    let e = m.remove(r.id()).await.expect_err("live");
    assert!(
        matches!(e, ManagerError::Refused(CoreError::NotFinished { id, .. }) if id == r.id()),
        "{e:?}"
    );
    m.stop(r.id(), StopOptions::force()).await.expect("stop");
    m.remove(r.id()).await.expect("remove");
    assert!(matches!(
        m.get(r.id()).await,
        Err(ManagerError::NotFound(_))
    ));
}

/// `restart` makes a new record that points back; it starts once the old
/// one has ended.
pub async fn a_restart_is_a_new_record_that_points_back(subject: Subject) {
    let m = &subject.manager;
    let old = running(m, sh("sleep 30")).await;
    let new = m.restart(old.id()).await.expect("restart");
    assert_ne!(new.id(), old.id());
    assert_eq!(new.restarted_from(), Some(old.id()));
    assert_eq!(new.spec().command, old.spec().command);
    let running_again = until_state(m, new.id(), StateName::Running).await;
    let old = m.get(old.id()).await.expect("get");
    assert_eq!(old.state(), StateName::Cancelled);
    let (ended_at, started_at) = (
        old.lifecycle().ended_at(),
        running_again.lifecycle().started_at(),
    );
    assert!(ended_at <= started_at, "{ended_at:?} then {started_at:?}");
    m.stop(new.id(), StopOptions::force()).await.expect("stop");
}

/// A subscriber sees every event of a record started after it subscribed,
/// from creation to its end.
pub async fn a_subscriber_sees_a_process_from_start_to_end(subject: Subject) {
    let m = &subject.manager;
    let mut events = m.subscribe();
    let r = m.start(sh("exit 0")).await.expect("start");
    let mut kinds = Vec::new();
    let deadline = Instant::now() + LONG;
    while !kinds.contains(&EventKind::Completed) {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no end within {LONG:?}; saw {kinds:?}"))
            .expect("an event");
        if event.id == r.id() {
            kinds.push(event.kind);
        }
    }
    assert_eq!(kinds.first(), Some(&EventKind::Submitted), "{kinds:?}");
    assert!(kinds.contains(&EventKind::Started), "{kinds:?}");
}

/// The latest events hold a finished record's past, in order; a
/// subscription taken once they hold its end receives only what is new.
pub async fn recent_events_hold_the_past_in_order(subject: Subject) {
    let m = &subject.manager;
    let r = m.start(sh("exit 0")).await.expect("start");
    ended(m, r.id()).await;
    // The end is announced once its write is on disk, which may come just
    // after `wait` saw the ended record in the store.
    let deadline = Instant::now() + LONG;
    let kinds = loop {
        let kinds: Vec<EventKind> = m
            .recent_events()
            .await
            .expect("recent")
            .into_iter()
            .filter(|e| e.id == r.id())
            .map(|e| e.kind)
            .collect();
        if kinds.contains(&EventKind::Completed) || Instant::now() > deadline {
            break kinds;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(kinds.first(), Some(&EventKind::Submitted), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&EventKind::Completed), "{kinds:?}");
    let started = kinds.iter().position(|k| *k == EventKind::Started);
    assert!(started.is_some_and(|i| i > 0), "{kinds:?}");
    // Taken once the past holds the end: what comes next is new.
    let mut live = m.subscribe();
    let next = m.start(sh("exit 0")).await.expect("start");
    let first = tokio::time::timeout(LONG, live.recv())
        .await
        .expect("an event in time")
        .expect("an event");
    assert_eq!((first.id, first.kind), (next.id(), EventKind::Submitted));
    ended(m, next.id()).await;
}

/// The usage of a running tree is listed under its record.
pub async fn resource_usage_lists_running_trees(subject: Subject) {
    let m = &subject.manager;
    let r = running(m, sh("sleep 30")).await;
    let deadline = Instant::now() + LONG;
    loop {
        let usage = m.resource_usage().await.expect("usage");
        if let Some(u) = usage.iter().find(|u| u.id == r.id()) {
            assert!(u.rss_bytes > 0, "{u:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no usage for {}", r.id());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    m.stop(r.id(), StopOptions::force()).await.expect("stop");
    let usage = m.resource_usage().await.expect("usage");
    assert!(usage.iter().all(|u| u.id != r.id()), "{usage:?}");
}

/// A process's fencing token (`BPM_FENCE`) is current while its attempt
/// runs, and stale for any other number and once the record ended; an
/// unknown record is not found.
pub async fn a_fencing_token_is_current_while_its_attempt_runs(subject: Subject) {
    let m = &subject.manager;
    let mut spec = sh("echo \"token $BPM_FENCE\"; exec sleep 30");
    spec.stop.grace = bpm_domain::Span::from_millis(200);
    let r = running(m, spec).await;
    let deadline = Instant::now() + LONG;
    loop {
        let chunk = m
            .read_output(r.id(), OutputQuery::default())
            .await
            .expect("read");
        let text: Vec<u8> = chunk.pieces.into_iter().flat_map(|p| p.data).collect();
        if text == b"token 1\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{:?}",
            String::from_utf8_lossy(&text)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(r.fence_token(), 1);
    assert_eq!(m.check_fence(r.id(), 1).await, Ok(None));
    let other = m.check_fence(r.id(), 2).await.expect("check");
    assert!(other.is_some_and(|why| why.contains("stale")));
    m.stop(r.id(), StopOptions::default()).await.expect("stop");
    let ended = m.check_fence(r.id(), 1).await.expect("check");
    assert!(ended.is_some_and(|why| why.contains("has ended")));
    let id = unknown();
    assert_eq!(m.check_fence(id, 1).await, Err(ManagerError::NotFound(id)));
}

/// A port asked for goes to one live record, given to its process as
/// `PORT`; a fixed port held is refused naming the holder.
pub async fn a_port_goes_to_one_live_record(subject: Subject) {
    let m = &subject.manager;
    let mut spec = sh("echo \"port $PORT $BPM_PORT\"; exec sleep 30");
    spec.port = Some(bpm_domain::PortAsk::Auto);
    spec.stop.grace = bpm_domain::Span::from_millis(200);
    let r = running(m, spec).await;
    let port = r.port().expect("a port");
    let deadline = Instant::now() + LONG;
    loop {
        let chunk = m
            .read_output(r.id(), OutputQuery::default())
            .await
            .expect("read");
        let text: Vec<u8> = chunk.pieces.into_iter().flat_map(|p| p.data).collect();
        if text == format!("port {port} {port}\n").as_bytes() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{:?}",
            String::from_utf8_lossy(&text)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = sh("true");
    again.port = Some(bpm_domain::PortAsk::Fixed(port));
    match m.start(again).await {
        Err(ManagerError::Refused(CoreError::Port(bpm_domain::PortRefused::Held {
            port: p,
            holder,
        }))) => assert!(
            p == port && holder.contains(&r.id().to_string()),
            "{holder}"
        ),
        other => panic!("a held port was not refused: {other:?}"),
    }
    m.stop(r.id(), StopOptions::default()).await.expect("stop");
}

/// A record whose owning process ends is stopped once its grace ran out,
/// with the cause `owner gone`; an owner or a session holder that does not
/// run is refused; a session its last holder lets go of (while it lives
/// on) ends its records after their grace.
pub async fn a_record_ends_when_its_owner_is_gone(subject: Subject) {
    let m = &subject.manager;
    let mut owner = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("an owner");
    let mut spec = sh("exec sleep 30");
    spec.owners = vec![format!("pid:{}", owner.id()).parse().expect("owner")];
    spec.owner_grace = Some(bpm_domain::Span::from_millis(100));
    let r = running(m, spec).await;
    owner.kill().expect("kill");
    owner.wait().expect("reaped");
    let r = ended(m, r.id()).await;
    assert_eq!(r.state(), StateName::Cancelled);
    assert_eq!(r.lifecycle().error().as_deref(), Some("owner gone"));
    let mut spec = sh("true");
    spec.owners = vec!["pid:999999999".parse().expect("owner")];
    assert_eq!(
        m.start(spec).await.map(|r| r.id()),
        Err(ManagerError::InvalidSpec(SpecError::OwnerNotRunning(
            999_999_999
        )))
    );
    let session: bpm_domain::SessionId = "holder".parse().expect("session");
    m.hold_session(session.clone(), std::process::id())
        .await
        .expect("held");
    assert_eq!(
        m.hold_session(session.clone(), 999_999_999).await,
        Err(ManagerError::InvalidSpec(SpecError::OwnerNotRunning(
            999_999_999
        )))
    );
    let mut spec = sh("exec sleep 30");
    spec.owners = vec![bpm_domain::Owner::Session(session.clone())];
    spec.owner_grace = Some(bpm_domain::Span::from_millis(100));
    let r = running(m, spec).await;
    m.release_session(session.clone(), std::process::id())
        .await
        .expect("let go");
    let r = ended(m, r.id()).await;
    assert_eq!(r.lifecycle().error().as_deref(), Some("owner gone"));
    m.release_session(session, std::process::id())
        .await
        .expect("letting go twice is no error");
}
