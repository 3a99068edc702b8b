//! The keeper keeps each exit until the daemon has recorded it: a daemon
//! that dies holding an exit it has not recorded leaves it to the next one.
//! It says which protocol it speaks first, and a daemon refuses one it does
//! not speak, since a keeper outlives the daemon (and the bpm) that started it.

use std::sync::Arc;
use std::time::Duration;

use bpm_adapters::keeper::{KEEPER_PROTOCOL, KeeperSpawner, serve_keeper, serve_keeper_keeping};
use bpm_adapters::memory::InMemoryOutput;
use bpm_adapters::os::{OsSpawner, OsSpawnerConfig};
use bpm_domain::{ExitStatus, NodeId, ProcessId, ProcessRecord, ProcessSpec, Timestamp};
use bpm_ports::contract::spawner::SpawnerHarness;
use bpm_ports::{ProcessNotice, ProcessSpawner, SpawnRequest};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc::UnboundedReceiver;

/// A real keeper serving on a socket in `dir`.
fn keeper_in(dir: &std::path::Path) -> std::path::PathBuf {
    let socket = dir.join("keeper.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let spawner = Arc::new(OsSpawner::new(
        Arc::new(InMemoryOutput::default()),
        as_the_keeper(),
    ));
    tokio::spawn(serve_keeper(listener, spawner, Duration::from_mins(1)));
    socket
}

/// The spawner's settings as `bpm keeper` has them: it shares each
/// process's pipes with the daemon.
fn as_the_keeper() -> OsSpawnerConfig {
    OsSpawnerConfig {
        share_pipes: true,
        ..OsSpawnerConfig::default()
    }
}

/// The keeper's spawner, as a daemon uses it, against the spawner contract:
/// each case gets its own keeper in its own directory.
mod common;

async fn keeper_harness() -> Arc<dyn SpawnerHarness> {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("keeper.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let output = Arc::new(InMemoryOutput::default());
    let os = Arc::new(OsSpawner::new(output.clone(), as_the_keeper()));
    tokio::spawn(serve_keeper(listener, os, Duration::from_mins(1)));
    let spawner = Arc::new(KeeperSpawner::connect(&socket).await.expect("connect"));
    Arc::new(common::ShHarness {
        spawner,
        output,
        keep: Some(Box::new(dir)),
    })
}

mod keeper_spawner {
    use super::*;
    bpm_ports::spawner_contract_tests!(keeper_harness().await);
}

/// The keeper as the daemon holds it, `LastingKeeper` (which starts a new
/// keeper when its keeper dies), against the same contract: its keepers
/// serve in this process, each on a socket of its own in the case's
/// directory.
async fn lasting_harness() -> Arc<dyn SpawnerHarness> {
    let dir = tempfile::tempdir().expect("dir");
    let output = Arc::new(InMemoryOutput::default());
    let serve = {
        let (dir, output) = (dir.path().to_path_buf(), output.clone());
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        move || {
            let n = started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let socket = dir.join(format!("keeper-{n}.sock"));
            let listener = UnixListener::bind(&socket).expect("bind");
            let os = Arc::new(OsSpawner::new(output.clone(), as_the_keeper()));
            tokio::spawn(serve_keeper(listener, os, Duration::from_mins(1)));
            socket
        }
    };
    let first = KeeperSpawner::connect(&serve()).await.expect("connect");
    let start: bpm_adapters::keeper::StartKeeper = Arc::new(move || {
        let socket = serve();
        Box::pin(async move {
            KeeperSpawner::connect(&socket)
                .await
                .map_err(|e| e.to_string())
        })
    });
    let spawner = bpm_adapters::keeper::LastingKeeper::new(
        first,
        start,
        dir.path().join("starts"),
        Arc::new(|_, _| {}),
        None,
    );
    Arc::new(common::ShHarness {
        spawner,
        output,
        keep: Some(Box::new(dir)),
    })
}

mod lasting_keeper {
    use super::*;
    bpm_ports::spawner_contract_tests!(lasting_harness().await);
}

/// A listener that plays a keeper: it writes `first` (if any) to each
/// connection and then stays silent.
fn impostor(dir: &std::path::Path, first: Option<&'static str>) -> std::path::PathBuf {
    let socket = dir.join("impostor.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            if let Some(line) = first {
                stream.write_all(line.as_bytes()).await.expect("write");
            }
            held.push(stream);
        }
    });
    socket
}

