//! Carrying out the core's effects through the ports.

use std::collections::VecDeque;

use bpm_domain::{Effect, Event, Input, ProcessId, ProcessRecord};
use bpm_ports::{ManagerError, SpawnRequest, StoreWrite};
use tokio::sync::mpsc;

use crate::ToLoop;
use crate::driver::Driver;
use crate::syncs::AfterSync;

/// The first wait before a cluster-wide slot ask the store did not answer
/// is made again; it doubles up to [`SLOT_ASK_RETRY_MAX`].
const SLOT_ASK_RETRY: std::time::Duration = std::time::Duration::from_millis(100);
const SLOT_ASK_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Brings a spawn's result back to the loop; if the spawn panics instead,
/// it reports a failure, so no record stays `starting` and no caller waits
/// for ever.
struct SpawnReport {
    id: ProcessId,
    tx: Option<mpsc::UnboundedSender<ToLoop>>,
}

impl SpawnReport {
    fn send(&mut self, input: Input) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(ToLoop::SpawnEnded(Box::new(input)));
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

/// What carrying out one step's effects gathers on the way.
#[derive(Default)]
struct Carried {
    /// The records the step changed, newest version of each, in order.
    changed: Vec<ProcessRecord>,
    /// Consecutive writes, which go to the store together.
    writes: Vec<StoreWrite>,
    /// Events, which wait until the step's durable writes are on disk.
    announce: Vec<Event>,
    /// Exits recorded by the step's writes.
    exits: Vec<ProcessId>,
}

impl Driver {
    /// Carries out a step's effects, in order, and those of the inputs they
    /// lead to (a spawn with nothing to spawn, a failed re-attach); returns
    /// the records they changed. Writes go ahead of everything after them;
    /// spawns and signals do not wait for the disk, events do.
    pub(crate) async fn execute(
        &mut self,
        effects: Vec<Effect>,
    ) -> Result<Vec<ProcessRecord>, ManagerError> {
        let mut step = Carried::default();
        let mut queue = VecDeque::from([effects]);
        while let Some(batch) = queue.pop_front() {
            for effect in batch {
                if !matches!(effect, Effect::Persist { .. }) {
                    self.write_all(&mut step.writes).await;
                }
                let more = self.carry_out(effect, &mut step).await;
                queue.extend(more);
            }
            self.write_all(&mut step.writes).await;
        }
        // Nothing is announced of a record the store never took.
        let dropped = std::mem::take(&mut self.dropped);
        step.announce
            .retain(|e| !dropped.contains(&e.id) && !self.creation_unstored(e.id));
        if step.announce.is_empty() {
            self.kick_sync();
        } else {
            self.after_sync(AfterSync::Announce(step.announce)).await;
        }
        // Once the exits' writes are on disk (or, refused, retried from `unsaved`).
        for id in step.exits {
            self.after_sync(AfterSync::ExitRecorded(id)).await;
        }
        Ok(step.changed)
    }

    /// Carries out one effect; returns the effects of an input it led to.
    async fn carry_out(&mut self, effect: Effect, step: &mut Carried) -> Option<Vec<Effect>> {
        match effect {
            Effect::Persist {
                record,
                expected_version,
                durable,
            } => self.persist(record, expected_version, durable, step),
            Effect::Delete { id } => self.delete(id).await,
            Effect::Spawn { record } => return self.spawn(&record),
            Effect::Reattach { id, pid } => return self.reattach(id, pid).await,
            Effect::Signal { id, pid, signal } => {
                if let Err(e) = self.ports.spawner.signal(id, pid, signal).await {
                    tracing::warn!(%id, pid, ?signal, error = %e, "could not signal");
                }
            }
            Effect::StopByCommand {
                id,
                pid,
                command,
                within,
                signal,
            } => self.stop_by_command(id, pid, command, within.as_duration(), signal),
            Effect::ArmTimer { timer, at } => self.timers.arm(timer, at),
            Effect::CancelTimer { timer } => self.timers.cancel(timer),
            Effect::Publish(event) => step.announce.push(*event),
            Effect::ExitRecorded { id } => step.exits.push(id),
            Effect::TakeClusterSlot { id, group, limit } => self.take_slot(id, group, limit),
            Effect::WatchOwner { process } => self.watch_owner(process),
            Effect::WatchFiles { id, watch } => self.watch_files(id, watch),
            Effect::UnwatchFiles { id } => {
                if let Some(task) = self.watches.remove(&id) {
                    task.abort();
                }
            }
        }
        None
    }

