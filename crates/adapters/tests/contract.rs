//! The in-memory adapters and the scripted spawner against the shared contract suites.

use std::sync::Arc;

use bpm_adapters::clock::SystemClock;
use bpm_adapters::fake::ScriptedSpawner;
use bpm_adapters::memory::{InMemoryMembership, InMemoryOutput, InMemoryStore};
use bpm_ports::contract::output::CONTRACT_CAP;
use bpm_ports::contract::spawner::SpawnerHarness;
use bpm_ports::{Membership, OutputStore, ProcessSpawner, ProcessStore};

mod memory_store {
    use super::*;
    bpm_ports::store_contract_tests!(Arc::new(InMemoryStore::new()) as Arc<dyn ProcessStore>);
}

mod memory_claims {
    use super::*;
    use bpm_adapters::memory::InMemoryClaims;
    use bpm_ports::contract::claims::Subject;
    bpm_ports::claims_contract_tests!({
        let store: Arc<dyn ProcessStore> = Arc::new(InMemoryStore::new());
        let node = |n: &str| bpm_domain::NodeId::new(n).expect("a node");
        let alpha = InMemoryClaims::new(Arc::clone(&store), node("alpha"));
        let beta = alpha.for_node(node("beta"));
        Subject {
            store,
            alpha: Arc::new(alpha.clone()),
            beta: Arc::new(beta.clone()),
            alpha_slots: Arc::new(alpha),
            beta_slots: Arc::new(beta),
        }
    });
}

mod memory_events {
    use super::*;
    use bpm_adapters::memory::BroadcastBus;
    use bpm_ports::contract::events::Subject;
    // One process: both nodes' daemons share the one bus.
    bpm_ports::events_contract_tests!({
        let bus = Arc::new(BroadcastBus::default());
        Subject {
            alpha: bus.clone(),
            beta: bus,
        }
    });
}

mod memory_commands {
    use super::*;
    use bpm_adapters::memory::{CommandHub, InMemoryCommands};
    use bpm_domain::NodeId;
    use bpm_ports::CommandBus;
    use bpm_ports::contract::commands::Subject;

    /// Node `beta` alive (and `alpha`), on a fresh hub.
    async fn subject() -> Subject {
        let membership: Arc<dyn Membership> =
            Arc::new(InMemoryMembership::new(Arc::new(SystemClock::new())));
        bpm_ports::contract::commands::alpha_and_beta_alive(membership.as_ref()).await;
        let hub = CommandHub::new();
        let alpha = InMemoryCommands::new(
            Arc::clone(&hub),
            NodeId::new("alpha").expect("a name"),
            Arc::clone(&membership),
        );
        Subject {
            alpha: Arc::new(alpha),
            beta: Box::new(move || {
                let bus: Arc<dyn CommandBus> = Arc::new(InMemoryCommands::new(
                    Arc::clone(&hub),
                    NodeId::new("beta").expect("a name"),
                    Arc::clone(&membership),
                ));
                Box::pin(async move { bus })
            }),
        }
    }

    bpm_ports::commands_contract_tests!(subject().await);
}

mod memory_membership {
    use super::*;
    bpm_ports::membership_contract_tests!(Arc::new(InMemoryMembership::new(Arc::new(
        SystemClock::new()
    ))) as Arc<dyn Membership>);
}

mod memory_failover {
    use super::*;
    use bpm_adapters::memory::InMemoryFailover;
    use bpm_ports::contract::failover::Subject;
    bpm_ports::failover_contract_tests!({
        let membership = Arc::new(InMemoryMembership::new(Arc::new(SystemClock::new())));
        let store: Arc<dyn ProcessStore> = Arc::new(InMemoryStore::new());
        Subject {
            membership: membership.clone(),
            failover: Arc::new(InMemoryFailover::new(membership, Arc::clone(&store))),
            store,
        }
    });
}

mod memory_output {
    use super::*;
    bpm_ports::output_contract_tests!(
        Arc::new(InMemoryOutput::new(CONTRACT_CAP)) as Arc<dyn OutputStore>
    );
}

struct FakeHarness {
    spawner: Arc<ScriptedSpawner>,
    output: Arc<InMemoryOutput>,
}

impl FakeHarness {
    fn harness() -> Arc<dyn SpawnerHarness> {
        let output = Arc::new(InMemoryOutput::default());
        let spawner = Arc::new(ScriptedSpawner::new(
            Arc::new(SystemClock::new()),
            output.clone(),
        ));
        Arc::new(FakeHarness { spawner, output })
    }
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(ToString::to_string).collect()
}

impl SpawnerHarness for FakeHarness {
    fn spawner(&self) -> Arc<dyn ProcessSpawner> {
        self.spawner.clone()
    }
    fn output(&self) -> Arc<dyn OutputStore> {
        self.output.clone()
    }
    fn exit_with(&self, code: i32) -> Vec<String> {
        words(&["fake", &format!("exit={code}")])
    }
    fn sleep(&self, secs: u32) -> Vec<String> {
        words(&["fake", &format!("after={secs}s")])
    }
    fn ignore_term_and_sleep(&self, secs: u32) -> Vec<String> {
        words(&["fake", "ignore-term", &format!("after={secs}s")])
    }
    fn print(&self, out: &str, err: &str) -> Vec<String> {
        words(&["fake", &format!("stdout={out}"), &format!("stderr={err}")])
    }
    fn missing_program(&self) -> Vec<String> {
        words(&["bpm-no-such-program"])
    }
}

mod scripted_spawner {
    use super::*;
    bpm_ports::spawner_contract_tests!(FakeHarness::harness());
}

