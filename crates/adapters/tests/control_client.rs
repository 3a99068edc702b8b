//! The daemon client's handshake against servers that misbehave: a refusal
//! or a stranger on the socket is a clear error from `connect`; a daemon
//! that says no hello after `connect_early` has sent the first call read
//! nothing, and the calls go to the next connection. And batches on the
//! wire: shared variables sent once, answers of ids alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bpm_adapters::control::DaemonClient;
use bpm_ports::ManagerError;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

/// A server that reads the handshake, answers `answer` and closes.
fn one_answer(socket: &Path, answer: &'static str) {
    let listener = UnixListener::bind(socket).expect("bind");
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let (read, mut write) = stream.into_split();
        let mut line = String::new();
        BufReader::new(read)
            .read_line(&mut line)
            .await
            .expect("hello");
        assert!(line.contains("\"protocol\":3"), "{line}");
        write.write_all(answer.as_bytes()).await.expect("answer");
    });
}

#[tokio::test]
async fn a_refused_handshake_is_an_error_with_the_reason() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("s");
    one_answer(
        &socket,
        "{\"id\":0,\"error\":{\"kind\":\"version_mismatch\",\"message\":\"this daemon speaks protocol 3\"}}\n",
    );
    let err = DaemonClient::connect(&socket, "test")
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&err, ManagerError::Connection(m) if m.contains("version_mismatch")),
        "{err:?}"
    );
    assert!(err.to_string().contains("protocol 3"), "{err}");
}

#[tokio::test]
async fn a_stranger_on_the_socket_is_a_connection_error() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("s");
    one_answer(&socket, "HTTP/1.1 400 Bad Request\r\n\r\n");
    let err = DaemonClient::connect(&socket, "test")
        .await
        .err()
        .expect("not bpm");
    assert!(
        matches!(&err, ManagerError::Connection(m) if m.contains("not bpm's protocol")),
        "{err:?}"
    );
}

#[tokio::test]
async fn nothing_listening_is_a_connection_error() {
    let dir = tempfile::tempdir().expect("dir");
    let err = DaemonClient::connect(&dir.path().join("none"), "test")
        .await
        .err()
        .expect("nothing there");
    assert!(
        matches!(&err, ManagerError::Connection(m) if m.contains("cannot reach the bpm daemon")),
        "{err:?}"
    );
}

/// The specs a mocked manager was given by one `start_many`, each accepted.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<bpm_domain::ProcessSpec>>>;

/// A daemon serving a mocked manager that accepts every spec of a batch
/// (on the calling test's runtime); its subscribers hear what `events`
/// sends.
fn batch_daemon(socket: &Path) -> (Seen, tokio::sync::broadcast::Sender<bpm_domain::Event>) {
    use bpm_domain::{NodeId, ProcessId, ProcessRecord, Timestamp};
    let seen: Seen = Seen::default();
    let events = tokio::sync::broadcast::channel(16).0;
    let mut manager = bpm_ports::MockProcessManager::new();
    let tx = events.clone();
    manager.expect_subscribe().returning(move || tx.subscribe());
    let s = seen.clone();
    manager.expect_start_many().returning(move |specs| {
        s.lock().expect("lock").extend(specs.iter().cloned());
        Ok(specs
            .into_iter()
            .map(|spec| {
                let id = ProcessId::from_uuid(uuid::Uuid::now_v7());
                Ok(ProcessRecord::new(
                    id,
                    NodeId::local(),
                    spec,
                    Timestamp::from_millis(1),
                ))
            })
            .collect())
    });
    let listener = UnixListener::bind(socket).expect("bind");
    let info = bpm_adapters::control::ServerInfo {
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
    let (stop, _) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(bpm_adapters::control::serve(
        listener,
        std::sync::Arc::new(manager),
        info,
        stop,
    ));
    (seen, events)
}

#[tokio::test]
async fn a_batch_sends_shared_variables_once_and_may_answer_ids_alone() {
    use bpm_domain::ProcessSpec;
    use bpm_ports::ProcessManager;
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("s");
    let (seen, _) = batch_daemon(&socket);
    let client = DaemonClient::connect(&socket, "test")
        .await
        .expect("connect");
    let env = std::sync::Arc::new([("A".into(), "1".into()), ("B".into(), "2".into())].into());
    let specs: Vec<ProcessSpec> = (0..3)
        .map(|n| {
            let mut spec = ProcessSpec::argv(["echo", &n.to_string()]);
            spec.env = std::sync::Arc::clone(&env);
            spec
        })
        .collect();
    let ids = client.start_many_ids(specs.clone()).await.expect("started");
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(Result::is_ok));
    let got = std::mem::take(&mut *seen.lock().expect("lock"));
    assert_eq!(got, specs, "every spec arrives with its variables");
    // One map on the daemon's side: the variables travelled once.
    assert!(
        got.iter()
            .all(|s| std::sync::Arc::ptr_eq(&s.env, &got[0].env))
    );

    // Whole records when asked for, and specs that differ travel as they are.
    let mut different = specs.clone();
    std::sync::Arc::make_mut(&mut different[1].env).insert("B".into(), "own".into());
    let records = client.start_many(different.clone()).await.expect("started");
    let records: Vec<_> = records.into_iter().map(|r| r.expect("record")).collect();
    assert_eq!(
        records[1]
            .spec()
            .env
            .get(&"B".into())
            .map(ToString::to_string)
            .as_deref(),
        Some("own")
    );
    assert_eq!(*seen.lock().expect("lock"), different);
}

