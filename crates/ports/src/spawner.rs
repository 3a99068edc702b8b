use std::path::PathBuf;

use async_trait::async_trait;
use bpm_domain::{
    Environment, ExitStatus, NodeId, OsText, ProcessId, ProcessRecord, ReadinessCheck, RestartMode,
    SessionId, Signal, Span, StdinMode, StopPolicy,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// How soon a follower of output looks again where no one can say when
/// a process writes ([`ProcessSpawner::wait_output`]'s default).
pub const OUTPUT_LOOK: std::time::Duration = std::time::Duration::from_millis(100);

/// What a wait for output does where no one can say when the process
/// writes: it lets [`OUTPUT_LOOK`] pass (or `within`, if shorter), so that
/// its follower looks again.
pub async fn look_again(within: std::time::Duration) {
    tokio::time::sleep(within.min(OUTPUT_LOOK)).await;
}

/// Everything a spawner needs to start one process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpawnRequest {
    /// The record.
    pub id: ProcessId,
    /// Its node (given to the child as `BPM_NODE`).
    pub node: NodeId,
    /// Its session (given to the child as `BPM_SESSION`).
    pub session: Option<SessionId>,
    /// Program and arguments, as bytes.
    pub argv: Vec<OsText>,
    /// Working directory.
    #[serde(with = "bpm_domain::path_serde")]
    pub cwd: Option<PathBuf>,
    /// Environment overrides.
    #[serde(with = "bpm_domain::env_serde")]
    pub env: std::sync::Arc<Environment>,
    /// Environment files to read as it starts, under `env`
    /// ([`ProcessSpec::env_files`](bpm_domain::ProcessSpec::env_files)).
    #[serde(
        default,
        with = "bpm_domain::paths_serde",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env_files: Vec<PathBuf>,
    /// Standard input.
    pub stdin: StdinMode,
    /// The readiness check the spawner watches for.
    pub readiness: ReadinessCheck,
    /// Report [`ProcessNotice::Idle`] after this long without output.
    pub idle_after: Option<Span>,
    /// Whether its exit frees its slot for good (it is never restarted), so
    /// that the spawner may start the next record handed over in its place
    /// ([`ProcessSpawner::hand_over`]).
    #[serde(default)]
    pub hands_over: bool,
    /// A failover record's process: how the spawner stops it when the
    /// node's lease lapses ([`ProcessSpawner::hold_lease`]). Serialised
    /// as `fence`, its first name, which keepers of earlier builds read.
    #[serde(default, rename = "fence", skip_serializing_if = "Option::is_none")]
    pub stand_down: Option<StopPolicy>,
    /// The attempt's fencing token ([`ProcessRecord::fence_token`]), given
    /// to the child as `BPM_FENCE` (0: none given).
    #[serde(default)]
    pub token: u64,
    /// Report the exit when the leader exits, even while processes of its
    /// tree run on ([`ProcessSpec::leader_only`](bpm_domain::ProcessSpec::leader_only));
    /// otherwise the spawner reports [`ProcessNotice::LeaderExited`] and
    /// the exit once the last of them ends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leader_only: bool,
    /// The TCP port handed to the record ([`ProcessRecord::port`]), given
    /// to the child as `PORT` and `BPM_PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The liveness check to run while it runs, reported as
    /// [`ProcessNotice::Health`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<bpm_domain::HealthCheck>,
    /// What the process and its tree may use; a spawner that cannot
    /// enforce one refuses the start ([`SpawnError::Invalid`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<bpm_domain::ResourceLimits>,
    /// Run it under a pseudo-terminal of this size
    /// ([`ProcessSpec::tty`](bpm_domain::ProcessSpec::tty)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<bpm_domain::TtySize>,
    /// How an HTTP, command or port readiness check is tried
    /// ([`Readiness::pace`](bpm_domain::Readiness::pace)); its failures in a
    /// row are reported as [`ProcessNotice::Health`], unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_pace: Option<bpm_domain::Pace>,
    /// How many rotated pieces of its output to keep, compressed
    /// ([`ProcessSpec::log_archive`](bpm_domain::ProcessSpec::log_archive)):
    /// the spawner tells its output store before the process writes
    /// ([`OutputStore::keep_archives`](crate::OutputStore::keep_archives)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_archive: Option<u32>,
}

