//! The daemon's side of the control socket.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bpm_domain::ListFilter;
use bpm_ports::{ManagerError, ProcessManager, StopOptions};
use tokio::io::BufReader;
use tokio::net::UnixListener;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Mutex, mpsc};

use super::wire::{
    Call, DaemonRequest, DaemonStatus, Hello, MAX_REQUEST_BYTES, PROTOCOL_VERSION, Reply, Request,
    RequestLine, ServerLine, Started, WireError,
};
use crate::rpc::{LineError, first_line, read_line, write_line};

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
    /// The keeper it talks to (pid, version, protocol), when it has one;
    /// shared, since a new keeper takes over when one dies.
    pub keeper: Arc<std::sync::Mutex<Option<String>>>,
    /// When it started.
    pub started_at: Option<bpm_domain::Timestamp>,
    /// Its supervision limits.
    pub limits: Option<bpm_domain::Limits>,
    /// What went wrong that its operator must know (a damaged journal at
    /// start, a keeper that died), newest last; shared, so the daemon can
    /// add to it while it serves.
    pub warnings: Arc<std::sync::Mutex<Vec<String>>>,
    /// Its place in a cluster (its node's lease and epoch), when its store
    /// is shared; shared, since the lease changes while it serves.
    pub cluster: Arc<std::sync::Mutex<Option<String>>>,
}

type Writer = Arc<Mutex<OwnedWriteHalf>>;

/// `spec` with the batch's `shared` variables under its own. Specs without
/// variables of their own share the batch's map.
async fn send(writer: &Writer, line: &impl serde::Serialize) -> bool {
    write_line(&mut *writer.lock().await, line).await.is_ok()
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

/// How many connections the daemon holds, and how long it keeps one that
/// says nothing.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// The most connections open at once; the next is told so and closed.
    pub max_connections: usize,
    /// How long a new connection may take to say hello.
    pub hello_within: Duration,
    /// How long a connection with nothing under way (no request being
    /// answered, no subscription) may stay silent before it is closed.
    pub idle_after: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 1024,
            hello_within: Duration::from_secs(10),
            idle_after: Duration::from_mins(10),
        }
    }
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
    serve_with(
        listener,
        manager,
        info,
        shutdown,
        ConnectionLimits::default(),
    )
    .await;
}

/// [`serve`] with connection limits other than the defaults.
pub async fn serve_with(
    listener: UnixListener,
    manager: Arc<dyn ProcessManager>,
    info: ServerInfo,
    shutdown: mpsc::UnboundedSender<bool>,
    limits: ConnectionLimits,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let open = Arc::new(Open::default());
    let own_uid = rustix::process::getuid();
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
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            // Full: a connection that does nothing makes room for this one,
            // so that idle or silent clients cannot keep real ones out.
            Err(_) if open.close_idlest() => {
                tokio::time::timeout(EVICTION_WAIT, slots.clone().acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Err(_) => None,
        };
        let Some(slot) = slot else {
            tracing::warn!(
                limit = limits.max_connections,
                "refused a control connection: too many open, each with a call under way"
            );
            tokio::spawn(refuse_busy(stream, limits.max_connections));
            continue;
        };
        let (manager, info, shutdown) = (manager.clone(), info.clone(), shutdown.clone());
        let (state, registered) = open.register();
        tokio::spawn(async move {
            let (read, write) = stream.into_split();
            connection(
                BufReader::new(read),
                Arc::new(Mutex::new(write)),
                Shared {
                    manager,
                    info,
                    shutdown,
                },
                limits,
                &state,
            )
            .await;
            drop(registered);
            drop(slot);
        });
    }
}

/// How long a new connection waits for the slot of one closed for it.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// One open connection, as the accepting loop sees it.
#[derive(Default)]
struct Conn {
    /// Calls under way and subscriptions: a connection with any is never
    /// closed to make room.
    busy: Arc<std::sync::atomic::AtomicUsize>,
    /// Whether it said hello.
    greeted: std::sync::atomic::AtomicBool,
    /// When it last sent a line, in ms since the server started.
    last_line: std::sync::atomic::AtomicU64,
    /// Told to close, to make room for a new connection.
    close: tokio::sync::Notify,
}

/// The open connections, so that a full server can close the one that
/// does least: one that never said hello first, then the one silent
/// longest with nothing under way.
#[derive(Default)]
struct Open {
    conns: std::sync::Mutex<BTreeMap<u64, Arc<Conn>>>,
    next: std::sync::atomic::AtomicU64,
}

/// Milliseconds on a monotonic clock that starts with the first call.
fn millis() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = EPOCH.get_or_init(std::time::Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Conn {
    /// It sent a line.
    fn touched(&self) {
        self.last_line
            .store(millis(), std::sync::atomic::Ordering::Relaxed);
    }
}

/// Removes a connection from [`Open`] when its task ends.
struct Registered {
    open: Arc<Open>,
    key: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.open
            .conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.key);
    }
}

