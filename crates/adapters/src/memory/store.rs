use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{PoisonError, RwLock};

use async_trait::async_trait;
use bpm_domain::{ListFilter, ProcessId, ProcessRecord};
use bpm_ports::{ProcessStore, StoreError};

/// Records in a map behind a lock. Every operation is atomic; listings scan
/// in id order and return copies.
#[derive(Debug, Default)]
pub struct InMemoryStore {
    records: RwLock<BTreeMap<ProcessId, ProcessRecord>>,
}

impl InMemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        InMemoryStore::default()
    }
}

#[async_trait]
impl ProcessStore for InMemoryStore {
    /// Memory is not counted: a record is small, and the process's own
    /// allocator is the limit.
    fn room(&self, _records: usize) -> Result<(), StoreError> {
        Ok(())
    }

    /// In this process: it always answers.
    async fn reachable(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Nothing is read back at open, so nothing can be found damaged.
    fn recovery_warnings(&self) -> Vec<String> {
        Vec::new()
    }

    async fn create(&self, record: &ProcessRecord) -> Result<(), StoreError> {
        let mut records = self.records.write().unwrap_or_else(PoisonError::into_inner);
        if records.contains_key(&record.id()) {
            return Err(StoreError::AlreadyExists(record.id()));
        }
        records.insert(record.id(), record.clone());
        Ok(())
    }

    async fn create_named(
        &self,
        record: &ProcessRecord,
    ) -> Result<Option<ProcessRecord>, StoreError> {
        // Under the one lock: nodes sharing this store create a name once.
        let mut records = self.records.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(name) = &record.spec().name
            && let Some(live) = records.values().find(|r| {
                r.id() != record.id() && !r.is_terminal() && r.spec().name.as_ref() == Some(name)
            })
        {
            return Ok(Some(live.clone()));
        }
        if records.contains_key(&record.id()) {
            return Err(StoreError::AlreadyExists(record.id()));
        }
        records.insert(record.id(), record.clone());
        Ok(None)
    }

    async fn get(&self, id: ProcessId) -> Result<ProcessRecord, StoreError> {
        let records = self.records.read().unwrap_or_else(PoisonError::into_inner);
        records.get(&id).cloned().ok_or(StoreError::NotFound(id))
    }

    async fn update(
        &self,
        record: &ProcessRecord,
        expected_version: u64,
    ) -> Result<(), StoreError> {
        let mut records = self.records.write().unwrap_or_else(PoisonError::into_inner);
        let stored = records
            .get_mut(&record.id())
            .ok_or(StoreError::NotFound(record.id()))?;
        if stored.version() != expected_version {
            return Err(StoreError::Conflict {
                id: record.id(),
                expected: expected_version,
                actual: stored.version(),
            });
        }
        *stored = record.clone();
        Ok(())
    }

    async fn delete(&self, id: ProcessId) -> Result<(), StoreError> {
        let mut records = self.records.write().unwrap_or_else(PoisonError::into_inner);
        records
            .remove(&id)
            .map(|_| ())
            .ok_or(StoreError::NotFound(id))
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<ProcessRecord>, StoreError> {
        let records = self.records.read().unwrap_or_else(PoisonError::into_inner);
        let start = filter.after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(records
            .range((start, Bound::Unbounded))
            .map(|(_, r)| r)
            .filter(|r| filter.matches(r))
            .take(filter.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect())
    }
}
