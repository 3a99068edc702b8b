//! What to run and how to supervise it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::os_text::{env_serde, path_serde, paths_serde};
use crate::resources::ResourceLimits;
use crate::terminal::TtySize;
use crate::{
    Environment, GroupName, LabelKey, LabelValue, NodeId, OsText, Owner, PortAsk, ProcessId,
    ProcessName, Schedule, ScheduleError, SessionId, Span,
};

mod checks;
mod policies;

pub use checks::{
    DEFAULT_WATCH_DEBOUNCE_MS, FileWatch, HealthCheck, NameTaken, Pace, Probe, Until,
};
pub use policies::{
    Backoff, LogPattern, Readiness, ReadinessCheck, RestartMode, RestartPolicy, Signal,
    StopCommand, StopPolicy,
};

/// The most archives of old output a process may keep.
pub const MAX_LOG_ARCHIVES: u32 = 100;

/// What a process runs: an argument vector, or one string given to `sh -c`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Program and arguments, run without a shell.
    Argv(Vec<OsText>),
    /// A shell command line, run as `sh -c LINE`.
    Shell(OsText),
}

impl Command {
    /// The argument vector to execute (`["sh", "-c", line]` for a shell line).
    pub fn to_argv(&self) -> Vec<OsText> {
        match self {
            Command::Argv(argv) => argv.clone(),
            Command::Shell(line) => vec!["sh".into(), "-c".into(), line.clone()],
        }
    }
}

/// The arguments joined by spaces, or the shell line; bytes that are not
/// UTF-8 shown as `\xNN`.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Argv(argv) => {
                for (i, a) in argv.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{a}")?;
                }
                Ok(())
            }
            Command::Shell(line) => write!(f, "{line}"),
        }
    }
}

/// What kind of work a process is, for filtering and display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessKind {
    /// An AI agent's session.
    AgentSession,
    /// A test suite.
    TestSuite,
    /// A build.
    Build,
    /// A long-running server.
    Server,
    /// An analysis job.
    Analysis,
    /// An agent's own MCP server, hosted by `bpm mcp-run`.
    Mcp,
    /// Anything else.
    #[default]
    Custom,
}

impl FromStr for ProcessKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.replace('-', "_"))).map_err(|_| {
            format!(
                "invalid kind {s:?}: expected agent_session, test_suite, build, server, analysis, mcp or custom"
            )
        })
    }
}

/// What the child's standard input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StdinMode {
    /// Closed (reads see end of file).
    #[default]
    Closed,
    /// A pipe bpm keeps open, so input can be sent to the running process.
    Pipe,
}

