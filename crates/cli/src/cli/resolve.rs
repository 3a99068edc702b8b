//! Finding a process from what a person types (see [`bpm_intake::resolve_id`]).

use bpm_domain::{ProcessId, ProcessRecord};
use bpm_intake::{ResolveError, resolve_id, resolve_record};

use super::error::CliError;

/// Resolves `text` to one process id; inside a project's directory, a
/// service's name (`api`) names its record (`shop/api`).
pub(super) async fn resolve(m: &super::Manager, text: &str) -> Result<ProcessId, CliError> {
    here_too(text, async |t| resolve_id(m.as_ref(), t).await).await
}

/// The record `text` refers to, as [`resolve`] finds it; a name or a short
/// id is answered from the listing that found it, with no `get` after it.
pub(super) async fn resolve_to_record(
    m: &super::Manager,
    text: &str,
) -> Result<ProcessRecord, CliError> {
    here_too(text, async |t| resolve_record(m.as_ref(), t).await).await
}

/// `look(text)`; when nothing matches and this directory's project has a
/// service of that name, `look` of its record's name.
async fn here_too<T>(
    text: &str,
    look: impl AsyncFn(&str) -> Result<T, ResolveError>,
) -> Result<T, CliError> {
    let found = match look(text).await {
        Err(ResolveError::NotFound(_)) if !text.contains('/') => match service_here(text) {
            Some(name) => look(&name).await.map_err(|_| {
                ResolveError::NotFound(format!("{text} (nor {name}, this project's service)"))
            }),
            None => Err(ResolveError::NotFound(text.to_owned())),
        },
        other => other,
    };
    found.map_err(|e| match e {
        ResolveError::NotFound(_) => CliError::not_found(e.to_string()),
        ResolveError::Manager(m) => CliError::from(m),
        _ => CliError::invalid(e.to_string()),
    })
}

/// `PROJECT/SERVICE` when the project file of this directory (or a parent)
/// has a service named `service`.
fn service_here(service: &str) -> Option<String> {
    let (_, loaded) = super::project::read_here().ok()?;
    let project = &loaded?.project;
    project
        .service(service)
        .map(|_| project.process_name(service).to_string())
}
