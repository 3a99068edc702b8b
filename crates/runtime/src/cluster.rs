//! The cluster driver: runs this daemon's [`Member`] the way the engine's
//! loop runs its `Supervisor`. It feeds the core a tick when a timer it
//! armed fires, carries out each effect as a task of its own (a renewal, a
//! take, a word to the keeper or the engine, a look at the leases), and
//! hands each result back as an input. It holds no rule: the order of
//! renewals, write fences, stand-downs and takes is [`Member`]'s.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bpm_domain::cluster::look::LookEffect;
use bpm_domain::cluster::member::{Level, Member, MemberEffect, MemberInput, RenewFailure};
use bpm_domain::{ClusterTiming, Holder, NodeId, Timestamp, cluster};
use bpm_ports::{Candidate, Membership, MembershipError, ProcessSpawner, SpawnError, WriteFence};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::{Engine, Sweeper};

/// What `bpm daemon status` shows of the lease: its line and the warnings.
#[derive(Clone, Default)]
pub struct LeaseStatus {
    /// The status's cluster line.
    pub line: Arc<Mutex<Option<String>>>,
    /// The status's warnings.
    pub warnings: Arc<Mutex<Vec<String>>>,
}

impl LeaseStatus {
    /// The status's cluster line is now `line`.
    pub fn set(&self, line: String) {
        *self.line.lock().unwrap_or_else(PoisonError::into_inner) = Some(line);
    }

    /// `warning` goes to the log and the status.
    pub fn warn(&self, warning: String) {
        tracing::warn!("{warning}");
        self.warnings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(warning);
    }
}

/// Takes the node's name for `who`, and returns its epoch and the moment the
/// take was sent, which its lease counts from ([`MemberDriver::start`]).
/// A holder that took it on this very boot of this machine, and whose
/// daemon is gone (killed: its lease has not lapsed yet), is taken over at
/// once; `runs_bpm` says whether a bpm program runs as a pid here.
/// Otherwise the refusal says which case applies.
///
/// # Errors
/// Another daemon holds the node, or the store does not answer.
pub async fn take_name(
    membership: &dyn Membership,
    who: &Candidate,
    runs_bpm: fn(u32) -> bool,
) -> Result<(u64, Instant), MembershipError> {
    let sent = Instant::now();
    take(membership, who, runs_bpm)
        .await
        .map(|epoch| (epoch, sent))
}

async fn take(
    membership: &dyn Membership,
    who: &Candidate,
    runs_bpm: fn(u32) -> bool,
) -> Result<u64, MembershipError> {
    let mut refused = match membership.join(who).await {
        Err(MembershipError::Held(refused)) => refused,
        other => return other,
    };
    refused.holder = bpm_domain::cluster::see_holder(&refused, &who.boot, runs_bpm(refused.pid));
    if refused.holder != Holder::Gone {
        return Err(MembershipError::Held(refused));
    }
    let over = Candidate {
        replaces: Some(refused.epoch),
        ..who.clone()
    };
    let epoch = membership.join(&over).await?;
    tracing::warn!(
        node = %who.node,
        dead_pid = refused.pid,
        dead_epoch = refused.epoch,
        epoch,
        "took the node over from a daemon of this machine that is gone"
    );
    Ok(epoch)
}

/// What the cluster driver carries out its effects through.
pub struct MemberPorts {
    /// The leases.
    pub membership: Arc<dyn Membership>,
    /// This daemon, as it takes its node.
    pub who: Candidate,
    /// Whether a bpm program runs as a pid on this machine.
    pub runs_bpm: fn(u32) -> bool,
    /// The store's write fence.
    pub fence: Arc<dyn WriteFence>,
    /// Where the lease's line and warnings are shown.
    pub status: LeaseStatus,
}

/// A message to the driver.
enum ToMember {
    /// An engine runs, and sweeps through this sweeper.
    Engine(Engine, Arc<Sweeper>),
    /// A keeper holds the processes; it was last told the lease lapses at
    /// this instant.
    Keeper(Arc<dyn ProcessSpawner>, Option<Instant>),
}