/// A spec was refused before anything was created.
///
/// It crosses the control socket as it is (`{"kind": ..., "detail": ...}`),
/// so a client gets the variant an embedded caller gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SpecError {
    /// The argument vector is empty, or its program is an empty string.
    #[error("missing command: the argument vector is empty")]
    EmptyArgv,
    /// The shell command line is empty.
    #[error("missing command: the shell command line is empty")]
    EmptyShell,
    /// A command argument contains a NUL byte, which the OS cannot pass.
    #[error("invalid command: argument {0} contains a NUL byte")]
    NulInArgument(usize),
    /// An environment variable name is empty or contains `=` or NUL.
    #[error(
        "invalid environment variable name {0:?}: it must be non-empty and contain no '=' or NUL"
    )]
    InvalidEnvName(OsText),
    /// An environment variable value contains NUL.
    #[error("invalid environment variable {0:?}: its value contains a NUL byte")]
    InvalidEnvValue(OsText),
    /// A log pattern is not a valid regular expression.
    #[error("invalid regex {pattern:?}: {reason}")]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// The regex engine's message.
        reason: String,
    },
    /// Metadata must be a JSON object.
    #[error("invalid metadata: it must be a JSON object, not {0}")]
    MetadataNotObject(Cow<'static, str>),
    /// The backoff factor must be a finite number of at least 1.
    #[error("invalid backoff factor {0}: it must be a finite number of at least 1")]
    InvalidBackoffFactor(String),
    /// The backoff's initial delay exceeds its maximum.
    #[error("invalid backoff: the initial delay {initial} exceeds the maximum {max}")]
    BackoffInitialExceedsMax {
        /// The initial delay.
        initial: Span,
        /// The maximum.
        max: Span,
    },
    /// A readiness port of 0 cannot be connected to.
    #[error("invalid readiness port 0")]
    InvalidPort,
    /// A timeout of zero would stop the process as it starts.
    #[error(
        "invalid timeout 0: the process would be stopped as it starts (leave the timeout out for none)"
    )]
    ZeroTimeout,
    /// Too many dependencies.
    #[error("too many dependencies: {0} (at most 256)")]
    TooManyDependencies(usize),
    /// The same dependency is named twice.
    #[error("dependency {0} is named twice")]
    DuplicateDependency(ProcessId),
    /// A tracked operation was asked for with a command.
    #[error("a tracked operation has no command: use start to run one")]
    TrackedWithCommand,
    /// A tracked operation has no process, so a setting that only applies to one was given.
    #[error("a tracked operation has no command, so it cannot have {0}")]
    NotForTracked(Cow<'static, str>),
    /// The schedule cannot work.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// A schedule was asked for with a setting it cannot have.
    #[error("a schedule cannot have {0}")]
    NotForSchedule(Cow<'static, str>),
    /// Node labels restrict the choice of node, so they need `node` "any".
    #[error("node labels choose among nodes: they need the placement `any` (--node any)")]
    NodeLabelsWithoutAny,
    /// Failover runs the process again elsewhere, so it needs a restart
    /// policy that runs it again.
    #[error(
        "failover starts the process again on another node, so it needs the restart policy on-failure or always (--restart on-failure)"
    )]
    FailoverWithoutRestart,
    /// Ensuring or replacing acts on the live record of the same name.
    #[error(
        "ensure and replace act on the live process of the same name, and this one has none: give it a name (--name)"
    )]
    NameTakenWithoutName,
    /// A port is handed out by the node that runs the process.
    #[error(
        "--port cannot be used with --node any or --failover yet: the port is handed out by the node that runs the process, and held there"
    )]
    PortOnAnyNode,
    /// A health check that cannot work.
    #[error("invalid health check: {0}")]
    InvalidHealth(String),
    /// A readiness check that cannot work.
    #[error("invalid readiness check: {0}")]
    InvalidReadiness(String),
    /// A stop command that cannot work.
    #[error("invalid stop command: {0}")]
    InvalidStop(String),
    /// A number of output archives out of bounds.
    #[error("log_archive {0}: keep from 1 to {MAX_LOG_ARCHIVES} archives of old output")]
    InvalidLogArchive(u32),
    /// A rolling replace that cannot work.
    #[error("a rolling replace {0}")]
    InvalidRoll(String),
    /// A dependency condition names a record that is not a dependency.
    #[error("a condition names {0}, which is not among the dependencies")]
    ConditionWithoutDependency(ProcessId),
    /// An owning process that does not run.
    #[error("owner pid:{0} is not running: no process has this pid")]
    OwnerNotRunning(u32),
    /// An owner grace given without an owner.
    #[error("an owner grace without an owner: give --owner too")]
    GraceWithoutOwner,
    /// An environment file named by a relative path: the daemon, which
    /// reads it, has a working directory of its own.
    #[error("environment file {0:?} must be an absolute path")]
    RelativeEnvFile(PathBuf),
    /// A file watch that cannot work.
    #[error("invalid watch: {0}")]
    InvalidWatch(String),
}

