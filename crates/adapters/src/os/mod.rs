//! The OS spawner: real processes, each in its own session and process group,
//! with both output streams captured, exits noticed by the kernel (tokio's
//! child reaping) rather than a polling loop, and stops that reach every
//! descendant (see the `tree` module).
//!
//! The spawner by job:
//! - `spawner`: [`OsSpawner`]'s calls and the [`ProcessSpawner`] port.
//! - `launch`: a process's life: started (or handed over and taken back),
//!   held, watched until it ends, reaped with its tree; `spawn` forks it.
//! - `checks`: readiness and health checks; `probe` their probes.
//! - `lease`: the node's lease as the keeper watches it (the timeline is
//!   `bpm_domain::cluster`'s).
//! - `facts`: host facts front ends and the daemon ask for.
//! - `capture`, `tree`, `procfs`, `usage`, `limits`, `files`: output,
//!   process trees, `/proc`, usage, cgroups, file watches.
//!
//! Locks (std's, each held briefly and never across an `.await`, which
//! clippy's `await_holding_lock` checks): `live` maps each record to its process; `handed`, `unrecorded` and
//! `starting` order the starts handed over by a daemon; `lease` is the
//! lease watch's state; `written` holds each process's last output time; `running_on` and `taken_over` belong to the
//! processes adopted after a restart; `composed` caches environments.

mod capture;
mod checks;
mod facts;
#[cfg(feature = "watch")]
mod files;
#[cfg(not(feature = "watch"))]
#[path = "no_files.rs"]
mod files;
mod heap;
mod host;
mod launch;
mod lease;
mod limits;
mod listening;
mod machine;
// A build without watches refuses each by name: checked in every test
// build, since the test command builds the workspace once, watches on.
#[cfg(all(test, feature = "watch"))]
#[path = "no_files.rs"]
mod no_files;
mod probe;
mod procfs;
mod spawn;
mod spawner;
mod subreaper;
mod tree;
mod usage;

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{CStr, CString, OsString};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bpm_domain::{
    Environment, ExitStatus, OsText, ProcessId, ReadinessCheck, RunningOn, Signal, StdinMode,
};
use bpm_ports::{
    OutputStore, ProcessNotice, ProcessSpawner, SpawnError, SpawnRequest, Spawned, Stream,
};
use rustix::process::{Pid, WaitId, WaitIdOptions, WaitIdStatus, kill_process_group, waitid};
use tokio::io::AsyncWriteExt;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};

pub use files::check_watch;
/// Whether this build watches files (the `watch` feature); without it each
/// watch is refused by name.
pub const WATCHES: bool = cfg!(feature = "watch");
pub use facts::{
    boot_id, find_marked, inherited_env, local_time_zone, marked_children, raise_open_files_limit,
    read_start_log, runs_bpm, stop_marked, unknown_end,
};
pub use heap::{give_back_start_pages, give_back_when_quiet, release_free_memory};
pub use host::OsHost;
#[allow(clippy::wildcard_imports)]
use launch::*;
use lease::LeaseHold;
pub use limits::{NO_CGROUPS_ENV, asked_limits, check_limits, enforcement, sweep_groups};
pub use machine::ThisMachine;
pub use probe::notify_ready;
pub use subreaper::Subreaper;
pub use usage::{ProcSampler, Subreapers};

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
    /// A file to which the id of every record is appended just before its
    /// process starts (see [`read_start_log`]); emptied whenever nothing
    /// runs. The keeper keeps one, so that whoever outlives it knows which
    /// records it may have started.
    pub start_log: Option<std::path::PathBuf>,
    /// Keep a copy of the reading ends of each process's output pipes, for
    /// a daemon to hold (see [`OsSpawner::pipes`]). The keeper does; an
    /// embedded engine, which no other process outlives, need not pay two
    /// descriptors per process for it.
    pub share_pipes: bool,
    /// Make this process a child subreaper, so that the processes of a
    /// record's tree that its leader leaves behind (`sh -c 'server &'`, a
    /// program that daemonizes) become its children: finding what runs on
    /// after a leader's exit is then a look at its own children, and it
    /// reaps them when they end. The keeper does; an embedded engine, whose
    /// host process should not change so, waits only for the leader's
    /// process group.
    pub subreaper: bool,
    /// Where notify sockets are made (the keeper's: its state directory's
    /// `notify/`); without one, a private directory of random name in the
    /// temporary folder.
    pub notify_dir: Option<std::path::PathBuf>,
}

impl Default for OsSpawnerConfig {
    fn default() -> Self {
        OsSpawnerConfig {
            port_poll: Duration::from_millis(100),
            tree_grace: Duration::from_secs(1),
            drain: Duration::from_millis(200),
            start_log: None,
            share_pipes: false,
            subreaper: false,
            notify_dir: None,
        }
    }
}

