//! The daemon's side: a `ProcessSpawner` whose processes the keeper runs.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bpm_domain::{ProcessId, Signal};
use bpm_ports::{ProcessNotice, ProcessSpawner, SpawnError, SpawnRequest, Spawned};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;

use super::fds::{self, FdReader};
use super::{
    ENV_SLOTS, KEEPER_PROTOCOL, KeeperHello, KeeperLine, KeeperReply, KeeperRequest, Op, Start,
};
use crate::rpc::{read_line, write_line};

/// The calls waiting for the keeper's answers.
type Calls = crate::rpc::Calls<Result<KeeperReply, SpawnError>>;

struct Shared {
    calls: Calls,
    /// Processes started or re-attached through this connection whose exit
    /// has not arrived, with their pids.
    watched: Mutex<HashMap<ProcessId, u32>>,
    /// Whether the end of the connection reports every watched process
    /// lost (else [`KeeperSpawner::orphans`] tells who takes them over).
    lose_on_death: std::sync::atomic::AtomicBool,
    /// Set once the keeper has closed the connection (it died).
    closed: std::sync::atomic::AtomicBool,
    /// The reading ends of the output pipes of the watched processes, held
    /// so that the pipes outlive the keeper (see the module's documentation).
    pipes: Mutex<HashMap<ProcessId, [OwnedFd; 2]>>,
    /// Processes whose exit arrived (and is queued for the engine).
    exited: Mutex<HashSet<ProcessId>>,
    /// The keeper's sequence number of each exit not yet recorded by the
    /// engine: acknowledged only once it is, so that an exit the daemon
    /// dies holding goes to the next daemon.
    unrecorded: Mutex<HashMap<ProcessId, u64>>,
}

type Notices = mpsc::UnboundedSender<ProcessNotice>;

/// Reads the keeper's lines until it goes: answers to their callers,
/// notices to the engine (acknowledged at once, but for exits, which wait
/// until the engine has recorded them), pipes to hold.
async fn read_keeper(
    mut reader: BufReader<FdReader>,
    received: fds::Received,
    shared: Arc<Shared>,
    tx: Notices,
    acks: mpsc::UnboundedSender<u64>,
) {
    while let Ok(Some(line)) = read_line(&mut reader, 16 << 20).await {
        match serde_json::from_slice::<KeeperLine>(&line) {
            Ok(KeeperLine::Reply { id, ok, err }) => shared.answered(id, ok, err),
            Ok(KeeperLine::Notice { seq, notice }) => {
                if let ProcessNotice::Exited { id, .. } = &notice {
                    tracing::trace!(target: "bpm::hop", %id, "exit received");
                }
                let exit = shared.noticed(seq, &notice);
                let _ = tx.send(notice);
                if !exit {
                    let _ = acks.send(seq);
                }
            }
            Ok(KeeperLine::Pipes { pipes: id }) => {
                let ends = fds::take(&received, 2).and_then(|f| <[OwnedFd; 2]>::try_from(f).ok());
                if let Some(ends) = ends {
                    lock(&shared.pipes).insert(id, ends);
                } else {
                    tracing::warn!(%id, "the keeper said it sent pipes, but none came");
                }
            }
            Ok(KeeperLine::Hello { .. }) => {}
            Err(e) => tracing::warn!(error = %e, "unreadable line from the keeper"),
        }
    }
    shared.keeper_gone(&tx);
}