impl SpawnRequest {
    /// The request for a record in `starting`. `None` for a tracked operation.
    pub fn for_record(record: &ProcessRecord) -> Option<Self> {
        let spec = record.spec();
        Some(SpawnRequest {
            id: record.id(),
            node: record.node().clone(),
            session: spec.session.clone(),
            argv: spec.command.as_ref()?.to_argv(),
            cwd: spec.cwd.clone(),
            env: spec.env.clone(),
            env_files: spec.env_files.clone(),
            stdin: spec.stdin,
            readiness: record.readiness_check(),
            idle_after: spec.idle_after,
            hands_over: spec.restart.mode == RestartMode::Never,
            stand_down: spec.failover.then_some(spec.stop),
            token: record.fence_token(),
            leader_only: spec.leader_only,
            port: record.port(),
            health: spec.health.as_deref().cloned(),
            limits: spec.limits.as_deref().copied(),
            tty: spec.tty,
            ready_pace: spec.readiness.pace,
            log_archive: spec.log_archive,
        })
    }
}

/// A process that was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spawned {
    /// Its pid, which is also its process group id.
    pub pid: u32,
}

/// Something a spawner observed about a process it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessNotice {
    /// It exited (and was reaped).
    Exited {
        /// The record.
        id: ProcessId,
        /// How.
        status: ExitStatus,
        /// The resource limit that ended it, when the spawner saw one do
        /// so (a cgroup's OOM kill).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<bpm_domain::LimitHit>,
    },
    /// It exited, and the spawner started the next record handed over in
    /// its place ([`ProcessSpawner::hand_over`]): the manager takes both at once.
    HandedOver {
        /// The record whose process exited.
        id: ProcessId,
        /// How.
        status: ExitStatus,
        /// The record started in its place.
        next: ProcessId,
        /// Its pid, or why it could not be started.
        started: Result<u32, String>,
    },
    /// Its leader exited (and was reaped) while other processes of its
    /// tree run on: its [`Exited`](ProcessNotice::Exited), with the
    /// leader's status, follows when the last of them ends.
    LeaderExited {
        /// The record.
        id: ProcessId,
        /// How the leader ended.
        status: ExitStatus,
        /// What runs on.
        running: Vec<bpm_domain::RunningOn>,
    },
    /// Its readiness check passed.
    Ready {
        /// The record.
        id: ProcessId,
    },
    /// It wrote nothing for its idle period.
    Idle {
        /// The record.
        id: ProcessId,
    },
    /// Its health check passed (after failing, or for the first time), or
    /// failed its `failures` times in a row.
    Health {
        /// The record.
        id: ProcessId,
        /// Whether it is healthy.
        healthy: bool,
        /// The last failure's output.
        detail: Option<String>,
    },
    /// The spawner can no longer watch it (its supervisor died), so its end will not be known.
    Lost {
        /// The record.
        id: ProcessId,
        /// Why.
        reason: String,
    },
    /// A record handed over ([`ProcessSpawner::hand_over`]) that the
    /// process holding it started before it died (so it could not report
    /// it): the spawner that took over found it and watches it; it runs
    /// with `pid`, and its end is reported as any other's.
    Adopted {
        /// The record.
        id: ProcessId,
        /// Its pid.
        pid: u32,
    },
    /// Records handed over ([`ProcessSpawner::hand_over`]) that the spawner
    /// gives back unstarted, as [`ProcessSpawner::withdraw`] would (the
    /// process that held them died): the manager starts them itself.
    Withdrawn {
        /// The records.
        ids: Vec<ProcessId>,
    },
}

