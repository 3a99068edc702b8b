//! `$BPM_HOME/config.toml`: every key optional.
//!
//! ```toml
//! store = "fs"             # fs | memory | redis://[user:password@]host:port[/db] | rediss://...
//! node = "local"           # this node's name; records carry it
//! redis_prefix = "bpm"     # keys live under bpm:{PREFIX}:
//! output_cap = 67108864    # bytes of output kept per process
//! on_exit = "notify-send done"  # a command run when any process ends (record as JSON on stdin)
//!
//! [limits]
//! max_running = 10         # processes running at once
//! default_group_limit = 4  # for named groups without their own limit
//! max_depth = 10           # hierarchy depth
//! max_per_level = 20       # unfinished processes per hierarchy level
//! retention = "7d"         # finished records are forgotten after this long
//! hand_over_ahead = 8      # queued records the keeper holds to start on exits
//!
//! [limits.group_limits]
//! tests = 2
//!
//! [mcp]                    # bpm mcp (see `crate::mcp::McpConfig`)
//! allow_commands = ["npm test", "cargo"]
//! allow_dirs = ["/home/me/src"]
//! read_only = false
//! redact_env = true
//! max_output_bytes = 65536
//!
//! [web]                    # bpm web (see `crate::web::WebSettings`)
//! listen = "127.0.0.1:8787"
//! read_only = false
//! show_env = false
//! ```

use std::path::Path;

use bpm_domain::{Limits, NodeId};
use serde::Deserialize;

use crate::wiring::StoreChoice;

/// The daemon's configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `fs`, `memory`, or a Redis URL.
    pub store: Option<String>,
    /// This node's name.
    pub node: Option<NodeId>,
    /// The Redis key prefix.
    pub redis_prefix: Option<String>,
    /// Bytes of output kept per process.
    pub output_cap: Option<u64>,
    /// A command run when a process ends.
    pub on_exit: Option<String>,
    /// Supervision limits.
    pub limits: Limits,
    /// What `bpm mcp` lets agents do.
    pub mcp: crate::mcp::McpConfig,
    /// How `bpm web` serves the dashboard.
    pub web: crate::web::WebSettings,
}

impl Config {
    /// Reads `home/config.toml`; a missing file is the default configuration.
    ///
    /// # Errors
    /// A message naming the file and what is wrong in it.
    pub fn load(home: &Path) -> Result<Config, String> {
        let path = home.join("config.toml");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let config: Config =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(store) = &config.store {
            store
                .parse::<StoreChoice>()
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(config)
    }

    /// The store to use, `fs` unless configured.
    pub fn store_choice(&self) -> StoreChoice {
        self.store
            .as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or(StoreChoice::Filesystem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_optional_and_typos_are_named() {
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(
            Config::load(dir.path())
                .expect("no file")
                .limits
                .max_running,
            10
        );
        std::fs::write(dir.path().join("config.toml"), "store = \"memory\"\n[limits]\nmax_running = 3\nretention = \"1h\"\n[limits.group_limits]\ntests = 2\n").expect("write");
        let c = Config::load(dir.path()).expect("valid");
        assert_eq!(c.store_choice(), StoreChoice::Memory);
        assert_eq!(c.limits.max_running, 3);
        assert_eq!(c.limits.group_limits.len(), 1);
        std::fs::write(dir.path().join("config.toml"), "max_runing = 3\n").expect("write");
        let err = Config::load(dir.path()).expect_err("typo");
        assert!(
            err.contains("max_runing") && err.contains("config.toml"),
            "{err}"
        );
        std::fs::write(dir.path().join("config.toml"), "store = \"postgres://x\"\n")
            .expect("write");
        assert!(
            Config::load(dir.path())
                .expect_err("bad store")
                .contains("invalid store")
        );
    }
}
