//! The engine: a small async loop that owns the domain's [`Supervisor`], feeds
//! it inputs (API calls, process notices, timers) and carries out its effects
//! through the ports. It implements [`ProcessManager`].
//!
//! One task owns the core, so inputs are handled one at a time in arrival
//! order; everything slow a caller waits for (wait, stop) happens outside it.
//! A spawn, too, runs beside the loop: the spawner may wait for the child's
//! `exec`, and meanwhile other processes' exits and starts go on. Its result
//! comes back to the loop as an input; notices about a process whose spawn
//! is still under way are held until that result has been handled, and a
//! caller that submitted the process is answered once it has.
//!
//! While every slot is taken, the loop hands the spawner the next records
//! to start ([`Supervisor::hand_over`]): the spawner starts one the moment a
//! process ends and reports both at once, so the next process does not wait
//! for the loop. Before an input that could cancel a record handed over (a
//! stop, a restart, a completion or a failure), the loop takes them back and
//! hears of every start the spawner made from them first.
//!
//! The store's flushes run beside the loop too, one at a time. What must
//! follow a durable write (events, answers, telling the spawner an exit is
//! recorded) waits, in order, for the flush that covers it; spawns, signals
//! and the next inputs do not. Under a stream of changes a flush starts at
//! least `SYNC_SPACING` after the one before, so that each covers several,
//! unless a caller's answer waits for it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bpm_domain::{
    Effect, Event, EventKind, Input, Limits, ListFilter, NodeId, Percent, ProcessId, ProcessRecord,
    ProcessSpec, SpecError, Supervisor, Timer, Timestamp,
};
use bpm_ports::{
    Clock, Completion, EventBus, IdGenerator, ManagerError, OutputChunk, OutputQuery, OutputStore,
    ProcessManager, ProcessNotice, ProcessSpawner, ProcessStore, ResourceSampler, ResourceUsage,
    SampleTarget, SpawnRequest, StopOptions, StoreError, StoreWrite, StreamSelect,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::AbortHandle;

/// How many lines of output an exit event carries.
const EXIT_TAIL_LINES: usize = 20;
/// How long `stop` waits past the grace period for a process tree to end.
const STOP_MARGIN: Duration = Duration::from_secs(30);
/// How often records the store refused are written again.
const STORE_RETRY: Duration = Duration::from_millis(500);
/// The least time from the start of one sync of the store to the start of
/// the next: under a stream of changes, each sync then covers several. A
/// sync after a quiet spell starts at once.
const SYNC_SPACING: Duration = Duration::from_millis(3);
/// How many records, at most, the spawner holds to start on exits.
const HAND_OVER_AHEAD: usize = 8;
/// How long the loop waits for the reports of starts the spawner made from
/// records it took back, before it goes on without them.
const HANDOVER_REPORTS: Duration = Duration::from_secs(5);

/// The adapters the engine works through.
#[derive(Clone)]
pub struct Ports {
    /// Where records live.
    pub store: Arc<dyn ProcessStore>,
    /// Where output lives.
    pub output: Arc<dyn OutputStore>,
    /// Where events go.
    pub events: Arc<dyn EventBus>,
    /// What runs processes.
    pub spawner: Arc<dyn ProcessSpawner>,
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// New ids.
    pub ids: Arc<dyn IdGenerator>,
    /// What running process trees use.
    pub usage: Arc<dyn ResourceSampler>,
}

/// The engine's settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EngineConfig {
    /// This node's name; records it creates carry it.
    pub node: Option<NodeId>,
    /// The supervisor's limits.
    pub limits: Limits,
}

type Reply = oneshot::Sender<Result<Vec<ProcessRecord>, ManagerError>>;
/// Whether each input was accepted, and the records they changed together.
type ManyReply = oneshot::Sender<Result<Accepted, ManagerError>>;
type Accepted = (Vec<Result<(), ManagerError>>, Vec<ProcessRecord>);

enum Msg {
    Input(Box<Input>, Reply),
    /// Inputs handled together: their writes go to the store as one batch.
    Many(Vec<Input>, ManyReply),
    Timer(Timer),
    /// How a spawn under way ended (`Spawned`, `SpawnFailed`, or `Lost` when
    /// the spawner cannot know).
    SpawnEnded(Box<Input>),
    /// The store's sync under way ended.
    Synced(Result<(), StoreError>),
    Shutdown(oneshot::Sender<()>),
}

