//! The client's side of the control socket: a `ProcessManager` backed by a daemon.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bpm_domain::{Event, ListFilter, Percent, ProcessId, ProcessRecord, ProcessSpec};
use bpm_ports::{
    Completion, Cursor, ManagerError, OutputChunk, OutputQuery, ProcessManager, ResourceUsage,
    StopOptions,
};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::broadcast;

use super::wire::{
    Call, DaemonRequest, DaemonStatus, Hello, MAX_REQUEST_BYTES, PROTOCOL_VERSION, Reply, Request,
    RequestLine, ServerLine, Started, WireError,
};
use crate::rpc::{LineError, encode_line, first_line, read_line, write_line};

/// The longest line the client accepts from a daemon (listings of many records are long).
const MAX_ANSWER_BYTES: usize = 512 << 20;

/// The calls waiting for the daemon's answers.
type Calls = crate::rpc::Calls<Result<Reply, WireError>>;

struct Connection {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    calls: Arc<Calls>,
    /// Made on the first `subscribe`: a channel of 4,096 events costs a
    /// command that never subscribes a noticeable part of its start.
    events: Arc<OnceLock<broadcast::Sender<Event>>>,
    subscribed: AtomicBool,
    /// Set by `subscribe` until its request is written: the next line
    /// written, whoever writes it, is that request, so no call made after
    /// `subscribe` reaches the daemon before it (and no event is missed).
    subscribe_unsent: AtomicBool,
    /// Set once the daemon has closed the connection (it closes one that
    /// stays idle): a call not yet sent can then go to a new one safely.
    closed: Arc<AtomicBool>,
    /// For a connection whose hello is checked after its first call went
    /// out ([`DaemonClient::connect_early`]).
    early: Option<Arc<Early>>,
}

/// What a connection that did not wait for the daemon's hello knows of it.
struct Early {
    /// The reader's verdict on the daemon's hello: `None` until it has
    /// read it, then `Ok`, or why it failed.
    verdict: tokio::sync::watch::Sender<Option<Result<(), HelloFailed>>>,
    /// How to get another connection, for the calls the daemon cannot have
    /// read.
    again: Connector,
    /// The connection got through `again`, once.
    next: tokio::sync::OnceCell<Result<DaemonClient, ManagerError>>,
    /// Set once `next`'s events go to this connection's subscribers.
    forwarding: AtomicBool,
}

/// Why a daemon's hello did not come.
#[derive(Clone)]
struct HelloFailed {
    /// What the calls on the connection fail with.
    error: ManagerError,
    /// The daemon read none of the calls, and another connection may: it
    /// closed this one before its hello, or can no longer send one. A
    /// daemon reads requests only once its hello is sent.
    go_elsewhere: bool,
}

/// How a client gets a connection to the daemon: a
/// [`Reconnecting`](super::Reconnecting) one, the first and a new one each
/// time the daemon went away; an early one
/// ([`DaemonClient::connect_early`]), the one its calls go to when the
/// daemon said no hello.
pub type Connector = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<DaemonClient, ManagerError>> + Send>>
        + Send
        + Sync,
>;

/// A connection to a bpm daemon. Cheap to clone; calls may run concurrently.
#[derive(Clone)]
pub struct DaemonClient {
    inner: Arc<Connection>,
}

/// An answer such as most calls get (a record, with the parts most
/// records have), for [`warm_answer_decoder`].
const TYPICAL_ANSWER: &str = concat!(
    r#"{"id":1,"ok":{"record":{"id":"01a21db3-ee1d-703d-a6ab-8b73455e1a46","node":"warm","#,
    r#""spec":{"command":{"argv":["sleep","1"]},"name":"warm","kind":"custom","cwd":"/","#,
    r#""env":{"HOME":"/root","PATH":"/usr/bin:/bin"},"stdin":"closed","session":null,"#,
    r#""parent":null,"group":null,"priority":0,"dependencies":[],"delay":null,"timeout":null,"#,
    r#""stop":{"signal":"TERM","grace":"5s"},"restart":{"mode":"never","max_restarts":null,"#,
    r#""backoff":{"initial":"500ms","factor":2.0,"max":"1m"}},"readiness":{"check":{"by":"none"},"#,
    r#""timeout":null},"idle_after":null,"labels":{"team":"core"},"metadata":{},"on_exit":null,"#,
    r#""request":{"id":"01a21db3-ee1c-723c-a60b-59f08e2b26ba","index":0}},"state":"failed","#,
    r#""started_at":"2026-11-27T15:51:00.896Z","ended_at":"2026-11-27T15:51:01.896Z","#,
    r#""exit":{"code":3},"error":"exit code 3","created_at":"2026-11-27T15:51:00.893Z","#,
    r#""updated_at":"2026-11-27T15:51:01.896Z","progress":null,"result":null,"restarts":0,"#,
    r#""attempts":[],"restarted_from":null,"version":5}}}"#
);

