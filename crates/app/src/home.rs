//! A state directory and the files the daemon and keeper keep in it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::{Context, Result};

/// The files of a state directory.
#[derive(Debug, Clone)]
pub struct Home {
    /// The state directory.
    pub dir: PathBuf,
}

impl Home {
    /// The state directory at `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Home { dir }
    }
    /// The control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("bpm.sock")
    }
    /// The daemon's pid file.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("daemon.pid")
    }
    /// The daemon's log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }
    /// The lock the running daemon holds.
    pub(crate) fn lock(&self) -> PathBuf {
        self.dir.join("daemon.lock")
    }

    /// Creates the directory, readable by its owner only.
    ///
    /// # Errors
    /// The directory cannot be made or restricted, or another user owns it.
    pub fn prepare(&self) -> Result<()> {
        bpm_adapters::private::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        bpm_adapters::private::check_owner(&self.dir)?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {} to its owner", self.dir.display()))
    }
}
