//! The loop: it takes one message at a time (a caller's input, a timer, a
//! spawn's result, a store's sync, a notice from the spawner), hands it to the
//! core, and answers the caller once what it changed is durable.

use std::collections::{HashMap, HashSet, VecDeque};

use bpm_domain::{Effect, Input, ProcessId, ProcessRecord, Supervisor};
use bpm_ports::{ManagerError, ProcessNotice};
use tokio::sync::{mpsc, oneshot};

use crate::syncs::{AfterSync, STORE_RETRY, Syncs, Waiter, unstored};
use crate::timers::{Timers, Wake};
use crate::{Accepted, Ports, ToLoop};

/// What the loop receives: messages from callers, timers and tasks, and the spawner's notices.
pub(crate) struct Inbox {
    pub(crate) msgs: mpsc::UnboundedReceiver<ToLoop>,
    pub(crate) notices: mpsc::UnboundedReceiver<ProcessNotice>,
}

/// The loop's state: the core, the ports, and the armed timers.
pub(crate) struct Driver {
    pub(crate) core: Supervisor,
    pub(crate) ports: Ports,
    pub(crate) tx: mpsc::UnboundedSender<ToLoop>,
    pub(crate) timers: Timers,
    /// Records the store refused for now, with the version it holds: written
    /// again (newest first) until it takes them, so a flaky store delays
    /// persistence without stopping supervision.
    pub(crate) unsaved: HashMap<ProcessId, (Option<u64>, ProcessRecord)>,
    /// Records the store never took that the core forgot in this step:
    /// nothing of them is announced.
    pub(crate) dropped: HashSet<ProcessId>,
    /// Messages that came while the loop waited for the spawner's reports;
    /// handled before any newer one.
    pub(crate) deferred: VecDeque<ToLoop>,
    /// Answers waiting for spawns under way.
    pub(crate) parked: Vec<Parked>,
    pub(crate) syncs: Syncs,
    /// Where cluster-wide slots are taken ([`crate::EngineConfig::slots`]).
    pub(crate) slots: crate::SlotsCell,
    /// File watches under way ([`bpm_domain::Effect::WatchFiles`]), by record.
    pub(crate) watches: HashMap<ProcessId, tokio::task::AbortHandle>,
    /// The machine restarted since the store's records were last written
    /// ([`crate::EngineConfig::machine_restarted`]).
    pub(crate) machine_restarted: bool,
}

/// A caller's answer, held until the spawns of the records it submitted have ended.
pub(crate) struct Parked {
    waiting: HashSet<ProcessId>,
    changed: Vec<ProcessRecord>,
    answer: Waiter,
}

/// Keeps the newest version of each record in `changed`, in order of last change.
pub(crate) fn merge_changed(changed: &mut Vec<ProcessRecord>, newer: Vec<ProcessRecord>) {
    for r in newer {
        changed.retain(|c| c.id() != r.id());
        changed.push(r);
    }
}

impl Driver {
    pub(crate) fn new(core: Supervisor, ports: Ports, tx: mpsc::UnboundedSender<ToLoop>) -> Driver {
        Driver {
            core,
            ports,
            tx,
            timers: Timers::default(),
            unsaved: HashMap::new(),
            dropped: HashSet::new(),
            deferred: VecDeque::new(),
            parked: Vec::new(),
            syncs: Syncs::default(),
            slots: crate::SlotsCell::default(),
            watches: HashMap::new(),
            machine_restarted: false,
        }
    }

    pub(crate) async fn run(mut self, mut inbox: Inbox) {
        let mut notices_open = true;
        let mut finished = None;
        let mut wake = Wake::default();
        loop {
            if finished.is_none() {
                self.hand_over().await;
            }
            if let Some(msg) = self.deferred.pop_front() {
                if !self.on_msg(msg, &mut finished, &mut inbox).await {
                    break;
                }
                continue;
            }
            wake.set(self.timers.next(), &self.ports.clock);
            tokio::select! {
                () = wake.until() => self.fire_due().await,
                msg = inbox.msgs.recv() => match msg {
                    Some(msg) => {
                        if !self.on_msg(msg, &mut finished, &mut inbox).await {
                            break;
                        }
                    }
                    None => break,
                },
                notice = inbox.notices.recv(), if notices_open => match notice {
                    Some(notice) => self.notice(notice).await,
                    None => notices_open = false,
                },
                () = tokio::time::sleep(STORE_RETRY), if !self.unsaved.is_empty() => self.flush().await,
            }
        }
        // Release the ports (and the store's lock) before saying the loop is gone.
        drop(self);
        if let Some(done) = finished {
            let _ = done.send(());
        }
    }