/// Decodes [`TYPICAL_ANSWER`], once per process, while the first call
/// waits for the daemon. A command is a new process: the code that decodes
/// a record is not yet in its memory, and paging it in cost `bpm wait` 26
/// page faults after the answer had come (9 with this), and half a
/// millisecond of the time from a process's end to the shell. Done while
/// the daemon works (a spawn, the round trip, a process's life), the answer
/// finds that code in place; an answer that comes first waits for it, but
/// would have paid the same faults.
fn warm_answer_decoder() {
    static WARM: std::sync::Once = std::sync::Once::new();
    WARM.call_once(|| {
        // The reader decodes bytes (`from_slice`), so this takes its path.
        let line = serde_json::from_slice::<ServerLine>(TYPICAL_ANSWER.as_bytes());
        drop(std::hint::black_box(line));
    });
}

/// How long a daemon may take to say hello.
const HELLO_WITHIN: Duration = Duration::from_secs(5);

/// Why a call fails on a connection the daemon closed.
const CLOSED: &str = "the daemon closed the connection";

fn lost(e: impl std::fmt::Display) -> ManagerError {
    ManagerError::Connection(format!("lost the connection to the bpm daemon: {e}"))
}

/// What a daemon's first line on a connection said.
enum Greeting {
    /// Its hello: it reads the calls that follow.
    Hello,
    /// Its refusal of the connection, in place of the hello (a protocol
    /// it does not speak, too many connections): it reads nothing more.
    Refused(ManagerError),
    /// Something that is not bpm's protocol.
    NotBpm,
}

/// What a connection fails with when its peer's first line is not bpm's.
const NOT_BPM: &str = "the handshake answer is not bpm's protocol";

/// Reads the daemon's first line.
fn check_hello(line: &[u8]) -> Greeting {
    if serde_json::from_slice::<Hello>(line).is_ok() {
        return Greeting::Hello;
    }
    match serde_json::from_slice::<ServerLine>(line) {
        Ok(ServerLine::Answer { error: Some(e), .. }) => Greeting::Refused(e.into()),
        _ => Greeting::NotBpm,
    }
}

/// Reads the daemon's hello on a connection whose first call may already
/// have gone out.
async fn read_hello(reader: &mut BufReader<OwnedReadHalf>) -> Result<(), HelloFailed> {
    let failed = |error, go_elsewhere| {
        Err(HelloFailed {
            error,
            go_elsewhere,
        })
    };
    match tokio::time::timeout(HELLO_WITHIN, read_line(reader, MAX_ANSWER_BYTES)).await {
        Ok(Ok(Some(line))) => match check_hello(&line) {
            Greeting::Hello => Ok(()),
            // The daemon read the hello and nothing after it: the request
            // is what it could not read.
            Greeting::Refused(ManagerError::Connection(why)) => {
                failed(ManagerError::BadRequest(why), false)
            }
            Greeting::Refused(other) => failed(other, false),
            Greeting::NotBpm => failed(lost(NOT_BPM), false),
        },
        Ok(Err(LineError::TooLarge)) => failed(lost(NOT_BPM), false),
        // Ended before a whole hello: what a daemon sends before it reads
        // a request would have been read first. It is gone or going (a
        // kill leaves its socket open while its threads end).
        Ok(Ok(None) | Err(LineError::Truncated | LineError::Io(_))) => failed(
            lost("the daemon closed the connection before its hello"),
            true,
        ),
        Err(_) => {
            // Shut the connection both ways: a daemon that has not yet
            // sent its hello then cannot, and reads nothing after it; a
            // hello that came at the last moment is still read, and the
            // calls may have been carried out.
            let stream: &UnixStream = reader.get_ref().as_ref();
            let _ = rustix::net::shutdown(stream, rustix::net::Shutdown::Both);
            match read_line(reader, MAX_ANSWER_BYTES).await {
                Ok(Some(line)) if matches!(check_hello(&line), Greeting::Hello) => failed(
                    lost(format!("the daemon said hello after {HELLO_WITHIN:?}")),
                    false,
                ),
                _ => failed(
                    ManagerError::Connection(format!(
                        "the bpm daemon did not say hello within {HELLO_WITHIN:?}"
                    )),
                    true,
                ),
            }
        }
    }
}

