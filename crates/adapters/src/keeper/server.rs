//! The keeper's side.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use bpm_domain::ProcessId;
use bpm_ports::{ProcessNotice, ProcessSpawner, SpawnError};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::net::unix::OwnedWriteHalf;

use super::fds::{self, FdReader};
use super::{Answer, ENV_SLOTS, KEEPER_PROTOCOL, KeeperHello, KeeperLine, Op, Request, Start};
use crate::control::read_line;
use crate::os::OsSpawner;

type Writer = Arc<tokio::sync::Mutex<Option<OwnedWriteHalf>>>;

struct State {
    unacked: BTreeMap<u64, ProcessNotice>,
    next_seq: u64,
}

async fn send(writer: &Writer, line: &KeeperLine) -> bool {
    let Ok(mut bytes) = serde_json::to_vec(line) else {
        return false;
    };
    bytes.push(b'\n');
    let mut guard = writer.lock().await;
    match guard.as_mut() {
        Some(w) => w.write_all(&bytes).await.is_ok(),
        None => false,
    }
}

/// Sends the connected daemon the reading ends of the output pipes of
/// record `id`'s process, if it runs, so that they outlive this keeper.
async fn send_pipes(writer: &Writer, spawner: &OsSpawner, id: ProcessId) -> bool {
    let Some(pipes) = spawner.pipes(id) else {
        return true;
    };
    let Ok(mut line) = serde_json::to_vec(&KeeperLine::Pipes { pipes: id }) else {
        return false;
    };
    line.push(b'\n');
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
    let mut notices = spawner
        .notices()
        .expect("the keeper owns its spawner's notices");
    let earlier = kept
        .as_deref()
        .map(|file| load_kept(file, &spawner))
        .unwrap_or_default();
    let next_seq = earlier.len() as u64 + 1;
    let state = Arc::new(Mutex::new(State {
        unacked: (1..).zip(earlier).collect(),
        next_seq,
    }));
    // The connected daemon's writer; a newer connection replaces an older one.
    let writer: Writer = Arc::new(tokio::sync::Mutex::new(None));
    let connected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Which connection is the newest: starts handed over belong to it.
    let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (st, w, sp) = (state.clone(), writer.clone(), spawner.clone());
    tokio::spawn(async move {
        while let Some(notice) = notices.recv().await {
            if let ProcessNotice::HandedOver {
                next,
                started: Ok(_),
                ..
            } = &notice
            {
                send_pipes(&w, &sp, *next).await;
            }
            let seq = {
                let mut s = st.lock().unwrap_or_else(PoisonError::into_inner);
                let seq = s.next_seq;
                s.next_seq += 1;
                s.unacked.insert(seq, notice.clone());
                seq
            };
            send(&w, &KeeperLine::Notice { seq, notice }).await;
        }
    });
    let own_uid = rustix::process::getuid();
    let mut idle_since = tokio::time::Instant::now();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a.ok(),
            () = tokio::time::sleep(Duration::from_millis(500)) => None,
        };
        let waiting = !state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unacked
            .is_empty();
        let busy = connected.load(std::sync::atomic::Ordering::SeqCst) > 0
            || spawner.running() > 0
            || (waiting && kept.is_none());
        if busy {
            idle_since = tokio::time::Instant::now();
        } else if idle_since.elapsed() >= idle_exit {
            if let Some(file) = &kept {
                keep(
                    file,
                    &state.lock().unwrap_or_else(PoisonError::into_inner).unacked,
                    &spawner,
                );
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
        let (read, mut write) = stream.into_split();
        // The hello goes out before the connection is shared, so that no
        // notice can come before it.
        let Ok(mut hello) = serde_json::to_vec(&KeeperLine::Hello {
            hello: KeeperHello::ours(),
        }) else {
            continue;
        };
        hello.push(b'\n');
        if write.write_all(&hello).await.is_err() {
            continue;
        }
        *writer.lock().await = Some(write);
        // Starts handed over by an earlier daemon are not this one's to make.
        let dropped = spawner.take_back();
        if !dropped.is_empty() {
            tracing::info!(
                count = dropped.len(),
                "keeper: a new daemon connected; dropped the starts handed over by the last one"
            );
        }
        let this = generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        // The daemon holds the pipes of every running process, then takes
        // everything not yet taken.
        for (id, _) in spawner.all_pipes() {
            send_pipes(&writer, &spawner, id).await;
        }
        let pending: Vec<(u64, ProcessNotice)> = state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unacked
            .iter()
            .map(|(s, n)| (*s, n.clone()))
            .collect();
        for (seq, notice) in pending {
            send(&writer, &KeeperLine::Notice { seq, notice }).await;
        }
        let (spawner, state, writer, connected, generation) = (
            spawner.clone(),
            state.clone(),
            writer.clone(),
            connected.clone(),
            generation.clone(),
        );
        connected.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::spawn(async move {
            let (read, received) = FdReader::new(read);
            let mut reader = BufReader::new(read);
            let mut envs = EnvTable::new();
            while let Ok(Some(line)) = read_line(&mut reader, 16 << 20).await {
                let request = match serde_json::from_slice::<Request>(&line) {
                    Ok(request) => request,
                    Err(e) => {
                        refuse(&writer, &line, &e).await;
                        continue;
                    }
                };
                // The queue of starts and the environment slots change here,
                // in the order the requests came: a spawn or a withdrawal that
                // follows a hand-over sees it, a start sees the slots defined before it.
                let request = match request.op {
                    Op::Env { slot, vars } => {
                        if slot < ENV_SLOTS {
                            envs.insert(slot, vars);
                        } else {
                            tracing::warn!(slot, "keeper: an environment slot out of range");
                        }
                        continue;
                    }
                    Op::HandOver(starts) => {
                        let mut requests = Vec::with_capacity(starts.len());
                        for mut start in starts {
                            match resolve(&envs, &mut start) {
                                Ok(()) => requests.push(start.request),
                                Err(e) => {
                                    tracing::warn!(error = %e, "keeper: a start handed over is refused");
                                }
                            }
                        }
                        spawner.queue_starts(requests);
                        continue;
                    }
                    Op::Spawn(mut start) => match resolve(&envs, &mut start) {
                        Ok(()) => Request {
                            id: request.id,
                            op: Op::Spawn(start),
                        },
                        Err(e) => {
                            let reply = KeeperLine::Reply {
                                id: request.id,
                                ok: None,
                                err: Some(e),
                            };
                            send(&writer, &reply).await;
                            continue;
                        }
                    },
                    Op::Withdraw => {
                        let reply = KeeperLine::Reply {
                            id: request.id,
                            ok: Some(Answer::Withdrawn(spawner.take_back())),
                            err: None,
                        };
                        send(&writer, &reply).await;
                        continue;
                    }
                    // Its descriptors come with this line: taken here, in order.
                    Op::Adopt { id, pid, pipes } => {
                        let ends = if pipes {
                            fds::take(&received, 2).and_then(|f| <[OwnedFd; 2]>::try_from(f).ok())
                        } else {
                            None
                        };
                        let held = end_waiting(&state, id) || spawner.adopt_with(id, pid, ends);
                        let reply = KeeperLine::Reply {
                            id: request.id,
                            ok: Some(Answer::Held(held)),
                            err: None,
                        };
                        send(&writer, &reply).await;
                        continue;
                    }
                    _ => request,
                };
                let (spawner, state, writer) = (spawner.clone(), state.clone(), writer.clone());
                tokio::spawn(async move {
                    let result = match request.op {
                        // A record started on an exit, even one already ended,
                        // is answered with that process until the daemon has
                        // acknowledged its exit (a daemon restarted in between
                        // may ask): the spawner keeps it until `exit_recorded`.
                        Op::Spawn(start) => {
                            let id = start.request.id;
                            let spawned = spawner.spawn(start.request).await;
                            // The daemon holds the pipes before it hears of the start.
                            if spawned.is_ok() {
                                send_pipes(&writer, &spawner, id).await;
                            }
                            spawned.map(Answer::Spawned)
                        }
                        Op::HandOver(_) | Op::Withdraw | Op::Env { .. } | Op::Adopt { .. } => {
                            return;
                        }
                        Op::Signal { id, pid, signal } => {
                            spawner.signal(id, pid, signal).await.map(|()| Answer::Done)
                        }
                        Op::WriteInput { id, data } => {
                            spawner.write_input(id, data).await.map(|()| Answer::Done)
                        }
                        Op::Reattach { id, pid } => {
                            // A process of a keeper that died is adopted.
                            Ok(Answer::Held(
                                end_waiting(&state, id) || spawner.adopt(id, pid),
                            ))
                        }
                        Op::Ack(seq) => {
                            let acked = state
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .unacked
                                .remove(&seq);
                            // An exit recorded: the spawner may forget how that process started.
                            if let Some(
                                ProcessNotice::Exited { id, .. }
                                | ProcessNotice::HandedOver { id, .. },
                            ) = acked
                            {
                                spawner.exit_recorded(id);
                            }
                            return;
                        }
                    };
                    // Id 0 asks for no answer (the daemon does not wait for it).
                    if request.id == 0 {
                        if let Err(e) = result {
                            tracing::warn!(error = %e, "keeper: a request without an answer failed");
                        }
                        return;
                    }
                    let line = match result {
                        Ok(a) => KeeperLine::Reply {
                            id: request.id,
                            ok: Some(a),
                            err: None,
                        },
                        Err(e) => KeeperLine::Reply {
                            id: request.id,
                            ok: None,
                            err: Some(e),
                        },
                    };
                    send(&writer, &line).await;
                });
            }
            // A daemon that is gone starts nothing more.
            if generation.load(std::sync::atomic::Ordering::SeqCst) == this {
                spawner.take_back();
            }
            connected.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        });
    }
}