/// Acknowledges each notice once it is queued for the engine (an exit once
/// the engine has recorded it), so the keeper can let it go.
async fn send_acks(
    writer: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    mut acks: mpsc::UnboundedReceiver<u64>,
) {
    while let Some(seq) = acks.recv().await {
        let ack = KeeperRequest {
            id: 0,
            op: Op::Ack(seq),
        };
        if write_line(&mut *writer.lock().await, &ack).await.is_err() {
            return;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// The keeper answered call `id`.
    fn answered(&self, id: u64, ok: Option<KeeperReply>, err: Option<SpawnError>) {
        let result = match (ok, err) {
            (Some(a), _) => Ok(a),
            (None, Some(e)) => Err(e),
            (None, None) => Err(SpawnError::Os("the keeper answered with nothing".into())),
        };
        self.calls.answer(id, result);
    }

    /// Keeps track of what notice `seq` says; returns whether it is an exit
    /// (acknowledged only once the engine has recorded it).
    fn noticed(&self, seq: u64, notice: &ProcessNotice) -> bool {
        if let ProcessNotice::HandedOver {
            next,
            started: Ok(pid),
            ..
        } = notice
        {
            lock(&self.watched).insert(*next, *pid);
        }
        match notice {
            ProcessNotice::Exited { id, .. } | ProcessNotice::HandedOver { id, .. } => {
                lock(&self.pipes).remove(id);
                lock(&self.unrecorded).insert(*id, seq);
                lock(&self.watched).remove(id);
                lock(&self.exited).insert(*id);
                true
            }
            ProcessNotice::Lost { id, .. } => {
                lock(&self.pipes).remove(id);
                lock(&self.watched).remove(id);
                false
            }
            _ => false,
        }
    }

    /// The keeper is gone: nobody will learn how its processes end, so
    /// they are reported lost (unless they are left to whoever takes over).
    fn keeper_gone(&self, tx: &Notices) {
        self.closed.store(true, Ordering::SeqCst);
        self.calls.close();
        if !self.lose_on_death.load(Ordering::SeqCst) {
            return;
        }
        let orphans: Vec<ProcessId> = lock(&self.watched).drain().map(|(id, _)| id).collect();
        for id in orphans {
            let _ = tx.send(ProcessNotice::Lost {
                id,
                reason: "bpm's keeper process died; the process's end cannot be known".into(),
            });
        }
    }
}

/// The environments this connection has defined in the keeper's slots.
#[derive(Default)]
struct EnvSlots {
    /// Each slot's environment, and when it was last named.
    slots: Vec<(Arc<bpm_domain::Environment>, u64)>,
    uses: u64,
}

impl EnvSlots {
    /// `request` with its environment named by a slot; when the keeper does
    /// not hold that environment yet, the line that defines it is appended
    /// to `lines` (which go out before the start).
    fn start(
        &mut self,
        mut request: SpawnRequest,
        lines: &mut Vec<u8>,
    ) -> Result<Start, SpawnError> {
        if request.env.is_empty() {
            return Ok(Start { env: None, request });
        }
        self.uses += 1;
        // The same map first (the records of one submission share theirs), then an equal one.
        let known = self
            .slots
            .iter()
            .position(|(e, _)| Arc::ptr_eq(e, &request.env))
            .or_else(|| self.slots.iter().position(|(e, _)| **e == *request.env));
        let index = match known {
            Some(i) => i,
            None if self.slots.len() < ENV_SLOTS as usize => {
                self.slots.push((request.env.clone(), 0));
                self.slots.len() - 1
            }
            None => self
                .slots
                .iter()
                .enumerate()
                .min_by_key(|(_, (_, used))| *used)
                .map_or(0, |(i, _)| i),
        };
        let slot = u32::try_from(index).unwrap_or(0);
        if known.is_none() {
            encode(
                lines,
                &KeeperRequest {
                    id: 0,
                    op: Op::Env {
                        slot,
                        vars: request.env.clone(),
                    },
                },
            )?;
        }
        self.slots[index] = (std::mem::take(&mut request.env), self.uses);
        Ok(Start {
            env: Some(slot),
            request,
        })
    }
}

/// What goes to the keeper: an operation, or starts (which name their environments first).
enum Out {
    Op(Op),
    Spawn(Box<SpawnRequest>),
    HandOver(Vec<SpawnRequest>),
}

/// Appends `request` to `lines` as one line.
fn encode(lines: &mut Vec<u8>, request: &KeeperRequest) -> Result<(), SpawnError> {
    serde_json::to_writer(&mut *lines, request).map_err(|e| SpawnError::Os(e.to_string()))?;
    lines.push(b'\n');
    Ok(())
}

/// How long a keeper may take to say which protocol it speaks.
const HELLO_WITHIN: Duration = Duration::from_secs(5);

/// Spawns through the node's keeper process.
pub struct KeeperSpawner {
    keeper: KeeperHello,
    writer: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    /// Acknowledgements for the keeper, sent in order by one task.
    acks: mpsc::UnboundedSender<u64>,
    shared: Arc<Shared>,
    /// Used only with `writer` held, so that slots are defined in the order lines go out.
    envs: Mutex<EnvSlots>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<ProcessNotice>>>,
}

fn gone() -> SpawnError {
    SpawnError::Os("bpm's keeper process is gone".into())
}

impl KeeperSpawner {
    /// Connects to the keeper listening on `socket`.
    ///
    /// # Errors
    /// The socket does not answer; or, with [`std::io::ErrorKind::Unsupported`]
    /// and a message naming the keeper's pid and what to do, the keeper
    /// speaks another protocol or does not say which within 5 s (a keeper
    /// from an older bpm).
    pub async fn connect(socket: &Path) -> std::io::Result<Self> {
        Self::connect_within(socket, HELLO_WITHIN).await
    }

    /// [`connect`](Self::connect), waiting `within` for the keeper's hello.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_within(socket: &Path, within: Duration) -> std::io::Result<Self> {
        let stream = UnixStream::connect(socket).await?;
        let peer = rustix::net::sockopt::socket_peercred(&stream)
            .map_or_else(|_| "?".to_string(), |c| c.pid.as_raw_nonzero().to_string());
        let (read, write) = stream.into_split();
        let (read, received) = FdReader::new(read);
        let mut reader = BufReader::new(read);
        let keeper = hello(&mut reader, within, &peer).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            calls: Calls::new(1),
            watched: Mutex::new(HashMap::new()),
            lose_on_death: std::sync::atomic::AtomicBool::new(true),
            closed: std::sync::atomic::AtomicBool::new(false),
            pipes: Mutex::new(HashMap::new()),
            exited: Mutex::new(HashSet::new()),
            unrecorded: Mutex::new(HashMap::new()),
        });
        let (ack_tx, ack_rx) = mpsc::unbounded_channel::<u64>();
        tokio::spawn(read_keeper(
            reader,
            received,
            shared.clone(),
            tx,
            ack_tx.clone(),
        ));
        let writer = Arc::new(tokio::sync::Mutex::new(write));
        tokio::spawn(send_acks(writer.clone(), ack_rx));
        Ok(KeeperSpawner {
            keeper,
            writer,
            acks: ack_tx,
            shared,
            envs: Mutex::new(EnvSlots::default()),
            rx: Mutex::new(Some(rx)),
        })
    }

    /// Leaves the processes of a keeper that dies to the caller, who finds
    /// them in [`orphans`](Self::orphans), instead of reporting them lost.
    pub fn keep_orphans(&self) {
        self.shared.lose_on_death.store(false, Ordering::SeqCst);
    }

    /// Whether the keeper has closed the connection (it died or exited).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// The processes started or re-attached through this connection whose
    /// end it has not reported, with their pids and the reading ends of
    /// their output pipes; taken, so asked once.
    pub fn orphans(&self) -> Vec<(ProcessId, u32, Option<[OwnedFd; 2]>)> {
        let mut pipes = self
            .shared
            .pipes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.shared
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(id, pid)| (id, pid, pipes.remove(&id)))
            .collect()
    }

    /// Asks the keeper to take over process `pid` of record `id` from a
    /// keeper that died, going on copying its output from `pipes`: whether
    /// it now watches it (`false` if that process has ended).
    ///
    /// # Errors
    /// The keeper is gone.
    pub async fn adopt(
        &self,
        id: ProcessId,
        pid: u32,
        pipes: Option<[OwnedFd; 2]>,
        stand_down: Option<bpm_domain::StopPolicy>,
    ) -> Result<bool, SpawnError> {
        let (call, rx) = self.shared.calls.open();
        let mut line = Vec::new();
        encode(
            &mut line,
            &KeeperRequest {
                id: call,
                op: Op::Adopt {
                    id,
                    pid,
                    pipes: pipes.is_some(),
                    stand_down,
                },
            },
        )?;
        let borrowed: Vec<_> = pipes.iter().flatten().map(AsFd::as_fd).collect();
        {
            let mut writer = self.writer.lock().await;
            fds::send_with_fds(&mut writer, &line, &borrowed)
                .await
                .map_err(|_| gone())?;
        }
        let held = matches!(rx.await.map_err(|_| gone())??, KeeperReply::Held(true));
        if held {
            self.shared
                .watched
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id, pid);
            if let Some(ends) = pipes {
                self.shared
                    .pipes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(id, ends);
            }
        }
        Ok(held)
    }

    /// What the keeper said when this daemon connected: its protocol, bpm version and pid.
    pub fn keeper(&self) -> &KeeperHello {
        &self.keeper
    }

    /// Sends `out` with id 0, which the keeper does not answer.
    async fn send(&self, out: Out) -> Result<(), SpawnError> {
        self.write(0, out).await
    }

    async fn write(&self, id: u64, out: Out) -> Result<(), SpawnError> {
        let mut writer = self.writer.lock().await;
        let mut lines = Vec::new();
        let op = {
            let mut envs = self.envs.lock().unwrap_or_else(PoisonError::into_inner);
            let named = match out {
                Out::Op(op) => Ok(op),
                Out::Spawn(request) => envs
                    .start(*request, &mut lines)
                    .map(|start| Op::Spawn(Box::new(start))),
                Out::HandOver(requests) => requests
                    .into_iter()
                    .map(|r| envs.start(r, &mut lines))
                    .collect::<Result<_, _>>()
                    .map(Op::HandOver),
            };
            named.and_then(|op| encode(&mut lines, &KeeperRequest { id, op }))
        };
        if let Err(e) = op {
            // Slots may have been counted as defined by lines that never went out.
            *self.envs.lock().unwrap_or_else(PoisonError::into_inner) = EnvSlots::default();
            return Err(e);
        }
        writer.write_all(&lines).await.map_err(|_| gone())
    }

    async fn call(&self, out: Out) -> Result<KeeperReply, SpawnError> {
        let (id, rx) = self.shared.calls.open();
        self.write(id, out).await?;
        rx.await.map_err(|_| gone())?
    }
}

