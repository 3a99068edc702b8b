//! Readiness and health: the checks a process is watched with while
//! it starts and while it runs (a command run once, a port, HTTP, a log
//! line, what runs on in its tree).

#[allow(clippy::wildcard_imports)]
use super::*;

impl SpawnerShared {
    /// Runs `command` once (`sh -c`, in the process's directory and with
    /// its variables, without bpm's mark, so that it never counts as the
    /// record's own), cut at `within`: `Ok` when it exits 0, otherwise its
    /// exit and the start of its output.
    pub(super) async fn exec_once(
        &self,
        command: &str,
        request: &SpawnRequest,
        within: Duration,
    ) -> Result<(), String> {
        let (result, out, err) = self.exec_capture(command, request, within).await;
        result.map_err(|why| {
            let mut text = String::from_utf8_lossy(&out).into_owned();
            text.push_str(&String::from_utf8_lossy(&err));
            let text: String = text.trim().chars().take(1024).collect();
            if why.starts_with('`') && why.contains(" exited ") {
                format!("{why}: {text}")
            } else {
                why
            }
        })
    }

    /// [`exec_once`](Self::exec_once), with what the command wrote to its
    /// stdout and its stderr as they are.
    async fn exec_capture(
        &self,
        command: &str,
        request: &SpawnRequest,
        within: Duration,
    ) -> (Result<(), String>, Vec<u8>, Vec<u8>) {
        let child = {
            // No orphan is reaped while it starts, so its pid is known to
            // the reaper before it can end.
            let _one = self.starting.lock().unwrap_or_else(PoisonError::into_inner);
            let mut c = tokio::process::Command::new("/bin/sh");
            c.arg("-c")
                .arg(command)
                .envs(
                    request
                        .env
                        .iter()
                        .map(|(k, v)| (k.as_os_str(), v.as_os_str())),
                )
                .env_remove(tree::MARK)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true);
            if let Some(port) = request.port {
                c.env("PORT", port.to_string())
                    .env("BPM_PORT", port.to_string());
            }
            if let Some(cwd) = &request.cwd {
                c.current_dir(cwd);
            }
            let child = match c.spawn() {
                Ok(child) => child,
                Err(e) => return (Err(format!("{command}: {e}")), Vec::new(), Vec::new()),
            };
            if let Some(pid) = child.id() {
                guard(&self.probes).insert(pid);
            }
            child
        };
        let pid = child.id();
        let done = tokio::time::timeout(within, child.wait_with_output()).await;
        if let Some(pid) = pid {
            guard(&self.probes).remove(&pid);
        }
        match done {
            Ok(Ok(out)) if out.status.success() => (Ok(()), out.stdout, out.stderr),
            Ok(Ok(out)) => (
                Err(format!("`{command}` exited {}", exit_status_of(out.status))),
                out.stdout,
                out.stderr,
            ),
            Ok(Err(e)) => (Err(format!("{command}: {e}")), Vec::new(), Vec::new()),
            Err(_) => (
                Err(format!("`{command}` took over {within:?}")),
                Vec::new(),
                Vec::new(),
            ),
        }
    }

    /// [`ProcessSpawner::run_stop_command`]: the command run once, what it
    /// wrote kept in the record's output, with a line saying how it ended
    /// when that was not exit 0.
    pub(super) async fn run_stop_command(
        &self,
        request: &SpawnRequest,
        command: &str,
        within: Duration,
    ) -> Result<(), String> {
        let (result, out, err) = self.exec_capture(command, request, within).await;
        let id = request.id;
        for (stream, bytes) in [(Stream::Stdout, out), (Stream::Stderr, err)] {
            if !bytes.is_empty() {
                let _ = self.output.append(id, stream, &bytes).await;
            }
        }
        if let Err(why) = &result {
            let line = format!("bpm: the stop command {why}\n");
            let _ = self
                .output
                .append(id, Stream::Stderr, line.as_bytes())
                .await;
        }
        result
    }

    /// One try of `probe` on the process of `request`, cut at `within`:
    /// `Ok`, or why it failed.
    async fn probe_once(
        &self,
        probe: &bpm_domain::Probe,
        request: &SpawnRequest,
        within: Duration,
    ) -> Result<(), String> {
        match probe {
            bpm_domain::Probe::Http { target } => match probe::url_of(target, request.port) {
                Some(url) => probe::http_check(&url, within).await,
                None => Err(format!("no port for {target}")),
            },
            bpm_domain::Probe::Exec { command } => self.exec_once(command, request, within).await,
            bpm_domain::Probe::Port { port } => {
                let connect = tokio::net::TcpStream::connect(("127.0.0.1", *port));
                match tokio::time::timeout(within, connect).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("port {port}: {e}")),
                    Err(_) => Err(format!("port {port}: no answer within {within:?}")),
                }
            }
        }
    }

    /// Tries `probe` as `pace` says until it passes `successes` times in a
    /// row (ready then), or fails `failures` times in a row (reported as
    /// [`ProcessNotice::Health`], unhealthy, with the last failure), or
    /// the process exits.
    pub(super) async fn wait_until_ready(
        self: Arc<Self>,
        probe: bpm_domain::Probe,
        pace: bpm_domain::Pace,
        request: SpawnRequest,
        watcher: capture::Watcher,
        mut exited: watch::Receiver<bool>,
    ) {
        let mut wait = pace.initial_delay.as_duration();
        let (mut passed, mut failed) = (0u32, 0u32);
        loop {
            if !wait.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = exited.wait_for(|e| *e) => return,
                }
            }
            wait = pace.every.as_duration();
            match self
                .probe_once(&probe, &request, pace.timeout.as_duration())
                .await
            {
                Ok(()) => {
                    (passed, failed) = (passed + 1, 0);
                    if passed >= pace.successes {
                        watcher.ready();
                        return;
                    }
                }
                Err(why) => {
                    (passed, failed) = (0, failed + 1);
                    if pace.failures.is_some_and(|most| failed >= most) {
                        let _ = self.tx.send(ProcessNotice::Health {
                            id: request.id,
                            healthy: false,
                            detail: Some(format!(
                                "readiness check failed {failed} times in a row: {why}"
                            )),
                        });
                        return;
                    }
                }
            }
        }
    }

    /// Runs the process's health check every `every` while it runs (the
    /// first after `initial_delay`, when given), and reports
    /// [`ProcessNotice::Health`] when it first passes, when it passes
    /// `successes` times in a row again after failing, and when it failed
    /// `failures` times in a row.
    pub(super) async fn watch_health(
        self: Arc<Self>,
        check: bpm_domain::HealthCheck,
        request: SpawnRequest,
        mut exited: watch::Receiver<bool>,
    ) {
        let within = check.timeout.as_duration();
        let mut wait = check.initial_delay.unwrap_or(check.every).as_duration();
        let (mut told, mut passed, mut failed) = (None, 0u32, 0u32);
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = exited.wait_for(|e| *e) => return,
            }
            wait = check.every.as_duration();
            let (healthy, detail) = match self.probe_once(&check.probe, &request, within).await {
                Ok(()) => {
                    (passed, failed) = (passed + 1, 0);
                    // The first pass says it is healthy; after a failure,
                    // `successes` passes in a row do.
                    if told == Some(false) && passed < check.successes {
                        continue;
                    }
                    (true, None)
                }
                Err(why) => {
                    (passed, failed) = (0, failed + 1);
                    if failed < check.failures {
                        continue;
                    }
                    (false, Some(why))
                }
            };
            if told != Some(healthy) {
                told = Some(healthy);
                let _ = self.tx.send(ProcessNotice::Health {
                    id: request.id,
                    healthy,
                    detail,
                });
            }
        }
    }

    /// The processes of record `id`'s tree that run on after its leader
    /// was reaped: those that carry its mark, and their descendants. As a
    /// subreaper, whatever the leader left behind became a child of this
    /// process, so a look at its children answers "none" at once in the
    /// usual case; only when one carries the mark, or for a process this
    /// spawner did not start (`adopted`), is all of /proc read.
    pub(super) fn running_on(
        &self,
        id: ProcessId,
        leader: u32,
        adopted: bool,
    ) -> Vec<procfs::Seen> {
        if self.none_runs_on(id, leader, adopted) == Look::Nothing {
            return Vec::new();
        }
        tree::members(&id.to_string(), None)
    }

    /// Whether a look at this subreaper's own children shows that nothing
    /// of record `id`'s tree runs on (a few small reads, cheap enough for
    /// the runtime's thread): [`Look::RunsOn`] when one carries its mark (or
    /// the process was adopted), and only all of /proc can tell the rest.
    ///
    /// Without the subreaper, the leader's process group tells: empty, and
    /// nothing is waited for (one `kill(-group, 0)`; a full look through
    /// /proc on every exit costs an embedded engine milliseconds). What
    /// left the group (`setsid`, a daemon) is then not waited for there,
    /// though a stop still reaches it.
    ///
    /// [`Look::Unsure`] while a child's environment cannot be read yet (it
    /// is in the middle of an `execve`): ask again shortly.
    pub(super) fn none_runs_on(&self, id: ProcessId, leader: u32, adopted: bool) -> Look {
        if adopted {
            return Look::RunsOn;
        }
        if !self.config.subreaper {
            return if tree::group_alive(leader) {
                Look::RunsOn
            } else {
                Look::Nothing
            };
        }
        let leaders = self.unreaped_leaders();
        let needle = format!("{}={id}", tree::MARK).into_bytes();
        let (mut unsure, mut in_exec) = (false, false);
        for pid in subreaper::children() {
            if leaders.contains(&pid) {
                continue;
            }
            match tree::mark_of(pid, &needle) {
                Some(true) => return Look::RunsOn,
                Some(false) => {}
                None => {
                    // A zombie the reaper has not reaped yet is no one's.
                    if let Some(s) = procfs::stat(pid).filter(|s| !s.has_ended()) {
                        unsure = true;
                        in_exec |= tree::in_exec(&s);
                    }
                }
            }
        }
        if unsure {
            Look::Unsure { in_exec }
        } else {
            Look::Nothing
        }
    }

    /// [`none_runs_on`](Self::none_runs_on), asking again while it cannot
    /// tell: for up to [`IN_EXEC_FOR`] while a child is in the middle of an
    /// `execve`, else for up to [`UNSURE_FOR`]; then what it can tell (a
    /// process whose environment stays empty carries no mark).
    pub(super) async fn nothing_runs_on(&self, id: ProcessId, leader: u32, adopted: bool) -> bool {
        let began = tokio::time::Instant::now();
        loop {
            let patience = match self.none_runs_on(id, leader, adopted) {
                Look::Nothing => return true,
                Look::RunsOn => return false,
                Look::Unsure { in_exec: true } => IN_EXEC_FOR,
                Look::Unsure { in_exec: false } => UNSURE_FOR,
            };
            if began.elapsed() >= patience {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Once record `id`'s leader ended with `status`: while processes of
    /// its tree run on, says so ([`ProcessNotice::LeaderExited`]) and waits
    /// until the last of them ends (or the record is being stopped, which
    /// ends them).
    /// An adopted leader's status is unknown (`None`): nothing is said then.
    pub(super) async fn wait_running_on(
        self: &Arc<Self>,
        id: ProcessId,
        leader: u32,
        status: Option<ExitStatus>,
        adopted: bool,
    ) {
        if self.nothing_runs_on(id, leader, adopted).await {
            return;
        }
        let mut told: Vec<RunningOn> = Vec::new();
        let mut missed = 0;
        loop {
            let inner = self.clone();
            let rest = tokio::task::spawn_blocking(move || inner.running_on(id, leader, adopted))
                .await
                .unwrap_or_default();
            // Found by neither look: ended. (A look through /proc that
            // missed a child the first look saw, caught in an `execve`,
            // is asked again.)
            if rest.is_empty() {
                missed += 1;
                if missed > 25 || self.nothing_runs_on(id, leader, adopted).await {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            }
            missed = 0;
            if self.config.subreaper {
                let mut noted = guard(&self.running_on);
                for seen in &rest {
                    noted.insert(seen.pid, id);
                }
            }
            // Said again when what runs on changed (one ended, one was
            // started, one went from `setsid` to what it runs).
            let mut running: Vec<RunningOn> = rest
                .iter()
                .map(|s| RunningOn {
                    pid: s.pid,
                    name: tree::command_name(s.pid),
                })
                .collect();
            running.sort_by_key(|r| r.pid);
            if let Some(status) = status
                && running != told
            {
                tracing::debug!(%id, running = rest.len(), "leader exited; its tree runs on");
                told.clone_from(&running);
                let _ = self.tx.send(ProcessNotice::LeaderExited {
                    id,
                    status,
                    running,
                });
            }
            tree::any_ends(&rest, RESCAN).await;
        }
    }
}