impl Open {
    fn register(self: &Arc<Self>) -> (Arc<Conn>, Registered) {
        let key = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let conn = Arc::new(Conn::default());
        conn.touched();
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, conn.clone());
        (
            conn,
            Registered {
                open: self.clone(),
                key,
            },
        )
    }

    /// Tells the connection doing least to close; false if every one has
    /// a call under way or a subscription.
    fn close_idlest(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let mut conns = self
            .conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let idlest = conns
            .iter()
            .filter(|(_, c)| c.busy.load(Relaxed) == 0)
            .min_by_key(|(_, c)| (c.greeted.load(Relaxed), c.last_line.load(Relaxed)))
            .map(|(key, c)| (*key, c.clone()));
        let Some((key, conn)) = idlest else {
            return false;
        };
        // Closed now as far as the count goes: two newcomers never pick one.
        conns.remove(&key);
        conn.close.notify_one();
        tracing::debug!(
            greeted = conn.greeted.load(Relaxed),
            "closed an idle control connection to make room for a new one"
        );
        true
    }
}

/// Tells a connection over the limit why it is closed, in place of the hello.
async fn refuse_busy(stream: tokio::net::UnixStream, limit: usize) {
    let (_read, write) = stream.into_split();
    let msg = format!(
        "the bpm daemon holds {limit} connections already, its limit; close some (each bpm mcp, bpm web and following command holds one) and try again"
    );
    answer(
        &Arc::new(Mutex::new(write)),
        0,
        Err(ManagerError::Connection(msg).into()),
    )
    .await;
}

/// What every connection of one server shares.
struct Shared {
    manager: Arc<dyn ProcessManager>,
    info: ServerInfo,
    shutdown: mpsc::UnboundedSender<bool>,
}

/// Counts a connection's calls under way while it lives.
struct Busy(Arc<std::sync::atomic::AtomicUsize>);

