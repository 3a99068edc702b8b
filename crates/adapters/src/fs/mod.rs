//! Filesystem adapters: no server needed.

mod journal;
mod output;
mod store;

pub use output::FileOutput;
pub use store::FsStore;

use std::fs::File;
use std::io;
use std::path::Path;

/// Flushes a folder's entries (names made, renamed or removed in it).
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Flushes everything written on the filesystem that holds `dir`.
fn sync_filesystem(dir: &Path) -> io::Result<()> {
    rustix::fs::syncfs(File::open(dir)?).map_err(io::Error::from)
}
