//! [`OsSpawner`]'s own calls (the keeper's: adopt, hand over, take
//! back) and the [`ProcessSpawner`] port it implements.

#[allow(clippy::wildcard_imports)]
use super::*;

impl OsSpawner {
    /// A spawner capturing output into `output`.
    pub fn new(output: Arc<dyn OutputStore>, config: OsSpawnerConfig) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let start_log = config.start_log.as_ref().and_then(|path| {
            crate::private::options()
                .create(true)
                .append(true)
                .open(path)
                .inspect_err(|e| tracing::error!(path = %path.display(), error = %e, "cannot open the start log"))
                .ok()
        });
        OsSpawner {
            inner: Arc::new(SpawnerShared {
                output,
                base_env: BaseEnv::read(),
                composed: Mutex::new(Vec::new()),
                live: Arc::new(Mutex::new(HashMap::new())),
                handed: Mutex::new(VecDeque::new()),
                starting: Mutex::new(()),
                unrecorded: Mutex::new(HashMap::new()),
                tx,
                notify_dir: probe::NotifyDir::new(config.notify_dir.clone()),
                taken_over: Mutex::default(),
                written: Mutex::default(),
                config,
                start_log,
                lease: Mutex::new(LeaseHold::default()),
                running_on: Mutex::default(),
                probes: Mutex::default(),
                failed_on: Mutex::default(),
            }),
            rx: Mutex::new(Some(rx)),
        }
        .reaping_orphans()
    }

    /// With [`OsSpawnerConfig::subreaper`]: becomes a child subreaper and
    /// reaps the orphans that become its children as they end (in a task
    /// of the current runtime, on `SIGCHLD` and every second).
    fn reaping_orphans(self) -> Self {
        if !self.inner.config.subreaper {
            return self;
        }
        if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
            tracing::warn!(error = %e, "cannot become a child subreaper: processes left running by a leader are found through /proc");
            return self;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return self;
        };
        let weak = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            let mut sigchld =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
            loop {
                match &mut sigchld {
                    Some(s) => {
                        let _ = tokio::time::timeout(Duration::from_secs(1), s.recv()).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(1)).await,
                }
                let Some(inner) = weak.upgrade() else { return };
                // A few small reads: on the runtime's thread.
                inner.reap_orphans();
            }
        });
        self
    }

    /// How many processes this spawner started are still running.
    pub fn running(&self) -> usize {
        lock(&self.inner.live).len()
    }

    /// Whether this spawner runs process `id` (with leader `pid`) and has not yet reported its exit.
    pub fn holds(&self, id: ProcessId, pid: u32) -> bool {
        lock(&self.inner.live)
            .get(&id)
            .is_some_and(|l| l.pid == pid)
    }

    /// Takes over watching process `pid` of record `id`, started by another
    /// keeper that died: its end is noticed by pidfd, and `signal` reaches
    /// its tree through the record's mark. It is not this spawner's child,
    /// so its exit status is unknown: its end (once the rest of its tree has
    /// ended too) is reported as [`ProcessNotice::Lost`], saying so. When
    /// `pid` is gone but processes carrying the mark run on, they are
    /// adopted in its place. `false` if neither runs.
    pub fn adopt(&self, id: ProcessId, pid: u32) -> bool {
        self.adopt_with(id, pid, None)
    }

    /// Record `id`'s process is a failover record's, stood down with `stand_down`
    /// when the node's lease lapses ([`ProcessSpawner::hold_lease`]): for
    /// a process adopted from a keeper that died.
    pub fn stands_down_with(&self, id: ProcessId, stand_down: bpm_domain::StopPolicy) {
        if let Some(live) = lock(&self.inner.live).get_mut(&id) {
            live.stand_down = Some(stand_down);
        }
    }

    /// [`adopt`](Self::adopt), going on copying its output from `pipes`
    /// (the reading ends of its stdout and stderr, which a daemon kept).
    pub fn adopt_with(
        &self,
        id: ProcessId,
        pid: u32,
        pipes: Option<[std::os::fd::OwnedFd; 2]>,
    ) -> bool {
        if self.holds(id, pid) {
            return true;
        }
        // A leader that is gone while processes of its tree run on (it
        // backgrounded them and exited) leaves the record live: they are
        // adopted through its mark.
        let pidfd = marked_pidfd(id, pid);
        if pidfd.is_none() && tree::members(&id.to_string(), None).is_empty() {
            return false;
        }
        let watcher = capture::Watcher::new(id, self.inner.tx.clone(), None);
        let (exited_tx, exited_rx) = watch::channel(false);
        guard(&self.inner.taken_over).insert(id, (watcher.clone(), exited_rx));
        guard(&self.inner.written).insert(id, watcher.activity());
        let (kept, pumps) = self.resume_output(id, pid, pipes, &watcher);
        lock(&self.inner.live).insert(
            id,
            Live {
                pid,
                reaped: pidfd.is_none(),
                stopping: false,
                origin: Origin::Adopted,
                stdin: None,
                stand_down: None,
                halt: Halt::No,
                pipes: kept,
            },
        );
        let inner = self.inner.clone();
        let mut activity = watcher.activity();
        tokio::spawn(async move {
            if let Some(pidfd) = &pidfd {
                let _ = pidfd.readable().await;
            }
            lock(&inner.live).entry(id).and_modify(|l| l.reaped = true);
            if !inner.is_stopping(id) {
                // Its status is unknown: not this spawner's child.
                inner.wait_running_on(id, pid, None, true).await;
            }
            let stopping = inner.is_stopping(id);
            if stopping {
                end_rest_of_tree(id, inner.config.tree_grace).await;
            }
            if let Some(pumps) = pumps {
                drain(pumps, inner.config.drain, &watcher, &mut activity).await;
            }
            lock(&inner.live).remove(&id);
            let _ = exited_tx.send(true);
            guard(&inner.taken_over).remove(&id);
            guard(&inner.written).remove(&id);
            // Its groups, if it was limited, go with it.
            let _ = tokio::task::spawn_blocking(move || limits::finish(id, true)).await;
            inner.forget_starts();
            let _ = inner.tx.send(ProcessNotice::Lost {
                id,
                reason: unknown_end(pid),
            });
        });
        true
    }

    /// Goes on copying an adopted process's output from `pipes`, or from the
    /// copies the process holds of its own when no bpm process kept them
    /// (the daemon and keeper died together): the pipes this spawner keeps
    /// for the next one, and the pumps. Neither if there are none.
    fn resume_output(
        &self,
        id: ProcessId,
        pid: u32,
        pipes: Option<[std::os::fd::OwnedFd; 2]>,
        watcher: &capture::Watcher,
    ) -> (Option<Pipes>, Option<[tokio::task::JoinHandle<()>; 2]>) {
        let share = self.inner.config.share_pipes;
        let resumed = pipes.or_else(|| held_pipes(pid)).map(|[out, err]| {
            let kept: Option<Pipes> = if share {
                Some(Arc::new([out.try_clone()?, err.try_clone()?]))
            } else {
                None
            };
            let out = pipe::Receiver::from_owned_fd(out)?;
            let err = pipe::Receiver::from_owned_fd(err)?;
            std::io::Result::Ok((kept, self.inner.pumps(out, err, watcher)))
        });
        match resumed {
            Some(Ok((kept, pumps))) => (kept, Some(pumps)),
            Some(Err(e)) => {
                tracing::warn!(%id, error = %e, "cannot go on copying an adopted process's output");
                (None, None)
            }
            None => (None, None),
        }
    }

    /// The reading ends of the output pipes of process `id`, while it runs:
    /// a daemon holds a copy, so that the pipes outlive this spawner's
    /// process (a keeper killed) and a new keeper can go on reading them.
    pub fn pipes(&self, id: ProcessId) -> Option<Pipes> {
        lock(&self.inner.live).get(&id)?.pipes.clone()
    }

    /// [`pipes`](Self::pipes) of every process that runs.
    pub fn all_pipes(&self) -> Vec<(ProcessId, Pipes)> {
        lock(&self.inner.live)
            .iter()
            .filter_map(|(id, l)| Some((*id, l.pipes.clone()?)))
            .collect()
    }

    /// Queues requests to start on exits (see [`ProcessSpawner::hand_over`]).
    /// A record this spawner started already, whose exit is not recorded,
    /// is left out: a manager that restarted hands it over before it reads
    /// the report of that start, which is on its way, and starting it on an
    /// exit after its end is recorded would run it twice.
    pub fn accept_handed(&self, requests: Vec<SpawnRequest>) {
        let fresh: Vec<SpawnRequest> = requests
            .into_iter()
            .filter(|r| {
                self.unrecorded(r.id).is_none() && !lock(&self.inner.live).contains_key(&r.id)
            })
            .collect();
        self.inner.handed().extend(fresh);
    }

    /// The pid of `id`'s process, if this spawner started it and its exit
    /// has not been recorded.
    pub fn unrecorded(&self, id: ProcessId) -> Option<u32> {
        self.inner
            .unrecorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .copied()
    }

    /// Notes that `id` was started with `pid` (by an earlier keeper) and
    /// its exit is not recorded: a spawn of it is answered with that
    /// process until [`exit_recorded`](ProcessSpawner::exit_recorded).
    pub fn started_before(&self, id: ProcessId, pid: u32) {
        self.inner
            .unrecorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, pid);
    }

    /// Takes back every request handed over and not yet started.
    pub fn withdraw_handed(&self) -> Vec<ProcessId> {
        self.inner.handed().drain(..).map(|r| r.id).collect()
    }
}