/// A pidfd of process `pid`, if it is alive (not a zombie) and carries
/// record `id`'s mark: the process to adopt. The pidfd is opened first, so
/// it pins the process the checks look at.
fn marked_pidfd(id: ProcessId, pid: u32) -> Option<AsyncFd<std::os::fd::OwnedFd>> {
    let raw = i32::try_from(pid).ok().and_then(Pid::from_raw)?;
    let pidfd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()).ok()?;
    let mark = format!("{}={id}", tree::MARK);
    if !tree::carries_mark(pid, mark.as_bytes()) || procfs::stat(pid).is_none_or(|s| s.has_ended())
    {
        return None;
    }
    // SAFETY: the OwnedFd moves into the AsyncFd, stays open and keeps its number until dropped.
    #[allow(unsafe_code)]
    (unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }).ok()
}

/// The reading ends of `pid`'s output pipes that it holds itself (see
/// [`spawn::HELD_PIPE_FDS`]), opened again through `/proc`; `None` unless
/// both are there and are two different pipes.
fn held_pipes(pid: u32) -> Option<[std::os::fd::OwnedFd; 2]> {
    let open = |fd: i32| -> Option<(String, std::os::fd::OwnedFd)> {
        let path = format!("/proc/{pid}/fd/{fd}");
        let target = std::fs::read_link(&path)
            .ok()?
            .into_os_string()
            .into_string()
            .ok()?;
        if !target.starts_with("pipe:[") {
            return None;
        }
        // Non-blocking: opening a pipe with no writer left must not wait for one.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .ok()?;
        Some((target, file.into()))
    };
    let [out, err] = spawn::HELD_PIPE_FDS;
    let (out_pipe, out) = open(out)?;
    let (err_pipe, err) = open(err)?;
    (out_pipe != err_pipe).then_some([out, err])
}

/// How long, at most, an exit waits for pipes that are still being copied.
const DRAIN_BUSY: Duration = Duration::from_secs(5);

/// How long a look at what a leader left waits for a child whose
/// environment reads empty though one is laid out (it was started with
/// none, or is laying it out in an `execve` this very moment).
const UNSURE_FOR: Duration = Duration::from_millis(50);

/// How long that look waits for a child in the middle of an `execve`, with
/// no environment laid out yet: it has one again as soon as it runs (on a
/// loaded machine that can take longer than [`UNSURE_FOR`]), so only a
/// child stuck there for this long is taken for one without the mark.
const IN_EXEC_FOR: Duration = Duration::from_secs(5);

/// What a look at this subreaper's children tells of a record's tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// Nothing of it runs on.
    Nothing,
    /// A process of it runs on.
    RunsOn,
    /// A child's environment cannot be read yet; `in_exec` while one is in
    /// the middle of an `execve`.
    Unsure { in_exec: bool },
}

/// While a leader's tree runs on after it, how often the tree is looked at
/// again besides when one of its processes ends (a process it started
/// since is then seen even if it is the last).
const RESCAN: Duration = Duration::from_secs(1);

struct Live {
    pid: u32,
    /// Set once the leader has been reaped: its pid may then be reused, so
    /// its group is no longer signalled by id.
    reaped: bool,
    /// Whether a terminating signal was sent: then the whole tree must end with the leader.
    stopping: bool,
    /// How it came to this spawner.
    origin: Origin,
    stdin: Option<Arc<tokio::sync::Mutex<pipe::Sender>>>,
    /// How it is stopped when the node's lease lapses (a failover record's).
    stand_down: Option<bpm_domain::StopPolicy>,
    /// Whether it is stopped with SIGSTOP, and by whom.
    halt: Halt,
    /// Copies of the reading ends of its stdout and stderr pipes, for a
    /// daemon to hold (see [`OsSpawner::pipes`]).
    pipes: Option<Pipes>,
}

/// Whether a process is stopped with SIGSTOP, and by whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Halt {
    /// Not stopped.
    #[default]
    No,
    /// Paused by its caller (SIGSTOP through [`ProcessSpawner::signal`]):
    /// only its caller continues it.
    Paused,
    /// Stopped because the lease's renewals are late: continued by the next
    /// renewal, or with the signal that stops it.
    Frozen,
}

/// What the end of a process started here must do beyond reporting it.
#[derive(Debug, Clone, Copy)]
struct Ending {
    /// Its record ends with its leader: what the leader left runs on.
    leader_only: bool,
    /// It ran under resource limits, in groups to remove.
    limited: bool,
}

/// The reading ends of a process's stdout and stderr pipes.
pub type Pipes = Arc<[std::os::fd::OwnedFd; 2]>;

