//! Calls about another node's records. A node changes only its own records
//! (`cluster::owner_elsewhere`), so a call the core answers with "no such
//! record" is looked up in the shared store, and when another node owns the
//! record it goes to that node as a [`Call`] through the [`CommandBus`]; its
//! reply, or its error, is the call's. The other half: the calls other
//! nodes send here, each applied as a local call ([`bpm_ports::apply`]) on
//! a task of its own (a stop waits for its tree) and answered.

use std::sync::Arc;
use std::time::Duration;

use bpm_domain::{NodeId, ProcessId, ProcessRecord, ProcessSpec, cluster};
use bpm_ports::{Call, CommandBus, ManagerError, ProcessManager, Reply, RoutingRefusal, Started};

use crate::Engine;

/// How long the command loop waits after the bus failed it.
const RETRY: Duration = Duration::from_millis(500);

impl Engine {
    /// Sends calls about other nodes' records through `bus`, and carries
    /// out the commands `bus` brings for this node, on a task of the
    /// current tokio runtime; other nodes' events from here on keep the
    /// core's views of their records current (`foreign`). Set once; a
    /// second bus is ignored.
    pub fn forward_through(&self, bus: Arc<dyn CommandBus>) {
        if self.commands.set(Arc::clone(&bus)).is_ok() {
            tokio::spawn(serve(self.clone(), bus));
            self.listen_elsewhere();
        }
    }

    /// Whether calls about `record` go to another node: it owns the
    /// record, and calls can be sent there.
    pub(crate) fn sent_elsewhere(&self, record: &ProcessRecord) -> bool {
        self.commands.get().is_some() && cluster::owner_elsewhere(record, &self.node).is_some()
    }

    /// `id`'s record when another node owns it and calls can be sent there.
    async fn owned_elsewhere(&self, id: ProcessId) -> Result<Option<ProcessRecord>, ManagerError> {
        if self.commands.get().is_none() {
            return Ok(None);
        }
        let record = self.get(id).await?;
        Ok(self.sent_elsewhere(&record).then_some(record))
    }

    /// Why a start placed on `node` cannot go there: this daemon's store is
    /// not shared with other nodes.
    pub(crate) fn not_shared(&self, node: NodeId, command: &str) -> ManagerError {
        ManagerError::NodeNotAnswering {
            node,
            command: command.into(),
            waited_ms: 0,
            lease_age_ms: None,
            detail: format!(
                "this daemon's store is not shared with other nodes, so only node {} runs processes here",
                self.node
            ),
        }
    }

    /// Sends `call` to the node that owns `record`, and returns its reply.
    pub(crate) async fn forward(
        &self,
        record: &ProcessRecord,
        call: Call,
    ) -> Result<Reply, ManagerError> {
        let Some(bus) = self.commands.get() else {
            return Err(ManagerError::NotFound(record.id()));
        };
        if record.node().is_any() {
            return Err(RoutingRefusal::Unplaced {
                id: record.id(),
                call: call.name().to_owned(),
            }
            .into());
        }
        let within = bpm_ports::answer_within(&call, record.spec().stop.grace.as_duration());
        bus.send(record.node(), call, within).await
    }

    /// `local`, the answer of this node's core; when that is "no such
    /// record" and another node owns it, the reply of that node to `call`,
    /// read by `take`.
    pub(crate) async fn or_forward<T>(
        &self,
        id: ProcessId,
        local: Result<T, ManagerError>,
        call: impl FnOnce() -> Call,
        take: fn(Reply) -> Result<T, ManagerError>,
    ) -> Result<T, ManagerError> {
        match local {
            Err(ManagerError::NotFound(missing)) if missing == id => {
                match self.owned_elsewhere(id).await? {
                    Some(record) => take(self.forward(&record, call()).await?),
                    None => Err(ManagerError::NotFound(id)),
                }
            }
            other => other,
        }
    }