#[async_trait]
impl ProcessSpawner for OsSpawner {
    async fn spawn(&self, request: SpawnRequest) -> Result<Spawned, SpawnError> {
        if let Some(n) = request.log_archive {
            self.inner
                .output
                .keep_archives(request.id, n)
                .await
                .map_err(|e| SpawnError::Invalid(e.to_string()))?;
        }
        if request.limits.is_some() {
            // Its child's move into a v1 memory group can take the kernel
            // ten milliseconds and more, which no runtime thread should wait.
            let inner = self.inner.clone();
            return tokio::task::spawn_blocking(move || inner.start(&request))
                .await
                .map_err(|e| SpawnError::Os(format!("the start was lost: {e}")))?;
        }
        let started = self.inner.start(&request);
        if started.is_ok() {
            tracing::trace!(target: "bpm::hop", id = %request.id, "spawned");
        }
        started
    }

    async fn signal(&self, id: ProcessId, pid: u32, signal: Signal) -> Result<(), SpawnError> {
        self.inner.signal(id, pid, signal).await
    }

    async fn hold_lease(&self, within: Duration) -> Result<(), SpawnError> {
        let thaw = {
            let mut lease = self
                .inner
                .lease
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = lease.now();
            let act = lease.watch.renewed(now, within);
            if !lease.watched {
                lease.watched = true;
                let inner = self.inner.clone();
                let runtime = tokio::runtime::Handle::current();
                std::thread::Builder::new()
                    .name("bpm-lease".into())
                    .spawn(move || inner.watch_lease(&runtime))
                    .map_err(|e| SpawnError::Os(format!("cannot watch the lease: {e}")))?;
            }
            act == Some(bpm_domain::cluster::lease_watch::LeaseAct::Thaw)
        };
        if thaw {
            self.inner.freeze_failover(false);
        }
        Ok(())
    }

