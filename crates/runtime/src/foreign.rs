//! Other nodes' records that this node's records name (a dependency, a
//! parent): the core keeps a view of each (`supervisor/foreign.rs`), and
//! this file feeds it. Before a start that names a record the core does not
//! know, and when the engine starts, the records are read from the shared
//! store (with their ancestors, for the hierarchy's depth); afterwards their
//! events, which reach every node, say when to read one again. A subscriber
//! that fell behind reads every watched record again.

use std::collections::{HashMap, HashSet};

use bpm_domain::{CoreError, Input, ProcessId, ProcessRecord};
use bpm_ports::{ManagerError, ProcessStore, StoreError};
use tokio::sync::{broadcast, mpsc};

use crate::{Engine, ToLoop};

/// How many ancestors of a named record are read, at most: past the
/// deepest hierarchy any limit allows, a chain is not followed.
const MAX_CHAIN: usize = 64;

/// How many times one call reads a record it names that the core did not know.
const READS: u8 = 3;

/// Reads `ids` from the store with their ancestors, leaving out this
/// node's records (the core has them) and records the store does not hold.
pub(crate) async fn read_elsewhere(
    store: &dyn ProcessStore,
    node: &bpm_domain::NodeId,
    ids: &[ProcessId],
) -> Result<Vec<ProcessRecord>, StoreError> {
    let mut read = Vec::new();
    let mut seen = HashSet::new();
    for &first in ids {
        let mut next = Some(first);
        let mut hops = 0;
        while let Some(id) = next.filter(|id| hops <= MAX_CHAIN && seen.insert(*id)) {
            hops += 1;
            let record = match store.get(id).await {
                Ok(record) => record,
                Err(StoreError::NotFound(_)) => break,
                Err(e) => return Err(e),
            };
            if record.node() == node {
                break;
            }
            next = record.parent();
            read.push(record);
        }
    }
    Ok(read)
}

/// The record a refusal says the core does not know, when another node's
/// record could be it.
const fn unknown_named(error: &ManagerError) -> Option<ProcessId> {
    match error {
        ManagerError::Refused(CoreError::UnknownDependency(id) | CoreError::ParentNotFound(id)) => {
            Some(*id)
        }
        _ => None,
    }
}

impl Engine {
    /// Whether other nodes' records can be read here (the store is shared).
    pub(crate) fn shared(&self) -> bool {
        self.commands.get().is_some()
    }

    /// Of a batch's inputs, a copy of each that may name another node's
    /// record, to send again once the core has read it.
    pub(crate) fn kept_for_again(&self, inputs: &[Input]) -> Vec<Option<Input>> {
        let shared = self.shared();
        inputs
            .iter()
            .map(|i| (shared && i.may_name_unknown()).then(|| i.clone()))
            .collect()
    }

    /// Sends again, as one batch each round, the inputs of a batch the core
    /// refused for naming a record it did not know, once it has read it.
    pub(crate) async fn submit_again_named(
        &self,
        again: Vec<Option<Input>>,
        accepted: &mut [Result<(), ManagerError>],
        changed: &mut Vec<ProcessRecord>,
    ) -> Result<(), ManagerError> {
        let mut reads = HashMap::new();
        loop {
            let refused = accepted.iter().zip(&again).filter_map(|(a, kept)| {
                kept.as_ref()?;
                a.as_ref().err()
            });
            let found = self.learn_named(refused, &mut reads).await?;
            let retry: Vec<usize> = (0..accepted.len())
                .filter(|&i| {
                    again[i].is_some()
                        && accepted[i]
                            .as_ref()
                            .err()
                            .and_then(unknown_named)
                            .is_some_and(|id| found.contains(&id))
                })
                .collect();
            if retry.is_empty() {
                return Ok(());
            }
            let inputs = retry.iter().filter_map(|&i| again[i].clone()).collect();
            let (results, more) = self.submit_batch(inputs).await?;
            for (i, result) in retry.into_iter().zip(results) {
                accepted[i] = result;
            }
            changed.extend(more);
        }
    }

    /// Reads the records `errors` say the core does not know (another
    /// node's, it may be) and hands those found to the core; returns their
    /// ids, whose inputs are worth sending again. Each id is read at most
    /// [`READS`] times for one call (a view of an ended record no record
    /// names may be dropped before the input comes back).
    pub(crate) async fn learn_named<'a>(
        &self,
        errors: impl IntoIterator<Item = &'a ManagerError>,
        reads: &mut HashMap<ProcessId, u8>,
    ) -> Result<HashSet<ProcessId>, ManagerError> {
        if !self.shared() {
            return Ok(HashSet::new());
        }
        let mut ids: Vec<ProcessId> = errors.into_iter().filter_map(unknown_named).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.retain(|id| {
            let n = reads.entry(*id).or_default();
            *n += 1;
            *n <= READS
        });
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let records = read_elsewhere(&*self.ports.store, &self.node, &ids).await?;
        let found: HashSet<ProcessId> = records
            .iter()
            .map(ProcessRecord::id)
            .filter(|id| ids.contains(id))
            .collect();
        if !records.is_empty() {
            let gone = Vec::new();
            self.call_once(Input::Foreign { records, gone }).await?;
        }
        Ok(found)
    }

    /// Passes other nodes' events on to the loop, which reads again the
    /// records the core watches; every watched record after a lag.
    pub(crate) fn listen_elsewhere(&self) {
        let mut events = self.ports.events.subscribe();
        let (tx, node) = (self.tx.clone(), self.node.clone());
        // What changed before this subscription is read once.
        let _ = tx.send(ToLoop::ReadWatched);
        tokio::spawn(async move {
            loop {
                let msg = match events.recv().await {
                    Ok(e) if e.node != node => {
                        // A record of another node left its slot: a
                        // cluster-wide slot may be free.
                        if e.kind.frees_slot() && tx.send(ToLoop::SlotsFreed).is_err() {
                            return;
                        }
                        ToLoop::ForeignChanged {
                            id: e.id,
                            version: e.version,
                        }
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => ToLoop::ReadWatched,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(msg).is_err() {
                    return;
                }
            }
        });
    }
}

/// How long a read of watched records waits before it is tried again.
const READ_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads `ids` (other nodes' records the core watches) beside the loop and
/// hands them back to it; a store that does not answer is asked again
/// until it does (or the loop is gone), so no end of a dependency is missed.
pub(crate) fn read_again(
    store: std::sync::Arc<dyn ProcessStore>,
    node: bpm_domain::NodeId,
    ids: Vec<ProcessId>,
    tx: mpsc::UnboundedSender<ToLoop>,
) {
    if ids.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let mut warned = false;
        while !tx.is_closed() {
            match read_elsewhere(&*store, &node, &ids).await {
                Ok(records) => {
                    let gone = missing(&ids, &records);
                    if !records.is_empty() || !gone.is_empty() {
                        let _ = tx.send(ToLoop::ForeignRead { records, gone });
                    }
                    return;
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(error = %e, "cannot read other nodes' records that records here wait for; will retry");
                        warned = true;
                    }
                    tokio::time::sleep(READ_RETRY).await;
                }
            }
        }
    });
}

/// Of `ids`, those not among `read`: the store no longer holds them.
pub(crate) fn missing(ids: &[ProcessId], read: &[ProcessRecord]) -> Vec<ProcessId> {
    ids.iter()
        .copied()
        .filter(|id| !read.iter().any(|r| r.id() == *id))
        .collect()
}
