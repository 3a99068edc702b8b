//! bpm's adapters with no server behind them: all an embedded engine needs.
//! The servers' adapters are crates of their own: `bpm-redis`, `bpm-mcp` and
//! `bpm-web`.
//!
//! - [`control`]: the control socket: the daemon's server and the client.
//! - [`fs`]: output in capped files.
//! - [`keeper`]: the per-node keeper that runs processes for the daemon, and its client.
//! - [`memory`]: the in-memory store, output store, event bus and command bus (tests, embedding).
//! - [`segments`], [`tail`]: the output layout the file and Redis output stores share.
//! - [`clock`]: the system clock and a manual clock for tests.
//! - [`ids`]: UUID v7 ids.
//! - [`os`]: the OS spawner: real processes, their trees, their output.
//! - [`os::ProcSampler`]: what process trees use (CPU, memory, ports), from /proc.
//! - [`private`]: files and folders only their owner can read.
//! - [`env_file`]: environment files (dotenv).
//! - [`fake`]: a scriptable spawner that runs no OS process, for engine tests.

pub mod clock;
pub mod control;
pub mod env_file;
pub mod fake;
pub mod fs;
pub mod ids;
pub mod keeper;
pub mod memory;
pub mod os;
pub mod private;
mod rpc;
pub mod segments;
pub mod space;
pub mod tail;

/// Whether `cwd` can be a process's working directory (the spawners and
/// the front ends ask the same question): it exists
/// ([`SpawnError::CwdNotFound`](bpm_ports::SpawnError::CwdNotFound)) and is a directory
/// ([`SpawnError::CwdNotADirectory`](bpm_ports::SpawnError::CwdNotADirectory)).
///
/// # Errors
/// Either of those two, naming the path.
pub fn usable_cwd(cwd: &std::path::Path) -> Result<(), bpm_ports::SpawnError> {
    match std::fs::metadata(cwd) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(bpm_ports::SpawnError::CwdNotADirectory(cwd.to_path_buf())),
        Err(_) => Err(bpm_ports::SpawnError::CwdNotFound(cwd.to_path_buf())),
    }
}