    async fn write_input(&self, id: ProcessId, data: Vec<u8>) -> Result<(), SpawnError> {
        let stdin = {
            let map = lock(&self.inner.live);
            let live = map
                .get(&id)
                .filter(|l| !l.reaped)
                .ok_or(SpawnError::NoSuchProcess(id))?;
            live.stdin.clone().ok_or_else(|| {
                SpawnError::Invalid(format!("process {id} was started with stdin closed"))
            })?
        };
        let mut pipe = stdin.lock().await;
        pipe.write_all(&data)
            .await
            .map_err(|e| SpawnError::Os(format!("cannot write to the stdin of {id}: {e}")))?;
        pipe.flush()
            .await
            .map_err(|e| SpawnError::Os(format!("cannot write to the stdin of {id}: {e}")))
    }

    async fn reattach(&self, id: ProcessId, pid: u32) -> Result<bool, SpawnError> {
        // A process started by an earlier manager is not this one's child:
        // watched by pidfd, its exit status unknown.
        Ok(self.adopt(id, pid))
    }

    async fn watch_again(&self, request: SpawnRequest) -> Result<(), SpawnError> {
        self.inner.watch_taken_over(&request).await;
        Ok(())
    }

    async fn run_stop_command(
        &self,
        request: SpawnRequest,
        command: String,
        within: Duration,
    ) -> Result<(), SpawnError> {
        self.inner
            .run_stop_command(&request, &command, within)
            .await
            .map_err(SpawnError::Os)
    }

    async fn wait_output(
        &self,
        id: ProcessId,
        after: bpm_ports::Cursor,
        within: Duration,
    ) -> Result<(), SpawnError> {
        let written = guard(&self.inner.written).get(&id).cloned();
        let Some(mut written) = written else {
            // Not running here: the follower looks again soon.
            bpm_ports::look_again(within).await;
            return Ok(());
        };
        // Marked seen before the store is asked: a write that lands after
        // the look below changes it, so none falls between the two.
        written.borrow_and_update();
        let look = bpm_ports::OutputQuery {
            stream: bpm_ports::StreamSelect::Both,
            cursor: Some(after),
            max_bytes: 1,
            tail_lines: None,
        };
        let past = self
            .inner
            .output
            .read(id, &look)
            .await
            .is_ok_and(|chunk| chunk.next > after);
        if !past {
            // A change, the end of its pumps (the sender dropped) or the time.
            let _ = tokio::time::timeout(within, written.changed()).await;
        }
        Ok(())
    }

    fn hands_over(&self) -> bool {
        true
    }

    async fn hand_over(&self, mut requests: Vec<SpawnRequest>) -> Result<(), SpawnError> {
        // One whose store keeps no archives is not handed over: its spawn
        // says why.
        let mut kept = Vec::with_capacity(requests.len());
        for r in requests.drain(..) {
            if let Some(n) = r.log_archive
                && self.inner.output.keep_archives(r.id, n).await.is_err()
            {
                continue;
            }
            kept.push(r);
        }
        self.accept_handed(kept);
        Ok(())
    }

    async fn withdraw(&self) -> Result<Vec<ProcessId>, SpawnError> {
        Ok(self.withdraw_handed())
    }

    fn exit_recorded(&self, id: ProcessId) {
        self.inner
            .unrecorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    fn notices(&self) -> Option<mpsc::UnboundedReceiver<ProcessNotice>> {
        self.rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}
