//! bpm's engine: the driver of the domain's supervisor core. It owns the
//! [`Supervisor`], feeds it inputs (API calls,
//! process notices, timers) and carries out its effects through the ports.
//! [`Engine`] implements [`ProcessManager`].
//!
//! One task owns the core, so inputs are handled one at a time in arrival
//! order; everything slow a caller waits for (wait, stop) happens outside it.
//! The files split the work by job:
//! - `driver`: the loop, and the answers to callers;
//! - `effects`: carrying out the core's effects through the ports;
//! - `durability`: writes to the store, its syncs, and what waits for them;
//! - `handover`: the spawner's side, the records it starts on exits;
//! - `manager`: the `ProcessManager` API over the loop;
//! - `routing`: calls about another node's records, sent to that node, and
//!   the commands other nodes send here;
//! - `foreign`: other nodes' records that records here name (dependencies,
//!   parents), read for the core and read again on their events;
//! - `claims`: records placed on any node, queued and taken from the queue;
//! - `sweeper`: the sweep of nodes that stopped renewing their leases.
//!
//! A spawn runs beside the loop: the spawner may wait for the child's
//! `exec`, and meanwhile other processes' exits and starts go on. Its result
//! comes back to the loop as an input; notices about a process whose spawn
//! is still under way are held until that result has been handled, and a
//! caller that submitted the process is answered once it has.

use std::sync::Arc;

use bpm_domain::{
    Input, Limits, ListFilter, NodeId, ProcessId, ProcessRecord, StateName, Supervisor,
};
use bpm_ports::{
    Clock, EventBus, IdGenerator, ManagerError, OutputStore, ProcessManager, ProcessSpawner,
    ProcessStore, ResourceSampler, StoreError,
};
use tokio::sync::{mpsc, oneshot};

use crate::driver::{Driver, Inbox};

mod claims;
pub mod cluster;
mod driver;
mod durability;
mod effects;
mod foreign;
mod handover;
mod manager;
mod routing;
mod sweeper;
mod syncs;
mod timers;

pub use sweeper::{SweepError, Sweeper, Swept};

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
    /// Free ports, and owners' lives.
    pub host: Arc<dyn bpm_ports::Host>,
}

/// The engine's settings.
#[derive(Clone, Default)]
pub struct EngineConfig {
    /// This node's name; records it creates carry it.
    pub node: Option<NodeId>,
    /// The supervisor's limits.
    pub limits: Limits,
    /// Where the slots of `limits.cluster_groups` are counted: the store
    /// every node shares. Without it, each is kept as this node's own
    /// group limit.
    pub slots: Option<Arc<dyn bpm_ports::ClusterSlots>>,
    /// The machine restarted since this node's records were last written
    /// (its boot id changed): processes that are not found again are
    /// `lost` with the reason `machine restarted`.
    pub machine_restarted: bool,
}

/// Where cluster-wide slots are taken, shared by the engine and its loop.
pub(crate) type SlotsCell = Arc<std::sync::OnceLock<Arc<dyn bpm_ports::ClusterSlots>>>;

pub(crate) type RecordsTx = oneshot::Sender<Result<Vec<ProcessRecord>, ManagerError>>;
/// Whether each input was accepted, and the records they changed together.
pub(crate) type BatchTx = oneshot::Sender<Result<Accepted, ManagerError>>;
pub(crate) type Accepted = (Vec<Result<(), ManagerError>>, Vec<ProcessRecord>);