/// How a live process came to the spawner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Started here.
    Started,
    /// Started here, and its exit starts the next request handed over.
    HandsOver,
    /// Started by another keeper, which died: not this one's child, so its
    /// exit status cannot be collected, and its group is never signalled by
    /// pid (the leader may be reaped elsewhere at any time).
    Adopted,
}

type LiveMap = Arc<Mutex<HashMap<ProcessId, Live>>>;

/// This process's own environment, read once: every process gets it under
/// the variables its request sets.
struct BaseEnv {
    /// Each variable's name (for the request's overrides) and `NAME=value`.
    vars: Vec<(OsText, CString)>,
    path: Option<OsString>,
}

impl BaseEnv {
    fn read() -> Self {
        let mut path = None;
        let vars = std::env::vars_os()
            .filter(|(k, _)| !matches!(k.to_str(), Some(tree::MARK | "BPM_NODE" | "BPM_SESSION")))
            .filter_map(|(k, v)| {
                if k == "PATH" {
                    path = Some(v.clone());
                }
                let kv = spawn::variable(k.as_bytes(), v.as_bytes()).ok()?;
                Some((OsText::from(k), kv))
            })
            .collect();
        BaseEnv { vars, path }
    }
}

/// A request's environment over the base one, as `execve` takes it.
struct Composed {
    /// `NAME=value`: the base variables the request does not set, then the
    /// request's own but bpm's marks.
    vars: Vec<CString>,
    /// Where in `vars` the request's `BPM_SESSION` is (it yields to the record's session).
    session_var: Option<usize>,
    path: Option<OsString>,
}

impl Composed {
    fn new(base: &BaseEnv, env: &Environment) -> Result<Self, SpawnError> {
        let mut vars: Vec<CString> = base
            .vars
            .iter()
            .filter(|(k, _)| !env.contains_key(k))
            .map(|(_, kv)| kv.clone())
            .collect();
        let mut session_var = None;
        // bpm's own marks win over the request's variables of the same name:
        // stops find a tree by its mark, and a child learns its id from it.
        for (k, v) in env.iter().filter(|(k, _)| {
            !matches!(k.as_bytes(), b"BPM_NODE") && k.as_bytes() != tree::MARK.as_bytes()
        }) {
            if k.as_bytes() == b"BPM_SESSION" {
                session_var = Some(vars.len());
            }
            vars.push(spawn::variable(k.as_bytes(), v.as_bytes()).map_err(|_| {
                SpawnError::Invalid(format!("a NUL byte in environment variable {k}"))
            })?);
        }
        let path = match env.get(&OsText::from("PATH")) {
            Some(p) => Some(OsString::from(p.clone())),
            None => base.path.clone(),
        };
        Ok(Composed {
            vars,
            session_var,
            path,
        })
    }
}

/// A request's environment, shared by the records started together.
type Env = Arc<Environment>;

/// How many composed environments the spawner keeps.
const COMPOSED_KEPT: usize = 8;

/// Spawns and controls real OS processes.
pub struct OsSpawner {
    inner: Arc<SpawnerShared>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<ProcessNotice>>>,
}

/// What the spawner's own tasks share with it.
struct SpawnerShared {
    output: Arc<dyn OutputStore>,
    base_env: BaseEnv,
    /// The environments of the latest requests, composed: the records of
    /// one submission share one map, which is composed once.
    composed: Mutex<Vec<(Env, Arc<Composed>)>>,
    live: LiveMap,
    /// Requests to start, in order, one on each exit of a process that hands over.
    handed: Mutex<VecDeque<SpawnRequest>>,
    /// Held for the whole of a start, so that two starts of one record (a
    /// manager's, and one on an exit) cannot both miss the other.
    starting: Mutex<()>,
    /// Records started whose exit the manager has not yet recorded, with
    /// their pids: the manager may not have heard of the start (it was made
    /// on an exit, or the manager restarted before the answer came) and ask
    /// for it again, even after the process has ended.
    unrecorded: Mutex<HashMap<ProcessId, u32>>,
    tx: mpsc::UnboundedSender<ProcessNotice>,
    config: OsSpawnerConfig,
    /// The open start log, if the configuration names one.
    start_log: Option<std::fs::File>,
    /// What the daemon said of the node's lease ([`ProcessSpawner::hold_lease`]).
    lease: Mutex<LeaseHold>,
    /// The processes of trees that run on after their leader, with their
    /// records: as a subreaper, this process reaps them.
    running_on: Mutex<HashMap<u32, ProcessId>>,
    /// Where notify sockets are made.
    notify_dir: probe::NotifyDir,
    /// Processes taken over from an earlier keeper, until their checks
    /// are armed again ([`ProcessSpawner::watch_again`]) or they end: the
    /// watcher of their output and a receiver that turns true at their end.
    taken_over: Mutex<HashMap<ProcessId, (capture::Watcher, watch::Receiver<bool>)>>,
    /// When each process watched here last had output copied: a follower
    /// of its output waits on it ([`ProcessSpawner::wait_output`]). Held
    /// from its start (or adoption) until its output is drained.
    written: Mutex<HashMap<ProcessId, watch::Receiver<tokio::time::Instant>>>,
    /// Readiness commands running now: children of this process that are
    /// not records' leaders, which their own waiters reap.
    probes: Mutex<HashSet<u32>>,
    /// The first failure (a non-zero exit code) of a process that
    /// ran on after its record's leader: the record's end, not the
    /// leader's exit.
    failed_on: Mutex<HashMap<ProcessId, ExitStatus>>,
}

