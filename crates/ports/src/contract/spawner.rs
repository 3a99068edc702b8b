//! The spawner contract: what every [`ProcessSpawner`] must do.
//!
//! A spawner runs programs, so each adapter supplies a [`SpawnerHarness`]
//! that says how to express the behaviours the cases need (exit with a code,
//! sleep, ignore TERM, print) in programs it can run.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bpm_domain::{ExitStatus, NodeId, ProcessId, ReadinessCheck, Signal, StdinMode};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::{OutputQuery, OutputStore, ProcessNotice, ProcessSpawner, SpawnError, SpawnRequest};

/// How an adapter's tests give the contract a spawner and programs to run.
pub trait SpawnerHarness: Send + Sync + 'static {
    /// The spawner under test (fresh for each case).
    fn spawner(&self) -> Arc<dyn ProcessSpawner>;
    /// Where the spawner captures output.
    fn output(&self) -> Arc<dyn OutputStore>;
    /// A program that exits with `code` at once.
    fn exit_with(&self, code: i32) -> Vec<String>;
    /// A program that runs for `secs` seconds, dying on TERM.
    fn sleep(&self, secs: u32) -> Vec<String>;
    /// A program that ignores TERM and runs for `secs` seconds.
    fn ignore_term_and_sleep(&self, secs: u32) -> Vec<String>;
    /// A program that writes `out` to stdout, then `err` to stderr, then exits 0.
    fn print(&self, out: &str, err: &str) -> Vec<String>;
    /// A program name that does not exist.
    fn missing_program(&self) -> Vec<String>;
}

fn request(argv: Vec<String>) -> SpawnRequest {
    SpawnRequest {
        id: ProcessId::from_uuid(uuid::Uuid::now_v7()),
        node: NodeId::local(),
        session: None,
        argv: argv.into_iter().map(Into::into).collect(),
        cwd: None,
        env: std::sync::Arc::default(),
        env_files: Vec::new(),
        stdin: StdinMode::Closed,
        readiness: ReadinessCheck::None,
        idle_after: None,
        hands_over: true,
        stand_down: None,
        token: 0,
        leader_only: false,
        port: None,
        health: None,
        limits: None,
        tty: None,
        ready_pace: None,
        log_archive: None,
    }
}

/// How `id` exited, which must be a plain exit (nothing started in its place).
async fn exit_of(notices: &mut UnboundedReceiver<ProcessNotice>, id: ProcessId) -> ExitStatus {
    match end_of(notices, id).await {
        ProcessNotice::Exited { status, .. } => status,
        other => panic!("{id} ended with {other:?}, not a plain exit"),
    }
}

fn notices(spawner: &Arc<dyn ProcessSpawner>) -> UnboundedReceiver<ProcessNotice> {
    spawner
        .notices()
        .expect("the first call to notices() returns the stream")
}

/// Exit codes are reported exactly, 0 included.
pub async fn reports_exit_codes(h: Arc<dyn SpawnerHarness>) {
    let spawner = h.spawner();
    let mut rx = notices(&spawner);
    assert!(
        spawner.notices().is_none(),
        "notices() must hand out its stream once"
    );
    for code in [0, 3, 255] {
        let req = request(h.exit_with(code));
        let id = req.id;
        spawner.spawn(req).await.expect("spawn");
        assert_eq!(exit_of(&mut rx, id).await, ExitStatus::Code(code));
    }
}

/// A process killed by a signal is reported with the signal, not a code.
pub async fn reports_death_by_signal(h: Arc<dyn SpawnerHarness>) {
    let spawner = h.spawner();
    let mut rx = notices(&spawner);
    let req = request(h.sleep(30));
    let id = req.id;
    let pid = spawner.spawn(req).await.expect("spawn").pid;
    spawner.signal(id, pid, Signal::Term).await.expect("signal");
    assert_eq!(exit_of(&mut rx, id).await, ExitStatus::Signal(15));
}

