//! The `ProcessManager` API: each call becomes an input to the loop, or a
//! read of the store; waits and stops are watched from outside the loop.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use bpm_domain::{
    Event, Input, ListFilter, Owner, Percent, ProcessId, ProcessRecord, ProcessRef, ProcessSpec,
    SessionId, SpecError, Timestamp,
};
use bpm_ports::{
    Call, Completion, Cursor, ManagerError, OutputChunk, OutputQuery, ProcessManager, Reply,
    ResourceUsage, SampleTarget, StopOptions, StoreError,
};
use tokio::sync::{broadcast, oneshot};

use crate::{Engine, ToLoop};

/// How long `stop` waits past the grace period for a process tree to end.
const STOP_MARGIN: Duration = Duration::from_secs(30);

/// How long `stop` waits past their longest grace period for descendants
/// on other nodes to end.
const DESCENDANT_MARGIN: Duration = Duration::from_secs(5);

/// How many descendants `stop` looks for, at most.
const DESCENDANTS_WATCHED: usize = 10_000;

/// A spec ready to submit ([`Engine::prepare`]).
struct Prepared {
    spec: ProcessSpec,
    /// For a spec asking for a port: the ports the host offers.
    free: Option<Vec<u16>>,
}

impl Prepared {
    fn input(self, id: ProcessId) -> Input {
        match self.free {
            Some(free) => Input::SubmitOnPorts {
                id,
                spec: self.spec,
                free,
            },
            None => Input::Submit {
                id,
                spec: self.spec,
            },
        }
    }
}

impl Engine {
    /// Whether the store takes `records` new records now. A full disk, or a
    /// store that does not answer, costs new work, never the records of
    /// work taken: nothing is acknowledged from memory alone.
    pub(crate) async fn takes_new_work(&self, records: usize) -> Result<(), ManagerError> {
        self.ports.store.room(records)?;
        Ok(self.ports.store.reachable().await?)
    }

    /// What submits `spec`: its owning processes known by their start
    /// time (so that a recycled pid is never taken for one), and, when it
    /// asks for a port, the ports nothing listens on now.
    ///
    /// # Errors
    /// [`ManagerError::InvalidSpec`] naming an owner that does not run.
    fn prepare(&self, mut spec: ProcessSpec) -> Result<Prepared, ManagerError> {
        for owner in &mut spec.owners {
            if let Owner::Process(p) = owner
                && p.start == 0
            {
                p.start = self
                    .ports
                    .host
                    .start_of(p.pid)
                    .ok_or(ManagerError::InvalidSpec(SpecError::OwnerNotRunning(p.pid)))?;
            }
        }
        let free = spec.port.map(|ask| self.ports.host.free_ports(ask));
        Ok(Prepared { spec, free })
    }

    /// Makes one record with a new id through the input `make` builds.
    async fn create(
        &self,
        make: impl FnOnce(ProcessId) -> Input,
    ) -> Result<ProcessRecord, ManagerError> {
        self.takes_new_work(1).await?;
        let id = self.ports.ids.next_id();
        match self.call_for(id, make(id)).await {
            Ok((record, _)) => Ok(record),
            Err(e) => self.or_reused(e).await,
        }
    }

