//! Filesystem adapters: no server needed.

mod journal;
mod output;
mod store;

pub use output::FileOutput;
pub use store::FsStore;
