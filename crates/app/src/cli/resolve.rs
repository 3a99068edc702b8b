//! Finding a process from what a person types: a full id, a unique prefix of
//! it, the short form shown in tables, or a unique name.

use bpm_domain::{ListFilter, ProcessId, ProcessRecord};
use bpm_ports::ProcessManager;

use super::commands::CliError;

/// Resolves `text` to one process id.
pub(super) async fn resolve(m: &dyn ProcessManager, text: &str) -> Result<ProcessId, CliError> {
    let text = text.trim();
    if let Ok(id) = text.parse::<ProcessId>() {
        return Ok(id);
    }
    if text.is_empty() {
        return Err(CliError::invalid("an empty id"));
    }
    let all = m
        .list(ListFilter::default())
        .await
        .map_err(CliError::from)?;
    let lower = text.to_ascii_lowercase();
    let by_name: Vec<&ProcessRecord> = all
        .iter()
        .filter(|r| r.spec().name.as_ref().is_some_and(|n| n.as_str() == text))
        .collect();
    let by_id: Vec<&ProcessRecord> = all
        .iter()
        .filter(|r| {
            let full = r.id().to_string();
            let simple = full.replace('-', "");
            full.starts_with(&lower)
                || simple.starts_with(&lower)
                || (lower.len() >= 4 && simple.ends_with(&lower))
        })
        .collect();
    let found = if by_id.is_empty() { by_name } else { by_id };
    match found.as_slice() {
        [one] => Ok(one.id()),
        [] => Err(CliError::not_found(format!("no process matches {text:?}"))),
        many => {
            let list: Vec<String> = many
                .iter()
                .take(20)
                .map(|r| {
                    format!(
                        "  {}  {:<10} {}",
                        r.id(),
                        r.state(),
                        r.spec().name.as_ref().map_or("-", |n| n.as_str())
                    )
                })
                .collect();
            Err(CliError::invalid(format!(
                "{text:?} is ambiguous; it matches:\n{}",
                list.join("\n")
            )))
        }
    }
}
