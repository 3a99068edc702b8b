//! One call type. Every [`ProcessManager`] call as a value ([`Call`]), every
//! answer as a value ([`Reply`]), and the one function that applies a call to
//! a manager ([`apply`]). The control socket carries them between a client
//! and its daemon; the command bus carries them between nodes. Neither has
//! a dispatcher of its own.
//!
//! As JSON a call is `{"method":"stop","params":{"id":...,"force":false}}`
//! (a call without parameters has no `params`), and a reply is
//! `{"record":{...}}`, `{"started":[...]}` or `"done"`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bpm_domain::{
    Environment, Event, Limits, ListFilter, Percent, ProcessId, ProcessRecord, ProcessSpec,
    SessionId, Span, Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::{
    Completion, Cursor, ManagerError, OutputChunk, OutputQuery, ProcessManager, ResourceUsage,
    StopOptions,
};

/// A call to a [`ProcessManager`], one variant per method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "params", rename_all = "snake_case")]
pub enum Call {
    /// [`ProcessManager::start`].
    Start {
        /// What to run.
        spec: Box<ProcessSpec>,
    },
    /// [`ProcessManager::start_many`]: answered with
    /// [`Reply::Started`], one entry per spec, in order.
    StartMany {
        /// What to run, in order.
        specs: Vec<ProcessSpec>,
        /// Variables every spec gets under its own (a spec's own value of a
        /// variable wins), so that a large batch carries them once.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "bpm_domain::env_serde::option"
        )]
        env: Option<Arc<Environment>>,
        /// Answer ids ([`Started::Id`]), not records.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        brief: bool,
    },
    /// [`ProcessManager::track`].
    Track {
        /// The process to track.
        spec: Box<ProcessSpec>,
    },
    /// [`ProcessManager::get`].
    Get {
        /// The record.
        id: ProcessId,
    },
    /// [`ProcessManager::list`].
    List {
        /// Which records.
        filter: ListFilter,
    },
    /// [`ProcessManager::progress`].
    Progress {
        /// The record.
        id: ProcessId,
        /// How far along.
        percent: Percent,
        /// What it is doing.
        message: Option<String>,
    },
    /// [`ProcessManager::complete`].
    Complete {
        /// The record.
        id: ProcessId,
        /// Its result.
        result: Option<serde_json::Value>,
    },
    /// [`ProcessManager::fail`].
    Fail {
        /// The record.
        id: ProcessId,
        /// Why.
        error: String,
    },
    /// [`ProcessManager::stop`].
    Stop {
        /// The record.
        id: ProcessId,
        /// KILL at once.
        force: bool,
        /// The grace period, if not the policy's.
        grace: Option<Span>,
    },
    /// [`ProcessManager::stop_level`].
    StopLevel {
        /// The hierarchy depth (roots are 0).
        level: usize,
        /// KILL at once.
        force: bool,
        /// The grace period, if not the policy's.
        grace: Option<Span>,
    },
    /// [`ProcessManager::pause`].
    Pause {
        /// The record.
        id: ProcessId,
    },
    /// [`ProcessManager::resume`].
    Resume {
        /// The record.
        id: ProcessId,
    },
    /// [`ProcessManager::restart`].
    Restart {
        /// The record.
        id: ProcessId,
    },
    /// [`ProcessManager::wait`].
    Wait {
        /// The record.
        id: ProcessId,
        /// How long to wait; forever without.
        timeout_ms: Option<u64>,
    },
    /// [`ProcessManager::wait_many`].
    WaitMany {
        /// The records.
        ids: Vec<ProcessId>,
        /// How long to wait; forever without.
        timeout_ms: Option<u64>,
    },
    /// [`ProcessManager::read_output`].
    ReadOutput {
        /// The record.
        id: ProcessId,
        /// What to read.
        query: OutputQuery,
    },
    /// [`ProcessManager::wait_output`].
    WaitOutput {
        /// The record.
        id: ProcessId,
        /// The position past which output is waited for.
        after: Cursor,
        /// How long to wait at most.
        within_ms: u64,
    },
    /// [`ProcessManager::send_input`].
    SendInput {
        /// The record.
        id: ProcessId,
        /// The bytes for its standard input.
        data: Vec<u8>,
    },
    /// [`ProcessManager::remove`].
    Remove {
        /// The record.
        id: ProcessId,
    },
    /// [`ProcessManager::recent_events`].
    RecentEvents,
    /// [`ProcessManager::resource_usage`].
    Usage,
    /// [`ProcessManager::check_fence`].
    CheckFence {
        /// The record.
        id: ProcessId,
        /// The fencing token to check.
        token: u64,
    },
    /// [`ProcessManager::hold_session`].
    HoldSession {
        /// The session.
        session: SessionId,
        /// The process that holds it.
        holder: u32,
    },
    /// [`ProcessManager::release_session`].
    ReleaseSession {
        /// The session.
        session: SessionId,
        /// The process that held it.
        holder: u32,
    },
}

