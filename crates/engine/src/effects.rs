//! Carrying out the core's effects through the ports.

use std::collections::VecDeque;

use bpm_domain::{Effect, Event, Input, ProcessId, ProcessRecord};
use bpm_ports::{ManagerError, SpawnRequest, StoreWrite};
use tokio::sync::mpsc;

use crate::Msg;
use crate::driver::Driver;
use crate::syncs::AfterSync;

/// Brings a spawn's result back to the loop; if the spawn panics instead,
/// it reports a failure, so no record stays `starting` and no caller waits
/// for ever.
struct SpawnReport {
    id: ProcessId,
    tx: Option<mpsc::UnboundedSender<Msg>>,
}

impl SpawnReport {
    fn send(&mut self, input: Input) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Msg::SpawnEnded(Box::new(input)));
        }
    }
}

impl Drop for SpawnReport {
    fn drop(&mut self) {
        let id = self.id;
        self.send(Input::SpawnFailed {
            id,
            error: "the spawner failed unexpectedly".into(),
        });
    }
}

impl Driver {
    pub(crate) async fn execute(
        &mut self,
        effects: Vec<Effect>,
    ) -> Result<Vec<ProcessRecord>, ManagerError> {
        let mut changed: Vec<ProcessRecord> = Vec::new();
        let mut queue = VecDeque::from([effects]);
        // Consecutive writes go to the store together, before any other effect.
        let mut writes: Vec<StoreWrite> = Vec::new();
        // Events wait until the step's durable writes are on disk; spawns
        // and signals go ahead while the disk flushes.
        let mut announce: Vec<Event> = Vec::new();
        let mut exits: Vec<ProcessId> = Vec::new();
        while let Some(batch) = queue.pop_front() {
            for effect in batch {
                if !matches!(effect, Effect::Persist { .. }) {
                    self.write_all(&mut writes).await;
                }
                match effect {
                    Effect::Persist {
                        record,
                        expected_version,
                        durable,
                    } => {
                        let id = record.id();
                        // A record still waiting for the store keeps the version the store holds.
                        let (expected, durable) = match self.unsaved.remove(&id) {
                            Some((v, _)) => (v, true),
                            None => (expected_version, durable),
                        };
                        changed.retain(|r| r.id() != id);
                        changed.push((*record).clone());
                        writes.push(StoreWrite {
                            record: *record,
                            expected_version: expected,
                            durable,
                        });
                    }
                    Effect::Delete { id } => {
                        // Earlier writes need no flush first: their own sync covers them.
                        if let Err(e) = self.ports.store.delete(id).await {
                            tracing::warn!(%id, error = %e, "could not delete a record");
                        }
                        if let Err(e) = self.ports.output.remove(id).await {
                            tracing::warn!(%id, error = %e, "could not delete output");
                        }
                    }
                    Effect::Spawn { record } => {
                        let id = record.id();
                        let Some(request) = SpawnRequest::for_record(&record) else {
                            let input = Input::SpawnFailed {
                                id,
                                error: "nothing to spawn".into(),
                            };
                            match self.core.handle(input, self.ports.clock.now()) {
                                Ok(more) => queue.push_back(more),
                                Err(e) => tracing::warn!(%id, error = %e, "spawn result refused"),
                            }
                            continue;
                        };
                        let spawner = self.ports.spawner.clone();
                        let mut report = SpawnReport {
                            id,
                            tx: Some(self.tx.clone()),
                        };
                        tokio::spawn(async move {
                            let input = match spawner.spawn(request).await {
                                Ok(spawned) => Input::Spawned {
                                    id,
                                    pid: spawned.pid,
                                },
                                Err(bpm_ports::SpawnError::Unknown(reason)) => {
                                    Input::SpawnLost { id, reason }
                                }
                                Err(e) => Input::SpawnFailed {
                                    id,
                                    error: e.to_string(),
                                },
                            };
                            report.send(input);
                        });
                    }
                    Effect::Reattach { id, pid } => {
                        let held = match self.ports.spawner.reattach(id, pid).await {
                            Ok(held) => held,
                            Err(e) => {
                                tracing::warn!(%id, pid, error = %e, "could not re-attach");
                                false
                            }
                        };
                        if !held {
                            let input = Input::ReattachFailed { id, pid };
                            match self.core.handle(input, self.ports.clock.now()) {
                                Ok(more) => queue.push_back(more),
                                Err(e) => {
                                    tracing::warn!(%id, error = %e, "re-attach result refused");
                                }
                            }
                        }
                    }
                    Effect::Signal { id, pid, signal } => {
                        if let Err(e) = self.ports.spawner.signal(id, pid, signal).await {
                            tracing::warn!(%id, pid, ?signal, error = %e, "could not signal");
                        }
                    }
                    Effect::ArmTimer { timer, at } => self.timers.arm(timer, at),
                    Effect::CancelTimer { timer } => self.timers.cancel(timer),
                    Effect::Publish(event) => announce.push(*event),
                    Effect::ExitRecorded { id } => exits.push(id),
                }
            }
            self.write_all(&mut writes).await;
        }
        if announce.is_empty() {
            self.kick_sync();
        } else {
            self.after_sync(AfterSync::Announce(announce)).await;
        }
        // Once the exits' writes are on disk (or, refused, retried from `unsaved`).
        for id in exits {
            self.after_sync(AfterSync::ExitRecorded(id)).await;
        }
        Ok(changed)
    }
}
