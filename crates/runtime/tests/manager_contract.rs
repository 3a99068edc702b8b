//! The manager contract, on an embedded engine running real processes
//! (records and output in memory).

use std::sync::Arc;

use bpm_adapters::clock::SystemClock;
use bpm_adapters::ids::UuidV7Ids;
use bpm_adapters::memory::{BroadcastBus, InMemoryOutput, InMemoryStore};
use bpm_adapters::os::{OsHost, OsSpawner, OsSpawnerConfig, ProcSampler};
use bpm_domain::Limits;
use bpm_ports::contract::manager::Subject;
use bpm_runtime::{Engine, EngineConfig, Ports};

async fn engine() -> Subject {
    let output = Arc::new(InMemoryOutput::default());
    let ports = Ports {
        store: Arc::new(InMemoryStore::new()),
        output: output.clone(),
        events: Arc::new(BroadcastBus::default()),
        spawner: Arc::new(OsSpawner::new(output, OsSpawnerConfig::default())),
        clock: Arc::new(SystemClock::new()),
        ids: Arc::new(UuidV7Ids::new()),
        usage: Arc::new(ProcSampler::new()),
        host: Arc::new(OsHost::new()),
    };
    let config = EngineConfig {
        node: None,
        limits: Limits::default(),
        ..EngineConfig::default()
    };
    let engine = Engine::launch(ports, config).await.expect("engine starts");
    Subject::new(Arc::new(engine), ())
}

bpm_ports::manager_contract_tests!(engine().await);
