//! The OS spawner against the spawner contract suite, with real processes.

use std::sync::Arc;

use bpm_adapters::memory::InMemoryOutput;
use bpm_adapters::os::{OsSpawner, OsSpawnerConfig};
use bpm_ports::contract::spawner::SpawnerHarness;
use bpm_ports::{OutputStore, ProcessSpawner};

mod common;

fn harness() -> Arc<dyn SpawnerHarness> {
    let output = Arc::new(InMemoryOutput::default());
    let spawner = Arc::new(OsSpawner::new(output.clone(), OsSpawnerConfig::default()));
    Arc::new(common::ShHarness {
        spawner,
        output,
        keep: None,
    })
}

mod os_spawner {
    use super::*;
    bpm_ports::spawner_contract_tests!(harness());
}

/// Output behind a slow disk: each append takes longer than the spawner's drain wait.
struct SlowOutput(InMemoryOutput);

#[async_trait::async_trait]
impl OutputStore for SlowOutput {
    async fn append(
        &self,
        id: bpm_domain::ProcessId,
        stream: bpm_ports::Stream,
        data: &[u8],
    ) -> Result<bpm_ports::Cursor, bpm_ports::OutputError> {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        self.0.append(id, stream, data).await
    }
    async fn read(
        &self,
        id: bpm_domain::ProcessId,
        query: &bpm_ports::OutputQuery,
    ) -> Result<bpm_ports::OutputChunk, bpm_ports::OutputError> {
        self.0.read(id, query).await
    }
    async fn tail(
        &self,
        id: bpm_domain::ProcessId,
        stream: bpm_ports::StreamSelect,
        lines: usize,
    ) -> Result<bpm_ports::OutputChunk, bpm_ports::OutputError> {
        self.0.tail(id, stream, lines).await
    }
    async fn remove(&self, id: bpm_domain::ProcessId) -> Result<(), bpm_ports::OutputError> {
        self.0.remove(id).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_waits_for_output_still_being_copied_to_a_slow_store() {
    use bpm_domain::{NodeId, ProcessId, ProcessRecord, ProcessSpec, Timestamp};
    let output = Arc::new(SlowOutput(InMemoryOutput::default()));
    let spawner = OsSpawner::new(output.clone(), OsSpawnerConfig::default());
    let mut notices = spawner.notices().expect("notices");
    let record = ProcessRecord::new(
        ProcessId::from_uuid(uuid::Uuid::now_v7()),
        NodeId::local(),
        ProcessSpec::argv([
            "sh",
            "-c",
            "echo one; sleep 0.05; echo two; sleep 0.05; echo three",
        ]),
        Timestamp::from_millis(1),
    );
    let request = bpm_ports::SpawnRequest::for_record(&record).expect("a command");
    spawner.spawn(request).await.expect("spawn");
    loop {
        match notices.recv().await.expect("a notice") {
            bpm_ports::ProcessNotice::Exited { id, .. } if id == record.id() => break,
            _ => {}
        }
    }
    let all = output
        .read(record.id(), &bpm_ports::OutputQuery::default())
        .await
        .expect("read");
    assert_eq!(
        all.text(),
        "one\ntwo\nthree\n",
        "all of it, when the exit is told"
    );
}
