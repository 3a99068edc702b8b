use async_trait::async_trait;
use bpm_domain::{ListFilter, ProcessId, ProcessRecord};

/// A store refused or failed an operation. The meanings are the same on every store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
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
    /// A newer daemon claimed the writer's node: writes from the writer's
    /// epoch are refused (a shared store only; nothing was changed).
    #[error(
        "node {node} was claimed by a newer daemon (epoch {current}): writes of this daemon's epoch {epoch} are refused until it claims the node again"
    )]
    Fenced {
        /// The writer's node.
        node: bpm_domain::NodeId,
        /// The writer's epoch.
        epoch: u64,
        /// The node's newest epoch.
        current: u64,
    },
    /// The writer's lease lapsed: it could not renew it for a whole
    /// `lease_ttl`, so another daemon may hold its node. It writes nothing
    /// until it renews or claims the node again (a shared store only;
    /// nothing was changed).
    #[error(
        "the lease of node {node} (epoch {epoch}) was not renewed for a whole lease_ttl: this daemon writes nothing until it holds the node again"
    )]
    Lapsed {
        /// The writer's node.
        node: bpm_domain::NodeId,
        /// The writer's epoch.
        epoch: u64,
    },
}

/// One write of [`ProcessStore::write_batch`].
#[derive(Debug, Clone, PartialEq)]
pub struct StoreWrite {
    /// The record as it is now.
    pub record: ProcessRecord,
    /// `None` to create it; else compare-and-set against this version.
    pub expected_version: Option<u64>,
    /// `false` for an update that may stay unflushed (see
    /// [`ProcessStore::update_unflushed`]); creations are always flushed.
    pub durable: bool,
}