    /// The live record a submission that asked to ensure its name is
    /// answered with (`CoreError::reused`), or the error as it is.
    async fn or_reused(&self, e: ManagerError) -> Result<ProcessRecord, ManagerError> {
        match e.reused() {
            Some(live) => self.get(live).await,
            None => Err(e),
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

    /// Starts `specs`, all placed on this node, in one batch.
    async fn start_many_here(
        &self,
        specs: Vec<ProcessSpec>,
    ) -> Result<Vec<Result<ProcessRecord, ManagerError>>, ManagerError> {
        self.takes_new_work(specs.len()).await?;
        // A spec that cannot be prepared keeps its error; the others go.
        let prepared: Vec<Result<Prepared, ManagerError>> =
            specs.into_iter().map(|s| self.prepare(s)).collect();
        let mut ids = Vec::with_capacity(prepared.len());
        let mut inputs = Vec::with_capacity(prepared.len());
        let mut early: Vec<Option<ManagerError>> = Vec::with_capacity(prepared.len());
        for p in prepared {
            let id = self.ports.ids.next_id();
            ids.push(id);
            match p {
                Ok(p) => {
                    inputs.push(p.input(id));
                    early.push(None);
                }
                Err(e) => early.push(Some(e)),
            }
        }
        let again = self.kept_for_again(&inputs);
        let (mut accepted, mut changed) = if inputs.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            self.submit_batch(inputs).await?
        };
        self.submit_again_named(again, &mut accepted, &mut changed)
            .await?;
        let mut accepted = accepted.into_iter();
        let mut out = Vec::with_capacity(ids.len());
        for (id, early) in ids.into_iter().zip(early) {
            let accepted = match early {
                Some(e) => Err(e),
                None => accepted.next().unwrap_or(Err(ManagerError::ShutDown)),
            };
            out.push(match accepted {
                Err(e) => self.or_reused(e).await,
                Ok(()) => match changed.iter().rev().find(|r| r.id() == id) {
                    Some(r) => Ok(r.clone()),
                    None => self.get(id).await,
                },
            });
        }
        Ok(out)
    }

    /// Hands the loop `inputs`, submits all, to be handled together.
    pub(crate) async fn submit_batch(
        &self,
        inputs: Vec<Input>,
    ) -> Result<crate::Accepted, ManagerError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(ToLoop::Batch(inputs, reply))
            .map_err(|_| ManagerError::ShutDown)?;
        answer.await.map_err(|_| ManagerError::ShutDown)?
    }