impl Busy {
    fn new(count: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Busy(count.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The next line of a connection, or `None` once it has said nothing for
/// `idle_after` with no call under way.
async fn next_line(
    reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    busy: &std::sync::atomic::AtomicUsize,
    idle_after: Duration,
) -> Option<Result<Option<Vec<u8>>, LineError>> {
    loop {
        match tokio::time::timeout(idle_after, read_line(reader, MAX_REQUEST_BYTES)).await {
            Ok(line) => return Some(line),
            // Clients send whole lines, so a silent one is between lines.
            Err(_) if busy.load(std::sync::atomic::Ordering::SeqCst) > 0 => {}
            Err(_) => return None,
        }
    }
}

async fn connection(
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: Writer,
    shared: Shared,
    limits: ConnectionLimits,
    state: &Conn,
) {
    tokio::select! {
        () = serve_connection(reader, writer, shared, limits, state) => {}
        () = state.close.notified() => {}
    }
}

async fn serve_connection(
    mut reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: Writer,
    shared: Shared,
    limits: ConnectionLimits,
    state: &Conn,
) {
    let Shared {
        manager,
        info,
        shutdown,
    } = shared;
    let busy = state.busy.clone();
    // Dropped when this reader returns: a subscription ends with the
    // connection's reading side, not only when a send fails, so a client
    // that closes its side is not sent events for ever.
    let (_reading, reader_open) = tokio::sync::watch::channel(());
    if !greet(&mut reader, &writer, &info, limits.hello_within).await {
        return;
    }
    state
        .greeted
        .store(true, std::sync::atomic::Ordering::Relaxed);
    loop {
        let Some(line) = next_line(&mut reader, &busy, limits.idle_after).await else {
            tracing::debug!(
                "closed a control connection idle for {:?}",
                limits.idle_after
            );
            return;
        };
        state.touched();
        let Some(call) = read_call(line, &writer).await else {
            return;
        };
        let Some(call) = call else {
            continue;
        };
        if matches!(
            call.request,
            Request::Manager(Call::Start { .. } | Call::StartMany { .. })
        ) {
            // The record's id is not known yet: it is made by the engine.
            tracing::trace!(target: "bpm::hop", "run received");
        }
        if matches!(call.request, Request::Daemon(DaemonRequest::Subscribe)) {
            // Before the next line is read: every event of a call made after
            // the subscription reaches this connection.
            forward_events(manager.subscribe(), &writer, reader_open.clone(), &busy);
            answer(&writer, call.id, Ok(Reply::Done)).await;
            continue;
        }
        let (manager, info, shutdown, writer) = (
            manager.clone(),
            info.clone(),
            shutdown.clone(),
            writer.clone(),
        );
        let under_way = Busy::new(&busy);
        tokio::spawn(async move {
            let _under_way = under_way;
            let id = call.id;
            let result = dispatch(call.request, &manager, &info, &shutdown).await;
            answer(&writer, id, result.map_err(WireError::from)).await;
        });
    }
}

/// Reads the client's hello within `within` and answers with the daemon's,
/// or with an error naming both protocols; false when the connection ends.
async fn greet(
    reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: &Writer,
    info: &ServerInfo,
    within: Duration,
) -> bool {
    let Ok(line) = first_line(reader, within, MAX_REQUEST_BYTES).await else {
        return false;
    };
    match serde_json::from_slice::<Hello>(&line).ok() {
        Some(h) if h.protocol == PROTOCOL_VERSION => {
            let ours = Hello {
                protocol: PROTOCOL_VERSION,
                software: info.software.clone(),
            };
            send(writer, &ours).await
        }
        other => {
            let theirs = other.map_or("no hello".to_owned(), |h| {
                format!("protocol {} ({})", h.protocol, h.software)
            });
            let msg = format!(
                "protocol mismatch: the daemon ({}) speaks protocol {PROTOCOL_VERSION}, the client sent {theirs}",
                info.software
            );
            answer(writer, 0, Err(ManagerError::Connection(msg).into())).await;
            false
        }
    }
}

/// The call a line holds: `None` when the connection ends (after saying
/// why, for a line too large or cut short), `Some(None)` for a line that is
/// not a call (answered with `bad_request`, under its id if it has one).
async fn read_call(
    line: Result<Option<Vec<u8>>, LineError>,
    writer: &Writer,
) -> Option<Option<RequestLine>> {
    let refuse = |message: String| Err(ManagerError::BadRequest(message).into());
    let line = match line {
        Ok(Some(line)) => line,
        Ok(None) | Err(LineError::Io(_)) => return None,
        Err(LineError::TooLarge) => {
            let msg = format!("message too large: the limit is {MAX_REQUEST_BYTES} bytes");
            answer(writer, 0, refuse(msg)).await;
            return None;
        }
        Err(LineError::Truncated) => {
            let msg = "truncated message: the connection closed mid-line".to_owned();
            answer(writer, 0, refuse(msg)).await;
            return None;
        }
    };
    match serde_json::from_slice::<RequestLine>(&line) {
        Ok(request) => Some(Some(request)),
        Err(e) => {
            let id = serde_json::from_slice::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v.get("id")?.as_u64())
                .unwrap_or(0);
            answer(writer, id, refuse(format!("malformed request: {e}"))).await;
            Some(None)
        }
    }
}

/// Sends every event from `events` on the connection until it closes.
fn forward_events(
    mut events: tokio::sync::broadcast::Receiver<bpm_domain::Event>,
    writer: &Writer,
    mut reader_open: tokio::sync::watch::Receiver<()>,
    busy: &Arc<std::sync::atomic::AtomicUsize>,
) {
    let writer = writer.clone();
    // A subscribed connection is not idle, however silent.
    let under_way = Busy::new(busy);
    tokio::spawn(async move {
        let _under_way = under_way;
        loop {
            let received = tokio::select! {
                r = events.recv() => r,
                _ = reader_open.changed() => return,
            };
            match received {
                Ok(event) => {
                    let line = ServerLine::Event {
                        event: Box::new(event),
                    };
                    if !send(&writer, &line).await {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

async fn dispatch(
    request: Request,
    m: &Arc<dyn ProcessManager>,
    info: &ServerInfo,
    shutdown: &mpsc::UnboundedSender<bool>,
) -> Result<Reply, ManagerError> {
    Ok(match request {
        Request::Manager(call) => {
            let waited = matches!(call, Call::Wait { .. })
                .then(|| call.id())
                .flatten();
            let started = matches!(call, Call::Start { .. } | Call::StartMany { .. });
            let reply = bpm_ports::apply(m.as_ref(), call).await?;
            if let Some(id) = waited {
                tracing::trace!(target: "bpm::hop", %id, "wait answered");
            }
            if started && tracing::enabled!(target: "bpm::hop", tracing::Level::TRACE) {
                let ids: Vec<_> = match &reply {
                    Reply::Record(r) => vec![r.id()],
                    Reply::Started(all) => all
                        .iter()
                        .filter_map(|s| match s {
                            Started::Record(r) => Some(r.id()),
                            Started::Id(id) => Some(*id),
                            Started::Error(_) => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                for id in ids {
                    tracing::trace!(target: "bpm::hop", %id, "run answered");
                }
            }
            reply
        }
        // Answered before dispatch, in the connection's loop.
        Request::Daemon(DaemonRequest::Subscribe) => Reply::Done,
        Request::Daemon(DaemonRequest::Status) => {
            // The status answers while the store does not: it says so.
            let mut counts = BTreeMap::new();
            let mut warnings = info
                .warnings
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            match m.list(ListFilter::default()).await {
                Ok(records) => {
                    for r in records {
                        *counts.entry(r.state().to_string()).or_insert(0) += 1;
                    }
                }
                Err(e) => warnings.push(format!("records not counted: {e}")),
            }
            Reply::Status(Box::new(DaemonStatus {
                pid: std::process::id(),
                version: info.software.clone(),
                store: info.store.clone(),
                node: info.node.clone(),
                home: info.home.clone(),
                keeper: info
                    .keeper
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone(),
                counts,
                started_at: info.started_at,
                limits: info.limits.clone(),
                warnings,
                cluster: info
                    .cluster
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone(),
            }))
        }
        Request::Daemon(DaemonRequest::Shutdown { kill_all }) => {
            if kill_all {
                m.stop_level(0, StopOptions::default()).await?;
            }
            let _ = shutdown.send(kill_all);
            Reply::Done
        }
    })
}