    /// Handles one message; false when the loop should end (after a
    /// shutdown, once no spawn is under way).
    pub(crate) async fn on_msg(
        &mut self,
        msg: ToLoop,
        finished: &mut Option<oneshot::Sender<()>>,
        inbox: &mut Inbox,
    ) -> bool {
        let cancels = match &msg {
            ToLoop::Input(input, _) => input.may_cancel(),
            ToLoop::Batch(inputs, _) => inputs.iter().any(Input::may_cancel),
            ToLoop::Shutdown(_) | ToLoop::Rejoin(..) => true,
            _ => false,
        };
        if cancels {
            self.withdraw_handed(inbox).await;
        }
        match msg {
            ToLoop::Input(input, reply) => self.on_input(*input, reply).await,
            ToLoop::Batch(inputs, reply) => self.on_batch(inputs, reply).await,
            ToLoop::SpawnEnded(input) => self.spawn_ended(*input).await,
            ToLoop::Conflicted(id) => self.reconcile(id).await,
            ToLoop::Synced(result) => self.synced(result).await,
            ToLoop::Rejoin(rejoin, reply) => self.on_rejoin(rejoin, reply).await,
            ToLoop::ForeignChanged { id, version } => {
                if self.core.watches(id, version) {
                    self.read_watched(vec![id]);
                }
            }
            ToLoop::ReadWatched => self.read_watched(self.core.watched()),
            ToLoop::QueueRoom(reply) => {
                let _ = reply.send(self.core.room());
            }
            ToLoop::Slot { id, granted } => {
                if let Err(e) = self.step(Input::ClusterSlot { id, granted }).await {
                    tracing::debug!(%id, error = %e, "a cluster-wide slot's answer came for nothing");
                }
            }
            ToLoop::SlotsFreed => {
                if !self.core.limits().cluster_groups.is_empty()
                    && let Err(e) = self.step(Input::ClusterSlotsFreed).await
                {
                    tracing::debug!(error = %e, "could not ask for cluster-wide slots again");
                }
            }
            ToLoop::FilesChanged(id) => {
                let new_ids = (0..self.core.ids_for_change(id))
                    .map(|_| self.ports.ids.next_id())
                    .collect();
                if let Err(e) = self.step(Input::FilesChanged { id, new_ids }).await {
                    tracing::debug!(%id, error = %e, "a file change came for nothing");
                }
            }
            ToLoop::WatchFailed(id, reason) => {
                if let Err(e) = self.step(Input::WatchFailed { id, reason }).await {
                    tracing::debug!(%id, error = %e, "a failed watch of nothing");
                }
            }
            ToLoop::OwnerGone(process) => {
                if let Err(e) = self.step(Input::OwnerGone { process }).await {
                    tracing::debug!(error = %e, "an owner's end came for nothing");
                }
            }
            ToLoop::ForeignRead { records, gone } => {
                if let Err(e) = self.step(Input::Foreign { records, gone }).await {
                    tracing::warn!(error = %e, "other nodes' records refused");
                }
            }
            ToLoop::Shutdown(done) => {
                // Spawns under way end first, so their records are not left
                // starting, and the work waiting for a sync is done.
                *finished = Some(done);
                self.kick_sync();
            }
        }
        !(finished.is_some() && self.core.spawns_under_way() == 0 && self.syncs.idle())
    }