    /// Watches a record's files beside the loop (set up off it: watching a
    /// large tree walks it); each change comes back as an input. A watch
    /// that cannot be set up is said in the log, and the process runs on
    /// unwatched.
    fn watch_files(&mut self, id: ProcessId, watch: bpm_domain::FileWatch) {
        let tx = self.tx.clone();
        let host = std::sync::Arc::clone(&self.ports.host);
        let task = tokio::spawn(async move {
            let set_up = tokio::task::spawn_blocking(move || host.watch_files(&watch)).await;
            let mut changes = match set_up {
                Ok(Ok(changes)) => changes,
                Ok(Err(e)) => {
                    tracing::warn!(%id, error = %e, "cannot watch the files of a process; it runs on without restarts on change");
                    // Said on the record too: `show` names it.
                    let _ = tx.send(ToLoop::WatchFailed(id, e.to_string()));
                    return;
                }
                Err(_) => return,
            };
            while changes.recv().await.is_some() {
                if tx.send(ToLoop::FilesChanged(id)).is_err() {
                    return;
                }
            }
        });
        if let Some(earlier) = self.watches.insert(id, task.abort_handle()) {
            earlier.abort();
        }
    }

    /// Watches an owner beside the loop; its end comes back as an input.
    fn watch_owner(&self, process: bpm_domain::ProcessRef) {
        let tx = self.tx.clone();
        let host = std::sync::Arc::clone(&self.ports.host);
        tokio::spawn(async move {
            tokio::select! {
                () = host.until_gone(process) => {
                    let _ = tx.send(ToLoop::OwnerGone(process));
                }
                () = tx.closed() => {}
            }
        });
    }

