//! Picks adapters and wires them into an engine.

use std::sync::Arc;

use bpm_adapters::clock::SystemClock;
use bpm_adapters::fake::ScriptedSpawner;
use bpm_adapters::ids::UuidV7Ids;
use bpm_adapters::memory::{BroadcastBus, InMemoryOutput, InMemoryStore};
use bpm_ports::{Clock, ManagerError, OutputStore};

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