    /// One input from a caller, answered once its effects are carried out
    /// (a submitted record's answer waits for its spawn).
    async fn on_input(&mut self, input: Input, reply: crate::RecordsTx) {
        // A submitted record's answer waits for its spawn.
        let submitted = match &input {
            Input::Submit { id, .. } | Input::SubmitOnPorts { id, .. } => Some(*id),
            Input::Restart { new_id, .. } => Some(*new_id),
            _ => None,
        };
        match self.step(input).await {
            Ok(changed) => {
                if self.drop_unstored(submitted).await.is_empty() {
                    self.answer(submitted, changed, Waiter::One(reply)).await;
                } else {
                    let _ = reply.send(Err(unstored()));
                }
            }
            Err(e) if e.reused().is_some() => {
                self.after_sync(AfterSync::Send(Vec::new(), Waiter::Refused(e, reply)))
                    .await;
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// A batch of inputs (`start_many`), answered together.
    async fn on_batch(&mut self, inputs: Vec<Input>, reply: crate::BatchTx) {
        let each: Vec<Option<ProcessId>> = inputs
            .iter()
            .map(|i| match i {
                Input::Submit { id, .. } | Input::SubmitOnPorts { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        match self.step_many(inputs).await {
            Ok((mut accepted, mut changed)) => {
                // Only the records the core took: a spec it refused
                // keeps its own error.
                let taken = each
                    .iter()
                    .zip(&accepted)
                    .filter_map(|(id, result)| id.filter(|_| result.is_ok()));
                let dropped = self.drop_unstored(taken.collect::<Vec<_>>()).await;
                for (result, id) in accepted.iter_mut().zip(&each) {
                    if id.is_some_and(|id| dropped.contains(&id)) {
                        *result = Err(unstored());
                    }
                }
                changed.retain(|r| !dropped.contains(&r.id()));
                let submitted: Vec<_> = each
                    .into_iter()
                    .flatten()
                    .filter(|id| !dropped.contains(id))
                    .collect();
                self.answer(submitted, changed, Waiter::Batch(accepted, reply))
                    .await;
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// This node holds its lease again: its records are reconciled, the
    /// stand-down ended, and other nodes' records read again.
    async fn on_rejoin(
        &mut self,
        rejoin: crate::Rejoin,
        reply: oneshot::Sender<Result<(), ManagerError>>,
    ) {
        (rejoin.open)();
        let stored = rejoin.stored;
        let rejoined = self.step(Input::Rejoined { stored }).await.map(|_| ());
        // Held again: what the stand-down held back may start.
        if rejoined.is_ok()
            && let Err(e) = self.step(Input::Lease { held: true }).await
        {
            tracing::debug!(error = %e, "could not end the stand-down");
        }
        let _ = reply.send(rejoined);
        // Other nodes' records changed unseen while this node was cut off.
        self.read_watched(self.core.watched());
    }

    /// Reads other nodes' records `ids` beside the loop, for the core.
    fn read_watched(&self, ids: Vec<ProcessId>) {
        let store = std::sync::Arc::clone(&self.ports.store);
        let node = self.core.node().clone();
        crate::foreign::read_again(store, node, ids, self.tx.clone());
    }

    /// Fires every timer that is due.
    async fn fire_due(&mut self) {
        for timer in self.timers.due(self.ports.clock.now()) {
            let _ = self.step(Input::TimerFired(timer)).await;
        }
    }

    /// Hands a notice from the spawner to the core, as it comes: the core
    /// takes notices in any order (an exit can overtake its spawn's answer).
    pub(crate) async fn notice(&mut self, notice: ProcessNotice) {
        let input = match notice {
            ProcessNotice::Withdrawn { ids } => {
                // Back in the queue, they start on the next free slot.
                self.core.withdraw(&ids);
                return;
            }
            ProcessNotice::Exited { id, status, limit } => Input::Exited { id, status, limit },
            ProcessNotice::HandedOver {
                id,
                status,
                next,
                started,
            } => Input::HandedOver {
                id,
                status,
                next,
                started,
            },
            ProcessNotice::Ready { id } => Input::Ready { id },
            ProcessNotice::Idle { id } => Input::Idle { id },
            ProcessNotice::Health {
                id,
                healthy,
                detail,
            } => Input::Health {
                id,
                healthy,
                detail,
            },
            ProcessNotice::LeaderExited {
                id,
                status,
                running,
            } => Input::LeaderExited {
                id,
                status,
                running,
            },
            ProcessNotice::Lost { id, reason } => Input::Lost { id, reason },
            ProcessNotice::Adopted { id, pid } => Input::Adopted { id, pid },
        };
        if let Err(e) = self.step(input).await {
            tracing::debug!(error = %e, "process notice ignored");
        }
    }

    /// Handles a spawn's answer, then answers the callers that waited for it.
    pub(crate) async fn spawn_ended(&mut self, input: Input) {
        let (Input::Spawned { id, .. }
        | Input::SpawnFailed { id, .. }
        | Input::SpawnLost { id, .. }) = input
        else {
            return;
        };
        let changed = match self.core.handle(input, self.ports.clock.now()) {
            Ok(effects) => self.execute(effects).await.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(%id, error = %e, "spawn result refused");
                Vec::new()
            }
        };
        let mut i = 0;
        while i < self.parked.len() {
            let parked = &mut self.parked[i];
            if parked.waiting.remove(&id) {
                merge_changed(&mut parked.changed, changed.clone());
            }
            if parked.waiting.is_empty() {
                let done = self.parked.swap_remove(i);
                self.after_sync(AfterSync::Send(done.changed, done.answer))
                    .await;
            } else {
                i += 1;
            }
        }
    }

    /// Answers a caller once what was written is on disk and the spawns of
    /// `submitted` have ended.
    pub(crate) async fn answer(
        &mut self,
        submitted: impl IntoIterator<Item = ProcessId>,
        changed: Vec<ProcessRecord>,
        answer: Waiter,
    ) {
        let waiting: HashSet<ProcessId> = submitted
            .into_iter()
            .filter(|id| self.core.spawn_under_way(*id))
            .collect();
        if waiting.is_empty() {
            self.after_sync(AfterSync::Send(changed, answer)).await;
        } else {
            // The sync it will wait for runs while the spawns do.
            self.hurry_sync();
            self.parked.push(Parked {
                waiting,
                changed,
                answer,
            });
        }
    }

    /// Handles one input and carries out everything that follows from it;
    /// returns the records it changed.
    pub(crate) async fn step(&mut self, input: Input) -> Result<Vec<ProcessRecord>, ManagerError> {
        let effects = self.core.handle(input, self.ports.clock.now())?;
        self.execute(effects).await
    }

    /// Handles several inputs as one step: each is decided in turn, then
    /// their writes go to the store in two batches, then the rest of their
    /// effects are carried out in order. The first batch holds the records
    /// the step starts, whose spawns follow it at once; the second, the
    /// records left waiting, so a large batch does not hold up the first
    /// processes while it is written. The records handed to the spawner to
    /// start on exits are written in the first batch and handed over before
    /// the second.
    pub(crate) async fn step_many(&mut self, inputs: Vec<Input>) -> Result<Accepted, ManagerError> {
        let now = self.ports.clock.now();
        let mut accepted = Vec::with_capacity(inputs.len());
        let (mut writes, mut rest) = (Vec::new(), Vec::new());
        for input in inputs {
            match self.core.handle(input, now) {
                Ok(effects) => {
                    accepted.push(Ok(()));
                    for e in effects {
                        if matches!(e, Effect::Persist { .. }) {
                            writes.push(e);
                        } else {
                            rest.push(e);
                        }
                    }
                }
                Err(e) => accepted.push(Err(e.into())),
            }
        }
        // The records to start next on exits go with the first batch too, so
        // that the spawner can go on with them while the rest is written.
        let handed = self.next_handed();
        let first: HashSet<ProcessId> = rest
            .iter()
            .filter_map(|e| match e {
                Effect::Spawn { record } => Some(record.id()),
                _ => None,
            })
            .chain(handed.iter().copied())
            .collect();
        let (mut effects, later): (Vec<_>, Vec<_>) = writes.into_iter().partition(
            |e| matches!(e, Effect::Persist { record, .. } if first.contains(&record.id())),
        );
        let (spawns, others): (Vec<_>, Vec<_>) = rest
            .into_iter()
            .partition(|e| matches!(e, Effect::Spawn { .. }));
        effects.extend(spawns);
        let mut changed = self.execute(effects).await?;
        self.send_handed(handed).await;
        if !later.is_empty() {
            // Let the spawns just started send their requests before the
            // loop writes the records left waiting, which may take a while.
            tokio::task::yield_now().await;
        }
        let mut rest = later;
        rest.extend(others);
        merge_changed(&mut changed, self.execute(rest).await?);
        Ok((accepted, changed))
    }
}
