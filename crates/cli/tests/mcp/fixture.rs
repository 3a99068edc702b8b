//! The world the MCP tests run in: an embedded engine, a server on it,
//! and rmcp's client over an in-memory pipe.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bpm_mcp::{McpServer, Policy, StartDefaults};
use rmcp::model::{
    CallToolRequestParams, ProgressNotificationParam, ResourceUpdatedNotificationParam,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

#[derive(Default, Clone)]
pub(crate) struct Seen {
    pub(crate) progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
    pub(crate) updated: Arc<Mutex<Vec<String>>>,
}

impl ClientHandler for Seen {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().expect("lock").push(params);
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.updated.lock().expect("lock").push(params.uri);
    }
}

pub(crate) type Client = RunningService<RoleClient, Seen>;

pub(crate) struct World {
    pub(crate) manager: Arc<dyn bpm_ports::ProcessManager>,
    pub(crate) dir: tempfile::TempDir,
}

pub(crate) async fn world() -> World {
    let engine = bpm_embed::builder().start().await.expect("engine");
    World {
        manager: Arc::new(engine),
        dir: tempfile::tempdir().expect("dir"),
    }
}

impl World {
    pub(crate) async fn client(&self, policy: Policy) -> (Client, Seen) {
        self.client_with(policy, false).await
    }

    /// A client of a server that reads project files as `bpm mcp` does.
    pub(crate) async fn client_with(&self, policy: Policy, projects: bool) -> (Client, Seen) {
        let defaults = StartDefaults {
            cwd: self.dir.path().to_path_buf(),
            env: BTreeMap::from([(
                "PATH".into(),
                std::env::var("PATH").unwrap_or_default().into(),
            )]),
            owner: None,
            time_zone: "Europe/Paris".into(),
            machine: Arc::new(bpm_adapters::os::ThisMachine),
            retention: None,
        };
        let mut server = McpServer::new(self.manager.clone(), policy, defaults, "test");
        if projects {
            server = server.with_projects();
        }
        let (server_side, client_side) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            if let Ok(running) = server.serve(server_side).await {
                let _ = running.waiting().await;
            }
        });
        let seen = Seen::default();
        let client = seen.clone().serve(client_side).await.expect("handshake");
        (client, seen)
    }
}

pub(crate) fn params(tool: &'static str, args: &Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool).with_arguments(args.as_object().expect("object").clone())
}

/// Calls a tool that must succeed; returns its structured content, checking the text block.
pub(crate) async fn ok(client: &Client, tool: &'static str, args: Value) -> Value {
    let r = client.call_tool(params(tool, &args)).await.expect("call");
    assert_ne!(r.is_error, Some(true), "{tool} {args}: {:?}", r.content);
    let structured = r.structured_content.clone().expect("structured content");
    if tool != "list_background_processes" {
        let text = r.content[0].as_text().expect("text").text.clone();
        assert_eq!(
            serde_json::from_str::<Value>(&text).expect("json"),
            structured
        );
    }
    structured
}

/// Calls a tool that must fail as a tool error (never a protocol error); returns its message.
pub(crate) async fn tool_error(client: &Client, tool: &'static str, args: Value) -> String {
    let r = client
        .call_tool(params(tool, &args))
        .await
        .expect("a tool error is a result, not a protocol error");
    assert_eq!(r.is_error, Some(true), "{tool} {args} should fail: {r:?}");
    r.content[0].as_text().expect("text").text.clone()
}

pub(crate) fn sh(line: &str) -> Value {
    json!({ "command": line })
}
