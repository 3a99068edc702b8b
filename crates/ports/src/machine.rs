use std::path::{Path, PathBuf};

use bpm_domain::{Environment, FileWatch, ResourceLimits};

/// What a front end asks of the machine before it sends a request, so
/// that a mistake is refused where it was made, naming the flag or key,
/// rather than by the daemon later: whether a directory can be a working
/// directory, whether files can be watched and limits enforced here, and
/// what env files hold now. Implemented by the OS adapter; `bpm-intake`
/// asks it while it turns a request into a spec.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait Machine: Send + Sync {
    /// Whether `dir` exists and is a directory.
    ///
    /// # Errors
    /// What is wrong with it, naming it.
    fn usable_dir(&self, dir: &Path) -> Result<(), String>;

    /// Whether `watch` can be set up here: every path exists and the
    /// tree under it is within what the system lets bpm watch.
    ///
    /// # Errors
    /// The first path that cannot be watched, and why.
    fn check_watch(&self, watch: &FileWatch) -> Result<(), String>;

    /// Whether this machine can enforce every limit of `limits`.
    ///
    /// # Errors
    /// The first limit it cannot enforce, by its option (`memory_max`,
    /// `cpu_max`, `pids_max` or `nofile`), and why.
    fn check_limits(&self, limits: &ResourceLimits) -> Result<(), (&'static str, String)>;

    /// The variables of the env files `files` (dotenv format), a later
    /// file's over an earlier's.
    ///
    /// # Errors
    /// The first file that cannot be read or parsed, naming it and the
    /// line at fault, never quoting it.
    fn read_env_files(&self, files: &[PathBuf]) -> Result<Environment, String>;

    /// The IANA name of this machine's time zone (`UTC` when unknown).
    fn time_zone(&self) -> String;
}