async fn next_exit(
    notices: &mut UnboundedReceiver<ProcessNotice>,
) -> Option<(ProcessId, ExitStatus)> {
    loop {
        match tokio::time::timeout(Duration::from_secs(2), notices.recv()).await {
            Ok(Some(ProcessNotice::Exited {
                id,
                status,
                limit: None,
            })) => return Some((id, status)),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_goes_to_the_next_daemon_until_one_records_it() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = keeper_in(dir.path());

    // The first daemon starts a process and learns of its exit, then dies
    // before recording it.
    let first = KeeperSpawner::connect(&socket).await.expect("connect");
    let mut notices = first.notices().expect("notices");
    let record = ProcessRecord::new(
        ProcessId::from_uuid(uuid::Uuid::now_v7()),
        NodeId::local(),
        ProcessSpec::argv(["sh", "-c", "exit 7"]),
        Timestamp::from_millis(1),
    );
    let request = SpawnRequest::for_record(&record).expect("a command");
    first.spawn(request).await.expect("spawn");
    assert_eq!(
        next_exit(&mut notices).await,
        Some((record.id(), ExitStatus::Code(7)))
    );
    drop((first, notices));

    // The next daemon gets it again, records it, and dies in turn.
    let second = KeeperSpawner::connect(&socket).await.expect("connect");
    let mut notices = second.notices().expect("notices");
    assert_eq!(
        next_exit(&mut notices).await,
        Some((record.id(), ExitStatus::Code(7))),
        "an unrecorded exit is handed over again"
    );
    second.exit_recorded(record.id());
    // The acknowledgement travels on the connection; give it a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop((second, notices));

    let third = KeeperSpawner::connect(&socket).await.expect("connect");
    let mut notices = third.notices().expect("notices");
    assert_eq!(
        next_exit(&mut notices).await,
        None,
        "a recorded exit is not handed over again"
    );
}

#[tokio::test]
async fn a_keeper_says_first_which_protocol_it_speaks() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = keeper_in(dir.path());
    let keeper = KeeperSpawner::connect(&socket).await.expect("connect");
    let hello = keeper.keeper();
    assert_eq!(hello.protocol, KEEPER_PROTOCOL);
    assert_eq!(hello.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(
        hello.pid,
        std::process::id(),
        "the keeper runs in this test"
    );
}

#[tokio::test]
async fn a_keeper_of_another_protocol_is_refused_with_both_versions_and_what_to_do() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = impostor(
        dir.path(),
        Some("{\"hello\":{\"protocol\":99,\"version\":\"9.9.9\",\"pid\":4242}}\n"),
    );
    let Err(e) = KeeperSpawner::connect(&socket).await else {
        panic!("a keeper of protocol 99 was accepted");
    };
    assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
    let text = e.to_string();
    for part in [
        "pid 4242",
        "bpm 9.9.9",
        "keeper protocol 99",
        &format!("speaks {KEEPER_PROTOCOL}"),
        "kill 4242",
    ] {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
}

#[tokio::test]
async fn a_keeper_that_says_no_hello_is_taken_for_an_older_one() {
    let pid = std::process::id().to_string();
    // Silent: an older keeper with nothing to hand over.
    let dir = tempfile::tempdir().expect("dir");
    let silent = impostor(dir.path(), None);
    let Err(e) = KeeperSpawner::connect_within(&silent, Duration::from_millis(200)).await else {
        panic!("a silent keeper was accepted");
    };
    assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
    assert!(e.to_string().contains("older bpm"), "{e}");
    assert!(e.to_string().contains(&format!("kill {pid}")), "{e}");
    // Speaking first without a hello: an older keeper handing over an exit.
    let dir = tempfile::tempdir().expect("dir");
    let notice = impostor(
        dir.path(),
        Some(
            "{\"seq\":1,\"notice\":{\"ready\":{\"id\":\"0190a5a6-0000-7000-8000-000000000001\"}}}\n",
        ),
    );
    let Err(e) = KeeperSpawner::connect_within(&notice, Duration::from_mins(1)).await else {
        panic!("a keeper without a hello was accepted");
    };
    assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
    assert!(e.to_string().contains("older bpm"), "{e}");
}

/// A daemon's connection to a keeper spoken by hand, one JSON line at a time.
struct RawDaemon {
    write: tokio::net::unix::OwnedWriteHalf,
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
}

impl RawDaemon {
    async fn connect(socket: &std::path::Path) -> Self {
        let stream = UnixStream::connect(socket).await.expect("connect");
        let (read, write) = stream.into_split();
        RawDaemon {
            write,
            lines: BufReader::new(read).lines(),
        }
    }

    /// The keeper's next line (within 10 s).
    async fn next(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
            .await
            .expect("the keeper answers")
            .expect("read")
            .expect("a line")
    }

    /// The keeper's next line but the pipes it hands over, as JSON.
    async fn reply(&mut self) -> serde_json::Value {
        loop {
            let line: serde_json::Value = serde_json::from_str(&self.next().await).expect("JSON");
            if line.get("pipes").is_none() {
                return line;
            }
        }
    }

    async fn send(&mut self, lines: &str) {
        self.write.write_all(lines.as_bytes()).await.expect("write");
    }
}

#[tokio::test]
async fn a_request_the_keeper_cannot_read_is_answered_with_an_error() {
    let dir = tempfile::tempdir().expect("dir");
    let mut daemon = RawDaemon::connect(&keeper_in(dir.path())).await;
    let hello = daemon.next().await;
    assert!(hello.starts_with("{\"hello\":"), "{hello}");

    daemon.send("{\"id\":7,\"op\":{\"frobnicate\":{}}}\n").await;
    let reply = daemon.reply().await;
    assert_eq!(reply["id"], 7);
    let error = reply["err"]["invalid"]
        .as_str()
        .expect("an invalid-request error");
    assert!(error.contains("frobnicate"), "{error}");
    assert!(
        error.contains(&format!("protocol {KEEPER_PROTOCOL}")),
        "{error}"
    );

    // The connection goes on: a request it can read is answered.
    let id = ProcessId::from_uuid(uuid::Uuid::now_v7());
    daemon
        .send(&format!(
            "{{\"id\":8,\"op\":{{\"reattach\":{{\"id\":\"{id}\",\"pid\":1}}}}}}\n"
        ))
        .await;
    let reply = daemon.reply().await;
    assert_eq!(reply["id"], 8);
    assert_eq!(reply["ok"]["held"], false);
}

fn request_for(argv: &[&str]) -> SpawnRequest {
    let record = ProcessRecord::new(
        ProcessId::from_uuid(uuid::Uuid::now_v7()),
        NodeId::local(),
        ProcessSpec::argv(argv.iter().copied()),
        Timestamp::from_millis(1),
    );
    SpawnRequest::for_record(&record).expect("a command")
}

async fn next_notice(notices: &mut UnboundedReceiver<ProcessNotice>) -> Option<ProcessNotice> {
    tokio::time::timeout(Duration::from_secs(5), notices.recv())
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_handed_over_by_a_daemon_that_is_gone_are_not_made() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = keeper_in(dir.path());
    let first = KeeperSpawner::connect(&socket).await.expect("connect");
    let a = request_for(&["sleep", "30"]);
    let a_id = a.id;
    let a_pid = first.spawn(a).await.expect("spawn").pid;
    let next = request_for(&["sleep", "30"]);
    first.hand_over(vec![next]).await.expect("hand over");
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let second = KeeperSpawner::connect(&socket).await.expect("connect");
    let mut notices = second.notices().expect("notices");
    assert!(second.reattach(a_id, a_pid).await.expect("reattach"));
    second
        .signal(a_id, a_pid, bpm_domain::Signal::Term)
        .await
        .expect("signal");
    assert_eq!(
        next_notice(&mut notices).await,
        Some(ProcessNotice::Exited {
            id: a_id,
            status: ExitStatus::Signal(15),
            limit: None,
        }),
        "the exit starts nothing: the daemon that handed the record over is gone"
    );
    assert_eq!(
        second.withdraw().await.expect("withdraw"),
        Vec::<ProcessId>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_on_an_exit_goes_to_the_next_daemon_which_cannot_start_it_twice() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = keeper_in(dir.path());
    let first = KeeperSpawner::connect(&socket).await.expect("connect");
    let mut notices = first.notices().expect("notices");
    let a = request_for(&["sleep", "30"]);
    let a_id = a.id;
    let a_pid = first.spawn(a).await.expect("spawn").pid;
    let next = request_for(&["sh", "-c", "exit 3"]);
    let next_id = next.id;
    first
        .hand_over(vec![next.clone()])
        .await
        .expect("hand over");
    first
        .signal(a_id, a_pid, bpm_domain::Signal::Term)
        .await
        .expect("signal");
    let Some(ProcessNotice::HandedOver {
        id,
        next: started_id,
        started: Ok(pid),
        ..
    }) = next_notice(&mut notices).await
    else {
        panic!("the exit did not start the record handed over");
    };
    assert_eq!((id, started_id), (a_id, next_id));
    assert!(matches!(
        next_notice(&mut notices).await,
        Some(ProcessNotice::Exited { id, status: ExitStatus::Code(3), limit: None }) if id == next_id
    ));
    // The daemon dies before it records either.
    drop((first, notices));

    let second = KeeperSpawner::connect(&socket).await.expect("connect");
    let mut notices = second.notices().expect("notices");
    assert!(
        matches!(
            next_notice(&mut notices).await,
            Some(ProcessNotice::HandedOver { id, next, started: Ok(p), .. })
                if id == a_id && next == next_id && p == pid
        ),
        "the report is handed to the next daemon"
    );
    // A daemon that saw the record pending asks for it: it gets the process
    // that ran, whose exit follows, and nothing is started again.
    assert_eq!(second.spawn(next).await.expect("spawn").pid, pid);
    assert!(matches!(
        next_notice(&mut notices).await,
        Some(ProcessNotice::Exited { id, status: ExitStatus::Code(3), limit: None }) if id == next_id
    ));
    assert_eq!(next_notice(&mut notices).await, None, "started once only");
}

/// Collects how each of `ids` ended (its own exit status, whether plain or
/// handing over), waiting up to 10 s.
async fn statuses(
    notices: &mut UnboundedReceiver<ProcessNotice>,
    ids: &[ProcessId],
) -> std::collections::HashMap<ProcessId, ExitStatus> {
    let mut seen = std::collections::HashMap::new();
    while ids.iter().any(|id| !seen.contains_key(id)) {
        match tokio::time::timeout(Duration::from_secs(10), notices.recv()).await {
            Ok(Some(
                ProcessNotice::Exited { id, status, .. }
                | ProcessNotice::HandedOver { id, status, .. },
            )) => {
                seen.insert(id, status);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("not every process ended within 10 s: {seen:?}"),
        }
    }
    seen
}

/// Environments cross the connection once each, named by slot: more of
/// them than the keeper has slots still reach each its own process, as do
/// equal ones in new maps and those of starts handed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_process_gets_its_own_environment_past_the_keepers_slots() {
    use std::collections::BTreeMap;
    let dir = tempfile::tempdir().expect("dir");
    let socket = keeper_in(dir.path());
    let daemon = KeeperSpawner::connect(&socket).await.expect("connect");
    let mut notices = daemon.notices().expect("notices");
    let env = |n: i32| Arc::new(BTreeMap::from([("N".into(), n.to_string().into())]));
    let maps: Vec<_> = (1..=20).map(env).collect();
    // Each map once, then an early one again (its slot given to another
    // since), an equal one in a new map, and the latest one again.
    let mut expected = Vec::new();
    for map in maps.iter().chain([&maps[0], &env(5), &maps[19]]) {
        let request = common::sh_request("exit \"$N\"", map);
        let id = request.id;
        daemon.spawn(request).await.expect("spawn");
        expected.push((
            id,
            ExitStatus::Code(map[&"N".into()].to_string().parse().expect("number")),
        ));
    }
    let ids: Vec<ProcessId> = expected.iter().map(|(id, _)| *id).collect();
    let seen = statuses(&mut notices, &ids).await;
    for (id, status) in &expected {
        assert_eq!(seen[id], *status, "process {id}");
    }

    // Handed over: two sharing one map, one with a map of its own.
    let first = common::sh_request("sleep 0.3; exit \"$N\"", &env(50));
    let shared = env(60);
    let queued = [
        common::sh_request("exit \"$N\"", &shared),
        common::sh_request("exit \"$N\"", &env(61)),
        common::sh_request("exit \"$N\"", &shared),
    ];
    let ids: Vec<ProcessId> = std::iter::once(first.id)
        .chain(queued.iter().map(|r| r.id))
        .collect();
    daemon.spawn(first).await.expect("spawn");
    daemon
        .hand_over(queued.into_iter().collect())
        .await
        .expect("hand over");
    let seen = statuses(&mut notices, &ids).await;
    let codes: Vec<ExitStatus> = ids.iter().map(|id| seen[id]).collect();
    assert_eq!(
        codes,
        [50, 60, 61, 60].map(ExitStatus::Code),
        "each start handed over ran with its own environment"
    );
}

/// A start that names an environment slot the connection never defined is
/// refused with an error saying so, and the connection goes on.
#[tokio::test]
async fn a_start_naming_an_undefined_environment_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let mut daemon = RawDaemon::connect(&keeper_in(dir.path())).await;
    daemon.next().await;
    let request = serde_json::to_value(request_for(&["true"])).expect("JSON");
    let line = serde_json::json!({"id": 3, "op": {"spawn": {"env": 5, "request": request}}});
    daemon.send(&format!("{line}\n")).await;
    let reply = daemon.reply().await;
    assert_eq!(reply["id"], 3);
    let error = reply["err"]["invalid"].as_str().expect("an invalid error");
    assert!(
        error.contains("environment slot 5 was not defined"),
        "{error}"
    );
    // Defined, the same start runs.
    let define = serde_json::json!({"id": 0, "op": {"env": {"slot": 5, "vars": {"A": "1"}}}});
    daemon.send(&format!("{define}\n{line}\n")).await;
    let reply = daemon.reply().await;
    assert_eq!(reply["id"], 3);
    assert!(reply["ok"]["spawned"]["pid"].as_u64().is_some(), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_end_makes_the_next_keeper_answer_a_spawn_with_the_process_that_ran() {
    let dir = tempfile::tempdir().expect("dir");
    let kept = dir.path().join("keeper.exits");
    let ran = dir.path().join("ran");
    let serve = |name: &str| {
        let socket = dir.path().join(name);
        let listener = UnixListener::bind(&socket).expect("bind");
        let spawner = Arc::new(OsSpawner::new(
            Arc::new(InMemoryOutput::default()),
            as_the_keeper(),
        ));
        let task = tokio::spawn(serve_keeper_keeping(
            listener,
            spawner.clone(),
            Duration::from_millis(300),
            Some(kept.clone()),
        ));
        (socket, spawner, task)
    };
    // The keeper starts a process for a daemon that died before it heard
    // of the start, or of its end; left alone, it keeps the end and leaves.
    let (_, spawner, first_keeper) = serve("first.sock");
    let request = request_for(&["sh", "-c", &format!("echo x >> {}; exit 5", ran.display())]);
    let id = request.id;
    let pid = spawner.spawn(request.clone()).await.expect("spawn").pid;
    drop(spawner);
    tokio::time::timeout(Duration::from_secs(10), first_keeper)
        .await
        .expect("the idle keeper leaves")
        .expect("joined");
    assert!(kept.exists(), "the end was kept");
    // The next daemon, finding the record still starting, asks again: the
    // next keeper answers with the process that ran, then hands its end.
    let (socket, _, _second_keeper) = serve("second.sock");
    let daemon = KeeperSpawner::connect(&socket).await.expect("connect");
    let mut notices = daemon.notices().expect("notices");
    assert_eq!(daemon.spawn(request).await.expect("spawn").pid, pid);
    assert_eq!(
        next_exit(&mut notices).await,
        Some((id, ExitStatus::Code(5)))
    );
    assert_eq!(next_exit(&mut notices).await, None, "it ran once");
    assert_eq!(std::fs::read_to_string(&ran).expect("ran"), "x\n");
}

/// A record running `sh -c LINE`, with failover (so a stand-down policy) or without.
fn request(line: &str, failover: bool) -> SpawnRequest {
    let mut spec = ProcessSpec::argv(["sh", "-c", line]);
    if failover {
        spec.restart.mode = bpm_domain::RestartMode::Always;
        spec.failover = true;
        spec.stop.grace = bpm_domain::Span::from_millis(300);
    }
    let record = ProcessRecord::new(
        ProcessId::from_uuid(uuid::Uuid::now_v7()),
        NodeId::local(),
        spec,
        Timestamp::from_millis(1),
    );
    SpawnRequest::for_record(&record).expect("a command")
}

/// The keeper stands down a failover record's process itself when the daemon
/// stops saying the lease holds (it died, or stalled): TERM, then KILL
/// after its grace for one that ignores TERM. Other processes run on, and
/// a lease said to hold in time stands nothing down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keeper_stands_down_failover_processes_when_the_lease_is_not_held() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = keeper_in(dir.path());
    let daemon = KeeperSpawner::connect(&socket).await.expect("connect");
    let mut notices = daemon.notices().expect("notices");
    let polite = request("sleep 300", true);
    let stubborn = request("trap '' TERM; while true; do sleep 0.05; done", true);
    let plain = request("sleep 300", false);
    let mut pids = Vec::new();
    for r in [&polite, &stubborn, &plain] {
        pids.push(daemon.spawn(r.clone()).await.expect("spawn").pid);
    }
    // Held in time, again and again: nothing is stood down.
    for _ in 0..6 {
        daemon
            .hold_lease(Duration::from_millis(600))
            .await
            .expect("hold");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(
        tokio::time::timeout(Duration::from_millis(200), notices.recv())
            .await
            .ok()
            .flatten()
            .and_then(|n| match n {
                ProcessNotice::Exited { id, .. } => Some(id),
                _ => None,
            }),
        None,
        "nothing ends while the lease is held"
    );
    // The daemon says no more: both failover processes end, the stubborn
    // one by KILL after its grace; the other process runs on.
    drop(daemon);
    let next = KeeperSpawner::connect(&socket).await.expect("connect");
    let mut notices = next.notices().expect("notices");
    let mut ended = std::collections::BTreeMap::new();
    while ended.len() < 2 {
        match next_exit(&mut notices).await {
            Some((id, status)) => {
                ended.insert(id, status);
            }
            None => break,
        }
    }
    assert_eq!(
        ended.get(&polite.id),
        Some(&ExitStatus::Signal(15)),
        "{ended:?}"
    );
    assert_eq!(
        ended.get(&stubborn.id),
        Some(&ExitStatus::Signal(9)),
        "{ended:?}"
    );
    assert!(!ended.contains_key(&plain.id), "{ended:?}");
    next.signal(plain.id, pids[2], bpm_domain::Signal::Kill)
        .await
        .expect("signal");
    assert_eq!(
        next_exit(&mut notices).await,
        Some((plain.id, ExitStatus::Signal(9))),
        "the plain process is stopped by the test"
    );
}

/// The state letter of process `pid` (`S` sleeping, `T` stopped, ...),
/// once it is out of an uninterruptible wait (`D`): a signal sent to a
/// process in `D` (still paging in its program on a loaded machine, say)
/// only takes effect when the wait ends, so `D` says nothing yet.
fn proc_state(pid: u32) -> char {
    let read = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .expect("a state")
    };
    for _ in 0..500 {
        let state = read();
        if state != 'D' {
            return state;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    read()
}

/// Waits (boundedly) until process `pid` is stopped by a signal, and says
/// whether it is.
fn stopped_soon(pid: u32) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        if proc_state(pid) == 'T' {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Renewals that come late stop the failover processes with SIGSTOP,
/// before the lease can lapse, so none runs on through a pause that would
/// make it stale; the next renewal continues them, but not one its caller
/// paused. Other processes are never stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_renewals_stop_failover_processes_until_the_next() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = keeper_in(dir.path());
    let daemon = KeeperSpawner::connect(&socket).await.expect("connect");
    let mut notices = daemon.notices().expect("notices");
    // `exec`: a shell that forks (with vfork) waits in state D for a child
    // stopped before its exec, and would never read as stopped itself.
    let failover = request("exec sleep 300", true);
    let plain = request("exec sleep 300", false);
    let paused = request("exec sleep 300", true);
    let f = daemon.spawn(failover.clone()).await.expect("spawn").pid;
    let p = daemon.spawn(plain.clone()).await.expect("spawn").pid;
    let q = daemon.spawn(paused.clone()).await.expect("spawn").pid;
    daemon
        .signal(paused.id, q, bpm_domain::Signal::Stop)
        .await
        .expect("pause");
    assert!(stopped_soon(q), "the caller's pause takes effect");
    daemon
        .hold_lease(Duration::from_secs(2))
        .await
        .expect("hold");
    // Half the hold without news: late.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_eq!(proc_state(f), 'T', "the failover process is stopped");
    assert_ne!(proc_state(p), 'T', "the plain process runs on");
    daemon
        .hold_lease(Duration::from_secs(2))
        .await
        .expect("hold");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_ne!(proc_state(f), 'T', "a renewal continues it");
    assert_eq!(proc_state(q), 'T', "but not one its caller paused");
    for (r, pid) in [(&failover, f), (&plain, p), (&paused, q)] {
        daemon
            .signal(r.id, pid, bpm_domain::Signal::Kill)
            .await
            .expect("signal");
        assert_eq!(
            next_exit(&mut notices).await.map(|(_, s)| s),
            Some(ExitStatus::Signal(9))
        );
    }
}
