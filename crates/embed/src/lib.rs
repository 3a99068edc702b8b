//! bpm as a library: one builder that picks the adapters and starts an
//! engine, so a program that embeds bpm needs this crate alone and compiles
//! no server (no Redis, MCP or web crate).
//!
//! ```no_run
//! # async fn example() -> Result<(), bpm_embed::EmbedError> {
//! use bpm_embed::{ProcessManager, ProcessSpec};
//!
//! let bpm = bpm_embed::builder().fs_store("/tmp/my-app-bpm").start().await?;
//! let record = bpm.start(ProcessSpec::argv(["cargo", "test"])).await?;
//! let done = bpm.wait(record.id(), None).await?;
//! println!("{}", done.state());
//! # Ok(())
//! # }
//! ```
//!
//! By default the engine keeps its records and output in memory and runs
//! real OS processes; every choice can be swapped, a store or spawner of
//! your own included (run it through `bpm-ports`' contract suites first).

use std::path::PathBuf;
use std::sync::Arc;

use bpm_adapters::clock::SystemClock;
use bpm_adapters::fs::{FileOutput, FsStore};
use bpm_adapters::ids::UuidV7Ids;
use bpm_adapters::memory::{BroadcastBus, DEFAULT_OUTPUT_CAP, InMemoryOutput, InMemoryStore};
use bpm_adapters::os::{OsHost, OsSpawner, OsSpawnerConfig, ProcSampler};
use bpm_runtime::{EngineConfig, Ports};

pub use bpm_domain::{Limits, NodeId, ProcessRecord, ProcessSpec, StateName};
/// Projects: bring a set of services up and down on the engine
/// (`project::up`, `project::down`, `project::wait_up`), from a
/// [`Project`](bpm_domain::project::Project) a program builds or, with the
/// `project-files` feature, one read from a file (`project::load`).
pub use bpm_intake::project;
/// What a person or an agent asks for, turned into a [`ProcessSpec`]
/// (`Asked::into_spec`), as every front end of bpm does.
pub use bpm_intake::{AskError, Asked, Context};
pub use bpm_ports::{ManagerError, OutputStore, ProcessManager, ProcessSpawner, ProcessStore};
pub use bpm_runtime::Engine;

/// Why an engine could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    /// The store's directory could not be opened (the path is named).
    #[error("cannot open the store in {path}: {reason}")]
    Store {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The engine did not start, or a call on it failed.
    #[error(transparent)]
    Manager(#[from] ManagerError),
}

/// A builder with the defaults: records and output in memory, real OS
/// processes, the default limits.
pub fn builder() -> Builder {
    Builder::default()
}

/// Where the records go (and, for `Fs`, the output).
#[derive(Default)]
enum Store {
    #[default]
    Memory,
    Fs(PathBuf),
    Given(Arc<dyn ProcessStore>),
}

/// Where the output goes, when not where the store puts it.
enum Output {
    Files(PathBuf),
    Given(Arc<dyn OutputStore>),
}

/// Picks an engine's adapters; [`start`](Builder::start) starts it.
#[derive(Default)]
pub struct Builder {
    store: Store,
    output: Option<Output>,
    output_cap: Option<u64>,
    spawner: Option<Arc<dyn ProcessSpawner>>,
    limits: Limits,
    node: Option<NodeId>,
}

impl Builder {
    /// Records and output kept in files under `dir` (`records/`, the
    /// journal and one JSON file per record; `output/`, capped files): they
    /// outlive the program, and an engine started again on `dir` finds them.
    #[must_use]
    pub fn fs_store(mut self, dir: impl Into<PathBuf>) -> Self {
        self.store = Store::Fs(dir.into());
        self
    }

    /// Records and output in memory, gone with the engine (the default).
    #[must_use]
    pub fn memory_store(mut self) -> Self {
        self.store = Store::Memory;
        self
    }

    /// A record store of your own (output in memory, unless chosen).
    #[must_use]
    pub fn store(mut self, store: Arc<dyn ProcessStore>) -> Self {
        self.store = Store::Given(store);
        self
    }

    /// An output store of your own.
    #[must_use]
    pub fn output(mut self, output: Arc<dyn OutputStore>) -> Self {
        self.output = Some(Output::Given(output));
        self
    }

    /// Output in capped files under `dir`, whatever keeps the records.
    #[must_use]
    pub fn file_output(mut self, dir: impl Into<PathBuf>) -> Self {
        self.output = Some(Output::Files(dir.into()));
        self
    }

    /// How many bytes of output each process keeps (default
    /// [`DEFAULT_OUTPUT_CAP`]); the oldest go first.
    #[must_use]
    pub fn output_cap(mut self, bytes: u64) -> Self {
        self.output_cap = Some(bytes);
        self
    }

    /// Real OS processes (the default): each in its own session, its whole
    /// tree stopped with it.
    #[must_use]
    pub fn os_spawner(mut self) -> Self {
        self.spawner = None;
        self
    }

    /// A spawner of your own (for example `bpm_adapters::fake::ScriptedSpawner`
    /// in tests of code built on bpm).
    #[must_use]
    pub fn spawner(mut self, spawner: Arc<dyn ProcessSpawner>) -> Self {
        self.spawner = Some(spawner);
        self
    }

    /// How many processes run at once, per group, and how long ended
    /// records are kept.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The node name records carry (default: the local node).
    #[must_use]
    pub fn node(mut self, node: NodeId) -> Self {
        self.node = Some(node);
        self
    }

    /// Opens the stores and starts the engine; records a store kept from
    /// before are taken up again.
    ///
    /// # Errors
    /// [`EmbedError::Store`] naming the directory that cannot be opened;
    /// [`EmbedError::Manager`] if the engine does not start.
    pub async fn start(self) -> Result<Engine, EmbedError> {
        let cap = self.output_cap.unwrap_or(DEFAULT_OUTPUT_CAP);
        let (store, store_output): (Arc<dyn ProcessStore>, Option<PathBuf>) = match self.store {
            Store::Memory => (Arc::new(InMemoryStore::new()), None),
            Store::Fs(dir) => {
                let records = dir.join("records");
                let store = FsStore::open(&records).map_err(|e| EmbedError::Store {
                    path: records,
                    reason: e.to_string(),
                })?;
                (Arc::new(store), Some(dir.join("output")))
            }
            Store::Given(store) => (store, None),
        };
        let output: Arc<dyn OutputStore> = match (self.output, store_output) {
            (Some(Output::Given(output)), _) => output,
            (Some(Output::Files(dir)), _) | (None, Some(dir)) => {
                let files = FileOutput::new(&dir, cap).map_err(|e| EmbedError::Store {
                    path: dir.clone(),
                    reason: e.to_string(),
                })?;
                Arc::new(files)
            }
            (None, None) => Arc::new(InMemoryOutput::new(cap)),
        };
        let spawner = self.spawner.unwrap_or_else(|| {
            Arc::new(OsSpawner::new(
                Arc::clone(&output),
                OsSpawnerConfig::default(),
            ))
        });
        let ports = Ports {
            store,
            output,
            events: Arc::new(BroadcastBus::default()),
            spawner,
            clock: Arc::new(SystemClock::new()),
            ids: Arc::new(UuidV7Ids::new()),
            usage: Arc::new(ProcSampler::new()),
            host: Arc::new(OsHost::new()),
        };
        let config = EngineConfig {
            node: self.node,
            limits: self.limits,
            ..EngineConfig::default()
        };
        Ok(Engine::launch(ports, config).await?)
    }
}