    /// Asks for one of `group`'s cluster-wide slots beside the loop; the
    /// answer comes back as an input. A store that does not answer refuses
    /// it, and the core asks again a second later.
    fn take_slot(&self, id: ProcessId, group: bpm_domain::GroupName, limit: usize) {
        let tx = self.tx.clone();
        let Some(slots) = self.slots.get().cloned() else {
            // No store shared with other nodes: the core kept the limit as
            // this node's own.
            let _ = tx.send(ToLoop::Slot { id, granted: true });
            return;
        };
        tokio::spawn(async move {
            // An ask that got no answer may have been granted all the same,
            // and a grant holds while its record waits at that version: the
            // core gets this record's answer, never a refusal it did not
            // get, or a record asking ahead of it could be refused for ever
            // by this one's grant. The same ask again is granted again.
            let mut wait = SLOT_ASK_RETRY;
            let granted = loop {
                match slots.take(id, &group, limit).await {
                    Ok(granted) => break granted,
                    Err(e) => {
                        tracing::warn!(%id, %group, error = %e, "cannot take a cluster-wide slot; asking again soon");
                    }
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(SLOT_ASK_RETRY_MAX);
            };
            let _ = tx.send(ToLoop::Slot { id, granted });
        });
    }

    fn persist(
        &mut self,
        record: ProcessRecord,
        expected_version: Option<u64>,
        durable: bool,
        step: &mut Carried,
    ) {
        let id = record.id();
        // A record still waiting for the store keeps the version the store holds.
        let (expected, durable) = match self.unsaved.remove(&id) {
            Some((v, _)) => (v, true),
            None => (expected_version, durable),
        };
        step.changed.retain(|r| r.id() != id);
        step.changed.push(record.clone());
        step.writes.push(StoreWrite {
            record,
            expected_version: expected,
            durable,
        });
    }

    async fn delete(&mut self, id: ProcessId) {
        // A record the store never took has nothing there to delete.
        if self.creation_unstored(id) {
            self.unsaved.remove(&id);
            self.dropped.insert(id);
            return;
        }
        // Earlier writes need no flush first: their own sync covers them.
        if let Err(e) = self.ports.store.delete(id).await {
            tracing::warn!(%id, error = %e, "could not delete a record");
        }
        if let Err(e) = self.ports.output.remove(id).await {
            tracing::warn!(%id, error = %e, "could not delete output");
        }
    }

    /// Starts the spawn beside the loop; its answer comes back as a message.
    /// Runs a record's stop command beside the driver's work, then sends
    /// the signal (whether the command succeeded or not: it is the stop's
    /// next step, and KILL follows at the grace the core armed).
    fn stop_by_command(
        &self,
        id: ProcessId,
        pid: u32,
        command: String,
        within: std::time::Duration,
        signal: bpm_domain::Signal,
    ) {
        let request = self.core.get(id).and_then(SpawnRequest::for_record);
        let spawner = self.ports.spawner.clone();
        tokio::spawn(async move {
            if let Some(request) = request
                && let Err(e) = spawner.run_stop_command(request, command, within).await
            {
                tracing::info!(%id, error = %e, "the stop command did not succeed");
            }
            if let Err(e) = spawner.signal(id, pid, signal).await {
                tracing::warn!(%id, pid, ?signal, error = %e, "could not signal");
            }
        });
    }

    fn spawn(&mut self, record: &ProcessRecord) -> Option<Vec<Effect>> {
        let id = record.id();
        // Nothing is started that the store does not know.
        if self.creation_unstored(id) {
            return self.follow(Input::Unstored { id });
        }
        let Some(request) = SpawnRequest::for_record(record) else {
            let error = "nothing to spawn".into();
            return self.follow(Input::SpawnFailed { id, error });
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
                Err(bpm_ports::SpawnError::Unknown(reason)) => Input::SpawnLost { id, reason },
                Err(e) => Input::SpawnFailed {
                    id,
                    error: e.to_string(),
                },
            };
            report.send(input);
        });
        None
    }

    async fn reattach(&mut self, id: ProcessId, pid: u32) -> Option<Vec<Effect>> {
        let held = self
            .ports
            .spawner
            .reattach(id, pid)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(%id, pid, error = %e, "could not re-attach");
                false
            });
        if held {
            self.watch_again(id).await;
            return None;
        }
        self.follow(Input::ReattachFailed {
            id,
            pid,
            machine_restarted: self.machine_restarted,
            again: self.ports.ids.next_id(),
        })
    }

    /// A process taken back before it was ready (or with a health check
    /// or an idle period): its checks armed again, as its start armed
    /// them, so that its readiness is not lost with the keeper that
    /// watched it.
    async fn watch_again(&self, id: ProcessId) {
        let Some(record) = self.core.get(id) else {
            return;
        };
        let spec = record.spec();
        let unready = record.lifecycle().ready_at().is_none()
            && !matches!(
                spec.readiness.check,
                bpm_domain::ReadinessCheck::None | bpm_domain::ReadinessCheck::Running
            );
        if !unready && spec.health.is_none() && spec.idle_after.is_none() {
            return;
        }
        let Some(mut request) = SpawnRequest::for_record(record) else {
            return;
        };
        if !unready {
            // Ready already: only its health and idleness are watched.
            request.readiness = bpm_domain::ReadinessCheck::None;
        }
        if let Err(e) = self.ports.spawner.watch_again(request).await {
            tracing::warn!(%id, error = %e, "cannot watch the readiness of a process taken back");
        }
    }

    /// The effects of an input an effect led to.
    fn follow(&mut self, input: Input) -> Option<Vec<Effect>> {
        match self.core.handle(input, self.ports.clock.now()) {
            Ok(more) => Some(more),
            Err(e) => {
                tracing::warn!(error = %e, "the core refused what an effect led to");
                None
            }
        }
    }
}
