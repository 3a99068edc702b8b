//! The OS spawner: real processes, each in its own session and process group,
//! with both output streams captured, exits noticed by the kernel (tokio's
//! child reaping) rather than a polling loop, and stops that reach every
//! descendant (see [`tree`]).

mod capture;
mod tree;

use std::collections::HashMap;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bpm_domain::{ExitStatus, ProcessId, ReadinessCheck, Signal, StdinMode};
use bpm_ports::{
    OutputStore, ProcessNotice, ProcessSpawner, SpawnError, SpawnRequest, Spawned, Stream,
};
use rustix::process::{Pid, kill_process_group};
use tokio::io::AsyncWriteExt;
use tokio::process::{ChildStdin, Command};
use tokio::sync::{mpsc, watch};

/// The environment variable that carries a process's own record id.
pub const PROCESS_ID_ENV: &str = tree::MARK;

/// Settings of the OS spawner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsSpawnerConfig {
    /// How often a readiness port is tried.
    pub port_poll: Duration,
    /// After the leader of a stopped tree exits, how long the rest of the tree
    /// may take to end before it is killed.
    pub tree_grace: Duration,
    /// After an exit, how long to wait for the output pipes to drain (they
    /// stay open while a surviving descendant holds them).
    pub drain: Duration,
}

impl Default for OsSpawnerConfig {
    fn default() -> Self {
        OsSpawnerConfig {
            port_poll: Duration::from_millis(100),
            tree_grace: Duration::from_secs(1),
            drain: Duration::from_millis(200),
        }
    }
}

struct Live {
    pid: u32,
    /// Set once the leader has been reaped: its pid may then be reused, so
    /// its group is no longer signalled by id.
    reaped: bool,
    /// Whether a terminating signal was sent: then the whole tree must end with the leader.
    stopping: bool,
    stdin: Option<Arc<tokio::sync::Mutex<ChildStdin>>>,
}

type LiveMap = Arc<Mutex<HashMap<ProcessId, Live>>>;

/// Spawns and controls real OS processes.
pub struct OsSpawner {
    output: Arc<dyn OutputStore>,
    live: LiveMap,
    tx: mpsc::UnboundedSender<ProcessNotice>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<ProcessNotice>>>,
    config: OsSpawnerConfig,
}

impl OsSpawner {
    /// A spawner capturing output into `output`.
    pub fn new(output: Arc<dyn OutputStore>, config: OsSpawnerConfig) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        OsSpawner {
            output,
            live: Arc::new(Mutex::new(HashMap::new())),
            tx,
            rx: Mutex::new(Some(rx)),
            config,
        }
    }

    /// How many processes this spawner started are still running.
    pub fn running(&self) -> usize {
        lock(&self.live).len()
    }
}

fn lock(live: &LiveMap) -> std::sync::MutexGuard<'_, HashMap<ProcessId, Live>> {
    live.lock().unwrap_or_else(PoisonError::into_inner)
}

fn spawn_error(e: &io::Error, program: &str) -> SpawnError {
    match e.kind() {
        io::ErrorKind::NotFound => SpawnError::ProgramNotFound(program.to_owned()),
        io::ErrorKind::PermissionDenied => SpawnError::PermissionDenied(program.to_owned()),
        _ => SpawnError::Os(format!("cannot start {program:?}: {e}")),
    }
}

fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(sig)) => ExitStatus::Signal(sig),
        (None, None) => ExitStatus::Code(-1),
    }
}

fn is_terminating(signal: Signal) -> bool {
    matches!(
        signal,
        Signal::Term | Signal::Kill | Signal::Int | Signal::Hup | Signal::Quit
    )
}

#[async_trait]
impl ProcessSpawner for OsSpawner {
    async fn spawn(&self, request: SpawnRequest) -> Result<Spawned, SpawnError> {
        let program = request
            .argv
            .first()
            .ok_or_else(|| SpawnError::Invalid("empty argument vector".into()))?;
        if let Some(cwd) = &request.cwd {
            if !cwd.is_dir() {
                return Err(SpawnError::CwdNotFound(cwd.clone()));
            }
        }
        let mut cmd = Command::new(program);
        cmd.args(&request.argv[1..])
            .envs(&request.env)
            .env(tree::MARK, request.id.to_string())
            .env("BPM_NODE", request.node.as_str())
            .stdin(match request.stdin {
                StdinMode::Closed => Stdio::null(),
                StdinMode::Pipe => Stdio::piped(),
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        if let Some(session) = &request.session {
            cmd.env("BPM_SESSION", session.as_str());
        }
        if let Some(cwd) = &request.cwd {
            cmd.current_dir(cwd);
        }
        // SAFETY: the closure runs in the forked child before exec; setsid is a
        // single async-signal-safe system call and touches no memory of the parent.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::setsid()
                    .map(|_| ())
                    .map_err(io::Error::from)
            });
        }
        let mut child = cmd.spawn().map_err(|e| spawn_error(&e, program))?;
        let pid = child
            .id()
            .ok_or_else(|| SpawnError::Os("the child exited before its pid was read".into()))?;
        let id = request.id;
        let stdin = child
            .stdin
            .take()
            .map(|s| Arc::new(tokio::sync::Mutex::new(s)));
        lock(&self.live).insert(
            id,
            Live {
                pid,
                reaped: false,
                stopping: false,
                stdin,
            },
        );

