//! `bpm mcp`: an MCP server (on rmcp) that lets AI agents start, watch, wait
//! for and stop background processes as tools, and read them as resources.
//!
//! The server holds no process itself: it drives a [`ProcessManager`] (the
//! daemon's client in `bpm mcp`, an embedded engine in tests), so processes
//! outlive the agent's session and every agent sees the same processes. What
//! it keeps per client is its read cursors (`get_process_output` without a
//! cursor returns what is new to *this* client) and its resource subscriptions.

mod changes;
mod http;
mod inputs;
mod policy;
mod projects;
mod resources;
mod schemas;
mod tasks;
mod tools;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use bpm_domain::ProcessId;
use bpm_ports::{Cursor, ProcessManager, StreamSelect};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig,
    SubscribeRequestParams, SubscriptionFilter, Tool, UnsubscribeRequestParams,
};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler};

pub use http::{HttpEndpoint, HttpSession, MCP_PATH, Refusal, serve_http};
pub use policy::{DEFAULT_REDACT_MIN_LEN, Policy, RUNNER_VARS, SECRET_WORDS};
pub use projects::{LoadedProject, MayRead, ProjectLock};

/// What a started process gets when the agent does not say: the server's
/// working directory and environment, as a shell would pass them on, and
/// the machine its requests are checked against.
#[derive(Clone)]
pub struct StartDefaults {
    /// The working directory.
    pub cwd: PathBuf,
    /// The environment.
    pub env: bpm_domain::Environment,
    /// The session that owns what this client starts (unless a call says
    /// `persistent`), held by the server's process while it runs.
    pub owner: Option<SessionOwner>,
    /// The time zone a `cron` schedule reads its hours in when the call
    /// names none: this machine's.
    pub time_zone: String,
    /// What a request's directories, env files, watches and limits are
    /// checked against before it is sent.
    pub machine: Arc<dyn bpm_ports::Machine>,
    /// How long the daemon keeps a record after it ends (its
    /// `limits.retention`; `None`: until removed): a task's `ttlMs`.
    pub retention: Option<bpm_domain::Span>,
}

impl std::fmt::Debug for StartDefaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartDefaults")
            .field("cwd", &self.cwd)
            .field("owner", &self.owner)
            .field("time_zone", &self.time_zone)
            .finish_non_exhaustive()
    }
}

/// The session that owns what a client starts ([`StartDefaults::owner`]).
#[derive(Debug, Clone)]
pub struct SessionOwner {
    /// The session.
    pub session: bpm_domain::SessionId,
    /// How long its processes outlive it.
    pub grace: bpm_domain::Span,
}

/// How long what an MCP client started outlives its session, unless
/// `[mcp] owner_grace` says otherwise (and when a server names no owner).
pub const DEFAULT_OWNER_GRACE_SECS: u64 = 600;

/// The MCP server for one client connection.
#[derive(Clone)]
pub struct McpServer {
    inner: Arc<ClientState>,
}

struct ClientState {
    manager: Arc<dyn ProcessManager>,
    policy: Policy,
    defaults: StartDefaults,
    software: String,
    /// Where this client's cursorless reads go on, per process and stream.
    cursors: Mutex<HashMap<(ProcessId, StreamSelect), Cursor>>,
    /// Processes whose resources this client subscribed to (legacy `resources/subscribe`).
    subscribed: Mutex<HashSet<ProcessId>>,
    /// The task forwarding changes to subscribers, once the first subscription arrives.
    forwarder: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// What changed since this client's last `what_changed`.
    changes: Arc<changes::Changes>,
    /// The task noting them, from the server's start.
    noting: Option<tokio::task::JoinHandle<()>>,
    /// How project files are read, if this server reads them.
    projects: bool,
    /// How a project's lock is held while `project_up` or `project_down`
    /// carries out its plan, if this server shares one with other front
    /// ends.
    project_lock: Option<ProjectLock>,
    /// The tasks this client made or asked about, by record: each one's
    /// state changes are sent to it as `notifications/tasks`.
    tasks: Mutex<HashMap<tasks::TaskOf, String>>,
    /// The task sending them, once the first task is made.
    task_forwarder: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The session this server holds for its client (an HTTP session's
    /// own), let go of when the server goes: its records then start their
    /// grace.
    held: Option<bpm_domain::SessionId>,
}

impl Drop for ClientState {
    fn drop(&mut self) {
        if let Some(task) = self
            .forwarder
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
        if let Some(task) = self.noting.take() {
            task.abort();
        }
        if let (Some(session), Ok(runtime)) =
            (self.held.take(), tokio::runtime::Handle::try_current())
        {
            let manager = Arc::clone(&self.manager);
            runtime.spawn(async move {
                if let Err(e) = manager
                    .release_session(session.clone(), std::process::id())
                    .await
                {
                    tracing::warn!(%session, error = %e, "cannot let go of a client's session");
                }
            });
        }
        if let Some(task) = self
            .task_forwarder
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl McpServer {
    /// A server driving `manager` under `policy`; `software` names bpm and its version.
    pub fn new(
        manager: Arc<dyn ProcessManager>,
        policy: Policy,
        defaults: StartDefaults,
        software: impl Into<String>,
    ) -> Self {
        let changes = Arc::new(changes::Changes::default());
        // What changes from now on is kept for `what_changed` (from the
        // first call when the server is made outside a runtime).
        let noting = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let mut events = manager.subscribe();
            let changes = Arc::downgrade(&changes);
            runtime.spawn(async move {
                loop {
                    match events.recv().await {
                        Ok(event) => match changes.upgrade() {
                            Some(c) => c.note(event),
                            None => return,
                        },
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            })
        });
        McpServer {
            inner: Arc::new(ClientState {
                manager,
                policy,
                defaults,
                software: software.into(),
                cursors: Mutex::new(HashMap::new()),
                subscribed: Mutex::new(HashSet::new()),
                forwarder: Mutex::new(None),
                changes,
                noting,
                projects: false,
                project_lock: None,
                tasks: Mutex::new(HashMap::new()),
                task_forwarder: Mutex::new(None),
                held: None,
            }),
        }
    }

    /// A server like this one for a client of its own that `session`
    /// owns: the session is held for this process until the new server
    /// goes, then let go of, so that what the client started outlives it
    /// by the owner's grace, as it does a client on stdio.
    ///
    /// # Errors
    /// When the manager cannot hold the session.
    pub async fn for_session(
        &self,
        session: bpm_domain::SessionId,
    ) -> Result<McpServer, bpm_ports::ManagerError> {
        let inner = &self.inner;
        inner
            .manager
            .hold_session(session.clone(), std::process::id())
            .await?;
        let mut defaults = inner.defaults.clone();
        let grace = defaults
            .owner
            .as_ref()
            .map_or(bpm_domain::Span::from_secs(DEFAULT_OWNER_GRACE_SECS), |o| {
                o.grace
            });
        defaults.owner = Some(SessionOwner {
            session: session.clone(),
            grace,
        });
        let mut server = McpServer::new(
            Arc::clone(&inner.manager),
            inner.policy.clone(),
            defaults,
            inner.software.clone(),
        );
        if let Some(own) = Arc::get_mut(&mut server.inner) {
            own.projects = inner.projects;
            own.project_lock.clone_from(&inner.project_lock);
            own.held = Some(session);
        }
        Ok(server)
    }

    /// This server, reading project files through `loader` (the project
    /// tools answer that it reads none otherwise).
    #[must_use]
    pub fn with_projects(mut self) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.projects = true;
        }
        self
    }