/// What waits until the writes made before it are on disk.
enum AfterSync {
    /// Events to publish.
    Announce(Vec<Event>),
    /// A caller's answer (once the spawns of the records it submitted have ended).
    Send(Vec<ProcessRecord>, Answer),
    /// The spawner may let go of this exit.
    ExitRecorded(ProcessId),
}

/// The store's syncs, which run beside the loop one at a time, and the work
/// waiting for them.
#[derive(Default)]
struct Syncs {
    /// Whether durable writes were made since the last sync started.
    owed: bool,
    /// How many syncs were started; the last one may still be running.
    started: u64,
    running: bool,
    /// When the last sync started (or is due to start).
    last_start: Option<tokio::time::Instant>,
    /// Whether a caller's answer waits for the next sync: it starts at once.
    urgent: bool,
    /// Cuts short the wait of a sync that is spaced from the last one.
    hurry: Arc<tokio::sync::Notify>,
    /// Work and the number of the sync it waits for, in the order it came.
    waiting: VecDeque<(u64, AfterSync)>,
}

impl Syncs {
    /// How many syncs have ended.
    fn ended(&self) -> u64 {
        self.started - u64::from(self.running)
    }

    /// Whether nothing is running or waiting.
    fn idle(&self) -> bool {
        !self.running && !self.owed && self.waiting.is_empty()
    }
}

/// A caller's answer, held until the spawns of the records it submitted have ended.
struct Parked {
    waiting: HashSet<ProcessId>,
    changed: Vec<ProcessRecord>,
    answer: Answer,
}

enum Answer {
    One(Reply),
    Many(Vec<Result<(), ManagerError>>, ManyReply),
}

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

/// Keeps the newest version of each record in `changed`, in order of last change.
fn merge_changed(changed: &mut Vec<ProcessRecord>, newer: Vec<ProcessRecord>) {
    for r in newer {
        changed.retain(|c| c.id() != r.id());
        changed.push(r);
    }
}

/// The embedded process manager. Cheap to clone; all clones drive one loop.
#[derive(Clone)]
pub struct Engine {
    ports: Ports,
    node: NodeId,
    tx: mpsc::UnboundedSender<Msg>,
}

impl Engine {
    /// Starts the engine: takes back this node's records from the store,
    /// re-attaches the processes that still run (the rest become `lost`), and
    /// starts the loop on the current tokio runtime.
    ///
    /// # Errors
    /// [`ManagerError::Store`] if the store cannot be read;
    /// [`ManagerError::ShutDown`] if the spawner's notices were already taken.
    pub async fn start(ports: Ports, config: EngineConfig) -> Result<Engine, ManagerError> {
        let node = config.node.unwrap_or_else(NodeId::local);
        let notices = ports.spawner.notices().ok_or(ManagerError::ShutDown)?;
        let records = ports
            .store
            .list(&ListFilter {
                node: Some(node.clone()),
                ..ListFilter::default()
            })
            .await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut driver = Driver {
            core: Supervisor::new(node.clone(), config.limits),
            ports: ports.clone(),
            tx: tx.clone(),
            timers: HashMap::new(),
            unsaved: HashMap::new(),
            spawning: HashMap::new(),
            behind: HashSet::new(),
            deferred: VecDeque::new(),
            parked: Vec::new(),
            syncs: Syncs::default(),
        };
        let live: Vec<_> = records
            .iter()
            .filter(|r| r.state().is_active() && !r.is_tracked())
            .map(|r| (r.id(), r.pid()))
            .collect();
        let effects = driver.core.restore(records, ports.clock.now());
        driver.execute(effects).await?;
        for (id, pid) in live {
            let reattached = match pid {
                Some(pid) => ports.spawner.reattach(id, pid).await.unwrap_or(false),
                None => false,
            };
            if !reattached {
                let reason = match pid {
                    Some(pid) => format!("bpm restarted and could not re-attach to pid {pid}"),
                    None => "bpm restarted while the process was being started".to_owned(),
                };
                let _ = driver.step(Input::Lost { id, reason }).await;
            }
        }
        // Answer nothing until the restored queue's first spawns have ended
        // and what was written is on disk.
        let mut inbox = Inbox { msgs: rx, notices };
        while !driver.spawning.is_empty() || !driver.syncs.idle() {
            let Some(msg) = inbox.msgs.recv().await else {
                break;
            };
            driver.on_msg(msg, &mut None, &mut inbox).await;
        }
        tokio::spawn(driver.run(inbox));
        Ok(Engine { ports, node, tx })
    }

