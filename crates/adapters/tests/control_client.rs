//! The daemon client's handshake against servers that misbehave: a refusal
//! or a stranger on the socket is a clear error from `connect`.

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
        assert!(line.contains("\"protocol\":1"), "{line}");
        write.write_all(answer.as_bytes()).await.expect("answer");
    });
}

#[tokio::test]
async fn a_refused_handshake_is_an_error_with_the_reason() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("s");
    one_answer(
        &socket,
        "{\"id\":0,\"error\":{\"kind\":\"version_mismatch\",\"message\":\"this daemon speaks protocol 2\"}}\n",
    );
    let err = DaemonClient::connect(&socket, "test")
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&err, ManagerError::Remote { kind, .. } if kind == "version_mismatch"),
        "{err:?}"
    );
    assert!(err.to_string().contains("protocol 2"), "{err}");
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