/// The running cluster driver of one daemon.
pub struct MemberDriver {
    tx: mpsc::UnboundedSender<ToMember>,
    task: tokio::task::JoinHandle<()>,
}

impl MemberDriver {
    /// Runs `node`'s membership under `timing`, joined for `epoch` by a
    /// take sent at `sent`.
    pub fn start(
        node: NodeId,
        timing: ClusterTiming,
        epoch: u64,
        sent: Instant,
        ports: MemberPorts,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let member = Member::joined(node, timing, epoch, Timestamp::from_millis(0));
        ports.status.set(member.describe("renewed"));
        let run = Run {
            member,
            start: sent,
            ports: Arc::new(ports),
            engine: None,
            keeper: None,
            tasks: JoinSet::new(),
        };
        MemberDriver {
            tx,
            task: tokio::spawn(run.run(rx)),
        }
    }

    /// Hands over the running engine: it is told whether the lease holds,
    /// reconciles a node taken again, and `sweeper` looks at the leases.
    pub fn attach_engine(&self, engine: Engine, sweeper: Sweeper) {
        let _ = self.tx.send(ToMember::Engine(engine, Arc::new(sweeper)));
    }

    /// Hands over the keeper, last told that the lease lapses at `told`:
    /// it hears of every renewal from now on.
    ///
    /// It tells `keeper` first, before any process starts, that the lease
    /// holds until `lapses_at` (the store's fence's view of it).
    ///
    /// # Errors
    /// The keeper cannot be reached.
    pub async fn attach_keeper(
        &self,
        keeper: Arc<dyn ProcessSpawner>,
        lapses_at: Option<Instant>,
    ) -> Result<(), SpawnError> {
        if let Some(at) = lapses_at {
            let left = at.saturating_duration_since(Instant::now());
            keeper.hold_lease(cluster::keeper_hold(left)).await?;
        }
        let _ = self.tx.send(ToMember::Keeper(keeper, lapses_at));
        Ok(())
    }

    /// Stops the driver and whatever it had under way.
    pub fn stop(self) {
        self.task.abort();
    }
}

/// The driver's state, owned by its task.
struct Run {
    member: Member,
    /// The instant the member's clock counts from.
    start: Instant,
    ports: Arc<MemberPorts>,
    engine: Option<(Engine, Arc<Sweeper>)>,
    keeper: Option<Arc<dyn ProcessSpawner>>,
    /// Effects under way; dropped (aborted) with the driver.
    tasks: JoinSet<MemberInput>,
}

impl Run {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn instant(&self, at: Timestamp) -> Instant {
        self.start + Duration::from_millis(at.as_millis())
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<ToMember>) {
        let mut wake = tokio::time::Instant::now();
        let mut open = true;
        loop {
            let input = tokio::select! {
                msg = rx.recv(), if open => match msg {
                    Some(ToMember::Engine(engine, sweeper)) => {
                        self.engine = Some((engine, sweeper));
                        MemberInput::EngineAttached
                    }
                    Some(ToMember::Keeper(keeper, told)) => {
                        self.keeper = Some(keeper);
                        let told = told.map(|at| {
                            Timestamp::from_millis(
                                u64::try_from(at.saturating_duration_since(self.start).as_millis())
                                    .unwrap_or(u64::MAX),
                            )
                        });
                        MemberInput::KeeperAttached { told }
                    }
                    None => {
                        open = false;
                        continue;
                    }
                },
                Some(done) = self.tasks.join_next() => match done {
                    Ok(input) => input,
                    Err(e) => {
                        tracing::error!(error = %e, "a cluster task failed");
                        continue;
                    }
                },
                () = tokio::time::sleep_until(wake) => MemberInput::Tick,
            };
            let now = self.now();
            for effect in self.member.handle(input, now) {
                if let Some(at) = self.carry_out(effect) {
                    wake = tokio::time::Instant::from_std(self.instant(at));
                }
            }
        }
    }

