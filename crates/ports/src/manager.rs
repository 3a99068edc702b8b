use std::time::Duration;

use async_trait::async_trait;
use bpm_domain::{
    CoreError, Event, InvalidTransition, ListFilter, NodeId, Percent, ProcessId, ProcessRecord,
    ProcessSpec, Span, SpecError, StateName,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::{Cursor, OutputChunk, OutputError, OutputQuery, ResourceUsage, SpawnError, StoreError};

/// How to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StopOptions {
    /// KILL at once instead of the stop policy's signal and grace period.
    pub force: bool,
    /// Override the policy's grace period.
    pub grace: Option<Span>,
}

impl StopOptions {
    /// KILL at once.
    pub fn force() -> Self {
        StopOptions {
            force: true,
            grace: None,
        }
    }
}

/// The answer to complete or fail: the record, and whether the call changed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The record after the call.
    pub record: ProcessRecord,
    /// `true` when it had already finished, so the call changed nothing.
    pub no_op: bool,
}

/// Why a call was not routed ([`ManagerError::Routing`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "why", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RoutingRefusal {
    /// The process waits for a node to take it: only a stop reaches it.
    #[error(
        "process {id} waits for a node to take it: it has no node to send `{call}` to yet (stop works on it)"
    )]
    Unplaced {
        /// The process.
        id: ProcessId,
        /// The call's name.
        call: String,
    },
    /// The process belongs to another node: a call goes to its owner only.
    #[error("process {id} belongs to node {owner}, not to node {here}")]
    OwnedElsewhere {
        /// The process.
        id: ProcessId,
        /// The node that owns it.
        owner: NodeId,
        /// The node the call came to.
        here: NodeId,
    },
    /// A start placed on another node came to this one.
    #[error("a start placed on another node came to node {here}")]
    StartElsewhere {
        /// The node the start came to.
        here: NodeId,
    },
    /// Another node claimed the process and has not placed it in time.
    #[error("process {id} was taken by {taker}, which has not placed it within {secs}s; try again")]
    NotPlaced {
        /// The process.
        id: ProcessId,
        /// Who took it (`node NAME`, or `another node`).
        taker: String,
        /// How long it was given, in seconds.
        secs: u64,
    },
    /// The process was claimed but does not wait to be placed.
    #[error("process {id} was claimed but does not wait to be placed")]
    NotWaiting {
        /// The process.
        id: ProcessId,
    },
}

/// What went wrong with a [`ProcessManager`] call.
///
/// Every variant crosses a connection as it is, so a remote caller gets the
/// variant an embedded one gets. As JSON it is `{"kind": "not_found",
/// "detail": ...}`: the variant's name, and its data.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ManagerError {
    /// No record has this id.
    #[error("no process with id {0}")]
    NotFound(ProcessId),
    /// The spec was refused; nothing was created.
    #[error(transparent)]
    InvalidSpec(#[from] SpecError),
    /// The record's lifecycle does not allow the call; nothing changed.
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    /// The supervisor refused (unknown dependency or parent, hierarchy limits,
    /// removing a live record); nothing changed.
    #[error(transparent)]
    Refused(CoreError),
    /// `wait` ran out of time; the record is still live.
    #[error("timed out waiting for process {id}: it is still {state}")]
    WaitTimeout {
        /// The record.
        id: ProcessId,
        /// Its state when the wait ended.
        state: StateName,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The output store failed.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// The spawner failed (sending input).
    #[error(transparent)]
    Spawner(#[from] SpawnError),
    /// The manager has shut down.
    #[error("the process manager has shut down")]
    ShutDown,
    /// A remote manager could not read the request (a client's fault, or
    /// another version's); nothing was done.
    #[error("the daemon could not read the request: {0}")]
    BadRequest(String),
    /// The request is larger than a remote manager takes in one message;
    /// nothing was sent.
    #[error(
        "the request is {bytes} bytes, over the daemon's limit of {limit} bytes per request; \
         nothing was started: start fewer processes per request, or keep large values \
         (a big environment) in a file the process reads"
    )]
    TooLarge {
        /// The request's size, encoded.
        bytes: usize,
        /// The most the remote manager takes.
        limit: usize,
    },
    /// The remote manager cannot be reached, refused the connection (it
    /// speaks another protocol version, or holds too many connections), or
    /// broke the protocol.
    #[error("{0}")]
    Connection(String),
    /// The call cannot go where it was sent: the process belongs to
    /// another node, or waits for one. Nothing was done, and sending the
    /// same call to the same manager again changes nothing (unlike a
    /// broken [`Connection`](Self::Connection)).
    #[error(transparent)]
    Routing(#[from] RoutingRefusal),
    /// The record belongs to another node, which did not take or answer
    /// the call in time, or is not alive.
    #[error(
        "node {node} did not answer the {command} after {}: {detail} (its lease {})",
        seconds(*waited_ms),
        lease_age_ms.map_or_else(|| "is unknown".into(), |age| format!("was renewed {} ago", seconds(age)))
    )]
    NodeNotAnswering {
        /// The node that owns the record.
        node: NodeId,
        /// Which call.
        command: String,
        /// How long the caller waited, in milliseconds.
        waited_ms: u64,
        /// How long ago its lease was renewed, if it has one.
        lease_age_ms: Option<u64>,
        /// What became of the call.
        detail: String,
    },
}

