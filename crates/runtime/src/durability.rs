//! Durability: the store's writes and syncs, and the work that must wait
//! until what came before it is on disk.
//!
//! The store's syncs run beside the loop, one at a time. What must follow a
//! durable write (events, answers, telling the spawner an exit is recorded)
//! waits, in order, for the sync that covers it; spawns, signals and the next
//! inputs do not. Under a stream of changes a sync starts at least
//! `SYNC_SPACING` after the one before, so that each covers several, unless
//! a caller's answer waits for it.

use std::time::Duration;

use bpm_domain::{Event, EventKind, Input, ProcessId};
use bpm_ports::{StoreError, StoreWrite, StreamSelect};

use crate::ToLoop;
use crate::driver::Driver;
use crate::syncs::{AfterSync, STORE_RETRY};

/// How many lines of output an exit event carries.
const EXIT_TAIL_LINES: usize = 20;
/// At most this many bytes of those lines: a process that wrote no newline
/// has one line as long as all its kept output.
const EXIT_TAIL_BYTES: usize = 16 * 1024;
/// The least time from the start of one sync of the store to the start of
/// the next: under a stream of changes, each sync then covers several. A
/// sync after a quiet spell starts at once.
const SYNC_SPACING: Duration = Duration::from_millis(3);

impl Driver {
    /// Whether `id` was created in the core but the store never took it.
    pub(crate) fn creation_unstored(&self, id: ProcessId) -> bool {
        matches!(self.unsaved.get(&id), Some((None, _)))
    }

    /// Of the records just submitted, those the store did not take (or
    /// that the core forgot already for that reason, at their spawn): the
    /// core forgets them, so their callers are told nothing was started,
    /// never acknowledged from memory alone.
    pub(crate) async fn drop_unstored(
        &mut self,
        submitted: impl IntoIterator<Item = ProcessId>,
    ) -> Vec<ProcessId> {
        let mut dropped = Vec::new();
        for id in submitted {
            if self.creation_unstored(id)
                && let Err(e) = self.step(Input::Unstored { id }).await
            {
                tracing::debug!(%id, error = %e, "an unstored record was already gone");
            }
            if self.core.get(id).is_none() {
                tracing::warn!(%id, "the store did not take a new record; it was not started");
                dropped.push(id);
            }
        }
        dropped
    }

    /// Does `work` once every write made so far is on disk, after the work
    /// that waits already.
    pub(crate) async fn after_sync(&mut self, work: AfterSync) {
        let syncs = &mut self.syncs;
        let needs = syncs.started + u64::from(syncs.owed);
        let waits = !syncs.waiting.is_empty() || needs > syncs.ended();
        if waits && matches!(work, AfterSync::Send(..)) {
            self.hurry_sync();
        }
        self.kick_sync();
        if waits {
            self.syncs.waiting.push_back((needs, work));
        } else {
            self.perform(work).await;
        }
    }

    /// A caller waits for the next sync: it is not spaced from the last one.
    pub(crate) fn hurry_sync(&mut self) {
        self.syncs.urgent = true;
        if self.syncs.running {
            self.syncs.hurry.notify_one();
        }
    }