/// A spawner could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SpawnError {
    /// The program does not exist.
    #[error("program not found: {0:?}")]
    ProgramNotFound(OsText),
    /// The program exists but may not be executed.
    #[error("permission denied: cannot execute {0:?}")]
    PermissionDenied(OsText),
    /// The working directory does not exist.
    #[error("working directory not found: {}", .0.display())]
    CwdNotFound(PathBuf),
    /// The working directory is something else than a directory (a file).
    #[error("working directory is not a directory: {}", .0.display())]
    CwdNotADirectory(PathBuf),
    /// An environment file cannot be read, or is not in dotenv format.
    #[error("environment file {}: {reason}", .path.display())]
    EnvFile {
        /// The file.
        path: PathBuf,
        /// Why: missing, unreadable, or the line that is not `NAME=value`.
        reason: String,
    },
    /// The request cannot be carried out as given.
    #[error("invalid spawn request: {0}")]
    Invalid(String),
    /// No process of this spawner has this id (or it has exited).
    #[error("no running process with id {0}")]
    NoSuchProcess(ProcessId),
    /// The operating system refused.
    #[error("OS error: {0}")]
    Os(String),
    /// Whether the process started cannot be known (whoever started it died
    /// during the start, and no process of it runs now). The manager records
    /// it as lost, for this reason, and never starts it again.
    #[error("{0}")]
    Unknown(String),
}

