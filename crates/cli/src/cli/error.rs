//! What a command that fails prints, and its exit code.

use std::process::ExitCode;

use bpm_domain::{ProcessRecord, StateName};
use bpm_ports::ManagerError;

/// A command failed: what to print, and the exit code.
#[derive(Debug)]
pub(super) struct CliError {
    pub(super) code: u8,
    pub(super) message: String,
}

impl CliError {
    pub(super) fn invalid(message: impl Into<String>) -> Self {
        CliError {
            code: 4,
            message: message.into(),
        }
    }
    pub(super) fn not_found(message: impl Into<String>) -> Self {
        CliError {
            code: 3,
            message: message.into(),
        }
    }
    /// This error, its message after `what: `.
    pub(super) fn with_prefix(mut self, what: &str) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
    pub(super) fn failed(message: impl Into<String>) -> Self {
        CliError {
            code: 1,
            message: message.into(),
        }
    }
}

impl From<ManagerError> for CliError {
    fn from(e: ManagerError) -> Self {
        let code = match &e {
            ManagerError::NotFound(_) => 3,
            ManagerError::InvalidSpec(_)
            | ManagerError::InvalidTransition(_)
            | ManagerError::Refused(_)
            | ManagerError::TooLarge { .. }
            | ManagerError::BadRequest(_) => 4,
            ManagerError::WaitTimeout { .. } => 124,
            ManagerError::Connection(_) | ManagerError::Routing(_) | ManagerError::ShutDown => 5,
            _ => 1,
        };
        CliError {
            code,
            message: e.to_string(),
        }
    }
}

pub(super) type Outcome = Result<ExitCode, CliError>;

/// The process's own exit code, as a shell shows it (128+n for a signal); 1 when there is none.
pub(crate) fn exit_code_of(r: &ProcessRecord) -> ExitCode {
    match r.lifecycle().exit() {
        Some(e) => ExitCode::from(u8::try_from(e.shell_code()).unwrap_or(1)),
        None if r.state() == StateName::Completed => ExitCode::SUCCESS,
        None => ExitCode::from(1),
    }
}