/// Everything needed to run (or track) one piece of work.
///
/// `command: None` makes a *tracked operation*: work the caller does itself
/// (a migration, an agent's own long step), reported through progress,
/// complete and fail.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessSpec {
    /// What to run; `None` for a tracked operation.
    pub command: Option<Command>,
    /// A human name.
    pub name: Option<ProcessName>,
    /// What kind of work it is.
    pub kind: ProcessKind,
    /// The working directory; the manager's own when `None`.
    #[serde(with = "path_serde")]
    pub cwd: Option<PathBuf>,
    /// Environment overrides, added to the inherited environment. Shared
    /// (copy on write with `Arc::make_mut`): a record is cloned into several
    /// places, and processes started from one shell carry the same one.
    #[serde(with = "env_serde")]
    pub env: Arc<Environment>,
    /// Environment files (dotenv format, absolute paths), read each time
    /// the process starts, a restart included, so an edited file takes
    /// effect on the next start: their variables go over the inherited
    /// environment, a later file's over an earlier's, and `env` over all.
    #[serde(default, with = "paths_serde", skip_serializing_if = "Vec::is_empty")]
    pub env_files: Vec<PathBuf>,
    /// Standard input.
    pub stdin: StdinMode,
    /// Run it under a pseudo-terminal of this size: its standard input,
    /// output and error are the terminal (so `isatty` is true and prompts
    /// work), and input is typed into it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<TtySize>,
    /// The session that owns it.
    pub session: Option<SessionId>,
    /// The parent in a hierarchy.
    pub parent: Option<ProcessId>,
    /// The concurrency group.
    pub group: Option<GroupName>,
    /// Higher starts first among queued processes; ties go in submission order.
    /// The few already handed to the spawner to start next (while every slot
    /// is taken) go before a record queued later.
    pub priority: i32,
    /// Processes that must have completed before this one starts.
    pub dependencies: Vec<ProcessId>,
    /// Wait this long after submission before starting.
    pub delay: Option<Span>,
    /// Stop the process (and record `timed_out`) once it has run this long.
    pub timeout: Option<Span>,
    /// How to stop it.
    pub stop: StopPolicy,
    /// A command run to stop it, before the stop's signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_command: Option<Box<StopCommand>>,
    /// Whether to restart it when it exits.
    pub restart: RestartPolicy,
    /// When it counts as ready.
    pub readiness: Readiness,
    /// Announce an `idle` event after this long without output (for agents
    /// that must know when a session waits for input).
    pub idle_after: Option<Span>,
    /// Exit codes besides 0 that count as success: completed, not
    /// failed, and not restarted `on-failure` (process-compose's
    /// `success_exit_codes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub success_codes: Vec<i32>,
    /// Keep this many rotated pieces of its output, gzip-compressed, when
    /// its newest output pushes them out ([`MAX_LOG_ARCHIVES`] at most).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_archive: Option<u32>,
    /// Labels, for filtering.
    pub labels: BTreeMap<LabelKey, LabelValue>,
    /// Free-form JSON object.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// A shell command the daemon runs when the process ends (the record as
    /// JSON on its stdin; `BPM_PROCESS_ID`, `BPM_STATE`, `BPM_EXIT_CODE` set).
    pub on_exit: Option<String>,
    /// The client's request that submitted it, and its place in that
    /// request: a client whose connection broke asks which of its
    /// request's records exist ([`ListFilter::request`](crate::ListFilter::request)),
    /// and submits only the rest again. A restart's record has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestRef>,
    /// The node to run it on, when not the node it is submitted to: the
    /// call is sent to that node's daemon, which makes the record. Only that
    /// node's core takes it. [`NodeId::any`] queues it for the whole
    /// cluster: the first node with room that carries `node_labels` claims it
    /// ([`crate::cluster::placement`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeId>,
    /// With `node` "any": only a node carrying every one of these labels
    /// (its `[node] labels`) may take it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_labels: BTreeMap<LabelKey, LabelValue>,
    /// When its node is lost, the cluster runs it again on another node
    /// (one carrying `node_labels`), as a new record `restarted_from` this
    /// one; its node stops it first when it loses its lease
    /// ([`crate::cluster::ClusterTiming::failover_due`]). Needs a restart
    /// policy that runs it again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failover: bool,
    /// The record ends when its leader exits, even while processes of its
    /// tree run on (they are left running). Without it, a leader that
    /// exits leaves its record live until the last process of its tree
    /// (its descendants, and processes carrying its `BPM_PROCESS_ID`) ends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leader_only: bool,
    /// What a submission does when a live record of its scope already
    /// carries its `name` (a name is unique among live records: those of
    /// the node, or of the whole cluster for one placed on any node).
    #[serde(default, skip_serializing_if = "NameTaken::is_refuse")]
    pub if_name_taken: NameTaken,
    /// How far each of some `dependencies` must get before this record
    /// starts ([`Until`]); a dependency not named here must complete.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub until: BTreeMap<ProcessId, Until>,
    /// A liveness check run while the process runs ([`HealthCheck`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Box<HealthCheck>>,
    /// A TCP port to hand the process (as `PORT` and `BPM_PORT`), held by
    /// its record until it ends ([`crate::port`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortAsk>,
    /// The record lives only while one of these lives ([`crate::Owner`]);
    /// none: until it ends or is stopped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<Owner>,
    /// How long the record outlives its last owner (default
    /// [`crate::DEFAULT_OWNER_GRACE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_grace: Option<Span>,
    /// Restart it (as a new record, as `bpm restart` does) when files
    /// under these paths change ([`FileWatch`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<Box<FileWatch>>,
    /// A schedule: the record starts a run of this spec at each due time
    /// instead of running it once ([`Schedule`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Box<Schedule>>,
    /// What the process and its tree may use ([`ResourceLimits`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Box<ResourceLimits>>,
}

/// Where a spec runs: the node it is submitted to, a named node, or the
/// first node with room ([`NodeId::any`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement<'a> {
    /// The node the spec is submitted to.
    Here,
    /// This node.
    On(&'a NodeId),
    /// Any node with room that carries the spec's `node_labels`.
    Any,
}

/// Where a record came from: the client's request id (chosen by the
/// client, unique to the request) and the record's index in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestRef {
    /// The request.
    pub id: uuid::Uuid,
    /// The record's place in it, from 0.
    pub index: u32,
}