    /// Starts `spec` on `node`, another node: sent to its daemon, which
    /// makes the record.
    pub(crate) async fn start_elsewhere(
        &self,
        node: NodeId,
        spec: ProcessSpec,
    ) -> Result<ProcessRecord, ManagerError> {
        let Some(bus) = self.commands.get() else {
            return Err(self.not_shared(node, "start"));
        };
        let call = Call::Start {
            spec: Box::new(spec),
        };
        let within = bpm_ports::answer_within(&call, Duration::ZERO);
        bus.send(&node, call, within).await?.into_record()
    }

    /// Starts `specs`, all placed on `node`, another node: one command.
    pub(crate) async fn start_many_elsewhere(
        &self,
        node: NodeId,
        specs: Vec<ProcessSpec>,
    ) -> Result<Vec<Result<ProcessRecord, ManagerError>>, ManagerError> {
        let Some(bus) = self.commands.get() else {
            return Err(self.not_shared(node, "start of a batch"));
        };
        let count = specs.len();
        let call = Call::StartMany {
            specs,
            env: None,
            brief: false,
        };
        let within = bpm_ports::answer_within(&call, Duration::ZERO);
        let started = bus.send(&node, call, within).await?.into_started(count)?;
        Ok(started.into_iter().map(Started::into_record).collect())
    }

    /// Carries out a call another node sent, as the local call. Only what
    /// [`forward`](Self::forward) and the starts placed here send is taken:
    /// a call about a record this node owns, or a start placed on it.
    async fn carry_out(&self, call: Call) -> Result<Reply, ManagerError> {
        match &call {
            Call::Start { spec } if spec.node.as_ref() == Some(&self.node) => {}
            Call::StartMany { specs, .. }
                if specs.iter().all(|s| s.node.as_ref() == Some(&self.node)) => {}
            Call::Start { .. } | Call::StartMany { .. } => {
                return Err(RoutingRefusal::StartElsewhere {
                    here: self.node.clone(),
                }
                .into());
            }
            Call::Stop { id, .. }
            | Call::Pause { id }
            | Call::Resume { id }
            | Call::Restart { id }
            | Call::SendInput { id, .. }
            | Call::WaitOutput { id, .. }
            | Call::Progress { id, .. }
            | Call::Complete { id, .. }
            | Call::Fail { id, .. }
            | Call::Remove { id } => {
                if let Some(owner) = cluster::owner_elsewhere(&self.get(*id).await?, &self.node) {
                    // Never sent on again: a call goes to its owner only.
                    return Err(RoutingRefusal::OwnedElsewhere {
                        id: *id,
                        owner: owner.clone(),
                        here: self.node.clone(),
                    }
                    .into());
                }
            }
            other => {
                return Err(ManagerError::BadRequest(format!(
                    "`{}` is not a call nodes send each other",
                    other.name()
                )));
            }
        }
        bpm_ports::apply(self, call).await
    }
}

/// Takes this node's commands off the bus, each carried out on its own task.
async fn serve(engine: Engine, bus: Arc<dyn CommandBus>) {
    let mut failing = false;
    loop {
        match bus.receive().await {
            Ok(Some(delivery)) => {
                failing = false;
                let (engine, bus) = (engine.clone(), Arc::clone(&bus));
                tokio::spawn(async move {
                    let name = delivery.call.name();
                    let id = delivery.call.id().map(|id| id.to_string());
                    let answer = engine.carry_out(delivery.call.clone()).await;
                    if let Err(e) = bus.answer(&delivery, &answer).await {
                        tracing::warn!(id = id.as_deref().unwrap_or("-"), command = name, error = %e, "a command from another node was carried out but not answered; its sender will be told it is unknown");
                    }
                });
            }
            Ok(None) => failing = false,
            Err(ManagerError::ShutDown) => return,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot read the commands other nodes send; will retry");
                    failing = true;
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}