impl Call {
    /// The one record the call is about, if it is about one.
    pub fn id(&self) -> Option<ProcessId> {
        match self {
            Call::Get { id }
            | Call::Progress { id, .. }
            | Call::Complete { id, .. }
            | Call::Fail { id, .. }
            | Call::Stop { id, .. }
            | Call::Pause { id }
            | Call::Resume { id }
            | Call::Restart { id }
            | Call::Wait { id, .. }
            | Call::ReadOutput { id, .. }
            | Call::WaitOutput { id, .. }
            | Call::SendInput { id, .. }
            | Call::Remove { id }
            | Call::CheckFence { id, .. } => Some(*id),
            Call::Start { .. }
            | Call::StartMany { .. }
            | Call::Track { .. }
            | Call::List { .. }
            | Call::StopLevel { .. }
            | Call::WaitMany { .. }
            | Call::RecentEvents
            | Call::Usage
            | Call::HoldSession { .. }
            | Call::ReleaseSession { .. } => None,
        }
    }

    /// The call's name, as the wire spells its `method`.
    pub fn name(&self) -> &'static str {
        match self {
            Call::Start { .. } => "start",
            Call::StartMany { .. } => "start_many",
            Call::Track { .. } => "track",
            Call::Get { .. } => "get",
            Call::List { .. } => "list",
            Call::Progress { .. } => "progress",
            Call::Complete { .. } => "complete",
            Call::Fail { .. } => "fail",
            Call::Stop { .. } => "stop",
            Call::StopLevel { .. } => "stop_level",
            Call::Pause { .. } => "pause",
            Call::Resume { .. } => "resume",
            Call::Restart { .. } => "restart",
            Call::Wait { .. } => "wait",
            Call::WaitMany { .. } => "wait_many",
            Call::ReadOutput { .. } => "read_output",
            Call::WaitOutput { .. } => "wait_output",
            Call::SendInput { .. } => "send_input",
            Call::Remove { .. } => "remove",
            Call::RecentEvents => "recent_events",
            Call::Usage => "usage",
            Call::CheckFence { .. } => "check_fence",
            Call::HoldSession { .. } => "hold_session",
            Call::ReleaseSession { .. } => "release_session",
        }
    }
}

