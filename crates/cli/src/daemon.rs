//! The per-user daemon: one per state directory, serving the control socket.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use bpm_adapters::control::wire::DaemonStatus;
use bpm_adapters::control::{DaemonClient, ServerInfo, serve};
use bpm_ports::{ManagerError, ProcessManager};
use rustix::fs::{FlockOperation, flock};
use tokio::net::UnixListener;
use tokio::sync::mpsc;

use crate::config::Config;
pub use crate::home::Home;
use crate::wiring::{StoreChoice, open_stores};
use bpm_runtime::{Engine, EngineConfig};

/// The software name and version every handshake carries.
pub const SOFTWARE: &str = concat!("bpm ", env!("CARGO_PKG_VERSION"));

fn describe(choice: &StoreChoice) -> String {
    match choice {
        StoreChoice::Memory => "memory".into(),
        StoreChoice::Filesystem => "fs".into(),
        // Never show a password.
        StoreChoice::Redis(url) => match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}://***@{}", &url[..scheme], &url[at + 1..])
            }
            _ => url.clone(),
        },
    }
}

/// What the daemon serves beside its control socket, on its manager and
/// under its configuration, until the token is cancelled: started once
/// the engine runs (a failure stops the daemon's start), wired by the
/// caller (`[mcp] http` is the MCP endpoint's).
pub type Beside = Box<
    dyn FnOnce(
            &Config,
            Arc<dyn ProcessManager>,
            tokio_util::sync::CancellationToken,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>
        + Send,
>;

/// Runs the daemon in the foreground until `bpm daemon stop`, SIGTERM or SIGINT.
/// Processes keep running when it stops.
///
/// # Errors
/// Another daemon holds this state directory, the configuration is invalid,
/// or the store or the socket cannot be opened.
pub async fn run(
    home: &Home,
    store_override: Option<StoreChoice>,
    beside: Option<Beside>,
) -> Result<()> {
    bpm_adapters::os::raise_open_files_limit();
    home.prepare()?;
    let lock = take_lock(home)?;
    let config = Config::load(&home.dir).map_err(|e| anyhow!(e))?;
    let node = crate::config::node_name(
        &home.dir,
        config.node_name(),
        std::env::var_os("BPM_NODE").as_deref(),
        &crate::config::hostname(),
    )
    .map_err(|e| anyhow!(e))?;
    let choice = store_override.unwrap_or_else(|| config.store_choice());
    let prefix = config.redis_prefix.clone().unwrap_or_else(|| "bpm".into());
    let cap = config
        .output_cap
        .unwrap_or(bpm_adapters::memory::DEFAULT_OUTPUT_CAP);
    // With a shared store, the node's name is taken before its records
    // are touched, and every write carries that take's epoch.
    let shown = bpm_runtime::cluster::LeaseStatus {
        line: Arc::new(std::sync::Mutex::new(None)),
        warnings: Arc::new(std::sync::Mutex::new(Vec::new())),
    };
    let (warnings, cluster) = (Arc::clone(&shown.warnings), Arc::clone(&shown.line));
    let labels = config.node_labels();
    let mut lease = crate::cluster::join(
        &choice,
        &prefix,
        &node,
        config.cluster_timing().map_err(|e| anyhow!(e))?,
        config.limits.max_running,
        &labels,
        shown,
    )
    .await?;
    let fence = lease.as_ref().map(crate::cluster::NodeLease::fence);
    let (store, _) = match open_stores(&choice, &home.dir, &prefix, cap, fence.clone()).await {
        Ok(opened) => opened,
        Err(e) => {
            if let Some(lease) = lease {
                lease.leave().await;
            }
            return Err(anyhow!("cannot open the {} store: {e}", describe(&choice)));
        }
    };
    warnings
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .extend(store.recovery_warnings());
    let output = crate::keeper::output_for(&choice, home, &prefix, cap, false).await?;
    let (spawner, keeper, keeper_pid) =
        start_keeper(home, &choice, lease.as_ref(), &warnings).await?;
    let (claims, slots) = crate::wiring::open_claims(&choice, &prefix, &node, fence.clone())
        .await
        .map_err(|e| anyhow!("cannot open the queue of {}: {e}", describe(&choice)))?
        .unzip();
    let ports = bpm_runtime::Ports {
        store,
        output,
        events: crate::wiring::open_events(&choice, &prefix, &node)
            .await
            .map_err(|e| anyhow!("cannot open the events of {}: {e}", describe(&choice)))?,
        usage: usage_under(&spawner),
        spawner,
        clock: Arc::new(bpm_adapters::clock::SystemClock::new()),
        ids: Arc::new(bpm_adapters::ids::UuidV7Ids::new()),
        host: Arc::new(bpm_adapters::os::OsHost::new().unwatching(&home.dir)),
    };
    let engine = launch_engine(home, ports, &node, &config, slots).await?;
    if let Some(bus) = crate::wiring::open_commands(&choice, &prefix, &node)
        .await
        .map_err(|e| anyhow!("cannot open the commands of {}: {e}", describe(&choice)))?
    {
        engine.forward_through(bus);
    }
    if let Some(claims) = claims {
        engine.claim_through(claims, labels);
    }
    // The sweeper gives a lost node's claims back, so it starts once the
    // queue is set.
    if let Some(lease) = &mut lease {
        lease.attach(&engine);
    }
    settle_what_ran_unseen(&engine, keeper_pid, &warnings).await;
    // Reading every record back left freed memory behind (files, the
    // journal, copies shared away): give it back before serving.
    bpm_adapters::os::release_free_memory();

    let on_exit = config.on_exit.clone();
    let info = ServerInfo {
        software: SOFTWARE.into(),
        store: describe(&choice),
        node: node.to_string(),
        home: home.dir.display().to_string(),
        keeper,
        started_at: Some(bpm_ports::Clock::now(
            &bpm_adapters::clock::SystemClock::new(),
        )),
        limits: Some(config.limits.clone()),
        warnings,
        cluster,
    };
    serve_until_stopped(home, engine, info, on_exit, lease, (&config, beside)).await?;
    drop(lock);
    Ok(())
}

/// The engine on `ports`, for `node`; it is told whether the machine
/// restarted since this node's records were last supervised (their
/// processes died with it), and the new boot is noted once they are
/// settled.
async fn launch_engine(
    home: &Home,
    ports: bpm_runtime::Ports,
    node: &bpm_domain::NodeId,
    config: &Config,
    slots: Option<Arc<dyn bpm_ports::ClusterSlots>>,
) -> Result<Engine> {
    // The boot this node's records were last supervised in: another one
    // means their processes died with the machine.
    let boot = Some(bpm_adapters::os::boot_id()).filter(|b| !b.is_empty());
    let machine_restarted = boot_changed(home, boot.as_deref());
    let engine = Engine::launch(
        ports,
        EngineConfig {
            node: Some(node.clone()),
            limits: config.limits.clone(),
            slots,
            machine_restarted,
        },
    )
    .await
    .map_err(|e| anyhow!("cannot start the engine: {e}"))?;
    if let Some(now) = &boot {
        // Noted once the records of the earlier boot are settled.
        note_boot(home, now);
    }
    Ok(engine)
}

/// Usage read from the processes under the keeper, not the machine's.
fn usage_under(
    keeper: &Arc<bpm_adapters::keeper::LastingKeeper>,
) -> Arc<bpm_adapters::os::ProcSampler> {
    let keeper = Arc::clone(keeper);
    Arc::new(bpm_adapters::os::ProcSampler::under(Arc::new(move || {
        keeper.subreapers()
    })))
}

/// The keeper this daemon's processes run under, started if none runs,
/// as a spawner that outlives it; the line `bpm daemon status` shows of
/// it, and its pid. The keeper hears of every renewal of `lease` before
/// any process starts.
async fn start_keeper(
    home: &Home,
    choice: &StoreChoice,
    lease: Option<&crate::cluster::NodeLease>,
    warnings: &Arc<std::sync::Mutex<Vec<String>>>,
) -> Result<(
    Arc<bpm_adapters::keeper::LastingKeeper>,
    Arc<std::sync::Mutex<Option<String>>>,
    u32,
)> {
    let (first, inherited) = crate::keeper::connect_or_start_noting(home, choice).await?;
    let hello = first.keeper();
    let keeper_pid = hello.pid;
    let keeper = Arc::new(std::sync::Mutex::new(Some(format!(
        "pid {} (bpm {}, keeper protocol {})",
        hello.pid, hello.version, hello.protocol
    ))));
    let spawner = lasting_keeper(first, home, choice, &keeper, warnings);
    // Before any process starts: the keeper stands down the failover records'
    // processes by itself unless told, in time, of each renewal.
    if let Some(lease) = lease {
        lease.pass_renewals_to(spawner.clone()).await?;
    }
    if let Some(starts) = inherited.filter(|s| !s.is_empty()) {
        // The last keeper died with the last daemon: what it may have
        // started is answered from its log, never started again.
        tracing::warn!(
            records = starts.len(),
            "bpm's keeper was gone; a new one started, and the records its start log names are settled from it"
        );
        spawner.inherit_starts(&starts);
    }
    Ok((spawner, keeper, keeper_pid))
}

/// Serves the control socket until `bpm daemon stop`, then shuts the
/// engine down, leaves the cluster and removes the socket and pid file.
async fn serve_until_stopped(
    home: &Home,
    engine: Engine,
    info: ServerInfo,
    on_exit: Option<String>,
    lease: Option<crate::cluster::NodeLease>,
    (config, beside): (&Config, Option<Beside>),
) -> Result<()> {
    let (listener, socket) = listen(home)?;
    tracing::info!(pid = std::process::id(), home = %home.dir.display(), store = %info.store, "bpm daemon started");

    tokio::spawn(run_hooks(engine.clone(), on_exit));
    let (stop_tx, mut stop_rx) = mpsc::unbounded_channel();
    let manager: Arc<dyn ProcessManager> = Arc::new(engine.clone());
    tokio::spawn(serve(listener, Arc::clone(&manager), info, stop_tx));
    // Once quiet, what its start and its last burst of requests ran need
    // not stay resident: a daemon mostly waits.
    tokio::spawn(bpm_adapters::os::give_back_when_quiet(
        Duration::from_millis(250),
    ));
    // What is served beside the socket (`[mcp] http`), for as long as the
    // daemon runs.
    let stop_beside = tokio_util::sync::CancellationToken::new();
    if let Some(beside) = beside {
        beside(config, manager, stop_beside.clone()).await?;
    }

    until_asked_to_stop(&mut stop_rx).await?;
    stop_beside.cancel();
    // Let the answer to `daemon stop` reach its caller.
    tokio::time::sleep(Duration::from_millis(50)).await;
    engine.shutdown().await;
    if let Some(lease) = lease {
        lease.leave().await;
    }
    let _ = fs::remove_file(&socket);
    let _ = fs::remove_file(home.pid_file());
    tracing::info!("bpm daemon stopped");
    Ok(())
}

/// The control socket, listening (only its owner may connect), with the
/// daemon's pid noted beside it.
fn listen(home: &Home) -> Result<(UnixListener, std::path::PathBuf)> {
    let socket = home.socket();
    let _ = fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o600))?;
    write_pid(&home.pid_file())?;
    Ok((listener, socket))
}

