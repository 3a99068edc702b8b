//! Finding a process from what a person types (see [`bpm_ports::resolve_id`]).

use bpm_domain::ProcessId;
use bpm_ports::{ResolveError, resolve_id};

use super::error::CliError;

/// Resolves `text` to one process id.
pub(super) async fn resolve(m: &super::Manager, text: &str) -> Result<ProcessId, CliError> {
    resolve_id(m.as_ref(), text).await.map_err(|e| match e {
        ResolveError::NotFound(_) => CliError::not_found(e.to_string()),
        ResolveError::Manager(m) => CliError::from(m),
        ResolveError::Empty | ResolveError::Ambiguous { .. } => CliError::invalid(e.to_string()),
    })
}