    /// Carries out `effect`; returns when to tick next, for a
    /// [`MemberEffect::WakeAt`].
    fn carry_out(&mut self, effect: MemberEffect) -> Option<Timestamp> {
        let node = self.member.node().clone();
        match effect {
            MemberEffect::Renew { epoch } => {
                let ports = Arc::clone(&self.ports);
                let sent = self.now();
                self.tasks.spawn(async move {
                    match ports.membership.renew(&node, epoch).await {
                        Ok(()) => MemberInput::Renewed { sent },
                        Err(MembershipError::Unavailable(e)) => {
                            MemberInput::RenewFailed(RenewFailure::Unavailable(e))
                        }
                        Err(MembershipError::Held(e)) => {
                            MemberInput::RenewFailed(RenewFailure::Held(e.to_string()))
                        }
                        // Expired, fenced, or a refusal this build does not
                        // know: the lease is no longer this daemon's.
                        Err(e) => MemberInput::RenewFailed(RenewFailure::Lapsed(e.to_string())),
                    }
                });
            }
            MemberEffect::TakeAgain => {
                let ports = Arc::clone(&self.ports);
                let sent = self.now();
                self.tasks.spawn(async move {
                    match take(ports.membership.as_ref(), &ports.who, ports.runs_bpm).await {
                        Ok(epoch) => MemberInput::Taken { epoch, sent },
                        Err(e) => MemberInput::TakeFailed(e.to_string()),
                    }
                });
            }
            MemberEffect::Reconcile { epoch, sent } => {
                let Some((engine, _)) = &self.engine else {
                    return None;
                };
                let engine = engine.clone();
                let fence = Arc::clone(&self.ports.fence);
                let at = self.instant(sent);
                self.tasks.spawn(async move {
                    // The store writes with the new epoch only once the
                    // engine has reconciled its records, inside its loop.
                    let open = Box::new(move || fence.write_with(epoch, at));
                    match engine.rejoin(open).await {
                        Ok(()) => MemberInput::Reconciled { epoch, sent },
                        Err(e) => MemberInput::ReconcileFailed(e.to_string()),
                    }
                });
            }
            MemberEffect::WriteWith { epoch, sent } => {
                self.ports.fence.write_with(epoch, self.instant(sent));
            }
            MemberEffect::HoldKeeper { hold, lapses } => {
                let keeper = self.keeper.clone()?;
                self.tasks.spawn(async move {
                    match keeper.hold_lease(hold).await {
                        Ok(()) => MemberInput::KeeperHeld { lapses },
                        Err(e) => MemberInput::KeeperFailed(e.to_string()),
                    }
                });
            }
            MemberEffect::TellEngine { held } => {
                let Some((engine, _)) = &self.engine else {
                    return None;
                };
                let engine = engine.clone();
                self.tasks.spawn(async move {
                    match engine.lease(held).await {
                        Ok(()) => MemberInput::EngineTold { held },
                        Err(_) => MemberInput::EngineFailed,
                    }
                });
            }
            MemberEffect::Look(LookEffect::Done(swept)) => crate::sweeper::log_swept(&swept),
            MemberEffect::Look(effect) => {
                let Some((_, sweeper)) = &self.engine else {
                    // The member looks only once an engine runs; should
                    // that change, its look still ends.
                    self.tasks
                        .spawn(async { MemberInput::LookFailed("no engine runs here".into()) });
                    return None;
                };
                let sweeper = Arc::clone(sweeper);
                self.tasks.spawn(async move {
                    match sweeper.carry_out(effect).await {
                        Ok(answer) => MemberInput::Look(answer),
                        Err(e) => MemberInput::LookFailed(e.to_string()),
                    }
                });
            }
            MemberEffect::Status(line) => self.ports.status.set(line),
            MemberEffect::Warn(warning) => self.ports.status.warn(warning),
            MemberEffect::Log(Level::Debug, line) => tracing::debug!(%node, "{line}"),
            MemberEffect::Log(Level::Info, line) => tracing::info!(%node, "{line}"),
            MemberEffect::Log(Level::Warn, line) => tracing::warn!(%node, "{line}"),
            MemberEffect::WakeAt(at) => return Some(at),
        }
        None
    }
}