/// What a daemon says about itself (the control socket's `status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// Its process id.
    pub pid: u32,
    /// Its software version.
    pub version: String,
    /// The store it uses (`fs`, `memory`, or the Redis URL without credentials).
    pub store: String,
    /// Its node.
    pub node: String,
    /// Its state directory.
    pub home: String,
    /// The keeper it talks to: its pid, bpm version and keeper protocol
    /// (absent from daemons before this field).
    #[serde(default)]
    pub keeper: Option<String>,
    /// Records per state.
    pub counts: BTreeMap<String, usize>,
    /// When the daemon started (absent from daemons before this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// Its supervision limits, for showing slots in use (absent from daemons
    /// before this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// What went wrong that its operator must know (a damaged journal at
    /// start, a keeper that died), newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Its place in a cluster: its node's epoch and lease (absent with a
    /// store of its own, and from daemons before this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// The answer to a [`Call`] that succeeded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// The record after the call.
    Record(ProcessRecord),
    /// A `start_many`'s outcomes, one per spec, in order.
    Started(Vec<Started>),
    /// Records (`list`, `stop_level`).
    Records(Vec<ProcessRecord>),
    /// `complete` or `fail`: the record, and whether the call changed nothing.
    Completion {
        /// The record.
        record: ProcessRecord,
        /// It had finished already.
        no_op: bool,
    },
    /// Output read.
    Output(OutputChunk),
    /// The daemon's own status (the control socket's `status`).
    Status(Box<DaemonStatus>),
    /// Recent events.
    Events(Vec<Event>),
    /// What running trees use.
    Usage(Vec<ResourceUsage>),
    /// A fencing token's check: why it is stale, or `None`.
    Fence {
        /// Why the token is stale.
        stale: Option<String>,
    },
    /// Done, with nothing to answer.
    Done,
}

/// One spec's outcome in a `start_many` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Started {
    /// The record made.
    Record(ProcessRecord),
    /// The id of the record made (a `brief` batch).
    Id(ProcessId),
    /// Why the spec was refused.
    Error(WireError),
}

impl Started {
    /// The outcome as `start_many` returns it.
    ///
    /// # Errors
    /// The spec's refusal; [`ManagerError::Connection`] for an id where a
    /// record was asked for.
    pub fn into_record(self) -> Result<ProcessRecord, ManagerError> {
        match self {
            Started::Record(r) => Ok(r),
            Started::Id(_) => Err(ManagerError::Connection(
                "the answer held an id where a record was asked for".into(),
            )),
            Started::Error(e) => Err(e.error),
        }
    }

    /// The outcome as `start_many_ids` returns it.
    ///
    /// # Errors
    /// The spec's refusal.
    pub fn into_id(self) -> Result<ProcessId, ManagerError> {
        match self {
            Started::Record(r) => Ok(r.id()),
            Started::Id(id) => Ok(id),
            Started::Error(e) => Err(e.error),
        }
    }
}

/// A failed call as a line carries it: the typed error, flattened (`"kind"`,
/// and `"detail"` where the variant has data), and its text for people
/// (`"message"`). The reader gets back the very [`ManagerError`] returned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WireError {
    /// The error.
    #[serde(flatten)]
    pub error: ManagerError,
    /// What went wrong, for people.
    pub message: String,
}

impl From<ManagerError> for WireError {
    fn from(error: ManagerError) -> Self {
        WireError {
            message: error.to_string(),
            error,
        }
    }
}

impl From<&ManagerError> for WireError {
    fn from(error: &ManagerError) -> Self {
        WireError::from(error.clone())
    }
}

impl From<WireError> for ManagerError {
    fn from(e: WireError) -> Self {
        e.error
    }
}

impl<'de> Deserialize<'de> for WireError {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // An error this build does not know (a peer of another version, or
        // not bpm) still reads: as a broken connection, with the peer's words.
        #[derive(Deserialize)]
        struct Fields {
            kind: String,
            #[serde(default)]
            detail: Option<serde_json::Value>,
            #[serde(default)]
            message: String,
        }
        let f = Fields::deserialize(d)?;
        let mut typed = serde_json::Map::new();
        typed.insert("kind".into(), serde_json::Value::String(f.kind.clone()));
        if let Some(detail) = f.detail {
            typed.insert("detail".into(), detail);
        }
        let error = serde_json::from_value(serde_json::Value::Object(typed)).unwrap_or_else(|_| {
            ManagerError::Connection(format!(
                "the answer held an error this build does not know ({}): {}",
                f.kind, f.message
            ))
        });
        Ok(WireError {
            error,
            message: f.message,
        })
    }
}

