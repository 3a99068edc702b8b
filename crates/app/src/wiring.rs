//! Picks adapters and wires them into an engine.

use std::path::Path;
use std::sync::Arc;

use bpm_adapters::clock::SystemClock;
use bpm_adapters::fs::FileOutput;
use bpm_adapters::ids::UuidV7Ids;
use bpm_adapters::memory::{BroadcastBus, DEFAULT_OUTPUT_CAP, InMemoryOutput, InMemoryStore};
use bpm_adapters::os::{OsHost, OsSpawner, OsSpawnerConfig, ProcSampler};
use bpm_domain::NodeId;
use bpm_ports::{CommandBus, EventBus, EventBusError, ManagerError, OutputStore, ProcessStore};

use bpm_engine::{Engine, EngineConfig, Ports};

/// An engine that runs real OS processes, keeping their output in capped
/// files under `output_dir` and records in `store`.
///
/// # Errors
/// [`ManagerError::Output`] if the output folder cannot be made; else as [`Engine::start`].
pub async fn os_engine(
    store: Arc<dyn ProcessStore>,
    output_dir: &Path,
    output_cap: Option<u64>,
    config: EngineConfig,
) -> Result<Engine, ManagerError> {
    let output: Arc<dyn OutputStore> = Arc::new(
        FileOutput::new(output_dir, output_cap.unwrap_or(DEFAULT_OUTPUT_CAP)).map_err(|e| {
            bpm_ports::OutputError::Refused(format!("{}: {e}", output_dir.display()))
        })?,
    );
    engine_on(store, output, config).await
}

/// An engine that runs real OS processes on the given stores.
///
/// # Errors
/// As [`Engine::start`].
pub async fn engine_on(
    store: Arc<dyn ProcessStore>,
    output: Arc<dyn OutputStore>,
    config: EngineConfig,
) -> Result<Engine, ManagerError> {
    let ports = Ports {
        store,
        output: output.clone(),
        events: Arc::new(BroadcastBus::default()),
        spawner: Arc::new(OsSpawner::new(output, OsSpawnerConfig::default())),
        clock: Arc::new(SystemClock::new()),
        ids: Arc::new(UuidV7Ids::new()),
        usage: Arc::new(ProcSampler::new()),
        host: Arc::new(OsHost::new()),
    };
    Engine::start(ports, config).await
}

/// An in-memory store, for [`os_engine`] until a persistent store is chosen.
pub fn memory_store() -> Arc<dyn ProcessStore> {
    Arc::new(InMemoryStore::new())
}

/// Where records and output live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// In memory: gone when the process ends (tests, embedding).
    Memory,
    /// Files under the state directory (the default: no server needed).
    Filesystem,
    /// A Redis shared by many nodes, at this URL (`redis://` or `rediss://`).
    Redis(String),
}

impl std::str::FromStr for StoreChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "memory" => Ok(StoreChoice::Memory),
            "fs" | "filesystem" => Ok(StoreChoice::Filesystem),
            url if url.starts_with("redis://") || url.starts_with("rediss://") => {
                Ok(StoreChoice::Redis(url.to_owned()))
            }
            other => Err(format!(
                "invalid store {other:?}: expected fs, memory, or a redis:// or rediss:// URL"
            )),
        }
    }
}

/// The state directory: `BPM_HOME`, else `$XDG_STATE_HOME/bpm`, else `~/.local/state/bpm`.
pub fn state_dir() -> std::path::PathBuf {
    if let Some(home) = std::env::var_os("BPM_HOME") {
        return home.into();
    }
    if let Some(xdg) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return std::path::PathBuf::from(xdg).join("bpm");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    std::path::PathBuf::from(home).join(".local/state/bpm")
}

