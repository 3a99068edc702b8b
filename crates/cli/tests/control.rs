//! The control socket's bounds on an engine: how many connections it holds,
//! and when it closes one that stays silent.

use std::sync::Arc;
use std::time::Duration;

use bpm_adapters::clock::ManualClock;
use bpm_adapters::control::{ConnectionLimits, DaemonClient, ServerInfo, serve_with};
use bpm_adapters::fake::ScriptedSpawner;
use bpm_adapters::ids::UuidV7Ids;
use bpm_adapters::memory::{BroadcastBus, InMemoryOutput, InMemoryStore};
use bpm_domain::{ExitStatus, Limits, ProcessSpec, Timestamp};
use bpm_ports::{ManagerError, ProcessManager};
use bpm_runtime::{Engine, EngineConfig, Ports};
use tokio::net::UnixListener;

async fn daemon(socket: &std::path::Path, limits: ConnectionLimits) -> Arc<ScriptedSpawner> {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1)));
    let output = Arc::new(InMemoryOutput::default());
    let spawner = Arc::new(ScriptedSpawner::new(clock.clone(), output.clone()));
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
    let engine = Engine::launch(
        ports,
        EngineConfig {
            node: None,
            limits: Limits::default(),
            ..EngineConfig::default()
        },
    )
    .await
    .expect("engine starts");
    let info = ServerInfo {
        software: "test".into(),
        store: "memory".into(),
        node: "local".into(),
        home: "/nowhere".into(),
        keeper: std::sync::Arc::default(),
        started_at: None,
        limits: None,
        warnings: std::sync::Arc::default(),
        cluster: std::sync::Arc::default(),
    };
    let listener = UnixListener::bind(socket).expect("bind");
    let (stop, _) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(serve_with(listener, Arc::new(engine), info, stop, limits));
    spawner
}

async fn connect(socket: &std::path::Path) -> Result<DaemonClient, ManagerError> {
    DaemonClient::connect(socket, "test").await
}

#[tokio::test]
async fn connections_over_the_limit_are_told_so_while_every_one_is_busy() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("s");
    let limits = ConnectionLimits {
        max_connections: 3,
        ..ConnectionLimits::default()
    };
    daemon(&socket, limits).await;
    // Subscribed connections are busy, however silent.
    let mut held = Vec::new();
    for _ in 0..3 {
        let client = connect(&socket).await.expect("within the limit");
        let events = client.subscribe();
        held.push((client, events));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refused = connect(&socket).await.err().expect("over the limit");
    let said = refused.to_string();
    assert!(said.contains("holds 3 connections already"), "{said}");
    held.pop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = connect(&socket).await.expect("a place was freed");
    again
        .list(bpm_domain::ListFilter::default())
        .await
        .expect("it works");
}

/// Idle and silent connections cannot keep a real client out: a full
/// daemon closes the one doing least (first one that never said hello,
/// then the one silent longest), never one with a call under way or a
/// subscription.
#[tokio::test]
async fn a_full_daemon_makes_room_by_closing_the_connection_doing_least() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("s");
    let limits = ConnectionLimits {
        max_connections: 8,
        ..ConnectionLimits::default()
    };
    daemon(&socket, limits).await;
    let subscribed = connect(&socket).await.expect("connect");
    let _events = subscribed.subscribe();
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(connect(&socket).await.expect("connect"));
    }
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(tokio::net::UnixStream::connect(&socket).await.expect("raw"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The silent ones made room among themselves: the greeted idle clients
    // are still open.
    assert!(
        idle.iter().all(|c| !c.is_closed()),
        "a greeted idle client was closed first"
    );
    let real = connect(&socket).await.expect("a real client gets in");
    real.list(bpm_domain::ListFilter::default())
        .await
        .expect("and is answered");
    // With no silent connection left to close, the idle clients go first.
    drop(silent);
    for _ in 0..12 {
        let client = connect(&socket).await.expect("a real client gets in");
        client
            .list(bpm_domain::ListFilter::default())
            .await
            .expect("and is answered");
    }
    assert!(
        !subscribed.is_closed(),
        "the subscribed connection was closed"
    );
    subscribed
        .list(bpm_domain::ListFilter::default())
        .await
        .expect("the subscribed client still works");
}

#[tokio::test]
async fn a_silent_connection_is_closed_but_not_one_waiting_or_subscribed() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("s");
    let limits = ConnectionLimits {
        idle_after: Duration::from_millis(300),
        hello_within: Duration::from_millis(300),
        ..ConnectionLimits::default()
    };
    let spawner = daemon(&socket, limits).await;
    let idle = connect(&socket).await.expect("connect");
    let waiting = connect(&socket).await.expect("connect");
    let subscribed = connect(&socket).await.expect("connect");
    let mut events = subscribed.subscribe();
    let record = waiting
        .start(ProcessSpec::argv(["fake", "forever"]))
        .await
        .expect("start");
    let id = record.id();
    let wait = tokio::spawn({
        let waiting = waiting.clone();
        async move { waiting.wait(id, Some(Duration::from_secs(10))).await }
    });
    // A raw connection that never says hello is closed too.
    let mut raw = tokio::net::UnixStream::connect(&socket).await.expect("raw");
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(idle.is_closed(), "the idle connection is still open");
    assert!(
        matches!(idle.get(id).await, Err(ManagerError::Connection(_))),
        "a call on a closed connection reports it"
    );
    let mut buf = [0u8; 1];
    let n = tokio::io::AsyncReadExt::read(&mut raw, &mut buf)
        .await
        .expect("read");
    assert_eq!(n, 0, "a connection without a hello was not closed");
    assert!(!waiting.is_closed(), "the waiting connection was closed");
    assert!(
        !subscribed.is_closed(),
        "the subscribed connection was closed"
    );
    assert!(spawner.exit(id, ExitStatus::Code(0)));
    let done = wait
        .await
        .expect("join")
        .expect("the wait ends with the process");
    assert_eq!(done.state(), bpm_domain::StateName::Completed);
    let mut saw_end = false;
    while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_millis(500), events.recv()).await
    {
        saw_end |= event.id == id && event.kind == bpm_domain::EventKind::Completed;
    }
    assert!(saw_end, "the subscription missed the end");
}