impl DaemonClient {
    /// Connects to the daemon listening on `socket` and checks that it speaks this protocol.
    ///
    /// # Errors
    /// [`ManagerError::Connection`] if nothing listens there, or it does not answer the handshake;
    /// also [`ManagerError::Connection`], naming both versions, if it speaks another protocol.
    pub async fn connect(socket: &Path, software: &str) -> Result<Self, ManagerError> {
        let (mut reader, write) = Self::say_hello(socket, software).await?;
        let line = first_line(&mut reader, HELLO_WITHIN, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| {
                ManagerError::Connection(format!("the bpm daemon did not say hello: {e}"))
            })?;
        match check_hello(&line) {
            Greeting::Hello => Ok(Self::serve(reader, write, None)),
            Greeting::Refused(e) => Err(e),
            Greeting::NotBpm => Err(lost(NOT_BPM)),
        }
    }

    /// Connects to the daemon listening on `socket`, says hello, and
    /// returns without waiting for the daemon's: the first call's request
    /// follows the hello at once, and the daemon's hello is checked as it
    /// arrives, ahead of the answers. This spares each command a round
    /// trip before its first request. A daemon reads requests only after
    /// it has sent its hello, so a request sent early is never carried out
    /// by a daemon that did not:
    /// - one that speaks another protocol answers the hello with an error
    ///   and closes;
    /// - one that closes the connection before its hello (it is being
    ///   killed, or stops) read nothing, and the calls go to a connection
    ///   got through `again`, which may start a daemon;
    /// - one that says nothing for 5 s gets the connection shut both ways
    ///   first, so it cannot send its hello (nor read on) after that; the
    ///   calls then go through `again` too.
    ///
    /// # Errors
    /// [`ManagerError::Connection`] if nothing listens there. Calls on the
    /// connection fail with [`ManagerError::BadRequest`], naming both
    /// protocols, if the daemon speaks another one (and with what else it
    /// refused the connection for, such as too many connections); with
    /// [`ManagerError::Connection`] if it answers with something that is not
    /// bpm's protocol, or says hello too late (the calls may have been
    /// carried out then), or with what `again` fails with.
    pub async fn connect_early(
        socket: &Path,
        software: &str,
        again: Connector,
    ) -> Result<Self, ManagerError> {
        let (reader, write) = Self::say_hello(socket, software).await?;
        let early = Early {
            verdict: tokio::sync::watch::channel(None).0,
            again,
            next: tokio::sync::OnceCell::new(),
            forwarding: AtomicBool::new(false),
        };
        Ok(Self::serve(reader, write, Some(Arc::new(early))))
    }