pub(crate) enum ToLoop {
    Input(Box<Input>, RecordsTx),
    /// Inputs handled together: their writes go to the store as one batch.
    Batch(Vec<Input>, BatchTx),
    /// How a spawn under way ended (`Spawned`, `SpawnFailed`, or `SpawnLost`
    /// when the spawner cannot know).
    SpawnEnded(Box<Input>),
    /// The store refused a write of this record: it holds another version.
    Conflicted(ProcessId),
    /// The store's sync under way ended.
    Synced(Result<(), StoreError>),
    /// This node holds its name again after its lease lapsed: the store's
    /// version and state of each of its records, and what lets its writes
    /// through again (called before the core reconciles, in the same turn
    /// of the loop, so no write waiting from before goes first).
    Rejoin(Rejoin, oneshot::Sender<Result<(), ManagerError>>),
    /// Another node's record changed (its event): read it again if the
    /// core watches it.
    ForeignChanged {
        id: ProcessId,
        version: u64,
    },
    /// Other nodes' events may have been missed: read every watched record again.
    ReadWatched,
    /// Other nodes' records, as the store holds them, for the core, and
    /// those it was asked for and no longer holds.
    ForeignRead {
        records: Vec<ProcessRecord>,
        gone: Vec<ProcessId>,
    },
    /// What the core can take from the cluster's queue now.
    QueueRoom(oneshot::Sender<bpm_domain::cluster::placement::Room>),
    /// The store's answer to a record's ask for a cluster-wide slot.
    Slot {
        id: ProcessId,
        granted: bool,
    },
    /// A record ended on another node: a cluster-wide slot may be free.
    SlotsFreed,
    /// A process that owns records, or holds a session, is gone.
    OwnerGone(bpm_domain::ProcessRef),
    /// A file under a record's watch changed.
    FilesChanged(ProcessId),
    /// A record's watch could not be set up, and why.
    WatchFailed(ProcessId, String),
    Shutdown(oneshot::Sender<()>),
}

/// What [`Engine::rejoin`] hands the loop.
pub(crate) struct Rejoin {
    pub(crate) stored: Vec<(ProcessId, u64, StateName)>,
    pub(crate) open: Box<dyn FnOnce() + Send + Sync>,
}

/// The embedded process manager. Cheap to clone; all clones drive one loop.
#[derive(Clone)]
pub struct Engine {
    ports: Ports,
    node: NodeId,
    tx: mpsc::UnboundedSender<ToLoop>,
    /// Where calls about other nodes' records go, once a cluster's daemon
    /// sets it ([`Engine::forward_through`]).
    commands: Arc<std::sync::OnceLock<Arc<dyn bpm_ports::CommandBus>>>,
    /// The queue of records placed on any node, once a cluster's daemon
    /// sets it ([`Engine::claim_through`]).
    claims: Arc<std::sync::OnceLock<Arc<dyn bpm_ports::ClaimQueue>>>,
}

impl Engine {
    /// Launches the engine (not to be confused with
    /// [`ProcessManager::start`], which
    /// starts a process): takes back this node's records from the store,
    /// carries out what the core decides of them (processes re-attached,
    /// spawns under way asked again, the rest `lost`), and starts the loop
    /// on the current tokio runtime.
    ///
    /// # Errors
    /// [`ManagerError::Store`] if the store cannot be read;
    /// [`ManagerError::ShutDown`] if the spawner's notices were already taken.
    pub async fn launch(ports: Ports, config: EngineConfig) -> Result<Engine, ManagerError> {
        let node = config.node.unwrap_or_else(NodeId::local);
        let notices = ports.spawner.notices().ok_or(ManagerError::ShutDown)?;
        let records = ports
            .store
            .list(&ListFilter {
                node: Some(node.clone()),
                ..ListFilter::default()
            })
            .await?;
        // The records of other nodes they name (dependencies, parents).
        let named = Supervisor::named_elsewhere(&records);
        let elsewhere = foreign::read_elsewhere(&*ports.store, &node, &named).await?;
        let gone = foreign::missing(&named, &elsewhere);
        let mut records = records;
        records.extend(elsewhere);
        let (tx, rx) = mpsc::unbounded_channel();
        let mut driver = Driver::new(
            Supervisor::new(node.clone(), config.limits),
            ports.clone(),
            tx.clone(),
        );
        let slots = SlotsCell::default();
        if let Some(given) = config.slots {
            let _ = slots.set(given);
        }
        driver.slots = slots;
        driver.machine_restarted = config.machine_restarted;
        let effects = driver.core.restore(records, ports.clock.now());
        driver.execute(effects).await?;
        if !gone.is_empty() {
            let records = Vec::new();
            driver.step(Input::Foreign { records, gone }).await?;
        }
        // Waiter nothing until the restored queue's first spawns have ended
        // and what was written is on disk.
        let mut inbox = Inbox { msgs: rx, notices };
        while driver.core.spawns_under_way() > 0 || !driver.syncs.idle() {
            let Some(msg) = inbox.msgs.recv().await else {
                break;
            };
            driver.on_msg(msg, &mut None, &mut inbox).await;
        }
        tokio::spawn(driver.run(inbox));
        Ok(Engine {
            ports,
            node,
            tx,
            commands: Arc::default(),
            claims: Arc::default(),
        })
    }