    /// This server, holding `lock` of a project while `project_up` or
    /// `project_down` carries out its plan: the lock `bpm up` takes, so
    /// that racing calls apply one at a time.
    #[must_use]
    pub fn with_project_lock(mut self, lock: ProjectLock) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.project_lock = Some(lock);
        }
        self
    }

    /// The tools this server offers (without the changing ones when read-only).
    pub fn tools(&self) -> Vec<Tool> {
        schemas::TOOLS
            .iter()
            .filter(|t| !(self.inner.policy.read_only && t.mutating))
            .map(|t| t.tool.clone())
            .collect()
    }

    fn manager(&self) -> &dyn ProcessManager {
        self.inner.manager.as_ref()
    }

    fn subscribed(&self) -> std::sync::MutexGuard<'_, HashSet<ProcessId>> {
        self.inner
            .subscribed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn start_forwarder(&self, peer: Peer<RoleServer>) {
        let mut slot = self
            .inner
            .forwarder
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.is_some() {
            return;
        }
        let mut events = self.inner.manager.subscribe();
        let weak = Arc::downgrade(&self.inner);
        *slot = Some(tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let Some(inner) = weak.upgrade() else { return };
                let wanted = inner
                    .subscribed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .contains(&event.id);
                drop(inner);
                if wanted {
                    for uri in resources::uris_of(event.id) {
                        let param = rmcp::model::ResourceUpdatedNotificationParam::new(uri);
                        if peer.notify_resource_updated(param).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }));
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new("bpm", self.inner.software.clone()))
        .with_instructions(
            "bpm runs background processes that outlive this session. Start with \
             start_background_process, then wait_for_process (until exit, ready, pattern or idle) \
             instead of sleeping, read output with get_process_output (cursorless reads return \
             only what is new), and stop_background_process to end a process and all its children.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools()).with_ttl_ms(0))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools().into_iter().find(|t| t.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        let args = serde_json::Value::Object(request.arguments.unwrap_or_default());
        let wants_task = tasks::TASK_TOOLS.contains(&name.as_str())
            && context
                .client_capabilities()
                .is_some_and(|caps| caps.supports_tasks());
        if wants_task {
            return self.call_as_task(&name, args, &context).await;
        }
        let result = match self.call(&name, args, &context).await {
            Ok(Reply { structured, text }) => {
                let mut r = CallToolResult::structured(structured);
                if let Some(text) = text {
                    r.content = vec![ContentBlock::text(text)];
                }
                r
            }
            Err(message) => CallToolResult::error(vec![ContentBlock::text(message)]),
        };
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        resources::list(self, request.and_then(|r| r.cursor)).await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(resources::templates()).with_ttl_ms(0))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        resources::read(self, &request.uri).await.map(Into::into)
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let id = resources::parse_uri(&request.uri)?.0;
        self.subscribed().insert(id);
        self.start_forwarder(context.peer);
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let id = resources::parse_uri(&request.uri)?.0;
        self.subscribed().remove(&id);
        Ok(())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        resources::listen(self, context).await
    }

    async fn get_task(
        &self,
        request: rmcp::model::GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::GetTaskResult, ErrorData> {
        self.task(&request.task_id, context.peer)
            .await
            .map(rmcp::model::GetTaskResult::new)
    }

    async fn cancel_task(
        &self,
        request: rmcp::model::CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.cancel(&request.task_id).await
    }

    async fn update_task(
        &self,
        request: rmcp::model::UpdateTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.update(&request.task_id, &request.input_responses)
            .await
    }
}

/// A tool's answer: the structured result, and the text block when it is not the same JSON.
struct Reply {
    structured: serde_json::Value,
    text: Option<String>,
}

impl Reply {
    fn json(structured: serde_json::Value) -> Self {
        Reply {
            structured,
            text: None,
        }
    }
}
