//! `bpm mcp`: the MCP server on stdio, driving the daemon (started when needed).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use bpm_adapters::control::{Reconnecting, ReconnectingManager};
use bpm_domain::{SessionId, Span};
use bpm_mcp::{McpServer, Policy, SessionOwner, StartDefaults};
use rmcp::ServiceExt as _;

use crate::config::McpConfig;
use crate::daemon::{self, SOFTWARE};
use crate::home::Home;

/// What `bpm mcp`'s flags add to the configuration.
#[derive(Debug, Clone, Default)]
pub struct McpFlags {
    /// `--read-only`.
    pub read_only: bool,
    /// `--allow-command` (repeatable).
    pub allow_commands: Vec<String>,
    /// `--allow-dir` (repeatable).
    pub allow_dirs: Vec<PathBuf>,
    /// `--allow-env` (repeatable).
    pub allow_env: Vec<String>,
    /// `--show-env`: do not redact.
    pub show_env: bool,
}

/// The policy from the configuration, with the flags on top.
pub fn policy(config: &McpConfig, flags: McpFlags) -> Policy {
    let mut p = Policy {
        allow_commands: config.allow_commands.clone(),
        allow_dirs: config.allow_dirs.clone(),
        allow_env: config.allow_env.clone(),
        read_only: config.read_only || flags.read_only,
        redact_env: config.redact_env.unwrap_or(true) && !flags.show_env,
        redact_vars: config.redact_vars.clone(),
        share_tasks: config.share_tasks,
        ..Policy::default()
    };
    if let Some(min) = config.redact_min_len {
        p.redact_min_len = min.max(1);
    }
    if let Some(max) = config.max_output_bytes {
        p.max_output_bytes = max.max(1);
    }
    p.allow_commands.extend(flags.allow_commands);
    p.allow_dirs.extend(flags.allow_dirs);
    p.allow_env.extend(flags.allow_env);
    p
}

/// Serves MCP on stdin and stdout until the client closes them.
///
/// # Errors
/// When the configuration is invalid, no daemon can be reached, or the transport fails.
pub async fn run(home: &Home, flags: McpFlags) -> anyhow::Result<()> {
    let config = crate::config::Config::load(&home.dir).map_err(anyhow::Error::msg)?;
    let policy = policy(&config.mcp, flags);
    let reconnecting = Reconnecting::connect(daemon::connector(home.clone())).await?;
    // This client's session owns what it starts: held by this process
    // while it runs, and again after a daemon restart.
    let session = client_session()?;
    reconnecting.hold(session.clone()).await?;
    let manager = ReconnectingManager(reconnecting);
    let mut defaults = StartDefaults {
        cwd: std::env::current_dir().unwrap_or_else(|_| std::path::PathBuf::from("/")),
        env: bpm_adapters::os::inherited_env(),
        owner: None,
        time_zone: bpm_adapters::os::local_time_zone(),
        machine: Arc::new(bpm_adapters::os::ThisMachine),
    };
    defaults.owner = Some(SessionOwner {
        session,
        grace: config
            .mcp
            .owner_grace
            .unwrap_or_else(|| Span::from_secs(DEFAULT_MCP_OWNER_GRACE_SECS)),
    });
    let server = McpServer::new(
        Arc::new(manager),
        policy,
        defaults,
        SOFTWARE.trim_start_matches("bpm "),
    )
    .with_projects()
    .with_project_lock(project_lock(home.clone()));
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .context("the MCP handshake failed")?;
    running.waiting().await.context("the MCP session failed")?;
    Ok(())
}

/// The lock `bpm up` takes of a project ([`Home::lock_project`]), for the
/// project tools.
fn project_lock(home: Home) -> bpm_mcp::ProjectLock {
    Arc::new(move |name: &str| {
        home.lock_project(name)
            .map(|f| Box::new(f) as Box<dyn std::any::Any + Send>)
            .map_err(|e| format!("{e:#}"))
    })
}

/// How long what an MCP client started outlives its session, unless
/// `[mcp] owner_grace` says otherwise.
const DEFAULT_MCP_OWNER_GRACE_SECS: u64 = 600;

/// The client's session: `BPM_SESSION` when set (a client that comes back
/// under it takes its processes back), otherwise one of this server's own.
fn client_session() -> anyhow::Result<SessionId> {
    match std::env::var("BPM_SESSION") {
        Ok(s) if !s.is_empty() => s
            .parse()
            .map_err(|e| anyhow::anyhow!("BPM_SESSION {s:?}: {e}")),
        _ => {
            let own = format!("mcp-{}", uuid::Uuid::now_v7().simple());
            own.parse().map_err(|e| anyhow::anyhow!("{own}: {e}"))
        }
    }
}
