//! The client's side of the control socket: a `ProcessManager` backed by a daemon.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bpm_domain::{Event, ListFilter, Percent, ProcessId, ProcessRecord, ProcessSpec};
use bpm_ports::{
    Completion, ManagerError, OutputChunk, OutputQuery, ProcessManager, ResourceUsage, StopOptions,
};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::broadcast;

use super::wire::{
    Call, DaemonRequest, DaemonStatus, Hello, MAX_REQUEST_BYTES, PROTOCOL_VERSION, Reply, Request,
    RequestLine, ServerLine, Started, WireError,
};
use crate::rpc::{encode_line, first_line, read_line, write_line};

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
    /// Why the daemon refused the connection, when its hello was checked
    /// after the first call went out ([`DaemonClient::connect_early`]):
    /// what every call on it then fails with.
    refused: Arc<OnceLock<ManagerError>>,
}

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

/// How [`lost`]'s messages start.
const LOST: &str = "lost the connection to the bpm daemon";

fn lost(e: impl std::fmt::Display) -> ManagerError {
    ManagerError::Connection(format!("{LOST}: {e}"))
}

/// Checks the daemon's first line: its hello, or its refusal of the
/// connection (a protocol it does not speak, too many connections).
fn check_hello(line: &[u8]) -> Result<(), ManagerError> {
    if serde_json::from_slice::<Hello>(line).is_ok() {
        return Ok(());
    }
    if let Ok(ServerLine::Answer { error: Some(e), .. }) =
        serde_json::from_slice::<ServerLine>(line)
    {
        return Err(e.into());
    }
    Err(lost("the handshake answer is not bpm's protocol"))
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
        check_hello(&line)?;
        Ok(Self::serve(reader, write, None))
    }

    /// Connects to the daemon listening on `socket`, says hello, and
    /// returns without waiting for the daemon's: the first call's request
    /// follows the hello at once, and the daemon's hello is checked as it
    /// arrives, ahead of the answers. This spares each command a round
    /// trip before its first request. A daemon that speaks another
    /// protocol reads nothing after the hello (it answers with an error in
    /// place of its own, and closes), so a request sent early never
    /// reaches it.
    ///
    /// # Errors
    /// [`ManagerError::Connection`] if nothing listens there. Calls on the
    /// connection fail with [`ManagerError::BadRequest`], naming both
    /// protocols, if the daemon speaks another one (and with what else it
    /// refused the connection for, such as too many connections); with
    /// [`ManagerError::Connection`] if it does not say hello within 5 s
    /// or answers with something that is not bpm's protocol.
    pub async fn connect_early(socket: &Path, software: &str) -> Result<Self, ManagerError> {
        let (reader, write) = Self::say_hello(socket, software).await?;
        Ok(Self::serve(reader, write, Some(Arc::new(OnceLock::new()))))
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
    /// daemon's lines (its hello first, when `early` holds where its refusal goes).
    fn serve(
        mut reader: BufReader<OwnedReadHalf>,
        write: OwnedWriteHalf,
        early: Option<Arc<OnceLock<ManagerError>>>,
    ) -> Self {
        let calls = Arc::new(Calls::new(1));
        let events: Arc<OnceLock<broadcast::Sender<Event>>> = Arc::new(OnceLock::new());
        let closed = Arc::new(AtomicBool::new(false));
        let refused = early.clone().unwrap_or_default();
        let (p, ev, c) = (calls.clone(), events.clone(), closed.clone());
        tokio::spawn(async move {
            if let Some(refused) = early {
                let checked = match first_line(&mut reader, HELLO_WITHIN, MAX_ANSWER_BYTES).await {
                    Ok(line) => check_hello(&line).map_err(|e| match e {
                        // The daemon read the hello and nothing after it.
                        ManagerError::Connection(why) if !why.starts_with(LOST) => {
                            ManagerError::BadRequest(why)
                        }
                        other => other,
                    }),
                    Err(e) => Err(ManagerError::Connection(format!(
                        "the bpm daemon did not say hello: {e}"
                    ))),
                };
                if let Err(e) = checked {
                    let _ = refused.set(e);
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
                refused,
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
        let line = encode_line(&RequestLine { id, request })
            .map_err(|e| ManagerError::Connection(format!("cannot encode the request: {e}")))?;
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
            return Err(self.gone());
        }
        if let Err(e) = self.write(&line).await {
            // A daemon that refused the connection may have closed it
            // before the request went out: the reader has its reason, and
            // ends the call once it has read it.
            let _ = tokio::time::timeout(HELLO_WITHIN, rx).await;
            return Err(self.inner.refused.get().cloned().unwrap_or(e));
        }
        warm_answer_decoder();
        match rx.await {
            Ok(answer) => answer.map_err(ManagerError::from),
            Err(_) => Err(self.gone()),
        }
    }

    /// Why calls on a closed connection fail: the daemon's refusal of it,
    /// or its close.
    fn gone(&self) -> ManagerError {
        self.inner
            .refused
            .get()
            .cloned()
            .unwrap_or_else(|| lost("the daemon closed the connection"))
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
                if let Err(e) = client.write(&[]).await {
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
