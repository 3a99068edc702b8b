//! `$BPM_HOME/config.toml`: every key optional.
//!
//! ```toml
//! store = "fs"             # fs | memory | redis://[user:password@]host:port[/db] | rediss://...
//! node = "builder-1"       # this node's name (default: the hostname); records carry it
//!                          # or, with labels for `--node any --node-label K=V`:
//!                          # [node]  name = "builder-1"  labels = { gpu = "true" }
//! redis_prefix = "bpm"     # keys live under bpm:{PREFIX}:
//! lease_ttl = "10s"        # with a Redis store: this node's lease (at least 2s)
//! lost_after = "5m"        # with a Redis store: how long a lost node's records wait for it
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
//! [mcp]                    # bpm mcp (see `McpConfig`)
//! allow_commands = ["npm test", "cargo"]
//! allow_dirs = ["/home/me/src"]
//! read_only = false
//! redact_env = true
//! max_output_bytes = 65536
//! share_tasks = false      # MCP tasks: every session may read and cancel every one
//!
//! [web]                    # bpm web (see `WebSettings`)
//! listen = "127.0.0.1:8787"
//! read_only = false
//! show_env = false
//! ```

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bpm_domain::{ClusterTiming, Limits, NodeId, Span};
use serde::Deserialize;

use crate::wiring::StoreChoice;

/// The daemon's configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `fs`, `memory`, or a Redis URL.
    pub store: Option<String>,
    /// This node's name, and the labels it carries.
    pub node: Option<NodeSetting>,
    /// The Redis key prefix.
    pub redis_prefix: Option<String>,
    /// This node's lease, with a Redis store.
    pub lease_ttl: Option<Span>,
    /// How long a lost node's records wait for it, with a Redis store.
    pub lost_after: Option<Span>,
    /// Bytes of output kept per process.
    pub output_cap: Option<u64>,
    /// A command run when a process ends.
    pub on_exit: Option<String>,
    /// Supervision limits.
    pub limits: Limits,
    /// What `bpm mcp` lets agents do.
    pub mcp: McpConfig,
    /// How `bpm web` serves the dashboard.
    pub web: WebSettings,
}

/// `node`: a name, or a table with a name and labels.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    untagged,
    expecting = "a node name, or a [node] table with `name` and `labels` (a table of text values)"
)]
pub enum NodeSetting {
    /// `node = "builder-1"`.
    Name(NodeId),
    /// `[node]` with `name` and `labels`.
    Table(NodeTable),
}

/// The `[node]` table.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeTable {
    /// This node's name.
    pub name: Option<NodeId>,
    /// The labels it carries, which `--node any --node-label K=V` requires.
    pub labels: bpm_domain::cluster::placement::NodeLabels,
}

impl Config {
    /// This node's name, if configured.
    pub fn node_name(&self) -> Option<&NodeId> {
        match self.node.as_ref()? {
            NodeSetting::Name(n) => Some(n),
            NodeSetting::Table(t) => t.name.as_ref(),
        }
    }

    /// The labels this node carries (`[node] labels`).
    pub fn node_labels(&self) -> bpm_domain::cluster::placement::NodeLabels {
        match &self.node {
            Some(NodeSetting::Table(t)) => t.labels.clone(),
            _ => bpm_domain::cluster::placement::NodeLabels::new(),
        }
    }

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
        config
            .cluster_timing()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        config
            .limits
            .check()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(config)
    }

    /// The cluster's timing: `lease_ttl` and `lost_after`, defaults for
    /// those not set.
    ///
    /// # Errors
    /// Why the two cannot work together (see [`ClusterTiming::new`]).
    pub fn cluster_timing(&self) -> Result<ClusterTiming, bpm_domain::TimingError> {
        let default = ClusterTiming::default();
        let span = |d| Span::new(d).expect("a default is in range");
        ClusterTiming::new(
            self.lease_ttl.unwrap_or_else(|| span(default.lease_ttl())),
            self.lost_after
                .unwrap_or_else(|| span(default.lost_after())),
        )
    }

    /// The store to use, `fs` unless configured.
    pub fn store_choice(&self) -> StoreChoice {
        self.store
            .as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or(StoreChoice::Filesystem)
    }
}

/// The file in a state directory that remembers the node name it was last
/// run as, so that a home keeps its records' node when nothing names one.
const NODE_FILE: &str = "node";