    /// Stops the loop. Processes keep running; a new engine re-attaches them.
    pub async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(done)).is_ok() {
            let _ = wait.await;
        }
    }

    async fn call(&self, input: Input) -> Result<Vec<ProcessRecord>, ManagerError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Input(Box::new(input), reply))
            .map_err(|_| ManagerError::ShutDown)?;
        answer.await.map_err(|_| ManagerError::ShutDown)?
    }

    /// Sends `input` and returns `id`'s record after it.
    async fn call_for(
        &self,
        id: ProcessId,
        input: Input,
    ) -> Result<(ProcessRecord, bool), ManagerError> {
        let changed = self.call(input).await?;
        match changed.into_iter().find(|r| r.id() == id) {
            Some(r) => Ok((r, true)),
            None => Ok((self.get(id).await?, false)),
        }
    }

    /// Waits until every id in `ids` has ended, or until `deadline`.
    async fn wait_until_ended(
        &self,
        mut events: broadcast::Receiver<Event>,
        ids: &[ProcessId],
        deadline: Option<Timestamp>,
    ) -> Result<(), ManagerError> {
        let mut open: HashSet<ProcessId> = ids.iter().copied().collect();
        loop {
            // Re-read the store whenever events may have been missed.
            let mut still = HashSet::new();
            for id in &open {
                if !self.ports.store.get(*id).await?.is_terminal() {
                    still.insert(*id);
                }
            }
            open = still;
            loop {
                if open.is_empty() {
                    return Ok(());
                }
                let next = async {
                    match deadline {
                        Some(at) => tokio::select! {
                            e = events.recv() => Some(e),
                            () = self.ports.clock.sleep_until(at) => None,
                        },
                        None => Some(events.recv().await),
                    }
                };
                match next.await {
                    None => {
                        let id = *open.iter().next().expect("non-empty");
                        let state = self.get(id).await?.state();
                        return Err(ManagerError::WaitTimeout { id, state });
                    }
                    Some(Ok(e)) if e.state.is_terminal() => {
                        open.remove(&e.id);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(broadcast::error::RecvError::Lagged(_))) => break,
                    Some(Err(broadcast::error::RecvError::Closed)) => {
                        return Err(ManagerError::ShutDown);
                    }
                }
            }
        }
    }

    async fn stop_and_wait(
        &self,
        input: Input,
        grace: Duration,
        root: Option<ProcessId>,
    ) -> Result<Vec<ProcessRecord>, ManagerError> {
        let events = self.ports.events.subscribe();
        if let Some(id) = root {
            self.get(id).await?;
        }
        let changed = self.call(input).await?;
        let ids: Vec<_> = changed
            .iter()
            .filter(|r| !r.is_terminal())
            .map(ProcessRecord::id)
            .collect();
        let deadline = self.ports.clock.now().saturating_add(grace + STOP_MARGIN);
        match self.wait_until_ended(events, &ids, Some(deadline)).await {
            Ok(()) | Err(ManagerError::WaitTimeout { .. }) => {}
            Err(e) => return Err(e),
        }
        let mut out = Vec::with_capacity(changed.len());
        for r in changed {
            out.push(self.get(r.id()).await?);
        }
        Ok(out)
    }
}

#[async_trait]
impl ProcessManager for Engine {
    async fn start(&self, spec: ProcessSpec) -> Result<ProcessRecord, ManagerError> {
        // A full disk costs new work, never the records of work taken.
        self.ports.store.room(1)?;
        let id = self.ports.ids.next_id();
        Ok(self.call_for(id, Input::Submit { id, spec }).await?.0)
    }