/// Opens the record store and the output store for `choice`: files go under
/// `home` (`records/`, `output/`); Redis keys under `bpm:{prefix}:`.
///
/// # Errors
/// What the chosen store says when it cannot be opened.
pub async fn open_stores(
    choice: &StoreChoice,
    home: &Path,
    prefix: &str,
    output_cap: u64,
    fence: Option<bpm_redis::Fence>,
) -> Result<(Arc<dyn ProcessStore>, Arc<dyn OutputStore>), ManagerError> {
    Ok(match choice {
        StoreChoice::Memory => (
            Arc::new(InMemoryStore::new()),
            Arc::new(InMemoryOutput::new(output_cap)),
        ),
        StoreChoice::Filesystem => {
            let store = bpm_adapters::fs::FsStore::open(home.join("records"))?;
            let output_dir = home.join("output");
            let output = FileOutput::new(&output_dir, output_cap).map_err(|e| {
                bpm_ports::OutputError::Refused(format!("{}: {e}", output_dir.display()))
            })?;
            (Arc::new(store), Arc::new(output))
        }
        StoreChoice::Redis(url) => (
            Arc::new({
                let store = bpm_redis::RedisStore::connect(url, prefix).await?;
                match fence {
                    Some(fence) => store.fenced(fence),
                    None => store,
                }
            }),
            Arc::new(bpm_redis::RedisOutput::connect(url, prefix, output_cap).await?),
        ),
    })
}

/// The event bus for a daemon on `choice`: on Redis, one every node shares
/// (`bpm_redis::RedisEvents`), so a subscriber here hears every
/// node's records; otherwise one within the daemon.
///
/// # Errors
/// [`EventBusError::Unavailable`] if Redis cannot be reached.
pub async fn open_events(
    choice: &StoreChoice,
    prefix: &str,
    node: &NodeId,
) -> Result<Arc<dyn EventBus>, EventBusError> {
    Ok(match choice {
        StoreChoice::Redis(url) => {
            Arc::new(bpm_redis::RedisEvents::connect(url, prefix, node.clone()).await?)
        }
        StoreChoice::Memory | StoreChoice::Filesystem => Arc::new(BroadcastBus::default()),
    })
}

/// What a daemon schedules with across nodes (on Redis,
/// `bpm_redis::RedisClaims`): the queue of records placed on any
/// node, claimed for `node` with `fence`'s epoch, and where cluster-wide
/// slots are counted. None on a store of one node's own: its core keeps a
/// cluster-wide limit as its own.
///
/// # Errors
/// [`ManagerError::Store`] if Redis cannot be reached.
pub async fn open_claims(
    choice: &StoreChoice,
    prefix: &str,
    node: &NodeId,
    fence: Option<bpm_redis::Fence>,
) -> Result<
    Option<(
        Arc<dyn bpm_ports::ClaimQueue>,
        Arc<dyn bpm_ports::ClusterSlots>,
    )>,
    ManagerError,
> {
    Ok(match choice {
        StoreChoice::Redis(url) => {
            let claims = bpm_redis::RedisClaims::connect(url, prefix, node.clone()).await?;
            let claims = Arc::new(match fence {
                Some(fence) => claims.fenced(fence),
                None => claims,
            });
            Some((claims.clone(), claims))
        }
        StoreChoice::Memory | StoreChoice::Filesystem => None,
    })
}

/// The bus that carries calls about other nodes' records to their owners:
/// on Redis, one stream per node (`bpm_redis::RedisCommands`);
/// none on a store of one node's own.
///
/// # Errors
/// [`ManagerError::Connection`] if Redis cannot be reached.
pub async fn open_commands(
    choice: &StoreChoice,
    prefix: &str,
    node: &NodeId,
) -> Result<Option<Arc<dyn CommandBus>>, ManagerError> {
    Ok(match choice {
        StoreChoice::Redis(url) => Some(Arc::new(
            bpm_redis::RedisCommands::connect(url, prefix, node.clone()).await?,
        )),
        StoreChoice::Memory | StoreChoice::Filesystem => None,
    })
}