/// Milliseconds as seconds for people: `2.5 s`.
fn seconds(ms: u64) -> String {
    format!("{:.1} s", Duration::from_millis(ms).as_secs_f64())
}

impl ManagerError {
    /// The live record a submission that asked to ensure its name is
    /// answered with instead ([`CoreError::reused`]).
    pub fn reused(&self) -> Option<ProcessId> {
        match self {
            ManagerError::Refused(e) => e.reused(),
            _ => None,
        }
    }
}

impl From<CoreError> for ManagerError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::NotFound(id) => ManagerError::NotFound(id),
            CoreError::InvalidSpec(s) => ManagerError::InvalidSpec(s),
            CoreError::InvalidTransition(t) => ManagerError::InvalidTransition(t),
            other => ManagerError::Refused(other),
        }
    }
}

/// The API every front end uses: the library, the daemon, the CLI (through
/// the daemon) and the MCP server. An embedded engine and a daemon client
/// both implement it, so a front end works the same against either.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ProcessManager: Send + Sync + 'static {
    /// Accepts `spec` and returns its record (pending, or further along if a
    /// slot was free). A spec without a command is tracked as with [`ProcessManager::track`].
    ///
    /// # Errors
    /// - MUST return [`ManagerError::InvalidSpec`] if the spec is invalid.
    /// - MUST return [`ManagerError::Refused`] for an unknown dependency or
    ///   parent, a parent that is stopping or finished, or a hierarchy limit.
    /// - MUST return [`ManagerError::Store`] if the record could not be stored.
    async fn start(&self, spec: ProcessSpec) -> Result<ProcessRecord, ManagerError>;

    /// Accepts many specs at once, in order, as [`start`](Self::start) would
    /// one by one, and returns one result per spec: a refused spec does not
    /// stop the others. An implementation may write the new records together
    /// (one flush for all), which is the point of calling it.
    ///
    /// # Errors
    /// - Per spec, the errors of [`start`](Self::start).
    /// - MUST return [`ManagerError::Connection`] or [`ManagerError::ShutDown`]
    ///   (as a whole) if the manager cannot be reached.
    async fn start_many(
        &self,
        specs: Vec<ProcessSpec>,
    ) -> Result<Vec<Result<ProcessRecord, ManagerError>>, ManagerError> {
        let mut out = Vec::with_capacity(specs.len());
        for spec in specs {
            out.push(self.start(spec).await);
        }
        Ok(out)
    }

    /// As [`start_many`](Self::start_many), answering only the new records'
    /// ids: for a caller that needs no more, over a connection where whole
    /// records would cost more than the work itself.
    ///
    /// # Errors
    /// As [`start_many`](Self::start_many).
    async fn start_many_ids(
        &self,
        specs: Vec<ProcessSpec>,
    ) -> Result<Vec<Result<ProcessId, ManagerError>>, ManagerError> {
        Ok(self
            .start_many(specs)
            .await?
            .into_iter()
            .map(|r| r.map(|r| r.id()))
            .collect())
    }

    /// Creates a tracked operation (running at once) for work the caller does
    /// itself; report on it with progress, complete and fail.
    ///
    /// # Errors
    /// - MUST return [`ManagerError::InvalidSpec`] if the spec has a command or is otherwise invalid.
    /// - MUST return [`ManagerError::Refused`] as for [`ProcessManager::start`].
    async fn track(&self, spec: ProcessSpec) -> Result<ProcessRecord, ManagerError>;

    /// The record with `id`.
    ///
    /// # Errors
    /// - MUST return [`ManagerError::NotFound`] if there is none.
    async fn get(&self, id: ProcessId) -> Result<ProcessRecord, ManagerError>;

    /// Records matching `filter`, ordered by id.
    ///
    /// # Errors
    /// - MUST return [`ManagerError::Store`] if the store fails.
    async fn list(&self, filter: ListFilter) -> Result<Vec<ProcessRecord>, ManagerError>;

    /// Records progress (and derives an ETA).
    ///
    /// # Errors
    /// - MUST return [`ManagerError::NotFound`] for an unknown id.
    /// - MUST return [`ManagerError::InvalidTransition`] for a record that is pending or finished.
    async fn progress(
        &self,
        id: ProcessId,
        percent: Percent,
        message: Option<String>,
    ) -> Result<ProcessRecord, ManagerError>;

    /// Completes a tracked operation. Completing a finished record is a no-op (`no_op: true`).
    ///
    /// # Errors
    /// - MUST return [`ManagerError::NotFound`] for an unknown id.
    /// - MUST return [`ManagerError::InvalidTransition`] for a live record with a
    ///   process (its outcome is its exit status) or a pending one.
    async fn complete(
        &self,
        id: ProcessId,
        result: Option<serde_json::Value>,
    ) -> Result<Completion, ManagerError>;

    /// Fails a tracked operation (or a pending record). Failing a finished record is a no-op.
    ///
    /// # Errors
    /// - MUST return [`ManagerError::NotFound`] for an unknown id.
    /// - MUST return [`ManagerError::InvalidTransition`] for a live record with a process.
    async fn fail(&self, id: ProcessId, error: String) -> Result<Completion, ManagerError>;

    /// Stops the record and its descendants (TERM, the grace period, then KILL)
    /// and returns once they have all ended, with the record's final state.
    /// Stopping a finished record returns it unchanged.
    ///
    /// # Errors
    /// - MUST return [`ManagerError::NotFound`] for an unknown id.
    async fn stop(
        &self,
        id: ProcessId,
        options: StopOptions,
    ) -> Result<ProcessRecord, ManagerError>;

    /// Stops every unfinished record at hierarchy depth `level` (roots are 0)
    /// with their descendants, and returns once they have ended.
    ///
    /// # Errors
    /// - MUST return [`ManagerError::Store`] if the store fails.
    async fn stop_level(
        &self,
        level: usize,
        options: StopOptions,
    ) -> Result<Vec<ProcessRecord>, ManagerError>;

    /// Pauses a running process (SIGSTOP to its tree). Its timeout keeps counting.
    ///
    /// # Errors
    /// - MUST return [`ManagerError::NotFound`] for an unknown id.
    /// - MUST return [`ManagerError::InvalidTransition`] unless it is running with a process.
    async fn pause(&self, id: ProcessId) -> Result<ProcessRecord, ManagerError>;

    /// Resumes a paused process.
    ///
    /// # Errors
    /// - MUST return [`ManagerError::NotFound`] for an unknown id.
    /// - MUST return [`ManagerError::InvalidTransition`] unless it is paused.
    async fn resume(&self, id: ProcessId) -> Result<ProcessRecord, ManagerError>;

    /// Starts a new record with the same spec, `restarted_from` pointing to
    /// `id`; a live `id` is stopped first and the new one starts after it ended.
    ///
    /// # Errors
    /// - MUST return [`ManagerError::NotFound`] for an unknown id.
    /// - MUST return [`ManagerError::Refused`] if the parent cannot take it.
    async fn restart(&self, id: ProcessId) -> Result<ProcessRecord, ManagerError>;

    /// Waits until the record has finished and returns it.
    ///
    /// # Errors
    /// - MUST return [`ManagerError::NotFound`] for an unknown id.
    /// - MUST return [`ManagerError::WaitTimeout`] if `timeout` passes first.
    async fn wait(
        &self,
        id: ProcessId,
        timeout: Option<Duration>,
    ) -> Result<ProcessRecord, ManagerError>;

    /// Waits until every record in `ids` has finished; `timeout` bounds the
    /// whole wait. For a caller that needs no records back: one call where
    /// [`wait`](Self::wait) would take one per id.
    ///
    /// # Errors
    /// - MUST return [`ManagerError::NotFound`] for an unknown id.
    /// - MUST return [`ManagerError::WaitTimeout`], naming a record still
    ///   unfinished, if `timeout` passes first.
    async fn wait_many(
        &self,
        ids: &[ProcessId],
        timeout: Option<Duration>,
    ) -> Result<(), ManagerError> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        for id in ids {
            let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
            self.wait(*id, left).await?;
        }
        Ok(())
    }

    /// Reads the record's output; reading never consumes it for other readers.
    ///
    /// # Errors
    /// - MUST return [`ManagerError::NotFound`] for an unknown id.
    /// - MUST return [`ManagerError::Output`] if the output store fails.
    async fn read_output(
        &self,
        id: ProcessId,
        query: OutputQuery,
    ) -> Result<OutputChunk, ManagerError>;

    /// Returns once the record's process has written past `after` (a
    /// position in its combined output, as [`OutputChunk::next`] gives
    /// it), once the record has ended, or once `within` has passed,
    /// whichever comes first; the caller then reads again. A follower of
    /// a running record's output waits here rather than looking on a
    /// timer. A record another node owns is waited for there, by its
    /// daemon. Where the process's writes cannot be seen (it has not
    /// started), it returns after at most
    /// [`OUTPUT_LOOK`](crate::OUTPUT_LOOK).
    ///
    /// # Errors
    /// - MUST return [`ManagerError::NotFound`] for an unknown id.
    /// - MUST return [`ManagerError::Spawner`] if the spawner cannot be reached.
    async fn wait_output(
        &self,
        id: ProcessId,
        after: Cursor,
        within: Duration,
    ) -> Result<(), ManagerError>;

    /// Writes to the standard input of a running process started with a stdin pipe.
    ///
    /// # Errors
    /// - MUST return [`ManagerError::NotFound`] for an unknown id.
    /// - MUST return [`ManagerError::Spawner`] if it is not running or its stdin is not a pipe.
    async fn send_input(&self, id: ProcessId, data: Vec<u8>) -> Result<(), ManagerError>;

    /// Deletes a finished record and its output.
    ///
    /// # Errors
    /// - MUST return [`ManagerError::NotFound`] for an unknown id.
    /// - MUST return [`ManagerError::Refused`] if it has not finished.
    async fn remove(&self, id: ProcessId) -> Result<(), ManagerError>;

    /// What the process trees of the running records of this manager's node
    /// use now (CPU, resident memory, listening ports), one entry per record
    /// whose tree still has a live process. Sampling is done on request:
    /// nothing is measured while no one asks.
    ///
    /// # Errors
    /// - MUST return [`ManagerError::Store`] if the records cannot be listed.
    /// - MUST return [`ManagerError::Connection`] or [`ManagerError::ShutDown`]
    ///   if the manager cannot be reached.
    async fn resource_usage(&self) -> Result<Vec<ResourceUsage>, ManagerError>;

    /// Whether `token` (a `BPM_FENCE`) is still the fencing token of record
    /// `id`'s current attempt ([`ProcessRecord::check_token`]), asked by
    /// its process, or any child of it, before a write that another
    /// attempt's must never overlap: `None` while it is, or why it is
    /// stale. The record is read from the store, not from a cache; for a
    /// record of this manager's own node, a token is stale too once the
    /// node's lease has lapsed or a newer daemon took the node
    /// ([`ProcessStore::reachable`](crate::ProcessStore::reachable)), so a
    /// process that ran on through a pause of its whole machine is told
    /// at once.
    ///
    /// # Errors
    /// - MUST return [`ManagerError::NotFound`] if no record has the id.
    /// - MUST return [`ManagerError::Store`] if the store cannot be read
    ///   (then nothing is known, and a guarded write must not go ahead).
    /// - MUST return [`ManagerError::Connection`] or [`ManagerError::ShutDown`]
    ///   if the manager cannot be reached.
    async fn check_fence(&self, id: ProcessId, token: u64) -> Result<Option<String>, ManagerError>;

    /// Process `holder` (a pid of this manager's machine) holds `session`
    /// from now until it is gone: the records `session` owns
    /// ([`bpm_domain::Owner::Session`]) live while it, or another holder,
    /// does. Holding it again, or by another process, is not an error.
    ///
    /// # Errors
    /// - MUST return [`ManagerError::InvalidSpec`] if no process runs as `holder`.
    /// - MUST return [`ManagerError::Connection`] or [`ManagerError::ShutDown`]
    ///   if the manager cannot be reached.
    async fn hold_session(
        &self,
        session: bpm_domain::SessionId,
        holder: u32,
    ) -> Result<(), ManagerError>;

    /// Process `holder` no longer holds `session`, though it lives on (a
    /// server of many client sessions whose client went): when no other
    /// process holds it, the records `session` owns start their grace.
    /// Letting go of a session not held, or not by `holder`, is not an
    /// error.
    ///
    /// # Errors
    /// - MUST return [`ManagerError::Connection`] or [`ManagerError::ShutDown`]
    ///   if the manager cannot be reached.
    async fn release_session(
        &self,
        session: bpm_domain::SessionId,
        holder: u32,
    ) -> Result<(), ManagerError>;

    /// Every event from now on.
    fn subscribe(&self) -> broadcast::Receiver<Event>;

    /// The latest events (at most 1,000), oldest first. Subscribe first,
    /// then read these, to see the past and the future with no gap (an
    /// event may then come twice: the same id, version and kind).
    ///
    /// # Errors
    /// - MUST return [`ManagerError::Connection`] or [`ManagerError::ShutDown`]
    ///   if the manager cannot be reached.
    async fn recent_events(&self) -> Result<Vec<Event>, ManagerError>;
}