#[async_trait]
impl ProcessSpawner for KeeperSpawner {
    async fn spawn(&self, request: SpawnRequest) -> Result<Spawned, SpawnError> {
        let id = request.id;
        tracing::trace!(target: "bpm::hop", %id, "spawn asked");
        match self.call(Out::Spawn(Box::new(request))).await? {
            KeeperReply::Spawned(s) => {
                self.shared
                    .watched
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(id, s.pid);
                Ok(s)
            }
            other => Err(SpawnError::Os(format!("the keeper answered {other:?}"))),
        }
    }

    async fn signal(&self, id: ProcessId, pid: u32, signal: Signal) -> Result<(), SpawnError> {
        self.call(Out::Op(Op::Signal { id, pid, signal }))
            .await
            .map(|_| ())
    }

    async fn write_input(&self, id: ProcessId, data: Vec<u8>) -> Result<(), SpawnError> {
        self.call(Out::Op(Op::WriteInput { id, data }))
            .await
            .map(|_| ())
    }

    async fn watch_again(&self, request: SpawnRequest) -> Result<(), SpawnError> {
        let start = Start { env: None, request };
        self.call(Out::Op(Op::WatchAgain(Box::new(start))))
            .await
            .map(|_| ())
    }

    async fn run_stop_command(
        &self,
        request: SpawnRequest,
        command: String,
        within: Duration,
    ) -> Result<(), SpawnError> {
        let start = Box::new(Start { env: None, request });
        let within_ms = u64::try_from(within.as_millis()).unwrap_or(u64::MAX);
        self.call(Out::Op(Op::StopCommand {
            start,
            command,
            within_ms,
        }))
        .await
        .map(|_| ())
    }