/// This node's name, from the first of: `BPM_NODE` (`env`), config `node`,
/// the name `home` was last run as, and the machine's `hostname`. A home
/// used before node names were remembered (it holds records or output) ran
/// as `local`, and keeps that name. The name is remembered in `home`.
///
/// # Errors
/// A message naming the source of an invalid name and how to set one.
pub fn node_name(
    home: &Path,
    config: Option<&NodeId>,
    env: Option<&OsStr>,
    hostname: &str,
) -> Result<NodeId, String> {
    let remembered = home.join(NODE_FILE);
    let known = std::fs::read_to_string(&remembered).ok();
    let name = if let Some(raw) = env {
        let text = raw
            .to_str()
            .ok_or_else(|| format!("BPM_NODE={}: a node name must be text", raw.display()))?;
        NodeId::new(text).map_err(|e| format!("BPM_NODE: {e}"))?
    } else if let Some(name) = config {
        name.clone()
    } else if let Some(text) = &known {
        NodeId::new(text.trim()).map_err(|e| {
            format!(
                "{}: {e}; remove the file or set `node` in config.toml",
                remembered.display()
            )
        })?
    } else if home.join("records").exists() || home.join("output").exists() {
        NodeId::local()
    } else {
        NodeId::new(hostname).map_err(|e| {
            format!(
                "the hostname is not a valid node name ({e}); set `node` in {} or BPM_NODE",
                home.join("config.toml").display()
            )
        })?
    };
    if name.is_any() {
        return Err(format!(
            "the node name `{}` is reserved: it places a process on whichever node takes it (--node any); name this node otherwise (BPM_NODE or `node` in {})",
            NodeId::ANY,
            home.join("config.toml").display()
        ));
    }
    if known.as_deref().map(str::trim) != Some(name.as_str()) {
        // Only a convenience: a home that cannot remember still runs, as named.
        let written = bpm_adapters::private::options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&remembered)
            .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{name}\n").as_bytes()));
        if let Err(e) = written {
            tracing::warn!(path = %remembered.display(), error = %e, "cannot remember the node name");
        }
    }
    Ok(name)
}

/// The machine's hostname.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
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

    #[test]
    fn limits_that_cannot_work_are_refused_by_key_with_the_reason() {
        let dir = tempfile::tempdir().expect("dir");
        for (text, key, why) in [
            (
                "[limits]\nmax_running = 0\n",
                "limits.max_running = 0",
                "queued for ever",
            ),
            (
                "[limits.group_limits]\ntests = 0\n",
                "limits.group_limits.tests = 0",
                "queued for ever",
            ),
            (
                "[limits]\ndefault_group_limit = 0\n",
                "limits.default_group_limit = 0",
                "queued for ever",
            ),
            (
                "[limits]\nretention = \"0s\"\n",
                "limits.retention = \"0s\"",
                "before `wait`",
            ),
            (
                "[limits]\nretention = \"500ms\"\n",
                "limits.retention = \"500ms\"",
                "at least 1s",
            ),
        ] {
            std::fs::write(dir.path().join("config.toml"), text).expect("write");
            let err = Config::load(dir.path()).expect_err(text);
            assert!(
                err.contains("config.toml") && err.contains(key) && err.contains(why),
                "{text}: {err}"
            );
        }
        std::fs::write(
            dir.path().join("config.toml"),
            "[limits]\nmax_running = 1\nretention = \"1s\"\n",
        )
        .expect("write");
        Config::load(dir.path()).expect("the least that works");
    }

    #[test]
    fn the_node_is_named_by_env_then_config_then_the_home_then_the_hostname() {
        let dir = tempfile::tempdir().expect("dir");
        let home = dir.path();
        let configured = NodeId::new("from-config").expect("valid");
        let name = |config, env: Option<&str>| {
            node_name(home, config, env.map(OsStr::new), "box-7.example")
        };
        // A new home takes the hostname, and remembers it.
        assert_eq!(name(None, None).expect("valid").as_str(), "box-7.example");
        assert_eq!(
            std::fs::read_to_string(home.join(NODE_FILE)).expect("remembered"),
            "box-7.example\n"
        );
        assert_eq!(
            name(Some(&configured), Some("from-env"))
                .expect("valid")
                .as_str(),
            "from-env"
        );
        assert_eq!(
            name(Some(&configured), None).expect("valid").as_str(),
            "from-config"
        );
        // The last name run with stays when nothing names one.
        assert_eq!(name(None, None).expect("valid").as_str(), "from-config");
        let err = name(None, Some("no spaces")).expect_err("invalid");
        assert!(err.starts_with("BPM_NODE: "), "{err}");
        // A home from before names were remembered ran as `local`.
        let old = tempfile::tempdir().expect("dir");
        std::fs::create_dir(old.path().join("records")).expect("records");
        let node = node_name(old.path(), None, None, "box-7").expect("valid");
        assert_eq!(node, NodeId::local());
        // A hostname that is no valid name says how to set one.
        let fresh = tempfile::tempdir().expect("dir");
        let err = node_name(fresh.path(), None, None, "bad host").expect_err("invalid");
        assert!(
            err.contains("BPM_NODE") && err.contains("config.toml"),
            "{err}"
        );
        // `any` is a placement, never a node's name.
        let err = node_name(fresh.path(), None, Some(OsStr::new("any")), "box").expect_err("any");
        assert!(
            err.contains("reserved") && err.contains("--node any"),
            "{err}"
        );
    }

    #[test]
    fn the_node_is_a_name_or_a_table_with_labels() {
        let config: Config = toml::from_str("node = \"b1\"\n").expect("a name");
        assert_eq!(config.node_name().map(NodeId::as_str), Some("b1"));
        assert!(config.node_labels().is_empty());
        let config: Config = toml::from_str(
            "[node]\nname = \"gpu-1\"\nlabels = { gpu = \"true\", os = \"linux\" }\n",
        )
        .expect("a table");
        assert_eq!(config.node_name().map(NodeId::as_str), Some("gpu-1"));
        let labels: Vec<String> = config
            .node_labels()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(labels, ["gpu=true", "os=linux"]);
        let err = toml::from_str::<Config>("[node]\nlabels = { gpu = 1 }\n").expect_err("bad");
        assert!(
            err.to_string().contains("a node name, or a [node] table"),
            "{err}"
        );
    }
}

