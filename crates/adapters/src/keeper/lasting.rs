//! A keeper connection that outlives the keeper: when the keeper dies (kill
//! -9, a crash), [`LastingKeeper`] starts a new one and hands it every
//! process the old one ran, so that no record says `lost` while its process
//! runs, and new starts work again within moments.
//!
//! What happens to each record the dead keeper held:
//! - a process still running is adopted by the new keeper (by pid, checked
//!   against its `BPM_PROCESS_ID` mark): it stays `running`, `stop` reaches
//!   its whole tree, and its end is noticed by pidfd. It is no longer the
//!   keeper's child: when the daemon is a child subreaper (see
//!   [`Subreaper`]) and was the dead keeper's parent, the process became
//!   the daemon's child, and its real exit status is reported; otherwise
//!   its end is reported as `lost`, with its exit code unknown;
//! - a process that ended while no keeper watched it is reported the same
//!   way: with the status the daemon reaped, or `lost`;
//! - whether the dead keeper started a record is read from its start log,
//!   in which every start is noted before it is made: a record missing from
//!   it never started, so starting it now cannot start it twice;
//! - records handed over that it never started go back to the manager
//!   ([`ProcessNotice::Withdrawn`]), which starts them itself (or hands
//!   them over again). One it did start is reported
//!   [`ProcessNotice::Adopted`] with its process, whose end is then reported
//!   as above: it is never given back, so never started again;
//! - a start under way (`spawn`) is answered with the process the dead
//!   keeper started, if it did;
//! - a start in the log with no pid and no process running now may have
//!   run and ended unseen: it is reported lost (by `spawn`, as
//!   [`SpawnError::Unknown`]), never started again.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bpm_domain::{ProcessId, Signal};
use bpm_ports::{ProcessNotice, ProcessSpawner, SpawnError, SpawnRequest, Spawned};
use tokio::sync::{mpsc, watch};

use super::{KeeperHello, KeeperSpawner};
use crate::os::{Subreaper, unknown_end};

/// How long an end waits for the daemon to reap the process.
const REAPED_WITHIN: Duration = Duration::from_secs(2);

/// Starts a keeper (or connects to one that runs) and connects to it.
pub type StartKeeper = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<KeeperSpawner, String>> + Send>> + Send + Sync,
>;

/// Told what happened, for the daemon's status and log: the new keeper's
/// description when one took over, and a line on what the change cost.
pub type KeeperReport = Arc<dyn Fn(Option<String>, String) + Send + Sync>;

/// Why a start the dead keeper noted, with no pid and no process running
/// now, is recorded lost.
const UNKNOWN_START: &str = "bpm's keeper died while starting this process, and no process of it runs now: \
     it may have run, its exit code is unknown, and bpm does not start it again";

/// How long a call waits for a new keeper before it fails.
const RESTART_WITHIN: Duration = Duration::from_secs(10);

/// What became of a start a dead keeper may have made.
#[derive(Debug, Clone, Copy)]
enum Found {
    /// Its process runs, with this pid.
    Running(u32),
    /// It started with this pid and has ended.
    Ended(u32),
    /// The start was under way; no process of it runs now.
    Unknown,
}

