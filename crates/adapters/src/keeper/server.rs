//! The keeper's side.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use bpm_domain::ProcessId;
use bpm_ports::{ProcessNotice, ProcessSpawner, SpawnError};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use super::fds::{self, FdReader};
use super::{
    ENV_SLOTS, KEEPER_PROTOCOL, KeeperHello, KeeperLine, KeeperReply, KeeperRequest, Op, Start,
};
use crate::os::OsSpawner;
use crate::rpc::{encode_line, read_line, write_line};

type Writer = Arc<tokio::sync::Mutex<Option<OwnedWriteHalf>>>;

struct State {
    unacked: BTreeMap<u64, ProcessNotice>,
    next_seq: u64,
}

async fn send(writer: &Writer, line: &KeeperLine) -> bool {
    match writer.lock().await.as_mut() {
        Some(w) => write_line(w, line).await.is_ok(),
        None => false,
    }
}

/// Sends the connected daemon the reading ends of the output pipes of
/// record `id`'s process, if it runs, so that they outlive this keeper.
async fn send_pipes(writer: &Writer, spawner: &OsSpawner, id: ProcessId) -> bool {
    let Some(pipes) = spawner.pipes(id) else {
        return true;
    };
    let Ok(line) = encode_line(&KeeperLine::Pipes { pipes: id }) else {
        return false;
    };
    let ends = [pipes[0].as_fd(), pipes[1].as_fd()];
    let mut guard = writer.lock().await;
    match guard.as_mut() {
        Some(w) => fds::send_with_fds(w, &line, &ends).await.is_ok(),
        None => false,
    }
}

/// Whether an exit or loss of record `id` waits for the daemon to take it.
fn end_waiting(state: &Mutex<State>, id: ProcessId) -> bool {
    state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .unacked
        .values()
        .any(|n| {
            matches!(n, ProcessNotice::Exited { id: e, .. }
                | ProcessNotice::HandedOver { id: e, .. }
                | ProcessNotice::Lost { id: e, .. } if *e == id)
        })
}

/// Answers a request the keeper cannot read with an error, when it can
/// find the request's id, so that the daemon that sent it is not left waiting.
async fn refuse(writer: &Writer, line: &[u8], error: &serde_json::Error) {
    #[derive(serde::Deserialize)]
    struct Id {
        id: u64,
    }
    match serde_json::from_slice::<Id>(line) {
        Ok(Id { id }) if id != 0 => {
            let reply = KeeperLine::Reply {
                id,
                ok: None,
                err: Some(SpawnError::Invalid(format!(
                    "the keeper (protocol {KEEPER_PROTOCOL}) cannot read this request: {error}"
                ))),
            };
            send(writer, &reply).await;
        }
        _ => tracing::warn!(%error, "keeper: unreadable request"),
    }
}

/// The environments a connection has defined, by slot.
type EnvTable = HashMap<u32, Arc<bpm_domain::Environment>>;

/// Gives `start`'s request the environment its slot names.
fn resolve(envs: &EnvTable, start: &mut Start) -> Result<(), SpawnError> {
    if let Some(slot) = start.env.take() {
        start.request.env = envs.get(&slot).cloned().ok_or_else(|| {
            SpawnError::Invalid(format!(
                "environment slot {slot} was not defined on this connection"
            ))
        })?;
    }
    Ok(())
}

/// Runs the keeper on `listener` with `spawner` until it has been idle for
/// `idle_exit`: no daemon connected, no process running, no exit waiting to be taken.
pub async fn serve_keeper(listener: UnixListener, spawner: Arc<OsSpawner>, idle_exit: Duration) {
    serve_keeper_keeping(listener, spawner, idle_exit, None).await;
}

/// An end no daemon took, as a keeper keeps it for the next: with the pid
/// of the process that ended, so that the next keeper answers a spawn of
/// its record with that process rather than running it again.
#[derive(serde::Serialize, serde::Deserialize)]
struct KeptEnd {
    notice: ProcessNotice,
    #[serde(default)]
    pid: Option<u32>,
}

