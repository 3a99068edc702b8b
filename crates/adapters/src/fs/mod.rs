//! Filesystem adapters: no server needed.

mod disk;
mod files;
mod journal;
mod load;
mod output;
mod store;

pub use output::FileOutput;
pub use store::FsStore;

use std::fs::File;
use std::io;
use std::path::Path;

use bpm_domain::{ProcessId, ProcessRecord};
use bpm_ports::StoreError;

/// Records by id, each in its own allocation: a B-tree filled in id order
/// is half empty, and its empty slots then hold pointers, not records.
type Records = std::collections::BTreeMap<ProcessId, ProcessRecord>;

/// Flushes a folder's entries (names made, renamed or removed in it).
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Flushes everything written on the filesystem that holds `dir`.
fn sync_filesystem(dir: &Path) -> io::Result<()> {
    rustix::fs::syncfs(File::open(dir)?).map_err(io::Error::from)
}

fn io_err(path: &Path, e: &io::Error) -> String {
    format!("{}: {e}", path.display())
}

fn refused(path: &Path, e: &io::Error) -> StoreError {
    StoreError::Refused(io_err(path, e))
}

fn unavailable(path: &Path, e: &io::Error) -> StoreError {
    StoreError::Unavailable(io_err(path, e))
}