/// What became of a start a dead keeper noted: `running` is the pid of a
/// process carrying its mark now, `logged` the pid its log gave.
/// Starts a keeper, trying again (backing off up to 2 s) until one starts.
async fn start_keeper(start: &StartKeeper) -> KeeperSpawner {
    let mut delay = Duration::from_millis(50);
    loop {
        match start().await {
            Ok(k) => return k,
            Err(e) => {
                tracing::error!(error = %e, "cannot start a new keeper; trying again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

fn found(running: Option<u32>, logged: Option<u32>) -> Found {
    match (running, logged) {
        (Some(pid), _) => Found::Running(pid),
        (None, Some(pid)) => Found::Ended(pid),
        (None, None) => Found::Unknown,
    }
}

/// A [`ProcessSpawner`] over the node's keeper that starts a new keeper
/// when the one it talks to dies (see the module's documentation).
pub struct LastingKeeper {
    current: std::sync::RwLock<Arc<KeeperSpawner>>,
    /// Counts keepers; a call that found its keeper dead waits for the next.
    generation: watch::Receiver<u64>,
    /// Records handed over to the current keeper and not reported started.
    handed: Arc<Mutex<HashSet<ProcessId>>>,
    /// Records whose `spawn` the current keeper has not answered.
    spawning: Mutex<HashSet<ProcessId>>,
    /// The dead keeper's start log (read before a new keeper empties it).
    start_log: PathBuf,
    /// Records the dead keeper may have started, and what became of each:
    /// answered by `spawn` as started.
    maybe_started: Mutex<HashMap<ProcessId, Found>>,
    tx: mpsc::UnboundedSender<ProcessNotice>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<ProcessNotice>>>,
    /// The daemon's reaper, when it is a subreaper.
    reaper: Option<Arc<Subreaper>>,
    /// Processes a dead keeper left that became the daemon's children.
    inherited: Mutex<HashMap<ProcessId, u32>>,
    /// How the failover records' processes are stood down
    /// ([`SpawnRequest::stand_down`]), passed on to the keeper that adopts them.
    stand_downs: Mutex<HashMap<ProcessId, bpm_domain::StopPolicy>>,
    /// The requests of live processes with checks still to watch (a
    /// readiness not yet reached, a health check, an idle period), armed
    /// again by the keeper that adopts them
    /// ([`ProcessSpawner::watch_again`]).
    checks: Mutex<HashMap<ProcessId, SpawnRequest>>,
}

/// Whether `request` has a check a keeper watches while it runs.
fn has_checks(request: &SpawnRequest) -> bool {
    !matches!(
        request.readiness,
        bpm_domain::ReadinessCheck::None | bpm_domain::ReadinessCheck::Running
    ) || request.health.is_some()
        || request.idle_after.is_some()
}

impl LastingKeeper {
    /// Talks to `first` and, whenever the keeper dies, starts another with
    /// `start`, reading the dead one's `start_log`; each change is told to
    /// `report`. With `reaper`, the exit statuses of a dead keeper's
    /// processes are learnt from it.
    pub fn new(
        first: KeeperSpawner,
        start: StartKeeper,
        start_log: PathBuf,
        report: KeeperReport,
        reaper: Option<Arc<Subreaper>>,
    ) -> Arc<Self> {
        first.keep_orphans();
        let (tx, rx) = mpsc::unbounded_channel();
        let (generation_tx, generation) = watch::channel(0);
        let keeper = Arc::new(LastingKeeper {
            current: std::sync::RwLock::new(Arc::new(first)),
            generation,
            handed: Arc::default(),
            spawning: Mutex::default(),
            stand_downs: Mutex::default(),
            checks: Mutex::default(),
            start_log,
            maybe_started: Mutex::default(),
            tx,
            rx: Mutex::new(Some(rx)),
            reaper,
            inherited: Mutex::default(),
        });
        let weak = Arc::downgrade(&keeper);
        tokio::spawn(async move {
            loop {
                let Some(me) = weak.upgrade() else { return };
                let inner = me.current();
                let Some(mut notices) = inner.notices() else {
                    return;
                };
                drop(me);
                while let Some(notice) = notices.recv().await {
                    let Some(me) = weak.upgrade() else { return };
                    me.forward(notice);
                }
                let Some(me) = weak.upgrade() else { return };
                me.take_over(&inner, &start, &report).await;
                generation_tx.send_modify(|g| *g += 1);
            }
        });
        keeper
    }

    fn current(&self) -> Arc<KeeperSpawner> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Keeps `request`'s checks for a keeper that may adopt its process.
    fn note_checks(&self, request: &SpawnRequest) {
        if has_checks(request) {
            self.checks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(request.id, request.clone());
        }
    }

    fn forward(&self, notice: ProcessNotice) {
        {
            let mut checks = self.checks.lock().unwrap_or_else(PoisonError::into_inner);
            match &notice {
                ProcessNotice::Ready { id } => {
                    if let Some(r) = checks.get_mut(id) {
                        r.readiness = bpm_domain::ReadinessCheck::None;
                        if !has_checks(r) {
                            checks.remove(id);
                        }
                    }
                }
                ProcessNotice::Exited { id, .. }
                | ProcessNotice::Lost { id, .. }
                | ProcessNotice::HandedOver { id, .. } => {
                    checks.remove(id);
                }
                _ => {}
            }
        }
        if let ProcessNotice::HandedOver { next, .. } = &notice {
            self.handed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(next);
        }
        if let ProcessNotice::Lost { id, .. } = &notice
            && let Some(pid) = self
                .inherited
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(id)
        {
            self.report_end(*id, pid);
            return;
        }
        let _ = self.tx.send(notice);
    }

    /// Reports the end of `id`'s process `pid`, which no keeper reaped:
    /// with the status the daemon reaped, if it became the daemon's child,
    /// else as lost, its exit code unknown.
    fn report_end(&self, id: ProcessId, pid: u32) {
        let (tx, reaper) = (self.tx.clone(), self.reaper.clone());
        tokio::spawn(async move {
            let status = match reaper {
                Some(r) => r.status_of(pid, REAPED_WITHIN).await,
                None => None,
            };
            let _ = tx.send(match status {
                Some(status) => ProcessNotice::Exited {
                    id,
                    status,
                    limit: None,
                },
                None => ProcessNotice::Lost {
                    id,
                    reason: unknown_end(pid),
                },
            });
        });
    }

    /// Notes that `pid` (of `id`) may now be the daemon's child.
    fn inherit(&self, id: ProcessId, pid: u32) -> bool {
        let ours = self.reaper.is_some() && Subreaper::is_child(pid);
        if ours {
            self.inherited
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id, pid);
        }
        ours
    }

    /// Where a process that leaves a tree this keeper runs is taken in: the
    /// keeper (a child subreaper), and this daemon when it is one too (a
    /// dead keeper's processes become its children). For
    /// [`ProcSampler::under`](crate::os::ProcSampler::under).
    pub fn subreapers(&self) -> Vec<u32> {
        let keeper = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keeper()
            .pid;
        let mut pids = vec![keeper];
        if self.reaper.is_some() {
            pids.push(std::process::id());
        }
        pids
    }

    /// A daemon that starts with a new keeper, the last one having died
    /// with it, inherits the dead keeper's `started` records (its start log,
    /// read before the new keeper started): a spawn or hand-over of one is
    /// answered with what became of it, as after a keeper's death while the
    /// daemon runs. Call before the first spawn.
    pub fn inherit_starts(&self, started: &HashMap<ProcessId, Option<u32>>) {
        let ids: Vec<ProcessId> = started.keys().copied().collect();
        let running = crate::os::find_marked(&ids);
        let mut maybe = self
            .maybe_started
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (id, pid) in started {
            maybe.insert(*id, found(running.get(id).copied(), *pid));
        }
    }

    /// Reports what became of `id`, handed over and started by a dead
    /// keeper: adopted with its process (which `keeper` takes over if it
    /// runs, else its end is reported), or lost if it left no pid. Returns
    /// whether `keeper` took the process over.
    async fn settle_handed(&self, keeper: &KeeperSpawner, id: ProcessId, found: Found) -> bool {
        let (pid, runs) = match found {
            Found::Running(pid) => (pid, true),
            Found::Ended(pid) => (pid, false),
            Found::Unknown => {
                let _ = self.tx.send(ProcessNotice::Lost {
                    id,
                    reason: UNKNOWN_START.into(),
                });
                return false;
            }
        };
        // Reported before its end can be.
        let _ = self.tx.send(ProcessNotice::Adopted { id, pid });
        self.inherit(id, pid);
        if runs && keeper.adopt(id, pid, None, None).await.unwrap_or(false) {
            return true;
        }
        self.inherited
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        self.report_end(id, pid);
        false
    }

    /// The keeper behind `dead` died: starts another, hands it the dead
    /// one's processes, and settles the records it held.
    async fn take_over(&self, dead: &KeeperSpawner, start: &StartKeeper, report: &KeeperReport) {
        let was = dead.keeper().pid;
        tracing::error!(pid = was, "bpm's keeper died; starting a new one");
        let orphans = dead.orphans();
        let handed: Vec<ProcessId> = self
            .handed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        // Read before a new keeper starts, and empties it.
        let started = crate::os::read_start_log(&self.start_log).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the dead keeper's start log");
            HashMap::new()
        });
        // Starts the dead keeper may have made without saying so: those the
        // engine asked for with `spawn` are answered through it; those
        // handed over are reported adopted (or lost) below, never given back.
        let unreported: Vec<ProcessId> = self
            .spawning
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|id| started.contains_key(id))
            .copied()
            .collect();
        let (started_handed, handed): (Vec<ProcessId>, Vec<ProcessId>) =
            handed.into_iter().partition(|id| started.contains_key(id));
        let running = crate::os::find_marked(
            &unreported
                .iter()
                .chain(&started_handed)
                .copied()
                .collect::<Vec<_>>(),
        );
        let fresh = start_keeper(start).await;
        fresh.keep_orphans();
        let hello = fresh.keeper().clone();
        let (mut adopted, mut ended) = self.adopt_orphans(&fresh, orphans).await;
        for id in started_handed {
            let found = found(
                running.get(&id).copied(),
                started.get(&id).copied().flatten(),
            );
            if self.settle_handed(&fresh, id, found).await {
                adopted += 1;
            } else if !matches!(found, Found::Unknown) {
                ended += 1;
            }
        }
        {
            let mut maybe = self
                .maybe_started
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for id in unreported {
                let found = found(
                    running.get(&id).copied(),
                    started.get(&id).copied().flatten(),
                );
                maybe.insert(id, found);
            }
        }
        let withdrawn = handed.len();
        if !handed.is_empty() {
            let _ = self.tx.send(ProcessNotice::Withdrawn { ids: handed });
        }
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
        self.report_take_over(was, &hello, (adopted, ended, withdrawn), report);
    }

    /// Hands the dead keeper's running processes to `fresh`; returns how
    /// many it adopted and how many had ended meanwhile (reported so).
    async fn adopt_orphans(
        &self,
        fresh: &KeeperSpawner,
        orphans: Vec<(ProcessId, u32, Option<[std::os::fd::OwnedFd; 2]>)>,
    ) -> (usize, usize) {
        let (mut adopted, mut ended) = (0, 0);
        for (id, pid, pipes) in orphans {
            // Before the adoption, whose end may be reported at once.
            self.inherit(id, pid);
            let stand_down = self
                .stand_downs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&id)
                .copied();
            if fresh
                .adopt(id, pid, pipes, stand_down)
                .await
                .unwrap_or(false)
            {
                adopted += 1;
                let checks = self
                    .checks
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&id)
                    .cloned();
                if let Some(request) = checks
                    && let Err(e) = fresh.watch_again(request).await
                {
                    tracing::warn!(%id, error = %e, "cannot watch an adopted process's checks again");
                }
            } else {
                ended += 1;
                self.inherited
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
                self.report_end(id, pid);
            }
        }
        (adopted, ended)
    }

    /// Says, in the log and to the daemon's status, what a take-over did.
    fn report_take_over(
        &self,
        was: u32,
        hello: &KeeperHello,
        (adopted, ended, withdrawn): (usize, usize, usize),
        report: &KeeperReport,
    ) {
        let line = format!(
            "bpm's keeper (pid {was}) died; keeper pid {} took over: {adopted} running processes adopted, \
             {ended} had ended meanwhile, {withdrawn} queued starts taken back; {}",
            hello.pid,
            if self.reaper.is_some() {
                "exit codes come from the daemon, which inherited the processes"
            } else {
                "their exit codes are unknown"
            }
        );
        tracing::warn!("{line}");
        report(
            Some(format!(
                "pid {} (bpm {}, keeper protocol {})",
                hello.pid, hello.version, hello.protocol
            )),
            line,
        );
    }

    /// The keeper to talk to: the current one, or, if it has died, the next
    /// (waiting for it up to [`RESTART_WITHIN`]).
    async fn keeper(&self) -> Result<Arc<KeeperSpawner>, SpawnError> {
        let mut generation = self.generation.clone();
        let deadline = tokio::time::Instant::now() + RESTART_WITHIN;
        loop {
            // Marked seen before the look: a keeper put in place after it
            // wakes the wait below.
            generation.borrow_and_update();
            let current = self.current();
            if !current.is_closed() {
                return Ok(current);
            }
            match tokio::time::timeout_at(deadline, generation.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(SpawnError::Os(format!(
                        "bpm's keeper died and no new one answered within {} s",
                        RESTART_WITHIN.as_secs()
                    )));
                }
            }
        }
    }

    /// What the dead keeper did with `id`, if it may have started it: the
    /// process it started (adopted by the new keeper), or, if that has
    /// ended, its start with a report of its unknown end.
    async fn started_before(&self, id: ProcessId) -> Option<Result<Spawned, SpawnError>> {
        let found = self
            .maybe_started
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id)?;
        Some(match found {
            Found::Running(pid) => {
                let keeper = match self.keeper().await {
                    Ok(k) => k,
                    Err(e) => return Some(Err(e)),
                };
                self.inherit(id, pid);
                if !keeper.reattach(id, pid).await.unwrap_or(false) {
                    self.inherited
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&id);
                    self.report_end(id, pid);
                }
                Ok(Spawned { pid })
            }
            // It ran: started, with its end as the daemon reaped it, or unknown.
            Found::Ended(pid) => {
                self.report_end(id, pid);
                Ok(Spawned { pid })
            }
            Found::Unknown => Err(SpawnError::Unknown(UNKNOWN_START.into())),
        })
    }
}