/// Reads the ends that an earlier keeper left in `file` (see
/// [`serve_keeper_keeping`]), and tells `spawner` which records they
/// started. A line of an older keeper holds the notice alone.
fn load_kept(file: &Path, spawner: &OsSpawner) -> Vec<ProcessNotice> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    let mut ends = Vec::new();
    for line in text.lines() {
        let kept = serde_json::from_str::<KeptEnd>(line).or_else(|_| {
            serde_json::from_str::<ProcessNotice>(line).map(|notice| KeptEnd { notice, pid: None })
        });
        let kept = match kept {
            Ok(kept) => kept,
            Err(e) => {
                tracing::warn!(error = %e, file = %file.display(), "keeper: an unreadable kept exit");
                continue;
            }
        };
        match &kept.notice {
            ProcessNotice::Exited { id, .. } | ProcessNotice::HandedOver { id, .. } => {
                if let Some(pid) = kept.pid {
                    spawner.started_before(*id, pid);
                }
            }
            _ => {}
        }
        if let ProcessNotice::HandedOver {
            next,
            started: Ok(pid),
            ..
        } = &kept.notice
        {
            spawner.started_before(*next, *pid);
        }
        ends.push(kept.notice);
    }
    ends
}

/// Writes the ends no daemon took to `file` (or removes it when there are none).
fn keep(file: &Path, unacked: &BTreeMap<u64, ProcessNotice>, spawner: &OsSpawner) {
    if unacked.is_empty() {
        let _ = std::fs::remove_file(file);
        return;
    }
    let mut text = String::new();
    for notice in unacked.values() {
        let pid = match notice {
            ProcessNotice::Exited { id, .. } | ProcessNotice::HandedOver { id, .. } => {
                spawner.unrecorded(*id)
            }
            _ => None,
        };
        let kept = KeptEnd {
            notice: notice.clone(),
            pid,
        };
        if let Ok(line) = serde_json::to_string(&kept) {
            text.push_str(&line);
            text.push('\n');
        }
    }
    let tmp = file.with_extension("tmp");
    let written = crate::private::options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, text.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, file));
    match written {
        Ok(()) => tracing::info!(
            count = unacked.len(),
            file = %file.display(),
            "keeper: kept the ends no daemon took, for the next keeper"
        ),
        Err(e) => {
            tracing::error!(error = %e, file = %file.display(), "keeper: cannot keep the ends no daemon took");
        }
    }
}

/// What every connection of one keeper shares.
struct Keeper {
    spawner: Arc<OsSpawner>,
    state: Arc<Mutex<State>>,
    /// The connected daemon's writer; a newer connection replaces an older one.
    writer: Writer,
    connected: AtomicUsize,
    /// Which connection is the newest: starts handed over belong to it.
    generation: AtomicU64,
}

/// [`serve_keeper`], keeping what no daemon took in `kept`: a keeper with
/// nothing running and no daemon for `idle_exit` writes the ends (exits,
/// losses) it still holds there and exits, rather than waiting for ever;
/// the next keeper reads them back first and hands them to its daemon, so
/// a process's real exit code survives a daemon that stays away.
pub async fn serve_keeper_keeping(
    listener: UnixListener,
    spawner: Arc<OsSpawner>,
    idle_exit: Duration,
    kept: Option<PathBuf>,
) {
    let notices = spawner
        .notices()
        .expect("the keeper owns its spawner's notices");
    let earlier = kept
        .as_deref()
        .map(|file| load_kept(file, &spawner))
        .unwrap_or_default();
    let next_seq = earlier.len() as u64 + 1;
    let keeper = Arc::new(Keeper {
        spawner,
        state: Arc::new(Mutex::new(State {
            unacked: (1..).zip(earlier).collect(),
            next_seq,
        })),
        writer: Arc::new(tokio::sync::Mutex::new(None)),
        connected: AtomicUsize::new(0),
        generation: AtomicU64::new(0),
    });
    tokio::spawn(forward_notices(keeper.clone(), notices));
    let own_uid = rustix::process::getuid();
    let mut idle_since = tokio::time::Instant::now();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a.ok(),
            () = tokio::time::sleep(Duration::from_millis(500)) => None,
        };
        if keeper.busy(kept.is_none()) {
            idle_since = tokio::time::Instant::now();
        } else if idle_since.elapsed() >= idle_exit {
            if let Some(file) = &kept {
                let state = keeper.state.lock().unwrap_or_else(PoisonError::into_inner);
                keep(file, &state.unacked, &keeper.spawner);
            }
            tracing::info!("keeper idle: no daemon, no process; exiting");
            return;
        }
        let Some((stream, _)) = accepted else {
            continue;
        };
        if !rustix::net::sockopt::socket_peercred(&stream).is_ok_and(|c| c.uid == own_uid) {
            tracing::warn!("keeper refused a connection from another user");
            continue;
        }
        let (read, write) = stream.into_split();
        let Some(this) = keeper.greet(write).await else {
            continue;
        };
        keeper.connected.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(keeper.clone().serve(read, this));
    }
}