/// Where process records live.
///
/// Every operation is atomic: a record is either written whole or not at all.
///
/// [`room`](Self::room), [`reachable`](Self::reachable) and
/// [`recovery_warnings`](Self::recovery_warnings) have no default: each
/// guards new work or tells of damage, and a store that wraps another
/// (to add a cache, a metric, a folder it owns) must pass them on, or say
/// why not, rather than drop them unseen.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ProcessStore: Send + Sync + 'static {
    /// Whether the store takes `records` new records now. New work is
    /// refused while it does not; the records it holds go on being written.
    ///
    /// # Errors
    /// MUST return [`StoreError::Refused`], naming the device and the path
    /// and what they lack, when the store has no room for them (a full
    /// disk).
    fn room(&self, records: usize) -> Result<(), StoreError>;

    /// Whether the store answers now. New work is refused while it does
    /// not, so that nothing is acknowledged that lives in memory alone; a
    /// store on this machine always answers.
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`], naming the store, when it
    /// does not answer within its timeout; a shared store MUST return
    /// [`StoreError::Fenced`] once a newer daemon claimed the writer's node;
    /// [`StoreError::Lapsed`] while the writer's lease is lapsed.
    async fn reachable(&self) -> Result<(), StoreError>;

    /// What the store found wrong when it opened and could not repair
    /// silently (a damaged journal, with the records it cost), one line
    /// each, for the daemon to report at start and in its status. Empty
    /// when all was well.
    fn recovery_warnings(&self) -> Vec<String>;

    /// A live record other than `record` carrying `record`'s name, if any
    /// (what [`create_named`](Self::create_named) looks for).
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] if the backend cannot be reached.
    async fn live_named(
        &self,
        record: &ProcessRecord,
    ) -> Result<Option<ProcessRecord>, StoreError> {
        let Some(name) = &record.spec().name else {
            return Ok(None);
        };
        let live = self.list(&ListFilter::live()).await?;
        Ok(live.into_iter().find(|r| {
            r.id() != record.id() && !r.is_terminal() && r.spec().name.as_ref() == Some(name)
        }))
    }

    /// Stores a new record.
    ///
    /// # Errors
    /// - MUST return [`StoreError::AlreadyExists`] if a record with its id exists.
    /// - MUST return [`StoreError::Unavailable`] if the backend cannot be reached.
    async fn create(&self, record: &ProcessRecord) -> Result<(), StoreError>;

    /// Stores a new record that carries a name, unless a live record the
    /// store holds (of any node) carries the same name: then answers that
    /// record and writes nothing. A store that nodes share does both in
    /// one atomic step, so that of any number of nodes creating the same
    /// name at once, one creates it; the default, for a store of one
    /// process, looks and then creates.
    ///
    /// # Errors
    /// As [`create`](Self::create).
    async fn create_named(
        &self,
        record: &ProcessRecord,
    ) -> Result<Option<ProcessRecord>, StoreError> {
        if let Some(live) = self.live_named(record).await? {
            return Ok(Some(live));
        }
        self.create(record).await.map(|()| None)
    }

    /// A copy of the record with `id`: its newest version, once that is on
    /// disk. A version written by
    /// [`write_batch_unsynced`](Self::write_batch_unsynced) and not yet
    /// synced is flushed first (as [`sync`](Self::sync) does), so a process
    /// asking for its own record right after its start finds it.
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

    /// [`update`](Self::update) without waiting for the disk, for changes
    /// the domain marks as not durable: the write survives a crash of the
    /// writer, but a crash of the machine may undo it (the store then holds
    /// the newest version written by `create` or `update`, whole). Stores
    /// that have no separate flush step keep the default, a plain `update`.
    ///
    /// # Errors
    /// The same as [`update`](Self::update).
    async fn update_unflushed(
        &self,
        record: &ProcessRecord,
        expected_version: u64,
    ) -> Result<(), StoreError> {
        self.update(record, expected_version).await
    }

    /// Carries out `writes` in order, as `create`, `update` and
    /// `update_unflushed` would one by one, and returns one result per write.
    /// A store may flush them together (one wait for the disk for all of
    /// them), which is the point of calling it; each write is still atomic,
    /// and none is reported written before it is on disk (unless unflushed).
    ///
    /// # Errors
    /// Per write, the errors of the operation it stands for.
    async fn write_batch(&self, writes: &[StoreWrite]) -> Vec<Result<(), StoreError>> {
        let mut out = Vec::with_capacity(writes.len());
        for w in writes {
            out.push(match (w.expected_version, w.durable) {
                (None, _) => self.create(&w.record).await,
                (Some(v), true) => self.update(&w.record, v).await,
                (Some(v), false) => self.update_unflushed(&w.record, v).await,
            });
        }
        out
    }

    /// [`write_batch`](Self::write_batch) without waiting for the disk: each
    /// accepted write is in the store at once (later compare-and-set writes
    /// see it, and it survives a crash of the writer), and the durable ones
    /// are on disk once a [`sync`](Self::sync) called after it returns.
    /// Readers may see a durable one only from then on (a [`get`](Self::get)
    /// or [`list`](Self::list) syncs first), so nobody learns of a change a
    /// power cut could undo. For a caller with work to do meanwhile that a
    /// crash of the machine would undo anyway (starting a process). Stores
    /// with no separate flush step keep the default, a plain `write_batch`.
    ///
    /// # Errors
    /// Per write, the errors of the operation it stands for.
    async fn write_batch_unsynced(&self, writes: &[StoreWrite]) -> Vec<Result<(), StoreError>> {
        self.write_batch(writes).await
    }

    /// Returns once every write accepted before the call is on disk. Writes
    /// may go on while it waits for the disk; those made meanwhile are left
    /// for the next sync. Stores whose writes are on disk when accepted keep
    /// the default, which does nothing.
    ///
    /// # Errors
    /// - MUST return [`StoreError::Refused`] if the flush failed: the writes
    ///   stay readable, but may not survive a power cut.
    /// - MUST return [`StoreError::Unavailable`] if the backend cannot be reached.
    async fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Removes the record.
    ///
    /// # Errors
    /// - MUST return [`StoreError::NotFound`] if there is none.
    /// - MUST return [`StoreError::Unavailable`] if the backend cannot be reached.
    async fn delete(&self, id: ProcessId) -> Result<(), StoreError>;

    /// Copies of the records that match `filter`, ordered by id (creation
    /// order for v7 ids), starting after `filter.after`, at most `filter.limit`.
    /// As [`get`](Self::get), each at its newest version, flushed first if
    /// it was written unsynced.
    ///
    /// # Errors
    /// - MUST return [`StoreError::Unavailable`] if the backend cannot be reached.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<ProcessRecord>, StoreError>;
}
