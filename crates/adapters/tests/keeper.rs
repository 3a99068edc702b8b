//! The keeper keeps each exit until the daemon has recorded it: a daemon
//! that dies holding an exit it has not recorded leaves it to the next one.

use std::sync::Arc;
use std::time::Duration;

use bpm_adapters::keeper::{KeeperSpawner, serve_keeper};
use bpm_adapters::memory::InMemoryOutput;
use bpm_adapters::os::{OsSpawner, OsSpawnerConfig};
use bpm_domain::{ExitStatus, NodeId, ProcessId, ProcessRecord, ProcessSpec, Timestamp};
use bpm_ports::{ProcessNotice, ProcessSpawner, SpawnRequest};
use tokio::sync::mpsc::UnboundedReceiver;

async fn next_exit(
    notices: &mut UnboundedReceiver<ProcessNotice>,
) -> Option<(ProcessId, ExitStatus)> {
    loop {
        match tokio::time::timeout(Duration::from_secs(2), notices.recv()).await {
            Ok(Some(ProcessNotice::Exited { id, status })) => return Some((id, status)),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_goes_to_the_next_daemon_until_one_records_it() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("keeper.sock");
    let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
    let spawner = Arc::new(OsSpawner::new(
        Arc::new(InMemoryOutput::default()),
        OsSpawnerConfig::default(),
    ));
    tokio::spawn(serve_keeper(listener, spawner, Duration::from_mins(1)));

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