/// Numbers each notice of the spawner, keeps it until the daemon
/// acknowledges it, and sends it (after the pipes of a start it reports).
async fn forward_notices(keeper: Arc<Keeper>, mut notices: mpsc::UnboundedReceiver<ProcessNotice>) {
    while let Some(notice) = notices.recv().await {
        if let ProcessNotice::HandedOver {
            next,
            started: Ok(_),
            ..
        } = &notice
        {
            send_pipes(&keeper.writer, &keeper.spawner, *next).await;
        }
        let seq = {
            let mut s = keeper.state.lock().unwrap_or_else(PoisonError::into_inner);
            let seq = s.next_seq;
            s.next_seq += 1;
            s.unacked.insert(seq, notice.clone());
            seq
        };
        let exited = match &notice {
            ProcessNotice::Exited { id, .. } => Some(*id),
            _ => None,
        };
        send(&keeper.writer, &KeeperLine::Notice { seq, notice }).await;
        if let Some(id) = exited {
            tracing::trace!(target: "bpm::hop", %id, "exit sent");
        }
    }
}

impl Keeper {
    /// Whether the keeper has work: a daemon, a process, or (when it
    /// cannot keep them in a file) ends no daemon took.
    fn busy(&self, cannot_keep: bool) -> bool {
        let waiting = !self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unacked
            .is_empty();
        self.connected.load(Ordering::SeqCst) > 0
            || self.spawner.running() > 0
            || (waiting && cannot_keep)
    }

    /// Says hello on a new connection and makes it the daemon's: drops the
    /// starts the last daemon handed over, sends the pipes of every running
    /// process, then every notice not yet acknowledged. Returns the
    /// connection's generation.
    async fn greet(&self, mut write: OwnedWriteHalf) -> Option<u64> {
        // The hello goes out before the connection is shared, so that no
        // notice can come before it.
        let mut hello = serde_json::to_vec(&KeeperLine::Hello {
            hello: KeeperHello::ours(),
        })
        .ok()?;
        hello.push(b'\n');
        write.write_all(&hello).await.ok()?;
        *self.writer.lock().await = Some(write);
        // Starts handed over by an earlier daemon are not this one's to make.
        let dropped = self.spawner.withdraw_handed();
        if !dropped.is_empty() {
            tracing::info!(
                count = dropped.len(),
                "keeper: a new daemon connected; dropped the starts handed over by the last one"
            );
        }
        let this = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        // The daemon holds the pipes of every running process, then takes
        // everything not yet taken.
        for (id, _) in self.spawner.all_pipes() {
            send_pipes(&self.writer, &self.spawner, id).await;
        }
        let pending: Vec<(u64, ProcessNotice)> = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unacked
            .iter()
            .map(|(s, n)| (*s, n.clone()))
            .collect();
        for (seq, notice) in pending {
            send(&self.writer, &KeeperLine::Notice { seq, notice }).await;
        }
        Some(this)
    }

    /// Reads a daemon's requests until it goes; connection `this`.
    async fn serve(self: Arc<Self>, read: OwnedReadHalf, this: u64) {
        let (read, received) = FdReader::new(read);
        let mut reader = BufReader::new(read);
        let mut envs = EnvTable::new();
        while let Ok(Some(line)) = read_line(&mut reader, 16 << 20).await {
            let request = match serde_json::from_slice::<KeeperRequest>(&line) {
                Ok(request) => request,
                Err(e) => {
                    refuse(&self.writer, &line, &e).await;
                    continue;
                }
            };
            if let Some(request) = self.in_order(request, &mut envs, &received).await {
                tokio::spawn(self.clone().run(request));
            }
        }
        // A daemon that is gone starts nothing more.
        if self.generation.load(Ordering::SeqCst) == this {
            self.spawner.withdraw_handed();
        }
        self.connected.fetch_sub(1, Ordering::SeqCst);
    }

