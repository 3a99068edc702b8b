//! Finding a process from what a person or an agent types: a full id, a
//! unique prefix of it, the 8-digit short form tables show, or a unique name.

use bpm_domain::{ListFilter, ProcessId, ProcessRecord};

use bpm_ports::{ManagerError, ProcessManager};

/// Why a reference did not resolve to exactly one process.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    listed(m, text).await.map(|r| r.id())
}

/// The record `text` refers to, matched as [`resolve_id`] matches it: for
/// a well-formed UUID, the record `get` returns; otherwise the one record
/// the list it looked in holds, without asking for it again.
///
/// # Errors
/// As [`resolve_id`]; for a UUID, `get`'s error
/// ([`ManagerError::NotFound`] when no record has it).
pub async fn resolve_record(
    m: &dyn ProcessManager,
    text: &str,
) -> Result<ProcessRecord, ResolveError> {
    let text = text.trim();
    if let Ok(id) = text.parse::<ProcessId>() {
        return Ok(m.get(id).await?);
    }
    listed(m, text).await
}

/// The one record `text` (not a UUID) refers to among those listed for it.
async fn listed(m: &dyn ProcessManager, text: &str) -> Result<ProcessRecord, ResolveError> {
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
        [one] => Ok((*one).clone()),
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
    use bpm_ports::MockProcessManager;

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

    /// A name or part of an id gives the record the listing held, with no
    /// `get`; a UUID gives `get`'s record, or its error.
    #[tokio::test]
    async fn a_record_is_taken_from_the_listing_and_a_uuid_from_get() {
        let web = record(0xabcd_0001, Some("web"));
        let (mut m, _) = holding(vec![web.clone()]);
        let known = web.clone();
        let gets = Arc::new(AtomicUsize::new(0));
        let g = gets.clone();
        m.expect_get().returning(move |id| {
            g.fetch_add(1, Ordering::SeqCst);
            if id == known.id() {
                Ok(known.clone())
            } else {
                Err(ManagerError::NotFound(id))
            }
        });
        assert_eq!(resolve_record(&m, "web").await.expect("web"), web);
        assert_eq!(resolve_record(&m, "abcd0001").await.expect("digits"), web);
        assert_eq!(gets.load(Ordering::SeqCst), 0, "the listing's record");
        assert_eq!(
            resolve_record(&m, &web.id().to_string()).await.expect("id"),
            web
        );
        let unknown = ProcessId::from_uuid(uuid::Uuid::from_u128(7));
        assert!(matches!(
            resolve_record(&m, &unknown.to_string()).await,
            Err(ResolveError::Manager(ManagerError::NotFound(id))) if id == unknown
        ));
        assert!(matches!(
            resolve_record(&m, "nothing").await,
            Err(ResolveError::NotFound(_))
        ));
    }
}
