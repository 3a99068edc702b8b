//! The daemon's side of the control socket.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bpm_domain::{ListFilter, ProcessSpec};
use bpm_ports::{ManagerError, ProcessManager, StopOptions};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Mutex, mpsc};

use super::wire::{
    Call, DaemonStatus, Hello, MAX_REQUEST_BYTES, PROTOCOL_VERSION, Reply, Request, ServerLine,
    Started, WireError,
};
use super::{LineError, read_line};

/// What the daemon reports about itself in `status`.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// The software and version.
    pub software: String,
    /// The store's description.
    pub store: String,
    /// The node.
    pub node: String,
    /// The state directory.
    pub home: String,
    /// The keeper it talks to (pid, version, protocol), when it has one.
    pub keeper: Option<String>,
    /// When it started.
    pub started_at: Option<bpm_domain::Timestamp>,
    /// Its supervision limits.
    pub limits: Option<bpm_domain::Limits>,
}

type Writer = Arc<Mutex<OwnedWriteHalf>>;
type Recent = Arc<std::sync::Mutex<std::collections::VecDeque<bpm_domain::Event>>>;

/// How many past events `recent_events` returns at most.
const RECENT_EVENTS: usize = 1000;

/// `spec` with the batch's `shared` variables under its own. Specs without
/// variables of their own share the batch's map.
fn with_env(mut spec: ProcessSpec, shared: &Arc<BTreeMap<String, String>>) -> ProcessSpec {
    if spec.env.is_empty() {
        spec.env = shared.clone();
    } else {
        let mut env = (**shared).clone();
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        spec.env = Arc::new(env);
    }
    spec
}

async fn send(writer: &Writer, line: &impl serde::Serialize) -> bool {
    let Ok(mut bytes) = serde_json::to_vec(line) else {
        return false;
    };
    bytes.push(b'\n');
    writer.lock().await.write_all(&bytes).await.is_ok()
}

async fn answer(writer: &Writer, id: u64, result: Result<Reply, WireError>) -> bool {
    let line = match result {
        Ok(reply) => ServerLine::Answer {
            id,
            ok: Some(reply),
            error: None,
        },
        Err(error) => ServerLine::Answer {
            id,
            ok: None,
            error: Some(error),
        },
    };
    send(writer, &line).await
}

/// Serves the control protocol on `listener` until the process ends. Only
/// peers running as this process's user are served. A `shutdown` call sends
/// `kill_all` on `shutdown`.
pub async fn serve(
    listener: UnixListener,
    manager: Arc<dyn ProcessManager>,
    info: ServerInfo,
    shutdown: mpsc::UnboundedSender<bool>,
) {
    let own_uid = rustix::process::getuid();
    let recent: Recent = Arc::default();
    let (r, mut events) = (recent.clone(), manager.subscribe());
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) => {
                    let mut r = r.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if r.len() == RECENT_EVENTS {
                        r.pop_front();
                    }
                    r.push_back(e);
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let same_user =
            rustix::net::sockopt::socket_peercred(&stream).is_ok_and(|cred| cred.uid == own_uid);
        if !same_user {
            tracing::warn!("refused a control connection from another user");
            continue;
        }
        let (manager, info, shutdown, recent) = (
            manager.clone(),
            info.clone(),
            shutdown.clone(),
            recent.clone(),
        );
        tokio::spawn(async move {
            let (read, write) = stream.into_split();
            connection(
                BufReader::new(read),
                Arc::new(Mutex::new(write)),
                manager,
                info,
                shutdown,
                recent,
            )
            .await;
        });
    }
}

async fn connection(
    mut reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: Writer,
    manager: Arc<dyn ProcessManager>,
    info: ServerInfo,
    shutdown: mpsc::UnboundedSender<bool>,
    recent: Recent,
) {
    // Dropped when this reader returns: a subscription ends with the
    // connection's reading side, not only when a send fails, so a client
    // that closes its side is not sent events for ever.
    let (_reading, reader_open) = tokio::sync::watch::channel(());
    let hello = match read_line(&mut reader, MAX_REQUEST_BYTES).await {
        Ok(Some(line)) => serde_json::from_slice::<Hello>(&line).ok(),
        _ => return,
    };
    match hello {
        Some(h) if h.protocol == PROTOCOL_VERSION => {
            if !send(
                &writer,
                &Hello {
                    protocol: PROTOCOL_VERSION,
                    software: info.software.clone(),
                },
            )
            .await
            {
                return;
            }
        }
        other => {
            let theirs = other.map_or("no hello".to_owned(), |h| {
                format!("protocol {} ({})", h.protocol, h.software)
            });
            let msg = format!(
                "protocol mismatch: the daemon ({}) speaks protocol {PROTOCOL_VERSION}, the client sent {theirs}",
                info.software
            );
            answer(&writer, 0, Err(WireError::new("version_mismatch", msg))).await;
            return;
        }
    }
    loop {
        let line = match read_line(&mut reader, MAX_REQUEST_BYTES).await {
            Ok(Some(line)) => line,
            Ok(None) | Err(LineError::Io(_)) => return,
            Err(LineError::TooLarge) => {
                let msg = format!("message too large: the limit is {MAX_REQUEST_BYTES} bytes");
                answer(&writer, 0, Err(WireError::new("too_large", msg))).await;
                return;
            }
            Err(LineError::Truncated) => {
                answer(
                    &writer,
                    0,
                    Err(WireError::new(
                        "bad_request",
                        "truncated message: the connection closed mid-line",
                    )),
                )
                .await;
                return;
            }
        };
        let call: Call = match serde_json::from_slice(&line) {
            Ok(call) => call,
            Err(e) => {
                let id = serde_json::from_slice::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get("id")?.as_u64())
                    .unwrap_or(0);
                answer(
                    &writer,
                    id,
                    Err(WireError::new(
                        "bad_request",
                        format!("malformed request: {e}"),
                    )),
                )
                .await;
                continue;
            }
        };
        let (manager, info, shutdown, writer, recent, open) = (
            manager.clone(),
            info.clone(),
            shutdown.clone(),
            writer.clone(),
            recent.clone(),
            reader_open.clone(),
        );
        tokio::spawn(async move {
            let id = call.id;
            if matches!(call.request, Request::RecentEvents) {
                let events = recent
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .iter()
                    .cloned()
                    .collect();
                answer(&writer, id, Ok(Reply::Events(events))).await;
                return;
            }
            let result = dispatch(call.request, &manager, &info, &shutdown, &writer, open).await;
            answer(&writer, id, result.map_err(|e| WireError::from(&e))).await;
        });
    }
}

