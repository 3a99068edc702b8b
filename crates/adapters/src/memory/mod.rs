//! In-memory adapters: for tests and for embedding bpm where nothing must outlive the process.
//!
//! The ports' contract suites run on them as on any adapter; in a test file
//! (with `bpm-ports`' `contract` feature), one line stamps a test per case:
//!
//! ```
//! use std::sync::Arc;
//! use bpm_adapters::memory::InMemoryStore;
//! use bpm_ports::ProcessStore;
//!
//! bpm_ports::store_contract_tests!(Arc::new(InMemoryStore::new()) as Arc<dyn ProcessStore>);
//! # fn main() {}
//! ```

mod claims;
mod commands;
mod events;
mod membership;
mod output;
mod store;

pub use claims::InMemoryClaims;
pub use commands::{CommandHub, InMemoryCommands};
pub use events::{BroadcastBus, RECENT_EVENTS};
pub use membership::{InMemoryFailover, InMemoryMembership};
pub use output::{DEFAULT_OUTPUT_CAP, InMemoryOutput};
pub use store::InMemoryStore;
