//! The OS spawner: real processes, each in its own session and process group,
//! with both output streams captured, exits noticed by the kernel (tokio's
//! child reaping) rather than a polling loop, and stops that reach every
//! descendant (see the `tree` module).

mod capture;
#[cfg(feature = "watch")]
mod files;
#[cfg(not(feature = "watch"))]
#[path = "no_files.rs"]
mod files;
mod heap;
mod host;
mod limits;
mod listening;
mod machine;
mod probe;
mod procfs;
mod spawn;
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
pub use heap::release_free_memory;
pub use host::OsHost;
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
    fence: Option<bpm_domain::StopPolicy>,
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

/// The node's lease as a keeper knows it.
#[derive(Debug, Default)]
struct LeaseHold {
    /// When it lapses, unless a renewal is passed on before.
    until: Option<std::time::Instant>,
    /// When its renewals are late ([`bpm_domain::cluster::late_after`]).
    late_at: Option<std::time::Instant>,
    /// Whether a thread watches it.
    watched: bool,
    /// Whether the failover processes were stopped for lateness.
    frozen: bool,
}

impl OsSpawner {
    /// A spawner capturing output into `output`.
    pub fn new(output: Arc<dyn OutputStore>, config: OsSpawnerConfig) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let start_log = config.start_log.as_ref().and_then(|path| {
            crate::private::options()
                .create(true)
                .append(true)
                .open(path)
                .inspect_err(|e| tracing::error!(path = %path.display(), error = %e, "cannot open the start log"))
                .ok()
        });
        OsSpawner {
            inner: Arc::new(SpawnerShared {
                output,
                base_env: BaseEnv::read(),
                composed: Mutex::new(Vec::new()),
                live: Arc::new(Mutex::new(HashMap::new())),
                handed: Mutex::new(VecDeque::new()),
                starting: Mutex::new(()),
                unrecorded: Mutex::new(HashMap::new()),
                tx,
                notify_dir: probe::NotifyDir::new(config.notify_dir.clone()),
                taken_over: Mutex::default(),
                config,
                start_log,
                lease: Mutex::new(LeaseHold::default()),
                running_on: Mutex::default(),
                probes: Mutex::default(),
                failed_on: Mutex::default(),
            }),
            rx: Mutex::new(Some(rx)),
        }
        .reaping_orphans()
    }

    /// With [`OsSpawnerConfig::subreaper`]: becomes a child subreaper and
    /// reaps the orphans that become its children as they end (in a task
    /// of the current runtime, on `SIGCHLD` and every second).
    fn reaping_orphans(self) -> Self {
        if !self.inner.config.subreaper {
            return self;
        }
        if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
            tracing::warn!(error = %e, "cannot become a child subreaper: processes left running by a leader are found through /proc");
            return self;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return self;
        };
        let weak = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            let mut sigchld =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
            loop {
                match &mut sigchld {
                    Some(s) => {
                        let _ = tokio::time::timeout(Duration::from_secs(1), s.recv()).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(1)).await,
                }
                let Some(inner) = weak.upgrade() else { return };
                // A few small reads: on the runtime's thread.
                inner.reap_orphans();
            }
        });
        self
    }

    /// How many processes this spawner started are still running.
    pub fn running(&self) -> usize {
        lock(&self.inner.live).len()
    }

    /// Whether this spawner runs process `id` (with leader `pid`) and has not yet reported its exit.
    pub fn holds(&self, id: ProcessId, pid: u32) -> bool {
        lock(&self.inner.live)
            .get(&id)
            .is_some_and(|l| l.pid == pid)
    }

    /// Takes over watching process `pid` of record `id`, started by another
    /// keeper that died: its end is noticed by pidfd, and `signal` reaches
    /// its tree through the record's mark. It is not this spawner's child,
    /// so its exit status is unknown: its end (once the rest of its tree has
    /// ended too) is reported as [`ProcessNotice::Lost`], saying so. When
    /// `pid` is gone but processes carrying the mark run on, they are
    /// adopted in its place. `false` if neither runs.
    pub fn adopt(&self, id: ProcessId, pid: u32) -> bool {
        self.adopt_with(id, pid, None)
    }

    /// Record `id`'s process is a failover record's, stopped with `fence`
    /// when the node's lease lapses ([`ProcessSpawner::hold_lease`]): for
    /// a process adopted from a keeper that died.
    pub fn fence(&self, id: ProcessId, fence: bpm_domain::StopPolicy) {
        if let Some(live) = lock(&self.inner.live).get_mut(&id) {
            live.fence = Some(fence);
        }
    }

    /// [`adopt`](Self::adopt), going on copying its output from `pipes`
    /// (the reading ends of its stdout and stderr, which a daemon kept).
    pub fn adopt_with(
        &self,
        id: ProcessId,
        pid: u32,
        pipes: Option<[std::os::fd::OwnedFd; 2]>,
    ) -> bool {
        if self.holds(id, pid) {
            return true;
        }
        // A leader that is gone while processes of its tree run on (it
        // backgrounded them and exited) leaves the record live: they are
        // adopted through its mark.
        let pidfd = marked_pidfd(id, pid);
        if pidfd.is_none() && tree::members(&id.to_string(), None).is_empty() {
            return false;
        }
        let watcher = capture::Watcher::new(id, self.inner.tx.clone(), None);
        let (exited_tx, exited_rx) = watch::channel(false);
        guard(&self.inner.taken_over).insert(id, (watcher.clone(), exited_rx));
        let (kept, pumps) = self.resume_output(id, pid, pipes, &watcher);
        lock(&self.inner.live).insert(
            id,
            Live {
                pid,
                reaped: pidfd.is_none(),
                stopping: false,
                origin: Origin::Adopted,
                stdin: None,
                fence: None,
                halt: Halt::No,
                pipes: kept,
            },
        );
        let inner = self.inner.clone();
        let mut activity = watcher.activity();
        tokio::spawn(async move {
            if let Some(pidfd) = &pidfd {
                let _ = pidfd.readable().await;
            }
            lock(&inner.live).entry(id).and_modify(|l| l.reaped = true);
            if !inner.is_stopping(id) {
                // Its status is unknown: not this spawner's child.
                inner.wait_running_on(id, pid, None, true).await;
            }
            let stopping = inner.is_stopping(id);
            if stopping {
                end_rest_of_tree(id, inner.config.tree_grace).await;
            }
            if let Some(pumps) = pumps {
                drain(pumps, inner.config.drain, &watcher, &mut activity).await;
            }
            lock(&inner.live).remove(&id);
            let _ = exited_tx.send(true);
            guard(&inner.taken_over).remove(&id);
            // Its groups, if it was limited, go with it.
            let _ = tokio::task::spawn_blocking(move || limits::finish(id, true)).await;
            inner.forget_starts();
            let _ = inner.tx.send(ProcessNotice::Lost {
                id,
                reason: unknown_end(pid),
            });
        });
        true
    }

    /// Goes on copying an adopted process's output from `pipes`, or from the
    /// copies the process holds of its own when no bpm process kept them
    /// (the daemon and keeper died together): the pipes this spawner keeps
    /// for the next one, and the pumps. Neither if there are none.
    fn resume_output(
        &self,
        id: ProcessId,
        pid: u32,
        pipes: Option<[std::os::fd::OwnedFd; 2]>,
        watcher: &capture::Watcher,
    ) -> (Option<Pipes>, Option<[tokio::task::JoinHandle<()>; 2]>) {
        let share = self.inner.config.share_pipes;
        let resumed = pipes.or_else(|| held_pipes(pid)).map(|[out, err]| {
            let kept: Option<Pipes> = if share {
                Some(Arc::new([out.try_clone()?, err.try_clone()?]))
            } else {
                None
            };
            let out = pipe::Receiver::from_owned_fd(out)?;
            let err = pipe::Receiver::from_owned_fd(err)?;
            std::io::Result::Ok((kept, self.inner.pumps(out, err, watcher)))
        });
        match resumed {
            Some(Ok((kept, pumps))) => (kept, Some(pumps)),
            Some(Err(e)) => {
                tracing::warn!(%id, error = %e, "cannot go on copying an adopted process's output");
                (None, None)
            }
            None => (None, None),
        }
    }

    /// The reading ends of the output pipes of process `id`, while it runs:
    /// a daemon holds a copy, so that the pipes outlive this spawner's
    /// process (a keeper killed) and a new keeper can go on reading them.
    pub fn pipes(&self, id: ProcessId) -> Option<Pipes> {
        lock(&self.inner.live).get(&id)?.pipes.clone()
    }

    /// [`pipes`](Self::pipes) of every process that runs.
    pub fn all_pipes(&self) -> Vec<(ProcessId, Pipes)> {
        lock(&self.inner.live)
            .iter()
            .filter_map(|(id, l)| Some((*id, l.pipes.clone()?)))
            .collect()
    }

    /// Queues requests to start on exits (see [`ProcessSpawner::hand_over`]).
    /// A record this spawner started already, whose exit is not recorded,
    /// is left out: a manager that restarted hands it over before it reads
    /// the report of that start, which is on its way, and starting it on an
    /// exit after its end is recorded would run it twice.
    pub fn accept_handed(&self, requests: Vec<SpawnRequest>) {
        let fresh: Vec<SpawnRequest> = requests
            .into_iter()
            .filter(|r| {
                self.unrecorded(r.id).is_none() && !lock(&self.inner.live).contains_key(&r.id)
            })
            .collect();
        self.inner.handed().extend(fresh);
    }

    /// The pid of `id`'s process, if this spawner started it and its exit
    /// has not been recorded.
    pub fn unrecorded(&self, id: ProcessId) -> Option<u32> {
        self.inner
            .unrecorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .copied()
    }

    /// Notes that `id` was started with `pid` (by an earlier keeper) and
    /// its exit is not recorded: a spawn of it is answered with that
    /// process until [`exit_recorded`](ProcessSpawner::exit_recorded).
    pub fn started_before(&self, id: ProcessId, pid: u32) {
        self.inner
            .unrecorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, pid);
    }

    /// Takes back every request handed over and not yet started.
    pub fn withdraw_handed(&self) -> Vec<ProcessId> {
        self.inner.handed().drain(..).map(|r| r.id).collect()
    }
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

    /// Runs `command` once (`sh -c`, in the process's directory and with
    /// its variables, without bpm's mark, so that it never counts as the
    /// record's own), cut at `within`: `Ok` when it exits 0, otherwise its
    /// exit and the start of its output.
    async fn exec_once(
        &self,
        command: &str,
        request: &SpawnRequest,
        within: Duration,
    ) -> Result<(), String> {
        let child = {
            // No orphan is reaped while it starts, so its pid is known to
            // the reaper before it can end.
            let _one = self.starting.lock().unwrap_or_else(PoisonError::into_inner);
            let mut c = tokio::process::Command::new("/bin/sh");
            c.arg("-c")
                .arg(command)
                .envs(
                    request
                        .env
                        .iter()
                        .map(|(k, v)| (k.as_os_str(), v.as_os_str())),
                )
                .env_remove(tree::MARK)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true);
            if let Some(port) = request.port {
                c.env("PORT", port.to_string())
                    .env("BPM_PORT", port.to_string());
            }
            if let Some(cwd) = &request.cwd {
                c.current_dir(cwd);
            }
            let child = c.spawn().map_err(|e| format!("{command}: {e}"))?;
            if let Some(pid) = child.id() {
                guard(&self.probes).insert(pid);
            }
            child
        };
        let pid = child.id();
        let done = tokio::time::timeout(within, child.wait_with_output()).await;
        if let Some(pid) = pid {
            guard(&self.probes).remove(&pid);
        }
        match done {
            Ok(Ok(out)) if out.status.success() => Ok(()),
            Ok(Ok(out)) => {
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                let text: String = text.trim().chars().take(1024).collect();
                Err(format!(
                    "`{command}` exited {}: {text}",
                    exit_status_of(out.status)
                ))
            }
            Ok(Err(e)) => Err(format!("{command}: {e}")),
            Err(_) => Err(format!("`{command}` took over {within:?}")),
        }
    }

    /// Runs `command` every [`probe::EVERY`] until it exits 0 (each run cut
    /// at [`probe::ATTEMPT`]); ready then. Stops when the process exits.
    async fn wait_for_exec(
        self: Arc<Self>,
        command: String,
        request: SpawnRequest,
        watcher: capture::Watcher,
        mut exited: watch::Receiver<bool>,
    ) {
        loop {
            if self
                .exec_once(&command, &request, probe::ATTEMPT)
                .await
                .is_ok()
            {
                watcher.ready();
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(probe::EVERY) => {}
                _ = exited.wait_for(|e| *e) => return,
            }
        }
    }

    /// Runs the process's health check every `every` while it runs, and
    /// reports [`ProcessNotice::Health`] when it first passes, when it
    /// passes again after failing, and when it failed `failures` times in
    /// a row.
    async fn watch_health(
        self: Arc<Self>,
        check: bpm_domain::HealthCheck,
        request: SpawnRequest,
        mut exited: watch::Receiver<bool>,
    ) {
        let within = check.timeout.as_duration();
        let (mut told, mut failed) = (None, 0u32);
        loop {
            tokio::select! {
                () = tokio::time::sleep(check.every.as_duration()) => {}
                _ = exited.wait_for(|e| *e) => return,
            }
            let result = match &check.probe {
                bpm_domain::Probe::Http { target } => match probe::url_of(target, request.port) {
                    Some(url) => probe::http_check(&url, within).await,
                    None => Err(format!("no port for {target}")),
                },
                bpm_domain::Probe::Exec { command } => {
                    self.exec_once(command, &request, within).await
                }
                bpm_domain::Probe::Port { port } => {
                    let connect = tokio::net::TcpStream::connect(("127.0.0.1", *port));
                    match tokio::time::timeout(within, connect).await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(format!("port {port}: {e}")),
                        Err(_) => Err(format!("port {port}: no answer within {within:?}")),
                    }
                }
            };
            let (healthy, detail) = match result {
                Ok(()) => {
                    failed = 0;
                    (true, None)
                }
                Err(why) => {
                    failed += 1;
                    if failed < check.failures {
                        continue;
                    }
                    (false, Some(why))
                }
            };
            if told != Some(healthy) {
                told = Some(healthy);
                let _ = self.tx.send(ProcessNotice::Health {
                    id: request.id,
                    healthy,
                    detail,
                });
            }
        }
    }

    /// The processes of record `id`'s tree that run on after its leader
    /// was reaped: those that carry its mark, and their descendants. As a
    /// subreaper, whatever the leader left behind became a child of this
    /// process, so a look at its children answers "none" at once in the
    /// usual case; only when one carries the mark, or for a process this
    /// spawner did not start (`adopted`), is all of /proc read.
    fn running_on(&self, id: ProcessId, leader: u32, adopted: bool) -> Vec<procfs::Seen> {
        if self.none_runs_on(id, leader, adopted) == Look::Nothing {
            return Vec::new();
        }
        tree::members(&id.to_string(), None)
    }

    /// Whether a look at this subreaper's own children shows that nothing
    /// of record `id`'s tree runs on (a few small reads, cheap enough for
    /// the runtime's thread): [`Look::RunsOn`] when one carries its mark (or
    /// the process was adopted), and only all of /proc can tell the rest.
    ///
    /// Without the subreaper, the leader's process group tells: empty, and
    /// nothing is waited for (one `kill(-group, 0)`; a full look through
    /// /proc on every exit costs an embedded engine milliseconds). What
    /// left the group (`setsid`, a daemon) is then not waited for there,
    /// though a stop still reaches it.
    ///
    /// [`Look::Unsure`] while a child's environment cannot be read yet (it
    /// is in the middle of an `execve`): ask again shortly.
    fn none_runs_on(&self, id: ProcessId, leader: u32, adopted: bool) -> Look {
        if adopted {
            return Look::RunsOn;
        }
        if !self.config.subreaper {
            return if tree::group_alive(leader) {
                Look::RunsOn
            } else {
                Look::Nothing
            };
        }
        let leaders = self.unreaped_leaders();
        let needle = format!("{}={id}", tree::MARK).into_bytes();
        let (mut unsure, mut in_exec) = (false, false);
        for pid in subreaper::children() {
            if leaders.contains(&pid) {
                continue;
            }
            match tree::mark_of(pid, &needle) {
                Some(true) => return Look::RunsOn,
                Some(false) => {}
                None => {
                    // A zombie the reaper has not reaped yet is no one's.
                    if let Some(s) = procfs::stat(pid).filter(|s| !s.has_ended()) {
                        unsure = true;
                        in_exec |= tree::in_exec(&s);
                    }
                }
            }
        }
        if unsure {
            Look::Unsure { in_exec }
        } else {
            Look::Nothing
        }
    }

    /// [`none_runs_on`](Self::none_runs_on), asking again while it cannot
    /// tell: for up to [`IN_EXEC_FOR`] while a child is in the middle of an
    /// `execve`, else for up to [`UNSURE_FOR`]; then what it can tell (a
    /// process whose environment stays empty carries no mark).
    async fn nothing_runs_on(&self, id: ProcessId, leader: u32, adopted: bool) -> bool {
        let began = tokio::time::Instant::now();
        loop {
            let patience = match self.none_runs_on(id, leader, adopted) {
                Look::Nothing => return true,
                Look::RunsOn => return false,
                Look::Unsure { in_exec: true } => IN_EXEC_FOR,
                Look::Unsure { in_exec: false } => UNSURE_FOR,
            };
            if began.elapsed() >= patience {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Once record `id`'s leader ended with `status`: while processes of
    /// its tree run on, says so ([`ProcessNotice::LeaderExited`]) and waits
    /// until the last of them ends (or the record is being stopped, which
    /// ends them).
    /// An adopted leader's status is unknown (`None`): nothing is said then.
    async fn wait_running_on(
        self: &Arc<Self>,
        id: ProcessId,
        leader: u32,
        status: Option<ExitStatus>,
        adopted: bool,
    ) {
        if self.nothing_runs_on(id, leader, adopted).await {
            return;
        }
        let mut told: Vec<RunningOn> = Vec::new();
        let mut missed = 0;
        loop {
            let inner = self.clone();
            let rest = tokio::task::spawn_blocking(move || inner.running_on(id, leader, adopted))
                .await
                .unwrap_or_default();
            // Found by neither look: ended. (A look through /proc that
            // missed a child the first look saw, caught in an `execve`,
            // is asked again.)
            if rest.is_empty() {
                missed += 1;
                if missed > 25 || self.nothing_runs_on(id, leader, adopted).await {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            }
            missed = 0;
            if self.config.subreaper {
                let mut noted = guard(&self.running_on);
                for seen in &rest {
                    noted.insert(seen.pid, id);
                }
            }
            // Said again when what runs on changed (one ended, one was
            // started, one went from `setsid` to what it runs).
            let mut running: Vec<RunningOn> = rest
                .iter()
                .map(|s| RunningOn {
                    pid: s.pid,
                    name: tree::command_name(s.pid),
                })
                .collect();
            running.sort_by_key(|r| r.pid);
            if let Some(status) = status
                && running != told
            {
                tracing::debug!(%id, running = rest.len(), "leader exited; its tree runs on");
                told.clone_from(&running);
                let _ = self.tx.send(ProcessNotice::LeaderExited {
                    id,
                    status,
                    running,
                });
            }
            tree::any_ends(&rest, RESCAN).await;
        }
    }

    /// Starts `request`'s process, or answers with the one started for its
    /// record already (running, or ended with its exit not yet recorded).
    fn start(self: &Arc<Self>, request: &SpawnRequest) -> Result<Spawned, SpawnError> {
        let _one = self.starting.lock().unwrap_or_else(PoisonError::into_inner);
        let spawned = self.start_alone(request)?;
        self.unrecorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(request.id, spawned.pid);
        Ok(spawned)
    }

    /// Starts the first request handed over, if there is one: its id, and its pid or why not.
    fn start_handed(self: &Arc<Self>) -> Option<(ProcessId, Result<u32, String>)> {
        let _one = self.starting.lock().unwrap_or_else(PoisonError::into_inner);
        let request = self.handed().pop_front()?;
        let started = self.start_alone(&request).map(|s| s.pid);
        if let Ok(pid) = started {
            self.unrecorded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(request.id, pid);
        }
        Some((request.id, started.map_err(|e| e.to_string())))
    }

    /// [`start`](Self::start), with `starting` held.
    fn start_alone(self: &Arc<Self>, request: &SpawnRequest) -> Result<Spawned, SpawnError> {
        self.handed().retain(|q| q.id != request.id);
        if let Some(pid) = self.started_already(request.id) {
            return Ok(Spawned { pid });
        }
        // Bound first: a process quick to say READY=1 is heard.
        let notify = match request.readiness {
            ReadinessCheck::Notify => Some(
                self.notify_dir
                    .bind(&request.id)
                    .map_err(|e| SpawnError::Os(format!("cannot make the notify socket: {e}")))?,
            ),
            _ => None,
        };
        let child = self.launch(request, notify.as_ref().map(|(_, path)| path.as_path()))?;
        let pid = child.pid;
        let (stdout, stderr, pidfd) = self.hold(request, child)?;
        self.watch(request, pid, stdout, stderr, pidfd, notify);
        Ok(Spawned { pid })
    }

    /// The process this spawner started for `id` and whose exit the
    /// manager has not recorded, if any: a second spawn is answered with it.
    fn started_already(&self, id: ProcessId) -> Option<u32> {
        if let Some(live) = lock(&self.live).get(&id) {
            return Some(live.pid);
        }
        self.unrecorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .copied()
    }

    /// Starts the process, in a new session, noted in the start log before
    /// and after (with its pid).
    fn launch(
        &self,
        request: &SpawnRequest,
        notify: Option<&std::path::Path>,
    ) -> Result<spawn::Child, SpawnError> {
        let program = request
            .argv
            .first()
            .ok_or_else(|| SpawnError::Invalid("empty argument vector".into()))?;
        if let Some(cwd) = &request.cwd {
            crate::usable_cwd(cwd)?;
        }
        let composed = if request.env_files.is_empty() {
            self.composed(&request.env)?
        } else {
            // Read at each start, so an edited file takes effect on the next.
            let mut env = crate::env_file::read(&request.env_files)?;
            env.extend(request.env.iter().map(|(k, v)| (k.clone(), v.clone())));
            Arc::new(Composed::new(&self.base_env, &env)?)
        };
        let own = own_variables(request, notify)?;
        let skip = request.session.as_ref().and(composed.session_var);
        let env: Vec<&CStr> = composed
            .vars
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != skip)
            .map(|(_, kv)| kv.as_c_str())
            .chain(own.iter().map(CString::as_c_str))
            .collect();
        let resolved =
            spawn::resolve(program.as_os_str(), composed.path.as_ref()).map_err(|e| match e {
                spawn::Unrunnable::NotFound => SpawnError::ProgramNotFound(program.clone()),
                spawn::Unrunnable::NotExecutable => SpawnError::PermissionDenied(program.clone()),
            })?;
        // Before the start: a record missing from the log never started here.
        self.note_start(&format!("{}\n", request.id))
            .map_err(|e| SpawnError::Os(format!("cannot note the start in the start log: {e}")))?;
        let stdin_pipe = request.stdin == StdinMode::Pipe;
        let cwd = request.cwd.as_deref();
        let spawned = if request.limits.is_none() && request.tty.is_none() {
            spawn::spawn(&resolved, &request.argv, &env, cwd, stdin_pipe)
        } else {
            let confinement = request
                .limits
                .as_ref()
                .map(|asked| limits::Confinement::make(request.id, asked))
                .transpose()
                .map_err(|e| {
                    limits::finish(request.id, true);
                    SpawnError::Invalid(e)
                })?;
            let extra = spawn::Forked {
                confinement: confinement.as_ref(),
                tty: request.tty,
            };
            let spawned =
                spawn::spawn_forked(&resolved, &request.argv, &env, cwd, stdin_pipe, &extra);
            if spawned.is_err() && confinement.is_some() {
                limits::finish(request.id, true);
            }
            spawned
        };
        let child = spawned.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SpawnError::ProgramNotFound(program.clone()),
            std::io::ErrorKind::PermissionDenied => SpawnError::PermissionDenied(program.clone()),
            std::io::ErrorKind::InvalidInput => SpawnError::Invalid(e.to_string()),
            _ => SpawnError::Os(format!("cannot start {program:?}: {e}")),
        })?;
        // After it: its pid, for whoever must report its end.
        let _ = self.note_start(&format!("{} {}\n", request.id, child.pid));
        Ok(child)
    }

    /// Appends `line` to the start log, if this spawner keeps one.
    fn note_start(&self, line: &str) -> std::io::Result<()> {
        match &self.start_log {
            Some(log) => std::io::Write::write_all(&mut &*log, line.as_bytes()),
            None => Ok(()),
        }
    }

    /// Sends `signal` to record `id`'s process group `pid` and to what left it.
    async fn signal(&self, id: ProcessId, pid: u32, signal: Signal) -> Result<(), SpawnError> {
        let (group_alive, thaw) = {
            let mut map = lock(&self.live);
            match map.get_mut(&id) {
                Some(live) if live.pid == pid => {
                    // A process stopped for a late lease gets the signal
                    // that ends it, then CONT, to act on it.
                    let thaw = is_terminating(signal) && live.halt == Halt::Frozen;
                    if is_terminating(signal) {
                        live.stopping = true;
                    }
                    // Its caller's pause and resume: a renewal of the lease
                    // never continues a process its caller paused.
                    live.halt = match signal {
                        Signal::Stop => Halt::Paused,
                        Signal::Cont => Halt::No,
                        _ if thaw => Halt::No,
                        _ => live.halt,
                    };
                    (!live.reaped && live.origin != Origin::Adopted, thaw)
                }
                // Not ours, or already gone: signalling an ended process is not an error.
                _ => return Ok(()),
            }
        };
        let leader = group_alive.then_some(pid);
        tokio::task::spawn_blocking(move || {
            deliver(id, pid, leader, signal)?;
            if thaw {
                deliver(id, pid, leader, Signal::Cont)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| SpawnError::Os(e.to_string()))?
    }

    /// Sends `signal` to the tree of every failover process `pick` takes
    /// (and marks as it sees fit), saying `why` for each.
    fn signal_fenced(&self, signal: Signal, why: &str, pick: impl Fn(&mut Live) -> bool) {
        let targets: Vec<(ProcessId, u32, Option<u32>)> = lock(&self.live)
            .iter_mut()
            .filter(|(_, l)| l.fence.is_some() && !l.reaped)
            .filter_map(|(id, l)| {
                pick(l).then(|| (*id, l.pid, (l.origin != Origin::Adopted).then_some(l.pid)))
            })
            .collect();
        for (id, pid, leader) in targets {
            tracing::warn!(%id, pid, "{why}");
            if let Err(e) = deliver(id, pid, leader, signal) {
                tracing::warn!(%id, pid, error = %e, "cannot signal a failover record's process");
            }
        }
    }

    /// Stops the failover processes with SIGSTOP while the lease's renewals
    /// are late (`true`), or continues them when one lands (`false`); a
    /// process being stopped, or paused by its caller, is left as it is.
    fn freeze_fenced(&self, freeze: bool) {
        let (signal, why) = if freeze {
            (
                Signal::Stop,
                "the node's lease renewals are late: a failover record's process is stopped (SIGSTOP) until the next renewal",
            )
        } else {
            (
                Signal::Cont,
                "the node's lease was renewed: a failover record's process continues",
            )
        };
        let (from, to) = if freeze {
            (Halt::No, Halt::Frozen)
        } else {
            (Halt::Frozen, Halt::No)
        };
        self.signal_fenced(signal, why, |l| {
            let take = !l.stopping && l.halt == from;
            if take {
                l.halt = to;
            }
            take
        });
    }

    /// Kills every failover process at once, with no grace: the keeper
    /// found itself far past the lease's lapse (the machine was paused), so
    /// another node may run them already.
    fn kill_fenced_now(&self) {
        self.signal_fenced(
            Signal::Kill,
            "woke long past the node's lease: killing a failover record's process at once, which another node may run already",
            |l| {
                l.stopping = true;
                l.halt = Halt::No;
                true
            },
        );
    }

    /// Watches the node's lease on a thread of its own, so that it looks
    /// at the clock the moment it runs again after a pause, before any
    /// task of the runtime: when renewals are late, the failover processes
    /// are stopped (SIGSTOP) until the next; when the lease lapses, they
    /// are stopped for good, with their signal and KILL after their grace,
    /// or with KILL at once when the keeper slept far past the lapse.
    fn watch_lease(self: &Arc<Self>, runtime: &tokio::runtime::Handle) {
        loop {
            let now = std::time::Instant::now();
            let mut lease = self.lease.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(until) = lease.until else {
                lease.watched = false;
                return;
            };
            if until <= now {
                *lease = LeaseHold::default();
                drop(lease);
                if now.duration_since(until) > bpm_domain::cluster::OVERSLEPT {
                    self.kill_fenced_now();
                } else {
                    let _guard = runtime.enter();
                    self.fence_all();
                }
                return;
            }
            let late_at = lease.late_at.unwrap_or(until);
            if !lease.frozen && late_at <= now {
                lease.frozen = true;
                drop(lease);
                self.freeze_fenced(true);
                continue;
            }
            let next = if lease.frozen {
                until
            } else {
                late_at.min(until)
            };
            drop(lease);
            std::thread::sleep(next.saturating_duration_since(now));
        }
    }

    /// Stops every process with a fence: its signal now (unless a stop
    /// was already sent, by the daemon's own fence say: a second TERM may
    /// cut a graceful shutdown short), and KILL after its grace if it is
    /// still there.
    fn fence_all(self: &Arc<Self>) {
        let fenced: Vec<(ProcessId, u32, bpm_domain::StopPolicy, bool)> = lock(&self.live)
            .iter()
            .filter(|(_, l)| !l.reaped)
            .filter_map(|(id, l)| l.fence.map(|f| (*id, l.pid, f, l.stopping)))
            .collect();
        for (id, pid, policy, stopping) in fenced {
            tracing::warn!(%id, pid, "the node's lease lapsed: stopping a failover record's process, which another node may now run");
            let inner = self.clone();
            tokio::spawn(async move {
                if !stopping {
                    let _ = inner.signal(id, pid, policy.signal).await;
                }
                tokio::time::sleep(policy.grace.as_duration()).await;
                let _ = inner.signal(id, pid, Signal::Kill).await;
            });
        }
    }

    /// Holds the started `child` among the live processes; returns what is
    /// left to watch: its output pipes and its pidfd.
    fn hold(
        &self,
        request: &SpawnRequest,
        child: spawn::Child,
    ) -> Result<
        (
            pipe::Receiver,
            pipe::Receiver,
            AsyncFd<std::os::fd::OwnedFd>,
        ),
        SpawnError,
    > {
        let pid = child.pid;
        let os = |e: std::io::Error| SpawnError::Os(format!("cannot watch process {pid}: {e}"));
        // A terminal's master side is no pipe: it is taken as it is (it is
        // non-blocking already).
        let stdin = match child.stdin {
            Some(fd) if child.terminal => Some(Arc::new(tokio::sync::Mutex::new(
                pipe::Sender::from_owned_fd_unchecked(fd).map_err(os)?,
            ))),
            Some(fd) => Some(Arc::new(tokio::sync::Mutex::new(
                pipe::Sender::from_owned_fd(fd).map_err(os)?,
            ))),
            None => None,
        };
        // A terminal dies with the master side the keeper holds: copies
        // in the daemon would keep it alive with no one able to read it.
        let pipes = if self.config.share_pipes && !child.terminal {
            Some(Arc::new([
                child.stdout.try_clone().map_err(os)?,
                child.stderr.try_clone().map_err(os)?,
            ]))
        } else {
            None
        };
        let stdout = if child.terminal {
            pipe::Receiver::from_owned_fd_unchecked(child.stdout).map_err(os)?
        } else {
            pipe::Receiver::from_owned_fd(child.stdout).map_err(os)?
        };
        let stderr = pipe::Receiver::from_owned_fd(child.stderr).map_err(os)?;
        // SAFETY: the OwnedFd moves into the AsyncFd, stays open and keeps its number until dropped.
        #[allow(unsafe_code)]
        let pidfd =
            unsafe { AsyncFd::register_with_interest(child.pidfd, tokio::io::Interest::READABLE) }
                .map_err(|e| SpawnError::Os(format!("cannot watch process {pid}: {e}")))?;
        // A limited process's end is reported with what its limits saw,
        // never folded into a start handed over in its place.
        let origin = if request.hands_over && request.limits.is_none() {
            Origin::HandsOver
        } else {
            Origin::Started
        };
        let live = Live {
            pid,
            reaped: false,
            stopping: false,
            origin,
            stdin,
            fence: request.fence,
            halt: Halt::No,
            pipes,
        };
        lock(&self.live).insert(request.id, live);
        Ok((stdout, stderr, pidfd))
    }

    /// Copies the process's output, watches its readiness and idleness,
    /// and reports its end (starting the next record handed over first).
    fn watch(
        self: &Arc<Self>,
        request: &SpawnRequest,
        pid: u32,
        stdout: pipe::Receiver,
        stderr: pipe::Receiver,
        pidfd: AsyncFd<std::os::fd::OwnedFd>,
        mut notify: Option<(tokio::net::UnixDatagram, std::path::PathBuf)>,
    ) {
        let id = request.id;
        let (exited_tx, exited_rx) = watch::channel(false);
        let pattern = match &request.readiness {
            ReadinessCheck::LogPattern { pattern } => Some(pattern.clone()),
            _ => None,
        };
        let watcher = capture::Watcher::new(id, self.tx.clone(), pattern);
        let pumps = self.pumps(stdout, stderr, &watcher);
        self.arm(request, &watcher, &exited_rx, notify.take());
        let inner = self.clone();
        // Output from the start on counts as activity while the end drains.
        let activity = watcher.activity();
        let leader_only = request.leader_only;
        let ending = Ending {
            leader_only,
            limited: request.limits.is_some(),
        };
        tokio::spawn(async move {
            let mut status = reap(&pidfd, &inner.live, id).await;
            if !leader_only && !inner.is_stopping(id) {
                inner.wait_running_on(id, pid, Some(status), false).await;
                status = inner.end_of_tree(id, status);
            }
            let _ = exited_tx.send(true);
            let output = (pumps, watcher, activity);
            inner.ended(id, pid, status, output, ending).await;
        });
    }

    /// Arms the checks `request` asks for on its process, whose output
    /// `watcher` sees and whose end `exited` says: readiness (through
    /// `notify`'s socket for notify readiness), health and idleness.
    fn arm(
        self: &Arc<Self>,
        request: &SpawnRequest,
        watcher: &capture::Watcher,
        exited_rx: &watch::Receiver<bool>,
        mut notify: Option<(tokio::net::UnixDatagram, std::path::PathBuf)>,
    ) {
        match &request.readiness {
            ReadinessCheck::Port { port } => {
                let (poll, rx) = (self.config.port_poll, exited_rx.clone());
                tokio::spawn(capture::wait_for_port(*port, poll, watcher.clone(), rx));
            }
            ReadinessCheck::Http { target } => {
                if let Some(url) = probe::url_of(target, request.port) {
                    let rx = exited_rx.clone();
                    tokio::spawn(probe::wait_for_http(url, watcher.clone(), rx));
                }
            }
            ReadinessCheck::Exec { command } => {
                let (rx, inner) = (exited_rx.clone(), self.clone());
                let (command, request) = (command.clone(), request.clone());
                tokio::spawn(inner.wait_for_exec(command, request, watcher.clone(), rx));
            }
            ReadinessCheck::Notify => {
                if let Some((socket, path)) = notify.take() {
                    let rx = exited_rx.clone();
                    tokio::spawn(probe::wait_for_notify(socket, path, watcher.clone(), rx));
                }
            }
            _ => {}
        }
        if let Some(check) = request.health.clone() {
            let (rx, inner) = (exited_rx.clone(), self.clone());
            tokio::spawn(inner.watch_health(check, request.clone(), rx));
        }
        if let Some(idle) = request.idle_after {
            let idle = idle.as_duration();
            tokio::spawn(capture::watch_idle(
                idle,
                watcher.clone(),
                exited_rx.clone(),
            ));
        }
    }

    /// [`ProcessSpawner::watch_again`]: the checks of a process taken over
    /// before it was ready, armed as its start would have. A log pattern
    /// is looked for in the output kept so far too (the line may have come
    /// while no bpm process watched); notify readiness binds again the
    /// socket its environment names.
    async fn watch_taken_over(self: &Arc<Self>, request: &SpawnRequest) {
        let id = request.id;
        // Taken out: the checks are armed once, however often asked.
        let Some((watcher, exited)) = guard(&self.taken_over).remove(&id) else {
            return;
        };
        let mut notify = None;
        match &request.readiness {
            ReadinessCheck::LogPattern { pattern } => {
                // Set first, so that no line falls between the two looks.
                watcher.look_for(pattern.clone());
                let query = bpm_ports::OutputQuery {
                    tail_lines: Some(1_000),
                    ..bpm_ports::OutputQuery::default()
                };
                if let Ok(chunk) = self.output.read(id, &query).await {
                    let bytes: Vec<u8> = chunk.pieces.into_iter().flat_map(|p| p.data).collect();
                    let text = String::from_utf8_lossy(&bytes);
                    if text.lines().any(|l| pattern.is_match(l)) {
                        watcher.ready();
                    }
                }
            }
            ReadinessCheck::Notify => {
                let pid = lock(&self.live).get(&id).map(|l| l.pid);
                let path = pid
                    .and_then(|pid| tree::variable_of(pid, b"NOTIFY_SOCKET"))
                    .map(|p| {
                        std::path::PathBuf::from(
                            <OsString as std::os::unix::ffi::OsStringExt>::from_vec(p),
                        )
                    });
                if let Some(path) = path {
                    match probe::NotifyDir::rebind(&path) {
                        Ok(socket) => notify = Some((socket, path)),
                        Err(e) => {
                            tracing::warn!(%id, error = %e, "cannot listen again on the notify socket");
                        }
                    }
                }
            }
            _ => {}
        }
        self.arm(request, &watcher, &exited, notify);
    }

    /// Whether a terminating signal was sent to record `id`'s process.
    fn is_stopping(&self, id: ProcessId) -> bool {
        lock(&self.live).get(&id).is_some_and(|l| l.stopping)
    }

    /// The process of `id` ended with `status`: ends the rest of its tree if
    /// it was being stopped, drains its output, and reports the end.
    async fn ended(
        self: &Arc<Self>,
        id: ProcessId,
        pid: u32,
        status: ExitStatus,
        (pumps, watcher, mut activity): Output,
        ending: Ending,
    ) {
        let stopping = lock(&self.live).get_mut(&id).map(|l| {
            l.stdin = None;
            l.stopping
        });
        if stopping == Some(true) {
            end_rest_of_tree(id, self.config.tree_grace).await;
        }
        drain(pumps, self.config.drain, &watcher, &mut activity).await;
        // What a leader-only record's leader left runs on, by its own
        // choice, in the groups that still limit it.
        let limit = if ending.limited {
            match limits::finish_quickly(id) {
                Ok(hit) => hit,
                Err(seen) => {
                    let kill = !ending.leader_only;
                    tokio::task::spawn_blocking(move || limits::finish(id, kill))
                        .await
                        .unwrap_or_default()
                        .or(seen)
                }
            }
        } else {
            None
        };
        let hands_over = lock(&self.live)
            .remove(&id)
            .is_some_and(|l| l.origin == Origin::HandsOver);
        tracing::trace!(%id, pid, "process ended");
        self.forget_starts();
        // The next request handed over starts in its place, before the
        // manager hears of the exit.
        let next = if hands_over {
            self.start_handed()
        } else {
            None
        };
        let notice = match next {
            Some((next, started)) => ProcessNotice::HandedOver {
                id,
                status,
                next,
                started,
            },
            None => ProcessNotice::Exited { id, status, limit },
        };
        let _ = self.tx.send(notice);
    }

    /// Copies `stdout` and `stderr` into the output store, one task each.
    fn pumps(
        &self,
        stdout: pipe::Receiver,
        stderr: pipe::Receiver,
        watcher: &capture::Watcher,
    ) -> [tokio::task::JoinHandle<()>; 2] {
        [
            tokio::spawn(capture::pump(
                stdout,
                Stream::Stdout,
                self.output.clone(),
                watcher.clone(),
            )),
            tokio::spawn(capture::pump(
                stderr,
                Stream::Stderr,
                self.output.clone(),
                watcher.clone(),
            )),
        ]
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

#[async_trait]
impl ProcessSpawner for OsSpawner {
    async fn spawn(&self, request: SpawnRequest) -> Result<Spawned, SpawnError> {
        if request.limits.is_some() {
            // Its child's move into a v1 memory group can take the kernel
            // ten milliseconds and more, which no runtime thread should wait.
            let inner = self.inner.clone();
            return tokio::task::spawn_blocking(move || inner.start(&request))
                .await
                .map_err(|e| SpawnError::Os(format!("the start was lost: {e}")))?;
        }
        let started = self.inner.start(&request);
        if started.is_ok() {
            tracing::trace!(target: "bpm::hop", id = %request.id, "spawned");
        }
        started
    }

    async fn signal(&self, id: ProcessId, pid: u32, signal: Signal) -> Result<(), SpawnError> {
        self.inner.signal(id, pid, signal).await
    }

    async fn hold_lease(&self, within: Duration) -> Result<(), SpawnError> {
        let now = std::time::Instant::now();
        let until = now + within;
        let thaw = {
            let mut lease = self
                .inner
                .lease
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            lease.until = Some(lease.until.map_or(until, |held| held.max(until)));
            lease.late_at = Some(now + bpm_domain::cluster::late_after(within));
            if !lease.watched {
                lease.watched = true;
                let inner = self.inner.clone();
                let runtime = tokio::runtime::Handle::current();
                std::thread::Builder::new()
                    .name("bpm-lease".into())
                    .spawn(move || inner.watch_lease(&runtime))
                    .map_err(|e| SpawnError::Os(format!("cannot watch the lease: {e}")))?;
            }
            std::mem::take(&mut lease.frozen)
        };
        if thaw {
            self.inner.freeze_fenced(false);
        }
        Ok(())
    }

    async fn write_input(&self, id: ProcessId, data: Vec<u8>) -> Result<(), SpawnError> {
        let stdin = {
            let map = lock(&self.inner.live);
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

    async fn reattach(&self, id: ProcessId, pid: u32) -> Result<bool, SpawnError> {
        // A process started by an earlier manager is not this one's child:
        // watched by pidfd, its exit status unknown.
        Ok(self.adopt(id, pid))
    }

    async fn watch_again(&self, request: SpawnRequest) -> Result<(), SpawnError> {
        self.inner.watch_taken_over(&request).await;
        Ok(())
    }

    fn hands_over(&self) -> bool {
        true
    }

    async fn hand_over(&self, requests: Vec<SpawnRequest>) -> Result<(), SpawnError> {
        self.accept_handed(requests);
        Ok(())
    }

    async fn withdraw(&self) -> Result<Vec<ProcessId>, SpawnError> {
        Ok(self.withdraw_handed())
    }

    fn exit_recorded(&self, id: ProcessId) {
        self.inner
            .unrecorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    fn notices(&self) -> Option<mpsc::UnboundedReceiver<ProcessNotice>> {
        self.rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// A process's output: the tasks copying it, their watcher, and its activity.
type Output = (
    [tokio::task::JoinHandle<()>; 2],
    capture::Watcher,
    watch::Receiver<tokio::time::Instant>,
);

/// Sends `signal` to record `id`'s tree: its group while `leader` (its
/// unreaped leader `pid`) keeps the group id reserved, then every process
/// that left the group.
fn deliver(id: ProcessId, pid: u32, leader: Option<u32>, signal: Signal) -> Result<(), SpawnError> {
    if leader.is_some() {
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
    for member in tree::members(&id_text, leader) {
        tree::signal_seen(member, number);
    }
    // And what is in its cgroups, if it has any.
    limits::signal_group(id, number);
    Ok(())
}

/// bpm's own variables for the process: its record's mark, node, session
/// and fencing token.
fn own_variables(
    request: &SpawnRequest,
    notify: Option<&std::path::Path>,
) -> Result<Vec<CString>, SpawnError> {
    let nul = |_| SpawnError::Invalid("a NUL byte in an environment variable".into());
    let id_text = request.id.to_string();
    let mut own = Vec::with_capacity(4);
    own.push(spawn::variable(tree::MARK.as_bytes(), id_text.as_bytes()).map_err(nul)?);
    own.push(spawn::variable(b"BPM_NODE", request.node.as_str().as_bytes()).map_err(nul)?);
    if let Some(session) = &request.session {
        own.push(spawn::variable(b"BPM_SESSION", session.as_str().as_bytes()).map_err(nul)?);
    }
    if request.token > 0 {
        let token = request.token.to_string();
        own.push(spawn::variable(b"BPM_FENCE", token.as_bytes()).map_err(nul)?);
    }
    if let Some(port) = request.port {
        let port = port.to_string();
        own.push(spawn::variable(b"PORT", port.as_bytes()).map_err(nul)?);
        own.push(spawn::variable(b"BPM_PORT", port.as_bytes()).map_err(nul)?);
    }
    if let Some(path) = notify {
        own.push(
            spawn::variable(b"NOTIFY_SOCKET", path.as_os_str().as_encoded_bytes()).map_err(nul)?,
        );
    }
    Ok(own)
}

/// Waits for the process behind `pidfd` to exit and reaps it. Reaping happens
/// under the lock that `signal` takes, so the group is never signalled by a
/// pid that was freed.
async fn reap(pidfd: &AsyncFd<std::os::fd::OwnedFd>, live: &LiveMap, id: ProcessId) -> ExitStatus {
    loop {
        let mut ready = match pidfd.readable().await {
            Ok(ready) => ready,
            Err(e) => {
                tracing::error!(%id, error = %e, "cannot wait for a process");
                return ExitStatus::Code(-1);
            }
        };
        let mut map = lock(live);
        match waitid(
            WaitId::PidFd(pidfd.get_ref().as_fd()),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        ) {
            Ok(Some(status)) => {
                if let Some(l) = map.get_mut(&id) {
                    l.reaped = true;
                }
                // One hop of an exit's way to whoever waits (`BPM_BENCH=exit`).
                tracing::trace!(target: "bpm::hop", %id, "reaped");
                return exit_status(&status);
            }
            Ok(None) => ready.clear_ready(),
            Err(e) => {
                tracing::error!(%id, error = %e, "cannot reap a process");
                return ExitStatus::Code(-1);
            }
        }
    }
}

/// Lets a process's pipes drain after its exit, so its output is complete
/// when the exit is announced: while they are still copying (a slow disk
/// under the output files), for up to [`DRAIN_BUSY`]; a quiet pipe that
/// stays open (a descendant holds it) for `quiet`.
async fn drain(
    pumps: [tokio::task::JoinHandle<()>; 2],
    quiet: Duration,
    copier: &capture::Watcher,
    activity: &mut watch::Receiver<tokio::time::Instant>,
) {
    let busy_until = tokio::time::Instant::now() + DRAIN_BUSY;
    for mut pump in pumps {
        loop {
            match tokio::time::timeout(quiet, &mut pump).await {
                Err(_)
                    if (copier.copying() || activity.has_changed().unwrap_or(false))
                        && tokio::time::Instant::now() < busy_until =>
                {
                    activity.borrow_and_update();
                }
                _ => break,
            }
        }
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

/// Why a record is lost whose process `pid` ended with no keeper as its
/// parent (the one that started it died): its exit code cannot be known.
#[must_use]
pub fn unknown_end(pid: u32) -> String {
    format!(
        "process {pid} ended after the bpm keeper that started it died, so its exit code is unknown"
    )
}

/// The records whose start a spawner noted in the start log at `path` (see
/// [`OsSpawnerConfig::start_log`]), each with the pid it started, when the
/// start got that far: each may have started, and no record outside it
/// started since the log was last emptied. A missing log reads as empty.
///
/// # Errors
/// The log exists but cannot be read.
pub fn read_start_log(path: &std::path::Path) -> std::io::Result<HashMap<ProcessId, Option<u32>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e),
    };
    let mut started = HashMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(id) = words.next().and_then(|w| w.parse().ok()) else {
            continue;
        };
        let pid = words.next().and_then(|w| w.parse().ok());
        let known = started.entry(id).or_insert(None);
        if pid.is_some() {
            *known = pid;
        }
    }
    Ok(started)
}

/// Every live process that carries the mark of one of `ids`, by record: the
/// process whose parent does not carry the same mark (the leader of the
/// tree), and its pid.
#[must_use]
pub fn find_marked(ids: &[ProcessId]) -> HashMap<ProcessId, u32> {
    tree::find_leaders(&ids.iter().copied().collect())
}

/// The records whose processes run as children of process `keeper` (a
/// keeper, a subreaper: every process it started, and what they left
/// behind, are its children), by the mark each carries, with a pid of each.
#[must_use]
pub fn marked_children(keeper: u32) -> HashMap<ProcessId, u32> {
    let mut found = HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{keeper}/task")) else {
        return found;
    };
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            let id = tree::variable_of(pid, tree::MARK.as_bytes())
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| v.parse::<ProcessId>().ok());
            if let Some(id) = id {
                found.entry(id).or_insert(pid);
            }
        }
    }
    found
}

/// Stops every process that carries record `id`'s mark: TERM, then KILL
/// to what is left after `grace`. For processes no record answers for any
/// more (their record was lost with a damaged journal): nothing bpm runs
/// is left out of reach. Blocks for up to `grace`.
pub fn stop_marked(id: ProcessId, grace: Duration) {
    let text = id.to_string();
    for member in tree::members(&text, None) {
        tree::signal_seen(member, Signal::Term.number());
    }
    let deadline = std::time::Instant::now() + grace;
    loop {
        let rest = tree::members(&text, None);
        if rest.is_empty() {
            return;
        }
        if std::time::Instant::now() >= deadline {
            for member in rest {
                tree::signal_seen(member, Signal::Kill.number());
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// This machine's time zone, as an IANA name: `TZ`, else what
/// `/etc/localtime` links to, else `/etc/timezone`, else UTC. A schedule
/// keeps the name, so its hours do not move with the daemon's zone.
#[must_use]
pub fn local_time_zone() -> String {
    let known = |name: &str| {
        let name = name.trim().trim_start_matches(':');
        bpm_domain::known_time_zone(name).then(|| name.to_owned())
    };
    let from_env = std::env::var("TZ").ok().and_then(|tz| known(&tz));
    let from_link = || {
        let link = std::fs::read_link("/etc/localtime").ok()?;
        let text = link.to_string_lossy();
        let (_, name) = text.split_once("zoneinfo/")?;
        known(name)
    };
    let from_file = || {
        std::fs::read_to_string("/etc/timezone")
            .ok()
            .and_then(|t| known(&t))
    };
    from_env
        .or_else(from_link)
        .or_else(from_file)
        .unwrap_or_else(|| "UTC".to_owned())
}

/// This process's environment as the base of a process it starts for its
/// caller, as a shell would pass it on, byte for byte, without bpm's own
/// marks (`BPM_PROCESS_ID`, `BPM_SESSION`, `BPM_NODE`, `BPM_FENCE`,
/// `BPM_PORT`).
#[must_use]
pub fn inherited_env() -> Environment {
    std::env::vars_os()
        .filter(|(k, _)| {
            !matches!(
                k.as_bytes(),
                b"BPM_PROCESS_ID"
                    | b"BPM_SESSION"
                    | b"BPM_NODE"
                    | b"BPM_FENCE"
                    | b"BPM_PORT"
                    | b"NOTIFY_SOCKET"
            )
        })
        .map(|(k, v)| (OsText::from(k), OsText::from(v)))
        .collect()
}

/// Raises this process's limit of open files to its hard limit (at most
/// 65,536): a keeper holds about five descriptors per process it runs, and a
/// daemon two (the pipes that outlive the keeper), so the common soft limit
/// of 1,024 would cap them at a few hundred processes. The processes a
/// keeper starts inherit the raised soft limit, as they do in containers.
pub fn raise_open_files_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let want = limit.maximum.map_or(65_536, |max| max.min(65_536));
    if limit.current.is_some_and(|c| c >= want) {
        return;
    }
    let raised = Rlimit {
        current: Some(want),
        maximum: limit.maximum,
    };
    if let Err(e) = setrlimit(Resource::Nofile, raised) {
        tracing::warn!(error = %e, "cannot raise the limit of open files");
    }
}

/// The kernel's id of this boot of the machine (empty if it cannot be
/// read): two processes that see the same one run on the same machine,
/// and it has not been restarted between them.
#[must_use]
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_owned())
        .unwrap_or_default()
}

/// Whether a bpm program runs as `pid` on this machine: the pid exists,
/// is not a zombie waiting to be reaped, and its command name is bpm's (a
/// pid the kernel gave to another program since does not count).
#[must_use]
pub fn runs_bpm(pid: u32) -> bool {
    if procfs::stat(pid).is_none_or(|s| s.has_ended()) {
        return false;
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let name = comm.trim();
    if name.is_empty() {
        return false;
    }
    // A test binary or a renamed copy still names its executable bpm.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    name.starts_with("bpm") || exe.starts_with("bpm")
}