/// Starts and controls OS processes, each in its own process group.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ProcessSpawner: Send + Sync + 'static {
    /// Starts the process. Its exit is reported later as [`ProcessNotice::Exited`].
    /// Asked again for a record it started whose exit the manager has not
    /// recorded ([`exit_recorded`](Self::exit_recorded)), it answers with
    /// that process, running or ended, and starts nothing: a manager that
    /// restarted before it heard of a start asks again.
    ///
    /// # Errors
    /// - MUST return [`SpawnError::ProgramNotFound`] if the program does not exist.
    /// - MUST return [`SpawnError::PermissionDenied`] if it may not be executed.
    /// - MUST return [`SpawnError::CwdNotFound`] if the working directory does not exist,
    ///   and [`SpawnError::CwdNotADirectory`] if it is not a directory.
    /// - MUST return [`SpawnError::EnvFile`] if one of its environment
    ///   files cannot be read or parsed; it starts nothing then.
    /// - MUST return [`SpawnError::Invalid`] for a request it cannot carry out (empty argv).
    /// - MUST return [`SpawnError::Unknown`] if it cannot know whether the
    ///   process started, which then never runs a second time through it.
    /// - MUST return [`SpawnError::Os`] for any other refusal.
    async fn spawn(&self, request: SpawnRequest) -> Result<Spawned, SpawnError>;

    /// Sends `signal` to the whole process tree of `id` (led by `pid`).
    /// Signalling a process that has already exited is not an error, and a
    /// recycled pid is never signalled.
    ///
    /// # Errors
    /// - MUST return [`SpawnError::Os`] if the OS refuses.
    async fn signal(&self, id: ProcessId, pid: u32, signal: Signal) -> Result<(), SpawnError>;

    /// Writes `data` to the process's standard input.
    ///
    /// # Errors
    /// - MUST return [`SpawnError::NoSuchProcess`] if `id` is not running here.
    /// - MUST return [`SpawnError::Invalid`] if its standard input is not a pipe.
    async fn write_input(&self, id: ProcessId, data: Vec<u8>) -> Result<(), SpawnError>;

    /// Takes over a process a previous manager started (after a restart).
    /// Returns `false` if it cannot be supervised again (gone, or not ours).
    ///
    /// # Errors
    /// - MUST return [`SpawnError::Os`] if the OS refuses.
    async fn reattach(&self, id: ProcessId, pid: u32) -> Result<bool, SpawnError>;

    /// Arms again, for a process [`reattach`](Self::reattach) took over
    /// before it was ready, the checks its start armed: `request` is its
    /// record's ([`SpawnRequest::for_record`]), and its readiness check,
    /// health check and idle period are watched from now on as
    /// [`spawn`](Self::spawn) watches them (a log pattern is looked for in
    /// the output kept too). A process that was not taken over, or has
    /// ended, is left alone. The default does nothing: a spawner whose
    /// processes never outlive it has none to take over.
    ///
    /// # Errors
    /// - MUST return [`SpawnError::Os`] if the request cannot reach the
    ///   spawner.
    async fn watch_again(&self, request: SpawnRequest) -> Result<(), SpawnError> {
        let _ = request;
        Ok(())
    }

    /// Runs `command` to stop the process of `request`'s record (its
    /// [`StopCommand`](bpm_domain::StopCommand)): `sh -c`, in the
    /// process's directory and environment (with its `PORT`), cut at
    /// `within`. What it writes, and how it ended when that was not exit
    /// 0, goes to the record's output. Answers once it has ended.
    ///
    /// # Errors
    /// - MUST return [`SpawnError::Os`] if it could not be run, did not
    ///   exit 0, or was cut; the process is then stopped by its signal all
    ///   the same.
    /// - MUST return [`SpawnError::Invalid`] from a spawner that runs no
    ///   commands (the default).
    async fn run_stop_command(
        &self,
        request: SpawnRequest,
        command: String,
        within: std::time::Duration,
    ) -> Result<(), SpawnError> {
        let _ = (request, command, within);
        Err(SpawnError::Invalid(
            "this spawner runs no stop command".into(),
        ))
    }

    /// Returns once record `id`'s process has written past `after` (a
    /// position in its combined output), once it has ended, or once
    /// `within` has passed, whichever comes first: a follower of the
    /// output waits here and reads again, instead of looking on a timer.
    /// A spawner that does not run the process, or cannot tell when it
    /// writes (the default), returns after at most [`OUTPUT_LOOK`], so the
    /// follower looks again.
    ///
    /// # Errors
    /// - MUST return [`SpawnError::Os`] if the request cannot reach the
    ///   spawner.
    async fn wait_output(
        &self,
        id: ProcessId,
        after: crate::Cursor,
        within: std::time::Duration,
    ) -> Result<(), SpawnError> {
        let _ = (id, after);
        look_again(within).await;
        Ok(())
    }

    /// The stream of notices. The first call returns it; later calls return `None`.
    fn notices(&self) -> Option<mpsc::UnboundedReceiver<ProcessNotice>>;

    /// Whether this spawner takes requests to start on exits
    /// ([`hand_over`](Self::hand_over)). The default says no.
    fn hands_over(&self) -> bool {
        false
    }

    /// Queues `requests`, after those queued already: on each exit of a
    /// process started with `hands_over`, the spawner starts the first one
    /// still queued at once and reports [`ProcessNotice::HandedOver`]
    /// instead of `Exited`. A queued request that [`spawn`](Self::spawn) is
    /// asked for leaves the queue; `spawn` of a record this spawner already
    /// runs answers with that process instead of starting another, and so
    /// does `spawn` of one it started on an exit, even ended, until
    /// [`exit_recorded`](Self::exit_recorded) is called for it. A
    /// spawner whose [`hands_over`](Self::hands_over) says no queues
    /// nothing (the default).
    ///
    /// # Errors
    /// - MUST return [`SpawnError::Os`] if the requests cannot be handed to it.
    async fn hand_over(&self, requests: Vec<SpawnRequest>) -> Result<(), SpawnError> {
        let _ = requests;
        Ok(())
    }

    /// Takes back every queued request and returns their ids: those will
    /// not be started. A request handed over and not returned was started
    /// (or failed to), and its report is delivered or on its way.
    ///
    /// # Errors
    /// - MUST return [`SpawnError::Os`] if the spawner cannot be reached; the
    ///   queue is then unknown.
    async fn withdraw(&self) -> Result<Vec<ProcessId>, SpawnError> {
        Ok(Vec::new())
    }

    /// The node's lease is held for `within` more: unless this is called
    /// again before then, the spawner stops every process whose request
    /// has a `stand_down` policy (its signal, then KILL after its grace), as the
    /// daemon's core would ([`bpm_domain::Input::Lease`]). So a daemon
    /// that dies or stalls cannot leave a failover record running past the
    /// time another node may start it. A spawner whose processes do not
    /// outlive its daemon keeps the default, which does nothing.
    ///
    /// # Errors
    /// MUST return [`SpawnError::Os`] if the spawner cannot be reached.
    async fn hold_lease(&self, within: std::time::Duration) -> Result<(), SpawnError> {
        let _ = within;
        Ok(())
    }

    /// Says that the exit of `id` has been recorded (durably): a spawner
    /// that keeps exits for a manager that may crash (the keeper) may now
    /// forget it. Until then it hands the exit again to the next manager
    /// that connects. A spawner that starts requests on exits forgets then
    /// that it started `id` (see [`hand_over`](Self::hand_over)). Spawners
    /// that keep nothing keep the default, which does nothing.
    fn exit_recorded(&self, id: ProcessId) {
        let _ = id;
    }
}
