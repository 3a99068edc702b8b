//! `bpm mcp`: the MCP server on stdio, driving the daemon (started when needed).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use bpm_adapters::mcp::{McpServer, Policy, StartDefaults};
use rmcp::ServiceExt as _;
use serde::Deserialize;

use crate::daemon::{self, Home, SOFTWARE};

/// The `[mcp]` section of `config.toml`; every key optional.
///
/// ```toml
/// [mcp]
/// allow_commands = ["npm test", "cargo"]  # only commands starting with these (word boundary)
/// allow_dirs = ["/home/me/src"]           # only in these directories or below
/// read_only = false                       # true: list, read and wait only
/// redact_env = true                       # hide environment values in what agents see
/// max_output_bytes = 65536                # the most output one answer carries
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// Allowed command prefixes; empty allows every command.
    pub allow_commands: Vec<String>,
    /// Allowed working directories; empty allows every directory.
    pub allow_dirs: Vec<PathBuf>,
    /// Refuse every tool that changes anything.
    pub read_only: bool,
    /// Hide environment values (`true` unless set to `false`).
    pub redact_env: Option<bool>,
    /// The most output bytes one answer carries.
    pub max_output_bytes: Option<usize>,
}

/// What `bpm mcp`'s flags add to the configuration.
#[derive(Debug, Clone, Default)]
pub struct McpFlags {
    /// `--read-only`.
    pub read_only: bool,
    /// `--allow-command` (repeatable).
    pub allow_commands: Vec<String>,
    /// `--allow-dir` (repeatable).
    pub allow_dirs: Vec<PathBuf>,
    /// `--show-env`: do not redact.
    pub show_env: bool,
}

/// The policy from the configuration, with the flags on top.
pub fn policy(config: &McpConfig, flags: McpFlags) -> Policy {
    let mut p = Policy {
        allow_commands: config.allow_commands.clone(),
        allow_dirs: config.allow_dirs.clone(),
        read_only: config.read_only || flags.read_only,
        redact_env: config.redact_env.unwrap_or(true) && !flags.show_env,
        ..Policy::default()
    };
    if let Some(max) = config.max_output_bytes {
        p.max_output_bytes = max.max(1);
    }
    p.allow_commands.extend(flags.allow_commands);
    p.allow_dirs.extend(flags.allow_dirs);
    p
}

/// Serves MCP on stdin and stdout until the client closes them.
///
/// # Errors
/// When the configuration is invalid, no daemon can be reached, or the transport fails.
pub async fn run(home: &Home, flags: McpFlags) -> anyhow::Result<()> {
    let config = crate::config::Config::load(&home.dir).map_err(anyhow::Error::msg)?;
    let policy = policy(&config.mcp, flags);
    let client = daemon::connect_or_start(home).await?;
    let server = McpServer::new(
        Arc::new(client),
        policy,
        StartDefaults::inherited(),
        SOFTWARE.trim_start_matches("bpm "),
    );
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .context("the MCP handshake failed")?;
    running.waiting().await.context("the MCP session failed")?;
    Ok(())
}