    async fn start_many(
        &self,
        specs: Vec<ProcessSpec>,
    ) -> Result<Vec<Result<ProcessRecord, ManagerError>>, ManagerError> {
        self.ports.store.room(specs.len())?;
        let ids: Vec<ProcessId> = specs.iter().map(|_| self.ports.ids.next_id()).collect();
        let inputs = ids
            .iter()
            .zip(specs)
            .map(|(&id, spec)| Input::Submit { id, spec })
            .collect();
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Many(inputs, reply))
            .map_err(|_| ManagerError::ShutDown)?;
        let (accepted, changed) = answer.await.map_err(|_| ManagerError::ShutDown)??;
        let mut out = Vec::with_capacity(ids.len());
        for (id, accepted) in ids.into_iter().zip(accepted) {
            out.push(match accepted {
                Err(e) => Err(e),
                Ok(()) => match changed.iter().rev().find(|r| r.id() == id) {
                    Some(r) => Ok(r.clone()),
                    None => self.get(id).await,
                },
            });
        }
        Ok(out)
    }

    async fn track(&self, spec: ProcessSpec) -> Result<ProcessRecord, ManagerError> {
        if spec.command.is_some() {
            return Err(SpecError::TrackedWithCommand.into());
        }
        self.start(spec).await
    }

    async fn get(&self, id: ProcessId) -> Result<ProcessRecord, ManagerError> {
        self.ports.store.get(id).await.map_err(|e| match e {
            StoreError::NotFound(id) => ManagerError::NotFound(id),
            other => other.into(),
        })
    }

    async fn list(&self, filter: ListFilter) -> Result<Vec<ProcessRecord>, ManagerError> {
        Ok(self.ports.store.list(&filter).await?)
    }

    async fn progress(
        &self,
        id: ProcessId,
        percent: Percent,
        message: Option<String>,
    ) -> Result<ProcessRecord, ManagerError> {
        Ok(self
            .call_for(
                id,
                Input::Progress {
                    id,
                    percent,
                    message,
                },
            )
            .await?
            .0)
    }

    async fn complete(
        &self,
        id: ProcessId,
        result: Option<serde_json::Value>,
    ) -> Result<Completion, ManagerError> {
        let (record, changed) = self.call_for(id, Input::Complete { id, result }).await?;
        Ok(Completion {
            record,
            no_op: !changed,
        })
    }

    async fn fail(&self, id: ProcessId, error: String) -> Result<Completion, ManagerError> {
        let (record, changed) = self.call_for(id, Input::Fail { id, error }).await?;
        Ok(Completion {
            record,
            no_op: !changed,
        })
    }

    async fn stop(
        &self,
        id: ProcessId,
        options: StopOptions,
    ) -> Result<ProcessRecord, ManagerError> {
        let grace = options
            .grace
            .unwrap_or(self.get(id).await?.spec().stop.grace)
            .as_duration();
        let input = Input::Stop {
            id,
            force: options.force,
            grace: options.grace,
        };
        self.stop_and_wait(input, grace, Some(id)).await?;
        self.get(id).await
    }

    async fn stop_level(
        &self,
        level: usize,
        options: StopOptions,
    ) -> Result<Vec<ProcessRecord>, ManagerError> {
        let grace = options
            .grace
            .map_or(Duration::from_secs(5), bpm_domain::Span::as_duration);
        self.stop_and_wait(
            Input::StopLevel {
                level,
                force: options.force,
            },
            grace,
            None,
        )
        .await
    }

    async fn pause(&self, id: ProcessId) -> Result<ProcessRecord, ManagerError> {
        Ok(self.call_for(id, Input::Pause { id }).await?.0)
    }

    async fn resume(&self, id: ProcessId) -> Result<ProcessRecord, ManagerError> {
        Ok(self.call_for(id, Input::Resume { id }).await?.0)
    }

    async fn restart(&self, id: ProcessId) -> Result<ProcessRecord, ManagerError> {
        let new_id = self.ports.ids.next_id();
        Ok(self
            .call_for(new_id, Input::Restart { id, new_id })
            .await?
            .0)
    }

    async fn wait(
        &self,
        id: ProcessId,
        timeout: Option<Duration>,
    ) -> Result<ProcessRecord, ManagerError> {
        let events = self.ports.events.subscribe();
        self.get(id).await?;
        let deadline = timeout.map(|t| self.ports.clock.now().saturating_add(t));
        self.wait_until_ended(events, &[id], deadline).await?;
        self.get(id).await
    }

    async fn wait_many(
        &self,
        ids: &[ProcessId],
        timeout: Option<Duration>,
    ) -> Result<(), ManagerError> {
        let events = self.ports.events.subscribe();
        for id in ids {
            self.get(*id).await?;
        }
        let deadline = timeout.map(|t| self.ports.clock.now().saturating_add(t));
        self.wait_until_ended(events, ids, deadline).await
    }

    async fn read_output(
        &self,
        id: ProcessId,
        query: OutputQuery,
    ) -> Result<OutputChunk, ManagerError> {
        self.get(id).await?;
        let Some(lines) = query.tail_lines else {
            return Ok(self.ports.output.read(id, &query).await?);
        };
        let mut tail = self.ports.output.tail(id, query.stream, lines).await?;
        // Keep the newest bytes when the lines exceed the byte cap.
        let mut budget = query.max_bytes;
        let mut kept = Vec::new();
        for mut piece in tail.pieces.into_iter().rev() {
            if budget == 0 {
                tail.truncated = true;
                break;
            }
            if piece.data.len() > budget {
                let cut = piece.data.len() - budget;
                piece.data.drain(..cut);
                piece.offset += cut as u64;
                tail.truncated = true;
            }
            budget -= piece.data.len();
            kept.push(piece);
        }
        kept.reverse();
        tail.pieces = kept;
        Ok(tail)
    }

    async fn send_input(&self, id: ProcessId, data: Vec<u8>) -> Result<(), ManagerError> {
        self.get(id).await?;
        Ok(self.ports.spawner.write_input(id, data).await?)
    }

    async fn remove(&self, id: ProcessId) -> Result<(), ManagerError> {
        self.call(Input::Remove { id }).await.map(|_| ())
    }

    async fn resource_usage(&self) -> Result<Vec<ResourceUsage>, ManagerError> {
        let live = self
            .list(ListFilter {
                node: Some(self.node.clone()),
                ..ListFilter::holding_slots()
            })
            .await?;
        let targets = live
            .iter()
            .filter_map(|r| r.pid().map(|pid| SampleTarget { id: r.id(), pid }))
            .collect();
        Ok(self.ports.usage.sample(targets).await)
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.ports.events.subscribe()
    }
}