    /// Reconciles this node's records after it took its name again
    /// (its lease had lapsed, so it wrote nothing meanwhile, and another
    /// node may have marked them `unreachable` or given them up): reads
    /// what the store holds of them, then, in one turn of the loop, calls
    /// `open` (which lets the store's writes through with the new epoch)
    /// and hands the core [`Input::Rejoined`]. Records it wrote meanwhile
    /// are written again over the store's version; records given up stay
    /// `lost`, and their processes are killed.
    ///
    /// # Errors
    /// [`ManagerError::Store`] if the store cannot be read (`open` is not
    /// called; ask again); [`ManagerError::ShutDown`] if the loop stopped.
    pub async fn rejoin(&self, open: Box<dyn FnOnce() + Send + Sync>) -> Result<(), ManagerError> {
        let stored = self
            .ports
            .store
            .list(&ListFilter {
                node: Some(self.node.clone()),
                ..ListFilter::default()
            })
            .await?
            .iter()
            .map(|r| (r.id(), r.version(), r.state()))
            .collect();
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(ToLoop::Rejoin(Rejoin { stored, open }, reply))
            .map_err(|_| ManagerError::ShutDown)?;
        answer.await.map_err(|_| ManagerError::ShutDown)?
    }

    /// A sweeper of the nodes that stop renewing their leases, for this
    /// engine's node, on its store, event bus and clock; it runs their
    /// failover records elsewhere through `failover`.
    pub fn sweeper(
        &self,
        membership: Arc<dyn bpm_ports::Membership>,
        timing: bpm_domain::ClusterTiming,
        failover: Arc<dyn bpm_ports::Failover>,
    ) -> Sweeper {
        Sweeper::new(
            membership,
            Arc::clone(&self.ports.store),
            Arc::clone(&self.ports.events),
            Arc::clone(&self.ports.clock),
            self.node.clone(),
            timing,
        )
        .with_claims(self.claims.get().cloned())
        .with_failover(failover, Arc::clone(&self.ports.ids))
    }

    /// Tells the core whether this node holds its lease: when it does not
    /// (a whole lease after its last renewal that succeeded was sent), its
    /// failover records are stopped and none starts until it does again
    /// ([`Input::Lease`]).
    ///
    /// # Errors
    /// [`ManagerError::ShutDown`] if the loop stopped.
    pub async fn lease(&self, held: bool) -> Result<(), ManagerError> {
        self.call_once(Input::Lease { held }).await.map(|_| ())
    }

    /// Stops the loop. Processes keep running; a new engine re-attaches them.
    pub async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(ToLoop::Shutdown(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Sends `input` to the loop; when the core does not know a record it
    /// names that another node owns, reads that record for the core and
    /// sends it again.
    pub(crate) async fn call(&self, input: Input) -> Result<Vec<ProcessRecord>, ManagerError> {
        if !(self.shared() && input.may_name_unknown()) {
            return self.call_once(input).await;
        }
        let mut reads = std::collections::HashMap::new();
        loop {
            match self.call_once(input.clone()).await {
                Err(e) if !self.learn_named([&e], &mut reads).await?.is_empty() => {}
                other => return other,
            }
        }
    }

    pub(crate) async fn call_once(&self, input: Input) -> Result<Vec<ProcessRecord>, ManagerError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(ToLoop::Input(Box::new(input), reply))
            .map_err(|_| ManagerError::ShutDown)?;
        answer.await.map_err(|_| ManagerError::ShutDown)?
    }

    /// Sends `input` and returns `id`'s record after it.
    pub(crate) async fn call_for(
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
}