        let (exited_tx, exited_rx) = watch::channel(false);
        let watcher = capture::Watcher::new(
            id,
            self.tx.clone(),
            match &request.readiness {
                ReadinessCheck::LogPattern { pattern } => Some(pattern.clone()),
                _ => None,
            },
        );
        let mut pumps = Vec::new();
        if let Some(out) = child.stdout.take() {
            pumps.push(tokio::spawn(capture::pump(
                out,
                Stream::Stdout,
                self.output.clone(),
                watcher.clone(),
            )));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(tokio::spawn(capture::pump(
                err,
                Stream::Stderr,
                self.output.clone(),
                watcher.clone(),
            )));
        }
        if let ReadinessCheck::Port { port } = request.readiness {
            tokio::spawn(capture::wait_for_port(
                port,
                self.config.port_poll,
                watcher.clone(),
                exited_rx.clone(),
            ));
        }
        if let Some(idle) = request.idle_after {
            tokio::spawn(capture::watch_idle(
                idle.as_duration(),
                watcher.clone(),
                exited_rx,
            ));
        }

        let (live, tx, config) = (self.live.clone(), self.tx.clone(), self.config.clone());
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(status) => exit_status(status),
                Err(e) => {
                    tracing::error!(%id, pid, error = %e, "waiting for a child failed");
                    ExitStatus::Code(-1)
                }
            };
            let _ = exited_tx.send(true);
            let stopping = {
                let mut map = lock(&live);
                map.get_mut(&id).map(|l| {
                    l.reaped = true;
                    l.stdin = None;
                    l.stopping
                })
            };
            if stopping == Some(true) {
                end_rest_of_tree(id, config.tree_grace).await;
            }
            // Let the pipes drain so the output is complete when the exit is announced.
            for pump in pumps {
                let _ = tokio::time::timeout(config.drain, pump).await;
            }
            lock(&live).remove(&id);
            let _ = tx.send(ProcessNotice::Exited { id, status });
        });
        Ok(Spawned { pid })
    }

    async fn signal(&self, id: ProcessId, pid: u32, signal: Signal) -> Result<(), SpawnError> {
        let group_alive = {
            let mut map = lock(&self.live);
            match map.get_mut(&id) {
                Some(live) if live.pid == pid => {
                    if is_terminating(signal) {
                        live.stopping = true;
                    }
                    !live.reaped
                }
                // Not ours, or already gone: signalling an ended process is not an error.
                _ => return Ok(()),
            }
        };
        if group_alive {
            // The unreaped leader keeps its group id reserved, so the group is still this tree's.
            if let (Some(group), Some(sig)) = (
                Pid::from_raw(i32::try_from(pid).unwrap_or(0)),
                tree::os_signal(signal.number()),
            ) {
                match kill_process_group(group, sig) {
                    Ok(()) | Err(rustix::io::Errno::SRCH) => {}
                    Err(e) => {
                        return Err(SpawnError::Os(format!(
                            "cannot signal process group {pid}: {e}"
                        )));
                    }
                }
            }
        }
        // Then everything that left the group.
        let id_text = id.to_string();
        let number = signal.number();
        let leader = group_alive.then_some(pid);
        tokio::task::spawn_blocking(move || {
            for member in tree::members(&id_text, leader) {
                tree::signal_seen(member, number);
            }
        })
        .await
        .map_err(|e| SpawnError::Os(e.to_string()))?;
        Ok(())
    }

    async fn write_input(&self, id: ProcessId, data: Vec<u8>) -> Result<(), SpawnError> {
        let stdin = {
            let map = lock(&self.live);
            let live = map
                .get(&id)
                .filter(|l| !l.reaped)
                .ok_or(SpawnError::NoSuchProcess(id))?;
            live.stdin.clone().ok_or_else(|| {
                SpawnError::Invalid(format!("process {id} was started with stdin closed"))
            })?
        };
        let mut pipe = stdin.lock().await;
        pipe.write_all(&data)
            .await
            .map_err(|e| SpawnError::Os(format!("cannot write to the stdin of {id}: {e}")))?;
        pipe.flush()
            .await
            .map_err(|e| SpawnError::Os(format!("cannot write to the stdin of {id}: {e}")))
    }

    async fn reattach(&self, _id: ProcessId, _pid: u32) -> Result<bool, SpawnError> {
        // A process started by an earlier manager is not this one's child, so its
        // exit status cannot be collected here; the per-process supervisor that
        // makes this possible comes with the daemon.
        Ok(false)
    }

    fn notices(&self) -> Option<mpsc::UnboundedReceiver<ProcessNotice>> {
        self.rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// After a stopped leader exits, gives the rest of its tree `grace` to end, then kills it.
async fn end_rest_of_tree(id: ProcessId, grace: Duration) {
    let id_text = id.to_string();
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let text = id_text.clone();
        let rest = tokio::task::spawn_blocking(move || tree::members(&text, None))
            .await
            .unwrap_or_default();
        if rest.is_empty() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            for member in rest {
                tree::signal_seen(member, Signal::Kill.number());
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