    async fn wait_output(
        &self,
        id: ProcessId,
        after: bpm_ports::Cursor,
        within: Duration,
    ) -> Result<(), SpawnError> {
        let within_ms = u64::try_from(within.as_millis()).unwrap_or(u64::MAX);
        match self
            .call(Out::Op(Op::WaitOutput {
                id,
                after: after.0,
                within_ms,
            }))
            .await
        {
            Ok(_) => Ok(()),
            // A keeper before this op cannot read it: look again soon.
            Err(SpawnError::Invalid(_)) => {
                bpm_ports::look_again(within).await;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn reattach(&self, id: ProcessId, pid: u32) -> Result<bool, SpawnError> {
        if self
            .shared
            .exited
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&id)
        {
            // Its exit is already queued for the engine.
            return Ok(true);
        }
        match self.call(Out::Op(Op::Reattach { id, pid })).await? {
            KeeperReply::Held(true) => {
                self.shared
                    .watched
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(id, pid);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn hands_over(&self) -> bool {
        true
    }

    async fn hand_over(&self, requests: Vec<SpawnRequest>) -> Result<(), SpawnError> {
        // Not answered: the loop goes on at once, and the connection keeps
        // it ahead of every later request.
        self.send(Out::HandOver(requests)).await
    }

    async fn hold_lease(&self, within: Duration) -> Result<(), SpawnError> {
        let ms = u64::try_from(within.as_millis()).unwrap_or(u64::MAX);
        self.send(Out::Op(Op::HoldLease { ms })).await
    }

    async fn withdraw(&self) -> Result<Vec<ProcessId>, SpawnError> {
        match self.call(Out::Op(Op::Withdraw)).await? {
            KeeperReply::Withdrawn(ids) => Ok(ids),
            other => Err(SpawnError::Os(format!("the keeper answered {other:?}"))),
        }
    }

    fn exit_recorded(&self, id: ProcessId) {
        let seq = self
            .shared
            .unrecorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        if let Some(seq) = seq {
            let _ = self.acks.send(seq);
        }
    }

    fn notices(&self) -> Option<mpsc::UnboundedReceiver<ProcessNotice>> {
        self.rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Reads the keeper's hello and checks its protocol.
async fn hello(
    reader: &mut BufReader<FdReader>,
    within: Duration,
    peer: &str,
) -> std::io::Result<KeeperHello> {
    use std::io::{Error, ErrorKind};
    let refuse = |who: String, pid: &str| {
        Error::new(
            ErrorKind::Unsupported,
            format!(
                "{who}. It still runs its processes; it exits on its own 10 s after the last \
                 one ends and no daemon is connected. To start over now, kill it (kill {pid}): \
                 its processes keep running, but bpm loses track of them"
            ),
        )
    };
    let older = || {
        refuse(
            format!(
                "bpm's keeper (pid {peer}) did not say which protocol it speaks: it is from an \
                 older bpm"
            ),
            peer,
        )
    };
    let line = match tokio::time::timeout(within, read_line(reader, 1 << 16)).await {
        Err(_) => return Err(older()),
        Ok(Err(e)) => return Err(Error::new(ErrorKind::InvalidData, e.to_string())),
        Ok(Ok(None)) => {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                "bpm's keeper closed the connection before saying hello",
            ));
        }
        Ok(Ok(Some(line))) => line,
    };
    match serde_json::from_slice::<KeeperLine>(&line) {
        Ok(KeeperLine::Hello { hello }) if hello.protocol == KEEPER_PROTOCOL => Ok(hello),
        Ok(KeeperLine::Hello { hello }) => Err(refuse(
            format!(
                "bpm's keeper (pid {}, bpm {}) speaks keeper protocol {}; this bpm ({}) speaks \
                 {KEEPER_PROTOCOL}",
                hello.pid,
                hello.version,
                hello.protocol,
                env!("CARGO_PKG_VERSION"),
            ),
            &hello.pid.to_string(),
        )),
        _ => Err(older()),
    }
}