/// A process that ignores TERM survives it, and KILL ends it.
pub async fn kill_ends_what_ignores_term(h: Arc<dyn SpawnerHarness>) {
    let spawner = h.spawner();
    let mut rx = notices(&spawner);
    let req = request(h.ignore_term_and_sleep(30));
    let id = req.id;
    let pid = spawner.spawn(req).await.expect("spawn").pid;
    // Give the program time to install its handler before TERM arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    spawner.signal(id, pid, Signal::Term).await.expect("signal");
    let early = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
    assert!(
        early.is_err(),
        "a TERM-ignoring process exited on TERM: {early:?}"
    );
    spawner.signal(id, pid, Signal::Kill).await.expect("signal");
    assert_eq!(exit_of(&mut rx, id).await, ExitStatus::Signal(9));
}

/// A program that does not exist is refused as such.
pub async fn missing_program_is_program_not_found(h: Arc<dyn SpawnerHarness>) {
    let spawner = h.spawner();
    let argv = h.missing_program();
    let err = spawner
        .spawn(request(argv.clone()))
        .await
        .expect_err("must not spawn");
    assert_eq!(err, SpawnError::ProgramNotFound(argv[0].clone().into()));
}

/// A working directory that does not exist is refused as such.
pub async fn missing_cwd_is_cwd_not_found(h: Arc<dyn SpawnerHarness>) {
    let spawner = h.spawner();
    let mut req = request(h.exit_with(0));
    let cwd = PathBuf::from("/nonexistent/bpm-contract-dir");
    req.cwd = Some(cwd.clone());
    assert_eq!(spawner.spawn(req).await, Err(SpawnError::CwdNotFound(cwd)));
    // A file where the directory should be is named as such.
    let file = std::env::current_exe().expect("this test's own file");
    let mut req = request(h.exit_with(0));
    req.cwd = Some(file.clone());
    assert_eq!(
        spawner.spawn(req).await,
        Err(SpawnError::CwdNotADirectory(file))
    );
}

