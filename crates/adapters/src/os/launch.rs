//! A process's life under the spawner: started (or handed over and
//! taken back), held, watched until it ends, reaped with its tree.

#[allow(clippy::wildcard_imports)]
use super::*;

impl SpawnerShared {
    /// Starts `request`'s process, or answers with the one started for its
    /// record already (running, or ended with its exit not yet recorded).
    pub(super) fn start(self: &Arc<Self>, request: &SpawnRequest) -> Result<Spawned, SpawnError> {
        let _one = self.starting.lock().unwrap_or_else(PoisonError::into_inner);
        let spawned = self.start_alone(request)?;
        self.unrecorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(request.id, spawned.pid);
        Ok(spawned)
    }

    /// Starts the first request handed over, if there is one: its id, and its pid or why not.
    pub(super) fn start_handed(self: &Arc<Self>) -> Option<(ProcessId, Result<u32, String>)> {
        let _one = self.starting.lock().unwrap_or_else(PoisonError::into_inner);
        let request = self.handed().pop_front()?;
        let started = self.start_alone(&request).map(|s| s.pid);
        if let Ok(pid) = started {
            self.unrecorded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(request.id, pid);
        }
        Some((request.id, started.map_err(|e| e.to_string())))
    }

    /// [`start`](Self::start), with `starting` held.
    pub(super) fn start_alone(
        self: &Arc<Self>,
        request: &SpawnRequest,
    ) -> Result<Spawned, SpawnError> {
        self.handed().retain(|q| q.id != request.id);
        if let Some(pid) = self.started_already(request.id) {
            return Ok(Spawned { pid });
        }
        // Bound first: a process quick to say READY=1 is heard.
        let notify = match request.readiness {
            ReadinessCheck::Notify => Some(
                self.notify_dir
                    .bind(&request.id)
                    .map_err(|e| SpawnError::Os(format!("cannot make the notify socket: {e}")))?,
            ),
            _ => None,
        };
        let child = self.launch(request, notify.as_ref().map(|(_, path)| path.as_path()))?;
        let pid = child.pid;
        let (stdout, stderr, pidfd) = self.hold(request, child)?;
        self.watch(request, pid, stdout, stderr, pidfd, notify);
        Ok(Spawned { pid })
    }

    /// The process this spawner started for `id` and whose exit the
    /// manager has not recorded, if any: a second spawn is answered with it.
    pub(super) fn started_already(&self, id: ProcessId) -> Option<u32> {
        if let Some(live) = lock(&self.live).get(&id) {
            return Some(live.pid);
        }
        self.unrecorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .copied()
    }