#[tokio::test]
async fn a_spec_s_own_variables_win_over_the_batch_s() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("s");
    let (seen, _) = batch_daemon(&socket);
    let mut stream = tokio::net::UnixStream::connect(&socket)
        .await
        .expect("connect");
    let mut own = bpm_domain::ProcessSpec::argv(["true"]);
    std::sync::Arc::make_mut(&mut own.env).insert("B".into(), "own".into());
    let bare = bpm_domain::ProcessSpec::argv(["true"]);
    let call = serde_json::json!({
        "id": 1,
        "method": "start_many",
        "params": {"specs": [own, bare], "env": {"A": "batch", "B": "batch"}, "brief": true},
    });
    let hello = format!(
        "{{\"protocol\":{},\"software\":\"test\"}}\n{call}\n",
        bpm_adapters::control::wire::PROTOCOL_VERSION
    );
    stream.write_all(hello.as_bytes()).await.expect("write");
    let mut lines = BufReader::new(stream).lines();
    lines.next_line().await.expect("read").expect("hello");
    let answer = lines.next_line().await.expect("read").expect("answer");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
    let started = answer["ok"]["started"].as_array().expect("started");
    assert_eq!(started.len(), 2);
    assert!(
        started
            .iter()
            .all(|s| s["id"].is_string() && s.get("record").is_none()),
        "brief answers are ids: {answer}"
    );
    let seen = seen.lock().expect("lock");
    let env = |n: usize| -> Vec<(String, String)> {
        seen[n]
            .env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(env(0), [pair("A", "batch"), pair("B", "own")]);
    assert_eq!(env(1), [pair("A", "batch"), pair("B", "batch")]);
}

/// Gets a connection to the daemon at `socket`, waiting for its hello,
/// and counts how often it was asked to.
fn connector_to(socket: PathBuf, asked: Arc<AtomicUsize>) -> bpm_adapters::control::Connector {
    Arc::new(move || {
        let (socket, asked) = (socket.clone(), asked.clone());
        Box::pin(async move {
            asked.fetch_add(1, Ordering::SeqCst);
            DaemonClient::connect(&socket, "test").await
        })
    })
}

/// A daemon that takes one connection and, once it has read `until` (the
/// hello, and the lines behind it up to one holding `until`), answers
/// `answer` (which may be nothing) and closes; returns what it read.
fn reads_then_closes(
    socket: &Path,
    until: &'static str,
    answer: &'static str,
) -> tokio::task::JoinHandle<String> {
    let listener = UnixListener::bind(socket).expect("bind");
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read);
        let mut read = String::new();
        while !read.contains(until) {
            if lines.read_line(&mut read).await.expect("read") == 0 {
                break;
            }
        }
        write.write_all(answer.as_bytes()).await.expect("answer");
        read
    })
}

