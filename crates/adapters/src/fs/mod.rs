//! Filesystem adapters: no server needed.

mod output;

pub use output::FileOutput;
