//! `bpm mcp`, `bpm mcp-run` and the shared server's `bpm mcp-hub`: the
//! MCP front ends, which run before any daemon connection of the command.

use std::process::ExitCode;

use super::super::Command;
use super::super::error::{CliError, Outcome};
use crate::home::Home;

/// Runs one of the MCP commands.
pub(super) async fn mcp_command(home: &Home, command: Command) -> Outcome {
    match command {
        Command::Mcp {
            read_only,
            allow_command,
            allow_dir,
            allow_env,
            show_env,
            http,
        } => {
            let flags = crate::mcp::McpFlags {
                read_only,
                allow_commands: allow_command,
                allow_dirs: allow_dir,
                allow_env,
                show_env,
            };
            match http {
                Some(addr) => crate::mcp::run_http(home, flags, addr).await,
                None => crate::mcp::run(home, flags).await,
            }
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| CliError::failed(format!("{e:#}")))
        }
        Command::McpRun {
            name,
            shared,
            grace,
            command,
        } => {
            // Refused here, by its flag, before anything starts.
            grace
                .parse::<bpm_domain::Span>()
                .map_err(|e| CliError::invalid(format!("--grace {grace:?}: {e}")))?;
            let args = crate::mcp_run::McpRunArgs {
                name,
                grace,
                command,
            };
            if shared {
                crate::mcp_hub::join(home, args).await
            } else {
                crate::mcp_run::run(home, args).await
            }
            .map_err(|e| CliError::failed(format!("{e:#}")))
        }
        Command::McpHub { grace, command } => crate::mcp_hub::serve(&grace, &command)
            .await
            .map_err(|e| CliError::failed(format!("{e:#}"))),
        _ => unreachable!("only the MCP commands come here"),
    }
}