impl Reply {
    /// The reply's name, as JSON spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Reply::Record(_) => "record",
            Reply::Started(_) => "started",
            Reply::Records(_) => "records",
            Reply::Completion { .. } => "completion",
            Reply::Output(_) => "output",
            Reply::Status(_) => "status",
            Reply::Events(_) => "events",
            Reply::Usage(_) => "usage",
            Reply::Fence { .. } => "fence",
            Reply::Done => "done",
        }
    }

    fn unexpected(&self, wanted: &str) -> ManagerError {
        ManagerError::Connection(format!(
            "the answer was `{}` where `{wanted}` was expected",
            self.name()
        ))
    }

    /// The record (`start`, `stop`, `get`, ...; `complete` and `fail` too).
    ///
    /// # Errors
    /// [`ManagerError::Connection`] for another reply (as for each of these).
    pub fn into_record(self) -> Result<ProcessRecord, ManagerError> {
        match self {
            Reply::Record(r) | Reply::Completion { record: r, .. } => Ok(r),
            other => Err(other.unexpected("record")),
        }
    }

    /// The records (`list`, `stop_level`).
    ///
    /// # Errors
    /// As [`into_record`](Self::into_record).
    pub fn into_records(self) -> Result<Vec<ProcessRecord>, ManagerError> {
        match self {
            Reply::Records(r) => Ok(r),
            other => Err(other.unexpected("records")),
        }
    }

    /// A batch's outcomes, checked to number `count`.
    ///
    /// # Errors
    /// As [`into_record`](Self::into_record), and for a count that differs.
    pub fn into_started(self, count: usize) -> Result<Vec<Started>, ManagerError> {
        match self {
            Reply::Started(s) if s.len() == count => Ok(s),
            Reply::Started(s) => Err(ManagerError::Connection(format!(
                "the answer held {} outcomes for {count} specs",
                s.len()
            ))),
            other => Err(other.unexpected("started")),
        }
    }

    /// `complete`'s or `fail`'s answer.
    ///
    /// # Errors
    /// As [`into_record`](Self::into_record).
    pub fn into_completion(self) -> Result<Completion, ManagerError> {
        match self {
            Reply::Completion { record, no_op } => Ok(Completion { record, no_op }),
            other => Err(other.unexpected("completion")),
        }
    }

    /// Nothing, as `send_input`, `remove` or `wait_many` answer.
    ///
    /// # Errors
    /// As [`into_record`](Self::into_record).
    pub fn into_done(self) -> Result<(), ManagerError> {
        match self {
            Reply::Done => Ok(()),
            other => Err(other.unexpected("done")),
        }
    }

    /// Output read.
    ///
    /// # Errors
    /// As [`into_record`](Self::into_record).
    pub fn into_output(self) -> Result<OutputChunk, ManagerError> {
        match self {
            Reply::Output(o) => Ok(o),
            other => Err(other.unexpected("output")),
        }
    }

    /// Recent events.
    ///
    /// # Errors
    /// As [`into_record`](Self::into_record).
    pub fn into_events(self) -> Result<Vec<Event>, ManagerError> {
        match self {
            Reply::Events(e) => Ok(e),
            other => Err(other.unexpected("events")),
        }
    }

    /// What running trees use.
    ///
    /// # Errors
    /// As [`into_record`](Self::into_record).
    pub fn into_usage(self) -> Result<Vec<ResourceUsage>, ManagerError> {
        match self {
            Reply::Usage(u) => Ok(u),
            other => Err(other.unexpected("usage")),
        }
    }

    /// A fencing token's check.
    ///
    /// # Errors
    /// As [`into_record`](Self::into_record).
    pub fn into_fence(self) -> Result<Option<String>, ManagerError> {
        match self {
            Reply::Fence { stale } => Ok(stale),
            other => Err(other.unexpected("fence")),
        }
    }

    /// A daemon's status.
    ///
    /// # Errors
    /// As [`into_record`](Self::into_record).
    pub fn into_status(self) -> Result<DaemonStatus, ManagerError> {
        match self {
            Reply::Status(s) => Ok(*s),
            other => Err(other.unexpected("status")),
        }
    }
}