/// Returns once `bpm daemon stop` asks (through `stop`), or SIGTERM or
/// SIGINT comes.
async fn until_asked_to_stop(stop: &mut mpsc::UnboundedReceiver<bool>) -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    tokio::select! {
        _ = stop.recv() => {}
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Returns once SIGTERM or SIGINT comes (at once if they cannot be heard).
pub(crate) async fn until_signalled() {
    let (Ok(mut term), Ok(mut int)) = (
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()),
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// This state directory's lock, held while the daemon runs: a second
/// daemon for it is refused, naming the first.
fn take_lock(home: &Home) -> Result<fs::File> {
    let lock = bpm_adapters::private::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(home.lock())?;
    if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
        let pid = fs::read_to_string(home.pid_file()).unwrap_or_default();
        return Err(anyhow!(
            "a bpm daemon already runs for {} (pid {})",
            home.dir.display(),
            pid.trim()
        ));
    }
    Ok(lock)
}

/// Whether the machine booted since this node's records were last
/// supervised (`boot`, this boot's id, against the one noted): then their
/// processes died with the machine.
fn boot_changed(home: &Home, boot: Option<&str>) -> bool {
    match (boot, fs::read_to_string(home.dir.join("boot_id"))) {
        (Some(now), Ok(noted)) => noted.trim() != now,
        _ => false,
    }
}

/// Notes this boot's id, once the records of the earlier boot are settled.
fn note_boot(home: &Home, now: &str) {
    let noted = bpm_adapters::private::options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(home.dir.join("boot_id"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{now}\n").as_bytes()));
    if let Err(e) = noted {
        tracing::warn!(error = %e, "cannot note the boot id; a reboot will read as a restart of bpm");
    }
}

/// At start: the groups of records that ended while no daemon and no
/// keeper watched them are removed (off the runtime: a few system calls
/// each), and a process under the keeper that no live record answers for
/// (its record was lost with a damaged journal) is stopped, never left out
/// of every command's reach, and named in `warnings`.
async fn settle_what_ran_unseen(
    engine: &Engine,
    keeper_pid: u32,
    warnings: &Arc<std::sync::Mutex<Vec<String>>>,
) {
    let Ok(records) = engine.list(bpm_domain::ListFilter::default()).await else {
        return;
    };
    let live: std::collections::HashSet<bpm_domain::ProcessId> = records
        .iter()
        .filter(|r| !r.is_terminal())
        .map(bpm_domain::ProcessRecord::id)
        .collect();
    let stopped = tokio::task::spawn_blocking(move || {
        let strays: Vec<(bpm_domain::ProcessId, u32)> = bpm_adapters::os::marked_children(keeper_pid)
            .into_iter()
            .filter(|(id, _)| !live.contains(id))
            .collect();
        for (id, pid) in &strays {
            tracing::error!(%id, pid, "a process under the keeper has no live record (lost with the journal's damage): stopping its tree");
            bpm_adapters::os::stop_marked(*id, Duration::from_secs(5));
        }
        strays
    })
    .await
    .unwrap_or_default();
    if !stopped.is_empty() {
        warnings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(format!(
                "{} processes ran under the keeper with no record (lost with the journal's damage) and were stopped: {}",
                stopped.len(),
                stopped
                    .iter()
                    .map(|(id, pid)| format!("{id} (pid {pid})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
    }
    let ended: std::collections::HashSet<bpm_domain::ProcessId> = records
        .iter()
        .filter(|r| r.is_terminal())
        .map(bpm_domain::ProcessRecord::id)
        .collect();
    let swept = tokio::task::spawn_blocking(move || {
        bpm_adapters::os::sweep_groups(&|id| ended.contains(&id))
    })
    .await
    .unwrap_or(0);
    if swept > 0 {
        tracing::info!(swept, "removed the cgroups of records that ended unseen");
    }
}

/// The keeper, started anew whenever it dies; each change is logged and
/// shown by `bpm daemon status` (the keeper line and a warning).
fn lasting_keeper(
    first: bpm_adapters::keeper::KeeperSpawner,
    home: &Home,
    choice: &StoreChoice,
    keeper: &Arc<std::sync::Mutex<Option<String>>>,
    warnings: &Arc<std::sync::Mutex<Vec<String>>>,
) -> Arc<bpm_adapters::keeper::LastingKeeper> {
    let (h, c) = (home.clone(), choice.clone());
    let start: bpm_adapters::keeper::StartKeeper = Arc::new(move || {
        let (home, choice) = (h.clone(), c.clone());
        Box::pin(async move {
            crate::keeper::connect_or_start(&home, &choice)
                .await
                .map_err(|e| format!("{e:#}"))
        })
    });
    let (k, w) = (keeper.clone(), warnings.clone());
    let report: bpm_adapters::keeper::KeeperReport = Arc::new(move |described, line| {
        if let Some(d) = described {
            *k.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(d);
        }
        w.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(line);
    });
    // A keeper's death makes its processes this daemon's children, so their
    // exit codes can still be learnt.
    let reaper = bpm_adapters::os::Subreaper::start()
        .inspect_err(|e| {
            tracing::warn!(error = %e, "cannot become a child subreaper: after a keeper's death, exit codes will be unknown");
        })
        .ok();
    bpm_adapters::keeper::LastingKeeper::new(
        first,
        start,
        crate::keeper::start_log(home),
        report,
        reaper,
    )
}

fn write_pid(path: &Path) -> Result<()> {
    let tmp = path.with_extension("pid.tmp");
    let mut f = bpm_adapters::private::options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    writeln!(f, "{}", std::process::id())?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    Ok(())
}

/// Runs each ended process's `on_exit` hook (its own, else the configured one)
/// with the record as JSON on stdin and its id, state and exit code in the environment.
async fn run_hooks(engine: Engine, default_hook: Option<String>) {
    let mut events = engine.subscribe();
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        if !event.kind.ends_record() {
            continue;
        }
        let Ok(record) = engine.get(event.id).await else {
            continue;
        };
        let Some(hook) = record
            .spec()
            .on_exit
            .clone()
            .or_else(|| default_hook.clone())
        else {
            continue;
        };
        let json = serde_json::to_vec(&record).unwrap_or_default();
        let code = record
            .lifecycle()
            .exit()
            .map(|e| e.shell_code().to_string())
            .unwrap_or_default();
        tokio::spawn(async move {
            let child = tokio::process::Command::new("sh")
                .args(["-c", &hook])
                .env("BPM_PROCESS_ID", record.id().to_string())
                .env("BPM_STATE", record.state().as_str())
                .env("BPM_EXIT_CODE", code)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn();
            match child {
                Ok(mut child) => {
                    if let Some(mut stdin) = child.stdin.take() {
                        use tokio::io::AsyncWriteExt;
                        let _ = stdin.write_all(&json).await;
                    }
                    let _ = child.wait().await;
                }
                Err(e) => tracing::warn!(error = %e, "on_exit hook could not start"),
            }
        });
    }
}

/// Why a daemon that exited with `status` could not start, from what it
/// wrote to its log after `logged` bytes: its error is the last thing it
/// wrote, from "bpm: " on (it may span lines). `None` for a racing loser,
/// which found another daemon starting.
fn start_failure(home: &Home, logged: u64, status: std::process::ExitStatus) -> Option<String> {
    let said = fs::read(home.log())
        .ok()
        .and_then(|all| all.get(usize::try_from(logged).ok()?..).map(<[u8]>::to_vec))
        .map(|new| String::from_utf8_lossy(&new).trim().to_string())
        .unwrap_or_default();
    if said.contains("already runs") {
        return None;
    }
    let said = match said.rfind("bpm: ") {
        Some(at) if at == 0 || said[..at].ends_with('\n') => &said[at..],
        _ => said.lines().last().unwrap_or_default(),
    };
    Some(if said.is_empty() {
        format!(
            "the bpm daemon could not start ({status}); see {}",
            home.log().display()
        )
    } else {
        format!(
            "the bpm daemon could not start: {}",
            said.strip_prefix("bpm: ").unwrap_or(said)
        )
    })
}

/// How long a daemon that lost the race for the lock waits for the winner
/// to answer before it tries again: the winner may have been a daemon that
/// was dying (killed in a system call, it held the lock a little longer).
const RACE_LOST_RETRY: Duration = Duration::from_millis(300);

/// The status of the daemon of `home`.
///
/// # Errors
/// [`ManagerError::Connection`] if none answers.
pub async fn status(home: &Home) -> Result<DaemonStatus, ManagerError> {
    DaemonClient::connect(&home.socket(), SOFTWARE)
        .await?
        .status()
        .await
}

/// Stops the daemon of `home` (with `kill_all`, its processes first, and
/// a daemon started for the purpose when none runs), and returns its pid
/// once it is gone (or after 5 s).
///
/// # Errors
/// [`ManagerError::Connection`] if none answers (without `kill_all`), or
/// none can be started.
pub async fn stop(home: &Home, kill_all: bool) -> Result<u32, ManagerError> {
    // With --kill-all, no process of any record may be left behind: with
    // no daemon running, one is started, which adopts what the keeper
    // (or, with the keeper gone too, the processes' marks) still runs.
    let client = if kill_all {
        connect_or_start(home).await?
    } else {
        DaemonClient::connect(&home.socket(), SOFTWARE).await?
    };
    let pid = client.status().await?.pid;
    client.shutdown(kill_all).await?;
    for _ in 0..200 {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(pid)
}

/// Connects to the daemon of `home`, starting one in the background when none
/// answers. Two callers racing end up with one daemon: the second to start
/// finds the lock taken and exits, and both connect to the first. If no
/// daemon answers after a lost race (the lock's holder was dying), it
/// starts one again.
///
/// A daemon that listens is not waited for: the first request follows
/// the hello ([`DaemonClient::connect_early`]), and a daemon that speaks
/// another protocol fails that request, by name, without reading it. One
/// that closes the connection before its hello (it is being killed, or
/// stops) read nothing: its calls go to a new connection, one that waits
/// for the hello (and starts a daemon when none says it).
///
/// # Errors
/// [`ManagerError::Connection`] if the daemon it starts fails (with the
/// daemon's own error), or if no daemon answers within 10 s of starting one.
pub async fn connect_or_start(home: &Home) -> Result<DaemonClient, ManagerError> {
    let again: bpm_adapters::control::Connector = {
        let home = home.clone();
        Arc::new(move || {
            let home = home.clone();
            Box::pin(async move { connect_waiting_or_start(&home).await })
        })
    };
    if let Ok(client) = DaemonClient::connect_early(&home.socket(), SOFTWARE, again).await {
        return Ok(client);
    }
    start_and_connect(home).await
}

/// [`connect_or_start`], waiting for the daemon's hello before the first
/// request.
async fn connect_waiting_or_start(home: &Home) -> Result<DaemonClient, ManagerError> {
    if let Ok(client) = DaemonClient::connect(&home.socket(), SOFTWARE).await {
        return Ok(client);
    }
    start_and_connect(home).await
}

/// Starts a daemon for `home` and connects to it, or to the one that won
/// the race to start.
async fn start_and_connect(home: &Home) -> Result<DaemonClient, ManagerError> {
    home.prepare()
        .map_err(|e| ManagerError::Connection(e.to_string()))?;
    let first = start_daemon(home)?;
    let mut logged = first.1;
    let mut daemon = Some(first);
    let mut lost_race: Option<tokio::time::Instant> = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(client) = DaemonClient::connect(&home.socket(), SOFTWARE).await {
            return Ok(client);
        }
        if let Some((child, _)) = daemon.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            daemon = None;
            if !status.success() {
                match start_failure(home, logged, status) {
                    Some(error) => return Err(ManagerError::Connection(error)),
                    None => lost_race = Some(tokio::time::Instant::now()),
                }
            }
        }
        if daemon.is_none() && lost_race.is_some_and(|at| at.elapsed() >= RACE_LOST_RETRY) {
            lost_race = None;
            let (child, at) = start_daemon(home)?;
            logged = at;
            daemon = Some((child, at));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ManagerError::Connection(format!(
                "the bpm daemon did not start within 10 s; see {}",
                home.log().display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`connect_or_start`] for `home`, each time a
/// [`Reconnecting`](bpm_adapters::control::Reconnecting) client needs a
/// connection.
pub fn connector(home: Home) -> bpm_adapters::control::Connector {
    Arc::new(move || {
        let home = home.clone();
        Box::pin(async move { connect_or_start(&home).await })
    })
}

/// Starts `bpm daemon` for `home` in the background, its output appended
/// to the daemon's log; returns it and the log's length before it.
fn start_daemon(home: &Home) -> Result<(std::process::Child, u64), ManagerError> {
    let log = bpm_adapters::private::options()
        .create(true)
        .append(true)
        .open(home.log())
        .map_err(|e| ManagerError::Connection(format!("{}: {e}", home.log().display())))?;
    let exe = std::env::current_exe().map_err(|e| ManagerError::Connection(e.to_string()))?;
    let logged = log.metadata().map_or(0, |m| m.len());
    // The daemon outlives this command; it is only watched for an early
    // failure, which is reported with the daemon's own words.
    let child = std::process::Command::new(exe)
        .arg("daemon")
        .env("BPM_HOME", &home.dir)
        .stdin(std::process::Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(|e| ManagerError::Connection(e.to_string()))?,
        )
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| ManagerError::Connection(format!("cannot start the bpm daemon: {e}")))?;
    Ok((child, logged))
}