/// `m`, locked (a panic elsewhere while it was held leaves it usable).
fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SpawnerShared {
    /// The leaders this spawner started and has not reaped: their own
    /// waiters reap them.
    fn unreaped_leaders(&self) -> HashSet<u32> {
        let mut keep: HashSet<u32> = lock(&self.live)
            .values()
            .filter(|l| !l.reaped && l.origin != Origin::Adopted)
            .map(|l| l.pid)
            .collect();
        keep.extend(guard(&self.probes).iter().copied());
        keep
    }

    /// Reaps the children that ended and are not leaders: orphans of
    /// records' trees that became this subreaper's. Nothing is reaped while
    /// a start is under way (a leader that ended before it is held would be
    /// taken for an orphan); the next `SIGCHLD`, or the next second, looks
    /// again.
    fn reap_orphans(&self) {
        let Ok(_one) = self.starting.try_lock() else {
            return;
        };
        for (pid, status) in subreaper::reap_children_except(&self.unreaped_leaders()) {
            tracing::trace!(pid, ?status, "orphan reaped");
            self.note_end_of(pid, status);
        }
    }

    /// A process that ran on after its record's leader ended with `status`:
    /// a non-zero exit code is a failure (one killed by a signal was
    /// stopped, from outside, and the leader's code stands).
    fn note_end_of(&self, pid: u32, status: ExitStatus) {
        let Some(id) = guard(&self.running_on).remove(&pid) else {
            return;
        };
        if matches!(status, ExitStatus::Code(c) if c != 0) {
            guard(&self.failed_on).entry(id).or_insert(status);
        }
    }

    /// How record `id` ends once the rest of its tree has: the leader's
    /// `status`, unless a process that ran on after it failed (its
    /// status then). Its processes this subreaper has not reaped yet are
    /// reaped first.
    fn end_of_tree(&self, id: ProcessId, status: ExitStatus) -> ExitStatus {
        let left: Vec<u32> = guard(&self.running_on)
            .iter()
            .filter(|(_, of)| **of == id)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in left {
            match subreaper::reap_one(pid) {
                Some(ended) => self.note_end_of(pid, ended),
                None => {
                    guard(&self.running_on).remove(&pid);
                }
            }
        }
        guard(&self.failed_on).remove(&id).unwrap_or(status)
    }

    /// Empties the start log when nothing runs and nothing waits to start:
    /// then no record in it can still be running or about to start.
    fn forget_starts(&self) {
        let Some(log) = &self.start_log else { return };
        let _one = self.starting.lock().unwrap_or_else(PoisonError::into_inner);
        if lock(&self.live).is_empty() && self.handed().is_empty() {
            let _ = log.set_len(0);
        }
    }

    /// `env` composed over the base environment, from the cache when it was lately.
    fn composed(&self, env: &Env) -> Result<Arc<Composed>, SpawnError> {
        let mut cache = self.composed.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, c)) = cache.iter().find(|(e, _)| Arc::ptr_eq(e, env)) {
            return Ok(c.clone());
        }
        let c = Arc::new(Composed::new(&self.base_env, env)?);
        if cache.len() == COMPOSED_KEPT {
            cache.remove(0);
        }
        cache.push((env.clone(), c.clone()));
        Ok(c)
    }

    fn handed(&self) -> std::sync::MutexGuard<'_, VecDeque<SpawnRequest>> {
        self.handed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn lock(live: &LiveMap) -> std::sync::MutexGuard<'_, HashMap<ProcessId, Live>> {
    live.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A probe's exit, for people: `1`, or `by signal 9`.
fn exit_status_of(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => code.to_string(),
        (None, Some(sig)) => format!("by signal {sig}"),
        (None, None) => "unknown".into(),
    }
}

fn exit_status(status: &WaitIdStatus) -> ExitStatus {
    match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) if status.exited() => ExitStatus::Code(code),
        (_, Some(sig)) => ExitStatus::Signal(sig),
        _ => ExitStatus::Code(-1),
    }
}

fn is_terminating(signal: Signal) -> bool {
    matches!(
        signal,
        Signal::Term | Signal::Kill | Signal::Int | Signal::Hup | Signal::Quit
    )
}