/// What the loop receives: messages from callers, timers and tasks, and the spawner's notices.
struct Inbox {
    msgs: mpsc::UnboundedReceiver<Msg>,
    notices: mpsc::UnboundedReceiver<ProcessNotice>,
}

/// The loop's state: the core, the ports, and the armed timers.
struct Driver {
    core: Supervisor,
    ports: Ports,
    tx: mpsc::UnboundedSender<Msg>,
    timers: HashMap<Timer, AbortHandle>,
    /// Records the store refused for now, with the version it holds: written
    /// again (newest first) until it takes them, so a flaky store delays
    /// persistence without stopping supervision.
    unsaved: HashMap<ProcessId, (Option<u64>, ProcessRecord)>,
    /// Records whose spawn is under way, with the notices about them that
    /// arrived meanwhile (handled once the spawn's result has been).
    spawning: HashMap<ProcessId, Vec<ProcessNotice>>,
    /// Records in `spawning` only because the report of their start on an
    /// exit is held there (behind the exited process's own spawn).
    behind: HashSet<ProcessId>,
    /// Messages that came while the loop waited for the spawner's reports;
    /// handled before any newer one.
    deferred: VecDeque<Msg>,
    /// Answers waiting for spawns under way.
    parked: Vec<Parked>,
    syncs: Syncs,
}