/// A daemon killed while a command connects: the kernel had taken the
/// connection, and the daemon closes it without its hello. It read none of
/// the calls, which the next connection carries, events included.
#[tokio::test]
async fn calls_to_a_daemon_that_closed_before_its_hello_go_to_the_next() {
    use bpm_ports::ProcessManager;
    let dir = tempfile::tempdir().expect("dir");
    let (going, next) = (dir.path().join("going"), dir.path().join("next"));
    let read = reads_then_closes(&going, "start_many", "");
    let (seen, events) = batch_daemon(&next);
    let asked = Arc::new(AtomicUsize::new(0));
    let client = DaemonClient::connect_early(&going, "test", connector_to(next, asked.clone()))
        .await
        .expect("connects");
    let mut heard = client.subscribe();
    let spec = bpm_domain::ProcessSpec::argv(["true"]);
    let ids = client
        .start_many_ids(vec![spec.clone()])
        .await
        .expect("started by the next daemon");
    let id = ids[0].clone().expect("an id");
    assert!(read.await.expect("read").contains("start_many"));
    assert_eq!(
        *seen.lock().expect("lock"),
        std::slice::from_ref(&spec),
        "made once"
    );
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    // The next connection's events reach the subscriber of the first.
    let record = bpm_domain::ProcessRecord::new(
        id,
        bpm_domain::NodeId::local(),
        spec,
        bpm_domain::Timestamp::from_millis(1),
    );
    let event = bpm_domain::Event::new(
        bpm_domain::EventKind::Submitted,
        &record,
        bpm_domain::Timestamp::from_millis(2),
    );
    events
        .send(event.clone())
        .expect("the daemon has a subscriber");
    let got = tokio::time::timeout(Duration::from_secs(10), heard.recv())
        .await
        .expect("heard in time")
        .expect("an event");
    assert_eq!(got, event);
    // Later calls go there too, without asking again.
    client.start_many_ids(vec![]).await.expect("started");
    assert_eq!(asked.load(Ordering::SeqCst), 1);
}

/// A daemon that says nothing: after 5 s the connection is shut both ways,
/// so that daemon cannot say hello (and go on to read the calls) any more,
/// and the calls go to the next connection.
#[tokio::test(start_paused = true)]
async fn a_daemon_silent_for_5_s_can_no_longer_read_the_calls_which_go_to_the_next() {
    use bpm_ports::ProcessManager;
    let dir = tempfile::tempdir().expect("dir");
    let (silent, next) = (dir.path().join("silent"), dir.path().join("next"));
    let listener = UnixListener::bind(&silent).expect("bind");
    let late = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read);
        let mut read = String::new();
        // Until the client shuts the connection.
        while lines.read_line(&mut read).await.expect("read") > 0 {}
        let hello = format!(
            "{{\"protocol\":{},\"software\":\"late\"}}\n",
            bpm_adapters::control::wire::PROTOCOL_VERSION
        );
        (read, write.write_all(hello.as_bytes()).await)
    });
    let (seen, _) = batch_daemon(&next);
    let asked = Arc::new(AtomicUsize::new(0));
    let client = DaemonClient::connect_early(&silent, "test", connector_to(next, asked.clone()))
        .await
        .expect("connects");
    let spec = bpm_domain::ProcessSpec::argv(["true"]);
    client
        .start_many_ids(vec![spec.clone()])
        .await
        .expect("started by the next daemon");
    let (read, hello) = late.await.expect("the silent daemon");
    assert!(read.contains("start_many"), "{read}");
    assert_eq!(
        hello.expect_err("the connection is shut").kind(),
        std::io::ErrorKind::BrokenPipe
    );
    assert_eq!(*seen.lock().expect("lock"), [spec], "made once");
    assert_eq!(asked.load(Ordering::SeqCst), 1);
}

/// A daemon of another protocol refuses the hello and reads nothing: the
/// call fails with its refusal, and no other connection is tried.
#[tokio::test]
async fn a_refusal_of_an_early_hello_fails_the_call_by_name() {
    use bpm_ports::ProcessManager;
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("s");
    let refusal = "{\"id\":0,\"error\":{\"kind\":\"connection\",\"detail\":\"protocol mismatch: protocol 99\"}}\n";
    let read = reads_then_closes(&socket, "protocol", refusal);
    let asked = Arc::new(AtomicUsize::new(0));
    let client = DaemonClient::connect_early(
        &socket,
        "test",
        connector_to(dir.path().join("none"), asked.clone()),
    )
    .await
    .expect("connects");
    let err = client
        .get(bpm_domain::ProcessId::from_uuid(uuid::Uuid::now_v7()))
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, ManagerError::BadRequest(m) if m.contains("protocol 99")),
        "{err:?}"
    );
    read.await.expect("read");
    assert_eq!(asked.load(Ordering::SeqCst), 0);
}