    /// Connects and writes the client's hello.
    async fn say_hello(
        socket: &Path,
        software: &str,
    ) -> Result<(BufReader<OwnedReadHalf>, OwnedWriteHalf), ManagerError> {
        let stream = UnixStream::connect(socket).await.map_err(|e| {
            ManagerError::Connection(format!(
                "cannot reach the bpm daemon at {}: {e}",
                socket.display()
            ))
        })?;
        let (read, mut write) = stream.into_split();
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            software: software.to_owned(),
        };
        write_line(&mut write, &hello).await.map_err(lost)?;
        Ok((BufReader::new(read), write))
    }

    /// The client over a connection whose hello was said: a task reads the
    /// daemon's lines (its hello first, for an `early` connection).
    fn serve(
        mut reader: BufReader<OwnedReadHalf>,
        write: OwnedWriteHalf,
        early: Option<Arc<Early>>,
    ) -> Self {
        let calls = Arc::new(Calls::new(1));
        let events: Arc<OnceLock<broadcast::Sender<Event>>> = Arc::new(OnceLock::new());
        let closed = Arc::new(AtomicBool::new(false));
        let (p, ev, c, e) = (calls.clone(), events.clone(), closed.clone(), early.clone());
        tokio::spawn(async move {
            if let Some(early) = e {
                let verdict = read_hello(&mut reader).await;
                let failed = verdict.is_err();
                // Before the calls end: each then finds why.
                early.verdict.send_replace(Some(verdict));
                if failed {
                    c.store(true, Ordering::SeqCst);
                    p.close();
                    return;
                }
            }
            while let Ok(Some(line)) = read_line(&mut reader, MAX_ANSWER_BYTES).await {
                match serde_json::from_slice::<ServerLine>(&line) {
                    Ok(ServerLine::Answer { id, ok, error }) => {
                        let result = match (ok, error) {
                            (Some(reply), _) => Ok(reply),
                            (None, Some(e)) => Err(e),
                            (None, None) => Err(WireError::from(ManagerError::Connection(
                                "the daemon answered with neither ok nor error".into(),
                            ))),
                        };
                        p.answer(id, result);
                    }
                    Ok(ServerLine::Event { event }) => {
                        if let Some(tx) = ev.get() {
                            let _ = tx.send(*event);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "unreadable line from the daemon"),
                }
            }
            // Every waiting call learns the connection is gone.
            c.store(true, Ordering::SeqCst);
            p.close();
        });
        DaemonClient {
            inner: Arc::new(Connection {
                writer: tokio::sync::Mutex::new(write),
                calls,
                events,
                subscribed: AtomicBool::new(false),
                subscribe_unsent: AtomicBool::new(false),
                closed,
                early,
            }),
        }
    }

    /// Whether the daemon has closed this connection: nothing sent on it
    /// from now on reaches the daemon.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    async fn request(&self, request: Request) -> Result<Reply, ManagerError> {
        let (id, rx) = self.inner.calls.open();
        let call = RequestLine { id, request };
        let line = encode_line(&call).map_err(|e| {
            self.inner.calls.cancel(id);
            ManagerError::Connection(format!("cannot encode the request: {e}"))
        })?;
        let request = call.request;
        if line.len() > MAX_REQUEST_BYTES {
            self.inner.calls.cancel(id);
            return Err(ManagerError::TooLarge {
                bytes: line.len(),
                limit: MAX_REQUEST_BYTES,
            });
        }
        // The reader marks the connection closed before it ends the calls
        // waiting: a call opened after that would wait for ever.
        if self.inner.closed.load(Ordering::SeqCst) {
            self.inner.calls.cancel(id);
            return self.elsewhere(request, lost(CLOSED)).await;
        }
        if let Err(e) = self.write(&line).await {
            // A daemon that closed an early connection may have done so
            // before the request went out: the reader has its reason, and
            // ends the call once it has read it.
            if self.inner.early.is_some() {
                let _ = tokio::time::timeout(HELLO_WITHIN, rx).await;
            }
            return self.elsewhere(request, e).await;
        }
        warm_answer_decoder();
        match rx.await {
            Ok(answer) => answer.map_err(ManagerError::from),
            Err(_) => self.elsewhere(request, lost(CLOSED)).await,
        }
    }

    /// A call this connection could not carry: made on the next connection
    /// when the daemon cannot have read it (it did not say hello on this
    /// one), or failed with why the hello failed, or with `error`.
    async fn elsewhere(
        &self,
        request: Request,
        error: ManagerError,
    ) -> Result<Reply, ManagerError> {
        let Some(early) = &self.inner.early else {
            return Err(error);
        };
        let failed = early.verdict.borrow().clone();
        match failed {
            Some(Err(HelloFailed {
                go_elsewhere: true, ..
            })) => {
                let next = self.next(early).await?;
                Box::pin(next.request(request)).await
            }
            Some(Err(failed)) => Err(failed.error),
            _ => Err(error),
        }
    }

    /// The connection that takes the calls of an early one whose daemon
    /// said no hello; this one's subscribers hear its events.
    async fn next(&self, early: &Early) -> Result<DaemonClient, ManagerError> {
        let next = early.next.get_or_init(|| (early.again)()).await.clone()?;
        if self.inner.subscribed.load(Ordering::SeqCst) {
            self.forward_events(early, &next);
        }
        Ok(next)
    }

    /// Passes `next`'s events on to this connection's subscribers, once.
    fn forward_events(&self, early: &Early, next: &DaemonClient) {
        let Some(tx) = self.inner.events.get().cloned() else {
            return;
        };
        if early.forwarding.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut rx = next.subscribe();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(event) => {
                        let _ = tx.send(event);
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Writes `line`, after the subscription if one is waiting to be sent.
    async fn write(&self, line: &[u8]) -> Result<(), ManagerError> {
        let mut writer = self.inner.writer.lock().await;
        if self.inner.subscribe_unsent.swap(false, Ordering::SeqCst) {
            // Its answer (`done`) has no one waiting, and is dropped.
            let (id, _) = self.inner.calls.open();
            let subscribe = RequestLine {
                id,
                request: DaemonRequest::Subscribe.into(),
            };
            write_line(&mut *writer, &subscribe).await.map_err(lost)?;
        }
        writer.write_all(line).await.map_err(lost)
    }

    async fn call(&self, call: Call) -> Result<Reply, ManagerError> {
        self.request(Request::Manager(call)).await
    }

    /// The daemon's pid, version, store and counts.
    ///
    /// # Errors
    /// As any call: the connection, or the daemon's own error.
    pub async fn status(&self) -> Result<DaemonStatus, ManagerError> {
        self.request(DaemonRequest::Status.into())
            .await?
            .into_status()
    }

    /// Stops the daemon; with `kill_all`, its processes first.
    ///
    /// # Errors
    /// As any call.
    pub async fn shutdown(&self, kill_all: bool) -> Result<(), ManagerError> {
        self.request(DaemonRequest::Shutdown { kill_all }.into())
            .await?
            .into_done()
    }
}

/// The most ids in one `wait_many` request (about 400 KB of JSON).
const WAIT_MANY_IDS: usize = 10_000;

impl DaemonClient {
    /// Sends `specs` as `start_many` requests of up to half the daemon's
    /// line limit each. Variables every spec shares (as the command line's
    /// batches do) travel once per request, not once per spec.
    async fn submit_many(
        &self,
        mut specs: Vec<ProcessSpec>,
        brief: bool,
    ) -> Result<Vec<Started>, ManagerError> {
        let shared = specs.first().map(|s| s.env.clone()).filter(|first| {
            !first.is_empty()
                && specs
                    .iter()
                    .all(|s| Arc::ptr_eq(&s.env, first) || s.env == *first)
        });
        if shared.is_some() {
            let none = Arc::new(BTreeMap::new());
            for spec in &mut specs {
                spec.env = none.clone();
            }
        }
        let mut chunks: Vec<(Vec<ProcessSpec>, usize)> = Vec::new();
        let env_bytes = shared
            .as_ref()
            .map_or(0, |e| serde_json::to_vec(e).map_or(0, |b| b.len()));
        let room = (MAX_REQUEST_BYTES / 2).saturating_sub(env_bytes);
        for spec in specs {
            let len = serde_json::to_vec(&spec).map_or(0, |b| b.len()) + 1;
            match chunks.last_mut() {
                Some((chunk, size)) if *size + len <= room => {
                    chunk.push(spec);
                    *size += len;
                }
                _ => chunks.push((vec![spec], len)),
            }
        }
        let mut out = Vec::new();
        let mut chunks = chunks.into_iter();
        while let Some((chunk, _)) = chunks.next() {
            let n = chunk.len();
            let call = Call::StartMany {
                specs: chunk,
                env: shared.clone(),
                brief,
            };
            match self.call(call).await {
                Ok(reply) => out.extend(reply.into_started(n)?),
                // Nothing of the batch was made, or the connection broke
                // (the caller asks the next daemon what exists).
                Err(e) if out.is_empty() || matches!(e, ManagerError::Connection(_)) => {
                    return Err(e);
                }
                // Refused after earlier requests of the batch were made:
                // those stand (they may be running), and are answered; this
                // request and the ones after it are answered as refused,
                // and not sent.
                Err(e) => {
                    let refused = WireError::from(e);
                    let left: usize = n + chunks.by_ref().map(|(c, _)| c.len()).sum::<usize>();
                    out.extend((0..left).map(|_| Started::Error(refused.clone())));
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl ProcessManager for DaemonClient {
    async fn start(&self, spec: ProcessSpec) -> Result<ProcessRecord, ManagerError> {
        // As the engine would, and before a spec that cannot be encoded
        // (a path that is not UTF-8) fails as a broken request.
        spec.validate()?;
        let spec = Box::new(spec);
        self.call(Call::Start { spec }).await?.into_record()
    }
    async fn start_many(
        &self,
        specs: Vec<ProcessSpec>,
    ) -> Result<Vec<Result<ProcessRecord, ManagerError>>, ManagerError> {
        let started = self.submit_many(specs, false).await?;
        Ok(started.into_iter().map(Started::into_record).collect())
    }
    async fn start_many_ids(
        &self,
        specs: Vec<ProcessSpec>,
    ) -> Result<Vec<Result<ProcessId, ManagerError>>, ManagerError> {
        let started = self.submit_many(specs, true).await?;
        Ok(started.into_iter().map(Started::into_id).collect())
    }
    async fn track(&self, spec: ProcessSpec) -> Result<ProcessRecord, ManagerError> {
        let spec = Box::new(spec);
        self.call(Call::Track { spec }).await?.into_record()
    }
    async fn get(&self, id: ProcessId) -> Result<ProcessRecord, ManagerError> {
        self.call(Call::Get { id }).await?.into_record()
    }
    async fn list(&self, filter: ListFilter) -> Result<Vec<ProcessRecord>, ManagerError> {
        self.call(Call::List { filter }).await?.into_records()
    }
    async fn progress(
        &self,
        id: ProcessId,
        percent: Percent,
        message: Option<String>,
    ) -> Result<ProcessRecord, ManagerError> {
        let call = Call::Progress {
            id,
            percent,
            message,
        };
        self.call(call).await?.into_record()
    }
    async fn complete(
        &self,
        id: ProcessId,
        result: Option<serde_json::Value>,
    ) -> Result<Completion, ManagerError> {
        self.call(Call::Complete { id, result })
            .await?
            .into_completion()
    }
    async fn fail(&self, id: ProcessId, error: String) -> Result<Completion, ManagerError> {
        self.call(Call::Fail { id, error }).await?.into_completion()
    }
    async fn stop(
        &self,
        id: ProcessId,
        options: StopOptions,
    ) -> Result<ProcessRecord, ManagerError> {
        let StopOptions { force, grace } = options;
        self.call(Call::Stop { id, force, grace })
            .await?
            .into_record()
    }
    async fn stop_level(
        &self,
        level: usize,
        options: StopOptions,
    ) -> Result<Vec<ProcessRecord>, ManagerError> {
        let StopOptions { force, grace } = options;
        let call = Call::StopLevel {
            level,
            force,
            grace,
        };
        self.call(call).await?.into_records()
    }
    async fn pause(&self, id: ProcessId) -> Result<ProcessRecord, ManagerError> {
        self.call(Call::Pause { id }).await?.into_record()
    }
    async fn resume(&self, id: ProcessId) -> Result<ProcessRecord, ManagerError> {
        self.call(Call::Resume { id }).await?.into_record()
    }
    async fn restart(&self, id: ProcessId) -> Result<ProcessRecord, ManagerError> {
        self.call(Call::Restart { id }).await?.into_record()
    }
    async fn wait(
        &self,
        id: ProcessId,
        timeout: Option<Duration>,
    ) -> Result<ProcessRecord, ManagerError> {
        let timeout_ms = timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        self.call(Call::Wait { id, timeout_ms })
            .await?
            .into_record()
    }
    async fn wait_many(
        &self,
        ids: &[ProcessId],
        timeout: Option<Duration>,
    ) -> Result<(), ManagerError> {
        // Requests well under the daemon's line limit; the deadline covers them all.
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        for chunk in ids.chunks(WAIT_MANY_IDS) {
            let timeout_ms = deadline.map(|d| {
                let left = d.saturating_duration_since(tokio::time::Instant::now());
                u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
            });
            let ids = chunk.to_vec();
            self.call(Call::WaitMany { ids, timeout_ms })
                .await?
                .into_done()?;
        }
        Ok(())
    }
    async fn read_output(
        &self,
        id: ProcessId,
        query: OutputQuery,
    ) -> Result<OutputChunk, ManagerError> {
        self.call(Call::ReadOutput { id, query })
            .await?
            .into_output()
    }
    async fn wait_output(
        &self,
        id: ProcessId,
        after: Cursor,
        within: Duration,
    ) -> Result<(), ManagerError> {
        let within_ms = u64::try_from(within.as_millis()).unwrap_or(u64::MAX);
        self.call(Call::WaitOutput {
            id,
            after,
            within_ms,
        })
        .await?
        .into_done()
    }
    async fn send_input(&self, id: ProcessId, data: Vec<u8>) -> Result<(), ManagerError> {
        self.call(Call::SendInput { id, data }).await?.into_done()
    }
    async fn remove(&self, id: ProcessId) -> Result<(), ManagerError> {
        self.call(Call::Remove { id }).await?.into_done()
    }
    async fn resource_usage(&self) -> Result<Vec<ResourceUsage>, ManagerError> {
        self.call(Call::Usage).await?.into_usage()
    }
    async fn check_fence(&self, id: ProcessId, token: u64) -> Result<Option<String>, ManagerError> {
        self.call(Call::CheckFence { id, token })
            .await?
            .into_fence()
    }
    async fn hold_session(
        &self,
        session: bpm_domain::SessionId,
        holder: u32,
    ) -> Result<(), ManagerError> {
        self.call(Call::HoldSession { session, holder })
            .await?
            .into_done()
    }
    async fn release_session(
        &self,
        session: bpm_domain::SessionId,
        holder: u32,
    ) -> Result<(), ManagerError> {
        self.call(Call::ReleaseSession { session, holder })
            .await?
            .into_done()
    }
    fn subscribe(&self) -> broadcast::Receiver<Event> {
        let rx = self
            .inner
            .events
            .get_or_init(|| broadcast::channel(4096).0)
            .subscribe();
        if !self.inner.subscribed.swap(true, Ordering::SeqCst) {
            self.inner.subscribe_unsent.store(true, Ordering::SeqCst);
            // Sent now, or by the next call if that comes first.
            let client = self.clone();
            tokio::spawn(async move {
                let mut written = client.write(&[]).await.map(|()| client.clone());
                if let Some(early) = client.inner.early.clone() {
                    // A daemon that said no hello read no subscription:
                    // the next connection's events are heard instead.
                    let mut verdict = early.verdict.subscribe();
                    let settled = verdict.wait_for(Option::is_some).await.map(|v| v.clone());
                    if let Ok(Some(Err(HelloFailed {
                        go_elsewhere: true, ..
                    }))) = settled
                    {
                        written = client.next(&early).await;
                    }
                }
                if let Err(e) = written {
                    tracing::warn!(error = %e, "could not subscribe to the daemon's events");
                }
            });
        }
        rx
    }
    async fn recent_events(&self) -> Result<Vec<Event>, ManagerError> {
        self.call(Call::RecentEvents).await?.into_events()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_typical_answer_is_a_record_as_the_daemon_writes_one_today() {
        let line: ServerLine =
            serde_json::from_slice(TYPICAL_ANSWER.as_bytes()).expect("the typical answer decodes");
        assert!(
            matches!(
                &line,
                ServerLine::Answer {
                    ok: Some(Reply::Record(_)),
                    error: None,
                    ..
                }
            ),
            "a record answer: {line:?}"
        );
        // Written again, it is the same line: a field the records gained
        // or lost shows here, and the sample is brought up to date.
        let again = serde_json::to_value(&line).expect("encodes");
        let sample: serde_json::Value = serde_json::from_str(TYPICAL_ANSWER).expect("json");
        assert_eq!(again, sample);
    }
}