    /// Handles what must happen in the order the requests came (the queue
    /// of starts, the environment slots, the descriptors that came with a
    /// line): a spawn or a withdrawal that follows a hand-over sees it, a
    /// start sees the slots defined before it. Returns a request to carry
    /// out beside the others.
    async fn in_order(
        &self,
        request: KeeperRequest,
        envs: &mut EnvTable,
        received: &fds::Received,
    ) -> Option<KeeperRequest> {
        let answer = match request.op {
            Op::Env { slot, vars } => {
                if slot < ENV_SLOTS {
                    envs.insert(slot, vars);
                } else {
                    tracing::warn!(slot, "keeper: an environment slot out of range");
                }
                return None;
            }
            Op::HandOver(starts) => {
                let requests = starts
                    .into_iter()
                    .filter_map(|mut start| match resolve(envs, &mut start) {
                        Ok(()) => Some(start.request),
                        Err(e) => {
                            tracing::warn!(error = %e, "keeper: a start handed over is refused");
                            None
                        }
                    })
                    .collect();
                self.spawner.accept_handed(requests);
                return None;
            }
            Op::Spawn(mut start) => match resolve(envs, &mut start) {
                Ok(()) => {
                    return Some(KeeperRequest {
                        id: request.id,
                        op: Op::Spawn(start),
                    });
                }
                Err(e) => Err(e),
            },
            Op::Withdraw => Ok(KeeperReply::Withdrawn(self.spawner.withdraw_handed())),
            // Its descriptors come with this line: taken here, in order.
            Op::Adopt {
                id,
                pid,
                pipes,
                stand_down,
            } => {
                let ends = pipes
                    .then(|| fds::take(received, 2).and_then(|f| <[OwnedFd; 2]>::try_from(f).ok()))
                    .flatten();
                let held = end_waiting(&self.state, id) || self.spawner.adopt_with(id, pid, ends);
                if let Some(stand_down) = stand_down.filter(|_| held) {
                    self.spawner.stands_down_with(id, stand_down);
                }
                Ok(KeeperReply::Held(held))
            }
            op => {
                return Some(KeeperRequest { id: request.id, op });
            }
        };
        send(&self.writer, &reply(request.id, answer)).await;
        None
    }

    /// Carries out a request beside the others, and answers it.
    async fn run(self: Arc<Self>, request: KeeperRequest) {
        let result = match request.op {
            // A record started on an exit, even one already ended, is
            // answered with that process until the daemon has acknowledged
            // its exit (a daemon restarted in between may ask): the spawner
            // keeps it until `exit_recorded`.
            Op::Spawn(start) => {
                let id = start.request.id;
                let spawned = self.spawner.spawn(start.request).await;
                // The daemon holds the pipes before it hears of the start.
                if spawned.is_ok() {
                    send_pipes(&self.writer, &self.spawner, id).await;
                }
                spawned.map(KeeperReply::Spawned)
            }
            Op::Signal { id, pid, signal } => self
                .spawner
                .signal(id, pid, signal)
                .await
                .map(|()| KeeperReply::Done),
            Op::WriteInput { id, data } => self
                .spawner
                .write_input(id, data)
                .await
                .map(|()| KeeperReply::Done),
            Op::WatchAgain(start) => self
                .spawner
                .watch_again(start.request)
                .await
                .map(|()| KeeperReply::Done),
            Op::StopCommand {
                start,
                command,
                within_ms,
            } => self
                .spawner
                .run_stop_command(start.request, command, Duration::from_millis(within_ms))
                .await
                .map(|()| KeeperReply::Done),
            Op::WaitOutput {
                id,
                after,
                within_ms,
            } => self
                .spawner
                .wait_output(
                    id,
                    bpm_ports::Cursor(after),
                    Duration::from_millis(within_ms),
                )
                .await
                .map(|()| KeeperReply::Done),
            // A process of a keeper that died is adopted.
            Op::Reattach { id, pid } => Ok(KeeperReply::Held(
                end_waiting(&self.state, id) || self.spawner.adopt(id, pid),
            )),
            Op::Ack(seq) => {
                self.acknowledged(seq);
                return;
            }
            Op::HoldLease { ms } => self
                .spawner
                .hold_lease(Duration::from_millis(ms))
                .await
                .map(|()| KeeperReply::Done),
            Op::HandOver(_) | Op::Withdraw | Op::Env { .. } | Op::Adopt { .. } => return,
        };
        // Id 0 asks for no answer (the daemon does not wait for it).
        if request.id == 0 {
            if let Err(e) = result {
                tracing::warn!(error = %e, "keeper: a request without an answer failed");
            }
            return;
        }
        send(&self.writer, &reply(request.id, result)).await;
    }

    /// The daemon took notice `seq`; an exit it recorded lets the spawner
    /// forget how that process started.
    fn acknowledged(&self, seq: u64) {
        let acked = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unacked
            .remove(&seq);
        if let Some(ProcessNotice::Exited { id, .. } | ProcessNotice::HandedOver { id, .. }) = acked
        {
            self.spawner.exit_recorded(id);
        }
    }
}

/// The answer to request `id`.
fn reply(id: u64, result: Result<KeeperReply, SpawnError>) -> KeeperLine {
    match result {
        Ok(a) => KeeperLine::Reply {
            id,
            ok: Some(a),
            err: None,
        },
        Err(e) => KeeperLine::Reply {
            id,
            ok: None,
            err: Some(e),
        },
    }
}
