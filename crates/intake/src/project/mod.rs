//! Project files: `bpm.toml` (found in the current directory or the
//! nearest parent), a Procfile, or a process-compose file, read into a
//! [`Project`](bpm_domain::project::Project) whose rules live in `bpm_domain::project`.
//!
//! Everything is checked before anything starts: an unknown key, a bad
//! duration, a dependency on a service that does not exist or a cycle is
//! refused with the file, the line and the key named.
//!
//! The client-side protocols (`up`, `down`, `wait_up`) work on any
//! [`Project`](bpm_domain::project::Project), read from a file or built
//! by a program; reading files is the `files` feature.

mod client;
#[cfg(feature = "files")]
mod read;

pub use client::{
    Done, FILE_KEY, NotUp, ScaleError, Step, down, file_of, from_store, give_up_roll, of_project,
    scale, tail, up, wait_up,
};
#[cfg(feature = "files")]
pub use read::{
    FILE_NAME, Loaded, MAX_FILE_BYTES, MAX_NESTING, MAX_REPLICAS, MAX_SERVICES, OVERRIDE_FILE_NAME,
    Reading, find, load, load_all, load_all_confined, load_confined,
};
