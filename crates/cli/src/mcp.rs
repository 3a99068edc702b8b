//! `bpm mcp`: the MCP server on stdio, driving the daemon (started when needed).

use std::net::SocketAddr;
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
    // This client's session owns what it starts: held by this process
    // while it runs, and again after a daemon restart.
    let server = connected(home, flags, client_session()?).await?;
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .context("the MCP handshake failed")?;
    running.waiting().await.context("the MCP session failed")?;
    Ok(())
}

/// Serves MCP over Streamable HTTP on `addr` until SIGINT or SIGTERM:
/// prints the endpoint's URL on stdout, and the token on stderr when it is
/// made.
///
/// # Errors
/// When the configuration is invalid, no daemon can be reached, the token
/// cannot be kept or `addr` cannot be listened on.
pub async fn run_http(home: &Home, flags: McpFlags, addr: SocketAddr) -> anyhow::Result<()> {
    let server = connected(home, flags, endpoint_session()).await?;
    let (endpoint, listener) = listen_http(home, addr).await?;
    println!("http://{}{}", endpoint.addr, bpm_mcp::MCP_PATH);
    let stop = tokio_util::sync::CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        crate::daemon::until_signalled().await;
        on_signal.cancel();
    });
    bpm_mcp::serve_http(server, endpoint, listener, stop)
        .await
        .context("the MCP endpoint failed")
}

/// What the daemon serves beside its socket: MCP over HTTP where
/// `[mcp] http` says.
pub fn beside_the_daemon(home: &Home) -> crate::daemon::Beside {
    let home = home.clone();
    Box::new(move |config, manager, stop| {
        let mcp = config.mcp.clone();
        let retention = config.limits.retention;
        Box::pin(async move {
            if let Some(addr) = mcp.http {
                serve_in_daemon(&home, (&mcp, retention), addr, manager, stop)
                    .await
                    .with_context(|| format!("[mcp] http = \"{addr}\""))?;
            }
            Ok(())
        })
    })
}

/// The server of a `bpm mcp` process: on the daemon (started when none
/// runs), under the configuration and `flags`, owned by `session`, which
/// this process holds (again after a daemon restart).
async fn connected(home: &Home, flags: McpFlags, session: SessionId) -> anyhow::Result<McpServer> {
    let config = crate::config::Config::load(&home.dir).map_err(anyhow::Error::msg)?;
    let reconnecting = Reconnecting::connect(daemon::connector(home.clone())).await?;
    reconnecting.hold(session.clone()).await?;
    let manager = Arc::new(ReconnectingManager(reconnecting));
    Ok(server(
        home,
        (&config.mcp, config.limits.retention),
        flags,
        manager,
        session,
    ))
}

/// Serves MCP over HTTP on `addr` inside the daemon (`[mcp] http`), on
/// `manager`, until `stop`.
///
/// # Errors
/// When the token cannot be kept or `addr` cannot be listened on.
pub async fn serve_in_daemon(
    home: &Home,
    (config, retention): (&McpConfig, Option<Span>),
    addr: SocketAddr,
    manager: Arc<dyn bpm_ports::ProcessManager>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let session = endpoint_session();
    manager
        .hold_session(session.clone(), std::process::id())
        .await?;
    let server = server(
        home,
        (config, retention),
        McpFlags::default(),
        manager,
        session,
    );
    let (endpoint, listener) = listen_http(home, addr).await?;
    tracing::info!(url = %format!("http://{}{}", endpoint.addr, bpm_mcp::MCP_PATH), "serving MCP over HTTP");
    Ok(tokio::spawn(async move {
        if let Err(e) = bpm_mcp::serve_http(server, endpoint, listener, stop).await {
            tracing::error!(error = %e, "the MCP endpoint failed");
        }
    }))
}

/// The endpoint on `addr`, listening, with the token from
/// `$BPM_HOME/mcp-token` (printed on stderr when it is made now).
async fn listen_http(
    home: &Home,
    addr: SocketAddr,
) -> anyhow::Result<(bpm_mcp::HttpEndpoint, tokio::net::TcpListener)> {
    home.prepare()?;
    let path = home.dir.join(MCP_TOKEN_FILE);
    let (token, made) = bpm_adapters::private::token_in(&path)
        .with_context(|| format!("cannot keep the MCP token in {}", path.display()))?;
    if made {
        eprintln!(
            "bpm mcp: clients send \"Authorization: Bearer {token}\" (kept in {})",
            path.display()
        );
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        eprintln!(
            "bpm mcp: warning: listening on {addr}, which other machines may reach; the token is \
             still required, but it crosses the network unencrypted"
        );
    }
    Ok((bpm_mcp::HttpEndpoint { addr, token }, listener))
}

/// The file under the state directory that keeps the MCP endpoint's
/// bearer token (mode 0600).
pub const MCP_TOKEN_FILE: &str = "mcp-token";

/// The session that owns what the HTTP endpoint's clients without a
/// session of their own start (2026-07-28 clients): the same name for
/// every endpoint of a state directory, held while one runs.
fn endpoint_session() -> SessionId {
    "mcp-http".parse().expect("a valid session name")
}

/// The MCP server on `manager` under the configuration and flags, owned
/// by `session`.
fn server(
    home: &Home,
    (config, retention): (&McpConfig, Option<Span>),
    flags: McpFlags,
    manager: Arc<dyn bpm_ports::ProcessManager>,
    session: SessionId,
) -> McpServer {
    let policy = policy(config, flags);
    let defaults = StartDefaults {
        cwd: std::env::current_dir().unwrap_or_else(|_| std::path::PathBuf::from("/")),
        env: bpm_adapters::os::inherited_env(),
        owner: Some(SessionOwner {
            session,
            grace: config
                .owner_grace
                .unwrap_or_else(|| Span::from_secs(bpm_mcp::DEFAULT_OWNER_GRACE_SECS)),
        }),
        time_zone: bpm_adapters::os::local_time_zone(),
        machine: Arc::new(bpm_adapters::os::ThisMachine),
        retention,
    };
    McpServer::new(
        manager,
        policy,
        defaults,
        SOFTWARE.trim_start_matches("bpm "),
    )
    .with_projects()
    .with_project_lock(project_lock(home.clone()))
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