    /// Waits until `id`'s unfinished descendants have ended, wherever they
    /// run: those on other nodes are stopped by their nodes once they hear
    /// that `id` is stopping. Bounded by the longest grace among them plus
    /// a margin, so a descendant on a node that died meanwhile delays the
    /// answer by that much at most.
    async fn wait_for_descendants(
        &self,
        events: broadcast::Receiver<Event>,
        id: ProcessId,
    ) -> Result<(), ManagerError> {
        let mut open = Vec::new();
        let mut grace = Duration::ZERO;
        let mut frontier = vec![id];
        while let Some(parent) = frontier.pop() {
            let filter = ListFilter {
                parent: Some(parent),
                ..ListFilter::default()
            };
            for child in self.list(filter).await? {
                frontier.push(child.id());
                if !child.is_terminal() {
                    grace = grace.max(child.spec().stop.grace.as_duration());
                    open.push(child.id());
                }
            }
            if frontier.len() + open.len() > DESCENDANTS_WATCHED {
                break;
            }
        }
        let deadline = self
            .ports
            .clock
            .now()
            .saturating_add(grace + DESCENDANT_MARGIN);
        match self.wait_until_ended(events, &open, Some(deadline)).await {
            Ok(()) | Err(ManagerError::WaitTimeout { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Completes or fails `id` (`input` here, `call` on its owner).
    async fn finish(
        &self,
        id: ProcessId,
        input: Input,
        call: Call,
    ) -> Result<Completion, ManagerError> {
        let local = self
            .call_for(id, input)
            .await
            .map(|(record, changed)| Completion {
                record,
                no_op: !changed,
            });
        self.or_forward(id, local, || call, Reply::into_completion)
            .await
    }

    /// Stops `record`, this node's, and returns it once its whole tree
    /// (with descendants on other nodes) is gone.
    async fn stop_here(
        &self,
        record: &ProcessRecord,
        options: StopOptions,
    ) -> Result<ProcessRecord, ManagerError> {
        let id = record.id();
        let grace = options
            .grace
            .unwrap_or(record.spec().stop.grace)
            .as_duration();
        let input = Input::Stop {
            id,
            force: options.force,
            grace: options.grace,
        };
        let elsewhere = self.shared().then(|| self.ports.events.subscribe());
        self.stop_and_wait(input, grace, Some(id)).await?;
        if let Some(events) = elsewhere {
            self.wait_for_descendants(events, id).await?;
        }
        self.get(id).await
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
        match spec.placement() {
            bpm_domain::Placement::Any => {
                let mut answers = self.queue_any(vec![spec]).await;
                return answers.pop().unwrap_or(Err(ManagerError::ShutDown));
            }
            bpm_domain::Placement::On(node) if *node != self.node => {
                let node = node.clone();
                return self.start_elsewhere(node, spec).await;
            }
            _ => {}
        }
        let prepared = self.prepare(spec)?;
        self.create(|id| prepared.input(id)).await
    }

    async fn start_many(
        &self,
        specs: Vec<ProcessSpec>,
    ) -> Result<Vec<Result<ProcessRecord, ManagerError>>, ManagerError> {
        let elsewhere = |s: &ProcessSpec| s.node.as_ref().is_some_and(|n| *n != self.node);
        if !specs.iter().any(elsewhere) {
            return self.start_many_here(specs).await;
        }
        // The specs placed here go in one batch; the others to their
        // nodes, one batch each, all at once, and those placed on any node
        // to the cluster's queue; the answers in the specs' order. A batch
        // that fails answers each of its specs with why.
        let mut here = Vec::new();
        let mut there: std::collections::BTreeMap<bpm_domain::NodeId, Vec<ProcessSpec>> =
            std::collections::BTreeMap::new();
        let mut places = Vec::with_capacity(specs.len());
        for spec in specs {
            // Those placed on any node go together too, to the queue.
            if let Some(node) = spec.node.clone().filter(|n| *n != self.node) {
                places.push(Some(node.clone()));
                there.entry(node).or_default().push(spec);
            } else {
                here.push(spec);
                places.push(None);
            }
        }
        let mut sent = tokio::task::JoinSet::new();
        for (node, specs) in there {
            let engine = self.clone();
            sent.spawn(async move {
                let count = specs.len();
                let results = if node.is_any() {
                    Ok(engine.queue_any(specs).await)
                } else {
                    engine.start_many_elsewhere(node.clone(), specs).await
                };
                (node, results.unwrap_or_else(|e| vec![Err(e); count]))
            });
        }
        let count = here.len();
        let mut local = match count {
            0 => Vec::new(),
            _ => (self.start_many_here(here).await).unwrap_or_else(|e| vec![Err(e); count]),
        }
        .into_iter();
        let mut remote = std::collections::BTreeMap::new();
        while let Some(joined) = sent.join_next().await {
            let (node, results) = joined.map_err(|e| {
                ManagerError::Connection(format!("a batch sent to another node was lost: {e}"))
            })?;
            remote.insert(node, results.into_iter());
        }
        let mut out = Vec::with_capacity(places.len());
        for place in places {
            let next = match place {
                Some(node) => remote.get_mut(&node).and_then(Iterator::next),
                None => local.next(),
            };
            out.push(next.unwrap_or(Err(ManagerError::ShutDown)));
        }
        Ok(out)
    }

    async fn track(&self, spec: ProcessSpec) -> Result<ProcessRecord, ManagerError> {
        self.create(|id| Input::Track { id, spec }).await
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
        let local = self
            .call_for(
                id,
                Input::Progress {
                    id,
                    percent,
                    message: message.clone(),
                },
            )
            .await
            .map(|(r, _)| r);
        let call = || Call::Progress {
            id,
            percent,
            message,
        };
        self.or_forward(id, local, call, Reply::into_record).await
    }

    async fn complete(
        &self,
        id: ProcessId,
        result: Option<serde_json::Value>,
    ) -> Result<Completion, ManagerError> {
        let input = Input::Complete {
            id,
            result: result.clone(),
        };
        self.finish(id, input, Call::Complete { id, result }).await
    }

    async fn fail(&self, id: ProcessId, error: String) -> Result<Completion, ManagerError> {
        let input = Input::Fail {
            id,
            error: error.clone(),
        };
        self.finish(id, input, Call::Fail { id, error }).await
    }

    async fn stop(
        &self,
        id: ProcessId,
        options: StopOptions,
    ) -> Result<ProcessRecord, ManagerError> {
        let mut record = self.get(id).await?;
        if record.node().is_any() {
            // Waiting for a node: this one takes it and cancels it.
            record = self.stop_unplaced(record).await?;
            if record.is_terminal() {
                return Ok(record);
            }
        }
        if self.sent_elsewhere(&record) {
            let StopOptions { force, grace } = options;
            let call = Call::Stop { id, force, grace };
            return self.forward(&record, call).await?.into_record();
        }
        self.stop_here(&record, options).await
    }

    async fn stop_level(
        &self,
        level: usize,
        options: StopOptions,
    ) -> Result<Vec<ProcessRecord>, ManagerError> {
        // How long to watch for the trees to end: the longest grace among them.
        let grace = match options.grace {
            Some(g) => g.as_duration(),
            None => self
                .list(ListFilter::live())
                .await?
                .iter()
                .map(|r| r.spec().stop.grace.as_duration())
                .max()
                .unwrap_or_default(),
        };
        self.stop_and_wait(
            Input::StopLevel {
                level,
                force: options.force,
                grace: options.grace,
            },
            grace,
            None,
        )
        .await
    }

    async fn pause(&self, id: ProcessId) -> Result<ProcessRecord, ManagerError> {
        let local = self.call_for(id, Input::Pause { id }).await.map(|(r, _)| r);
        self.or_forward(id, local, || Call::Pause { id }, Reply::into_record)
            .await
    }

    async fn resume(&self, id: ProcessId) -> Result<ProcessRecord, ManagerError> {
        let local = self
            .call_for(id, Input::Resume { id })
            .await
            .map(|(r, _)| r);
        self.or_forward(id, local, || Call::Resume { id }, Reply::into_record)
            .await
    }

    async fn restart(&self, id: ProcessId) -> Result<ProcessRecord, ManagerError> {
        let new_id = self.ports.ids.next_id();
        let local = self
            .call_for(new_id, Input::Restart { id, new_id })
            .await
            .map(|(r, _)| r);
        self.or_forward(id, local, || Call::Restart { id }, Reply::into_record)
            .await
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
        // The newest bytes are kept when the lines exceed the byte cap.
        Ok(self
            .ports
            .output
            .tail(id, query.stream, lines, query.max_bytes)
            .await?)
    }

    async fn wait_output(
        &self,
        id: ProcessId,
        after: Cursor,
        within: Duration,
    ) -> Result<(), ManagerError> {
        let record = self.get(id).await?;
        if record.is_terminal() {
            return Ok(());
        }
        if self.sent_elsewhere(&record) {
            // Its keeper is that node's: the wait is made there.
            let within_ms = u64::try_from(within.as_millis()).unwrap_or(u64::MAX);
            let call = Call::WaitOutput {
                id,
                after,
                within_ms,
            };
            return self.forward(&record, call).await?.into_done();
        }
        // A spawner that does not run it (one not started yet) answers
        // after its short look.
        Ok(self.ports.spawner.wait_output(id, after, within).await?)
    }

    async fn send_input(&self, id: ProcessId, data: Vec<u8>) -> Result<(), ManagerError> {
        let record = self.get(id).await?;
        if self.sent_elsewhere(&record) {
            self.forward(&record, Call::SendInput { id, data }).await?;
            return Ok(());
        }
        Ok(self.ports.spawner.write_input(id, data).await?)
    }

    async fn remove(&self, id: ProcessId) -> Result<(), ManagerError> {
        let local = self.call(Input::Remove { id }).await.map(|_| ());
        self.or_forward(id, local, || Call::Remove { id }, Reply::into_done)
            .await
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

    async fn hold_session(&self, session: SessionId, holder: u32) -> Result<(), ManagerError> {
        let start = self
            .ports
            .host
            .start_of(holder)
            .ok_or(ManagerError::InvalidSpec(SpecError::OwnerNotRunning(
                holder,
            )))?;
        let holder = ProcessRef { pid: holder, start };
        self.call(Input::HoldSession { session, holder }).await?;
        Ok(())
    }

    async fn release_session(&self, session: SessionId, holder: u32) -> Result<(), ManagerError> {
        // A holder that is gone let go already; one unknown holds nothing.
        let Some(start) = self.ports.host.start_of(holder) else {
            return Ok(());
        };
        let holder = ProcessRef { pid: holder, start };
        self.call(Input::ReleaseSession { session, holder }).await?;
        Ok(())
    }

    async fn check_fence(&self, id: ProcessId, token: u64) -> Result<Option<String>, ManagerError> {
        let record = self.get(id).await?;
        if let Err(stale) = record.check_token(token) {
            return Ok(Some(stale));
        }
        // Asked last, closest to the write it guards: the lease, on this
        // node's own clock, and the node's newest epoch, in the store.
        if record.node() == &self.node {
            match self.ports.store.reachable().await {
                Ok(()) => {}
                Err(e @ (StoreError::Lapsed { .. } | StoreError::Fenced { .. })) => {
                    return Ok(Some(format!("its node may not act: {e}")));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.ports.events.subscribe()
    }

    async fn recent_events(&self) -> Result<Vec<Event>, ManagerError> {
        Ok(self.ports.events.recent())
    }
}
