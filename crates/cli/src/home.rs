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

    /// Holds project `name`'s lock until the guard is dropped, waiting for
    /// whoever holds it: two `bpm up` (or `down`, or MCP's `project_up`)
    /// of one project apply their plans one after the other, so that the
    /// result equals one `up` (each plans from what the last one left).
    ///
    /// # Errors
    /// The lock file cannot be made or locked.
    pub fn lock_project(&self, name: &str) -> Result<fs::File> {
        use sha2::Digest as _;
        let dir = self.dir.join("projects");
        bpm_adapters::private::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        // Any name, any characters: the file is named by its digest.
        let digest = sha2::Sha256::digest(name.as_bytes());
        let hex = digest[..8].iter().fold(String::new(), |mut hex, b| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{b:02x}");
            hex
        });
        let path = dir.join(format!("{hex}.lock"));
        let file = bpm_adapters::private::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(file)
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
