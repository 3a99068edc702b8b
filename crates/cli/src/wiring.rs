//! Picks the daemon's adapters for its store: files, memory or a Redis
//! shared by many nodes. (A program that embeds bpm builds its engine with
//! `bpm-embed`'s builder instead.)

use std::path::Path;
use std::sync::Arc;

use bpm_adapters::fs::FileOutput;
use bpm_adapters::memory::{BroadcastBus, InMemoryOutput, InMemoryStore};
use bpm_domain::NodeId;
use bpm_ports::{CommandBus, EventBus, EventBusError, ManagerError, OutputStore, ProcessStore};

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
    if let Some(home) = std::env::var_os("BPM_HOME").filter(|v| !v.is_empty()) {
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