impl ProcessSpec {
    /// Where it runs.
    pub fn placement(&self) -> Placement<'_> {
        match &self.node {
            None => Placement::Here,
            Some(n) if n.is_any() => Placement::Any,
            Some(n) => Placement::On(n),
        }
    }

    /// A spec that runs `argv` with every other setting at its default.
    pub fn argv<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsText>,
    {
        ProcessSpec {
            command: Some(Command::Argv(argv.into_iter().map(Into::into).collect())),
            ..ProcessSpec::default()
        }
    }

    /// A spec that runs `line` through `sh -c`.
    pub fn shell(line: impl Into<OsText>) -> Self {
        ProcessSpec {
            command: Some(Command::Shell(line.into())),
            ..ProcessSpec::default()
        }
    }

    /// A tracked operation: no command, reported by the caller.
    pub fn tracked(name: ProcessName) -> Self {
        ProcessSpec {
            name: Some(name),
            ..ProcessSpec::default()
        }
    }

    /// Whether an exit with `status` is a success: 0, or one of
    /// [`success_codes`](Self::success_codes).
    pub fn succeeded(&self, status: crate::ExitStatus) -> bool {
        status.success()
            || matches!(status, crate::ExitStatus::Code(c) if self.success_codes.contains(&c))
    }

    /// How long the record outlives its last owner: its `owner_grace`, or
    /// [`crate::DEFAULT_OWNER_GRACE`].
    pub fn grace_after_owners(&self) -> Duration {
        self.owner_grace
            .map_or(crate::DEFAULT_OWNER_GRACE, Span::as_duration)
    }

    /// How far dependency `id` must get before this record starts.
    pub fn until_of(&self, id: ProcessId) -> Until {
        self.until.get(&id).copied().unwrap_or_default()
    }

    /// Whether this record has no OS process of its own: a tracked
    /// operation (no command), or a schedule (its runs have the processes).
    pub fn is_tracked(&self) -> bool {
        self.command.is_none() || self.schedule.is_some()
    }

    /// Whether this record waits for, and holds, one of `limits.max_running`'s
    /// slots while it runs. A tracked record has no process to count; an
    /// agent's MCP server (kind `mcp`) is what the agent waits on to go on
    /// at all, so queueing it behind other work would hang the agent: it
    /// starts at once and is not counted.
    pub fn takes_a_slot(&self) -> bool {
        !self.is_tracked() && self.kind != ProcessKind::Mcp
    }

    fn check_schedule(&self, schedule: &Schedule) -> Result<(), SpecError> {
        schedule.validate()?;
        let refuse = |what: &'static str| Err(SpecError::NotForSchedule(Cow::Borrowed(what)));
        if self.command.is_none() {
            return refuse("no command: it runs one at each due time");
        }
        if self.failover {
            return refuse(
                "failover yet: place it on a node, or on any node (the claim decides which)",
            );
        }
        if self.port.is_some() {
            return refuse("a port (its runs would share it): give its runs none");
        }
        if self.watch.is_some() {
            return refuse("a file watch");
        }
        if self.parent.is_some() || !self.dependencies.is_empty() {
            return refuse("a parent or dependencies");
        }
        if self.delay.is_some() {
            return refuse("a delay: its first due time is when it starts");
        }
        Ok(())
    }

    /// The spec of a schedule's runs: this spec without its schedule,
    /// name, owners or request (the schedule holds those).
    #[must_use]
    pub fn run_of_schedule(&self) -> ProcessSpec {
        let mut run = self.clone();
        run.schedule = None;
        run.name = None;
        run.if_name_taken = NameTaken::default();
        run.owners = Vec::new();
        run.owner_grace = None;
        run.request = None;
        run
    }

    /// The settings in which `other` runs something else than this spec:
    /// what `--ensure` compares. The environment (a caller's whole shell,
    /// which differs from shell to shell), metadata, placement, order,
    /// delay and the request are not compared.
    pub fn differences(&self, other: &ProcessSpec) -> Vec<&'static str> {
        let mut differ = Vec::new();
        let mut check = |name, same: bool| {
            if !same {
                differ.push(name);
            }
        };
        check("command", self.command == other.command);
        check("cwd", self.cwd == other.cwd);
        check("kind", self.kind == other.kind);
        check("group", self.group == other.group);
        check("stdin", self.stdin == other.stdin);
        check("timeout", self.timeout == other.timeout);
        check("stop", self.stop == other.stop);
        check("stop_command", self.stop_command == other.stop_command);
        check("success_codes", self.success_codes == other.success_codes);
        check("restart", self.restart == other.restart);
        check("readiness", self.readiness == other.readiness);
        check("idle_after", self.idle_after == other.idle_after);
        check("labels", self.labels == other.labels);
        check("on_exit", self.on_exit == other.on_exit);
        check("failover", self.failover == other.failover);
        check("leader_only", self.leader_only == other.leader_only);
        check("port", self.port == other.port);
        check("health", self.health == other.health);
        check("env_files", self.env_files == other.env_files);
        check("watch", self.watch == other.watch);
        check("schedule", self.schedule == other.schedule);
        check("limits", self.limits == other.limits);
        check("tty", self.tty == other.tty);
        differ
    }

    /// Checks what the field types cannot: a usable command, a valid environment,
    /// a sane backoff, distinct dependencies.
    ///
    /// # Errors
    /// The first [`SpecError`] found.
    pub fn validate(&self) -> Result<(), SpecError> {
        if let Some(n) = self.log_archive
            && !(1..=MAX_LOG_ARCHIVES).contains(&n)
        {
            return Err(SpecError::InvalidLogArchive(n));
        }
        if self.if_name_taken == NameTaken::Roll {
            self.check_roll()?;
        }
        if let Some(c) = &self.stop_command {
            if c.command.trim().is_empty() {
                return Err(SpecError::InvalidStop("the stop command is empty".into()));
            }
            if self.command.is_none() {
                return Err(SpecError::NotForTracked(Cow::Borrowed("a stop command")));
            }
        }
        if !self.node_labels.is_empty() && self.placement() != Placement::Any {
            return Err(SpecError::NodeLabelsWithoutAny);
        }
        if self.failover && self.restart.mode == RestartMode::Never {
            return Err(SpecError::FailoverWithoutRestart);
        }
        if self.name.is_none() && !self.if_name_taken.is_refuse() {
            return Err(SpecError::NameTakenWithoutName);
        }
        if self.port.is_some() && (self.placement() == Placement::Any || self.failover) {
            return Err(SpecError::PortOnAnyNode);
        }
        if let Some(schedule) = &self.schedule {
            self.check_schedule(schedule)?;
        }
        if self.owner_grace.is_some() && self.owners.is_empty() {
            return Err(SpecError::GraceWithoutOwner);
        }
        if let Some(file) = self.env_files.iter().find(|f| !f.is_absolute()) {
            return Err(SpecError::RelativeEnvFile(file.clone()));
        }
        self.check_watch()?;
        self.check_command()?;
        self.check_env()?;
        self.check_backoff()?;
        self.check_health()?;
        self.check_readiness()?;
        if self.timeout.is_some_and(|t| t.as_duration().is_zero()) {
            return Err(SpecError::ZeroTimeout);
        }
        if self.dependencies.len() > 256 {
            return Err(SpecError::TooManyDependencies(self.dependencies.len()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for d in &self.dependencies {
            if !seen.insert(*d) {
                return Err(SpecError::DuplicateDependency(*d));
            }
        }
        if let Some(d) = self.until.keys().find(|d| !seen.contains(d)) {
            return Err(SpecError::ConditionWithoutDependency(*d));
        }
        Ok(())
    }

    /// A watch names absolute paths and waits a little after a change.
    fn check_watch(&self) -> Result<(), SpecError> {
        if let Some(w) = &self.watch {
            if w.paths.is_empty() {
                return Err(SpecError::InvalidWatch("it names no path".into()));
            }
            if let Some(p) = w.paths.iter().find(|p| !p.is_absolute()) {
                return Err(SpecError::InvalidWatch(format!(
                    "{} is not an absolute path",
                    p.display()
                )));
            }
            if w.debounce.as_duration().is_zero() {
                return Err(SpecError::InvalidWatch(
                    "a debounce of 0 would restart on every write of a save".into(),
                ));
            }
        }
        Ok(())
    }

    /// A command that can run; a tracked operation asks for nothing a process needs.
    fn check_command(&self) -> Result<(), SpecError> {
        match &self.command {
            Some(Command::Argv(argv)) => {
                if argv.first().is_none_or(OsText::is_empty) {
                    return Err(SpecError::EmptyArgv);
                }
                if let Some(i) = argv.iter().position(|a| a.contains_byte(0)) {
                    return Err(SpecError::NulInArgument(i));
                }
            }
            Some(Command::Shell(line)) => {
                if line.is_blank() {
                    return Err(SpecError::EmptyShell);
                }
                if line.contains_byte(0) {
                    return Err(SpecError::NulInArgument(2));
                }
            }
            None => {
                if !self.env.is_empty() || !self.env_files.is_empty() {
                    return Err(SpecError::NotForTracked(Cow::Borrowed("an environment")));
                }
                if self.readiness.check != ReadinessCheck::None {
                    return Err(SpecError::NotForTracked(Cow::Borrowed("a readiness check")));
                }
                if self.idle_after.is_some() {
                    return Err(SpecError::NotForTracked(Cow::Borrowed("an idle period")));
                }
                if self.port.is_some() {
                    return Err(SpecError::NotForTracked(Cow::Borrowed("a port")));
                }
                if self.watch.is_some() {
                    return Err(SpecError::NotForTracked(Cow::Borrowed("a file watch")));
                }
                if self.limits.is_some() {
                    return Err(SpecError::NotForTracked(Cow::Borrowed("resource limits")));
                }
                if self.tty.is_some() {
                    return Err(SpecError::NotForTracked(Cow::Borrowed("a terminal")));
                }
                if self.restart.mode != RestartMode::Never {
                    return Err(SpecError::NotForTracked(Cow::Borrowed("a restart policy")));
                }
            }
        }
        Ok(())
    }

    /// Variable names and values `execve` takes.
    fn check_env(&self) -> Result<(), SpecError> {
        for (k, v) in self.env.iter() {
            if k.is_empty() || k.contains_byte(b'=') || k.contains_byte(0) {
                return Err(SpecError::InvalidEnvName(k.clone()));
            }
            if v.contains_byte(0) {
                return Err(SpecError::InvalidEnvValue(k.clone()));
            }
        }
        Ok(())
    }

    /// A backoff that grows and starts below its maximum.
    fn check_backoff(&self) -> Result<(), SpecError> {
        let b = &self.restart.backoff;
        if !b.factor.is_finite() || b.factor < 1.0 {
            return Err(SpecError::InvalidBackoffFactor(b.factor.to_string()));
        }
        if b.initial > b.max {
            return Err(SpecError::BackoffInitialExceedsMax {
                initial: b.initial,
                max: b.max,
            });
        }
        Ok(())
    }

    /// A health check that can run.
    fn check_health(&self) -> Result<(), SpecError> {
        if let Some(h) = &self.health {
            let bad = |why: String| Err(SpecError::InvalidHealth(why));
            match &h.probe {
                Probe::Port { port: 0 } => return Err(SpecError::InvalidPort),
                Probe::Http { target } if !is_http_target(target) => {
                    return bad(format!(
                        "HTTP check {target:?}: give a path (/healthz) or an http:// or https:// URL"
                    ));
                }
                Probe::Http { target } if target.starts_with('/') && self.port.is_none() => {
                    return bad(format!(
                        "HTTP check on path {target:?} needs a port handed out (--port)"
                    ));
                }
                Probe::Exec { command } if command.trim().is_empty() => {
                    return bad("the check's command is empty".into());
                }
                _ => {}
            }
            if h.failures == 0 {
                return bad("failures must be at least 1".into());
            }
            if h.every.as_duration() < Duration::from_millis(100) {
                return bad(format!("every {} is under 100ms", h.every));
            }
            if h.successes == 0 {
                return bad("successes must be at least 1".into());
            }
            if self.command.is_none() {
                return Err(SpecError::NotForTracked(Cow::Borrowed("a health check")));
            }
        }
        Ok(())
    }

    /// What a rolling replace needs: a readiness check (a handed-out
    /// port is one), no fixed port, one node.
    fn check_roll(&self) -> Result<(), SpecError> {
        if self.name.is_none() {
            return Err(SpecError::InvalidRoll(
                "needs a name: it replaces the live record of its name".into(),
            ));
        }
        let unready = match self.readiness.check {
            ReadinessCheck::None => self.port.is_none(),
            ReadinessCheck::Running => true,
            _ => false,
        };
        if unready {
            return Err(SpecError::InvalidRoll(
                "needs a readiness check (--ready-http, --ready-port, --ready-exec, --ready-pattern, --ready-notify, or port = \"auto\"): without one, the new copy counts as ready the moment it starts"
                    .into(),
            ));
        }
        if matches!(self.port, Some(PortAsk::Fixed(_))) {
            return Err(SpecError::InvalidRoll(
                "needs port = \"auto\" or a range: the running copy holds a fixed port until the new one is ready"
                    .into(),
            ));
        }
        if self.placement() == Placement::Any {
            return Err(SpecError::InvalidRoll(
                "is for a record of one node, not one placed on any".into(),
            ));
        }
        Ok(())
    }

    /// A readiness check that can pass.
    fn check_readiness(&self) -> Result<(), SpecError> {
        match &self.readiness.check {
            ReadinessCheck::Port { port: 0 } => return Err(SpecError::InvalidPort),
            ReadinessCheck::Http { target } if !is_http_target(target) => {
                return Err(SpecError::InvalidReadiness(format!(
                    "HTTP readiness {target:?}: give a path (/healthz) or an http:// or https:// URL"
                )));
            }
            ReadinessCheck::Http { target } if target.starts_with('/') && self.port.is_none() => {
                return Err(SpecError::InvalidReadiness(format!(
                    "HTTP readiness on path {target:?} needs a port handed out (--port)"
                )));
            }
            ReadinessCheck::Exec { command } if command.trim().is_empty() => {
                return Err(SpecError::InvalidReadiness(
                    "the readiness command is empty".into(),
                ));
            }
            _ => {}
        }
        if let Some(pace) = &self.readiness.pace {
            if !matches!(
                self.readiness.check,
                ReadinessCheck::Http { .. }
                    | ReadinessCheck::Exec { .. }
                    | ReadinessCheck::Port { .. }
            ) {
                return Err(SpecError::InvalidReadiness(
                    "initial_delay, every, successes and failures pace an HTTP, command or port check, and none is given".into(),
                ));
            }
            pace.check()
                .map_err(|e| SpecError::InvalidReadiness(format!("readiness: {e}")))?;
        }
        Ok(())
    }
}

/// Whether an HTTP check's target is one: a path, or an `http://` or
/// `https://` URL.
fn is_http_target(target: &str) -> bool {
    target.starts_with('/') || target.starts_with("http://") || target.starts_with("https://")
}

/// Turns a JSON value into metadata, refusing anything but an object.
///
/// # Errors
/// [`SpecError::MetadataNotObject`] naming the JSON type given.
pub fn metadata_from_json(
    value: serde_json::Value,
) -> Result<serde_json::Map<String, serde_json::Value>, SpecError> {
    match value {
        serde_json::Value::Object(map) => Ok(map),
        serde_json::Value::Null => Err(SpecError::MetadataNotObject(Cow::Borrowed("null"))),
        serde_json::Value::Bool(_) => Err(SpecError::MetadataNotObject(Cow::Borrowed("a boolean"))),
        serde_json::Value::Number(_) => {
            Err(SpecError::MetadataNotObject(Cow::Borrowed("a number")))
        }
        serde_json::Value::String(_) => {
            Err(SpecError::MetadataNotObject(Cow::Borrowed("a string")))
        }
        serde_json::Value::Array(_) => Err(SpecError::MetadataNotObject(Cow::Borrowed("an array"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_what_is_wrong() {
        assert_eq!(
            ProcessSpec::argv(Vec::<String>::new()).validate(),
            Err(SpecError::EmptyArgv)
        );
        assert_eq!(
            ProcessSpec::shell("  ").validate(),
            Err(SpecError::EmptyShell)
        );
        assert_eq!(
            ProcessSpec::argv(["echo", "a\0b"]).validate(),
            Err(SpecError::NulInArgument(1))
        );
        let mut s = ProcessSpec::argv(["true"]);
        s.timeout = Some(Span::from_millis(0));
        assert_eq!(s.validate(), Err(SpecError::ZeroTimeout));
        s.timeout = Some(Span::from_millis(1));
        assert_eq!(s.validate(), Ok(()));
        {
            // Bytes that are not UTF-8 are valid, and kept exactly.
            use std::os::unix::ffi::OsStrExt as _;
            let mut s = ProcessSpec::argv([OsText::from_bytes(b"caf\xe9".to_vec())]);
            s.cwd = Some(std::ffi::OsStr::from_bytes(b"/tmp/caf\xe9").into());
            Arc::make_mut(&mut s.env).insert(
                OsText::from_bytes(b"K\xff".to_vec()),
                OsText::from_bytes(b"v\xfe".to_vec()),
            );
            assert_eq!(s.validate(), Ok(()));
            let back: ProcessSpec =
                serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
            assert_eq!(back, s);
            Arc::make_mut(&mut s.env)
                .insert(OsText::from_bytes(b"\xff=".to_vec()), OsText::default());
            assert_eq!(
                s.validate().unwrap_err().to_string(),
                r#"invalid environment variable name "\xff=": it must be non-empty and contain no '=' or NUL"#
            );
        }
        let mut s = ProcessSpec::argv(["true"]);
        Arc::make_mut(&mut s.env).insert("A=B".into(), "x".into());
        assert!(s.validate().unwrap_err().to_string().contains("\"A=B\""));
        let mut s = ProcessSpec::argv(["true"]);
        s.restart.backoff.factor = 0.5;
        assert!(matches!(
            s.validate(),
            Err(SpecError::InvalidBackoffFactor(_))
        ));
        let mut s = ProcessSpec::argv(["true"]);
        s.restart.backoff.initial = Span::from_secs(10);
        s.restart.backoff.max = Span::from_secs(1);
        assert!(matches!(
            s.validate(),
            Err(SpecError::BackoffInitialExceedsMax { .. })
        ));
        let mut s = ProcessSpec::argv(["true"]);
        let d = ProcessId::from_uuid(uuid::Uuid::nil());
        s.dependencies = vec![d, d];
        assert_eq!(s.validate(), Err(SpecError::DuplicateDependency(d)));
        let mut s = ProcessSpec::tracked(ProcessName::new("migrate").unwrap());
        s.restart.mode = RestartMode::Always;
        assert_eq!(
            s.validate(),
            Err(SpecError::NotForTracked(Cow::Borrowed("a restart policy")))
        );
        assert!(ProcessSpec::argv(["true"]).validate().is_ok());
    }

    #[test]
    fn bad_regex_is_named() {
        let err = LogPattern::new("listening on (").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid regex \"listening on (\""),
            "{err}"
        );
    }

    #[test]
    fn backoff_grows_and_caps() {
        let b = Backoff::default();
        assert_eq!(b.delay(0), Duration::from_millis(500));
        assert_eq!(b.delay(1), Duration::from_secs(1));
        assert_eq!(b.delay(3), Duration::from_secs(4));
        assert_eq!(b.delay(20), Duration::from_mins(1));
        assert_eq!(b.delay(u32::MAX), Duration::from_mins(1));
    }

    #[test]
    fn enums_parse_from_cli_words() {
        assert_eq!(
            "test-suite".parse::<ProcessKind>(),
            Ok(ProcessKind::TestSuite)
        );
        assert!(
            "daemon"
                .parse::<ProcessKind>()
                .unwrap_err()
                .contains("\"daemon\"")
        );
        assert_eq!("sigint".parse::<Signal>(), Ok(Signal::Int));
        assert_eq!(
            "on-failure".parse::<RestartMode>(),
            Ok(RestartMode::OnFailure)
        );
        assert!("sometimes".parse::<RestartMode>().is_err());
        assert!(
            metadata_from_json(serde_json::json!([1]))
                .unwrap_err()
                .to_string()
                .contains("an array")
        );
    }

    #[test]
    fn signals_have_linux_numbers_and_names() {
        let all = [
            (Signal::Hup, 1),
            (Signal::Int, 2),
            (Signal::Quit, 3),
            (Signal::Kill, 9),
            (Signal::Usr1, 10),
            (Signal::Usr2, 12),
            (Signal::Term, 15),
            (Signal::Cont, 18),
            (Signal::Stop, 19),
        ];
        for (sig, n) in all {
            assert_eq!(sig.number(), n);
            let name = serde_json::to_value(sig).unwrap();
            assert_eq!(name.as_str().unwrap().parse::<Signal>(), Ok(sig));
        }
        assert!("SIGWHAT".parse::<Signal>().unwrap_err().contains("SIGWHAT"));
    }

    #[test]
    fn commands_and_patterns_display() {
        assert_eq!(
            Command::Argv(vec!["ls".into(), "-l".into()]).to_string(),
            "ls -l"
        );
        assert_eq!(
            Command::Shell("echo hi | wc".into()).to_string(),
            "echo hi | wc"
        );
        let p = LogPattern::new("^ready on :(\\d+)$").unwrap();
        assert!(p.is_match("ready on :8080"));
        assert!(!p.is_match("not ready"));
        assert_eq!(p.as_str(), "^ready on :(\\d+)$");
        for (v, what) in [
            (serde_json::json!(null), "null"),
            (serde_json::json!(true), "a boolean"),
            (serde_json::json!(1), "a number"),
            (serde_json::json!("x"), "a string"),
        ] {
            assert_eq!(
                metadata_from_json(v),
                Err(SpecError::MetadataNotObject(Cow::Borrowed(what)))
            );
        }
        assert!(metadata_from_json(serde_json::json!({"a": 1})).is_ok());
        let mut s = ProcessSpec::argv(["x"]);
        s.readiness.check = ReadinessCheck::Port { port: 0 };
        assert_eq!(s.validate(), Err(SpecError::InvalidPort));
        s.readiness.check = ReadinessCheck::None;
        s.dependencies = (0..300)
            .map(|n| ProcessId::from_uuid(uuid::Uuid::from_u128(n)))
            .collect();
        assert_eq!(s.validate(), Err(SpecError::TooManyDependencies(300)));
        let mut s = ProcessSpec::argv(["x"]);
        Arc::make_mut(&mut s.env).insert("K".into(), "a\0b".into());
        assert_eq!(s.validate(), Err(SpecError::InvalidEnvValue("K".into())));
        let mut t = ProcessSpec::tracked(ProcessName::new("t").unwrap());
        Arc::make_mut(&mut t.env).insert("K".into(), "v".into());
        assert_eq!(
            t.validate(),
            Err(SpecError::NotForTracked(Cow::Borrowed("an environment")))
        );
        let mut t = ProcessSpec::tracked(ProcessName::new("t").unwrap());
        t.readiness.check = ReadinessCheck::Port { port: 1 };
        assert_eq!(
            t.validate(),
            Err(SpecError::NotForTracked(Cow::Borrowed("a readiness check")))
        );
        assert_eq!(
            ProcessSpec::shell("a\0").validate(),
            Err(SpecError::NulInArgument(2))
        );
    }

    #[test]
    fn spec_round_trips_through_json() {
        let mut s = ProcessSpec::shell("echo hi");
        s.readiness.check = ReadinessCheck::LogPattern {
            pattern: LogPattern::new("ready").unwrap(),
        };
        s.labels.insert(
            LabelKey::new("team").unwrap(),
            LabelValue::new("core").unwrap(),
        );
        let json = serde_json::to_string(&s).unwrap();
        let back: ProcessSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(Command::Shell("x".into()).to_argv(), ["sh", "-c", "x"]);
    }
}