impl Driver {
    async fn run(mut self, mut inbox: Inbox) {
        let mut notices_open = true;
        let mut finished = None;
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
            tokio::select! {
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
        for (_, timer) in self.timers.drain() {
            timer.abort();
        }
        // Release the ports (and the store's lock) before saying the loop is gone.
        drop(self);
        if let Some(done) = finished {
            let _ = done.send(());
        }
    }

    /// Handles one message; false when the loop should end (after a
    /// shutdown, once no spawn is under way).
    async fn on_msg(
        &mut self,
        msg: Msg,
        finished: &mut Option<oneshot::Sender<()>>,
        inbox: &mut Inbox,
    ) -> bool {
        let cancels = match &msg {
            Msg::Input(input, _) => input.may_cancel(),
            Msg::Many(inputs, _) => inputs.iter().any(Input::may_cancel),
            Msg::Shutdown(_) => true,
            _ => false,
        };
        if cancels {
            self.take_back(inbox).await;
        }
        match msg {
            Msg::Input(input, reply) => {
                // A submitted record's answer waits for its spawn.
                let submitted = match &*input {
                    Input::Submit { id, .. } => Some(*id),
                    Input::Restart { new_id, .. } => Some(*new_id),
                    _ => None,
                };
                match self.step(*input).await {
                    Ok(changed) => self.answer(submitted, changed, Answer::One(reply)).await,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Msg::Many(inputs, reply) => {
                let submitted: Vec<_> = inputs
                    .iter()
                    .filter_map(|i| match i {
                        Input::Submit { id, .. } => Some(*id),
                        _ => None,
                    })
                    .collect();
                match self.step_many(inputs).await {
                    Ok((accepted, changed)) => {
                        self.answer(submitted, changed, Answer::Many(accepted, reply))
                            .await;
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Msg::Timer(timer) => {
                self.timers.remove(&timer);
                let _ = self.step(Input::TimerFired(timer)).await;
            }
            Msg::SpawnEnded(input) => self.spawn_ended(*input).await,
            Msg::Synced(result) => self.synced(result).await,
            Msg::Shutdown(done) => {
                // Spawns under way end first, so their records are not left
                // starting, and the work waiting for a sync is done.
                *finished = Some(done);
                self.kick_sync();
            }
        }
        !(finished.is_some() && self.spawning.is_empty() && self.syncs.idle())
    }

    /// Handles a notice from the spawner, or holds it while the process's
    /// spawn is under way (an exit can overtake the spawn's own answer).
    async fn notice(&mut self, notice: ProcessNotice) {
        if let ProcessNotice::Withdrawn { ids } = &notice {
            // Back in the queue, they start on the next free slot.
            self.core.withdraw(ids);
            return;
        }
        let mut queue = VecDeque::from([notice]);
        while let Some(notice) = queue.pop_front() {
            let id = match &notice {
                ProcessNotice::Exited { id, .. }
                | ProcessNotice::HandedOver { id, .. }
                | ProcessNotice::Ready { id }
                | ProcessNotice::Idle { id }
                | ProcessNotice::Adopted { id, .. }
                | ProcessNotice::Lost { id, .. } => *id,
                ProcessNotice::Withdrawn { .. } => continue,
            };
            if self.spawning.contains_key(&id) {
                // A process started in its place waits with it: its own
                // notices must not come before its start.
                if let ProcessNotice::HandedOver { next, .. } = &notice
                    && !self.spawning.contains_key(next)
                {
                    self.behind.insert(*next);
                    self.spawning.insert(*next, Vec::new());
                }
                if let Some(held) = self.spawning.get_mut(&id) {
                    held.push(notice);
                }
                continue;
            }
            let exit = matches!(
                notice,
                ProcessNotice::Exited { .. } | ProcessNotice::HandedOver { .. }
            );
            let mut released = None;
            let input = match notice {
                ProcessNotice::Exited { id, status } => Input::Exited { id, status },
                ProcessNotice::HandedOver {
                    id,
                    status,
                    next,
                    started,
                } => {
                    if self.behind.remove(&next) {
                        released = self.spawning.remove(&next);
                    }
                    Input::HandedOver {
                        id,
                        status,
                        next,
                        started,
                    }
                }
                ProcessNotice::Ready { id } => Input::Ready { id },
                ProcessNotice::Idle { id } => Input::Idle { id },
                ProcessNotice::Lost { id, reason } => Input::Lost { id, reason },
                ProcessNotice::Adopted { id, pid } => Input::Adopted { id, pid },
                ProcessNotice::Withdrawn { .. } => continue,
            };
            if let Err(e) = self.step(input).await {
                tracing::debug!(error = %e, "process notice ignored");
            }
            // Once the step's writes are on disk (or, refused, retried from `unsaved`).
            if exit {
                self.after_sync(AfterSync::ExitRecorded(id)).await;
            }
            queue.extend(released.unwrap_or_default());
        }
    }

    /// Hands the spawner the next records to start on exits, if every slot is taken.
    async fn hand_over(&mut self) {
        let added = self.next_handed();
        self.send_handed(added).await;
    }

    /// The records the core hands over now (none if the spawner takes none).
    fn next_handed(&mut self) -> Vec<ProcessId> {
        if self.ports.spawner.hands_over() {
            self.core.hand_over(HAND_OVER_AHEAD)
        } else {
            Vec::new()
        }
    }

    /// Gives the spawner the records the core just handed over.
    async fn send_handed(&mut self, added: Vec<ProcessId>) {
        if added.is_empty() {
            return;
        }
        let requests: Vec<_> = added
            .iter()
            .filter_map(|id| self.core.get(*id).and_then(SpawnRequest::for_record))
            .collect();
        if let Err(e) = self.ports.spawner.hand_over(requests).await {
            tracing::warn!(error = %e, "could not hand records over to the spawner");
            self.core.withdraw(&added);
        }
    }

    /// Takes back the records handed to the spawner, then handles the
    /// reports of those it started already: afterwards none is outstanding.
    /// Messages that come meanwhile wait in `deferred`; spawn results are
    /// handled, since a report may be held behind one.
    async fn take_back(&mut self, inbox: &mut Inbox) {
        let handed: Vec<_> = self.core.handed_over().collect();
        if handed.is_empty() {
            return;
        }
        match self.ports.spawner.withdraw().await {
            Ok(back) => self.core.withdraw(&back),
            Err(e) => {
                // The spawner is gone or cut off; it starts nothing more.
                tracing::warn!(error = %e, "could not take records back from the spawner");
                self.core.withdraw(&handed);
            }
        }
        let deadline = tokio::time::Instant::now() + HANDOVER_REPORTS;
        while self.core.handed_over().next().is_some() {
            let waited = tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    n = inbox.notices.recv() => n.map(Ok),
                    m = inbox.msgs.recv() => m.map(Err),
                }
            })
            .await;
            match waited {
                Ok(Some(Ok(notice))) => self.notice(notice).await,
                Ok(Some(Err(msg))) => match msg {
                    Msg::SpawnEnded(input) => self.spawn_ended(*input).await,
                    Msg::Synced(result) => self.synced(result).await,
                    other => self.deferred.push_back(other),
                },
                _ => {
                    let left: Vec<_> = self.core.handed_over().collect();
                    tracing::warn!(
                        ?left,
                        "the spawner did not report starts it made; going on without them"
                    );
                    self.core.withdraw(&left);
                }
            }
        }
    }

    /// Handles a spawn's result, answers the callers that waited for it, then
    /// the notices held meanwhile.
    async fn spawn_ended(&mut self, input: Input) {
        let (Input::Spawned { id, .. } | Input::SpawnFailed { id, .. } | Input::Lost { id, .. }) =
            input
        else {
            return;
        };
        let held = self.spawning.remove(&id).unwrap_or_default();
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
        for notice in held {
            self.notice(notice).await;
        }
    }

    /// Answers a caller once what was written is on disk and the spawns of
    /// `submitted` have ended.
    async fn answer(
        &mut self,
        submitted: impl IntoIterator<Item = ProcessId>,
        changed: Vec<ProcessRecord>,
        answer: Answer,
    ) {
        let waiting: HashSet<ProcessId> = submitted
            .into_iter()
            .filter(|id| self.spawning.contains_key(id))
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

    fn send(changed: Vec<ProcessRecord>, answer: Answer) {
        match answer {
            Answer::One(reply) => {
                let _ = reply.send(Ok(changed));
            }
            Answer::Many(accepted, reply) => {
                let _ = reply.send(Ok((accepted, changed)));
            }
        }
    }

    /// Handles one input and carries out everything that follows from it;
    /// returns the records it changed.
    async fn step(&mut self, input: Input) -> Result<Vec<ProcessRecord>, ManagerError> {
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
    async fn step_many(&mut self, inputs: Vec<Input>) -> Result<Accepted, ManagerError> {
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

    async fn execute(&mut self, effects: Vec<Effect>) -> Result<Vec<ProcessRecord>, ManagerError> {
        let mut changed: Vec<ProcessRecord> = Vec::new();
        let mut queue = VecDeque::from([effects]);
        // Consecutive writes go to the store together, before any other effect.
        let mut writes: Vec<StoreWrite> = Vec::new();
        // Events wait until the step's durable writes are on disk; spawns
        // and signals go ahead while the disk flushes.
        let mut announce: Vec<Event> = Vec::new();
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
                        self.spawning.entry(id).or_default();
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
                                    Input::Lost { id, reason }
                                }
                                Err(e) => Input::SpawnFailed {
                                    id,
                                    error: e.to_string(),
                                },
                            };
                            report.send(input);
                        });
                    }
                    Effect::Signal { id, pid, signal } => {
                        if let Err(e) = self.ports.spawner.signal(id, pid, signal).await {
                            tracing::warn!(%id, pid, ?signal, error = %e, "could not signal");
                        }
                    }
                    Effect::ArmTimer { timer, at } => {
                        let (clock, tx) = (self.ports.clock.clone(), self.tx.clone());
                        let task = tokio::spawn(async move {
                            clock.sleep_until(at).await;
                            let _ = tx.send(Msg::Timer(timer));
                        });
                        if let Some(old) = self.timers.insert(timer, task.abort_handle()) {
                            old.abort();
                        }
                    }
                    Effect::CancelTimer { timer } => {
                        if let Some(old) = self.timers.remove(&timer) {
                            old.abort();
                        }
                    }
                    Effect::Publish(event) => announce.push(*event),
                }
            }
            self.write_all(&mut writes).await;
        }
        if announce.is_empty() {
            self.kick_sync();
        } else {
            self.after_sync(AfterSync::Announce(announce)).await;
        }
        Ok(changed)
    }

    /// Does `work` once every write made so far is on disk, after the work
    /// that waits already.
    async fn after_sync(&mut self, work: AfterSync) {
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
    fn hurry_sync(&mut self) {
        self.syncs.urgent = true;
        if self.syncs.running {
            self.syncs.hurry.notify_one();
        }
    }

    /// Starts a sync of the store if durable writes wait for one and none runs.
    fn kick_sync(&mut self) {
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
            let _ = tx.send(Msg::Synced(result));
        });
    }

    /// The sync under way ended: does the work that waited for it.
    async fn synced(&mut self, result: Result<(), StoreError>) {
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

    async fn perform(&mut self, work: AfterSync) {
        match work {
            AfterSync::Announce(events) => self.announce(events).await,
            AfterSync::Send(changed, answer) => Self::send(changed, answer),
            AfterSync::ExitRecorded(id) => self.ports.spawner.exit_recorded(id),
        }
    }

    async fn announce(&self, events: Vec<Event>) {
        for mut event in events {
            if event.kind == EventKind::Exited
                && let Ok(tail) = self
                    .ports
                    .output
                    .tail(event.id, StreamSelect::Both, EXIT_TAIL_LINES)
                    .await
            {
                event.output_tail = Some(tail.text());
            }
            if let Err(e) = self.ports.events.publish(event).await {
                tracing::warn!(error = %e, "could not publish an event");
            }
        }
    }

    /// Writes `writes` as one batch; records the store refused for now wait
    /// in `unsaved` (with the version the store holds) to be written again.
    async fn write_all(&mut self, writes: &mut Vec<StoreWrite>) {
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
                Err(e @ (StoreError::Unavailable(_) | StoreError::Refused(_))) => {
                    tracing::error!(%id, error = %e, "store refused a record; will retry");
                    self.unsaved.insert(id, (w.expected_version, w.record));
                }
                Err(e) => tracing::error!(%id, error = %e, "record not persisted"),
            }
        }
    }

    async fn flush(&mut self) {
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
