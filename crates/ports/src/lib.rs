//! bpm's ports: the async traits the core needs (clock, ids, persistence,
//! output, process spawning, events, resource usage, the host's ports and
//! owners, commands for other nodes) and [`ProcessManager`], the API that every
//! front end (library, CLI, daemon, MCP) uses.
//!
//! Every method documents the errors it MUST return; the contract suites in
//! the `contract` module (feature `contract`) check that each adapter does.
#![warn(missing_docs)]

mod call;
mod claims;
mod clock;
mod commands;
mod events;
mod host;
mod ids;
mod machine;
mod manager;
mod membership;
mod output;
mod spawner;
mod store;
mod usage;

#[cfg(feature = "contract")]
pub mod contract;

pub use call::{Call, DaemonStatus, MAX_REQUEST_BYTES, Reply, Started, WireError, apply};
pub use claims::{ClaimQueue, ClaimedOne, ClusterSlots, FailedOver, Failover};
pub use clock::Clock;
pub use commands::{
    CommandBus, CommandMark, Delivery, answer_within, answer_without_carrying_out, not_answering,
    only_if_alive, unanswered,
};
pub use events::{EventBus, EventBusError};
pub use host::{Host, WatchError};
pub use ids::IdGenerator;
pub use machine::Machine;
pub use manager::{Completion, ManagerError, ProcessManager, RoutingRefusal, StopOptions};
pub use membership::{Candidate, Membership, MembershipError, NodeView, WriteFence};
pub use output::{
    Cursor, OutputChunk, OutputError, OutputPiece, OutputQuery, OutputStore, Stream, StreamSelect,
};
pub use spawner::{
    OUTPUT_LOOK, ProcessNotice, ProcessSpawner, SpawnError, SpawnRequest, Spawned, look_again,
};
pub use store::{ProcessStore, StoreError, StoreWrite};
pub use usage::{ResourceSampler, ResourceUsage, SampleTarget};

#[cfg(any(test, feature = "mocks"))]
pub use {
    clock::MockClock, commands::MockCommandBus, events::MockEventBus, host::MockHost,
    ids::MockIdGenerator, machine::MockMachine, manager::MockProcessManager,
    output::MockOutputStore, spawner::MockProcessSpawner, store::MockProcessStore,
    usage::MockResourceSampler,
};

/// The mocking crate the mocks above are made with, so that a test can set
/// their expectations (`mockall::predicate`, `mockall::Sequence`) without a
/// dependency of its own, at the version the mocks need.
#[cfg(feature = "mocks")]
pub use mockall;
