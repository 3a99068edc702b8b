//! In-memory adapters: for tests and for embedding bpm where nothing must outlive the process.

mod claims;
mod events;
mod membership;
mod output;
mod store;

pub use claims::InMemoryClaims;
pub use events::{BroadcastBus, RECENT_EVENTS};
pub use membership::{InMemoryFailover, InMemoryMembership};
pub use output::{DEFAULT_OUTPUT_CAP, InMemoryOutput};
pub use store::InMemoryStore;
