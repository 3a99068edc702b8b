//! Picks adapters and wires them into an engine.

use std::path::Path;
use std::sync::Arc;

use bpm_adapters::clock::SystemClock;
use bpm_adapters::fake::ScriptedSpawner;
use bpm_adapters::fs::FileOutput;
use bpm_adapters::ids::UuidV7Ids;
use bpm_adapters::memory::{BroadcastBus, DEFAULT_OUTPUT_CAP, InMemoryOutput, InMemoryStore};
use bpm_adapters::os::{OsSpawner, OsSpawnerConfig};
use bpm_ports::{Clock, ManagerError, OutputStore, ProcessStore};

use crate::{Engine, EngineConfig, Ports};

/// An engine on the in-memory adapters and the scripted spawner: nothing
/// touches the disk or runs an OS process. For embedding in tests.
///
/// # Errors
/// As [`Engine::start`].
pub async fn in_memory_engine(config: EngineConfig) -> Result<Engine, ManagerError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let output: Arc<dyn OutputStore> = Arc::new(InMemoryOutput::default());
    let ports = Ports {
        store: Arc::new(InMemoryStore::new()),
        output: output.clone(),
        events: Arc::new(BroadcastBus::default()),
        spawner: Arc::new(ScriptedSpawner::new(clock.clone(), output)),
        clock,
        ids: Arc::new(UuidV7Ids::new()),
    };
    Engine::start(ports, config).await
}

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
    let ports = Ports {
        store,
        output: output.clone(),
        events: Arc::new(BroadcastBus::default()),
        spawner: Arc::new(OsSpawner::new(output, OsSpawnerConfig::default())),
        clock: Arc::new(SystemClock::new()),
        ids: Arc::new(UuidV7Ids::new()),
    };
    Engine::start(ports, config).await
}

/// An in-memory store, for [`os_engine`] until a persistent store is chosen.
pub fn memory_store() -> Arc<dyn ProcessStore> {
    Arc::new(InMemoryStore::new())
}
