//! Files and folders that only their owner can read: everything bpm keeps
//! under a state directory (records hold the caller's whole environment,
//! secrets included, and output may too).
//!
//! Files are made `0600` and folders `0700` whatever the umask, which bpm
//! never changes: the processes it starts inherit it.

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

/// Open options that create a file readable and writable by its owner only.
#[must_use]
pub fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(0o600);
    options
}

/// Creates `dir` and its missing parents, each readable by its owner only.
/// A folder that exists keeps its mode.
///
/// # Errors
/// A folder cannot be made.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Refuses a state directory that this user does not own, as ssh refuses a
/// key file that others can change: whoever owns it could read every
/// record's environment or plant records that bpm would run.
///
/// # Errors
/// [`io::ErrorKind::PermissionDenied`], naming the folder, its owner and
/// what to do, if another user owns `dir`; the error of `stat` otherwise.
pub fn check_owner(dir: &Path) -> io::Result<()> {
    let owner = std::fs::metadata(dir)?.uid();
    let me = rustix::process::geteuid().as_raw();
    if owner == me {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{} belongs to user {owner}, not to this user ({me}); bpm keeps secrets there, \
             so it uses only a state directory of its own: choose another with BPM_HOME \
             or give this one to this user",
            dir.display()
        ),
    ))
}