    /// Starts the process, in a new session, noted in the start log before
    /// and after (with its pid).
    pub(super) fn launch(
        &self,
        request: &SpawnRequest,
        notify: Option<&std::path::Path>,
    ) -> Result<spawn::Child, SpawnError> {
        let program = request
            .argv
            .first()
            .ok_or_else(|| SpawnError::Invalid("empty argument vector".into()))?;
        if let Some(cwd) = &request.cwd {
            crate::usable_cwd(cwd)?;
        }
        let composed = if request.env_files.is_empty() {
            self.composed(&request.env)?
        } else {
            // Read at each start, so an edited file takes effect on the next.
            let mut env = crate::env_file::read(&request.env_files)?;
            env.extend(request.env.iter().map(|(k, v)| (k.clone(), v.clone())));
            Arc::new(Composed::new(&self.base_env, &env)?)
        };
        let own = own_variables(request, notify)?;
        let skip = request.session.as_ref().and(composed.session_var);
        let env: Vec<&CStr> = composed
            .vars
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != skip)
            .map(|(_, kv)| kv.as_c_str())
            .chain(own.iter().map(CString::as_c_str))
            .collect();
        let resolved =
            spawn::resolve(program.as_os_str(), composed.path.as_ref()).map_err(|e| match e {
                spawn::Unrunnable::NotFound => SpawnError::ProgramNotFound(program.clone()),
                spawn::Unrunnable::NotExecutable => SpawnError::PermissionDenied(program.clone()),
            })?;
        // Before the start: a record missing from the log never started here.
        self.note_start(&format!("{}\n", request.id))
            .map_err(|e| SpawnError::Os(format!("cannot note the start in the start log: {e}")))?;
        let stdin_pipe = request.stdin == StdinMode::Pipe;
        let cwd = request.cwd.as_deref();
        let spawned = if request.limits.is_none() && request.tty.is_none() {
            spawn::spawn(&resolved, &request.argv, &env, cwd, stdin_pipe)
        } else {
            let confinement = request
                .limits
                .as_ref()
                .map(|asked| limits::Confinement::make(request.id, asked))
                .transpose()
                .map_err(|e| {
                    limits::finish(request.id, true);
                    SpawnError::Invalid(e)
                })?;
            let extra = spawn::Forked {
                confinement: confinement.as_ref(),
                tty: request.tty,
            };
            let spawned =
                spawn::spawn_forked(&resolved, &request.argv, &env, cwd, stdin_pipe, &extra);
            if spawned.is_err() && confinement.is_some() {
                limits::finish(request.id, true);
            }
            spawned
        };
        let child = spawned.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SpawnError::ProgramNotFound(program.clone()),
            std::io::ErrorKind::PermissionDenied => SpawnError::PermissionDenied(program.clone()),
            std::io::ErrorKind::InvalidInput => SpawnError::Invalid(e.to_string()),
            _ => SpawnError::Os(format!("cannot start {program:?}: {e}")),
        })?;
        // After it: its pid, for whoever must report its end.
        let _ = self.note_start(&format!("{} {}\n", request.id, child.pid));
        Ok(child)
    }

    /// Appends `line` to the start log, if this spawner keeps one.
    pub(super) fn note_start(&self, line: &str) -> std::io::Result<()> {
        match &self.start_log {
            Some(log) => std::io::Write::write_all(&mut &*log, line.as_bytes()),
            None => Ok(()),
        }
    }

    /// Sends `signal` to record `id`'s process group `pid` and to what left it.
    pub(super) async fn signal(
        &self,
        id: ProcessId,
        pid: u32,
        signal: Signal,
    ) -> Result<(), SpawnError> {
        let (group_alive, thaw) = {
            let mut map = lock(&self.live);
            match map.get_mut(&id) {
                Some(live) if live.pid == pid => {
                    // A process stopped for a late lease gets the signal
                    // that ends it, then CONT, to act on it.
                    let thaw = is_terminating(signal) && live.halt == Halt::Frozen;
                    if is_terminating(signal) {
                        live.stopping = true;
                    }
                    // Its caller's pause and resume: a renewal of the lease
                    // never continues a process its caller paused.
                    live.halt = match signal {
                        Signal::Stop => Halt::Paused,
                        Signal::Cont => Halt::No,
                        _ if thaw => Halt::No,
                        _ => live.halt,
                    };
                    (!live.reaped && live.origin != Origin::Adopted, thaw)
                }
                // Not ours, or already gone: signalling an ended process is not an error.
                _ => return Ok(()),
            }
        };
        let leader = group_alive.then_some(pid);
        tokio::task::spawn_blocking(move || {
            deliver(id, pid, leader, signal)?;
            if thaw {
                deliver(id, pid, leader, Signal::Cont)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| SpawnError::Os(e.to_string()))?
    }

    /// Holds the started `child` among the live processes; returns what is
    /// left to watch: its output pipes and its pidfd.
    pub(super) fn hold(
        &self,
        request: &SpawnRequest,
        child: spawn::Child,
    ) -> Result<
        (
            pipe::Receiver,
            pipe::Receiver,
            AsyncFd<std::os::fd::OwnedFd>,
        ),
        SpawnError,
    > {
        let pid = child.pid;
        let os = |e: std::io::Error| SpawnError::Os(format!("cannot watch process {pid}: {e}"));
        // A terminal's master side is no pipe: it is taken as it is (it is
        // non-blocking already).
        let stdin = match child.stdin {
            Some(fd) if child.terminal => Some(Arc::new(tokio::sync::Mutex::new(
                pipe::Sender::from_owned_fd_unchecked(fd).map_err(os)?,
            ))),
            Some(fd) => Some(Arc::new(tokio::sync::Mutex::new(
                pipe::Sender::from_owned_fd(fd).map_err(os)?,
            ))),
            None => None,
        };
        // A terminal dies with the master side the keeper holds: copies
        // in the daemon would keep it alive with no one able to read it.
        let pipes = if self.config.share_pipes && !child.terminal {
            Some(Arc::new([
                child.stdout.try_clone().map_err(os)?,
                child.stderr.try_clone().map_err(os)?,
            ]))
        } else {
            None
        };
        let stdout = if child.terminal {
            pipe::Receiver::from_owned_fd_unchecked(child.stdout).map_err(os)?
        } else {
            pipe::Receiver::from_owned_fd(child.stdout).map_err(os)?
        };
        let stderr = pipe::Receiver::from_owned_fd(child.stderr).map_err(os)?;
        // SAFETY: the OwnedFd moves into the AsyncFd, stays open and keeps its number until dropped.
        #[allow(unsafe_code)]
        let pidfd =
            unsafe { AsyncFd::register_with_interest(child.pidfd, tokio::io::Interest::READABLE) }
                .map_err(|e| SpawnError::Os(format!("cannot watch process {pid}: {e}")))?;
        // A limited process's end is reported with what its limits saw,
        // never folded into a start handed over in its place.
        let origin = if request.hands_over && request.limits.is_none() {
            Origin::HandsOver
        } else {
            Origin::Started
        };
        let live = Live {
            pid,
            reaped: false,
            stopping: false,
            origin,
            stdin,
            stand_down: request.stand_down,
            halt: Halt::No,
            pipes,
        };
        lock(&self.live).insert(request.id, live);
        Ok((stdout, stderr, pidfd))
    }

    /// Copies the process's output, watches its readiness and idleness,
    /// and reports its end (starting the next record handed over first).
    pub(super) fn watch(
        self: &Arc<Self>,
        request: &SpawnRequest,
        pid: u32,
        stdout: pipe::Receiver,
        stderr: pipe::Receiver,
        pidfd: AsyncFd<std::os::fd::OwnedFd>,
        mut notify: Option<(tokio::net::UnixDatagram, std::path::PathBuf)>,
    ) {
        let id = request.id;
        let (exited_tx, exited_rx) = watch::channel(false);
        let pattern = match &request.readiness {
            ReadinessCheck::LogPattern { pattern } => Some(pattern.clone()),
            _ => None,
        };
        let watcher = capture::Watcher::new(id, self.tx.clone(), pattern);
        guard(&self.written).insert(id, watcher.activity());
        let pumps = self.pumps(stdout, stderr, &watcher);
        self.arm(request, &watcher, &exited_rx, notify.take());
        let inner = self.clone();
        // Output from the start on counts as activity while the end drains.
        let activity = watcher.activity();
        let leader_only = request.leader_only;
        let ending = Ending {
            leader_only,
            limited: request.limits.is_some(),
        };
        tokio::spawn(async move {
            let mut status = reap(&pidfd, &inner.live, id).await;
            if !leader_only && !inner.is_stopping(id) {
                inner.wait_running_on(id, pid, Some(status), false).await;
                status = inner.end_of_tree(id, status);
            }
            let _ = exited_tx.send(true);
            let output = (pumps, watcher, activity);
            inner.ended(id, pid, status, output, ending).await;
        });
    }

    /// Arms the checks `request` asks for on its process, whose output
    /// `watcher` sees and whose end `exited` says: readiness (through
    /// `notify`'s socket for notify readiness), health and idleness.
    pub(super) fn arm(
        self: &Arc<Self>,
        request: &SpawnRequest,
        watcher: &capture::Watcher,
        exited_rx: &watch::Receiver<bool>,
        mut notify: Option<(tokio::net::UnixDatagram, std::path::PathBuf)>,
    ) {
        let probe = match &request.readiness {
            ReadinessCheck::Port { port } => Some(bpm_domain::Probe::Port { port: *port }),
            ReadinessCheck::Http { target } => Some(bpm_domain::Probe::Http {
                target: target.clone(),
            }),
            ReadinessCheck::Exec { command } => Some(bpm_domain::Probe::Exec {
                command: command.clone(),
            }),
            _ => None,
        };
        if let Some(probe) = probe {
            let pace = request.ready_pace.unwrap_or_else(|| {
                let every = match probe {
                    bpm_domain::Probe::Port { .. } => self.config.port_poll,
                    _ => probe::EVERY,
                };
                bpm_domain::Pace::until_ready(bpm_domain::Span::new(every).unwrap_or_default())
            });
            let (rx, inner) = (exited_rx.clone(), self.clone());
            let request = request.clone();
            tokio::spawn(inner.wait_until_ready(probe, pace, request, watcher.clone(), rx));
        }
        if request.readiness == ReadinessCheck::Notify
            && let Some((socket, path)) = notify.take()
        {
            let rx = exited_rx.clone();
            tokio::spawn(probe::wait_for_notify(socket, path, watcher.clone(), rx));
        }
        if let Some(check) = request.health.clone() {
            let (rx, inner) = (exited_rx.clone(), self.clone());
            tokio::spawn(inner.watch_health(check, request.clone(), rx));
        }
        if let Some(idle) = request.idle_after {
            let idle = idle.as_duration();
            tokio::spawn(capture::watch_idle(
                idle,
                watcher.clone(),
                exited_rx.clone(),
            ));
        }
    }

    /// [`ProcessSpawner::watch_again`]: the checks of a process taken over
    /// before it was ready, armed as its start would have. A log pattern
    /// is looked for in the output kept so far too (the line may have come
    /// while no bpm process watched); notify readiness binds again the
    /// socket its environment names.
    pub(super) async fn watch_taken_over(self: &Arc<Self>, request: &SpawnRequest) {
        let id = request.id;
        // Taken out: the checks are armed once, however often asked.
        let Some((watcher, exited)) = guard(&self.taken_over).remove(&id) else {
            return;
        };
        let mut notify = None;
        match &request.readiness {
            ReadinessCheck::LogPattern { pattern } => {
                // Set first, so that no line falls between the two looks.
                watcher.look_for(pattern.clone());
                let query = bpm_ports::OutputQuery {
                    tail_lines: Some(1_000),
                    ..bpm_ports::OutputQuery::default()
                };
                if let Ok(chunk) = self.output.read(id, &query).await {
                    let bytes: Vec<u8> = chunk.pieces.into_iter().flat_map(|p| p.data).collect();
                    let text = String::from_utf8_lossy(&bytes);
                    if text.lines().any(|l| pattern.is_match(l)) {
                        watcher.ready();
                    }
                }
            }
            ReadinessCheck::Notify => {
                let pid = lock(&self.live).get(&id).map(|l| l.pid);
                let path = pid
                    .and_then(|pid| tree::variable_of(pid, b"NOTIFY_SOCKET"))
                    .map(|p| {
                        std::path::PathBuf::from(
                            <OsString as std::os::unix::ffi::OsStringExt>::from_vec(p),
                        )
                    });
                if let Some(path) = path {
                    match probe::NotifyDir::rebind(&path) {
                        Ok(socket) => notify = Some((socket, path)),
                        Err(e) => {
                            tracing::warn!(%id, error = %e, "cannot listen again on the notify socket");
                        }
                    }
                }
            }
            _ => {}
        }
        self.arm(request, &watcher, &exited, notify);
    }

    /// Whether a terminating signal was sent to record `id`'s process.
    pub(super) fn is_stopping(&self, id: ProcessId) -> bool {
        lock(&self.live).get(&id).is_some_and(|l| l.stopping)
    }

    /// The process of `id` ended with `status`: ends the rest of its tree if
    /// it was being stopped, drains its output, and reports the end.
    pub(super) async fn ended(
        self: &Arc<Self>,
        id: ProcessId,
        pid: u32,
        status: ExitStatus,
        (pumps, watcher, mut activity): Output,
        ending: Ending,
    ) {
        let stopping = lock(&self.live).get_mut(&id).map(|l| {
            l.stdin = None;
            l.stopping
        });
        if stopping == Some(true) {
            end_rest_of_tree(id, self.config.tree_grace).await;
        }
        drain(pumps, self.config.drain, &watcher, &mut activity).await;
        guard(&self.written).remove(&id);
        // What a leader-only record's leader left runs on, by its own
        // choice, in the groups that still limit it.
        let limit = if ending.limited {
            match limits::finish_quickly(id) {
                Ok(hit) => hit,
                Err(seen) => {
                    let kill = !ending.leader_only;
                    tokio::task::spawn_blocking(move || limits::finish(id, kill))
                        .await
                        .unwrap_or_default()
                        .or(seen)
                }
            }
        } else {
            None
        };
        let hands_over = lock(&self.live)
            .remove(&id)
            .is_some_and(|l| l.origin == Origin::HandsOver);
        tracing::trace!(%id, pid, "process ended");
        self.forget_starts();
        // The next request handed over starts in its place, before the
        // manager hears of the exit.
        let next = if hands_over {
            self.start_handed()
        } else {
            None
        };
        let notice = match next {
            Some((next, started)) => ProcessNotice::HandedOver {
                id,
                status,
                next,
                started,
            },
            None => ProcessNotice::Exited { id, status, limit },
        };
        let _ = self.tx.send(notice);
    }

    /// Copies `stdout` and `stderr` into the output store, one task each.
    pub(super) fn pumps(
        &self,
        stdout: pipe::Receiver,
        stderr: pipe::Receiver,
        watcher: &capture::Watcher,
    ) -> [tokio::task::JoinHandle<()>; 2] {
        [
            tokio::spawn(capture::pump(
                stdout,
                Stream::Stdout,
                self.output.clone(),
                watcher.clone(),
            )),
            tokio::spawn(capture::pump(
                stderr,
                Stream::Stderr,
                self.output.clone(),
                watcher.clone(),
            )),
        ]
    }
}

/// A process's output: the tasks copying it, their watcher, and its activity.
pub(super) type Output = (
    [tokio::task::JoinHandle<()>; 2],
    capture::Watcher,
    watch::Receiver<tokio::time::Instant>,
);

/// Sends `signal` to record `id`'s tree: its group while `leader` (its
/// unreaped leader `pid`) keeps the group id reserved, then every process
/// that left the group.
pub(super) fn deliver(
    id: ProcessId,
    pid: u32,
    leader: Option<u32>,
    signal: Signal,
) -> Result<(), SpawnError> {
    if leader.is_some() {
        // The unreaped leader keeps its group id reserved, so the group is still this tree's.
        if let (Some(group), Some(sig)) = (
            Pid::from_raw(i32::try_from(pid).unwrap_or(0)),
            tree::os_signal(signal.number()),
        ) {
            match kill_process_group(group, sig) {
                Ok(()) | Err(rustix::io::Errno::SRCH) => {}
                Err(e) => {
                    return Err(SpawnError::Os(format!(
                        "cannot signal process group {pid}: {e}"
                    )));
                }
            }
        }
    }
    // Then everything that left the group.
    let id_text = id.to_string();
    let number = signal.number();
    for member in tree::members(&id_text, leader) {
        tree::signal_seen(member, number);
    }
    // And what is in its cgroups, if it has any.
    limits::signal_group(id, number);
    Ok(())
}

/// bpm's own variables for the process: its record's mark, node, session
/// and fencing token.
pub(super) fn own_variables(
    request: &SpawnRequest,
    notify: Option<&std::path::Path>,
) -> Result<Vec<CString>, SpawnError> {
    let nul = |_| SpawnError::Invalid("a NUL byte in an environment variable".into());
    let id_text = request.id.to_string();
    let mut own = Vec::with_capacity(4);
    own.push(spawn::variable(tree::MARK.as_bytes(), id_text.as_bytes()).map_err(nul)?);
    own.push(spawn::variable(b"BPM_NODE", request.node.as_str().as_bytes()).map_err(nul)?);
    if let Some(session) = &request.session {
        own.push(spawn::variable(b"BPM_SESSION", session.as_str().as_bytes()).map_err(nul)?);
    }
    if request.token > 0 {
        let token = request.token.to_string();
        own.push(spawn::variable(b"BPM_FENCE", token.as_bytes()).map_err(nul)?);
    }
    if let Some(port) = request.port {
        let port = port.to_string();
        own.push(spawn::variable(b"PORT", port.as_bytes()).map_err(nul)?);
        own.push(spawn::variable(b"BPM_PORT", port.as_bytes()).map_err(nul)?);
    }
    if let Some(path) = notify {
        own.push(
            spawn::variable(b"NOTIFY_SOCKET", path.as_os_str().as_encoded_bytes()).map_err(nul)?,
        );
    }
    Ok(own)
}

/// Waits for the process behind `pidfd` to exit and reaps it. Reaping happens
/// under the lock that `signal` takes, so the group is never signalled by a
/// pid that was freed.
pub(super) async fn reap(
    pidfd: &AsyncFd<std::os::fd::OwnedFd>,
    live: &LiveMap,
    id: ProcessId,
) -> ExitStatus {
    loop {
        let mut ready = match pidfd.readable().await {
            Ok(ready) => ready,
            Err(e) => {
                tracing::error!(%id, error = %e, "cannot wait for a process");
                return ExitStatus::Code(-1);
            }
        };
        let mut map = lock(live);
        match waitid(
            WaitId::PidFd(pidfd.get_ref().as_fd()),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        ) {
            Ok(Some(status)) => {
                if let Some(l) = map.get_mut(&id) {
                    l.reaped = true;
                }
                // One hop of an exit's way to whoever waits (`BPM_BENCH=exit`).
                tracing::trace!(target: "bpm::hop", %id, "reaped");
                return exit_status(&status);
            }
            Ok(None) => ready.clear_ready(),
            Err(e) => {
                tracing::error!(%id, error = %e, "cannot reap a process");
                return ExitStatus::Code(-1);
            }
        }
    }
}

/// Lets a process's pipes drain after its exit, so its output is complete
/// when the exit is announced: while they are still copying (a slow disk
/// under the output files), for up to [`DRAIN_BUSY`]; a quiet pipe that
/// stays open (a descendant holds it) for `quiet`.
pub(super) async fn drain(
    pumps: [tokio::task::JoinHandle<()>; 2],
    quiet: Duration,
    copier: &capture::Watcher,
    activity: &mut watch::Receiver<tokio::time::Instant>,
) {
    let busy_until = tokio::time::Instant::now() + DRAIN_BUSY;
    for mut pump in pumps {
        loop {
            match tokio::time::timeout(quiet, &mut pump).await {
                Err(_)
                    if (copier.copying() || activity.has_changed().unwrap_or(false))
                        && tokio::time::Instant::now() < busy_until =>
                {
                    activity.borrow_and_update();
                }
                _ => break,
            }
        }
    }
}

/// After a stopped leader exits, gives the rest of its tree `grace` to end, then kills it.
pub(super) async fn end_rest_of_tree(id: ProcessId, grace: Duration) {
    let id_text = id.to_string();
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let text = id_text.clone();
        let rest = tokio::task::spawn_blocking(move || tree::members(&text, None))
            .await
            .unwrap_or_default();
        if rest.is_empty() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            for member in rest {
                tree::signal_seen(member, Signal::Kill.number());
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