/// `spec` with `shared`'s variables under its own.
fn with_env(mut spec: ProcessSpec, shared: &Arc<Environment>) -> ProcessSpec {
    if spec.env.is_empty() {
        spec.env = Arc::clone(shared);
    } else {
        let mut env = (**shared).clone();
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        spec.env = Arc::new(env);
    }
    spec
}

fn millis(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

/// Applies `call` to `manager`: the one place a call becomes a method call,
/// for the control socket and the command bus alike.
///
/// # Errors
/// The method's own error, as it documents.
pub async fn apply(manager: &dyn ProcessManager, call: Call) -> Result<Reply, ManagerError> {
    let m = manager;
    let completion = |c: Completion| Reply::Completion {
        record: c.record,
        no_op: c.no_op,
    };
    Ok(match call {
        Call::Start { spec } => Reply::Record(m.start(*spec).await?),
        Call::StartMany { specs, env, brief } => {
            let specs = match env {
                Some(shared) => specs.into_iter().map(|s| with_env(s, &shared)).collect(),
                None => specs,
            };
            let outcomes = m.start_many(specs).await?.into_iter();
            Reply::Started(
                outcomes
                    .map(|r| match r {
                        Ok(r) if brief => Started::Id(r.id()),
                        Ok(r) => Started::Record(r),
                        Err(e) => Started::Error(WireError::from(e)),
                    })
                    .collect(),
            )
        }
        Call::Track { spec } => Reply::Record(m.track(*spec).await?),
        Call::Get { id } => Reply::Record(m.get(id).await?),
        Call::List { filter } => Reply::Records(m.list(filter).await?),
        Call::Progress {
            id,
            percent,
            message,
        } => Reply::Record(m.progress(id, percent, message).await?),
        Call::Complete { id, result } => completion(m.complete(id, result).await?),
        Call::Fail { id, error } => completion(m.fail(id, error).await?),
        Call::Stop { id, force, grace } => {
            Reply::Record(m.stop(id, StopOptions { force, grace }).await?)
        }
        Call::StopLevel {
            level,
            force,
            grace,
        } => Reply::Records(m.stop_level(level, StopOptions { force, grace }).await?),
        Call::Pause { id } => Reply::Record(m.pause(id).await?),
        Call::Resume { id } => Reply::Record(m.resume(id).await?),
        Call::Restart { id } => Reply::Record(m.restart(id).await?),
        Call::Wait { id, timeout_ms } => Reply::Record(m.wait(id, millis(timeout_ms)).await?),
        Call::WaitMany { ids, timeout_ms } => {
            m.wait_many(&ids, millis(timeout_ms)).await?;
            Reply::Done
        }
        Call::ReadOutput { id, query } => Reply::Output(m.read_output(id, query).await?),
        Call::WaitOutput {
            id,
            after,
            within_ms,
        } => {
            m.wait_output(id, after, Duration::from_millis(within_ms))
                .await?;
            Reply::Done
        }
        Call::SendInput { id, data } => {
            m.send_input(id, data).await?;
            Reply::Done
        }
        Call::Remove { id } => {
            m.remove(id).await?;
            Reply::Done
        }
        Call::RecentEvents => Reply::Events(m.recent_events().await?),
        Call::Usage => Reply::Usage(m.resource_usage().await?),
        Call::CheckFence { id, token } => Reply::Fence {
            stale: m.check_fence(id, token).await?,
        },
        Call::HoldSession { session, holder } => {
            m.hold_session(session, holder).await?;
            Reply::Done
        }
        Call::ReleaseSession { session, holder } => {
            m.release_session(session, holder).await?;
            Reply::Done
        }
    })
}

/// The longest request line the daemon reads.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