/// An environment file that cannot be read is refused by name, and
/// nothing starts.
pub async fn unreadable_env_file_is_refused(h: Arc<dyn SpawnerHarness>) {
    let spawner = h.spawner();
    let mut req = request(h.exit_with(0));
    let missing = PathBuf::from("/nonexistent/bpm-contract.env");
    req.env_files = vec![missing.clone()];
    match spawner.spawn(req).await {
        Err(SpawnError::EnvFile { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected an env file error, got {other:?}"),
    }
}

/// Signalling a process that has exited is not an error.
pub async fn signal_after_exit_is_ok(h: Arc<dyn SpawnerHarness>) {
    let spawner = h.spawner();
    let mut rx = notices(&spawner);
    let req = request(h.exit_with(0));
    let id = req.id;
    let pid = spawner.spawn(req).await.expect("spawn").pid;
    exit_of(&mut rx, id).await;
    spawner
        .signal(id, pid, Signal::Term)
        .await
        .expect("signal after exit");
    spawner
        .signal(id, pid, Signal::Kill)
        .await
        .expect("signal after exit");
}

/// Both streams are captured, each to its own stream, before the exit is reported.
pub async fn captures_both_streams(h: Arc<dyn SpawnerHarness>) {
    let spawner = h.spawner();
    let mut rx = notices(&spawner);
    let req = request(h.print("to stdout", "to stderr"));
    let id = req.id;
    spawner.spawn(req).await.expect("spawn");
    assert_eq!(exit_of(&mut rx, id).await, ExitStatus::Code(0));
    let out = h.output();
    let read = |stream| OutputQuery {
        stream,
        ..OutputQuery::default()
    };
    let stdout = out
        .read(id, &read(crate::StreamSelect::Stdout))
        .await
        .expect("read");
    let stderr = out
        .read(id, &read(crate::StreamSelect::Stderr))
        .await
        .expect("read");
    assert_eq!(stdout.text().trim_end(), "to stdout");
    assert_eq!(stderr.text().trim_end(), "to stderr");
}

/// Processes started together get distinct pids and each its own exit.
pub async fn concurrent_spawns_get_distinct_pids(h: Arc<dyn SpawnerHarness>) {
    let spawner = h.spawner();
    let mut rx = notices(&spawner);
    let mut ids = BTreeSet::new();
    let mut pids = BTreeSet::new();
    for code in 0..10 {
        let req = request(h.exit_with(code));
        ids.insert(req.id);
        pids.insert(spawner.spawn(req).await.expect("spawn").pid);
    }
    assert_eq!(pids.len(), 10);
    let mut exited = BTreeSet::new();
    while exited.len() < 10 {
        let n = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("exits")
            .expect("open");
        if let ProcessNotice::Exited { id, .. } = n {
            assert!(ids.contains(&id), "exit of an unknown id {id}");
            assert!(exited.insert(id), "two exits for {id}");
        }
    }
}

/// Input to a process the spawner does not run is refused with its id.
pub async fn input_to_unknown_process_is_refused(h: Arc<dyn SpawnerHarness>) {
    let spawner = h.spawner();
    let id = ProcessId::from_uuid(uuid::Uuid::from_u128(12345));
    assert_eq!(
        spawner.write_input(id, b"x".to_vec()).await,
        Err(SpawnError::NoSuchProcess(id))
    );
}

/// The next notice about `id`: its exit, or its exit with a start in its place.
async fn end_of(notices: &mut UnboundedReceiver<ProcessNotice>, id: ProcessId) -> ProcessNotice {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let notice = tokio::time::timeout_at(deadline, notices.recv())
            .await
            .unwrap_or_else(|_| panic!("no exit notice for {id} within 20 s"))
            .expect("notice stream open");
        match &notice {
            ProcessNotice::Exited { id: got, .. } | ProcessNotice::HandedOver { id: got, .. }
                if *got == id =>
            {
                return notice;
            }
            _ => {}
        }
    }
}

// The processes of this case are named a, b, c... in the order they run.
#[allow(clippy::many_single_char_names)]
/// Requests handed over start one on each exit of a process that hands
/// over, in order, each reported with the exit it followed; a spawn of one
/// that runs already answers with its process; what is left can be taken back.
pub async fn handed_over_requests_start_on_exits_in_order(h: Arc<dyn SpawnerHarness>) {
    let spawner = h.spawner();
    let mut rx = notices(&spawner);
    let first = request(h.sleep(30));
    let (a, a_pid) = (first.id, spawner.spawn(first).await.expect("spawn").pid);
    let (b, c, d) = (
        request(h.sleep(30)),
        request(h.exit_with(4)),
        request(h.exit_with(0)),
    );
    let (b_id, c_id, d_id) = (b.id, c.id, d.id);
    spawner.hand_over(vec![b, c]).await.expect("hand over");
    if !spawner.hands_over() {
        // A spawner that does not do this queues nothing, and its exits are plain.
        assert_eq!(
            spawner.withdraw().await.expect("withdraw"),
            Vec::<ProcessId>::new()
        );
        spawner
            .signal(a, a_pid, Signal::Term)
            .await
            .expect("signal");
        assert_eq!(exit_of(&mut rx, a).await, ExitStatus::Signal(15));
        return;
    }
    spawner
        .signal(a, a_pid, Signal::Term)
        .await
        .expect("signal");
    let ProcessNotice::HandedOver {
        status,
        next,
        started,
        ..
    } = end_of(&mut rx, a).await
    else {
        panic!("the exit of {a} started nothing in its place");
    };
    assert_eq!((status, next), (ExitStatus::Signal(15), b_id));
    let b_pid = started.expect("the first request handed over started");
    // Asked to spawn what it runs already, it answers with that process.
    let mut again = request(h.sleep(30));
    again.id = b_id;
    assert_eq!(spawner.spawn(again).await.expect("spawn").pid, b_pid);
    spawner
        .signal(b_id, b_pid, Signal::Term)
        .await
        .expect("signal");
    let ProcessNotice::HandedOver { next, started, .. } = end_of(&mut rx, b_id).await else {
        panic!("the exit of {b_id} started nothing in its place");
    };
    assert_eq!(next, c_id);
    assert!(started.is_ok(), "{started:?}");
    // The queue is empty now: the last one's exit is plain.
    assert_eq!(exit_of(&mut rx, c_id).await, ExitStatus::Code(4));
    // What was not started yet is taken back, and then not started.
    spawner.hand_over(vec![d]).await.expect("hand over");
    assert_eq!(spawner.withdraw().await.expect("withdraw"), vec![d_id]);
    let e = request(h.exit_with(0));
    let e_id = e.id;
    spawner.spawn(e).await.expect("spawn");
    assert_eq!(exit_of(&mut rx, e_id).await, ExitStatus::Code(0));
}

/// A process that does not hand over (it may be restarted) starts nothing
/// when it exits, and a request that is spawned leaves the queue.
pub async fn only_processes_that_hand_over_start_the_next(h: Arc<dyn SpawnerHarness>) {
    let spawner = h.spawner();
    let mut rx = notices(&spawner);
    let mut keeps = request(h.exit_with(0));
    keeps.hands_over = false;
    let keeps_id = keeps.id;
    let (b, c) = (request(h.sleep(30)), request(h.exit_with(0)));
    let (b_id, c_id) = (b.id, c.id);
    if !spawner.hands_over() {
        return;
    }
    spawner
        .hand_over(vec![b.clone(), c])
        .await
        .expect("hand over");
    spawner.spawn(keeps).await.expect("spawn");
    assert_eq!(exit_of(&mut rx, keeps_id).await, ExitStatus::Code(0));
    let b_pid = spawner.spawn(b).await.expect("spawn").pid;
    assert_eq!(spawner.withdraw().await.expect("withdraw"), vec![c_id]);
    spawner
        .signal(b_id, b_pid, Signal::Term)
        .await
        .expect("signal");
    assert!(matches!(
        end_of(&mut rx, b_id).await,
        ProcessNotice::Exited { .. }
    ));
}

/// A request started on an exit may have run and ended before the manager
/// hears of the start: until the manager has recorded its exit, a spawn of
/// it answers with the process that ran, and runs nothing again.
pub async fn a_start_on_an_exit_is_not_made_twice(h: Arc<dyn SpawnerHarness>) {
    let spawner = h.spawner();
    if !spawner.hands_over() {
        return;
    }
    let mut rx = notices(&spawner);
    let (_, next, pid) = started_on_an_exit(&*h, &spawner, &mut rx).await;
    let next_id = next.id;
    // The manager, not yet aware of the start, asks for it.
    assert_eq!(spawner.spawn(next).await.expect("spawn").pid, pid);
    runs_no_more(&mut rx, next_id).await;
    spawner.exit_recorded(next_id);
}

/// Starts a process, hands over one that exits with 3 at once, and ends the
/// first: returns the first's id, the request started in its place, and
/// that start's pid, once it has ended too.
async fn started_on_an_exit(
    h: &dyn SpawnerHarness,
    spawner: &Arc<dyn ProcessSpawner>,
    rx: &mut UnboundedReceiver<ProcessNotice>,
) -> (ProcessId, SpawnRequest, u32) {
    let first = request(h.sleep(30));
    let (a, a_pid) = (first.id, spawner.spawn(first).await.expect("spawn").pid);
    let next = request(h.exit_with(3));
    spawner
        .hand_over(vec![next.clone()])
        .await
        .expect("hand over");
    spawner
        .signal(a, a_pid, Signal::Term)
        .await
        .expect("signal");
    let ProcessNotice::HandedOver { started, .. } = end_of(rx, a).await else {
        panic!("the exit of {a} started nothing in its place");
    };
    let pid = started.expect("started");
    assert_eq!(exit_of(rx, next.id).await, ExitStatus::Code(3));
    (a, next, pid)
}

/// Checks that `id` reports no second end within half a second.
async fn runs_no_more(rx: &mut UnboundedReceiver<ProcessNotice>, id: ProcessId) {
    match tokio::time::timeout(Duration::from_millis(500), end_of(rx, id)).await {
        Err(_) => {}
        Ok(again) => panic!("{id} ran again: {again:?}"),
    }
}

/// A manager that restarted before it heard of a start asks for it again:
/// until it has recorded the exit, the spawner answers with the process it
/// started, running or ended, and runs nothing a second time.
pub async fn a_start_asked_again_is_not_made_twice(h: Arc<dyn SpawnerHarness>) {
    let spawner = h.spawner();
    let mut rx = notices(&spawner);
    let long = request(h.sleep(30));
    let long_id = long.id;
    let pid = spawner.spawn(long.clone()).await.expect("spawn").pid;
    assert_eq!(
        spawner.spawn(long).await.expect("again").pid,
        pid,
        "while it runs"
    );
    let short = request(h.exit_with(3));
    let short_id = short.id;
    let short_pid = spawner.spawn(short.clone()).await.expect("spawn").pid;
    assert_eq!(exit_of(&mut rx, short_id).await, ExitStatus::Code(3));
    assert_eq!(
        spawner.spawn(short).await.expect("again").pid,
        short_pid,
        "after it ended, before its exit is recorded"
    );
    runs_no_more(&mut rx, short_id).await;
    spawner.exit_recorded(short_id);
    spawner
        .signal(long_id, pid, Signal::Kill)
        .await
        .expect("signal");
    assert_eq!(exit_of(&mut rx, long_id).await, ExitStatus::Signal(9));
    spawner.exit_recorded(long_id);
}

/// A manager that restarted hands over again a record the spawner started
/// on an exit before it reads that report: the spawner leaves it out, so
/// that once its exit is recorded no later exit starts it a second time.
pub async fn a_start_handed_over_again_is_not_made_twice(h: Arc<dyn SpawnerHarness>) {
    let spawner = h.spawner();
    if !spawner.hands_over() {
        return;
    }
    let mut rx = notices(&spawner);
    let (a, next, _) = started_on_an_exit(&*h, &spawner, &mut rx).await;
    let next_id = next.id;
    // The new manager hands it over again, then records its exit.
    spawner.hand_over(vec![next]).await.expect("hand over");
    spawner.exit_recorded(next_id);
    spawner.exit_recorded(a);
    let second = request(h.sleep(30));
    let (b, b_pid) = (second.id, spawner.spawn(second).await.expect("spawn").pid);
    spawner
        .signal(b, b_pid, Signal::Kill)
        .await
        .expect("signal");
    match end_of(&mut rx, b).await {
        ProcessNotice::Exited { .. } => {}
        other => panic!("the exit of {b} started {next_id} again: {other:?}"),
    }
    spawner.exit_recorded(b);
}

/// Watching again the checks of a process this spawner started itself
/// (not taken over), or of one it never heard of, succeeds and changes
/// nothing: the process runs on, and ends as it would have.
pub async fn watching_again_leaves_what_was_not_taken_over_alone(h: Arc<dyn SpawnerHarness>) {
    let spawner = h.spawner();
    let mut rx = notices(&spawner);
    spawner
        .watch_again(request(h.sleep(30)))
        .await
        .expect("a request for an unknown process is left alone");
    let req = request(h.exit_with(4));
    let id = req.id;
    spawner.spawn(req.clone()).await.expect("spawn");
    spawner.watch_again(req).await.expect("watch again");
    assert_eq!(exit_of(&mut rx, id).await, ExitStatus::Code(4));
}
