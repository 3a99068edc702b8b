//! The claim queue and cluster-wide slots in one process, over a store
//! whose writes are read back at once (the in-memory or the file store):
//! the unplaced records are the store's records whose node is `any`, a
//! group's slots are counted from the store's records, and the claims and
//! grants are maps shared by every node's queue made with
//! [`InMemoryClaims::for_node`]. For tests and
//! embedding; a daemon of its own needs neither (its core keeps a
//! cluster-wide limit as its own).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;

use async_trait::async_trait;
use bpm_domain::cluster::placement::{NodeLabels, Queued, Room, takes};
use bpm_domain::cluster::slots::{Grants, grant_stands, holds_slot};
use bpm_domain::{GroupName, ListFilter, NodeId, ProcessId, ProcessRecord, StateName};
use bpm_ports::{ClaimQueue, ClaimedOne, ClusterSlots, ProcessStore, StoreError};

/// A claim queue on a store shared within one process.
#[derive(Clone)]
pub struct InMemoryClaims {
    store: Arc<dyn ProcessStore>,
    node: NodeId,
    /// Claimed, not yet written: record → claimer. One lock, so a claim is atomic.
    claims: Arc<Mutex<HashMap<ProcessId, NodeId>>>,
    /// Slots granted to records not yet started, by group (the rule is
    /// [`bpm_domain::cluster::slots`]'s).
    granted: Arc<Mutex<HashMap<GroupName, Grants<()>>>>,
}

impl InMemoryClaims {
    /// `node`'s queue of the unplaced records in `store`.
    pub fn new(store: Arc<dyn ProcessStore>, node: NodeId) -> Self {
        InMemoryClaims {
            store,
            node,
            claims: Arc::default(),
            granted: Arc::default(),
        }
    }

    /// Another node's queue on the same store and claims.
    #[must_use]
    pub fn for_node(&self, node: NodeId) -> Self {
        InMemoryClaims {
            node,
            ..self.clone()
        }
    }

    async fn waiting(&self) -> Result<Vec<ProcessRecord>, StoreError> {
        let filter = ListFilter {
            node: Some(NodeId::any()),
            states: vec![StateName::Pending],
            ..ListFilter::default()
        };
        self.store.list(&filter).await
    }
}

#[async_trait]
impl ClaimQueue for InMemoryClaims {
    fn node(&self) -> &NodeId {
        &self.node
    }

    async fn claim(
        &self,
        room: &Room,
        labels: &NodeLabels,
    ) -> Result<Option<ProcessRecord>, StoreError> {
        let mut claims = self.claims.lock().await;
        let waiting = self.waiting().await?;
        let best = waiting
            .into_iter()
            .filter(|r| !claims.contains_key(&r.id()) && takes(room, labels, r))
            .min_by_key(Queued::order);
        if let Some(r) = &best {
            claims.insert(r.id(), self.node.clone());
        }
        Ok(best)
    }

    async fn claim_one(&self, id: ProcessId) -> Result<ClaimedOne, StoreError> {
        let mut claims = self.claims.lock().await;
        let record = match self.store.get(id).await {
            Ok(r) => r,
            Err(StoreError::NotFound(_)) => return Ok(ClaimedOne::NotWaiting),
            Err(e) => return Err(e),
        };
        if Queued::of(&record).is_none() {
            return Ok(ClaimedOne::NotWaiting);
        }
        if let Some(node) = claims.get(&id) {
            return Ok(ClaimedOne::ClaimedBy(node.clone()));
        }
        claims.insert(id, self.node.clone());
        Ok(ClaimedOne::Taken(record))
    }

    async fn give_back(&self, node: &NodeId) -> Result<usize, StoreError> {
        let mut claims = self.claims.lock().await;
        let waiting: Vec<ProcessId> = self
            .waiting()
            .await?
            .iter()
            .map(ProcessRecord::id)
            .collect();
        let mut back = 0;
        claims.retain(|id, claimer| {
            let mine = claimer == node;
            // Still unplaced: back in the queue; written: the claim is over.
            back += usize::from(mine && waiting.contains(id));
            !mine
        });
        Ok(back)
    }
}

#[async_trait]
impl ClusterSlots for InMemoryClaims {
    async fn take(
        &self,
        id: ProcessId,
        group: &GroupName,
        limit: usize,
    ) -> Result<bool, StoreError> {
        let mut granted = self.granted.lock().await;
        let holding = ListFilter {
            group: Some(group.clone()),
            states: StateName::ALL
                .into_iter()
                .filter(|s| s.is_active())
                .collect(),
            ..ListFilter::default()
        };
        let holding = self
            .store
            .list(&holding)
            .await?
            .iter()
            .filter(|r| holds_slot(r, group))
            .count();
        let read = |id| async move {
            match self.store.get(id).await {
                Ok(r) => Ok(Some(r)),
                Err(StoreError::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
            }
        };
        let grants = granted.entry(group.clone()).or_default();
        let mut standing = Vec::new();
        for (held, grant) in grants.iter() {
            if grant_stands(read(*held).await?.as_ref(), grant.at) {
                standing.push(*held);
            }
        }
        let version = read(id).await?.map(|r| r.version());
        Ok(grants.ask(id, limit, holding, version, (), |held, _| {
            standing.contains(held)
        }))
    }
}