    /// Starts a sync of the store if durable writes wait for one and none runs.
    pub(crate) fn kick_sync(&mut self) {
        let syncs = &mut self.syncs;
        if !syncs.owed || syncs.running {
            return;
        }
        syncs.owed = false;
        syncs.running = true;
        syncs.started += 1;
        let now = tokio::time::Instant::now();
        let urgent = std::mem::take(&mut syncs.urgent);
        let at = match syncs.last_start {
            Some(last) if !urgent => (last + SYNC_SPACING).max(now),
            _ => now,
        };
        syncs.last_start = Some(at);
        let (store, tx, hurry) = (
            self.ports.store.clone(),
            self.tx.clone(),
            syncs.hurry.clone(),
        );
        tokio::spawn(async move {
            if at > tokio::time::Instant::now() {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = hurry.notified() => {}
                }
            }
            let result = store.sync().await;
            let _ = tx.send(ToLoop::Synced(result));
        });
    }

    /// The sync under way ended: does the work that waited for it.
    pub(crate) async fn synced(&mut self, result: Result<(), StoreError>) {
        if let Err(e) = result {
            tracing::error!(error = %e, "records were written but not flushed: they may not survive a power cut");
        }
        self.syncs.running = false;
        self.kick_sync();
        while let Some((needs, _)) = self.syncs.waiting.front()
            && *needs <= self.syncs.ended()
        {
            if let Some((_, work)) = self.syncs.waiting.pop_front() {
                self.perform(work).await;
            }
        }
    }

    pub(crate) async fn perform(&mut self, work: AfterSync) {
        match work {
            AfterSync::Announce(events) => self.announce(events).await,
            AfterSync::Send(changed, answer) => answer.send(changed),
            AfterSync::ExitRecorded(id) => self.ports.spawner.exit_recorded(id),
        }
    }

    pub(crate) async fn announce(&self, events: Vec<Event>) {
        for mut event in events {
            if event.kind == EventKind::Exited {
                tracing::trace!(target: "bpm::hop", id = %event.id, "exit stored");
            }
            let ends = event.kind.ends_record().then_some(event.id);
            if event.kind == EventKind::Exited
                && let Ok(tail) = self
                    .ports
                    .output
                    .tail(
                        event.id,
                        StreamSelect::Both,
                        EXIT_TAIL_LINES,
                        EXIT_TAIL_BYTES,
                    )
                    .await
            {
                event.output_tail = Some(tail.text());
            }
            if let Err(e) = self.ports.events.publish(event).await {
                tracing::warn!(error = %e, "could not publish an event");
            }
            if let Some(id) = ends {
                tracing::trace!(target: "bpm::hop", %id, "end announced");
            }
        }
    }

    /// Writes `writes` as one batch; records the store refused for now wait
    /// in `unsaved` (with the version the store holds) to be written again.
    pub(crate) async fn write_all(&mut self, writes: &mut Vec<StoreWrite>) {
        if writes.is_empty() {
            return;
        }
        let batch = std::mem::take(writes);
        // The disk's flush is waited for beside the loop (`after_sync`).
        self.syncs.owed |= batch
            .iter()
            .any(|w| w.durable || w.expected_version.is_none());
        let results = self.ports.store.write_batch_unsynced(&batch).await;
        for (w, result) in batch.into_iter().zip(results) {
            let id = w.record.id();
            match result {
                Ok(()) => {}
                // A later write of a record whose earlier write waits fails too: it waits with it.
                Err(_) if self.unsaved.contains_key(&id) => {
                    if let Some(waiting) = self.unsaved.get_mut(&id) {
                        waiting.1 = w.record;
                    }
                }
                // Its node's lease is not held: the lease's task says so
                // once, and the record waits until the node is held again.
                Err(StoreError::Fenced { .. } | StoreError::Lapsed { .. }) => {
                    tracing::debug!(%id, "not written while the node is not held; will retry");
                    self.unsaved.insert(id, (w.expected_version, w.record));
                }
                Err(e @ (StoreError::Unavailable(_) | StoreError::Refused(_))) => {
                    tracing::error!(%id, error = %e, "store refused a record; will retry");
                    self.unsaved.insert(id, (w.expected_version, w.record));
                }
                // Another version is stored (or none): the core reconciles.
                Err(e) => {
                    tracing::warn!(%id, error = %e, "the store holds another version; reconciling");
                    let _ = self.tx.send(ToLoop::Conflicted(id));
                }
            }
        }
    }

    /// Tells the core which version of `id` the store holds, after it
    /// refused a write; asks again later if the store does not answer.
    pub(crate) async fn reconcile(&mut self, id: ProcessId) {
        let stored = match self.ports.store.get(id).await {
            Ok(record) => Some(record.version()),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => {
                tracing::warn!(%id, error = %e, "cannot read the stored version; asking again");
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(STORE_RETRY).await;
                    let _ = tx.send(ToLoop::Conflicted(id));
                });
                return;
            }
        };
        if let Err(e) = self.step(Input::StoreConflict { id, stored }).await {
            tracing::debug!(%id, error = %e, "conflict of a record no longer held");
        }
    }

    pub(crate) async fn flush(&mut self) {
        let mut writes = std::mem::take(&mut self.unsaved)
            .into_values()
            .map(|(expected_version, record)| StoreWrite {
                record,
                expected_version,
                durable: true,
            })
            .collect();
        self.write_all(&mut writes).await;
        self.kick_sync();
    }
}
