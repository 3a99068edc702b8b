//! [`ThisMachine`]: the machine's answers a front end asks before it sends
//! a request ([`bpm_ports::Machine`]).

use std::path::{Path, PathBuf};

use bpm_domain::{Environment, FileWatch, ResourceLimits};

/// This machine, as `bpm-intake` asks it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThisMachine;

impl bpm_ports::Machine for ThisMachine {
    fn usable_dir(&self, dir: &Path) -> Result<(), String> {
        crate::usable_cwd(dir).map_err(|e| e.to_string())
    }

    fn check_watch(&self, watch: &FileWatch) -> Result<(), String> {
        super::check_watch(watch)
    }

    fn check_limits(&self, limits: &ResourceLimits) -> Result<(), (&'static str, String)> {
        super::limits::enforcement(limits).map(drop)
    }

    fn read_env_files(&self, files: &[PathBuf]) -> Result<Environment, String> {
        crate::env_file::read(files).map_err(|e| e.to_string())
    }

    fn time_zone(&self) -> String {
        super::local_time_zone()
    }
}