#[async_trait]
impl ProcessSpawner for LastingKeeper {
    async fn spawn(&self, request: SpawnRequest) -> Result<Spawned, SpawnError> {
        let id = request.id;
        // The keeper first: if it is being replaced, the dead one's starts
        // are known only once the new one has taken over.
        let keeper = self.keeper().await?;
        if let Some(answer) = self.started_before(id).await {
            return answer;
        }
        self.spawning
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id);
        if let Some(stand_down) = request.stand_down {
            self.stand_downs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id, stand_down);
        }
        self.note_checks(&request);
        let answer = keeper.spawn(request.clone()).await;
        let died = answer.is_err() && keeper.is_closed();
        if died {
            // The keeper died during the start: once the next has taken
            // over, the dead one's start log tells whether it was made.
            let next = self.keeper().await;
            self.spawning
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            if let Some(answer) = self.started_before(id).await {
                return answer;
            }
            return next?.spawn(request).await;
        }
        self.spawning
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        if answer.is_err() {
            self.checks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        }
        answer
    }

    async fn signal(&self, id: ProcessId, pid: u32, signal: Signal) -> Result<(), SpawnError> {
        self.keeper().await?.signal(id, pid, signal).await
    }

    async fn write_input(&self, id: ProcessId, data: Vec<u8>) -> Result<(), SpawnError> {
        self.keeper().await?.write_input(id, data).await
    }

    async fn reattach(&self, id: ProcessId, pid: u32) -> Result<bool, SpawnError> {
        self.keeper().await?.reattach(id, pid).await
    }

    async fn watch_again(&self, request: SpawnRequest) -> Result<(), SpawnError> {
        self.keeper().await?.watch_again(request).await
    }

    async fn run_stop_command(
        &self,
        request: SpawnRequest,
        command: String,
        within: Duration,
    ) -> Result<(), SpawnError> {
        self.keeper()
            .await?
            .run_stop_command(request, command, within)
            .await
    }

    async fn wait_output(
        &self,
        id: ProcessId,
        after: bpm_ports::Cursor,
        within: Duration,
    ) -> Result<(), SpawnError> {
        self.keeper().await?.wait_output(id, after, within).await
    }

    fn hands_over(&self) -> bool {
        true
    }

    async fn hand_over(&self, requests: Vec<SpawnRequest>) -> Result<(), SpawnError> {
        let keeper = self.keeper().await?;
        // One a dead keeper started is settled here, never handed over again.
        let (requests, inherited): (Vec<_>, Vec<_>) = {
            let mut maybe = self
                .maybe_started
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut inherited = Vec::new();
            let requests = requests
                .into_iter()
                .filter(|r| match maybe.remove(&r.id) {
                    Some(found) => {
                        inherited.push((r.id, found));
                        false
                    }
                    None => true,
                })
                .collect();
            (requests, inherited)
        };
        for (id, found) in inherited {
            self.settle_handed(&keeper, id, found).await;
        }
        if requests.is_empty() {
            return Ok(());
        }
        let ids: Vec<ProcessId> = requests.iter().map(|r| r.id).collect();
        for r in &requests {
            self.note_checks(r);
        }
        // Noted first: the report of a start can come before the call returns.
        self.handed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(ids.iter().copied());
        let sent = keeper.hand_over(requests).await;
        if sent.is_err() && !keeper.is_closed() {
            let mut handed = self.handed.lock().unwrap_or_else(PoisonError::into_inner);
            for id in &ids {
                handed.remove(id);
            }
        }
        sent
    }

    async fn hold_lease(&self, within: std::time::Duration) -> Result<(), SpawnError> {
        self.keeper().await?.hold_lease(within).await
    }

    async fn withdraw(&self) -> Result<Vec<ProcessId>, SpawnError> {
        let back = self.keeper().await?.withdraw().await?;
        let mut handed = self.handed.lock().unwrap_or_else(PoisonError::into_inner);
        let mut checks = self.checks.lock().unwrap_or_else(PoisonError::into_inner);
        for id in &back {
            handed.remove(id);
            checks.remove(id);
        }
        Ok(back)
    }

    fn exit_recorded(&self, id: ProcessId) {
        self.stand_downs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        self.current().exit_recorded(id);
    }

    fn notices(&self) -> Option<mpsc::UnboundedReceiver<ProcessNotice>> {
        self.rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}
