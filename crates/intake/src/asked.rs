//! [`Asked`]: what someone asks bpm to run, as every front end can write
//! it down (text, numbers, yes or no), before anything is checked.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bpm_domain::OsText;
#[cfg(feature = "schema")]
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A length of time: a number of seconds (`2.5`) or a duration
/// (`"500ms"`, `"30s"`, `"5m"`, `"1h"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(untagged)]
pub enum Duration {
    /// Seconds.
    Seconds(f64),
    /// A duration written with its unit.
    Text(String),
}

impl From<&str> for Duration {
    fn from(text: &str) -> Self {
        Duration::Text(text.to_owned())
    }
}

/// A value written as a number or as text (`64`, `"512M"`, `"auto"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(untagged)]
pub enum Amount {
    /// A whole number.
    Number(i64),
    /// Text.
    Text(String),
}

impl Amount {
    /// The value as text.
    pub fn text(&self) -> String {
        match self {
            Amount::Number(n) => n.to_string(),
            Amount::Text(t) => t.clone(),
        }
    }
}

impl From<&str> for Amount {
    fn from(text: &str) -> Self {
        Amount::Text(text.to_owned())
    }
}

/// A liveness check: one of `http`, `exec` or `port`, with how often it
/// runs, how many failures in a row restart the process, and how long
/// one try may take.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct HealthAsked {
    /// A URL, or a path on the process's `port`: healthy while a GET answers 2xx or 3xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// A command (`sh -c`, in the process's directory and environment): healthy while it exits 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<String>,
    /// A TCP port on 127.0.0.1: healthy while it accepts connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// How often the check runs (2 s by default).
    #[serde(default, alias = "every_secs", skip_serializing_if = "Option::is_none")]
    pub every: Option<Duration>,
    /// Failures in a row after which the process is started again under its restart policy (3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    /// How long one try may take (5 s).
    #[serde(
        default,
        alias = "timeout_secs",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// The first check this long after the start (one `every` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<Duration>,
    /// Passes in a row that make it healthy again after a failure (1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successes: Option<u32>,
}

