//! The daemon client's handshake against servers that misbehave: a refusal
//! or a stranger on the socket is a clear error from `connect`. And batches
//! on the wire: shared variables sent once, answers of ids alone.

use std::path::Path;

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
/// (on the calling test's runtime).
fn batch_daemon(socket: &Path) -> Seen {
    use bpm_domain::{NodeId, ProcessId, ProcessRecord, Timestamp};
    let seen: Seen = Seen::default();
    let mut manager = bpm_ports::MockProcessManager::new();
    manager
        .expect_subscribe()
        .returning(|| tokio::sync::broadcast::channel(1).1);
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
    seen
}

#[tokio::test]
async fn a_batch_sends_shared_variables_once_and_may_answer_ids_alone() {
    use bpm_domain::ProcessSpec;
    use bpm_ports::ProcessManager;
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("s");
    let seen = batch_daemon(&socket);
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
    let seen = batch_daemon(&socket);
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
