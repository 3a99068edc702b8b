//! Finding a process from what a person or an agent types: a full id, a
//! unique prefix of it, the 8-digit short form tables show, or a unique name.

use bpm_domain::{ListFilter, ProcessId, ProcessRecord};

use crate::{ManagerError, ProcessManager};

/// Why a reference did not resolve to exactly one process.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The reference is empty.
    #[error("an empty process id")]
    Empty,
    /// Nothing matches.
    #[error("no process matches {0:?}")]
    NotFound(String),
    /// Several records match; `candidates` lists up to 20 of them, one per line.
    #[error("{text:?} is ambiguous; it matches:\n{candidates}")]
    Ambiguous {
        /// The reference.
        text: String,
        /// `id  state  name` per matching record.
        candidates: String,
    },
    /// Listing the records failed.
    #[error(transparent)]
    Manager(#[from] ManagerError),
}

/// Resolves `text` to one process id. A well-formed UUID is taken as it is
/// (whether it exists is the caller's next call's business); otherwise ids
/// are matched by prefix (with or without dashes), by their last 4 or more
/// hex digits, and then by name: the live record of that name, or, when
/// none is live, the newest that carried it.
///
/// # Errors
/// [`ResolveError`] when nothing or more than one record matches, or the list fails.
pub async fn resolve_id(m: &dyn ProcessManager, text: &str) -> Result<ProcessId, ResolveError> {
    let text = text.trim();
    if let Ok(id) = text.parse::<ProcessId>() {
        return Ok(id);
    }
    if text.is_empty() {
        return Err(ResolveError::Empty);
    }
    let all = m.list(ListFilter::default()).await?;
    let lower = text.to_ascii_lowercase();
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
    let found = if by_id.is_empty() {
        let named: Vec<&ProcessRecord> = all
            .iter()
            .filter(|r| r.spec().name.as_ref().is_some_and(|n| n.as_str() == text))
            .collect();
        // A name belongs to one live record: that one; with none live, the
        // newest that carried it.
        let live: Vec<&ProcessRecord> =
            named.iter().copied().filter(|r| !r.is_terminal()).collect();
        match (
            live.as_slice(),
            named.iter().max_by_key(|r| (r.created_at(), r.id())),
        ) {
            ([], Some(newest)) => vec![*newest],
            ([], None) => Vec::new(),
            _ => live,
        }
    } else {
        by_id
    };
    match found.as_slice() {
        [one] => Ok(one.id()),
        [] => Err(ResolveError::NotFound(text.to_owned())),
        many => {
            let candidates: Vec<String> = many
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
            Err(ResolveError::Ambiguous {
                text: text.to_owned(),
                candidates: candidates.join("\n"),
            })
        }
    }
}