/// What someone asks bpm to run: every setting a process can have, as a
/// command line, an MCP call, a project file's service or the page's
/// form writes it, before anything is checked. Each front end fills one
/// in a few lines and calls [`Asked::into_spec`]; a field added here
/// reaches every front end at once.
///
/// Unknown fields are refused, so a misspelt key is named, not ignored.
/// Old spellings of MCP's arguments (`timeout_secs`, `grace_secs`,
/// `watch_debounce_secs`) are still read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Asked {
    /// A command line, run with `sh -c`. Give this or `argv`.
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<OsText>,
    /// Program and arguments, run without a shell. Give this or `command`.
    #[cfg_attr(feature = "schema", schemars(with = "Option<Vec<String>>"))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<OsText>>,
    /// A name, unique among live processes, to refer to the process by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What kind of work it is: `agent_session`, `test_suite`, `build`, `server`, `analysis` or `custom`.
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["agent_session", "test_suite", "build", "server", "analysis", "mcp", "custom"])))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Working directory (absolute, or relative to the caller's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// Environment variables added to (or overriding) the caller's environment.
    #[cfg_attr(feature = "schema", schemars(with = "BTreeMap<String, String>"))]
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<OsText, OsText>,
    /// Start from an empty environment instead of the caller's (`env` and `env_file` still apply).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clean_env: Option<bool>,
    /// Environment files in dotenv format: their variables go over the
    /// caller's environment, a later file's over an earlier's, and `env`
    /// over all. Read again at each start, so an edit takes effect on the
    /// next restart.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env_file: Vec<PathBuf>,
    /// A session to group processes by (an agent's conversation, say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The id or name of a parent process: stopping the parent stops this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Ids or names of processes that must complete before this one starts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// A concurrency group (limits apply per group).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Higher starts first among queued processes (0 by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Wait this long after submission before starting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    /// Start at this time instead: `HH:MM` today (in `tz`, else this
    /// machine's zone), or an RFC 3339 time. Not with `delay`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Stop it (its stop signal, grace, KILL) once it has run this long; it ends `timed_out`.
    #[serde(alias = "timeout_secs", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Time between the stop signal and KILL when it is stopped (5 s by default).
    #[serde(alias = "grace_secs", skip_serializing_if = "Option::is_none")]
    pub grace: Option<Duration>,
    /// The signal that asks it to stop (TERM by default): a name (`INT`, `SIGHUP`) or a number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// A command (`sh -c`, in its directory and environment) that asks it
    /// to stop, run before the stop signal; what it writes goes to the
    /// process's output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_command: Option<String>,
    /// How long the stop command may take before the signal follows (10 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_command_timeout: Option<Duration>,
    /// When it restarts by itself: never (the default), on-failure or always.
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["never", "on-failure", "always"])))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    /// At most this many automatic restarts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,
    /// The first delay before a restart (doubling up to a minute, or up to
    /// itself when it is longer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
    /// Ready when a line of its output matches this regular expression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_pattern: Option<String>,
    /// Ready when this TCP port on 127.0.0.1 accepts connections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_port: Option<u16>,
    /// Ready when an HTTP GET of this URL (or this path on `port`) answers 2xx or 3xx.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_http: Option<String>,
    /// Ready when this command (`sh -c`, in the process's directory and environment) exits 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_exec: Option<String>,
    /// Ready when the process says so itself: `READY=1` on the socket in
    /// `NOTIFY_SOCKET` (`sd_notify`), or `bpm ready` from a script.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_notify: Option<bool>,
    /// Fail it if it is not ready this long after it started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_timeout: Option<Duration>,
    /// An HTTP, command or port readiness check's first try this long
    /// after the start (at once by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_initial_delay: Option<Duration>,
    /// How long after a failed readiness try the next is made (250 ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_every: Option<Duration>,
    /// How long one readiness try may take (5 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_check_timeout: Option<Duration>,
    /// Passes in a row that make it ready (1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_successes: Option<u32>,
    /// Failed readiness tries in a row after which the process is stopped
    /// and started again under its restart policy, as an unhealthy one is
    /// (tried until ready by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_failures: Option<u32>,
    /// A liveness check run while it runs: after its failures in a row
    /// the process is started again under its restart policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthAsked>,
    /// Announce an `idle` event after this long without output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_after: Option<Duration>,
    /// Exit codes besides 0 that count as success (completed, and not
    /// restarted on-failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_codes: Option<Vec<i32>>,
    /// Keep this many rotated pieces of its old output, gzip-compressed
    /// (1 to 100; `bpm logs --archived` reads them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_archive: Option<u32>,
    /// Labels, for filtering.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form JSON object kept on the record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// A shell command run when the process ends (the record as JSON on
    /// its stdin; `BPM_PROCESS_ID`, `BPM_STATE`, `BPM_EXIT_CODE` set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_exit: Option<String>,
    /// The node to run it on; "any": the first node with room takes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// With `node` "any": only a node carrying all these labels may take it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_labels: BTreeMap<String, String>,
    /// When its node is lost, run it again on another node; its node
    /// stops it first. Needs `restart` on-failure or always.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<bool>,
    /// End the record when its leader exits, leaving what it started
    /// running. By default a command that backgrounds a server and exits
    /// stays live until the server ends, and a stop reaches it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_only: Option<bool>,
    /// If a live process has this `name`: start nothing and answer with it
    /// when it runs the same command and settings; refused, naming the
    /// differences, otherwise. Safe to repeat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ensure: Option<bool>,
    /// If a live process has this `name`: stop it (its whole tree, its
    /// grace) and start this one once it has ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replace: Option<bool>,
    /// A TCP port handed to the process in `PORT` and `BPM_PORT`, held
    /// until it ends: "auto", a range ("3000-3099") or one port. It is
    /// ready once the port accepts connections, unless another readiness
    /// check is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<Amount>,
    /// The process lives only while one of these lives: `pid:N`,
    /// `session:NAME` or `process:ID`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub owner: Vec<String>,
    /// How long it outlives its last owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_grace: Option<Duration>,
    /// Keep it running after the caller goes away, when the caller would
    /// otherwise own it (an MCP client's session).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent: Option<bool>,
    /// Restart it (as a new record) when files under these paths change.
    /// Changes under `.git` never count.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub watch: Vec<PathBuf>,
    /// With `watch`: globs of paths whose changes do not count (`*.log`, `target/**`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub watch_ignore: Vec<String>,
    /// With `watch`: quiet time after a change before the restart (0.3 s by default).
    #[serde(alias = "watch_debounce_secs", skip_serializing_if = "Option::is_none")]
    pub watch_debounce: Option<Duration>,
    /// With `watch`: restart the live processes that depend on this one too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_dependents: Option<bool>,
    /// Open a pipe to its standard input. Without it, stdin is empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin: Option<bool>,
    /// Run it under a pseudo-terminal, so that programs that check for one
    /// (prompts, REPLs, colours) behave as they do for a person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
    /// With tty: its size in columns by rows ("120x40").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tty_size: Option<String>,
    /// Make a schedule: a run every this long ("30s", "5m"), counted from now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// Make a schedule: a run at each time this five-field cron expression names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// With `cron`: the IANA time zone its hours are in; the machine's by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// With a schedule: what a due time does while the last run is live:
    /// "skip" (the default), "queue" or "allow".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlap: Option<String>,
    /// With a schedule: each run starts up to this long after its due time ("10s").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<String>,
    /// With a schedule: the first run starts now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_now: Option<bool>,
    /// With a schedule: after a time no daemon ran, the last due time missed runs late, once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<bool>,
    /// Memory the process and its tree may use ("512M", "2G").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<Amount>,
    /// CPU the tree may use, in percent of one CPU (50; 200 for two CPUs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_max: Option<Amount>,
    /// How many processes and threads the tree may hold at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<Amount>,
    /// How many files each of its processes may hold open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nofile: Option<Amount>,
}

impl Asked {
    /// The process references it names (its `parent` and each of
    /// `after`), which the front end resolves to ids (a name or a short
    /// id needs the manager) and hands in through
    /// [`Context::ids`](crate::Context::ids).
    pub fn references(&self) -> impl Iterator<Item = &str> {
        self.parent
            .iter()
            .chain(self.after.iter())
            .map(String::as_str)
    }

    /// Every field's name, as [`AskError::field`](crate::AskError::field)
    /// and the front ends' tests name them.
    #[cfg(feature = "schema")]
    pub fn fields() -> Vec<String> {
        match serde_json::to_value(schemars::schema_for!(Asked)) {
            Ok(serde_json::Value::Object(schema)) => schema
                .get("properties")
                .and_then(serde_json::Value::as_object)
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}
