use async_trait::async_trait;
use bpm_domain::{ListFilter, ProcessId, ProcessRecord, Timestamp};

/// A store refused or failed an operation. The meanings are the same on every store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No record has this id.
    #[error("no process with id {0}")]
    NotFound(ProcessId),
    /// A record with this id exists already.
    #[error("a process with id {0} exists already")]
    AlreadyExists(ProcessId),
    /// Compare-and-set failed: the stored version is not the expected one.
    #[error("conflict on process {id}: expected version {expected}, the store has {actual}")]
    Conflict {
        /// The record.
        id: ProcessId,
        /// The version the writer expected.
        expected: u64,
        /// The version the store holds.
        actual: u64,
    },
    /// The backend cannot be reached or did not answer in time; nothing was changed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend refused the write (disk full, permission denied, a value too large).
    #[error("store write refused: {0}")]
    Refused(String),
}

/// Where process records live.
///
/// Every operation is atomic: a record is either written whole or not at all.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ProcessStore: Send + Sync + 'static {
    /// Stores a new record.
    ///
    /// # Errors
    /// - MUST return [`StoreError::AlreadyExists`] if a record with its id exists.
    /// - MUST return [`StoreError::Unavailable`] if the backend cannot be reached.
    async fn create(&self, record: &ProcessRecord) -> Result<(), StoreError>;

    /// A copy of the record with `id`.
    ///
    /// # Errors
    /// - MUST return [`StoreError::NotFound`] if there is none.
    /// - MUST return [`StoreError::Unavailable`] if the backend cannot be reached.
    async fn get(&self, id: ProcessId) -> Result<ProcessRecord, StoreError>;

    /// Replaces the record if the stored version is `expected_version`
    /// (compare-and-set): of two writers racing from the same version,
    /// exactly one succeeds.
    ///
    /// # Errors
    /// - MUST return [`StoreError::NotFound`] if there is no record with its id.
    /// - MUST return [`StoreError::Conflict`] (with the stored version) if the
    ///   stored version differs; the stored record is then unchanged.
    /// - MUST return [`StoreError::Unavailable`] if the backend cannot be reached.
    async fn update(&self, record: &ProcessRecord, expected_version: u64)
    -> Result<(), StoreError>;

    /// Removes the record.
    ///
    /// # Errors
    /// - MUST return [`StoreError::NotFound`] if there is none.
    /// - MUST return [`StoreError::Unavailable`] if the backend cannot be reached.
    async fn delete(&self, id: ProcessId) -> Result<(), StoreError>;

    /// Copies of the records that match `filter`, ordered by id (creation
    /// order for v7 ids), starting after `filter.after`, at most `filter.limit`.
    ///
    /// # Errors
    /// - MUST return [`StoreError::Unavailable`] if the backend cannot be reached.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<ProcessRecord>, StoreError>;

    /// Retention: deletes every finished record that ended before
    /// `ended_before`, and returns their ids in id order. Live records are
    /// never deleted, however old.
    ///
    /// # Errors
    /// - MUST return [`StoreError::Unavailable`] if the backend cannot be reached.
    async fn expire(&self, ended_before: Timestamp) -> Result<Vec<ProcessId>, StoreError>;
}
