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
    // The daemon sends only the records the text could mean, not every
    // record it holds; an older one that sends them all is filtered here.
    let refers = ListFilter {
        refers_to: Some(text.into()),
        ..ListFilter::default()
    };
    let all = m.list(refers).await?;
    let by_id: Vec<&ProcessRecord> = all.iter().filter(|r| r.id().fits(text)).collect();
    let found = if by_id.is_empty() {
        let named: Vec<&ProcessRecord> = all.iter().filter(|r| r.is_named(text)).collect();
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bpm_domain::{NodeId, ProcessName, ProcessSpec, Timestamp};

    use super::*;
    use crate::MockProcessManager;

    /// A record named `name` (none: unnamed), with the id `n`.
    fn record(n: u128, name: Option<&str>) -> ProcessRecord {
        let mut spec = ProcessSpec::argv(["true"]);
        spec.name = name.map(|n| ProcessName::new(n).expect("a name"));
        let id = ProcessId::from_uuid(uuid::Uuid::from_u128(n));
        ProcessRecord::new(id, NodeId::local(), spec, Timestamp::from_millis(1))
    }

    /// A manager holding `records`, which answers listings as a store
    /// does, and counts those that were not narrowed to what was typed.
    fn holding(records: Vec<ProcessRecord>) -> (MockProcessManager, Arc<AtomicUsize>) {
        let whole = Arc::new(AtomicUsize::new(0));
        let mut m = MockProcessManager::new();
        let w = whole.clone();
        m.expect_list().returning(move |filter| {
            if filter.refers_to.is_none() {
                w.fetch_add(1, Ordering::SeqCst);
            }
            Ok(records
                .iter()
                .filter(|r| filter.matches(r))
                .cloned()
                .collect())
        });
        (m, whole)
    }

    #[tokio::test]
    async fn what_was_typed_is_listed_never_everything() {
        let (web, other) = (record(0xabcd_0001, Some("web")), record(0xabcd_0002, None));
        // Hex digits that are a name, and the end of no id.
        let cafe = record(0x1234_0003, Some("cafe"));
        let (m, whole) = holding(vec![web.clone(), other.clone(), cafe.clone()]);
        assert_eq!(resolve_id(&m, "web").await.expect("web"), web.id());
        assert!(matches!(
            resolve_id(&m, "no such name").await,
            Err(ResolveError::NotFound(_))
        ));
        assert_eq!(
            resolve_id(&m, "abcd0002")
                .await
                .expect("by its last digits"),
            other.id()
        );
        assert_eq!(
            resolve_id(&m, &other.id().short()).await.expect("short"),
            other.id()
        );
        assert_eq!(resolve_id(&m, "cafe").await.expect("cafe"), cafe.id());
        assert!(matches!(
            resolve_id(&m, "0000").await,
            Err(ResolveError::Ambiguous { .. })
        ));
        assert_eq!(whole.load(Ordering::SeqCst), 0, "never every record");
    }
}