async fn dispatch(
    request: Request,
    m: &Arc<dyn ProcessManager>,
    info: &ServerInfo,
    shutdown: &mpsc::UnboundedSender<bool>,
    writer: &Writer,
    mut reader_open: tokio::sync::watch::Receiver<()>,
) -> Result<Reply, ManagerError> {
    let record = |r| Reply::Record(Box::new(r));
    Ok(match request {
        Request::Start { spec } => record(m.start(spec).await?),
        Request::StartMany { specs, env, brief } => {
            let specs = match env {
                Some(shared) => specs.into_iter().map(|s| with_env(s, &shared)).collect(),
                None => specs,
            };
            Reply::Started(
                m.start_many(specs)
                    .await?
                    .into_iter()
                    .map(|r| match r {
                        Ok(r) if brief => Started::Id(r.id()),
                        Ok(r) => Started::Record(Box::new(r)),
                        Err(e) => Started::Error(WireError::from(&e)),
                    })
                    .collect(),
            )
        }
        Request::Track { spec } => record(m.track(spec).await?),
        Request::Get { id } => record(m.get(id).await?),
        Request::List { filter } => Reply::Records(m.list(filter).await?),
        Request::Progress {
            id,
            percent,
            message,
        } => record(m.progress(id, percent, message).await?),
        Request::Complete { id, result } => {
            let c = m.complete(id, result).await?;
            Reply::Completion {
                record: Box::new(c.record),
                no_op: c.no_op,
            }
        }
        Request::Fail { id, error } => {
            let c = m.fail(id, error).await?;
            Reply::Completion {
                record: Box::new(c.record),
                no_op: c.no_op,
            }
        }
        Request::Stop { id, force, grace } => {
            record(m.stop(id, StopOptions { force, grace }).await?)
        }
        Request::StopLevel {
            level,
            force,
            grace,
        } => Reply::Records(m.stop_level(level, StopOptions { force, grace }).await?),
        Request::Pause { id } => record(m.pause(id).await?),
        Request::Resume { id } => record(m.resume(id).await?),
        Request::Restart { id } => record(m.restart(id).await?),
        Request::Wait { id, timeout_ms } => {
            record(m.wait(id, timeout_ms.map(Duration::from_millis)).await?)
        }
        Request::WaitMany { ids, timeout_ms } => {
            m.wait_many(&ids, timeout_ms.map(Duration::from_millis))
                .await?;
            Reply::Done
        }
        Request::ReadOutput { id, query } => Reply::Output(m.read_output(id, query).await?),
        Request::SendInput { id, data } => {
            m.send_input(id, data).await?;
            Reply::Done
        }
        Request::Remove { id } => {
            m.remove(id).await?;
            Reply::Done
        }
        Request::Subscribe => {
            let mut events = m.subscribe();
            let writer = writer.clone();
            tokio::spawn(async move {
                loop {
                    let received = tokio::select! {
                        r = events.recv() => r,
                        _ = reader_open.changed() => return,
                    };
                    match received {
                        Ok(event) => {
                            if !send(
                                &writer,
                                &ServerLine::Event {
                                    event: Box::new(event),
                                },
                            )
                            .await
                            {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
            Reply::Done
        }
        Request::RecentEvents => Reply::Events(Vec::new()),
        Request::Status => {
            let mut counts = BTreeMap::new();
            for r in m.list(ListFilter::default()).await? {
                *counts.entry(r.state().to_string()).or_insert(0) += 1;
            }
            Reply::Status(Box::new(DaemonStatus {
                pid: std::process::id(),
                version: info.software.clone(),
                store: info.store.clone(),
                node: info.node.clone(),
                home: info.home.clone(),
                keeper: info.keeper.clone(),
                counts,
                started_at: info.started_at,
                limits: info.limits.clone(),
            }))
        }
        Request::Usage => Reply::Usage(m.resource_usage().await?),
        Request::Shutdown { kill_all } => {
            if kill_all {
                m.stop_level(0, StopOptions::default()).await?;
            }
            let _ = shutdown.send(kill_all);
            Reply::Done
        }
    })
}