/// The `[mcp]` section of `config.toml`; every key optional.
///
/// ```toml
/// [mcp]
/// allow_commands = ["npm test", "cargo"]  # only commands starting with these (word boundary)
/// allow_dirs = ["/home/me/src"]           # only in these directories or below
/// allow_env = ["NODE_OPTIONS"]            # variables that change what runs, allowed under allow_commands
/// read_only = false                       # true: list, read and wait only
/// redact_env = true                       # hide environment values in what agents see
/// redact_vars = ["DATABASE_URL", "STRIPE_*"]  # more secret variables (a trailing * matches any end)
/// redact_min_len = 4                      # the shortest secret value hidden in output text
/// max_output_bytes = 65536                # the most output one answer carries
/// owner_grace = "10m"                     # how long what a client started outlives its session
/// share_tasks = false                     # true: every client session may read and cancel every task
/// http = "127.0.0.1:8788"                 # the daemon also serves MCP over HTTP here (token in mcp-token)
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// Allowed command prefixes; empty allows every command.
    pub allow_commands: Vec<String>,
    /// Allowed working directories; empty allows every directory.
    pub allow_dirs: Vec<PathBuf>,
    /// Variables that change what runs (`PATH`, `LD_*`...) that a request
    /// may set under `allow_commands` all the same.
    pub allow_env: Vec<String>,
    /// Refuse every tool that changes anything.
    pub read_only: bool,
    /// Hide environment values (`true` unless set to `false`).
    pub redact_env: Option<bool>,
    /// More secret variables, by name (see `Policy::is_secret`).
    pub redact_vars: Vec<String>,
    /// The shortest secret value hidden in output text.
    pub redact_min_len: Option<usize>,
    /// The most output bytes one answer carries.
    pub max_output_bytes: Option<usize>,
    /// How long the processes a client started (unless `persistent`)
    /// outlive its session: 10 minutes unless set.
    pub owner_grace: Option<Span>,
    /// Whether every client session may read and cancel every MCP task,
    /// not only its own.
    pub share_tasks: bool,
    /// Where the daemon serves MCP over Streamable HTTP as well, for
    /// every agent on the machine (`bpm mcp --http` serves it alone).
    pub http: Option<std::net::SocketAddr>,
}

/// The `[web]` section of `config.toml`; every key optional.
///
/// ```toml
/// [web]
/// listen = "127.0.0.1:8787"   # default: 127.0.0.1 and a free port
/// read_only = false           # true: show, never change
/// show_env = false            # true: show environment values in the detail pane
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSettings {
    /// Where to listen.
    pub listen: Option<SocketAddr>,
    /// Refuse every action.
    pub read_only: bool,
    /// Show environment values.
    pub show_env: bool,
}
