//! The keeper process (`bpm keeper`, started by the daemon): the parent of
//! every process bpm runs on this node. See `bpm_adapters::keeper`.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use bpm_adapters::keeper::{KeeperSpawner, serve_keeper_keeping};
use bpm_adapters::os::{OsSpawner, OsSpawnerConfig};
use bpm_domain::ProcessId;
use bpm_ports::OutputStore;
use rustix::fs::{FlockOperation, flock};
use tokio::net::UnixListener;

use crate::config::Config;
use crate::home::Home;
use crate::wiring::StoreChoice;

/// How long a keeper with nothing to do waits before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(10);

/// The output store the keeper writes and the daemon reads, for a store choice.
pub(crate) async fn output_for(
    choice: &StoreChoice,
    home: &Home,
    prefix: &str,
    cap: u64,
    writer: bool,
) -> Result<Arc<dyn OutputStore>> {
    Ok(match choice {
        StoreChoice::Redis(url) => Arc::new(
            bpm_redis::RedisOutput::connect(url, prefix, cap)
                .await
                .map_err(|e| anyhow!("{e}"))?,
        ),
        // Output always lives in files when a daemon runs: the keeper writes, the daemon reads.
        StoreChoice::Filesystem | StoreChoice::Memory => {
            let dir = home.dir.join("output");
            let store = if writer {
                bpm_adapters::fs::FileOutput::new(&dir, cap)
            } else {
                bpm_adapters::fs::FileOutput::reader(&dir, cap)
            };
            Arc::new(store.with_context(|| format!("cannot open {}", dir.display()))?)
        }
    })
}

/// Runs the keeper until it has been idle (no daemon, no process) for 10 s
/// (`BPM_KEEPER_IDLE_MS` overrides it); ends no daemon took are kept in
/// `keeper.exits` for the next keeper.
///
/// # Errors
/// Another keeper runs for this state directory, or its socket cannot be opened.
pub async fn run(home: &Home, store: Option<StoreChoice>) -> Result<()> {
    bpm_adapters::os::raise_open_files_limit();
    home.prepare()?;
    let lock = bpm_adapters::private::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(home.dir.join("keeper.lock"))?;
    if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
        return Err(anyhow!(
            "a bpm keeper already runs for {}",
            home.dir.display()
        ));
    }
    let config = Config::load(&home.dir).map_err(|e| anyhow!(e))?;
    let choice = store.unwrap_or_else(|| config.store_choice());
    let prefix = config.redis_prefix.clone().unwrap_or_else(|| "bpm".into());
    let cap = config
        .output_cap
        .unwrap_or(bpm_adapters::memory::DEFAULT_OUTPUT_CAP);
    let output = output_for(&choice, home, &prefix, cap, true).await?;
    let spawner = Arc::new(OsSpawner::new(
        output,
        OsSpawnerConfig {
            start_log: Some(start_log(home)),
            share_pipes: true,
            subreaper: true,
            notify_dir: Some(home.dir.join("notify")),
            ..OsSpawnerConfig::default()
        },
    ));
    let socket = keeper_socket(home);
    let _ = fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o600))?;
    tracing::info!(pid = std::process::id(), "bpm keeper started");
    // Tests wait less.
    let idle = std::env::var("BPM_KEEPER_IDLE_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(IDLE_EXIT, Duration::from_millis);
    // As the daemon: quiet, it keeps resident only what waiting touches.
    tokio::spawn(bpm_adapters::os::give_back_when_quiet(
        Duration::from_millis(250),
    ));
    serve_keeper_keeping(listener, spawner, idle, Some(home.dir.join("keeper.exits"))).await;
    let _ = fs::remove_file(&socket);
    drop(lock);
    Ok(())
}

/// Connects to the keeper on `socket`: `None` when none answers there.
async fn connect(socket: &std::path::Path) -> Result<Option<KeeperSpawner>> {
    match KeeperSpawner::connect(socket).await {
        Ok(k) => {
            let hello = k.keeper();
            tracing::info!(
                pid = hello.pid,
                version = %hello.version,
                protocol = hello.protocol,
                "connected to bpm's keeper"
            );
            Ok(Some(k))
        }
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => Err(anyhow!(e)),
        Err(_) => Ok(None),
    }
}

/// The keeper's start log: the id of every record it starts, noted just
/// before the start, so that a daemon outliving the keeper knows which
/// starts it may have made (see `bpm_adapters::keeper::LastingKeeper`).
pub fn start_log(home: &Home) -> std::path::PathBuf {
    home.dir.join("keeper.starts")
}

/// The keeper's socket.
pub fn keeper_socket(home: &Home) -> std::path::PathBuf {
    home.dir.join("keeper.sock")
}

/// Connects to the keeper of `home`, starting it when none answers.
///
/// # Errors
/// No keeper answers within 10 s of starting one, or the keeper that
/// answers speaks another protocol (one from another bpm version).
pub async fn connect_or_start(home: &Home, store: &StoreChoice) -> Result<KeeperSpawner> {
    Ok(connect_or_start_noting(home, store).await?.0)
}

/// [`connect_or_start`], and, when no keeper answered and a new one was
/// started, the records the last keeper's start log names (read before the
/// new keeper could empty it): they may have started, and must not start
/// again.
///
/// # Errors
/// As [`connect_or_start`].
pub async fn connect_or_start_noting(
    home: &Home,
    store: &StoreChoice,
) -> Result<(KeeperSpawner, Option<HashMap<ProcessId, Option<u32>>>)> {
    let socket = keeper_socket(home);
    if let Some(k) = connect(&socket).await? {
        return Ok((k, None));
    }
    let starts = match bpm_adapters::os::read_start_log(&start_log(home)) {
        Ok(starts) => starts,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the last keeper's start log");
            HashMap::new()
        }
    };
    let log = bpm_adapters::private::options()
        .create(true)
        .append(true)
        .open(home.dir.join("keeper.log"))?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("keeper")
        .env("BPM_HOME", &home.dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    if let StoreChoice::Redis(url) = store {
        cmd.args(["--store", url]);
    }
    let mut child = cmd.spawn().context("cannot start bpm's keeper")?;
    // The keeper outlives this daemon; while the daemon lives, it reaps the keeper if it ends.
    std::thread::spawn(move || child.wait());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(k) = connect(&socket).await? {
            return Ok((k, Some(starts)));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(anyhow!(
                "bpm's keeper did not start within 10 s; see {}",
                home.dir.join("keeper.log").display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