mod file_output {
    use super::*;
    use bpm_adapters::fs::FileOutput;
    use bpm_domain::ProcessId;
    use bpm_ports::{Cursor, OutputChunk, OutputError, OutputQuery, Stream, StreamSelect};

    /// A file output store in a folder of its own, removed with the store.
    struct InTempDir {
        store: FileOutput,
        _dir: tempfile::TempDir,
    }

    #[async_trait::async_trait]
    impl OutputStore for InTempDir {
        async fn append(
            &self,
            id: ProcessId,
            stream: Stream,
            data: &[u8],
        ) -> Result<Cursor, OutputError> {
            self.store.append(id, stream, data).await
        }
        async fn append_owned(
            &self,
            id: ProcessId,
            stream: Stream,
            data: Vec<u8>,
        ) -> (Vec<u8>, Result<Cursor, OutputError>) {
            self.store.append_owned(id, stream, data).await
        }
        async fn read(
            &self,
            id: ProcessId,
            query: &OutputQuery,
        ) -> Result<OutputChunk, OutputError> {
            self.store.read(id, query).await
        }
        async fn tail(
            &self,
            id: ProcessId,
            stream: StreamSelect,
            lines: usize,
            max_bytes: usize,
        ) -> Result<OutputChunk, OutputError> {
            self.store.tail(id, stream, lines, max_bytes).await
        }
        async fn remove(&self, id: ProcessId) -> Result<(), OutputError> {
            self.store.remove(id).await
        }
    }

    fn store() -> Arc<dyn OutputStore> {
        let dir = tempfile::tempdir().expect("output folder");
        let store = FileOutput::new(dir.path(), CONTRACT_CAP).expect("output folder");
        Arc::new(InTempDir { store, _dir: dir })
    }

    bpm_ports::output_contract_tests!(store());

    #[tokio::test]
    async fn output_survives_a_reopen() {
        let temp = tempfile::tempdir().expect("folder");
        let dir = temp.path();
        let id = bpm_domain::ProcessId::from_uuid(uuid::Uuid::from_u128(7));
        let first = FileOutput::new(dir, 1 << 20).expect("folder");
        first
            .append(id, bpm_ports::Stream::Stdout, b"before ")
            .await
            .expect("append");
        first
            .append(id, bpm_ports::Stream::Stderr, b"restart\n")
            .await
            .expect("append");
        drop(first);
        let second = FileOutput::new(dir, 1 << 20).expect("folder");
        let chunk = second
            .read(id, &bpm_ports::OutputQuery::default())
            .await
            .expect("read");
        assert_eq!(chunk.text(), "before restart\n");
        assert_eq!(chunk.pieces.len(), 2);
        let end = second
            .append(id, bpm_ports::Stream::Stdout, b"after")
            .await
            .expect("append");
        assert_eq!(end.0, 20);
    }
}

mod fs_store {
    use super::*;
    use bpm_adapters::fs::FsStore;
    use bpm_domain::{ListFilter, ProcessId, ProcessRecord};
    use bpm_ports::StoreError;

    /// A store that owns its temporary folder, so the folder goes when the test ends.
    struct InTempDir(FsStore, #[allow(dead_code)] tempfile::TempDir);

    #[async_trait::async_trait]
    impl ProcessStore for InTempDir {
        fn room(&self, records: usize) -> Result<(), StoreError> {
            self.0.room(records)
        }
        async fn reachable(&self) -> Result<(), StoreError> {
            self.0.reachable().await
        }
        fn recovery_warnings(&self) -> Vec<String> {
            self.0.recovery_warnings()
        }
        async fn create(&self, r: &ProcessRecord) -> Result<(), StoreError> {
            self.0.create(r).await
        }
        async fn get(&self, id: ProcessId) -> Result<ProcessRecord, StoreError> {
            self.0.get(id).await
        }
        async fn update(&self, r: &ProcessRecord, v: u64) -> Result<(), StoreError> {
            self.0.update(r, v).await
        }
        async fn update_unflushed(&self, r: &ProcessRecord, v: u64) -> Result<(), StoreError> {
            self.0.update_unflushed(r, v).await
        }
        async fn write_batch(&self, w: &[bpm_ports::StoreWrite]) -> Vec<Result<(), StoreError>> {
            self.0.write_batch(w).await
        }
        async fn write_batch_unsynced(
            &self,
            w: &[bpm_ports::StoreWrite],
        ) -> Vec<Result<(), StoreError>> {
            self.0.write_batch_unsynced(w).await
        }
        async fn sync(&self) -> Result<(), StoreError> {
            self.0.sync().await
        }
        async fn delete(&self, id: ProcessId) -> Result<(), StoreError> {
            self.0.delete(id).await
        }
        async fn list(&self, f: &ListFilter) -> Result<Vec<ProcessRecord>, StoreError> {
            self.0.list(f).await
        }
    }

    fn store() -> Arc<dyn ProcessStore> {
        let dir = tempfile::tempdir().expect("temp dir");
        Arc::new(InTempDir(FsStore::open(dir.path()).expect("store"), dir))
    }

    bpm_ports::store_contract_tests!(store());

    /// A folder of its own, opened again as often as asked.
    struct Folder(tempfile::TempDir);

    #[async_trait::async_trait]
    impl bpm_ports::contract::store::Reopen for Folder {
        async fn open(&self) -> Arc<dyn ProcessStore> {
            Arc::new(FsStore::open(self.0.path()).expect("store"))
        }
    }

    bpm_ports::store_reopen_contract_tests!(
        Arc::new(Folder(tempfile::tempdir().expect("temp dir")))
            as Arc<dyn bpm_ports::contract::store::Reopen>
    );
}
